"""A device file (firmware-config/<device>.yaml): what the agent is, where it reports, how it is wired.

The file is validated as a whole when it is loaded, and a mistake is reported with the file and the key,
`firmware-config/calm-1-door.yaml: sensors.0.pull: Input should be 'up', 'down' or 'none'`, before any
pin or socket is touched.

Wiring is explicit: each sensor names its pin, the pull resistor the Pi applies (`up`, `down`, `none`),
the electrical level at which the contact is *active* (`high` or `low`), and the reading the contact
means while active (`active_value`, for example `closed` for a door contact that closes when the door
shuts). The reading while inactive is the other value of that kind.
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from seclusion_contract import (
    DEFAULT_ROOT,
    SLUG,
    VALUES,
    BrokerAddress,
    Kind,
    parse_broker_url,
    topic_root,
)
from seclusion_contract.yamlfile import KeyGivenTwice, load_yaml
from seclusion_edge.errors import ConfigError

__all__ = [
    "BrokerAddress",
    "EdgeConfig",
    "MqttConfig",
    "OutputsConfig",
    "SensorConfig",
    "load_config",
]

FAULT_CODE: Final = re.compile(r"^[a-z0-9-]{1,64}$")
# BCM numbers, or gpiozero's names for them: GPIO17, BCM17, BOARD11, J8:11.
_PIN_NAME: Final = re.compile(r"^(?:(?:GPIO|BCM)\d{1,2}|(?:BOARD|J8:)\d{1,2})$")
_ENV_VAR: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CLIENT_ID: Final = r"^[A-Za-z0-9_.:-]+$"


def _check_pin(value: object) -> int | str:
    # bool is an int to Python, and YAML turns `yes` into True: refuse it rather than wire GPIO1.
    if isinstance(value, bool):
        raise ValueError("a pin is a BCM number (17) or a name such as GPIO17 or BOARD11")
    if isinstance(value, int):
        if not 0 <= value <= 27:
            raise ValueError(f"BCM pin {value} does not exist on the 40-pin header (0 to 27)")
        return value
    if isinstance(value, str):
        name = value.strip().upper()
        if name.isdigit():
            return _check_pin(int(name))
        if _PIN_NAME.match(name):
            return name
    raise ValueError("a pin is a BCM number (17) or a name such as GPIO17 or BOARD11")


PinName = Annotated[int | str, BeforeValidator(_check_pin)]
Slug = Annotated[str, Field(pattern=SLUG.pattern)]


class SensorConfig(BaseModel):
    """One contact wired to one GPIO input.

    `kind`: door, lock, occupancy, observer, check or fault. `active_value` is the reading while the
    contact is active: for door `open|closed`, lock `engaged|released`, occupancy `occupied|vacant`,
    observer `present|absent`; for check always `ok` (a press; the release reports nothing); for fault
    the fault code reported while active (`ok` is reported while inactive).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    pin: PinName
    pull: Literal["up", "down", "none"]
    active: Literal["high", "low"]
    active_value: Annotated[str | None, Field(validate_default=True)] = None
    staff: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    settle_ms: Annotated[int, Field(ge=0, le=60_000)] | None = None

    @field_validator("active_value")
    @classmethod
    def _active_value_fits_kind(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind is None:
            return value  # the kind itself is wrong and is reported on its own
        if kind == "check":
            if value not in (None, "ok"):
                raise ValueError("a check button reports `ok` when pressed; leave active_value out")
            return "ok"
        if value is None:
            raise ValueError(f"required for a {kind} sensor: the reading while the contact is active")
        if kind == "fault":
            if value == "ok" or not FAULT_CODE.match(value):
                raise ValueError("a fault input reports a code such as door-sensor-disconnected while active")
            return value
        if value not in VALUES[kind]:
            raise ValueError(f"{value!r} is not a {kind} reading: one of {', '.join(VALUES[kind])}")
        return value

    @field_validator("staff")
    @classmethod
    def _staff_only_for_check(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("kind") not in (None, "check"):
            raise ValueError("only a check button carries a staff reference")
        return value

    @property
    def active_high(self) -> bool:
        """True when the contact is active at a high pin level."""
        return self.active == "high"

    def reading(self, active: bool) -> str | None:
        """The contract value for the contact's state, or None for a check button's release."""
        if self.active_value is None:
            raise RuntimeError("active_value is set by validation for every kind")
        if active:
            return self.active_value
        if self.kind == "check":
            return None
        if self.kind == "fault":
            return "ok"
        first, second = VALUES[self.kind]
        return second if self.active_value == first else first


class OutputsConfig(BaseModel):
    """The room's local buzzer and LED, driven by the hub's indicator or the edge fail-safe.

    `buzzer_type`: `active` (a buzzer module that sounds while its pin is high: `gpiozero.Buzzer`) or
    `tonal` (a passive piezo played at a tone: `gpiozero.TonalBuzzer`, on a PWM-capable pin).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    buzzer: PinName | None = None
    led: PinName | None = None
    buzzer_type: Literal["active", "tonal"] = "active"


def _beside_file(value: Path, info: ValidationInfo) -> Path:
    # A relative path in a device file means relative to that file, not to wherever systemd started us.
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and isinstance(base, Path):
        return base / value
    return value


def _expand(text: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = os.environ.get(name)
        if found is None:
            raise ValueError(f"environment variable {name} is not set")
        return found

    return _ENV_VAR.sub(value, text)


def check_ca_file(path: Path) -> None:
    """Raise ValueError unless `path` can be read and holds at least one certificate (PEM): what the
    TLS setup at the first connect needs, checked before any pin or socket is touched."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ValueError(f"{path} holds no CA certificate that can be read ({exc.reason or exc})") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None


def broker_address(url: str) -> BrokerAddress:
    """Parse a broker URL, reading `${VAR}` in the host, user name and password from the environment."""
    return parse_broker_url(url, _expand)


class MqttConfig(BaseModel):
    """How the agent reaches the broker.

    `protocol` is 5 (MQTT v5, clean_start=False with a session expiry) or "3.1.1" (clean_session=False),
    a persistent session either way. `client_id` defaults to `seclusion-edge-{site}-{device}`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    root: str = DEFAULT_ROOT
    protocol: Literal["5", "3.1.1"] = "5"
    session_expiry_s: Annotated[int, Field(ge=1, le=4_294_967_295)] = 86_400
    keepalive_s: Annotated[int, Field(ge=5, le=65_535)] = 30
    client_id: Annotated[str, Field(min_length=1, max_length=128, pattern=_CLIENT_ID)] | None = None
    ca_file: Path | None = None
    reconnect_min_s: Annotated[int, Field(ge=1, le=600)] = 1
    reconnect_max_s: Annotated[int, Field(ge=1, le=3600)] = 30

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: object) -> object:
        # YAML reads `protocol: 5` as an int and `protocol: 3.1.1` as a string; accept both spellings.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        broker_address(value)  # fail at load time, naming mqtt.url, not at the first connect
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file_beside_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        url = info.data.get("url")
        if isinstance(url, str) and not url.strip().lower().startswith("mqtts://"):
            # Not used with a plain URL: the password and every event would go in clear, the CA ignored.
            raise ValueError("a CA file is for a TLS broker: write the URL as mqtts://... (or drop ca_file)")
        path = _beside_file(value, info)
        check_ca_file(path)  # fail at load time (and in check-config), naming mqtt.ca_file
        return path

    @field_validator("root")
    @classmethod
    def _root_is_a_prefix(cls, value: str) -> str:
        return topic_root(value)

    @model_validator(mode="after")
    def _backoff_order(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s: must not be below reconnect_min_s")
        return self

    @property
    def broker(self) -> BrokerAddress:
        """The parsed broker address (environment variables substituted)."""
        return broker_address(self.url)


class EdgeConfig(BaseModel):
    """One device's file: identity, broker, state directory, timing and wiring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: Slug
    room: Slug
    device: Slug
    mqtt: MqttConfig
    state_dir: Path
    settle_ms: Annotated[int, Field(ge=0, le=60_000)] = 100
    heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    sensors: Annotated[list[SensorConfig], Field(min_length=1)]
    outputs: OutputsConfig | None = None

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("state_dir", mode="before")
    @classmethod
    def _state_dir_named(cls, value: object) -> object:
        # An empty one would be the file's own directory: read-only under the shipped unit, where the
        # agent would run without its outbox (no status, no heartbeat) and nothing would say why.
        if isinstance(value, str) and not value.strip():
            raise ValueError("give the directory for the agent's outbox (e.g. /var/lib/seclusion-edge)")
        return value

    @field_validator("state_dir")
    @classmethod
    def _state_dir_beside_file(cls, value: Path, info: ValidationInfo) -> Path:
        return _beside_file(value, info)

    @model_validator(mode="after")
    def _one_sensor_per_kind_and_pin(self) -> EdgeConfig:
        kinds: dict[str, int] = {}
        pins: dict[str, str] = {}
        for index, sensor in enumerate(self.sensors):
            if sensor.kind in kinds:
                raise ValueError(
                    f"sensors.{index}.kind: {sensor.kind} is already wired as sensors.{kinds[sensor.kind]}; "
                    "a device has at most one sensor of each kind"
                )
            kinds[sensor.kind] = index
            pins = _claim_pin(pins, sensor.pin, f"sensors.{index}.pin")
        if self.outputs is not None:
            for name in ("buzzer", "led"):
                pin = getattr(self.outputs, name)
                if pin is not None:
                    pins = _claim_pin(pins, pin, f"outputs.{name}")
        return self

    @property
    def source(self) -> Path | None:
        """The file this configuration was loaded from, when it was."""
        return self._source

    @property
    def client_id(self) -> str:
        """The MQTT client id: configured, or `seclusion-edge-{site}-{device}`."""
        return self.mqtt.client_id or f"seclusion-edge-{self.site}-{self.device}"

    def sensor(self, kind: str) -> SensorConfig:
        """The sensor of that kind; KeyError when the device has none."""
        for sensor in self.sensors:
            if sensor.kind == kind:
                return sensor
        raise KeyError(f"device {self.device} has no {kind} sensor")

    def where(self, key: str) -> str:
        """`file: key` for error messages (just the key for a configuration built in memory)."""
        return f"{self._source}: {key}" if self._source else key


def _claim_pin(pins: dict[str, str], pin: int | str, key: str) -> dict[str, str]:
    # Only plain BCM spellings are compared; gpiozero itself refuses a BOARD alias of a pin in use.
    canonical = str(pin).removeprefix("GPIO").removeprefix("BCM")
    if canonical in pins:
        raise ValueError(f"{key}: pin {pin} is already used by {pins[canonical]}")
    return {**pins, canonical: key}


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    return f"{key}: {message}" if key else message


def parse_config(data: object, source: Path | str, base_dir: Path | None = None) -> EdgeConfig:
    """Validate already-parsed YAML; `source` names the file in error messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the file must be a mapping of keys (site, room, device, ...)")
    try:
        config = EdgeConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = [_describe(dict(error)) for error in exc.errors()]
        raise ConfigError(f"{source}: " + f"\n{source}: ".join(problems)) from None
    config._source = Path(source)
    return config


def load_config(path: Path | str) -> EdgeConfig:
    """Read and validate a device file; any problem is a ConfigError naming the file and the key.

    A relative `state_dir` is taken relative to the file's directory.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{file}: line {line}: not UTF-8 text; save it as UTF-8") from None
    try:
        data = load_yaml(text)
    except KeyGivenTwice as exc:
        raise ConfigError(
            f"{file}: {exc.key}: given twice (lines {exc.first_line} and {exc.second_line})"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{file}: {where}not valid YAML: {problem}") from None
    return parse_config(data, file, base_dir=file.resolve().parent)
