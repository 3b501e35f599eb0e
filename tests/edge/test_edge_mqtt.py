"""The agent against a real Mosquitto: persistent sessions, status and Last Will, outbox across outages."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from seclusion_contract import EventPayload, StatusPayload
from seclusion_edge import EdgeAgent
from seclusion_edge.link import LinkSettings, Message
from seclusion_edge.mqtt import PahoPublisher
from tests.edge.conftest import door_device
from tests.edge.hub_double import HubDouble
from tests.support.mqtt import next_connection
from tests.support.processes import Mosquitto, poll

pytestmark = pytest.mark.integration

ACK = "seclusion/v1/demo-school/calm-1/calm-1-door/ack"
SETTLE_MS = 20


@pytest.fixture
def hub(mosquitto: Mosquitto) -> Iterator[HubDouble]:
    double = HubDouble(mosquitto.port)
    try:
        double.connected.wait(5)
        yield double
    finally:
        double.close()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., EdgeAgent]]:
    agents: list[EdgeAgent] = []

    def start(url: str, protocol: str = "5", **overrides: Any) -> EdgeAgent:
        config = door_device(
            tmp_path / "state",
            mqtt={
                "url": url,
                "protocol": protocol,
                "keepalive_s": 5,
                "reconnect_min_s": 1,
                "reconnect_max_s": 1,
            },
            settle_ms=SETTLE_MS,
            **overrides,
        )
        agent = EdgeAgent(config, pin_factory=MockFactory())
        agents.append(agent)
        return agent.start()

    yield start
    for agent in agents:
        agent.stop()


def is_online(hub: HubDouble) -> bool:
    return bool((hub.last_status() or {}).get("online"))


def events_of(hub: HubDouble, kind: str, value: str) -> list[dict[str, Any]]:
    return [e for e in hub.events() if (e["kind"], e["value"]) == (kind, value)]


def test_the_agent_connects_over_mqtt_5_says_it_is_online_and_its_events_follow_the_contract(
    mosquitto: Mosquitto, hub: HubDouble, start_agent: Callable[..., EdgeAgent]
) -> None:
    agent = start_agent(mosquitto.url)
    poll(lambda: agent.is_connected, 10, what="agent connected")
    status = poll(lambda: hub.last_status(), 10, what="status")
    assert StatusPayload.model_validate(status).online
    assert status["sensors"] == ["door", "lock", "occupancy"]
    poll(lambda: len(hub.events()) == 3, 10, what="start-up readings")

    agent.pin_for("door").drive_low()
    [closed] = poll(lambda: events_of(hub, "door", "closed"), 10, what="door closed event")
    event = EventPayload.model_validate(closed)
    assert (event.seq, event.epoch, event.id) == (4, 0, "calm-1-door:0:4")
    assert event.boot and event.mono_ms is not None

    heartbeat = poll(lambda: hub.on("heartbeat"), 10, what="heartbeat")[-1].payload
    assert heartbeat["state"]["door"] in ("open", "closed")

    # Acting as the hub: the ack empties the outbox.
    hub.ack(ACK, 0, 4)
    poll(lambda: agent.queued == 0, 10, what="outbox emptied by the ack")

    # A newcomer sees the retained online status.
    late = HubDouble(mosquitto.port)
    try:
        retained = poll(lambda: late.on("status"), 10, what="retained status")
        assert retained[0].retain and retained[0].payload["online"] is True
    finally:
        late.close()


def test_events_during_a_broker_outage_arrive_after_it_comes_back(
    mosquitto: Mosquitto, hub: HubDouble, start_agent: Callable[..., EdgeAgent]
) -> None:
    agent = start_agent(mosquitto.url)
    poll(lambda: len(hub.events()) == 3, 10, what="start-up readings")

    mosquitto.stop()
    poll(lambda: not agent.is_connected, 10, what="agent noticed the broker is gone")
    agent.pin_for("door").drive_low()
    agent.pin_for("occupancy").drive_high()
    poll(lambda: agent.last_seq == 5, 10, what="events numbered while offline")
    assert not agent.is_connected
    assert agent.queued == 5

    restarted = Mosquitto(mosquitto.workdir, port=mosquitto.port).start()
    try:
        poll(lambda: agent.is_connected, 15, what="agent reconnected")
        poll(lambda: events_of(hub, "occupancy", "occupied"), 15, what="events sent after the outage")
        seqs = [e["seq"] for e in hub.events()]
        # Every event arrives, in order; the replay of still-unacked ones comes again as duplicates.
        assert sorted(set(seqs)) == [1, 2, 3, 4, 5]
        first_after = seqs.index(4)
        assert seqs[first_after : first_after + 2] == [4, 5]
        assert [e["seq"] for e in hub.events() if e["seq"] >= 4][:2] == [4, 5]
    finally:
        restarted.stop()


def test_protocol_3_1_1_with_a_persistent_session(
    mosquitto: Mosquitto, hub: HubDouble, start_agent: Callable[..., EdgeAgent]
) -> None:
    agent = start_agent(mosquitto.url, protocol="3.1.1")
    poll(lambda: agent.is_connected, 10, what="agent connected over 3.1.1")
    poll(lambda: is_online(hub), 10, what="online status")
    # The start-up readings first (CI once drove the pin before them: the door's first reading was
    # then `closed`, seq 3, and an ack of seq 4 covered an event never sent).
    poll(lambda: len(hub.events()) == 3, 10, what="start-up readings")
    agent.pin_for("door").drive_low()
    [closed] = poll(lambda: events_of(hub, "door", "closed"), 10, what="door closed event")
    assert closed["seq"] == 4
    hub.ack(ACK, 0, closed["seq"])
    poll(lambda: agent.queued == 0, 10, what="ack received over 3.1.1")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_new_store_moves_past_the_hubs_retained_ack_before_it_sends_anything(
    mosquitto: Mosquitto,
    hub: HubDouble,
    start_agent: Callable[..., EdgeAgent],
    protocol: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A replaced SD card: the hub has stored (0,2) of the old card, and its ack is retained. The new
    store (epoch 0) sends nothing before Mosquitto has handed it that ack, which comes before the copy
    of the status it published after subscribing; so none of its events is dropped as a duplicate."""
    # Given the hub's retained ack of the old card's events, and the new card numbering its start-up
    # readings (0,1..3) while the broker is down
    hub.ack(ACK, 0, 2)
    mosquitto.stop()
    agent = start_agent(mosquitto.url, protocol=protocol)
    poll(lambda: agent.last_seq == 3, 10, what="start-up readings numbered offline")
    # When the broker comes back
    restarted = Mosquitto(mosquitto.workdir, port=mosquitto.port).start()
    try:
        # Then its readings arrive in epoch 1, well before the agent would stop waiting for its status
        events = poll(lambda: hub.events() if len(hub.events()) >= 3 else None, 8, what="start-up readings")
        assert [(e["epoch"], e["seq"]) for e in events] == [(1, 1), (1, 2), (1, 3)]
        assert agent.epoch == 1
        assert "has not sent back" not in caplog.text  # the copy of its status came back
    finally:
        restarted.stop()


