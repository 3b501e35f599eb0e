"""The sequence store and outbox: numbers survive restarts, events wait for the hub's ack."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from seclusion_edge import FakeClock, OutboxError
from seclusion_edge import outbox as outbox_module
from seclusion_edge.outbox import OUTBOX_FILE, Outbox


def add(outbox: Outbox, clock: FakeClock, kind: str = "door", value: str = "closed") -> int:
    return outbox.append(kind, value, clock.advance(seconds=1), "boot-1").seq  # type: ignore[arg-type]


def test_a_new_store_starts_at_epoch_0_and_seq_survives_reopening(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert (outbox.epoch, outbox.last_seq, outbox.queued()) == (0, 0, 0)
    assert [add(outbox, clock) for _ in range(3)] == [1, 2, 3]
    outbox.close()

    again = Outbox.open(tmp_path, "calm-1-door")
    assert (again.epoch, again.last_seq, again.queued()) == (0, 3, 3)
    assert add(again, clock) == 4
    assert [event.seq for event in again.pending()] == [1, 2, 3, 4]
    again.close()


def test_the_store_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    Outbox.open(tmp_path, "calm-1-door").close()
    with sqlite3.connect(tmp_path / OUTBOX_FILE) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_pending_events_are_the_exact_payloads_in_order_and_after_a_given_key(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    add(outbox, clock, "door", "closed")
    add(outbox, clock, "occupancy", "occupied")
    first, second = outbox.pending()
    assert json.loads(first.payload)["id"] == "calm-1-door:0:1"
    assert json.loads(second.payload)["kind"] == "occupancy"
    assert outbox.pending(after=first.key) == [second]
    assert outbox.last_reading("door") == "closed"
    assert outbox.last_reading("lock") is None
    outbox.close()


def test_an_ack_drops_the_events_it_covers_and_no_more(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    for _ in range(5):
        add(outbox, clock)
    assert outbox.acknowledge(0, 3) == 3
    assert [event.seq for event in outbox.pending()] == [4, 5]
    assert outbox.acknowledge(0, 3) == 0
    outbox.close()
    again = Outbox.open(tmp_path, "calm-1-door")
    assert again.queued() == 2
    again.close()


def test_pending_reads_at_most_the_limit_across_epochs_and_the_count_follows_every_change(
    tmp_path: Path,
) -> None:
    """The agent reads the outbox in batches (`limit`); `queued()` is kept in memory, not counted."""
    clock = FakeClock()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    for _ in range(3):
        add(outbox, clock)
    outbox.start_epoch()  # the three wait in epoch 0, before epoch 1's
    for _ in range(2):
        add(outbox, clock)
    assert [e.key for e in outbox.pending(limit=2)] == [(0, 1), (0, 2)]
    assert [e.key for e in outbox.pending(after=(0, 2), limit=2)] == [(0, 3), (1, 1)]
    assert [e.key for e in outbox.pending(after=(0, 3))] == [(1, 1), (1, 2)]
    assert outbox.queued() == 5
    assert outbox.acknowledge(0, 3) == 3
    assert outbox.queued() == 2
    outbox.start_epoch(renumber_pending=True)
    assert (outbox.queued(), [e.key for e in outbox.pending()]) == (2, [(2, 1), (2, 2)])
    outbox.close()
    again = Outbox.open(tmp_path, "calm-1-door")
    assert again.queued() == 2
    again.close()


def test_a_new_epoch_restarts_seq_and_keeps_older_events_first(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    add(outbox, clock)
    add(outbox, clock)
    assert outbox.start_epoch() == 1
    assert add(outbox, clock) == 1
    assert [event.key for event in outbox.pending()] == [(0, 1), (0, 2), (1, 1)]
    assert outbox.acknowledge(0, 2) == 2
    outbox.close()


def test_renumbering_moves_waiting_events_into_the_new_epoch_in_order(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    add(outbox, clock, "door", "closed")
    add(outbox, clock, "occupancy", "occupied")
    assert outbox.start_epoch(8, renumber_pending=True) == 8
    assert outbox.last_seq == 2
    events = [json.loads(event.payload) for event in outbox.pending()]
    assert [(e["id"], e["epoch"], e["seq"], e["kind"]) for e in events] == [
        ("calm-1-door:8:1", 8, 1, "door"),
        ("calm-1-door:8:2", 8, 2, "occupancy"),
    ]
    outbox.close()


def test_an_unreadable_store_is_moved_aside_and_a_new_one_starts_in_the_next_epoch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Contract 2: the epoch moves on when the store is lost, so that new events never reuse numbers
    the hub already has (it would drop them as duplicates). The old epoch cannot be read here: 1."""
    (tmp_path / OUTBOX_FILE).write_bytes(b"this is not an SQLite database" * 100)
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert (outbox.epoch, outbox.last_seq) == (1, 0)
    outbox.close()
    assert [p.name for p in tmp_path.glob(f"{OUTBOX_FILE}.corrupt-*")]
    assert "unreadable" in caplog.text and "starting a new store at epoch 1" in caplog.text


