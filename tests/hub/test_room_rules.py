"""The room rules of semantics sections 2 and 4, each told as a story with a fake clock."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from seclusion_hub.core.alerts import AlertSaved
from seclusion_hub.core.episode import Episode, account
from seclusion_hub.core.room import (
    DeviceStatus,
    EpisodeSaved,
    Heartbeat,
    IncidentOpened,
    IncidentStatusChanged,
    Note,
    OlderLoss,
    RoomMachine,
    RoomState,
    SensorEvent,
)
from seclusion_hub.errors import RejectedMessage
from seclusion_hub.store import room_state_json
from tests.hub.rooms import DOOR, INSIDE, PANEL, Room, SplitRoom, at


def test_door_closing_on_an_occupied_room_starts_an_episode_at_the_close() -> None:
    room = Room()
    room.occupancy("occupied", 1)
    outcome = room.door("closed", 5)
    ep = room.machine.episode
    assert ep is not None
    assert ep.started_at == at(5)
    assert not ep.start_uncertain
    assert any(isinstance(e, IncidentOpened) and e.episode_id == ep.id for e in outcome.effects)


def test_occupancy_reported_within_the_lookback_dates_the_start_back_to_the_close() -> None:
    room = Room(occupancy_lookback_s=120)
    room.door("closed", 0)
    assert room.machine.episode is None
    room.occupancy("occupied", 90)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(0) and not ep.start_uncertain


def test_a_start_dated_back_to_the_close_keeps_the_observer_readings_since_the_close() -> None:
    """The observer at the panel from before the close, away 10 s (under the grace), back; the PIR
    reports the child only at T0+100: the episode, dated back to the close, shows that one 10 s lapse,
    not 'never present' from the close until the latest reading (and no late lapse alert)."""
    room = Room()
    room.observer("present", -100)
    room.door("closed", 0)
    room.observer("absent", 10)
    room.observer("present", 20)
    room.occupancy("occupied", 100)
    room.run(101)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(0)
    assert [(m.ts, m.present) for m in ep.observer] == [(at(-100), True), (at(10), False), (at(20), True)]
    acc = account(ep, at(101))
    assert [(lp.start, lp.end) for lp in acc.lapses] == [(at(10), at(20))] and acc.unsupervised_s == 10
    assert room.alerts("supervision_lapse") == []
    assert room.machine.state.marks_since_close == []  # handed to the episode


def test_a_start_dated_back_to_the_close_keeps_the_last_of_the_observer_readings_of_one_millisecond() -> None:
    """Since the close the panel read `present`, `absent` and `present` again, all of T0+10, in that
    order: the last is what the room holds (the observer is there), and the episode dated back to the
    close says so too: one lapse, from the close to T0+10, not one from T0+10 on."""
    room = Room(tiers=frozenset({"room", "senior"}))
    room.observer("absent", -100)
    room.door("closed", 0)
    for value, arrive in (("present", 10), ("absent", 10.1), ("present", 10.2)):
        room.send(PANEL, "observer", value, 10, arrive=arrive)
    assert room.machine.reading("observer") == "present"
    room.occupancy("occupied", 30)
    room.run(100)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(0)
    acc = account(ep, at(100))
    assert [(lp.start, lp.end) for lp in acc.lapses] == [(at(0), at(10))]
    assert acc.state_now == "supervised"
    assert room.alerts("supervision_lapse", active=True) == []


def test_a_start_dated_back_to_the_close_keeps_every_check_in_still_proving_it() -> None:
    """Check-ins at T0-10 and T0+40 each prove 60 s; the PIR reports the child at T0+100, the start is
    dated back to the close at T0: covered throughout (the older check-in used to be dropped)."""
    room = Room(supervision="checkin", checkin_interval_s=60)
    room.send(PANEL, "check", "ok", -10)
    room.door("closed", 0)
    room.send(PANEL, "check", "ok", 40)
    room.occupancy("occupied", 100)
    ep = room.machine.episode
    assert ep is not None and ep.checks == [at(-10), at(40)]
    acc = account(ep, at(100))
    assert (acc.supervised_s, acc.unsupervised_s) == (100, 0)


def test_the_readings_kept_for_a_dated_back_start_are_bounded_and_dropped_when_the_door_opens() -> None:
    room = Room()
    room.door("closed", 0)
    for i in range(100):
        room.observer("present" if i % 2 else "absent", 1 + i)
    kept = room.machine.state.marks_since_close
    assert len(kept) == 32 and kept[-1].ts == at(100)  # the newest: an older start counts unsupervised
    room.door("open", 200)
    assert room.machine.state.marks_since_close == []


def test_an_outage_between_the_close_and_a_start_dated_back_to_it_is_unknown_time() -> None:
    """4.1 within 2.1: the panel was away from before the close until T0+50 and came back with a new
    boot (the gap stays unknown, 4.2); the start is dated back to the close at T0."""
    room = Room()
    room.observer("present", -100)
    room.door("closed", 0)
    room.status(PANEL, False, 20)  # Last Will: offline since its last message (T0-100)
    room.status(PANEL, True, 50, boot="b2", uptime_s=5)
    room.occupancy("occupied", 60)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(0)
    assert [(g.device, g.start, g.end) for g in ep.unknown] == [(PANEL, at(0), at(50))]
    acc = account(ep, at(70))
    assert (acc.unknown_s, acc.supervised_s) == (50, 20)


def test_every_outage_between_the_close_and_a_start_dated_back_to_it_is_unknown_time() -> None:
    """4.1 within 2.1: the panel was away twice between the close and the occupancy reading that dates
    the start back to it, each time coming back with a new boot (each gap stays unknown, 4.2). Both
    are unknown time, not only the latest: the first used to count as supervised."""
    # Given a room whose door closed at T0 with the observer present
    room = Room()
    room.door("closed", 0)
    room.observer("present", 1)
    # When the panel is away from T0+1 to T0+30 and from T0+31 to T0+60, each return a new boot
    room.status(PANEL, False, 10)  # Last Will: offline since its last message (T0+1)
    room.status(PANEL, True, 30, boot="b2", uptime_s=2)
    room.observer("present", 31)
    room.status(PANEL, False, 40)  # offline since T0+31
    room.status(PANEL, True, 60, boot="b3", uptime_s=2)
    room.observer("present", 61)
    # And the PIR reports the child within the lookback
    room.occupancy("occupied", 100)
    # Then the episode, dated back to the close, holds both outages as unknown time
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(0)
    spans = sorted((g.device, g.start, g.end) for g in ep.unknown)
    assert spans == [(PANEL, at(1), at(30)), (PANEL, at(31), at(60))]
    acc = account(ep, at(100))
    assert (acc.unknown_s, acc.supervised_s, acc.unsupervised_s) == (58, 41, 1)  # T0..T0+1: no reading yet
    assert room.machine.state.outages_since_close == []  # handed to the episode


def test_a_room_state_stored_before_outages_were_kept_still_counts_the_latest_outage() -> None:
    """A state stored by a hub that kept only each device's latest outage (no `outages_since_close`)
    loads and counts that outage as unknown time, as it did."""
    # Given a closed room whose panel was away from T0+1 to T0+30 (a new boot on return)
    room = Room()
    room.door("closed", 0)
    room.observer("present", 1)
    room.status(PANEL, False, 10)
    room.status(PANEL, True, 30, boot="b2", uptime_s=2)
    # And its state as that hub stored it
    stored = json.loads(room_state_json(room.machine.state))
    del stored["outages_since_close"]
    # When a hub loads it and the PIR reports the child within the lookback
    resumed = Room()
    state = RoomState.model_validate(stored)
    resumed.machine = RoomMachine("demo-school", resumed.spec, resumed.policy, state)
    resumed.seq = dict(room.seq)
    resumed.occupancy("occupied", 100)
    # Then the outage is unknown time in the episode dated back to the close
    ep = resumed.machine.episode
    assert ep is not None and ep.started_at == at(0)
    assert [(g.device, g.start, g.end) for g in ep.unknown] == [(PANEL, at(1), at(30))]


def test_an_outage_a_same_boot_return_made_known_is_not_kept_for_a_dated_back_start() -> None:
    """4.2 within 2.1: of the panel's two outages since the close, the first ended in a new boot (it
    stays unknown), the second in the same boot up all along (known again: its outbox replays it)."""
    # Given a room whose door closed at T0 with the observer present
    room = Room()
    room.door("closed", 0)
    room.observer("present", 1)
    # When the panel is away from T0+1 to T0+30 and comes back with a new boot
    room.status(PANEL, False, 10)
    room.status(PANEL, True, 30, boot="b2", uptime_s=2)
    room.observer("present", 31)
    # And is away again from T0+31 to T0+60 and comes back on that boot, up all along
    room.status(PANEL, False, 40)
    room.status(PANEL, True, 60, boot="b2", uptime_s=32)
    # And the PIR reports the child within the lookback
    room.occupancy("occupied", 100)
    # Then only the first outage is unknown time
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(0)
    assert [(g.device, g.start, g.end) for g in ep.unknown] == [(PANEL, at(1), at(30))]
    assert account(ep, at(100)).unknown_s == 29


def test_the_outages_kept_for_a_dated_back_start_are_bounded_and_dropped_when_the_door_opens() -> None:
    """Beyond 32 outages of a device, its two oldest become one span: the time between them counts as
    unknown, never as known."""
    # Given a closed door
    room = Room()
    room.door("closed", 0)
    # When the panel drops off 40 times (from T0+10i-3 to T0+10i+5), each return a new boot
    for i in range(40):
        room.status(PANEL, False, 10 * i + 1)  # offline since its last message
        room.status(PANEL, True, 10 * i + 5, boot=f"b{i}", uptime_s=1)
        room.observer("present", 10 * i + 7)
    # Then 32 spans are kept, the oldest covering the first nine outages and the time between them
    kept = room.machine.state.outages_since_close
    assert len(kept) == 32 and (kept[0].start, kept[0].end) == (at(1), at(85))
    assert (kept[1].start, kept[1].end) == (at(87), at(95))
    assert (kept[-1].start, kept[-1].end) == (at(387), at(395))
    # And when the door opens they are dropped
    room.door("open", 400)
    assert room.machine.state.outages_since_close == []


def test_a_lock_engaged_and_released_before_a_dated_back_start_still_marks_the_episode() -> None:
    """2.5: held shut T0+20..T0+40, inside the episode dated back to the close at T0: `locked`, and
    `lock_forbidden` raised (late) and resolved with the release."""
    room = Room(lock_mode="forbidden")
    room.door("closed", 0)
    room.send(DOOR, "lock", "engaged", 20)
    room.send(DOOR, "lock", "released", 40)
    room.occupancy("occupied", 60)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(0)
    assert ep.locked and ep.locked_at == at(20) and ep.lock_engaged_at == at(20)
    room.tick(61)
    (alert,) = room.alerts("lock_forbidden")
    assert alert.late and alert.resolved_at is not None


def test_a_lock_engaged_after_the_close_is_dated_to_its_reading_not_to_the_close() -> None:
    room = Room()
    room.send(DOOR, "lock", "engaged", -50)
    room.send(DOOR, "lock", "released", -40)
    room.door("closed", 0)
    room.send(DOOR, "lock", "engaged", 30)
    room.send(DOOR, "lock", "released", 35)
    room.send(DOOR, "lock", "engaged", 45)  # engaged again: its own engagement
    room.occupancy("occupied", 60)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(0)
    assert ep.locked and ep.locked_at == at(30) and ep.lock_engaged_at == at(45)


def test_a_lock_released_before_an_uncertain_start_does_not_mark_the_episode() -> None:
    """Occupancy first reported long after the close (past the lookback): the episode starts at that
    report, uncertain, and a lock engaged and released before it did not hold the child in it."""
    room = Room(lock_mode="forbidden", occupancy_lookback_s=120)
    room.door("closed", 0)
    room.send(DOOR, "lock", "engaged", 30)
    room.send(DOOR, "lock", "released", 35)
    room.occupancy("occupied", 1000)
    ep = room.machine.episode
    assert ep is not None and ep.start_uncertain and ep.started_at == at(1000)
    assert not ep.locked
    room.tick(1001)
    assert room.alerts("lock_forbidden") == []


def test_a_lock_engaged_when_the_door_closed_dates_the_lock_to_the_start() -> None:
    room = Room()
    room.send(DOOR, "lock", "engaged", -5)
    room.door("closed", 0)
    room.occupancy("occupied", 10)
    ep = room.machine.episode
    assert ep is not None and ep.locked and ep.locked_at == at(0)


def test_occupancy_reported_after_the_lookback_starts_at_the_reading_and_says_it_is_uncertain() -> None:
    room = Room(occupancy_lookback_s=120)
    room.door("closed", 0)
    room.occupancy("occupied", 3600)
    ep = room.machine.episode
    assert ep is not None
    assert ep.started_at == at(3600)
    assert ep.start_uncertain
    assert ep.earliest_start == at(0)


@pytest.mark.parametrize(
    ("steps", "open_after"),
    [
        # (kind, value, t) in order; then: is an episode open?
        ([("occupancy", "occupied", 0), ("door", "closed", 1)], True),
        ([("door", "closed", 0), ("occupancy", "occupied", 2)], True),
        ([("occupancy", "vacant", 0), ("door", "closed", 1)], False),
        ([("door", "open", 0), ("occupancy", "occupied", 1)], False),
        ([("occupancy", "occupied", 0), ("door", "closed", 1), ("occupancy", "vacant", 100)], True),
        (
            [
                ("occupancy", "occupied", 0),
                ("door", "closed", 1),
                ("door", "open", 50),
                ("door", "closed", 60),
            ],
            True,
        ),
        (
            [
                ("occupancy", "occupied", 0),
                ("door", "closed", 1),
                ("door", "open", 50),
                ("occupancy", "vacant", 55),
            ],
            False,
        ),
    ],
)
def test_when_an_episode_is_open(steps: list[tuple[str, str, float]], open_after: bool) -> None:
    room = Room()
    for kind, value, t in steps:
        room.send(DOOR, kind, value, t)
    assert (room.machine.episode is not None) is open_after


def test_vacant_while_the_door_is_closed_never_ends_the_episode() -> None:
    room = Room()
    room.occupancy("occupied", 0)
    room.door("closed", 1)
    first = room.machine.episode
    room.occupancy("vacant", 30)
    room.tick(4000)
    assert room.machine.episode is first
    assert first is not None and first.ended_at is None


def test_door_reclosed_within_the_grace_continues_the_episode_with_a_new_segment() -> None:
    room = Room(reclose_grace_s=30)
    room.occupancy("occupied", 0)
    room.door("closed", 10)
    room.door("open", 100)
    room.tick(120)
    room.door("closed", 125)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(10)
    assert [(s.start, s.end) for s in ep.segments] == [(at(10), at(100)), (at(125), None)]
    assert ep.duration_s(at(200)) == 90 + 75
    assert ep.elapsed_s(at(200)) == 190


def test_door_left_open_past_the_grace_ends_the_episode_at_the_opening() -> None:
    room = Room(reclose_grace_s=30)
    room.occupancy("occupied", 0)
    room.door("closed", 10)
    ep = room.machine.episode
    room.door("open", 100)
    room.heartbeat(DOOR, 129, {"door": "open", "occupancy": "occupied"})
    assert room.machine.episode is ep, "still within the grace"
    outcome = room.heartbeat(DOOR, 131, {"door": "open", "occupancy": "occupied"})
    assert room.machine.episode is None
    assert ep is not None and ep.ended_at == at(100)
    assert any(
        isinstance(e, IncidentStatusChanged) and e.status == "awaiting_record" for e in outcome.effects
    )


def test_the_grace_is_judged_by_the_door_device_never_by_the_hub_clock_or_another_device() -> None:
    room = Room(reclose_grace_s=30, heartbeat_s=10)
    room.occupancy("occupied", 0)
    room.door("closed", 1)
    ep = room.machine.episode
    room.door("open", 50)
    room.tick(200)  # the door device went quiet: the hub cannot know the door stayed open
    room.observer("absent", 200)  # another device's clock proves nothing about the door
    assert room.machine.episode is ep
    room.send(DOOR, "door", "closed", 55, arrive=210)  # its outbox replays a re-close within the grace
    assert room.machine.episode is ep
    assert ep is not None and len(ep.segments) == 2 and ep.ended_at is None


def test_a_still_child_is_not_lost_when_every_reclose_is_a_new_episode() -> None:
    room = Room(reclose_grace_s=30, reclose_is_new_episode=True)
    room.occupancy("occupied", 0)
    room.door("closed", 1)
    room.occupancy("vacant", 100)  # the child sits still; the PIR goes quiet
    room.door("open", 200)
    room.door("closed", 205)
    second = room.machine.episode
    assert second is not None and second.started_at == at(205) and not second.start_uncertain


def watched_episode(room: Room) -> Episode:
    """The panel up (boot b1) with the observer present; the door closes on the occupied room at T0+1."""
    room.status(PANEL, True, 0, boot="b1", uptime_s=10)
    room.observer("present", 0)
    room.occupancy("occupied", 0)
    room.door("closed", 1)
    ep = room.machine.episode
    assert ep is not None
    return ep


def test_a_replay_after_the_episode_ended_still_reveals_the_lapse() -> None:
    room = Room()
    ep = watched_episode(room)
    room.status(PANEL, False, 100)
    room.door("open", 300)
    room.occupancy("vacant", 301)
    assert room.machine.episode is None and ep.ended_at == at(300)
    room.status(PANEL, True, 400, boot="b1", uptime_s=410)
    room.send(PANEL, "observer", "absent", 150, arrive=400)
    room.send(PANEL, "observer", "present", 250, arrive=400)
    acc = account(ep, at(500))
    assert ep.unknown == []
    assert acc.unsupervised_s == 100 and [(lp.start, lp.end) for lp in acc.lapses] == [(at(150), at(250))]


def test_a_replay_reveals_the_lapse_of_the_ended_episode_while_a_new_one_is_open() -> None:
    """4.3: replayed readings are written into the episode they belong to, even when another episode
    opened in the meantime (the panel was away through both)."""
    room = Room()
    first = watched_episode(room)
    room.status(PANEL, False, 20)  # the panel's Last Will; its outbox keeps what it sees
    room.door("open", 100)
    room.occupancy("vacant", 101)
    room.occupancy("occupied", 150)
    room.door("closed", 160)
    second = room.machine.episode
    assert second is not None and second is not first
    room.status(PANEL, True, 300, boot="b1", uptime_s=310)  # same boot, up all along: the gap is known
    room.send(PANEL, "observer", "absent", 50, arrive=300)
    room.send(PANEL, "observer", "present", 80, arrive=300)
    acc = account(first, at(400))
    assert first.unknown == [] and [(lp.start, lp.end) for lp in acc.lapses] == [(at(50), at(80))]
    assert acc.unsupervised_s == 30
    assert account(second, at(300)).unsupervised_s == 0  # present again at 80, before it started
    assert room.alerts("supervision_lapse"), "raised late, for the record"


def test_a_replayed_check_in_proves_the_ended_episode_while_a_new_one_is_open() -> None:
    room = Room(supervision="checkin", checkin_interval_s=60)
    room.status(PANEL, True, 0, boot="b1", uptime_s=10)
    room.send(PANEL, "check", "ok", 0)
    room.occupancy("occupied", 0)
    room.door("closed", 1)
    first = room.machine.episode
    room.status(PANEL, False, 20)
    room.door("open", 100)
    room.occupancy("vacant", 101)
    room.occupancy("occupied", 150)
    room.door("closed", 160)
    assert room.machine.episode is not None and room.machine.episode is not first
    room.status(PANEL, True, 300, boot="b1", uptime_s=310)
    room.send(PANEL, "check", "ok", 55, arrive=300)  # proves 55..115: the first episode checked throughout
    assert first is not None and first.unknown == []
    assert account(first, at(400)).unsupervised_s == 0


def episode_while_the_panel_was_away(room: Room, before: Callable[[], object] = lambda: None) -> Episode:
    """The panel up (boot b1) from T0-40, `before` it goes (its Last Will at T0-20), an episode T0+1 to
    T0+100 while it is away, and the panel back at T0+200 with the same boot: its outbox replays."""
    room.status(PANEL, True, -40, boot="b1", uptime_s=10)
    before()
    room.status(PANEL, False, -20)
    room.occupancy("occupied", 0)
    room.door("closed", 1)
    ep = room.machine.episode
    room.door("open", 100)
    room.occupancy("vacant", 101)
    assert room.machine.episode is None and ep is not None and ep.ended_at == at(100)
    room.status(PANEL, True, 200, boot="b1", uptime_s=250)
    return ep


def test_a_replayed_reading_from_before_the_start_is_what_the_ended_episode_started_with() -> None:
    """3.1 and 4.3: the observer left at T0-10, during the panel's outage, so the episode T0+1..T0+100
    was never watched: 99 s unsupervised and a lapse, not 99 s supervised on the reading before."""
    room = Room()
    ep = episode_while_the_panel_was_away(room, lambda: room.observer("present", -30))
    room.send(PANEL, "observer", "present", -35, arrive=200)  # older than what it started with: no news
    room.send(PANEL, "observer", "absent", -10, arrive=200)
    assert ep.unknown == [] and [m.ts for m in ep.observer] == [at(-30), at(-10)]
    assert account(ep, at(300)).unsupervised_s == 99
    assert room.alerts("supervision_lapse")


def test_a_replayed_reading_of_the_same_millisecond_as_the_one_the_ended_episode_started_with_wins() -> None:
    """The panel read `present` and then `absent`, both of T0-30 (a bounce at the resolution of `ts`);
    only the first reached the hub before the panel's outage. Replayed after the episode ended, the
    later reading of that millisecond is what the episode started with: never watched, a lapse."""
    room = Room()
    ep = episode_while_the_panel_was_away(room, lambda: room.observer("present", -30))
    room.send(PANEL, "observer", "absent", -30, arrive=200)
    assert [(m.ts, m.present) for m in ep.observer] == [(at(-30), True), (at(-30), False)]
    assert account(ep, at(300)).unsupervised_s == 99
    assert room.alerts("supervision_lapse")


def test_a_replayed_check_in_from_before_the_start_still_proves_the_ended_episode() -> None:
    """3.2: an episode starts checked when a check-in came within `checkin_interval_s` before it."""
    room = Room(supervision="checkin", checkin_interval_s=60)
    ep = episode_while_the_panel_was_away(room)
    room.send(PANEL, "check", "ok", -70, arrive=200)  # ran out before the start: nothing to prove
    room.send(PANEL, "check", "ok", -10, arrive=200)  # proves T0+1..T0+50
    assert ep.checks == [at(-10)]
    acc = account(ep, at(300))
    assert (acc.supervised_s, acc.unsupervised_s) == (49, 50)


def test_reclose_after_the_grace_is_a_new_episode() -> None:
    room = Room(reclose_grace_s=30)
    room.occupancy("occupied", 0)
    room.door("closed", 10)
    first = room.machine.episode
    room.door("open", 100)
    room.door("closed", 200)  # arrives late, its ts proves the grace ran out
    second = room.machine.episode
    assert first is not None and first.ended_at == at(100)
    assert second is not None and second is not first and second.started_at == at(200)


def test_a_profile_may_make_every_reclose_a_new_episode() -> None:
    room = Room(reclose_grace_s=30, reclose_is_new_episode=True)
    room.occupancy("occupied", 0)
    room.door("closed", 10)
    first = room.machine.episode
    room.door("open", 100)
    room.door("closed", 110)
    second = room.machine.episode
    assert first is not None and first.ended_at == at(100)
    assert second is not None and second.id != first.id and second.started_at == at(110)


def test_lock_engaged_during_an_episode_marks_it_locked_with_the_lock_type() -> None:
    room = Room()
    room.occupancy("occupied", 0)
    room.door("closed", 1)
    room.send(DOOR, "lock", "engaged", 5)
    ep = room.machine.episode
    assert ep is not None and ep.locked and ep.lock_type == "held"


def test_observer_absence_is_unsupervised_time_and_every_interval_is_kept() -> None:
    room = Room()
    room.observer("present", 0)
    room.occupancy("occupied", 0)
    room.door("closed", 10)
    room.observer("absent", 20)
    room.observer("present", 23)
    room.observer("absent", 40)
    room.observer("present", 50)
    ep = room.machine.episode
    assert ep is not None
    acc = account(ep, at(70))
    assert acc.unsupervised_s == 13
    assert acc.supervised_s == 47
    assert [(lp.start, lp.end) for lp in acc.lapses] == [(at(20), at(23)), (at(40), at(50))]
    assert acc.longest_lapse_s == 10


def test_never_present_since_the_start_is_unsupervised() -> None:
    room = Room()
    room.occupancy("occupied", 0)
    room.door("closed", 10)
    ep = room.machine.episode
    assert ep is not None
    acc = account(ep, at(40))
    assert (acc.supervised_s, acc.unsupervised_s, acc.unknown_s) == (0, 30, 0)


def test_checkin_mode_counts_each_check_for_the_interval() -> None:
    room = Room(supervision="checkin", checkin_interval_s=60)
    room.send(PANEL, "check", "ok", 0)
    room.occupancy("occupied", 0)
    room.door("closed", 30)  # the check 30 s before still proves 30 s
    outcome = room.send(PANEL, "check", "ok", 100)
    ep = room.machine.episode
    assert ep is not None
    acc = account(ep, at(200))
    # supervised 30..60 and 100..160; unsupervised 60..100 and 160..200
    assert (acc.supervised_s, acc.unsupervised_s) == (90, 80)
    # The check-in is saved with the episode (its row, and a restart that loads the episode from it).
    assert [e.episode.checks[-1] for e in outcome.effects if isinstance(e, EpisodeSaved)] == [at(100)]


def test_a_device_offline_during_an_episode_counts_unknown_time_not_unsupervised() -> None:
    room = Room(heartbeat_s=10)
    room.observer("present", 0)
    room.occupancy("occupied", 0)
    room.door("closed", 10)
    room.status(PANEL, False, 40)  # the panel's Last Will; its last message came at t=0
    ep = room.machine.episode
    assert ep is not None
    room.status(PANEL, True, 100, boot="other-boot", uptime_s=5)
    acc = account(ep, at(130))
    assert acc.unknown_s == 90  # from the episode's start (the last message was before it) to the return
    assert acc.supervised_s + acc.unsupervised_s + acc.unknown_s == ep.elapsed_s(at(130))


def test_silence_for_three_heartbeats_makes_a_device_offline_from_its_last_message() -> None:
    room = Room(heartbeat_s=10)
    room.occupancy("occupied", 0)
    room.observer("present", 1)
    room.door("closed", 5)
    room.heartbeat(DOOR, 20, {"door": "closed", "occupancy": "occupied"})
    room.tick(30)
    assert room.machine.state.devices[PANEL].online, "29 s of silence is under 3 heartbeats"
    room.tick(31)
    assert not room.machine.state.devices[PANEL].online
    ep = room.machine.episode
    assert ep is not None and ep.unknown[0].start == at(5)  # never before the episode's start


def test_same_boot_return_replays_the_gap_so_it_is_known_again() -> None:
    room = Room()
    room.status(PANEL, True, 0, boot="b1", uptime_s=100)
    room.observer("present", 1)
    room.occupancy("occupied", 0)
    room.door("closed", 5)
    room.status(PANEL, False, 20)
    ep = room.machine.episode
    assert ep is not None and ep.unknown
    room.status(PANEL, True, 60, boot="b1", uptime_s=160)
    room.send(PANEL, "observer", "absent", 30, arrive=60)  # replayed from the outbox
    assert ep.unknown == []
    acc = account(ep, at(70))
    assert acc.unknown_s == 0 and acc.unsupervised_s == 40


def test_a_retained_status_delivered_again_does_not_make_a_silent_devices_gap_known() -> None:
    """4.2: the broker delivers the panel's retained online status again when the hub subscribes (after a
    reconnect): the payload the panel sent when it connected, before everything it has reported since.
    It says nothing about the gap since the panel fell silent, which stays unknown."""
    room = Room()
    room.status(PANEL, True, -5, boot="b1", uptime_s=3)
    ep = watched_episode(room)
    room.status(PANEL, False, 20)  # its Last Will: offline since its last message (T0)
    room.clock.set(at(1800))
    again = DeviceStatus(device=PANEL, online=True, ts=at(-5), boot="b1", uptime_s=3)
    room.machine.handle(again, at(1800))
    assert not room.machine.state.devices[PANEL].online
    assert account(ep, at(1800)).unknown_s == 1799  # T0+1 to now: nobody knows who watched


def test_door_found_open_after_a_gap_ends_the_episode_with_its_bounds() -> None:
    room = Room()
    room.occupancy("occupied", 0)
    room.door("closed", 5)
    ep = room.machine.episode
    room.status(DOOR, False, 50)
    room.status(DOOR, True, 300, boot="new-boot", uptime_s=10)
    room.heartbeat(DOOR, 301, {"door": "open", "occupancy": "vacant"})
    assert room.machine.episode is None
    assert ep is not None
    assert ep.end_uncertain
    assert ep.ended_at == at(301), "first known open: never under-count"
    assert ep.end_earliest is not None and at(5) <= ep.end_earliest < at(301)


def test_a_duplicate_is_dropped_and_a_gap_is_possible_loss() -> None:
    room = Room()
    room.occupancy("occupied", 0)
    room.door("closed", 1)
    state_before = room.machine.state.model_dump_json()
    again = room.machine.handle(SensorEvent(device=DOOR, kind="door", value="closed", ts=at(1), seq=2), at(2))
    assert again.duplicate and not again.applied
    assert room.machine.state.model_dump_json() == state_before
    room.seq[DOOR] += 3  # three events lost on the way
    outcome = room.send(DOOR, "lock", "engaged", 10)
    assert outcome.gap == 3
    ep = room.machine.episode
    assert ep is not None and ep.possible_loss


def test_a_gap_revealed_after_an_episode_ended_is_possible_loss_on_that_episode() -> None:
    """4.4: the panel's replay, after the episode ended, shows two of its events missing between a
    reading before the episode and one after its end: they may have been in it, and the record says
    so; an episode the gap cannot touch is left alone."""
    room = Room()
    room.observer("present", -10)
    room.occupancy("occupied", 0)
    room.door("closed", 1)
    ep = room.machine.episode
    room.door("open", 100)
    room.occupancy("vacant", 101)
    assert room.machine.episode is None and ep is not None and not ep.possible_loss
    room.seq[PANEL] += 2  # two of the panel's events lost
    outcome = room.send(PANEL, "observer", "absent", 150, arrive=200)
    assert outcome.gap == 2 and ep.possible_loss
    assert [n.episode_id for n in outcome.effects if isinstance(n, Note) and n.kind == "possible_loss"] == [
        ep.id
    ]

    later = Room()
    later.occupancy("occupied", 0)
    later.door("closed", 1)
    first = later.machine.episode
    later.door("open", 100)
    later.occupancy("vacant", 101)
    later.observer("present", 120)  # the panel's latest reading the hub has: after the episode
    later.seq[PANEL] += 2
    assert later.send(PANEL, "observer", "absent", 150).gap == 2
    assert first is not None and not first.possible_loss


def test_a_gap_asks_the_writer_to_flag_the_older_episodes_it_overlaps_that_the_room_no_longer_holds() -> None:
    """4.4: the panel's events are lost while two episodes end and a third starts; the event after the
    gap shows the window (its latest reading the hub has, to this event). The machine flags the open and
    latest episodes itself, and asks the writer to flag any older one the window overlaps: the room holds
    only the open and the latest, and an older one would otherwise claim a completeness nobody knows."""
    room = Room()
    room.observer("present", -10)  # the panel's latest reading the hub has: the window's start
    for start in (0, 200):
        room.occupancy("occupied", start)
        room.door("closed", start + 1)
        room.door("open", start + 100)
        room.occupancy("vacant", start + 101)
    last = room.machine.state.last_episode
    room.occupancy("occupied", 400)
    room.door("closed", 401)
    open_ep = room.machine.episode
    assert last is not None and open_ep is not None and last.started_at == at(201)
    room.seq[PANEL] += 3  # three of the panel's events lost
    outcome = room.send(PANEL, "observer", "absent", 450)
    assert outcome.gap == 3 and open_ep.possible_loss and last.possible_loss
    assert [e for e in outcome.effects if isinstance(e, OlderLoss)] == [
        OlderLoss(
            site="demo-school",
            room="calm-1",
            device=PANEL,
            missing=3,
            since=at(-10),
            until=at(450),
            skip=(open_ep.id, last.id),
        )
    ]


def test_a_device_of_another_room_is_rejected_and_changes_nothing() -> None:
    room = Room()
    before = room.machine.state.model_dump_json()
    with pytest.raises(RejectedMessage, match="not registered"):
        room.machine.handle(
            SensorEvent(device="calm-9-door", kind="door", value="closed", ts=at(0), seq=1), at(0)
        )
    with pytest.raises(RejectedMessage, match="does not report"):
        room.machine.handle(SensorEvent(device=PANEL, kind="door", value="closed", ts=at(0), seq=1), at(0))
    assert room.machine.state.model_dump_json() == before


def test_when_two_devices_report_a_kind_the_later_ts_wins() -> None:
    room = Room()
    room.machine.spec = room.spec.model_copy(
        update={"devices": tuple(d.model_copy(update={"sensors": None}) for d in room.spec.devices)}
    )
    room.send(PANEL, "occupancy", "occupied", 50)
    room.send(DOOR, "occupancy", "vacant", 40, arrive=51)  # older reading, arriving later
    assert room.machine.reading("occupancy") == "occupied"
    room.send(DOOR, "occupancy", "vacant", 60)
    assert room.machine.reading("occupancy") == "vacant"


def test_every_change_to_an_episode_is_saved() -> None:
    room = Room()
    room.occupancy("occupied", 0)
    outcome = room.door("closed", 1)
    assert any(isinstance(e, EpisodeSaved) for e in outcome.effects)


def test_a_heartbeat_sent_before_an_event_already_applied_does_not_undo_it() -> None:
    """The door device's heartbeat of T0+99.9 (its state: closed; `last_seq` 2) arrives just after its
    event of T0+100 (door open, seq 3): another topic, QoS 0, it can be overtaken. Its older state is not
    a lost event: the door stays open, and the episode ends at T0+100 when the child walks out."""
    room = Room()
    room.observer("present", -10)
    room.occupancy("occupied", 0)
    room.door("closed", 1)
    room.door("open", 100)  # seq 3
    stale = Heartbeat(
        device=DOOR, ts=at(99.9), epoch=0, last_seq=2, state={"door": "closed", "occupancy": "occupied"}
    )
    room.clock.set(at(100.05))
    outcome = room.machine.handle(stale, at(100.05))
    assert room.machine.reading("door") == "open" and not outcome.effects
    room.occupancy("vacant", 105)
    room.heartbeat(DOOR, 120, {"door": "open", "occupancy": "vacant"})
    last = room.machine.state.last_episode
    assert room.machine.episode is None and last is not None and last.ended_at == at(100)
    assert [(s.start, s.end) for s in last.segments] == [(at(1), at(100))]


def test_a_vacant_timed_after_the_opening_that_overtook_the_doors_message_ends_the_episode() -> None:
    """semantics 2.4: 'If the door closes again within that grace and no `vacant` reading timed after the
    opening has arrived, the same episode goes on ... If ... a `vacant` reading timed after the opening
    arrives, the episode ends, and `ended_at` is the time the door opened'. The PIR's vacant (T0+55)
    reached the hub a moment before the door device's open (T0+50); the door re-closed at T0+60."""
    room = SplitRoom()
    room.send(INSIDE, "occupancy", "occupied", 0)
    room.send(DOOR, "door", "closed", 5)
    ep = room.machine.episode
    assert ep is not None
    room.send(INSIDE, "occupancy", "vacant", 55, arrive=55.1)
    room.send(DOOR, "door", "open", 50, arrive=55.2)  # the door device's message was a little slower
    room.send(DOOR, "door", "closed", 60)
    assert ep.ended_at == at(50), (ep.ended_at, ep.segments)
    assert room.machine.episode is None


