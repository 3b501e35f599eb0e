"""When records, parent notices, copies and authority reports fall due (core/deadlines.py, docs/review.md)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seclusion_hub.core.deadlines import (
    SEARCH_LIMIT_DAYS,
    DueDates,
    due_at,
    due_dates,
    end_of_local_day,
    is_school_day,
    is_working_day,
    local_date,
    next_school_day,
    nth_school_day,
    nth_working_day,
    start_of_local_day,
)
from seclusion_hub.core.policy import (
    CalendarDays,
    Deadline,
    Hours,
    Policy,
    SchoolDays,
    WorkingDays,
)
from seclusion_hub.core.site import Calendar, Closure

LONDON = ZoneInfo("Europe/London")
AUCKLAND = ZoneInfo("Pacific/Auckland")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
HAVANA = ZoneInfo("America/Havana")  # its clocks change at midnight
UTC = dt.UTC

WEEKDAYS_ONLY = Calendar()
CHRISTMAS = Closure.model_validate({"from": "2026-12-19", "to": "2027-01-04", "name": "Christmas"})
WINTER = Calendar(closures=(CHRISTMAS,))
MON_THU = Calendar(school_days=("mon", "tue", "wed", "thu"))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=tz)


# 2026-10-23 is a Friday, 24 Saturday, 25 Sunday (clocks go back in the UK), 26 Monday.


class TestSameDay:
    def test_ends_at_local_midnight_in_summer(self) -> None:
        # 14:00 BST; the day ends at 00:00 BST on the 16th, 23:00 UTC on the 15th
        assert due_at("same_day", utc(2026, 7, 15, 13), WEEKDAYS_ONLY, LONDON) == utc(2026, 7, 15, 23)

    def test_ends_at_local_midnight_in_winter(self) -> None:
        assert due_at("same_day", utc(2026, 1, 15, 13), WEEKDAYS_ONLY, LONDON) == utc(2026, 1, 16)

    def test_the_day_before_the_clocks_go_back(self) -> None:
        assert due_at("same_day", utc(2026, 10, 24, 10), WEEKDAYS_ONLY, LONDON) == utc(2026, 10, 24, 23)

    def test_the_day_the_clocks_go_back_lasts_25_hours(self) -> None:
        # 25 Oct 2026: 02:00 BST becomes 01:00 GMT; the day ends at 00:00 GMT on the 26th
        assert due_at("same_day", utc(2026, 10, 25, 10), WEEKDAYS_ONLY, LONDON) == utc(2026, 10, 26)
        day = end_of_local_day(dt.date(2026, 10, 25), LONDON) - start_of_local_day(
            dt.date(2026, 10, 25), LONDON
        )
        assert day == dt.timedelta(hours=25)

    def test_the_day_the_clocks_go_forward_lasts_23_hours(self) -> None:
        # The last Sunday of March 2027 is the 28th: 01:00 GMT becomes 02:00 BST
        start = start_of_local_day(dt.date(2027, 3, 28), LONDON)
        end = end_of_local_day(dt.date(2027, 3, 28), LONDON)
        assert (start, end) == (utc(2027, 3, 28), utc(2027, 3, 28, 23))
        assert due_at("same_day", utc(2027, 3, 28, 0, 30), WEEKDAYS_ONLY, LONDON) == utc(2027, 3, 28, 23)
        # Monday 29 March 2027, the first whole day of BST
        assert due_at("same_day", utc(2027, 3, 29, 12), WEEKDAYS_ONLY, LONDON) == utc(2027, 3, 29, 23)

    def test_late_evening_local_is_the_next_day_in_utc(self) -> None:
        # 23:30 BST on 15 July is 22:30 UTC: still 15 July at the school
        ended = local(LONDON, 2026, 7, 15, 23, 30)
        assert due_at("same_day", ended, WEEKDAYS_ONLY, LONDON) == utc(2026, 7, 15, 23)

    def test_auckland_is_ahead_of_utc(self) -> None:
        # 10:00 UTC on 15 July is 22:00 NZST on the 15th; 13:00 UTC is 01:00 on the 16th
        assert due_at("same_day", utc(2026, 7, 15, 10), WEEKDAYS_ONLY, AUCKLAND) == utc(2026, 7, 15, 12)
        assert due_at("same_day", utc(2026, 7, 15, 13), WEEKDAYS_ONLY, AUCKLAND) == utc(2026, 7, 16, 12)

    def test_los_angeles_is_behind_utc(self) -> None:
        # 03:00 UTC on 16 July is 20:00 PDT on the 15th: due at 00:00 PDT on the 16th, 07:00 UTC
        assert due_at("same_day", utc(2026, 7, 16, 3), WEEKDAYS_ONLY, LOS_ANGELES) == utc(2026, 7, 16, 7)

    def test_a_weekend_episode_is_due_the_same_day(self) -> None:
        assert due_at("same_day", utc(2026, 10, 24, 10), WEEKDAYS_ONLY, LONDON) == utc(2026, 10, 24, 23)

    def test_a_closure_day_episode_is_due_the_same_day(self) -> None:
        assert due_at("same_day", utc(2026, 12, 23, 10), WINTER, LONDON) == utc(2026, 12, 24)

    def test_any_timezone_of_ended_at_gives_the_same_instant(self) -> None:
        ended = utc(2026, 7, 15, 22, 30)
        assert due_at("same_day", ended.astimezone(AUCKLAND), WEEKDAYS_ONLY, LONDON) == utc(2026, 7, 15, 23)

    def test_midnight_repeated_in_havana(self) -> None:
        # 1 Nov 2026: 01:00 CDT becomes 00:00 CST, so midnight happens twice; 31 October ends at the
        # first, 1 November at 00:00 CST on the 2nd
        assert end_of_local_day(dt.date(2026, 10, 31), HAVANA) == utc(2026, 11, 1, 4)
        assert end_of_local_day(dt.date(2026, 11, 1), HAVANA) == utc(2026, 11, 2, 5)
        ended = dt.datetime(2026, 11, 1, 0, 30, fold=1, tzinfo=HAVANA)  # the second 00:30
        assert due_at("same_day", ended, WEEKDAYS_ONLY, HAVANA) == utc(2026, 11, 2, 5)

    def test_midnight_skipped_in_havana(self) -> None:
        # 8 Mar 2026: 00:00 CST becomes 01:00 CDT; 7 March ends at the jump
        assert end_of_local_day(dt.date(2026, 3, 7), HAVANA) == utc(2026, 3, 8, 5)
        assert due_at("same_day", utc(2026, 3, 8, 4, 59), WEEKDAYS_ONLY, HAVANA) == utc(2026, 3, 8, 5)


class TestHours:
    def test_real_hours(self) -> None:
        assert due_at(Hours(hours=24), utc(2026, 7, 15, 13), WEEKDAYS_ONLY, LONDON) == utc(2026, 7, 16, 13)

    def test_real_hours_across_the_clocks_going_back(self) -> None:
        # 10:00 BST on Saturday + 24 real hours is 09:00 GMT on Sunday, not 10:00
        ended = local(LONDON, 2026, 10, 24, 10)
        due = due_at(Hours(hours=24), ended, WEEKDAYS_ONLY, LONDON)
        assert due == utc(2026, 10, 25, 9)
        assert due is not None and due.astimezone(LONDON).hour == 9

    def test_real_hours_across_the_clocks_going_forward(self) -> None:
        ended = local(LONDON, 2027, 3, 27, 10)
        due = due_at(Hours(hours=24), ended, WEEKDAYS_ONLY, LONDON)
        assert due is not None and due.astimezone(LONDON) == local(LONDON, 2027, 3, 28, 11)

    def test_fractional_hours(self) -> None:
        assert due_at(Hours(hours=1.5), utc(2026, 7, 15, 13), WEEKDAYS_ONLY, LONDON) == utc(
            2026, 7, 15, 14, 30
        )

    def test_ignores_weekends_and_closures(self) -> None:
        assert due_at(Hours(hours=2), utc(2026, 12, 25, 10), WINTER, LONDON) == utc(2026, 12, 25, 12)


class TestCalendarDays:
    def test_end_of_the_nth_local_day(self) -> None:
        assert due_at(CalendarDays(calendar_days=7), utc(2026, 7, 15, 13), WEEKDAYS_ONLY, LONDON) == utc(
            2026, 7, 22, 23
        )

    def test_zero_is_the_same_day(self) -> None:
        ended = utc(2026, 10, 25, 10)
        assert due_at(CalendarDays(calendar_days=0), ended, WEEKDAYS_ONLY, LONDON) == due_at(
            "same_day", ended, WEEKDAYS_ONLY, LONDON
        )

    def test_across_the_clocks_going_back(self) -> None:
        # Friday 23 Oct (BST) + 3 days: the end of Monday 26 Oct, midnight GMT
        assert due_at(CalendarDays(calendar_days=3), utc(2026, 10, 23, 12), WEEKDAYS_ONLY, LONDON) == utc(
            2026, 10, 27
        )

    def test_counts_weekends_and_closures(self) -> None:
        assert due_at(CalendarDays(calendar_days=2), utc(2026, 12, 31, 12), WINTER, LONDON) == utc(2027, 1, 3)


class TestSchoolDays:
    def test_friday_plus_one_is_the_end_of_monday(self) -> None:
        # Friday 16 Oct 2026 (BST) → the end of Monday 19 Oct, 23:00 UTC
        assert due_at(SchoolDays(school_days=1), utc(2026, 10, 16, 12), WEEKDAYS_ONLY, LONDON) == utc(
            2026, 10, 19, 23
        )

    def test_friday_before_the_clocks_go_back(self) -> None:
        # Friday 23 Oct (BST) → the end of Monday 26 Oct, now GMT: midnight UTC
        assert due_at(SchoolDays(school_days=1), utc(2026, 10, 23, 12), WEEKDAYS_ONLY, LONDON) == utc(
            2026, 10, 27
        )

    def test_midweek(self) -> None:
        assert due_at(SchoolDays(school_days=2), utc(2026, 7, 14, 12), WEEKDAYS_ONLY, LONDON) == utc(
            2026, 7, 16, 23
        )

    def test_zero_on_a_school_day_is_the_same_day(self) -> None:
        assert due_at(SchoolDays(school_days=0), utc(2026, 7, 14, 12), WEEKDAYS_ONLY, LONDON) == utc(
            2026, 7, 14, 23
        )

    def test_zero_on_a_saturday_is_the_end_of_monday(self) -> None:
        assert due_at(SchoolDays(school_days=0), utc(2026, 10, 24, 12), WEEKDAYS_ONLY, LONDON) == utc(
            2026, 10, 27
        )

    def test_one_on_a_saturday_is_the_end_of_monday_too(self) -> None:
        assert due_at(SchoolDays(school_days=1), utc(2026, 10, 24, 12), WEEKDAYS_ONLY, LONDON) == utc(
            2026, 10, 27
        )

    def test_last_day_before_a_closure_spanning_the_new_year(self) -> None:
        # Friday 18 Dec 2026; the closure runs 19 Dec to Monday 4 Jan inclusive: first school day Tue 5 Jan
        assert due_at(SchoolDays(school_days=1), utc(2026, 12, 18, 12), WINTER, LONDON) == utc(2027, 1, 6)

    def test_an_episode_on_a_closure_day(self) -> None:
        # Christmas Eve inside the closure: 0 → the end of Tue 5 Jan, 1 → Tue 5 Jan, 2 → Wed 6 Jan
        ended = utc(2026, 12, 24, 11)
        assert due_at(SchoolDays(school_days=0), ended, WINTER, LONDON) == utc(2027, 1, 6)
        assert due_at(SchoolDays(school_days=1), ended, WINTER, LONDON) == utc(2027, 1, 6)
        assert due_at(SchoolDays(school_days=2), ended, WINTER, LONDON) == utc(2027, 1, 7)

    def test_closure_bounds_are_inclusive(self) -> None:
        assert not is_school_day(dt.date(2026, 12, 21), WINTER)  # Monday, first weekday inside
        assert not is_school_day(dt.date(2027, 1, 4), WINTER)  # Monday, the last day
        assert is_school_day(dt.date(2027, 1, 5), WINTER)
        assert is_school_day(dt.date(2026, 12, 18), WINTER)

    def test_site_with_school_days_monday_to_thursday(self) -> None:
        # Thursday 15 Oct 2026 + 1 → Monday 19 Oct; Friday is not a school day there
        assert due_at(SchoolDays(school_days=1), utc(2026, 10, 15, 12), MON_THU, LONDON) == utc(
            2026, 10, 19, 23
        )
        assert due_at(SchoolDays(school_days=0), utc(2026, 10, 16, 12), MON_THU, LONDON) == utc(
            2026, 10, 19, 23
        )
        assert not is_school_day(dt.date(2026, 10, 16), MON_THU)

    def test_residential_site_with_weekend_school_days(self) -> None:
        every_day = Calendar(school_days=("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
        assert due_at(SchoolDays(school_days=1), utc(2026, 10, 24, 12), every_day, LONDON) == utc(
            2026, 10, 26
        )

    def test_auckland_school_day_follows_the_local_date(self) -> None:
        # Friday 14:00 UTC is Saturday 02:00 NZST: the local date is Saturday, + 1 → the end of Monday
        # 20 July NZST, which is 12:00 UTC on the 20th
        assert due_at(SchoolDays(school_days=1), utc(2026, 7, 17, 14), WEEKDAYS_ONLY, AUCKLAND) == utc(
            2026, 7, 20, 12
        )

    def test_los_angeles_school_day_follows_the_local_date(self) -> None:
        # Saturday 02:00 UTC is Friday 19:00 PDT: + 1 → the end of Monday 20 July PDT, 07:00 UTC on the 21st
        assert due_at(SchoolDays(school_days=1), utc(2026, 7, 18, 2), WEEKDAYS_ONLY, LOS_ANGELES) == utc(
            2026, 7, 21, 7
        )

    def test_a_calendar_without_a_school_day_is_refused(self) -> None:
        # Refused when the site file is read (the deadline would never come): never at an episode's end.
        with pytest.raises(ValueError, match="school_days"):
            Calendar(school_days=())

    def test_closure_longer_than_the_search_limit_raises(self) -> None:
        with pytest.raises(ValueError, match="longer than two years"):  # refused in the site file
            Closure.model_validate({"from": "2026-01-01", "to": "2030-12-31"})
        # Back to back, closures can still outlast the search: a clear error, never a silent loop.
        closures = tuple(
            Closure.model_validate({"from": f"{y}-01-01", "to": f"{y + 1}-12-31"}) for y in (2026, 2028)
        )
        with pytest.raises(ValueError, match="check the calendar"):
            next_school_day(dt.date(2026, 7, 15), Calendar(closures=closures))

    def test_long_closure_within_the_limit_is_found(self) -> None:
        year = Closure.model_validate({"from": "2026-07-16", "to": "2027-07-15"})
        assert next_school_day(dt.date(2026, 7, 15), Calendar(closures=(year,))) == dt.date(2027, 7, 16)
        assert SEARCH_LIMIT_DAYS >= 3 * 365

    def test_negative_count_is_refused(self) -> None:
        with pytest.raises(ValueError, match="negative"):
            nth_school_day(dt.date(2026, 7, 15), -1, WEEKDAYS_ONLY)


class TestWorkingDays:
    def test_friday_plus_two_is_the_end_of_tuesday(self) -> None:
        assert due_at(WorkingDays(working_days=2), utc(2026, 10, 16, 12), WEEKDAYS_ONLY, LONDON) == utc(
            2026, 10, 20, 23
        )

    def test_closures_are_not_working_days(self) -> None:
        # policies.md: "School days and working days come from the site's calendar (Mon to Fri, plus
        # configured closures)". Friday 18 Dec 2026, closed from the 19th to 4 Jan 2027 (a Monday,
        # included): the first two working days after it are Tue 5 and Wed 6 January.
        assert due_at(WorkingDays(working_days=2), utc(2026, 12, 18, 12), WINTER, LONDON) == utc(2027, 1, 7)

    def test_school_days_of_the_site_do_not_matter(self) -> None:
        # Mon-Thu site, Thursday + 1 working day → Friday
        assert due_at(WorkingDays(working_days=1), utc(2026, 10, 15, 12), MON_THU, LONDON) == utc(
            2026, 10, 16, 23
        )

    def test_zero_on_a_sunday_is_monday(self) -> None:
        assert nth_working_day(dt.date(2026, 10, 25), 0, WEEKDAYS_ONLY) == dt.date(2026, 10, 26)
        assert is_working_day(dt.date(2026, 10, 23), WEEKDAYS_ONLY)
        assert not is_working_day(dt.date(2026, 10, 24), WEEKDAYS_ONLY)


class TestDueDatesAndErrors:
    def test_the_default_profile(self) -> None:
        due = due_dates(Policy(), utc(2026, 10, 23, 12), WEEKDAYS_ONLY, LONDON)
        assert due == DueDates(
            record=utc(2026, 10, 23, 23),
            parent_notice=utc(2026, 10, 23, 23),
            parent_copy=utc(2026, 10, 27),
            authority_notice=None,
        )

    def test_every_field_follows_its_own_deadline(self) -> None:
        policy = Policy(
            record_due=WorkingDays(working_days=5),
            parent_notice_due=Hours(hours=24),
            parent_copy_due=CalendarDays(calendar_days=7),
            authority_notice_due=WorkingDays(working_days=2),
        )
        due = due_dates(policy, utc(2026, 7, 15, 12), WEEKDAYS_ONLY, LONDON)
        assert due.record == utc(2026, 7, 22, 23)
        assert due.parent_notice == utc(2026, 7, 16, 12)
        assert due.parent_copy == utc(2026, 7, 22, 23)
        assert due.authority_notice == utc(2026, 7, 17, 23)

    def test_no_parent_copy_deadline(self) -> None:
        due = due_dates(Policy(parent_copy_due=None), utc(2026, 7, 15, 12), WEEKDAYS_ONLY, LONDON)
        assert due.parent_copy is None

    def test_none_is_no_deadline(self) -> None:
        assert due_at(None, utc(2026, 7, 15), WEEKDAYS_ONLY, LONDON) is None

    def test_naive_ended_at_is_refused(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            due_at("same_day", dt.datetime(2026, 7, 15, 12), WEEKDAYS_ONLY, LONDON)
        with pytest.raises(ValueError, match="timezone-aware"):
            due_at(None, dt.datetime(2026, 7, 15, 12), WEEKDAYS_ONLY, LONDON)
        with pytest.raises(ValueError, match="timezone-aware"):
            due_dates(Policy(), dt.datetime(2026, 7, 15, 12), WEEKDAYS_ONLY, LONDON)

    def test_results_are_utc(self) -> None:
        due = due_at(SchoolDays(school_days=1), local(AUCKLAND, 2026, 7, 15, 9), WEEKDAYS_ONLY, AUCKLAND)
        assert due is not None and due.utcoffset() == dt.timedelta(0) and due.tzinfo is UTC

    def test_local_date(self) -> None:
        assert local_date(utc(2026, 7, 15, 23, 30), LONDON) == dt.date(2026, 7, 16)
        assert local_date(utc(2026, 7, 15, 23, 30), LOS_ANGELES) == dt.date(2026, 7, 15)


# Properties --------------------------------------------------------------------------------------

ZONES = [LONDON, AUCKLAND, LOS_ANGELES, HAVANA, ZoneInfo("UTC"), ZoneInfo("Asia/Kolkata")]
instants = st.datetimes(
    min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2030, 12, 31), timezones=st.just(UTC)
)
zones = st.sampled_from(ZONES)
closures = st.lists(
    st.tuples(st.dates(dt.date(2024, 12, 1), dt.date(2031, 1, 1)), st.integers(0, 40)).map(
        lambda c: Closure.model_validate({"from": c[0], "to": c[0] + dt.timedelta(days=c[1])})
    ),
    max_size=4,
)
calendars = st.builds(
    Calendar,
    school_days=st.sets(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1).map(
        tuple
    ),
    closures=closures.map(tuple),
)
deadlines: st.SearchStrategy[Deadline] = st.one_of(
    st.just("same_day"),
    st.builds(Hours, hours=st.floats(0.01, 500)),
    st.builds(SchoolDays, school_days=st.integers(0, 60)),
    st.builds(WorkingDays, working_days=st.integers(0, 60)),
    st.builds(CalendarDays, calendar_days=st.integers(0, 366)),
)


@settings(max_examples=300, deadline=None)
@given(deadline=deadlines, ended=instants, calendar=calendars, tz=zones)
def test_never_due_before_the_episode_ended(
    deadline: Deadline, ended: dt.datetime, calendar: Calendar, tz: ZoneInfo
) -> None:
    due = due_at(deadline, ended, calendar, tz)
    assert due is not None and due >= ended and due.tzinfo is UTC


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 30), ended=instants, calendar=calendars, tz=zones)
def test_monotone_in_the_count(n: int, ended: dt.datetime, calendar: Calendar, tz: ZoneInfo) -> None:
    pairs: list[tuple[Deadline, Deadline]] = [
        (SchoolDays(school_days=n), SchoolDays(school_days=n + 1)),
        (WorkingDays(working_days=n), WorkingDays(working_days=n + 1)),
        (CalendarDays(calendar_days=n), CalendarDays(calendar_days=n + 1)),
        (Hours(hours=n + 1), Hours(hours=n + 2)),
    ]
    for fewer, more in pairs:
        early, late = due_at(fewer, ended, calendar, tz), due_at(more, ended, calendar, tz)
        assert early is not None and late is not None and early <= late
    # 1 school day is never earlier than the same day, nor than 0 school days
    same_day = due_at("same_day", ended, calendar, tz)
    one = due_at(SchoolDays(school_days=1), ended, calendar, tz)
    assert same_day is not None and one is not None and same_day < one


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 60), ended=instants, calendar=calendars, tz=zones)
def test_school_days_end_at_a_local_midnight_ending_a_school_day(
    n: int, ended: dt.datetime, calendar: Calendar, tz: ZoneInfo
) -> None:
    due = due_at(SchoolDays(school_days=n), ended, calendar, tz)
    assert due is not None
    last_day = local_date(due - dt.timedelta(microseconds=1), tz)
    assert is_school_day(last_day, calendar)
    assert due == end_of_local_day(last_day, tz)
    # exactly n school days lie after the end date up to and including that day (n = 0: at most the
    # end date itself, or none)
    end_date = local_date(ended, tz)
    between = sum(
        is_school_day(end_date + dt.timedelta(days=i), calendar)
        for i in range(1, (last_day - end_date).days + 1)
    )
    assert between == max(n, 1) or (n == 0 and last_day == end_date)


@settings(max_examples=300, deadline=None)
@given(day=st.dates(dt.date(2025, 1, 1), dt.date(2030, 12, 31)), tz=zones)
def test_local_days_meet_without_gap_and_hold_their_own_date(day: dt.date, tz: ZoneInfo) -> None:
    start, end = start_of_local_day(day, tz), end_of_local_day(day, tz)
    assert start == end_of_local_day(day - dt.timedelta(days=1), tz)
    assert dt.timedelta(hours=22) <= end - start <= dt.timedelta(hours=26)
    assert local_date(start, tz) == day
    assert local_date(end - dt.timedelta(microseconds=1), tz) == day
    assert local_date(end, tz) == day + dt.timedelta(days=1)
