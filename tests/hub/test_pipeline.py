"""The running ingest thread commits batch n on a writer thread while it applies batch n+1
(`HubService._process_pipelined`). What must hold: nothing is acknowledged (to the broker or to the
device) before it is stored; what is stored, and the rooms' state, are exactly what applying the same
batches one after the other gives; a failed commit or a message our code fails on loses nothing."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from seclusion_contract import Topics
from seclusion_hub.config import load_sites
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.core.room import Message, Outcome, RoomMachine
from seclusion_hub.ingest import Inbound
from seclusion_hub.service import HubService
from seclusion_hub.store import Rows, Store
from tests.hub.test_service import T0, inbound
from tests.support.hub import two_device_room, write_site
from tests.support.processes import poll

ROOMS = ("calm-1", "calm-2")
# Per room: an episode opens (occupied, door closed), the observer comes and goes, the door opens and
# closes again, then opens and the room empties; told twice over.
STORY = [
    ("door", "occupancy", "occupied"),
    ("panel", "observer", "present"),
    ("door", "door", "closed"),
    ("panel", "observer", "absent"),
    ("panel", "observer", "present"),
    ("door", "door", "open"),
    ("door", "door", "closed"),
    ("panel", "observer", "absent"),
    ("door", "door", "open"),
    ("door", "occupancy", "vacant"),
] * 2


def messages() -> list[Inbound]:
    out: list[Inbound] = []
    seqs: dict[str, int] = {}
    for step, (which, kind, value) in enumerate(STORY):
        for room in ROOMS:
            device = f"{room}-{which}"
            seqs[device] = seqs.get(device, 0) + 1
            out.append(inbound(room, device, seqs[device], kind, value, step * 2.0, mid=len(out) + 1))
    return out


class Checked:
    """A service whose every acknowledgement is checked against what the database holds at that moment."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        site = write_site(tmp_path / f"{name}-site.yaml", [two_device_room(r) for r in ROOMS])
        self.store = Store.open(f"sqlite:///{tmp_path / f'{name}.db'}")
        # Batches of 3, each touched room evaluated with every batch: the same batches give the same
        # rooms whichever way they are written.
        self.service = HubService(
            load_sites([site]),
            self.store,
            FakeClock(T0 + dt.timedelta(minutes=5)),
            Topics(),
            batch_size=3,
            coalesce_s=0,
        )
        self.lock = threading.Lock()
        self.acked: list[int] = []
        self.device_acks: list[tuple[str, int]] = []
        self.early: list[str] = []  # acknowledgements of what was not stored yet
        self.mids: dict[int, tuple[str, int]] = {}  # mid: (device, seq)
        self.service.ack_message = self.ack
        self.service.publish = self.publish

    def stored(self) -> set[tuple[str, int]]:
        """(device, seq) of every event stored, as an event or set aside as a dead letter."""
        with self.store.engine.connect() as conn:
            events = {(d, s) for d, s in conn.execute(text("SELECT device, seq FROM event"))}
            letters = conn.execute(text("SELECT topic, payload FROM dead_letter")).all()
        return events | {(t.split("/")[-2], json.loads(p)["seq"]) for t, p in letters}

    def events(self) -> set[tuple[str, int]]:
        with self.store.engine.connect() as conn:
            return {(d, s) for d, s in conn.execute(text("SELECT device, seq FROM event"))}

    def ack(self, mid: int, _qos: int, _conn: int) -> None:
        if mid in self.mids and self.mids[mid] not in self.stored():
            self.early.append(f"PUBACK of {self.mids[mid]}")
        with self.lock:
            self.acked.append(mid)

    def publish(self, topic: str, payload: bytes, _qos: int, _retain: bool) -> None:
        if not topic.endswith("/ack"):
            return
        device = topic.split("/")[-2]
        seq = json.loads(payload)["seq"]
        if seq and (device, seq) not in self.stored():
            self.early.append(f"device ack of {(device, seq)}")
        with self.lock:
            self.device_acks.append((device, seq))

    def feed(self, items: list[Inbound]) -> None:
        for item in items:
            body = json.loads(item.payload)
            self.mids[item.mid] = (item.topic.split("/")[-2], body["seq"])
        for item in items:
            self.service.submit(item)

    def wait_acked(self, count: int) -> None:
        poll(lambda: len(set(self.acked)) >= count, 30, what=f"{count} messages acknowledged")

    def tables(self) -> dict[str, Any]:
        with self.store.engine.connect() as conn:
            return {
                "events": sorted(conn.execute(text("SELECT device, seq, kind, value FROM event")).all()),
                "episodes": sorted(
                    conn.execute(
                        text("SELECT id, started_at, ended_at, duration_s, unsupervised_s FROM episode")
                    ).all()
                ),
                "segments": sorted(
                    conn.execute(text('SELECT episode_id, idx, start, "end" FROM segment')).all()
                ),
                "incidents": sorted(conn.execute(text("SELECT id, status FROM incident")).all()),
                "dead": sorted(conn.execute(text("SELECT topic, reason FROM dead_letter")).all()),
                "rooms": {k: v.model_dump() for k, v in self.store.load_room_states().items()},
            }


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Checked, Checked]]:
    running, reference = Checked(tmp_path, "running"), Checked(tmp_path, "reference")
    yield running, reference
    running.service.stop()
    running.store.close()
    reference.store.close()


