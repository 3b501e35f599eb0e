"""`stop_client` (contract module): a stopped paho client holds no socket (paho closes them only when
the client object is collected, eclipse-paho/paho.mqtt.python#627, so a client in a reference cycle
left them to the garbage collector, which closed them with a ResourceWarning in whichever test ran
then). The hub and the edge agent stop their clients with it, and so do the tests and benchmarks."""

from __future__ import annotations

import socket
import threading
import uuid
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from seclusion_contract import stop_client
from tests.support.processes import Mosquitto, poll

pytestmark = pytest.mark.integration


class Watched:
    """A paho client and every socket it has opened: its connections (paho's `on_socket_open`) and
    the pair that wakes its thread (paho's own attributes: what is tested is paho's clean-up)."""

    def __init__(self) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"stop-{uuid.uuid4().hex[:8]}")
        self.opened: list[socket.socket] = []
        self.client.on_socket_open = lambda _c, _u, sock: self.opened.append(sock)  # type: ignore[arg-type]

    def connect(self, mosquitto: Mosquitto) -> None:
        self.client.connect("127.0.0.1", mosquitto.port, keepalive=30)
        self.client.loop_start()
        poll(self.client.is_connected, 10, what="the client to connect")
        for name in ("_sockpairR", "_sockpairW"):
            sock = getattr(self.client, name)
            assert isinstance(sock, socket.socket), name
            self.opened.append(sock)

    def still_open(self) -> list[socket.socket]:
        return [s for s in self.opened if s.fileno() != -1]


def test_a_stopped_client_holds_none_of_its_sockets(mosquitto: Mosquitto) -> None:
    watched = Watched()
    watched.connect(mosquitto)
    assert len(watched.still_open()) == 3  # the connection, and the pair that wakes paho's thread

    watched.client.disconnect()
    stop_client(watched.client)

    assert not watched.still_open(), "a stopped client's sockets are still open"
    assert watched.client.socket() is None


def test_paho_alone_leaves_them_open_until_the_client_is_collected(mosquitto: Mosquitto) -> None:
    """Why `stop_client` exists: `disconnect` and `loop_stop` close the connection, not the pair."""
    watched = Watched()
    watched.connect(mosquitto)
    watched.client.disconnect()
    watched.client.loop_stop()
    try:
        assert watched.still_open(), "paho closes its sockets itself now: stop_client may go"
    finally:
        stop_client(watched.client)
    assert not watched.still_open()


def test_a_client_stopped_and_started_again_connects_and_stops_clean(mosquitto: Mosquitto) -> None:
    """The edge agent keeps its client for the life of the agent: stopped, it can start again."""
    watched = Watched()
    for _ in range(2):
        watched.connect(mosquitto)
        watched.client.disconnect()
        stop_client(watched.client)
        assert not watched.still_open(), "sockets left open after a stop"
    assert len(watched.opened) == 6


def test_a_client_that_never_connected_stops_without_error() -> None:
    watched = Watched()
    stop_client(watched.client)
    assert watched.client.socket() is None and not watched.opened


def test_called_from_the_clients_own_thread_it_closes_nothing_under_it(mosquitto: Mosquitto) -> None:
    """From a callback paho does not join its own thread: the sockets stay for that thread, and the
    stop from outside closes them."""
    watched = Watched()
    called = threading.Event()
    errors: list[BaseException] = []

    def on_connect(client: paho.Client, *_: Any) -> None:
        try:
            stop_client(client)
        except BaseException as exc:
            errors.append(exc)
        called.set()

    watched.client.on_connect = on_connect
    watched.connect(mosquitto)
    assert called.wait(10), "on_connect never ran"
    assert not errors, errors
    assert len(watched.still_open()) == 3, "sockets closed under the running thread"
    watched.client.disconnect()
    stop_client(watched.client)
    assert not watched.still_open()