def test_a_confinement_while_the_inside_device_was_away_is_recorded_when_its_replay_comes() -> None:
    """2.1 and 4.3 with occupancy on a device of its own: the PIR's link was down while a child was shut
    in from T0+100 to T0+400 (the door device live); its outbox comes at T0+1000. Judged against the
    door as it was at each reading's time, it was a confinement: recorded, from the close to the
    opening, its supervision as the panel showed it live (an observer there until T0+250), its record
    opened and awaiting completion, its lapse raised late for the record."""
    room = SplitRoom()
    room.send(INSIDE, "occupancy", "vacant", 0)
    room.send(PANEL, "observer", "present", 90)
    room.door(("closed", 100))
    room.send(PANEL, "observer", "absent", 250)
    room.door(("open", 400))
    assert room.machine.state.last_episode is None
    room.send(INSIDE, "occupancy", "occupied", 105, arrive=1000)
    room.send(INSIDE, "occupancy", "occupied", 300, arrive=1000)  # the same confinement: once
    room.send(INSIDE, "occupancy", "vacant", 410, arrive=1000)
    ep = room.machine.state.last_episode
    assert ep is not None and room.machine.episode is None
    assert (ep.started_at, ep.ended_at, ep.start_uncertain) == (at(100), at(400), False)
    assert [(s.start, s.end) for s in ep.segments] == [(at(100), at(400))]
    acc = account(ep, at(1000))
    assert (acc.supervised_s, acc.unsupervised_s, acc.unknown_s) == (150.0, 150.0, 0.0)
    [lapse] = [
        e.alert for e in room.effects if isinstance(e, AlertSaved) and e.alert.kind == "supervision_lapse"
    ]
    assert lapse.late and lapse.due_at == at(250 + 15) and lapse.episode_id == ep.id
    opened = [e for e in room.effects if isinstance(e, IncidentOpened)]
    assert [(e.episode_id, e.at) for e in opened] == [(ep.id, at(100))]
    [ended] = [e for e in room.effects if isinstance(e, IncidentStatusChanged)]
    assert (ended.incident_id, ended.status, ended.at) == (ep.incident_id, "awaiting_record", at(400))


