"""An MQTT broker inside this process, for `seclusion demo` on a machine with no Mosquitto.

amqtt runs on its own thread with its own asyncio event loop, listening on 127.0.0.1 only. It speaks
MQTT 3.1.1 (not v5), so its clients connect with `clean_session=False`. Authentication is on, through
amqtt's password-file plugin with Argon2 hashes, and anonymous clients are refused: amqtt keeps QoS 1
messages for a disconnected persistent session only when that session authenticated with a user name
(it treats every client of an anonymous broker as anonymous and queues nothing for it).

amqtt 0.12 sends a connecting client the retained messages of every topic filter any client has
subscribed to, not only its own: the hub, reconnecting, would be handed the devices' retained `ack` and
`config` messages (and dead-letter them), an agent every other device's. `_broker_class` restricts that
to the client's own subscriptions. Left as amqtt has them, because they change nothing the hub or an
agent records: messages kept for an offline session arrive with the retain flag set, and a subscriber
gets messages at its subscription's QoS (a QoS 0 heartbeat reaches a QoS 1 subscription as QoS 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

AUTH_PLUGIN = "amqtt.plugins.authentication.FileAuthPlugin"


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not start (amqtt missing, port taken) or did not stop in time."""


@dataclass(frozen=True)
class EmbeddedBrokerAddress:
    """Where the running broker listens, and the generated password of each of its users."""

    host: str
    port: int
    passwords: Mapping[str, str] = field(repr=False)

    def url(self, username: str) -> str:
        """`mqtt://user:password@host:port` for one of the broker's users."""
        password = self.passwords[username]
        return f"mqtt://{quote(username, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}"

    def redacted(self, username: str | None = None) -> str:
        """The address for logs and screens: never a password."""
        user = f"{quote(username, safe='')}:***@" if username else ""
        return f"mqtt://{user}{self.host}:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def amqtt_version() -> str:
    """The installed amqtt's version, or an empty string when it is not installed."""
    import importlib.metadata

    try:
        return importlib.metadata.version("amqtt")
    except importlib.metadata.PackageNotFoundError:
        return ""


