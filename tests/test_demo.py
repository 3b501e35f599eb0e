"""`seclusion demo`: a broker, the hub and three simulated rooms, checked from the outside through the API.

The demo runs as a real process (`seclusion demo --speed 10`), once with Mosquitto (MQTT v5) and once
with the embedded amqtt broker, which is also the end-to-end test that the hub and the edge agents work
over MQTT 3.1.1 with persistent sessions and a user name and password. The embedded broker's own
promise, that it keeps QoS 1 messages for a disconnected persistent session, is tested directly.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from seclusion_contract import VALUES, stop_client
from seclusion_hub.core.policy import Policy
from seclusion_hub.demo import MIN_STEP_S, SCENARIOS, device_id, scaled
from seclusion_hub.embedded_broker import EmbeddedBroker, EmbeddedBrokerAddress
from tests.support.hub import api_get
from tests.support.processes import free_port, poll

pytestmark = pytest.mark.integration

T = TypeVar("T")

SPEED = 10  # one cycle of every scenario in about 11 s
SITE = "demo-school"


# ------------------------------------------------------------------------------- the demo process


@dataclass
class Demo:
    """A running `seclusion demo` process and its API."""

    broker: str
    workdir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def token(self) -> str:
        return (self.workdir / "token").read_text().strip()

    def get(self, path: str, **params: Any) -> Any:
        return api_get(self.port, self.token(), path, **params)

    def poll(self, fetch: Callable[[], T | None], seconds: float, what: str) -> T:
        """`poll`, with the demo's output in the failure message."""
        try:
            return poll(fetch, seconds, interval=0.2, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- demo output ---\n{self.output()[-6000:]}") from None

    def stop(self, sig: signal.Signals = signal.SIGINT, seconds: float = 30) -> int:
        """Signal the demo's whole process group, as Ctrl-C in a terminal does, and wait for its exit."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(
                    f"the demo did not stop on {sig.name}\n{self.output()[-4000:]}"
                ) from None
        return self.proc.returncode


def _seclusion() -> str:
    binary = Path(sys.executable).parent / "seclusion"
    assert binary.exists(), "the `seclusion` console script is not installed (pip install -e '.[dev]')"
    return str(binary)


@pytest.fixture(params=["mosquitto", "embedded"])
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Demo]:
    """`seclusion demo` at 10x speed with the given broker, its API on a free port."""
    broker = str(request.param)
    workdir = tmp_path / "work"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECLUSION_")}
    log_path = tmp_path / f"demo-{broker}.log"
    args = [_seclusion(), "demo", "--broker", broker, "--http-port", str(port), "--workdir", str(workdir)]
    args += ["--speed", str(SPEED), "--duration", "240"]  # the duration only bounds a test gone wrong
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True
        )
    running = Demo(broker, workdir, port, proc, log_path)
    try:
        yield running
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _rooms(demo: Demo) -> list[dict[str, Any]] | None:
    if demo.proc.poll() is not None:
        raise AssertionError(f"the demo exited with {demo.proc.returncode}\n{demo.output()[-4000:]}")
    if not (demo.workdir / "token").exists():
        return None
    try:
        items: list[dict[str, Any]] = demo.get("/api/rooms")["items"]
    except httpx.HTTPError:
        return None
    return items if items and all(room["online"] for room in items) else None


def _ended_episodes(demo: Demo, room: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = demo.get("/api/episodes", site=SITE, room=room, open="false")["items"]
    return items


def _first(items: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return next((item for item in items if test(item)), None)


def test_the_demo_runs_three_rooms_through_the_hub(demo: Demo) -> None:
    """Given `seclusion demo` with each broker, when its scenarios play, then the API shows what they did."""
    rooms = demo.poll(lambda: _rooms(demo), 60, "the three rooms to be listed, every device online")
    assert sorted((r["site"], r["room"]) for r in rooms) == [
        (SITE, "calm-1"),
        (SITE, "calm-2"),
        (SITE, "calm-3"),
    ]

    # calm-1, a short supervised episode: it starts when the door closed, ends when it opened.
    calm1 = demo.poll(
        lambda: _first(_ended_episodes(demo, "calm-1"), lambda e: True), 60, "an episode in calm-1"
    )
    detail = demo.get(f"/api/episodes/{calm1['id']}")
    door = [(t["at"], t["value"]) for t in detail["timeline"] if t["type"] == "event" and t["kind"] == "door"]
    assert (detail["started_at"], "closed") in door
    assert (detail["ended_at"], "open") in door
    assert detail["unsupervised_s"] == 0
    assert detail["supervised_s"] > 0
    assert len(detail["segments"]) == 1
    assert any(t["kind"] == "check" for t in detail["timeline"] if t["type"] == "event")

    # calm-2, a door re-closed within the grace: one episode, two segments.
    calm2 = demo.poll(
        lambda: _first(_ended_episodes(demo, "calm-2"), lambda e: len(e["segments"]) >= 2),
        60,
        "an episode in calm-2 with a second segment",
    )
    assert len(calm2["segments"]) == 2
    assert calm2["duration_s"] < calm2["elapsed_s"]  # the moment the door stood open is not confinement

    # calm-3, a room left alone: unsupervised from the start.
    calm3 = demo.poll(
        lambda: _first(_ended_episodes(demo, "calm-3"), lambda e: e["unsupervised_s"] > 0),
        60,
        "an episode in calm-3 with unsupervised time",
    )
    assert calm3["supervised_s"] == 0
    assert calm3["unsupervised_s"] == calm3["elapsed_s"]

    # Its record awaits staff, who can choose a child from the demo's made-up register
    record = demo.get(f"/api/incidents/{calm1['incident_id']}")
    assert record["status"] == "awaiting_record" and record["due"]["record"] is not None
    register = demo.get("/api/pupils")["items"]
    assert sorted(p["first_name"] for p in register) == ["Alex", "Robin", "Sam"]

    assert demo.stop(signal.SIGINT) == 0
    output = demo.output()
    assert "API docs: http://127.0.0.1:" in output
    # The API address it prints is one that answers (/api/rooms, read above; it printed /api: a 404)
    api_line = next(line for line in output.splitlines() if line.strip().startswith("API:"))
    assert api_line.split()[1].endswith("/api/rooms")
    assert f"Token:    {demo.token()}" in output
    assert ("Mosquitto" if demo.broker == "mosquitto" else "embedded amqtt") in output
    assert "curl -s -H" in output
    assert "/records  (complete an episode's record" in output
    assert "calm-1: door closed with a child inside; observer at the panel" in output
    assert "doors opened and rooms left empty; no episode is open" in output
    assert "demo: stopped" in output
    assert "Traceback" not in output


def test_the_demo_stops_at_the_end_of_its_duration_or_on_sigterm_and_runs_again_in_the_same_workdir(
    tmp_path: Path,
) -> None:
    """Given a demo with a short --duration, it stops by itself with every room at rest; a second demo in
    the same workdir, with the other broker, goes on from there and stops cleanly on SIGTERM."""
    workdir = tmp_path / "work"
    args = [_seclusion(), "demo", "--speed", str(SPEED), "--http-port", "0", "--workdir", str(workdir)]
    recorded_calm2 = re.compile(r"calm-2: the hub recorded an episode \(ended\) of [0-9.]+ s in 2 segments")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECLUSION_")}
    timed = subprocess.run(
        [*args, "--broker", "embedded", "--duration", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert timed.returncode == 0, timed.stdout + timed.stderr
    assert "--duration of 20 s is over" in timed.stderr
    assert recorded_calm2.search(timed.stderr), timed.stderr
    assert "doors opened and rooms left empty; no episode is open" in timed.stderr
    assert "demo: stopped" in timed.stderr

    log_path = tmp_path / "again.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*args, "--broker", "mosquitto"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    again = Demo("mosquitto", workdir, 0, proc, log_path)
    try:
        again.poll(lambda: recorded_calm2.search(again.output()), 60, "calm-2's episode in the second run")
    finally:
        code = again.stop(signal.SIGTERM)
    assert code == 0
    output = again.output()
    assert "SIGTERM received" in output
    assert "no episode is open" in output
    assert "demo: stopped" in output
    assert "not recorded" not in output and "Traceback" not in output


def test_a_temporary_workdir_is_removed_at_the_end(tmp_path: Path) -> None:
    """Without --workdir the demo works in a fresh temporary directory and removes it when it stops."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [_seclusion(), "demo", "--broker", "embedded", "--http-port", "0", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "removed when the demo stops" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_port_in_use_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [_seclusion(), "demo", "--http-port", str(port), "--workdir", str(tmp_path), "--duration", "1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert f"127.0.0.1:{port} is in use" in done.stderr


# ------------------------------------------------------------------------------------ the scripts


def test_calm_2_reopens_for_less_than_the_reclose_grace_at_any_speed() -> None:
    """The re-closed door must stay one episode: its moment open is shorter than `reclose_grace_s`."""
    grace = Policy().reclose_grace_s
    calm2 = next(s for s in SCENARIOS if s.room == "calm-2")
    values = [(step.kind, step.value) for step in calm2.steps]
    reclose = values.index(("door", "closed"), values.index(("door", "open")))
    for speed in (0.5, 1, SPEED, 1000):
        assert MIN_STEP_S <= scaled(calm2.steps[reclose].after_s, speed) < grace


def test_every_scripted_step_is_a_reading_its_device_reports() -> None:
    door_kinds = {"door", "lock", "occupancy"}
    for scenario in SCENARIOS:
        assert device_id(scenario.room, "door") == f"{scenario.room}-door"
        assert 60 <= scenario.cycle_s() <= 120  # roughly one to two minutes a cycle in real time
        for step in scenario.steps:
            assert (step.kind in door_kinds) == (step.device == "door"), step
            assert step.value in VALUES[step.kind], step


# ---------------------------------------------------------------------------- the embedded broker


def _client(
    address: EmbeddedBrokerAddress, user: str | None, client_id: str, password: str | None = None
) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=False
    )
    if user is not None:
        client.username_pw_set(user, password if password is not None else address.passwords[user])
    return client


