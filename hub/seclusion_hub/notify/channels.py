"""The channels a notice goes out through: Apprise URLs and signed webhooks, behind one protocol.

Every channel has a `label` that is safe to store and log (the scheme and host, and a fingerprint that
tells apart two destinations on one host; never a password or a token), a timeout (10 s unless told),
and fails with `DeliveryError(reason)`, whose reason is short and free of secrets. A channel sends one
notice once; retrying is the dispatcher's job.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import apprise
import httpx

from seclusion_contract import format_ts

from ..config import expand_env
from ..core.clock import Clock, SystemClock
from ..core.policy import Tier
from ..core.site import Recipient
from ..errors import ConfigError, SeclusionError
from .notice import Notice, render_message

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
SIGNATURE_HEADER = "X-Seclusion-Signature"
DELIVERY_HEADER = "X-Seclusion-Delivery"
WEBHOOK_VERSION = 1
_REASON_MAX = 300
_SOCKET_GRACE_S = 1.0

T = TypeVar("T")


class DeliveryError(SeclusionError, ConnectionError):
    """A notice that did not get through this time; `reason` is short and carries no secret."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ChannelError(SeclusionError, ValueError):
    """A channel that cannot be built from what it was given (an unknown Apprise URL, a bad webhook)."""


class Channel(Protocol):
    """One destination. `send` delivers a notice once or raises DeliveryError."""

    @property
    def label(self) -> str:
        """Safe to store and log, one per destination: `apprise:mailtos://smtp.example.org#1f2e3d4c`."""
        ...

    def send(self, notice: Notice) -> None:
        """Deliver `notice` once, within the channel's timeout, or raise DeliveryError."""
        ...


def _scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in `text` (as a whole token) with `***` and keep it short."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    text = " ".join(text.split())
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"


def _looks_like_host(host: str) -> bool:
    """A DNS name or an address, rather than a token in the host's place (`ntfy://topic`, `tgram://token`)."""
    return "." in host or ":" in host or host == "localhost"


def _secrets_of(url: str) -> set[str]:
    """The parts of a URL that may be secret: user, password, path segments, query values, a token host."""
    parts = urlsplit(url)
    found: set[str] = set()
    for value in (parts.username, parts.password):
        if value:
            found |= {value, unquote(value)}
    for segment in parts.path.split("/"):
        found |= {segment, unquote(segment)}
    for pair in parts.query.split("&"):
        value = pair.partition("=")[2]
        found |= {value, unquote(value)}
    host = parts.hostname or ""
    if host and not _looks_like_host(host):
        found.add(host)
    found.discard("")
    return found


def _host_label(url: str) -> str:
    """`scheme://host[:port]` of a URL, with a host that looks like a token masked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host and not _looks_like_host(host):
        host = "***"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _fingerprint(url: str) -> str:
    """Eight hex digits that tell apart two destinations on one host (two `to=` on one SMTP server).

    Computed without the URL's password, so that it is no test of a guessed password (and survives a
    change of password); the tokens that remain are long and random, or already guessable online.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}@{hostport}"
    return hashlib.sha256(parts._replace(netloc=netloc).geturl().encode()).hexdigest()[:8]


def _within(timeout: float, work: Callable[[], T], what: str) -> T:
    """Run `work` on a helper thread and wait at most `timeout` seconds for it.

    A library's own timeouts bound each socket operation, not the whole call (an SMTP exchange is
    many); this bounds the whole call. A call that overruns is abandoned: its thread is a daemon and
    whatever it does later is ignored (a late duplicate is possible, a silent loss is not).
    """
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:  # handed back to the caller below, never lost in this thread
            outcome.append((False, exc))

    helper = threading.Thread(target=run, name=f"notify-send {what}", daemon=True)
    helper.start()
    helper.join(timeout)
    if helper.is_alive() or not outcome:
        raise DeliveryError(f"timed out after {timeout:g} s")
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


class _ThreadLog(logging.Handler):
    """Collects the apprise logger's warnings and errors emitted by one thread: the reason for a failure."""

    def __init__(self, thread_id: int) -> None:
        super().__init__(logging.WARNING)
        self.thread_id = thread_id
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            self.lines.append(record.getMessage())


_APPRISE_LOADING = threading.Lock()


def _instantiate(url: str, asset: apprise.AppriseAsset) -> Any:
    """Apprise's plugin for `url`, or None.

    Apprise imports its plugins on first use, and its email plugin imports `imghdr`, deprecated since
    Python 3.11: that one warning is not ours to fix, so it is silenced here (and only here, under a
    lock, since warning filters are process-wide).
    """
    with _APPRISE_LOADING, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'imghdr' is deprecated", category=DeprecationWarning)
        return apprise.Apprise.instantiate(url, asset=asset)


