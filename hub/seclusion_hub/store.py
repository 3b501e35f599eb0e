"""The database adapter: one writer that commits a batch at a time, and the reads the API needs.

SQLite (WAL, one writer) by default, PostgreSQL in larger deployments; both run the same Alembic
migrations and the same tests.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel, col, select

from .core.alerts import Alert
from .core.episode import Episode, account
from .core.room import OlderLoss, RoomState
from .models import (
    AlertRecord,
    ApiToken,
    AuditEntry,
    DeadLetter,
    DeliveryAttempt,
    DeliveryRecord,
    EpisodeRecord,
    EventRecord,
    IncidentRecord,
    RoomSnapshot,
    SegmentRecord,
    TimelineNote,
    UTCDateTime,
)

DEAD_LETTER_KEEP_BYTES = 1024 * 1024

log = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
    """An engine for the URL; SQLite gets WAL, a busy timeout and foreign keys on every connection."""
    # `hide_parameters`: a database error's text (logged, or in a 500's trace) never carries the values
    # of its statement: a child's name, a record's words, a parent's address.
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit survives a power cut before the broker and the device are told it is stored.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)


def migrate(engine: Engine, revision: str = "head", *, down: bool = False) -> None:
    """Bring the schema to the newest migration (or to `revision`; `down`: back to it), all of it in one
    transaction: a hub stopped half-way (a power cut, a restart of a hub that seemed stuck in a long
    migration) leaves the database as it was, and the next start does the whole upgrade again."""
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("seclusion_hub") / "migrations"))
    step = command.downgrade if down else command.upgrade
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:  # PostgreSQL's DDL is transactional as it is
            cfg.attributes["connection"] = conn
            step(cfg, revision)
        return
    # pysqlite commits each CREATE or ALTER on its own (it begins transactions only before data
    # changes): the schema changes would stay while the version stamp rolled back, and no start would
    # get past them again. Its own handling off, and one BEGIN for everything (SQLAlchemy's recipe).
    with engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection  # sqlite3.Connection
        previous = raw.isolation_level
        raw.isolation_level = None
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                cfg.attributes["connection"] = conn
                step(cfg, revision)
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
            conn.commit()
        finally:
            raw.isolation_level = previous


INCIDENT_END_COLUMNS = (
    "ended_at",
    "record_due_at",
    "parent_notice_due_at",
    "parent_copy_due_at",
    "authority_notice_due_at",
)


@dataclass
class Batch:
    """Everything one ingest batch changed, written in one transaction."""

    events: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    episodes: dict[str, Episode] = field(default_factory=dict)
    incidents_opened: list[dict[str, Any]] = field(default_factory=list)
    # An incident's episode ended: {"incident_id", "new_status", "at", "ended_at", and the deadlines
    # "record_due_at", "parent_notice_due_at", "parent_copy_due_at", "authority_notice_due_at"}.
    incident_status: list[dict[str, Any]] = field(default_factory=list)
    incident_changes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (id, columns)
    notes: list[dict[str, Any]] = field(default_factory=list)
    # Gaps whose window may cover ended episodes the rooms no longer hold: flagged `possible_loss`, with
    # a note, in the episode table (semantics 4.4).
    loss_windows: list[OlderLoss] = field(default_factory=list)
    rooms: dict[tuple[str, str], RoomState] = field(default_factory=dict)
    audits: list[AuditEntry] = field(default_factory=list)
    alerts: dict[str, Alert] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # new sends, `pending`
    attempts: list[dict[str, Any]] = field(default_factory=list)  # outcomes of delivery attempts
    delivery_updates: list[dict[str, Any]] = field(default_factory=list)
    # The episodes whose row in the episode table is behind the room's copy (a row that waits for its
    # refresh): the rooms' states carry those whole and name the others' rows. None: the writer does
    # not know what the table holds, and every room carries its episodes whole.
    stale_episodes: frozenset[str] | None = None

    def __bool__(self) -> bool:
        return bool(
            self.alerts
            or self.deliveries
            or self.attempts
            or self.delivery_updates
            or self.audits
            or self.events
            or self.dead_letters
            or self.episodes
            or self.incidents_opened
            or self.incident_status
            or self.incident_changes
            or self.notes
            or self.loss_windows
            or self.rooms
        )


def dead_letter_row(topic: str, payload: bytes, reason: str, received_at: dt.datetime) -> dict[str, Any]:
    """A dead-letter row: the payload kept whole up to 1 MiB, its size and hash always."""
    return {
        "received_at": received_at,
        "topic": topic[:1024],
        "reason": reason[:2000],
        "payload": payload[:DEAD_LETTER_KEEP_BYTES],
        "payload_size": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "truncated": len(payload) > DEAD_LETTER_KEEP_BYTES,
    }


_EVENT_COLUMNS = ("site", "room", "device", "epoch", "seq", "event_id", "kind", "value", "staff")
_EVENT_INSERT = (
    "INSERT INTO event (site, room, device, epoch, seq, event_id, kind, value, staff,"
    " ts, device_ts, received_at, stored_at)"
    " VALUES ({0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0})"
)
_EVENT_INSERT_SQLITE = _EVENT_INSERT.format("?")
_EVENT_INSERT_DRIVER = _EVENT_INSERT.format("%s")


def _sqlite_time(when: dt.datetime) -> str:
    # Exactly how SQLAlchemy's SQLite DATETIME (through UTCDateTime) stores a time, so that reads and
    # range comparisons see the same text: naive UTC, `YYYY-MM-DD HH:MM:SS.ffffff`.
    if when.tzinfo is dt.UTC:  # nearly always (the hub's own times): the text without its "+00:00"
        return when.isoformat(" ", "microseconds")[:26]
    return _utc(when).astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_time_or_null(when: dt.datetime | None) -> str | None:
    return None if when is None else _sqlite_time(when)


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError("naive datetime refused: the hub stores UTC-aware times only")
    return when


def _same_keys(rows: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The rows in runs of the same columns, in their order. SQLAlchemy builds one statement for many
    rows from the first row's columns: a later row with another column would lose its value, and one
    without a column of the first would be refused."""
    run: list[dict[str, Any]] = []
    for row in rows:
        if run and row.keys() != run[0].keys():
            yield run
            run = []
        run.append(row)
    if run:
        yield run


