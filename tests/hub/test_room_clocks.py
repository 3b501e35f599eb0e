"""Semantics 4.5, clocks, as stories with a fake clock: a device's `ts` is its own clock, `mono_ms` its
monotonic clock since its boot; the hub finds a clock that is off, or that moved, and says so.

In these stories `t` is the true time (the hub's clock, seconds after T0); a device's clock reads
`t + off` where `off` is how far it is wrong.
"""

from __future__ import annotations

import datetime as dt

import pytest

from seclusion_hub.core.episode import account
from seclusion_hub.core.room import DeviceStatus, Heartbeat, Note, SensorEvent
from tests.hub.rooms import DOOR, PANEL, T0, Room, at


def reading(
    room: Room,
    kind: str,
    value: str,
    t: float,
    *,
    off: float,
    boot: str,
    booted: float,
    arrive: float | None = None,
    device: str = DOOR,
) -> dt.datetime:
    """The door device (or `device`) reports `kind: value` that began at true time `t`, read on a clock
    `off` seconds wrong, in a boot that began at true time `booted`; it arrives at once, or at true time
    `arrive` (replayed from its outbox). Returns the time the hub applied it at."""
    room.seq[device] += 1
    event = SensorEvent(
        device=device,
        kind=kind,
        value=value,
        ts=at(t + off),
        seq=room.seq[device],
        boot=boot,
        mono_ms=round((t - booted) * 1000),
    )
    when = at(t if arrive is None else arrive)
    room.clock.set(when)
    outcome = room.machine.handle(event, when)
    room.outcomes.append(outcome)
    room.effects.extend(room.machine.tick(when, liveness=False))
    assert outcome.ts is not None
    return outcome.ts


def heartbeat(
    room: Room, t: float, *, off: float, arrive_after: float = 0.0, started: float | None = None
) -> None:
    """A heartbeat sent at true time `t` on a clock `off` seconds wrong, by an agent that started at true
    time `started` (its uptime, from the monotonic clock, does not move when the wall clock is set)."""
    room.clock.set(at(t + arrive_after))
    uptime = None if started is None else t - started
    hb = Heartbeat(device=DOOR, ts=at(t + off), epoch=0, last_seq=room.seq[DOOR], state={}, uptime_s=uptime)
    room.outcomes.append(room.machine.handle(hb, at(t + arrive_after)))
    room.effects.extend(room.machine.tick(at(t + arrive_after), liveness=False))


def status(room: Room, t: float, *, off: float, boot: str, uptime_s: float) -> None:
    room.clock.set(at(t))
    message = DeviceStatus(device=DOOR, online=True, ts=at(t + off), boot=boot, uptime_s=uptime_s)
    room.outcomes.append(room.machine.handle(message, at(t)))
    room.effects.extend(room.machine.tick(at(t), liveness=False))


def notes(room: Room, kind: str) -> list[Note]:
    found = [e for e in room.effects if isinstance(e, Note) and e.kind == kind]
    for outcome in room.outcomes:
        found += [e for e in outcome.effects if isinstance(e, Note) and e.kind == kind]
    return found


def confined(room: Room, *, off: float, booted: float, boot: str = "b1") -> None:
    """A child in the room, the door closed at true time 2 (the observer at the panel from 0)."""
    room.observer("present", 0)
    reading(room, "occupancy", "occupied", 1, off=off, boot=boot, booted=booted)
    reading(room, "door", "closed", 2, off=off, boot=boot, booted=booted)
    assert room.machine.episode is not None


def released(room: Room, t: float, *, off: float, booted: float, boot: str = "b1") -> None:
    """The door opens at true time `t` and the room reads vacant a second later."""
    reading(room, "door", "open", t, off=off, boot=boot, booted=booted)
    reading(room, "occupancy", "vacant", t + 1, off=off, boot=boot, booted=booted)
    assert room.machine.episode is None


def test_a_device_restarting_mid_episode_with_its_clock_an_hour_behind_never_times_the_release_at_zero() -> (
    None
):
    """An RTC-less Pi restarts and restores the time it last saved, an hour ago: the door opening it
    then reports is timed no earlier than the device's own reports before the restart allow, not
    before the episode began (which would make the episode last no time at all)."""
    room = Room(max_clock_skew_s=2)
    confined(room, off=0, booted=-1000)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(2)
    for t in range(10, 100, 10):
        heartbeat(room, t, off=0, started=-900)  # the last at true time 90
    # The device restarts at true time 100 and comes back an hour behind.
    status(room, 121, off=-3600, boot="b2", uptime_s=1)
    released(room, 130, off=-3600, booted=100, boot="b2")
    # Its boot began after its last heartbeat (90): so the opening is at 90 + 30 s at the earliest.
    assert ep.ended_at == at(120)
    assert ep.elapsed_s(at(200)) == 118.0 and ep.clock_uncertain
    [behind] = notes(room, "clock_behind")
    assert behind.detail == {"device": DOOR, "behind_s": 3590.0}
    # NTP sets the clock right at true time 160: the next reading is on time.
    reading(room, "occupancy", "occupied", 170, off=0, boot="b2", booted=100)
    assert room.machine.state.readings["occupancy"].ts == at(170)


