"""The alert rules (semantics 2.5, 2.6, 3, 4 and 5), each a story on a fake clock: given a room, when
something happens or time passes, then exactly this alert is (or is not) raised, sent, escalated,
acknowledged or resolved. No sleeping: the clock is stepped."""

from __future__ import annotations

import datetime as dt

import pytest

from seclusion_hub.core.alerts import AlertSaved, IndicatorChanged, alert_id, duration_limit_s
from seclusion_hub.core.episode import account
from seclusion_hub.core.policy import Policy
from seclusion_hub.core.room import DeviceStatus, Heartbeat, RoomMachine, RoomState, SensorEvent
from seclusion_hub.core.site import RoomSpec
from seclusion_hub.errors import RejectedMessage

from .rooms import DEVICES, DOOR, PANEL, T0, Room, at

ALL_TIERS = frozenset({"room", "senior", "dsl", "head"})


def confined(room: Room, observer: str | None = "present") -> None:
    """Given a child in the room with the door closed at T0+2 (and the observer at the panel)."""
    if observer is not None:
        room.observer(observer, 0)
    room.occupancy("occupied", 1)
    room.door("closed", 2)
    assert room.machine.episode is not None
    assert room.machine.episode.started_at == at(2)


# --- supervision (semantics 3) ---------------------------------------------------------------------


def test_observer_away_for_one_second_less_than_the_grace_raises_nothing() -> None:
    room = Room(tiers=ALL_TIERS)
    confined(room)
    room.observer("absent", 10)
    room.run(24)  # 14 s away: the grace is 15 s
    room.observer("present", 24)
    room.run(100)
    assert room.alerts("supervision_lapse") == []
    assert room.sends("supervision_lapse") == []
    # The interval is still kept, however short (3.4).
    ep = room.machine.episode
    assert ep is not None
    acc = account(ep, at(100))
    assert [(lp.start, lp.end) for lp in acc.lapses] == [(at(10), at(24))]


def test_observer_away_for_one_second_more_than_the_grace_raises_the_lapse_at_exactly_the_grace() -> None:
    room = Room(tiers=ALL_TIERS)
    confined(room)
    room.observer("absent", 10)
    room.run(24.9)
    assert room.alerts("supervision_lapse") == []
    room.run(26)
    [lapse] = room.alerts("supervision_lapse")
    assert lapse.due_at == at(25)
    assert lapse.raised_at == at(25)
    assert not lapse.late
    assert (lapse.severity, lapse.tier, lapse.needs_ack) == ("critical", "room", True)
    [sent] = room.sends("supervision_lapse")
    assert (sent.tier, sent.reason) == ("room", "raised")
    assert room.indicator()[-1].level == "critical"

    room.observer("present", 26)
    [lapse] = room.alerts("supervision_lapse")
    assert lapse.resolved_at == at(26)
    assert lapse.resolved_by is None
    assert lapse.note == "supervised again"
    assert room.indicator()[-1].level == "info"  # the episode itself is still open


@pytest.mark.parametrize("supervision", ["observer", "checkin"])
def test_a_lapse_under_way_when_an_episode_opens_a_moment_ahead_of_the_hubs_clock_wakes_the_room(
    supervision: str,
) -> None:
    """The door device's clock is 5 ms ahead: the episode starts at a time the hub has not reached.
    Nobody is at the panel, so the lapse is due a grace after the start, and the room is woken then, not
    at the next message (the hub wakes a room only at its deadlines: alerts.md)."""
    room = Room(tiers=ALL_TIERS, supervision=supervision)
    room.observer("absent", -5)
    room.occupancy("occupied", 0)
    room.send(DOOR, "door", "closed", 1, arrive=0.995)
    woken = room.run_on_deadlines(100)
    assert 16.0 in woken
    [lapse] = room.alerts("supervision_lapse")
    assert (lapse.due_at, lapse.raised_at, lapse.late) == (at(16), at(16), False)


def test_never_present_since_the_start_is_a_lapse_due_a_grace_after_the_start() -> None:
    room = Room(tiers=ALL_TIERS)
    confined(room, observer=None)
    room.run(17.5)
    [lapse] = room.alerts("supervision_lapse")
    assert lapse.due_at == at(17)
    assert lapse.detail["since"] == "2026-11-23T10:00:02.000Z"


def test_a_missed_check_in_raises_the_lapse_a_grace_after_the_proof_runs_out() -> None:
    room = Room(tiers=ALL_TIERS, supervision="checkin", checkin_interval_s=60, lapse_grace_s=15)
    room.send(PANEL, "check", "ok", 0)  # proves observation until T0+60
    room.occupancy("occupied", 1)
    room.door("closed", 2)
    room.run(74.9)
    assert room.alerts("supervision_lapse") == []
    room.run(75.5)
    [lapse] = room.alerts("supervision_lapse")
    assert lapse.due_at == at(75)
    assert lapse.detail == {"since": "2026-11-23T10:01:00.000Z", "mode": "checkin"}
    room.send(PANEL, "check", "ok", 80)
    assert room.alerts("supervision_lapse", active=True) == []


def test_both_modes_need_the_observer_and_the_check_in() -> None:
    room = Room(tiers=ALL_TIERS, supervision="both", checkin_interval_s=60)
    room.send(PANEL, "check", "ok", 0)
    confined(room)  # observer present all along
    room.run(74.9)
    assert room.alerts("supervision_lapse") == []
    room.run(75.5)
    assert len(room.alerts("supervision_lapse", active=True)) == 1


@pytest.mark.parametrize("arrive", [30, 30.2])
def test_an_absence_of_the_same_millisecond_as_the_presence_that_ended_a_lapse_is_a_new_lapse(
    arrive: float,
) -> None:
    """The observer is back at T0+30 (the lapse alert raised at T0+25 resolves), and an `absent` of the
    same millisecond comes in the next message (a sensor bouncing at the resolution of `ts`): the
    later reading wins, so the child is unsupervised from T0+30, and that absence is a new lapse, alerted
    a grace later (5.1: a condition that comes back after resolution is a new alert), not merged into the
    resolved one and never alerted."""
    room = Room(tiers=ALL_TIERS)
    confined(room)
    room.observer("absent", 10)
    room.run(26)
    room.observer("present", 30)
    [first] = room.alerts("supervision_lapse")
    assert (first.resolved_at, first.condition_ended_at) == (at(30), at(30))
    room.send(PANEL, "observer", "absent", 30, arrive=arrive)
    assert room.machine.reading("observer") == "absent"
    room.run(44.9)
    assert room.alerts("supervision_lapse", active=True) == []
    room.run(46)
    [again] = room.alerts("supervision_lapse", active=True)
    assert again.id != first.id
    assert (again.due_at, again.raised_at, again.late) == (at(45), at(45), False)
    assert again.detail["since"] == "2026-11-23T10:00:30.000Z"
    assert [(s.alert.id, s.reason) for s in room.sends("supervision_lapse")] == [
        (first.id, "raised"),
        (again.id, "raised"),
    ]
    assert room.indicator()[-1].level == "critical"
    # The accounting agrees: two lapses, the time from T0+30 unsupervised.
    ep = room.machine.episode
    assert ep is not None
    acc = account(ep, at(60))
    assert [(lp.start, lp.end) for lp in acc.lapses] == [(at(10), at(30)), (at(30), at(60))]
    assert (acc.supervised_s, acc.unsupervised_s, acc.unknown_s) == (8, 50, 0)
    assert acc.longest_lapse_s == 30


def test_present_and_absent_of_one_millisecond_in_one_batch_end_the_lapse_and_begin_a_new_one() -> None:
    """Both readings of T0+30 come in one batch, `present` then `absent`: the later wins (the child is
    unsupervised from T0+30), the lapse alert raised at T0+25 resolves at the presence, as it would
    had the batch been split, and the absence after it is a new lapse, alerted a grace later."""
    room = Room(tiers=ALL_TIERS)
    confined(room)
    room.observer("absent", 10)
    room.run(26)
    room.replay([(PANEL, "observer", "present", 30), (PANEL, "observer", "absent", 30)], arrive=30.1)
    [first] = room.alerts("supervision_lapse")
    assert (first.resolved_at, first.condition_ended_at) == (at(30.1), at(30))
    room.run(46)
    [again] = room.alerts("supervision_lapse", active=True)
    assert (again.due_at, again.raised_at, again.late) == (at(45), at(45), False)
    assert again.detail["since"] == "2026-11-23T10:00:30.000Z"


