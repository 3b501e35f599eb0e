"""Site, room and device definitions (contract section 4) as typed models. Pure data."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from seclusion_contract import SLUG, Kind

from .policy import Tier

Slug = Annotated[str, Field(pattern=SLUG.pattern)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_SENSORS: tuple[Kind, ...] = ("door", "lock", "occupancy", "observer", "check", "fault")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceSpec(_Strict):
    id: Slug
    sensors: tuple[Kind, ...] | None = None
    lock_type: Literal["held", "bolt", "maglock"] = "held"


class Closure(_Strict):
    from_: Annotated[dt.date, Field(alias="from")]
    to: dt.date
    name: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Closure:
        if self.to < self.from_:
            raise ValueError("to: before from")
        if (self.to - self.from_).days > 730:
            # Deadlines counted in school days look three years ahead at most (core/deadlines.py).
            raise ValueError("to: a closure longer than two years (a mistyped year?)")
        return self


class Calendar(_Strict):
    # At least one: a record's deadlines are counted in school days, and none would never come.
    school_days: Annotated[tuple[Weekday, ...], Field(min_length=1)] = ("mon", "tue", "wed", "thu", "fri")
    closures: tuple[Closure, ...] = ()


class Period(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    start: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
    end: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]

    @model_validator(mode="after")
    def _some_time(self) -> Period:
        # An end before the start runs past midnight (analytics.period_of); the same time holds none.
        if self.start == self.end:
            raise ValueError("end: the same time as start, so no minute falls in it")
        return self


class RoomSpec(_Strict):
    id: Slug
    name: Annotated[str, Field(min_length=1, max_length=200)]
    supervision: Literal["observer", "checkin", "both"] | None = None
    devices: tuple[DeviceSpec, ...]
    policy_overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("devices", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple({"id": item} if isinstance(item, str) else item for item in value)
        return value

    @model_validator(mode="after")
    def _unique_devices(self) -> RoomSpec:
        ids = [d.id for d in self.devices]
        if len(set(ids)) != len(ids):
            raise ValueError("devices: a device id is listed twice")
        if not ids:
            raise ValueError("devices: a room needs at least one device")
        return self

    def device(self, device_id: str) -> DeviceSpec | None:
        return next((d for d in self.devices if d.id == device_id), None)

    def has(self, kind: str) -> bool:
        """Whether any device of the room may report this kind (a lock sensor is optional)."""
        return any(self.reports(device.id, kind) for device in self.devices)

    def reports(self, device_id: str, kind: str) -> bool:
        """Whether this device may report this kind (all kinds unless its `sensors` says otherwise)."""
        spec = self.device(device_id)
        return spec is not None and (spec.sensors is None or kind in spec.sensors or kind == "fault")


class Webhook(_Strict):
    """A signed webhook: the body is JSON, signed with HMAC-SHA256 under `secret`
    (docs/notifications.md). The secret's length is checked once `${VAR}` is expanded."""

    url: Annotated[str, Field(pattern=r"^(https?://|\$\{)")]
    secret: Annotated[str, Field(min_length=1)]


class Recipient(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    tier: Tier
    notify: tuple[str, ...] = ()  # Apprise URLs; ${VAR} read from the environment
    webhooks: tuple[Webhook, ...] = ()


class SchoolContact(_Strict):
    """Who parents may talk to about a record (printed on the written copy)."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    phone: Annotated[str, Field(max_length=50)] | None = None


class SiteSpec(_Strict):
    site: Slug
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None  # the school's name, for letters
    contact: SchoolContact | None = None
    # An Apprise mail URL (mailto:// or mailtos://, ${VAR} from the environment) the parents' written copy
    # is sent from; the parent's address is added as `to=` when it is sent.
    parent_mail: Annotated[str, Field(pattern=r"^(mailtos?://|\$\{)")] | None = None
    # The leaders' review: groups of staff (a name may be in several: it counts for each), and the
    # reduction plan's target, the cut in use over a review period in per cent (the trend says "on
    # track" or "behind").
    staff_groups: dict[Annotated[str, Field(min_length=1, max_length=100)], tuple[str, ...]] = Field(
        default_factory=dict
    )
    reduction_target_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    timezone: str = "Europe/London"
    policy: str = "england-schools-2026"
    calendar: Calendar = Calendar()
    timetable: tuple[Period, ...] = ()
    rooms: tuple[RoomSpec, ...]
    recipients: tuple[Recipient, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> SiteSpec:
        rooms = [r.id for r in self.rooms]
        if len(set(rooms)) != len(rooms):
            raise ValueError("rooms: a room id is listed twice")
        devices = [d.id for r in self.rooms for d in r.devices]
        if len(set(devices)) != len(devices):
            raise ValueError("rooms: a device id belongs to two rooms; each device is in exactly one room")
        return self