def test_a_damaged_store_that_still_tells_its_epoch_is_followed_by_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = Outbox.open(tmp_path, "calm-1-door")
    outbox.start_epoch(4)
    outbox.append("door", "closed", FakeClock().now(), "boot-1")
    outbox.close()
    real = outbox_module._connect
    calls: list[Path] = []

    def damaged_once(path: Path, *wait_s: float) -> sqlite3.Connection:  # quick_check fails, not meta
        calls.append(path)
        if len(calls) == 1:
            raise sqlite3.DatabaseError("quick_check: *** in database main *** Page 7: btreeInitPage")
        return real(path, *wait_s)

    monkeypatch.setattr(outbox_module, "_connect", damaged_once)
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert (outbox.epoch, outbox.last_seq, outbox.queued()) == (5, 0, 0)
    outbox.close()


@pytest.mark.parametrize(
    ("key", "garbled", "epoch"),
    [
        ("last_seq", "w", 3),  # a flipped bit: "7" became "w"; the epoch it tells is followed
        ("epoch", "2\x00", 1),  # the epoch itself cannot be told: past 0, as for an unreadable store
        ("epoch", "-1", 1),
    ],
)
def test_a_store_whose_numbers_are_garbled_is_moved_aside_and_a_new_one_starts_in_the_next_epoch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, key: str, garbled: str, epoch: int
) -> None:
    """A store whose pages are sound (quick_check passes) but whose `meta` numbers do not parse made
    Outbox.open raise a bare ValueError: the agent died at every start, its buzzer silent. Its numbering
    cannot be trusted: it is a damaged store."""
    clock = FakeClock()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    outbox.start_epoch(2)
    add(outbox, clock)
    outbox.close()
    with sqlite3.connect(tmp_path / OUTBOX_FILE) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (garbled, key))
    db.close()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert (outbox.epoch, outbox.last_seq, outbox.queued(), outbox.confirmed) == (epoch, 0, 0, False)
    outbox.close()
    assert len(outbox_module._moved_aside(tmp_path / OUTBOX_FILE)) == 1
    assert f"is garbled (meta {key} is" in caplog.text
    assert f"starting a new store at epoch {epoch}" in caplog.text
    again = Outbox.open(tmp_path, "calm-1-door")  # and the new store is whole
    assert (again.epoch, again.last_seq) == (epoch, 0)
    again.close()


def test_the_failing_contacts_are_kept_with_the_fault_events_across_a_reopen(tmp_path: Path) -> None:
    """`readings` keeps one `fault` value; the contacts failing are kept beside it, in the event's own
    transaction, so that each one failing at a stop starts failing after the restart. A store that
    never kept them (an earlier version) says None: the agent then reads the last `fault` value."""
    clock = FakeClock()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    add(outbox, clock)
    assert outbox.failing_contacts() is None
    outbox.append("fault", "door-contact-unstable", clock.now(), "boot-1", failing=frozenset({"door"}))
    outbox.append(
        "fault", "lock-contact-unstable", clock.now(), "boot-1", failing=frozenset({"door", "lock"})
    )
    outbox.close()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert outbox.failing_contacts() == frozenset({"door", "lock"})
    outbox.append("fault", "ok", clock.now(), "boot-1", failing=frozenset())
    assert outbox.failing_contacts() == frozenset()
    outbox.close()


def test_a_last_reading_whose_time_is_garbled_is_taken_as_not_known_and_the_store_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reading's `ts` only dates the fail-safe's timers: one that does not parse (it crashed every
    start with a ValueError) is not known, as in a store of an earlier version; the store's numbers
    and its waiting events are kept."""
    clock = FakeClock()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    add(outbox, clock, "door", "closed")
    began = clock.advance(seconds=1)
    outbox.append("lock", "engaged", began, "boot-1")
    outbox.append("occupancy", "occupied", began, "boot-1")
    outbox.close()
    with sqlite3.connect(tmp_path / OUTBOX_FILE) as db:
        db.execute("UPDATE readings SET ts = '2026-11-2w' WHERE kind = 'door'")
        db.execute("UPDATE readings SET ts = '2026-11-21T10:00:00' WHERE kind = 'lock'")  # no zone
    db.close()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert outbox.last_readings() == {
        "door": ("closed", None),
        "lock": ("engaged", None),
        "occupancy": ("occupied", began.wall),
    }
    assert (outbox.last_seq, outbox.queued()) == (3, 3)
    outbox.close()
    assert list(tmp_path.glob(f"{OUTBOX_FILE}.corrupt-*")) == []
    assert "the last door reading's time is garbled" in caplog.text


def test_a_store_that_cannot_be_opened_for_now_is_kept_and_the_agent_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locked by another process (or a disk error): not damaged, so its waiting events and its seq are
    kept, never moved aside for a new store that would number events again from seq 1."""
    outbox = Outbox.open(tmp_path, "calm-1-door")
    for _ in range(3):
        outbox.append("door", "closed", FakeClock().now(), "boot-1")
    outbox.close()
    other = sqlite3.connect(tmp_path / OUTBOX_FILE, isolation_level=None, timeout=0)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("COMMIT")  # in this mode the lock stays
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: connect(*a, **{**kw, "timeout": 0.05}))
    try:
        with pytest.raises(OutboxError, match="cannot open the outbox: database is locked"):
            Outbox.open(tmp_path, "calm-1-door")
    finally:
        other.close()
    assert list(tmp_path.glob(f"{OUTBOX_FILE}.corrupt-*")) == []
    monkeypatch.undo()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert (outbox.last_seq, outbox.queued()) == (3, 3)
    outbox.close()


