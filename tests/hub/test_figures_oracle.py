"""The leaders' figures against an oracle (a second review of the figures): a small, obviously-correct
computation of what docs/review.md says each figure counts, from a hand-built table of awkward episodes
put into the hub as the hub stores them, compared with every figure the summary, the disproportionality
API and the CSV give. The comparisons that hold are kept (they pass); each fault found is a test of its
own that fails until it is fixed."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from seclusion_hub.core.episode import Episode, ObserverMark, Segment
from seclusion_hub.models import IncidentAddendum, IncidentRecord, IncidentStaff
from seclusion_hub.store import Batch
from tests.hub.test_cross_surface import _panel
from tests.hub.test_review_api import Review

SITE = "test-school"
UTC = dt.UTC
LONDON = ZoneInfo("Europe/London")
TIMETABLE = [
    {"name": "Period 1", "start": "09:00", "end": "10:30"},
    {"name": "Break", "start": "10:30", "end": "10:45"},
    {"name": "Night", "start": "21:00", "end": "07:00"},  # runs past midnight
]
GROUPS = {"Teaching assistants": ["Ms Ade", "Mr Bell"], "Teachers": ["Mr Bell", "Mrs Cole"]}
# The autumn half-term as the school's clocks have it: 1 September to 30 November (both included).
FROM = dt.datetime(2026, 9, 1, tzinfo=LONDON)
TO = dt.datetime(2026, 12, 1, tzinfo=LONDON)
NOW = dt.datetime(2026, 12, 1, 12, tzinfo=UTC)
PERIOD = {"site": SITE, "from": FROM.isoformat(), "to": TO.isoformat()}


def _local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=LONDON).astimezone(UTC)


@dataclass
class Case:
    """One episode of the table, with what the oracle needs to know of it."""

    what: str
    start: dt.datetime
    minutes: float | None  # None: still open at NOW
    child: str | None = None  # a key of the register below, "ghost" (not on it) or None
    room: str = "calm-1"
    test: bool = False
    record: str = "none"  # none | draft_voluntary | voluntary | no_child_recorded | no_child_reviewed
    #                       | seclusion | voluntary_corrected (closed, an addendum on classification)
    staff: tuple[str, ...] = ()


REGISTER = {  # key: (sen, date of birth)
    "ann": ("sen_support", dt.date(2015, 9, 1)),  # 11 on 1 September 2026 (born that day)
    "ben": ("sen_support", dt.date(2016, 3, 3)),
    "cat": ("none", dt.date(2012, 9, 2)),  # 13 on 1 September (a day short of 14)
    "dan": ("none", None),
    "eve": ("ehcp", dt.date(2019, 1, 1)),
    "fay": ("unknown", dt.date(2010, 5, 5)),
    "gus": ("none", dt.date(2014, 1, 1)),  # never secluded
}

CASES = [
    Case(
        "the first moment of the period (local midnight in summer time)",
        _local(2026, 9, 1),
        12,
        "ann",
        staff=("Ms Ade",),
    ),
    Case("a minute before the period: out (its start decides)", _local(2026, 8, 31, 23, 59), 30, "ann"),
    Case("started before the period, ended inside it: out", _local(2026, 8, 31, 23, 50), 90, "cat"),
    Case("exactly 5 minutes: 5-10", _local(2026, 9, 2, 10, 29, 59), 5, "ann", staff=("Mr Bell",)),
    Case(
        "exactly 10 minutes at the break's first minute",
        _local(2026, 9, 3, 10, 30),
        10,
        "ben",
        room="calm-2",
        staff=("Mr Bell", "Mrs Cole"),
    ),
    Case("crossing midnight, in the night period", _local(2026, 9, 4, 23, 50), 25, "cat", staff=("Dr Dee",)),
    Case("a test in maintenance: never counted", _local(2026, 9, 5, 9, 0), 40, "cat", test=True),
    Case(
        "a draft that says voluntary moves nothing",
        _local(2026, 9, 7, 9, 15),
        3,
        "dan",
        record="draft_voluntary",
    ),
    Case(
        "a completed voluntary record: counted apart", _local(2026, 9, 8, 9, 15), 7, "dan", record="voluntary"
    ),
    Case(
        "no child, recorded not reviewed: still seclusion",
        _local(2026, 9, 9, 11, 0),
        2,
        None,
        record="no_child_recorded",
    ),
    Case(
        "no child, reviewed: counted apart", _local(2026, 9, 10, 11, 0), 4, None, record="no_child_reviewed"
    ),
    Case(
        "voluntary then an addendum on its classification: seclusion again",
        _local(2026, 9, 11, 9, 5),
        20,
        "eve",
        record="voluntary_corrected",
    ),
    Case("completed as seclusion", _local(2026, 9, 14, 14, 0), 31, "fay", record="seclusion"),
    Case("a child not on the register", _local(2026, 9, 15, 8, 0), 6, "ghost"),
    Case(
        "01:30 BST on the Sunday the clocks go back", dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC), 15, "ann"
    ),
    Case("01:30 GMT, the same hour again", dt.datetime(2026, 10, 25, 1, 30, tzinfo=UTC), 15, "ben"),
    Case(
        "Monday 00:30 GMT after the change (Sunday in summer time's UTC week)",
        _local(2026, 10, 26, 0, 30),
        8,
        "eve",
    ),
    Case(
        "Sunday 23:30 BST before the change: Monday 23:30 GMT is not the same week",
        _local(2026, 10, 18, 23, 30),
        9,
        "eve",
    ),
    Case("still open at now", _local(2026, 11, 30, 20, 0), None, "fay"),
    Case("the last moment before the period's end", _local(2026, 11, 30, 23, 59), 2, "cat"),
    Case("the period's end: out", _local(2026, 12, 1, 0, 0), 2, "cat"),
]


def _store(r: Review, case: Case, pupils: dict[str, str]) -> str:
    """The case as the hub stores an episode and opens its incident; its incident's id."""
    child = pupils.get(case.child) if case.child in pupils else (str(uuid.uuid4()) if case.child else None)
    if case.minutes is not None:
        incident = r.episode(child, case.start, case.minutes, room=case.room, test=case.test)
    else:
        ident, incident = str(uuid.uuid4()), str(uuid.uuid4())
        ep = Episode(
            id=ident,
            site=SITE,
            room=case.room,
            number=1,
            started_at=case.start,
            segments=[Segment(start=case.start)],
            incident_id=incident,
            pupil_id=child,
            observer=[ObserverMark(ts=case.start, present=True)],
        )
        opened = {"id": incident, "episode_id": ident, "site": SITE, "room": case.room, "status": "open"}
        r.store.write(
            Batch(
                episodes={ident: ep},
                incidents_opened=[{**opened, "opened_at": case.start, "updated_at": case.start}],
            ),
            case.start,
        )
    status, classification = {
        "none": (None, None),
        "draft_voluntary": (None, "voluntary"),
        "voluntary": ("recorded", "voluntary"),
        "no_child_recorded": ("recorded", "no_child"),
        "no_child_reviewed": ("reviewed", "no_child"),
        "seclusion": ("parent_notified", "seclusion"),
        "voluntary_corrected": ("closed", "voluntary"),
    }[case.record]
    with r.store.session() as s:
        row = s.get(IncidentRecord, incident)
        assert row is not None
        if classification is not None:
            row.record = {"classification": classification}
            row.classification = classification  # as the hub writes it beside the record
        if status is not None:
            row.status = status
        s.add(row)
        s.add_all(
            IncidentStaff(incident_id=incident, idx=i, name=n, role="involved")
            for i, n in enumerate(case.staff)
        )
        if case.record == "voluntary_corrected":
            s.add(
                IncidentAddendum(
                    incident_id=incident, at=NOW, author="x", field="classification", text="It was seclusion."
                )
            )
        s.commit()
    return incident