def test_a_clock_put_right_after_the_heartbeats_measured_it_is_not_counted_twice() -> None:
    """A Pi boots ten minutes behind; its heartbeats measure that and its times are corrected; NTP puts
    the clock right during the episode, and the door opens before any heartbeat has seen it."""
    room = Room(max_clock_skew_s=2)
    for t in (-30, -20, -10):
        heartbeat(room, t, off=-600, started=-40)
    assert room.machine.state.devices[DOOR].skew_s == 600.0
    confined(room, off=-600, booted=-50)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(2)
    # NTP at true time 45; the door opens at 48, the room empties at 49; heartbeats from 50.
    released(room, 48, off=0, booted=-50)
    assert ep.ended_at == at(48) and ep.elapsed_s(at(100)) == 46.0
    assert ep.clock_uncertain
    for t in (50, 60, 70):
        heartbeat(room, t, off=0, started=-40)
    dev = room.machine.state.devices[DOOR]
    assert dev.skew_s is None and not dev.clock_unchecked
    assert len(notes(room, "clock_skew_cleared")) == 1  # one change of the clock, said once
    reading(room, "occupancy", "occupied", 80, off=0, boot="b1", booted=-50)
    assert room.machine.state.readings["occupancy"].ts == at(80)
    assert room.alerts("clock_skew", active=True) == []


def test_a_clock_set_back_while_the_device_is_idle_is_found_by_its_heartbeats() -> None:
    room = Room(max_clock_skew_s=2)
    for t in (0, 10, 20):
        heartbeat(room, t, off=0, started=-5)
    reading(room, "occupancy", "vacant", 21, off=0, boot="b1", booted=-50)
    # Someone sets the clock ten minutes back at true time 25; its heartbeats go on.
    for t in range(30, 110, 10):
        heartbeat(room, t, off=-600, started=-5)
    dev = room.machine.state.devices[DOOR]
    assert dev.skew_s == 600.0
    assert notes(room, "clock_jump") and notes(room, "clock_skew")
    room.observer("present", 125)
    reading(room, "occupancy", "occupied", 129, off=-600, boot="b1", booted=-50)
    reading(room, "door", "closed", 130, off=-600, boot="b1", booted=-50)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(130)


def test_a_clock_set_wrong_while_an_episode_runs_is_timed_by_the_monotonic_clock() -> None:
    room = Room(max_clock_skew_s=2)
    for t in (-20, -10, 0):
        heartbeat(room, t, off=0, arrive_after=0.05, started=-30)  # checked: 50 ms of delay
    confined(room, off=0, booted=-50)
    ep = room.machine.episode
    assert ep is not None and not ep.clock_uncertain
    # Someone sets the device's clock ten minutes back at true time 40.
    released(room, 60, off=-600, booted=-50)
    assert ep.ended_at == at(60), "timed by the monotonic clock from the last reading on a checked clock"
    assert ep.clock_uncertain and notes(room, "clock_jump")


def test_a_clock_set_right_with_nothing_checked_before_is_taken_as_right_and_the_episode_flagged() -> None:
    """The device started an hour behind and NTP set it right during the episode, before any heartbeat
    could tell: the new time is taken, and the episode, begun on the old, says its times are
    uncertain (it is an hour too long: never too short)."""
    room = Room(max_clock_skew_s=2)
    confined(room, off=-3600, booted=-5)
    ep = room.machine.episode
    assert ep is not None and not ep.clock_uncertain
    released(room, 30, off=0, booted=-5)
    assert notes(room, "clock_jump") and room.alerts("clock_skew") == []
    assert ep.ended_at == at(30) and ep.clock_uncertain
    assert ep.elapsed_s(at(40)) == 3628.0


def test_a_restart_during_an_episode_says_the_clock_is_not_yet_checked() -> None:
    room = Room(max_clock_skew_s=2)
    confined(room, off=0, booted=-100)
    for t in (10, 20):
        heartbeat(room, t, off=0, started=-90)
    status(room, 60, off=0, boot="b2", uptime_s=5)
    released(room, 70, off=0, booted=50, boot="b2")
    ep = room.machine.state.last_episode
    assert ep is not None and ep.ended_at == at(70) and ep.clock_uncertain
    assert notes(room, "clock_unchecked") and not notes(room, "clock_behind")
    assert not notes(room, "clock_skew") and not notes(room, "clock_jump")


