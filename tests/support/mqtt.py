"""Small paho helpers for tests that talk to a real Mosquitto as a device or an onlooker would, and
`Driver`, which plays the ingest thread's part for the hub's MQTT adapter driven inline."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from seclusion_contract import stop_client
from seclusion_hub.mqtt import HubMqtt
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


def next_connection(
    client: paho.Client, before: object, connected: Callable[[], bool]
) -> Callable[[], socket.socket | None]:
    """For `poll`: the client's socket once it is connected again on a socket other than `before`.

    paho closes a lost socket a moment before it reports the loss, so a connected flag can still be the
    old connection's while there is no socket at all; the socket alone is not enough either (it exists
    before the CONNACK)."""

    def fetch() -> socket.socket | None:
        sock = client.socket()
        if connected() and isinstance(sock, socket.socket) and sock is not before:
            return sock
        return None

    return fetch


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


class Driver:
    """The ingest thread's part, as `HubService._take` plays it: pump, then run what it was given (such
    as acknowledging what it stored), then pump again."""

    def __init__(self, mqtt: HubMqtt, timeout: float = 0.05) -> None:
        self.mqtt = mqtt
        self.timeout = timeout
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.pumps: list[float] = []  # how long each pump took, in seconds
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-ingest", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.mqtt.pump(self.timeout)
            self.pumps.append(time.monotonic() - started)
            while True:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                job()

    def __enter__(self) -> Driver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self.mqtt.wake()
        self.thread.join(10)
        assert not self.thread.is_alive()
