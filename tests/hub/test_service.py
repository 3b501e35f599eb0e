"""The ingest service in process: a bug of ours on one message never stops the rooms or loses the others."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select

from seclusion_contract import ConfigPayload, Topics, format_ts
from seclusion_hub.api import episode_json
from seclusion_hub.config import load_sites
from seclusion_hub.core.alerts import AlertError
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.core.room import Message, Outcome, RoomMachine
from seclusion_hub.delivery import AlertDelivery
from seclusion_hub.errors import RejectedMessage
from seclusion_hub.ingest import Inbound
from seclusion_hub.models import DeadLetter, DeliveryRecord, EventRecord, RoomSnapshot
from seclusion_hub.notify import Channel, DeliveryError, Notice, render_message, verify_signature
from seclusion_hub.service import Command, HubService, Inbox
from seclusion_hub.store import Store
from tests.support.hub import SITE, two_device_room, write_site
from tests.support.processes import poll
from tests.support.sink import running_sink

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


def inbound(room: str, device: str, seq: int, kind: str, value: str, t: float, mid: int) -> Inbound:
    when = T0 + dt.timedelta(seconds=t)
    body: dict[str, Any] = {
        "v": 1,
        "id": f"{device}:0:{seq}",
        "seq": seq,
        "ts": format_ts(when),
        "kind": kind,
    }
    payload = json.dumps({**body, "value": value}).encode()
    return Inbound(f"seclusion/v1/{SITE}/{room}/{device}/event", payload, when, mid=mid, qos=1)


def left_unwatched() -> list[Inbound | Command]:
    """calm-1: the observer at the panel, a child inside, the door closed at T0+2, then nobody at the
    panel from T0+10 (a lapse due once the grace runs out)."""
    return [
        inbound("calm-1", "calm-1-panel", 1, "observer", "present", 0, 1),
        inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 1, 2),
        inbound("calm-1", "calm-1-door", 2, "door", "closed", 2, 3),
        inbound("calm-1", "calm-1-panel", 2, "observer", "absent", 10, 4),
    ]


def test_a_message_our_code_fails_on_is_set_aside_and_the_rest_of_the_batch_applied(
    service: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_handle = RoomMachine.handle

    def buggy(self: RoomMachine, message: Message, now: dt.datetime) -> Outcome:
        outcome = real_handle(self, message, now)  # changes the machine first, then fails: the worst case
        if self.spec.id == "calm-2":
            raise RuntimeError("a bug in the rules")
        return outcome

    monkeypatch.setattr(RoomMachine, "handle", buggy)
    service.process(
        [
            inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1),
            inbound("calm-2", "calm-2-door", 1, "occupancy", "occupied", 0, mid=2),
            inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=3),
        ]
    )
    assert service.machines[(SITE, "calm-1")].episode is not None
    calm2 = service.machines[(SITE, "calm-2")]
    assert calm2.reading("occupancy") is None, "the half-applied message was undone"
    assert calm2.state.devices["calm-2-door"].seq == 0
    with service.store.session() as s:
        events = s.exec(select(EventRecord)).all()
        letters = s.exec(select(DeadLetter)).all()
    assert [(e.room, e.seq) for e in events] == [("calm-1", 1), ("calm-1", 2)]
    assert len(letters) == 1 and "internal error while applying: RuntimeError" in letters[0].reason
    assert sorted(mid for mid, _, _ in service.acks) == [1, 2, 3]  # type: ignore[attr-defined]
    assert service.healthy


def test_a_message_the_database_refuses_is_set_aside_and_the_writer_goes_on(
    service: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses one event (here a trigger; in life a constraint or a damaged page): the
    batch is tried again, then message by message, and only that one is set aside with the database's
    reason; the writer's connection, dropped with the error, is replaced and the next batch lands."""
    with service.store.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON event WHEN NEW.device = 'calm-2-door' AND NEW.seq = 1"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    waits: list[float] = []

    def wait(seconds: float) -> bool:  # the backoff between attempts, without waiting
        waits.append(seconds)
        return False

    monkeypatch.setattr(service._stop, "wait", wait)
    service.process([inbound("calm-2", "calm-2-panel", 1, "observer", "present", 0, mid=9)])
    writer = service.store._writer
    assert writer is not None and not writer.closed  # the connection the writer keeps between batches
    service.process(
        [
            inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1),
            inbound("calm-2", "calm-2-door", 1, "occupancy", "occupied", 0, mid=2),
            inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=3),
        ]
    )
    assert waits, "the whole batch was tried again, with backoff, before message by message"
    assert writer.closed, "dropped with the error"
    service.process([inbound("calm-2", "calm-2-door", 2, "occupancy", "vacant", 2, mid=4)])
    assert service.store._writer is not None and service.store._writer is not writer
    with service.store.session() as s:
        events = s.exec(select(EventRecord)).all()
        letters = s.exec(select(DeadLetter)).all()
    assert sorted((e.device, e.seq) for e in events) == [
        ("calm-1-door", 1),
        ("calm-1-door", 2),
        ("calm-2-door", 2),
        ("calm-2-panel", 1),
    ]
    [letter] = letters
    assert letter.topic.endswith("/calm-2/calm-2-door/event")
    assert "the database refused it" in letter.reason and "refused by the test" in letter.reason
    assert sorted(mid for mid, _, _ in service.acks) == [1, 2, 3, 4, 9]
    assert service.machines[(SITE, "calm-1")].episode is not None
    assert service.healthy


