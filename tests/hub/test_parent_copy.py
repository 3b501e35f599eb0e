"""The parents' written copy and the governors' report: their words, their times, what they never show.

The golden file pins the whole HTML letter (rewrite it with UPDATE_GOLDEN=1 after a deliberate change
and read the diff); the PDF tests read the printed text back with pypdf.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import io
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import pypdf
import pytest

from seclusion_hub.core.episode import Episode, Segment
from seclusion_hub.core.site import RoomSpec
from seclusion_hub.parent_mail import _LOG, covering_email, lock_state
from seclusion_hub.record_pages import duration_words
from seclusion_hub.reports import (
    Count,
    GovernorsReport,
    ParentCopy,
    StaffMember,
    render_governors_html,
    render_governors_pdf,
    render_html,
    render_pdf,
)
from seclusion_hub.reports.parent_copy import format_duration, format_duration_down

GOLDEN = Path(__file__).parent / "golden" / "parent_copy.html"
UTC = dt.UTC

# The school's register: Sam is ours, the others must never appear in Sam's copy or in the governors'.
REGISTER = ("Sam Taylor", "Aisha Khan", "Oliver Smith", "Maya Patel", "Leo Jones")
OTHER_PUPILS = [part for name in REGISTER if name != "Sam Taylor" for part in name.split()]


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    """A UTC instant."""
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def sam(**changes: Any) -> ParentCopy:
    """Sam's copy: 12 minutes on Tuesday 3 November 2026 (GMT, so UTC is local), the door reopened once."""
    copy = ParentCopy(
        school_name="Oak Hill School",
        site_timezone="Europe/London",
        child_first_name="Sam",
        child_full_name="Sam Taylor",
        started_at=at(2026, 11, 3, 10, 2),
        ended_at=at(2026, 11, 3, 10, 14),
        segments=[
            (at(2026, 11, 3, 10, 2), at(2026, 11, 3, 10, 8)),
            (at(2026, 11, 3, 10, 8, 30), at(2026, 11, 3, 10, 14)),
        ],
        elapsed_s=720,
        duration_s=690,
        supervised_s=600,
        unsupervised_s=90,
        unknown_s=30,
        longest_lapse_s=60,
        locked_or_held="held shut",
        room_name="the calm room",
        staff=[
            StaffMember("Ms Priya Shah", "class teacher"),
            StaffMember("Mr Tom Evans", "teaching assistant"),
        ],
        generated_at=at(2026, 11, 4, 9, 0),
        what_happened_before="In maths, Sam became very upset after a change to the timetable.",
        reason="Sam was very distressed and at risk of hurting himself; we could not keep him safe in class.",
        de_escalation="Ms Shah offered Sam his quiet card and a walk.\n\nWe offered a drink.",
        condition_and_injuries="Sam was calm and tired. He had no injuries.",
        first_aid="None was needed.",
        child_views="Sam said the noise in the room was too much.",
        what_will_change="We will tell Sam about timetable changes the day before.",
        follow_up=at(2026, 11, 10, 15, 30),
        contact_name="Mrs Jo Brown",
        contact_phone="01632 960123",
    )
    return dataclasses.replace(copy, **changes)


def pdf_text(pdf: bytes) -> str:
    """All the PDF's text, whitespace collapsed (line wrapping is layout, not content)."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def plain(html: str) -> str:
    """The HTML's text with tags dropped and whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture(scope="module")
def sam_pdf() -> bytes:
    return render_pdf(sam())


def test_html_matches_the_golden_copy() -> None:
    html = render_html(sam())
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(html, encoding="utf-8")
    expected = GOLDEN.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(expected.splitlines(True), html.splitlines(True), "golden", "now"))
    assert html == expected, f"the copy changed (UPDATE_GOLDEN=1 to accept):\n{diff}"


def test_html_is_accessible_and_self_contained() -> None:
    html = render_html(sam())
    assert '<html lang="en-GB">' in html
    assert html.count("<h1>") == 1
    assert '<th scope="col">Door closed</th>' in html
    assert '<th scope="row">10:02</th>' in html
    # Nothing fetched from anywhere: the hub may have no internet, and a parent's copy must not call out.
    for external in ("http:", "https:", "src=", "<link", "url(", "@import"):
        assert external not in html


