"""An episode, its segments and the intervals that decide how its time is accounted (semantics 2 and 3).

Pure: the accounting is a function of what the episode recorded and the time it is asked about.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from seclusion_contract import truncate_ms

Mode = Literal["observer", "checkin", "both"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class Segment(_Model):
    """One confinement interval: the door closed at `start`, opened at `end` (None while closed)."""

    start: dt.datetime
    end: dt.datetime | None = None


class ObserverMark(_Model):
    """From `ts` on, the viewing-panel sensor read `present` (True) or `absent` (False)."""

    ts: dt.datetime
    present: bool


class QuietSpell(_Model):
    """A spell in which the room's occupancy sensor read no movement (`vacant`) during the episode,
    longer than the profile's `no_movement_s`, from its start (or the episode's) to the next movement
    or the episode's end. Kept so that one learnt of late (a replay, the hub's backlog) is still
    raised as `no_movement`, late, as a lapse revealed that way is (semantics 4.3)."""

    start: dt.datetime
    end: dt.datetime


class UnknownInterval(_Model):
    """Time the room's state could not be known because `device` was offline."""

    device: str
    start: dt.datetime
    end: dt.datetime | None = None


class ReviewRecord(_Model):
    """A recurring action of the policy's `reviews`, recorded by a person (semantics 2.6)."""

    name: str
    at: dt.datetime
    by: str
    note: str = ""


class Episode(_Model):
    """A period in which a child is confined: the room occupied with its door closed (semantics 2)."""

    id: str
    site: str
    room: str
    number: int
    started_at: dt.datetime
    start_uncertain: bool = False
    earliest_start: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    end_uncertain: bool = False
    end_earliest: dt.datetime | None = None
    locked: bool = False
    lock_type: str | None = None
    locked_at: dt.datetime | None = None  # the first time it was locked or held during the episode
    lock_engaged_at: dt.datetime | None = None  # the start of the latest engagement (a re-lock moves it)
    segments: list[Segment]
    manual: bool = False
    test: bool = False
    incident_id: str
    pupil_id: str | None = None
    pupil_age: int | None = None  # the child's age when known (age bands, 2.6); the register is the hub's
    possible_loss: bool = False
    clock_uncertain: bool = False
    supervision: Mode = "observer"
    checkin_interval_s: float = 60.0
    observer: list[ObserverMark] = []
    checks: list[dt.datetime] = []
    unknown: list[UnknownInterval] = []
    reviews: list[ReviewRecord] = []
    quiet: list[QuietSpell] = []

    @property
    def is_open(self) -> bool:
        return self.ended_at is None

    def end_or(self, now: dt.datetime) -> dt.datetime:
        """When the episode ended, or `now` while it is open (never before its start)."""
        # The contract's precision is the millisecond: so is every boundary, and the parts add up exactly.
        end = self.ended_at if self.ended_at is not None else truncate_ms(now)
        return max(end, self.started_at)

    def elapsed_s(self, now: dt.datetime) -> float:
        """From `started_at` to `ended_at` or now: the reading that never under-counts."""
        return seconds(self.end_or(now) - self.started_at)

    def duration_s(self, now: dt.datetime) -> float:
        """The sum of the segments; a segment still running counts up to now."""
        end_all = self.end_or(now)
        total = 0.0
        for seg in self.segments:
            seg_end = seg.end if seg.end is not None else end_all
            if seg_end > seg.start:
                total += seconds(seg_end - seg.start)
        return round(total, 3)


def seconds(delta: dt.timedelta) -> float:
    """A duration in seconds to the millisecond, as the contract prints durations."""
    return round(delta.total_seconds(), 3)


State = Literal["supervised", "unsupervised", "unknown"]


@dataclass(frozen=True, slots=True)
class Lapse:
    start: dt.datetime
    end: dt.datetime

    @property
    def seconds(self) -> float:
        return seconds(self.end - self.start)


@dataclass(frozen=True, slots=True)
class Accounting:
    """How an episode's elapsed time divides (semantics 3.4); the three sums partition `elapsed_s`."""

    supervised_s: float
    unsupervised_s: float
    unknown_s: float
    lapses: tuple[Lapse, ...] = field(default=())
    state_now: State | None = None
    # Supervision was seen at the very end, only for that instant (see `_seen_at`): the last lapse, which
    # ends there, is over, and an absence going on now is a new lapse that has only just begun.
    seen_at_end: bool = False

    @property
    def longest_lapse_s(self) -> float:
        return max((lapse.seconds for lapse in self.lapses), default=0.0)