def _store_waiting_briefly_for_locks(db: Path) -> Store:
    """A SQLite store whose writes give up on another writer's lock after 0.1 s (30 s as shipped)."""
    store = Store.open(f"sqlite:///{db}")
    store.engine.dispose()

    @sa.event.listens_for(store.engine, "connect")
    def _short_wait(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout=100")

    return store


def test_a_write_lock_held_by_another_writer_never_sets_a_valid_event_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`database is locked` says nothing about the message: it is retried until the lock goes, never
    kept as a dead letter and acknowledged (a read answers while another writer holds the lock)."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    db = tmp_path / "hub.db"
    store = _store_waiting_briefly_for_locks(db)
    svc = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics())
    acks: list[int] = []
    svc.ack_message = lambda mid, qos, conn: acks.append(mid)
    try:
        svc.process([inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1)])
        other = sqlite3.connect(db, timeout=0.1, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # a backup, a long API transaction, a migration
        waits: list[float] = []

        def wait(seconds: float) -> bool:
            waits.append(seconds)
            if len(waits) == 3:
                other.execute("COMMIT")
            return False

        monkeypatch.setattr(svc._stop, "wait", wait)
        svc.process([inbound("calm-1", "calm-1-door", 2, "door", "closed", 5, mid=2)])
        other.close()
        with store.session() as s:
            events = [(e.seq, e.kind) for e in s.exec(select(EventRecord)).all()]
            letters = s.exec(select(DeadLetter)).all()
        assert len(waits) == 3 and letters == [] and events == [(1, "occupancy"), (2, "door")]
        assert acks == [1, 2] and svc.machines[(SITE, "calm-1")].episode is not None
    finally:
        store.close()


def test_a_database_that_takes_nothing_for_a_few_seconds_turns_the_hubs_status_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While nothing is stored the hub can raise no alert, yet the rooms, seeing its status online,
    keep their own alarms quiet (found by a review: a database refusing every write left it so for
    as long as it lasted). After `stall_s` without a stored batch the hub says offline on its
    retained status, again after a reconnect, and online once a batch is stored."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    db = tmp_path / "hub.db"
    store = _store_waiting_briefly_for_locks(db)
    svc = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics(), stall_s=5)
    said = _status_said(svc)
    seconds = [0.0]
    svc.monotonic = lambda: seconds[0]
    try:
        svc.process([inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1)])
        svc.watch()
        # Stored at once, the backlog through: online, said once the rooms were looked at with it.
        assert said == [True]
        del said[:]
        other = sqlite3.connect(db, timeout=0.1, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the database takes nothing
        seen: list[tuple[float, list[bool], bool]] = []
        link = [True]
        svc.listening = lambda: link[0]

        def wait(backoff: float) -> bool:  # the writer's pause between attempts, on the fake clock
            seconds[0] += backoff
            svc.watch()
            if len(seen) == 2:
                # The link dropped and came back meanwhile (the broker's session taken over, no Last
                # Will): the adapter counts it as up only once `reconnected` has returned.
                link[0] = False
                svc.reconnected()
                link[0] = True
                svc.watch()  # the watcher's next look
                svc.watch()  # and the one after: once on each connection
            seen.append((seconds[0], list(said), svc.status()["storing_stalled"] is True))
            if seconds[0] >= 7:
                other.execute("COMMIT")
            return False

        monkeypatch.setattr(svc._stop, "wait", wait)
        svc.process([inbound("calm-1", "calm-1-door", 2, "door", "closed", 5, mid=2)])
        other.close()
        # 1 s and 3 s: not yet; at 7 s offline, and offline again after the reconnect's online.
        assert seen == [(1.0, [], False), (3.0, [], False), (7.0, [False, False], True)]
        assert said == [False, False, True]  # stored again: online
        assert svc.status()["storing_stalled"] is False and svc.healthy
        svc.watch()
        assert said == [False, False, True]
    finally:
        store.close()


def test_a_bug_outside_a_messages_own_apply_takes_the_same_messages_again_from_the_stored_rooms(
    service: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-off bug in the rules' look at the clock fails the batch that starts an episode: the rooms
    go back to what is stored and the same messages are taken again, so the door's closing is stored
    with its episode and incident, and no device is told a later event is stored while it is not."""
    real_tick = RoomMachine.tick
    armed = [False]

    def flaky(self: RoomMachine, now: dt.datetime, *, liveness: bool = True) -> Any:
        if armed[0] and self.state.episode is not None:
            armed[0] = False
            raise RuntimeError("a one-off bug in the rules")
        return real_tick(self, now, liveness=liveness)

    monkeypatch.setattr(RoomMachine, "tick", flaky)
    service.coalesce_s = 0
    acks: list[tuple[int, int, int]] = service.acks  # type: ignore[attr-defined]
    service.start()
    try:
        service.submit(inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1))
        poll(lambda: [a[0] for a in acks] == [1], 10, what="the first message stored")
        armed[0] = True
        service.submit(inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=2))
        poll(lambda: [a[0] for a in acks] == [1, 2], 20, what="the failed batch taken again and stored")
        assert service.healthy
    finally:
        service.stop()
    with service.store.session() as s:
        events = [(e.device, e.seq) for e in s.exec(select(EventRecord)).all()]
    assert events == [("calm-1-door", 1), ("calm-1-door", 2)]
    restored = service.store.load_room_states()[(SITE, "calm-1")]
    assert restored.episode is not None and restored.episode == service.machines[(SITE, "calm-1")].episode
    assert service.records.incident(restored.episode.incident_id) is not None


def test_a_persons_action_the_hub_did_not_take_in_time_is_withdrawn_never_applied_later(
    service: HubService,
) -> None:
    """The ingest thread was busy (a write waiting out the database), so the API gave up waiting: the
    action is withdrawn, never applied later, and the person's retry is the one that counts."""
    supervised_episode(service)
    applied: list[str] = []
    with pytest.raises(TimeoutError, match="nothing was changed"):
        service.run_command(lambda _batch: applied.append("first"), timeout=0.05)
    service.start()
    try:
        service.run_command(lambda _batch: applied.append("retry"))
    finally:
        service.stop()
    assert applied == ["retry"]


def test_liveness_waits_while_a_batch_waits_to_be_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write refused twice, 30 s each (heartbeats every 10 s): the devices' heartbeats came on time
    and wait in the inbox behind the batch, so nobody is judged offline for that silence (semantics
    4.1: only while the hub was listening)."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1", heartbeat_s=10)])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    service = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics(), coalesce_s=0)
    service.ack_message = lambda mid, qos, conn: None
    service.listening = lambda: True
    service.backlog_done = lambda: True
    for machine in service.machines.values():
        machine.hub_started(T0)
    clock = supervised_episode(service)

    def heartbeat(device: str, t: float, state: dict[str, str]) -> Inbound:
        when = T0 + dt.timedelta(seconds=t)
        body = {"v": 1, "ts": format_ts(when), "epoch": 0, "last_seq": 0, "uptime_s": 100 + t, "state": state}
        return Inbound(f"seclusion/v1/{SITE}/calm-1/{device}/heartbeat", json.dumps(body).encode(), when)

    real_write = service.store.write
    refusals = [2]

    def write(batch: Any, now: dt.datetime) -> None:
        if refusals[0]:
            refusals[0] -= 1
            t = (clock.now() - T0).total_seconds()
            for k in range(1, 4):
                service.submit(heartbeat("calm-1-panel", t + 10 * k, {"observer": "present"}))
                service.submit(
                    heartbeat("calm-1-door", t + 10 * k, {"door": "closed", "occupancy": "occupied"})
                )
            clock.advance(30)
            raise RuntimeError("database is locked")
        real_write(batch, now)

    monkeypatch.setattr(service.store, "write", write)
    monkeypatch.setattr(service._stop, "wait", lambda _s: False)
    clock.advance(5)
    service.process([inbound("calm-1", "calm-1-panel", 2, "observer", "present", 5, mid=4)])
    service.process(service._take())
    machine = service.machines[(SITE, "calm-1")]
    assert all(dev.online for dev in machine.state.devices.values())
    ep = machine.episode
    assert ep is not None and ep.unknown == []
    store.close()


def test_a_backlog_larger_than_a_batch_is_judged_against_the_clock_only_once_all_applied(
    tmp_path: Path,
) -> None:
    """Semantics 4.6: after a restart a deadline that passed fires late "unless the backlog showed its
    condition had ended". The hub was down an hour; the broker kept the observer stepping away for 5 s
    (under the 15 s grace) and coming back. Taken one message a batch, the rooms are not judged against
    the clock until the ingest thread reaches the marker's place in the inbox: no lapse is raised."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    sites = load_sites([tmp_path / "site.yaml"])
    clock = FakeClock(T0)
    before = HubService(sites, store, clock, Topics())
    before.process(
        [
            inbound("calm-1", "calm-1-panel", 1, "observer", "present", 0, mid=1),
            inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=2),
            inbound("calm-1", "calm-1-door", 2, "door", "closed", 0, mid=3),
        ]
    )
    clock.set(T0 + dt.timedelta(hours=1))
    after = HubService(sites, store, clock, Topics(), batch_size=1, linger_s=0)
    after.ack_message = lambda mid, qos, conn: None
    after.backlog_done = after.backlog_applied  # as the runtime wires it
    for seq, value, t in ((2, "absent", 100), (3, "present", 105)):
        late = inbound("calm-1", "calm-1-panel", seq, "observer", value, t, mid=10 + seq)
        after.submit(Inbound(late.topic, late.payload, clock.now(), mid=late.mid, qos=1))
    after.backlog_marker()  # the marker the hub sent itself comes back after the backlog
    while items := after._take():
        after.process(items)
    assert after.backlog_applied()
    rows, _ = store.list_alerts(None, None, None, None, 100, None)
    assert "supervision_lapse" not in [r.kind for r in rows]
    store.close()


def test_liveness_waits_while_the_hub_cannot_hear_the_broker(service: HubService) -> None:
    service.start()
    service.stop()
    clock = service.clock
    assert isinstance(clock, FakeClock)
    service.listening = lambda: False
    clock.advance(3600)
    service.process([])
    assert all(dev.online for m in service.machines.values() for dev in m.state.devices.values())
    service.listening = lambda: True
    service.process([])
    assert not any(dev.online for m in service.machines.values() for dev in m.state.devices.values())


def _a_lapse_decided_then_a_crash(before: HubService, clock: FakeClock) -> None:
    """calm-1's observer leaves during an episode and the lapse falls due (grace 5 s): its sends are
    stored `pending` by a hub whose `carry_out` was made to do nothing (it crashed after the commit)."""
    before.process(left_unwatched())
    clock.set(T0 + dt.timedelta(seconds=16))
    before.process([])


def _webhook_sends_pending_after_a_crash(
    tmp_path: Path, recipients: list[dict[str, Any]]
) -> tuple[Store, FakeClock, list[DeliveryRecord]]:
    """calm-1 (lapse grace 5 s) on a site with `recipients`; a hub decides the lapse's sends and crashes
    before carrying them out (the batch that raised it is committed, nothing after it happens): the
    store, the clock and the webhook rows it left `pending`."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1", lapse_grace_s=5)], recipients=recipients)
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    clock = FakeClock(T0)
    before = HubService(load_sites([tmp_path / "site.yaml"]), store, clock, Topics())
    before.delivery.carry_out = lambda *_a: None  # type: ignore[method-assign]  # the crash
    _a_lapse_decided_then_a_crash(before, clock)
    return store, clock, [d for d in store.unfinished_deliveries() if d.channel.startswith("webhook:")]


def _restarted(
    tmp_path: Path, store: Store, clock: FakeClock, recipients: list[dict[str, Any]] | None = None
) -> HubService:
    """The hub started again on the same store (on a site file with `recipients` now, when given)."""
    if recipients is not None:
        write_site(
            tmp_path / "site.yaml", [two_device_room("calm-1", lapse_grace_s=5)], recipients=recipients
        )
    after = HubService(load_sites([tmp_path / "site.yaml"]), store, clock, Topics())
    after.start()
    return after


def test_a_send_decided_before_a_crash_is_delivered_after_the_restart(tmp_path: Path) -> None:
    with running_sink() as hook:
        recipients: list[dict[str, Any]] = [
            {
                "name": "Room staff",
                "tier": "room",
                "webhooks": [{"url": f"{hook.url}/hook", "secret": "a-secret-of-enough-length"}],
            },
            # A senior to tell (a channel nobody listens on): the start of the episode (first tier
            # `senior`) goes there, not to the room, which would be the nearest tier with someone on it.
            {"name": "Duty senior", "tier": "senior", "notify": ["json://127.0.0.1:9/"]},
        ]
        store, clock, [pending] = _webhook_sends_pending_after_a_crash(tmp_path, recipients)
        assert hook.received() == []

        after = _restarted(tmp_path, store, clock)
        try:
            [told] = poll(hook.received, 10, what="the webhook after the restart")
            assert verify_signature(
                "a-secret-of-enough-length", told.headers["x-seclusion-signature"], told.body
            )
            assert json.loads(told.body)["kind"] == "supervision_lapse"

            def finished() -> dict[str, str]:
                rows = {d.channel: d.status for d in store.deliveries(pending.alert_id)}
                return rows if all(s != "pending" for s in rows.values()) else {}

            statuses = poll(finished, 10, what="every delivery row to be settled")
            assert statuses[pending.channel] == "sent"
            # A live push cannot be made late: it is recorded as not done, the board shows the alert.
            assert statuses["live"] == "failed"
            assert store.delivery_attempts(pending.id)[-1].ok is True
        finally:
            after.stop()
            store.close()


