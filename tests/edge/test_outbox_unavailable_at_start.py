"""An agent (re)started on a store it cannot open for now: a full SD card, one remounted read-only, a disk
error. Semantics 5.4: the alarm never depends on it. The agent runs, its readings wait in memory, and it
tries the store again every REOPEN_INTERVAL_S from the tick (a fake clock drives it here); it reports
only numbers it can read, and refuses a store of another device as before.

A full or read-only card cannot be made portably in CI (no `mount`): the store is made unopenable by a
directory where SQLite's write-ahead log must be (as root too), or its opener fails as a full card's does.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import seclusion_edge.outbox as outbox_module
from seclusion_edge import FakeClock, OutboxError
from seclusion_edge.agent import REOPEN_INTERVAL_S
from seclusion_edge.outbox import OUTBOX_FILE, Outbox
from tests.edge.conftest import SETTLE_MS, Bench, door_device, panel_device
from tests.edge.test_failsafe_agent import (
    DOOR_OUTPUTS,
    HUB_STATUS,
    INDICATOR,
    NUMBERS,
    config_topic,
    indicator,
    sounding,
)

ACK = "seclusion/v1/demo-school/calm-1/calm-1-door/ack"
REOPEN_MS = round(REOPEN_INTERVAL_S * 1000)


def first_run(bench: Bench, state: Path) -> None:
    """A normal run: the start-up readings numbered 1-3 and the fail-safe's numbers kept; a clean stop."""
    agent = bench.start(door_device(state, outputs=DOOR_OUTPUTS))
    bench.settle(agent)
    bench.link.deliver(config_topic("calm-1-door"), NUMBERS)
    assert [e.seq for e in bench.link.events()] == [1, 2, 3]
    agent.stop()
    bench.agents.remove(agent)