def test_an_absence_of_the_same_millisecond_as_another_panels_presence_is_a_new_lapse() -> None:
    """Two devices at the viewing panel: one sees the observer back at T0+30, the other reads `absent`
    in the same millisecond, arriving after it. The later reading wins (semantics 1): a new lapse from
    T0+30, alerted a grace later."""
    other = "calm-1-panel-2"
    devices = [*DEVICES, {"id": other, "sensors": ["observer"]}]
    room = Room(tiers=ALL_TIERS, devices=devices)
    confined(room)
    room.observer("absent", 10)
    room.run(26)
    room.send(other, "observer", "present", 30)
    assert room.alerts("supervision_lapse", active=True) == []
    room.send(PANEL, "observer", "absent", 30, arrive=30.05)
    assert 45 in room.run_on_deadlines(46)
    [again] = room.alerts("supervision_lapse", active=True)
    assert (again.due_at, again.raised_at) == (at(45), at(45))
    assert len(room.alerts("supervision_lapse")) == 2
    ep = room.machine.episode
    assert ep is not None
    assert account(ep, at(60)).longest_lapse_s == 30


def test_with_no_grace_an_absence_after_a_presence_of_its_millisecond_is_due_at_once() -> None:
    """With `lapse_grace_s: 0` the absence after the presence is due at once, the moment it begins."""
    room = Room(tiers=ALL_TIERS, lapse_grace_s=0)
    confined(room)
    room.observer("absent", 10)
    room.observer("present", 30)
    [first] = room.alerts("supervision_lapse")
    assert first.resolved_at == at(30)
    room.observer("absent", 30)
    [again] = room.alerts("supervision_lapse", active=True)
    assert (again.due_at, again.raised_at) == (at(30), at(30))
    assert again.detail["since"] == "2026-11-23T10:00:30.000Z"


def test_an_absence_replaced_by_a_presence_of_the_same_millisecond_leaves_the_room_supervised() -> None:
    """`absent` then `present`, both of T0+30, in separate messages: the later wins, the observer is at
    the panel, and an absence that lasted no time at all is no lapse."""
    room = Room(tiers=ALL_TIERS)
    confined(room)
    room.observer("absent", 30)
    room.send(PANEL, "observer", "present", 30, arrive=30.2)
    room.run(100)
    assert room.alerts("supervision_lapse") == []
    ep = room.machine.episode
    assert ep is not None
    acc = account(ep, at(100))
    assert acc.lapses == () and (acc.supervised_s, acc.unsupervised_s) == (98, 0)
    assert acc.state_now == "supervised"


# --- escalation (semantics 5.2) --------------------------------------------------------------------


def lapse_raised_at_25(room: Room) -> None:
    confined(room)
    room.observer("absent", 10)
    room.run(25)


def test_an_unacknowledged_alert_climbs_every_tier_then_repeats_to_head() -> None:
    room = Room(tiers=ALL_TIERS, ack_timeout_s=60)
    lapse_raised_at_25(room)
    room.run(25 + 4 * 60, step=1)
    [lapse] = room.alerts("supervision_lapse")
    assert [(e.tier, e.at) for e in lapse.escalations] == [
        ("room", at(25)),
        ("senior", at(85)),
        ("dsl", at(145)),
        ("head", at(205)),
        ("head", at(265)),
    ]
    assert [(s.tier, s.reason) for s in room.sends("supervision_lapse")] == [
        ("room", "raised"),
        ("senior", "escalated"),
        ("dsl", "escalated"),
        ("head", "escalated"),
        ("head", "escalated"),
    ]
    assert lapse.tier == "head"


def test_escalation_skips_the_tiers_nobody_is_on() -> None:
    room = Room(tiers=frozenset({"senior", "head"}), ack_timeout_s=60)
    lapse_raised_at_25(room)
    room.run(25 + 3 * 60, step=1)
    [lapse] = room.alerts("supervision_lapse")
    assert [e.tier for e in lapse.escalations] == ["room", "senior", "head", "head"]


HEAD_AT_30_S = [{"after_s": 30, "kind": "duration_escalation", "tier": "head"}]


def test_an_alert_whose_tier_has_nobody_goes_to_the_highest_tier_below_that_has_and_repeats_there() -> None:
    # Given a school whose only people to tell are seniors, and a rule to the head (nobody)
    room = Room(tiers=frozenset({"senior"}), ack_timeout_s=60, duration_alerts=HEAD_AT_30_S)
    confined(room)
    # When the rule falls due and nobody acknowledges it
    room.run(32 + 3 * 60, step=1)
    # Then it is sent to the seniors at once, and again to them at each escalation, never to nobody
    [alert] = room.alerts("duration_escalation")
    assert [(s.tier, s.reason) for s in room.sends("duration_escalation")] == [
        ("senior", "raised"),
        ("senior", "escalated"),
        ("senior", "escalated"),
        ("senior", "escalated"),
    ]
    assert alert.tier == "senior"


def test_an_alert_whose_tier_has_nobody_goes_first_to_the_next_tier_up_that_has() -> None:
    # Given a rule to the seniors at a school with nobody there but a DSL and a head
    rule = [{"after_s": 30, "kind": "duration_escalation", "tier": "senior"}]
    room = Room(tiers=frozenset({"room", "dsl", "head"}), ack_timeout_s=60, duration_alerts=rule)
    confined(room)
    room.run(32 + 2 * 60, step=1)
    [alert] = room.alerts("duration_escalation")
    # Then it goes up to the DSL, not down to the room, then to the head, and stays there
    assert [e.tier for e in alert.escalations] == ["dsl", "head", "head"]


def test_past_head_with_nobody_on_head_it_repeats_to_the_highest_tier_that_has_someone() -> None:
    # Given a lapse at a school with people on the room and senior tiers only
    room = Room(tiers=frozenset({"room", "senior"}), ack_timeout_s=60)
    lapse_raised_at_25(room)
    room.run(25 + 3 * 60, step=1)
    [lapse] = room.alerts("supervision_lapse")
    # Then, nobody being further up, it repeats to the seniors
    assert [e.tier for e in lapse.escalations] == ["room", "senior", "senior", "senior"]


def test_a_room_alert_is_sent_to_the_room_first_even_with_nobody_on_the_room_tier() -> None:
    # Given a school with only seniors to tell: the room's own channels (the LED at the door and the
    # board) are how room staff are told, so a lapse is sent to the room first, then on after ack_timeout_s
    room = Room(tiers=frozenset({"senior"}), ack_timeout_s=60)
    lapse_raised_at_25(room)
    room.run(25 + 2 * 60, step=1)
    [lapse] = room.alerts("supervision_lapse")
    assert [e.tier for e in lapse.escalations] == ["room", "senior", "senior"]


def test_with_nobody_to_tell_at_all_an_alert_keeps_its_own_tier() -> None:
    # Given a site with no recipients at all: only the board and the LED are told
    room = Room(ack_timeout_s=60, duration_alerts=HEAD_AT_30_S)
    confined(room)
    room.run(32 + 60, step=1)
    [alert] = room.alerts("duration_escalation")
    assert [e.tier for e in alert.escalations] == ["head", "head"]


def test_acknowledging_stops_the_escalation_and_the_alert_is_sent_again_while_it_lasts() -> None:
    room = Room(tiers=ALL_TIERS, ack_timeout_s=60, renotify_s=300)
    lapse_raised_at_25(room)
    [lapse] = room.alerts("supervision_lapse")
    room.clock.set(at(30))
    acked, _ = room.machine.acknowledge(lapse.id, "Ms Duty", "api", at(30))
    assert (acked.acknowledged_at, acked.acknowledged_by, acked.acknowledged_via) == (
        at(30),
        "Ms Duty",
        "api",
    )
    assert acked.active
    room.run(329, step=1)
    assert [s.reason for s in room.sends("supervision_lapse")] == ["raised"]  # no escalation
    room.run(331, step=1)
    assert [(s.tier, s.reason) for s in room.sends("supervision_lapse")] == [
        ("room", "raised"),
        ("room", "renotify"),
    ]
    # Acknowledging again changes nothing.
    again, effects = room.machine.acknowledge(lapse.id, "Mr Other", "api", at(332))
    assert again.acknowledged_by == "Ms Duty"
    assert effects == []


def test_the_indicator_says_when_the_alerts_behind_it_are_acknowledged() -> None:
    room = Room(tiers=ALL_TIERS)
    lapse_raised_at_25(room)
    assert (room.indicator()[-1].level, room.indicator()[-1].acknowledged) == ("critical", False)
    [lapse] = room.alerts("supervision_lapse")
    _, effects = room.machine.acknowledge(lapse.id, "Ms Duty", "board", at(26))
    [changed] = [e for e in effects if isinstance(e, IndicatorChanged)]
    assert (changed.level, changed.reason, changed.acknowledged) == ("critical", "supervision_lapse", True)


