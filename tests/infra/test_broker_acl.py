"""The shipped broker access list (deploy/mosquitto/acl.example) holds each device account to its own topics.

A real Mosquitto runs the shipped deploy/mosquitto/mosquitto.conf with the lines docs/operations.md
("Secure the broker") tells the IT technician to switch on: no anonymous access, a password file made
with `mosquitto_passwd`, and the shipped ACL file. The topics come from `seclusion_contract.Topics`, as
the hub's and the agent's do, and the hub's side is the hub's own MQTT client (`HubMqtt`), the device's
side the agent's own link (`PahoPublisher`, with the will and subscriptions the agent gives it).

What a device account must not do is proved on what a subscriber sees, without sleeping: Mosquitto
queues a message for its subscribers before it answers the publisher, and delivers them to each
subscriber in that order. So each forgery is made only after the broker has answered the one before
(or closed its connection), and once an allowed message published after them all has reached the
subscriber, any forgery the broker had let through would have reached it first.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from seclusion_contract import Topics, stop_client
from seclusion_edge.link import LinkSettings, Message
from seclusion_edge.mqtt import PahoPublisher
from seclusion_hub.core.clock import SystemClock
from seclusion_hub.ingest import Inbound
from seclusion_hub.mqtt import HubMqtt
from tests.support.processes import free_port, poll, wait_port

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
CONF = DEPLOY / "mosquitto.conf"
ACL = DEPLOY / "acl.example"

TOPICS = Topics()
SITE = "demo-school"
NOT_AUTHORISED = 0x87  # MQTT v5 reason code, in the PUBACK of a publish the ACL refuses


@dataclass(frozen=True)
class Device:
    room: str
    id: str

    def topic(self, channel: Literal["event", "status", "heartbeat", "ack", "config"]) -> str:
        return TOPICS.device(SITE, self.room, self.id, channel)

    @property
    def indicator(self) -> str:
        return TOPICS.indicator(SITE, self.room)


PANEL = Device("calm-1", "calm-1-panel")  # the device whose credentials were taken
DOOR = Device("calm-1", "calm-1-door")  # another device of the same room
OTHER = Device("calm-2", "calm-2-door")  # a device of another room
PASSWORDS = {"hub": "hub-" + secrets.token_hex(8)} | {
    d.id: d.id + "-" + secrets.token_hex(8) for d in (PANEL, DOOR, OTHER)
}


def secured_conf(port: int, workdir: Path) -> str:
    """The shipped mosquitto.conf with the commented lines of "Secure the broker" switched on."""
    text = CONF.read_text()
    edits = [
        (r"^listener 1883$", f"listener {port} 127.0.0.1"),
        (r"^allow_anonymous true\n", ""),
        (r"^#allow_anonymous false$", "allow_anonymous false"),
        (r"^#password_file /mosquitto/config/passwd$", f"password_file {workdir}/passwd"),
        (r"^#acl_file /mosquitto/config/acl$", f"acl_file {workdir}/acl"),
        (r"^persistence_location /mosquitto/data/$", f"persistence_location {workdir}/"),
    ]
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"deploy/mosquitto/mosquitto.conf no longer has exactly one line {pattern!r}"
    return text


@pytest.fixture(scope="module")
def broker() -> Iterator[int]:
    """A Mosquitto with the shipped config, ACL and a password file of the test accounts; its port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwd = shutil.which("mosquitto_passwd")
    assert Path(binary).exists() and passwd, "mosquitto is not installed (apt-get install mosquitto)"
    workdir = Path(tempfile.mkdtemp(prefix="seclusion-acl-"))
    port = free_port()
    try:
        for n, (user, password) in enumerate(PASSWORDS.items()):
            create = ["-c"] if n == 0 else []
            subprocess.run(
                [passwd, "-b", *create, str(workdir / "passwd"), user, password], check=True, timeout=30
            )
        shutil.copyfile(ACL, workdir / "acl")
        (workdir / "mosquitto.conf").write_text(secured_conf(port, workdir))
        if os.geteuid() == 0:
            # Started as root, Mosquitto drops to the `mosquitto` user: let that user read and write here.
            owner = pwd.getpwnam("mosquitto")
            for path in (workdir, workdir / "passwd", workdir / "acl"):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        os.chmod(workdir / "passwd", 0o600)
        log_path = workdir / "mosquitto.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([binary, "-c", str(workdir / "mosquitto.conf")], stdout=log, stderr=log)
        try:
            try:
                wait_port(port)
            except TimeoutError:
                pytest.fail(f"mosquitto did not start:\n{log_path.read_text()}")
            yield port
            assert proc.poll() is None, log_path.read_text()
        finally:
            proc.kill()
            proc.wait(5)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class Probe:
    """A bare paho client of one account: records what it receives and each PUBACK's reason code."""

    def __init__(
        self,
        port: int,
        username: str,
        *,
        protocol: Literal["5", "3.1.1"] = "5",
        client_id: str | None = None,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.port = port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{username}-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
            reconnect_on_failure=False,  # a connection taken over stays closed
        )
        self.client.username_pw_set(username, PASSWORDS[username])
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self._lock = threading.Lock()
        self._received: list[tuple[str, bytes]] = []
        self._pubacks: dict[int, int] = {}
        self._subacks: set[int] = set()
        self._connack: ReasonCode | None = None
        self._dropped = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect

    def connect(self) -> Probe:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        connack = poll(lambda: self._connack, what="CONNACK")
        assert not connack.is_failure, f"the broker refused the connection: {connack}"
        return self

    def close(self) -> None:
        self.client.disconnect()
        stop_client(self.client)

    def subscribe(self, *filters: str) -> None:
        _, mid = self.client.subscribe([(f, 1) for f in filters])
        poll(lambda: mid in self._subacks, what=f"SUBACK of {filters}")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker to accept it (a PUBACK with a success code)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        code = poll(lambda: self._puback(info.mid), what=f"PUBACK of {topic}")[0]
        assert code is not None and code < 0x80, f"the broker refused a publish on {topic}: {code}"

    def attempt(self, topic: str, payload: bytes) -> int | None:
        """Publish a retained message at QoS 1 that the ACL should refuse. The reason code of its
        PUBACK, or None if the broker closed the connection instead; either way the broker has handled
        it. (Mosquitto 2.0.11 with the shipped config sends the PUBACK and then drops the connection.)"""
        info = self.client.publish(topic, payload, qos=1, retain=True)
        outcome = poll(
            lambda: self._puback(info.mid) or ((None,) if self._dropped.is_set() else None),
            what=f"the broker's answer to a publish on {topic}",
        )
        return outcome[0]

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self._received)

    def wait_for(self, topic: str, payload: bytes) -> None:
        poll(lambda: (topic, payload) in self.received(), what=f"{payload!r} on {topic}")

    def _puback(self, mid: int) -> tuple[int | None] | None:
        with self._lock:
            return (self._pubacks[mid],) if mid in self._pubacks else None

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self._connack = reason

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._received.append((message.topic, bytes(message.payload)))

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        with self._lock:
            self._pubacks[mid] = int(reason.value)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        with self._lock:
            self._subacks.add(mid)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
        self._dropped.set()


