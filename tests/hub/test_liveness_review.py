"""Review of the device messages other than events (status, its Last Will, heartbeat) and of how the hub's
offline and unknown-time rules use them. Each test fails today and states the rule it holds the hub to."""

from __future__ import annotations

import json
import queue
from pathlib import Path
from typing import Any

from seclusion_contract import Topics, format_ts
from seclusion_hub.config import load_sites
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.core.episode import account
from seclusion_hub.core.room import Heartbeat, SensorEvent
from seclusion_hub.ingest import Inbound
from seclusion_hub.service import Command, HubService
from seclusion_hub.store import Store
from tests.hub.rooms import DOOR, PANEL, Room, at
from tests.support.hub import SITE, two_device_room, write_site

# -- the agent's start-up readings (docs/edge.md, "Start-up") ---------------------------------------


def _event(
    room: Room,
    kind: str,
    value: str,
    t: float,
    *,
    boot: str,
    mono_ms: int,
    arrive: float,
    startup: bool = False,
) -> None:
    """The door device's event as the agent sends it (with its boot id and monotonic clock; `startup`: its
    first reading after it started, marked so as docs/edge.md "Start-up" says)."""
    room.seq[DOOR] += 1
    seq = room.seq[DOOR]
    ev = SensorEvent(
        device=DOOR,
        kind=kind,
        value=value,
        ts=at(t),
        seq=seq,
        boot=boot,
        mono_ms=mono_ms,
        event_id=f"d:0:{seq}",
        startup=startup,
    )
    room.clock.set(at(arrive))
    room.outcomes.append(room.machine.handle(ev, at(arrive)))
    room._after_batch()


def _alive(room: Room, start: float, end: float, door: str) -> None:
    """Both devices heartbeat every 10 s from `start` to `end`, the door as `door`, a child inside."""
    t = start
    while t < end:
        room.heartbeat(DOOR, t, {"door": door, "occupancy": "occupied"})
        room.heartbeat(PANEL, t, {"observer": "present"})
        t += 10


def test_a_door_found_open_by_the_agents_start_up_reading_ends_the_episode_with_its_bounds() -> None:
    """semantics 4.2: "If the door is open on return and no event says when it opened, the episode ends
    with `end_uncertain: true` and its bounds (last known closed, first known open)."

    The door device loses power during an episode (its Last Will at T0+70, last heard at T0+55). The door
    is opened while it is down. It boots again (a new boot) at T0+3000 and, as docs/edge.md "Start-up"
    says, publishes its start-up reading `door: open` stamped with its own start time, since it differs
    from the last reading it sent. That event says when the device first saw the door open, not when it
    opened: the opening was any time in the outage. The hub takes it as an opening seen as it happened:
    the episode ends at T0+3000 with `end_uncertain: false` and no `end_earliest`, so staff and parents
    read a certain end 49 minutes after the last time anyone knew the door was closed. (The hub's own
    reconciliation does this right, but only on a heartbeat path this agent never takes: its start-up
    reading always comes as an event first.)"""
    room = Room(heartbeat_s=10)
    room.status(DOOR, True, -100, boot="door-b1", uptime_s=1000)
    room.status(PANEL, True, -100, boot="panel-b1", uptime_s=1000)
    room.observer("present", -50)
    _event(room, "occupancy", "occupied", 0, boot="door-b1", mono_ms=1_100_000, arrive=0)
    _event(room, "door", "closed", 5, boot="door-b1", mono_ms=1_105_000, arrive=5)
    _alive(room, 15, 60, "closed")
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(5)
    room.status(DOOR, False, 70)  # the Last Will: power cut
    room.status(DOOR, True, 3010, boot="door-b2", uptime_s=12)
    _event(room, "door", "open", 3000, boot="door-b2", mono_ms=20_000, arrive=3011, startup=True)  # start-up
    _alive(room, 3015, 3100, "open")
    last = room.machine.state.last_episode
    assert room.machine.episode is None and last is not None and last.id == ep.id
    assert last.end_uncertain, "the opening was any time in the outage: the end is not known"
    assert last.end_earliest is not None and last.end_earliest <= at(55), "last known closed: T0+55"


