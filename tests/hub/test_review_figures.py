"""The leaders' and governors' figures on small known data sets: a month going on is partial and months to
come are no fall, every room and group is shown even with 0, minutes are rounded up (from a review;
each failed before its fix)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from seclusion_hub.record_store import RecordStore
from tests.hub.test_review_api import Review

SITE = "test-school"
UTC = dt.UTC


def _records(r: Review) -> RecordStore:
    app: Any = r.client.app  # the hub's FastAPI app: its record store
    return cast(RecordStore, app.state.records)


@pytest.fixture
def r(tmp_path: Path) -> Iterator[Review]:
    rv = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", name="Hillside School")
    yield rv
    rv.client.close()
    rv.store.close()


def test_month_not_yet_over_is_partial_not_a_fall(r: Review) -> None:
    """A term asked for up to its end while it is still going on (the leaders' page's 'to' set to the
    end of term, or the governors' report printed in its last weeks): March has had 9 days so far, so
    its 3 episodes are of fewer days, exactly like a month cut by the period. 10, 10, 10 a month is flat."""
    kid = r.pupil("A", "none")
    for month in (12, 1, 2):
        year = 2025 if month == 12 else 2026
        for d in range(10):
            r.episode(kid, dt.datetime(year, month, 2 + d, 10, tzinfo=UTC), 5)
    for d in range(3):
        r.episode(kid, dt.datetime(2026, 3, 2 + d, 10, tzinfo=UTC), 5)
    r.clock.set(dt.datetime(2026, 3, 10, 12, tzinfo=UTC))
    got = r.client.get(
        "/api/reports/summary",
        params={
            "site": SITE,
            "from": "2025-12-01T00:00:00Z",
            "to": "2026-04-01T00:00:00+01:00",
            "bucket": "month",
            "suppress": "false",
        },
        headers=r.leader(),
    ).json()
    trend = got["trend"]
    march = trend["buckets"][-1]
    assert march["label"] == "2026-03"
    assert march["partial"] is True, trend
    assert trend["verdict"] == "flat", trend


def _term(r: Review) -> None:
    """10 episodes in each of December, January and February, 3 so far in March; now is 10 March."""
    kid = r.pupil("A", "none")
    for year, month in ((2025, 12), (2026, 1), (2026, 2)):
        for d in range(10):
            r.episode(kid, dt.datetime(year, month, 2 + d, 10, tzinfo=UTC), 5)
    for d in range(3):
        r.episode(kid, dt.datetime(2026, 3, 2 + d, 10, tzinfo=UTC), 5)
    r.clock.set(dt.datetime(2026, 3, 10, 12, tzinfo=UTC))


def test_leaders_page_up_to_the_end_of_the_school_year_does_not_read_months_to_come_as_a_fall(
    tmp_path: Path,
) -> None:
    """The overview with 'to' at the end of May while it is 10 March: April and May have not happened,
    March is 9 days old. Use has been 10 a month: the page must not say it is falling."""
    rv = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", name="Hillside School", reduction_target_pct=30)
    try:
        _term(rv)
        from seclusion_hub.auth import create_token
        from tests.hub.test_api import T0

        token = create_token(rv.store, "head", "leader", [SITE], False, T0)
        assert rv.client.post("/login", data={"token": token}).status_code == 200
        page = rv.client.get("/review", params={"site": SITE, "from": "2025-12-01", "to": "2026-05-31"})
        assert page.status_code == 200
        assert "Use is falling" not in page.text, page.text[page.text.find("verdict") :][:600]
        assert "on track" not in page.text
    finally:
        rv.client.close()
        rv.store.close()


def test_governors_report_marks_a_month_still_going_on_as_partial(r: Review) -> None:
    """The termly report printed on 10 March for a term to 31 March: March's count is of 9 days, and the
    report must say so (it says so for a month cut by the period's start or end)."""
    from seclusion_hub.review import Period, gather_facts, governors_report

    _term(r)
    site = r.service.sites[SITE]
    when = Period(dt.datetime(2025, 12, 1, tzinfo=UTC), dt.datetime(2026, 3, 31, 23, tzinfo=UTC))
    facts = gather_facts(r.service, _records(r), site, when)
    report = governors_report(site, facts, r.clock.now())
    march = next(row for row in report.trend if row.label == "March 2026")
    assert march.partial, report.trend


def test_governors_total_minutes_are_rounded_up_never_down(r: Review) -> None:
    """Five episodes of 20 minutes 0.48 s: 100.04 minutes in all. The report rounds time up ("Up: time is
    never under-counted", governors._context), so it must print 101 minutes, not 100."""
    from seclusion_hub.reports.governors import _context
    from seclusion_hub.review import Period, gather_facts, governors_report

    for i in range(5):
        kid = r.pupil(f"K{i}", "none")
        r.episode(kid, dt.datetime(2026, 10, 5 + i, 10, tzinfo=UTC), 20 + 0.48 / 60)
    r.clock.set(dt.datetime(2026, 12, 1, tzinfo=UTC))
    site = r.service.sites[SITE]
    when = Period(dt.datetime(2026, 9, 30, 23, tzinfo=UTC), dt.datetime(2026, 11, 1, tzinfo=UTC))
    facts = gather_facts(r.service, _records(r), site, when)
    assert abs(sum(e.elapsed_s for e in facts.episodes) - 6002.4) < 0.01
    report = governors_report(site, facts, r.clock.now())
    assert _context(report)["total"] == "101 minutes", (report.total_minutes, _context(report)["total"])


def test_every_room_and_staff_group_is_shown_even_when_0(tmp_path: Path) -> None:
    """docs/review.md, Distributions: "Each counts episodes, every category shown even when 0", with
    "room | each room" and "group of staff | each group". The site has calm-1 and calm-2 and a group of
    teaching assistants; all 6 episodes were in calm-1 with nobody named yet."""
    rv = Review(
        tmp_path,
        f"sqlite:///{tmp_path / 'hub.db'}",
        name="Hillside School",
        staff_groups={"Teaching assistants": ["Ms Ade"]},
    )
    try:
        kid = rv.pupil("A", "none")
        for d in range(6):
            rv.episode(kid, dt.datetime(2026, 10, 5 + d, 10, tzinfo=UTC), 5)
        rv.clock.set(dt.datetime(2026, 12, 1, tzinfo=UTC))
        got = rv.client.get(
            "/api/reports/summary",
            params={
                "site": SITE,
                "from": "2026-10-01T00:00:00+01:00",
                "to": "2026-11-01T00:00:00Z",
                "suppress": "false",
            },
            headers=rv.leader(),
        ).json()
        assert got["episodes"] == 6
        assert got["by_room"] == {"calm-1": 6, "calm-2": 0}, got["by_room"]
        assert got["by_staff_group"].get("Teaching assistants") == 0, got["by_staff_group"]
    finally:
        rv.client.close()
        rv.store.close()
