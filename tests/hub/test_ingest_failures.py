"""The ingest path when things fail (MQTT message -> stored event -> acknowledgements): a database down
for reads too, a stop during a retry, a hostile payload, a reconnect (from a review; each failed before
its fix). Nothing is acknowledged, to the broker or to a device, before it is stored."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from seclusion_contract import Topics
from seclusion_hub.config import load_sites
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.ingest import Inbound
from seclusion_hub.models import DeadLetter, EventRecord
from seclusion_hub.service import HubService
from seclusion_hub.store import Store

# Its messages as the broker hands them over, as in tests/hub/test_service.py (the `service` fixture:
# tests/hub/conftest.py).
from tests.hub.test_service import T0, inbound
from tests.support.hub import SITE, two_device_room, write_site


def test_deeply_nested_json_is_rejected_as_bad_json_not_an_internal_error(
    service: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 16 KiB payload of nested brackets is not valid contract JSON; it is a bad message (contract 2,
    Rejects), dead-lettered with its reason like any other bad JSON. It must not be treated as a bug of
    the hub's own: that reloads every room from the database and applies the batch again, once per such
    message (a device can make the hub do this hundreds of times per batch)."""
    reloads = [0]
    real_load = service._load_machines

    def counting_load() -> None:
        reloads[0] += 1
        real_load()

    monkeypatch.setattr(service, "_load_machines", counting_load)
    topic = f"seclusion/v1/{SITE}/calm-1/calm-1-door/event"
    deep = b'{"v":1,"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert len(deep) < 16 * 1024
    items: list[Inbound] = [Inbound(topic, deep, T0, mid=100 + i, qos=1) for i in range(20)]
    items.append(inbound("calm-1", "calm-1-door", 1, "door", "closed", 1, mid=1))
    service.process(list(items))
    with service.store.session() as s:
        letters = s.exec(select(DeadLetter)).all()
        events = s.exec(select(EventRecord)).all()
    assert len(letters) == 20 and len(events) == 1
    reasons = {letter.reason for letter in letters}
    assert service.metrics.internal_errors._value.get() == 0, reasons
    assert reloads[0] == 0, f"every room reloaded {reloads[0]} times for bad payloads"
    assert all("JSON" in r for r in reasons), reasons


def _drain(svc: HubService) -> None:
    while items := svc._take():
        svc.process(items)


