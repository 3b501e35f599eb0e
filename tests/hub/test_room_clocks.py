"""Semantics 4.5, clocks, as stories with a fake clock: a device's `ts` is its own clock, `mono_ms` its
monotonic clock since its boot; the hub finds a clock that is off, or that moved, and says so.

In these stories `t` is the true time (the hub's clock, seconds after T0); a device's clock reads
`t + off` where `off` is how far it is wrong.
"""

from __future__ import annotations

import datetime as dt

from seclusion_hub.core.room import DeviceStatus, Heartbeat, Note, SensorEvent
from tests.hub.rooms import DOOR, Room, at


def reading(room: Room, kind: str, value: str, t: float, *, off: float, boot: str, booted: float) -> None:
    """The door device reports `kind: value` that began at true time `t`, read on a clock `off` seconds
    wrong, in a boot that began at true time `booted`; it arrives at once."""
    room.seq[DOOR] += 1
    event = SensorEvent(
        device=DOOR,
        kind=kind,
        value=value,
        ts=at(t + off),
        seq=room.seq[DOOR],
        boot=boot,
        mono_ms=round((t - booted) * 1000),
    )
    room.clock.set(at(t))
    room.outcomes.append(room.machine.handle(event, at(t)))
    room.effects.extend(room.machine.tick(at(t), liveness=False))


def heartbeat(room: Room, t: float, *, off: float, arrive_after: float = 0.0) -> None:
    room.clock.set(at(t + arrive_after))
    hb = Heartbeat(device=DOOR, ts=at(t + off), epoch=0, last_seq=room.seq[DOOR], state={})
    room.machine.handle(hb, at(t + arrive_after))
    room.effects.extend(room.machine.tick(at(t + arrive_after), liveness=False))


def status(room: Room, t: float, *, off: float, boot: str, uptime_s: float) -> None:
    room.clock.set(at(t))
    room.machine.handle(
        DeviceStatus(device=DOOR, online=True, ts=at(t + off), boot=boot, uptime_s=uptime_s), at(t)
    )
    room.effects.extend(room.machine.tick(at(t), liveness=False))


def notes(room: Room, kind: str) -> list[Note]:
    found = [e for e in room.effects if isinstance(e, Note) and e.kind == kind]
    for outcome in room.outcomes:
        found += [e for e in outcome.effects if isinstance(e, Note) and e.kind == kind]
    return found


def test_a_device_restarting_mid_episode_with_its_clock_an_hour_behind_never_times_the_release_at_zero() -> (
    None
):
    """An RTC-less Pi restarts and restores the time it last saved, an hour ago: the door opening it
    then reports is timed no earlier than the device's own reports before the restart, not before the
    episode began (which would make the episode last no time at all)."""
    room = Room(max_clock_skew_s=2)
    room.observer("present", 0)
    reading(room, "occupancy", "occupied", 1, off=0, boot="b1", booted=-1000)
    reading(room, "door", "closed", 2, off=0, boot="b1", booted=-1000)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(2)
    for t in range(10, 100, 10):
        heartbeat(room, t, off=0)  # the last at true time 90
    # The device restarts at true time 100 and comes back an hour behind.
    status(room, 121, off=-3600, boot="b2", uptime_s=1)
    reading(room, "door", "open", 130, off=-3600, boot="b2", booted=100)
    reading(room, "occupancy", "vacant", 131, off=-3600, boot="b2", booted=100)
    assert room.machine.episode is None
    # Its boot began after its last heartbeat (90): so the opening is at 90 + 30 s at the earliest.
    assert ep.ended_at == at(120)
    assert ep.elapsed_s(at(200)) == 118.0 and ep.clock_uncertain
    [skew] = notes(room, "clock_skew")
    assert skew.detail["offset_s"] == 3590.0 and skew.detail["at_least"] is True
    [alert] = room.alerts("clock_skew")
    assert alert.active and alert.detail["offset_s"] == "3590.000"

    # NTP sets the clock right at true time 160: the next reading is on time, and the skew is over.
    reading(room, "occupancy", "occupied", 170, off=0, boot="b2", booted=100)
    assert room.machine.state.readings["occupancy"].ts == at(170)
    assert notes(room, "clock_skew_cleared")
    assert not alert.active


