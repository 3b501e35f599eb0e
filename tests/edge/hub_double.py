"""A stand-in for the hub in integration tests: a paho client that records what devices send."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from seclusion_contract import stop_client


@dataclass(frozen=True)
class Received:
    topic: str
    payload: dict[str, Any]
    retain: bool


class HubDouble:
    """Subscribes to `seclusion/v1/#` with a persistent MQTT v5 session, so that it also gets what is
    published while it reconnects after a broker restart; publishes acks as the hub would."""

    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self.connected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"hub-double-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 600
        self.client.connect_async("127.0.0.1", port, 30, clean_start=False, properties=properties)
        self.client.loop_start()

    def _on_connect(
        self, client: paho.Client, userdata: object, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        client.subscribe("seclusion/v1/#", qos=1)
        self.connected.set()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        payload = json.loads(message.payload) if message.payload else {}
        with self._lock:
            self._received.append(Received(message.topic, payload, bool(message.retain)))

    def on(self, channel: str) -> list[Received]:
        with self._lock:
            return [r for r in self._received if r.topic.endswith("/" + channel)]

    def events(self) -> list[dict[str, Any]]:
        return [r.payload for r in self.on("event")]

    def last_status(self) -> dict[str, Any] | None:
        statuses = self.on("status")
        return statuses[-1].payload if statuses else None

    def ack(self, topic: str, epoch: int, seq: int) -> None:
        info = self.client.publish(
            topic, json.dumps({"v": 1, "epoch": epoch, "seq": seq}), qos=1, retain=True
        )
        info.wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        stop_client(self.client)
