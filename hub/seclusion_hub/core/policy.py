"""Policy parameters (policies.md) as a typed, validated model. Pure data; loading lives in profiles.py."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Tier = Literal["room", "senior", "dsl", "head"]
Seconds = Annotated[float, Field(ge=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DurationAlert(_Strict):
    after_s: PositiveSeconds
    kind: Literal["duration_warning", "duration_escalation"]
    tier: Tier


class AgeBand(_Strict):
    max_age: Annotated[int, Field(ge=0, le=120)]
    max_s: PositiveSeconds


class Review(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    first_s: PositiveSeconds
    every_s: PositiveSeconds | None = None
    tier: Tier


class Hours(_Strict):
    hours: PositiveSeconds


class SchoolDays(_Strict):
    school_days: Annotated[int, Field(ge=0, le=60)]


class CalendarDays(_Strict):
    calendar_days: Annotated[int, Field(ge=0, le=366)]


class WorkingDays(_Strict):
    working_days: Annotated[int, Field(ge=0, le=60)]


Deadline = Literal["same_day"] | Hours | SchoolDays | CalendarDays | WorkingDays


class PatternTrigger(_Strict):
    count: Annotated[int, Field(ge=2)]
    window_days: Annotated[int, Field(ge=1, le=3660)]
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

    @model_validator(mode="after")
    def _coherent(self) -> Policy:
        if self.max_duration_s is not None:
            for rule in self.duration_alerts:
                if rule.after_s > self.max_duration_s:
                    raise ValueError(
                        f"duration_alerts: after_s {rule.after_s} is past "
                        f"max_duration_s {self.max_duration_s}"
                    )
        afters = [rule.after_s for rule in self.duration_alerts]
        if len(set(afters)) != len(afters):
            raise ValueError("duration_alerts: two rules share the same after_s")
        return self
