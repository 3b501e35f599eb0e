"""The leaders' review pages (`/review`, `/review/fairness`, `/review/children/{id}`, `/review/incidents`):
access and known answers in process, and a leader's walk through them in Debian's Chromium.

Screenshots: test-artifacts/review-overview.png, review-overview-phone.png, review-overview-320.png,
review-fairness.png and review-incidents.png.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect
from sqlmodel import select

from seclusion_hub.auth import create_token
from seclusion_hub.leaders import (
    CLASS_WORDS,
    CORRECTED_WORDS,
    STATUS_CHOICES,
    STATUSES,
    UNRECORDED_WORDS,
    UNREVIEWED_EMPTY_WORDS,
    recorded_as,
)
from seclusion_hub.models import AuditEntry, IncidentRecord, Pupil
from seclusion_hub.store import pack_cursor
from tests.hub.test_api import T0
from tests.hub.test_records import COMPLETE, NO_CHILD
from tests.hub.test_review_api import SITE, START, Review, absent
from tests.web.test_board import ARTIFACTS

DAY = dt.timedelta(days=1)
PERIOD = "from=2026-09-01&to=2026-11-30"


@pytest.fixture
def review(tmp_path: Path) -> Iterator[Review]:
    """A register of 20 children (10 with SEN support) and six episodes with known answers: a child
    with SEN support three times within 30 days, two others once each, and one other child once."""
    r = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", name="Hillside School", reduction_target_pct=20)
    sen = [r.pupil(f"Sen{i}", "sen_support") for i in range(10)]
    other = [r.pupil(f"Other{i}", "none") for i in range(10)]
    r.episode(sen[0], START + 2 * DAY + dt.timedelta(hours=9), 12)
    r.episode(sen[0], START + 10 * DAY + dt.timedelta(hours=10), 8)
    r.episode(sen[0], START + 20 * DAY + dt.timedelta(hours=13), 25, room="calm-2")
    r.episode(sen[1], START + 40 * DAY + dt.timedelta(hours=9), 4)
    r.episode(sen[2], START + 50 * DAY + dt.timedelta(hours=11), 6)
    r.episode(other[0], START + 60 * DAY + dt.timedelta(hours=14), 3)
    r.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    r.sen = sen  # type: ignore[attr-defined]
    yield r
    r.client.close()
    r.store.close()


def _browser(review: Review, role: str, *sites: str) -> TestClient:
    client = TestClient(review.client.app)
    token = create_token(review.store, f"{role}-person", role, list(sites), False, T0)  # type: ignore[arg-type]
    assert client.post("/login", data={"token": token}).status_code == 200
    return client


def test_only_leaders_of_the_site_see_the_review(review: Review) -> None:
    anonymous = TestClient(review.client.app, follow_redirects=False)
    for path in ("/review", "/review/fairness", "/review/incidents"):
        response = anonymous.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/login"
    for role in ("staff", "senior"):
        refused = _browser(review, role, SITE).get("/review")
        assert refused.status_code == 403 and "For leaders" in refused.text
    elsewhere = _browser(review, "leader", "other-school")
    assert elsewhere.get(f"/review?site={SITE}").status_code == 403
    child = elsewhere.get(f"/review/children/{review.sen[0]}")  # type: ignore[attr-defined]
    assert child.status_code == 404 and "Sen0" not in child.text


def test_a_child_of_a_school_no_longer_in_the_site_files_is_not_found_not_an_error(review: Review) -> None:
    """A school taken out of the hub's site files (it left the trust) keeps its children on the register;
    a leader of every site opening one of their pages (a link kept from before) was given a 500."""
    with review.store.session() as s:
        s.add(
            Pupil(
                id="gone-1",
                site="gone-school",
                first_name="Kept",
                last_name="Child",
                created_at=T0,
                updated_at=T0,
            )
        )
        s.commit()
    page = _browser(review, "leader").get("/review/children/gone-1")
    assert page.status_code == 404 and "Kept" not in page.text


def test_the_fairness_page_shows_the_ratio_worked_out_by_hand(review: Review) -> None:
    page = _browser(review, "leader", SITE).get(f"/review/fairness?{PERIOD}")
    assert page.status_code == 200
    # 3 of 10 children with SEN support against 1 of the other 10: 3 times the rate
    se = math.sqrt(1 / 3 - 1 / 10 + 1 / 1 - 1 / 10)
    low, high = math.exp(math.log(3) - 1.96 * se), math.exp(math.log(3) + 1.96 * se)
    assert f"3.00 ({low:.2f} to {high:.2f})" in page.text
    assert "About 3.0 times as likely to be secluded as other children" in page.text
    assert "too few children to be sure" in page.text
    assert "Sen0" not in page.text, "the fairness page names no child"
    # Its groups are shown unsuppressed (a group of one child by ethnicity or care): the read is audited,
    # as the same figures through GET /api/reports/disproportionality are (found by a review).
    with review.store.session() as s:
        reads = s.exec(select(AuditEntry).where(AuditEntry.target_type == "fairness")).all()
    assert [(r.actor, r.action, r.target_id) for r in reads] == [("leader-person", "read", SITE)]


def test_a_childs_page_is_audited_and_the_overview_flags_the_pattern(review: Review) -> None:
    leader = _browser(review, "leader", SITE)
    # By default the last 12 calendar months, whole ones (the clock is on 1 December 2026)
    assert "Thursday 1 January 2026 to Tuesday 1 December 2026" in leader.get("/review").text
    overview = leader.get(f"/review?{PERIOD}")
    assert "A child has had 3 episodes within 30 days (repeated seclusion)" in overview.text
    assert "Use is falling" in overview.text and "on track" in overview.text
    link = re.search(r'href="(/review/children/[^"?]+)', overview.text)
    assert link is not None
    child = leader.get(link.group(1) + f"?{PERIOD}")
    assert child.status_code == 200 and "Sen0 Test" in child.text and child.text.count("<tr>") == 4
    with review.store.session() as s:
        reads = s.exec(select(AuditEntry).where(AuditEntry.target_type == "pupil")).all()
    assert [r.actor for r in reads] == ["leader-person"]
    with review.store.session() as s:
        overview_reads = s.exec(select(AuditEntry).where(AuditEntry.target_type == "review")).all()
    assert [r.detail["children_named"] for r in overview_reads] == [[review.sen[0]]] * 2  # type: ignore[attr-defined]


def test_the_incident_list_takes_any_page_asked_for_without_an_error(review: Review) -> None:
    """A bad request is never a 5xx: a page number the database cannot take (10**30 overflowed SQLite's
    OFFSET) is no longer read at all, and an edge that is no cursor, or one made up at the edge of the
    calendar, is the first page, as a date that is not one is ignored."""
    leader = _browser(review, "leader", SITE)
    first = leader.get(f"/review/incidents?{PERIOD}")
    assert first.status_code == 200 and first.text.count('href="/records/') == 6
    made_up = [
        pack_cursor([edge, "x"]) for edge in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")
    ]
    # When a leader's address asks for a page the list cannot give
    for asked in (f"page={10**30}", "after=%%%", "before=nope", "after=" + "9" * 5000, "before=", "page=two"):
        shown = leader.get(f"/review/incidents?{PERIOD}&{asked}")
        # Then it shows the first page, no error
        assert shown.status_code == 200, (asked[:20], shown.status_code)
        assert shown.text.count('href="/records/') == 6, asked[:20]
    for cursor in made_up:
        for edge in ("after", "before"):
            shown = leader.get(f"/review/incidents?{PERIOD}", params={edge: cursor})
            assert shown.status_code == 200, (edge, cursor)
    # And past the last record nothing matches (a made-up edge older than every record)
    past = leader.get(
        f"/review/incidents?{PERIOD}", params={"after": pack_cursor(["2000-01-01T00:00:00+00:00", ""])}
    )
    assert past.status_code == 200 and "No incident matches." in past.text


def _incidents_page(leader: TestClient, url: str) -> tuple[list[str], str | None, str | None]:
    """The records listed on a page of the incident list, and its Newer and Older links."""
    page = leader.get(url)
    assert page.status_code == 200, page.text
    links = {
        name: "/review/incidents" + html.unescape(href)
        for href, name in re.findall(r'<a href="(\?[^"]*)" rel="(?:prev|next)">(Newer|Older)</a>', page.text)
    }
    return re.findall(r'href="/records/([0-9a-f-]{36})"', page.text), links.get("Newer"), links.get("Older")


def test_the_incident_lists_status_filter_is_in_words(review: Review) -> None:
    """The filter showed the status names of the code ("parent notified", "awaiting record")."""
    assert set(STATUS_CHOICES) == set(STATUSES)
    leader = _browser(review, "leader", SITE)
    shown = leader.get(f"/review/incidents?{PERIOD}&status=parent_notified").text
    assert '<option value="awaiting_record">Record to complete</option>' in shown
    assert '<option value="parent_notified" selected>Parents told</option>' in shown
    assert "awaiting record" not in shown


def test_the_incident_list_neither_hides_nor_repeats_a_record_that_changes_while_a_leader_pages(
    tmp_path: Path,
) -> None:
    """docs/review.md: the records of the period, newest first, 50 a page, filtered by status. A page
    starts where the last one ended (the record shown last), not after a count of rows: a record done
    while a leader reads the first page used to slide the first of the second page onto the first,
    never shown; a new record used to push one onto the second page twice."""
    review = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", name="Hillside School")
    try:
        # Given 52 records awaiting their record, an hour apart
        ids = [review.episode(None, START + DAY + dt.timedelta(hours=i), 5) for i in range(52)]
        review.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
        leader = _browser(review, "leader", SITE)
        filtered = f"/review/incidents?site={SITE}&{PERIOD}&status=awaiting_record"
        # When a leader reads the first page: the 50 newest, an Older link and no Newer one
        first, newer, older = _incidents_page(leader, filtered)
        assert first == ids[::-1][:50] and newer is None and older is not None
        # And meanwhile a record on it is completed and a new one opens
        done = first[10]
        with review.store.session() as s:
            row = s.get(IncidentRecord, done)
            assert row is not None
            row.status, row.recorded_at = "recorded", review.clock.now()
            s.add(row)
            s.commit()
        fresh = [review.episode(None, START + (60 + i) * DAY, 5) for i in range(3)]
        # Then the older page has the two records after the first page's last, each once
        second, newer, older = _incidents_page(leader, older)
        assert second == ids[1::-1] and older is None and newer is not None
        assert set(ids) <= set(first) | set(second) and not set(first) & set(second)
        # And its Newer link gives the 50 just above it: the done one left out, the oldest new one on top
        back, newer, older = _incidents_page(leader, newer)
        assert back == [fresh[0], *(i for i in ids[:1:-1] if i != done)]
        assert newer is not None and older is not None
        # And the next Newer is the first page, the newest first, with no Newer link
        top, newer, _ = _incidents_page(leader, newer)
        assert top[:3] == fresh[::-1] and len(top) == 50 and newer is None
    finally:
        review.client.close()
        review.store.close()


@pytest.fixture
def served(review: Review) -> Iterator[str]:
    """The app on a free loopback port (uvicorn in a thread)."""
    config = uvicorn.Config(review.client.app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.mark.integration
def test_a_leader_walks_through_the_review_in_chromium(review: Review, served: str, browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    token = create_token(review.store, "Head teacher", "leader", [SITE], False, T0)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{served}/login")
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{served}/")
    # From the records page's header to the review
    page.goto(f"{served}/records")
    page.get_by_role("link", name="Review").click()
    expect(page.get_by_role("heading", name="Use over time: Hillside School")).to_be_visible()
    expect(page.get_by_role("heading", name="Patterns to look into")).to_be_visible()
    # The period with the form: September to November, by month
    page.get_by_label("From", exact=True).fill("2026-09-01")
    page.get_by_label("To", exact=True).fill("2026-11-30")
    page.get_by_label("Group by").select_option("month")
    page.get_by_role("button", name="Show").click()
    expect(page.locator(".verdict")).to_contain_text("Use is falling")
    expect(page.locator(".verdict")).to_contain_text("on track")
    expect(page.locator("#chart-trend-title")).to_have_text("Episodes per month")
    assert page.locator("figure:has(#chart-trend-title) rect.bar").count() == 3  # September to November
    expect(page.locator(".flag").first).to_contain_text("A child has had 3 episodes")
    page.screenshot(path=str(ARTIFACTS / "review-overview.png"), full_page=True)
    # Fairness between groups
    page.get_by_role("link", name="Fairness between groups").click()
    expect(page.get_by_role("heading", name="Special educational needs")).to_be_visible()
    expect(page.locator("table.fairness").first).to_contain_text("3.00")
    page.screenshot(path=str(ARTIFACTS / "review-fairness.png"), full_page=True)
    # The incident list, overdue only: none of the six was ever recorded
    page.get_by_role("link", name="Incidents").click()
    page.get_by_label("Overdue only").check()
    page.get_by_role("button", name="Show").click()
    expect(page.locator("table.incidents tbody tr")).to_have_count(6)
    expect(page.locator("table.incidents").get_by_text("OVERDUE:").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "review-incidents.png"), full_page=True)
    # On a phone
    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=context.storage_state())
    small = phone.new_page()
    small.goto(f"{served}/review?{PERIOD}")
    expect(small.locator(".verdict")).to_contain_text("Use is falling")
    small.screenshot(path=str(ARTIFACTS / "review-overview-phone.png"), full_page=True)
    phone.close()
    context.close()


def test_a_childs_page_gives_the_patterns_dates_where_the_school_is(tmp_path: Path) -> None:
    """Three episodes late in the evening of British Summer Time: 23:30 UTC is 00:30 the next day in
    London, and that is the date a leader reads."""
    review = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", name="Hillside School")
    try:
        child = review.pupil("Late", "none")
        for day in (4, 11, 18):  # 4, 11 and 18 September 2026 at 23:30 UTC
            review.episode(child, dt.datetime(2026, 9, day, 23, 30, tzinfo=dt.UTC), 5)
        review.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
        page = _browser(review, "leader", SITE).get(f"/review/children/{child}?{PERIOD}")
        assert page.status_code == 200
        assert "3 episodes from Saturday 5 September 2026 to Saturday 19 September 2026" in page.text
    finally:
        review.client.close()
        review.store.close()


def test_the_pages_count_an_open_episode_to_now(tmp_path: Path) -> None:
    """An open episode's row is rewritten only when something about it changes: the incident list said
    "none" of a child 40 minutes in the room, and the overview counted no minutes of it."""
    review = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        review.event(SITE, "calm-1", "calm-1-panel", "observer", "present", 0)
        review.event(SITE, "calm-1", "calm-1-door", "occupancy", "occupied", 1)
        review.event(SITE, "calm-1", "calm-1-door", "door", "closed", 2)
        for minute in range(1, 41):
            review.clock.set(T0 + dt.timedelta(minutes=minute, seconds=2))
            review.service.process([])
        leader = _browser(review, "leader", SITE)
        listed = leader.get("/review/incidents?from=2026-11-23&to=2026-11-23")
        assert listed.status_code == 200 and "<td>40 minutes</td>" in listed.text
        overview = leader.get("/review?from=2026-11-23&to=2026-11-23")
        assert overview.status_code == 200 and "lengthy episode" in overview.text
    finally:
        review.client.close()
        review.store.close()


def test_the_fairness_page_puts_a_child_in_its_age_band_on_the_schools_first_day(tmp_path: Path) -> None:
    """The period from 1 September is 00:00 BST, 31 August in UTC: a child born on 1 September 2021 is 5
    on the first day of the period at the school (the UTC date made it "under 5")."""
    review = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        review.pupil("Birthday", "none", born=dt.date(2021, 9, 1))
        review.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
        page = _browser(review, "leader", SITE).get("/review/fairness?from=2026-09-01&to=2026-11-30")
        assert page.status_code == 200
        assert "5-6" in page.text and "under 5" not in page.text
    finally:
        review.client.close()
        review.store.close()


def test_the_overview_marks_a_month_only_partly_inside_the_period_and_fits_the_whole_ones(
    tmp_path: Path,
) -> None:
    """review.md, Trend: a week or month only partly inside the period is marked partial and left out of
    the fit. Steady use, 4 a month, and a period to 2 December: December's 0 is of two days; it fell
    into the fit unmarked, and the page said use was falling."""
    review = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        child = review.pupil("Steady", "none")
        for month in (9, 10, 11):
            for day in (3, 10, 17, 24):
                review.episode(child, dt.datetime(2026, month, day, 10, tzinfo=dt.UTC), 5)
        review.clock.set(dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC))
        page = _browser(review, "leader", SITE).get("/review?from=2026-09-01&to=2026-12-02&bucket=month")
        assert page.status_code == 200
        verdict = re.search(r'<p class="verdict">(.*?)</p>', page.text, re.S)
        assert verdict is not None
        assert html.unescape(verdict.group(1)).startswith(
            "Use is about level from month to month. December 2026 is only partly inside the period (marked"
            " partial) and left out of the trend, which rests on the 3 whole months."
        )
        assert "December 2026 (partial)" in page.text and "November 2026 (partial)" not in page.text
    finally:
        review.client.close()
        review.store.close()


def test_the_overview_tells_a_corrected_record_from_one_still_waiting(review: Review) -> None:
    """A signed-off record whose classification a dated addendum corrects counts as seclusion, but it
    has its completed record: the overview said it had none yet."""
    leader, staff, senior = (
        _browser(review, "leader", SITE),
        review.token("staff", SITE),
        review.token("senior", SITE),
    )
    empty = review.episode(None, START + 72 * DAY + dt.timedelta(hours=9), 5)
    assert review.client.patch(f"/api/incidents/{empty}", json=NO_CHILD, headers=staff).status_code == 200
    for step, who in (("record", staff), ("review", senior), ("sign-off", senior)):
        body: dict[str, str] | None = {} if step == "review" else None
        assert review.client.post(f"/api/incidents/{empty}/{step}", json=body, headers=who).status_code == 200
    correction = {"text": "CCTV shows a child was in the room until 09:20.", "field": "classification"}
    added = review.client.post(f"/api/incidents/{empty}/addenda", json=correction, headers=staff)
    assert added.status_code in (200, 201), added.text
    page = html.unescape(leader.get(f"/review?{PERIOD}").text)
    assert "6 of these have no completed record yet" in page, "the fixture's six, not the corrected one"
    assert "1 of these has a completed record whose classification a dated addendum corrects" in page


def test_the_pages_count_the_childs_own_use_of_the_room_apart(review: Review) -> None:
    """Semantics 2.2 on the leaders' pages: a completed record saying the child chose the calm room takes
    the episode out of the figures and onto a line of its own; the child's page still lists it."""
    leader, staff = _browser(review, "leader", SITE), review.token("staff", SITE)
    child = review.sen[1]  # type: ignore[attr-defined]
    own = review.episode(child, START + 41 * DAY + dt.timedelta(hours=9), 15, room="calm-2")
    record = {**COMPLETE, "classification": "voluntary", "voluntary_reason": "Asked for the calm room."}
    assert review.client.patch(f"/api/incidents/{own}", json=record, headers=staff).status_code == 200
    overview = leader.get(f"/review?{PERIOD}")
    words = " ".join(re.sub(r"<[^>]+>", " ", overview.text).split())
    # A draft moves nothing: all seven count, and none has a completed record.
    assert "7 episodes" in words and "7 of these have no completed record yet" in words
    assert "No episode in this period is recorded as a child's own use of the calm room." in words
    assert review.client.post(f"/api/incidents/{own}/record", headers=staff).status_code == 200
    empty = review.episode(None, START + 42 * DAY + dt.timedelta(hours=9), 5)
    assert review.client.patch(f"/api/incidents/{empty}", json=NO_CHILD, headers=staff).status_code == 200
    assert review.client.post(f"/api/incidents/{empty}/record", headers=staff).status_code == 200
    waiting = " ".join(re.sub(r"<[^>]+>", " ", leader.get(f"/review?{PERIOD}").text).split())
    assert "7 episodes" in waiting, "an empty room leaves the figures only once a senior has reviewed it"
    senior = review.token("senior", SITE)
    assert review.client.post(f"/api/incidents/{empty}/review", json={}, headers=senior).status_code == 200
    overview = leader.get(f"/review?{PERIOD}")
    words = " ".join(re.sub(r"<[^>]+>", " ", overview.text).split())
    assert "6 episodes" in words and "6 of these have no completed record yet" in words
    assert (
        "Counted apart, not in the figures on this page: 1 episode recorded as the child's own use of "
        "the calm room, 15.0 minutes in all." in words
    )
    assert (
        "Also apart: 1 time the room was recorded as empty while a sensor still reported a child (5.0 "
        "minutes), each record reviewed by a senior member of staff." in words
    )
    page = leader.get(f"/review/children/{child}?{PERIOD}")
    text = " ".join(re.sub(r"<[^>]+>", " ", page.text).split())
    assert "Episodes in the period: 2, of which 1 recorded as the child's own use of the room" in text
    assert "the child's own use of the room" in text and "not recorded yet: counted as seclusion" in text