def test_a_batch_in_the_reconnect_window_never_judges_the_hubs_outage_as_device_downtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Semantics 4.6 / docs/hub.md: the hub's own deafness is not device downtime; after every reconnect
    liveness counts again from the moment the backlog marker comes back. A batch the ingest thread runs
    just as the link comes back (here: at the adapter's log call) must not see the previous connection's
    marker as applied and judge every device silent over the hub's own outage as offline: the service
    hears of the disconnect, and of the new connection before anything may see it connected."""
    import os

    from seclusion_hub import mqtt as mqtt_module
    from seclusion_hub.config import HubSettings
    from seclusion_hub.runtime import Hub
    from tests.support.processes import Mosquitto, poll

    site = write_site(tmp_path / "site.yaml", [two_device_room("calm-1", heartbeat_s=10)])
    for name in list(os.environ):
        if name.startswith("SECLUSION_"):
            monkeypatch.delenv(name)
    broker = Mosquitto(tmp_path / "broker").start()
    monkeypatch.setenv("SECLUSION_SITE_FILES", str(site))
    monkeypatch.setenv("SECLUSION_DATABASE_URL", f"sqlite:///{tmp_path / 'hub.db'}")
    monkeypatch.setenv("SECLUSION_MQTT_URL", broker.url)
    monkeypatch.setenv("SECLUSION_MQTT_CLIENT_ID", "review-hub")
    clock = FakeClock(T0)
    hub = Hub.build(HubSettings(), clock=clock)  # a fake clock: MQTT in a thread (HubMqtt)
    svc = hub.service
    svc.coalesce_s = 0
    svc.ack_message = lambda *_a: None
    for machine in svc.machines.values():
        machine.hub_started(clock.now())  # as service.start() does (no ingest thread: batches by hand)
    window: list[bool] = []
    real_info = mqtt_module.log.info

    def info(msg: str, *args: Any) -> None:
        if msg.startswith("MQTT connected") and window:
            svc.process([])  # the ingest thread's batch, at this moment
        real_info(msg, *args)

    monkeypatch.setattr(mqtt_module.log, "info", info)
    try:
        hub.mqtt.start()

        def through() -> bool:
            _drain(svc)
            return svc.backlog_applied()

        poll(through, 20, what="the first connection's backlog through")
        machine = svc.machines[(SITE, "calm-1")]
        assert all(dev.online for dev in machine.state.devices.values())
        # The broker goes away for a minute (6 heartbeats); the hub cannot hear anything meanwhile.
        broker.stop()
        poll(lambda: not hub.mqtt.connected, 10, what="the hub to see the broker gone")
        clock.advance(60)
        svc.process([])  # batches while deaf judge nobody (listening() is False)
        assert all(dev.online for dev in machine.state.devices.values())
        window.append(True)
        broker.start()
        poll(lambda: hub.mqtt.connected, 20, what="the hub to reconnect")
        poll(through, 20, what="the second connection's backlog through")
        offline = [name for name, dev in machine.state.devices.items() if not dev.online]
        assert offline == [], f"judged offline for the hub's own outage: {offline}"
    finally:
        hub.mqtt.stop()
        hub.store.close()
        broker.stop()


def test_a_stop_during_the_retry_pause_stores_nothing_after_the_failed_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug outside a message's own apply (here a one-off failure of the rules' look at the clock)
    fails the batch holding seq 2: `_run` reloads the rooms (fine), keeps the batch in `retry` and
    pauses. The hub is stopped (SIGTERM) during that pause: what came after it (seq 3) must not be
    stored or acknowledged before it (seq 3 told to the device as stored, seq 2 then dropped as a
    duplicate at the next start, was an event lost): the broker delivers both again, in order."""
    from seclusion_hub.core.room import RoomMachine
    from tests.support.processes import poll

    write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    sites = load_sites([tmp_path / "site.yaml"])
    clock = FakeClock(T0)
    svc = HubService(sites, store, clock, Topics(), coalesce_s=0)
    acked: list[int] = []
    device_acks: list[bytes] = []
    svc.ack_message = lambda mid, qos, conn: acked.append(mid)
    svc.publish = lambda topic, payload, qos, retain: (
        device_acks.append(payload) if topic.endswith("/ack") else None
    )
    real_tick = RoomMachine.tick
    armed = [False]

    def flaky(self: RoomMachine, now: dt.datetime, *, liveness: bool = True) -> Any:
        if armed[0]:
            armed[0] = False
            raise RuntimeError("a one-off bug in the rules")
        return real_tick(self, now, liveness=liveness)

    monkeypatch.setattr(RoomMachine, "tick", flaky)
    svc.start()
    try:
        svc.submit(inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1))
        poll(lambda: acked == [1], 10, what="the first event stored")
        armed[0] = True
        svc.submit(inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=2))
        poll(lambda: not svc.healthy, 10, what="the batch holding seq 2 to fail")
        svc.submit(inbound("calm-1", "calm-1-door", 3, "lock", "engaged", 2, mid=3))
    finally:
        svc.stop()  # SIGTERM during the 1 s pause
    with store.session() as s:
        stored = [e.seq for e in s.exec(select(EventRecord)).all()]
    # The broker delivers seq 2 and seq 3 again at the next start (neither was acknowledged):
    after = HubService(sites, store, clock, Topics(), coalesce_s=0)
    after.ack_message = lambda mid, qos, conn: None
    after.process(
        [
            inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=2),
            inbound("calm-1", "calm-1-door", 3, "lock", "engaged", 2, mid=3),
        ]
    )
    with store.session() as s:
        stored_after = [e.seq for e in s.exec(select(EventRecord)).all()]
    store.close()
    assert 3 not in acked or 2 in stored, (
        f"seq 3 stored and acknowledged, seq 2 never: {stored}, acks {acked}"
    )
    assert sorted(stored_after) == [1, 2, 3], (
        f"seq 2 dropped as a duplicate after the restart: {stored_after}"
    )


def test_a_database_down_for_reads_too_never_drops_the_retried_batch_as_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database server that is down (PostgreSQL restarting): the batch's write fails, and so does
    reloading the rooms. Applied again to rooms still holding the batch, its events would be dropped as
    duplicates and the batch written without them (nor the episode and incident they started), then
    acknowledged to the broker and the device. Nothing is applied until the rooms are put back."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    sites = load_sites([tmp_path / "site.yaml"])
    svc = HubService(sites, store, FakeClock(T0), Topics(), coalesce_s=0)
    acked: list[int] = []
    device_acks: list[bytes] = []
    svc.ack_message = lambda mid, qos, conn: acked.append(mid)
    svc.publish = lambda topic, payload, qos, retain: (
        device_acks.append(payload) if topic.endswith("/ack") else None
    )
    down = [False]
    real_write, real_load = store.write, store.load_room_states

    def write(batch: Any, now: dt.datetime) -> None:
        if down[0]:
            raise RuntimeError("server closed the connection unexpectedly")
        real_write(batch, now)

    def load() -> Any:
        if down[0]:
            raise RuntimeError("connection refused")
        return real_load()

    monkeypatch.setattr(store, "write", write)
    monkeypatch.setattr(store, "load_room_states", load)
    from tests.support.processes import poll

    svc.start()
    try:
        svc.submit(inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1))
        poll(lambda: acked == [1], 10, what="the first event stored")
        down[0] = True
        svc.submit(inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=2))  # starts an episode
        poll(lambda: svc.metrics.internal_errors._value.get() >= 1, 10, what="the batch to fail")
        down[0] = False  # the server is back during the pause
        poll(lambda: 2 in acked, 20, what="seq 2 acknowledged")
    finally:
        svc.stop()
    with store.session() as s:
        stored = [e.seq for e in s.exec(select(EventRecord)).all()]
    from seclusion_hub.models import EpisodeRecord

    with store.session() as s:
        episodes = s.exec(select(EpisodeRecord)).all()
    store.close()
    assert stored == [1, 2], f"seq 2 acknowledged to the broker and the device but never stored: {stored}"
    assert len(episodes) == 1