def test_a_send_taken_up_after_a_restart_goes_to_its_own_recipient_when_the_site_file_changed(
    tmp_path: Path,
) -> None:
    """Two room-tier webhooks, First and Second; a lapse decided, then a crash. Before the restart
    First is taken out of the site file. Second is sent its notice on its own row; First's row is
    recorded as not sent, with why. Matched by place (until a review found it), First's row went
    to Second's channel and was recorded `sent`, and Second's row stayed `pending` for ever."""
    with running_sink() as hook:
        senior = {"name": "Duty senior", "tier": "senior", "notify": ["json://127.0.0.1:9/"]}

        def recipients(*names: str) -> list[dict[str, Any]]:
            return [
                {"name": n, "tier": "room", "webhooks": [{"url": f"{hook.url}/{n}", "secret": HOOK_SECRET}]}
                for n in names
            ] + [senior]

        store, clock, pending = _webhook_sends_pending_after_a_crash(tmp_path, recipients("First", "Second"))
        assert sorted(d.recipient for d in pending) == ["First", "Second"]
        alert_id = pending[0].alert_id

        after = _restarted(tmp_path, store, clock, recipients("Second"))
        try:
            [told] = poll(hook.received, 10, what="the webhook after the restart")
            assert told.path == "/Second"

            def settled() -> dict[str, tuple[str, str | None]]:
                rows = {
                    d.recipient: (d.status, d.last_error)
                    for d in store.deliveries(alert_id)
                    if d.channel.startswith("webhook:")
                }
                return rows if all(s != "pending" for s, _ in rows.values()) else {}

            rows = poll(settled, 10, what="both webhook rows settled")
            assert rows["Second"] == ("sent", None)
            assert rows["First"][0] == "failed"
            assert "no longer a recipient" in (rows["First"][1] or "")
            assert len(hook.received()) == 1
        finally:
            after.stop()
            store.close()


HOOK_SECRET = "a-secret-of-enough-length"


def test_a_shared_destination_is_still_told_after_the_recipients_are_reordered(tmp_path: Path) -> None:
    """A destination two recipients of a tier share (a duty phone) is kept once, under the first one
    listed. With the site file only reordered, the pending send was recorded `failed: no longer a
    recipient` and never sent, though both people and the phone remain (found by a review)."""
    with running_sink() as hook:
        senior = {"name": "Duty senior", "tier": "senior", "notify": ["json://127.0.0.1:9/"]}

        def recipients(*names: str) -> list[dict[str, Any]]:
            shared = {"url": f"{hook.url}/duty-phone", "secret": HOOK_SECRET}
            return [{"name": n, "tier": "room", "webhooks": [shared]} for n in names] + [senior]

        store, clock, pending = _webhook_sends_pending_after_a_crash(tmp_path, recipients("First", "Second"))
        assert [d.recipient for d in pending] == ["First"]  # one row: the destination is told once
        alert_id = pending[0].alert_id

        # Only the order changes: both people, and the duty phone, are still on the room tier.
        after = _restarted(tmp_path, store, clock, recipients("Second", "First"))
        try:

            def settled() -> list[tuple[str, str | None]]:
                rows = [
                    (d.status, d.last_error)
                    for d in store.deliveries(alert_id)
                    if d.channel.startswith("webhook:")
                ]
                return rows if all(s != "pending" for s, _ in rows) else []

            rows = poll(settled, 10, what="the webhook row settled")
            assert rows == [("sent", None)], f"the supervision lapse's notice was not sent: {rows}"
            assert len(hook.received()) == 1
        finally:
            after.stop()
            store.close()


def hooked_hub(tmp_path: Path, url: str, clock: FakeClock, store: Store) -> HubService:
    """A hub whose room tier has one webhook, `url`; the lapse of calm-1 is due 5 s after it begins. A
    senior is listed too, so that the start of the episode (first tier senior) is not sent to the room's
    webhook (with nobody on senior it would be: an alert goes to the nearest tier that has someone)."""
    recipients = [
        {"name": "Room staff", "tier": "room", "webhooks": [{"url": url, "secret": HOOK_SECRET}]},
        {"name": "Duty senior", "tier": "senior", "notify": ["json://127.0.0.1:9/"]},
    ]
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1", lapse_grace_s=5)], recipients=recipients)
    return HubService(load_sites([tmp_path / "site.yaml"]), store, clock, Topics(), linger_s=0)


def webhook_row(store: Store, alert_id: str) -> Any:
    rows = [d for d in store.deliveries(alert_id) if d.channel.startswith("webhook:")]
    return rows[0] if rows else None


def lapse_refused_twice(tmp_path: Path, url: str, clock: FakeClock, store: Store) -> tuple[HubService, str]:
    """A running hub whose webhook refuses: the lapse raised at 15 s is tried twice and waits for its
    third try. Returns the hub (still running) and the lapse's id."""
    hub = hooked_hub(tmp_path, url, clock, store)
    hub.process(left_unwatched())
    hub.start()
    clock.set(T0 + dt.timedelta(seconds=16))
    [lapse] = poll(lambda: store.active_alerts_of_kind("supervision_lapse"), 10, what="the lapse")
    alert_id = lapse.id
    poll(lambda: getattr(webhook_row(store, alert_id), "attempts", 0) == 1, 10, what="the first attempt")
    clock.advance(1.5)
    hub.delivery.dispatcher.wake()
    poll(lambda: webhook_row(store, alert_id).attempts == 2, 10, what="the second attempt")
    return hub, alert_id


def test_a_retry_taken_up_after_a_restart_numbers_its_attempts_on(tmp_path: Path) -> None:
    with running_sink(status=500) as hook:
        clock = FakeClock(T0)
        store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
        before, alert_id = lapse_refused_twice(tmp_path, f"{hook.url}/hook", clock, store)
        before.stop()
        row = webhook_row(store, alert_id)
        assert (row.status, row.attempts) == ("retrying", 2)

        hook.status = 200  # the receiver is back
        after = hooked_hub(tmp_path, f"{hook.url}/hook", clock, store)
        after.start()
        try:
            poll(
                lambda: webhook_row(store, alert_id).status == "sent",
                10,
                what="the delivery after the restart",
            )
            assert webhook_row(store, alert_id).attempts == 3
            assert [a.attempt for a in store.delivery_attempts(row.id)] == [1, 2, 3]
            assert len(hook.received()) == 3
        finally:
            after.stop()
            store.close()


def test_a_retry_past_the_one_hour_limit_is_given_up_at_start_and_not_sent(tmp_path: Path) -> None:
    with running_sink(status=500) as hook:
        clock = FakeClock(T0)
        store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
        before, alert_id = lapse_refused_twice(tmp_path, f"{hook.url}/hook", clock, store)
        before.stop()
        row = webhook_row(store, alert_id)
        last_try = row.last_attempt_at

        hook.status = 200
        clock.advance(2 * 3600)  # the hub was down for two hours
        after = hooked_hub(tmp_path, f"{hook.url}/hook", clock, store)
        after.start()
        try:
            poll(lambda: webhook_row(store, alert_id).status != "retrying", 10, what="the delivery to settle")
            done = webhook_row(store, alert_id)
            assert (done.status, done.attempts, done.next_retry_at) == ("failed", 2, None)
            assert (
                done.last_error is not None
                and "not sent" in done.last_error
                and "3600 s old" in done.last_error
            )
            assert done.last_attempt_at == last_try  # nothing was tried
            assert [a.attempt for a in store.delivery_attempts(row.id)] == [1, 2]
            # The two refused attempts before the restart, nothing since (the alert, still active after two
            # hours, is sent anew as a late notice or a reminder: another delivery, with its own id).
            stale = [r for r in hook.received() if r.headers.get("x-seclusion-delivery") == f"{alert_id}/1"]
            assert len(stale) == 2
        finally:
            after.stop()
            store.close()


def test_a_retrying_notice_is_dropped_when_its_alert_is_resolved(tmp_path: Path) -> None:
    with running_sink(status=500) as hook:
        clock = FakeClock(T0)
        store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
        hub, alert_id = lapse_refused_twice(tmp_path, f"{hook.url}/hook", clock, store)
        try:
            hub.resolve_alert(SITE, "calm-1", alert_id, "Ms Senior", "seen to")
            poll(lambda: webhook_row(store, alert_id).status == "failed", 10, what="the retry to be dropped")
            hook.status = 200
            clock.advance(3600)
            hub.delivery.dispatcher.wake()
            # Nothing of the lapse waits any more (the senior's notice of the episode's start may).
            assert hub.delivery.dispatcher.drop_retries(alert_id, "checked by the test") == 0
            dropped = webhook_row(store, alert_id)
            assert dropped.last_error == "the alert was resolved before this notice could be delivered"
            assert (dropped.attempts, dropped.next_retry_at) == (2, None)
            assert [a.attempt for a in store.delivery_attempts(dropped.id)] == [1, 2]
            assert len(hook.received()) == 2
        finally:
            hub.stop()
            store.close()


