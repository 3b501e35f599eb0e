"""Ingest benchmark: simulated devices publish through a real Mosquitto; the hub applies and stores.

Run from the repository root:

    .venv/bin/python -m bench.ingest [--devices 50] [--rate 2000] [--seconds 10] [--bad-share 0.01]

What runs, all on 127.0.0.1 and all stopped at the end:

- Mosquitto, with the shipped deploy/mosquitto/mosquitto.conf (no queue limit, the database written
  every second; `--autosave` changes only that, `--autosave 1` for after every change) or, with
  `--broker fixture`, the test fixture's configuration;
- the hub, as its own process (`seclusion-hub serve`), on a generated site of one device per room;
- `--publishers` processes that are the devices, one MQTT v5 connection each, publishing QoS 1 events
  (door, occupancy and observer changes that open and close episodes) paced to `--rate` in total;
- a bare paho client in a process of its own, subscribed with QoS 1 to the same event topics: the
  baseline of how fast this broker on this machine delivers the very same messages;
- in this process, a client subscribed to the hub's retained `ack` topics (contract section 3). An
  event counts as stored when the first ack covering its `(epoch, seq)` arrives: the hub publishes
  the ack only after the commit, so that is publish-to-durable as the device itself sees it.

Every message sent must be accounted for by the hub (applied, duplicate or rejected, in its metrics
and in its database) or the run fails with exit status 1. The targets (stored rate at least 80 % of
the bare client's, p99 publish-to-stored under 50 ms at 2,000 events/s) are reported as PASS or MISS.
All clocks are `time.monotonic()`, which on Linux is one clock for every process of the machine.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import queue
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `python bench/ingest.py`
    sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from seclusion_contract import DEFAULT_ROOT, format_ts, send_at_once_on_open, stop_client  # noqa: E402
from tests.support.processes import Mosquitto, free_port, wait_port  # noqa: E402

SITE = "bench"
DEPLOY_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
TARGET_RATIO = 0.80
TARGET_P99_S = 0.050
TARGET_RATE = 2000.0
RECEIVE_MAXIMUM = 4096  # the hub's own Receive Maximum, given to the bare client too

# One device's story, over and over: an episode opens (occupied, then the door closes), the observer
# comes and goes, the PIR flickers while the door is closed (which ends nothing), the door opens and
# closes again within the re-close grace (a second segment), then opens and the room empties (the
# episode ends). One episode, two segments and eight observer changes per sixteen events.
CYCLE: tuple[tuple[str, str], ...] = (
    ("occupancy", "occupied"),
    ("door", "closed"),
    ("observer", "present"),
    ("occupancy", "vacant"),
    ("occupancy", "occupied"),
    ("observer", "absent"),
    ("observer", "present"),
    ("observer", "absent"),
    ("observer", "present"),
    ("door", "open"),
    ("door", "closed"),
    ("observer", "absent"),
    ("observer", "present"),
    ("door", "open"),
    ("occupancy", "vacant"),
    ("observer", "absent"),
)
# `--story sensors`: the same devices and rate without a single episode (the door stays open while the
# room fills and empties and the observer comes and goes): what the episodes cost, by difference.
SENSORS: tuple[tuple[str, str], ...] = (
    ("occupancy", "occupied"),
    ("observer", "present"),
    ("occupancy", "vacant"),
    ("observer", "absent"),
)
STORIES = {"episodes": CYCLE, "sensors": SENSORS}


# --- configuration and results exchanged with the worker processes ------------------------------------


@dataclass(frozen=True)
class PublisherJob:
    """What one publisher process does: its devices, its share of the rate, and what to send."""

    index: int
    port: int
    devices: tuple[tuple[str, str], ...]  # (room, device)
    rate: float  # events per second for this process; 0: as fast as the broker acknowledges
    seconds: float
    bad_share: float
    dup_share: float
    epoch: int
    seed: int
    window: int  # unacknowledged QoS 1 publishes allowed per device
    story: str = "episodes"
    device_client: str = "wire"
    steps: tuple[int, ...] = ()  # where in the story each device starts (`--phases`); all at 0 if empty


@dataclass
class DeviceLog:
    """The valid events one device sent, in order: their seq and publish time."""

    device: str
    seqs: list[int] = field(default_factory=list)
    published: list[float] = field(default_factory=list)


@dataclass
class PublisherResult:
    index: int
    devices: list[DeviceLog] = field(default_factory=list)
    valid: int = 0
    bad: int = 0
    dup: int = 0
    first: float = math.inf
    last: float = 0.0
    max_behind_s: float = 0.0
    unacked: int = 0
    cpu_s: float = 0.0
    error: str | None = None

    @property
    def sent(self) -> int:
        return self.valid + self.bad + self.dup


@dataclass
class BareResult:
    """What the bare subscriber received: every message, and the first arrival of each valid event."""

    messages: int = 0
    first_arrival: dict[tuple[str, int], float] = field(default_factory=dict)
    last: float = 0.0
    cpu_s: float = 0.0
    error: str | None = None


# --- the devices ---------------------------------------------------------------------------------------


def _v5_connect_properties(receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return props


class _Reason:
    def __init__(self, code: int) -> None:
        self.code = code
        self.is_failure = code >= 0x80

    def __str__(self) -> str:
        return f"reason code {self.code:#04x}"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_str(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


class _WireClient:
    """A simulated device's MQTT v5 connection, writing the packets itself (QoS 1 PUBLISH, reading back
    PUBACKs): the part of paho's `Client` that `_Device` and `_Publisher` use, at a fraction of its cost.

    The devices are the load generator, not what is measured, and they share the 2 cores with the hub:
    publishing through paho cost them about 225 us of CPU per message on the AMD machine (a quarter of
    the machine at 2,000 events/s). `--device-client paho` runs them on paho as before."""

    def __init__(self, client_id: str, window: int) -> None:
        self.client_id = client_id
        self.window = window
        self.sock: socket.socket | None = None
        self.unacked = 0
        self.waiting: collections.deque[bytes] = collections.deque()  # beyond the window, as paho queues
        self.next_id = 0
        self.buf = bytearray()
        self.on_connect: Callable[..., None] = lambda *_a: None
        self.on_disconnect: Callable[..., None] = lambda *_a: None
        self.on_publish: Callable[..., None] = lambda *_a: None

    def connect(self, host: str, port: int, keepalive: int = 60, properties: Any = None) -> None:
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Protocol "MQTT" level 5, clean start, keepalive; no properties (session expiry 0).
        variable = _mqtt_str("MQTT") + bytes([5, 0x02]) + keepalive.to_bytes(2, "big") + b"\x00"
        body = variable + _mqtt_str(self.client_id)
        sock.sendall(b"\x10" + _varint(len(body)) + body)
        self.sock = sock

    def socket(self) -> socket.socket | None:
        return self.sock

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> Any:
        self.next_id = self.next_id % 65535 + 1
        head = _mqtt_str(topic) + self.next_id.to_bytes(2, "big") + b"\x00"
        packet = b"\x32" + _varint(len(head) + len(payload)) + head + payload
        if self.unacked >= self.window:
            self.waiting.append(packet)
        else:
            self._send(packet)
        return types.SimpleNamespace(rc=paho.MQTT_ERR_SUCCESS)

    def _send(self, packet: bytes) -> None:
        assert self.sock is not None
        self.unacked += 1
        self.sock.sendall(packet)

    def loop_read(self) -> int:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            self.on_disconnect(self, None, None, _Reason(0x80), None)
            return 1
        self.buf += data
        while len(self.buf) >= 2:
            length, pos, mult = 0, 1, 1
            while True:
                if pos >= len(self.buf):
                    return 0  # the length itself is not all here yet
                byte = self.buf[pos]
                length += (byte & 0x7F) * mult
                mult *= 128
                pos += 1
                if not byte & 0x80:
                    break
            if len(self.buf) < pos + length:
                return 0
            kind, body = self.buf[0] >> 4, bytes(self.buf[pos : pos + length])
            del self.buf[: pos + length]
            if kind == 2:  # CONNACK: flags, reason code
                self.on_connect(self, None, None, _Reason(body[1] if len(body) > 1 else 0), None)
            elif kind == 4:  # PUBACK: packet id (reason code success when left out)
                reason = body[2] if len(body) > 2 else 0
                if reason >= 0x80:
                    self.on_disconnect(self, None, None, _Reason(reason), None)
                self.unacked -= 1
                self.on_publish(self, None, int.from_bytes(body[:2], "big"), _Reason(reason), None)
                if self.waiting:
                    self._send(self.waiting.popleft())
            elif kind == 14:  # DISCONNECT from the broker
                self.on_disconnect(self, None, None, _Reason(body[0] if body else 0), None)
        return 0

    def loop_write(self) -> int:
        return 0

    def want_write(self) -> bool:
        return False

    def loop_misc(self) -> int:
        return 0

    def disconnect(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.sendall(b"\xe0\x00")
                self.sock.close()
            self.sock = None


class _Device:
    """One simulated device: its connection, its sequence, its place in the story."""

    def __init__(
        self,
        room: str,
        device: str,
        epoch: int,
        window: int,
        story: str = "episodes",
        wire: bool = True,
        step: int = 0,
    ) -> None:
        self.story = STORIES[story]
        self.room = room
        self.device = device
        self.topic = f"{DEFAULT_ROOT}/{SITE}/{room}/{device}/event"
        self.epoch = epoch
        self.boot = f"bench-{device}-{os.getpid()}"
        self.seq = 0
        self.step = step
        self.last_ts_ms = 0
        self.last_payload: bytes | None = None
        self.published = 0
        self.acked = 0
        self.connected = False
        self.failure: str | None = None
        self.log = DeviceLog(device)
        self.client: Any
        if wire:
            self.client = _WireClient(f"bench-{device}", window)
        else:
            self.client = paho.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id=f"bench-{device}",
                protocol=paho.MQTTv5,
            )
            self.client.max_inflight_messages_set(window)
            self.client.max_queued_messages_set(0)
            self.client.on_socket_open = send_at_once_on_open  # as the agents do
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def _on_connect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.failure = f"{self.device}: connect refused: {reason}"
        else:
            self.connected = True

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self.connected:
            self.failure = self.failure or f"{self.device}: disconnected by the broker: {reason}"
        self.connected = False

    def _on_publish(self, _c: paho.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        self.acked += 1

    def valid_payload(self, mono: float) -> bytes:
        self.seq += 1
        kind, value = self.story[self.step % len(self.story)]
        self.step += 1
        # ts: the publish time, to the millisecond, strictly increasing per device.
        ts_ms = max(time.time_ns() // 1_000_000, self.last_ts_ms + 1)
        self.last_ts_ms = ts_ms
        ts = format_ts(dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC))
        body = {
            "v": 1,
            "id": f"{self.device}:{self.epoch}:{self.seq}",
            "seq": self.seq,
            "epoch": self.epoch,
            "ts": ts,
            "boot": self.boot,
            "mono_ms": int(mono * 1000),
            "kind": kind,
            "value": value,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def bad_payload(self, n: int) -> bytes:
        # `bench_bad` is an unknown field, which the hub ignores; it lets the bare client skip these.
        ts = format_ts(dt.datetime.now(dt.UTC))
        base: dict[str, Any] = {"v": 1, "id": f"{self.device}:bad:{n}", "seq": self.seq + 1, "ts": ts}
        variant = n % 4
        if variant == 0:
            return b'{"bench_bad": true, "v": 1, "kind": "door", "value": '  # not JSON
        if variant == 1:
            return json.dumps({**base, "bench_bad": True, "kind": "door", "value": "ajar"}).encode()
        if variant == 2:
            del base["ts"]
            return json.dumps({**base, "bench_bad": True, "kind": "door", "value": "open"}).encode()
        return json.dumps(
            {**base, "bench_bad": True, "seq": "7", "kind": "occupancy", "value": "vacant"}
        ).encode()


class _Publisher:
    """One process's devices, driven by one thread: paho's external-loop API over a selector."""

    def __init__(self, job: PublisherJob) -> None:
        self.job = job
        self.rng = random.Random(job.seed)
        steps = job.steps or (0,) * len(job.devices)
        self.devices = [
            _Device(room, dev, job.epoch, job.window, job.story, job.device_client == "wire", step)
            for (room, dev), step in zip(job.devices, steps, strict=True)
        ]
        self.selector = selectors.DefaultSelector()
        self.result = PublisherResult(index=job.index)
        self.bad_count = 0
        self.unfinished: set[_Device] = set()

    def connect(self, seconds: float = 15.0) -> None:
        for d in self.devices:
            d.client.connect("127.0.0.1", self.job.port, keepalive=60, properties=_v5_connect_properties())
            sock = d.client.socket()
            assert sock is not None
            self.selector.register(sock, selectors.EVENT_READ, d)
        deadline = time.monotonic() + seconds
        while not all(d.connected for d in self.devices):
            self._check()
            if time.monotonic() > deadline:
                raise TimeoutError("the devices did not all connect")
            self.pump(0.05)

    def pump(self, timeout: float) -> None:
        """Read what arrived (PUBACKs, CONNACKs) and finish writes the socket did not take at once.

        Without a network thread paho writes a publish straight to the socket, so only a device whose
        write was cut short (`unfinished`) needs `loop_write` here; the rest costs nothing per pump.
        """
        for key, _ in self.selector.select(max(0.0, timeout)):
            key.data.client.loop_read()
        if self.unfinished:
            for d in list(self.unfinished):
                d.client.loop_write()
                if not d.client.want_write():
                    self.unfinished.discard(d)

    def housekeeping(self) -> None:
        """Once a second: keepalive pings, and any write that is still pending."""
        for d in self.devices:
            d.client.loop_misc()
            if d.client.want_write():
                self.unfinished.add(d)

    def _check(self) -> None:
        for d in self.devices:
            if d.failure:
                raise RuntimeError(d.failure)

    def publish_one(self, d: _Device) -> None:
        job, res = self.job, self.result
        draw = self.rng.random()
        now = time.monotonic()
        if draw < job.bad_share:
            self.bad_count += 1
            payload = d.bad_payload(self.bad_count)
            res.bad += 1
        elif draw < job.bad_share + job.dup_share and d.last_payload is not None:
            payload = d.last_payload  # sent again, as an agent does after a lost PUBACK
            res.dup += 1
        else:
            payload = d.valid_payload(now)
            d.last_payload = payload
            d.log.seqs.append(d.seq)
            d.log.published.append(now)
            res.valid += 1
        info = d.client.publish(d.topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"{d.device}: publish failed: {paho.error_string(info.rc)}")
        if d.client.want_write():
            self.unfinished.add(d)
        d.published += 1
        res.first = min(res.first, now)
        res.last = now

    def run(self, start: float) -> None:
        while (wait := start - time.monotonic()) > 0:
            self.pump(min(wait, 0.05))
        if self.job.rate > 0:
            self._paced(start)
        else:
            self._flat_out(start)
        self._drain()

    def _paced(self, start: float) -> None:
        job = self.job
        total = round(job.rate * job.seconds)
        n = len(self.devices)
        last_misc = start
        for i in range(total):
            due = start + i / job.rate
            now = time.monotonic()
            while now < due:
                self.pump(min(due - now, 0.01))
                now = time.monotonic()
            self.result.max_behind_s = max(self.result.max_behind_s, now - due)
            self.publish_one(self.devices[i % n])
            if i % 64 == 0:
                self.pump(0)
                self._check()
                if now - last_misc > 1.0:
                    last_misc = now
                    self.housekeeping()

    def _flat_out(self, start: float) -> None:
        job = self.job
        deadline = start + job.seconds
        last_misc = start
        while (now := time.monotonic()) < deadline:
            sent = False
            for d in self.devices:
                if d.published - d.acked < job.window:
                    self.publish_one(d)
                    sent = True
            self.pump(0 if sent else 0.001)
            self._check()
            if now - last_misc > 1.0:
                last_misc = now
                self.housekeeping()

    def _drain(self, seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while any(d.acked < d.published for d in self.devices) and time.monotonic() < deadline:
            self.housekeeping()
            self.pump(0.01)
        self.result.unacked = sum(d.published - d.acked for d in self.devices)
        self.result.devices = [d.log for d in self.devices]

    def hold(self, release: MpEvent, seconds: float = 60.0) -> None:
        """Stay connected, as real devices do, until the bench has heard the hub's last acks
        (`release`): fifty devices leaving the broker at once is not part of what is measured."""
        deadline = time.monotonic() + seconds
        while not release.is_set() and time.monotonic() < deadline:
            self.housekeeping()
            self.pump(0.05)

    def disconnect(self) -> None:
        for d in self.devices:
            d.client.disconnect()
        self.pump(0)


def publisher_main(
    job: PublisherJob,
    ready: MpQueue[str],
    go: MpEvent,
    start_at: Synchronized[float],
    out: MpQueue[Any],
    release: MpEvent,
) -> None:
    """Entry point of a publisher process."""
    pub = _Publisher(job)
    try:
        pub.connect()
        ready.put(f"publisher-{job.index}")
        if not go.wait(60):
            raise TimeoutError("never told to start")
        cpu_start = time.process_time()
        pub.run(start_at.value)
        pub.result.cpu_s = time.process_time() - cpu_start
    except Exception:
        pub.result.error = traceback.format_exc()
        with contextlib.suppress(Exception):
            ready.put(f"FAILED publisher {job.index}:\n{pub.result.error}")
        out.put(pub.result)
        return
    out.put(pub.result)
    try:
        pub.hold(release)
    finally:
        pub.disconnect()


# --- the bare subscriber --------------------------------------------------------------------------------


def bare_main(
    port: int, ready: MpQueue[str], stop: MpEvent, count: Synchronized[int], out: MpQueue[Any]
) -> None:
    """Entry point of the bare client's process: receive, timestamp, keep; parse only at the end."""
    result = BareResult()
    received: list[tuple[float, str, bytes | bytearray]] = []
    subscribed = threading.Event()

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        received.append((time.monotonic(), msg.topic, msg.payload))

    def on_connect(client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(f"{DEFAULT_ROOT}/+/+/+/event", qos=1)

    def on_subscribe(_c: paho.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        subscribed.set()

    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=paho.MQTTv5
    )
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    try:
        client.connect("127.0.0.1", port, keepalive=60, properties=_v5_connect_properties(RECEIVE_MAXIMUM))
        client.loop_start()
        if not subscribed.wait(15):
            raise TimeoutError("the bare client's subscription was not acknowledged")
        ready.put("bare")
        cpu_start = time.process_time()
        while not stop.wait(0.1):
            count.value = len(received)
        count.value = len(received)
        result.cpu_s = time.process_time() - cpu_start
        client.disconnect()
        stop_client(client)
        result.messages = len(received)
        for arrived, topic, payload in received:
            result.last = max(result.last, arrived)
            try:
                body = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(body, dict) or body.get("bench_bad") or not isinstance(body.get("seq"), int):
                continue
            result.first_arrival.setdefault((topic.split("/")[-2], body["seq"]), arrived)
    except Exception:
        result.error = traceback.format_exc()
        with contextlib.suppress(Exception):
            ready.put(f"FAILED bare client:\n{result.error}")
    out.put(result)


# --- the hub's acks, heard in this process -----------------------------------------------------------------


class AckListener:
    """Subscribes to every device's retained `ack` and keeps, per device, each new seq and when it came."""

    def __init__(self, port: int, epoch: int) -> None:
        self.epoch = epoch
        self.lock = threading.Lock()
        self.acks: dict[str, list[tuple[float, int]]] = {}
        self.latest: dict[str, int] = {}
        self.messages = 0
        self._subscribed = threading.Event()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-acks", protocol=paho.MQTTv5
        )
        self.client.on_socket_open = send_at_once_on_open  # as the agents do
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=60, properties=_v5_connect_properties())
        self.client.loop_start()
        if not self._subscribed.wait(15):
            raise TimeoutError("the ack subscription was not acknowledged")

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(f"{DEFAULT_ROOT}/{SITE}/+/+/ack", qos=1)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        arrived = time.monotonic()
        try:
            body = json.loads(msg.payload)
            epoch, seq = int(body["epoch"]), int(body["seq"])
        except (ValueError, KeyError, TypeError):
            return
        if epoch != self.epoch:
            return
        device = msg.topic.split("/")[-2]
        with self.lock:
            self.messages += 1
            if seq > self.latest.get(device, 0):
                self.latest[device] = seq
                self.acks.setdefault(device, []).append((arrived, seq))

    def covered(self, last_seqs: dict[str, int]) -> bool:
        with self.lock:
            return all(self.latest.get(dev, 0) >= seq for dev, seq in last_seqs.items())

    def stop(self) -> None:
        self.client.disconnect()
        stop_client(self.client)