@pytest.fixture
def table(tmp_path: Path) -> Iterator[tuple[Review, dict[str, str]]]:
    r = Review(
        tmp_path,
        f"sqlite:///{tmp_path / 'hub.db'}",
        name="Hillside",
        timetable=TIMETABLE,
        staff_groups=GROUPS,
    )
    pupils = {key: r.pupil(key, sen, born) for key, (sen, born) in REGISTER.items()}
    for case in CASES:
        _store(r, case, pupils)
    r.clock.set(NOW)
    yield r, pupils
    r.client.close()
    r.store.close()


# -- the oracle: what docs/review.md says each figure counts, written out plainly -----------------------


def _class(case: Case) -> str:
    if case.test:
        return "test"
    if case.record == "voluntary":
        return "voluntary"
    if case.record == "no_child_reviewed":
        return "no_child"
    return "seclusion"


def _in_period(case: Case) -> bool:
    return FROM <= case.start < TO


def _elapsed(case: Case) -> float:
    return (case.minutes * 60) if case.minutes is not None else (NOW - case.start).total_seconds()


def _seclusion() -> list[Case]:
    return [c for c in CASES if _in_period(c) and _class(c) == "seclusion"]


def _period_of(t: dt.datetime) -> str:
    m = t.hour * 60 + t.minute
    for p in TIMETABLE:
        a = int(p["start"][:2]) * 60 + int(p["start"][3:])
        b = int(p["end"][:2]) * 60 + int(p["end"][3:])
        if (a <= m < b) if a <= b else (m >= a or m < b):
            return p["name"]
    return "outside the timetable"