def test_the_child_page_says_what_each_episode_was_recorded_as_and_why_it_still_counts() -> None:
    """An episode counts as seclusion until its record is completed, and an empty room until a senior
    has reviewed it: the child page says which of the two keeps it counted."""

    def row(status: str, classification: str | None) -> IncidentRecord:
        record = {"classification": classification} if classification else {}
        return IncidentRecord(
            id="i",
            episode_id="e",
            site=SITE,
            room="r",
            status=status,
            opened_at=T0,
            updated_at=T0,
            record=record,
        )

    assert recorded_as(None, None) == UNRECORDED_WORDS
    assert recorded_as(None, row("awaiting_record", "no_child")) == UNRECORDED_WORDS, "a draft says nothing"
    assert recorded_as(None, row("recorded", "no_child")) == UNREVIEWED_EMPTY_WORDS
    assert recorded_as("no_child", row("reviewed", "no_child")) == CLASS_WORDS["no_child"]
    assert recorded_as("voluntary", row("recorded", "voluntary")) == CLASS_WORDS["voluntary"]
    # Completed, yet counted as seclusion: an addendum corrected what it was.
    assert recorded_as(None, row("closed", "no_child")) == CORRECTED_WORDS
    assert recorded_as(None, row("recorded", "voluntary")) == CORRECTED_WORDS


