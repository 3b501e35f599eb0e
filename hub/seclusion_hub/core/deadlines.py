"""When a record, a parent notice, a parent copy or an authority report is due (semantics 6): pure rules.

Time is an input: every function takes the episode's `ended_at` (timezone-aware) and returns a UTC
instant. The site's timezone and calendar (site.py `Calendar`) say where days begin and which days count.
These are decisions, written in docs/review.md ("Deadlines"):

- **End of a local day D** is local midnight at the start of D + 1 in the site's timezone, as a UTC
  instant. Days are not all 24 hours long: in Europe/London the day the clocks go back (the last Sunday
  of October) lasts 25 hours and the day they go forward (the last Sunday of March) 23. Where a zone's
  clocks change at midnight itself (Havana, Santiago), the end of D is the moment after which the wall
  clocks never show D again: the jump, for a skipped midnight.
- `same_day`: the end of the local day on which the episode ended, even when that is not a school day (a
  residential setting runs at weekends, and earlier is the safe side).
- `{hours: N}`: `ended_at` + N hours of real time, whatever the clocks on the wall do meanwhile.
- `{calendar_days: N}`: the end of the local day (end date + N); 0 is the same as `same_day`.
- `{school_days: N}`: the end of the N-th school day after the local end date. A school day is a weekday
  listed in `calendar.school_days` that falls inside no closure (closures include both their dates).
  N = 0: the end of the end date if it is a school day, else the end of the next school day; so an
  episode on a Saturday is due by the end of Monday for both 0 and 1 school day.
- `{working_days: N}`: as school days, but counting Monday to Friday whatever `calendar.school_days`
  says, outside the calendar's closures (policies.md: "School days and working days come from the
  site's calendar (Mon to Fri, plus configured closures)"). A site lists the bank holidays among its
  closures for them not to count; a closure is a day nobody at the school can do what the deadline asks.
- A calendar with no school day within `SEARCH_LIMIT_DAYS` of the end date (no school days listed, or
  closures covering years) is a configuration error: `ValueError` saying so, never an endless search.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from .policy import CalendarDays, Deadline, Hours, Policy, SchoolDays, WorkingDays
from .site import Calendar, Weekday

WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WORKING_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
# The longest a deadline may search forward for a day that counts: three years, leap days included.
# A real school calendar has a school day within weeks; this only stops a broken one looping forever.
SEARCH_LIMIT_DAYS = 3 * 366
_INSTANT = dt.timedelta(microseconds=1)  # the resolution of datetime: "the moment before"


@dataclass(frozen=True)
class DueDates:
    """The four deadlines of one incident, UTC instants; None where the profile sets no deadline."""

    record: dt.datetime
    parent_notice: dt.datetime
    parent_copy: dt.datetime | None
    authority_notice: dt.datetime | None


def weekday(day: dt.date) -> Weekday:
    """The date's weekday as the site file writes it: `mon` to `sun`."""
    return WEEKDAYS[day.weekday()]


def in_closure(day: dt.date, calendar: Calendar) -> bool:
    """Whether the date falls inside one of the calendar's closures (both end dates included)."""
    return any(closure.from_ <= day <= closure.to for closure in calendar.closures)


def is_school_day(day: dt.date, calendar: Calendar) -> bool:
    """A weekday listed in `calendar.school_days` that is inside no closure."""
    return weekday(day) in calendar.school_days and not in_closure(day, calendar)


def is_working_day(day: dt.date, calendar: Calendar) -> bool:
    """Monday to Friday inside no closure, whatever days the school teaches (the module's docstring)."""
    return day.weekday() < 5 and not in_closure(day, calendar)


def next_school_day(day: dt.date, calendar: Calendar) -> dt.date:
    """The first school day strictly after `day`. `ValueError` if there is none within
    `SEARCH_LIMIT_DAYS`."""
    return _nth_counted_day(day, 1, lambda d: is_school_day(d, calendar), "school day")


def nth_school_day(day: dt.date, n: int, calendar: Calendar) -> dt.date:
    """The n-th school day after `day`; for n = 0, `day` itself if it is a school day, else the next."""
    return _nth_counted_day(day, n, lambda d: is_school_day(d, calendar), "school day")


def nth_working_day(day: dt.date, n: int, calendar: Calendar) -> dt.date:
    """The n-th working day (Monday to Friday outside the closures) after `day`; for n = 0, `day` itself
    if it is one, else the next."""
    return _nth_counted_day(day, n, lambda d: is_working_day(d, calendar), "working day")


