"""The edge fail-safe's rules, pure, on a fake clock: given a room, when time passes, then the alarm."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from seclusion_contract import ConfigPayload, IndicatorPayload
from seclusion_edge import FakeClock
from seclusion_edge.clock import Instant
from seclusion_edge.failsafe import Alarm, FailSafe, LocalAlarm, choose_alarm, on_local_axis

GRACE_S = 15
INTERVAL_S = 300
NONE = LocalAlarm()
LAPSE = LocalAlarm("critical", "supervision_lapse")


def policy(supervision: str = "observer", **overrides: Any) -> ConfigPayload:
    data: dict[str, Any] = {
        "v": 1,
        "supervision": supervision,
        "lapse_grace_s": GRACE_S,
        "checkin_interval_s": INTERVAL_S,
        "duration_alerts": [],
    }
    data.update(overrides)
    return ConfigPayload.model_validate(data)


class Room:
    """One room's fail-safe: readings happen at the fake clock's now; `after` lets time pass."""

    def __init__(self, numbers: ConfigPayload | None) -> None:
        self.clock = FakeClock()
        self.failsafe = FailSafe(numbers)

    def reads(self, kind: str, value: str) -> Room:
        self.failsafe.observe(kind, value, self.clock.now())
        return self

    def after(self, seconds: float) -> Room:
        self.clock.advance(seconds)
        return self

    @property
    def alarm(self) -> LocalAlarm:
        return self.failsafe.evaluate(self.clock.now().mono_ms)


def episode(numbers: ConfigPayload | None = None, *, observer: str | None = None) -> Room:
    """Given a child in the room and the door just closed (and the observer as given)."""
    room = Room(policy() if numbers is None else numbers)
    if observer is not None:
        room.reads("observer", observer)
    return room.reads("occupancy", "occupied").reads("door", "closed")


# ------------------------------------------------------------------------------------ observer mode


def test_nobody_at_the_panel_since_the_start_sounds_a_lapse_once_the_grace_runs_out() -> None:
    room = episode()
    assert room.after(GRACE_S - 1).alarm == NONE
    assert room.after(1).alarm == LAPSE  # due at the moment the grace runs out
    assert room.after(1).alarm == LAPSE


def test_an_observer_who_walks_away_starts_the_grace_when_they_leave() -> None:
    room = episode(observer="present")
    assert room.after(600).alarm == NONE
    room.reads("observer", "absent")
    assert room.after(GRACE_S - 1).alarm == NONE
    assert room.after(2).alarm == LAPSE


def test_the_alarm_stops_when_the_observer_returns_and_a_new_absence_gets_a_new_grace() -> None:
    room = episode().after(GRACE_S + 1)
    assert room.alarm == LAPSE
    assert room.reads("observer", "present").alarm == NONE
    room.after(30).reads("observer", "absent")
    assert room.after(GRACE_S - 1).alarm == NONE
    assert room.after(2).alarm == LAPSE


def test_the_door_opening_ends_the_episode_and_the_alarm() -> None:
    room = episode().after(GRACE_S + 1)
    assert room.alarm == LAPSE
    room.reads("door", "open")
    assert room.alarm == NONE
    assert room.failsafe.episode_start is None
    assert room.after(3600).alarm == NONE


def test_vacant_while_the_door_is_closed_does_not_end_the_episode() -> None:
    room = episode(observer="present")
    start = room.failsafe.episode_start
    room.after(5).reads("occupancy", "vacant")  # a still child is quiet to a PIR
    room.after(5).reads("observer", "absent")
    assert room.failsafe.episode_start == start
    assert room.after(GRACE_S + 1).alarm == LAPSE
    room.after(60).reads("occupancy", "occupied")
    assert room.failsafe.episode_start == start  # the same episode, not a new one


def test_an_observer_gone_long_before_the_episode_still_gets_the_grace_from_its_start() -> None:
    room = Room(policy()).reads("observer", "absent").after(600)
    room.reads("occupancy", "occupied").reads("door", "closed")
    assert room.after(GRACE_S - 1).alarm == NONE
    assert room.after(2).alarm == LAPSE


def test_a_closed_door_on_an_empty_room_is_no_episode() -> None:
    room = Room(policy()).reads("occupancy", "vacant").reads("door", "closed")
    assert room.after(3600).alarm == NONE
    assert room.failsafe.episode_start is None


def test_an_episode_starts_at_the_door_close_when_the_child_was_inside_first() -> None:
    room = Room(policy()).reads("occupancy", "occupied").after(30).reads("door", "closed")
    closed = room.clock.now()
    assert room.failsafe.episode_start == closed
    assert room.after(GRACE_S - 1).alarm == NONE
    assert room.after(2).alarm == LAPSE


def test_an_episode_starts_at_the_door_close_when_occupancy_is_reported_within_the_lookback() -> None:
    """Semantics 2.1: nobody enters through a closed door, so occupancy first reported within
    `occupancy_lookback_s` (120 s, the policy default, when the hub's config does not say) of the close
    dates the start back to the close, and the lapse is due a grace after the close, not after the PIR."""
    # Given a door closed, and nobody at the panel
    room = Room(policy()).reads("door", "closed")
    closed = room.clock.now()
    # When the PIR reports the child 20 s later
    room.after(20).reads("occupancy", "occupied")
    # Then the episode started at the close, and its lapse is already due
    assert room.failsafe.episode_start == closed
    assert room.alarm == LAPSE


def test_an_episode_starts_at_the_occupancy_reading_when_that_came_after_the_lookback() -> None:
    """Semantics 2.1: reported later than the lookback (a PIR that woke long after an empty room was
    shut), the start is the occupancy reading."""
    # Given a door closed on a room with a 60 s lookback
    room = Room(policy(occupancy_lookback_s=60)).reads("door", "closed")
    # When the PIR reports someone 61 s later
    occupied = room.after(61).clock.now()
    room.reads("occupancy", "occupied")
    # Then the episode starts at that reading, and the grace counts from it
    assert room.failsafe.episode_start == occupied
    assert room.after(GRACE_S - 1).alarm == NONE
    assert room.after(2).alarm == LAPSE


def test_an_episode_reported_at_the_end_of_the_lookback_still_starts_at_the_close() -> None:
    room = Room(policy(occupancy_lookback_s=60)).reads("door", "closed")
    closed = room.clock.now()
    room.after(60).reads("occupancy", "occupied")
    assert room.failsafe.episode_start == closed


def test_a_door_closed_again_within_the_reclose_grace_goes_on_with_the_same_episode() -> None:
    """Semantics 2.4: closed again within `reclose_grace_s` (30 s, the policy default, when the hub's
    config does not say) and no `vacant` after the opening: the same episode goes on, and 2.6: its
    duration counts from its start, not from the re-close."""
    # Given an episode of 1700 s in a room with a 1800 s limit, watched from the panel
    room = episode(policy(max_duration_s=1800), observer="present")
    start = room.failsafe.episode_start
    room.after(1700)
    # When the door opens for 5 s and closes again on the child
    room.reads("door", "open")
    assert room.alarm == NONE  # the door is open: no alarm while it is
    room.after(5).reads("door", "closed")
    # Then it is the same episode: the limit is due 1800 s after its start
    assert room.failsafe.episode_start == start
    assert room.after(94).alarm == NONE
    assert room.after(1).alarm == LocalAlarm("critical", "duration_limit")


def test_a_door_closed_again_after_the_reclose_grace_is_a_new_episode_from_the_new_close() -> None:
    # Given an episode in a room with a 20 s re-close grace
    room = episode(policy(reclose_grace_s=20), observer="present").after(100)
    # When the door opens and closes again 21 s later, the child still inside
    room.reads("door", "open").after(21).reads("door", "closed")
    # Then a new episode starts at the new close
    assert room.failsafe.episode_start == room.clock.now()


def test_a_door_closed_again_at_the_end_of_the_reclose_grace_goes_on_with_the_same_episode() -> None:
    room = episode(policy(reclose_grace_s=20), observer="present")
    start = room.failsafe.episode_start
    room.after(100).reads("door", "open").after(20).reads("door", "closed")
    assert room.failsafe.episode_start == start


def test_a_door_closed_again_after_the_room_was_vacant_is_a_new_episode() -> None:
    """Semantics 2.4: a `vacant` timed after the opening ends the episode: the child left. Another
    child (or the same one) shut in again is a new episode."""
    # Given an episode whose door opens
    room = episode(observer="present").after(100).reads("door", "open")
    # When the room reads vacant, then occupied again, and the door closes, all within the grace
    room.after(2).reads("occupancy", "vacant").after(2).reads("occupancy", "occupied")
    room.after(2).reads("door", "closed")
    # Then a new episode starts at that close
    assert room.failsafe.episode_start == room.clock.now()


def test_a_door_closed_again_on_a_room_read_vacant_before_it_opened_goes_on_with_the_episode() -> None:
    """Only a `vacant` timed after the opening ends it: a still child read vacant while the door was
    shut is still inside."""
    room = episode(observer="present")
    start = room.failsafe.episode_start
    room.after(60).reads("occupancy", "vacant").after(60).reads("door", "open")
    room.after(5).reads("door", "closed")
    assert room.failsafe.episode_start == start


def test_a_door_closed_again_within_the_grace_is_a_new_episode_when_the_policy_says_so() -> None:
    """Semantics 2.4, `reclose_is_new_episode`: a new episode from the re-close, even when the PIR last
    read vacant (nobody left: the child is shut in again)."""
    room = episode(policy(reclose_is_new_episode=True), observer="present")
    room.after(60).reads("occupancy", "vacant").after(60).reads("door", "open")
    room.after(5).reads("door", "closed")
    assert room.failsafe.episode_start == room.clock.now()


# ------------------------------------------------------------------------------------------ durations


def test_duration_alerts_light_a_warning_then_the_limit_is_critical_until_the_door_opens() -> None:
    numbers = policy(
        duration_alerts=[
            {"after_s": 600, "kind": "duration_warning", "tier": "room"},
            {"after_s": 1200, "kind": "duration_escalation", "tier": "senior"},
        ],
        max_duration_s=1800,
    )
    room = episode(numbers, observer="present")
    assert room.after(599).alarm == NONE
    assert room.after(1).alarm == LocalAlarm("warning", "duration_warning")
    assert room.after(599).alarm == LocalAlarm("warning", "duration_warning")
    assert room.after(1).alarm == LocalAlarm("warning", "duration_escalation")
    assert room.after(600).alarm == LocalAlarm("critical", "duration_limit")
    assert room.reads("door", "open").alarm == NONE


def test_a_lapse_outranks_a_duration_warning() -> None:
    numbers = policy(duration_alerts=[{"after_s": 10, "kind": "duration_warning", "tier": "room"}])
    room = episode(numbers)
    assert room.after(11).alarm == LocalAlarm("warning", "duration_warning")
    assert room.after(GRACE_S).alarm == LAPSE


# ------------------------------------------------------------------------------------------ check-in


def test_checkin_mode_without_a_check_in_lapses_a_grace_after_the_start() -> None:
    room = episode(policy("checkin"), observer="present")  # presence counts for nothing in checkin mode
    assert room.after(GRACE_S - 1).alarm == NONE
    assert room.after(2).alarm == LAPSE


def test_a_check_in_stops_the_alarm_and_proves_observation_for_the_interval() -> None:
    room = episode(policy("checkin")).after(GRACE_S + 1)
    assert room.alarm == LAPSE
    assert room.reads("check", "ok").alarm == NONE
    assert room.after(INTERVAL_S + GRACE_S - 1).alarm == NONE
    assert room.after(2).alarm == LAPSE


def test_a_check_in_shortly_before_the_door_closed_counts_for_the_episode() -> None:
    room = Room(policy("checkin")).reads("check", "ok").after(100)
    room.reads("occupancy", "occupied").reads("door", "closed")
    assert room.after(INTERVAL_S - 100 + GRACE_S - 1).alarm == NONE
    assert room.after(2).alarm == LAPSE


def test_a_check_in_long_before_the_episode_proves_nothing_and_the_grace_counts_from_the_start() -> None:
    room = Room(policy("checkin")).reads("check", "ok").after(INTERVAL_S + 60)
    room.reads("occupancy", "occupied").reads("door", "closed")
    assert room.after(GRACE_S - 1).alarm == NONE
    assert room.after(2).alarm == LAPSE


def test_both_modes_need_the_observer_and_a_check_in() -> None:
    room = episode(policy("both"), observer="present")
    assert room.after(GRACE_S + 1).alarm == LAPSE  # present, but never checked in
    assert room.reads("check", "ok").alarm == NONE
    room.reads("observer", "absent")
    assert room.after(GRACE_S - 1).alarm == NONE
    assert room.after(2).alarm == LAPSE  # checked in, but nobody at the panel


# ------------------------------------------------------------------------------- numbers and readings


def test_without_the_hubs_numbers_the_base_profiles_sound_and_the_episode_is_followed_from_its_start() -> (
    None
):
    """A device that never heard the hub's `config` still alarms (semantics 5.4), on the base profile's
    numbers (observer at the panel, a 15 s grace); the room's own, when they come, time the same
    episode from its real start."""
    room = episode(None)
    room.failsafe.policy = None
    assert room.after(14).alarm == NONE
    assert room.after(2).alarm == LAPSE  # 16 s unwatched: past the base profile's 15 s grace
    assert room.failsafe.episode_start is not None
    room.failsafe.policy = policy()  # the hub's config arrives late
    assert room.alarm == LAPSE


def test_the_later_reading_wins_and_an_older_or_repeated_one_changes_nothing() -> None:
    room = episode(observer="present")
    now = room.clock.now()
    earlier = Instant(now.mono_ms - 5000, now.wall - dt.timedelta(seconds=5))
    assert room.failsafe.observe("observer", "absent", earlier) is False  # a replayed old event
    assert room.failsafe.state()["observer"] == "present"
    assert room.failsafe.observe("door", "closed", now) is False  # the same reading again
    # Two devices with the same ts and different readings: the one heard last wins.
    assert room.failsafe.observe("lock", "released", now) is True
    assert room.failsafe.observe("lock", "engaged", now) is True
    assert room.failsafe.state()["lock"] == "engaged"
    later = room.after(1).clock.now()
    assert room.failsafe.observe("observer", "absent", later) is True
    assert room.failsafe.state() == {
        "observer": "absent",
        "occupancy": "occupied",
        "door": "closed",
        "lock": "engaged",
    }


def test_a_reading_from_another_device_is_placed_on_this_agents_monotonic_clock() -> None:
    now = FakeClock().now()
    ten_seconds_old = on_local_axis(now.wall - dt.timedelta(seconds=10), now)
    assert ten_seconds_old == Instant(now.mono_ms - 10_000, now.wall - dt.timedelta(seconds=10))
    # A device whose clock runs ahead cannot delay a timer: its reading counts from now.
    ahead = on_local_axis(now.wall + dt.timedelta(seconds=30), now)
    assert ahead.mono_ms == now.mono_ms


def test_a_jump_of_the_wall_clock_does_not_move_a_running_timer() -> None:
    room = episode()
    room.clock.jump_wall(dt.timedelta(hours=3))  # NTP syncs after a boot without a real-time clock
    assert room.after(GRACE_S - 1).alarm == NONE
    assert room.after(2).alarm == LAPSE


# --------------------------------------------------------------------------------------- who drives


def indicator(level: str, acknowledged: bool = False) -> IndicatorPayload:
    return IndicatorPayload.model_validate(
        {
            "v": 1,
            "level": level,
            "reason": "x",
            "ts": "2026-11-21T10:00:00.000Z",
            "acknowledged": acknowledged,
        }
    )


@pytest.mark.parametrize(
    ("level", "acknowledged", "led", "buzzer"),
    [
        ("critical", False, True, True),
        ("critical", True, True, False),
        ("warning", False, True, False),
        ("info", False, False, False),
        ("none", False, False, False),
    ],
)
def test_while_the_hub_drives_the_indicator_decides_whatever_the_local_fail_safe_says(
    level: str, acknowledged: bool, led: bool, buzzer: bool
) -> None:
    alarm = choose_alarm(LAPSE, indicator(level, acknowledged), hub_drives=True)
    assert (alarm.driver, alarm.level, alarm.led, alarm.buzzer) == ("hub", level, led, buzzer)


def test_while_the_hub_drives_no_indicator_yet_lights_nothing() -> None:
    assert choose_alarm(LAPSE, None, hub_drives=True) == Alarm("none", "", "hub", led=False, buzzer=False)


@pytest.mark.parametrize(
    ("local", "led", "buzzer"),
    [
        (LAPSE, True, True),
        (LocalAlarm("critical", "duration_limit"), True, True),
        (LocalAlarm("warning", "duration_warning"), True, False),
        (NONE, False, False),
    ],
)
def test_otherwise_the_local_fail_safe_decides_and_ignores_a_stale_indicator(
    local: LocalAlarm, led: bool, buzzer: bool
) -> None:
    alarm = choose_alarm(local, indicator("none"), hub_drives=False)
    assert (alarm.driver, alarm.level, alarm.reason, alarm.led, alarm.buzzer) == (
        "local",
        local.level,
        local.reason,
        led,
        buzzer,
    )