def _insert_events(conn: Connection, rows: list[dict[str, Any]], stored_at: dt.datetime) -> None:
    """Insert event rows straight through the driver: the hottest statement, thousands a second, with
    none of the per-value work a compiled SQLAlchemy insert does. `stored_at` is the commit's time."""
    sqlite = conn.dialect.name == "sqlite"
    convert = _sqlite_time if sqlite else _utc
    sql = _EVENT_INSERT_SQLITE if sqlite else _EVENT_INSERT_DRIVER
    stored = convert(stored_at)
    params = [
        (
            *(row[c] for c in _EVENT_COLUMNS),
            convert(row["ts"]),
            None if row.get("device_ts") is None else convert(row["device_ts"]),
            convert(row["received_at"]),
            stored,
        )
        for row in rows
    ]
    conn.exec_driver_sql(sql, params)


# The two other statements of a batch with episodes opening and ending, as SQLite's own SQL: the same
# as the SQLAlchemy statements beside them in Store.write (tests/hub/test_store.py).
_SEGMENTS_DELETE_SQLITE = "DELETE FROM segment WHERE episode_id = ?"
_INCIDENT_END_SQLITE = (
    "UPDATE incident SET status = ?, updated_at = ?, ended_at = ?, record_due_at = ?,"
    " parent_notice_due_at = ?, parent_copy_due_at = ?, authority_notice_due_at = ?"
    " WHERE incident.id = ? AND incident.status = 'open'"
)  # its parameters: _incident_end_params (INCIDENT_END_COLUMNS in this order)


def _incident_end_params(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        row["new_status"],
        _sqlite_time_or_null(row["at"]),
        *(_sqlite_time_or_null(row[c]) for c in INCIDENT_END_COLUMNS),
        row["incident_id"],
    )


@dataclass(frozen=True)
class _DriverWrite:
    """An insert or upsert rendered once as SQLite's own SQL, with its columns in order and what each
    value needs on the way in (a time as SQLAlchemy stores it there, JSON as text)."""

    sql: str
    columns: tuple[str, ...]
    times: frozenset[str]
    json: frozenset[str]
    # Columns a row may leave out, with what SQLAlchemy then stores: NULL, for a nullable column
    # without a default of any kind (it leaves the column out of its INSERT), JSON columns excepted.
    fills: Mapping[str, None] = field(default_factory=dict)

    def params(self, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]] | None:
        """The rows as the driver's parameters, or None unless every row has these columns, or leaves
        out only columns it may (SQLAlchemy fills in other defaults and checks names: that path is
        used then)."""
        columns, times, json_columns = self.columns, self.times, self.json
        if any(len(row) != len(columns) for row in rows):
            return self._filled(rows)
        try:
            return [
                tuple(
                    _sqlite_time_or_null(v) if c in times else (json.dumps(v) if c in json_columns else v)
                    for c in columns
                    for v in (row[c],)
                )
                for row in rows
            ]
        except KeyError:
            return None

    def _filled(self, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]] | None:
        """Rows that leave out columns (an incident as it opens): those columns NULL, if they may be."""
        known = set(self.columns)
        if any(not known.issuperset(row) or not known.difference(row) <= self.fills.keys() for row in rows):
            return None
        return self.params([dict.fromkeys(known.difference(row)) | row for row in rows])


def _base_type(type_: Any) -> Any:
    """The type a TypeDecorator (SQLModel's AutoString) hands its values to unchanged."""
    if (
        isinstance(type_, sa.TypeDecorator)
        and type(type_).process_bind_param is sa.TypeDecorator.process_bind_param
    ):
        return type_.impl
    return type_


