"""Fixtures for the edge agent's tests: a fake clock, an in-memory broker link, mock pins."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from seclusion_contract import EventPayload, HeartbeatPayload, StatusPayload
from seclusion_edge import EdgeAgent, EdgeConfig, FakeClock
from seclusion_edge.link import LinkHandlers, LinkSettings, Message

SETTLE_MS = 100

# A self-signed CA certificate (no key anywhere): a device file's `mqtt.ca_file` must hold one.
TEST_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBjjCCATWgAwIBAgIUZScNP4OXjZUrNMhTfhYMgsOVLCIwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRc2VjbHVzaW9uIHRlc3QgQ0EwIBcNMjYxMjA2MTExMzM2WhgP
MjEyNjExMTIxMTEzMzZaMBwxGjAYBgNVBAMMEXNlY2x1c2lvbiB0ZXN0IENBMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAETDi0nuFFTG9rspEvEvKkWgR6EIqXjnpm
WT/EWkQOz/Jdw6w/PFeN3F+WPRyPPPn08b3hlt8+QwvN1SvOvaVYg6NTMFEwHQYD
VR0OBBYEFBgWGR6xdZdmuzZvG7GJXwaMRGJFMB8GA1UdIwQYMBaAFBgWGR6xdZdm
uzZvG7GJXwaMRGJFMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIg
GcN4GMjMIdE4Gce0+cfyAr8V0xAXQxn3AAWEhGvdOgcCIBee4uUbnGNZ30edyqWO
F20vf9i8KG2SpQSMyGsY7CCB
-----END CERTIFICATE-----
"""


def matches(topic: str, subscription: str) -> bool:
    """Whether an MQTT topic filter (`+` one level, `#` the rest) matches a topic."""
    levels, filters = topic.split("/"), subscription.split("/")
    for index, part in enumerate(filters):
        if part == "#":
            return True
        if index >= len(levels) or (part != "+" and part != levels[index]):
            return False
    return len(levels) == len(filters)


class FakeLink:
    """An in-memory broker connection: the test decides when it is up, and reads what was sent.

    Like a broker, it delivers what the agent publishes on its own subscriptions back to it (`echo`),
    and on every connect the retained messages of its subscriptions (`retained`, shared by the links
    of one bench) after the agent's `on_connected` and before the copies of what it published there.
    """

    def __init__(
        self,
        settings: LinkSettings,
        handlers: LinkHandlers,
        connect_on_start: bool = True,
        retained: dict[str, bytes] | None = None,
        echo: bool = True,
    ) -> None:
        self.settings = settings
        self.handlers = handlers
        self.connect_on_start = connect_on_start
        self.retained = {} if retained is None else retained
        self.echo = echo
        self.connected = False
        self.started = False
        self.stopped = False
        self.will = settings.will  # the Last Will the next connect opens with
        self.wills: list[Message] = []  # the Last Wills the broker published: one per dropped connection
        self._connection_will: Message | None = None
        self.sent: list[Message] = []
        self._inbound: list[tuple[str, bytes]] = []
        self._holding = 0  # inside connect(): the copies wait for the retained messages
        self._delivering = False

    @property
    def is_connected(self) -> bool:
        return self.connected

    def start(self) -> None:
        self.started = True
        if self.connect_on_start:
            self.connect()

    def connect(self) -> None:
        if self.settings.next_will is not None:  # as paho's on_pre_connect, before every CONNECT
            self.will = self.settings.next_will()
        self.connected = True
        self._connection_will = self.will
        # What the broker holds as the subscriptions are made, before anything this connection publishes.
        held = [(topic, payload) for topic, payload in self.retained.items() if self._subscribed(topic)]
        self._holding += 1
        try:
            self.handlers.on_connected(False)
        finally:
            self._holding -= 1
        self._inbound = held + self._inbound
        self._deliver()

    def drop(self) -> None:
        """The connection lost without a DISCONNECT: the broker publishes its Last Will."""
        if self.connected and self._connection_will is not None:
            self.wills.append(self._connection_will)
        self.connected = False
        self._inbound.clear()
        self.handlers.on_disconnected()

    def publish(self, message: Message) -> bool:
        if not self.connected:
            return False
        self.sent.append(message)
        if message.retain:
            self.retained[message.topic] = message.payload
        if self.echo and self._subscribed(message.topic):
            self._inbound.append((message.topic, message.payload))
            if not self._holding:
                self._deliver()
        return True

    def _subscribed(self, topic: str) -> bool:
        return any(matches(topic, subscription) for subscription in self.settings.subscriptions)

    def _deliver(self) -> None:
        if self._delivering:
            return  # a handler published: the outer loop delivers it in turn
        self._delivering = True
        try:
            while self._inbound and self.connected:
                topic, payload = self._inbound.pop(0)
                self.handlers.on_message(topic, payload)
        finally:
            self._delivering = False

    def stop(self, farewell: Message | None = None, timeout_s: float = 2.0) -> None:
        if farewell is not None and self.connected:
            self.sent.append(farewell)
        self.connected = False
        self.stopped = True

    def deliver(self, topic: str, payload: dict[str, Any] | bytes) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.handlers.on_message(topic, raw)

    # What the hub would have seen.
    def on(self, channel: str) -> list[Message]:
        return [m for m in self.sent if m.topic.endswith("/" + channel)]

    def events(self) -> list[EventPayload]:
        return [EventPayload.model_validate_json(m.payload) for m in self.on("event")]

    def statuses(self) -> list[StatusPayload]:
        return [StatusPayload.model_validate_json(m.payload) for m in self.on("status")]

    def heartbeats(self) -> list[HeartbeatPayload]:
        return [HeartbeatPayload.model_validate_json(m.payload) for m in self.on("heartbeat")]

    def clear(self) -> None:
        self.sent.clear()


