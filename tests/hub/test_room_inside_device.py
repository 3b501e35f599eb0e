"""Occupancy on a device of its own (an inside PIR): confinements found from the door's history when its
replay arrives (docs/hub.md). Each test states what semantics.md requires (from a review of the first
version, where each failed)."""

from __future__ import annotations

from typing import Any

from seclusion_hub.core.alerts import AlertSaved
from seclusion_hub.core.episode import Episode, account

from .rooms import DOOR, INSIDE, PANEL, Room, SplitRoom, at

PIR_A, PIR_B = INSIDE, "calm-1-pir-b"


def spans(eps: list[Episode]) -> list[tuple[Any, Any]]:
    return [(ep.started_at, ep.ended_at) for ep in eps]


def test_two_inside_devices_a_later_confinement_found_first_does_not_hide_an_earlier_one() -> None:
    """Two PIRs, both away while the door shut a child in twice (100..200, then 500..600, the second
    close long after the grace). PIR A's outbox comes first and reveals the second; PIR B's comes next
    and reveals the first. Both were confinements: both are recorded."""
    room = SplitRoom(pirs=(PIR_A, PIR_B))
    room.send(PIR_A, "occupancy", "vacant", 0)
    room.send(PIR_B, "occupancy", "vacant", 0)
    room.door(("closed", 100), ("open", 200), ("closed", 500), ("open", 600))
    room.heartbeat(DOOR, 700, {"door": "open"})
    room.send(PIR_A, "occupancy", "occupied", 510, arrive=1000)
    room.send(PIR_B, "occupancy", "occupied", 110, arrive=1001)
    assert spans(room.episodes()) == [(at(100), at(200)), (at(500), at(600))]


def test_a_confinement_timed_live_is_not_recorded_again_once_a_later_one_is_the_latest() -> None:
    """The PIR's last word was `occupied` (T0+0): the close at 100 opened the episode live (ended at the
    opening at 400, past the grace), and the next close at 900 another (ended at 1000). Its outbox then
    brings a movement at 150: inside the first, timed already. Recorded once, not twice."""
    room = SplitRoom()
    room.send(PIR_A, "occupancy", "occupied", 0)
    room.door(("closed", 100), ("open", 400), ("closed", 900), ("open", 1000))
    room.heartbeat(DOOR, 1100, {"door": "open"})
    assert spans(room.episodes()) == [(at(100), at(400)), (at(900), at(1000))]
    room.send(PIR_A, "occupancy", "vacant", 130, arrive=2000)
    room.send(PIR_A, "occupancy", "occupied", 150, arrive=2000)
    assert spans(room.episodes()) == [(at(100), at(400)), (at(900), at(1000))]
    assert room.machine.state.episode_count == 2


def test_reclose_is_new_episode_a_replayed_confinement_keeps_the_one_after_the_reclosing() -> None:
    """2.4 with `reclose_is_new_episode`: the door opened at 200 and closed again at 210 with no vacant
    after the opening: a new episode (nobody left: the child is confined again). Live, with occupancy on
    the door's device, that is two episodes, 100..200 and 210..400; found from the door's history when
    the PIR's outbox (one movement at 105) arrives, it must be the same two."""
    live = Room(reclose_is_new_episode=True)
    live.occupancy("vacant", 0)
    live.door("closed", 100)
    live.occupancy("occupied", 105)
    live.door("open", 200)
    live.door("closed", 210)
    live.door("open", 400)
    live.heartbeat(DOOR, 500, {"door": "open", "occupancy": "occupied"})
    assert live.machine.state.episode_count == 2  # the live rules: two confinements

    room = SplitRoom(reclose_is_new_episode=True)
    room.send(PIR_A, "occupancy", "vacant", 0)
    room.door(("closed", 100), ("open", 200), ("closed", 210), ("open", 400))
    room.heartbeat(DOOR, 500, {"door": "open"})
    room.send(PIR_A, "occupancy", "occupied", 105, arrive=1000)
    assert spans(room.episodes()) == [(at(100), at(200)), (at(210), at(400))]


def test_a_replay_arriving_while_the_door_is_open_within_the_grace_does_not_split_the_confinement() -> None:
    """The door opened at 400 and is within its 30 s grace when the PIR's outbox (a movement at 105)
    arrives at 410; the door closes again at 420. 2.4: the same episode goes on with a new segment,
    timed from 100 (the duration rules count from there), not one ended at 400 and another from 420."""
    room = SplitRoom()
    room.send(PIR_A, "occupancy", "vacant", 0)
    room.door(("closed", 100), ("open", 400))
    room.send(PIR_A, "occupancy", "occupied", 105, arrive=410)
    room.door(("closed", 420))
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(100), spans(room.episodes())
    assert [(s.start, s.end) for s in ep.segments] == [(at(100), at(400)), (at(420), None)]