def test_a_restart_after_a_corrected_boot_never_moves_times_back() -> None:
    """The old boot ran five minutes behind, corrected; after a ten-minute power cut the device comes
    back with its clock right: nothing of the old correction is applied to the new boot."""
    room = Room(max_clock_skew_s=2)
    for t in (-30, -20, -10):
        heartbeat(room, t, off=-300, started=-40)
    confined(room, off=-300, booted=-50)
    heartbeat(room, 90, off=-300, started=-40)
    status(room, 700, off=0, boot="b2", uptime_s=2)
    released(room, 710, off=0, booted=698, boot="b2")
    ep = room.machine.state.last_episode
    assert ep is not None and ep.ended_at == at(710)


def test_a_clock_restored_to_an_old_time_is_put_right_once_its_heartbeats_measure_it() -> None:
    """Restored to the time of its last report after a long outage: nothing tells the first reading is
    wrong (it is flagged); once three heartbeats have measured the clock, the next is on time."""
    room = Room(max_clock_skew_s=2)
    for t in (-30, -20, -10):
        heartbeat(room, t, off=0, started=-40)
    reading(room, "occupancy", "vacant", 1, off=0, boot="b1", booted=-50)
    heartbeat(room, 90, off=0, started=-40)
    status(room, 702, off=-610, boot="b2", uptime_s=2)  # off from 90 to 700, then restored to 90
    for t in (703, 713, 723):
        heartbeat(room, t, off=-610, started=700)
    reading(room, "occupancy", "occupied", 730, off=-610, boot="b2", booted=700)
    assert room.machine.state.readings["occupancy"].ts == at(730)


def test_an_older_boots_events_replayed_keep_the_time_their_own_clock_gave() -> None:
    """Boot b1 ran five minutes behind (corrected); b2 an hour behind. A reading of b1 from its outbox,
    arriving after b2 was measured, is timed by b1's monotonic clock, not by b2's correction."""
    room = Room(max_clock_skew_s=2)
    for t in (-30, -20, -10):
        heartbeat(room, t, off=-300, started=-40)
    confined(room, off=-300, booted=-50)
    status(room, 100, off=-3600, boot="b2", uptime_s=1)
    for t in (101, 111, 121):
        heartbeat(room, t, off=-3600, started=99)
    assert room.machine.state.devices[DOOR].skew_s == 3600.0
    released(room, 95, off=-300, booted=-50)  # b1's, replayed
    ep = room.machine.state.last_episode
    assert ep is not None and ep.ended_at == at(95)


def test_the_offset_is_the_smallest_arrival_minus_ts_not_the_one_nearest_zero() -> None:
    """Arrival minus `ts` is the offset plus the network's delay: the smallest is the best estimate,
    for a clock ahead (negative offsets) as for one behind."""
    room = Room(max_clock_skew_s=2)
    for t, delay in ((10, 0.5), (20, 0.01), (30, 0.3)):
        heartbeat(room, t, off=5, arrive_after=delay)  # the device's clock is 5 s ahead
    dev = room.machine.state.devices[DOOR]
    assert dev.skew_s == -4.99


def test_a_clock_set_twice_is_never_counted_against_the_episode() -> None:
    """Set ten minutes ahead (the heartbeats measure it), then put right before the door opens: the
    second change is found from the event, and the episode is timed by the monotonic clock."""
    room = Room(max_clock_skew_s=2)
    for t in (-30, -20, -10):
        heartbeat(room, t, off=0, started=-40)
    confined(room, off=0, booted=-50)
    for t in (30, 40, 50, 60):
        heartbeat(room, t, off=600, started=-40)  # set ahead at 20
    assert room.machine.state.devices[DOOR].skew_s == -600.0
    released(room, 100, off=0, booted=-50)  # put right at 65
    ep = room.machine.state.last_episode
    assert ep is not None and ep.ended_at == at(100) and ep.clock_uncertain


def test_an_episode_begun_on_a_clock_ahead_not_yet_measured_is_never_shortened() -> None:
    room = Room(max_clock_skew_s=2)
    confined(room, off=600, booted=-5)  # timed 602: the clock is not measured yet
    for t in (5, 15, 25):
        heartbeat(room, t, off=600, started=-5)
    reading(room, "door", "open", 100, off=600, booted=-5, boot="b1")
    ep = room.machine.episode
    assert ep is not None and ep.clock_uncertain
    # The door's opening is timed no earlier than the monotonic clock says: 98 s at least.
    end = ep.segments[-1].end
    assert end is not None and (end - ep.started_at).total_seconds() >= 98.0