def test_a_senior_resolves_an_alert_with_a_note_and_the_same_lapse_never_raises_it_again() -> None:
    room = Room(tiers=ALL_TIERS)
    lapse_raised_at_25(room)
    [lapse] = room.alerts("supervision_lapse")
    room.clock.set(at(40))
    resolved, _ = room.machine.resolve_alert(
        lapse.id, "Mrs Senior", "a member of staff is in the room", at(40)
    )
    assert (resolved.resolved_at, resolved.resolved_by) == (at(40), "Mrs Senior")
    assert resolved.note == "a member of staff is in the room"
    room.run(200, step=1)
    assert len(room.alerts("supervision_lapse")) == 1
    assert len(room.sends("supervision_lapse")) == 1  # resolved: no more escalation
    # A new lapse is a new alert.
    room.observer("present", 201)
    room.observer("absent", 210)
    room.run(226, step=1)
    assert len(room.alerts("supervision_lapse", active=True)) == 1


def test_the_start_of_an_episode_is_told_to_a_senior_once_and_needs_no_acknowledgement() -> None:
    room = Room(tiers=ALL_TIERS)
    confined(room)
    room.run(500, step=5)
    [started] = room.alerts("episode_started")
    assert (started.severity, started.tier, started.needs_ack, started.due_at) == (
        "info",
        "senior",
        False,
        at(2),
    )
    assert [(s.tier, s.reason) for s in room.sends("episode_started")] == [("senior", "raised")]
    room.door("open", 501)
    room.occupancy("vacant", 502)
    assert room.alerts("episode_started", active=True) == []


def test_an_alert_that_needs_no_acknowledgement_is_recorded_as_acknowledged_and_not_sent_again() -> None:
    # Given the start of an episode, told to a senior once (it needs no acknowledgement)
    room = Room(tiers=ALL_TIERS, renotify_s=300)
    confined(room)
    [started] = room.alerts("episode_started")
    # When a senior acknowledges it from the board, and the hub wakes the room only at its deadlines
    acked, _ = room.machine.acknowledge(started.id, "Ms Reed", "board", at(3))
    woken = room.run_on_deadlines(1000)
    # Then who acknowledged it is recorded, and it is never sent again: renotify is for alerts that
    # need acknowledgement (5.2), and the room is not woken for it
    assert (acked.acknowledged_at, acked.acknowledged_by, acked.acknowledged_via) == (
        at(3),
        "Ms Reed",
        "board",
    )
    assert (acked.active, acked.next_send_at) == (True, None)
    assert [(s.tier, s.reason) for s in room.sends("episode_started")] == [("senior", "raised")]
    assert 303.0 not in woken


def test_a_re_send_an_earlier_hub_stored_for_an_acknowledged_alert_that_needs_none_is_dropped() -> None:
    # Given an acknowledged episode_started whose stored state still holds a re-send at T0+303 (as an
    # earlier hub scheduled one for any acknowledged alert)
    room = Room(tiers=ALL_TIERS, renotify_s=300)
    confined(room)
    [started] = room.alerts("episode_started")
    room.machine.acknowledge(started.id, "Ms Reed", "board", at(3))
    started.next_send_at = at(303)
    # When the room is woken at that deadline, and time goes on
    room.run_on_deadlines(1000)
    # Then nothing more is sent, and nothing is waiting to be sent
    assert [s.reason for s in room.sends("episode_started")] == ["raised"]
    assert started.next_send_at is None


# --- duration (semantics 2.6) ----------------------------------------------------------------------


def test_duration_rules_fall_due_on_elapsed_time_each_to_its_tier() -> None:
    room = Room(tiers=ALL_TIERS, ack_timeout_s=3600)
    confined(room)
    room.run(601, step=1)
    assert room.alerts("duration_warning") == []
    room.run(1802, step=1)
    found = sorted(
        room.alerts("duration_warning") + room.alerts("duration_escalation"), key=lambda a: a.due_at
    )
    assert [(a.kind, a.due_at, a.raised_at, a.tier) for a in found] == [
        ("duration_warning", at(602), at(602), "room"),
        ("duration_escalation", at(1202), at(1202), "senior"),
        ("duration_escalation", at(1802), at(1802), "head"),
    ]
    room.door("open", 1900)
    room.occupancy("vacant", 1901)
    assert room.alerts("duration_escalation", active=True) == []
    assert all(a.note == "the episode ended" for a in found)


def test_the_duration_limit_takes_the_youngest_band_when_the_age_is_unknown() -> None:
    policy = Policy.model_validate(
        {"age_band_max_s": [{"max_age": 8, "max_s": 3600}, {"max_age": 17, "max_s": 7200}]}
    )
    assert duration_limit_s(policy, None) == 3600
    assert duration_limit_s(policy, 12) == 7200
    assert duration_limit_s(policy, 40) == 7200  # older than every band: the oldest band
    both = Policy.model_validate({"max_duration_s": 1800, "age_band_max_s": [{"max_age": 8, "max_s": 3600}]})
    assert duration_limit_s(both, 5) == 1800  # the shorter: never later than either says
    room = Room(tiers=ALL_TIERS, age_band_max_s=[{"max_age": 8, "max_s": 3600}], duration_alerts=[])
    confined(room)
    room.tick(3601.9)
    assert room.alerts("duration_limit") == []
    room.tick(3602)
    [limit] = room.alerts("duration_limit")
    assert (limit.severity, limit.tier, limit.due_at) == ("critical", "senior", at(3602))


def test_a_limit_raised_on_the_youngest_band_does_not_stand_in_for_the_childs_own() -> None:
    bands = [{"max_age": 8, "max_s": 3600}, {"max_age": 17, "max_s": 7200}]
    room = Room(tiers=ALL_TIERS, age_band_max_s=bands, duration_alerts=[])
    confined(room)
    room.tick(3700)
    [youngest] = room.alerts("duration_limit")
    ep = room.machine.episode
    assert ep is not None and youngest.due_at == at(3602)
    # The register says the child is 12: the limit is the 9-17 band's two hours.
    room.effects.extend(room.machine.attach_pupil(ep.id, "p-1", 12, "senior-user", at(3710)))
    assert youngest.resolved_at == at(3710)
    assert youngest.note == "the episode ended, or the child's age set another limit"
    assert room.alerts("duration_limit", active=True) == []
    room.tick(7203)
    [own] = room.alerts("duration_limit", active=True)
    assert own.due_at == at(7202) and own.detail == {"limit_s": "7200"}


def test_two_duration_alerts_are_two_rules_however_close_their_times() -> None:
    # Given two duration rules a second apart, at times `:g` would write alike (1e+06)
    room = Room(
        tiers=ALL_TIERS,
        duration_alerts=[
            {"after_s": 1000000, "kind": "duration_escalation", "tier": "senior"},
            {"after_s": 1000001, "kind": "duration_escalation", "tier": "head"},
        ],
    )
    confined(room)
    # When the episode has run past both
    room.tick(1000010, liveness=False)
    # Then each raised its own alert, to its own tier, saying its own time; the first keeps the key it
    # always had
    found = sorted(room.alerts("duration_escalation"), key=lambda a: a.due_at)
    assert [(a.due_at, a.tier, a.rule, a.detail["after_s"]) for a in found] == [
        (at(1000002), "senior", "1e+06", "1e+06"),
        (at(1000003), "head", "1000001.0", "1000001.0"),
    ]
    ep = room.machine.episode
    assert ep is not None
    assert [a.key for a in found] == [
        f"duration_escalation/{ep.id}/1e+06",
        f"duration_escalation/{ep.id}/1000001.0",
    ]


def test_a_rules_number_in_its_key_is_as_it_always_was_wherever_that_is_exact() -> None:
    # Given the usual numbers of duration rules and limits
    room = Room(
        tiers=ALL_TIERS,
        duration_alerts=[
            {"after_s": 600, "kind": "duration_warning", "tier": "room"},
            {"after_s": 1200.5, "kind": "duration_escalation", "tier": "senior"},
        ],
        age_band_max_s=[{"max_age": 8, "max_s": 3600}, {"max_age": 17, "max_s": 7200.25}],
    )
    confined(room)
    ep = room.machine.episode
    assert ep is not None
    # When they fall due (the child's age, attached, sets the later limit)
    room.effects.extend(room.machine.attach_pupil(ep.id, "p-1", 12, "senior-user", at(10)))
    room.tick(7300, liveness=False)
    # Then their keys say them as `:g` always did, so stored alerts keep their ids
    found = {a.key: a.id for a in room.alerts() if a.kind != "episode_started"}
    keys = [
        f"duration_warning/{ep.id}/600",
        f"duration_escalation/{ep.id}/1200.5",
        f"duration_limit/{ep.id}/7200.25",
    ]
    assert found == {key: alert_id("demo-school", "calm-1", key) for key in keys}