def test_a_replayed_confinement_is_marked_locked_and_a_forbidden_lock_is_raised() -> None:
    """2.5: a bolt engaged at 110 and released at 390 during the confinement the PIR's outbox reveals:
    the episode is `locked` (bolt) and, the profile forbidding locks, `lock_forbidden` is raised late."""
    room = SplitRoom(lock_mode="forbidden")
    room.send(PIR_A, "occupancy", "vacant", 0)
    room.door(("closed", 100))
    room.send(DOOR, "lock", "engaged", 110)
    room.send(DOOR, "lock", "released", 390)
    room.door(("open", 400))
    room.heartbeat(DOOR, 500, {"door": "open", "lock": "released"})
    room.send(PIR_A, "occupancy", "occupied", 105, arrive=1000)
    [ep] = room.episodes()
    assert (ep.locked, ep.lock_type, ep.locked_at) == (True, "bolt", at(110))
    raised = [e.alert for e in room.effects if isinstance(e, AlertSaved) and e.alert.kind == "lock_forbidden"]
    assert raised and raised[0].episode_id == ep.id


def test_a_replayed_confinement_counts_every_outage_its_return_left_unknown() -> None:
    """4.1/4.2: the panel went offline twice during the confinement (150..200 and 250..300), each time
    back on a new boot (the gaps stay unknown). Both outages are unknown time in the episode found
    from the history, as they would be in one timed live (here: the same room, PIR last word occupied)."""

    def story(room: SplitRoom, pir_first: str) -> None:
        room.send(PIR_A, "occupancy", pir_first, 0)
        room.send(PANEL, "observer", "present", 90)
        room.door(("closed", 100))
        room.status(PANEL, False, 150)
        room.status(PANEL, True, 200, boot="b2", uptime_s=1)
        room.status(PANEL, False, 250)
        room.status(PANEL, True, 300, boot="b3", uptime_s=1)
        room.door(("open", 400))
        room.heartbeat(DOOR, 500, {"door": "open"})

    live = SplitRoom()
    story(live, "occupied")
    [live_ep] = live.episodes()
    live_unknown = account(live_ep, at(1000)).unknown_s
    assert live_unknown == 200.0  # 100..200 (last heard at 90) and 200..300

    room = SplitRoom()
    story(room, "vacant")
    room.send(PIR_A, "occupancy", "occupied", 105, arrive=1000)
    [ep] = room.episodes()
    assert account(ep, at(1000)).unknown_s == live_unknown, [(u.start, u.end) for u in ep.unknown]


def test_a_confinement_found_after_a_hub_restart_is_not_recorded_twice() -> None:
    """Hub restarts between two readings of the same replay (the state reloaded from its JSON): the
    second reading of the same confinement adds nothing."""
    room = SplitRoom()
    room.send(PIR_A, "occupancy", "vacant", 0)
    room.door(("closed", 100), ("open", 400))
    room.heartbeat(DOOR, 500, {"door": "open"})
    room.send(PIR_A, "occupancy", "occupied", 105, arrive=1000)
    room.restart_hub()
    room.send(PIR_A, "occupancy", "occupied", 300, arrive=1001)
    assert spans(room.episodes()) == [(at(100), at(400))]


def test_the_panel_history_is_not_pruned_past_the_close_a_found_confinement_is_dated_to() -> None:
    """The observer was at the panel from 90 to 120, the door shut at 100, the PIR read vacant live at
    150 (a still child), then its link went; its outbox brings a movement at 160, within the lookback:
    the confinement starts at the close (100). The panel showed someone there 100..120: supervised,
    as the live rules (marks_since_close) would count it, not 'never present since the start'."""
    room = SplitRoom()
    room.send(PANEL, "observer", "present", 90)
    room.send(PIR_A, "occupancy", "vacant", 0)
    room.door(("closed", 100))
    room.send(PANEL, "observer", "absent", 120)
    room.send(PIR_A, "occupancy", "vacant", 150)
    room.door(("open", 400))
    room.heartbeat(DOOR, 500, {"door": "open"})
    room.send(PIR_A, "occupancy", "occupied", 160, arrive=1000)
    [ep] = room.episodes()
    assert ep.started_at == at(100)
    acc = account(ep, at(1000))
    assert (acc.supervised_s, acc.unsupervised_s) == (20.0, 280.0), [(m.ts, m.present) for m in ep.observer]


def test_a_replay_with_the_door_reclosed_within_the_grace_dates_the_confinement_from_the_first_close() -> (
    None
):
    """The door shut at 100, opened at 400 and closed again at 410 (within the grace, no vacant after the
    opening): 2.4, one confinement from 100 with two segments. The PIR's outbox (a movement at 105)
    arrives at 1000 with the door closed: the history shows the close at 100; the episode starts there,
    not at 410 (docs/hub.md still lists this as judged against the door as it is now)."""
    room = SplitRoom()
    room.send(PIR_A, "occupancy", "vacant", 0)
    room.door(("closed", 100), ("open", 400), ("closed", 410))
    room.send(PIR_A, "occupancy", "occupied", 105, arrive=1000)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(100), ep and ep.started_at
    assert [(s.start, s.end) for s in ep.segments] == [(at(100), at(400)), (at(410), None)]