def test_a_store_remembers_when_each_last_reading_began_and_an_older_store_opens_without_it(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    began = clock.now()
    outbox.append("door", "closed", began, "boot-1")
    assert outbox.last_readings() == {"door": ("closed", began.wall)}
    outbox.close()
    # A store of the version before: its readings table had no `ts` column.
    db = sqlite3.connect(tmp_path / OUTBOX_FILE)
    db.executescript(
        "CREATE TABLE r2 (kind TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT INTO r2 SELECT kind, value"
        " FROM readings; DROP TABLE readings; ALTER TABLE r2 RENAME TO readings;"
    )
    db.close()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert outbox.last_readings() == {"door": ("closed", None)}
    assert outbox.last_reading_clocks() == {}  # nor its boot and monotonic time
    later = clock.advance(seconds=5)
    outbox.append("door", "open", later, "boot-1")
    assert outbox.last_readings() == {"door": ("open", later.wall)}
    assert outbox.last_reading_clocks() == {"door": ("boot-1", later.mono_ms)}
    outbox.close()


def test_a_store_of_another_device_is_refused(tmp_path: Path) -> None:
    Outbox.open(tmp_path, "calm-1-door").close()
    with pytest.raises(OutboxError, match="belongs to device 'calm-1-door', not 'calm-1-panel'"):
        Outbox.open(tmp_path, "calm-1-panel")


def test_a_state_dir_that_cannot_be_created_is_an_outbox_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match="cannot create the state directory"):
        Outbox.open(blocker / "state", "calm-1-door")


class PowerCut(BaseException):
    """The Pi loses power: nothing after this point runs."""


# The durable steps of replacing a lost store, in order; a cut may come after any of them.
REPLACING_STEPS = [
    ("_move_aside", "the damaged store moved aside"),
    ("_fsync", "the damaged store moved aside for good, no new one yet"),
    ("_build", "the new store built under its temporary name"),
    ("_fsync", "the new store synced, not yet renamed into place"),
    ("_fsync", "the new store renamed into place, the directory not yet synced"),
]