def test_pdf_has_the_name_the_local_times_and_the_duration(sam_pdf: bytes) -> None:
    text = pdf_text(sam_pdf)
    assert sam_pdf.startswith(b"%PDF-")
    assert "Sam was kept in the calm room, with the door held shut, for 12 minutes." in text
    assert "Tuesday 3 November 2026, 10:02 to 10:14" in text
    assert "10:08" in text  # the door's reopening, from the segments table


def test_pdf_is_tagged_in_british_english(sam_pdf: bytes) -> None:
    root = pypdf.PdfReader(io.BytesIO(sam_pdf)).root_object
    assert str(root["/Lang"]) == "en-GB"
    mark_info = root["/MarkInfo"].get_object()
    assert isinstance(mark_info, pypdf.generic.DictionaryObject)
    assert mark_info["/Marked"]  # a tagged PDF: screen readers follow its structure


def test_no_other_pupil_is_named(sam_pdf: bytes) -> None:
    text = pdf_text(sam_pdf)
    html = render_html(sam())
    assert "Sam Taylor" in text
    for name in OTHER_PUPILS:
        assert name not in text
        assert name not in html


def test_the_schools_words_are_escaped_never_markup() -> None:
    html = render_html(sam(reason='He said <script>alert("x")</script> & left', contact_name="<b>Jo</b>"))
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; left" in html
    assert "&lt;b&gt;Jo&lt;/b&gt;" in html


def test_blank_lines_make_paragraphs() -> None:
    html = render_html(sam())
    assert "<p>Ms Shah offered Sam his quiet card and a walk.</p>\n<p>We offered a drink" in html


@pytest.mark.parametrize(
    ("start", "end", "when", "minutes"),
    [
        # Friday before the change: BST, an hour ahead of UTC.
        (at(2026, 10, 23, 9, 2), at(2026, 10, 23, 9, 14), "Friday 23 October 2026, 10:02 to 10:14", "12"),
        # Monday after it: GMT, UTC itself.
        (at(2026, 10, 26, 9, 2), at(2026, 10, 26, 9, 14), "Monday 26 October 2026, 09:02 to 09:14", "12"),
        # Across the change itself (02:00 BST becomes 01:00 GMT at 01:00 UTC): half an hour, though the
        # clock reads earlier at the end, so each time carries its zone.
        (
            at(2026, 10, 25, 0, 50),
            at(2026, 10, 25, 1, 20),
            "Sunday 25 October 2026, 01:50 BST to 01:20 GMT",
            "30",
        ),
    ],
)
def test_times_are_local_across_the_october_clock_change(
    start: dt.datetime, end: dt.datetime, when: str, minutes: str
) -> None:
    seconds = (end - start).total_seconds()
    copy = sam(
        started_at=start,
        ended_at=end,
        segments=[(start, end)],
        elapsed_s=seconds,
        duration_s=seconds,
        supervised_s=seconds,
        unsupervised_s=0,
        unknown_s=0,
        longest_lapse_s=0,
    )
    text = plain(render_html(copy))
    assert f"Sam was in the calm room from {when}: {minutes} minutes in all." in text
    assert ("The clocks changed during this time" in text) == ("BST to" in when)


def test_the_clock_change_prints_in_the_pdf_too() -> None:
    start, end = at(2026, 10, 25, 0, 50), at(2026, 10, 25, 1, 20)
    copy = sam(started_at=start, ended_at=end, segments=[(start, end)], elapsed_s=1800, duration_s=1800)
    text = pdf_text(render_pdf(copy))
    assert "Sunday 25 October 2026, 01:50 BST to 01:20 GMT" in text


def test_an_episode_past_midnight_names_both_days() -> None:
    start, end = at(2026, 11, 3, 23, 50), at(2026, 11, 4, 0, 10)
    copy = sam(started_at=start, ended_at=end, segments=[(start, end)], elapsed_s=1200, duration_s=1200)
    text = plain(render_html(copy))
    assert "from Tuesday 3 November 2026, 23:50 to Wednesday 4 November 2026, 00:10: 20 minutes" in text
    assert "Tuesday 3 November 2026, 23:50 Wednesday 4 November 2026, 00:10 20 minutes" in text  # the table