def test_a_share_of_supervised_time_is_never_rounded_up() -> None:
    """A child's page printed 99.6 % of an episode recorded as supervised as "100 %", after a lapse;
    the governors' report rounds down so that supervision is never flattered (found by a review)."""
    from seclusion_hub.leaders import supervised_percent

    assert supervised_percent(597.6, 600) == "99 %"
    assert supervised_percent(600, 600) == "100 %"
    assert supervised_percent(0.29 * 600, 600) == "29 %"
    assert supervised_percent(0, 0) == "-"


def test_the_overview_never_says_100_percent_supervised_after_a_lapse(tmp_path: Path) -> None:
    """An hour with 1.5 s unsupervised read "Time supervised 100.0 %, not supervised 0.0 %" on /review,
    while the governors' PDF of the same period said 99 %: the summary rounded the shares to nearest
    before the page rounded them down or up."""
    r = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    start = dt.datetime(2026, 10, 5, 10, tzinfo=dt.UTC)
    r.episode(None, start, 60, observer=absent(start, dt.timedelta(minutes=30), 1.5))
    r.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    try:
        page = _browser(r, "leader", SITE).get(f"/review?{PERIOD}").text
        assert "<dt>Time supervision was recorded</dt><dd>99.9 %</dd>" in page
        assert "<dt>Time no supervision was recorded</dt><dd>0.1 %</dd>" in page
        assert "<dt>Time the system could not tell</dt><dd>0.0 %</dd>" in page
    finally:
        r.client.close()
        r.store.close()