def test_two_limits_set_by_the_childs_age_are_two_alerts_however_close_their_times() -> None:
    # Given age bands whose limits `:g` would write alike (1e+06), and a child first said to be 10
    bands = [
        {"max_age": 8, "max_s": 1000000},
        {"max_age": 12, "max_s": 1000001},
        {"max_age": 17, "max_s": 1000002},
    ]
    room = Room(tiers=ALL_TIERS, age_band_max_s=bands, duration_alerts=[])
    confined(room)
    ep = room.machine.episode
    assert ep is not None
    room.effects.extend(room.machine.attach_pupil(ep.id, "p-1", 10, "senior-user", at(10)))
    room.tick(1000003.5, liveness=False)
    [first] = room.alerts("duration_limit", active=True)
    assert first.detail == {"limit_s": "1000001.0"}
    # When the register corrects the age to 15
    room.effects.extend(room.machine.attach_pupil(ep.id, "p-1", 15, "senior-user", at(1000003.6)))
    room.tick(1000005, liveness=False)
    # Then the first limit's alert resolves and the child's own limit raises its own
    assert first.note == "the episode ended, or the child's age set another limit"
    [own] = room.alerts("duration_limit", active=True)
    assert (own.due_at, own.detail) == (at(1000004), {"limit_s": "1000002.0"})


def test_a_child_taken_off_a_running_episode_brings_back_the_youngest_bands_limit() -> None:
    """Semantics 2.6: unknown age takes the youngest band. A child chosen by mistake (aged 15) and then
    taken off the record (`pupil_id: null`) leaves the episode's age unknown again: the limit is the
    youngest band's, not the mistaken child's."""
    bands = [{"max_age": 8, "max_s": 3600}, {"max_age": 17, "max_s": 7200}]
    room = Room(tiers=ALL_TIERS, age_band_max_s=bands, duration_alerts=[])
    confined(room)
    ep = room.machine.episode
    assert ep is not None
    room.effects.extend(room.machine.attach_pupil(ep.id, "p-1", 15, "senior-user", at(10)))
    room.effects.extend(room.machine.attach_pupil(ep.id, None, None, "senior-user", at(20)))
    assert (ep.pupil_id, ep.pupil_age) == (None, None)
    room.tick(3603, liveness=False)
    [limit] = room.alerts("duration_limit", active=True)
    assert limit.detail == {"limit_s": "3600"}


def test_reviews_recur_until_each_is_recorded() -> None:
    room = Room(
        tiers=ALL_TIERS,
        duration_alerts=[],
        reviews=[{"name": "nursing review", "first_s": 900, "every_s": 900, "tier": "dsl"}],
    )
    confined(room)
    room.tick(901)
    assert room.alerts("review_due") == []
    room.tick(902)
    [first] = room.alerts("review_due")
    assert (first.tier, first.due_at, first.rule) == ("dsl", at(902), "nursing review#1")
    ep = room.machine.episode
    assert ep is not None
    room.clock.set(at(950))
    room.machine.record_review(ep.id, "nursing review", "Nurse Lee", "calm, talking", at(950))
    assert (first.resolved_at, first.note) == (at(950), "the review was recorded")
    room.tick(1802)
    [second] = room.alerts("review_due", active=True)
    assert second.rule == "nursing review#2"
    # Not recorded: it stays, and escalates, and the third comes due beside it.
    room.tick(2702)
    assert sorted(a.rule for a in room.alerts("review_due", active=True)) == [
        "nursing review#2",
        "nursing review#3",
    ]


MEDICAL_REVIEW = [{"name": "medical review", "first_s": 100, "tier": "senior"}]


def released_before_the_review(room: Room) -> str:
    """Given a medical review due at T0+102, not recorded, and the child released at T0+120: returns the
    ended episode's id."""
    confined(room)
    room.run(110)
    [review] = room.alerts("review_due", active=True)
    assert review.due_at == at(102)
    room.door("open", 120)
    room.occupancy("vacant", 121)
    ended = room.machine.state.last_episode
    assert room.machine.episode is None and ended is not None
    return ended.id


def test_a_due_review_not_recorded_stays_active_after_the_episode_ends_until_it_is_recorded() -> None:
    # Given a review due during the episode and not recorded when the child is released
    room = Room(tiers=ALL_TIERS, duration_alerts=[], reviews=MEDICAL_REVIEW, ack_timeout_s=60)
    episode = released_before_the_review(room)
    # When time passes after the end
    room.run(300, step=1)
    # Then the alert is still active and still escalating (5's table: it resolves when the review is
    # recorded; the episode's end is not in its row)
    [review] = room.alerts("review_due")
    assert (review.active, review.note) == (True, None)
    assert [e.tier for e in review.escalations] == ["senior", "dsl", "head", "head"]
    # When the review is recorded on the ended episode, the room's latest
    room.clock.set(at(310))
    room.effects.extend(room.machine.record_review(episode, "medical review", "Dr Shah", "seen", at(310)))
    # Then it resolves, saying so
    assert (review.resolved_at, review.note) == (at(310), "the review was recorded")
    assert room.alerts("review_due", active=True) == []


def test_a_review_left_due_after_the_child_is_out_does_not_light_the_rooms_door() -> None:
    # Given a review due during the episode: the room's indicator shows the warning
    room = Room(tiers=ALL_TIERS, duration_alerts=[], reviews=MEDICAL_REVIEW)
    confined(room)
    room.run(110)
    assert room.indicator()[-1].level == "warning"
    # When the child is released with the review not recorded
    room.door("open", 120)
    room.occupancy("vacant", 121)
    room.run(200, step=1)
    # Then the alert goes on for the staff, but the door's LED no longer says someone is inside
    assert [a.active for a in room.alerts("review_due")] == [True]
    assert room.indicator()[-1].level == "none"
    assert room.machine.state.book.indicator.level == "none"
    # And a new episode's own alerts light it again as ever
    room.door("closed", 250)
    room.occupancy("occupied", 251)
    room.run(260, step=1)
    assert room.indicator()[-1].level == "info"


def test_a_due_review_left_after_the_episode_ends_survives_a_restart_and_a_senior_may_resolve_it() -> None:
    # Given a review still due after its episode ended
    room = Room(tiers=ALL_TIERS, duration_alerts=[], reviews=MEDICAL_REVIEW)
    released_before_the_review(room)
    [review] = room.alerts("review_due", active=True)
    # When the hub restarts from the room's stored state and time passes
    stored = room.machine.state.model_dump_json(exclude_none=True)
    room.machine = RoomMachine(
        "demo-school", room.spec, room.policy, RoomState.model_validate_json(stored), tiers=ALL_TIERS
    )
    room.run(200, step=1)
    # Then it is still active
    [review] = room.alerts("review_due", active=True)
    # And a senior member of staff may resolve it with a note
    resolved, _ = room.machine.resolve_alert(review.id, "Mrs Senior", "reviewed on the ward", at(201))
    assert (resolved.resolved_by, resolved.note) == ("Mrs Senior", "reviewed on the ward")
    room.run(260, step=1)
    assert room.alerts("review_due", active=True) == []


def test_a_due_review_is_not_resolved_by_the_next_episode_in_the_room() -> None:
    # Given a review still due after its episode (the first) ended
    room = Room(tiers=ALL_TIERS, duration_alerts=[], reviews=MEDICAL_REVIEW)
    first = released_before_the_review(room)
    [review] = room.alerts("review_due", active=True)
    # When a second episode opens in the room
    room.door("closed", 150)
    room.occupancy("occupied", 151)
    second = room.machine.episode
    assert second is not None and second.id != first
    room.run(200, step=1)
    # Then the first episode's review is still due, and can still be recorded on it (the room's latest)
    assert review.active
    room.clock.set(at(201))
    room.effects.extend(room.machine.record_review(first, "medical review", "Dr Shah", "seen", at(201)))
    assert (review.active, review.note) == (False, "the review was recorded")


def test_a_due_review_outlasts_even_the_episode_after_next_and_only_a_senior_can_then_resolve_it() -> None:
    # Given a review still due after its episode (the first) ended
    room = Room(tiers=ALL_TIERS, duration_alerts=[], reviews=MEDICAL_REVIEW)
    first = released_before_the_review(room)
    [review] = room.alerts("review_due", active=True)
    # When a second episode opens and ends before its own review falls due: the room no longer holds
    # the first
    room.door("closed", 150)
    room.occupancy("occupied", 151)
    room.run(200, step=1)
    room.door("open", 220)
    room.occupancy("vacant", 221)
    room.run(400, step=1)
    assert room.machine.state.last_episode is not None and room.machine.state.last_episode.id != first
    # Then the first episode's review is still active, never resolved on the room's behalf
    assert review.active and review.note is None
    assert room.alerts("review_due") == [review]
    # A review can no longer be recorded on that episode; a senior resolves the alert with a note
    with pytest.raises(RejectedMessage):
        room.machine.record_review(first, "medical review", "Dr Shah", "seen", at(401))
    room.machine.resolve_alert(review.id, "Mrs Senior", "the review was done on paper", at(402))
    assert (review.active, review.resolved_by) == (False, "Mrs Senior")


