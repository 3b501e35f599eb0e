"""The device's sequence store and outbox: one SQLite file in the state directory.

It holds the current `epoch`, the last `seq` given out in it, every event the hub has not yet
acknowledged on its `ack` topic, and the last reading published for each sensor kind. Each event is
numbered and stored in the same transaction, with `synchronous=FULL`, before anything is sent: an event
that was published is an event that survives a power cut.

Epochs: a new store starts at epoch 0. A store that is damaged (not a database, a malformed one, or one
whose `meta` epoch or last_seq does not parse as a count) is moved aside (`outbox.sqlite3.corrupt-<time>`)
and a new one started in the next epoch: past the epoch each damaged file still tells (+ 1), else
epoch 1 (most stores never leave epoch 0). The new store is built whole under a temporary name, its
epoch in the same transaction as its creation, and only then renamed into place, so that a power cut
at any step never leaves a store at epoch 0 where one was lost: a store missing beside a moved-aside
`.corrupt-*` file is a lost store too. A store that cannot be opened for now (a full or read-only SD
card, a disk error, locked by another process) is kept, never replaced: `open` raises
`OutboxUnavailable`, and the agent runs without it, trying again every few seconds (`open_readable`
reads its numbers meanwhile, when that is safe). `start_epoch`
moves to a new epoch (the `reset-epoch` command, for a replaced SD card); the agent also calls it when
the hub's ack shows the hub has seen more of this device than the store remembers.

Confirmed or not: a store created new (a fresh SD card, a lost store's replacement) or moved to a new
epoch by `reset-epoch` cannot know what the hub already has of this device: a replaced card's
predecessor may have sent the very numbers it is about to give out. It starts *unconfirmed*; the agent
sends none of its events until it has seen the hub's retained ack on a connection (or that there is
none), moves past it if it names numbers of this store's epoch or later, and then `confirm`s it. A store
of an earlier version, which has no such mark, is confirmed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from seclusion_contract import EventPayload, Kind, dump_payload
from seclusion_edge.clock import Instant
from seclusion_edge.errors import OutboxError, OutboxUnavailable

log = logging.getLogger(__name__)

OUTBOX_FILE: Final = "outbox.sqlite3"
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (epoch, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS readings (
    kind TEXT PRIMARY KEY, value TEXT NOT NULL, ts TEXT, boot TEXT, mono_ms INTEGER
);
"""

EventKey = tuple[int, int]

_COUNT: Final = re.compile(r"[0-9]{1,18}")  # an epoch or a seq as the store keeps it

# How long a write waits for another process's lock on the store (SQLite's busy timeout).
BUSY_TIMEOUT_S: Final = 10.0

# Failures that say nothing about the store itself, which may be whole: it cannot be opened *for now*.
# SQLite's primary result codes (an OperationalError without one, as a test raises it, counts too)...
_FOR_NOW_SQLITE: Final = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)
# ... and the system's errors (creating the state directory, building a lost store's replacement).
_FOR_NOW_ERRNO: Final = frozenset(
    {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EACCES, errno.EPERM}
)


def event_id(device: str, epoch: int, seq: int) -> str:
    """The contract's recommended event id, `{device}:{epoch}:{seq}`."""
    return f"{device}:{epoch}:{seq}"


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """An event waiting in the outbox, as the exact bytes to publish."""

    epoch: int
    seq: int
    payload: bytes

    @property
    def key(self) -> EventKey:
        """`(epoch, seq)`, the order in which events are sent."""
        return (self.epoch, self.seq)