# --- the hub process, its metrics and its database ----------------------------------------------------------


def write_site(path: Path, devices: int) -> list[tuple[str, str]]:
    """A site of `devices` rooms with one device each; heartbeats are not part of this benchmark."""
    pairs = [(f"room-{i:03d}", f"dev-{i:03d}") for i in range(1, devices + 1)]
    lines = [f"site: {SITE}", "timezone: Europe/London", "policy: england-schools-2026", "rooms:"]
    for room, dev in pairs:
        lines += [
            f"  - id: {room}",
            f"    name: Bench room {room}",
            "    supervision: observer",
            "    devices:",
            f"      - id: {dev}",
            "        sensors: [door, occupancy, observer]",
            "    policy_overrides: {heartbeat_s: 3600}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return pairs


def start_broker(
    kind: str, workdir: Path, autosave: str | None = None, nodelay: str | None = None
) -> tuple[subprocess.Popen[bytes], int, Callable[[], None]]:
    """Mosquitto with the shipped production configuration (`autosave` changes its autosave_interval
    and autosave_on_changes, `nodelay` its set_tcp_nodelay), or the test fixture's."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o777)  # noqa: S103  (Mosquitto drops root for its own user)
    if kind == "fixture":
        broker = Mosquitto(workdir).start()
        assert broker.proc is not None
        return broker.proc, broker.port, broker.stop
    port = free_port()
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    os.chmod(data, 0o777)  # noqa: S103
    text = DEPLOY_CONF.read_text()
    text, n = re.subn(r"(?m)^listener 1883$", f"listener {port} 127.0.0.1", text)
    if n != 1:
        raise RuntimeError(f"{DEPLOY_CONF}: no `listener 1883` line to rewrite")
    text = text.replace("persistence_location /mosquitto/data/", f"persistence_location {data}/")
    if autosave is not None:
        # "Ns": save every N seconds (shipped: 1s); "N": after every N changes (1 = after every change).
        on_changes = "false" if autosave.endswith("s") else "true"
        text, n = re.subn(r"(?m)^autosave_interval \d+$", f"autosave_interval {autosave.rstrip('s')}", text)
        text, m = re.subn(r"(?m)^autosave_on_changes \w+$", f"autosave_on_changes {on_changes}", text)
        if n != 1 or m != 1:
            raise RuntimeError(f"{DEPLOY_CONF}: no `autosave_interval`/`autosave_on_changes` line to rewrite")
    if nodelay is not None:
        text, n = re.subn(r"(?m)^set_tcp_nodelay \w+$", f"set_tcp_nodelay {nodelay}", text)
        if n != 1:
            raise RuntimeError(f"{DEPLOY_CONF}: no `set_tcp_nodelay` line to rewrite")
    conf = workdir / "mosquitto.conf"
    conf.write_text(text)
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = open(workdir / "mosquitto.log", "ab")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)

    def stop() -> None:
        terminate(proc, 5)
        log.close()

    return proc, port, stop


def terminate(proc: subprocess.Popen[bytes], seconds: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url)  # noqa: S310  (always http://127.0.0.1)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def read_metrics(base: str) -> dict[str, float]:
    """The hub's Prometheus metrics as `name{labels}` -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    _, body = http_get(f"{base}/metrics")
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return values


@dataclass(frozen=True)
class HubCounts:
    accepted: int
    duplicate: int
    rejected_event: int
    rejected_total: int
    missing: int
    internal_errors: int
    write_failures: int
    queue: int

    @classmethod
    def of(cls, m: dict[str, float]) -> HubCounts:
        rejected = {k: v for k, v in m.items() if k.startswith("seclusion_messages_rejected_total")}
        return cls(
            accepted=int(m.get("seclusion_events_accepted_total", 0)),
            duplicate=int(m.get("seclusion_events_duplicate_total", 0)),
            rejected_event=int(m.get('seclusion_messages_rejected_total{channel="event"}', 0)),
            rejected_total=int(sum(rejected.values())),
            missing=int(m.get("seclusion_events_missing_total", 0)),
            internal_errors=int(m.get("seclusion_internal_errors_total", 0)),
            write_failures=int(m.get("seclusion_store_write_failures_total", 0)),
            queue=int(m.get("seclusion_ingest_queue", 0)),
        )

    @property
    def accounted(self) -> int:
        return self.accepted + self.duplicate + self.rejected_event


def histogram_quantile(m: dict[str, float], name: str, q: float) -> float | None:
    """The upper bound of the bucket that holds quantile q of a Prometheus histogram."""
    buckets = sorted(
        (float(k.split('le="')[1].rstrip('"}')), v) for k, v in m.items() if k.startswith(f"{name}_bucket{{")
    )
    total = m.get(f"{name}_count", 0.0)
    if not buckets or total <= 0:
        return None
    for le, cumulative in buckets:
        if cumulative >= q * total:
            return le
    return math.inf


def children(pid: int) -> list[int]:
    """The process ids of a process's children (the hub's MQTT process), from /proc."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class StoredRows:
    events: int
    dead_letters: int
    # hub received_at minus the event's own ts (= its publish time, to the ms): `device_ts` where the hub
    # timed it otherwise (a corrected clock), else `ts`
    receive_lag: list[float]
    write_lag: list[float]  # hub stored_at (its batch's write) minus the event's own ts
    # (device, seq) -> (receive lag, write lag), to set them beside the publish time of the same event
    by_event: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)


def read_database(url: str, epoch: int, since: dt.datetime) -> StoredRows:
    import sqlalchemy as sa
    from sqlmodel import col, select

    from seclusion_hub.models import DeadLetter, EventRecord

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    sa.func.coalesce(EventRecord.device_ts, EventRecord.ts),
                    col(EventRecord.received_at),
                    col(EventRecord.stored_at),
                    col(EventRecord.device),
                    col(EventRecord.seq),
                ).where(col(EventRecord.site) == SITE, col(EventRecord.epoch) == epoch)
            ).all()
            dead = conn.execute(
                select(sa.func.count())
                .select_from(DeadLetter)
                .where(col(DeadLetter.topic).startswith(f"{DEFAULT_ROOT}/{SITE}/"))
                .where(col(DeadLetter.received_at) >= since)
            ).scalar_one()
    finally:
        engine.dispose()
    by_event = {
        (device, seq): ((received - ts).total_seconds(), (stored - ts).total_seconds())
        for ts, received, stored, device, seq in rows
    }
    lags = [lag for lag, _ in by_event.values()]
    writes = [write for _, write in by_event.values()]
    return StoredRows(
        events=len(rows), dead_letters=int(dead), receive_lag=lags, write_lag=writes, by_event=by_event
    )


# --- figures ---------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


@dataclass
class Summary:
    p50: float
    p99: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        s = sorted(values)
        return cls(percentile(s, 0.50), percentile(s, 0.99), s[-1] if s else math.nan, len(s))

    def ms(self) -> str:
        return f"p50 {self.p50 * 1000:7.1f}  p99 {self.p99 * 1000:7.1f}  max {self.max * 1000:7.1f} ms"


def stored_latencies(
    logs: list[DeviceLog], acks: dict[str, list[tuple[float, int]]]
) -> tuple[list[tuple[float, float]], float, int]:
    """(publish time, latency to the first ack covering the event) for each event; also the last such
    ack's time and how many events no ack covers."""
    latencies: list[tuple[float, float]] = []
    last = 0.0
    uncovered = 0
    for log in logs:
        heard = acks.get(log.device, [])
        j = 0
        for seq, published in zip(log.seqs, log.published, strict=True):
            while j < len(heard) and heard[j][1] < seq:
                j += 1
            if j == len(heard):
                uncovered += 1
                continue
            latencies.append((published, heard[j][0] - published))
            last = max(last, heard[j][0])
    return latencies, last, uncovered


def timeline(pairs: list[tuple[float, float]], start: float, step: float = 0.5) -> list[list[float]]:
    """[offset s, events, p50 ms, p99 ms, max ms] per `step` seconds of publish time: stalls show here."""
    windows: dict[int, list[float]] = {}
    for published, latency in pairs:
        windows.setdefault(int((published - start) / step), []).append(latency)
    rows = []
    for k in sorted(windows):
        v = sorted(windows[k])
        ms = [round(x * 1000, 1) for x in (percentile(v, 0.5), percentile(v, 0.99), v[-1])]
        rows.append([round(k * step, 2), len(v), *ms])
    return rows


def stage_timelines(
    logs: list[DeviceLog], bare: BareResult, rows: StoredRows, start: float
) -> dict[str, list[list[float]]]:
    """The same half-second windows of publish time for each stage an event passes, so that a slow
    window of the stored latency can be placed: the broker (the bare client hears it late too), the
    hub's receiving (received_at late), its batch (stored_at late) or the way back (only the ack late).
    The database's times are wall clock to the millisecond, the publish times monotonic: the hub's lags
    are taken from the event's own `ts` (its publish time) and only placed by the monotonic time."""
    bare_pairs: list[tuple[float, float]] = []
    received: list[tuple[float, float]] = []
    written: list[tuple[float, float]] = []
    for log in logs:
        for seq, published in zip(log.seqs, log.published, strict=True):
            arrived = bare.first_arrival.get((log.device, seq))
            if arrived is not None:
                bare_pairs.append((published, arrived - published))
            lags = rows.by_event.get((log.device, seq))
            if lags is not None:
                received.append((published, lags[0]))
                written.append((published, lags[1]))
    return {
        "bare": timeline(bare_pairs, start),
        "hub_received": timeline(received, start),
        "hub_written": timeline(written, start),
    }


def bare_latencies(logs: list[DeviceLog], bare: BareResult) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    last = 0.0
    missing = 0
    for log in logs:
        for seq, published in zip(log.seqs, log.published, strict=True):
            arrived = bare.first_arrival.get((log.device, seq))
            if arrived is None:
                missing += 1
                continue
            latencies.append(arrived - published)
            last = max(last, arrived)
    return latencies, last, missing


# --- the run ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=50, help="simulated devices, one room each (50)")
    p.add_argument("--rate", type=float, default=TARGET_RATE, help="events/s in total; 0 = flat out (2000)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long the devices publish (10)")
    p.add_argument("--bad-share", type=float, default=0.01, help="share of malformed messages (0.01)")
    p.add_argument("--dup-share", type=float, default=0.005, help="share of events sent twice (0.005)")
    p.add_argument(
        "--database",
        default="sqlite",
        help="sqlite (a new file), postgres (a throwaway server), or an SQLAlchemy URL (sqlite)",
    )
    p.add_argument(
        "--broker",
        choices=("deploy", "fixture"),
        default="deploy",
        help="deploy: deploy/mosquitto/mosquitto.conf; fixture: tests.support.processes (deploy)",
    )
    p.add_argument(
        "--autosave",
        default=None,
        help="change the deploy config's autosave: Ns every N seconds (shipped: 1s), N after every N "
        "changes (1: after every change), 0 only at exit; default: the shipped config as is",
    )
    p.add_argument(
        "--broker-nodelay",
        choices=("true", "false"),
        default=None,
        help="change the deploy config's set_tcp_nodelay (shipped: true); default: as shipped",
    )
    p.add_argument(
        "--sample-every",
        type=float,
        default=0.5,
        help="seconds between readings of the hub's metrics while the devices publish (0.5)",
    )
    p.add_argument("--publishers", type=int, default=2, help="publisher processes (2)")
    p.add_argument("--window", type=int, default=20, help="unacknowledged publishes per device (20)")
    p.add_argument(
        "--pin",
        action="store_true",
        help="give the hub the last CPU to itself and run everything else on the others (an experiment)",
    )
    p.add_argument("--hub-protocol", choices=("5", "3.1.1"), default="5", help="the hub's MQTT version (5)")
    p.add_argument(
        "--busy",
        type=float,
        default=0.0,
        help="a busy loop taking this share of one core while the devices publish (0 to 1; 0: none): a "
        "slow spell of a shared host, made on purpose to compare code under it",
    )
    p.add_argument(
        "--hub-mqtt",
        choices=("inline", "thread", "process"),
        default="inline",
        help="who drives the hub's MQTT connection: its ingest thread (inline, as shipped), a network "
        "thread of paho's (SECLUSION_MQTT_THREAD=true, as before 2026-12-07), or a process of its own",
    )
    p.add_argument("--ingest-batch", type=int, default=None, help="SECLUSION_INGEST_BATCH for the hub")
    p.add_argument(
        "--hub-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one more setting for the hub's environment (contract section 5), such as "
        "SECLUSION_INGEST_LINGER_MS=2; may be given again",
    )
    p.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="run the hub with sys.setswitchinterval(this many seconds) (an experiment; Python's is 0.005)",
    )
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to wait for the hub (30)")
    p.add_argument("--py-spy", type=Path, default=None, help="profile the hub with py-spy into this file")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, database)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--device-client",
        choices=["wire", "paho"],
        default="wire",
        help="the simulated devices write MQTT packets themselves (wire) or publish through paho (paho: "
        "as before 2026-12-04; it costs the load generator about three times the CPU)",
    )
    p.add_argument(
        "--story",
        choices=sorted(STORIES),
        default="episodes",
        help="episodes: an episode opens and ends every 16 events per device; sensors: no episode at all",
    )
    p.add_argument(
        "--phases",
        choices=("spread", "same"),
        default="spread",
        help="spread: each device starts at another step of the story, so rooms' episodes open and end "
        "at different moments; same: every device starts at the first step, in step with the others "
        "(as before 2026-12-07: fifty episodes opening within 25 ms, every 0.4 s)",
    )
    args = p.parse_args(argv)
    if args.devices < 1 or args.seconds <= 0 or args.rate < 0 or not 0 <= args.bad_share + args.dup_share < 1:
        p.error("need --devices >= 1, --seconds > 0, --rate >= 0 and 0 <= --bad-share + --dup-share < 1")
    if args.autosave is not None and not re.fullmatch(r"\d+s?", args.autosave):
        p.error("--autosave: a number of changes (100) or of seconds (1s)")
    if args.autosave is not None and args.broker != "deploy":
        p.error("--autosave changes the deploy configuration: use it with --broker deploy")
    for setting in args.hub_env:
        if not re.fullmatch(r"SECLUSION_[A-Z0-9_]+=.*", setting):
            p.error(f"--hub-env: {setting!r} is not SECLUSION_NAME=value")
    args.publishers = max(1, min(args.publishers, args.devices))
    return args