def _driver_write(
    table: sa.Table, dialect: sa.Dialect, keys: list[str] | None, update: bool
) -> _DriverWrite | None:
    """SQLite's `INSERT` (keys None) or `INSERT ... ON CONFLICT` for a table of plain columns, or None
    when a column needs SQLAlchemy's own conversion, or on another database: those go through SQLAlchemy.

    The hot path of every batch (room states, episodes, alerts, notes, sends) without SQLAlchemy's
    per-statement and per-value work."""
    if dialect.name != "sqlite":
        # PostgreSQL keeps SQLAlchemy's multi-row INSERT (insertmanyvalues): the driver's executemany
        # measured no better there (bench/ingest.py --database postgres, 3 runs each, interleaved:
        # 75-97 % of the bare client's rate either way), and its JSON needs SQLAlchemy's typing.
        return None
    times: set[str] = set()
    json_columns: set[str] = set()
    names: list[str] = []
    omitted: dict[str, None] = {}
    for column in table.columns:
        if column is table.autoincrement_column:
            continue  # the database numbers it (a single integer key, not one of a composite key)
        if isinstance(column.type, sa.JSON) and column.type.none_as_null and column.nullable:
            # Left out of the statement: NULL as a row opens, untouched by an upsert. A row that sets
            # it (never one of the ingest path's) goes through SQLAlchemy, which writes None as NULL.
            continue
        names.append(column.name)
        if isinstance(column.type, UTCDateTime):
            times.add(column.name)
        elif isinstance(column.type, sa.JSON):
            json_columns.add(column.name)  # as SQLAlchemy's JSON on SQLite: json.dumps, None as null
        elif not isinstance(
            _base_type(column.type), sa.String | sa.Integer | sa.Float | sa.Boolean | sa.LargeBinary
        ):
            return None
        if (
            column.nullable
            and column.server_default is None
            and column.default is None
            and column.name not in json_columns
        ):
            omitted[column.name] = None  # left out: NULL (a JSON column's None would be JSON null)
    quote = dialect.identifier_preparer.quote
    # Built from our own table metadata, quoted by the dialect; every value is a bound parameter.
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)})"  # noqa: S608
        f" VALUES ({', '.join('?' for _ in names)})"
    )
    if keys is not None:
        sql += f" ON CONFLICT ({', '.join(quote(k) for k in keys)})"
        rest = [n for n in names if n not in keys]
        if update and rest:
            sql += " DO UPDATE SET " + ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in rest)
        else:
            sql += " DO NOTHING"
    if keys is not None and update:
        omitted = {}  # an update of every column from a row that leaves some out: not on this path
    return _DriverWrite(sql, tuple(names), frozenset(times), frozenset(json_columns), omitted)


def room_state_json(state: RoomState, by_reference: frozenset[str] = frozenset()) -> str:
    """A room's state as stored with every batch: absent values left out (every field that may be None
    defaults to None, tests/hub/test_room_properties.py), a quarter shorter and quicker to write; the
    episodes named in `by_reference` (the open and the latest one) left out too, for `room_state_row`."""
    if not by_reference:
        return state.model_dump_json(exclude_none=True)
    return state.model_dump_json(exclude_none=True, exclude=set(by_reference))


def room_state_row(state: RoomState, stale: frozenset[str] | None, now: dt.datetime) -> dict[str, Any]:
    """A room's row: its open and latest episodes named by id unless their row is `stale` (or nothing is
    known of the episode table: `stale` None). An ended episode's row is written with every change,
    so only an open one waiting for its refresh is ever carried whole: the state, rewritten with every
    batch, is half as long without them (bench/ingest.py; docs/performance.md)."""
    episode = state.episode
    last = state.last_episode
    episode_id = episode.id if episode is not None and stale is not None and episode.id not in stale else None
    last_id = last.id if last is not None and stale is not None and last.id not in stale else None
    refs = frozenset(
        name for name, ref in (("episode", episode_id), ("last_episode", last_id)) if ref is not None
    )
    return {
        "site": state.site,
        "room": state.room,
        "state": room_state_json(state, refs),
        "episode_id": episode_id,
        "last_episode_id": last_id,
        "updated_at": now,
    }


def _segment_key(ep: Episode) -> tuple[tuple[dt.datetime, dt.datetime | None], ...]:
    return tuple((seg.start, seg.end) for seg in ep.segments)