def test_a_replayed_confinement_goes_on_through_a_reclosing_within_the_grace() -> None:
    """2.4: the door opened at T0+200 and closed again at T0+210, within the 30 s grace, with no vacant
    after the opening: the same episode, two segments, ended at the opening at T0+400."""
    room = SplitRoom()
    room.send(INSIDE, "occupancy", "vacant", 0)
    room.door(("closed", 100), ("open", 200), ("closed", 210), ("open", 400), ("closed", 900))
    room.send(INSIDE, "occupancy", "occupied", 101, arrive=1000)
    ep = room.machine.state.last_episode
    assert ep is not None and ep.ended_at == at(400)
    assert [(s.start, s.end) for s in ep.segments] == [(at(100), at(200)), (at(210), at(400))]


def test_a_replayed_presence_long_after_the_close_dates_the_start_by_itself() -> None:
    """2.1: occupancy first reported more than `occupancy_lookback_s` after the close: the start is the
    reading's time, uncertain, with the close as its earliest possible start."""
    room = SplitRoom()
    room.send(INSIDE, "occupancy", "vacant", 0)
    room.door(("closed", 100), ("open", 900))
    room.send(INSIDE, "occupancy", "occupied", 500, arrive=1000)
    ep = room.machine.state.last_episode
    assert ep is not None and (ep.started_at, ep.start_uncertain, ep.earliest_start) == (
        at(500),
        True,
        at(100),
    )
    assert [(s.start, s.end) for s in ep.segments] == [(at(500), at(900))]