def test_a_review_raised_before_the_hub_knew_the_child_was_free_resolves_saying_so() -> None:
    # Given a review due at T0+102, raised on time, while the door device's events were held up
    room = Room(tiers=ALL_TIERS, duration_alerts=[], reviews=MEDICAL_REVIEW)
    confined(room)
    room.run(110, step=1)
    [review] = room.alerts("review_due", active=True)
    # When its outbox shows the door opened at T0+60 and the room was vacant after
    room.replay([(DOOR, "door", "open", 60), (DOOR, "occupancy", "vacant", 61)], arrive=120)
    # Then the episode ended before the review fell due: it resolves, and says that, not that it was
    # recorded
    assert room.machine.episode is None
    assert (review.active, review.note) == (False, "the episode ended before it fell due")


# --- the other rules -------------------------------------------------------------------------------


def test_no_movement_while_closed_is_a_welfare_check_and_an_occupancy_signal_resolves_it() -> None:
    room = Room(tiers=ALL_TIERS, no_movement_s=120)
    confined(room)
    room.occupancy("vacant", 10)
    assert room.machine.episode is not None  # vacant while closed never ends an episode
    room.run(129.9)
    assert room.alerts("no_movement") == []
    room.run(131)
    [alert] = room.alerts("no_movement")
    assert (alert.due_at, alert.severity, alert.tier) == (at(130), "critical", "room")
    room.occupancy("occupied", 140)
    assert alert.resolved_at == at(140)


def test_a_quiet_spell_learnt_of_only_from_a_replay_is_raised_late_for_the_record() -> None:
    """The door's device was away from T0+5 to T0+400; its outbox shows the room quiet from T0+10 to
    T0+300, longer than `no_movement_s`, then movement. Nobody could be told in time, but the welfare
    check that fell due at T0+130 is raised once, late, already resolved at T0+300, and never sent
    (semantics 4.3; until a review found it, nothing was raised: the rule looked only at the reading
    held now)."""
    room = Room(tiers=ALL_TIERS, no_movement_s=120)
    confined(room)
    room.replay([(DOOR, "occupancy", "vacant", 10), (DOOR, "occupancy", "occupied", 300)], arrive=400)
    [alert] = room.alerts("no_movement")
    assert (alert.due_at, alert.late, alert.active) == (at(130), True, False)
    assert alert.condition_ended_at == at(300)
    assert alert.sends == 0
    ep = room.machine.episode
    assert ep is not None
    assert [(s.start, s.end) for s in ep.quiet] == [(at(10), at(300))]
    room.run(410)
    assert len(room.alerts("no_movement")) == 1  # raised once, never again


def test_a_short_quiet_spell_in_a_replay_raises_nothing_and_a_live_one_resolves_at_its_end() -> None:
    room = Room(tiers=ALL_TIERS, no_movement_s=120)
    confined(room)
    room.replay([(DOOR, "occupancy", "vacant", 10), (DOOR, "occupancy", "occupied", 129)], arrive=200)
    assert room.alerts("no_movement") == []
    ep = room.machine.episode
    assert ep is not None and ep.quiet == []
    room.occupancy("vacant", 210)
    room.run(331)
    [alert] = room.alerts("no_movement")
    assert (alert.due_at, alert.late, alert.active) == (at(330), False, True)
    room.occupancy("occupied", 340)
    assert (alert.resolved_at, alert.condition_ended_at) == (at(340), at(340))
    room.run(350)
    assert len(room.alerts("no_movement")) == 1


def test_a_quiet_spell_until_the_episode_ended_learnt_of_late_is_raised_for_the_ended_episode() -> None:
    """The outbox shows the room quiet from T0+10 and the door opening at T0+300 with nobody coming
    out before the re-close grace ran out: the episode ended at T0+300 with the spell going on. The
    welfare check due at T0+130 belongs to that episode, raised late, resolved at its end."""
    room = Room(tiers=ALL_TIERS, no_movement_s=120)
    confined(room)
    room.replay([(DOOR, "occupancy", "vacant", 10), (DOOR, "door", "open", 300)], arrive=1000)
    room.heartbeat(DOOR, 1000, {"door": "open", "occupancy": "vacant"})  # device time moves on
    assert room.machine.episode is None
    [alert] = room.alerts("no_movement")
    assert (alert.due_at, alert.late, alert.active, alert.condition_ended_at) == (
        at(130),
        True,
        False,
        at(300),
    )


def test_a_lock_where_the_policy_forbids_it_raises_at_once_and_clears_on_release() -> None:
    room = Room(tiers=ALL_TIERS, lock_mode="forbidden")
    confined(room)
    room.send(DOOR, "lock", "engaged", 5)
    [alert] = room.alerts("lock_forbidden")
    assert (alert.due_at, alert.raised_at, alert.severity, alert.tier) == (at(5), at(5), "critical", "senior")
    assert alert.detail == {"lock_type": "held", "lock_mode": "forbidden"}
    room.send(DOOR, "lock", "released", 20)
    assert alert.resolved_at == at(20)


def test_locked_again_after_a_release_raises_again_each_engagement_its_own_alert() -> None:
    room = Room(tiers=ALL_TIERS, lock_mode="forbidden")
    confined(room)
    room.send(DOOR, "lock", "engaged", 5)
    room.send(DOOR, "lock", "released", 20)
    room.send(DOOR, "lock", "engaged", 40)
    first, second = sorted(room.alerts("lock_forbidden"), key=lambda a: a.due_at)
    assert (first.due_at, first.resolved_at) == (at(5), at(20))
    assert (second.due_at, second.raised_at, second.active) == (at(40), at(40), True)
    assert [s.alert.id for s in room.sends("lock_forbidden")] == [first.id, second.id]
    room.send(DOOR, "lock", "engaged", 45)  # the same engagement read again: nothing new
    assert len(room.alerts("lock_forbidden")) == 2
    room.send(DOOR, "lock", "released", 60)
    assert second.resolved_at == at(60)
    ep = room.machine.episode
    assert ep is not None and (ep.locked_at, ep.lock_engaged_at) == (at(5), at(40))


def test_a_maglock_engaged_while_the_door_is_held_raises_where_only_held_locks_are() -> None:
    room = Room(tiers=ALL_TIERS, lock_mode="held_only")
    devices = [
        {"id": DOOR, "sensors": ["door", "lock", "occupancy"], "lock_type": "held"},
        {"id": PANEL, "sensors": ["observer", "check", "lock"], "lock_type": "maglock"},
    ]
    room.spec = RoomSpec.model_validate({"id": "calm-1", "name": "Calm room 1", "devices": devices})
    room.machine = RoomMachine("demo-school", room.spec, room.policy, tiers=ALL_TIERS)
    room.machine.hub_started(T0)
    confined(room)
    room.send(DOOR, "lock", "engaged", 5)  # held shut: allowed
    assert room.alerts("lock_forbidden") == []
    room.send(PANEL, "lock", "engaged", 8)  # the maglock too, while the door is still held
    [alert] = room.alerts("lock_forbidden")
    assert (alert.due_at, alert.detail["lock_type"]) == (at(8), "maglock")
    ep = room.machine.episode
    assert ep is not None and ep.lock_type == "maglock"


def test_a_held_door_is_allowed_where_only_held_locks_are() -> None:
    room = Room(tiers=ALL_TIERS, lock_mode="held_only")
    confined(room)
    room.send(DOOR, "lock", "engaged", 5)
    assert room.alerts("lock_forbidden") == []
    assert room.machine.episode is not None and room.machine.episode.locked


def test_seclusion_where_the_policy_prohibits_it_raises_at_once_until_the_episode_ends() -> None:
    room = Room(tiers=ALL_TIERS, seclusion_allowed=False)
    confined(room)
    [alert] = room.alerts("seclusion_prohibited")
    assert (alert.due_at, alert.raised_at, alert.severity) == (at(2), at(2), "critical")
    room.door("open", 30)
    room.occupancy("vacant", 31)
    assert alert.resolved_at == at(31)


def test_a_device_offline_mid_episode_counts_unknown_time_and_is_critical_after_its_grace() -> None:
    room = Room(tiers=ALL_TIERS, offline_grace_s=20)
    confined(room)
    room.heartbeat(PANEL, 5, {"observer": "present"})  # the panel's last message
    room.status(PANEL, False, 10)  # its Last Will: offline from its last message
    room.run(24.9)
    assert room.alerts("device_offline") == []
    room.run(26)
    [alert] = room.alerts("device_offline")
    assert (alert.severity, alert.tier, alert.due_at) == ("critical", "room", at(25))
    assert alert.episode_id == room.machine.episode.id  # type: ignore[union-attr]
    ep = room.machine.episode
    assert ep is not None
    acc = account(ep, at(60))
    assert acc.unknown_s == 55.0  # from the panel's last message at T0+5
    assert acc.unsupervised_s == 0.0
    assert room.alerts("supervision_lapse") == []  # unknown time is not unsupervised
    room.status(PANEL, True, 60, boot="b2", uptime_s=1)
    assert alert.resolved_at == at(60)
    assert alert.note == "the device is back, or the episode ended"