def test_missing_fields_are_said_plainly_and_kindly() -> None:
    copy = sam(
        what_happened_before=None,
        reason="   ",  # blank is not recorded either
        de_escalation=None,
        condition_and_injuries=None,
        first_aid=None,
        child_views=None,
        what_will_change=None,
        follow_up=None,
        contact_name=None,
        contact_phone=None,
        staff=[],
        segments=[],
    )
    html = render_html(copy)
    text = plain(html)
    assert text.count("This was not recorded. If you would like to know more, please ask us.") == 8
    assert "The times the door was closed and opened were not recorded." in text
    assert "To arrange a time that suits you, please contact the school office." in text
    assert "<table>" not in html  # no empty segments table
    assert "None" not in text


def test_the_follow_up_date_and_contact_are_offered() -> None:
    text = plain(render_html(sam(follow_up=dt.date(2026, 11, 12), contact_phone=None)))
    assert "We have suggested Thursday 12 November 2026." in text
    assert "please contact Mrs Jo Brown at the school." in text


def test_supervision_is_reported_as_what_the_sensors_recorded_never_as_watching() -> None:
    """Semantics 3.5: the copy says a person was at the panel or checked in, never that Sam was watched."""
    text = plain(render_html(sam()))
    assert "recorded a member of staff at the viewing panel for 10 minutes of the 12 minutes." in text
    assert "For 2 minutes in total, it did not record anyone at the viewing panel;" in text
    assert "the longest single time was 1 minute." in text
    assert "For 30 seconds, the system could not tell whether anyone was at the viewing panel" in text
    assert "Supervision recorded Not for the whole time (see below)" in text
    assert "The system records whether someone was at the viewing panel, not what they saw." in text
    assert "supervising Sam" not in text

    throughout = plain(render_html(sam(supervised_s=720, unsupervised_s=0, unknown_s=0, longest_lapse_s=0)))
    assert "recorded a member of staff at the viewing panel for the whole time." in throughout
    assert "Supervision recorded For the whole time" in throughout
    assert "Yes" not in throughout.split("Was Sam supervised?")[1]
    assert "did not record anyone" not in throughout
    assert "could not tell" not in throughout

    checkin = plain(render_html(sam(supervision="checkin")))
    assert (
        "recorded staff check-ins at the viewing panel, at the intervals the school sets, for 10 minutes"
        in checkin
    )
    assert "it did not record a check-in in time;" in checkin
    both = plain(render_html(sam(supervision="both")))
    assert (
        "a member of staff at the viewing panel, with check-ins at the intervals the school sets, for" in both
    )
    with pytest.raises(ValueError, match="supervision"):
        sam(supervision="cctv")


@pytest.mark.parametrize(
    ("state", "sentence"),
    [
        ("locked", "The door was closed and locked."),
        ("held shut", "The door was closed and held shut. It was not locked."),
        ("not locked", "The door was closed. It was not locked."),
        (
            "not recorded",
            "The door was closed. This room has no sensor on the lock, so whether it was locked or held "
            "shut was not recorded.",
        ),
    ],
)
def test_the_door_is_described(state: str, sentence: str) -> None:
    assert sentence in plain(render_html(sam(locked_or_held=state)))


def test_supervised_time_is_rounded_down_so_supervision_is_never_flattered() -> None:
    """541 s of 600 supervised is "9 minutes of the 10 minutes", never "10 of 10"; the time in the room
    and the time without anyone recorded are still rounded up (a confinement is never under-counted)."""
    text = plain(
        render_html(
            sam(
                elapsed_s=600,
                duration_s=600,
                supervised_s=541,
                unsupervised_s=59,
                unknown_s=0,
                longest_lapse_s=59,
            )
        )
    )
    assert "at the viewing panel for 9 minutes of the 10 minutes." in text
    assert "10 minutes of the 10 minutes" not in text
    assert "For 59 seconds in total, it did not record anyone at the viewing panel." in text
    assert "Sam was kept in the calm room, with the door held shut, for 10 minutes." in text


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0.9, "0 seconds"),
        (1, "1 second"),
        (59.9, "59 seconds"),
        (60, "1 minute"),
        (541, "9 minutes"),
        (600, "10 minutes"),
        (0.1 + 0.2 + 59.7, "1 minute"),
    ],
)
def test_supervised_durations_round_down(seconds: float, words: str) -> None:
    assert format_duration_down(seconds) == words


