"""A review of the words and the accessibility of what people read: the record pages, the leaders' review
pages, the governors' report, the parents' written copy and the alert notices (in process, no browser).

Each test fails before its fix: it says what a member of staff, a parent, a leader or a governor sees,
and why that matters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest

from seclusion_contract import format_ts
from seclusion_hub import review as review_module
from seclusion_hub.notify.notice import Notice, render_message
from seclusion_hub.reports import GovernorsReport, render_governors_html, render_html
from tests.hub.test_delivery_review import _notice as delivery_notice
from tests.hub.test_parent_copy import at, sam
from tests.hub.test_review_api import SITE as REVIEW_SITE
from tests.hub.test_review_api import Review
from tests.support.hub import SITE
from tests.web.test_leaders_pages import PERIOD, _browser, review  # noqa: F401  (the fixture)
from tests.web.test_record_pages import COMPLETE, T0, Hub, _text, hub  # noqa: F401  (the fixture)

GOVERNORS_PERIOD = {"site": REVIEW_SITE, "from": "2026-09-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


def _words(html: str) -> str:
    """A report's words as a person reads them (its inline style sheet aside)."""
    return _text(re.sub(r"<style\b.*?</style>", " ", html, flags=re.S))


def _governors_words(r: Review, monkeypatch: pytest.MonkeyPatch) -> str:
    """The governors' report for the review fixture's term, as the PDF would print it (its HTML: the
    PDF is printed from it, and reading it needs no WeasyPrint)."""
    reports: list[GovernorsReport] = []

    def as_html(report: GovernorsReport) -> bytes:
        reports.append(report)
        return render_governors_html(report).encode()

    monkeypatch.setattr(review_module, "render_governors_pdf", as_html)
    got = r.client.get("/api/reports/governors.pdf", params=GOVERNORS_PERIOD, headers=r.leader())
    assert got.status_code == 200, got.text
    assert reports, "the governors' report was not rendered"
    return _words(got.text)


def _section(text: str, start: str, end: str) -> str:
    begin = text.index(start)
    return text[begin : text.index(end, begin)]


# -- the governors' report


