"""The hub after a school year (soak and growth review): what it reads must not grow with its history.

A year of a school of 20 rooms is about 11,000 episodes, as many incident records, 30,000 alerts and
100,000 events and timeline notes, never deleted. The reads below run often (the ingest thread's look
at the records every minute, every view of a record, every page of a list, the leaders' pages for a
month): each must find its rows through an index bounded by what it asks for, not pass over the whole
history. Checked with SQLite's `EXPLAIN QUERY PLAN` of the statements the code actually runs (captured
from the engine), on a database filled with a year's rows; without `ANALYZE` (the hub never runs it)
SQLite's plan does not depend on the data, so the plan is the one a school gets.

A plan line that is a full pass:
- `SCAN <table>` (with or without an index: a walk of the whole table or index);
- `SEARCH <table>` without `USING` (SQLite's words for a walk of the table for min()/max());
- an index search on a time bounded on one side only (every row before, or after, a moment: the
  whole history), or on `site=?` alone (one school: every row) but for a page streamed in its order;
- for a page of a list (`LIMIT`), `USE TEMP B-TREE FOR ORDER BY`: every matching row read and sorted to
  return the newest 100 (the keyset cursor does not help: each later page does it again).
"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from seclusion_hub.auth import create_token
from tests.hub.test_api import T0
from tests.hub.test_records import Records
from tests.support.hub import SITE, two_device_room

ROOMS = ["calm-1", *[f"room-{i}" for i in range(2, 21)]]
BIG = ("episode", "incident", "alert", "event", "timeline_note", "segment", "delivery", "audit")
YEAR_END = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)  # the year's rows end before T0 (23 November)


def _fmt(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")  # as UTCDateTime stores it in SQLite


def _fill(engine: sa.Engine, school_days: int = 190, per_room_a_day: int = 3) -> int:
    """A school year's rows, copied from the rows one real episode left (so every column is as the hub
    writes it): each room `per_room_a_day` ten-minute episodes a school day, each with its incident
    (closed but for the last fortnight's), 3 alerts, 8 events and 8 timeline notes. Some children."""
    rnd = random.Random(7)  # noqa: S311 (a fixed year's data, not a secret)
    pupils = [str(uuid.UUID(int=3 * 10**12 + p)) for p in range(60)]
    with engine.begin() as c:
        template = {
            t: dict(c.exec_driver_sql(f"SELECT * FROM {t} LIMIT 1").mappings().one())  # noqa: S608
            for t in ("episode", "incident", "alert", "timeline_note", "event", "segment")
        }
        rows: dict[str, list[dict[str, Any]]] = {t: [] for t in template}
        n = 0
        day = YEAR_END - dt.timedelta(days=school_days * 7 // 5)
        while day < YEAR_END:
            day += dt.timedelta(days=1)
            if day.weekday() >= 5:
                continue
            recent = YEAR_END - day < dt.timedelta(days=14)
            for room in ROOMS:
                for k in range(per_room_a_day):
                    n += 1
                    start = day + dt.timedelta(hours=9 + 2 * k, minutes=rnd.randint(0, 59))
                    end = start + dt.timedelta(minutes=10)
                    ep_id, inc_id = str(uuid.UUID(int=n)), str(uuid.UUID(int=10**12 + n))
                    pupil = rnd.choice(pupils)
                    rows["episode"].append(
                        {
                            **template["episode"],
                            "id": ep_id,
                            "room": room,
                            "number": n,
                            "started_at": _fmt(start),
                            "ended_at": _fmt(end),
                            "incident_id": inc_id,
                            "pupil_id": pupil,
                            "saved_at": _fmt(end),
                        }
                    )
                    rows["segment"].append(
                        {**template["segment"], "episode_id": ep_id, "start": _fmt(start), "end": _fmt(end)}
                    )
                    rows["incident"].append(
                        {
                            **template["incident"],
                            "id": inc_id,
                            "episode_id": ep_id,
                            "room": room,
                            "pupil_id": pupil,
                            "status": rnd.choice(["awaiting_record", "recorded", "closed"])
                            if recent
                            else "closed",
                            "opened_at": _fmt(start),
                            "updated_at": _fmt(end),
                            "ended_at": _fmt(end),
                        }
                    )
                    for a in range(3):
                        rows["alert"].append(
                            {
                                **template["alert"],
                                "id": str(uuid.UUID(int=2 * 10**12 + 3 * n + a)),
                                "room": room,
                                "episode_id": ep_id,
                                "active": False,
                                "raised_at": _fmt(start + dt.timedelta(minutes=a)),
                                "resolved_at": _fmt(end),
                                "updated_at": _fmt(end),
                            }
                        )
                    for j in range(8):
                        at = _fmt(start + dt.timedelta(seconds=70 * j))
                        rows["timeline_note"].append(
                            {
                                **template["timeline_note"],
                                "id": None,
                                "room": room,
                                "episode_id": ep_id,
                                "at": at,
                            }
                        )
                        rows["event"].append(
                            {
                                **template["event"],
                                "id": None,
                                "room": room,
                                "device": f"{room}-door",
                                "epoch": 1,
                                "seq": 10 * n + j,
                                "event_id": f"{room}-door:1:{10 * n + j}",
                                "ts": at,
                                "received_at": at,
                                "stored_at": at,
                            }
                        )
        for table, found in rows.items():
            names = list(found[0])
            c.exec_driver_sql(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",  # noqa: S608
                [tuple(r[k] for k in names) for r in found],
            )
    return n


class Year(Records):
    """The hub's API over a school year's database: one real episode in calm-1 (`real`, a child's),
    then the year's rows before it. `selects()` captures the SELECTs the code runs meanwhile."""

    real: dict[str, Any]
    episodes: int

    def selects(self) -> _Captured:
        return _Captured(self.store.engine)


class _Captured:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.statements: list[tuple[str, Any]] = []

    def _seen(self, _conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            self.statements.append((statement, params))

    def __enter__(self) -> _Captured:
        sa.event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)

    def plans(self) -> list[tuple[str, list[str]]]:
        """Each captured statement (shortened) with its plan's lines."""
        out: list[tuple[str, list[str]]] = []
        with self.engine.connect() as c:
            for statement, params in self.statements:
                lines = [
                    str(r[3]) for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
                ]
                out.append((" ".join(statement.split()), lines))
        return out


# An index search bounded by a single one-sided range: every row before (or after) a moment.
_ONE_SIDED = re.compile(r"USING (?:COVERING )?INDEX \w+ \(\w+[<>]\?\)$")
# An index search on the site alone: on a one-school hub, every row of the table.
_SITE_ONLY = re.compile(r"USING (?:COVERING )?INDEX \w+ \(site=\?\)$")
_FULL_SORT = "USE TEMP B-TREE FOR ORDER BY"


def whole_passes(plans: list[tuple[str, list[str]]], *, pages: bool = False) -> list[str]:
    """The plan lines that pass over a big table's whole history (module docstring). A search on the
    site alone is one, unless it streams a LIMITed page in the order asked (no sort of all it found);
    with `pages`, a LIMITed query that sorts every row it matched is one too."""
    found: list[str] = []
    for statement, lines in plans:
        tables = {t for t in BIG if re.search(rf"\bFROM {t}\b|\bJOIN {t}\b", statement)}
        if not tables:
            continue
        streams = " LIMIT " in statement and _FULL_SORT not in lines
        for line in lines:
            words = line.split()
            table = words[1] if len(words) > 1 else ""
            whole = table in tables and (
                words[0] == "SCAN"
                or (words[0] == "SEARCH" and "USING" not in line)
                or bool(_ONE_SIDED.search(line))
                or (bool(_SITE_ONLY.search(line)) and not streams)
            )
            if whole or (pages and " LIMIT " in statement and line == _FULL_SORT):
                found.append(f"{line}   <- {statement[:60]}...{statement[-150:]}")
    return found


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Year]:
    tmp = tmp_path_factory.mktemp("year")
    y = Year(tmp, f"sqlite:///{tmp / 'hub.db'}", rooms=[two_device_room(r) for r in ROOMS])
    y.real = y.ended_episode()  # calm-1, 23 November 2026 10:00
    pupil = str(uuid.UUID(int=3 * 10**12))
    with y.store.engine.begin() as c:  # the real episode is a child's, as most are
        c.exec_driver_sql("UPDATE episode SET pupil_id = ? WHERE id = ?", (pupil, y.real["id"]))
        c.exec_driver_sql("UPDATE incident SET pupil_id = ? WHERE id = ?", (pupil, y.real["incident_id"]))
    y.episodes = _fill(y.store.engine)
    yield y
    y.service.stop()
    y.client.close()
    y.store.close()


def test_the_year_is_filled(year: Year) -> None:
    with year.store.engine.connect() as c:
        counts = {t: int(c.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one()) for t in BIG[:5]}  # noqa: S608
    assert counts["episode"] == year.episodes + 1 > 10_000, counts
    assert counts["event"] > 80_000 and counts["alert"] > 30_000, counts


def test_the_ingest_threads_look_at_overdue_records_passes_over_no_closed_record(year: Year) -> None:
    """The ingest thread looks for overdue records every `report_check_s` (60 s) and at each record
    deadline (service.report_check): `RecordStore.overdue` and `RecordStore.next_deadline` filter on
    `status != 'closed'`, which no index serves, so each look walks every incident record the school has
    ever had, five times. Records are never deleted: the work in the ingest thread (which holds every
    room's messages meanwhile) grows every school day, for ever. Only the few records still open matter."""
    with year.selects() as seen:
        year.service.process([year.service.report_check()])
    assert not whole_passes(seen.plans()), "\n".join(whole_passes(seen.plans()))


def test_viewing_a_childs_record_reads_only_the_48_hours_before_its_episode(year: Year) -> None:
    """A record's facts give the child's time in seclusion in the 48 hours before the episode
    (record_facts.facts_now -> RecordStore.child_episodes). The query searches `started_at < end` only
    (the `ended_at > start` bound is no index's): every episode of the school before this one is read to
    find the child's last two days. Every view of a record (the records page, GET /api/incidents/{id},
    the parents' copy) reads the school's whole history."""
    staff = year.token("staff", SITE)
    with year.selects() as seen:
        response = year.client.get(f"/api/incidents/{year.real['incident_id']}", headers=staff)
    assert response.status_code == 200
    plans = [(s, p) for s, p in seen.plans() if "FROM episode" in s]
    assert plans, "the record's facts read the episode table"
    assert not whole_passes(plans), "\n".join(whole_passes(plans))


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/episodes", {"site": SITE}),
        ("/api/incidents", {"site": SITE}),
        ("/api/incidents", {"site": SITE, "status": "awaiting_record"}),
        ("/api/alerts", {"state": "all"}),
    ],
    ids=["episodes", "incidents", "incidents-awaiting-record", "alerts-all"],
)
def test_a_page_of_a_list_reads_its_page_not_the_whole_history(
    year: Year, path: str, params: dict[str, str]
) -> None:
    """Contract 6's lists are keyset-paginated newest first, but no index serves the order they are
    read in for a school: /api/episodes and /api/alerts search `site=?` (every row of a one-school hub)
    and sort them all in a temporary B-tree to return 100; /api/incidents has no index on `opened_at`
    at all, and with `status=awaiting_record` still takes the site's index, reading every closed record
    to find the few waiting. Every page, the first and each one after (the cursor only filters), reads
    and sorts the whole year, `data` JSON included."""
    staff = year.token("staff", SITE)
    with year.selects() as seen:
        first = year.client.get(path, params={**params, "limit": 20}, headers=staff)
        assert first.status_code == 200 and first.json()["items"], first.text
        if first.json()["next"]:
            later = {**params, "limit": 20, "cursor": first.json()["next"]}
            assert year.client.get(path, params=later, headers=staff).status_code == 200
    plans = [(s, p) for s, p in seen.plans() if " LIMIT " in s]
    assert not whole_passes(plans, pages=True), "\n".join(whole_passes(plans, pages=True))


def _leader_session(year: Year) -> None:
    token = create_token(year.store, "head", "leader", [SITE], True, T0)
    assert year.client.post("/login", data={"token": token}).status_code == 200


@pytest.mark.parametrize("page", ["/review", "/review/fairness", "/review/incidents"])
def test_the_leaders_pages_for_a_month_read_that_month_not_every_year_before(year: Year, page: str) -> None:
    """The leaders' pages for one month (October) read the episodes of the period
    (RecordStore.episodes_between: `started_at` in [from, to) AND site) and the incident list
    (RecordStore.incident_page: by the episode's start, 50 a page). SQLite takes the `site` prefix of
    ix_episode_room_started / ix_incident_site rather than the period: every episode (or record) the
    school ever had is read, then filtered to the month. The governors' termly and yearly look at the
    same pages gets slower with every year of history kept."""
    _leader_session(year)
    with year.selects() as seen:
        response = year.client.get(page, params={"site": SITE, "from": "2026-10-01", "to": "2026-10-31"})
    assert response.status_code == 200
    plans = [(s, p) for s, p in seen.plans() if "FROM episode" in s or "FROM incident" in s]
    assert plans
    assert not whole_passes(plans, pages=True), "\n".join(whole_passes(plans, pages=True))