def test_a_door_found_closed_by_the_agents_start_up_reading_starts_an_uncertain_episode() -> None:
    """semantics "Why these rules": "the hub never under-counts a confinement, and says plainly when it
    does not know"; 2.1 keeps "the door-close time ... as the earliest possible start" when the start
    is not known; 4.2: the device's return brings the room up to date.

    A child is in the calm room with the door open when the door device loses power (last heard at T0+55,
    its Last Will at T0+70). While it is down the door is shut on the child. It boots again at T0+3000 and
    publishes its start-up reading `door: closed`, stamped with its own start time (docs/edge.md,
    "Start-up"). The hub opens the episode at T0+3000 as a close it saw happen: `start_uncertain: false`,
    no `earliest_start`. The record shows a confinement that began at T0+3000 for certain, when the child
    may have been shut in since T0+55: up to 49 minutes nobody timed, and nothing says so."""
    room = Room(heartbeat_s=10)
    room.status(DOOR, True, -100, boot="door-b1", uptime_s=1000)
    room.status(PANEL, True, -100, boot="panel-b1", uptime_s=1000)
    room.observer("present", -50)
    _event(room, "door", "open", -40, boot="door-b1", mono_ms=1_060_000, arrive=-40)
    _event(room, "occupancy", "occupied", 0, boot="door-b1", mono_ms=1_100_000, arrive=0)
    _alive(room, 5, 60, "open")
    room.status(DOOR, False, 70)  # the Last Will
    room.status(DOOR, True, 3010, boot="door-b2", uptime_s=12)
    _event(
        room, "door", "closed", 3000, boot="door-b2", mono_ms=20_000, arrive=3011, startup=True
    )  # start-up
    ep = room.machine.episode
    assert ep is not None
    assert ep.start_uncertain, "the door closed at some time in the outage, not at the agent's start"
    assert ep.earliest_start is not None and ep.earliest_start <= at(55), "last known open: T0+55"


# -- heartbeat reconciliation ----------------------------------------------------------------------


def test_a_door_found_open_by_a_heartbeat_is_bounded_by_the_last_heartbeat_that_showed_it_closed() -> None:
    """semantics 4.2: the episode ends "with `end_uncertain: true` and its bounds (last known closed,
    first known open)".

    A door device whose SD card is full keeps heartbeating (docs/edge.md: a reading that cannot be stored
    waits in memory; the heartbeat's `state` follows the readings, its `last_seq` does not move). For an
    hour every heartbeat says the door is closed, the last at T0+3595; at T0+3605 one says open. The hub
    ends the episode at T0+3605 (right) but gives `end_earliest` T0+5, the door's close an hour before,
    not T0+3595, the last time it knew the door closed. The record says the child may have been let out
    at any time in the hour: the episode's length reads as anything from 0 to 60 minutes, when the hub
    knew it to within 10 seconds."""
    room = Room(heartbeat_s=10)
    room.observer("present", -50)
    room.occupancy("occupied", 0)
    room.door("closed", 5)
    _alive(room, 15, 3600, "closed")  # the last at T0+3595
    room.heartbeat(DOOR, 3605, {"door": "open", "occupancy": "occupied"})
    last = room.machine.state.last_episode
    assert room.machine.episode is None and last is not None
    assert last.end_uncertain and last.ended_at == at(3605)
    assert last.end_earliest is not None and last.end_earliest >= at(3595), (
        f"last known closed is T0+3595 (a heartbeat said so), not {last.end_earliest}"
    )


def test_a_close_numbered_late_moves_a_start_found_by_a_heartbeat_back_to_it() -> None:
    """semantics 4.3: "Replayed events are applied in order at their own `ts`. What they reveal about the
    past ... is written into the episode"; and the hub "never under-counts a confinement".

    The door device's SD card is full: the door closes on a child at T0+96 and the reading waits in memory
    (docs/edge.md); the heartbeat of T0+105 says `door: closed` with `last_seq` unchanged. The hub opens
    the episode at T0+105, `start_uncertain`, with no `earliest_start`. The card has room again and the
    close is numbered with its own time, T0+96, and arrives next. The hub applies it and leaves the
    episode starting at T0+105: 9 seconds of the confinement are never counted, and the record goes on
    saying its start is uncertain when the event now says exactly when it was."""
    room = Room(heartbeat_s=10)
    room.observer("present", -50)
    room.door("open", -40)
    room.occupancy("occupied", 0)
    _alive(room, 5, 100, "open")  # the last at T0+95
    room.heartbeat(DOOR, 105, {"door": "closed", "occupancy": "occupied"})
    ep = room.machine.episode
    assert ep is not None and ep.start_uncertain
    room.send(DOOR, "door", "closed", 96, arrive=106)  # numbered once the card had room, its own time
    ep = room.machine.episode
    assert ep is not None
    assert ep.started_at <= at(96), f"the door closed at T0+96; the episode starts at {ep.started_at}"