class LinkInbox:
    """The agent's LinkHandlers, reduced to recording what the link delivers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[tuple[str, bytes]] = []

    def on_connected(self, session_present: bool) -> None:
        pass

    def on_disconnected(self) -> None:
        pass

    def on_message(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.messages.append((topic, payload))

    def has(self, topic: str, payload: bytes) -> bool:
        with self._lock:
            return (topic, payload) in self.messages

    def has_part(self, topic: str, part: bytes) -> bool:
        with self._lock:
            return any(t == topic and part in p for t, p in self.messages)


def agent_link(port: int, device: Device, inbox: LinkInbox) -> PahoPublisher:
    """The link the agent opens (seclusion_edge.agent: `_link_settings`), as that device's account."""
    settings = LinkSettings(
        host="127.0.0.1",
        port=port,
        client_id=f"seclusion-edge-{SITE}-{device.id}-{secrets.token_hex(3)}",
        will=Message(device.topic("status"), b'{"v":1,"online":false}', qos=1, retain=True),
        subscriptions=(
            device.topic("ack"),
            device.topic("config"),
            device.indicator,
            TOPICS.hub_status,
            TOPICS.room_events(SITE, device.room),
            device.topic("status"),
        ),
        username=device.id,
        password=PASSWORDS[device.id],
        reconnect_min_s=1,
        reconnect_max_s=1,
    )
    return PahoPublisher(settings, inbox)


