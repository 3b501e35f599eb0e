"""The store, run the same way against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel, col

from seclusion_hub.core.alerts import Alert, Escalation
from seclusion_hub.core.episode import Episode, ObserverMark, Segment
from seclusion_hub.core.incident import STATUSES
from seclusion_hub.core.room import OlderLoss, RoomState
from seclusion_hub.models import (
    AlertRecord,
    EpisodeRecord,
    EventRecord,
    IncidentRecord,
    RoomSnapshot,
    SegmentRecord,
    UTCDateTime,
)
from seclusion_hub.record_store import RecordStore, report_due
from seclusion_hub.store import Batch, Store, dead_letter_row, make_engine, migrate

T0 = dt.datetime(2026, 10, 25, 0, 30, 0, 123000, tzinfo=dt.UTC)  # the night the clocks go back


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_db")
    s = Store.open(url)
    yield s
    s.close()


def episode(n: int, start: dt.datetime, end: dt.datetime | None = None) -> Episode:
    return Episode(
        id=f"00000000-0000-0000-0000-{n:012d}",
        site="test-school",
        room="calm-1",
        number=n,
        started_at=start,
        ended_at=end,
        segments=[Segment(start=start, end=end)],
        incident_id=f"10000000-0000-0000-0000-{n:012d}",
    )


def event_row(seq: int, ts: dt.datetime) -> dict[str, object]:
    return {
        "site": "test-school",
        "room": "calm-1",
        "device": "calm-1-door",
        "epoch": 0,
        "seq": seq,
        "event_id": f"calm-1-door:0:{seq}",
        "kind": "door",
        "value": "closed",
        "staff": None,
        "ts": ts,
        "received_at": ts,
        "stored_at": ts,
    }


def test_a_batch_is_written_whole_and_read_back_in_aware_utc(store: Store) -> None:
    ep = episode(1, T0)
    batch = Batch(
        events=[event_row(1, T0)],
        dead_letters=[dead_letter_row("t", b"\xffbad", "payload is not UTF-8", T0)],
        episodes={ep.id: ep},
        incidents_opened=[
            {
                "id": ep.incident_id,
                "episode_id": ep.id,
                "site": ep.site,
                "room": ep.room,
                "status": "open",
                "opened_at": T0,
                "updated_at": T0,
            }
        ],
        notes=[
            {
                "site": ep.site,
                "room": ep.room,
                "episode_id": ep.id,
                "at": T0,
                "kind": "episode_started",
                "detail": {"start_uncertain": False},
            }
        ],
        rooms={("test-school", "calm-1"): RoomState(site="test-school", room="calm-1", episode=ep)},
    )
    store.write(batch, T0 + dt.timedelta(seconds=90))
    row = store.get_episode(ep.id)
    assert row is not None
    assert row.started_at == T0 and row.started_at.tzinfo is not None
    assert row.elapsed_s == 90 and row.unsupervised_s == 90
    incident = store.get_incident(ep.incident_id)
    assert incident is not None and incident.status == "open"
    assert [n.kind for n in store.episode_notes(ep.id)] == ["episode_started"]
    letters, _ = store.dead_letters()
    assert letters[0].payload == b"\xffbad" and letters[0].reason == "payload is not UTF-8"
    states = store.load_room_states()
    restored = states[("test-school", "calm-1")].episode
    assert restored is not None and restored.started_at == T0

    ep.ended_at = ep.segments[0].end = T0 + dt.timedelta(seconds=100)
    store.write(
        Batch(
            episodes={ep.id: ep},
            incident_status=[
                {
                    "incident_id": ep.incident_id,
                    "new_status": "awaiting_record",
                    "at": ep.ended_at,
                    "ended_at": ep.ended_at,
                }
            ],
        ),
        T0 + dt.timedelta(seconds=200),
    )
    row = store.get_episode(ep.id)
    assert row is not None and row.ended_at == ep.ended_at and row.duration_s == 100
    incident = store.get_incident(ep.incident_id)
    assert incident is not None and incident.status == "awaiting_record" and incident.ended_at == ep.ended_at
    with store.session() as s:
        segments = s.exec(sa.select(SegmentRecord)).all()  # type: ignore[call-overload]
    assert len(segments) == 1


def test_an_event_is_stored_once_per_device_and_seq(store: Store) -> None:
    store.write(Batch(events=[event_row(1, T0)]), T0)
    with pytest.raises(sa.exc.IntegrityError):
        store.write(Batch(events=[event_row(1, T0)]), T0)
    assert store.count(EventRecord) == 1


def test_a_naive_time_is_refused(store: Store) -> None:
    with pytest.raises((sa.exc.StatementError, ValueError), match="naive"):
        store.write(Batch(events=[event_row(1, T0.replace(tzinfo=None))]), T0)


def test_episodes_page_newest_first(store: Store) -> None:
    eps = {
        f"{n}": episode(n, T0 + dt.timedelta(minutes=n), T0 + dt.timedelta(minutes=n, seconds=30))
        for n in range(7)
    }
    store.write(Batch(episodes={e.id: e for e in eps.values()}), T0 + dt.timedelta(hours=1))
    seen: list[int] = []
    cursor = None
    while True:
        rows, cursor = store.list_episodes(None, "test-school", None, False, 3, cursor)
        seen += [r.number for r in rows]
        if cursor is None:
            break
    assert seen == [6, 5, 4, 3, 2, 1, 0]
    open_rows, _ = store.list_episodes(None, None, None, True, 10, None)
    assert open_rows == []


def test_incidents_page_newest_first(store: Store) -> None:
    eps = [episode(n, T0 + dt.timedelta(minutes=n)) for n in range(5)]
    opened = [
        {
            "id": e.incident_id,
            "episode_id": e.id,
            "site": e.site,
            "room": e.room,
            "status": "open",
            "opened_at": e.started_at,
            "updated_at": e.started_at,
        }
        for e in eps
    ]
    store.write(Batch(episodes={e.id: e for e in eps}, incidents_opened=opened), T0 + dt.timedelta(hours=1))
    seen: list[str] = []
    cursor = None
    while True:
        rows, cursor = store.list_incidents(None, "test-school", "open", 2, cursor)
        seen += [r.id for r in rows]
        if cursor is None:
            break
    assert seen == [e.incident_id for e in reversed(eps)]


def test_alerts_their_sends_and_every_attempt_are_stored_and_listed(store: Store) -> None:
    def alert(n: int, raised: dt.datetime, active: bool = True) -> Alert:
        return Alert(
            id=f"20000000-0000-0000-0000-{n:012d}",
            key=f"supervision_lapse/ep/{n}",
            kind="supervision_lapse",
            severity="critical",
            site="test-school",
            room="calm-1" if n % 2 else "calm-2",
            episode_id="00000000-0000-0000-0000-000000000001",
            due_at=raised,
            raised_at=raised,
            tier="room",
            escalations=[Escalation(tier="room", at=raised)],
            resolved_at=None if active else raised + dt.timedelta(seconds=5),
        )

    alerts = {a.id: a for a in (alert(n, T0 + dt.timedelta(seconds=n), active=n != 3) for n in range(1, 6))}
    delivery_id = f"{alert(1, T0).id}/1/0"
    row: dict[str, object] = {
        "id": delivery_id,
        "alert_id": alert(1, T0).id,
        "number": 1,
        "tier": "room",
        "reason": "raised",
        "channel": "webhook:http://127.0.0.1",
        "recipient": "Room staff",
        "status": "pending",
        "attempts": 0,
        "created_at": T0,
        "last_attempt_at": None,
        "next_retry_at": None,
        "last_error": None,
    }
    store.write(Batch(alerts=alerts, deliveries=[row]), T0)
    assert [d.status for d in store.unfinished_deliveries()] == ["pending"]
    later = T0 + dt.timedelta(seconds=2)
    store.write(
        Batch(
            attempts=[
                {"delivery_id": row["id"], "attempt": 1, "at": later, "ok": False, "error": "HTTP 500"}
            ],
            delivery_updates=[
                {
                    "delivery_id": row["id"],
                    "new_status": "retrying",
                    "attempt": 1,
                    "at": later,
                    "retry_at": later + dt.timedelta(seconds=1),
                    "error": "HTTP 500",
                }
            ],
        ),
        later,
    )
    [retrying] = store.deliveries(alert(1, T0).id)
    assert (retrying.status, retrying.attempts, retrying.last_error) == ("retrying", 1, "HTTP 500")
    assert retrying.next_retry_at == later + dt.timedelta(seconds=1)
    assert [(a.attempt, a.ok) for a in store.delivery_attempts(delivery_id)] == [(1, False)]

    active, nxt = store.list_alerts(None, True, None, None, 2, None)
    assert [a.id for a in active] == [alert(5, T0).id, alert(4, T0).id]
    rest, last = store.list_alerts(None, True, None, None, 2, nxt)
    assert [a.id for a in rest] == [alert(2, T0).id, alert(1, T0).id]
    assert last is None
    one_room, _ = store.list_alerts(["test-school"], None, None, "calm-2", 10, None)
    assert sorted(a.id for a in one_room) == sorted(alert(n, T0).id for n in (2, 4))
    stored = store.get_alert(alert(3, T0).id)
    assert stored is not None and not stored.active
    assert Alert.model_validate_json(stored.data).resolved_at == T0 + dt.timedelta(seconds=8)


def test_the_migrations_make_exactly_the_tables_the_models_describe(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def test_segments_are_rewritten_only_when_they_change_and_always_match_the_episode(store: Store) -> None:
    ep = episode(1, T0)

    def rows() -> list[tuple[int, dt.datetime, dt.datetime | None]]:
        with store.session() as s:
            found = s.exec(sa.select(SegmentRecord)).all()  # type: ignore[call-overload]
        return sorted((r[0].idx, r[0].start, r[0].end) for r in found)

    store.write(Batch(episodes={ep.id: ep}), T0)
    assert rows() == [(0, T0, None)]
    store.write(Batch(episodes={ep.id: ep}), T0 + dt.timedelta(seconds=1))  # a reading: segments the same
    assert rows() == [(0, T0, None)]
    # The door opens and closes again: a second segment
    ep.segments[0].end = T0 + dt.timedelta(seconds=30)
    ep.segments.append(Segment(start=T0 + dt.timedelta(seconds=40)))
    store.write(Batch(episodes={ep.id: ep}), T0 + dt.timedelta(seconds=41))
    assert rows() == [(0, T0, T0 + dt.timedelta(seconds=30)), (1, T0 + dt.timedelta(seconds=40), None)]
    # A new process (a restart) knows nothing of what was written: it writes them again, the same
    again = Store(store.engine)
    again.write(Batch(episodes={ep.id: ep}), T0 + dt.timedelta(seconds=42))
    assert len(rows()) == 2


def test_a_loss_window_flags_the_ended_episodes_of_its_room_it_overlaps_once_with_a_note(
    store: Store,
) -> None:
    """Semantics 4.4 in the episode table: an ended episode of the room whose span overlaps the window
    (ended after `since`, started before `until`) is flagged `possible_loss`, with a note, once; one that
    only touches it, an open one, one it skips and another room's are left alone. An episode ended in
    the same batch is seen."""

    def s(seconds: float) -> dt.datetime:
        return T0 + dt.timedelta(seconds=seconds)

    touching_start, inside, touching_end = (
        episode(1, s(0), s(10)),
        episode(2, s(20), s(30)),
        episode(3, s(40), s(50)),
    )
    skipped, still_open = episode(4, s(12), s(14)), episode(5, s(60))
    elsewhere = episode(6, s(20), s(30)).model_copy(update={"room": "calm-2"})
    eps = [touching_start, inside, touching_end, skipped, still_open, elsewhere]
    store.write(Batch(episodes={e.id: e for e in eps}), s(70))

    def window(since: float, until: float, *skip: str) -> OlderLoss:
        return OlderLoss("test-school", "calm-1", "calm-1-panel", 2, s(since), s(until), skip)

    def flagged() -> list[int]:
        return [
            e.number for e in eps if Episode.model_validate_json(_episode_data(store, e.id)).possible_loss
        ]

    def notes(e: Episode) -> list[tuple[dt.datetime, str, object]]:
        return [(n.at, n.kind, n.detail) for n in store.episode_notes(e.id)]

    store.write(Batch(loss_windows=[window(10, 40, skipped.id)]), s(71))
    assert flagged() == [2]
    assert notes(inside) == [(s(40), "possible_loss", {"device": "calm-1-panel", "missing": 2})]
    assert all(notes(e) == [] for e in eps if e is not inside)

    later = episode(7, s(61), s(65))  # written and flagged in one batch
    store.write(Batch(episodes={later.id: later}, loss_windows=[window(5, 100, skipped.id)]), s(101))
    eps.append(later)
    assert flagged() == [1, 2, 3, 7]  # the second window: `inside` is flagged already, noted once
    assert len(notes(inside)) == 1 and len(notes(later)) == 1
    assert all(notes(e) == [] for e in (skipped, still_open, elsewhere))


def test_a_loss_flag_never_writes_over_a_change_committed_since_it_read_the_episode(
    fresh_postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a person's change of an older episode (a child attached, a review recorded, each
    written on the row as it is) commits from another connection while the hub's writer flags the same
    episode `possible_loss` in its batch: the flag was written over the row as the writer had read it,
    and the child or the review was lost. Now the flag is set on the row as it is then."""
    import seclusion_hub.store as store_module

    store = Store.open(fresh_postgres_db)
    try:
        first = episode(1, T0, T0 + dt.timedelta(seconds=10))
        store.write(Batch(episodes={first.id: first}), T0 + dt.timedelta(seconds=20))
        other = sa.create_engine(fresh_postgres_db)
        table = EpisodeRecord.__table__  # type: ignore[attr-defined]
        real = Episode.model_validate_json
        meddled: list[str] = []

        class Meddling(Episode):
            @classmethod
            def model_validate_json(cls, data: Any, **kwargs: Any) -> Episode:  # type: ignore[override]
                if not meddled:  # the person's change commits between the writer's read and its write
                    changed = real(data)
                    changed.pupil_id = "child-1"
                    meddled.append(changed.model_dump_json())
                    with other.begin() as conn:
                        conn.execute(sa.update(table).where(table.c.id == first.id).values(data=meddled[0]))
                return real(data, **kwargs)

        monkeypatch.setattr(store_module, "Episode", Meddling)
        window = OlderLoss("test-school", "calm-1", "calm-1-panel", 2, T0, T0 + dt.timedelta(seconds=30), ())
        store.write(Batch(loss_windows=[window]), T0 + dt.timedelta(seconds=31))
        monkeypatch.undo()
        stored = Episode.model_validate_json(_episode_data(store, first.id))
        assert meddled and stored.possible_loss and stored.pupil_id == "child-1", stored
        assert [n.kind for n in store.episode_notes(first.id)] == ["possible_loss"]
        other.dispose()
    finally:
        store.close()


