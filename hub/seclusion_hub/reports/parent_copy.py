"""The parents' written copy: what happened to their child, in plain English, as HTML and PDF.

Guidance in England (2026) says every use of seclusion is reported to parents in writing. This module
turns an episode's figures and the staff's record into that letter. It takes only what it prints: the
child's names, adults' names and the school's own words, so nothing about another child can reach it.
The wording lives in `templates/parent_copy.html`; the helpers here (dates, durations, the Jinja
environment, the PDF) are shared with the governors' report.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from markupsafe import Markup

# "not recorded": the room has no sensor on its lock, so the copy cannot say whether it was locked or held.
LockState = Literal["locked", "held shut", "not locked", "not recorded"]
LOCK_STATES: Final[frozenset[str]] = frozenset({"locked", "held shut", "not locked", "not recorded"})

# What the monitoring recorded in each supervision mode, and what it did not: the sensors show a person
# at the viewing panel or a check-in, not what anyone saw (semantics 3.5).
WATCH_WORDS: Final[dict[str, tuple[str, str]]] = {
    "observer": ("a member of staff at the viewing panel", "anyone at the viewing panel"),
    "checkin": (
        "staff check-ins at the viewing panel, at the intervals the school sets,",
        "a check-in in time",
    ),
    "both": (
        "a member of staff at the viewing panel, with check-ins at the intervals the school sets,",
        "both a member of staff at the panel and a check-in in time",
    ),
}

# What the system could not tell while part of the equipment sent no readings, and what it records at
# all (never what anyone saw), in each supervision mode.
UNKNOWN_WORDS: Final[dict[str, str]] = {
    "observer": "whether anyone was at the viewing panel",
    "checkin": "whether check-ins were made",
    "both": "whether anyone was at the viewing panel or whether check-ins were made",
}
LIMIT_WORDS: Final[dict[str, str]] = {
    "observer": "The system records whether someone was at the viewing panel, not what they saw.",
    "checkin": "The system records whether check-ins were made, not what staff saw.",
    "both": (
        "The system records whether someone was at the viewing panel and whether check-ins were made, "
        "not what staff saw."
    ),
}

# Spelled out rather than strftime's %A / %B, which follow the process locale: the copy is always in
# British English, whatever the server's LANG.
_DAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@dataclass(frozen=True)
class StaffMember:
    """An adult who was involved, as the parents should read it: a name and, when known, a role."""

    name: str
    role: str | None = None


@dataclass(frozen=True)
class Correction:
    """A dated correction the school made to the record after it was completed (an addendum), as the
    parents read it: when, which part of this letter it corrects (None: the record in general), and the
    school's words."""

    at: dt.datetime
    part: str | None
    text: str