def test_postgresql_restarting_keeps_the_batch_it_was_down_for(tmp_path: Path) -> None:
    """The same as above with nothing simulated: a real PostgreSQL server stopped (fast shutdown) while
    a door closes, and started again: the event is stored, with its episode, before it is acknowledged."""
    from seclusion_hub.models import EpisodeRecord
    from tests.support.postgres import Postgres
    from tests.support.processes import poll

    server = Postgres().start()
    try:
        url = server.url(server.create_database())
        write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
        store = Store.open(url)
        svc = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics(), coalesce_s=0)
        acked: list[int] = []
        device_acks: list[bytes] = []
        svc.ack_message = lambda mid, qos, conn: acked.append(mid)
        svc.publish = lambda topic, payload, qos, retain: (
            device_acks.append(payload) if topic.endswith("/ack") else None
        )
        pg_ctl = str(server.bindir / "pg_ctl")
        options = (
            f"-p {server.port} -k {server.sockdir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        svc.start()
        try:
            svc.submit(inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1))
            poll(lambda: acked == [1], 20, what="the first event stored")
            server._run(pg_ctl, "stop", "-D", str(server.datadir), "-m", "fast", "-w")
            svc.submit(inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=2))
            poll(lambda: svc.metrics.internal_errors._value.get() >= 1, 20, what="the batch to fail")
            server._run(
                pg_ctl, "start", "-D", str(server.datadir), "-l", str(server.logfile), "-o", options, "-w"
            )
            poll(lambda: 2 in acked, 60, what="seq 2 acknowledged")
        finally:
            svc.stop()
        with store.session() as s:
            stored = [e.seq for e in s.exec(select(EventRecord)).all()]
            episodes = s.exec(select(EpisodeRecord)).all()
        store.close()
        assert stored == [1, 2], f"seq 2 acknowledged to the broker and the device but never stored: {stored}"
        assert len(episodes) == 1, "the confinement the door's closing began is stored with it"
    finally:
        server.stop()


def test_a_split_batch_that_fails_part_way_is_taken_again_from_where_it_failed(
    service: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses a batch three times, so it is written message by message; the first (a bad
    payload) is stored as a dead letter and acknowledged, then a bug of ours fails the second. The
    ingest thread takes the batch again: only from the message that failed, never the first's dead
    letter and acknowledgement twice."""
    refusals = [3]
    real_write = service.store.write

    def refusing(batch: Any, now: dt.datetime) -> None:
        if refusals[0] > 0 and len(batch.events) + len(batch.dead_letters) > 1:
            refusals[0] -= 1
            raise RuntimeError("the database refuses this batch")
        real_write(batch, now)

    monkeypatch.setattr(service.store, "write", refusing)
    monkeypatch.setattr(service._stop, "wait", lambda timeout=None: False)  # no pause between tries
    bad = Inbound(f"seclusion/v1/{SITE}/calm-1/calm-1-door/event", b"not json", T0, mid=7, qos=1)
    good = inbound("calm-1", "calm-1-door", 1, "door", "closed", 1, mid=8)
    real_tick = service._tick
    failures = [1]

    def failing_once(pending: Any) -> None:
        # Once split, in the good message's own batch (the bad one's holds only its dead letter).
        if failures[0] and refusals[0] == 0 and pending.batch.events:
            failures[0] -= 1
            raise RuntimeError("a one-off bug of ours")
        real_tick(pending)

    monkeypatch.setattr(service, "_tick", failing_once)
    items: list[Inbound | Any] = [bad, good]
    with pytest.raises(RuntimeError, match="one-off bug"):
        service.process(items)
    assert items == [good], "what is taken again starts at the message that failed"
    service._reload_rooms()  # as the ingest thread does after a failed batch (_run)
    assert service.process(items)
    with service.store.session() as s:
        letters = s.exec(select(DeadLetter)).all()
        events = s.exec(select(EventRecord)).all()
    assert len(letters) == 1 and [e.seq for e in events] == [1]
    acks = service.acks  # type: ignore[attr-defined]
    assert sorted(mid for mid, _, _ in acks) == [7, 8]