def episode_row(ep: Episode, now: dt.datetime) -> dict[str, Any]:
    acc = account(ep, now)
    return {
        "id": ep.id,
        "site": ep.site,
        "room": ep.room,
        "number": ep.number,
        "started_at": ep.started_at,
        "ended_at": ep.ended_at,
        "start_uncertain": ep.start_uncertain,
        "end_uncertain": ep.end_uncertain,
        "locked": ep.locked,
        "manual": ep.manual,
        "test": ep.test,
        "incident_id": ep.incident_id,
        "pupil_id": ep.pupil_id,
        "elapsed_s": ep.elapsed_s(now),
        "duration_s": ep.duration_s(now),
        "supervised_s": acc.supervised_s,
        "unsupervised_s": acc.unsupervised_s,
        "unknown_s": acc.unknown_s,
        "longest_lapse_s": acc.longest_lapse_s,
        "data": ep.model_dump_json(),
        "saved_at": now,
    }


def _flag_loss(conn: Connection, episode_id: str, data: str) -> bool:
    """Flag one stored episode `possible_loss` on its row as it is when written (`data`: as it was read),
    never over a change a person committed since (a child attached, a review recorded, on PostgreSQL
    from another connection while this batch is written); True when this flagged it."""
    table = EpisodeRecord.__table__  # type: ignore[attr-defined]
    for _ in range(10):
        ep = Episode.model_validate_json(data)
        if ep.possible_loss:
            return False
        ep.possible_loss = True
        changed = conn.execute(
            sa.update(table)
            .where(table.c.id == episode_id, table.c.data == data)
            .values(data=ep.model_dump_json())
        )
        if changed.rowcount == 1:
            return True
        data = conn.execute(sa.select(table.c.data).where(table.c.id == episode_id)).scalar_one()
    raise RuntimeError(f"episode {episode_id} kept changing while it was flagged possible_loss")


def _flag_older_losses(conn: Connection, windows: Sequence[OlderLoss]) -> list[dict[str, Any]]:
    """Semantics 4.4 for the episodes a room no longer holds: every ended episode of the window's room
    that overlaps it (`ended_at > since`, `started_at < until`), but those it skips, is flagged
    `possible_loss` in its stored `data`; returns a `possible_loss` note for each one newly flagged."""
    table = EpisodeRecord.__table__  # type: ignore[attr-defined]
    notes: list[dict[str, Any]] = []
    for w in windows:
        query = sa.select(table.c.id, table.c.data).where(
            table.c.site == w.site,
            table.c.room == w.room,
            table.c.ended_at.is_not(None),
            table.c.ended_at > w.since,
            table.c.started_at < w.until,
        )
        if w.skip:
            query = query.where(table.c.id.not_in(w.skip))
        for episode_id, data in conn.execute(query.order_by(table.c.started_at, table.c.id)).all():
            if not _flag_loss(conn, episode_id, data):
                continue
            notes.append(
                {
                    "site": w.site,
                    "room": w.room,
                    "episode_id": episode_id,
                    "at": w.until,
                    "kind": "possible_loss",
                    "detail": {"device": w.device, "missing": w.missing},
                }
            )
    return notes


def restore_room_state(
    state: str, episode_id: str | None, last_episode_id: str | None, episodes: Mapping[str, str]
) -> RoomState:
    """A room's state from its row (`room_state_row`), the episodes it names taken from `episodes`
    (id: the episode row's `data`)."""
    restored = RoomState.model_validate_json(state)
    for name, ref in (("episode", episode_id), ("last_episode", last_episode_id)):
        if ref is None:
            continue
        data = episodes.get(ref)
        if data is None:
            # Written in the same transaction as the room's row, so only a damaged database gets
            # here: say so, and start the room without it rather than not at all.
            log.error(
                "room %s/%s: its %s %s is missing from the episode table",
                restored.site,
                restored.room,
                name,
                ref,
            )
            continue
        setattr(restored, name, Episode.model_validate_json(data))
    return restored