@dataclass(frozen=True)
class ParentCopy:
    """Everything the parents' written copy says, already decided; `None` means "not recorded".

    Datetimes are UTC-aware instants; they are shown in `site_timezone` (an IANA name such as
    `Europe/London`). The `*_s` figures are the episode's accounting (semantics 2.6 and 3.4), in seconds.
    `room_name` is written as parents would say it ("the calm room"). Free-text fields are the school's
    own words; blank lines in them separate paragraphs. They are escaped, never read as HTML.
    """

    school_name: str
    site_timezone: str
    child_first_name: str
    child_full_name: str
    started_at: dt.datetime
    ended_at: dt.datetime
    segments: Sequence[tuple[dt.datetime, dt.datetime]]
    elapsed_s: float
    duration_s: float
    supervised_s: float
    unsupervised_s: float
    unknown_s: float
    longest_lapse_s: float
    locked_or_held: LockState
    room_name: str
    staff: Sequence[StaffMember]
    generated_at: dt.datetime
    # How the room proves supervision (semantics 3): what the sensors could show, and so what the copy
    # may say they recorded (a person at the panel, check-ins), never that the child was watched.
    supervision: str = "observer"
    what_happened_before: str | None = None
    reason: str | None = None
    de_escalation: str | None = None
    condition_and_injuries: str | None = None
    first_aid: str | None = None
    child_views: str | None = None
    what_will_change: str | None = None
    # A date, or an aware datetime when a time is set too (shown in the site's timezone).
    follow_up: dt.date | None = None
    contact_name: str | None = None
    contact_phone: str | None = None
    # The monitoring did not record the start (or the end) exactly, or staff entered the episode by hand:
    # the copy then says so rather than show the times as exact.
    start_uncertain: bool = False
    end_uncertain: bool = False
    manual: bool = False
    # Some of a device's readings may be missing (a gap in its numbering): the times and supervision
    # shown may be incomplete, and the copy never says "for the whole time".
    possible_loss: bool = False
    # The record calls it the child's own use of the calm room (semantics 2.2), with the reason given.
    voluntary_reason: str | None = None
    # The record calls it seclusion: the child was kept in the room, whatever the lock showed (a door
    # with no lock sensor, or one a child believed they could not open).
    seclusion: bool = False
    # Corrections made after the record was signed off, oldest first: the record itself no longer
    # changes, so a copy made later carries them, or the parents would read what the school corrected.
    corrections: Sequence[Correction] = ()
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    @property
    def kept_in(self) -> bool:
        """Confinement said as it was: "kept in", never "spent", for a locked or held door or a record
        of seclusion."""
        return self.seclusion or self.locked_or_held in ("locked", "held shut")

    def __post_init__(self) -> None:
        # A copy that is wrong about its own times must fail here, not reach a parent.
        try:
            zone = ZoneInfo(self.site_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown site timezone {self.site_timezone!r}") from exc
        object.__setattr__(self, "zone", zone)
        # Tuples: the dataclass is frozen, its sequences should not change under it either.
        object.__setattr__(self, "segments", tuple((start, end) for start, end in self.segments))
        object.__setattr__(self, "staff", tuple(self.staff))
        object.__setattr__(self, "corrections", tuple(self.corrections))
        instants = [self.started_at, self.ended_at, self.generated_at, *(c.at for c in self.corrections)]
        instants += [moment for segment in self.segments for moment in segment]
        if isinstance(self.follow_up, dt.datetime):
            instants.append(self.follow_up)
        for moment in instants:
            _require_aware(moment)
        if self.ended_at < self.started_at:
            raise ValueError("the episode ends before it starts")
        for start, end in self.segments:
            if end < start:
                raise ValueError("a segment ends before it starts")
        if self.supervision not in WATCH_WORDS:
            raise ValueError(f"supervision must be one of {sorted(WATCH_WORDS)}")
        if self.locked_or_held not in LOCK_STATES:
            raise ValueError(f"locked_or_held must be one of {sorted(LOCK_STATES)}")
        figures = (
            self.elapsed_s,
            self.duration_s,
            self.supervised_s,
            self.unsupervised_s,
            self.unknown_s,
            self.longest_lapse_s,
        )
        if any(value < 0 for value in figures):
            raise ValueError("durations cannot be negative")
        if not self.child_first_name.strip():
            raise ValueError("the child's first name is needed: the copy speaks of the child by name")


def _require_aware(moment: dt.datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: give an aware (UTC) instant")


def format_duration(seconds: float) -> str:
    """A duration in plain words: seconds under a minute, otherwise whole minutes ("12 minutes").

    Seconds and minutes are rounded up, never down: the hub never under-counts a confinement
    (semantics), so a parent is never told "12 minutes" about 12 and a half, nor "12 minutes" about
    720.4 seconds (times are to the millisecond). The pages say the same (record_pages.duration_words).
    """
    # A float a hair above a whole second (or minute) is that second.
    return _duration_words(math.ceil(seconds - 1e-9), math.ceil(seconds / 60 - 1e-9))


def format_duration_down(seconds: float) -> str:
    """A duration rounded down, for supervised time only: supervision is never flattered (541 seconds of
    supervision is "9 minutes", not "10"), as the governors' report rounds its supervised share down."""
    # A float a hair below a whole second (or minute) is that second.
    return _duration_words(math.floor(seconds + 1e-9), math.floor(seconds / 60 + 1e-9))


def _duration_words(whole_seconds: int, minutes: int) -> str:
    """Seconds under a minute, otherwise whole minutes, each already rounded the caller's way."""
    if whole_seconds < 60:
        return "1 second" if whole_seconds == 1 else f"{whole_seconds} seconds"
    return "1 minute" if minutes == 1 else f"{minutes:,} minutes"


def format_date(day: dt.date) -> str:
    """A date as in a letter: "Tuesday 3 November 2026"."""
    return f"{_DAYS[day.weekday()]} {day.day} {MONTHS[day.month - 1]} {day.year}"


def format_time(moment: dt.datetime, zone: ZoneInfo, *, with_zone: bool = False) -> str:
    """The local clock time of an aware instant ("10:02"), with the zone's abbreviation on request."""
    local = moment.astimezone(zone)
    text = f"{local:%H:%M}"
    if with_zone:
        text += f" {local.tzname()}"
    return text


def format_moment(moment: dt.datetime, zone: ZoneInfo) -> str:
    """A local date and time: "Tuesday 3 November 2026 at 10:02"."""
    local = moment.astimezone(zone)
    return f"{format_date(local.date())} at {format_time(moment, zone)}"


def offsets_differ(moments: Sequence[dt.datetime], zone: ZoneInfo) -> bool:
    """Whether bare clock times would mislead: the instants fall on both sides of a clock change, or one
    falls in the hour the clocks go back, which the wall clocks show twice ("01:10" then needs its zone,
    as the record page gives it)."""
    local = [moment.astimezone(zone) for moment in moments]
    if len({t.utcoffset() for t in local}) > 1:
        return True
    return any(t.replace(fold=0).utcoffset() != t.replace(fold=1).utcoffset() for t in local)


def format_span(start: dt.datetime, end: dt.datetime, zone: ZoneInfo, *, with_zone: bool = False) -> str:
    """A local interval: "Tuesday 3 November 2026, 10:02 to 10:14", naming the day twice if it changes."""
    first, last = start.astimezone(zone), end.astimezone(zone)
    opening = f"{format_date(first.date())}, {format_time(start, zone, with_zone=with_zone)}"
    if first.date() == last.date():
        return f"{opening} to {format_time(end, zone, with_zone=with_zone)}"
    return f"{opening} to {format_date(last.date())}, {format_time(end, zone, with_zone=with_zone)}"


def paragraphs(text: str) -> Markup:
    """Free text as escaped HTML paragraphs, one per blank-line-separated block (line breaks kept)."""
    blocks = [block.strip() for block in text.replace("\r\n", "\n").split("\n\n")]
    # Markup.format escapes its arguments: the school's words can never become markup.
    return Markup("\n").join(
        Markup("<p>{}</p>").format(Markup("<br>\n").join(block.split("\n"))) for block in blocks if block
    )


def capfirst(text: str) -> str:
    """The text with its first letter capitalised, the rest untouched: "the calm room" -> "The calm room"."""
    return text[:1].upper() + text[1:]


@cache
def environment() -> jinja2.Environment:
    """The reports' Jinja environment: package templates, autoescaping, and undefined names an error."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("seclusion_hub.reports", "templates"),
        autoescape=jinja2.select_autoescape(),
        # A misspelt variable must fail the render, not print an empty string in a letter to parents.
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["paragraphs"] = paragraphs
    env.filters["duration"] = format_duration
    env.filters["duration_down"] = format_duration_down
    env.filters["capfirst"] = capfirst
    return env


def html_to_pdf(html: str) -> bytes:
    """Print an HTML document to PDF with WeasyPrint: tagged (PDF/UA-1) so screen readers can follow it.

    The documents reference nothing outside themselves (CSS inline, system fonts), so nothing is fetched.
    """
    # Imported here, not at the top: WeasyPrint loads Pango when imported, and the hub's other work
    # (ingest, alerts, the API) must not depend on it.
    import weasyprint

    pdf = weasyprint.HTML(string=html).write_pdf(pdf_variant="pdf/ua-1")
    if not isinstance(pdf, bytes):
        raise TypeError(f"WeasyPrint returned {type(pdf).__name__}, not bytes")
    return pdf


def _is_blank(value: str | None) -> bool:
    return value is None or not value.strip()


def _context(copy: ParentCopy) -> dict[str, object]:
    zone = copy.zone
    moments = [copy.started_at, copy.ended_at, *(moment for segment in copy.segments for moment in segment)]
    # Across the October or March change, "01:50 to 01:20" is true but baffling: name the zones then.
    with_zone = offsets_differ(moments, zone)
    # An episode past midnight needs the day in the table too, or its rows would read out of order.
    several_days = len({moment.astimezone(zone).date() for moment in moments}) > 1

    def cell(moment: dt.datetime) -> str:
        time = format_time(moment, zone, with_zone=with_zone)
        return f"{format_date(moment.astimezone(zone).date())}, {time}" if several_days else time

    segments = [
        {"closed": cell(start), "opened": cell(end), "length": format_duration((end - start).total_seconds())}
        for start, end in copy.segments
    ]
    follow_up: str | None
    if copy.follow_up is None:
        follow_up = None
    elif isinstance(copy.follow_up, dt.datetime):
        follow_up = format_moment(copy.follow_up, zone)
    else:
        follow_up = format_date(copy.follow_up)
    texts = {
        name: None if _is_blank(value) else value
        for name, value in {
            "what_happened_before": copy.what_happened_before,
            "reason": copy.reason,
            "de_escalation": copy.de_escalation,
            "condition_and_injuries": copy.condition_and_injuries,
            "first_aid": copy.first_aid,
            "child_views": copy.child_views,
            "what_will_change": copy.what_will_change,
        }.items()
    }
    return {
        "copy": copy,
        "name": copy.child_first_name.strip(),
        "when": format_span(copy.started_at, copy.ended_at, zone, with_zone=with_zone),
        "date": format_date(copy.started_at.astimezone(zone).date()),
        "with_zone": with_zone,
        "segments": segments,
        "reopened": max(len(copy.segments) - 1, 0),
        "supervised_throughout": copy.unsupervised_s == 0 and copy.unknown_s == 0 and not copy.possible_loss,
        "recorded_watch": WATCH_WORDS[copy.supervision][0],
        "not_recorded": WATCH_WORDS[copy.supervision][1],
        "could_not_tell": UNKNOWN_WORDS[copy.supervision],
        "records_only": LIMIT_WORDS[copy.supervision],
        "follow_up": follow_up,
        "generated": format_moment(copy.generated_at, zone),
        "staff": [member for member in copy.staff if not _is_blank(member.name)],
        "contact_name": None if _is_blank(copy.contact_name) else copy.contact_name,
        "contact_phone": None if _is_blank(copy.contact_phone) else copy.contact_phone,
        "corrections": [
            {"when": format_moment(c.at, zone), "part": c.part, "text": c.text}
            for c in copy.corrections
            if not _is_blank(c.text)
        ],
        **texts,
    }


def render_html(copy: ParentCopy) -> str:
    """The parents' written copy as a standalone, accessible HTML page (CSS inline, nothing fetched)."""
    return environment().get_template("parent_copy.html").render(_context(copy))


def render_pdf(copy: ParentCopy) -> bytes:
    """The parents' written copy as a PDF, printed by WeasyPrint from the same HTML as `render_html`."""
    return html_to_pdf(render_html(copy))