def forgeries() -> dict[str, str]:
    """Topics the panel's account must not publish on, by what a forger would gain."""
    return {
        "another room's events": OTHER.topic("event"),
        "its own room's other device's events": DOOR.topic("event"),
        "another device's status": DOOR.topic("status"),
        "another device's heartbeat": DOOR.topic("heartbeat"),
        "another device's ack (it would drop unstored events)": DOOR.topic("ack"),
        "its own ack": PANEL.topic("ack"),
        "its own config": PANEL.topic("config"),
        "its room's indicator": PANEL.indicator,
        "another room's indicator": OTHER.indicator,
        "the hub's status": TOPICS.hub_status,
        "a hub marker": TOPICS.hub_marker("forged"),
    }


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_device_account_publishes_only_its_own_event_status_and_heartbeat(
    broker: int, protocol: Literal["5", "3.1.1"]
) -> None:
    """Given the panel's credentials, its own event, status and heartbeat reach the hub's account, and
    nothing it publishes on another device's topics, an ack, a config, an indicator or the hub's topics
    reaches it (MQTT v5: the broker answers "not authorised"), nor replaces the retained originals."""
    nonce = secrets.token_hex(4).encode()
    hub = Probe(broker, "hub").connect()
    device = Probe(broker, PANEL.id, protocol=protocol).connect()
    try:
        hub.subscribe(f"{TOPICS.root}/#")
        genuine = {
            DOOR.topic("ack"): b'{"v":1,"epoch":0,"seq":7}',
            PANEL.topic("ack"): b'{"v":1,"epoch":0,"seq":3}',
            PANEL.topic("config"): b'{"v":1,"genuine":true}',
            PANEL.indicator: b'{"v":1,"level":"none"}',
            OTHER.indicator: b'{"v":1,"level":"none"}',
            TOPICS.hub_status: b'{"v":1,"online":true}',
        }
        for topic, payload in genuine.items():
            hub.publish(topic, payload + nonce, retain=True)

        for channel in ("event", "status", "heartbeat"):
            own = PANEL.topic(channel)
            device.publish(own, b"own-" + nonce, retain=channel == "status")
            hub.wait_for(own, b"own-" + nonce)

        # One connection per attempt: the broker may drop the connection that made one.
        answers = {}
        for what, topic in forgeries().items():
            forger = Probe(broker, PANEL.id, protocol=protocol).connect()
            try:
                answers[what] = forger.attempt(topic, b"forged-" + nonce)
            finally:
                forger.close()
        sentinel = b"after-the-forgeries-" + nonce
        last = Probe(broker, PANEL.id, protocol=protocol).connect()
        try:
            last.publish(PANEL.topic("heartbeat"), sentinel)
        finally:
            last.close()
        hub.wait_for(PANEL.topic("heartbeat"), sentinel)

        delivered = {topic for topic, payload in hub.received() if payload == b"forged-" + nonce}
        assert {what for what, topic in forgeries().items() if topic in delivered} == set()
        # MQTT v5 says why (3.1.1 has no reason codes): never an accepted PUBACK.
        refusals = {NOT_AUTHORISED, None} if protocol == "5" else {0, None}
        assert {what: answer for what, answer in answers.items() if answer not in refusals} == {}

        # The retained originals are still the hub's.
        fresh = Probe(broker, "hub").connect()
        try:
            fresh.subscribe(*genuine)
            for topic, payload in genuine.items():
                fresh.wait_for(topic, payload + nonce)
            assert [m for m in fresh.received() if m[1] == b"forged-" + nonce] == []
        finally:
            fresh.close()
    finally:
        device.close()
        hub.close()