def _nth_counted_day(day: dt.date, n: int, counts: Callable[[dt.date], bool], what: str) -> dt.date:
    if n < 0:
        raise ValueError(f"{n} is not a number of {what}s: it cannot be negative")
    if n == 0 and counts(day):
        return day
    wanted = max(n, 1)  # n = 0 on a day that does not count: the next one that does
    found = 0
    candidate = day
    for _ in range(SEARCH_LIMIT_DAYS):
        candidate += dt.timedelta(days=1)
        if counts(candidate):
            found += 1
            if found == wanted:
                return candidate
    raise ValueError(
        f"no {what} found within {SEARCH_LIMIT_DAYS} days after {day.isoformat()} "
        f"({found} of {wanted} counted): check the calendar's school_days and closures"
    )


def end_of_local_day(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """The end of the local date `day` in `tz`, in UTC: the local midnight that starts the next date
    (23, 24 or 25 hours after the day's start where the clocks change)."""
    midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    # A change of the clocks at midnight makes local midnight skipped or repeated; PEP 495 gives two
    # readings (fold 0 and 1). The day ends at the later reading after which the wall clock never shows
    # `day` again: for a skipped midnight that is the jump itself, for a repeated one whichever
    # midnight follows the last moment of `day`. For an ordinary midnight both readings agree.
    readings = {
        midnight.astimezone(dt.UTC),
        midnight.replace(fold=1).astimezone(dt.UTC),
    }
    ends = [at for at in readings if (at - _INSTANT).astimezone(tz).date() <= day]
    return max(ends) if ends else min(readings)


def start_of_local_day(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """The first instant of the local date `day` in `tz`, in UTC: the end of the day before, so that
    consecutive days (and the weeks and months made of them) meet without a gap or an overlap."""
    return end_of_local_day(day - dt.timedelta(days=1), tz)


def local_date(at: dt.datetime, tz: dt.tzinfo) -> dt.date:
    """The date on the site's wall clocks at the instant `at` (timezone-aware)."""
    return _aware(at, "at").astimezone(tz).date()


def _aware(at: dt.datetime, name: str) -> dt.datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} {at.isoformat()} has no timezone: every time must be timezone-aware")
    return at


def due_at(
    deadline: Deadline | None, ended_at: dt.datetime, calendar: Calendar, tz: ZoneInfo
) -> dt.datetime | None:
    """When something with this deadline is due, for an episode that ended at `ended_at`, as a UTC
    instant; None when there is no deadline. The forms are described in the module's docstring.
    `ValueError` for a naive `ended_at` or a calendar without school days."""
    _aware(ended_at, "ended_at")
    return None if deadline is None else _due(deadline, ended_at, calendar, tz)


def _due(deadline: Deadline, ended_at: dt.datetime, calendar: Calendar, tz: ZoneInfo) -> dt.datetime:
    ended = _aware(ended_at, "ended_at").astimezone(dt.UTC)
    if isinstance(deadline, Hours):
        return ended + dt.timedelta(hours=deadline.hours)
    day = ended.astimezone(tz).date()
    if isinstance(deadline, CalendarDays):
        return end_of_local_day(day + dt.timedelta(days=deadline.calendar_days), tz)
    if isinstance(deadline, SchoolDays):
        return end_of_local_day(nth_school_day(day, deadline.school_days, calendar), tz)
    if isinstance(deadline, WorkingDays):
        return end_of_local_day(nth_working_day(day, deadline.working_days, calendar), tz)
    if deadline == "same_day":
        return end_of_local_day(day, tz)
    raise TypeError(f"{deadline!r} is not a deadline")


def due_dates(policy: Policy, ended_at: dt.datetime, calendar: Calendar, tz: ZoneInfo) -> DueDates:
    """The record, parent notice, parent copy and authority notice deadlines of an episode that ended at
    `ended_at`, under the room's policy, in the site's calendar and timezone. `ValueError` as `due_at`."""
    _aware(ended_at, "ended_at")
    return DueDates(
        record=_due(policy.record_due, ended_at, calendar, tz),
        parent_notice=_due(policy.parent_notice_due, ended_at, calendar, tz),
        parent_copy=due_at(policy.parent_copy_due, ended_at, calendar, tz),
        authority_notice=due_at(policy.authority_notice_due, ended_at, calendar, tz),
    )