class Run:
    """Everything started for one run, stopped in reverse order by `close`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="seclusion-bench-"))
        os.chmod(self.workdir, 0o755)  # noqa: S103  (readable by Mosquitto's user)
        self._closers: list[Callable[[], None]] = []
        self.hub: subprocess.Popen[bytes] | None = None

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception as exc:
                print(f"warning: cleanup step failed: {exc}", file=sys.stderr)
        if self.args.keep:
            print(f"kept: {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def database(self) -> tuple[str, int]:
        """The database URL, and the epoch the devices use (fresh databases: 0)."""
        choice = self.args.database
        if choice == "sqlite":
            return f"sqlite:///{self.workdir / 'hub.db'}", 0
        if choice == "postgres":
            from tests.support.postgres import Postgres

            server = Postgres().start()
            self.on_close(server.stop)
            return server.url(server.create_database("bench")), 0
        # Someone's own database may hold earlier runs: a new epoch keeps this run's events apart.
        return choice, int(time.time())

    def start_hub(self, broker_port: int, db_url: str, site_file: Path) -> str:
        http_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SECLUSION_")}
        env.update(
            SECLUSION_MQTT_URL=f"mqtt://127.0.0.1:{broker_port}",
            SECLUSION_DATABASE_URL=db_url,
            SECLUSION_SITE_FILES=str(site_file),
            SECLUSION_HTTP_HOST="127.0.0.1",
            SECLUSION_HTTP_PORT=str(http_port),
            SECLUSION_MQTT_CLIENT_ID="seclusion-hub-bench",
            SECLUSION_MQTT_PROTOCOL=self.args.hub_protocol,
        )
        env["SECLUSION_MQTT_PROCESS"] = "true" if self.args.hub_mqtt == "process" else "false"
        env["SECLUSION_MQTT_THREAD"] = "true" if self.args.hub_mqtt == "thread" else "false"
        if self.args.ingest_batch:
            env["SECLUSION_INGEST_BATCH"] = str(self.args.ingest_batch)
        for setting in self.args.hub_env:
            name, _, value = setting.partition("=")
            env[name] = value
        binary = Path(sys.executable).parent / "seclusion-hub"
        cmd = [str(binary)] if binary.exists() else [sys.executable, "-m", "seclusion_hub.cli"]
        if self.args.switch_interval is not None:
            snippet = (
                f"import sys; sys.setswitchinterval({self.args.switch_interval}); "
                "from seclusion_hub.cli import main; sys.exit(main())"
            )
            cmd = [sys.executable, "-c", snippet]
        log = open(self.workdir / "hub.log", "ab")
        self.hub = subprocess.Popen([*cmd, "serve"], cwd=self.workdir, env=env, stdout=log, stderr=log)
        hub = self.hub

        def stop() -> None:
            terminate(hub, 15)
            log.close()

        self.on_close(stop)
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if hub.poll() is not None:
                raise RuntimeError(f"the hub exited with {hub.returncode}:\n{self.hub_log_tail()}")
            with contextlib.suppress(OSError):
                code, body = http_get(f"{base}/healthz", timeout=1)
                status = json.loads(body)
                if code == 200 and status.get("mqtt_connected") and status.get("evaluated"):
                    return base
            time.sleep(0.1)
        raise TimeoutError(f"the hub was not ready within 60 s:\n{self.hub_log_tail()}")

    def hub_log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "hub.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _wait_ready(ready: MpQueue[str], procs: list[Any], seconds: float) -> None:
    """Wait until every worker process says it is ready; fail at once if one fails or dies."""
    deadline = time.monotonic() + seconds
    pending = len(procs)
    while pending:
        try:
            name = ready.get(timeout=0.5)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode is not None]
            if dead:
                raise RuntimeError(
                    f"{dead[0].name} exited with {dead[0].exitcode} before it was ready"
                ) from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pending} worker processes not ready after {seconds:g} s") from None
            continue
        if name.startswith("FAILED"):
            raise RuntimeError(name)
        pending -= 1


def system_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, all processes), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    load_before = os.getloadavg()[0]
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[:-1]))  # inherited by the broker, the workers and the hub...
    bench = Run(args)
    figures: dict[str, Any] = {}
    procs: list[Any] = []
    release: MpEvent | None = None
    try:
        pairs = write_site(bench.workdir / "site.yaml", args.devices)
        broker_proc, port, broker_stop = start_broker(
            args.broker, bench.workdir / "broker", args.autosave, args.broker_nodelay
        )
        bench.on_close(broker_stop)
        db_url, epoch = bench.database()
        run_started = dt.datetime.now(dt.UTC)
        base = bench.start_hub(port, db_url, bench.workdir / "site.yaml")
        assert bench.hub is not None
        if args.pin and len(cpus) > 1:  # ...except the hub, every thread of it, which gets the last CPU
            for task in Path(f"/proc/{bench.hub.pid}/task").iterdir():
                os.sched_setaffinity(int(task.name), {cpus[-1]})
        acks = AckListener(port, epoch)
        bench.on_close(acks.stop)

        ready: MpQueue[str] = ctx.Queue()
        out: MpQueue[Any] = ctx.Queue()
        go = ctx.Event()
        release = ctx.Event()  # the publishers disconnect once the last acks are heard
        stop_bare = ctx.Event()
        start_at = ctx.Value("d", 0.0)
        bare_count = ctx.Value("q", 0)
        bare_out: MpQueue[Any] = ctx.Queue()
        bare = ctx.Process(target=bare_main, args=(port, ready, stop_bare, bare_count, bare_out), daemon=True)
        bare.start()
        procs.append(bare)
        groups = [pairs[i :: args.publishers] for i in range(args.publishers)]
        story_length = len(STORIES[args.story])
        for i, group in enumerate(groups):
            # `spread`: device n starts at step n of its story (modulo its length), so that the rooms'
            # episodes open and end at different moments, as independent rooms' do; `same`: every
            # device at the first step, all fifty rooms' episodes opening within the same 25 ms.
            numbers = range(i, len(pairs), args.publishers)
            steps = tuple(n % story_length if args.phases == "spread" else 0 for n in numbers)
            job = PublisherJob(
                index=i,
                port=port,
                devices=tuple(group),
                rate=args.rate * len(group) / len(pairs),
                seconds=args.seconds,
                bad_share=args.bad_share,
                dup_share=args.dup_share,
                epoch=epoch,
                seed=args.seed * 1000 + i,
                window=args.window,
                story=args.story,
                device_client=args.device_client,
                steps=steps,
            )
            proc = ctx.Process(
                target=publisher_main, args=(job, ready, go, start_at, out, release), daemon=True
            )
            proc.start()
            procs.append(proc)
        _wait_ready(ready, procs, 60)

        spy: subprocess.Popen[bytes] | None = None
        if args.py_spy is not None:
            spy = _start_py_spy(args.py_spy, bench.hub.pid, args.seconds + 3)

        busy = _start_busy(args.busy)
        cpu_before = {
            "hub": cpu_seconds(bench.hub.pid),
            "hub_mqtt": sum(cpu_seconds(c) for c in children(bench.hub.pid)),
            "broker": cpu_seconds(broker_proc.pid),
            "machine": system_busy_seconds(),
            "bench": time.process_time(),
        }
        start_at.value = time.monotonic() + 0.3
        go.set()

        # While the devices publish: sample the hub's queue, and collect each publisher's log.
        results: list[PublisherResult] = []
        samples: list[tuple[float, HubCounts]] = []

        def sample() -> HubCounts:
            asked = time.monotonic()
            counts = HubCounts.of(read_metrics(base))
            samples.append(((asked + time.monotonic()) / 2, counts))
            return counts

        next_sample = time.monotonic() + args.sample_every
        while len(results) < len(groups):
            try:
                results.append(out.get(timeout=0.5))
                continue
            except queue.Empty:
                pass
            if time.monotonic() >= next_sample:
                next_sample = time.monotonic() + args.sample_every
                with contextlib.suppress(OSError):
                    sample()
            if not all(p.is_alive() for p in procs[1:]) and out.empty():
                time.sleep(1)
                if out.empty():
                    raise RuntimeError("a publisher process died without a result")
        errors = [r.error for r in results if r.error]
        if errors:
            raise RuntimeError("a publisher failed:\n" + "\n".join(errors))

        logs = [log for r in results for log in r.devices]
        last_seqs = {log.device: log.seqs[-1] for log in logs if log.seqs}
        sent = sum(r.sent for r in results)
        valid = sum(r.valid for r in results)
        bad = sum(r.bad for r in results)
        dup = sum(r.dup for r in results)

        # Wait for the hub's acks to cover every event (and the bare client to have every message), or
        # the deadline, without asking the hub for its metrics meanwhile (each answer takes the hub's
        # interpreter lock, and this process's, the ack listener's, from the last acks' way); then for
        # the hub's count of every message.
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline:
            if acks.covered(last_seqs) and bare_count.value >= sent:
                break
            time.sleep(0.01)
        release.set()
        while time.monotonic() < deadline:
            counts = sample()
            if counts.accounted >= sent:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # anything arriving late (more than was sent) should show too
        counts = HubCounts.of(read_metrics(base))
        final_metrics = read_metrics(base)
        cpu_after = {
            "hub": cpu_seconds(bench.hub.pid),
            "hub_mqtt": sum(cpu_seconds(c) for c in children(bench.hub.pid)),
            "broker": cpu_seconds(broker_proc.pid),
            "machine": system_busy_seconds(),
            "bench": time.process_time(),
        }
        if busy is not None:
            busy.kill()
            busy.wait(10)
        stop_bare.set()
        bare_result: BareResult = bare_out.get(timeout=30)
        if bare_result.error:
            raise RuntimeError(f"the bare client failed:\n{bare_result.error}")
        if spy is not None:
            spy.wait(30)
        rows = read_database(db_url, epoch, run_started)

        with acks.lock:
            ack_copy = {k: list(v) for k, v in acks.acks.items()}
            ack_messages = acks.messages
        first_pub = min(r.first for r in results)
        last_pub = max(r.last for r in results)
        stored_pairs, last_stored, uncovered = stored_latencies(logs, ack_copy)
        stored_lat = [latency for _, latency in stored_pairs]
        bare_lat, last_bare, bare_missing = bare_latencies(logs, bare_result)
        applied_at = next((t for t, c in samples if c.accepted >= valid), 0.0)
        applied_rate = valid / (applied_at - first_pub) if applied_at > first_pub else 0.0
        max_queue = max((c.queue for _, c in samples), default=0)
        stored_n = valid - uncovered
        bare_n = valid - bare_missing
        stored_rate = stored_n / (last_stored - first_pub) if last_stored > first_pub else 0.0
        bare_rate = bare_n / (last_bare - first_pub) if last_bare > first_pub else 0.0

        problems: list[str] = []

        def expect(what: str, got: int, want: int) -> None:
            if got != want:
                problems.append(f"{what}: {got}, expected {want}")

        expect("hub accounted (accepted + duplicate + rejected)", counts.accounted, sent)
        expect("hub accepted", counts.accepted, valid)
        expect("hub duplicates", counts.duplicate, dup)
        expect("hub rejected (event)", counts.rejected_event, bad)
        expect("rows in event", rows.events, valid)
        expect("rows in dead_letter", rows.dead_letters, bad)
        expect("events covered by an ack", stored_n, valid)
        expect("messages the bare client received", bare_result.messages, sent)
        expect("events missing in a sequence (hub)", counts.missing, 0)
        expect("internal errors (hub)", counts.internal_errors, 0)
        expect("PUBACKs missing at the publishers", sum(r.unacked for r in results), 0)

        elapsed = max(last_stored, last_bare, last_pub) - first_pub
        figures = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "command": "python -m bench.ingest " + " ".join(sys.argv[1:]),
            "broker": args.broker
            + ("" if args.autosave is None else f", autosave {args.autosave}")
            + ("" if args.broker_nodelay is None else f", set_tcp_nodelay {args.broker_nodelay}"),
            "database": "postgresql" if db_url.startswith("postgres") else "sqlite",
            "hub_protocol": args.hub_protocol,
            "hub_mqtt": args.hub_mqtt,
            "pinned": bool(args.pin and len(cpus) > 1),
            "busy": args.busy,
            "devices": args.devices,
            "story": args.story,
            "device_client": args.device_client,
            "rate_target": args.rate,
            "seconds": args.seconds,
            "publishers": args.publishers,
            "sent": sent,
            "valid": valid,
            "bad": bad,
            "dup": dup,
            "send_rate": sent / (last_pub - first_pub) if last_pub > first_pub else 0.0,
            "publisher_max_behind_ms": max(r.max_behind_s for r in results) * 1000,
            "bare_rate": bare_rate,
            "stored_rate": stored_rate,
            "applied_rate": applied_rate,
            "ratio": stored_rate / bare_rate if bare_rate else 0.0,
            "stored_latency": dataclasses.asdict(Summary.of(stored_lat)),
            "stored_latency_timeline": timeline(stored_pairs, first_pub),
            "stage_timelines": stage_timelines(logs, bare_result, rows, first_pub),
            "bare_latency": dataclasses.asdict(Summary.of(bare_lat)),
            "hub_receive_lag": dataclasses.asdict(Summary.of(rows.receive_lag)),
            "hub_write_lag": dataclasses.asdict(Summary.of(rows.write_lag)),
            "hub_ingest_lag_p50_le": histogram_quantile(final_metrics, "seclusion_ingest_lag_seconds", 0.5),
            "hub_ingest_lag_p99_le": histogram_quantile(final_metrics, "seclusion_ingest_lag_seconds", 0.99),
            "hub_max_queue": max_queue,
            "ack_messages": ack_messages,
            "hub": dataclasses.asdict(counts),
            "rows": {"event": rows.events, "dead_letter": rows.dead_letters},
            "bare_messages": bare_result.messages,
            "cpu_s": {
                "hub": cpu_after["hub"] - cpu_before["hub"],
                "hub_mqtt": cpu_after["hub_mqtt"] - cpu_before["hub_mqtt"],
                "broker": cpu_after["broker"] - cpu_before["broker"],
                "machine": cpu_after["machine"] - cpu_before["machine"],
                "others": (cpu_after["machine"] - cpu_before["machine"])
                - sum(cpu_after[k] - cpu_before[k] for k in ("hub", "hub_mqtt", "broker", "bench"))
                - sum(r.cpu_s for r in results)
                - bare_result.cpu_s,
                "publishers": sum(r.cpu_s for r in results),
                "bare": bare_result.cpu_s,
                "wall": elapsed,
            },
            "load_before": load_before,
            "problems": problems,
        }
        return figures
    finally:
        if release is not None:
            release.set()
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        bench.close()


_MQTT_WHERE = {
    "inline": "driven by its ingest thread",
    "thread": "in paho's network thread",
    "process": "in its own process",
}


_BUSY_LOOP = """
import os, sys, time
share, parent = float(sys.argv[1]), int(sys.argv[2])
while os.getppid() == parent:  # ends with the benchmark, however that ends
    started = time.perf_counter()
    while time.perf_counter() - started < share * 0.01:
        pass
    time.sleep((1 - share) * 0.01)