def test_the_agent_is_not_connected_while_the_broker_is_down(
    tmp_path: Path, start_agent: Callable[..., EdgeAgent]
) -> None:
    broker = Mosquitto(tmp_path / "late-broker")
    agent = start_agent(broker.url)
    agent.pin_for("door").drive_low()
    poll(lambda: agent.last_seq == 3, 10, what="start-up readings numbered")
    assert not agent.is_connected
    broker.start()
    try:
        hub = HubDouble(broker.port)
        try:
            poll(lambda: agent.is_connected, 15, what="connected once the broker is up")
            poll(lambda: len(hub.events()) >= 3, 15, what="events queued before the first connect")
        finally:
            hub.close()
    finally:
        broker.stop()


def test_a_severed_connection_publishes_the_last_will_then_the_agent_comes_back_online(
    mosquitto: Mosquitto, hub: HubDouble, start_agent: Callable[..., EdgeAgent]
) -> None:
    agent = start_agent(mosquitto.url)
    poll(lambda: is_online(hub), 10, what="online status")
    publisher = agent.publisher
    assert isinstance(publisher, PahoPublisher)
    publisher.sever()
    poll(lambda: [s for s in hub.on("status") if not s.payload["online"]], 10, what="Last Will")
    [will] = [s.payload for s in hub.on("status") if not s.payload["online"]]
    [online] = [s.payload for s in hub.on("status") if s.payload["online"]]
    # The will names the connection it ends: the one the online status announced.
    assert will == {"v": 1, "online": False, "boot": online["boot"], "conn_ms": online["conn_ms"]}
    poll(lambda: is_online(hub), 15, what="back online")
    back = hub.last_status()
    assert back is not None and back["conn_ms"] > will["conn_ms"]  # the next connection is another