def test_an_older_boots_replayed_events_keep_their_own_boots_correction() -> None:
    room = Room(max_clock_skew_s=2)
    status(room, -40, off=300, boot="b1", uptime_s=0)
    for t in (-30, -20, -10):
        heartbeat(room, t, off=300, started=-40)  # b1 five minutes ahead, measured
    room.observer("present", 0)
    status(room, 120, off=0, boot="b2", uptime_s=2)  # b1's outbox comes after b2 announced itself
    reading(room, "occupancy", "occupied", 49, off=300, boot="b1", booted=-50)
    reading(room, "door", "closed", 50, off=300, boot="b1", booted=-50)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(50)
    released(room, 130, off=0, booted=118, boot="b2")
    assert ep.ended_at == at(130)


def test_a_restart_during_an_episode_flags_it_at_once() -> None:
    room = Room(max_clock_skew_s=2)
    confined(room, off=0, booted=-100)
    status(room, 60, off=0, boot="b2", uptime_s=5)
    ep = room.machine.episode
    assert ep is not None and ep.clock_uncertain and notes(room, "clock_unchecked")


# A device status's `ts` is a device timestamp too: corrected like the rest (4.5 with 4.2).

PANEL_OFF = -60.0  # the panel's clock reads 60 s behind the hub's


def _panel_hb(room: Room, t: float) -> None:
    room.clock.set(at(t))
    hb = Heartbeat(device=PANEL, ts=at(t + PANEL_OFF), epoch=0, last_seq=room.seq[PANEL], state={})
    room.machine.handle(hb, at(t))
    room.effects.extend(room.machine.tick(at(t), liveness=False))


def _panel_event(room: Room, kind: str, value: str, t: float, arrive: float) -> None:
    room.seq[PANEL] += 1
    ev = SensorEvent(device=PANEL, kind=kind, value=value, ts=at(t + PANEL_OFF), seq=room.seq[PANEL])
    room.clock.set(at(arrive))
    room.machine.handle(ev, at(arrive))
    room.effects.extend(room.machine.tick(at(arrive), liveness=False))


def _panel_status(room: Room, t: float, *, boot: str, uptime_s: float) -> None:
    room.clock.set(at(t))
    st = DeviceStatus(device=PANEL, online=True, ts=at(t + PANEL_OFF), boot=boot, uptime_s=uptime_s)
    room.machine.handle(st, at(t))
    room.effects.extend(room.machine.tick(at(t), liveness=False))


def _skewed_panel_episode(room: Room) -> None:
    _panel_status(room, 0, boot="b1", uptime_s=1000)
    for t in (1, 11, 21):
        _panel_hb(room, t)
    dev = room.machine.state.devices[PANEL]
    assert dev.skew_s == 60 and dev.skew_since is not None  # clock_skew found and corrected (4.5)
    _panel_event(room, "observer", "present", 25, arrive=25)
    room.occupancy("occupied", 26)
    room.door("closed", 27)
    _panel_hb(room, 30)


def test_a_skewed_device_back_on_the_same_boot_makes_its_gap_known_again() -> None:
    """semantics 4.2: 'When its status shows the same boot with an uptime covering the gap, the replayed
    events make the gap known again and unknown_s shrinks accordingly'; 4.5: the hub 'corrects that
    device's timestamps by the estimated offset'. The panel (clock 60 s slow, corrected) drops off for
    40 s without rebooting; its status, timed by its slow clock, is taken for the broker's old copy."""
    room = Room()
    _skewed_panel_episode(room)
    room.status(PANEL, False, 50)  # Last Will: offline since T0+30
    ep = room.machine.episode
    assert ep is not None and ep.unknown
    _panel_status(room, 70, boot="b1", uptime_s=1070)  # same boot, up all along
    _panel_event(room, "observer", "absent", 40, arrive=70)  # replayed from its outbox
    assert ep.unknown == [], ep.unknown
    acc = account(ep, at(80))
    assert acc.unknown_s == 0


def test_a_skewed_devices_agent_restarted_in_its_gap_leaves_the_gap_unknown() -> None:
    """semantics 4.2: '...with an uptime covering the gap, ... unknown_s shrinks; otherwise the gap stays
    unknown'. The panel's agent went down at T0+30 (same kernel boot) and started again at T0+80: its
    uptime (120 s at T0+200) does not cover the gap from T0+30, but read against its slow clock
    (uncorrected) it seems to."""
    room = Room()
    _skewed_panel_episode(room)
    room.status(PANEL, False, 50)  # Last Will: offline since T0+30
    ep = room.machine.episode
    assert ep is not None
    _panel_status(room, 200, boot="b1", uptime_s=120)  # agent started at T0+80
    assert any(g.device == PANEL for g in ep.unknown), "the gap T0+30..T0+80 was forgotten"
    acc = account(ep, at(200))
    assert acc.unknown_s >= 50