def _reference(reference: Checked, items: list[Inbound]) -> dict[str, Any]:
    """The same messages applied one batch after another (`process`), in the running service's batches."""
    service = reference.service
    with service.lock:  # as start() does
        for machine in service.machines.values():
            machine.hub_started(service.clock.now())
    for i in range(0, len(items), 3):
        reference.service.process(list(items[i : i + 3]))
    return reference.tables()


def test_pipelined_batches_store_what_one_after_another_stores_and_acknowledge_only_what_is_stored(
    pair: tuple[Checked, Checked],
) -> None:
    running, reference = pair
    items = messages()
    running.feed(items)  # queued before the thread starts: it takes them 3 at a time, as the reference
    running.service.start()
    assert running.service._writer is not None, "the running service commits on its writer thread"
    running.wait_acked(len(items))
    running.service.stop()
    assert running.early == []
    assert sorted(running.acked) == [m.mid for m in items]  # each once
    assert running.stored() == {running.mids[m.mid] for m in items}
    # Every device was told its last event, and never one that was not stored (checked as it was told).
    last = {dev: max(s for d, s in running.device_acks if d == dev) for dev, _ in running.device_acks}
    assert last == {
        f"{r}-{w}": len([s for s in STORY if s[0] == w]) for r in ROOMS for w in ("door", "panel")
    }
    assert running.tables() == _reference(reference, items)


def test_a_commit_that_fails_in_the_pipeline_loses_nothing_and_acknowledges_nothing_early(
    pair: tuple[Checked, Checked], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    running, reference = pair
    items = messages()
    real_write = Store.write_rows
    calls = {"n": 0}

    def flaky(self: Store, rows: Rows, now: dt.datetime) -> None:
        calls["n"] += 1
        if self is running.store and calls["n"] == 3:
            raise RuntimeError("disk I/O error")
        real_write(self, rows, now)

    monkeypatch.setattr(Store, "write_rows", flaky)
    running.feed(items)
    running.service.start()
    running.wait_acked(len(items))
    running.service.stop()
    assert calls["n"] > 3
    assert caplog.text.count("database write failed") == 1
    assert running.early == []
    assert sorted(running.acked) == [m.mid for m in items]
    assert running.tables() == _reference(reference, items)


def test_a_message_our_code_fails_on_in_the_pipeline_is_set_aside_and_the_rest_stored(
    pair: tuple[Checked, Checked], monkeypatch: pytest.MonkeyPatch
) -> None:
    running, _ = pair
    items = messages()
    poisoned = items[7]
    real_handle = RoomMachine.handle

    def buggy(self: RoomMachine, message: Message, now: dt.datetime) -> Outcome:
        outcome = real_handle(self, message, now)  # changes the machine first, then fails
        if getattr(message, "device", None) == "calm-2-panel" and getattr(message, "seq", None) == 2:
            raise RuntimeError("a bug in the rules")
        return outcome

    monkeypatch.setattr(RoomMachine, "handle", buggy)
    running.feed(items)
    running.service.start()
    running.wait_acked(len(items))
    running.service.stop()
    assert running.mids[poisoned.mid] == ("calm-2-panel", 2)
    assert running.early == []
    assert sorted(running.acked) == [m.mid for m in items]
    assert running.events() == {running.mids[m.mid] for m in items} - {("calm-2-panel", 2)}
    dead = running.tables()["dead"]
    assert len(dead) == 1 and "internal error while applying: RuntimeError" in dead[0][1]
    assert running.service.healthy