class Store:
    """Reads and the single writer. `write` is called from the ingest thread only."""

    def __init__(self, engine: Engine, *, driver: bool = True) -> None:
        self.engine = engine
        # False: every write through SQLAlchemy's own statements, none straight to the driver (a test
        # writes the same batches both ways and compares what lands).
        self.driver = driver
        self._write_lock = threading.Lock()
        self._upserts: dict[tuple[str, str, bool], Any] = {}
        self._driver_writes: dict[tuple[str, str, tuple[str, ...] | None, bool], _DriverWrite | None] = {}
        self._segments_written: dict[str, tuple[tuple[dt.datetime, dt.datetime | None], ...]] = {}
        self._writer: Connection | None = None
        self._closed = False

    @classmethod
    def open(cls, url: str, *, run_migrations: bool = True, driver: bool = True) -> Store:
        store = cls(make_engine(url), driver=driver)
        if run_migrations:
            migrate(store.engine)
        return store

    def close(self) -> None:
        with self._write_lock:
            self._closed = True  # a write after this (a thread still stopping) keeps no connection
            self._drop_writer()
        self.engine.dispose()

    def ping(self) -> bool:
        """Whether the database answers at all (to tell a refused message from a database that is down)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception:
            return False
        return True

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    # -- the writer

    def write(self, batch: Batch, now: dt.datetime) -> None:
        """Write a batch in one transaction; nothing of it is visible until all of it is."""
        if not batch:
            return
        with self._write_lock, self._transaction() as conn:
            # On SQLite the statements of every batch go straight to the driver (see _driver_write).
            sqlite = self.driver and conn.dialect.name == "sqlite"
            if batch.events and self.driver:
                _insert_events(conn, batch.events, now)
            elif batch.events:
                for run in _same_keys([row | {"stored_at": now} for row in batch.events]):
                    conn.execute(sa.insert(EventRecord), run)
            if batch.dead_letters:
                self._insert(conn, DeadLetter, batch.dead_letters)
            if batch.episodes:
                rows = [episode_row(ep, now) for ep in batch.episodes.values()]
                self._upsert(conn, EpisodeRecord, rows, ["id"])
                # Segments change when a door closes or opens, not with every reading: rewritten only
                # for the episodes whose segments differ from what this process last wrote.
                changed = [
                    ep
                    for ep in batch.episodes.values()
                    if self._segments_written.get(ep.id) != _segment_key(ep)
                ]
                if changed:
                    ids = [ep.id for ep in changed]
                    if sqlite:
                        conn.exec_driver_sql(_SEGMENTS_DELETE_SQLITE, [(i,) for i in ids])
                    else:
                        conn.execute(sa.delete(SegmentRecord).where(col(SegmentRecord.episode_id).in_(ids)))
                    segments = [
                        {"episode_id": ep.id, "idx": i, "start": seg.start, "end": seg.end}
                        for ep in changed
                        for i, seg in enumerate(ep.segments)
                    ]
                    if segments:
                        self._insert(conn, SegmentRecord, segments)
            if batch.incidents_opened:
                self._upsert(conn, IncidentRecord, batch.incidents_opened, ["id"], update=False)
            ends = [dict.fromkeys(INCIDENT_END_COLUMNS) | row for row in batch.incident_status]
            if ends and sqlite:
                conn.exec_driver_sql(_INCIDENT_END_SQLITE, [_incident_end_params(r) for r in ends])
            elif ends:
                table = IncidentRecord.__table__  # type: ignore[attr-defined]
                conn.execute(
                    sa.update(table)
                    .where(table.c.id == sa.bindparam("incident_id"))
                    .where(table.c.status == "open")
                    .values(
                        status=sa.bindparam("new_status"),
                        updated_at=sa.bindparam("at"),
                        **{c: sa.bindparam(c) for c in INCIDENT_END_COLUMNS},
                    ),
                    ends,
                )
            for incident_id, columns in batch.incident_changes:
                # Never a signed-off record (semantics 6: it changes only by dated addenda). The API holds
                # back a sign-off while it waits for such a change; one that gave up waiting (a stalled
                # database) may see the sign-off land first, and the record then stays as signed.
                table = IncidentRecord.__table__  # type: ignore[attr-defined]
                conn.execute(
                    sa.update(table)
                    .where(table.c.id == incident_id, table.c.status != "closed")
                    .values(**columns)
                )
            notes = batch.notes
            if batch.loss_windows:
                # After the episodes' rows: an episode that ended earlier in this batch is among them.
                notes = notes + _flag_older_losses(conn, batch.loss_windows)
            if notes:
                self._insert(conn, TimelineNote, notes)
            if batch.audits:
                conn.execute(sa.insert(AuditEntry), [a.model_dump(exclude={"id"}) for a in batch.audits])
            if batch.rooms:
                stale = batch.stale_episodes
                rows = [room_state_row(state, stale, now) for state in batch.rooms.values()]
                self._upsert(conn, RoomSnapshot, rows, ["site", "room"])
            if batch.alerts:
                self._upsert(conn, AlertRecord, [alert_row(a, now) for a in batch.alerts.values()], ["id"])
            if batch.deliveries:
                self._upsert(conn, DeliveryRecord, batch.deliveries, ["id"], update=False)
            if batch.attempts:
                self._insert(conn, DeliveryAttempt, batch.attempts)
            if batch.delivery_updates:
                table = DeliveryRecord.__table__  # type: ignore[attr-defined]
                conn.execute(
                    sa.update(table)
                    .where(table.c.id == sa.bindparam("delivery_id"))
                    .values(
                        status=sa.bindparam("new_status"),
                        attempts=sa.bindparam("attempt"),
                        last_attempt_at=sa.bindparam("at"),
                        next_retry_at=sa.bindparam("retry_at"),
                        last_error=sa.bindparam("error"),
                    ),
                    batch.delivery_updates,
                )
        # Committed: remember what the open episodes' segments now are (an ended one is forgotten; a
        # late change to it is simply written again).
        for ep in batch.episodes.values():
            if ep.ended_at is None:
                self._segments_written[ep.id] = _segment_key(ep)
            else:
                self._segments_written.pop(ep.id, None)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A transaction on the writer's own SQLite connection, kept from batch to batch: taking one
        from the pool and giving it back (a rollback on the way in) for every batch cost about 5 % of
        the ingest thread (bench/ingest_path.py). Any error drops it, so the next batch starts afresh.
        A server's connections come from the pool, pinged first: one the server dropped in between
        is replaced there, not found broken by a batch; so do all once the store is closed."""
        if self.engine.dialect.name != "sqlite" or self._closed:
            with self.engine.begin() as conn:
                yield conn
            return
        if self._writer is None or self._writer.closed or self._writer.invalidated:
            self._writer = self.engine.connect()
        conn = self._writer
        try:
            with conn.begin():
                yield conn
        except BaseException:
            self._drop_writer()
            raise

    def _drop_writer(self) -> None:
        conn, self._writer = self._writer, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a connection that broke: gone either way
                log.debug("closing the writer's connection failed", exc_info=True)

    def _through_driver(
        self,
        conn: Connection,
        model: type[SQLModel],
        rows: Sequence[dict[str, Any]],
        keys: list[str] | None,
        update: bool = True,
    ) -> bool:
        """Write the rows through the driver if the table allows it; False: nothing written."""
        if not self.driver:
            return False
        table = model.__table__  # type: ignore[attr-defined]
        cache_key = (table.name, conn.dialect.name, tuple(keys) if keys is not None else None, update)
        if cache_key in self._driver_writes:
            write = self._driver_writes[cache_key]
        else:
            write = self._driver_writes[cache_key] = _driver_write(table, conn.dialect, keys, update)
        if write is None:
            return False
        params = write.params(rows)
        if params is None:
            return False
        conn.exec_driver_sql(write.sql, params)
        return True

    def _insert(self, conn: Connection, model: type[SQLModel], rows: Sequence[dict[str, Any]]) -> None:
        if not self._through_driver(conn, model, rows, None):
            for run in _same_keys(rows):
                conn.execute(sa.insert(model), run)

    def _upsert(
        self,
        conn: Connection,
        model: type[SQLModel],
        rows: Sequence[dict[str, Any]],
        keys: list[str],
        update: bool = True,
    ) -> None:
        if self._through_driver(conn, model, rows, keys, update):
            return
        table = model.__table__  # type: ignore[attr-defined]
        dialect = conn.dialect.name
        cache_key = (table.name, dialect, update)
        # Building an upsert copies every column; the statement is the same each time, so build it once.
        cached = self._upserts.get(cache_key)
        if cached is not None:
            for run in _same_keys(rows):
                conn.execute(cached, run)
            return
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(table)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(table)
        if update:
            columns = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=columns)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        self._upserts[cache_key] = stmt
        for run in _same_keys(rows):
            conn.execute(stmt, run)

    # -- start-up

    def load_room_states(self) -> dict[tuple[str, str], RoomState]:
        """Every room's stored state, with the episodes it names loaded from their rows."""
        with self.session() as s:
            rows = s.exec(select(RoomSnapshot)).all()
            refs = {ref for r in rows for ref in (r.episode_id, r.last_episode_id) if ref is not None}
            stored: dict[str, str] = {}
            if refs:
                query = select(EpisodeRecord.id, EpisodeRecord.data).where(col(EpisodeRecord.id).in_(refs))
                stored = {row[0]: row[1] for row in s.exec(query).all()}
        return {
            (r.site, r.room): restore_room_state(r.state, r.episode_id, r.last_episode_id, stored)
            for r in rows
        }

    # -- reads for the API

    def get_episode(self, episode_id: str) -> EpisodeRecord | None:
        with self.session() as s:
            return s.get(EpisodeRecord, episode_id)

    def open_manual_episodes(self) -> list[EpisodeRecord]:
        """Episodes entered by hand and not yet ended, oldest first: no room machine holds them."""
        e = EpisodeRecord
        with self.session() as s:
            query = select(e).where(col(e.manual).is_(True), col(e.ended_at).is_(None))
            return list(s.exec(query.order_by(col(e.started_at), col(e.id))).all())

    def list_episodes(
        self,
        sites: Sequence[str] | None,
        site: str | None,
        room: str | None,
        is_open: bool | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[EpisodeRecord], str | None]:
        """Newest first, keyset-paginated on (started_at, id)."""
        query = select(EpisodeRecord)
        if sites is not None:
            query = query.where(col(EpisodeRecord.site).in_(list(sites)))
        if site is not None:
            query = query.where(EpisodeRecord.site == site)
        if room is not None:
            query = query.where(EpisodeRecord.room == room)
        if is_open is True:
            query = query.where(col(EpisodeRecord.ended_at).is_(None))
        elif is_open is False:
            query = query.where(col(EpisodeRecord.ended_at).is_not(None))
        rows, last = self._page(query, col(EpisodeRecord.started_at), col(EpisodeRecord.id), limit, cursor)
        return rows, encode_cursor(last.started_at, last.id) if last is not None else None

    def episode_events(
        self, site: str, room: str, start: dt.datetime, end: dt.datetime | None
    ) -> list[EventRecord]:
        query = select(EventRecord).where(
            EventRecord.site == site, EventRecord.room == room, col(EventRecord.ts) >= start
        )
        if end is not None:
            query = query.where(col(EventRecord.ts) <= end)
        with self.session() as s:
            return list(s.exec(query.order_by(col(EventRecord.ts), col(EventRecord.id)).limit(10000)).all())

    def episode_notes(self, episode_id: str) -> list[TimelineNote]:
        with self.session() as s:
            query = select(TimelineNote).where(TimelineNote.episode_id == episode_id)
            return list(s.exec(query.order_by(col(TimelineNote.at), col(TimelineNote.id))).all())

    def get_incident(self, incident_id: str) -> IncidentRecord | None:
        with self.session() as s:
            return s.get(IncidentRecord, incident_id)

    def list_incidents(
        self,
        sites: Sequence[str] | None,
        site: str | None,
        status: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[IncidentRecord], str | None]:
        query = select(IncidentRecord)
        if sites is not None:
            query = query.where(col(IncidentRecord.site).in_(list(sites)))
        if site is not None:
            query = query.where(IncidentRecord.site == site)
        if status is not None:
            query = query.where(IncidentRecord.status == status)
        rows, last = self._page(query, col(IncidentRecord.opened_at), col(IncidentRecord.id), limit, cursor)
        return rows, encode_cursor(last.opened_at, last.id) if last is not None else None

    def get_alert(self, alert_id: str) -> AlertRecord | None:
        with self.session() as s:
            return s.get(AlertRecord, alert_id)

    def list_alerts(
        self,
        sites: Sequence[str] | None,
        active: bool | None,
        episode_id: str | None,
        room: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[AlertRecord], str | None]:
        """Newest first, keyset-paginated on (raised_at, id)."""
        query = select(AlertRecord)
        if sites is not None:
            query = query.where(col(AlertRecord.site).in_(list(sites)))
        if active is not None:
            query = query.where(AlertRecord.active == active)
        if episode_id is not None:
            query = query.where(AlertRecord.episode_id == episode_id)
        if room is not None:
            query = query.where(AlertRecord.room == room)
        rows, last = self._page(query, col(AlertRecord.raised_at), col(AlertRecord.id), limit, cursor)
        return rows, encode_cursor(last.raised_at, last.id) if last is not None else None

    def active_alerts_of_kind(self, kind: str) -> list[Alert]:
        with self.session() as s:
            query = select(AlertRecord).where(AlertRecord.kind == kind, col(AlertRecord.active).is_(True))
            return [Alert.model_validate_json(r.data) for r in s.exec(query).all()]

    def alerts_of_episodes(self, kind: str, episode_ids: Sequence[str]) -> dict[str, Alert]:
        """Every alert of `kind` (active or not) of these episodes, by id."""
        if not episode_ids:
            return {}
        a = AlertRecord
        with self.session() as s:
            query = select(a).where(a.kind == kind, col(a.episode_id).in_(list(episode_ids)))
            return {r.id: Alert.model_validate_json(r.data) for r in s.exec(query).all()}

    def alerts_by_id(self, ids: Sequence[str]) -> dict[str, Alert]:
        if not ids:
            return {}
        with self.session() as s:
            rows = s.exec(select(AlertRecord).where(col(AlertRecord.id).in_(list(ids)))).all()
            return {r.id: Alert.model_validate_json(r.data) for r in rows}

    def deliveries(self, alert_id: str) -> list[DeliveryRecord]:
        with self.session() as s:
            query = select(DeliveryRecord).where(DeliveryRecord.alert_id == alert_id)
            return list(s.exec(query.order_by(col(DeliveryRecord.created_at), col(DeliveryRecord.id))).all())

    def unfinished_deliveries(self) -> list[DeliveryRecord]:
        """Sends not yet delivered nor given up: after a restart they are taken up again."""
        with self.session() as s:
            query = select(DeliveryRecord).where(col(DeliveryRecord.status).in_(["pending", "retrying"]))
            return list(s.exec(query.order_by(col(DeliveryRecord.created_at))).all())

    def delivery_attempts(self, delivery_id: str) -> list[DeliveryAttempt]:
        with self.session() as s:
            query = select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)
            return list(s.exec(query.order_by(col(DeliveryAttempt.id))).all())

    def _page(self, query: Any, when: Any, key: Any, limit: int, cursor: str | None) -> tuple[list[Any], Any]:
        """Newest first, keyset-paginated on (when, key): the page, and its last row when more follow.
        Each list has an index on (site, when, id) (migration 0013) that streams the page in this order;
        the cursor also bounds `when` alone (`<=`), so the index seeks to the page's edge instead of
        walking every newer row to it."""
        if cursor is not None:
            after_when, after_key = decode_cursor(cursor)
            query = query.where(
                when <= after_when, sa.or_(when < after_when, sa.and_(when == after_when, key < after_key))
            )
        with self.session() as s:
            rows = list(s.exec(query.order_by(when.desc(), key.desc()).limit(limit + 1)).all())
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1]
        return rows, None

    def count(self, model: type[SQLModel]) -> int:
        with self.session() as s:
            return int(s.exec(select(sa.func.count()).select_from(model)).one())

    def dead_letters(
        self, limit: int = 100, cursor: str | None = None, prefixes: Sequence[str] | None = None
    ) -> tuple[list[DeadLetter], str | None]:
        """Newest first, keyset-paginated on the id: the page, and the cursor of the next (None: no more;
        a malformed cursor is a ValueError). `prefixes`: only those whose topic starts with one of them
        (a person's sites' topics); None: all."""
        query = select(DeadLetter)
        if prefixes is not None:
            query = query.where(
                sa.or_(sa.false(), *(col(DeadLetter.topic).startswith(p, autoescape=True) for p in prefixes))
            )
        if cursor is not None:
            (after,) = unpack_cursor(cursor, 1)
            if not (after.isascii() and after.isdigit()) or len(after) > 19:
                raise ValueError("cursor: not a cursor this API returned")
            query = query.where(col(DeadLetter.id) < int(after))
        with self.session() as s:
            rows = list(s.exec(query.order_by(col(DeadLetter.id).desc()).limit(limit + 1)).all())
        if len(rows) > limit:
            return rows[:limit], pack_cursor([str(rows[limit - 1].id)])
        return rows, None

    # -- tokens and audit

    def add_token(self, token: ApiToken) -> ApiToken:
        with self.session() as s:
            s.add(token)
            s.commit()
            s.refresh(token)
            return token

    def find_token(self, token_hash: str) -> ApiToken | None:
        with self.session() as s:
            row = s.exec(select(ApiToken).where(ApiToken.token_hash == token_hash)).first()
            return row if row is not None and row.revoked_at is None else None

    def tokens(self) -> list[ApiToken]:
        """Every token ever made, oldest first (their hashes included: for the CLI, never printed)."""
        with self.session() as s:
            return list(s.exec(select(ApiToken).order_by(col(ApiToken.id))).all())

    def revoke_tokens(self, *, token_id: int | None, name: str | None, now: dt.datetime) -> list[ApiToken]:
        """Revoke the live token with this id, or every live token of this name; returns those revoked.
        A revoked token is refused at once: each request looks its token up (auth.principal_for)."""
        with self.session() as s:
            query = select(ApiToken).where(col(ApiToken.revoked_at).is_(None))
            if token_id is not None:
                query = query.where(ApiToken.id == token_id)
            if name is not None:
                query = query.where(ApiToken.name == name)
            rows = list(s.exec(query).all())
            for row in rows:
                row.revoked_at = now
                s.add(row)
            s.commit()
            return rows

    def audit(self, entry: AuditEntry) -> None:
        with self.session() as s:
            s.add(entry)
            s.commit()


