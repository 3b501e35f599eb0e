"""Second review of the change 05793e1..HEAD (each connection named in its status and its own Last
Will): each test states a fault found in it and passes once it is fixed."""

from __future__ import annotations

import select as _select
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho_client
import pytest

from seclusion_edge import EdgeAgent
from seclusion_edge.mqtt import PahoPublisher
from tests.edge.hub_double import HubDouble
from tests.edge.test_edge_mqtt import hub, is_online, start_agent  # noqa: F401  (fixtures)
from tests.support.processes import Mosquitto, poll

pytestmark = pytest.mark.integration


class _SelectFailingOnce:
    """paho's `select` module, whose `select()` fails once when armed, as paho's own comments say it
    can ("Socket isn't correct type, in likelihood connection is lost"; "rlist/wlist contain a -1").
    Only on the agent's network thread (paho names it after the client id): the hub double is a paho
    client too, and whichever thread called `select()` first after arming used to take the failure (the
    hub double's, in most runs once the broker sent each packet at once, and the test then waited for
    a will the agent never left)."""

    def __init__(self) -> None:
        self.armed = threading.Event()
        self.fired = threading.Event()

    def select(self, *args: Any, **kwargs: Any) -> Any:
        name = threading.current_thread().name
        if self.armed.is_set() and name.startswith("paho-mqtt-client-seclusion-edge-"):
            self.armed.clear()
            self.fired.set()
            raise ValueError("file descriptor cannot be a negative integer (-1)")
        return _select.select(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(_select, name)


def test_a_connection_paho_lost_without_calling_on_disconnect_is_named_apart_from_the_next(
    mosquitto: Mosquitto,
    hub: HubDouble,  # noqa: F811
    start_agent: Callable[..., EdgeAgent],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent names the next connection (and sets its Last Will) in `on_disconnected`. paho 2.x does
    not call on_disconnect on every way a connection ends: when `select()` fails in `Client._loop`
    (TypeError, ValueError, any other exception) it returns MQTT_ERR_CONN_LOST, and `loop_forever`
    reconnects (closing the old socket: the broker publishes its will) with the will it holds. The new
    connection then carries the same (boot, conn_ms) as the one that ended: the hub, having taken the
    first will as the end of that connection (`ended_conn_ms`), takes the new connection's own will,
    when it comes, for a delivery again and ignores it: the device stays online on the board until
    three heartbeats of silence. paho's `on_pre_connect` (called by every `reconnect()`) would name
    each connection whatever ended the one before."""
    failing = _SelectFailingOnce()
    monkeypatch.setattr(paho_client, "select", failing)
    agent = start_agent(mosquitto.url)
    poll(lambda: is_online(hub), 10, what="online status")
    assert isinstance(agent.publisher, PahoPublisher)
    first = hub.last_status()
    assert first is not None

    # When paho's select() fails once on the network thread, and paho reconnects by itself
    failing.armed.set()
    assert failing.fired.wait(10)
    poll(
        lambda: len([s for s in hub.on("status") if s.payload["online"]]) >= 2,
        15,
        what="online again on a new connection",
    )
    # The broker publishes the old connection's will when it sees its socket closed, which may be
    # after the new connection's status: waited for (a deadline, never a sleep).
    poll(
        lambda: [s for s in hub.on("status") if not s.payload["online"]],
        10,
        what="the broker to publish the will of the connection paho dropped",
    )
    wills = [s.payload for s in hub.on("status") if not s.payload["online"]]
    onlines = [s.payload for s in hub.on("status") if s.payload["online"]]

    # Then the new connection is named apart from the one whose will the broker published
    assert wills, "the broker published no will for the connection paho dropped"
    assert onlines[-1]["conn_ms"] != first["conn_ms"], (
        f"two connections share conn_ms {first['conn_ms']} (wills published: {wills})"
    )