def test_heartbeats_stuck_ahead_of_the_last_applied_event_bring_the_room_up_to_date_in_the_end() -> None:
    """semantics 4.4: "a gap is possible loss on the device and the episode"; 4.2: "The device's status and
    heartbeat `state` bring the room up to date"; the hub "never under-counts a confinement".

    The door device's `door: closed` (seq 3) is taken by the broker (PUBACK) and never reaches the hub:
    dropped from the hub's session queue while a slow database held the hub's acknowledgements back. The
    agent keeps it in its outbox but re-sends only after a reconnect (contract 3), and it stays connected.
    From then on every heartbeat says `last_seq: 3`, the door closed, a child inside; the hub has seq 2
    and the door open. One such heartbeat is only a heartbeat that overtook its event (QoS 0, another
    topic), and changes nothing (right). But the hub waits for ever: after a minute of heartbeats, six
    times the heartbeat interval, with nothing arriving, it still has no episode, no possible loss, no
    alert. The child is confined untimed and unwatched until the door's next event."""
    room = Room(heartbeat_s=10)
    room.observer("present", -50)
    room.door("open", -40)  # seq 1
    room.occupancy("occupied", 0)  # seq 2

    def heartbeat(t: float) -> None:
        room.clock.set(at(t))
        state = {"door": "closed", "occupancy": "occupied"}
        room.machine.handle(Heartbeat(device=DOOR, ts=at(t), epoch=0, last_seq=3, state=state), at(t))
        room.machine.handle(
            Heartbeat(
                device=PANEL, ts=at(t), epoch=0, last_seq=room.seq[PANEL], state={"observer": "absent"}
            ),
            at(t),
        )
        room.tick(t)

    heartbeat(10)  # door closed at T0+8 (seq 3, lost on its way); its heartbeat overtook nothing yet
    assert room.machine.episode is None, "one heartbeat ahead of its event is not yet a loss"
    for t in range(20, 80, 10):
        heartbeat(t)
    assert room.machine.episode is not None, (
        "a minute of heartbeats showing the door closed on a child, the event they count never arriving"
    )


# -- the hub service: heartbeats and retained statuses as the broker delivers them ---------------------


class _Hub:
    """The hub's service on SQLite with a fake clock; calm-1 with `heartbeat_s` 10."""

    def __init__(self, tmp_path: Path) -> None:
        write_site(tmp_path / "site.yaml", [two_device_room("calm-1", heartbeat_s=10)])
        self.store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
        self.clock = FakeClock(at(0))
        self.service = HubService(load_sites([tmp_path / "site.yaml"]), self.store, self.clock, Topics())
        self.mid = 0
        self.seq = {"calm-1-door": 0, "calm-1-panel": 0}

    def message(self, device: str, channel: str, body: dict[str, Any], t: float, **kw: Any) -> Inbound:
        self.mid += 1
        self.clock.set(at(t))
        topic = f"seclusion/v1/{SITE}/calm-1/{device}/{channel}"
        return Inbound(topic, json.dumps({"v": 1, **body}).encode(), at(t), mid=self.mid, qos=1, **kw)

    def event(self, device: str, kind: str, value: str, t: float) -> Inbound:
        self.seq[device] += 1
        seq = self.seq[device]
        body = {"id": f"{device}:0:{seq}", "seq": seq, "ts": format_ts(at(t)), "kind": kind, "value": value}
        return self.message(device, "event", body, t)

    def heartbeat(self, device: str, t: float, state: dict[str, str], last_seq: int | None = None) -> Inbound:
        body = {
            "ts": format_ts(at(t)),
            "epoch": 0,
            "last_seq": self.seq[device] if last_seq is None else last_seq,
            "uptime_s": 5000 + t,
            "queued": 0,
            "state": state,
        }
        return self.message(device, "heartbeat", body, t)

    def status(self, device: str, t: float, *, sent: float | None = None, retain: bool = False) -> Inbound:
        said = t if sent is None else sent
        body = {
            "online": True,
            "ts": format_ts(at(said)),
            "boot": f"{device}-b1",
            "uptime_s": 5000 + said,
            "epoch": 0,
            "last_seq": self.seq[device],
        }
        return self.message(device, "status", body, t, retain=retain)

    def inbox(self) -> list[Inbound | Command]:
        items: list[Inbound | Command] = []
        while True:
            try:
                items.append(self.service.inbox.get_nowait())
            except queue.Empty:
                return items