def test_the_pages_flag_a_pattern_across_the_start_of_the_period(tmp_path: Path) -> None:
    """24 and 28 August and 2 September: 3 episodes in 9 days, the last in the autumn term. The overview
    and the child's page read only the term's episodes and flagged nothing."""
    r = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        child = r.pupil("Ann", "none")
        for day in (24, 28):
            r.episode(child, dt.datetime(2026, 8, day, 10, tzinfo=dt.UTC), 5)
        r.episode(child, dt.datetime(2026, 9, 2, 10, tzinfo=dt.UTC), 5)
        r.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
        leader = _browser(r, "leader", SITE)
        overview = leader.get(f"/review?{PERIOD}").text
        assert "A child has had 3 episodes within 30 days (repeated seclusion)" in overview
        page = leader.get(f"/review/children/{child}?{PERIOD}").text
        assert "3 episodes from Monday 24 August 2026 to Wednesday 2 September 2026" in page
        assert page.count("<tr>") == 2, "the child's episodes in the period: the heading and one"
    finally:
        r.client.close()
        r.store.close()


# What sticks out past the right edge of the page: the widest element (tag, class) and its right edge.
_WIDEST = """() => {
  const width = document.documentElement.clientWidth;
  const clipped = (el) =>
    el.parentElement.closest(".table-wrap") && getComputedStyle(el).position !== "absolute";
  const out = [...document.querySelectorAll("body *")]
    .map((el) => [el, el.getBoundingClientRect().right])
    .filter(([el, right]) => right > width + 0.5 && !clipped(el))
    .sort((a, b) => b[1] - a[1]);
  return out.slice(0, 5).map(([el, right]) => `${el.tagName.toLowerCase()}.${el.className} ${right}`);
}"""