def _bin(seconds: float) -> str:
    for name, top in (("0-5 min", 300), ("5-10 min", 600), ("10-20 min", 1200), ("20-30 min", 1800)):
        if seconds < top:
            return name
    return "30+ min"


def _get(r: Review, path: str, **extra: str) -> Any:
    got = r.client.get(path, params={**PERIOD, **extra}, headers=r.leader())
    assert got.status_code == 200, got.text
    return got.json() if path != "/api/reports/episodes.csv" else got.text


def test_the_summary_gives_what_the_oracle_counts(table: tuple[Review, dict[str, str]]) -> None:
    r, _ = table
    got = _get(r, "/api/reports/summary", suppress="false", bucket="week")
    sec = _seclusion()
    local = [c.start.astimezone(LONDON) for c in sec]
    assert got["episodes"] == len(sec)
    assert got["children"] == len({c.child for c in sec if c.child})
    assert got["episodes_without_child"] == sum(1 for c in sec if c.child is None)
    hours = Counter(t.hour for t in local)
    assert {int(h): n for h, n in got["by_hour"].items()} == {h: hours[h] for h in range(24)}
    days = Counter(("mon", "tue", "wed", "thu", "fri", "sat", "sun")[t.weekday()] for t in local)
    assert got["by_weekday"] == {d: days[d] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    periods = Counter(_period_of(t) for t in local)
    names = [p["name"] for p in TIMETABLE] + ["outside the timetable"]
    assert got["by_period"] == {n: periods[n] for n in names}
    bins = Counter(_bin(_elapsed(c)) for c in sec)
    assert got["durations"] == {
        n: bins[n] for n in ("0-5 min", "5-10 min", "10-20 min", "20-30 min", "30+ min")
    }
    rooms = Counter({"calm-1": 0, "calm-2": 0})
    rooms.update(c.room for c in sec)
    assert got["by_room"] == dict(rooms)
    staff = Counter[str]()
    for c in sec:
        staff.update(set(c.staff) or {"no staff named"})
    assert got["by_staff"] == dict(staff)
    groups = Counter(dict.fromkeys(GROUPS, 0))
    for c in sec:
        named = {g for n in c.staff for g in ([k for k, v in GROUPS.items() if n in v] or ["not in a group"])}
        groups.update(named or {"no staff named"})
    assert got["by_staff_group"] == dict(groups)
    assert got["minutes"]["total"] == math.ceil(sum(_elapsed(c) for c in sec) / 6 - 1e-9) / 10
    apart = [c for c in CASES if _in_period(c)]
    assert got["classes"] == {
        "seclusion": len(sec),
        "voluntary": sum(1 for c in apart if _class(c) == "voluntary"),
        "no_child": sum(1 for c in apart if _class(c) == "no_child"),
        "unclassified": sum(1 for c in sec if c.record in ("none", "draft_voluntary", "no_child_recorded")),
        "corrected": sum(1 for c in sec if c.record == "voluntary_corrected"),
        "voluntary_minutes": 7.0,
        "voluntary_with_lapse": 0,
        "no_child_minutes": 4.0,
    }
    # Weeks of the school's clocks, Monday to Sunday, each week's start its local Monday midnight
    weeks: Counter[str] = Counter()
    for t in local:
        weeks[(t.date() - dt.timedelta(days=t.weekday())).isoformat()] += 1
    for bucket in got["trend"]["buckets"]:
        monday = dt.datetime.fromisoformat(bucket["start"].replace("Z", "+00:00")).astimezone(LONDON)
        assert (monday.hour, monday.minute, monday.weekday()) == (0, 0, 0), bucket
        assert bucket["count"] == weeks[monday.date().isoformat()], bucket
    assert sum(b["count"] for b in got["trend"]["buckets"]) == len(sec)


def test_disproportionality_gives_what_the_oracle_counts(table: tuple[Review, dict[str, str]]) -> None:
    r, pupils = table
    sec = _seclusion()
    per_child = Counter(pupils[c.child] for c in sec if c.child in pupils)
    got = _get(r, "/api/reports/disproportionality", suppress="false")
    assert got["children"] == len(REGISTER)
    on = FROM.date()

    def band(born: dt.date | None) -> str:
        if born is None:
            return "unknown"
        age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
        return (
            next(
                n
                for n, top in (("under 5", 4), ("5-6", 6), ("7-10", 10), ("11-13", 13), ("14-15", 15))
                if age <= top
            )
            if age <= 15
            else "16+"
        )

    group_of = {
        "sen": {pupils[k]: (sen if sen != "unknown" else "unknown") for k, (sen, _) in REGISTER.items()},
        "ehcp": {
            pupils[k]: ("unknown" if sen == "unknown" else ("yes" if sen == "ehcp" else "no"))
            for k, (sen, _) in REGISTER.items()
        },
        "age_band": {pupils[k]: band(born) for k, (_, born) in REGISTER.items()},
    }
    rows = {(row["characteristic"], row["group"]): row for row in got["items"]}
    for characteristic, groups in group_of.items():
        assert {g for c, g in rows if c == characteristic} == set(groups.values()), characteristic
        for group in set(groups.values()):
            members = [p for p, g in groups.items() if g == group]
            n, k = len(members), sum(1 for p in members if per_child[p])
            episodes = sum(per_child[p] for p in members)
            rest_n, rest_k = len(groups) - n, len(per_child) - k
            row = rows[(characteristic, group)]
            assert (row["n"], row["k"], row["episodes"], row["rest_n"], row["rest_k"]) == (
                n,
                k,
                episodes,
                rest_n,
                rest_k,
            ), row
            assert row["rest_episodes"] == sum(per_child.values()) - episodes
            ratio = None if rest_k == 0 or rest_n == 0 else (k / n) / (rest_k / rest_n)
            assert row["risk_ratio"] == (None if ratio is None else round(ratio, 2)), row
            if 0 in (k, n, rest_k, rest_n):
                assert (row["ci_low"], row["ci_high"]) == (None, None), row
            else:
                assert ratio is not None
                se = math.sqrt(max(0.0, 1 / k - 1 / n + 1 / rest_k - 1 / rest_n))
                assert row["ci_low"] == round(math.exp(math.log(ratio) - 1.96 * se), 2), row
                assert row["ci_high"] == round(math.exp(math.log(ratio) + 1.96 * se), 2), row


def test_the_csv_says_how_each_episode_of_the_period_is_counted(table: tuple[Review, dict[str, str]]) -> None:
    r, _ = table
    rows = list(csv.DictReader(io.StringIO(_get(r, "/api/reports/episodes.csv"))))
    mine = sorted((c.start, _class(c)) for c in CASES if _in_period(c))
    theirs = sorted(
        (dt.datetime.fromisoformat(row["started_at"].replace("Z", "+00:00")), row["counted_as"])
        for row in rows
    )
    assert theirs == mine
    still_open = next(row for row in rows if row["ended_at"] == "")
    assert float(still_open["elapsed_s"]) == (NOW - _local(2026, 11, 30, 20, 0)).total_seconds()


# -- faults -------------------------------------------------------------------------------------------


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Review]:
    r = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", name="Hillside")
    yield r
    r.client.close()
    r.store.close()