def test_a_replayed_presence_while_the_door_was_open_is_no_confinement() -> None:
    room = SplitRoom()
    room.send(INSIDE, "occupancy", "vacant", 0)
    room.door(("open", 50), ("closed", 100), ("open", 400))
    room.send(INSIDE, "occupancy", "occupied", 60, arrive=1000)
    room.send(INSIDE, "occupancy", "vacant", 90, arrive=1000)
    assert room.machine.state.last_episode is None and room.machine.episode is None


def test_a_confinement_timed_live_is_not_recorded_again_by_the_replay() -> None:
    """The PIR's last word before its link went was `occupied`: the close at T0+100 opened the episode
    live. Its replay, arriving after the door opened, adds no second episode."""
    room = SplitRoom()
    room.send(INSIDE, "occupancy", "occupied", 0)
    room.door(("closed", 100), ("open", 400))
    live = room.machine.episode
    assert live is not None and live.started_at == at(100)
    room.send(INSIDE, "occupancy", "occupied", 150, arrive=1000)
    assert room.machine.state.episode_count == 1 and room.machine.state.last_episode is None


def test_only_a_room_with_occupancy_apart_keeps_the_doors_history() -> None:
    """The shipped layout (occupancy on the door's device) stores no door history with every batch."""
    room = Room()
    room.occupancy("occupied", 0)
    room.door("closed", 1)
    room.door("open", 50)
    assert room.machine.state.door_history is None
    assert "door_history" not in room_state_json(room.machine.state)


def test_a_replayed_confinement_keeps_an_outage_its_devices_return_left_unknown() -> None:
    """4.1 and 4.2: the PIR's Last Will came at T0+50 and it came back on a new boot at T0+990 (so its
    gap stays unknown): the confinement its outbox reveals counts that time as unknown."""
    room = SplitRoom()
    room.send(INSIDE, "occupancy", "vacant", 0)
    room.send(PANEL, "observer", "present", 90)
    room.status(INSIDE, False, 50)
    room.door(("closed", 100), ("open", 400))
    room.status(INSIDE, True, 990, boot="b2", uptime_s=5)
    room.send(INSIDE, "occupancy", "occupied", 105, arrive=1000)
    ep = room.machine.state.last_episode
    assert ep is not None and [(u.device, u.start, u.end) for u in ep.unknown] == [(INSIDE, at(100), at(400))]
    assert account(ep, at(1000)).unknown_s == 300.0