def test_a_retrying_notice_of_an_alert_resolved_before_a_restart_is_not_sent_at_start(tmp_path: Path) -> None:
    with running_sink(status=500) as hook:
        clock = FakeClock(T0)
        store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
        before, alert_id = lapse_refused_twice(tmp_path, f"{hook.url}/hook", clock, store)
        # The hub stops after the resolve is stored and before its retries are dropped.
        before.delivery.resolved = lambda alerts: None  # type: ignore[method-assign]
        before.resolve_alert(SITE, "calm-1", alert_id, "Ms Senior", "seen to")
        before.stop()
        assert webhook_row(store, alert_id).status == "retrying"

        hook.status = 200
        after = hooked_hub(tmp_path, f"{hook.url}/hook", clock, store)
        after.start()
        try:
            poll(lambda: webhook_row(store, alert_id).status == "failed", 10, what="the retry to be dropped")
            assert webhook_row(store, alert_id).last_error == (
                "the alert was resolved before this notice could be delivered"
            )
            assert len(hook.received()) == 2
        finally:
            after.stop()
            store.close()


class GateChannel:
    """A notification channel whose send waits for `release`, then succeeds; it keeps what it sent."""

    label = "test:gate"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.sent: list[Notice] = []

    def send(self, notice: Notice) -> None:
        self.started.set()
        if not self.release.wait(10):
            raise DeliveryError("not released")
        self.sent.append(notice)


class QuietChannel:
    """A notification channel that delivers every notice at once and keeps nothing."""

    label = "test:quiet"

    def send(self, notice: Notice) -> None:
        pass


def gated_hub(tmp_path: Path, store: Store, clock: FakeClock, gate: GateChannel) -> HubService:
    """A hub whose room tier of calm-1 (lapse grace 5 s) is told through `gate` alone, and its senior
    tier through a channel that keeps nothing (the start of the episode goes there, not to the gate)."""
    sites = load_sites([write_site(tmp_path / "site.yaml", [two_device_room("calm-1", lapse_grace_s=5)])])
    channels: dict[tuple[str, str], list[tuple[str, Channel]]] = {
        (SITE, "room"): [("Room staff", gate)],
        (SITE, "senior"): [("Duty senior", QuietChannel())],
    }
    delivery = AlertDelivery({s.id: s for s in sites}, Topics(), clock, channels=channels)
    return HubService(sites, store, clock, Topics(), delivery=delivery, linger_s=0)


def test_a_notice_delivered_while_the_hub_stops_is_recorded_and_not_sent_again(tmp_path: Path) -> None:
    """Given a running hub whose one room channel is in the middle of sending a supervision lapse,
    when the hub is told to stop and the send succeeds while it stops, then the attempt is recorded
    (semantics 5.3) and the next start sends nothing again."""
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    clock = FakeClock(T0)
    gate = GateChannel()
    hub = gated_hub(tmp_path, store, clock, gate)
    hub.start()
    for message in left_unwatched():
        assert isinstance(message, Inbound)
        hub.submit(message)

    def observer_left() -> bool:
        with hub.lock:
            episode = hub.machines[(SITE, "calm-1")].episode
            return episode is not None and len(episode.observer) == 2

    poll(observer_left, 10, what="the observer to leave")
    clock.set(T0 + dt.timedelta(seconds=16))  # the lapse is due
    assert gate.started.wait(10), "the lapse reached the channel"

    # When: the hub stops, and the send completes once its notifiers are stopping.
    stopping = threading.Event()
    stop_notifiers = hub.delivery.stop

    def stop_then_release(timeout: float = 5.0) -> None:
        stopping.set()
        stop_notifiers(timeout)

    hub.delivery.stop = stop_then_release  # type: ignore[method-assign]
    stopper = threading.Thread(target=hub.stop)
    stopper.start()
    assert stopping.wait(10)
    gate.release.set()
    stopper.join(20)
    assert not stopper.is_alive() and len(gate.sent) == 1

    # Then: the attempt is recorded, and a new start has nothing to send again.
    [row] = [
        d
        for a in store.list_alerts(None, None, None, None, 100, None)[0]
        for d in store.deliveries(a.id)
        if d.channel == GateChannel.label
    ]
    assert (row.status, row.attempts) == ("sent", 1)
    assert store.unfinished_deliveries() == []
    again = GateChannel()
    again.release.set()
    after = gated_hub(tmp_path, store, clock, again)
    after.start()  # unfinished sends are taken up here, before it returns
    try:
        assert after.delivery.dispatcher.pending() == 0 and again.sent == []
    finally:
        after.stop()
        store.close()


def test_two_webhooks_with_one_url_and_two_secrets_each_have_their_attempt_recorded(tmp_path: Path) -> None:
    """Given two recipients of the room tier whose webhooks share a URL but not a secret (two channels
    with one label), when a supervision lapse is sent to both, then each delivery row records its own
    attempt (semantics 5.3), and neither is left `pending` to be sent again at the next start."""
    with running_sink() as hook:
        recipients = [
            {"name": name, "tier": "room", "webhooks": [{"url": f"{hook.url}/hook", "secret": secret}]}
            for name, secret in (
                ("A", "first-secret-of-enough-length"),
                ("B", "second-secret-of-enough-length"),
            )
        ] + [{"name": "Duty senior", "tier": "senior", "notify": ["json://127.0.0.1:9/"]}]  # as above
        write_site(
            tmp_path / "site.yaml", [two_device_room("calm-1", lapse_grace_s=5)], recipients=recipients
        )
        store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
        clock = FakeClock(T0)
        hub = HubService(load_sites([tmp_path / "site.yaml"]), store, clock, Topics())
        hub.process(left_unwatched())
        hub.start()
        try:
            clock.set(T0 + dt.timedelta(seconds=16))  # the lapse is due: both webhooks are told
            poll(lambda: len(hook.received()) == 2 or None, 10, what="both webhooks")

            def settled() -> list[Any]:
                rows = [
                    d
                    for a in store.list_alerts(None, None, None, None, 100, None)[0]
                    for d in store.deliveries(a.id)
                    if d.channel.startswith("webhook:")
                ]
                return rows if len(rows) == 2 and all(d.status != "pending" for d in rows) else []

            first, second = poll(settled, 10, what="both webhook rows to be settled")
            assert first.channel == second.channel  # one label for both
            assert [(d.status, d.attempts) for d in (first, second)] == [("sent", 1), ("sent", 1)]
            assert [len(store.delivery_attempts(d.id)) for d in (first, second)] == [1, 1]
        finally:
            hub.stop()
            store.close()


def _row(service: HubService, episode_id: str) -> Any:
    from seclusion_hub.core.episode import Episode

    row = service.store.get_episode(episode_id)
    assert row is not None
    return row, Episode.model_validate_json(row.data)


def supervised_episode(service: HubService) -> FakeClock:
    """Given an episode in calm-1 with the observer at the panel (messages 1-3, at T0); the clock."""
    clock = service.clock
    assert isinstance(clock, FakeClock)
    door, panel = "calm-1-door", "calm-1-panel"
    service.process(
        [
            inbound("calm-1", panel, 1, "observer", "present", 0, mid=1),
            inbound("calm-1", door, 1, "occupancy", "occupied", 0, mid=2),
            inbound("calm-1", door, 2, "door", "closed", 0, mid=3),
        ]
    )
    return clock


def test_an_open_episodes_row_waits_up_to_its_refresh_for_supervision_evidence_only(
    service: HubService,
) -> None:
    """Observer marks of an open episode reach its row within `episode_refresh_s` (1 s), not with every
    batch; the room's stored state and the live episode have them at once; anything else about the
    episode (a segment, its end) is written with the batch that changed it."""
    clock = supervised_episode(service)
    door, panel = "calm-1-door", "calm-1-panel"
    ep = service.machines[(SITE, "calm-1")].episode
    assert ep is not None
    row, stored = _row(service, ep.id)  # new: written at once
    marks = len(stored.observer)
    clock.advance(0.3)
    service.process([inbound("calm-1", panel, 2, "observer", "absent", 0.3, mid=4)])
    row2, stored2 = _row(service, ep.id)
    assert len(stored2.observer) == marks and row2.saved_at == row.saved_at, "evidence only: waits"
    live = service.live_episode(ep.id)
    assert live is not None and len(live.observer) == marks + 1  # the API's view: at once
    snapshot = service.store.load_room_states()[(SITE, "calm-1")]
    assert snapshot.episode is not None and len(snapshot.episode.observer) == marks + 1  # durable at once
    assert _room_row(service).episode_id is None  # carried whole by the room while its row waits

    clock.advance(0.8)  # 1.1 s after the row was written; nothing new arrives: an idle batch refreshes it
    service.process([])
    row3, stored3 = _row(service, ep.id)
    assert len(stored3.observer) == marks + 1 and row3.saved_at > row.saved_at

    clock.advance(0.1)  # a change that is not evidence only: written with its batch, refresh or not
    service.process([inbound("calm-1", door, 3, "door", "open", 1.2, mid=5)])
    _, stored4 = _row(service, ep.id)
    assert stored4.segments[0].end is not None
    assert len(service.acks) == 5  # type: ignore[attr-defined]
    assert _room_row(service).episode_id == ep.id  # its row is current: the room names it
    assert (
        service.store.load_room_states()[(SITE, "calm-1")].episode
        == service.machines[(SITE, "calm-1")].episode
    )