def every_page(read: Any) -> list[str]:
    """The ids of a list read page after page (`read(cursor)`: a page and the next cursor) to its end."""
    found: list[str] = []
    cursor = None
    while True:
        rows, cursor = read(cursor)
        found += [r.id for r in rows]
        if cursor is None:
            return found


def _episode_data(store: Store, episode_id: str) -> str:
    row = store.get_episode(episode_id)
    assert row is not None
    return row.data


def _second_store(store: Store, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty database of the same kind as `store`'s, written through SQLAlchemy only."""
    if store.engine.dialect.name == "sqlite":
        return Store.open(f"sqlite:///{tmp_path / 'other.db'}", driver=False)
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    request.addfinalizer(lambda: server.drop_database(name))
    return Store.open(server.url(name), driver=False)


def _raw(store: Store, table: str, order: str) -> list[tuple[object, ...]]:
    with store.engine.connect() as conn:
        sql = f"SELECT * FROM {table} ORDER BY {order}"  # noqa: S608 (the test's own table names)
        return [tuple(r) for r in conn.exec_driver_sql(sql)]


def test_rows_written_through_the_driver_are_exactly_what_sqlalchemy_writes(
    store: Store, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """On SQLite the hot tables skip SQLAlchemy (store._driver_write); what lands must not differ by a
    character: times as SQLAlchemy stores them, JSON as its text, booleans, bytes, NULLs, an upsert's
    update. On PostgreSQL the same rows go through SQLAlchemy, and land the same."""
    from seclusion_hub.models import DeadLetter, EpisodeRecord, RoomSnapshot, TimelineNote

    ep = episode(1, T0)
    later = T0 + dt.timedelta(seconds=1, microseconds=7)
    cases: list[tuple[type[SQLModel], list[dict[str, object]], list[str] | None, str]] = [
        (
            EpisodeRecord,
            [
                {
                    "id": ep.id,
                    "site": ep.site,
                    "room": ep.room,
                    "number": 1,
                    "started_at": T0,
                    "ended_at": None,
                }
                | {"start_uncertain": False, "end_uncertain": True, "locked": False, "manual": False}
                | {"test": True, "incident_id": ep.incident_id, "pupil_id": None, "elapsed_s": 1.5}
                | {"duration_s": 1.25, "supervised_s": 0.0, "unsupervised_s": 1.25, "unknown_s": 0.0}
                | {"longest_lapse_s": 1.25, "data": ep.model_dump_json(), "saved_at": later}
            ],
            ["id"],
            "id",
        ),
        (
            RoomSnapshot,
            [
                {"site": "s", "room": "r", "state": '{"a": "é"}', "updated_at": later}
                | {"episode_id": ep.id, "last_episode_id": None}
            ],
            ["site", "room"],
            "room",
        ),
        (
            TimelineNote,
            [
                {
                    "site": "s",
                    "room": "r",
                    "episode_id": None,
                    "at": T0,
                    "kind": "k",
                    "detail": {"x": [1, "é"]},
                },
                {"site": "s", "room": "r", "episode_id": ep.id, "at": later, "kind": "k", "detail": {}},
            ],
            None,
            "id",
        ),
        (DeadLetter, [dead_letter_row("a/b", b"\x00\xffbad", "reason", T0)], None, "id"),
    ]
    sqlite = store.engine.dialect.name == "sqlite"
    # The same rows through SQLAlchemy, into a second, empty database of the same kind.
    other = _second_store(store, request, tmp_path)
    try:
        for model, rows, keys, order in cases:
            table = str(model.__tablename__)
            with store.engine.begin() as conn:
                if keys is None:
                    store._insert(conn, model, rows)
                else:
                    store._upsert(conn, model, rows, keys)
                    store._upsert(conn, model, rows, keys)  # the update half of the upsert
            with other.engine.begin() as conn:
                conn.execute(sa.insert(model), rows)
            # On SQLite every one of them skips SQLAlchemy; on PostgreSQL none does (its multi-row
            # INSERT is the faster one there).
            through_driver = any(k[0] == table for k, w in store._driver_writes.items() if w)
            assert through_driver == sqlite, table
            assert _raw(store, table, order) == _raw(other, table, order), table
    finally:
        other.close()


def test_an_episodes_batches_land_the_same_through_the_driver_as_through_sqlalchemy(
    store: Store, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """An episode's life as the ingest thread writes it (its incident opened, its segments rewritten
    when the door opens and closes again, its incident's end), written by the store as shipped and by
    one that uses SQLAlchemy's statements only: the rows must not differ by a character."""
    other = _second_store(store, request, tmp_path)
    t1, t2, t3 = (T0 + dt.timedelta(seconds=s, microseconds=s) for s in (40, 45, 300))
    opened, early = episode(1, T0), episode(2, T0)  # the second one's record is completed early
    reclosed = opened.model_copy(update={"segments": [Segment(start=T0, end=t1), Segment(start=t2)]})
    ended = opened.model_copy(
        update={"ended_at": t3, "segments": [Segment(start=T0, end=t1), Segment(start=t2, end=t3)]}
    )

    def incident(ep: Episode) -> dict[str, object]:
        return {"id": ep.incident_id, "episode_id": ep.id, "site": ep.site, "room": ep.room} | {
            "status": "open",
            "opened_at": T0,
            "updated_at": T0,
            "record": {},
        }

    def end(ep: Episode) -> dict[str, object]:
        return {
            "incident_id": ep.incident_id,
            "new_status": "awaiting_record",
            "at": t3,
            "ended_at": t3,
            "record_due_at": t3 + dt.timedelta(days=1),
            "parent_notice_due_at": t3 + dt.timedelta(hours=2, microseconds=1),
            "parent_copy_due_at": t3 + dt.timedelta(days=3),
            "authority_notice_due_at": None,
        }

    batches = [
        Batch(
            events=[event_row(1, T0)],
            episodes={opened.id: opened, early.id: early},
            incidents_opened=[incident(opened), incident(early)],
        ),
        Batch(events=[event_row(2, t1), event_row(3, t2)], episodes={opened.id: reclosed}),
        Batch(
            events=[event_row(4, t3)], episodes={opened.id: ended}, incident_status=[end(opened), end(early)]
        ),
    ]
    compiled: list[str] = []  # statements SQLAlchemy compiled for the store as shipped, in its writes
    writing = False

    def note(_conn: object, _cursor: object, statement: str, _p: object, context: object, _m: bool) -> None:
        if writing and getattr(context, "compiled", None) is not None:
            compiled.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", note)
    try:
        for n, batch in enumerate(batches):
            for s in (store, other):
                if n == 2:  # recorded by staff before the episode's end is written: left as it is
                    with s.engine.begin() as conn:
                        conn.execute(
                            sa.update(IncidentRecord)
                            .where(col(IncidentRecord.id) == early.incident_id)
                            .values(status="recorded")
                        )
                writing = s is store
                s.write(batch, t3 + dt.timedelta(seconds=n))
                writing = False
        tables = {"event": "seq", "episode": "id", "segment": "episode_id, idx", "incident": "id"}
        for table, order in tables.items():
            assert _raw(store, table, order) == _raw(other, table, order), table
        segments = [r for r in _raw(store, "segment", "idx") if r[0] == opened.id]
        assert [r[1] for r in segments] == [0, 1]  # rewritten: both, ended
        with store.session() as session:
            assert session.get(IncidentRecord, opened.incident_id).status == "awaiting_record"  # type: ignore[union-attr]
            assert session.get(IncidentRecord, early.incident_id).status == "recorded"  # type: ignore[union-attr]
        assert not other._driver_writes
        # On SQLite not one statement of these batches went through SQLAlchemy's compiler.
        assert (compiled == []) == (store.engine.dialect.name == "sqlite"), compiled
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", note)
        other.close()


def test_a_driver_row_may_leave_out_only_nullable_columns_without_any_default(
    store: Store, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Left out of a row, a column with a default (a constant, or the record's `{}`) gets it from
    SQLAlchemy, and a JSON column would get JSON `null` from the driver: neither is filled in as NULL.
    The API's manual episode opens its incident without `record`: it lands as `{}` either way."""
    from seclusion_hub.store import _driver_write

    dialect = sa.create_engine("sqlite://").dialect
    for name in ("incident", "episode", "delivery"):
        table = SQLModel.metadata.tables[name]
        write = _driver_write(table, dialect, None, False)
        assert write is not None
        expected = {
            c.name
            for c in table.columns
            if c.nullable
            and c.default is None
            and c.server_default is None
            and not isinstance(c.type, sa.JSON)
        }
        assert set(write.fills) == expected, name
    incident_write = _driver_write(SQLModel.metadata.tables["incident"], dialect, None, False)
    assert incident_write is not None and "record" not in incident_write.fills
    assert {"pupil_id", "ended_at", "closed_by"} <= set(incident_write.fills)
    episode_write = _driver_write(SQLModel.metadata.tables["episode"], dialect, None, False)
    assert episode_write is not None and not {"locked", "manual", "elapsed_s"} & set(episode_write.fills)
    # Each rule on its own, on a table made for it (a nullable JSON column without a default would
    # get JSON null from the driver where SQLAlchemy leaves SQL NULL).
    table = sa.Table(
        "rules",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("doc", sa.JSON, nullable=True),
        sa.Column("note", sa.String, nullable=True),
        sa.Column("count", sa.Integer, nullable=True, default=0),
        sa.Column("name", sa.String, nullable=False),
    )
    rules = _driver_write(table, dialect, None, False)
    assert rules is not None and set(rules.fills) == {"note"}
    assert rules.params([{"doc": None, "name": "n", "count": 1}]) == [("null", None, 1, "n")]
    assert rules.params([{"name": "n"}]) is None  # the rest: SQLAlchemy fills in its defaults

    other = _second_store(store, request, tmp_path)
    ep = episode(1, T0, T0 + dt.timedelta(minutes=5)).model_copy(update={"manual": True})
    row = {"id": ep.incident_id, "episode_id": ep.id, "site": ep.site, "room": ep.room, "status": "open"}
    batch = Batch(episodes={ep.id: ep}, incidents_opened=[row | {"opened_at": T0, "updated_at": T0}])
    try:
        for s in (store, other):
            s.write(batch, T0)
        assert _raw(store, "incident", "id") == _raw(other, "incident", "id")
        with store.session() as session:
            assert session.get(IncidentRecord, ep.incident_id).record == {}  # type: ignore[union-attr]
    finally:
        other.close()


def test_a_rooms_state_names_the_rows_of_its_episodes_unless_their_row_is_behind(store: Store) -> None:
    """The episodes a room holds are read back from the episode table when the row names them, and kept
    whole in the room's state when their row waits for its refresh (`stale_episodes`) or when the writer
    does not say (None): a restart finds every room as it was, either way."""
    latest = episode(1, T0, T0 + dt.timedelta(seconds=60))
    current = episode(2, T0 + dt.timedelta(seconds=70))
    key = ("test-school", "calm-1")
    state = RoomState(site="test-school", room="calm-1", episode=current, last_episode=latest)
    store.write(Batch(episodes={latest.id: latest, current.id: current}, rooms={key: state}), T0)
    store.write(Batch(rooms={key: state}, stale_episodes=frozenset()), T0)
    with store.session() as s:
        row = s.get(RoomSnapshot, key)
    assert row is not None and row.episode_id == current.id and row.last_episode_id == latest.id
    assert '"started_at"' not in row.state  # neither episode is copied into the state
    assert store.load_room_states()[key] == state

    # The open episode changes, and its row waits: the room carries it whole until the row is written.
    current.observer.append(ObserverMark(ts=T0 + dt.timedelta(seconds=75), present=True))
    store.write(Batch(rooms={key: state}, stale_episodes=frozenset({current.id})), T0)
    with store.session() as s:
        row = s.get(RoomSnapshot, key)
    assert row is not None and row.episode_id is None and row.last_episode_id == latest.id
    loaded = store.load_room_states()[key]
    assert loaded == state and loaded.episode is not None and len(loaded.episode.observer) == 1

    store.write(Batch(rooms={key: state}), T0)  # the writer does not know the table: both whole
    with store.session() as s:
        row = s.get(RoomSnapshot, key)
    assert row is not None and row.episode_id is None and row.last_episode_id is None
    assert store.load_room_states()[key] == state


def test_a_room_whose_episode_row_is_missing_starts_without_it_and_says_so(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ep = episode(1, T0)
    key = ("test-school", "calm-1")
    state = RoomState(site="test-school", room="calm-1", episode=ep)
    store.write(Batch(rooms={key: state}, stale_episodes=frozenset()), T0)  # named, never written
    loaded = store.load_room_states()[key]
    assert loaded.episode is None and loaded.room == "calm-1"
    assert f"its episode {ep.id} is missing from the episode table" in caplog.text


def test_migration_0004_keeps_the_episodes_of_a_stored_room_both_ways(tmp_path: Path) -> None:
    """Rows written before 0004 hold their episodes whole and load as they are; going back to 0003 puts
    the named episodes back into the state."""
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    migrate(engine, "0003")
    ep = episode(1, T0)
    state = RoomState(site="test-school", room="calm-1", episode=ep)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO room_state (site, room, state, updated_at)"
                " VALUES ('test-school', 'calm-1', :s, :t)"
            ),
            {"s": state.model_dump_json(), "t": "2026-11-23 10:00:00.000000"},
        )
    migrate(engine)
    store = Store(engine)
    key = ("test-school", "calm-1")
    assert store.load_room_states()[key] == state
    store.write(Batch(episodes={ep.id: ep}, rooms={key: state}, stale_episodes=frozenset()), T0)
    with store.session() as s:
        row = s.get(RoomSnapshot, key)
    assert row is not None and row.episode_id == ep.id and '"started_at"' not in row.state
    migrate(engine, "0003", down=True)
    with engine.connect() as conn:
        text = conn.execute(sa.text("SELECT state FROM room_state")).scalar_one()
    assert RoomState.model_validate_json(text) == state
    engine.dispose()


def _room_event(site: str, room: str, seq: int, ts: dt.datetime) -> dict[str, object]:
    device = f"{room}-door"
    return event_row(seq, ts) | {"site": site, "room": room, "device": device, "event_id": f"{device}:{seq}"}


def test_an_episodes_events_are_its_rooms_in_its_window_in_time_order(store: Store) -> None:
    """Three rooms (one of another site) publishing at once; the timeline of one room's episode holds
    exactly that room's events from the window's start to its end (or to now, while it is open)."""
    rows = []
    for i in range(60):
        ts = T0 + dt.timedelta(seconds=i)
        rows += [_room_event("test-school", room, i + 1, ts) for room in ("calm-1", "calm-2")]
        rows.append(_room_event("other-school", "calm-1", i + 1, ts))
    late = _room_event("test-school", "calm-1", 61, T0 + dt.timedelta(seconds=20, milliseconds=500))
    store.write(Batch(events=rows[:90]), T0)
    store.write(Batch(events=[*rows[90:], late]), T0)  # an event sent again after a reconnect: older ts

    start, end = T0 + dt.timedelta(seconds=10), T0 + dt.timedelta(seconds=30)
    found = store.episode_events("test-school", "calm-1", start, end)
    assert [(e.site, e.room) for e in found] == [("test-school", "calm-1")] * 22
    assert [e.seq for e in found] == [*range(11, 22), 61, *range(22, 32)]
    assert [e.ts for e in found] == sorted(e.ts for e in found)
    still_open = store.episode_events("test-school", "calm-1", T0 + dt.timedelta(seconds=55), None)
    assert [e.seq for e in still_open] == [56, 57, 58, 59, 60]


def test_an_episodes_events_are_read_through_the_time_index_not_a_scan(tmp_path: Path) -> None:
    """The plan of the statements `episode_events` runs (an ended episode's window, and an open one's),
    as SQLite makes it: a search of the time index, never a scan of the table."""
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    statements: list[tuple[str, tuple[object, ...]]] = []

    def seen(_c: object, _cur: object, sql: str, params: object, _ctx: object, _many: bool) -> None:
        if "FROM event" in sql:
            statements.append((sql, tuple(params) if isinstance(params, (tuple, list)) else ()))

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    store.episode_events("test-school", "calm-1", T0, T0 + dt.timedelta(minutes=5))
    store.episode_events("test-school", "calm-1", T0, None)
    sa.event.remove(store.engine, "before_cursor_execute", seen)
    assert len(statements) == 2
    plans = []
    with store.engine.connect() as conn:
        for sql, params in statements:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
            plans.append(" / ".join(str(row[-1]) for row in rows))
    store.close()
    for plan in plans:
        assert re.search(
            r"SEARCH (TABLE )?event USING INDEX ix_event_site_ts_room \(site=\? AND ts>", plan
        ), plan
        assert not re.search(r"SCAN (TABLE )?event\b", plan), plan


def _events_before(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, revision: str
) -> tuple[sa.Engine, sa.TableClause]:
    """A database of `kind` at `revision`, and its event table as it was then (today's Store writes
    columns added since), to write rows into before a migration."""
    url = (
        f"sqlite:///{tmp_path / 'hub.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("fresh_postgres_db")
    )
    engine = make_engine(url)
    migrate(engine, revision)
    times = ("ts", "received_at", "stored_at")
    then = sa.table("event", *(sa.column(n, UTCDateTime() if n in times else None) for n in event_row(0, T0)))
    return engine, then


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migration_0006_moves_the_events_index_both_ways_and_keeps_every_event(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    engine, then = _events_before(kind, request, tmp_path, "0005")
    with engine.begin() as conn:
        conn.execute(then.insert(), [event_row(n, T0 + dt.timedelta(seconds=n)) for n in (1, 2, 3)])

    def indexes() -> set[str]:
        return {ix["name"] for ix in sa.inspect(engine).get_indexes("event") if ix["name"]}

    assert "ix_event_room_ts" in indexes()
    with engine.begin() as conn:  # as a power cut would leave it: the new index built, the stamp not
        conn.execute(sa.text("CREATE INDEX ix_event_site_ts_room ON event (site, ts, room)"))
    migrate(engine, "0006")
    assert "ix_event_site_ts_room" in indexes() and "ix_event_room_ts" not in indexes()
    with engine.connect() as conn:
        query = sa.select(then.c.seq).where(then.c.site == "test-school", then.c.ts >= T0).order_by(then.c.ts)
        assert list(conn.execute(query).scalars()) == [1, 2, 3]
    migrate(engine, "0005", down=True)
    assert "ix_event_room_ts" in indexes() and "ix_event_site_ts_room" not in indexes()
    assert Store(engine).count(EventRecord) == 3
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migration_0009_adds_the_devices_own_time_beside_every_event_both_ways(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Events stored before 0009 keep their time in `ts` (read as they were, `device_ts` null); after
    it a reading timed otherwise than its device said keeps both; back down, every event is kept."""
    engine, then = _events_before(kind, request, tmp_path, "0008")
    with engine.begin() as conn:
        conn.execute(then.insert(), [event_row(1, T0)])
    migrate(engine)
    store = Store(engine)
    said = dt.datetime(1970, 1, 1, 0, 0, 2, tzinfo=dt.UTC)
    store.write(Batch(events=[event_row(2, T0 + dt.timedelta(seconds=2)) | {"device_ts": said}]), T0)
    got = store.episode_events("test-school", "calm-1", T0, None)
    assert [(e.seq, e.ts, e.device_ts) for e in got] == [
        (1, T0, None),
        (2, T0 + dt.timedelta(seconds=2), said),
    ]
    migrate(engine, "0008", down=True)
    assert "device_ts" not in {c["name"] for c in sa.inspect(engine).get_columns("event")}
    with engine.connect() as conn:  # `ts` is the device's own time again, as the code before 0009 reads it
        assert list(conn.execute(sa.select(then.c.ts).order_by(then.c.seq)).scalars()) == [T0, said]
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migration_0010_fills_each_incidents_classification_from_its_record(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Before 0010 nothing wrote `incident.classification` (the dashboards read it); a record's
    classification was only in its JSON. Upgrading fills the column from it; down, it is empty again."""
    url = (
        f"sqlite:///{tmp_path / 'hub.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("fresh_postgres_db")
    )
    engine = make_engine(url)
    migrate(engine, "0009")
    episode = sa.table(
        "episode",
        *(sa.column(n) for n in ("id", "site", "room", "number", "start_uncertain", "end_uncertain")),
        *(sa.column(n) for n in ("locked", "manual", "test", "incident_id", "data")),
        *(sa.column(n) for n in ("elapsed_s", "duration_s", "supervised_s", "unsupervised_s", "unknown_s")),
        *(sa.column(n) for n in ("longest_lapse_s",)),
        sa.column("started_at", UTCDateTime()),
        sa.column("saved_at", UTCDateTime()),
    )
    incident = sa.table(
        "incident",
        *(sa.column(n) for n in ("id", "episode_id", "site", "room", "status")),
        sa.column("record", sa.JSON()),
        sa.column("opened_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()),
    )
    records = {"i1": {"classification": "voluntary", "voluntary_reason": "Asked."}, "i2": {}, "i3": {"x": 1}}
    with engine.begin() as conn:
        for n, (incident_id, record) in enumerate(records.items(), start=1):
            conn.execute(
                episode.insert().values(
                    id=f"e{n}",
                    site="s",
                    room="r",
                    number=n,
                    start_uncertain=False,
                    end_uncertain=False,
                    locked=False,
                    manual=False,
                    test=False,
                    incident_id=incident_id,
                    data="{}",
                    elapsed_s=1.0,
                    duration_s=1.0,
                    supervised_s=1.0,
                    unsupervised_s=0.0,
                    unknown_s=0.0,
                    longest_lapse_s=0.0,
                    started_at=T0,
                    saved_at=T0,
                )
            )
            conn.execute(
                incident.insert().values(
                    id=incident_id,
                    episode_id=f"e{n}",
                    site="s",
                    room="r",
                    status="recorded",
                    record=record,
                    opened_at=T0,
                    updated_at=T0,
                )
            )
    migrate(engine)

    def column() -> dict[str, str | None]:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT id, classification FROM incident ORDER BY id")).all())

    assert column() == {"i1": "voluntary", "i2": None, "i3": None}
    migrate(engine, "0009", down=True)
    assert column() == {"i1": None, "i2": None, "i3": None}
    engine.dispose()


def test_rows_of_one_write_keep_their_own_columns_when_they_differ(
    store: Store, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A row may give a nullable column the row before it left out, or leave out one it gave: each row
    lands as given, NULL where it gave nothing, through the driver (SQLite) and through SQLAlchemy alone
    (PostgreSQL, or a store told not to use the driver), which builds one statement from a first row."""
    from seclusion_hub.models import RoomSnapshot, TimelineNote

    notes: list[dict[str, object]] = [
        {"site": "s", "room": "r", "at": T0, "kind": "first", "detail": {}},
        {"site": "s", "room": "r", "episode_id": "e-2", "at": T0, "kind": "second", "detail": {}},
        {"site": "s", "room": "r", "episode_id": "e-3", "at": T0, "kind": "third", "detail": {}},
        {"site": "s", "room": "r", "at": T0, "kind": "fourth", "detail": {}},
    ]
    rooms: list[dict[str, object]] = [
        {"site": "s", "room": "r1", "state": "{}", "updated_at": T0, "episode_id": "e-1"},
        {"site": "s", "room": "r2", "state": "{}", "updated_at": T0, "last_episode_id": "e-0"},
    ]
    plain = _second_store(store, request, tmp_path)
    try:
        for s in (store, plain):
            with s.engine.begin() as conn:
                s._insert(conn, TimelineNote, notes)
                s._upsert(conn, RoomSnapshot, rooms, ["site", "room"])
            with s.session() as session:
                stored = session.exec(sa.select(TimelineNote.kind, TimelineNote.episode_id)).all()  # type: ignore[call-overload]
                snaps = session.exec(
                    sa.select(RoomSnapshot.room, RoomSnapshot.episode_id, RoomSnapshot.last_episode_id)  # type: ignore[call-overload]
                ).all()
            assert sorted(tuple(r) for r in stored) == sorted(
                [("first", None), ("second", "e-2"), ("third", "e-3"), ("fourth", None)]
            )
            assert sorted(tuple(r) for r in snaps) == [("r1", "e-1", None), ("r2", None, "e-0")]
    finally:
        plain.close()


def test_a_database_error_never_carries_the_values_it_was_writing(store: Store) -> None:
    # Given a child on the register
    from seclusion_hub.models import Pupil

    def child() -> Pupil:
        return Pupil(
            id="p-1",
            site="test-school",
            first_name="Jamiesonia",
            last_name="Quillfeather",
            created_at=T0,
            updated_at=T0,
        )

    with store.session() as s:
        s.add(child())
        s.commit()
    # When the database refuses a write with those values (the same id again: any refusal, a locked
    # database or a full disk alike, is raised with its statement)
    with pytest.raises(sa.exc.IntegrityError) as refused, store.session() as s:
        s.add(child())
        s.commit()
    # Then the error's text, which the hub and its web server log, does not carry the child's name
    text = str(refused.value)
    assert "INSERT INTO pupil" in text
    assert "Jamiesonia" not in text and "Quillfeather" not in text


NEW_INDEXES = {
    "episode": {"ix_episode_site_started", "ix_episode_pupil_started"},
    "incident": {"ix_incident_site_opened", "ix_incident_site_status_opened"},
    "alert": {"ix_alert_site_raised"},
}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migration_0013_adds_the_history_read_indexes_both_ways(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """0013 adds the indexes of the reads that must not grow with the years kept, and drops the site's
    own index on the records (the list's index begins with it); down, the other way."""
    url = (
        f"sqlite:///{tmp_path / 'hub.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("fresh_postgres_db")
    )
    engine = make_engine(url)

    def indexes(table: str) -> set[str]:
        return {ix["name"] for ix in sa.inspect(engine).get_indexes(table) if ix["name"]}

    migrate(engine, "0012")
    assert all(not (names & indexes(t)) for t, names in NEW_INDEXES.items())
    assert "ix_incident_site" in indexes("incident")
    migrate(engine, "0013")
    assert all(names <= indexes(t) for t, names in NEW_INDEXES.items())
    assert "ix_incident_site" not in indexes("incident")
    migrate(engine, "0012", down=True)
    assert all(not (names & indexes(t)) for t, names in NEW_INDEXES.items())
    assert "ix_incident_site" in indexes("incident")
    engine.dispose()


def test_the_history_reads_return_the_rows_and_order_they_did(store: Store) -> None:
    """The reads rewritten for migration 0013's indexes (list pages and their cursors, the leaders'
    period and record list, a child's 48 hours, the overdue records and the next deadline) return what
    their definitions say, ties on the time broken by the id, on SQLite and PostgreSQL alike."""
    site, other, child = "test-school", "other-school", "20000000-0000-0000-0000-000000000001"
    hour = dt.timedelta(hours=1)
    episodes: list[EpisodeRecord] = []
    incidents: list[IncidentRecord] = []
    alerts: list[AlertRecord] = []
    for n in range(1, 25):
        start = T0 + (n // 3) * hour  # three episodes start at each moment: ties broken by the id
        end = None if n == 1 else start + dt.timedelta(minutes=10)  # n=1: open, days before the others
        start = start - dt.timedelta(days=5) if n == 1 else start
        where = other if n % 5 == 0 else site
        ep_id, inc_id = f"00000000-0000-0000-0000-{(37 * n) % 101:012d}", f"10000000-0000-0000-0000-{n:012d}"
        episodes.append(
            EpisodeRecord(
                id=ep_id,
                site=where,
                room="calm-1",
                number=n,
                started_at=start,
                ended_at=end,
                test=n == 7,
                incident_id=inc_id,
                pupil_id=child if n % 2 == 1 else None,
                data="{}",
                saved_at=start,
            )
        )
        due = start + (n % 4 - 1) * 4 * hour
        incidents.append(
            IncidentRecord(
                id=inc_id,
                episode_id=ep_id,
                site=where,
                room="calm-1",
                status=STATUSES[n % len(STATUSES)],
                opened_at=T0 + (n // 4) * hour,
                updated_at=start,
                record_due_at=due,
                recorded_at=start if n % 3 == 0 else None,
                parent_notice_due_at=due + hour,
                parent_copy_due_at=due + 2 * hour,
                parent_copy_withheld_at=start if n % 4 == 0 else None,
                authority_notice_due_at=due + 3 * hour,
            )
        )
        alerts += [
            AlertRecord(
                id=f"30000000-0000-0000-{a:04d}-{(11 * n) % 29:012d}",
                site=where,
                room="calm-1",
                episode_id=ep_id,
                kind="door_closed",
                severity="info",
                active=False,
                raised_at=start + (a // 2) * dt.timedelta(minutes=1),
                data="{}",
                updated_at=start,
            )
            for a in range(3)
        ]
    with store.session() as s:
        s.add_all(episodes)
        s.flush()
        s.add_all([*incidents, *alerts])
        s.commit()

    def newest(rows: list[Any], when: str) -> list[str]:
        return [r.id for r in sorted(rows, key=lambda r: (getattr(r, when), r.id), reverse=True)]

    mine = [e for e in episodes if e.site == site]
    assert every_page(lambda c: store.list_episodes(None, site, None, None, 4, c)) == newest(
        mine, "started_at"
    )
    records = [i for i in incidents if i.site == site]
    assert every_page(lambda c: store.list_incidents([site], site, None, 4, c)) == newest(
        records, "opened_at"
    )
    waiting = [i for i in records if i.status == "awaiting_record"]
    assert len(waiting) > 1
    assert every_page(lambda c: store.list_incidents(None, site, "awaiting_record", 1, c)) == newest(
        waiting, "opened_at"
    )
    ours = [a for a in alerts if a.site == site]
    assert every_page(lambda c: store.list_alerts([site], None, None, None, 5, c)) == newest(
        ours, "raised_at"
    )

    records_store = RecordStore(store.engine)
    start, end = T0 + hour, T0 + 6 * hour
    period = sorted((e for e in mine if start <= e.started_at < end), key=lambda e: (e.started_at, e.id))
    between = records_store.episodes_between([site], start, end)
    assert sorted((e.started_at, e.id) for e in between) == [(e.started_at, e.id) for e in period]
    # The leaders' record list: by the episode's start, then the record's id, newest first, both ways.
    started = {e.id: e.started_at for e in episodes}
    expected = sorted(
        ((started[i.episode_id], i.id) for i in records if start <= started[i.episode_id] < end), reverse=True
    )
    older: list[tuple[dt.datetime, str]] = []
    after: tuple[dt.datetime, str] | None = None
    while True:
        page = records_store.incidents_page(site, start=start, end=end, limit=2, after=after)
        if not page:
            break
        older += [(when, row.id) for row, when in page]
        after = older[-1]
    assert older == expected
    back = records_store.incidents_page(site, start=start, end=end, limit=2, before=expected[-1])
    assert [(when, row.id) for row, when in back] == expected[-3:-1]

    window_start, window_end = T0 + 2 * hour, T0 + 4 * hour + dt.timedelta(minutes=5)
    overlapping = [
        e.id
        for e in sorted(episodes, key=lambda e: (e.started_at, e.id))
        if e.pupil_id == child
        and not e.test
        and e.started_at < window_end
        and (e.ended_at is None or e.ended_at > window_start)
    ]
    assert any(e.ended_at is None for e in episodes if e.id in overlapping), "the long open one counts"
    found = [e.id for e in records_store.child_episodes(child, window_start, window_end)]
    assert sorted(found) == sorted(overlapping) and len(found) > 2

    now = T0 + 5 * hour
    steps = [report_due(i) for i in incidents]
    overdue = {
        r.incident_id
        for r in steps
        if not r.closed and any(at is not None and at <= now and not r.done[k] for k, at in r.due.items())
    }
    assert overdue and {i.id for i in records_store.overdue(now)} == overdue
    coming = [
        at
        for i in incidents
        if i.status != "closed"
        for at, done in (
            (i.record_due_at, i.recorded_at is None),
            (i.parent_notice_due_at, i.parent_notified_at is None),
            (i.parent_copy_due_at, i.parent_copy_sent_at is None and i.parent_copy_withheld_at is None),
            (i.authority_notice_due_at, i.authority_notified_at is None),
        )
        if at is not None and at > now and done
    ]
    assert records_store.next_deadline(now) == min(coming)