def test_a_lapse_goes_on_through_another_devices_restart_as_one_alert_that_escalates() -> None:
    """The door device restarts while nobody is at the panel: the outage is unknown time in the
    accounting, but the lapse alert is not 'supervised again' when the door device is back: it stays
    the same alert and escalates on its own schedule (semantics 3.1, 5)."""
    room = Room(tiers=ALL_TIERS)
    confined(room)
    room.observer("absent", 10)
    room.run(26)
    [lapse] = room.alerts("supervision_lapse")
    assert lapse.due_at == at(25) and lapse.tier == "room"
    room.heartbeat(DOOR, 84, {"door": "closed", "occupancy": "occupied"})
    room.status(DOOR, False, 85)  # its Last Will
    room.status(DOOR, True, 90, boot="b2", uptime_s=2)  # back, after a restart: the gap stays unknown
    room.heartbeat(DOOR, 91, {"door": "closed", "occupancy": "occupied"})
    room.run(100)
    assert room.alerts("supervision_lapse") == [lapse] and lapse.active
    assert [e.tier for e in lapse.escalations] == ["room", "senior"]  # at T0+85, 60 s after it was raised
    ep = room.machine.episode
    assert ep is not None
    acc = account(ep, at(100))
    assert acc.unknown_s == 6.0 and acc.unsupervised_s == 84.0  # T0+84 to T0+90 unknown
    room.observer("present", 120)
    assert lapse.resolved_at == at(120) and lapse.note == "supervised again"


def test_a_lapse_that_began_after_a_device_went_quiet_is_not_hidden_by_its_outage() -> None:
    """The door device's last message is at T0+72; the panel, online, reports the observer gone at
    T0+73; the lapse alert is raised at T0+88. When the door device's Last Will arrives, its outage is
    dated from T0+72 and the time is unknown, but the alert stays: nobody was seen at the panel."""
    room = Room(tiers=ALL_TIERS, offline_grace_s=20)
    confined(room)
    room.heartbeat(DOOR, 72, {"door": "closed", "occupancy": "occupied"})
    room.observer("absent", 73)
    room.run(89)
    [lapse] = room.alerts("supervision_lapse")
    assert lapse.due_at == at(88)
    room.status(DOOR, False, 95)
    room.run(150)
    assert lapse.active and [e.tier for e in lapse.escalations] == ["room", "senior"]
    assert [a.severity for a in room.alerts("device_offline")] == ["critical"]
    ep = room.machine.episode
    assert ep is not None and account(ep, at(150)).unknown_s == 78.0  # counted unknown, all the same


def test_an_outage_that_outlasts_its_episode_goes_on_as_a_warning() -> None:
    room = Room(tiers=ALL_TIERS, offline_grace_s=20)
    confined(room)
    room.heartbeat(PANEL, 5, {"observer": "present"})
    room.status(PANEL, False, 10)
    room.run(26)
    [critical] = room.alerts("device_offline")
    room.door("open", 40)
    room.occupancy("vacant", 41)
    assert room.machine.episode is None
    assert critical.resolved_at == at(41) and critical.note == "the device is back, or the episode ended"
    [warning] = room.alerts("device_offline", active=True)
    assert (warning.severity, warning.tier, warning.episode_id) == ("warning", "senior", None)


def test_a_device_offline_outside_an_episode_is_a_warning_to_a_senior() -> None:
    room = Room(tiers=ALL_TIERS, offline_grace_s=20, heartbeat_s=10)
    room.observer("present", 0)
    room.occupancy("vacant", 0)
    room.door("open", 0)
    room.tick(29.9)
    room.tick(30)  # three heartbeats of silence since T0+0
    room.tick(30.1)
    alerts = room.alerts("device_offline")
    assert sorted((a.rule, a.severity, a.tier, a.due_at) for a in alerts) == [
        (DOOR, "warning", "senior", at(30)),
        (PANEL, "warning", "senior", at(30)),
    ]
    assert all(not a.late for a in alerts)  # due when the hub could first know


def test_a_sensor_fault_is_raised_at_once_and_cleared_by_the_device() -> None:
    room = Room(tiers=ALL_TIERS)
    room.send(DOOR, "fault", "door-sensor-disconnected", 5)
    [alert] = room.alerts("sensor_fault")
    assert (alert.severity, alert.tier, alert.detail) == (
        "warning",
        "senior",
        {"device": DOOR, "code": "door-sensor-disconnected"},
    )
    room.send(DOOR, "fault", "ok", 50)
    assert alert.resolved_at == at(50)


def test_a_different_fault_code_goes_on_with_the_same_sensor_fault_until_the_device_says_ok() -> None:
    # Given a device's fault, unacknowledged and escalated from senior to dsl at T0+65
    room = Room(tiers=ALL_TIERS)
    room.send(DOOR, "fault", "pir-stuck", 5)
    room.run(70)
    [fault] = room.alerts("sensor_fault")
    assert fault.tier == "dsl"
    # When the device reports another fault code, first as an event, then in a heartbeat
    room.send(DOOR, "fault", "door-sensor-disconnected", 80)
    room.run(90)
    # Then it is the same alert, still active and escalating on its own schedule, saying the latest code
    [fault] = room.alerts("sensor_fault")
    assert (fault.active, fault.due_at, fault.note) == (True, at(5), None)
    assert fault.detail == {"device": DOOR, "code": "door-sensor-disconnected"}
    assert [e.tier for e in fault.escalations] == ["senior", "dsl"]
    updated = [e for e in room.effects if isinstance(e, AlertSaved) and e.change == "updated"]
    assert [e.alert.detail["code"] for e in updated] == ["door-sensor-disconnected"]
    room.heartbeat(DOOR, 100, {"fault": "pir-stuck"})
    room.run(130)
    [fault] = room.alerts("sensor_fault")
    assert fault.active and fault.detail["code"] == "pir-stuck"
    assert [e.tier for e in fault.escalations] == ["senior", "dsl", "head"]
    # And only `fault: ok` from the device resolves it; a fault after that is a new alert
    room.send(DOOR, "fault", "ok", 140)
    assert (fault.resolved_at, fault.note) == (at(140), "the device reported its fault cleared")
    room.send(DOOR, "fault", "pir-stuck", 150)
    assert [a.due_at for a in room.alerts("sensor_fault", active=True)] == [at(150)]


def test_a_sensor_fault_stored_before_the_run_was_kept_goes_on_with_the_same_alert() -> None:
    # Given a room state stored by a hub that did not keep when a device's faults began: its active
    # sensor_fault is keyed by the fault reading it holds
    room = Room(tiers=ALL_TIERS)
    room.send(DOOR, "fault", "pir-stuck", 5)
    [fault] = room.alerts("sensor_fault")
    room.machine.state.devices[DOOR].fault_since = None
    stored = room.machine.state.model_dump_json(exclude_none=True)
    assert "fault_since" not in stored
    room.machine = RoomMachine(
        "demo-school", room.spec, room.policy, RoomState.model_validate_json(stored), tiers=ALL_TIERS
    )
    # When the restored room hears of another fault code
    room.send(DOOR, "fault", "door-sensor-disconnected", 80)
    # Then the stored alert goes on, neither resolved nor raised again
    [still] = room.machine.state.book.alerts.values()
    assert (still.id, still.active, still.detail["code"]) == (fault.id, True, "door-sensor-disconnected")
    assert [a.id for a in room.alerts("sensor_fault")] == [fault.id]


def test_a_clock_off_by_more_than_the_bound_raises_clock_skew_and_its_times_are_corrected() -> None:
    room = Room(tiers=ALL_TIERS, max_clock_skew_s=2)
    for t in (10, 20, 30):
        # The door device's clock runs 5 s behind the hub's.
        room.clock.set(at(t))
        hb = Heartbeat(device=DOOR, ts=at(t - 5), epoch=0, last_seq=room.seq[DOOR], state={})
        room.machine.handle(hb, at(t))
        room.effects.extend(room.machine.tick(at(t), liveness=False))
    [alert] = room.alerts("clock_skew")
    assert (alert.needs_ack, alert.detail["offset_s"]) == (False, "5.000")
    room.observer("present", 31)
    # The door closes at 40 by the hub's clock, 35 by the device's: the episode starts at 40.
    for kind, value in (("occupancy", "occupied"), ("door", "closed")):
        room.seq[DOOR] += 1
        ev = SensorEvent(device=DOOR, kind=kind, value=value, ts=at(35), seq=room.seq[DOOR])
        room.machine.handle(ev, at(40))
    ep = room.machine.episode
    assert ep is not None
    assert ep.started_at == at(40)
    assert ep.clock_uncertain