def test_a_device_account_may_still_use_its_own_id_under_another_room(broker: int) -> None:
    """A limit of one ACL for every device (deploy/mosquitto/acl.example): the username is the device
    level of the topic, the site and room levels are wildcards. So the panel's account can publish its
    own id's event under another room; the hub rejects it (the device is not registered there) and
    applies nothing. This test keeps that limit visible: tighten the ACL and it must be updated."""
    nonce = secrets.token_hex(4).encode()
    misplaced = TOPICS.event(SITE, OTHER.room, PANEL.id)
    hub = Probe(broker, "hub").connect()
    device = Probe(broker, PANEL.id).connect()
    try:
        hub.subscribe(f"{TOPICS.root}/#")
        device.publish(misplaced, b"misplaced-" + nonce)
        hub.wait_for(misplaced, b"misplaced-" + nonce)
    finally:
        device.close()
        hub.close()


def test_a_device_account_reads_its_own_ack_config_status_its_room_and_the_hub_status(broker: int) -> None:
    """The agent's own subscriptions get everything the agent needs: its ack, config and status, its
    room's indicator and the other devices' events, and the hub's status. Subscribed to everything, the
    panel's account still never receives another device's ack, config or status. It does receive
    every room's events, heartbeats and indicators (its own room's heartbeats place the other devices'
    events by their clocks): the documented limit of one ACL for every device."""
    nonce = secrets.token_hex(4).encode()
    hub = Probe(broker, "hub").connect()
    door = Probe(broker, DOOR.id).connect()
    other = Probe(broker, OTHER.id).connect()
    panel = Probe(broker, PANEL.id).connect()
    inbox = LinkInbox()
    link = agent_link(broker, PANEL, inbox)
    try:
        retained_by_hub = [
            PANEL.topic("ack"),
            PANEL.topic("config"),
            DOOR.topic("ack"),
            DOOR.topic("config"),
            OTHER.topic("ack"),
            OTHER.topic("config"),
            PANEL.indicator,
            OTHER.indicator,
            TOPICS.hub_status,
        ]
        for topic in retained_by_hub:
            hub.publish(topic, b"retained-" + nonce, retain=True)
        panel.publish(PANEL.topic("status"), b"retained-" + nonce, retain=True)
        door.publish(DOOR.topic("status"), b"retained-" + nonce, retain=True)
        other.publish(OTHER.topic("status"), b"retained-" + nonce, retain=True)

        # The agent's link, as the agent opens it: the retained messages it needs arrive.
        link.start()
        for topic in (
            PANEL.topic("ack"),
            PANEL.topic("config"),
            PANEL.topic("status"),
            PANEL.indicator,
            TOPICS.hub_status,
        ):
            poll(partial(inbox.has, topic, b"retained-" + nonce), what=f"the link got {topic}")

        # The panel's account subscribed to everything (subscribing is never refused; delivery is).
        panel.subscribe("#")
        for topic, publisher in (
            (DOOR.topic("event"), door),
            (DOOR.topic("heartbeat"), door),
            (OTHER.topic("event"), other),
            (OTHER.topic("heartbeat"), other),
        ):
            publisher.publish(topic, b"live-" + nonce)
        sentinel = b"last-" + nonce
        hub.publish(PANEL.topic("config"), sentinel, retain=True)
        panel.wait_for(PANEL.topic("config"), sentinel)
        poll(lambda: inbox.has(DOOR.topic("event"), b"live-" + nonce), what="the link got the door's event")

        seen = {topic for topic, payload in panel.received() if payload.endswith(nonce)}
        assert seen == {
            # what the agent needs
            PANEL.topic("ack"),
            PANEL.topic("config"),
            PANEL.topic("status"),
            PANEL.indicator,
            TOPICS.hub_status,
            DOOR.topic("event"),
            DOOR.topic("heartbeat"),
            # the limit: every room's events, heartbeats and indicators
            OTHER.topic("event"),
            OTHER.topic("heartbeat"),
            OTHER.indicator,
        }
    finally:
        link.stop()
        for probe in (panel, other, door, hub):
            probe.close()