def _room_row(service: HubService) -> RoomSnapshot:
    with service.store.session() as s:
        row = s.get(RoomSnapshot, (SITE, "calm-1"))
    assert row is not None
    return row


def test_an_episodes_row_key_sees_every_change_but_supervision_evidence() -> None:
    """What decides whether an open episode's row must be written now: any field but the observer marks
    and check-ins, including a list item changed in place (a segment's end, an unknown interval's end)."""
    from seclusion_hub.core.episode import Episode, ObserverMark, ReviewRecord, Segment, UnknownInterval
    from seclusion_hub.service import _row_key

    t0 = dt.datetime(2026, 11, 22, 9, tzinfo=dt.UTC)
    ep = Episode(
        id="e",
        site=SITE,
        room="calm-1",
        number=1,
        started_at=t0,
        segments=[Segment(start=t0)],
        incident_id="i",
    )
    key = _row_key(ep)
    ep.observer.append(ObserverMark(ts=t0, present=True))
    ep.checks.append(t0)
    assert _row_key(ep) == key, "evidence alone"
    changes: list[Callable[[], object]] = [
        lambda: setattr(ep.segments[0], "end", t0 + dt.timedelta(seconds=5)),
        lambda: ep.unknown.append(UnknownInterval(device="calm-1-door", start=t0)),
        lambda: setattr(ep.unknown[0], "end", t0 + dt.timedelta(seconds=2)),
        lambda: ep.reviews.append(ReviewRecord(name="check", at=t0, by="staff")),
        lambda: setattr(ep, "locked", True),
    ]
    for change in changes:
        change()
        assert _row_key(ep) != key
        key = _row_key(ep)


def test_the_decoder_remembers_only_a_registered_devices_own_topics(service: HubService) -> None:
    """Topics already checked are not parsed again; a wrong room or an unknown device is refused every
    time, even after the device's own topic was accepted."""
    decoder = service.decoder
    good = inbound("calm-1", "calm-1-door", 1, "door", "closed", 0, mid=1)
    for _ in range(2):
        decoded = decoder.decode(good)
        assert (decoded.site, decoded.room) == (SITE, "calm-1")
    refused = (("calm-2", "calm-1-door", "belongs to room"), ("calm-1", "ghost", "not registered"))
    for room, device, reason in refused:
        bad = inbound(room, device, 1, "door", "closed", 0, mid=2)
        for _ in range(2):
            with pytest.raises(RejectedMessage, match=reason):
                decoder.decode(bad)


def test_readings_from_a_clock_that_reads_1970_are_applied_and_only_impossible_times_set_aside(
    service: HubService,
) -> None:
    """A Raspberry Pi that booted with no network and no saved time reads 1970: its door closing on a
    child is still an episode (timed on arrival, clock_uncertain); only a time no clock gives (before
    the Unix epoch, a century ahead) is a dead letter, named."""

    def on_clock(message: Inbound, said: str) -> Inbound:
        body = json.loads(message.payload)
        return dataclasses.replace(message, payload=json.dumps({**body, "ts": said}).encode())

    service.process(
        [
            on_clock(
                inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, 1), "1970-01-01T00:00:41.000Z"
            ),
            on_clock(inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, 2), "1970-01-01T00:00:42.000Z"),
            on_clock(inbound("calm-2", "calm-2-door", 1, "door", "closed", 1, 3), "1969-12-31T23:59:59.000Z"),
            on_clock(inbound("calm-2", "calm-2-door", 2, "door", "open", 1, 4), "2127-01-01T00:00:00.000Z"),
        ]
    )
    ep = service.machines[(SITE, "calm-1")].state.episode
    assert ep is not None and ep.started_at == T0 + dt.timedelta(seconds=1) and ep.clock_uncertain
    # Stored at the time applied, so the episode's timeline finds them, with what the device said.
    stored = service.store.episode_events(SITE, "calm-1", T0 - dt.timedelta(seconds=60), None)
    assert [(e.kind, e.ts, e.device_ts) for e in stored] == [
        ("occupancy", T0, dt.datetime(1970, 1, 1, 0, 0, 41, tzinfo=dt.UTC)),
        ("door", T0 + dt.timedelta(seconds=1), dt.datetime(1970, 1, 1, 0, 0, 42, tzinfo=dt.UTC)),
    ]
    reasons = sorted(d.reason for d in service.store.dead_letters(limit=10)[0])
    assert reasons == [
        "ts: 1969-12-31T23:59:59+00:00 is not a time any device clock gives",
        "ts: 2127-01-01T00:00:00+00:00 is not a time any device clock gives",
    ]


@pytest.mark.parametrize(("waited_ms", "slept_ms"), [(0, 5.0), (3, 2.0), (5, None), (40, None)])
def test_a_batch_gathers_for_the_linger_from_its_first_messages_arrival(
    service: HubService, monkeypatch: pytest.MonkeyPatch, waited_ms: float, slept_ms: float | None
) -> None:
    """Woken by a message that just came, the ingest thread lingers 5 ms for more (one commit serves the
    batch); a message that already waited while the last batch was written is not kept waiting longer
    than what is left of its linger (docs/performance.md)."""
    clock = service.clock
    assert isinstance(clock, FakeClock)
    slept: list[float] = []
    monkeypatch.setattr("seclusion_hub.service.time.sleep", slept.append)
    service.linger_s = 0.005
    first = inbound("calm-1", "calm-1-door", 1, "door", "closed", 0, mid=1)  # received at T0
    second = inbound("calm-1", "calm-1-door", 2, "door", "open", 0, mid=2)
    service.submit(first)
    service.submit(second)
    clock.advance(waited_ms / 1000)
    assert service._take() == [first, second]
    assert slept == ([] if slept_ms is None else [pytest.approx(slept_ms / 1000)])


def test_whatever_goes_into_the_inbox_wakes_the_ingest_thread() -> None:
    """Waiting on the network (inline), the ingest thread learns of an API command only by `wake`."""
    inbox = Inbox()
    woken: list[int] = []
    inbox.wake = lambda: woken.append(inbox.qsize())
    command = Command(lambda _batch: None)
    inbox.put(command)
    inbox.put_nowait(command)
    assert woken == [1, 2]  # each after its item is in
    assert inbox.get_nowait() is command


def test_driving_the_connection_the_ingest_thread_reads_while_it_gathers_and_never_sleeps(
    service: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inline (`HubMqtt.pump`): the connection is driven once at once (the last batch's acks go out),
    then while the batch gathers, instead of a sleep; what each turn reads is in the batch, and the
    gathering stops once the batch is full."""
    monkeypatch.setattr("seclusion_hub.service.time.sleep", lambda _s: pytest.fail("slept"))
    arriving = [inbound("calm-1", "calm-1-door", n, "door", "closed", 0, mid=n) for n in (1, 2, 3, 4)]
    turns: list[float] = []

    def pump(timeout: float) -> None:  # each turn reads the next message off the socket
        turns.append(timeout)
        if arriving:
            service.submit(arriving.pop(0))

    service.pump = pump
    service.batch_size = 3
    service.linger_s = 5.0  # long: only a full batch ends the gathering
    taken = service._take()
    assert [i.mid for i in taken if isinstance(i, Inbound)] == [1, 2, 3]
    assert turns[0] == 0.0  # at once, before anything else
    assert len(turns) == 3  # and no more once the batch is full
    service.linger_s = 0
    assert [i.mid for i in service._take() if isinstance(i, Inbound)] == [4]


def test_evidence_waiting_for_its_row_survives_two_crashes_in_a_row(service: HubService) -> None:
    """An observer mark whose episode row waits for its refresh is kept whole in the room's state. A hub
    started from that state knows nothing of the row, so it carries the episode whole (and rewrites
    the row) before it ever names the row: a second crash loses nothing either."""
    clock = supervised_episode(service)
    door, panel = "calm-1-door", "calm-1-panel"
    clock.advance(0.3)
    service.process([inbound("calm-1", panel, 2, "observer", "absent", 0.3, mid=4)])
    assert _room_row(service).episode_id is None  # the row waits: the room carries the episode

    def restarted() -> HubService:  # killed, and started again on the same database
        return HubService(list(service.sites.values()), service.store, clock, Topics())

    second = restarted()
    ep = second.machines[(SITE, "calm-1")].episode
    assert ep is not None and [m.present for m in ep.observer] == [True, False]
    second.process([Command(lambda _batch: None)])  # any first batch (the hub's is its reconnect)
    second.process([inbound("calm-1", door, 3, "lock", "released", 0.4, mid=5)])  # touches the room
    third = restarted()
    ep = third.machines[(SITE, "calm-1")].episode
    assert ep is not None and [m.present for m in ep.observer] == [True, False]
    _, stored = _row(third, ep.id)
    assert [m.present for m in stored.observer] == [True, False]  # the row was written again, whole


@pytest.fixture(params=["sqlite", "postgresql"])
def service_on(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HubService]:
    """The service on SQLite and on a real PostgreSQL server."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_db")
    store = Store.open(url)
    svc = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics())
    svc.ack_message = lambda mid, qos, conn: None
    yield svc
    store.close()