def test_heartbeats_with_nothing_queued_bring_a_room_the_hub_has_no_events_of_up_to_date(
    tmp_path: Path,
) -> None:
    """semantics 4.2: "The device's status and heartbeat `state` bring the room up to date"; contract 2:
    `state` is there "so the hub can reconcile after a gap"; semantics 4.6: "Nothing is lost or forgotten".

    A hub without the devices' last events: a replacement hub on a new database, or one restored from last
    night's backup. The devices have long been running: their events up to `last_seq` 41 (door) and 17
    (panel) were stored and acknowledged by the hub before, so their outboxes are empty (`queued: 0`:
    nothing is on its way, and nothing will be re-sent). For two minutes every heartbeat says the door is
    closed on a child with nobody at the panel. The hub ignores every one of them, as "events still on
    their way": no episode, no lapse, no alert, and its `_hub/status` online hands the room's buzzer to an
    indicator that shows nothing. The confinement is not timed until the door's next event."""
    hub = _Hub(tmp_path)
    for t in range(0, 120, 10):
        hub.service.process(
            [
                hub.heartbeat("calm-1-door", t, {"door": "closed", "occupancy": "occupied"}, last_seq=41),
                hub.heartbeat("calm-1-panel", t + 1, {"observer": "absent"}, last_seq=17),
            ]
        )
    machine = hub.service.machines[(SITE, "calm-1")]
    try:
        assert machine.reading("door") == "closed", "every heartbeat for two minutes says the door is closed"
        ep = machine.episode
        assert ep is not None and ep.start_uncertain, (
            "a child shut in, found by the heartbeats: timed, uncertain"
        )
    finally:
        hub.store.close()


def test_a_retained_status_delivered_again_at_reconnect_is_not_word_from_the_device(tmp_path: Path) -> None:
    """semantics 4.1: "A device is offline from its last message ... when nothing has come from it for
    3 x heartbeat_s while the hub was listening"; docs/hub.md: a retained status delivered again "is the
    copy from the device's last connect and changes nothing".

    The panel reconnects at T0+105 (its status), heartbeats at T0+105 and T0+115, and dies at T0+120
    without a will (the broker restarts at T0+118 and keeps its retained messages). When the hub is back
    on the broker at T0+1000, the broker delivers each device's retained status again, flagged `retain`:
    the panel's is its status of T0+105. The hub tells it apart from news only by comparing its `ts` with
    what the panel reported since, which the two heartbeats after a connect do not raise; so it takes the
    copy as the panel heard at T0+1000, and the panel goes offline from T0+1000, not from T0+115. The 885 s
    in between count as supervised (the observer was last seen present) for a panel that was dead: the
    record shows a child watched when nobody could know."""
    hub = _Hub(tmp_path)
    svc = hub.service
    svc.start()
    svc.stop()  # not its thread: this test calls `process`
    try:
        svc.process([hub.status("calm-1-door", 0), hub.status("calm-1-panel", 0)])
        svc.process([hub.event("calm-1-panel", "observer", "present", 1)])
        svc.process([hub.event("calm-1-door", "occupancy", "occupied", 2)])
        svc.process([hub.event("calm-1-door", "door", "closed", 3)])
        for t in range(10, 100, 10):
            svc.process(
                [
                    hub.heartbeat("calm-1-door", t, {"door": "closed", "occupancy": "occupied"}),
                    hub.heartbeat("calm-1-panel", t + 1, {"observer": "present"}),
                ]
            )
        svc.process(
            [hub.status("calm-1-panel", 105), hub.heartbeat("calm-1-panel", 105, {"observer": "present"})]
        )
        svc.process([hub.heartbeat("calm-1-door", 110, {"door": "closed", "occupancy": "occupied"})])
        svc.process([hub.heartbeat("calm-1-panel", 115, {"observer": "present"})])
        # The broker goes at T0+118: the hub hears nothing (and judges no liveness) until T0+1000.
        svc.listening = lambda: False
        hub.clock.set(at(1000))
        svc.process([])
        svc.listening = lambda: True
        svc.reconnected()
        backlog = [
            *hub.inbox(),
            hub.status("calm-1-door", 1000, sent=0, retain=True),
            hub.status("calm-1-panel", 1000, sent=105, retain=True),
        ]
        svc.process(backlog)
        for t in range(1001, 1100, 10):
            svc.process([hub.heartbeat("calm-1-door", t, {"door": "closed", "occupancy": "occupied"})])
        machine = svc.machines[(SITE, "calm-1")]
        panel = machine.state.devices["calm-1-panel"]
        assert not panel.online
        ep = machine.episode
        assert ep is not None
        assert panel.offline_since is not None and panel.offline_since <= at(115), (
            f"its last message came at T0+115; offline since {panel.offline_since}"
        )
        acc = account(ep, at(1100))
        assert acc.unknown_s >= 1100 - 115 - 1, f"unknown {acc.unknown_s} s, supervised {acc.supervised_s} s"
    finally:
        hub.store.close()