def test_lapses_per_episode_never_reads_0_when_an_episode_had_a_lapse(bare: Review) -> None:
    """A busy year: 201 episodes, one of which had a lapse (the observer away 30 s). The summary's
    `lapses_per_episode` is 1/201 = 0.00498, rounded to the nearest hundredth: 0.0, and the overview
    page prints "Lapses per episode 0.0" next to "Episodes with a lapse 1". A leader (or a governor
    reading the JSON) sees no lapse at all. docs/review.md: "Rounding never flatters supervision" (a
    lapse is never rounded away, `share_up`); the figure should round up, as the not-supervised share
    does (0.01), or be given to enough places that it is never 0 with a lapse."""
    start = dt.datetime(2026, 9, 1, 9, tzinfo=UTC)
    away = [
        ObserverMark(ts=start, present=True),
        ObserverMark(ts=start + dt.timedelta(minutes=2), present=False),
        ObserverMark(ts=start + dt.timedelta(minutes=2, seconds=30), present=True),
    ]
    bare.episode(None, start, 5, observer=away)
    for i in range(1, 201):
        bare.episode(None, start + dt.timedelta(hours=6 * i), 5)
    bare.clock.set(NOW)
    got = _get(bare, "/api/reports/summary", suppress="false")["supervision"]
    assert (got["lapses"], got["episodes_with_lapse"]) == (1, 1)
    assert got["lapses_per_episode"] is not None and got["lapses_per_episode"] > 0, got