def test_a_gap_flags_every_ended_episode_its_window_overlaps_not_only_the_latest(
    service_on: HubService,
) -> None:
    """4.4: the panel's events are lost while two episodes end in the room; the event after the gap
    shows the window (from the panel's latest reading the hub has, to it). Both episodes are stored
    `possible_loss`, the older one (which the room no longer holds) with its timeline note; an episode
    that ended before the window is left alone."""
    service = service_on
    clock = service.clock
    assert isinstance(clock, FakeClock)
    door, panel = "calm-1-door", "calm-1-panel"
    machine = service.machines[(SITE, "calm-1")]
    ended: list[str] = []
    seq = {door: 0, panel: 0}
    mid = 0

    def send(device: str, kind: str, value: str, t: float) -> None:
        nonlocal mid
        seq[device] += 1
        mid += 1
        clock.set(T0 + dt.timedelta(seconds=t))
        service.process([inbound("calm-1", device, seq[device], kind, value, t, mid=mid)])

    def episode(start: float) -> None:
        send(door, "occupancy", "occupied", start)
        send(door, "door", "closed", start + 1)
        send(door, "door", "open", start + 50)
        send(door, "occupancy", "vacant", start + 51)
        last = machine.state.last_episode
        assert last is not None and last.ended_at is not None
        ended.append(last.id)

    episode(0)  # ends at T0+50
    send(panel, "observer", "present", 60)  # the panel's latest reading the hub will have
    episode(100)  # the panel's events from here on are lost
    episode(200)
    seq[panel] += 2
    send(panel, "observer", "absent", 300)  # the gap: two events missing between T0+60 and T0+300
    before, older, latest = ended
    assert machine.state.last_episode is not None and machine.state.last_episode.id == latest

    flagged = {}
    for episode_id in ended:
        row, stored = _row(service, episode_id)
        flagged[episode_id] = stored.possible_loss
        assert episode_json(service.episode_now(row), clock.now())["possible_loss"] == stored.possible_loss
    assert flagged == {before: False, older: True, latest: True}

    def loss_notes(episode_id: str) -> list[tuple[dt.datetime, object]]:
        notes = service.store.episode_notes(episode_id)
        return [(n.at, n.detail) for n in notes if n.kind == "possible_loss"]

    said = [(T0 + dt.timedelta(seconds=300), {"device": panel, "missing": 2})]
    assert loss_notes(older) == said and loss_notes(latest) == said
    assert loss_notes(before) == []


def test_busy_rooms_looked_at_together_are_not_kept_in_step(tmp_path: Path, monkeypatch: Any) -> None:
    """After a look at every room (the first one after a start), rooms busy within the coalescing window
    are looked at again spread over it, each no later than `coalesce_s` after its last look, rather than
    all in one batch: in step, every `coalesce_s` one batch would evaluate and write them all."""
    rooms = [f"calm-{i}" for i in range(1, 5)]
    write_site(tmp_path / "site.yaml", [two_device_room(r) for r in rooms])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    clock = FakeClock(T0)
    service = HubService(load_sites([tmp_path / "site.yaml"]), store, clock, Topics())
    service.ack_message = lambda mid, qos, conn: None
    looked: list[tuple[dt.datetime, str]] = []
    for (_, room), machine in service.machines.items():
        tick = machine.tick

        def counting(now: dt.datetime, *, liveness: bool, _room: str = room, _tick: Any = tick) -> Any:
            looked.append((now, _room))
            return _tick(now, liveness=liveness)

        monkeypatch.setattr(machine, "tick", counting)
    try:
        service.process([])  # the first look, at every room
        assert sorted(r for _, r in looked) == rooms
        looked.clear()
        clock.advance(0.01)  # every room busy again at once, within the window
        busy: list[Inbound | Command] = [
            inbound(r, f"{r}-door", 1, "door", "open", 0.01, mid=i) for i, r in enumerate(rooms)
        ]
        service.process(busy)
        for _ in range(30):  # idle batches every 10 ms: deadlines wake the rooms
            clock.advance(0.01)
            service.process([])
        times = {r: [t for t, room in looked if room == r] for r in rooms}
        assert all(len(ts) == 1 for ts in times.values()), times
        when = [ts[0] for ts in times.values()]
        assert all(w <= T0 + dt.timedelta(seconds=service.coalesce_s) for w in when)
        assert len(set(when)) == len(rooms), "looked at in one batch: still in step"
    finally:
        store.close()


def test_each_device_is_told_its_rooms_numbers_for_its_own_fail_safe(tmp_path: Path) -> None:
    """Contract 3: the retained `config` carries the numbers an agent needs to run its own timers,
    `occupancy_lookback_s` (semantics 2.1) and the re-close rules (2.4) among them, from the room's
    policy."""
    # Given a room whose policy changes the lookback and the re-close rules
    room = two_device_room("calm-1", occupancy_lookback_s=45, reclose_grace_s=12, reclose_is_new_episode=True)
    write_site(tmp_path / "site.yaml", [room])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        svc = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics())
        sent: dict[str, tuple[bytes, int, bool]] = {}
        svc.publish = lambda topic, payload, qos, retain: sent.__setitem__(topic, (payload, qos, retain))
        # When the hub publishes the devices' configs
        svc.publish_configs()
    finally:
        store.close()
    # Then each device of the room has them, retained
    for device in ("calm-1-door", "calm-1-panel"):
        payload, qos, retain = sent[f"seclusion/v1/{SITE}/calm-1/{device}/config"]
        config = ConfigPayload.model_validate_json(payload)
        assert (qos, retain) == (1, True)
        assert (config.occupancy_lookback_s, config.reclose_grace_s, config.reclose_is_new_episode) == (
            45,
            12,
            True,
        )


@pytest.mark.parametrize(
    ("policy", "overrides", "limit"),
    [
        ("us-cms-hospital", {}, 3600),  # no max_duration_s: the youngest age band's hour
        ("us-cms-hospital", {"max_duration_s": 1800}, 1800),  # shorter than every band: it
        ("england-schools-2026", {}, None),  # neither: no limit
    ],
)
def test_a_devices_fail_safe_is_told_the_time_limit_the_hub_applies_to_a_child_of_unknown_age(
    tmp_path: Path, policy: str, overrides: dict[str, Any], limit: float | None
) -> None:
    """Semantics 2.6 and 5.4: with the hub down, the door's fail-safe must sound the time limit. The
    config carried `max_duration_s` alone, so under a profile with age bands (us-cms-hospital: 1 h under
    9) and no `max_duration_s` the agent had no limit at all (found by a review). Devices hold no
    child's details: they are told the earliest limit that may apply, as the hub applies it to a child
    whose age it does not know."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1", **overrides)], policy=policy)
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        svc = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics())
        sent: dict[str, bytes] = {}
        svc.publish = lambda topic, payload, qos, retain: sent.__setitem__(topic, payload)
        svc.publish_configs()
    finally:
        store.close()
    config = ConfigPayload.model_validate_json(sent[f"seclusion/v1/{SITE}/calm-1/calm-1-door/config"])
    assert config.max_duration_s == limit


def test_on_each_connect_the_hub_tells_every_device_it_has_heard_its_ack_again_once_stored(
    service: HubService,
) -> None:
    """A broker that lost its store lost the retained acks with it: a device on a new SD card then waits
    for one that never comes (docs/edge.md). So every (re)connect publishes each heard device's ack
    again, from the stored state, after the commit; a device never heard gets none."""
    published: list[tuple[str, bytes, int, bool]] = []
    service.publish = lambda topic, payload, qos, retain: published.append((topic, payload, qos, retain))
    service.process([inbound("calm-1", "calm-1-door", 1, "door", "open", 0, mid=1)])
    service.process([inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=2)])
    published.clear()
    # When the hub's connection to the broker comes back
    service.reconnected()
    service.process([service.inbox.get_nowait()])  # what the ingest thread would take next
    # Then the door device's ack is published again, retained; the panel, never heard, gets none
    acks = [(t, json.loads(p), q, r) for t, p, q, r in published if t.endswith("/ack")]
    assert acks == [(f"seclusion/v1/{SITE}/calm-1/calm-1-door/ack", {"v": 1, "epoch": 0, "seq": 2}, 1, True)]


def _failing_writes(store: Store, failures: int) -> dict[str, int]:
    """The store's next `failures` writes fail as a locked database does (then it writes again)."""
    real_write = store.write
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
        real_write(*args, **kwargs)

    store.write = flaky  # type: ignore[method-assign]
    return calls


