"""The governors' termly report: how often seclusion was used, for how long, and how well it was run.

It is printed from figures computed elsewhere, suppression included: a breakdown figure about fewer than
five children arrives as `None` and prints as "fewer than 5", so that no child can be picked out. The
report names no child: its input has no field that could hold a child's name.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .parent_copy import environment, format_date, format_moment, html_to_pdf

SUPPRESSION_THRESHOLD: Final = 5
SUPPRESSED_TEXT: Final = f"fewer than {SUPPRESSION_THRESHOLD}"
WITHHELD_IN_TABLE: Final = "withheld"
WITHHELD_MINUTES: Final = f"not shown (fewer than {SUPPRESSION_THRESHOLD} episodes)"


@dataclass(frozen=True)
class Count:
    """One labelled figure of a breakdown (a month, a room, a group); `count=None` is "withheld" (a count
    of fewer than 5, or one withheld with it);
    `partial`: a month only partly inside the period (printed so: its count is of fewer days)."""

    label: str
    count: int | None
    partial: bool = False


@dataclass(frozen=True)
class GovernorsReport:
    """The figures of one term's report, already computed and with small numbers already suppressed.

    `supervised_share` is the fraction (0 to 1) of confined time recorded as supervised, `None` when
    there was no confined time. `trend` is episodes per month in order; `by_room` episodes per room;
    `by_group` children per group (year group, SEN support, looked after...), each `None` when it
    covered fewer than 5 children. `children` may be `None` for the same reason.
    """

    school_name: str
    period_start: dt.date
    period_end: dt.date
    episodes: int | None
    children: int | None
    total_minutes: float | None  # None with the episodes: 1 to 4 episodes' minutes give each one away
    median_minutes: float | None
    supervised_share: float | None
    lapses: int | None
    records_late: int | None
    parent_copies_late: int | None
    trend: Sequence[Count]
    by_room: Sequence[Count]
    by_group: Sequence[Count]
    generated_at: dt.datetime
    site_timezone: str = "Europe/London"
    period_label: str | None = None  # "Autumn term 2026"
    # Episodes a completed record classifies as the child's own use of the calm room: counted apart,
    # in none of the figures above (semantics 2.2); None when fewer than 5.
    voluntary: int | None = 0
    no_child: int | None = 0  # recorded as no child in the room (a sensor still reported one)
    # The fraction of confined time the system could not tell whether anyone supervised (a device
    # offline, an episode entered by hand), rounded up; None or 0: the row is left out.
    unknown_share: float | None = None
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.site_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown site timezone {self.site_timezone!r}") from exc
        object.__setattr__(self, "zone", zone)
        for name in ("trend", "by_room", "by_group"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.generated_at.tzinfo is None or self.generated_at.utcoffset() is None:
            raise ValueError("generated_at must be an aware (UTC) instant")
        if self.period_end < self.period_start:
            raise ValueError("the period ends before it starts")
        counts = [self.episodes, self.lapses, self.records_late, self.parent_copies_late, self.children]
        counts += [self.voluntary, self.no_child]
        counts += [row.count for row in (*self.trend, *self.by_room, *self.by_group)]
        if any(value is not None and value < 0 for value in counts):
            raise ValueError("counts cannot be negative")
        minutes = (self.total_minutes, self.median_minutes)
        if any(m is not None and m < 0 for m in minutes):
            raise ValueError("minutes cannot be negative")
        if self.supervised_share is not None and not 0 <= self.supervised_share <= 1:
            raise ValueError("supervised_share is a fraction between 0 and 1")
        # Suppression is the caller's job, but a figure of 1 to 4 printed by mistake could identify a
        # child: refuse it rather than print it.
        for row in self.by_group:
            if row.count is not None and 0 < row.count < SUPPRESSION_THRESHOLD:
                raise ValueError(
                    f"group {row.label!r} has {row.count} children: suppress it (None) before rendering"
                )
        named = {
            "episodes": self.episodes,
            "children": self.children,
            "lapses": self.lapses,
            "records_late": self.records_late,
            "parent_copies_late": self.parent_copies_late,
            "voluntary": self.voluntary,
            "no_child": self.no_child,
        }
        named |= {f"trend {row.label!r}": row.count for row in self.trend}
        named |= {f"by_room {row.label!r}": row.count for row in self.by_room}
        for name, value in named.items():
            if value is not None and 0 < value < SUPPRESSION_THRESHOLD:
                raise ValueError(f"{name} is {value}: suppress it (None) before rendering")
        if self.episodes is None and self.total_minutes is not None:
            raise ValueError("total_minutes of a suppressed episode count: suppress it (None) too")


def format_count(count: int | None) -> str:
    """A count as printed: "fewer than 5" when suppressed (`None`), never a number then."""
    return SUPPRESSED_TEXT if count is None else f"{count:,}"


def format_minutes(minutes: float) -> str:
    """Minutes to at most one decimal place: "12 minutes", "11.5 minutes", "1 minute"."""
    text = f"{minutes:,.1f}".removesuffix(".0")
    return "1 minute" if text == "1" else f"{text} minutes"


def percent_down(share: float) -> int:
    """A fraction as a whole percentage, rounded down so that supervision is never flattered. The small
    epsilon keeps 0.29 (stored as 0.28999...) at 29 %, not 28 %."""
    return math.floor(share * 100 + 1e-9)


def format_share(share: float | None) -> str:
    """A fraction as a whole percentage, rounded down (`percent_down`)."""
    if share is None:
        return "no time to report"
    return f"{percent_down(share)}%"


def _median(report: GovernorsReport) -> str:
    if report.median_minutes is not None:
        return format_minutes(report.median_minutes)
    return WITHHELD_MINUTES if report.episodes is None else "none"


def _rows(counts: Sequence[Count], *, bars: bool = False) -> list[dict[str, object]]:
    known = [row.count for row in counts if row.count is not None]
    top = max(known, default=0)
    return [
        {
            "label": f"{row.label} (partial)" if row.partial else row.label,
            # In a table a count may be withheld with a small one (so that the total, or another table,
            # does not give the small one back): "fewer than 5" would be untrue of it.
            "text": WITHHELD_IN_TABLE if row.count is None else format_count(row.count),
            # A bar up to 10em long. None for a suppressed figure: its length would give the number away.
            "bar": f"{10 * row.count / top:.2f}em" if bars and top and row.count else None,
        }
        for row in counts
    ]


def _context(report: GovernorsReport) -> dict[str, object]:
    period = f"{format_date(report.period_start)} to {format_date(report.period_end)}"
    return {
        "report": report,
        "period": period,
        "title": report.period_label or period,
        "episodes": format_count(report.episodes),
        "children": format_count(report.children),
        # Up: time is never under-counted. Withheld with a suppressed episode count.
        "total": WITHHELD_MINUTES
        if report.total_minutes is None
        else f"{math.ceil(report.total_minutes):,} minutes",
        "median": _median(report),
        "supervised": format_share(report.supervised_share),
        "unknown": None if not report.unknown_share else f"{math.ceil(report.unknown_share * 100 - 1e-9)}%",
        "lapses": format_count(report.lapses),
        "records_late": format_count(report.records_late),
        "parent_copies_late": format_count(report.parent_copies_late),
        "voluntary": format_count(report.voluntary),
        "no_child": format_count(report.no_child),
        "trend": _rows(report.trend, bars=True),
        "partial_months": any(row.partial for row in report.trend),
        "by_room": _rows(report.by_room),
        "by_group": _rows(report.by_group),
        "threshold": SUPPRESSION_THRESHOLD,
        "generated": format_moment(report.generated_at, report.zone),
    }


def render_governors_html(report: GovernorsReport) -> str:
    """The governors' termly report as a standalone, accessible HTML page (no child is named in it)."""
    return environment().get_template("governors.html").render(_context(report))


def render_governors_pdf(report: GovernorsReport) -> bytes:
    """The governors' termly report as a PDF, printed by WeasyPrint from `render_governors_html`."""
    return html_to_pdf(render_governors_html(report))