_NOTIFY_TYPE: dict[str, str] = {"info": "info", "warning": "warning", "critical": "failure"}


def _apprise_reasons(result: object) -> list[str]:
    """The warnings and errors of one notify() call, from Apprise 2's result object (it has its logs).

    Apprise 2 may run even a sequential call on a pool thread, where the per-thread capture cannot
    see it; Apprise 1 returns a bool and logs on the calling thread, where the capture can.
    """
    logs = getattr(result, "logs", None)
    if not callable(logs):
        return []
    try:
        entries = list(logs())
    except Exception:
        return []
    finally:
        close = getattr(result, "close", None)
        if callable(close):
            close()
    return [
        str(getattr(entry, "message", entry))
        for entry in entries
        if str(getattr(entry, "level", "WARNING")).upper() in ("WARNING", "ERROR", "CRITICAL")
    ]


class AppriseChannel:
    """One Apprise URL (email, SMS gateways, Teams, Slack, ntfy, ...), its own Apprise object.

    One Apprise object per URL, so that each URL's outcome is known. A URL Apprise does not know is
    refused when the channel is built (ChannelError), not when an alert is due.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        scheme = urlsplit(url).scheme or "?"
        asset = apprise.AppriseAsset(async_mode=False, app_id="Seclusion hub", app_desc="Seclusion hub")
        # One service per object: Apprise's own pool adds nothing (and Apprise 1 then logs on our thread).
        plugin = _instantiate(url, asset)
        if plugin is None:
            raise ChannelError(f"not an Apprise URL this hub can use (scheme {scheme!r})")
        # _within bounds the whole call; the socket timeouts are clamped a little above it, so that an
        # abandoned call ends soon after, and a stall is reported as the timeout it is.
        for attribute in ("socket_connect_timeout", "socket_read_timeout"):
            current = getattr(plugin, attribute, None)
            if isinstance(current, int | float) and current > timeout + _SOCKET_GRACE_S:
                setattr(plugin, attribute, timeout + _SOCKET_GRACE_S)
        self._url = url
        self._timeout = timeout
        self._secrets = _secrets_of(url)
        private = str(plugin.url(privacy=True))
        self._label = f"apprise:{_host_label(private if '://' in private else url)}#{_fingerprint(url)}"
        self._apprise = apprise.Apprise(asset=asset)
        self._apprise.add(plugin)

    @property
    def label(self) -> str:
        return self._label

    @property
    def timeout(self) -> float:
        return self._timeout

    def send(self, notice: Notice) -> None:
        """Notify through Apprise; False from Apprise, an exception or the timeout is a DeliveryError."""
        message = render_message(notice)
        kind = _NOTIFY_TYPE.get(notice.severity, "info")

        def call() -> tuple[bool, list[str]]:
            capture = _ThreadLog(threading.get_ident())
            logger = logging.getLogger("apprise")
            logger.addHandler(capture)
            try:
                # Plain text, as written: never read as HTML by an email or chat service.
                result = self._apprise.notify(
                    body=message.body,
                    title=message.title,
                    notify_type=kind,
                    body_format=apprise.NotifyFormat.TEXT,
                )
            finally:
                logger.removeHandler(capture)
            return bool(result), _apprise_reasons(result) or capture.lines

        try:
            ok, lines = _within(self._timeout, call, self._label)
        except DeliveryError:
            raise
        except Exception as exc:
            raise DeliveryError(f"apprise raised {type(exc).__name__}") from None
        if not ok:
            said = "; ".join(lines[-2:]) or "Apprise reported a failure"
            raise DeliveryError(_scrub(said, self._secrets))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AppriseChannel) and other._url == self._url

    def __hash__(self) -> int:
        return hash((AppriseChannel, self._url))

    def __repr__(self) -> str:
        return f"AppriseChannel({self._label!r})"


def sign(secret: str, body: bytes, when: int) -> str:
    """The `X-Seclusion-Signature` value: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`."""
    digest = hmac.new(secret.encode(), f"{when}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={when},v1={digest}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: dt.datetime | None = None, tolerance_s: float = 300.0
) -> bool:
    """Whether `header` signs `body` under `secret`, at a `t` within `tolerance_s` of `now` (if given)."""
    stamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            stamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if stamp is None or not candidates:
        return False
    if now is not None and abs(now.timestamp() - stamp) > tolerance_s:
        return False
    expected = sign(secret, body, stamp).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, c) for c in candidates)


def webhook_payload(notice: Notice, sent_at: dt.datetime) -> dict[str, Any]:
    """The JSON body of a webhook: the notice, its words for a person, and when it was sent (`ts`)."""
    message = render_message(notice, sent_at)
    return {
        "v": WEBHOOK_VERSION,
        "delivery_id": notice.delivery_id,
        "alert_id": notice.alert_id,
        "kind": notice.kind,
        "severity": notice.severity,
        "site": notice.site,
        "room": notice.room,
        "room_name": notice.room_name,
        "site_name": notice.site_name,
        "tier": notice.tier,
        "reason": notice.reason,
        "late": notice.late,
        "due_at": format_ts(notice.due_at),
        "raised_at": format_ts(notice.raised_at),
        "timezone": notice.timezone,
        "link": notice.link,
        "title": message.title,
        "body": message.body,
        "ts": format_ts(sent_at),
    }


class WebhookChannel:
    """POSTs the notice as JSON, signed with HMAC-SHA256; any 2xx is success, nothing else is.

    Redirects are not followed (a redirected POST may lose its body); a 3xx is a failure to fix.
    """

    def __init__(
        self, url: str, secret: str, *, timeout: float = DEFAULT_TIMEOUT_S, clock: Clock | None = None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ChannelError("a webhook URL must be http:// or https:// with a host")
        if not secret:
            raise ChannelError("a webhook needs a secret")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._url = url
        self._secret = secret
        self._timeout = timeout
        self._clock: Clock = clock or SystemClock()
        self._secrets = _secrets_of(url) | {secret}
        self._label = f"webhook:{_host_label(url)}#{_fingerprint(url)}"

    @property
    def label(self) -> str:
        return self._label

    @property
    def timeout(self) -> float:
        return self._timeout

    def send(self, notice: Notice) -> None:
        """POST the signed notice; a non-2xx answer, a network error or the timeout is a DeliveryError."""
        now = self._clock.now()
        body = json.dumps(webhook_payload(notice, now), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "seclusion-hub",
            SIGNATURE_HEADER: sign(self._secret, body, int(now.timestamp())),
            DELIVERY_HEADER: notice.delivery_id,
        }

        def call() -> int:
            response = httpx.post(
                self._url, content=body, headers=headers, timeout=self._timeout, follow_redirects=False
            )
            return response.status_code

        try:
            status = _within(self._timeout, call, self._label)
        except DeliveryError:
            raise
        except httpx.TimeoutException:
            raise DeliveryError(f"timed out after {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise DeliveryError(_scrub(f"{type(exc).__name__}: {exc}", self._secrets)) from None
        except Exception as exc:
            raise DeliveryError(f"unexpected {type(exc).__name__}") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WebhookChannel) and (other._url, other._secret) == (self._url, self._secret)

    def __hash__(self) -> int:
        return hash((WebhookChannel, self._url, self._secret))

    def __repr__(self) -> str:
        return f"WebhookChannel({self._label!r})"


def _default_expand(value: str) -> str:
    return expand_env(value, "site file", "recipients")


def channels_for(
    recipients: Iterable[Recipient],
    expand: Callable[[str], str] | None = None,
    *,
    tier: Tier | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    clock: Clock | None = None,
) -> list[Channel]:
    """The channels of these recipients (of `tier` only, if given), `${VAR}` expanded, each once.

    `expand` defaults to `config.expand_env` (a variable that is not set is a ConfigError). A URL that
    cannot be used is a ConfigError naming the recipient and the entry, never the URL (it may hold a
    password).
    """
    expand = expand or _default_expand
    channels: list[Channel] = []
    seen: set[Channel] = set()
    for recipient in recipients:
        if tier is not None and recipient.tier != tier:
            continue
        built: list[Channel] = []
        for n, url in enumerate(recipient.notify):
            try:
                built.append(AppriseChannel(expand(url), timeout=timeout))
            except ChannelError as exc:
                raise ConfigError("recipients", f"{recipient.name}: notify.{n}", str(exc)) from None
        for n, hook in enumerate(recipient.webhooks):
            try:
                built.append(
                    WebhookChannel(expand(hook.url), expand(hook.secret), timeout=timeout, clock=clock)
                )
            except ChannelError as exc:
                raise ConfigError("recipients", f"{recipient.name}: webhooks.{n}", str(exc)) from None
        for channel in built:
            if channel not in seen:
                seen.add(channel)
                channels.append(channel)
    return channels