def _stored_seqs(store: Store) -> list[int]:
    with store.session() as s:
        return sorted(e.seq for e in s.exec(select(EventRecord)).all())


def test_at_stop_nothing_is_written_after_a_batch_the_database_did_not_take(tmp_path: Path) -> None:
    """What is left in the inbox at stop is written in order, but never past a batch whose write was
    given up: its device would be told a later seq is stored, and the given-up events, sent again at
    the next start, would be dropped as duplicates: lost."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    service = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics(), batch_size=1)
    acked: list[int] = []
    service.ack_message = lambda mid, qos, conn: acked.append(mid)
    try:
        # Given two events left in the inbox as the hub stops, and a database locked for a moment
        _failing_writes(store, 1)
        service.inbox.put(inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1))
        service.inbox.put(inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=2))
        # When the hub stops: its ingest thread has ended, and what is left in the inbox is written
        service._stop.set()
        service._drain()
        # Then neither is stored or acknowledged: the broker sends both again, in order
        assert _stored_seqs(store) == [] and acked == []
        # And at the next start both are taken, the first not mistaken for a duplicate
        service._stop.clear()
        service.process([inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=3)])
        service.process([inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=4)])
        assert _stored_seqs(store) == [1, 2] and acked == [3, 4]
    finally:
        store.close()


def test_at_stop_the_inbox_is_left_alone_once_the_ingest_thread_gave_up_a_batch(tmp_path: Path) -> None:
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    service = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics(), batch_size=1)
    service.ack_message = lambda mid, qos, conn: None
    try:
        # Given the ingest thread retrying its batch against a stalled database
        calls = _failing_writes(store, 1_000)
        service.start()
        service.submit(inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1))
        poll(lambda: calls["n"] >= 1 or None, 10, what="the first write tried")
        # and a later event waiting in the inbox behind it
        service.submit(inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=2))
        # When the hub stops (the thread gives its batch up), with the database back
        calls["n"] = 10_000
        service.stop()
        # Then the later event is not written ahead of the one given up
        assert _stored_seqs(store) == []
    finally:
        store.close()


def test_an_event_with_text_no_database_can_keep_is_set_aside_at_once_on_every_database(
    service_on: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NUL in an event's `id` (JSON "\\u0000"): PostgreSQL's text columns refuse it, so the batch was
    tried three times, then message by message, every room waiting about 6 s, before the event was set
    aside; SQLite stored it. Now it is a dead letter at the boundary on both, naming the field, as the
    API refuses such text with 422 (found by a review)."""
    waits: list[float] = []

    def wait(seconds: float) -> bool:  # the backoff between attempts, without waiting
        waits.append(seconds)
        return False

    monkeypatch.setattr(service_on._stop, "wait", wait)
    door = f"seclusion/v1/{SITE}/calm-1/calm-1-door/event"
    body = {"v": 1, "id": "calm-1-door:0:1\u0000", "seq": 1, "ts": format_ts(T0), "kind": "door"}
    bad = Inbound(door, json.dumps({**body, "value": "closed"}).encode(), T0, mid=1, qos=1)
    state = {"v": 1, "seq": 1, "ts": format_ts(T0), "state": {"door\u0000": "closed"}}
    beat = Inbound(door.replace("/event", "/heartbeat"), json.dumps(state).encode(), T0, mid=2, qos=1)
    assert service_on.process([bad, beat, inbound("calm-1", "calm-1-door", 2, "occupancy", "occupied", 1, 3)])
    assert waits == [], "nothing for the database to refuse, nothing retried"
    with service_on.store.session() as s:
        letters = sorted(s.exec(select(DeadLetter)).all(), key=lambda d: d.topic)
        events = s.exec(select(EventRecord)).all()
    assert [e.seq for e in events] == [2]
    assert [d.topic.rsplit("/", 1)[1] for d in letters] == ["event", "heartbeat"]
    assert "id: contains a NUL character" in letters[0].reason
    assert "state.door: contains a NUL character" in letters[1].reason
    assert "\x00" not in letters[1].reason


def test_a_persons_change_the_database_refuses_is_answered_and_the_hub_goes_on(
    service_on: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person's change in a batch the database refuses for good (a bug of ours: a value too long for
    its column, a constraint) was tried again for ever, with backoff: nothing after it was stored or
    acknowledged, no alert raised, until the hub was restarted (found by a review). Now, once the
    database still answers and refuses that change alone, the change fails with the reason, nothing of
    it is kept, and the next batch lands."""
    waits: list[float] = []

    def wait(seconds: float) -> bool:  # no waiting; "stopping" after a dozen: retried for ever, it returns
        waits.append(seconds)
        return len(waits) > 12

    monkeypatch.setattr(service_on._stop, "wait", wait)

    def refused(batch: Any) -> None:  # rows no database takes: one id twice in one insert
        letter = {"received_at": T0, "topic": "t", "reason": "r", "payload": b"", "payload_size": 0}
        letter |= {"id": 7, "payload_sha256": "0" * 64, "truncated": False}
        batch.dead_letters.extend([letter, dict(letter)])

    command = Command(refused)
    assert service_on.process([command, inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, 1)])
    assert command.done.is_set() and command.error is not None
    assert "the database refused this change" in str(command.error)
    assert len(waits) < 10, "not tried again for ever"
    service_on.process([inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, 2)])
    with service_on.store.session() as s:
        assert sorted(e.seq for e in s.exec(select(EventRecord)).all()) == [1, 2]
        assert s.exec(select(DeadLetter)).all() == []
    assert service_on.machines[(SITE, "calm-1")].episode is not None
    assert service_on.healthy


def test_a_maintenance_change_of_a_room_with_the_longest_ids_is_stored(service_on: HubService) -> None:
    """Its audit entry's target is "site/room": up to 127 characters (contract 1: 63 each), and the
    column held 64: PostgreSQL refused the change (and, before, the hub stalled on it)."""
    from seclusion_hub.models import AuditEntry

    target = f"{'s' * 63}/{'r' * 63}"
    entry = AuditEntry(at=T0, actor="Ms Head", action="mode_normal", target_type="room", target_id=target)
    command = Command(lambda batch: batch.audits.append(entry))
    assert service_on.process([command])
    assert command.error is None
    with service_on.store.session() as s:
        assert [a.target_id for a in s.exec(select(AuditEntry)).all()] == [target]


def test_a_channels_long_error_fits_both_of_its_columns() -> None:
    """The attempt's error went to its 500-character column whole (the delivery's was cut): latent while
    channels' errors stay short, but PostgreSQL would refuse the batch (found by a review)."""
    attempts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    AlertDelivery._outcome(attempts, updates, "a/1/live", 1, T0, False, "x" * 2000, None)
    assert len(attempts[0]["error"]) == len(updates[0]["error"]) == 500


def test_a_site_with_nobody_to_tell_is_said_at_start_and_in_the_status(
    service: HubService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A site with no recipients (or none with a channel): every alert reaches only the live board and the
    room's indicator. Said at start (site id and tier names only) and in status(), which /healthz shows."""
    caplog.set_level("WARNING", logger="seclusion_hub.service")
    service.start()
    try:
        status = service.status()
    finally:
        service.stop()
    assert status["sites_without_recipients"] == ["test-school"]
    assert status["tiers_without_recipients"] == {"test-school": ["room", "senior", "dsl", "head"]}
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("test-school" in m and "no recipients" in m for m in said), said
    # A site with someone on one tier: not said at start; its empty tiers are in the status
    recipients = [{"name": "Duty senior", "tier": "senior", "notify": ["json://127.0.0.1:9/"]}]
    write_site(tmp_path / "other.yaml", [two_device_room("calm-1")], recipients=recipients)
    store = Store.open(f"sqlite:///{tmp_path / 'other.db'}")
    other = HubService(load_sites([tmp_path / "other.yaml"]), store, FakeClock(T0), Topics())
    caplog.clear()
    try:
        other.start()
        other.stop()
        status = other.status()
    finally:
        store.close()
    assert status["sites_without_recipients"] == []
    assert status["tiers_without_recipients"] == {"test-school": ["room", "dsl", "head"]}
    assert not [r for r in caplog.records if "no recipients" in r.getMessage()]


def test_an_alert_of_a_room_taken_out_of_the_site_file_can_still_be_acknowledged_and_resolved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A room taken out of the site file (closed for building work) keeps its active alerts in the
    table: staff must still be able to acknowledge them and a senior to resolve them with a note (it
    was a 500: no room machine held them)."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1"), two_device_room("calm-2")])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    clock = FakeClock(T0)
    try:
        before = HubService(load_sites([tmp_path / "site.yaml"]), store, clock, Topics(), linger_s=0)
        before.process(
            [
                inbound("calm-2", "calm-2-door", 1, "occupancy", "occupied", 0, 1),
                inbound("calm-2", "calm-2-door", 2, "door", "closed", 1, 2),
            ]
        )
        clock.advance(60)
        before.process([])
        [lapse] = store.active_alerts_of_kind("supervision_lapse")
        assert lapse.room == "calm-2" and lapse.acknowledged_at is None

        write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
        after = HubService(load_sites([tmp_path / "site.yaml"]), store, clock, Topics(), linger_s=0)
        # Said plainly: the room is not watched, and the episode there is still open.
        assert after.status()["rooms_not_in_site_files"] == [
            {"site": SITE, "room": "calm-2", "open_episode": True}
        ]
        with caplog.at_level(logging.WARNING, logger="seclusion_hub.service"):
            after.start()
        assert "room calm-2 of site test-school is in the database but in no site file" in caplog.text
        assert "an episode there is still open" in caplog.text
        try:
            acked = after.acknowledge_alert(SITE, "calm-2", lapse.id, "Mr Staff", "board")
            assert acked is not None and acked.acknowledged_by == "Mr Staff"
            [stored] = store.active_alerts_of_kind("supervision_lapse")
            assert (stored.acknowledged_by, stored.acknowledged_via) == ("Mr Staff", "board")
            assert stored.next_send_at is None  # no room to send it on for

            resolved = after.resolve_alert(SITE, "calm-2", lapse.id, "Ms Senior", "room closed for works")
            assert (resolved.resolved_by, resolved.note) == ("Ms Senior", "room closed for works")
            assert store.active_alerts_of_kind("supervision_lapse") == []
            with pytest.raises(AlertError):
                after.resolve_alert(SITE, "calm-2", lapse.id, "Ms Senior", "again")
            assert after.acknowledge_alert(SITE, "calm-2", "no-such-alert", "Mr Staff", "board") is None
        finally:
            after.stop()
    finally:
        store.close()