def test_a_replay_reveals_a_lapse_that_already_ended_raised_once_late_and_never_sent() -> None:
    room = Room(tiers=ALL_TIERS)
    confined(room)
    # The panel's outbox arrives at T0+100: the observer left at 10 and came back at 40.
    room.replay([(PANEL, "observer", "absent", 10), (PANEL, "observer", "present", 40)], arrive=100)
    [lapse] = room.alerts("supervision_lapse")
    assert (lapse.due_at, lapse.raised_at, lapse.late) == (at(25), at(100), True)
    assert lapse.resolved_at == at(100)
    assert lapse.condition_ended_at == at(40)
    assert room.sends("supervision_lapse") == []
    room.run(400, step=5)
    assert len(room.alerts("supervision_lapse")) == 1  # raised once


def test_a_late_lapse_that_still_holds_is_sent_once_marked_late() -> None:
    room = Room(tiers=ALL_TIERS)
    confined(room)
    room.replay([(PANEL, "observer", "absent", 10)], arrive=100)
    [lapse] = room.alerts("supervision_lapse")
    assert lapse.late and lapse.active
    assert [(s.tier, s.reason) for s in room.sends("supervision_lapse")] == [("room", "late")]


def test_alerts_of_a_room_in_maintenance_are_recorded_not_sent() -> None:
    room = Room(tiers=ALL_TIERS)
    room.machine.set_maintenance(at(3600), "testing the sensors", at(0))
    lapse_raised_at_25(room)
    [lapse] = room.alerts("supervision_lapse")
    assert lapse.held
    room.run(400, step=5)
    assert room.sends() == []
    assert all(i.level == "none" for i in room.indicator())


def test_maintenance_begun_during_a_real_episode_never_holds_that_childs_alerts() -> None:
    room = Room(tiers=ALL_TIERS)
    confined(room)  # a real child, before anyone switched the room to maintenance
    room.effects.extend(room.machine.set_maintenance(at(3600), "cleaning", at(5)))
    room.observer("absent", 10)
    room.run(25)
    [lapse] = room.alerts("supervision_lapse")
    assert not lapse.held
    assert [(s.tier, s.reason) for s in room.sends("supervision_lapse")] == [("room", "raised")]


def unplugged_for_cleaning() -> Room:
    """A room in maintenance until T0+600, its two devices silent from T0 (found out at T0+30), watched
    to T0+100."""
    room = Room(tiers=ALL_TIERS, offline_grace_s=20, heartbeat_s=10)
    room.effects.extend(room.machine.set_maintenance(at(600), "cleaning", at(0)))
    room.observer("present", 0)
    room.occupancy("vacant", 0)
    room.door("open", 0)
    for t in range(5, 105, 5):
        room.tick(t)
    return room


def test_a_room_alert_held_in_maintenance_is_sent_when_maintenance_ends_if_it_still_holds() -> None:
    room = unplugged_for_cleaning()
    offline = room.alerts("device_offline")
    assert len(offline) == 2 and all(a.held and a.active for a in offline)
    assert room.sends() == []
    room.effects.extend(room.machine.set_maintenance(None, None, at(120)))
    room.tick(120)
    sent = room.sends("device_offline")
    assert sorted((s.alert.rule, s.tier, s.reason) for s in sent) == [
        (DOOR, "senior", "late"),
        (PANEL, "senior", "late"),
    ]
    assert all(not a.held for a in room.alerts("device_offline"))
    assert len([e for e in room.effects if isinstance(e, AlertSaved) and e.change == "released"]) == 2


def test_maintenance_that_runs_out_by_itself_wakes_the_room_to_tell_what_it_held() -> None:
    room = unplugged_for_cleaning()
    assert all(a.held for a in room.alerts("device_offline"))
    # Nothing else will happen in this room (its devices are unplugged): its next wake-up is the end.
    assert room.machine.next_deadline(liveness=False) == at(600)
    room.tick(600)
    assert sorted(s.alert.rule for s in room.sends("device_offline")) == [DOOR, PANEL]


def test_a_test_episode_that_goes_on_after_maintenance_is_no_longer_silent() -> None:
    room = Room(tiers=ALL_TIERS)
    room.effects.extend(room.machine.set_maintenance(at(300), "testing the sensors", at(0)))
    lapse_raised_at_25(room)
    ep = room.machine.episode
    assert ep is not None and ep.test
    [lapse] = room.alerts("supervision_lapse")
    assert lapse.held and room.sends() == []
    room.run(299, step=5)
    assert room.sends() == []
    room.run(301, step=1)  # maintenance is over, and the door is still closed on someone
    assert not lapse.held
    assert [(s.tier, s.reason) for s in room.sends("supervision_lapse")] == [("room", "late")]


@pytest.mark.parametrize("grace", [0, 5, 15])
def test_the_lapse_is_due_exactly_the_grace_after_the_absence(grace: float) -> None:
    room = Room(tiers=ALL_TIERS, lapse_grace_s=grace)
    confined(room)
    room.observer("absent", 10)
    room.run(10 + grace + 0.5)
    [lapse] = room.alerts("supervision_lapse")
    assert lapse.due_at == at(10) + dt.timedelta(seconds=grace)
    assert lapse.raised_at - lapse.due_at <= dt.timedelta(seconds=0.1)


def test_late_data_about_an_ended_episode_never_raises_its_alerts_twice() -> None:
    room = Room(
        tiers=ALL_TIERS, duration_alerts=[{"after_s": 60, "kind": "duration_warning", "tier": "room"}]
    )
    confined(room)
    room.run(70, step=1)
    room.door("open", 100)
    room.occupancy("vacant", 101)
    assert room.machine.episode is None
    assert len(room.alerts("duration_warning")) == 1
    # The panel's outbox replays an absence and a return that fall inside the ended episode.
    room.replay([(PANEL, "observer", "absent", 20), (PANEL, "observer", "present", 50)], arrive=200)
    assert len(room.alerts("duration_warning")) == 1
    assert len(room.alerts("episode_started")) == 1
    [lapse] = room.alerts("supervision_lapse")
    assert (lapse.late, lapse.active, lapse.due_at) == (True, False, at(35))


def test_an_episode_that_ended_before_a_crash_is_still_evaluated_after_it() -> None:
    room = Room(tiers=ALL_TIERS)
    confined(room, observer=None)
    # The whole episode arrives in one batch and the hub dies before it evaluates the alerts (during
    # its backlog, say): the room's stored state is all a restarted hub has.
    room.clock.set(at(300))
    for kind, value, t in (("door", "open", 60), ("occupancy", "vacant", 61)):
        room.seq[DOOR] += 1
        event = SensorEvent(device=DOOR, kind=kind, value=value, ts=at(t), seq=room.seq[DOOR])
        room.machine.handle(event, at(300))
    snapshot = room.machine.state.model_dump_json()
    restarted = RoomMachine(
        "demo-school", room.spec, room.policy, RoomState.model_validate_json(snapshot), tiers=ALL_TIERS
    )
    effects = restarted.tick(at(301))
    lapses = [e.alert for e in effects if isinstance(e, AlertSaved) and e.alert.kind == "supervision_lapse"]
    assert [(a.due_at, a.late, a.active) for a in lapses] == [(at(17), True, False)]
    # Only its key stays in the room's state, so that late data cannot raise it again
    assert lapses[0].key in restarted.state.book.resolved and lapses[0].key not in restarted.state.book.alerts


# --- woken only at its deadlines, as the hub does -------------------------------------------------


def test_an_absence_applied_in_the_same_millisecond_as_its_ts_still_sets_the_deadline() -> None:
    room = Room(tiers=ALL_TIERS)
    confined(room)
    room.send(PANEL, "observer", "absent", 10.0004, arrive=10.0004)
    room.run_on_deadlines(100)
    [lapse] = room.alerts("supervision_lapse")
    assert lapse.due_at == at(25.0004)
    assert lapse.raised_at == lapse.due_at


def test_an_absence_timed_by_a_clock_a_little_ahead_still_sets_the_deadline() -> None:
    room = Room(tiers=ALL_TIERS)
    confined(room)
    room.send(PANEL, "observer", "absent", 10.020, arrive=10.0)  # the panel's clock runs 20 ms ahead
    room.run_on_deadlines(100)
    [lapse] = room.alerts("supervision_lapse")
    assert (lapse.due_at, lapse.raised_at, lapse.late) == (at(25.020), at(25.020), False)


