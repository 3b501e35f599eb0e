"""The edge fail-safe against a real Mosquitto: two agents of one room on mock pins, a stand-in for the hub.

The agents read a shared fake clock and are ticked by the test, so their timers move only when the test
steps the clock; the MQTT traffic is real, and waited for by polling with a deadline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from seclusion_contract import format_ts
from seclusion_edge import EdgeAgent, EdgeConfig, FakeClock
from tests.edge.conftest import door_device, panel_device
from tests.edge.hub_double import HubDouble
from tests.support.processes import Mosquitto, poll

pytestmark = pytest.mark.integration

ROOM = "seclusion/v1/demo-school/calm-1"
HUB_STATUS = "seclusion/v1/_hub/status"
SETTLE_MS = 20
GRACE_S = 15
NUMBERS = {"v": 1, "supervision": "observer", "lapse_grace_s": GRACE_S, "checkin_interval_s": 300}


@pytest.fixture
def hub(mosquitto: Mosquitto) -> Iterator[HubDouble]:
    double = HubDouble(mosquitto.port)
    try:
        assert double.connected.wait(5)
        yield double
    finally:
        double.close()


class Room:
    """The room's agents on one fake clock; the test ticks them (no ticker threads)."""

    def __init__(self, tmp_path: Path, broker: Mosquitto) -> None:
        self.tmp_path = tmp_path
        self.broker = broker
        self.clock = FakeClock()
        self.agents: list[EdgeAgent] = []

    def start(self, make: Callable[..., EdgeConfig], name: str, **overrides: Any) -> EdgeAgent:
        mqtt = {"url": self.broker.url, "keepalive_s": 5, "reconnect_min_s": 1, "reconnect_max_s": 1}
        config = make(self.tmp_path / name, mqtt=mqtt, settle_ms=SETTLE_MS, **overrides)
        agent = EdgeAgent(
            config, pin_factory=MockFactory(), clock=self.clock, tick_interval_s=None, boot_id=f"boot-{name}"
        )
        self.agents.append(agent)
        return agent.start()

    def tick_until(self, condition: Callable[[], object], what: str, seconds: float = 10.0) -> None:
        """Tick every agent (sending what they have) until `condition` holds, or fail at the deadline."""

        def ticked() -> object:
            for agent in self.agents:
                agent.tick()
            return condition()

        poll(ticked, seconds, what=what)

    def settle(self) -> None:
        """Let the readings just made hold for the settle time, and tick."""
        self.clock.advance(ms=SETTLE_MS)
        for agent in self.agents:
            agent.tick()

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop(timeout_s=0.5)


@pytest.fixture
def room(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Room]:
    setup = Room(tmp_path, mosquitto)
    try:
        yield setup
    finally:
        setup.stop()


def publish(hub: HubDouble, topic: str, payload: dict[str, Any]) -> None:
    """Publish as the hub does: QoS 1, retained."""
    hub.client.publish(topic, json.dumps(payload), qos=1, retain=True).wait_for_publish(5)