def alert_row(alert: Alert, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": alert.id,
        "site": alert.site,
        "room": alert.room,
        "episode_id": alert.episode_id,
        "kind": alert.kind,
        "severity": alert.severity,
        "active": alert.active,
        "raised_at": alert.raised_at,
        "resolved_at": alert.resolved_at,
        "data": alert.model_dump_json(),
        "updated_at": now,
    }


def pack_cursor(values: Sequence[str]) -> str:
    """A list cursor: the sort key of the last item shown, opaque to the client."""
    # UTF-8 as it is (not \uXXXX escapes, six bytes a letter): a name in Greek or Arabic keeps the
    # cursor within the length the lists take (deps.Cursor).
    raw = json.dumps(list(values), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unpack_cursor(cursor: str, size: int) -> list[str]:
    """The `size` strings of a cursor `pack_cursor` made; anything else is a ValueError (the API turns
    it into a 422)."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as exc:
        raise ValueError("cursor: not a cursor this API returned") from exc
    if not isinstance(values, list) or len(values) != size or not all(isinstance(v, str) for v in values):
        raise ValueError("cursor: not a cursor this API returned")
    return values


def encode_cursor(when: dt.datetime, key: str) -> str:
    return pack_cursor([when.isoformat(), key])


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """Decode a list cursor; a malformed one is a ValueError (the API turns it into a 422)."""
    when, key = unpack_cursor(cursor, 2)
    try:
        parsed = dt.datetime.fromisoformat(when)
        # In UTC, as the cursors made here are: one with an offset near year 1 or 9999 overflows here
        # (a 422), not where the database binds it (a 500).
        utc = parsed.astimezone(dt.UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError) as exc:
        raise ValueError("cursor: not a cursor this API returned") from exc
    if utc is None:
        raise ValueError("cursor: not a cursor this API returned")
    return utc, key
