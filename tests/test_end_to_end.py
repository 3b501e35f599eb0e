"""End to end: edge agents on gpiozero mock pins -> a real Mosquitto -> the hub process -> the HTTP API."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from seclusion_contract import stop_client
from seclusion_edge import EdgeAgent, EdgeConfig
from tests.support.hub import SITE, HubProcess, two_device_room, write_site
from tests.support.processes import Mosquitto, poll


def agent(tmp_path: Path, broker: Mosquitto, device: str, sensors: list[dict[str, Any]]) -> EdgeAgent:
    config = EdgeConfig.model_validate(
        {
            "site": SITE,
            "room": "calm-1",
            "device": device,
            "mqtt": {"url": broker.url, "protocol": "5"},
            "state_dir": str(tmp_path / device),
            "settle_ms": 50,
            "heartbeat_s": 5,
            "sensors": sensors,
        }
    )
    return EdgeAgent(config, pin_factory=MockFactory(), tick_interval_s=0.01)


class Recorder:
    """A bare MQTT client that keeps every event the devices publish."""

    def __init__(self, broker: Mosquitto) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="e2e-recorder")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("seclusion/v1/+/+/+/event", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.events.append(json.loads(msg.payload))

    def find(self, kind: str, value: str) -> dict[str, Any] | None:
        with self._lock:
            return next((e for e in self.events if e["kind"] == kind and e["value"] == value), None)

    def after(self, earlier: dict[str, Any], kind: str, value: str) -> dict[str, Any] | None:
        """The first `kind: value` event published after `earlier`."""
        with self._lock:
            later = self.events[self.events.index(earlier) + 1 :]
            return next((e for e in later if e["kind"] == kind and e["value"] == value), None)

    def close(self) -> None:
        self.client.disconnect()
        stop_client(self.client)


def test_a_door_closing_on_an_occupied_room_is_an_episode_from_the_close_to_the_millisecond(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    site = write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    hub = HubProcess(tmp_path / "hub", mosquitto.url, site).start()
    recorder = Recorder(mosquitto)
    door = agent(
        tmp_path,
        mosquitto,
        "calm-1-door",
        [
            {"kind": "door", "pin": 17, "pull": "up", "active": "low", "active_value": "closed"},
            {"kind": "lock", "pin": 27, "pull": "up", "active": "low", "active_value": "engaged"},
            {"kind": "occupancy", "pin": 22, "pull": "down", "active": "high", "active_value": "occupied"},
        ],
    )
    panel = agent(
        tmp_path,
        mosquitto,
        "calm-1-panel",
        [{"kind": "observer", "pin": 5, "pull": "down", "active": "high", "active_value": "present"}],
    )
    try:
        door.start()
        panel.start()
        poll(lambda: door.is_connected and panel.is_connected, 15, what="both agents to connect")
        # Everyone settles first: the door open, the room empty, nobody at the panel.
        poll(
            lambda: recorder.find("door", "open") and recorder.find("occupancy", "vacant"),
            15,
            what="first readings",
        )

        panel.pin_for("observer").drive_high()
        door.pin_for("occupancy").drive_high()
        poll(lambda: recorder.find("occupancy", "occupied"), 10, what="occupied")
        door.pin_for("door").drive_low()
        closed = poll(lambda: recorder.find("door", "closed"), 10, what="the door's closed event")

        def open_episode() -> dict[str, Any] | None:
            items = hub.get("/api/episodes", site=SITE, room="calm-1", open="true")["items"]
            return items[0] if items else None

        episode = poll(open_episode, 15, what="the hub to open the episode")
        assert episode["started_at"] == closed["ts"]
        assert not episode["start_uncertain"]
        rooms = {r["room"]: r for r in hub.get("/api/rooms")["items"]}
        assert rooms["calm-1"]["door"] == "closed" and rooms["calm-1"]["episode_id"] == episode["id"]
        assert rooms["calm-1"]["supervised"] is True
        # The hub told each device its room's numbers for the fail-safe (retained `config`).
        policy = poll(lambda: door.policy, 10, what="the hub's config for the door device")
        assert policy.lapse_grace_s == 15 and policy.supervision == "observer"
        assert [r.after_s for r in policy.duration_alerts] == [600, 1200, 1800]
        # The hub's `ack` empties the agents' outboxes: every event is stored.
        poll(lambda: door.queued == 0 and panel.queued == 0, 10, what="the outboxes to empty")

        door.pin_for("door").drive_high()
        opened = poll(lambda: recorder.after(closed, "door", "open"), 10, what="the door's open event")
        door.pin_for("occupancy").drive_low()
        ended = poll(
            lambda: (items := hub.get("/api/episodes", site=SITE, open="false")["items"]) and items[0],
            15,
            what="the episode to end when the room is vacant after the door opened",
        )
        assert ended["id"] == episode["id"]
        assert ended["ended_at"] == opened["ts"]
        assert ended["segments"] == [{"start": closed["ts"], "end": opened["ts"]}]
        incident = hub.get(f"/api/incidents/{episode['incident_id']}")
        assert incident["status"] == "awaiting_record"
    finally:
        door.stop()
        panel.stop()
        recorder.close()
        hub.stop()