def test_a_check_in_running_out_wakes_the_room_when_the_lapse_falls_due() -> None:
    room = Room(tiers=ALL_TIERS, supervision="checkin", checkin_interval_s=60, lapse_grace_s=15)
    room.send(PANEL, "check", "ok", 0)
    room.occupancy("occupied", 1)
    room.door("closed", 2)
    woken = room.run_on_deadlines(100)
    assert 75.0 in woken
    [lapse] = room.alerts("supervision_lapse")
    assert (lapse.due_at, lapse.raised_at) == (at(75), at(75))


def test_escalations_and_duration_rules_fire_on_their_deadlines_alone() -> None:
    room = Room(tiers=ALL_TIERS, ack_timeout_s=60)
    confined(room)
    room.observer("absent", 10)
    room.run_on_deadlines(700)
    [lapse] = room.alerts("supervision_lapse")
    assert [e.at for e in lapse.escalations][:4] == [at(25), at(85), at(145), at(205)]
    [warning] = room.alerts("duration_warning")
    assert warning.raised_at == at(602)


def test_with_no_grace_an_absence_wakes_the_room_once_and_raises_the_lapse_at_that_moment() -> None:
    # Given a policy with no grace (0 is allowed) and a child confined with the observer present
    room = Room(tiers=ALL_TIERS, lapse_grace_s=0)
    confined(room)
    # When the observer leaves at T0+10 and the hub wakes the room only at its deadlines
    room.observer("absent", 10)
    woken = room.run_on_deadlines(60)
    # Then the lapse is raised at the moment of the absence, on time, and the room is not woken again
    # and again at that moment
    [lapse] = room.alerts("supervision_lapse")
    assert (lapse.due_at, lapse.raised_at, lapse.late) == (at(10), at(10), False)
    assert woken.count(10.0) <= 1


def test_with_no_grace_a_check_in_running_out_raises_the_lapse_when_its_proof_ends() -> None:
    # Given check-in supervision with no grace, and a check-in at T0 that proves observation until T0+60
    room = Room(tiers=ALL_TIERS, supervision="checkin", checkin_interval_s=60, lapse_grace_s=0)
    room.send(PANEL, "check", "ok", 0)
    room.occupancy("occupied", 1)
    room.door("closed", 2)
    # When nothing more arrives and the hub wakes the room only at its deadlines
    woken = room.run_on_deadlines(120)
    # Then the room is woken once at T0+60 and the lapse is raised then, on time
    assert woken.count(60.0) == 1
    [lapse] = room.alerts("supervision_lapse")
    assert (lapse.due_at, lapse.raised_at, lapse.late) == (at(60), at(60), False)


def test_with_no_grace_an_episode_opened_with_nobody_at_the_panel_raises_the_lapse_at_its_start() -> None:
    # Given a policy with no grace and nobody at the panel
    room = Room(tiers=ALL_TIERS, lapse_grace_s=0)
    # When a child is confined at T0+2
    confined(room, observer=None)
    room.run_on_deadlines(60)
    # Then the lapse is raised at the start, since when nobody has been at the panel
    [lapse] = room.alerts("supervision_lapse")
    assert (lapse.due_at, lapse.raised_at, lapse.late) == (at(2), at(2), False)
    assert lapse.detail["since"] == "2026-11-23T10:00:02.000Z"


def test_a_duration_rule_reached_by_an_episode_that_ended_a_moment_ahead_of_the_hubs_clock_is_raised() -> (
    None
):
    """2.6/4.3: the door device's clock runs 1.5 s ahead of the hub's (under max_clock_skew_s: not
    corrected). The child is confined from T0 to T0+600.5 by the device's clock (elapsed_s 600.5), past
    the 600 s duration_warning. The episode ends in a batch the hub applies at its T0+599.3: an ended
    episode is evaluated once (`unevaluated` is emptied), and its warning, not yet due by the hub's
    clock, was dropped then and never looked at again: no alert, not even late and resolved (found by a
    review). Now it is looked at again when the hub's clock reaches the due time, and raised late."""
    room = Room(tiers=frozenset({"room", "senior"}))
    room.send(PANEL, "observer", "present", -5, arrive=-6.5)
    room.send(DOOR, "occupancy", "occupied", -1, arrive=-2.5)
    room.send(DOOR, "door", "closed", 0, arrive=-1.5)
    room.run(598)
    room.send(DOOR, "door", "open", 600.5, arrive=599.0)
    room.send(DOOR, "occupancy", "vacant", 600.8, arrive=599.3)
    room.run(700)
    ended = room.machine.state.last_episode
    assert ended is not None and ended.elapsed_s(at(700)) == 600.5
    assert [a.kind for a in room.alerts("duration_warning")] == ["duration_warning"]


def test_a_hub_clock_put_back_mid_episode_never_loses_the_duration_warning() -> None:
    """4.5 with the hub's own clock stepping: the hub's clock runs 600 s ahead, so every device (right
    all along) is corrected +600 s (clock_skew). At T0+100 NTP puts the hub right. The door device
    sends boot and mono_ms, so the episode is recorded with its true 700 s (door closed T0+1, opened
    T0+701). But its start stays in the old frame (T0+601 on the hub's clock): the live warning at
    600 s was not due by the hub's clock while the child was inside, and when the episode ends at
    T0+701 (hub) its warning is due at T0+1201: it was dropped with the ended episode, never raised
    (found by a review). Now it is raised, late, when the hub's clock reaches it."""
    room = Room(heartbeat_s=10, tiers=frozenset({"room", "senior"}))
    m = room.machine
    ahead = 600

    def hb(dev: str, t: float, skew: float, state: dict[str, str]) -> None:
        m.handle(
            Heartbeat(device=dev, ts=at(t), epoch=0, last_seq=room.seq[dev], state=state, uptime_s=1000 + t),
            at(t + skew),
        )
        room.effects.extend(m.tick(at(t + skew), liveness=False))

    def ev(dev: str, kind: str, value: str, t: float, skew: float) -> None:
        room.seq[dev] += 1
        e = SensorEvent(
            device=dev,
            kind=kind,
            value=value,
            ts=at(t),
            seq=room.seq[dev],
            boot="b",
            mono_ms=int((1000 + t) * 1000),
        )
        m.handle(e, at(t + skew))
        room.effects.extend(m.tick(at(t + skew), liveness=False))

    for d in (DOOR, PANEL):
        m.handle(DeviceStatus(device=d, online=True, ts=at(-50), boot="b", uptime_s=950), at(-50 + ahead))
    for t in (-40, -30, -20):
        hb(DOOR, t, ahead, {})
        hb(PANEL, t, ahead, {})
    ev(PANEL, "observer", "present", -5, ahead)
    ev(DOOR, "occupancy", "occupied", 0, ahead)
    ev(DOOR, "door", "closed", 1, ahead)
    for t in range(100, 700, 10):  # the hub's clock is right from here on
        hb(DOOR, t, 0, {"door": "closed", "occupancy": "occupied"})
        hb(PANEL, t, 0, {"observer": "present"})
    ev(DOOR, "door", "open", 701, 0)
    ev(DOOR, "occupancy", "vacant", 703, 0)
    for t in range(710, 2000, 10):
        hb(DOOR, t, 0, {"door": "open", "occupancy": "vacant"})
        hb(PANEL, t, 0, {"observer": "present"})
    ended = m.state.last_episode
    assert ended is not None and ended.elapsed_s(at(2000)) == 700  # the record itself is right
    assert room.alerts("duration_warning"), "a 700 s confinement never had its 600 s warning"


def test_an_outage_warning_is_not_resolved_as_the_device_back_while_it_is_still_offline() -> None:
    """A device's outage warning (raised outside any episode) gives way to the episode's own critical
    alert when an episode opens dated back (2.1) to before the outage began: its record says so, never
    "the device is back" while it is still offline."""
    room = Room(tiers=ALL_TIERS, offline_grace_s=20, heartbeat_s=10)
    room.door("closed", 5)  # nobody seen inside yet: no episode
    room.observer("present", 6)
    room.status(PANEL, False, 10)  # the panel's Last Will: offline from its last message (T0+6)
    room.run(40, step=1)
    [warning] = room.alerts("device_offline")
    assert warning.active and warning.episode_id is None and warning.severity == "warning"

    room.occupancy("occupied", 60)  # within occupancy_lookback_s: the episode starts at the close, T0+5
    assert room.machine.episode is not None and room.machine.episode.started_at == at(5)
    room.run(70, step=1)
    assert not room.machine.state.devices[PANEL].online, "the panel is still offline"
    warning = next(a for a in room.alerts("device_offline") if a.episode_id is None)
    # The device is not back: the warning does not say it is; the episode's critical alert is raised.
    assert warning.active or warning.note != "the device is back", (warning.resolved_at, warning.note)
    assert warning.note == "still offline: the episode's own alert speaks for it"
    [critical] = [a for a in room.alerts("device_offline") if a.episode_id is not None]
    assert critical.severity == "critical" and critical.active