@pytest.mark.parametrize(
    ("mode", "limit", "unknown"),
    [
        (
            "observer",
            "The system records whether someone was at the viewing panel, not what they saw.",
            "the system could not tell whether anyone was at the viewing panel, because part of the "
            "monitoring equipment was not sending readings.",
        ),
        (
            "checkin",
            "The system records whether check-ins were made, not what staff saw.",
            "the system could not tell whether check-ins were made, because part of the monitoring "
            "equipment was not sending readings.",
        ),
        (
            "both",
            "The system records whether someone was at the viewing panel and whether check-ins were made, "
            "not what staff saw.",
            "the system could not tell whether anyone was at the viewing panel or whether check-ins were "
            "made, because part of the monitoring equipment was not sending readings.",
        ),
    ],
)
def test_the_copy_claims_no_more_than_the_sensors_recorded(mode: str, limit: str, unknown: str) -> None:
    """Nobody recorded, or the equipment silent: the copy never says staff were there, nor that the
    system could not tell whether the child "was being supervised" (it cannot know that either)."""
    nobody = plain(
        render_html(
            sam(supervision=mode, supervised_s=0, unsupervised_s=690, unknown_s=30, longest_lapse_s=690)
        )
    )
    assert limit in nobody
    assert unknown in nobody
    for old in ("staff were there", "was being supervised", "was not working"):
        assert old not in nobody


def _episode(**changes: Any) -> Episode:
    start, end = at(2026, 11, 3, 10, 2), at(2026, 11, 3, 10, 14)
    fields: dict[str, Any] = {
        "id": "ep-1",
        "site": "oak-hill",
        "room": "calm",
        "number": 1,
        "started_at": start,
        "ended_at": end,
        "segments": [Segment(start=start, end=end)],
        "incident_id": "inc-1",
    }
    return Episode(**(fields | changes))


def _room(*sensors: tuple[str, ...] | None) -> RoomSpec:
    devices = [{"id": f"d{n}", "sensors": kinds} for n, kinds in enumerate(sensors)]
    return RoomSpec.model_validate({"id": "calm", "name": "the calm room", "devices": devices})


def test_no_lock_sensor_is_not_recorded_never_not_locked() -> None:
    """Lock sensors are optional: a room without one says nothing about the lock it cannot see."""
    unlocked = _episode()
    assert lock_state(unlocked, _room(("door", "occupancy"), ("observer",))) == "not recorded"
    assert lock_state(unlocked, None) == "not recorded"
    assert lock_state(unlocked, _room(("door", "lock"))) == "not locked"
    assert lock_state(unlocked, _room(None)) == "not locked"  # no `sensors`: it reports every kind
    assert lock_state(_episode(locked=True, lock_type="bolt"), _room(("door",))) == "locked"
    assert lock_state(_episode(locked=True, lock_type="held"), _room(("door", "lock"))) == "held shut"
    text = plain(render_html(sam(locked_or_held="not recorded")))
    assert "It was not locked" not in text and "not locked" not in text
    assert "The door Closed; whether it was locked or held shut was not recorded" in text


@pytest.mark.parametrize(
    ("state", "opening"),
    [
        ("locked", "Sam was kept in the calm room, with the door locked, for 12 minutes."),
        ("held shut", "Sam was kept in the calm room, with the door held shut, for 12 minutes."),
        ("not locked", "Sam spent 12 minutes in the calm room."),
        ("not recorded", "Sam spent 12 minutes in the calm room."),
    ],
)
def test_the_opening_says_sam_was_kept_in_when_the_door_was_locked_or_held(state: str, opening: str) -> None:
    copy = sam(locked_or_held=state)
    text = plain(render_html(copy))
    assert f"We are writing to tell you that {opening}" in text
    kept = state in ("locked", "held shut")
    if kept:
        assert "Sam spent 12 minutes" not in text
    # The heading and the covering email say it the same way (they said "spent" whatever the door did).
    verb = "was kept in" if kept else "spent in"
    assert f"About the time Sam {verb} the calm room on" in text
    assert f"about the time Sam {verb} the calm room on" in covering_email(copy)[1]


def test_the_covering_email_promises_nothing_and_names_the_contact() -> None:
    title, body = covering_email(sam())
    assert title == "A written record from Oak Hill School"
    assert body.startswith(
        "Please find attached the written record from Oak Hill School about the time Sam was kept in the "
        "calm room on Tuesday 3 November 2026.\n\n"
    )
    assert body.endswith("If you would like to talk about it, please contact Mrs Jo Brown on 01632 960123.")
    assert "promised" not in body and "reply to this email" not in body
    _, only_name = covering_email(sam(contact_phone=None))
    assert only_name.endswith("please contact Mrs Jo Brown at the school.")
    _, nobody = covering_email(sam(contact_name=None, contact_phone=None))
    assert nobody.endswith("please reply to this email or call the school.") and "promised" not in nobody