def door_device(state_dir: Path, **overrides: Any) -> EdgeConfig:
    """calm-1-door as in firmware-config: door (pull-up, closed = low), lock, occupancy; fast settle."""
    data: dict[str, Any] = {
        "site": "demo-school",
        "room": "calm-1",
        "device": "calm-1-door",
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "state_dir": str(state_dir),
        "settle_ms": SETTLE_MS,
        "heartbeat_s": 10,
        "sensors": [
            {"kind": "door", "pin": 17, "pull": "up", "active": "low", "active_value": "closed"},
            {"kind": "lock", "pin": 27, "pull": "up", "active": "low", "active_value": "engaged"},
            {"kind": "occupancy", "pin": 22, "pull": "down", "active": "high", "active_value": "occupied"},
        ],
    }
    data.update(overrides)
    return EdgeConfig.model_validate(data)


def panel_device(state_dir: Path, **overrides: Any) -> EdgeConfig:
    """calm-1-panel: observer radar and a check-in button (pull-up, pressed = low)."""
    data: dict[str, Any] = {
        "site": "demo-school",
        "room": "calm-1",
        "device": "calm-1-panel",
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "state_dir": str(state_dir),
        "settle_ms": SETTLE_MS,
        "sensors": [
            {"kind": "observer", "pin": 5, "pull": "down", "active": "high", "active_value": "present"},
            {"kind": "check", "pin": 6, "pull": "up", "active": "low", "staff": "badge-0042"},
        ],
    }
    data.update(overrides)
    return EdgeConfig.model_validate(data)


class Bench:
    """Agents on mock pins with a fake clock and in-memory links; every agent is stopped afterwards."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.links: list[FakeLink] = []
        self.agents: list[EdgeAgent] = []
        self.connect_on_start = True
        self.echo = True
        self.retained: dict[str, bytes] = {}  # the broker's retained messages, across the agent's links

    @property
    def link(self) -> FakeLink:
        """The link of the agent started last."""
        return self.links[-1]

    def factory(self, settings: LinkSettings, handlers: LinkHandlers) -> FakeLink:
        link = FakeLink(settings, handlers, self.connect_on_start, self.retained, self.echo)
        self.links.append(link)
        return link

    def start(self, config: EdgeConfig, pin_factory: Any | None = None) -> EdgeAgent:
        agent = EdgeAgent(
            config,
            pin_factory=pin_factory or MockFactory(),
            clock=self.clock,
            publisher_factory=self.factory,
            tick_interval_s=None,
            boot_id="boot-1",
        )
        self.agents.append(agent)
        return agent.start()

    def settle(self, agent: EdgeAgent, ms: int = SETTLE_MS) -> None:
        """Let `ms` pass and tick once."""
        self.clock.advance(ms=ms)
        agent.tick()

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def bench(clock: FakeClock) -> Iterator[Bench]:
    setup = Bench(clock)
    try:
        yield setup
    finally:
        setup.close()


@pytest.fixture
def started_door(bench: Bench, tmp_path: Path) -> Callable[..., EdgeAgent]:
    """Start calm-1-door and let its start-up readings (open, released, vacant) settle and go out."""

    def start(**overrides: Any) -> EdgeAgent:
        agent = bench.start(door_device(tmp_path / "state", **overrides))
        bench.settle(agent)
        bench.link.clear()
        return agent

    return start