# A Raspberry Pi that booted with neither the network nor a saved time reads 1970.
EPOCH_OFF = (dt.datetime(1970, 1, 1, 0, 5, tzinfo=dt.UTC) - T0).total_seconds()


def test_a_device_whose_clock_reads_1970_still_has_its_episode_timed_from_arrival_then_measured() -> None:
    """Semantics 4.5 and "never under-count": readings on a clock no one could mean (1970) are not
    dropped; until heartbeats measure the clock they are timed as they arrive, said once in the
    timeline, and the episode is marked clock_uncertain; once measured, the clock is corrected."""
    room = Room(max_clock_skew_s=2)
    confined(room, off=EPOCH_OFF, booted=-5)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(2) and ep.clock_uncertain
    [said] = notes(room, "clock_implausible")
    assert said.detail == {"device": DOOR, "said": "1970-01-01T00:05:01.000Z"}
    # Its heartbeats, on the same clock, measure it: clock_skew, and its readings are corrected.
    for t in (10, 20, 30):
        heartbeat(room, t, off=EPOCH_OFF, arrive_after=0.05, started=-5)
    assert room.alerts("clock_skew", active=True)
    released(room, 600, off=EPOCH_OFF, booted=-5)
    ended = room.machine.state.last_episode
    assert ended is not None and ended.ended_at is not None
    assert abs((ended.ended_at - at(600)).total_seconds()) <= 0.05
    assert len(notes(room, "clock_implausible")) == 1  # said once for the one run of such readings
    reported = room.machine.state.devices[DOOR].reported_ts
    assert reported is not None and reported > at(0)  # no restart will take 1970 for its last report


def test_a_clock_days_ahead_is_timed_on_arrival_and_nothing_is_dated_by_it() -> None:
    """A clock set by hand two days ahead: its readings are timed as they arrive (never two days
    ahead, which would run every duration rule at once), and its status's time dates nothing."""
    room = Room(max_clock_skew_s=2)
    ahead = 2 * 86_400
    status(room, -3, off=ahead, boot="b1", uptime_s=2)
    confined(room, off=ahead, booted=-5)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(2) and ep.clock_uncertain
    assert room.machine.state.devices[DOOR].heard_ts == at(2)
    assert room.alerts("duration_limit") == []
    heartbeat(room, 20, off=ahead, started=-5)
    released(room, 60, off=ahead, booted=-5)
    ended = room.machine.state.last_episode
    assert ended is not None and ended.ended_at == at(60) and ended.elapsed_s(at(70)) == 58.0
    # Put right (NTP): plausible again, and a later run of such readings is said again.
    reading(room, "occupancy", "occupied", 80, off=0, boot="b1", booted=-5)
    assert room.machine.state.readings["occupancy"].ts == at(80)
    assert not room.machine.state.devices[DOOR].clock_implausible


def test_a_pi_that_booted_without_network_has_its_replay_kept_in_order_and_never_in_the_future() -> None:
    """Booted with no network (1970), a child shut in at 100 and let out at 400; it connects at 1000 and
    replays them all at once. Timed by the monotonic clock from the first, never after their arrival
    (but a millisecond apart, in the device's order): the episode ends, at the opening."""
    room = Room(max_clock_skew_s=2)
    room.observer("present", 0)
    status(room, 1000, off=EPOCH_OFF, boot="b1", uptime_s=1000)
    times = [
        reading(room, kind, value, t, off=EPOCH_OFF, boot="b1", booted=0, arrive=1000)
        for kind, value, t in (
            ("occupancy", "occupied", 100),
            ("door", "closed", 101),
            ("door", "open", 400),
            ("occupancy", "vacant", 401),
        )
    ]
    assert times == sorted(times) and len(set(times)) == 4
    assert all(at(1000) <= ts <= at(1000.01) for ts in times)
    ended = room.machine.state.last_episode
    assert room.machine.episode is None and ended is not None and ended.clock_uncertain
    assert ended.started_at == times[1] and ended.ended_at == times[2]
    # Timed at their arrival, they are latest times only: no restart's floor is built on them.
    assert room.machine.state.devices[DOOR].reported_ts is None