def hash_password(password: str) -> str:
    """An Argon2 hash of the password, in the form amqtt's password-file plugin verifies."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    return str(PasswordHash((Argon2Hasher(),)).hash(password))


class EmbeddedBroker:
    """amqtt on a free 127.0.0.1 port, with a generated password for each user, until `stop()`.

    `start()` writes the password file into `workdir`, starts the broker's thread, and returns once
    the broker listens (or raises EmbeddedBrokerError); `stop()` shuts amqtt down properly (sessions,
    listener and every connection still open closed) and ends the thread. Both may be called from
    any thread but the broker's.
    """

    def __init__(self, workdir: Path, users: Iterable[str], host: str = "127.0.0.1", port: int = 0) -> None:
        self.workdir = workdir
        self.users = tuple(dict.fromkeys(users))
        if not self.users:
            raise ValueError("users: the broker needs at least one user (anonymous clients are refused)")
        if any(":" in user or not user for user in self.users):
            raise ValueError("users: a user name is not empty and holds no ':'")
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested: asyncio.Event | None = None
        self._started = threading.Event()
        self._settled = threading.Event()  # set once the start has succeeded or failed
        self._failure: BaseException | None = None
        self._broker: Any = None
        self.address: EmbeddedBrokerAddress | None = None

    @property
    def running(self) -> bool:
        """True from a successful `start()` until `stop()`."""
        return self._thread is not None and self._thread.is_alive() and self._started.is_set()

    @property
    def connections(self) -> int:
        """How many client connections the broker holds open (none once stopped)."""
        broker = self._broker
        return len(broker.streams) if broker is not None and self.running else 0

    def config(self, password_file: Path) -> dict[str, Any]:
        """amqtt's broker configuration: one TCP listener, password-file authentication and nothing else.

        Listing plugins explicitly replaces amqtt's defaults, which include the anonymous-auth plugin
        (allow_anonymous: true) and a $SYS publisher.
        """
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {AUTH_PLUGIN: {"password_file": str(password_file)}},
        }

    def start(self, timeout_s: float = 10.0) -> EmbeddedBrokerAddress:
        """Start the broker; returns its address and the users' passwords once it accepts connections."""
        if self._thread is not None:
            raise EmbeddedBrokerError("the embedded broker is already started")
        if not amqtt_version():
            raise EmbeddedBrokerError(
                "amqtt is not installed: pip install 'seclusion[demo]' (or install Mosquitto)"
            )
        if self.port == 0:
            self.port = free_port(self.host)
        self.workdir.mkdir(parents=True, exist_ok=True)
        passwords = {user: secrets.token_urlsafe(18) for user in self.users}
        password_file = self.workdir / "amqtt-passwords"
        password_file.touch()
        password_file.chmod(0o600)
        password_file.write_text(
            "# Generated by seclusion demo: user:argon2-hash, one a line.\n"
            + "".join(f"{user}:{hash_password(pw)}\n" for user, pw in passwords.items()),
            encoding="utf-8",
        )
        self._started.clear()
        self._settled.clear()
        self._failure = None
        self._thread = threading.Thread(
            target=self._run, args=(self.config(password_file),), name="amqtt-broker", daemon=True
        )
        self._thread.start()
        self._settled.wait(timeout_s)
        if not self._started.is_set():
            failure = self._failure
            if failure is None:
                # Left to die with the process (a daemon thread): amqtt gave no sign of life.
                self._thread = None
                raise EmbeddedBrokerError(f"the embedded broker did not start within {timeout_s:g} s")
            self._thread.join(timeout_s)
            self._thread = None
            raise EmbeddedBrokerError(f"the embedded broker did not start: {failure}") from failure
        self.address = EmbeddedBrokerAddress(self.host, self.port, passwords)
        log.info("embedded broker (amqtt %s) listening on %s", amqtt_version(), self.address.redacted())
        return self.address

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the broker down (its clients are disconnected) and end its thread."""
        thread, loop, stop_requested = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop_requested is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed by itself after a failure
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join(timeout_s)
        if thread.is_alive():
            raise EmbeddedBrokerError(f"the embedded broker did not stop within {timeout_s:g} s")
        self._thread = None
        self._started.clear()
        log.info("embedded broker stopped")

    # -- the broker's thread

    def _run(self, config: dict[str, Any]) -> None:
        try:
            asyncio.run(self._serve(config))
        except BaseException as exc:
            if self._started.is_set():
                log.exception("the embedded broker failed")
            else:
                self._failure = exc
        finally:
            self._settled.set()

    async def _serve(self, config: dict[str, Any]) -> None:
        # The Broker is built inside the running loop, which it binds to.
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        broker = _broker_class()(config)
        self._broker = broker
        await broker.start()
        self._started.set()
        self._settled.set()
        try:
            await self._stop_requested.wait()
        finally:
            try:
                await broker.shutdown()
            finally:
                await broker.close_streams(timeout_s=2.0)


def _broker_class() -> type[Any]:
    """amqtt's Broker, sending retained messages to a client only for the filters it subscribed to.

    Imported here: the module (and the hub) must load without amqtt, which only the demo needs.
    """
    from amqtt.broker import Broker

    class OwnSubscriptionsBroker(Broker):  # type: ignore[misc]  # amqtt has no type information here
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            self.streams: set[asyncio.StreamWriter] = set()

        async def stream_connected(
            self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
        ) -> None:
            # Every connection is closed when its handling ends, however it ends: amqtt leaves one
            # it is still handling as it stops (a client that has not sent CONNECT yet) to the
            # garbage collector, which closes its socket after the loop is gone, with a warning.
            self.streams.add(writer)
            try:
                await super().stream_connected(reader, writer, listener_name)
            finally:
                self.streams.discard(writer)
                writer.close()

        async def close_streams(self, timeout_s: float) -> None:
            """Close the connections still open (amqtt's shutdown closes its sessions' only)."""
            writers = list(self.streams)
            for writer in writers:
                writer.close()
            waits = [writer.wait_closed() for writer in writers]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), timeout_s)

        async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: Any
        ) -> None:
            # amqtt calls this on SUBSCRIBE (the filter is then the session's own) and, on every
            # CONNECT, once for every filter of every client: skip the filters that are not this one's.
            topic_filter = subscription[0]
            subscribers = self._subscriptions.get(topic_filter, ())
            if any(subscriber.client_id == session.client_id for subscriber, _qos in subscribers):
                await super()._publish_retained_messages_for_subscription(subscription, session)

    return OwnSubscriptionsBroker