def test_a_device_last_will_is_its_own_status_only(broker: int) -> None:
    """The agent's Last Will (its own retained offline status) reaches the hub's account when the
    connection drops; a will on the hub's status, set with a device's credentials, never does."""
    nonce = secrets.token_hex(4).encode()
    # Whatever offline status an earlier test left retained is replaced first.
    panel = Probe(broker, PANEL.id).connect()
    panel.publish(PANEL.topic("status"), b"online-" + nonce, retain=True)
    panel.close()
    hub = Probe(broker, "hub").connect()
    try:
        hub.subscribe(f"{TOPICS.root}/#")

        inbox = LinkInbox()
        link = agent_link(broker, PANEL, inbox)
        link.start()
        poll(lambda: link.is_connected, what="the panel's link connected")
        link.sever()
        hub.wait_for(PANEL.topic("status"), b'{"v":1,"online":false}')
        link.stop()

        # A connection taken over by a new one with the same client id ends with its will (a crashed
        # device reconnecting); the new connection's own publish is handled after it.
        for topic, allowed in ((PANEL.topic("status"), True), (TOPICS.hub_status, False)):
            client_id = f"will-{secrets.token_hex(4)}"
            will = b"will-" + secrets.token_hex(4).encode() + nonce
            first = Probe(broker, PANEL.id, client_id=client_id, will=(topic, will)).connect()
            successor = Probe(broker, PANEL.id, client_id=client_id).connect()
            first.close()
            try:
                sentinel = b"after-the-will-" + will
                successor.publish(PANEL.topic("heartbeat"), sentinel)
                hub.wait_for(PANEL.topic("heartbeat"), sentinel)
                assert ((topic, will) in hub.received()) is allowed, (topic, hub.received())
            finally:
                successor.close()
    finally:
        hub.close()


def test_the_hub_account_does_all_the_hub_does(broker: int) -> None:
    """The hub's own MQTT client, as the `hub` account: its subscriptions, its marker (which it
    publishes and reads back), its status and Last Will, the devices' event, status and heartbeat in,
    and ack, config and indicator out to a device's link."""
    nonce = secrets.token_hex(4).encode()
    inbound: list[Inbound] = []

    def received(message: tuple[str, bytes]) -> bool:
        return message in [(m.topic, m.payload) for m in list(inbound)]

    hub = HubMqtt(
        f"mqtt://hub:{PASSWORDS['hub']}@127.0.0.1:{broker}",
        TOPICS,
        SystemClock(),
        inbound.append,
        client_id=f"seclusion-hub-{secrets.token_hex(3)}",
    )
    inbox = LinkInbox()
    link = agent_link(broker, DOOR, inbox)
    device = Probe(broker, DOOR.id).connect()
    try:
        hub.start()
        poll(hub.backlog_done.is_set, what="the hub's marker came back")
        # What the service says once the backlog is through (the adapter alone says nothing).
        online = b'{"v":1,"online":true,"ts":"2026-12-06T10:00:00.000Z"}'
        hub.publish(TOPICS.hub_status, online, qos=1, retain=True)
        link.start()
        poll(lambda: inbox.has_part(TOPICS.hub_status, b'"online":true,"ts"'), what="the hub's online status")

        for channel in ("event", "status", "heartbeat"):
            device.publish(DOOR.topic(channel), b"in-" + nonce)
            expected = (DOOR.topic(channel), b"in-" + nonce)
            poll(partial(received, expected), what=f"the hub got the door's {channel}")

        for topic in (DOOR.topic("ack"), DOOR.topic("config"), DOOR.indicator):
            hub.publish(topic, b"out-" + nonce, qos=1, retain=True)
            poll(partial(inbox.has, topic, b"out-" + nonce), what=f"the door's link got {topic}")

        # The hub's connection drops without a DISCONNECT (a crash): the broker sends its Last Will.
        sock = hub.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        poll(lambda: inbox.has(TOPICS.hub_status, b'{"v":1,"online":false}'), what="the hub's Last Will")
    finally:
        hub.stop()
        link.stop()
        device.close()