def test_with_the_broker_stopped_and_the_observer_gone_past_the_grace_the_panels_buzzer_sounds(
    mosquitto: Mosquitto, hub: HubDouble, room: Room
) -> None:
    # Given the room's numbers and an online hub, retained on the broker,
    publish(hub, f"{ROOM}/calm-1-panel/config", NUMBERS)
    publish(hub, HUB_STATUS, {"v": 1, "online": True, "ts": "2026-11-21T09:59:00.000Z"})
    door = room.start(door_device, "door")
    panel = room.start(panel_device, "panel", outputs={"buzzer": 13, "led": 26})
    room.tick_until(lambda: panel.policy is not None and panel.hub_drives, "the panel has its numbers")
    assert panel.policy is not None and panel.policy.lapse_grace_s == GRACE_S
    room.tick_until(lambda: door.is_connected, "the door device connected")

    # and a child in the room with the door shut, an observer at the panel,
    panel.simulate("observer", "present")
    door.simulate("occupancy", "occupied")
    door.simulate("door", "closed")
    room.settle()
    room.tick_until(lambda: panel.episode_open, "the panel heard the door device's readings")
    assert panel.room_state() == {
        "observer": "present",
        "door": "closed",
        "occupancy": "occupied",
        "lock": "released",
    }
    assert panel.alarm.driver == "hub"

    # when the broker stops
    mosquitto.stop()
    room.tick_until(lambda: not panel.is_connected, "the panel noticed the broker is gone")
    room.tick_until(lambda: panel.alarm.driver == "local", "the local fail-safe took over")

    # and the observer walks away,
    panel.simulate("observer", "absent")
    room.settle()
    assert panel.readings()["observer"] == "absent"
    room.clock.advance(seconds=GRACE_S - 1)
    panel.tick()
    assert not panel.pin_for("buzzer").state  # not yet: the grace has not run out

    # then past the grace the buzzer pin goes active, and the LED lights.
    room.clock.advance(seconds=2)
    room.tick_until(lambda: panel.pin_for("buzzer").state, "the buzzer pin active")
    assert panel.pin_for("led").state
    assert (panel.alarm.level, panel.alarm.reason, panel.alarm.driver) == (
        "critical",
        "supervision_lapse",
        "local",
    )

    # When the observer returns, it stops, still with no broker.
    panel.simulate("observer", "present")
    room.settle()
    room.tick_until(lambda: not panel.pin_for("buzzer").state, "the buzzer pin inactive")
    assert not panel.pin_for("led").state
    assert not panel.is_connected


def test_with_the_broker_up_and_the_hub_online_the_indicator_drives_the_pins(
    mosquitto: Mosquitto, hub: HubDouble, room: Room
) -> None:
    publish(hub, f"{ROOM}/calm-1-panel/config", NUMBERS)
    publish(hub, HUB_STATUS, {"v": 1, "online": True, "ts": "2026-11-21T09:59:00.000Z"})
    panel = room.start(panel_device, "panel", outputs={"buzzer": 13, "led": 26})
    room.tick_until(lambda: panel.hub_drives, "the hub drives the panel's outputs")
    buzzer, led = panel.pin_for("buzzer"), panel.pin_for("led")

    def show(level: str, acknowledged: bool = False) -> None:
        payload = {"v": 1, "level": level, "reason": "supervision_lapse", "ts": "2026-11-21T10:00:00.000Z"}
        publish(hub, f"{ROOM}/indicator", {**payload, "acknowledged": acknowledged})

    show("critical")
    room.tick_until(lambda: buzzer.state and led.state, "critical: buzzer and LED on")
    show("critical", acknowledged=True)
    room.tick_until(lambda: not buzzer.state and led.state, "acknowledged: the buzzer off, the LED on")
    show("none")
    room.tick_until(lambda: not buzzer.state and not led.state, "none: both off")

    # The hub's Last Will with the broker still up: the local fail-safe takes over. Given an episode the
    # panel hears of (the hub double speaks for the door device) and nobody at the panel,
    for seq, (kind, value) in enumerate([("occupancy", "occupied"), ("door", "closed")], start=1):
        ts = format_ts(room.clock.now().wall)
        event = {"v": 1, "id": f"calm-1-door:0:{seq}", "seq": seq, "ts": ts, "kind": kind, "value": value}
        hub.client.publish(f"{ROOM}/calm-1-door/event", json.dumps(event), qos=1).wait_for_publish(5)
    room.tick_until(lambda: panel.episode_open, "the panel heard of the episode")
    room.clock.advance(seconds=GRACE_S + 1)
    room.tick_until(lambda: panel.local_alarm.level == "critical", "the local timers see the lapse")
    assert not buzzer.state  # the hub's indicator says none, and the hub decides
    publish(hub, HUB_STATUS, {"v": 1, "online": False})
    room.tick_until(lambda: buzzer.state and led.state, "the local fail-safe sounds the buzzer")
    assert panel.is_connected and panel.alarm.driver == "local"