def _connect(client: mqtt.Client, address: EmbeddedBrokerAddress) -> tuple[ReasonCode, bool]:
    """Connect and wait for the CONNACK: its reason code and the session-present flag."""
    answers: queue.Queue[tuple[ReasonCode, bool]] = queue.Queue()

    def on_connect(_c: mqtt.Client, _u: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, _p: Any) -> None:
        answers.put((reason, flags.session_present))

    client.on_connect = on_connect
    client.connect(address.host, address.port, keepalive=30)
    client.loop_start()
    try:
        return answers.get(timeout=10)
    except queue.Empty:
        raise AssertionError("no CONNACK from the embedded broker within 10 s") from None


def _close(client: mqtt.Client) -> None:
    client.disconnect()
    # A client the broker refused is not connected, so `disconnect` closes nothing: its sockets are
    # closed here, not left to the collector (a ResourceWarning in whichever test runs then).
    stop_client(client)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedBrokerAddress]:
    broker = EmbeddedBroker(tmp_path / "amqtt", ["listener", "sender"])
    address = broker.start()
    try:
        yield address
    finally:
        broker.stop()


def test_embedded_broker_closes_every_connection_as_it_stops(tmp_path: Path) -> None:
    """A connection amqtt is still handling as it stops (here one that has sent no CONNECT yet) is
    closed by the stop, while the broker's loop runs: left to the garbage collector after the loop is
    gone, its socket stayed open meanwhile and was closed with a ResourceWarning (in CI, in whichever
    test ran then)."""
    broker = EmbeddedBroker(tmp_path / "amqtt", ["listener"])
    address = broker.start()
    try:
        with socket.create_connection((address.host, address.port), timeout=10) as sock:
            poll(lambda: broker.connections == 1, 10, what="the broker to take the connection")
            broker.stop()
            assert sock.recv(1) == b"", "the broker's side of the connection is still open"
    finally:
        broker.stop()


