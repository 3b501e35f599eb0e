"""Properties of the room machine under device clocks that are right, off, set while running, or read
no plausible time at all (semantics 4.5), with readings live or replayed late (hypothesis)."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seclusion_hub.core.episode import Episode, account
from seclusion_hub.core.room import (
    EARLIEST_PLAUSIBLE,
    LATEST_AHEAD,
    DeviceStatus,
    EpisodeSaved,
    Heartbeat,
    Message,
    SensorEvent,
)
from tests.hub.rooms import DOOR, PANEL, T0, Room, at

# How far the door device's clock is off: right, 1970 (a Pi that booted with no network), two days
# ahead, ten minutes either way, a few seconds ahead.
EPOCH_OFF = (dt.datetime(1970, 1, 1, 0, 5, tzinfo=dt.UTC) - T0).total_seconds()
CLOCKS = [0.0, EPOCH_OFF, 2 * 86_400.0, -600.0, 600.0, 5.0]
DOOR_READINGS = [("door", "open"), ("door", "closed"), ("occupancy", "occupied"), ("occupancy", "vacant")]


@dataclass(frozen=True)
class Step:
    message: Message
    arrival: float  # seconds after T0 on the hub's clock


@st.composite
def clock_stories(draw: st.DrawFn) -> list[Step]:
    """The door device's readings on its clock (wrong from the start, set right now and then, restarted
    now and then on any clock), some held in its outbox and replayed later, its heartbeats live; the
    panel's observer readings live and right."""
    out: list[tuple[float, int, Message]] = []
    seq = {DOOR: 0, PANEL: 0}
    t, last_door_arrival = 0.0, 0.0
    off, boot, booted, booted_arrival = draw(st.sampled_from(CLOCKS)), "b0", -100.0, 0.0
    boots, order = 1, itertools.count(1)
    out.append((0.0, 0, DeviceStatus(DOOR, True, at(off), boot=boot, uptime_s=100.0)))
    for _ in range(draw(st.integers(1, 40))):
        t += draw(st.sampled_from([0.0, 0.5, 3.0, 16.0, 31.0, 90.0]))
        action = draw(st.integers(0, 11))
        if action == 0:
            off = 0.0  # set right while it runs (NTP at last)
        elif action == 1:  # restarted: a new boot, on whatever clock it comes back with
            t += 30.0  # a Raspberry Pi takes half a minute to boot
            off, boot, booted, boots = draw(st.sampled_from(CLOCKS)), f"b{boots}", t, boots + 1
            # The old boot's heartbeats not yet out by now never went (the agent went down first).
            out = [item for item in out if not (isinstance(item[2], Heartbeat) and item[0] >= t)]
            # Its status goes out as it connects; its outbox (the old boot's readings) follows.
            booted_arrival = t
            out.append((t, next(order), DeviceStatus(DOOR, True, at(t + off), boot=boot, uptime_s=0.0)))
        elif action == 2:
            hb = Heartbeat(DOOR, at(t + off), 0, seq[DOOR], {}, uptime_s=t - booted)
            # Sent only while connected, so after its boot's status (heartbeats carry no boot: one
            # before it would be taken for the old boot's) and after its outbox has gone out.
            out.append((max(t + 0.05, booted_arrival, last_door_arrival), next(order), hb))
        elif action == 3:
            seq[PANEL] += 1
            value = draw(st.sampled_from(["present", "absent"]))
            out.append((t, next(order), SensorEvent(PANEL, "observer", value, at(t), seq[PANEL])))
        else:
            kind, value = draw(st.sampled_from(DOOR_READINGS))
            seq[DOOR] += 1
            delay = draw(st.sampled_from([0.0, 0.0, 0.0, 0.2, 60.0, 600.0]))  # live, or from its outbox
            last_door_arrival = max(last_door_arrival, t + delay)  # its readings arrive in their order
            ev = SensorEvent(
                DOOR, kind, value, at(t + off), seq[DOOR], boot=boot, mono_ms=round((t - booted) * 1000)
            )
            out.append((last_door_arrival, next(order), ev))
    out.sort(key=lambda item: (item[0], item[1]))
    return [Step(message, arrival) for arrival, _, message in out]


def _checked(ep: Episode, now: dt.datetime) -> None:
    end = ep.ended_at or now
    assert ep.started_at <= end
    assert (
        abs(ep.duration_s(now) - sum(((s.end or end) - s.start).total_seconds() for s in ep.segments)) < 0.002
    )
    for a, b in zip(ep.segments, ep.segments[1:], strict=False):
        assert a.end is not None and a.end <= b.start
    acc = account(ep, now)
    assert abs(acc.supervised_s + acc.unsupervised_s + acc.unknown_s - ep.elapsed_s(now)) < 0.002


# Derandomized: the same 400 stories in every run. Wider searches (8,000 random stories) find one
# more kind of failure: a clock ahead, or measured ahead, set right with readings of both times in
# flight (docs/alerts.md's known limits); what else they found is fixed, each with a story in
# test_room_clocks.py.
@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(clock_stories())
def test_whatever_a_device_clock_says_readings_are_applied_at_plausible_times_and_episodes_hold(
    steps: list[Step],
) -> None:
    room = Room(max_clock_skew_s=2)
    episodes: dict[str, Episode] = {}
    for step in steps:
        now = at(step.arrival)
        room.clock.set(now)
        outcome = room.machine.handle(step.message, now)
        if isinstance(step.message, SensorEvent) and outcome.applied:
            # Never dropped, never dated by a clock no one could mean.
            assert outcome.ts is not None and EARLIEST_PLAUSIBLE <= outcome.ts <= now + LATEST_AHEAD
        effects = outcome.effects + room.machine.tick(now, liveness=False)
        episodes.update((e.episode.id, e.episode) for e in effects if isinstance(e, EpisodeSaved))
        door, occupancy = (
            room.machine.state.readings.get("door"),
            room.machine.state.readings.get("occupancy"),
        )
        if (
            door is not None
            and occupancy is not None
            and door.value == "closed"
            and occupancy.value == "occupied"
        ):
            # 2.1: occupied while the door is closed is always an episode, whatever the clocks said.
            assert room.machine.episode is not None
    # A clock ahead and not yet measured times readings ahead of the hub's clock (within a day).
    end = at(steps[-1].arrival) + LATEST_AHEAD
    for ep in episodes.values():
        _checked(ep, end)