def test_after_a_replay_timed_on_arrival_the_measured_clock_times_the_next_episode_exactly() -> None:
    """A reading timed at its arrival gives only a latest time: once heartbeats have measured the 1970
    clock, the next episode starts when the door closed, and its lapse is raised on time."""
    room = Room(max_clock_skew_s=2)
    status(room, 7200, off=EPOCH_OFF, boot="b1", uptime_s=7200)
    reading(room, "door", "open", 3, off=EPOCH_OFF, boot="b1", booted=0, arrive=7200)
    reading(room, "occupancy", "vacant", 3, off=EPOCH_OFF, boot="b1", booted=0, arrive=7200)
    for t in (7210, 7220, 7230):
        heartbeat(room, t, off=EPOCH_OFF, arrive_after=0.05, started=0)
    assert room.alerts("clock_skew", active=True)
    reading(room, "occupancy", "occupied", 10_800, off=EPOCH_OFF, boot="b1", booted=0)
    reading(room, "door", "closed", 10_801, off=EPOCH_OFF, boot="b1", booted=0)
    ep = room.machine.episode
    assert ep is not None and abs((ep.started_at - at(10_801)).total_seconds()) <= 0.05
    room.run(10_830, step=1)
    [lapse] = room.alerts("supervision_lapse")
    assert not lapse.late


def test_a_1970_heartbeat_after_a_restart_is_timed_on_arrival_not_at_the_restart_floor() -> None:
    """A power cut mid-episode; the device comes back reading 1970, its outbox lost, and its first
    heartbeat shows the door open. The door is first known open when that heartbeat is heard, not at
    the least time a restart allows (which ended the episode before anyone could know)."""
    room = Room(max_clock_skew_s=2)
    for t in (-30, -20, -10):
        heartbeat(room, t, off=0, started=-100)
    confined(room, off=0, booted=-100)
    heartbeat(room, 10, off=0, started=-100)
    status(room, 300, off=EPOCH_OFF, boot="b2", uptime_s=10)
    room.clock.set(at(301))
    found_open = Heartbeat(
        device=DOOR,
        ts=at(301 + EPOCH_OFF),
        epoch=0,
        last_seq=room.seq[DOOR],
        state={"door": "open", "occupancy": "occupied"},
        uptime_s=11,
    )
    room.outcomes.append(room.machine.handle(found_open, at(301)))
    ended = room.machine.state.last_episode
    assert ended is not None and ended.ended_at is not None
    assert ended.ended_at == at(301) or ended.ended_at == ended.end_earliest
    assert ended.ended_at > at(21)
    assert len(notes(room, "clock_implausible")) == 1


def _retained_1970_status(room: Room, t: float) -> None:
    """The online status the agent published when it connected at true -95, before NTP set its clock,
    delivered again by the broker (retained) at true `t`."""
    status(room, t, off=-95 - t + EPOCH_OFF, boot="b1", uptime_s=5)


def _measured_then_confined() -> Room:
    room = Room(max_clock_skew_s=2)
    _retained_1970_status(room, -95)
    for t in (-60, -50, -40):
        heartbeat(room, t, off=0, started=-100)
    room.observer("present", 0)
    room.occupancy("occupied", 1)
    room.door("closed", 2)
    heartbeat(room, 10, off=0, started=-100)
    return room


def test_a_retained_1970_status_delivered_again_flags_nothing_and_brings_no_silent_device_back() -> None:
    room = _measured_then_confined()
    ep = room.machine.episode
    assert ep is not None
    _retained_1970_status(room, 20)  # the hub resubscribed
    assert not ep.clock_uncertain and not notes(room, "clock_implausible")
    room.tick(50)  # nothing from it since 10: offline (3 x heartbeat_s)
    assert not room.machine.state.devices[DOOR].online
    room.machine.hub_started(at(60))
    _retained_1970_status(room, 60)  # the hub restarted: the broker hands it the retained copy again
    assert not room.machine.state.devices[DOOR].online


@pytest.mark.parametrize("off", [0.0, EPOCH_OFF], ids=["clock-right", "clock-1970"])
def test_a_late_vacant_from_a_1970_pir_is_timed_by_its_monotonic_clock(off: float) -> None:
    """A separate PIR reading 1970: its `vacant` from 50 (a still child), held in its outbox over a blip,
    arrives after staff opened the door at 100 for a look. Timed by its monotonic clock from its live
    reading (at 50), not at its arrival (after the opening, which would end the episode): the door
    re-closes within the grace and the same episode goes on."""
    pir = "calm-1-pir"
    room = Room(
        devices=[
            {"id": DOOR, "sensors": ["door", "lock"], "lock_type": "held"},
            {"id": pir, "sensors": ["occupancy"]},
            {"id": PANEL, "sensors": ["observer", "check"]},
        ]
    )
    room.observer("present", 0)
    reading(room, "occupancy", "occupied", 1, off=off, boot="p1", booted=-500, device=pir)
    room.door("closed", 2)
    ep = room.machine.episode
    assert ep is not None
    room.door("open", 100)
    vacant = reading(room, "occupancy", "vacant", 50, off=off, boot="p1", booted=-500, arrive=103, device=pir)
    assert vacant == at(50)
    room.door("closed", 105)
    room.tick(110, liveness=False)
    assert room.machine.episode is ep and len(ep.segments) == 2