def test_the_governors_report_names_groups_of_children_in_words_not_codes(
    review: Review,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The governors' PDF's table "By group of children" prints the register's codes: "SEN: sen_support"
    and "SEN: none". Governors are lay people reading a formal report; the leaders' fairness page already
    says "SEN support" and "no SEN" (leaders.GROUP_WORDS). review.governors_report builds the label as
    f"SEN: {r.group}" from the raw value."""
    text = _governors_words(review, monkeypatch)
    groups = _section(text, "By group of children", "In the tables")
    assert "sen_support" not in groups and "SEN: none" not in groups, groups
    assert "SEN support" in groups, groups


def test_the_governors_report_names_each_room_by_its_name_not_its_id(
    review: Review,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The governors' table "By room" lists "calm-1" and "calm-2", the site file's ids, where the school
    calls the rooms "Calm room calm-1" and "Calm room calm-2" (the names every other page, the record and
    the parents' copy use). A governor cannot tell which room an id is. review.governors_report passes
    the id as the label (`Count(room, count)`)."""
    text = _governors_words(review, monkeypatch)
    rooms = _section(text, "Episodes in each room", "By group of children")
    assert "Calm room calm-1" in rooms and "Calm room calm-2" in rooms, rooms


def test_the_governors_report_names_its_months_in_words(
    review: Review,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The governors' "Month by month" table reads "2026-09 (partial)", "2026-10", "2026-11": machine
    dates, in a report whose every other date is written out ("Tuesday 1 September 2026"). A governor
    reads "September 2026". (docs/review.md shows "2026-12 (partial)": the docs would change with it.)"""
    text = _governors_words(review, monkeypatch)
    months = _section(text, "Episodes in each month", "A month marked partial")
    assert "2026-10" not in months, months
    assert "October 2026" in months, months


def test_the_governors_report_says_how_much_time_the_system_could_not_tell(
    review: Review,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An episode whose supervision the system could not know (here one entered by hand: the sensors
    did not record it) lowers "Share of the time a child was recorded as supervised" with no lapse to
    account for it, and the report says nothing more: governors read a share below 100 % and "0" lapses,
    and cannot tell time nobody supervised from time the system did not know. The leaders' page gives
    "Time the system could not tell"; the governors' report should say so plainly too (the product must
    say when it does not know)."""
    body = {
        "site": REVIEW_SITE,
        "room": "calm-1",
        "started_at": format_ts(dt.datetime(2026, 10, 5, 9, 0, tzinfo=dt.UTC)),
        "ended_at": format_ts(dt.datetime(2026, 10, 5, 9, 30, tzinfo=dt.UTC)),
        "reason": "the door sensor failed; timed by the teacher's watch",
    }
    made = review.client.post("/api/episodes", json=body, headers=review.token("senior", REVIEW_SITE))
    assert made.status_code == 201, made.text
    text = _governors_words(review, monkeypatch)
    summary = _section(text, "The term in figures", "Where a figure counts")
    assert "recorded as supervised 65%" in summary, summary  # 58 of 88 minutes: the unknown half hour
    assert "could not tell" in summary or "not known" in summary, summary


# -- the leaders' review pages


def test_the_review_pages_name_the_school_by_its_name_in_the_school_choice(review: Review) -> None:  # noqa: F811
    """The review pages' "School" menu lists "test-school", the site file's id, while the heading just
    below says "Use over time: Hillside School". A leader of several schools chooses among ids; the
    records list and every report use the school's name (layout.html prints `{{ s }}`)."""
    page = _browser(review, "leader", REVIEW_SITE).get(f"/review?{PERIOD}")
    assert page.status_code == 200
    options = re.findall(r'<select id="site"[^>]*>(.*?)</select>', page.text, re.S)
    assert options and ">Hillside School</option>" in options[0], options


def test_the_overview_names_the_weekdays_and_rooms_in_words(review: Review) -> None:  # noqa: F811
    """The chart "Episodes by weekday" reads "mon 1, tue 0, wed 1 ..." (the analytics' keys), and the
    "By room" table "calm-1 5, calm-2 1" (the site file's ids), on a page a head teacher reads and may
    screenshot for a meeting. Both have words the school uses: "Monday", "Calm room calm-1"."""
    text = _text(_browser(review, "leader", REVIEW_SITE).get(f"/review?{PERIOD}").text)
    weekdays = _section(text, "Episodes by weekday", "How long episodes lasted")
    assert " mon " not in weekdays and "Monday" in weekdays, weekdays
    rooms = _section(text, "By room Room Episodes", "By member of staff")
    assert "Calm room calm-1" in rooms, rooms


def test_a_leader_asking_for_a_school_not_theirs_gets_a_page_not_raw_json(review: Review) -> None:  # noqa: F811
    """A leader following a link (or a bookmark) to another school's review gets the bare API answer
    `{"detail":"no access to site 'other-school'"}` in the browser: no heading, no way back, a code
    instead of words. Every other refusal on these pages is a page ("For leaders", "Record not found")."""
    page = _browser(review, "leader", REVIEW_SITE).get("/review?site=other-school")
    assert page.status_code in (403, 404)
    assert page.headers["content-type"].startswith("text/html"), page.text[:200]
    assert "<h1>" in page.text and '"detail"' not in page.text


def test_the_overview_says_supervision_was_recorded_not_that_children_were_supervised(
    review: Review,  # noqa: F811
) -> None:
    """The overview's Supervision figures read "Time supervised 100.0 %". The sensors record a person at
    the viewing panel (or a check-in), not that anyone watched the child (semantics 3.5: presence is
    not observation); the governors' report says "recorded as supervised" and the parents' copy
    "Supervision recorded" for the same figure. The leaders' page claims more than the hub knows."""
    text = _text(_browser(review, "leader", REVIEW_SITE).get(f"/review?{PERIOD}").text)
    figures = _section(text, "Supervision Time", "Records and parents")
    assert "Time supervised " not in figures, figures
    assert "recorded" in figures, figures


# -- the record page


def test_a_hand_entered_records_unknown_supervision_does_not_blame_an_offline_sensor(hub: Hub) -> None:  # noqa: F811
    """A senior enters an episode by hand because the sensors failed. Its record says "Entered by hand:
    Yes: the sensors did not record it", then under Supervision "Not known 15 minutes (a sensor was
    offline: not counted as supervised)". No sensor was offline here; an inspector reading the record
    is told a cause that did not happen, and the two lines contradict each other."""
    body = {
        "site": SITE,
        "room": "calm-1",
        "started_at": format_ts(T0 - dt.timedelta(minutes=20)),
        "ended_at": format_ts(T0 - dt.timedelta(minutes=5)),
        "reason": "the door sensor failed; timed by the teacher's watch",
    }
    made = hub.api.post("/api/episodes", json=body, headers=hub.bearer("senior"))
    assert made.status_code == 201, made.text
    page = _text(hub.browser("staff").get(f"/records/{made.json()['incident_id']}").text)
    supervision = _section(page, "Supervision Supervised", "Alerts")
    assert "Not known 15 minutes" in supervision, supervision
    assert "a sensor was offline" not in supervision, supervision


# -- the parents' written copy


def test_a_parents_copy_of_a_seclusion_says_the_child_was_kept_in_the_room(hub: Hub) -> None:  # noqa: F811
    """Staff record the episode as seclusion ("the child was kept in the room", the form's own hint), the
    door was not locked or held. The parents' letter opens "Sam spent 10 minutes in Calm room calm-1"
    and "About the time Sam spent in ...": the word the school itself chose is lost, and a confinement
    reads as a visit. The copy decides "kept in" from the lock alone (parent_copy.html); the staff's
    classification is not passed to it. Seclusion must be named to the parents as what it was."""
    ep = hub.ended_episode()
    hub.attach(ep, hub.pupil("Sam", "Taylor"))
    hub.step(ep, "", COMPLETE)  # classification: seclusion
    hub.step(ep, "/record")
    copy = hub.api.get(f"/api/incidents/{ep['incident_id']}/parent-copy.html", headers=hub.bearer("staff"))
    assert copy.status_code == 200, copy.text
    text = _words(copy.text)
    opening = _section(text, "Dear parent or carer", "In short")
    assert "Sam spent" not in opening, opening
    assert "kept in" in opening, opening


def test_a_parents_copy_with_missing_readings_does_not_contradict_itself_on_supervision() -> None:
    """Some of a device's readings may be missing (a gap in its numbering), and what arrived shows staff
    at the panel throughout. The summary says "Supervision recorded: Not for the whole time (see
    below)"; below, the only sentence is "recorded a member of staff at the viewing panel for 12 minutes
    of the 12 minutes", which reads as the whole time. A parent gets two answers and no reason: the
    supervision section should say that readings may be missing."""
    copy = sam(possible_loss=True, supervised_s=720, unsupervised_s=0, unknown_s=0, longest_lapse_s=0)
    text = _words(render_html(copy))
    assert "Not for the whole time (see below)" in text
    supervision = _section(text, "Was Sam supervised?", "How Sam was afterwards")
    assert "missing" in supervision, supervision
    assert "for 12 minutes of the 12 minutes" not in supervision, supervision


def test_a_parents_copy_in_the_hour_that_happens_twice_says_which() -> None:
    """Sam is in the room from 01:10 to 01:20 GMT on Sunday 25 October 2026, the second time London's
    clocks show 01:10 that night. The letter says "01:10 to 01:20" with no zone, while the school's
    record page says "01:10:00 GMT" (record_pages.local_time names the zone in that hour): a parent
    comparing the two, or the episode an hour earlier at "01:10 BST", cannot tell which it was."""
    start, end = at(2026, 10, 25, 1, 10), at(2026, 10, 25, 1, 20)
    copy = sam(
        started_at=start,
        ended_at=end,
        segments=[(start, end)],
        elapsed_s=600,
        duration_s=600,
        supervised_s=600,
        unsupervised_s=0,
        unknown_s=0,
        longest_lapse_s=0,
    )
    text = _words(render_html(copy))
    assert "Sunday 25 October 2026, 01:10 GMT to 01:20 GMT" in text, _section(text, "When", "How long")


# -- the alert notices


def _notice(due: dt.datetime) -> Notice:
    """A lapse's notice (tests/hub/test_delivery_review.py's), due and raised at `due`."""
    return dataclasses.replace(delivery_notice("a-1"), due_at=due, raised_at=due)


def test_a_notice_in_the_hour_the_clocks_go_back_says_which_time_it_means() -> None:
    """Two lapses an hour apart on the night of 25 October 2026 (00:30 and 01:30 UTC) both reach staff as
    "as of 01:30:00 (Europe/London local time)": the same words for two different moments, in a critical
    alert someone acts on and later reads back against the record, which says "01:30:00 BST" and
    "01:30:00 GMT". In that hour the notice's time needs its zone too."""
    first = render_message(_notice(dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC))).body
    second = render_message(_notice(dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC))).body
    assert first != second, first
    assert "01:30:00 BST" in first and "01:30:00 GMT" in second, (first, second)


# -- the board and the sign-in page


def test_the_board_and_the_sign_in_page_are_marked_as_british_english(hub: Hub) -> None:  # noqa: F811
    """The record and review pages, the parents' copy and the governors' report say `lang="en-GB"`; the
    live board and the sign-in page say `lang="en"`, so a screen reader may read the board (the page
    staff are alerted on) in an American voice and spelling rules, unlike every other page of the hub."""
    board = hub.browser("staff").get("/")
    assert board.status_code == 200
    sign_in = hub.api.get("/login")
    for page in (board.text, sign_in.text):
        assert '<html lang="en-GB">' in page, page[:120]