@pytest.mark.integration
def test_the_review_pages_fit_a_320_pixel_screen(review: Review, served: str, browser: Browser) -> None:
    """WCAG 1.4.10 (reflow): at 320 CSS pixels wide the overview was 437 px wide (its figures' grid kept
    each label on one line) and the fairness, incident and child's tables pushed their pages wider too.
    Now only a wide table scrolls, in its own region (.table-wrap); the page itself is no wider."""
    token = create_token(review.store, "Head teacher", "leader", [SITE], False, T0)
    context = browser.new_context(viewport={"width": 320, "height": 640})
    page = context.new_page()
    try:
        page.goto(f"{served}/login")
        page.get_by_label("Access token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{served}/")
        for path, heading in (
            ("/review", "Use over time: Hillside School"),
            ("/review/fairness", "Fairness between groups of children: Hillside School"),
            ("/review/incidents", "Incidents: Hillside School"),
        ):
            page.goto(f"{served}{path}?{PERIOD}")
            expect(page.get_by_role("heading", level=1)).to_have_text(heading)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 320, (path, width, page.evaluate(_WIDEST))
            # A keyboard reaches each scrolling table (Safari does not on its own), named by its heading.
            for wrap in page.locator(".table-wrap").all():
                assert wrap.get_attribute("tabindex") == "0", path
                assert wrap.get_attribute("role") == "region", path
                assert wrap.get_attribute("aria-label") or wrap.get_attribute("aria-labelledby"), path
            if path == "/review/incidents":
                expect(page.get_by_role("region", name="Incidents")).to_be_visible()
            if path == "/review":
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "review-overview-320.png"), full_page=True)
        # A child's page, from the overview's flag: its table of episodes scrolls in its own region too.
        page.goto(f"{served}/review?{PERIOD}")
        page.locator(".flag").get_by_role("link").first.click()
        expect(page.get_by_role("table", name="Episodes")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 320, ("a child's page", width, page.evaluate(_WIDEST))
    finally:
        context.close()