@pytest.mark.parametrize("cut_after", range(len(REPLACING_STEPS)), ids=[why for _, why in REPLACING_STEPS])
def test_a_power_cut_while_a_lost_store_is_replaced_never_brings_it_back_at_epoch_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut_after: int
) -> None:
    """Contract 2: `epoch` is incremented when a device's store is lost. Whichever step of replacing a
    damaged store a power cut interrupts, the next start numbers in the next epoch, never epoch 0 again
    (the hub would drop the new events as duplicates of the lost store's)."""
    # Given a damaged store
    (tmp_path / OUTBOX_FILE).write_bytes(b"this is not an SQLite database" * 100)
    done: list[str] = []

    def step(name: str) -> Any:
        real = getattr(outbox_module, name)

        def run(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            done.append(name)
            if len(done) > cut_after:
                raise PowerCut
            return result

        return run

    for name in {name for name, _ in REPLACING_STEPS}:
        monkeypatch.setattr(outbox_module, name, step(name))
    # When the power goes while the agent replaces it
    with pytest.raises(PowerCut):
        Outbox.open(tmp_path, "calm-1-door")
    assert done == [name for name, _ in REPLACING_STEPS[: cut_after + 1]]
    monkeypatch.undo()

    # Then the next start opens a store in epoch 1, which numbers from seq 1 and keeps its events
    again = Outbox.open(tmp_path, "calm-1-door")
    assert (again.epoch, again.last_seq) == (1, 0)
    assert add(again, FakeClock()) == 1
    again.close()
    again = Outbox.open(tmp_path, "calm-1-door")
    assert (again.epoch, again.last_seq, again.queued()) == (1, 1, 1)
    again.close()


def test_a_store_missing_beside_damaged_ones_moved_aside_is_lost_and_follows_their_epochs(
    tmp_path: Path,
) -> None:
    """A store that was moved aside and never replaced (or deleted by hand) is lost all the same: the
    new one follows the highest epoch the damaged files still tell."""
    # Given two damaged stores moved aside, one that still tells epoch 4, and no store
    older = Outbox.open(tmp_path, "calm-1-door")
    older.start_epoch(4)
    older.close()
    (tmp_path / OUTBOX_FILE).replace(tmp_path / f"{OUTBOX_FILE}.corrupt-20260101T000000Z")
    (tmp_path / f"{OUTBOX_FILE}.corrupt-20260102T000000Z").write_bytes(b"not a database" * 100)
    # When the agent starts
    outbox = Outbox.open(tmp_path, "calm-1-door")
    # Then it numbers in epoch 5
    assert (outbox.epoch, outbox.last_seq) == (5, 0)
    outbox.close()


def test_two_stores_damaged_within_one_second_are_both_kept_aside(tmp_path: Path) -> None:
    for _ in range(2):
        (tmp_path / OUTBOX_FILE).write_bytes(b"this is not an SQLite database" * 100)
        Outbox.open(tmp_path, "calm-1-door").close()
    assert len(list(tmp_path.glob(f"{OUTBOX_FILE}.corrupt-*"))) == 2


def test_a_new_store_is_unconfirmed_until_confirmed_and_a_store_of_an_earlier_version_is_confirmed(
    tmp_path: Path,
) -> None:
    """A new store cannot know what the hub has of this device (a replaced SD card's predecessor may
    have sent the numbers it gives out): the agent sends none of its events while it is unconfirmed."""
    # Given a new store
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert not outbox.confirmed
    outbox.close()
    # Then it stays unconfirmed across a restart, until confirmed, for good
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert not outbox.confirmed
    outbox.confirm()
    outbox.close()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert outbox.confirmed
    # And `reset-epoch` makes it unconfirmed again, a renumbering alone does not
    outbox.start_epoch(renumber_pending=True)
    assert outbox.confirmed
    outbox.start_epoch(unconfirmed=True)
    assert not outbox.confirmed
    outbox.close()
    assert not Outbox.open(tmp_path, "calm-1-door").confirmed
    # A store of an earlier version, which kept no such mark, has been in use: confirmed
    with sqlite3.connect(tmp_path / OUTBOX_FILE) as db:
        db.execute("DELETE FROM meta WHERE key = 'confirmed'")
    db.close()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert outbox.confirmed
    outbox.close()


def test_a_lost_stores_replacement_is_unconfirmed(tmp_path: Path) -> None:
    (tmp_path / OUTBOX_FILE).write_bytes(b"this is not an SQLite database" * 100)
    outbox = Outbox.open(tmp_path, "calm-1-door")
    assert (outbox.epoch, outbox.confirmed) == (1, False)
    outbox.close()


def test_a_store_deleted_while_open_is_put_back_whole_and_numbers_on(tmp_path: Path) -> None:
    """The state directory removed under a running agent: the open (unlinked) file still holds the
    store; `relink` puts a copy of it back at its path, and the store goes on in that copy."""
    clock = FakeClock()
    state = tmp_path / "state"
    outbox = Outbox.open(state, "calm-1-door")
    outbox.confirm()
    for _ in range(3):
        add(outbox, clock)
    outbox.acknowledge(0, 1)
    assert not outbox.unlinked
    shutil.rmtree(state)
    assert outbox.unlinked
    outbox.relink()
    assert not outbox.unlinked
    assert add(outbox, clock) == 4
    outbox.close()
    again = Outbox.open(state, "calm-1-door")
    assert (again.epoch, again.last_seq, again.queued(), again.confirmed) == (0, 4, 3, True)
    assert [e.seq for e in again.pending()] == [2, 3, 4]
    assert again.last_reading("door") == "closed"
    again.close()


def test_a_file_that_replaced_the_open_store_is_moved_aside_not_overwritten(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = Outbox.open(tmp_path, "calm-1-door")
    add(outbox, clock)
    (tmp_path / OUTBOX_FILE).unlink()
    (tmp_path / OUTBOX_FILE).write_bytes(b"an operator's old copy")
    assert outbox.unlinked
    outbox.relink()
    assert add(outbox, clock) == 2
    outbox.close()
    (aside,) = (
        p for p in tmp_path.glob(OUTBOX_FILE + ".replaced-*") if not p.name.endswith(("-wal", "-shm"))
    )
    assert aside.read_bytes() == b"an operator's old copy"
    again = Outbox.open(tmp_path, "calm-1-door")
    assert [e.seq for e in again.pending()] == [1, 2]
    again.close()
