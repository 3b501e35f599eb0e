"""Small paho helpers for tests that talk to a real Mosquitto as a device or an onlooker would."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from seclusion_contract import stop_client
from tests.support.processes import Mosquitto

# A device event topic of the test site (what the hub subscribes to).
TOPIC = "seclusion/v1/test-school/calm-1/calm-1-door/event"


def paho_client(mosquitto: Mosquitto, name: str) -> paho.Client:
    """A connected MQTT v5 client with its network thread running (stop it with `stop_client`)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    return client


def publish_numbers(mosquitto: Mosquitto, numbers: range) -> None:
    """Publish `{"n": n}` for each number on `TOPIC`, QoS 1, each one PUBACKed before the next."""
    client = paho_client(mosquitto, "test-device")
    try:
        for n in numbers:
            client.publish(TOPIC, json.dumps({"n": n}).encode(), qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        stop_client(client)


def retained(mosquitto: Mosquitto, topic: str) -> dict[str, object] | None:
    """The retained message on `topic` as a fresh subscriber sees it (None if there is none)."""
    got: list[bytes] = []
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-reader", protocol=paho.MQTTv5)

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        got.append(bytes(msg.payload))
        done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        done.wait(3)
    finally:
        client.disconnect()
        stop_client(client)
    return json.loads(got[-1]) if got else None