def test_an_outbox_spanning_the_ntp_setting_keeps_the_opening_after_the_closing() -> None:
    """Booted with no network (1970), the door closed at 100; NTP set the clock at 405, before MQTT came
    back; the door opened at 410; all replayed at 420. The opening's own (right) time is before the
    closing's arrival-timed one: the monotonic clock keeps them in order and the episode its length."""
    room = Room(max_clock_skew_s=2)
    room.observer("present", 0)
    reading(room, "occupancy", "occupied", 99, off=EPOCH_OFF, boot="b1", booted=0, arrive=420)
    closed = reading(room, "door", "closed", 100, off=EPOCH_OFF, boot="b1", booted=0, arrive=420)
    opened = reading(room, "door", "open", 410, off=0, boot="b1", booted=0, arrive=420)
    reading(room, "occupancy", "vacant", 411, off=0, boot="b1", booted=0, arrive=420)
    ended = room.machine.state.last_episode
    assert ended is not None and ended.ended_at == opened and opened - closed == dt.timedelta(seconds=310)


def test_a_1970_pi_restarted_while_the_hub_was_down_is_never_timed_after_its_arrival() -> None:
    """The restart floor (the old boot's last report plus the new boot's monotonic clock) is a least
    time only when that report was timed on a clock: from one timed at its arrival, it is capped there."""
    room = Room(max_clock_skew_s=2)
    room.observer("present", -10)
    reading(room, "occupancy", "occupied", 100, off=EPOCH_OFF, boot="b1", booted=0, arrive=1000)
    b2 = EPOCH_OFF - 200  # the new boot reads 1970 from its own start, at 200
    closed = reading(room, "door", "closed", 300, off=b2, boot="b2", booted=200, arrive=1000)
    opened = reading(room, "door", "open", 500, off=b2, boot="b2", booted=200, arrive=1000)
    assert closed <= at(1000) < opened <= at(1000.01)
    assert not notes(room, "clock_behind")


@pytest.mark.parametrize("with_mono", [True, False])
def test_the_hubs_own_clock_put_back_mid_episode_keeps_the_episodes_length(with_mono: bool) -> None:
    """The devices' clocks are right; the hub's is put back 600 s at true 100, so their readings arrive
    600 s 'ahead': a clock that is off, not one no one could mean. The episode keeps its 298 s."""
    room = Room(max_clock_skew_s=2)
    for t in (-30, -20, -10):
        heartbeat(room, t, off=0, started=-100)
    room.observer("present", 0)
    if with_mono:
        reading(room, "occupancy", "occupied", 1, off=0, boot="b1", booted=-100)
        reading(room, "door", "closed", 2, off=0, boot="b1", booted=-100)
        reading(room, "door", "open", 300, off=0, boot="b1", booted=-100, arrive=300 - 600)
        reading(room, "occupancy", "vacant", 301, off=0, boot="b1", booted=-100, arrive=301 - 600)
    else:
        room.occupancy("occupied", 1)
        room.door("closed", 2)
        room.send(DOOR, "door", "open", 300, arrive=300 - 600)
        room.send(DOOR, "occupancy", "vacant", 301, arrive=301 - 600)
    ended = room.machine.state.last_episode
    assert ended is not None and ended.started_at == at(2) and ended.ended_at == at(300)
    assert not notes(room, "clock_implausible")


def test_a_restart_floor_is_the_old_boots_last_report_never_the_new_boots_own_heartbeats() -> None:
    """All clocks right. The device restarts (announced, nothing heard of the old boot yet), its new
    boot's heartbeats come, then its outbox: the old boot's readings, then the new boot's. The new
    boot's first reading is timed when it happened (not pushed to its own later heartbeats as if its
    clock were behind), and after every reading of the old boot."""
    room = Room(max_clock_skew_s=2)
    status(room, 0, off=0, boot="b1", uptime_s=100)
    status(room, 30, off=0, boot="b3", uptime_s=0)
    for _ in range(3):
        heartbeat(room, 33, off=0, arrive_after=0.05, started=30)
    old = [
        reading(room, kind, value, 0, off=0, boot="b1", booted=-100, arrive=60)
        for kind, value in (("door", "open"), ("door", "closed"))
    ]
    occupied = reading(room, "occupancy", "occupied", 30, off=0, boot="b3", booted=30, arrive=60)
    opened = reading(room, "door", "open", 33, off=0, boot="b3", booted=30, arrive=60)
    reclosed = reading(room, "door", "closed", 33, off=0, boot="b3", booted=30, arrive=60)
    assert old == [at(0), at(0)] and (occupied, opened, reclosed) == (at(30), at(33), at(33))
    assert not notes(room, "clock_behind")
    ep = room.machine.episode
    assert ep is not None and [(s.start, s.end) for s in ep.segments] == [(at(0), at(33)), (at(33), None)]