def test_embedded_broker_keeps_qos1_messages_for_a_disconnected_persistent_session(
    embedded: EmbeddedBrokerAddress,
) -> None:
    """Given a 3.1.1 client with clean_session=False and a password that subscribed at QoS 1 and left,
    when a message is published, then it gets the message on its return."""
    topic = "seclusion/v1/demo-school/calm-1/calm-1-door/event"
    client_id = f"listener-{uuid.uuid4().hex[:8]}"
    listener = _client(embedded, "listener", client_id)
    reason, present = _connect(listener, embedded)
    assert not reason.is_failure and not present
    subscribed: queue.Queue[int] = queue.Queue()
    listener.on_subscribe = lambda _c, _u, mid, _r, _p: subscribed.put(mid)
    _result, mid = listener.subscribe(topic, qos=1)
    assert subscribed.get(timeout=10) == mid
    _close(listener)

    sender = _client(embedded, "sender", f"sender-{uuid.uuid4().hex[:8]}")
    assert not _connect(sender, embedded)[0].is_failure
    sender.publish(topic, b'{"kept": true}', qos=1).wait_for_publish(10)
    _close(sender)

    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    back = _client(embedded, "listener", client_id)
    back.on_message = lambda _c, _u, message: received.put(message)
    try:
        reason, present = _connect(back, embedded)
        assert not reason.is_failure and present
        message = received.get(timeout=10)
    finally:
        _close(back)
    assert (message.topic, message.payload, message.qos) == (topic, b'{"kept": true}', 1)


