"""Small paho helpers for tests that talk to a real Mosquitto as a device or an onlooker would,
`Driver`, which plays the ingest thread's part for the hub's MQTT adapter driven inline, and
`HalfCutProxy`, a relay whose client side can be cut while the broker sees nothing."""

from __future__ import annotations

import contextlib
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


class HalfCutProxy:
    """A TCP relay between a client and the broker whose client side can be cut alone: the client sees
    its connection end, the broker sees nothing (a Wi-Fi or NAT drop the client notices first). The
    client's next connection then takes its session over from the broker's side still open, and
    Mosquitto publishes no Last Will on a takeover."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accepting = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        self._accepting.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self._server.accept()
            except OSError:
                return  # closed
            try:
                broker = socket.create_connection(("127.0.0.1", self.broker_port))
            except OSError:
                client.close()  # the broker is down: the client sees its connection end, as without us
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    broker.close()
                    return
                self._pairs.append((client, broker))
                for a, b in ((client, broker), (broker, client)):
                    relay = threading.Thread(target=self._relay, args=(a, b), name="test-proxy", daemon=True)
                    self._threads.append(relay)
                    relay.start()

    @staticmethod
    def _relay(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def cut_client_side(self) -> None:
        """End every client's leg; the broker's legs stay open and silent."""
        with self._lock:
            for client, _broker in self._pairs:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pairs = list(self._pairs)
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone does not)
        self._server.close()
        for client, broker in pairs:
            for sock in (client, broker):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._accepting.join(5)
        for relay in self._threads:
            relay.join(5)
        for client, broker in pairs:
            client.close()
            broker.close()