def account(episode: Episode, now: dt.datetime) -> Accounting:
    """Divide the episode's elapsed time into supervised, unsupervised and unknown, with every lapse."""
    start, end = episode.started_at, episode.end_or(now)
    if end <= start:
        return Accounting(0.0, 0.0, 0.0, (), _state_at(episode, start, _Lookups(episode)))
    lookups = _Lookups(episode)
    points = {start, end}
    for mark in episode.observer:
        if start < mark.ts < end:
            points.add(mark.ts)
    interval = dt.timedelta(seconds=episode.checkin_interval_s)
    for check in episode.checks:
        for edge in (check, check + interval):
            if start < edge < end:
                points.add(edge)
    for gap in episode.unknown:
        for maybe in (gap.start, gap.end):
            if maybe is not None and start < maybe < end:
                points.add(maybe)
    ordered = sorted(points)
    totals: dict[State, dt.timedelta] = {
        "supervised": dt.timedelta(0),
        "unsupervised": dt.timedelta(0),
        "unknown": dt.timedelta(0),
    }
    lapses: list[Lapse] = []
    for a, b in itertools.pairwise(ordered):
        state = _state_at(episode, a + (b - a) / 2, lookups)
        totals[state] += b - a
        if state == "unsupervised":
            if lapses and lapses[-1].end == a and not _seen_at(episode, a, lookups):
                lapses[-1] = Lapse(lapses[-1].start, b)
            else:
                lapses.append(Lapse(a, b))
    sup, unsup = seconds(totals["supervised"]), seconds(totals["unsupervised"])
    # Rounding each part separately could drift from elapsed by a millisecond: unknown takes the rest.
    unknown = round(seconds(end - start) - sup - unsup, 3)
    state_now = _state_at(episode, end, lookups) if episode.is_open else None
    seen_at_end = state_now == "unsupervised" and _seen_at(episode, end, lookups)
    return Accounting(sup, unsup, max(unknown, 0.0), tuple(lapses), state_now, seen_at_end)


class _Lookups:
    """Sorted views of an episode's marks, for bisecting at a point in time."""

    def __init__(self, episode: Episode) -> None:
        marks = sorted(episode.observer, key=lambda m: m.ts)
        self.mark_ts = [m.ts for m in marks]
        self.mark_present = [m.present for m in marks]
        self.checks = sorted(episode.checks)


def _state_at(episode: Episode, when: dt.datetime, lookups: _Lookups, *, present: bool = False) -> State:
    """The state at `when`: the observer's is the last of the marks at or before it (of one millisecond,
    the last to arrive), or present when `present` says so."""
    for gap in episode.unknown:
        if gap.start <= when and (gap.end is None or when < gap.end):
            return "unknown"
    observed = True
    if episode.supervision in ("observer", "both") and not present:
        i = bisect.bisect_right(lookups.mark_ts, when)
        # Never present since the start counts as absent (semantics 3.1).
        observed = i > 0 and lookups.mark_present[i - 1]
    checked = True
    if episode.supervision in ("checkin", "both"):
        i = bisect.bisect_right(lookups.checks, when)
        interval = dt.timedelta(seconds=episode.checkin_interval_s)
        checked = i > 0 and when < lookups.checks[i - 1] + interval
    return "supervised" if observed and checked else "unsupervised"


def _seen_at(episode: Episode, when: dt.datetime, lookups: _Lookups) -> bool:
    """Whether supervision was seen at the instant `when` only: an observer's `present` that a reading of
    the same millisecond, arriving after it, replaced (a sensor bouncing at the resolution of `ts`, or
    two devices at the panel). No interval shows it, yet the panel showed someone: the lapse before it
    ended there (its alert resolved, if it was raised) and the absence after it is a new lapse, however
    soon it came (semantics 3.4, 5.1), never merged into the one before."""
    if episode.supervision == "checkin":
        return False
    first = bisect.bisect_left(lookups.mark_ts, when)
    last = bisect.bisect_right(lookups.mark_ts, when)
    if not any(lookups.mark_present[first:last]):
        return False
    return _state_at(episode, when, lookups, present=True) == "supervised"