def full_card(failures: int, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The store's opener fails as on a full card `failures` times, then opens it; returns its calls."""
    real = outbox_module._connect
    calls: list[Path] = []

    def connect(path: Path, *wait_s: float) -> sqlite3.Connection:
        calls.append(path)
        if len(calls) <= failures:
            raise sqlite3.OperationalError("database or disk is full")
        return real(path, *wait_s)

    monkeypatch.setattr(outbox_module, "_connect", connect)
    return calls


def test_a_store_whose_numbers_cannot_be_read_still_sounds_the_alarm_and_its_readings_follow_in_order(
    bench: Bench, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    first_run(bench, state)
    bench.retained[HUB_STATUS] = b'{"v":1,"online":true}'
    bench.retained[INDICATOR] = json.dumps(indicator("none", reason="")).encode()
    wal = state / f"{OUTBOX_FILE}-wal"
    wal.mkdir()  # SQLite can neither open the store nor read it in place; nor is the file alone enough
    caplog.set_level("INFO", logger="seclusion_edge")

    agent = bench.start(door_device(state, outputs=DOOR_OUTPUTS))  # was: OutboxError, exit 1
    bench.settle(agent)
    occupied = clock.now()
    agent.simulate("occupancy", "occupied")
    clock.advance(ms=10)
    closed = clock.now()
    agent.simulate("door", "closed")
    for _ in range(4):
        bench.settle(agent, 10_000)
    # No numbers to tell: no status, no heartbeat, no event. The hub hears nothing of this device, so its
    # indicator does not drive the outputs; the local fail-safe does, and sounds the lapse.
    assert bench.link.is_connected and agent.hub_status is not None and agent.hub_status.online
    assert (bench.link.statuses(), bench.link.heartbeats(), bench.link.events()) == ([], [], [])
    assert not agent.hub_drives and agent.alarm.driver == "local" and sounding(agent)
    assert caplog.text.count("cannot open the outbox") == 1  # once, not at every attempt

    wal.rmdir()
    bench.settle(agent, REOPEN_MS)
    [status] = bench.link.statuses()
    assert (status.online, status.epoch, status.last_seq) == (True, 0, 3)
    assert [(e.seq, e.kind, e.value, e.ts) for e in bench.link.events() if e.seq > 3] == [
        (4, "occupancy", "occupied", occupied.wall),
        (5, "door", "closed", closed.wall),
    ]
    assert bench.link.heartbeats()[-1].last_seq == 5
    assert caplog.text.count("the outbox opens") == 1


def test_a_store_that_can_be_read_but_not_written_reports_its_own_numbers_and_numbers_once_it_opens(
    bench: Bench, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    first_run(bench, state)
    calls = full_card(3, monkeypatch)  # the start and two retries fail

    agent = bench.start(door_device(state))  # was: OutboxError, exit 1
    bench.settle(agent)
    [status] = bench.link.statuses()
    assert (status.online, status.epoch, status.last_seq) == (True, 0, 3)  # read from the store
    closed = clock.now()
    agent.simulate("door", "closed")
    bench.settle(agent)
    bench.link.deliver(ACK, {"v": 1, "epoch": 0, "seq": 3})  # the hub has the replayed 1-3: kept for later
    bench.settle(agent, REOPEN_MS - 2 * SETTLE_MS - 1)
    assert len(calls) == 1  # tried again every REOPEN_INTERVAL_S, not at every tick
    bench.settle(agent, 1)
    assert len(calls) == 2
    bench.settle(agent, 10_000)
    assert len(calls) == 3
    heartbeat = bench.link.heartbeats()[-1]
    assert (heartbeat.epoch, heartbeat.last_seq, heartbeat.queued) == (0, 3, 3)
    assert heartbeat.state["door"] == "closed"  # the hub reconciles it while its event waits
    assert [e.seq for e in bench.link.events()] == [1, 2, 3]  # nothing numbered without the store

    bench.settle(agent, REOPEN_MS)
    assert len(calls) == 4
    assert [(e.seq, e.value, e.ts) for e in bench.link.events()][3:] == [(4, "closed", closed.wall)]
    assert (agent.epoch, agent.last_seq, agent.queued) == (0, 4, 1)  # the ack that waited was applied
    assert len(bench.link.statuses()) == 1  # the numbers it told were right: no second status


def test_a_store_of_another_device_is_still_refused_when_it_cannot_be_opened(
    bench: Bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    first_run(bench, state)
    full_card(1_000, monkeypatch)
    with pytest.raises(OutboxError, match="belongs to device 'calm-1-door', not 'calm-1-panel'"):
        bench.start(panel_device(state))  # two devices must never share a sequence


def test_a_store_read_in_place_never_tells_numbers_its_write_ahead_log_may_have_overtaken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a read-only or full card SQLite cannot read a WAL store in place (no `-shm`); the file alone
    (`immutable=1`) is only whole when no write-ahead log holds transactions: after a power cut, it
    would tell older numbers, and the hub would take the heartbeat's state for stale."""
    live = tmp_path / "live"
    outbox = Outbox.open(live, "calm-1-door")
    outbox.confirm()
    for _ in range(3):
        outbox.append("door", "closed", FakeClock().now(), "boot-1")
    outbox._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file alone tells last seq 3...
    for _ in range(2):
        outbox.append("door", "open", FakeClock().now(), "boot-1")  # ...the log 5
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in (OUTBOX_FILE, f"{OUTBOX_FILE}-wal"):  # a power cut: the last transactions in the log
        shutil.copy(live / name, crashed / name)
    outbox.close()
    assert (crashed / f"{OUTBOX_FILE}-wal").stat().st_size > 0
    connect = sqlite3.connect

    def no_shm(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if str(database).endswith("?mode=ro"):  # as on a read-only card: "unable to open database file"
            return connect("file:/nonexistent/outbox.sqlite3?mode=ro", uri=True)
        connection: sqlite3.Connection = connect(database, *args, **kwargs)
        return connection

    monkeypatch.setattr(sqlite3, "connect", no_shm)
    assert Outbox.open_readable(crashed, "calm-1-door") is None
    readable = Outbox.open_readable(live, "calm-1-door")  # closed cleanly: the file is whole
    assert readable is not None and readable.read_only
    assert (readable.epoch, readable.last_seq, readable.queued()) == (0, 5, 5)
    with pytest.raises(sqlite3.OperationalError):
        readable.append("door", "open", FakeClock().now(), "boot-1")
    readable.close()
