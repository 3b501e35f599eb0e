"""Review of 6ab749f, f073883, c89e024: the rewritten reads against the queries they replaced (926ebd8),
on SQLite and PostgreSQL, with ties on the time, open episodes, every status, two sites. No fault was
found: these pass at HEAD and guard the equivalence."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from seclusion_hub.core.incident import STATUSES
from seclusion_hub.models import EpisodeRecord, IncidentRecord
from seclusion_hub.record_store import RecordStore, _overdue
from seclusion_hub.store import Store
from tests.hub.test_store import every_page

T0 = dt.datetime(2026, 10, 25, 0, 30, 0, 123000, tzinfo=dt.UTC)
SITES = ("test-school", "other-school")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (
        f"sqlite:///{tmp_path / 'hub.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("fresh_postgres_db")
    )
    s = Store.open(url)
    yield s
    s.close()


def _fill(store: Store) -> None:
    rng = random.Random(13)  # noqa: S311 - the same rows every run, not a secret
    hour = dt.timedelta(hours=1)
    eps, incs = [], []
    for n in range(120):
        start = T0 + rng.randrange(12) * hour  # many ties on the start
        end = None if rng.random() < 0.2 else start + dt.timedelta(minutes=10)
        site = rng.choice(SITES)
        ep_id, inc_id = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(128):032x}"
        eps.append(
            EpisodeRecord(
                id=ep_id,
                site=site,
                room=rng.choice(["calm-1", "calm-2"]),
                number=n,
                started_at=start,
                ended_at=end,
                test=rng.random() < 0.1,
                manual=rng.random() < 0.1,
                incident_id=inc_id,
                data="{}",
                saved_at=start,
            )
        )
        due = start + rng.randrange(-8, 8) * hour
        incs.append(
            IncidentRecord(
                id=inc_id,
                episode_id=ep_id,
                site=site,
                room=eps[-1].room,
                status=rng.choice(STATUSES),
                opened_at=T0 + rng.randrange(12) * hour,
                updated_at=start,
                record_due_at=due,
                recorded_at=start if rng.random() < 0.3 else None,
                parent_notice_due_at=due + hour,
                parent_copy_due_at=due + 2 * hour,
                authority_notice_due_at=due + 3 * hour,
            )
        )
    with store.session() as s:
        s.add_all(eps)
        s.flush()
        s.add_all(incs)
        s.commit()


def _old_page(store: Store, site: str, **kw: Any) -> list[tuple[str, dt.datetime]]:
    """incidents_page as at 926ebd8 (from the record, `status != 'closed'`, no `<=` bound)."""
    i, e = IncidentRecord, EpisodeRecord
    q = select(i, e.started_at).join(e, col(e.id) == col(i.episode_id)).where(i.site == site)
    if kw.get("status") is not None:
        q = q.where(i.status == kw["status"])
    if kw.get("room") is not None:
        q = q.where(i.room == kw["room"])
    if kw.get("start") is not None:
        q = q.where(col(e.started_at) >= kw["start"])
    if kw.get("end") is not None:
        q = q.where(col(e.started_at) < kw["end"])
    if kw.get("overdue_at") is not None:
        q = q.where(col(i.status) != "closed", _overdue(kw["overdue_at"]))
    when, key = col(e.started_at), col(i.id)
    after = kw.get("after")
    if after is not None:
        q = q.where(sa.or_(when < after[0], sa.and_(when == after[0], key < after[1])))
    with store.session() as s:
        return [(r.id, w) for r, w in s.exec(q.order_by(when.desc(), key.desc()).limit(kw["limit"])).all()]


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"status": "awaiting_record"},
        {"room": "calm-2"},
        {"start": T0 + dt.timedelta(hours=3), "end": T0 + dt.timedelta(hours=9)},
        {"overdue_at": T0 + dt.timedelta(hours=6)},
    ],
)
def test_leaders_record_list_pages_as_before(store: Store, filters: dict[str, Any]) -> None:
    _fill(store)
    rs = RecordStore(store.engine)
    for site in SITES:
        old_all = _old_page(store, site, limit=10_000, **filters)
        new, after = [], None
        while True:
            page = rs.incidents_page(site, limit=3, after=after, **filters)
            if not page:
                break
            new += [(r.id, w) for r, w in page]
            after = (new[-1][1], new[-1][0])
        assert new == old_all
        # Newer pages (`before`), from the oldest back to the top.
        back: list[Any] = []
        before = (old_all[-1][1], old_all[-1][0]) if old_all else None
        while before is not None:
            page = rs.incidents_page(site, limit=3, before=before, **filters)
            if not page:
                break
            back = [(r.id, w) for r, w in page] + back
            before = (page[0][1], page[0][0].id)
        assert back + old_all[-1:] == old_all


def test_overdue_and_next_deadline_as_before(store: Store) -> None:
    _fill(store)
    rs = RecordStore(store.engine)
    i = IncidentRecord
    for h in range(-10, 24, 3):
        now = T0 + dt.timedelta(hours=h)
        with store.session() as s:
            old = sorted(
                r.id for r in s.exec(select(i).where(col(i.status) != "closed", _overdue(now))).all()
            )
        assert sorted(r.id for r in rs.overdue(now)) == old


def test_api_lists_page_through_every_row_once(store: Store) -> None:
    _fill(store)

    for is_open in (None, True, False):
        ids = every_page(lambda c, is_open=is_open: store.list_episodes(None, SITES[0], None, is_open, 7, c))
        assert len(ids) == len(set(ids))
        with store.session() as s:
            q = select(EpisodeRecord).where(EpisodeRecord.site == SITES[0])
            if is_open is not None:
                q = q.where(
                    col(EpisodeRecord.ended_at).is_(None)
                    if is_open
                    else col(EpisodeRecord.ended_at).is_not(None)
                )
            rows = s.exec(q).all()
        assert ids == [r.id for r in sorted(rows, key=lambda r: (r.started_at, r.id), reverse=True)]
    for status in (None, *STATUSES):
        ids = every_page(lambda c, status=status: store.list_incidents(None, SITES[1], status, 4, c))
        with store.session() as s:
            iq = select(IncidentRecord).where(IncidentRecord.site == SITES[1])
            if status is not None:
                iq = iq.where(IncidentRecord.status == status)
            records = s.exec(iq).all()
        assert ids == [r.id for r in sorted(records, key=lambda r: (r.opened_at, r.id), reverse=True)]


def test_next_deadline_as_before(store: Store) -> None:
    _fill(store)
    rs = RecordStore(store.engine)
    i = IncidentRecord
    for h in range(-10, 24, 3):
        now = T0 + dt.timedelta(hours=h)
        with store.session() as s:
            old = s.exec(
                select(sa.func.min(i.record_due_at)).where(
                    col(i.status) != "closed", col(i.record_due_at) > now, col(i.recorded_at).is_(None)
                )
            ).one()
            new = s.exec(
                select(sa.func.min(i.record_due_at)).where(
                    col(i.status).in_([x for x in STATUSES if x != "closed"]),
                    col(i.record_due_at) > now,
                    col(i.recorded_at).is_(None),
                )
            ).one()
        assert old == new
        got = rs.next_deadline(now)
        assert old is None or (got is not None and got <= old)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migration_0013_with_rows_up_down_up(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from seclusion_hub.store import make_engine, migrate

    url = (
        f"sqlite:///{tmp_path / 'hub.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("fresh_postgres_db")
    )
    engine = make_engine(url)
    migrate(engine, "0012")
    from sqlmodel import Session

    with Session(engine) as s:
        s.add_all(
            [
                EpisodeRecord(
                    id=f"e{n}",
                    site="s",
                    room="r",
                    number=n,
                    started_at=T0,
                    incident_id=f"i{n}",
                    data="{}",
                    saved_at=T0,
                )
                for n in range(50)
            ]
        )
        s.flush()
        s.add_all(
            [
                IncidentRecord(
                    id=f"i{n}",
                    episode_id=f"e{n}",
                    site="s",
                    room="r",
                    status="open",
                    opened_at=T0,
                    updated_at=T0,
                )
                for n in range(50)
            ]
        )
        s.commit()

    def indexes(table: str) -> dict[str, list[str]]:
        return {
            str(ix["name"]): [str(c) for c in ix["column_names"]]
            for ix in sa.inspect(engine).get_indexes(table)
        }

    before = {t: indexes(t) for t in ("episode", "incident", "alert")}
    migrate(engine, "0013")
    migrate(engine, "0012", down=True)
    assert {t: indexes(t) for t in ("episode", "incident", "alert")} == before
    migrate(engine, "0013")
    engine.dispose()