class Outbox:
    """Sequence numbers, epoch and unacknowledged events of one device, persisted in SQLite.

    Thread-safe: the agent's ticker and the MQTT network thread both use it.
    """

    def __init__(
        self, connection: sqlite3.Connection, path: Path, device: str, *, read_only: bool = False
    ) -> None:
        self._db = connection
        self.path = path
        self.device = device
        self.read_only = read_only
        """True for `open_readable`'s view: its numbers and events can be read, nothing can be written."""
        self._lock = threading.Lock()
        self._epoch = int(self._meta("epoch", "0"))
        self._last_seq = int(self._meta("last_seq", "0"))
        self._confirmed = self._meta("confirmed", "1") == "1"
        # How many events wait, counted once here and kept up to date by every change: `queued()` is
        # asked for by each heartbeat, and a count(*) would read the whole table, payloads included.
        (count,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        self._queued = int(count)
        # The file this connection has open (device, inode), to notice it deleted or replaced under it.
        self._file = _file_id(path)
        self._live = path  # the file the connection has open: `path`, unless `relink` failed halfway

    @classmethod
    def open(cls, state_dir: Path, device: str, *, wait_s: float = BUSY_TIMEOUT_S) -> Outbox:
        """Open (or create) the outbox of `device` in `state_dir`.

        A damaged file is moved aside and replaced by a new store (logged as an error). A store that
        cannot be opened for now (a full or read-only card, a disk error, locked for longer than
        `wait_s`) is an `OutboxUnavailable`, kept as it is. One that belongs to another device is an
        OutboxError: two devices must never share a sequence.
        """
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _cannot(exc, f"{state_dir}: cannot create the state directory: {exc.strerror}") from None
        path = state_dir / OUTBOX_FILE
        if not path.exists() and _moved_aside(path):
            # A store was moved aside and its replacement never made it into place (a power cut in
            # between): the store is lost all the same, and the epoch moves on.
            _replace_lost(path, device, "missing beside a damaged store moved aside")
        try:
            connection = _connect(path, wait_s)
        except sqlite3.OperationalError as exc:
            # Full, read-only, a disk error, locked by another process, no permission: the store may be
            # whole. Keep it (its events and its seq); the agent runs without it and tries again.
            raise _cannot(exc, f"{path}: cannot open the outbox: {exc}") from None
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
            _replace_lost(path, device, f"unreadable ({exc})")
            try:
                connection = _connect(path, wait_s)
            except sqlite3.Error as again:
                raise _cannot(again, f"{path}: cannot open the new outbox: {again}") from None
        except sqlite3.Error as exc:
            raise OutboxError(f"{path}: cannot open the outbox: {exc}") from None
        try:
            _claim(connection, path, device)
            garbled = _garbled_number(connection)
        except BaseException:
            connection.close()
            raise
        if garbled is not None:
            # The pages are sound (quick_check passed) but a number the sequence rests on does not
            # parse (a flipped bit on the card): the store's numbering cannot be trusted, so it is
            # damaged like an unreadable one, not a crash at every start.
            connection.close()
            _replace_lost(path, device, f"garbled ({garbled})")
            try:
                connection = _connect(path, wait_s)
            except sqlite3.Error as again:
                raise _cannot(again, f"{path}: cannot open the new outbox: {again}") from None
            try:
                _claim(connection, path, device)
            except BaseException:
                connection.close()
                raise
        return cls(connection, path, device)

    @classmethod
    def open_readable(cls, state_dir: Path, device: str) -> Outbox | None:
        """The store as it stands, read-only, for when `open` cannot open it for now; None when its
        numbers cannot be known.

        Read in place (`mode=ro`), or, where SQLite cannot even do that (a store in WAL mode on a
        read-only or full card, whose `-shm` it cannot create), as `immutable=1`: but only with no
        write-ahead log or rollback journal beside it holding anything (its last transactions could be
        there, and the file alone would tell older numbers) and not held by another process (which may
        be writing). None, too, for a store that is damaged, of an earlier version, new (no device
        yet) or not confirmed (its numbers may still move when it sees the hub's ack). An OutboxError
        for a store of another device.
        """
        path = state_dir / OUTBOX_FILE
        connection = _connect_read_only(path)
        if connection is None:
            return None
        try:
            row = connection.execute("SELECT value FROM meta WHERE key = 'device'").fetchone()
            if row is not None:
                _refuse_anothers(path, row[0], device)
            columns = {column[1] for column in connection.execute("PRAGMA table_info(readings)")}
            connection.execute("SELECT count(*) FROM outbox").fetchone()
            known = row is not None and "ts" in columns and _garbled_number(connection) is None
            outbox = cls(connection, path, device, read_only=True) if known else None
        except sqlite3.Error:
            outbox = None
        except BaseException:
            connection.close()
            raise
        if outbox is None or not outbox.confirmed:
            connection.close()
            return None
        return outbox

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self._epoch

    @property
    def last_seq(self) -> int:
        """The last seq given out in the current epoch (0 before the first event)."""
        return self._last_seq

    @property
    def confirmed(self) -> bool:
        """False for a new store until the agent has seen the hub's view of this device (see `confirm`)."""
        return self._confirmed

    def confirm(self) -> None:
        """Mark the store's numbers as its own: the hub's retained ack, if any, named none of its epoch
        (or the store has moved past it), so the hub's acks from now on are about this store's events."""
        with self._lock, self._transaction():
            self._set_meta("confirmed", "1")
        self._confirmed = True

    def append(
        self,
        kind: Kind,
        value: str,
        began: Instant,
        boot: str | None,
        staff: str | None = None,
        *,
        startup: bool = False,
        failing: frozenset[str] | None = None,
    ) -> EventPayload:
        """Number an event, store it in the outbox and remember the reading, in one durable transaction.
        `startup`: the agent's first reading of the sensor since it started, `began` when it first saw it
        (the event says so: `startup: true`). `failing`: the contacts failing once this event is numbered
        (a `fault` event's), kept in the same transaction (`failing_contacts`)."""
        with self._lock, self._transaction():
            seq = self._last_seq + 1
            event = EventPayload(
                id=event_id(self.device, self._epoch, seq),
                seq=seq,
                epoch=self._epoch,
                ts=began.wall,
                boot=boot,
                mono_ms=max(began.mono_ms, 0),
                kind=kind,
                value=value,
                staff=staff,
                startup=True if startup else None,
            )
            self._db.execute(
                "INSERT INTO outbox (epoch, seq, payload) VALUES (?, ?, ?)",
                (self._epoch, seq, dump_payload(event)),
            )
            self._set_meta("last_seq", str(seq))
            if failing is not None:
                self._set_meta("failing", ",".join(sorted(failing)))
            if kind != "check":
                self._db.execute(
                    "INSERT INTO readings (kind, value, ts, boot, mono_ms) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (kind) DO UPDATE SET value = excluded.value, ts = excluded.ts, "
                    "boot = excluded.boot, mono_ms = excluded.mono_ms",
                    (kind, value, began.wall.isoformat(), boot, began.mono_ms),
                )
        self._last_seq = seq
        self._queued += 1
        return event

    def pending(self, after: EventKey | None = None, limit: int | None = None) -> list[QueuedEvent]:
        """Unacknowledged events in `(epoch, seq)` order, only those after `after` when given, at most
        `limit` of them when given.

        The comparison is on row values, `(epoch, seq) > (?, ?)`, which SQLite (3.15 and later) serves
        from the `(epoch, seq)` key: asking for what follows the last event sent reads only what does,
        however many events wait for the hub's ack (an `epoch > ? OR (epoch = ? AND seq > ?)` read the
        whole table at every tick)."""
        epoch, seq = after if after is not None else (-1, -1)
        with self._lock:
            rows = self._db.execute(
                "SELECT epoch, seq, payload FROM outbox WHERE (epoch, seq) > (?, ?) "
                "ORDER BY epoch, seq LIMIT ?",
                (epoch, seq, -1 if limit is None else limit),
            ).fetchall()
        return [QueuedEvent(int(e), int(s), bytes(p)) for e, s, p in rows]

    def queued(self) -> int:
        """How many events wait for the hub's ack (kept in memory, not counted at each call)."""
        return self._queued

    def acknowledge(self, epoch: int, seq: int) -> int:
        """Drop every event at or below `(epoch, seq)`; returns how many were dropped."""
        with self._lock, self._transaction():
            cursor = self._db.execute("DELETE FROM outbox WHERE (epoch, seq) <= (?, ?)", (epoch, seq))
            self._set_meta("acked", f"{epoch}:{seq}")
        self._queued -= cursor.rowcount
        return cursor.rowcount

    def last_reading(self, kind: str) -> str | None:
        """The last reading of `kind` this device numbered, or None if it never did (or the store is new)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM readings WHERE kind = ?", (kind,)).fetchone()
        return None if row is None else str(row[0])

    def last_readings(self) -> dict[str, tuple[str, dt.datetime | None]]:
        """Each kind's last reading this device numbered, with when it began (its event's `ts`; None
        where a store of an earlier version did not keep it, or where it is garbled)."""
        with self._lock:
            rows = self._db.execute("SELECT kind, value, ts FROM readings").fetchall()
        return {str(kind): (str(value), self._began(str(kind), ts)) for kind, value, ts in rows}

    def failing_contacts(self) -> frozenset[str] | None:
        """The contacts whose `fault` this device numbered and has not cleared (`ok`) since, as kept by
        `append`; None for a store that never kept them (of an earlier version: `last_readings` has the
        last `fault` value only)."""
        with self._lock:
            value = self._meta("failing", "\0")
        if value == "\0":
            return None
        return frozenset(kind for kind in value.split(",") if kind)

    def keep_failing(self, failing: frozenset[str]) -> None:
        """The contacts failing now, where some were found sound again with no event to carry it (no
        `ok` while another contact still fails): kept for the next start (`failing_contacts`)."""
        with self._lock, self._transaction():
            self._set_meta("failing", ",".join(sorted(failing)))

    def last_reading_clocks(self) -> dict[str, tuple[str, int]]:
        """Each kind's last reading's boot id and monotonic clock (ms) when it began, where both were
        kept (not by a store of an earlier version): within that boot, its age is measured on the
        monotonic clock, whatever the wall clock did since (an NTP step on a Pi without a real-time
        clock)."""
        with self._lock:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(readings)")}
            if not {"boot", "mono_ms"} <= columns:
                return {}
            rows = self._db.execute("SELECT kind, boot, mono_ms FROM readings").fetchall()
        return {
            str(kind): (str(boot), mono_ms)
            for kind, boot, mono_ms in rows
            if boot is not None and isinstance(mono_ms, int)
        }

    def _began(self, kind: str, ts: object) -> dt.datetime | None:
        # A `ts` that does not parse (a flipped bit on the card) is not known, as in a store of an
        # earlier version: it only dates the fail-safe's timers, and the store's numbers and waiting
        # events are not to be thrown away for it.
        if ts is None:
            return None
        try:
            began = dt.datetime.fromisoformat(str(ts))
        except ValueError:
            began = None
        if began is None or began.tzinfo is None:
            log.warning("outbox %s: the last %s reading's time is garbled; not known", self.path, kind)
            return None
        return began

    def start_epoch(
        self, at_least: int | None = None, *, renumber_pending: bool = False, unconfirmed: bool = False
    ) -> int:
        """Move to a new epoch (the next one, or `at_least` if higher); seq restarts at 0.

        With `renumber_pending`, events still waiting are moved into the new epoch, in order, as seq 1,
        2, ...: used when the hub has already seen higher numbers than this store, so it would drop them.
        With `unconfirmed`, the store is unconfirmed again (`reset-epoch`: the store was lost, and the
        hub may have numbers of the new epoch too).
        """
        with self._lock, self._transaction():
            epoch = max(self._epoch + 1, at_least or 0)
            seq = 0
            if renumber_pending:
                rows = self._db.execute("SELECT payload FROM outbox ORDER BY epoch, seq").fetchall()
                self._db.execute("DELETE FROM outbox")
                for (payload,) in rows:
                    seq += 1
                    old = EventPayload.model_validate(json.loads(bytes(payload)))
                    new = old.model_copy(
                        update={"epoch": epoch, "seq": seq, "id": event_id(self.device, epoch, seq)}
                    )
                    self._db.execute(
                        "INSERT INTO outbox (epoch, seq, payload) VALUES (?, ?, ?)",
                        (epoch, seq, dump_payload(new)),
                    )
            self._set_meta("epoch", str(epoch))
            self._set_meta("last_seq", str(seq))
            if unconfirmed:
                self._set_meta("confirmed", "0")
        self._epoch, self._last_seq = epoch, seq
        self._confirmed = self._confirmed and not unconfirmed
        log.warning("device %s now numbers its events in epoch %d", self.device, epoch)
        return epoch

    @property
    def unlinked(self) -> bool:
        """True when the file this store has open is no longer the one at its path: deleted (the state
        directory removed by a cleanup script or by hand) or replaced. SQLite goes on writing into the
        open, unlinked file, which vanishes when it is closed: every event in it would be lost at the
        next restart. A `stat`; a path that cannot be read for another reason counts as still linked."""
        if self.read_only or self._file is None:
            return False
        try:
            return _file_id(self.path, strict=True) != self._file
        except OSError:
            return False

    def relink(self) -> None:
        """Put the store back at its path, whole, after it was deleted or replaced (`unlinked`).

        The open file still holds everything: the epoch, the last seq, every event waiting for the hub's
        ack, the last readings and whether the store is confirmed. It is copied (SQLite's backup) under a
        temporary name and synced (the state directory made again if it is gone); a file that replaced
        the store is moved aside as `<name>.replaced-<time>`, never overwritten; the old connection is
        closed (SQLite removes a store's `-wal` by its name as it closes: never once the copy is in
        place, whose `-wal` it would be), and the copy renamed into place, where the store goes on.
        Nothing is renumbered: this store gave out every number up to its last seq, the hub has none
        above it, and `seq` goes on from there. Raises OSError or sqlite3.Error when it cannot: before
        the copy is made, the store goes on in the unlinked file; after (the rename failed), in the
        copy under its temporary name, `unlinked` still, so that it is tried again."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Never the file the store has open (a failed rename left it under the first name).
            partial = self.path.with_name(
                self.path.name + (".new-2" if self._live.name.endswith(".new") else ".new")
            )
            for suffix in ("", "-journal", "-wal", "-shm"):
                partial.with_name(partial.name + suffix).unlink(missing_ok=True)
            copy = sqlite3.connect(partial, isolation_level=None)
            try:
                self._db.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # one file, to be renamed; WAL again once open
            finally:
                copy.close()
            _fsync(partial)
            aside = _replaced_aside(self.path)
            self._db.close()
            for suffix in ("-journal", "-wal", "-shm"):  # the closed store's, if its close left them
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
            try:
                partial.replace(self.path)
                _fsync(self.path.parent)
            except OSError:
                self._db, self._live, self._file = _connect(partial), partial, _file_id(partial)
                log.error("outbox %s could not be put back; the store goes on in %s", self.path, partial)
                raise
            self._db, self._live = _connect(self.path), self.path
            self._file = _file_id(self.path)
        log.error(
            "outbox %s was %s while the agent ran; made again from the open store: epoch %d, last seq %d, "
            "%d events waiting for the hub's ack",
            self.path,
            "deleted" if aside is None else f"replaced (the other file moved to {aside.name})",
            self._epoch,
            self._last_seq,
            self._queued,
        )

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, key: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _file_id(path: Path, *, strict: bool = False) -> tuple[int, int] | None:
    """The file at `path` as (device, inode); None when there is none. With `strict`, errors other than
    a missing file (or directory) are raised, not taken for a missing file."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        if strict:
            raise
        return None
    return (info.st_dev, info.st_ino)


def _replaced_aside(path: Path) -> Path | None:
    """Move a file that took the store's place (and its `-wal`, `-shm`) aside as
    `<name>.replaced-<time>`; returns the new name, or None when nothing is there."""
    if not path.exists():
        return None
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.replaced-{stamp}")
    taken = 1
    while any(aside.with_name(aside.name + s).exists() for s in ("", "-wal", "-shm")):
        taken += 1
        aside = path.with_name(f"{path.name}.replaced-{stamp}-{taken}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.replace(aside.with_name(aside.name + suffix))
    return aside


def _connect(path: Path, wait_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) so none is left open.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=wait_s)
    try:
        (check,) = connection.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: an event is on the card before it is published; events are rare, the cost is nothing.
        connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(_SCHEMA)
        columns = {row[1] for row in connection.execute("PRAGMA table_info(readings)")}
        if "ts" not in columns:  # a store of an earlier version: when its readings began is not known
            connection.execute("ALTER TABLE readings ADD COLUMN ts TEXT")
        # Of an earlier version too: the boot and monotonic clock of each reading's start (not known).
        for column, kind in (("boot", "TEXT"), ("mono_ms", "INTEGER")):
            if column not in columns:
                connection.execute(f"ALTER TABLE readings ADD COLUMN {column} {kind}")
        connection.execute(f"PRAGMA busy_timeout = {round(BUSY_TIMEOUT_S * 1000)}")  # once open, as ever
    except BaseException:
        connection.close()
        raise
    return connection


def _connect_read_only(path: Path) -> sqlite3.Connection | None:
    """A connection that can only read the store (see `Outbox.open_readable`), or None."""
    if not path.exists():
        return None
    uri = path.resolve().as_uri()
    try:
        return _checked(sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False, timeout=0))
    except sqlite3.OperationalError as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None or code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return None  # held by another process, which may be writing: the file alone may be stale
    except sqlite3.Error:
        return None
    if any(_size(path.with_name(path.name + suffix)) for suffix in ("-wal", "-journal")):
        return None  # its last transactions may be there, not in the file: immutable would read stale numbers
    try:
        return _checked(sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False, timeout=0))
    except sqlite3.Error:
        return None


def _checked(connection: sqlite3.Connection) -> sqlite3.Connection:
    """The connection, once its pages pass `quick_check` (closed, and a DatabaseError, if not)."""
    try:
        (check,) = connection.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
    except BaseException:
        connection.close()
        raise
    return connection


def _size(path: Path) -> int:
    """A file's size; 0 when there is none."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _for_now(exc: BaseException) -> bool:
    """Whether a failure to open the store may pass, the store being whole (see `_FOR_NOW_SQLITE`)."""
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is None or code & 0xFF in _FOR_NOW_SQLITE
    return isinstance(exc, OSError) and exc.errno in _FOR_NOW_ERRNO


def _cannot(exc: BaseException, message: str) -> OutboxError:
    """`OutboxUnavailable` for a failure that may pass (`_for_now`), an OutboxError for any other."""
    return OutboxUnavailable(message) if _for_now(exc) else OutboxError(message)


def _new_store_meta(device: str, epoch: int) -> list[tuple[str, str]]:
    """A new store's `meta` rows: its device, schema and epoch, nothing numbered, and unconfirmed (what
    the hub has of this device is not known yet)."""
    return [
        ("device", device),
        ("schema", str(SCHEMA_VERSION)),
        ("epoch", str(epoch)),
        ("last_seq", "0"),
        ("confirmed", "0"),
    ]


def _claim(connection: sqlite3.Connection, path: Path, device: str) -> None:
    row = connection.execute("SELECT value FROM meta WHERE key = 'device'").fetchone()
    if row is None:
        connection.execute("BEGIN IMMEDIATE")
        for key, value in _new_store_meta(device, 0):
            connection.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
        connection.execute("COMMIT")
    else:
        _refuse_anothers(path, row[0], device)


def _refuse_anothers(path: Path, owner: str, device: str) -> None:
    """Two devices must never share a sequence: a store of another device is an OutboxError."""
    if owner != device:
        raise OutboxError(
            f"{path}: this outbox belongs to device {owner!r}, not {device!r}; "
            "give each device its own state_dir"
        )


def _garbled_number(connection: sqlite3.Connection) -> str | None:
    """Which of the store's numbers (`meta` epoch, last_seq) does not parse as a count, or None."""
    for key in ("epoch", "last_seq"):
        row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None and not _COUNT.fullmatch(str(row[0])):
            return f"meta {key} is {str(row[0])[:20]!r}, not a number"
    return None


def _replace_lost(path: Path, device: str, why: str) -> None:
    """Replace a lost store with a new one in the next epoch, so that a power cut at any step never
    leaves a store that numbers from epoch 0 again.

    The damaged file (if still in place) is moved aside first; the new store is then built whole under
    a temporary name, its epoch written in the transaction that creates it, and renamed into place, the
    directory synced after each rename. Until that rename there is no store, only the moved-aside file:
    the next open comes back here.
    """
    aside = _move_aside(path)
    if aside is not None:
        _fsync(path.parent)
    # The epoch moves on (contract 2): past each damaged file's own, where it still tells it, else past
    # 0, the epoch almost every store has: new events must not reuse numbers the hub already has, or it
    # would drop them as duplicates.
    epoch = max((1 if e is None else e + 1 for e in map(_epoch_of, _moved_aside(path))), default=1)
    log.error(
        "outbox %s is %s%s; starting a new store at epoch %d",
        path,
        why,
        "" if aside is None else f"; moved to {aside}",
        epoch,
    )
    partial = path.with_name(path.name + ".new")
    try:
        for suffix in ("", "-journal", "-wal", "-shm"):
            partial.with_name(partial.name + suffix).unlink(missing_ok=True)
        _build(partial, device, epoch)
        _fsync(partial)
        partial.replace(path)
        _fsync(path.parent)
    except (OSError, sqlite3.Error) as exc:
        raise _cannot(exc, f"{path}: cannot create a new outbox: {exc}") from None


def _build(path: Path, device: str, epoch: int) -> None:
    """A whole new store at `path` in `epoch`: created and claimed in one transaction, in a single file
    (rollback journal; WAL is switched on when it is opened), so that it can be renamed into place."""
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", _new_store_meta(device, epoch))
        db.execute("COMMIT")
    finally:
        db.close()


def _fsync(path: Path) -> None:
    """Make a file's contents, or a directory's entries (a rename), durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _moved_aside(path: Path) -> list[Path]:
    """The damaged stores moved aside beside `path` (their main files, not their `-wal` and `-shm`)."""
    prefix = f"{path.name}.corrupt-"
    return sorted(
        p for p in path.parent.glob(prefix + "*") if not p.name.endswith(("-wal", "-shm", "-journal"))
    )


def _epoch_of(path: Path) -> int | None:
    """The epoch a damaged store still tells (its `meta` may be readable when other pages are not)."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    if row is None or not _COUNT.fullmatch(str(row[0])):
        return None  # none, or garbled: not a number this store can be said to have used
    return int(row[0])


def _move_aside(path: Path) -> Path | None:
    """Move the store's files (main, `-wal`, `-shm`) aside as `<name>.corrupt-<time>`; returns the new
    name, or None when there was nothing to move."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    taken = 1
    while any(aside.with_name(aside.name + s).exists() for s in ("", "-wal", "-shm")):
        taken += 1  # never over an earlier damaged store (two in one second)
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{taken}")
    moved = False
    # The main file first: a power cut after it leaves no store, which the next open treats as lost
    # (and moves the rest aside then); never a store left without its write-ahead log.
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.replace(aside.with_name(aside.name + suffix))
            moved = True
    return aside if moved else None