def ended_episode() -> list[Inbound | Command]:
    """An episode of calm-1 from T0+2 to T0+60, supervised throughout (its record due at midnight)."""
    return [
        inbound("calm-1", "calm-1-panel", 1, "observer", "present", 0, 1),
        inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 1, 2),
        inbound("calm-1", "calm-1-door", 2, "door", "closed", 2, 3),
        inbound("calm-1", "calm-1-door", 3, "door", "open", 60, 4),
        inbound("calm-1", "calm-1-door", 4, "occupancy", "vacant", 61, 5),
    ]


class KeepChannel:
    """A notification channel that delivers every notice at once and keeps it."""

    label = "test:keep"

    def __init__(self) -> None:
        self.sent: list[Notice] = []

    def send(self, notice: Notice) -> None:
        self.sent.append(notice)


def test_the_notices_of_an_overdue_record_name_each_late_step(tmp_path: Path) -> None:
    """The record and the parents' notice are both due by the end of the day (default profile): the
    seniors are told of each, in words naming that step, not one wording for every step."""
    sites = load_sites([write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])])
    seniors = KeepChannel()
    channels: dict[tuple[str, str], list[tuple[str, Channel]]] = {
        (SITE, "senior"): [("Duty senior", seniors)]
    }
    clock = FakeClock(T0)
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    delivery = AlertDelivery({s.id: s for s in sites}, Topics(), clock, channels=channels)
    hub = HubService(sites, store, clock, Topics(), delivery=delivery, linger_s=0)
    try:
        hub.process(ended_episode())
        clock.set(dt.datetime(2026, 11, 24, 0, 1, tzinfo=dt.UTC))  # past midnight in London (GMT)
        hub.start()
        hub.inbox.put(hub.report_check())

        def overdue() -> list[Notice]:
            return [n for n in seniors.sent if n.kind == "report_overdue"]

        poll(lambda: len(overdue()) == 2, 10, what="the two overdue steps to be told")
        by_step = {n.rule: render_message(n) for n in overdue()}
        assert set(by_step) == {"record", "parent_notice"}
        assert by_step["record"].title.startswith("WARNING: record overdue")
        assert "Complete the record." in by_step["record"].body
        assert by_step["parent_notice"].title.startswith("WARNING: parents not yet told")
        assert "Tell the parents, and record that you have." in by_step["parent_notice"].body
    finally:
        hub.stop()
        store.close()


def test_an_overdue_record_is_raised_when_its_deadline_passes_not_up_to_a_minute_later(
    tmp_path: Path,
) -> None:
    """The records' deadlines were looked at once a minute: every `report_overdue` was raised up to a
    minute after its deadline, so each was marked late and its notice said the hub learned of it late.
    The look now also comes at the soonest deadline the last look found."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    clock = FakeClock(T0)
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    hub = HubService(load_sites([tmp_path / "site.yaml"]), store, clock, Topics(), linger_s=0)
    try:
        hub.process(ended_episode())
        midnight = dt.datetime(2026, 11, 24, 0, 0, tzinfo=dt.UTC)  # the record's deadline (London, GMT)
        clock.set(midnight - dt.timedelta(minutes=5))
        hub.start()  # its first look finds nothing overdue, and the deadline to come
        poll(lambda: hub._report_next == midnight, 10, what="the next deadline to be known")
        clock.set(midnight + dt.timedelta(milliseconds=200))
        raised = poll(
            lambda: store.active_alerts_of_kind("report_overdue"), 10, what="the overdue record to be raised"
        )
        assert {a.rule for a in raised} == {"record", "parent_notice"}
        assert all(not a.late for a in raised), [(a.rule, a.raised_at) for a in raised]
    finally:
        hub.stop()
        store.close()


def _status_said(svc: HubService) -> list[bool]:
    said: list[bool] = []

    def publish(topic: str, payload: bytes, _qos: int, retain: bool) -> None:
        if topic == Topics().hub_status:
            assert retain
            said.append(json.loads(payload)["online"])

    svc.publish = publish
    return said


def test_a_write_that_hangs_turns_the_hub_unhealthy_and_offline_until_it_returns(
    service: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that waits (another writer holding SQLite's lock, a PostgreSQL server that does not
    answer) raises nothing: /healthz said 200 "ok" while the hub said offline (found by a review)."""
    said = _status_said(service)
    seconds = [0.0]
    service.monotonic = lambda: seconds[0]
    real_write = service.store.write
    during: list[tuple[bool, list[bool]]] = []

    def slow_write(batch: Any, at: dt.datetime) -> None:
        seconds[0] += 6  # the write takes six seconds
        service.watch()  # the watcher's look meanwhile
        during.append((service.healthy, list(said)))
        real_write(batch, at)

    monkeypatch.setattr(service.store, "write", slow_write)
    service.process([inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1)])
    assert during == [(False, [False])]
    assert service.healthy and said == [False, True]


def test_the_status_is_said_only_while_connected_and_again_when_the_backlog_marker_is_back(
    service: HubService,
) -> None:
    """Said while the link was down, paho queued it and sent it after the reconnect, behind the status
    the reconnect said: an older word was the one the broker kept (found by a review). Now nothing is
    said while disconnected, and the status as it is is said again once the marker is back."""
    said = _status_said(service)
    seconds = [0.0]
    service.monotonic = lambda: seconds[0]
    connected = [True]
    service.listening = lambda: connected[0]
    service._unstored_since = seconds[0]
    seconds[0] += 6
    service.watch()
    assert said == [False]
    connected[0] = False
    service.process([])  # a batch stored while the link is down: online, but not said now
    assert said == [False] and service.status()["storing_stalled"] is False
    connected[0] = True
    service.reconnected()  # the adapter said online as it connected; nothing is stalled
    service.backlog_marker()
    while items := service._take():
        service.process(items)
    assert said == [False, True]  # said again after whatever paho had queued


def test_a_clean_stop_says_offline_as_soon_as_it_takes_no_more_messages(service: HubService) -> None:
    """The hub writes what it took while stopping (seconds, with a notice in flight), and takes nothing
    new: the rooms are told at once, not once the connection closes (found by a review); a batch
    stored meanwhile does not say online again."""
    said = _status_said(service)
    service.stop_taking()
    assert said == [False]
    service.submit(inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1))
    assert service.inbox.qsize() == 0  # left to the broker, for the next start
    service.process([])
    assert said == [False]


def test_the_hub_says_online_only_once_the_backlog_is_through_and_the_rooms_indicators_are_out(
    service: HubService,
) -> None:
    """An agent hands its buzzer and LED to the hub when the hub says online. Said as the hub connected
    (before the broker's backlog was taken and the rooms looked at with it), the indicators the agents
    then followed were from before the hub's downtime: a buzzer sounding for a child left unwatched
    meanwhile fell silent (found by a review of the edge fail-safe). Now nothing is said until the
    backlog is through, and online comes after the rooms' indicators."""
    published: list[tuple[str, bytes]] = []
    service.publish = lambda topic, payload, _qos, _retain: published.append((topic, payload))
    service.backlog_done = lambda: False  # the hub's marker not back yet: the backlog still coming
    service._listening_since = time.monotonic()
    service.process(
        [
            inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1),
            inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=2),
        ]
    )
    status = Topics().hub_status
    assert [t for t, _ in published if t == status] == []
    service.clock.set(T0 + dt.timedelta(seconds=2))  # type: ignore[attr-defined]
    service.backlog_done = lambda: True
    service.backlog_marker()
    service.process(service._take())
    topics = [t for t, _ in published]
    assert topics.count(status) == 1 and json.loads(dict(published)[status])["online"] is True
    indicator = Topics().indicator(SITE, "calm-1")
    assert indicator in topics and topics.index(indicator) < topics.index(status)
