"""The agent's view of its broker connection: a small protocol, so the core never imports paho.

`seclusion_edge.mqtt.PahoPublisher` is the real implementation; tests use an in-memory one. A
publisher is built by a `PublisherFactory` from `LinkSettings` and the agent's `LinkHandlers`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One outgoing MQTT message."""

    topic: str
    payload: bytes
    qos: Literal[0, 1] = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Everything needed to open and keep a persistent session with the broker."""

    host: str
    port: int
    client_id: str
    will: Message  # the Last Will, unless `next_will` names each connection's own
    subscriptions: tuple[str, ...]
    protocol: Literal["5", "3.1.1"] = "5"
    tls: bool = False
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    session_expiry_s: int = 86_400
    keepalive_s: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    # Called just before every CONNECT (the first and each reconnect, whatever ended the one before):
    # the Last Will of the connection about to open.
    next_will: Callable[[], Message] | None = field(default=None, repr=False, compare=False)


class LinkHandlers(Protocol):
    """What the publisher calls back, on its own network thread. Handlers must not block for long."""

    def on_connected(self, session_present: bool) -> None:
        """A CONNACK accepted the connection (after the subscriptions were sent)."""
        ...

    def on_disconnected(self) -> None:
        """The connection is gone (the publisher keeps reconnecting on its own)."""
        ...

    def on_message(self, topic: str, payload: bytes) -> None:
        """A message arrived on one of the subscriptions."""
        ...


class Publisher(Protocol):
    """A broker connection that reconnects by itself and never claims to be connected when it is not."""

    @property
    def is_connected(self) -> bool:
        """True only between an accepted CONNACK and the next disconnect or failed connect."""
        ...

    def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        ...

    def publish(self, message: Message) -> bool:
        """Hand a message to the current connection; False (nothing sent) when there is none.

        The agent keeps every event in its outbox until the hub acknowledges it, so a False here loses
        nothing: the event is sent again after the next connect.
        """
        ...

    def stop(self, farewell: Message | None = None, timeout_s: float = 2.0) -> None:
        """Publish `farewell` if connected (waiting up to `timeout_s` for the broker), then disconnect."""
        ...


PublisherFactory = Callable[[LinkSettings, LinkHandlers], Publisher]