def test_a_clock_measured_days_ahead_then_set_right_never_dates_a_reading_days_back() -> None:
    """A Pi back with its clock two days ahead (timed on arrival), a child shut in, its heartbeats
    measure the clock; then NTP sets it right and the door opens and closes again before a heartbeat
    has seen it. The correction the heartbeats measured is of the old clock: taken, it would date the
    opening two days back, before the closing it followed (and the re-closing two days before the
    episode began). The monotonic clock times them instead, in their order."""
    room = Room(max_clock_skew_s=2)
    ahead = 2 * 86_400
    status(room, 0, off=ahead, boot="b1", uptime_s=0)
    confined(room, off=ahead, booted=0)
    for t in (3, 4, 5):
        heartbeat(room, t, off=ahead, arrive_after=0.05, started=0)
    assert room.alerts("clock_skew", active=True)
    assert reading(room, "door", "open", 10, off=0, boot="b1", booted=0) == at(10)
    assert reading(room, "door", "closed", 12, off=0, boot="b1", booted=0) == at(12)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(2) and ep.clock_uncertain
    assert [(s.start, s.end) for s in ep.segments] == [(at(2), at(10)), (at(12), None)]
    assert room.alerts("duration_limit") == []
    # Its next heartbeat finds the setting; from then on, its clock as it now reads.
    heartbeat(room, 20, off=0, arrive_after=0.05, started=0)
    assert reading(room, "door", "open", 30, off=0, boot="b1", booted=0) == at(30)
    assert ep.segments[-1].end == at(30) and ep.duration_s(at(30)) == 26.0


def test_an_older_boots_replay_across_its_ntp_setting_is_never_timed_after_the_next_boot_began() -> None:
    """A Pi booted at 30 reading 1970; NTP set its clock at 300; the door shut at 316; it restarted
    (the new boot heard of at 346) before its outbox went out, at 630. The opening, on no clock, is
    timed at the latest it can have happened (346); the closing, on the set clock but before it, by
    the monotonic clock, and never after 346 either: the old boot was over by then."""
    room = Room(max_clock_skew_s=2)
    status(room, 0, off=0, boot="b0", uptime_s=100)
    status(room, 30, off=EPOCH_OFF, boot="b1", uptime_s=0)
    status(room, 346, off=0, boot="b2", uptime_s=0)
    opened = reading(room, "door", "open", 30, off=EPOCH_OFF, boot="b1", booted=30, arrive=630)
    closed = reading(room, "door", "closed", 316, off=0, boot="b1", booted=30, arrive=630)
    assert opened == at(346) and closed == at(346)
    assert reading(room, "occupancy", "occupied", 630, off=0, boot="b2", booted=346) == at(630)
    ep = room.machine.episode  # occupancy first reported long after the close (2.1)
    assert ep is not None and ep.started_at == at(630) and ep.earliest_start == at(346)


def test_a_measured_then_set_clocks_replay_keeps_a_vacant_after_the_opening_after_it() -> None:
    """A Pi two days ahead: the child shut in at true 2 (its outbox arrives at 5, timed then: a latest
    time); its heartbeats measure the clock; NTP sets it right; its outbox of the door opening (10), the
    room vacant (10.5) and the door closing again (11, within the grace) arrives at once at 11.5.
    The monotonic clock times them: each must stay after the one before (as the unreadable-clock
    branch does, a millisecond apart), so the vacant after the opening ends the episode (2.4); timed at
    one instant, the vacant is not 'after the opening' and the re-closing goes on with a child who left."""
    room = Room(max_clock_skew_s=2)
    ahead = 2 * 86_400
    status(room, 0, off=ahead, boot="b1", uptime_s=0)
    room.observer("present", 0)
    reading(room, "occupancy", "occupied", 1, off=ahead, boot="b1", booted=0, arrive=5)
    reading(room, "door", "closed", 2, off=ahead, boot="b1", booted=0, arrive=5)
    ep = room.machine.episode
    assert ep is not None
    for t in (6, 7, 8):
        heartbeat(room, t, off=ahead, arrive_after=0.05, started=0)
    assert room.alerts("clock_skew", active=True)
    opened = reading(room, "door", "open", 10, off=0, boot="b1", booted=0, arrive=11.5)
    vacant = reading(room, "occupancy", "vacant", 10.5, off=0, boot="b1", booted=0, arrive=11.5)
    closed = reading(room, "door", "closed", 11, off=0, boot="b1", booted=0, arrive=11.5)
    assert opened < vacant < closed, (opened, vacant, closed)
    assert room.machine.episode is None and ep.ended_at == opened