@pytest.mark.parametrize(
    ("flags", "sentence"),
    [
        (
            {"start_uncertain": True},
            "The start time is approximate: the monitoring system did not record it exactly.",
        ),
        (
            {"end_uncertain": True},
            "The end time is approximate: the monitoring system did not record it exactly.",
        ),
        (
            {"start_uncertain": True, "end_uncertain": True},
            "The start and end times are approximate: the monitoring system did not record them exactly.",
        ),
        (
            {"manual": True, "start_uncertain": True},
            "This time was entered by a member of staff; the room's monitoring did not record it.",
        ),
    ],
)
def test_uncertain_or_hand_entered_times_are_not_shown_as_exact(
    flags: dict[str, bool], sentence: str
) -> None:
    assert sentence in plain(render_html(sam(**flags)))
    exact = plain(render_html(sam()))
    assert "approximate" not in exact and "entered by a member of staff" not in exact


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (1, "1 second"),
        (45, "45 seconds"),
        (0, "0 seconds"),
        (0.4, "1 second"),  # rounded up, as every duration: a confinement is never under-counted
        (58.2, "59 seconds"),
        (59.4, "1 minute"),
        (60, "1 minute"),
        (60.4, "2 minutes"),
        (61, "2 minutes"),
        (720, "12 minutes"),
        (720.4, "13 minutes"),
        (750, "13 minutes"),
        (7200, "120 minutes"),
    ],
)
def test_durations_read_in_minutes_or_seconds(seconds: float, words: str) -> None:
    assert format_duration(seconds) == words


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "none"),
        (-0.001, "none"),
        (0.001, "1 second"),
        (5.000000001, "5 seconds"),  # a float a hair above a whole second is that second, not the next
        (0.1 + 0.2 + 59.7, "1 minute"),
        (90, "2 minutes"),
        (75_000, "1,250 minutes"),
    ],
)
def test_a_page_says_what_the_letter_says(seconds: float, words: str) -> None:
    """The record pages and the leaders' pages word a duration as the parents' copy does (one
    function), and say "none" where there was no time at all."""
    assert duration_words(seconds) == words
    if seconds > 0:
        assert duration_words(seconds) == format_duration(seconds)


@pytest.mark.parametrize(
    "change",
    [
        {"started_at": dt.datetime(2026, 11, 3, 10, 2)},  # naive: which clock?
        {"site_timezone": "Europe/Nowhere"},
        {"locked_or_held": "bolted"},
        {"ended_at": at(2026, 11, 3, 9, 0)},  # before the start
        {"unknown_s": -1},
        {"child_first_name": " "},
    ],
)
def test_a_wrong_copy_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sam(**change)


def autumn(**changes: Any) -> GovernorsReport:
    """The autumn term's figures, with five suppressed (None) figures."""
    report = GovernorsReport(
        school_name="Oak Hill School",
        period_start=dt.date(2026, 9, 1),
        period_end=dt.date(2026, 12, 18),
        period_label="Autumn term 2026",
        episodes=23,
        children=None,
        total_minutes=301.4,
        median_minutes=11.5,
        supervised_share=0.973,
        lapses=None,
        records_late=None,
        parent_copies_late=0,
        trend=[Count("September 2026", 8), Count("October 2026", 12), Count("November 2026", None)],
        by_room=[Count("Calm room 1", 15), Count("Calm room 2", 8)],
        by_group=[Count("Year 7", 6), Count("Looked-after children", None), Count("EHCP", 0)],
        generated_at=at(2026, 12, 19, 9, 0),
    )
    return dataclasses.replace(report, **changes)