@pytest.fixture
def pg(tmp_path: Path, fresh_postgres_db: str) -> Iterator[tuple[Review, str]]:
    r = Review(tmp_path, fresh_postgres_db, name="Hillside")
    yield r, fresh_postgres_db
    r.client.close()
    r.store.close()


def test_grafanas_episodes_per_week_are_the_schools_weeks_as_in_the_review(pg: tuple[Review, str]) -> None:
    """Two episodes on Monday 19 October 2026 at 00:30 and 00:45 at the school (British Summer Time:
    Sunday 23:30 and 23:45 UTC) and one on Wednesday 21 October. The review (docs/review.md: "weeks ...
    are those of the school's clocks, not UTC") counts 3 in the week of Monday 19 October; Grafana's
    home-page panel "Episodes per week" (`date_trunc('week', started_at, 'UTC')`) counts 2 in the week of
    12 October and 1 in the week of 19 October. A leader comparing the dashboard with the review sees
    two different weekly series for the same episodes, and a night-time residential setting's Monday
    small hours land in the wrong week for half the year. (dashboards/README.md admits "Weeks run from
    Monday 00:00 UTC"; the fix is to truncate in the site's timezone, e.g. a dashboard constant
    `Europe/London`, `date_trunc('week', e.started_at, ${timezone:sqlstring})`.)"""
    r, url = pg
    r.episode(None, _local(2026, 10, 19, 0, 30), 5)
    r.episode(None, _local(2026, 10, 19, 0, 45), 5)
    r.episode(None, _local(2026, 10, 21, 10, 0), 5)
    r.clock.set(NOW)
    hub = {
        b["start"]: b["count"]
        for b in _get(r, "/api/reports/summary", suppress="false", bucket="week")["trend"]["buckets"]
        if b["count"]
    }
    assert hub == {"2026-10-18T23:00:00.000Z": 3}, hub
    grafana = {
        week.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"): count
        for week, count in _panel(url, "Episodes per week")
    }
    assert grafana == hub, f"Grafana: {grafana}; the review: {hub}"
