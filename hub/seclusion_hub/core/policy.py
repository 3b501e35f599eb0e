"""Policy parameters (policies.md) as a typed, validated model. Pure data; loading lives in config.py.

Every time is a finite number of seconds, never negative (a boolean, a string, `.inf` or `.nan` is
refused). On top of each field's own range, `Policy` refuses combinations that cannot hold together
(docs/profiles.md, "Validation"): each refusal is a `PolicyError` naming the key paths involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import SeclusionError

Tier = Literal["room", "senior", "dsl", "head"]
Seconds = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
KeyPath = tuple[str | int, ...]


def dotted(path: KeyPath) -> str:
    """A key path as a site file's reader writes it: `reviews.1.every_s`."""
    return ".".join(str(part) for part in path)


class PolicyError(SeclusionError, ValueError):
    """An impossible parameter, or parameters that cannot hold together: `keys` are their paths (the
    first the likelier one at fault) and `problem` says why, naming every other key involved."""

    def __init__(self, keys: Sequence[KeyPath], problem: str) -> None:
        self.keys: tuple[KeyPath, ...] = tuple(keys)
        self.problem = problem
        key = dotted(self.keys[0])
        super().__init__(problem if problem.startswith(key) else f"{key}: {problem}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DurationAlert(_Strict):
    after_s: PositiveSeconds
    kind: Literal["duration_warning", "duration_escalation"]
    tier: Tier


class AgeBand(_Strict):
    max_age: Annotated[int, Field(ge=0, le=120, strict=True)]
    max_s: PositiveSeconds


class Review(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    first_s: PositiveSeconds
    every_s: PositiveSeconds | None = None
    tier: Tier


class Hours(_Strict):
    hours: Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]


class SchoolDays(_Strict):
    school_days: Annotated[int, Field(ge=0, le=60, strict=True)]


class CalendarDays(_Strict):
    calendar_days: Annotated[int, Field(ge=0, le=366, strict=True)]


class WorkingDays(_Strict):
    working_days: Annotated[int, Field(ge=0, le=60, strict=True)]


Deadline = Literal["same_day"] | Hours | SchoolDays | CalendarDays | WorkingDays
DEADLINE_UNITS: dict[str, type[_Strict]] = {
    "hours": Hours,
    "school_days": SchoolDays,
    "working_days": WorkingDays,
    "calendar_days": CalendarDays,
}
DEADLINE_FIELDS = ("record_due", "parent_notice_due", "parent_copy_due", "authority_notice_due")
OPTIONAL_DEADLINES = ("parent_copy_due", "authority_notice_due")


def _check_deadline(key: str, value: object) -> None:
    """A deadline's own error, located under its unit (`record_due.hours`), not under a union member."""
    forms = "same_day, {hours: N}, {school_days: N}, {working_days: N} or {calendar_days: N}"
    if isinstance(value, BaseModel) or value == "same_day" or (value is None and key in OPTIONAL_DEADLINES):
        return
    if not isinstance(value, dict):
        raise PolicyError([(key,)], f"{value!r} is not a deadline: use {forms}")
    if len(value) != 1 or next(iter(value)) not in DEADLINE_UNITS:
        unit = next((u for u in value if u not in DEADLINE_UNITS), None)
        where: KeyPath = (key, str(unit)) if unit is not None else (key,)
        raise PolicyError([where], f"a deadline is one of {forms}")
    unit = next(iter(value))
    try:
        DEADLINE_UNITS[unit].model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise PolicyError([(key, unit)], first["msg"]) from exc


class PatternTrigger(_Strict):
    count: Annotated[int, Field(ge=2, strict=True)]
    window_days: Annotated[int, Field(ge=1, le=3660, strict=True)]
    label: Annotated[str, Field(min_length=1, max_length=100)]


class Policy(_Strict):
    """Every parameter of policies.md. Defaults are those of `england-schools-2026`."""

    seclusion_allowed: bool = True
    lock_mode: Literal["allowed", "held_only", "forbidden"] = "allowed"
    supervision: Literal["observer", "checkin", "both"] = "observer"
    lapse_grace_s: Seconds = 15
    checkin_interval_s: PositiveSeconds = 60
    no_movement_s: PositiveSeconds = 120
    occupancy_lookback_s: Seconds = 120
    reclose_grace_s: Seconds = 30
    reclose_is_new_episode: bool = False
    duration_alerts: tuple[DurationAlert, ...] = (
        DurationAlert(after_s=600, kind="duration_warning", tier="room"),
        DurationAlert(after_s=1200, kind="duration_escalation", tier="senior"),
        DurationAlert(after_s=1800, kind="duration_escalation", tier="head"),
    )
    max_duration_s: PositiveSeconds | None = None
    age_band_max_s: tuple[AgeBand, ...] = ()
    reviews: tuple[Review, ...] = ()
    ack_timeout_s: PositiveSeconds = 60
    renotify_s: PositiveSeconds = 300
    heartbeat_s: PositiveSeconds = 10
    offline_grace_s: Seconds = 20
    max_clock_skew_s: PositiveSeconds = 2
    record_due: Deadline = "same_day"
    parent_notice_due: Deadline = "same_day"
    parent_copy_due: Deadline | None = SchoolDays(school_days=1)
    authority_notice_due: Deadline | None = None
    pattern_triggers: tuple[PatternTrigger, ...] = (
        PatternTrigger(count=3, window_days=30, label="repeated seclusion"),
    )

    @model_validator(mode="before")
    @classmethod
    def _deadlines(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in DEADLINE_FIELDS:
                if key in data:
                    _check_deadline(key, data[key])
        return data

    @model_validator(mode="after")
    def _coherent(self) -> Policy:
        """Refuse what cannot hold together; the rules are listed in docs/profiles.md, "Validation"."""
        self._check_duration_alerts()
        self._check_age_bands()
        self._check_reviews()
        self._check_graces()
        return self

    def _limits(self) -> list[tuple[KeyPath, float]]:
        """Every hard time limit an episode may be held to: `max_duration_s` and each age band's."""
        limits: list[tuple[KeyPath, float]] = []
        if self.max_duration_s is not None:
            limits.append((("max_duration_s",), self.max_duration_s))
        limits.extend(
            (("age_band_max_s", i, "max_s"), band.max_s) for i, band in enumerate(self.age_band_max_s)
        )
        return limits

    def _check_duration_alerts(self) -> None:
        seen: dict[float, int] = {}
        for i, rule in enumerate(self.duration_alerts):
            here = f"duration_alerts.{i}.after_s"
            if rule.after_s in seen:
                j = seen[rule.after_s]
                raise PolicyError(
                    [("duration_alerts", i, "after_s"), ("duration_alerts", j, "after_s")],
                    f"{here} {rule.after_s:g} is also duration_alerts.{j}.after_s: "
                    "two duration alerts cannot fall due at the same time",
                )
            seen[rule.after_s] = i
            if self.max_duration_s is not None and rule.after_s > self.max_duration_s:
                raise PolicyError(
                    [("duration_alerts", i, "after_s"), ("max_duration_s",)],
                    f"{here} {rule.after_s:g} is past max_duration_s {self.max_duration_s:g}: "
                    "the alert would come after the hard limit",
                )

    def _check_age_bands(self) -> None:
        for i in range(1, len(self.age_band_max_s)):
            before, band = self.age_band_max_s[i - 1], self.age_band_max_s[i]
            if band.max_age <= before.max_age:
                raise PolicyError(
                    [("age_band_max_s", i, "max_age"), ("age_band_max_s", i - 1, "max_age")],
                    f"age_band_max_s.{i}.max_age {band.max_age} is not greater than "
                    f"age_band_max_s.{i - 1}.max_age {before.max_age}: bands are listed youngest first, "
                    "each max_age greater than the one before",
                )

    def _check_reviews(self) -> None:
        names: dict[str, int] = {}
        for i, review in enumerate(self.reviews):
            if review.name in names:
                j = names[review.name]
                raise PolicyError(
                    [("reviews", i, "name"), ("reviews", j, "name")],
                    f"reviews.{i}.name {review.name!r} is also reviews.{j}.name: "
                    "each review is its own rule and needs its own name",
                )
            names[review.name] = i
        limits = self._limits()
        if not limits:
            return
        key, longest = max(limits, key=lambda limit: limit[1])
        for i, review in enumerate(self.reviews):
            if review.first_s > longest:
                raise PolicyError(
                    [("reviews", i, "first_s"), key],
                    f"reviews.{i}.first_s {review.first_s:g} is past {dotted(key)} {longest:g}, "
                    "the longest time limit: the review could never fall due within a permitted episode",
                )

    def _check_graces(self) -> None:
        graces: list[tuple[str, float, str]] = [
            ("lapse_grace_s", self.lapse_grace_s, "a child could go unsupervised, unreported, that long"),
            ("offline_grace_s", self.offline_grace_s, "a device could be lost, unreported, that long"),
            (
                "reclose_grace_s",
                self.reclose_grace_s,
                "a door could stand open that long, the episode going on",
            ),
        ]
        limits = self._limits()
        if limits:
            key, shortest = min(limits, key=lambda limit: limit[1])
            for name, value, why in graces:
                if value >= shortest:
                    raise PolicyError(
                        [(name,), key],
                        f"{name} {value:g} is not shorter than {dotted(key)} {shortest:g}, "
                        f"the shortest time limit: {why}",
                    )
        if self.duration_alerts:
            i, first = min(enumerate(self.duration_alerts), key=lambda item: item[1].after_s)
            if self.lapse_grace_s >= first.after_s:
                raise PolicyError(
                    [("lapse_grace_s",), ("duration_alerts", i, "after_s")],
                    f"lapse_grace_s {self.lapse_grace_s:g} is not shorter than duration_alerts.{i}.after_s "
                    f"{first.after_s:g}, the first duration alert: a child would go unsupervised, "
                    "unreported, for as long as it takes an episode to be called long",
                )