def test_embedded_broker_sends_a_client_the_retained_messages_of_its_own_subscriptions_only(
    embedded: EmbeddedBrokerAddress,
) -> None:
    """amqtt 0.12 alone would hand a connecting hub every device's retained `ack` too (to dead-letter)."""
    root = "seclusion/v1/demo-school/calm-1"
    device = _client(embedded, "sender", f"device-{uuid.uuid4().hex[:8]}")
    assert not _connect(device, embedded)[0].is_failure
    device.subscribe(f"{root}/calm-1-door/ack", qos=1)
    device.publish(
        f"{root}/calm-1-door/status", b'{"v":1,"online":true}', qos=1, retain=True
    ).wait_for_publish(10)
    device.publish(
        f"{root}/calm-1-door/ack", b'{"v":1,"epoch":0,"seq":1}', qos=1, retain=True
    ).wait_for_publish(10)

    received: queue.Queue[str] = queue.Queue()
    hub = _client(embedded, "listener", f"hub-{uuid.uuid4().hex[:8]}")
    hub.on_message = lambda _c, _u, message: received.put(message.topic)
    hub.on_subscribe = lambda _c, _u, _mid, _r, _p: received.put("suback")
    try:
        assert not _connect(hub, embedded)[0].is_failure
        hub.subscribe("seclusion/v1/+/+/+/status", qos=1)
        assert received.get(timeout=10) == "suback"
        assert received.get(timeout=10) == f"{root}/calm-1-door/status"
        # The device's `ack` filter is not the hub's: its retained message never comes.
        device.publish(f"{root}/calm-1-door/status", b'{"v":1,"online":false}', qos=1, retain=True)
        assert received.get(timeout=10) == f"{root}/calm-1-door/status"
        assert received.empty()
    finally:
        _close(hub)
        _close(device)


def test_embedded_broker_hands_a_new_store_the_hubs_retained_ack_before_the_copy_of_its_status(
    embedded: EmbeddedBrokerAddress, tmp_path: Path
) -> None:
    """The edge agent's new store sends nothing until the copy of the status it published after
    subscribing comes back, counting on the broker to send the retained `ack` first: amqtt does too. A
    replaced SD card numbered (0,1..3) offline; the hub had stored (0,2) of the old one."""
    from gpiozero.pins.mock import MockFactory

    from seclusion_edge import EdgeAgent, FakeClock
    from seclusion_edge.outbox import Outbox
    from tests.edge.conftest import door_device

    root = "seclusion/v1/demo-school/calm-1/calm-1-door"
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    hub = _client(embedded, "listener", f"hub-{uuid.uuid4().hex[:8]}")
    hub.on_message = lambda _c, _u, message: events.put(json.loads(message.payload))
    assert not _connect(hub, embedded)[0].is_failure
    hub.subscribe(f"{root}/event", qos=1)
    hub.publish(f"{root}/ack", b'{"v":1,"epoch":0,"seq":2}', qos=1, retain=True).wait_for_publish(10)
    outbox = Outbox.open(tmp_path / "state", "calm-1-door")
    for kind, value in (("door", "open"), ("lock", "released"), ("occupancy", "vacant")):
        outbox.append(kind, value, FakeClock().now(), "boot-1")  # type: ignore[arg-type]
    outbox.close()
    config = door_device(tmp_path / "state", mqtt={"url": embedded.url("sender"), "protocol": "3.1.1"})
    agent = EdgeAgent(config, pin_factory=MockFactory(), tick_interval_s=0.01).start()
    try:
        got = [events.get(timeout=5) for _ in range(3)]
    finally:
        agent.stop()
        _close(hub)
    assert [(e["epoch"], e["seq"], e["kind"]) for e in got] == [
        (1, 1, "door"),
        (1, 2, "lock"),
        (1, 3, "occupancy"),
    ]


@pytest.mark.parametrize(
    ("user", "password"), [(None, None), ("listener", "not-the-password"), ("stranger", "x")]
)
def test_embedded_broker_refuses_anonymous_and_wrong_credentials(
    embedded: EmbeddedBrokerAddress, user: str | None, password: str | None
) -> None:
    client = _client(embedded, None, f"intruder-{uuid.uuid4().hex[:8]}")
    if user is not None:
        client.username_pw_set(user, password)
    answers: list[ReasonCode] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(reason)
    # Looped here, not on paho's thread: that thread connects again after a refusal, and a socket of a
    # connection under way when the test ends was left for the collector, failing whichever test was
    # running then (a ResourceWarning, seen in CI).
    client.connect(embedded.host, embedded.port, keepalive=30)
    try:
        deadline = time.monotonic() + 10
        while not answers and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    finally:
        sock = client.socket()
        client.disconnect()
        if sock is not None:
            sock.close()
    assert answers, "no CONNACK from the embedded broker within 10 s"
    assert answers[0].is_failure
    assert answers[0].getName() == "Not authorized"


def test_embedded_broker_stops_listening_when_stopped(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "amqtt", ["someone"])
    address = broker.start()
    assert address.url("someone").startswith(f"mqtt://someone:{address.passwords['someone']}@127.0.0.1:")
    assert "***" in address.redacted("someone") and address.passwords["someone"] not in address.redacted(
        "someone"
    )
    assert broker.running
    broker.stop()
    assert not broker.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address.host, address.port), 1).close()
    password_file = tmp_path / "amqtt" / "amqtt-passwords"
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    assert address.passwords["someone"] not in password_file.read_text()