def test_a_clock_set_wrong_while_the_device_runs_is_corrected_by_its_monotonic_clock() -> None:
    room = Room(max_clock_skew_s=2)
    room.observer("present", 0)
    for t in (0, 10, 20):
        heartbeat(room, t, off=0, arrive_after=0.05)  # the clock is right: offsets of 50 ms
    reading(room, "occupancy", "occupied", 21, off=0, boot="b1", booted=-50)
    reading(room, "door", "closed", 22, off=0, boot="b1", booted=-50)
    ep = room.machine.episode
    assert ep is not None and not ep.clock_uncertain
    # Someone sets the device's clock ten minutes back at true time 40.
    reading(room, "door", "open", 60, off=-600, boot="b1", booted=-50)
    reading(room, "occupancy", "vacant", 61, off=-600, boot="b1", booted=-50)
    # Timed by the monotonic clock from the offset the heartbeats showed before (50 ms of delay).
    assert ep.ended_at == at(60) + dt.timedelta(milliseconds=50)
    assert ep.clock_uncertain
    [skew] = notes(room, "clock_skew")
    assert skew.detail["offset_s"] == 600.05 and skew.detail["at_least"] is False


def test_a_clock_set_right_with_nothing_known_before_is_taken_as_right_and_the_episode_flagged() -> None:
    """The device started an hour behind and NTP set it right during the episode, before any heartbeat
    could tell: the new time is taken as right, and the episode, begun on the old, says its times are
    uncertain (it is an hour too long: never too short)."""
    room = Room(max_clock_skew_s=2)
    room.observer("present", 0)
    reading(room, "occupancy", "occupied", 1, off=-3600, boot="b1", booted=-5)
    reading(room, "door", "closed", 2, off=-3600, boot="b1", booted=-5)
    ep = room.machine.episode
    assert ep is not None and not ep.clock_uncertain
    reading(room, "door", "open", 30, off=0, boot="b1", booted=-5)
    reading(room, "occupancy", "vacant", 31, off=0, boot="b1", booted=-5)
    [jump] = notes(room, "clock_jump")
    assert jump.detail["offset_s"] == 0.0 and room.alerts("clock_skew") == []
    assert ep.ended_at == at(30) and ep.clock_uncertain
    assert ep.elapsed_s(at(40)) == 3628.0


def test_a_restart_with_the_clock_right_changes_nothing() -> None:
    room = Room(max_clock_skew_s=2)
    room.observer("present", 0)
    reading(room, "occupancy", "occupied", 1, off=0, boot="b1", booted=-100)
    reading(room, "door", "closed", 2, off=0, boot="b1", booted=-100)
    for t in (10, 20):
        heartbeat(room, t, off=0)
    status(room, 60, off=0, boot="b2", uptime_s=5)
    reading(room, "door", "open", 70, off=0, boot="b2", booted=50)
    reading(room, "occupancy", "vacant", 71, off=0, boot="b2", booted=50)
    ep = room.machine.state.last_episode
    assert ep is not None and ep.ended_at == at(70) and not ep.clock_uncertain
    assert not notes(room, "clock_skew") and not notes(room, "clock_jump")


def test_an_older_boots_events_replayed_are_not_corrected_for_the_new_boots_clock() -> None:
    room = Room(max_clock_skew_s=2)
    reading(room, "occupancy", "occupied", 1, off=0, boot="b1", booted=-100)
    status(room, 60, off=-300, boot="b2", uptime_s=5)
    for t in (61, 71, 81):
        heartbeat(room, t, off=-300)  # the new boot's clock is five minutes behind
    assert room.machine.state.devices[DOOR].skew_s == 300.0
    # A reading of the old boot, from its outbox, timed by the old boot's (right) clock.
    reading(room, "door", "closed", 50, off=0, boot="b1", booted=-100)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(50)


def test_the_offset_is_the_smallest_arrival_minus_ts_not_the_one_nearest_zero() -> None:
    """Arrival minus `ts` is the offset plus the network's delay: the smallest is the best estimate,
    for a clock ahead (negative offsets) as for one behind."""
    room = Room(max_clock_skew_s=2)
    for t, delay in ((10, 0.5), (20, 0.01), (30, 0.3)):
        heartbeat(room, t, off=5, arrive_after=delay)  # the device's clock is 5 s ahead
    dev = room.machine.state.devices[DOOR]
    assert dev.skew_s == -4.99
    assert dt.timedelta(seconds=dev.skew_s) == at(20) + dt.timedelta(seconds=0.01) - at(25)