def _sends_at_once(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_every_connection_sends_each_packet_at_once(
    mosquitto: Mosquitto, hub: HubDouble, start_agent: Callable[..., EdgeAgent]
) -> None:
    """Nagle's algorithm is off (TCP_NODELAY) on the first connection and on every one after: with it
    on, an event written while the last one is unacknowledged waits up to 40 ms (docs/performance.md)."""
    agent = start_agent(mosquitto.url)
    poll(lambda: is_online(hub), 10, what="online status")
    publisher = agent.publisher
    assert isinstance(publisher, PahoPublisher)
    first = publisher._client.socket()
    assert isinstance(first, socket.socket) and _sends_at_once(first)
    publisher.sever()
    second = poll(
        next_connection(publisher._client, first, lambda: agent.is_connected), 15, what="a new connection"
    )
    assert _sends_at_once(second)


# ------------------------------------------------------------------------- the command, as a process


def run_agent(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    config = tmp_path / "calm-1-door.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        site: demo-school
        room: calm-1
        device: calm-1-door
        mqtt: {{url: "mqtt://127.0.0.1:{port}", reconnect_min_s: 1, reconnect_max_s: 1}}
        state_dir: state
        settle_ms: 20
        sensors:
          - {{kind: door, pin: 17, pull: up, active: low, active_value: closed}}
    """)
    )
    return subprocess.Popen(
        [sys.executable, "-m", "seclusion_edge.cli", "run", "--config", str(config), "--mock-pins"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_a_killed_agent_leaves_its_last_will_and_a_stopped_one_says_offline_itself(
    tmp_path: Path, mosquitto: Mosquitto, hub: HubDouble
) -> None:
    agent = run_agent(tmp_path, mosquitto.port)
    try:
        poll(lambda: is_online(hub), 15, what="online status")
        agent.kill()
        agent.wait(5)
        will = poll(lambda: [s for s in hub.on("status") if not s.payload["online"]], 10, what="Last Will")
        assert set(will[-1].payload) == {"v", "online", "boot", "conn_ms"}
        assert will[-1].payload["online"] is False
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)
        assert agent.stderr is not None
        agent.stderr.close()

    agent = run_agent(tmp_path, mosquitto.port)
    try:
        online = len(hub.on("status"))
        poll(lambda: len(hub.on("status")) > online and is_online(hub), 15, what="online again")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0
        farewell = poll(lambda: None if is_online(hub) else hub.last_status(), 10, what="farewell")
        assert set(farewell) == {"v", "online", "ts", "boot", "conn_ms"}  # our own farewell, not the Will
        assert agent.stderr is not None
        log = agent.stderr.read().decode()
        assert "connected to 127.0.0.1" in log and "received SIGTERM" in log
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)
        assert agent.stderr is not None
        agent.stderr.close()


class _CountingHandlers:
    def __init__(self) -> None:
        self.disconnects = 0

    def on_connected(self, session_present: bool) -> None:
        pass

    def on_disconnected(self) -> None:
        self.disconnects += 1

    def on_message(self, topic: str, payload: bytes) -> None:
        pass


_STATUS = "seclusion/v1/demo-school/calm-1/calm-1-door/status"


def _unstarted_publisher() -> tuple[PahoPublisher, _CountingHandlers]:
    """A publisher whose paho thread never runs (a broker address nobody listens on, never started)."""
    will = Message(_STATUS, b'{"v":1,"online":false}', retain=True)
    settings = LinkSettings(host="127.0.0.1", port=1, client_id="calm-1-door", will=will, subscriptions=())
    handlers = _CountingHandlers()
    return PahoPublisher(settings, handlers), handlers


def test_a_stop_in_the_moment_the_link_goes_ends_without_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """The connected flag can still say yes when paho has just closed the socket (it reports the loss a
    moment later): the farewell cannot be sent, and the stop says so and ends instead of raising paho's
    "not currently connected"."""
    publisher, _handlers = _unstarted_publisher()
    # That moment, with no paho thread to clear the flag first: started, the flag still set, no connection.
    publisher._started = True
    publisher._connected.set()
    publisher.stop(farewell=Message(_STATUS, b'{"v":1,"online":false,"ts":"x"}', retain=True))
    assert not publisher.is_connected
    assert "the farewell status was not published" in caplog.text


def test_a_connection_that_ended_unreported_is_counted_down_before_the_next_connect() -> None:
    """paho's loop gives up on a `select` that raises and connects again without on_disconnect: the
    agent, still counting the old connection up, would hand it events paho then drops, and send newer
    ones on the next connection ahead of the replay (found by a review). Just before the CONNECT the
    connection is counted down and the agent told, once."""
    publisher, handlers = _unstarted_publisher()
    publisher._on_pre_connect(publisher._client, None)  # the first connect: nothing was up
    assert handlers.disconnects == 0
    publisher._connected.set()  # a connection that ended without on_disconnect
    publisher._on_pre_connect(publisher._client, None)
    assert not publisher.is_connected and handlers.disconnects == 1
    publisher._on_pre_connect(publisher._client, None)
    assert handlers.disconnects == 1