"""


def _start_busy(share: float) -> subprocess.Popen[bytes] | None:
    """`--busy`: a process that spins for `share` of every 10 ms (killed at the run's end)."""
    if share <= 0:
        return None
    if share > 1:
        raise SystemExit("--busy: a share of one core, 0 to 1")
    return subprocess.Popen([sys.executable, "-c", _BUSY_LOOP, str(share), str(os.getpid())])


def _start_py_spy(output: Path, pid: int, seconds: float) -> subprocess.Popen[bytes]:
    """Attach py-spy to the hub (PY_SPY: its path; PY_SPY_ARGS: more options, such as --gil or --idle)."""
    binary = shutil.which("py-spy") or os.environ.get("PY_SPY", "py-spy")
    fmt = {".txt": "raw", ".json": "speedscope"}.get(output.suffix, "flamegraph")
    cmd = [binary, "record", "--pid", str(pid), "--rate", "200", "--duration", str(math.ceil(seconds))]
    cmd += ["--format", fmt, "--output", str(output), "--threads", "--nonblocking"]
    cmd += os.environ.get("PY_SPY_ARGS", "").split()
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model}, Python {sys.version.split()[0]}"


def report(f: dict[str, Any]) -> bool:
    """Print the table; True if every message was accounted for."""
    s, b, h = f["stored_latency"], f["bare_latency"], f["hub_receive_lag"]
    rate = "flat out" if f["rate_target"] == 0 else f"{f['rate_target']:.0f} events/s"

    def lat(x: dict[str, float]) -> str:
        return Summary(x["p50"], x["p99"], x["max"], int(x["n"])).ms()

    cpu, hub, rows = f["cpu_s"], f["hub"], f["rows"]
    accounted = hub["accepted"] + hub["duplicate"] + hub["rejected_event"]
    lines = [
        f"ingest benchmark, {f['date']}, {f['machine']}",
        f"  target rate        {rate}, {f['devices']} devices, {f['seconds']:g} s, "
        f"{f['publishers']} publisher processes ({f.get('device_client', 'paho')}), "
        f"story: {f.get('story', 'episodes')}",
        f"  broker / database  {f['broker']} mosquitto.conf / {f['database']}; the hub on MQTT "
        f"{f['hub_protocol']} ({_MQTT_WHERE.get(str(f.get('hub_mqtt')), 'in a thread')})"
        f"{'; the hub pinned to a CPU of its own' if f['pinned'] else ''}"
        f"{f'; a busy loop taking {busy:.0%} of a core alongside' if (busy := f.get('busy')) else ''}",
        f"  sent               {f['sent']} messages: {f['valid']} events, {f['dup']} sent twice, "
        f"{f['bad']} malformed; at {f['send_rate']:.0f}/s (publishers at most "
        f"{f['publisher_max_behind_ms']:.1f} ms behind schedule)",
        f"  bare client        {f['bare_rate']:8.0f} events/s   publish -> received      {lat(b)}",
        f"  hub stored         {f['stored_rate']:8.0f} events/s   publish -> stored (ack)  {lat(s)}",
        f"  stored / bare      {f['ratio'] * 100:8.1f} %   worst half second: {_worst(f)}",
        f"  hub applied        {f['applied_rate']:8.0f} events/s   (its accepted counter, counted after "
        "each commit; sampled every 50 ms once the devices stop)",
        f"  of which           publish -> hub received_at (DB, 1 ms resolution)  {lat(h)}",
        f"                     publish -> hub writes its batch (DB stored_at)     {lat(f['hub_write_lag'])}",
        f"                     hub received -> commit (its histogram): "
        f"p50 <= {_le(f['hub_ingest_lag_p50_le'])}, p99 <= {_le(f['hub_ingest_lag_p99_le'])}; "
        f"ingest queue at most {f['hub_max_queue']}; {f['ack_messages']} acks heard "
        f"({f['ack_messages'] / max(1, f['valid']):.2f} per event)",
        f"  hub accounted      {hub['accepted']} applied + {hub['duplicate']} duplicate + "
        f"{hub['rejected_event']} rejected = {accounted} of {f['sent']}; "
        f"rows: {rows['event']} event, {rows['dead_letter']} dead_letter",
        f"  CPU seconds        hub {cpu['hub'] + cpu['hub_mqtt']:.1f} "
        f"(its MQTT process {cpu['hub_mqtt']:.1f}), broker {cpu['broker']:.1f}, "
        f"publishers {cpu['publishers']:.1f}, bare client {cpu['bare']:.1f}, "
        f"other processes {max(0.0, cpu['others']):.1f}, over {cpu['wall']:.1f} s of wall time "
        f"({os.cpu_count()} cores; load average before the run {f['load_before']:.2f})",
    ]
    ratio_ok = f["ratio"] >= TARGET_RATIO
    p99_ok = s["p99"] < TARGET_P99_S
    note = "" if f["rate_target"] == TARGET_RATE else f" (the target is set at {TARGET_RATE:.0f} events/s)"
    lines.append(f"{'PASS' if ratio_ok else 'MISS'} stored rate >= {TARGET_RATIO:.0%} of the bare client's")
    lines.append(f"{'PASS' if p99_ok else 'MISS'} p99 publish -> stored < {TARGET_P99_S * 1000:.0f} ms{note}")
    if f["problems"]:
        lines.append("FAIL not every message is accounted for:")
        lines += [f"     {p}" for p in f["problems"]]
    else:
        lines.append("OK   every message accounted for (hub metrics, database rows, acks, bare client)")
    print("\n".join(lines))
    return not f["problems"]


def _worst(f: dict[str, Any]) -> str:
    rows = f["stored_latency_timeline"]
    if not rows:
        return "n/a"
    at, n, _p50, p99, top = max(rows, key=lambda r: r[3])
    worst = f"p99 {p99:.0f} ms, max {top:.0f} ms among the {n} events published {at:g} s in"
    stages = []
    labels = (("bare", "bare client"), ("hub_received", "hub received"), ("hub_written", "written"))
    for name, label in labels:
        row = next((r for r in f.get("stage_timelines", {}).get(name, []) if r[0] == at), None)
        if row is not None:
            stages.append(f"{label} p99 {row[3]:.0f}")
    return worst + (f" ({', '.join(stages)} ms)" if stages else "")


def _le(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "inf" if math.isinf(value) else f"{value * 1000:g} ms"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        figures = run(args)
    except Exception as exc:
        print(f"FAIL the benchmark could not run: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if report(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