def test_governors_report_prints_suppressed_figures_as_fewer_than_5() -> None:
    """A figure on its own reads "fewer than 5"; a table's withheld count reads "withheld", since it may
    be one withheld with a small one (so that the total does not give it back), of any size: "fewer
    than 5" was untrue of those (found by review)."""
    html = render_governors_html(autumn())
    text = plain(html)
    assert "Children involved fewer than 5" in text
    assert "November 2026 withheld" in text
    assert "Looked-after children withheld" in text
    assert "fewer than 5 " not in text.split("By group of children")[1].split("In the tables")[0]
    assert '"withheld" stands for a count from 1 to 4, or for another count withheld with it' in text
    assert "Year 7 6" in text
    assert "Share of the time a child was recorded as supervised 97%" in text
    assert "Total time in the rooms 302 minutes" in text
    # Any period may be reported, not only a term: the opening says "this report's period".
    assert "with the door closed during the period of this report" in text and "the term" not in text
    # A suppressed month has no bar: its length would give the number away.
    assert html.count('class="bar"') == 2


def test_governors_pdf_names_no_pupil_and_keeps_suppression() -> None:
    text = pdf_text(render_governors_pdf(autumn()))
    assert "Looked-after children withheld" in text
    assert "Children involved fewer than 5" in text
    for name in (*OTHER_PUPILS, "Sam", "Taylor"):
        assert name not in text


def test_governors_report_refuses_an_unsuppressed_small_group() -> None:
    with pytest.raises(ValueError, match="suppress"):
        autumn(by_group=[Count("Looked-after children", 3)])


@pytest.mark.parametrize(
    "change",
    [
        {"episodes": 4},
        {"lapses": 1},
        {"records_late": 2},
        {"parent_copies_late": 3},
        {"children": 4},
        {"voluntary": 1},
        {"no_child": 2},
        {"trend": [Count("September 2026", 3)]},
        {"by_room": [Count("Calm room 1", 1)]},
        {"episodes": None},  # its minutes are still there
    ],
)
def test_governors_report_refuses_any_unsuppressed_small_count(change: dict[str, Any]) -> None:
    """review.md: every count of 1 to 4 is withheld, not only the children's (the PDF printed a term's
    3 episodes and 1 lapse), and minutes go with their episode count."""
    with pytest.raises(ValueError, match="suppress"):
        autumn(**change)


def test_governors_report_withholds_the_minutes_of_a_suppressed_episode_count() -> None:
    text = plain(
        render_governors_html(
            autumn(episodes=None, total_minutes=None, median_minutes=None, trend=[], by_room=[])
        )
    )
    assert "Episodes fewer than 5" in text
    assert "Total time in the rooms not shown (fewer than 5 episodes)" in text
    assert "length of an episode not shown (fewer than 5 episodes)" in text
    assert "no member of staff recorded supervising) fewer than 5" in text
    assert "Incident records completed late fewer than 5" in text
    empty = plain(render_governors_html(autumn(episodes=0, total_minutes=0, median_minutes=None)))
    assert "Episodes 0" in empty and "Total time in the rooms 0 minutes" in empty
    assert "length of an episode none" in empty


def test_governors_share_is_never_rounded_up() -> None:
    assert "recorded as supervised 99%" in plain(render_governors_html(autumn(supervised_share=0.999)))
    assert "recorded as supervised 100%" in plain(render_governors_html(autumn(supervised_share=1.0)))


def test_two_copies_sent_at_once_keep_both_addresses_out_of_the_log_and_the_loggers_level_as_it_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Apprise logs a recipient at DEBUG and INFO (from its own threads), and at WARNING when a server
    refuses it. Two parents' copies
    overlapping (the first ends while the second is still sending) must keep the second's address out
    of the log and leave the logger's level as the operator set it."""
    logger = logging.getLogger("apprise")
    caplog.set_level(logging.INFO, logger="apprise")
    level = logger.level
    first_in, first_out, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with _LOG.sending("one@home.example"):
            first_in.set()
            assert second_in.wait(10)
        first_out.set()

    def second() -> None:
        assert first_in.wait(10)
        with _LOG.sending("Two@Home.example"):
            second_in.set()
            assert first_out.wait(10)
            logger.info("Sending email to two@home.example")  # dropped: a copy is being sent
            # Apprise sends from a thread of its own pool: its lines are dropped or redacted too
            pool = threading.Thread(target=lambda: logger.debug("Email To: two@home.example"))
            pool.start()
            pool.join(10)
            logger.warning("Recipient two@home.example refused")  # kept, without the address
        logger.info("a later line about two@home.example")  # no send now: left as it is

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    messages = [r.getMessage() for r in caplog.records if r.name == "apprise"]
    assert messages == [
        "Recipient (the parent's address) refused",
        "a later line about two@home.example",
    ]
    assert logger.level == level and logging.INFO >= logger.getEffectiveLevel()
