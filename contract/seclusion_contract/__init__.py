"""The external contract v1 (contract.md sections 1 to 3), shared by the edge agent and the hub.

Topics, payload models and the timestamp format live here and nowhere else: both sides import this
module, so a message one side writes is the message the other side validates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

if TYPE_CHECKING:
    import paho.mqtt.client as paho

__all__ = [
    "DEFAULT_ROOT",
    "KINDS",
    "MAX_PAYLOAD_BYTES",
    "SLUG",
    "TOPIC_ROOT",
    "VALUES",
    "AckPayload",
    "BrokerAddress",
    "ConfigPayload",
    "ContractError",
    "DurationAlertRule",
    "EventPayload",
    "HeartbeatPayload",
    "HubStatusPayload",
    "IndicatorPayload",
    "Kind",
    "StatusPayload",
    "Timestamp",
    "TopicAddress",
    "Topics",
    "ack_payload",
    "dump_payload",
    "format_ts",
    "format_ts_or_none",
    "is_reading",
    "parse_broker_url",
    "parse_ts",
    "send_at_once",
    "send_at_once_on_open",
    "stop_client",
    "topic_root",
]

CONTRACT_VERSION: Final = 1
DEFAULT_ROOT: Final = "seclusion/v1"
# A topic root: a prefix such as `seclusion/v1`, no wildcards, no empty level, no leading or trailing /.
TOPIC_ROOT: Final = re.compile(r"^[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*$")


def topic_root(value: str) -> str:
    """`value` if it can be a topic root (`TOPIC_ROOT`), else a ValueError saying what one is: the hub's
    setting and a device file are checked alike (the broker refuses a subscription under a bad one)."""
    if not TOPIC_ROOT.match(value):
        raise ValueError("a topic prefix such as seclusion/v1: no wildcards, no leading or trailing /")
    return value


MAX_PAYLOAD_BYTES: Final = 16 * 1024
SLUG: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
FAULT_CODE: Final = re.compile(r"^[a-z0-9-]{1,64}$")
_TS: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

Kind = Literal["door", "lock", "occupancy", "observer", "check", "fault"]
KINDS: Final[tuple[str, ...]] = ("door", "lock", "occupancy", "observer", "check", "fault")
VALUES: Final[dict[str, tuple[str, ...]]] = {
    "door": ("open", "closed"),
    "lock": ("engaged", "released"),
    "occupancy": ("occupied", "vacant"),
    "observer": ("present", "absent"),
    "check": ("ok",),
    "fault": ("ok",),  # or any code matching FAULT_CODE
}


def is_reading(kind: str, value: str) -> bool:
    """Whether `value` is a reading of `kind` (contract section 2's table)."""
    if kind == "fault":
        return FAULT_CODE.match(value) is not None
    return value in VALUES.get(kind, ())


class ContractError(ValueError):
    """A message or value that does not follow the contract."""


def format_ts(when: dt.datetime) -> str:
    """RFC 3339, UTC, exactly milliseconds, `Z` suffix: `2026-11-21T10:15:02.123Z`."""
    if when.tzinfo is None:
        raise ContractError("timestamps must be timezone-aware")
    utc = when.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def format_ts_or_none(when: dt.datetime | None) -> str | None:
    """`format_ts`, or None for a time not known (yet): the JSON's null."""
    return format_ts(when) if when is not None else None


def parse_ts(text: object) -> dt.datetime:
    """Parse a contract timestamp; anything but the exact format is a ContractError."""
    if isinstance(text, dt.datetime):
        if text.tzinfo is None:
            raise ContractError("timestamp has no timezone")
        return text.astimezone(dt.UTC)
    if not isinstance(text, str) or not _TS.match(text):
        raise ContractError("not an RFC 3339 UTC timestamp with milliseconds and Z")
    try:
        # The pattern above pins the format; fromisoformat (it reads the Z) is far faster than strptime.
        return dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ContractError(f"not a valid date and time: {exc}") from exc


def truncate_ms(when: dt.datetime) -> dt.datetime:
    """The same instant at the contract's precision (milliseconds)."""
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


Timestamp = Annotated[dt.datetime, BeforeValidator(parse_ts), PlainSerializer(format_ts, return_type=str)]
MAX_COUNTER = 2**63 - 1  # seq and epoch fit a signed 64-bit column
MAX_UPTIME_S = 100 * 365.25 * 86400
NonNegInt = Annotated[int, Field(strict=True, ge=0, le=MAX_COUNTER)]


class _Payload(BaseModel):
    # Unknown extra fields are ignored (contract section 2); types are strict: "5" is not 5.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    v: Literal[1] = 1


class EventPayload(_Payload):
    """`{root}/{site}/{room}/{device}/event`, QoS 1, not retained."""

    id: Annotated[str, Field(min_length=1, max_length=200)]
    seq: Annotated[int, Field(strict=True, ge=1, le=MAX_COUNTER)]
    epoch: NonNegInt = 0
    ts: Timestamp
    boot: Annotated[str, Field(max_length=100)] | None = None
    mono_ms: NonNegInt | None = None
    kind: Kind
    value: Annotated[str, Field(min_length=1, max_length=64)]
    staff: Annotated[str, Field(max_length=100)] | None = None
    # Added to contract 2 (optional): the agent's first reading of the sensor after it started, which
    # differs from the last one it sent. `ts` is then when the agent first saw it, not when it began:
    # the change happened at some time while the agent was not running. Left out of every other event
    # (and by an agent that does not know it): the reading began at `ts`.
    startup: bool | None = None

    @model_validator(mode="after")
    def _value_fits_kind(self) -> EventPayload:
        if not is_reading(self.kind, self.value):
            if self.kind == "fault":
                raise ValueError("value: a fault is `ok` or a code matching ^[a-z0-9-]{1,64}$")
            raise ValueError(
                f"value: {self.value!r} is not one of {', '.join(VALUES[self.kind])} for {self.kind}"
            )
        return self


class StatusPayload(_Payload):
    """`.../status`, QoS 1, retained; `{"v":1,"online":false}` is the agent's Last Will."""

    online: bool
    ts: Timestamp | None = None
    agent: Annotated[str, Field(max_length=100)] | None = None
    boot: Annotated[str, Field(max_length=100)] | None = None
    uptime_s: Annotated[float, Field(ge=0, le=MAX_UPTIME_S)] | None = None
    sensors: list[Kind] | None = None
    epoch: NonNegInt | None = None
    last_seq: NonNegInt | None = None
    # Added to contract 2 (optional): the device's monotonic clock (`mono_ms`'s clock) when the
    # connection this status and the Last Will set for it belong to was opened. With `boot`, it names
    # the connection a Last Will ends, so the hub can tell a will delivered again from a new one.
    conn_ms: NonNegInt | None = None


class HeartbeatPayload(_Payload):
    """`.../heartbeat`, QoS 0, every `heartbeat_s`, with the device's current reading of each sensor."""

    ts: Timestamp
    epoch: NonNegInt = 0
    last_seq: NonNegInt = 0
    uptime_s: Annotated[float, Field(ge=0, le=MAX_UPTIME_S)] | None = None
    queued: NonNegInt = 0
    state: dict[Kind, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _state_values(self) -> HeartbeatPayload:
        for kind, value in self.state.items():
            if not is_reading(kind, value):
                raise ValueError(f"state.{kind}: {value!r} is not a reading of {kind}")
        return self


class AckPayload(_Payload):
    """`.../{device}/ack`, retained: the last event of the device the hub has stored."""

    epoch: NonNegInt
    seq: NonNegInt


class IndicatorPayload(_Payload):
    """`{root}/{site}/{room}/indicator`, retained: drives the room's LED and buzzer."""

    level: Literal["none", "info", "warning", "critical"]
    reason: str = ""
    ts: Timestamp
    # An addition to the contract: every alert behind `level` has been acknowledged by a person, so the
    # room's buzzer may fall silent while its LED stays lit.
    acknowledged: bool = False


class DurationAlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    after_s: Annotated[float, Field(gt=0)]
    kind: Literal["duration_warning", "duration_escalation"]
    tier: Literal["room", "senior", "dsl", "head"]


class ConfigPayload(_Payload):
    """`.../{device}/config`, retained: the numbers an agent needs for its own fail-safe timers."""

    supervision: Literal["observer", "checkin", "both"]
    lapse_grace_s: Annotated[float, Field(ge=0)]
    checkin_interval_s: Annotated[float, Field(gt=0)]
    duration_alerts: list[DurationAlertRule] = Field(default_factory=list)
    max_duration_s: Annotated[float, Field(gt=0)] | None = None
    heartbeat_s: Annotated[float, Field(gt=0)] = 10
    # An addition to the contract: how late occupancy may be reported after the door closed and still
    # date the episode's start back to the close (semantics 2.1). The default is the policy default, for
    # a hub that does not send it.
    occupancy_lookback_s: Annotated[float, Field(ge=0)] = 120
    # Additions too: a door closed again within `reclose_grace_s` of its opening, with no `vacant` timed
    # after the opening, goes on with the same episode, or starts a new one when `reclose_is_new_episode`
    # (semantics 2.4). Defaults: the policy's.
    reclose_grace_s: Annotated[float, Field(ge=0)] = 30
    reclose_is_new_episode: bool = False
    ts: Timestamp | None = None


class HubStatusPayload(_Payload):
    """`{root}/_hub/status`, retained, with a Last Will `{"v":1,"online":false}`."""

    online: bool
    ts: Timestamp | None = None


def dump_payload(payload: BaseModel) -> bytes:
    """The compact JSON bytes of a payload, without fields left at None."""
    return json.dumps(payload.model_dump(mode="json", exclude_none=True), separators=(",", ":")).encode()


def ack_payload(epoch: int, seq: int) -> bytes:
    """`dump_payload(AckPayload(epoch=epoch, seq=seq))`, written out: the hub sends one for nearly every
    event it stores (tests/test_contract.py holds the two to the same bytes)."""
    if not (0 <= epoch <= MAX_COUNTER and 0 <= seq <= MAX_COUNTER):
        raise ValueError("an ack's epoch and seq are counters from 0 to MAX_COUNTER")
    return b'{"v":1,"epoch":%d,"seq":%d}' % (epoch, seq)


Channel = Literal["event", "status", "heartbeat", "ack", "config"]
_DEVICE_CHANNELS: Final = ("event", "status", "heartbeat", "ack", "config")


@dataclass(frozen=True, slots=True)
class TopicAddress:
    """Where a device message came from, parsed out of its topic."""

    site: str
    room: str
    device: str
    channel: str


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under a root prefix (`seclusion/v1` unless configured)."""

    root: str = DEFAULT_ROOT

    def device(self, site: str, room: str, device: str, channel: Channel) -> str:
        for name, value in (("site", site), ("room", room), ("device", device)):
            if not SLUG.match(value):
                raise ContractError(f"{name}: {value!r} is not a slug")
        return f"{self.root}/{site}/{room}/{device}/{channel}"

    def event(self, site: str, room: str, device: str) -> str:
        return self.device(site, room, device, "event")

    def status(self, site: str, room: str, device: str) -> str:
        return self.device(site, room, device, "status")

    def heartbeat(self, site: str, room: str, device: str) -> str:
        return self.device(site, room, device, "heartbeat")

    def ack(self, site: str, room: str, device: str) -> str:
        return self.device(site, room, device, "ack")

    def config(self, site: str, room: str, device: str) -> str:
        return self.device(site, room, device, "config")

    def indicator(self, site: str, room: str) -> str:
        return f"{self.root}/{site}/{room}/indicator"

    def room_events(self, site: str, room: str) -> str:
        """Subscription filter for every device's events in one room (for the edge fail-safe)."""
        return f"{self.root}/{site}/{room}/+/event"

    @property
    def hub_status(self) -> str:
        return f"{self.root}/_hub/status"

    def hub_marker(self, name: str) -> str:
        """A topic the hub publishes to itself to learn that the broker's backlog is through."""
        return f"{self.root}/_hub/marker/{name}"

    def hub_subscriptions(self) -> list[str]:
        """What the hub subscribes to: every device's event, status and heartbeat."""
        return [f"{self.root}/+/+/+/event", f"{self.root}/+/+/+/status", f"{self.root}/+/+/+/heartbeat"]

    def parse_device_topic(self, topic: str) -> TopicAddress:
        """Split `{root}/{site}/{room}/{device}/{channel}`; anything else is a ContractError."""
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            raise ContractError(f"topic {topic!r} is not under {self.root!r}")
        parts = topic[len(prefix) :].split("/")
        if len(parts) != 4:
            raise ContractError(f"topic {topic!r} is not {self.root}/site/room/device/channel")
        site, room, device, channel = parts
        for name, value in (("site", site), ("room", room), ("device", device)):
            if not SLUG.match(value):
                raise ContractError(f"topic: {name} {value!r} is not a slug")
        if channel not in _DEVICE_CHANNELS:
            raise ContractError(f"topic: unknown channel {channel!r}")
        return TopicAddress(site, room, device, channel)


def payload_to_json(raw: bytes) -> Any:
    """Decode a payload's bytes (size checked first) into JSON, or raise ContractError with the reason."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"payload is {len(raw)} bytes, over the {MAX_PAYLOAD_BYTES} byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ContractError(f"payload is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # brackets within brackets, thousands deep: no payload of ours
        raise ContractError("payload is not valid JSON: nested too deeply") from exc


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and how to reach the broker (contract section 5: `mqtt://user:pass@host:port` or `mqtts://`)."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    def redacted(self) -> str:
        """The address for logs and output: never the password."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username and self.password else ""
        if self.username and not self.password:
            user = f"{self.username}@"
        return f"{scheme}://{user}{self.host}:{self.port}"


def send_at_once(sock: object) -> None:
    """Turn off Nagle's algorithm on a connection to the broker (TCP_NODELAY), for paho's
    `on_socket_open`. With it on, a small packet written while an earlier one is not yet acknowledged
    waits for that acknowledgement, and the other side delays its acknowledgements by up to 40 ms: the
    last event or ack of a burst then waits 40 ms for nothing (bench/ingest.py, docs/performance.md).
    Every packet here is small and wanted now. Anything but a TCP socket is left as it is, and a socket
    that refuses (closed already) is left to fail where it is used: this is never why a connect fails."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def send_at_once_on_open(_client: object, _userdata: object, sock: object) -> None:
    """`send_at_once` as paho's `on_socket_open` callback: `client.on_socket_open = send_at_once_on_open`."""
    send_at_once(sock)


def stop_client(client: paho.Client) -> None:
    """Stop a paho client's network thread (`loop_stop`) and close the sockets it still holds: its
    connection's, and the pair that `loop_start` (or `loop`) opened to wake that thread.

    paho closes them only when the client object is collected (eclipse-paho/paho.mqtt.python#627).
    A client whose callbacks are methods of the object holding it is in a reference cycle, so that
    is whenever the garbage collector runs: until then a hub or an agent that started a client
    keeps its descriptors, and the collector closes them with a ResourceWarning. Called from the
    network thread itself (in a callback), paho does not join the thread and nothing is closed
    here either: that would pull the sockets from under it."""
    client.loop_stop()
    if getattr(client, "_thread", None) is not None:
        return  # still running: this is its own thread
    reset = getattr(client, "_reset_sockets", None)  # paho's own clean-up, as its __del__ does it
    if callable(reset):
        reset()


_HOST = re.compile(r"[a-z0-9._:-]+")  # a name, an IPv4 address or an IPv6 one (urlsplit lowercases it)


def parse_broker_url(url: str, expand: Callable[[str], str] = str) -> BrokerAddress:
    """Parse a broker URL; a ValueError says what is wrong with it.

    `expand` is applied to the host, user name and password after the URL is split (the edge agent
    reads `${VAR}` from the environment there), so a password may hold `@` or `:`.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("the broker URL is mqtt://[user:password@]host[:port] or mqtts://...")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("the broker URL has no path, query or fragment")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    host_parts = urlsplit("//" + expand(hostport))
    if not host_parts.hostname:
        raise ValueError("the broker URL has no host")
    if not _HOST.fullmatch(host_parts.hostname):
        # A space or another character no host name has: every connect would fail, for ever.
        raise ValueError("the broker URL's host is not a host name or an IP address")
    try:
        port = host_parts.port
    except ValueError as exc:
        raise ValueError(f"the broker URL's port is not a number: {exc}") from exc
    if port == 0:
        raise ValueError("the broker URL's port is 0: give the broker's port, or none for the default")
    tls = parts.scheme == "mqtts"
    username: str | None = None
    password: str | None = None
    if userinfo:
        raw_user, sep, raw_password = userinfo.partition(":")
        username = expand(unquote(raw_user)) or None
        password = expand(unquote(raw_password)) if sep else None
    return BrokerAddress(host_parts.hostname, port or (8883 if tls else 1883), tls, username, password)
