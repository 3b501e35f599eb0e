"""Alert benchmark: many rooms with open episodes whose observers leave one after another; how late
the hub raises each `supervision_lapse`, and how long until it reaches a live board.

Run from the repository root:

    .venv/bin/python -m bench.alerts [--rooms 2000] [--grace 10] [--stagger 20] [--database sqlite]

What runs, all on 127.0.0.1 and all stopped at the end (or on Ctrl-C):

- Mosquitto, with the shipped deploy/mosquitto/mosquitto.conf;
- the hub, as its own process (`seclusion-hub serve`), on a generated site of `--rooms` rooms, each
  with a door device (door, lock, occupancy) and a panel device (observer, check), `lapse_grace_s`
  set to `--grace`, heartbeats out of the way (`heartbeat_s: 3600`) and no recipients: only the live
  board and the rooms' indicators are told, the notifiers are not measured here;
- a staff token (`seclusion-hub token create`) for the API and the live stream (`GET /api/live`);
- in this process: a few MQTT v5 connections that publish, for every device, QoS 1 events (each
  connection carries many devices: the hub goes by the topic's device id); a reader of the live
  stream that notes when each `alert` event arrives; a bare paho client that publishes QoS 1 to a
  topic it is subscribed to on the same broker, the baseline of the machine's MQTT round trip.

The run: every room opens an episode (observer present, occupied, door closed) and the benchmark
waits until `GET /api/rooms` shows all of them open and supervised. Then each room's observer leaves
(`observer: absent`, `ts` = the moment of publishing, plus `--clock-offset-ms` for devices whose
clocks run ahead of the hub's), paced evenly over `--stagger` seconds, so the lapse deadlines
(`ts` + grace) are spread over as many seconds. It waits until every room's lapse
alert has come on the live stream (or `--timeout` seconds after the last deadline), then reads every
alert back through `GET /api/alerts`.

Figures: lateness = `raised_at` - `due_at`, the hub's own stamps (and `due_at` must be the absence's
`ts` + grace exactly); end to end = the alert's arrival on the live stream - (absence `ts` + grace),
both on this machine's wall clock; the bare round trip, measured while the deadlines fall due. Target
(issue): p99 lateness under 200 ms, and no alert missing. Exit status 1 if a room has no lapse alert
(in the API or on the live stream), has more than one, or has one with the wrong `due_at`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `python bench/alerts.py`
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from bench.ingest import (  # noqa: E402
    Run,
    Summary,
    _start_py_spy,
    cpu_seconds,
    machine,
    percentile,
    read_metrics,
    start_broker,
    system_busy_seconds,
)
from seclusion_contract import DEFAULT_ROOT, format_ts, parse_ts, stop_client  # noqa: E402

SITE = "bench"
KIND = "supervision_lapse"
TARGET_P99_S = 0.200
RTT_TOPIC = "bench/alerts/rtt"  # outside the hub's subscriptions


# --- the site ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Room:
    index: int
    id: str
    door: str
    panel: str


def make_rooms(n: int) -> list[Room]:
    width = max(4, len(str(n)))
    return [
        Room(i, f"room-{i + 1:0{width}d}", f"door-{i + 1:0{width}d}", f"panel-{i + 1:0{width}d}")
        for i in range(n)
    ]


def write_site(path: Path, rooms: list[Room], grace: float) -> None:
    """A site of two-device rooms (contract section 4), no recipients, heartbeats out of the way."""
    lines = [f"site: {SITE}", "timezone: Europe/London", "policy: england-schools-2026", "rooms:"]
    for room in rooms:
        lines += [
            f"  - id: {room.id}",
            f"    name: Bench room {room.id}",
            "    supervision: observer",
            "    devices:",
            f"      - id: {room.door}",
            "        sensors: [door, lock, occupancy]",
            "        lock_type: held",
            f"      - id: {room.panel}",
            "        sensors: [observer, check]",
            f"    policy_overrides: {{heartbeat_s: 3600, lapse_grace_s: {grace:g}}}",
        ]
    path.write_text("\n".join(lines) + "\n")


# --- MQTT: the devices, and the bare round trip --------------------------------------------------------


def _v5_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    return props


def _connect(client: paho.Client, port: int, seconds: float = 15.0) -> None:
    """Connect with a network thread of its own; return once the broker has accepted."""
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=60, properties=_v5_properties())
    client.loop_start()
    if not connected.wait(seconds) or refused:
        stop_client(client)
        raise RuntimeError(f"MQTT connect failed: {refused or 'no CONNACK'}")


class Devices:
    """Every device of the site, published through `clients` MQTT v5 connections (room i on i % clients,
    so each device's events keep their order). Events carry v, id, seq, epoch and ts (contract 2)."""

    def __init__(self, port: int, clients: int, epoch: int, clock_offset_ms: int = 0) -> None:
        self.epoch = epoch
        self.clock_offset_ms = clock_offset_ms
        self.lock = threading.Lock()
        self.sent = 0
        self.acked = 0
        self.seq: dict[str, int] = {}
        self.last_ms: dict[str, int] = {}
        self.lost: list[str] = []
        self.clients: list[paho.Client] = []
        for i in range(clients):
            client = paho.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id=f"bench-alerts-{i}",
                protocol=paho.MQTTv5,
            )
            client.max_inflight_messages_set(1000)
            client.max_queued_messages_set(0)
            client.on_publish = self._on_publish
            _connect(client, port)
            client.on_disconnect = self._on_disconnect
            self.clients.append(client)

    def _on_publish(self, _c: paho.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        with self.lock:
            self.acked += 1

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.lost.append(str(reason))

    def publish(self, room: Room, device: str, kind: str, value: str) -> int:
        """Publish one event now; its `ts` (epoch milliseconds, strictly increasing per device)."""
        seq = self.seq[device] = self.seq.get(device, 0) + 1
        now_ms = time.time_ns() // 1_000_000 + self.clock_offset_ms
        ts_ms = max(now_ms, self.last_ms.get(device, 0) + 1)
        self.last_ms[device] = ts_ms
        body = {
            "v": 1,
            "id": f"{device}:{self.epoch}:{seq}",
            "seq": seq,
            "epoch": self.epoch,
            "ts": format_ts(dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)),
            "kind": kind,
            "value": value,
        }
        topic = f"{DEFAULT_ROOT}/{SITE}/{room.id}/{device}/event"
        client = self.clients[room.index % len(self.clients)]
        info = client.publish(topic, json.dumps(body, separators=(",", ":")).encode(), qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"{device}: publish failed: {paho.error_string(info.rc)}")
        with self.lock:
            self.sent += 1
        return ts_ms

    def wait_acked(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if self.acked >= self.sent:
                    return
            time.sleep(0.02)
        raise TimeoutError(f"the broker acknowledged {self.acked} of {self.sent} publishes")

    def close(self) -> None:
        for client in self.clients:
            client.disconnect()
            stop_client(client)


class RoundTrip:
    """A bare paho client: publishes QoS 1 to a topic it is subscribed to; publish -> receive times."""

    def __init__(self, port: int) -> None:
        self.sent: dict[int, float] = {}
        self.received: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="bench-alerts-rtt",
            protocol=paho.MQTTv5,
        )
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        _connect(self.client, port)
        self.client.subscribe(RTT_TOPIC, qos=1)
        if not subscribed.wait(15):
            raise TimeoutError("the round-trip client's subscription was not acknowledged")

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        arrived = time.monotonic()
        with contextlib.suppress(ValueError):
            self.received.setdefault(int(msg.payload), arrived)

    def start(self, first: float, last: float, count: int) -> None:
        """Publish `count` messages evenly from `first` to `last` (time.time())."""

        def run() -> None:
            step = (last - first) / max(1, count - 1)
            for i in range(count):
                wait = first + i * step - time.time()
                if wait > 0 and self._stop.wait(wait):
                    return
                self.sent[i] = time.monotonic()
                self.client.publish(RTT_TOPIC, str(i).encode(), qos=1)

        self._thread = threading.Thread(target=run, name="bench-rtt", daemon=True)
        self._thread.start()

    def finish(self, seconds: float) -> None:
        """Wait for the last publish (it is due at `last` of `start`)."""
        if self._thread is not None:
            self._thread.join(seconds)

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        time.sleep(0.2)  # the last messages' way back
        self.client.disconnect()
        stop_client(self.client)

    def latencies(self) -> list[float]:
        return [self.received[i] - t for i, t in self.sent.items() if i in self.received]


# --- HTTP: the API and the live stream -----------------------------------------------------------------


def api_get(base: str, token: str, path: str, **params: str | int) -> Any:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310  (always http://127.0.0.1)
        return json.loads(resp.read())


def api_list(base: str, token: str, path: str, **params: str | int) -> list[dict[str, Any]]:
    """Every item of a paginated list (contract section 6: `items`, `next`, `limit`, `cursor`)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = dict(params, limit=1000)
        if cursor is not None:
            query["cursor"] = cursor
        page = api_get(base, token, path, **query)
        items.extend(page["items"])
        cursor = page["next"]
        if not cursor:
            return items


@dataclass
class Arrival:
    at: float  # time.time() when the event's line was read
    data: dict[str, Any]


class LiveReader:
    """`GET /api/live` on a thread: the first arrival of each `supervision_lapse` alert, by alert id.

    A stream that ends (a `reload`: it fell behind) is opened again and counted."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        self.lock = threading.Lock()
        self.arrivals: dict[str, Arrival] = {}
        self.rooms: set[str] = set()
        self.events = 0
        self.alert_events = 0
        self.reloads: list[str] = []
        self.errors: list[str] = []
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, name="bench-live", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        while not self._stop.is_set():
            try:
                with (
                    httpx.Client(timeout=httpx.Timeout(10.0, read=60.0)) as client,
                    client.stream("GET", f"{self.base}/api/live", headers=headers) as response,
                ):
                    response.raise_for_status()
                    self._response = response
                    self._read(response)
            except (httpx.HTTPError, ValueError) as exc:
                if self._stop.is_set():
                    return
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.2)

    def _read(self, response: httpx.Response) -> None:
        event = ""
        for line in response.iter_lines():
            now = time.time()
            if self._stop.is_set():
                return
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                self.events += 1
                if event == "hello":
                    self.connected.set()
                elif event == "reload":
                    self.reloads.append(line[5:].strip())
                elif event == "alert":
                    self.alert_events += 1
                    data = json.loads(line[5:])
                    if data.get("kind") == KIND and data.get("site") == SITE:
                        with self.lock:
                            if data["id"] not in self.arrivals:
                                self.arrivals[data["id"]] = Arrival(now, data)
                                self.rooms.add(data["room"])
            elif not line:
                event = ""

    def rooms_seen(self) -> int:
        with self.lock:
            return len(self.rooms)

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()
        self._thread.join(2)


# --- the hub -------------------------------------------------------------------------------------------


def create_token(workdir: Path, db_url: str, site_file: Path) -> str:
    """`seclusion-hub token create`: a staff token for the bench site, printed alone on stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECLUSION_")}
    env.update(SECLUSION_DATABASE_URL=db_url, SECLUSION_SITE_FILES=str(site_file))
    binary = Path(sys.executable).parent / "seclusion-hub"
    cmd = [str(binary)] if binary.exists() else [sys.executable, "-m", "seclusion_hub.cli"]
    cmd += ["token", "create", "--name", "bench-alerts", "--role", "staff", "--site", SITE]
    done = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"token create failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def log_problems(path: Path, limit: int = 8) -> tuple[int, list[str]]:
    """WARNING and ERROR lines of the hub's log: how many, and the first few."""
    if not path.exists():
        return 0, []
    found = [
        line
        for line in path.read_text(errors="replace").splitlines()
        if re.search(r" (WARNING|ERROR|CRITICAL) ", line)
    ]
    return len(found), [line[:300] for line in found[:limit]]


# --- figures -------------------------------------------------------------------------------------------


def _ms(text: str) -> int:
    """A contract timestamp as epoch milliseconds (exact: the format has milliseconds)."""
    when = parse_ts(text)
    return int((when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(milliseconds=1))


@dataclass
class Outcome:
    """Per room: what the API and the live stream showed of its lapse alert."""

    room: str
    absent_ms: int
    due_ms: int  # absent ts + grace: when the alert is due
    alerts: int = 0
    hub_due_ms: int | None = None
    raised_ms: int | None = None
    late: bool = False
    arrival: float | None = None  # on the live stream, time.time()


def summary(values: list[float]) -> dict[str, float]:
    s = Summary.of(values)
    return {"p50": s.p50, "p99": s.p99, "max": s.max, "n": float(s.n)}


def timeline(outcomes: list[Outcome], step_s: float = 1.0) -> list[list[float]]:
    """[seconds after the first deadline, alerts, lateness p99 ms, max ms, end-to-end p99 ms, max ms]
    per `step_s` of due time: a stall shows here."""
    raised = [o for o in outcomes if o.raised_ms is not None and o.hub_due_ms is not None]
    if not raised:
        return []
    first = min(o.due_ms for o in raised)
    windows: dict[int, list[Outcome]] = {}
    for o in raised:
        windows.setdefault(int((o.due_ms - first) / 1000 / step_s), []).append(o)
    rows: list[list[float]] = []
    for k in sorted(windows):
        late = sorted((o.raised_ms or 0) - (o.hub_due_ms or 0) for o in windows[k])
        e2e = sorted((o.arrival - o.due_ms / 1000) * 1000 for o in windows[k] if o.arrival is not None)
        rows.append(
            [
                round(k * step_s, 2),
                len(windows[k]),
                float(percentile([float(x) for x in late], 0.99)),
                float(late[-1]),
                round(percentile(e2e, 0.99), 1) if e2e else math.nan,
                round(e2e[-1], 1) if e2e else math.nan,
            ]
        )
    return rows


# --- the run -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.alerts", description=__doc__.split("\n\n")[0])
    p.add_argument("--rooms", type=int, default=2000, help="rooms, two devices each (2000)")
    p.add_argument("--grace", type=float, default=10.0, help="lapse_grace_s of every room (10)")
    p.add_argument("--stagger", type=float, default=20.0, help="seconds over which the observers leave (20)")
    p.add_argument(
        "--database",
        default="sqlite",
        help="sqlite (a new file), postgres (a throwaway server), or an SQLAlchemy URL (sqlite)",
    )
    p.add_argument(
        "--open-rate", type=float, default=1000.0, help="events/s while opening the episodes (1000)"
    )
    p.add_argument("--clients", type=int, default=4, help="MQTT connections that carry the devices (4)")
    p.add_argument(
        "--clock-offset-ms",
        type=int,
        default=0,
        help="the devices' clocks run this far ahead of the hub's (negative: behind); the hub corrects "
        "only offsets above max_clock_skew_s, 2 s (0)",
    )
    p.add_argument("--rtt-messages", type=int, default=200, help="bare round trips, over the deadlines (200)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait after the last deadline (30)")
    p.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        help="profile the hub with py-spy into this file while alerts fall due",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, database)")
    # What bench.ingest's Run needs to start the hub: as shipped.
    p.set_defaults(hub_protocol="5", ingest_batch=None, switch_interval=None)
    args = p.parse_args(argv)
    if args.rooms < 1 or args.grace <= 0 or args.stagger <= 0 or args.open_rate <= 0 or args.clients < 1:
        p.error("need --rooms >= 1, --grace > 0, --stagger > 0, --open-rate > 0 and --clients >= 1")
    if round(args.grace * 1000) != args.grace * 1000:
        p.error("--grace: at most millisecond precision (the contract's)")
    return args


@dataclass
class Phase:
    """CPU seconds of the parts over one stretch of the run."""

    hub: float = 0.0
    broker: float = 0.0
    bench: float = 0.0
    machine: float = 0.0
    wall: float = 0.0

    @classmethod
    def now(cls, hub: int, broker: int) -> Phase:
        return cls(
            cpu_seconds(hub), cpu_seconds(broker), time.process_time(), system_busy_seconds(), time.time()
        )

    def since(self, before: Phase) -> dict[str, float]:
        d = {k: getattr(self, k) - getattr(before, k) for k in ("hub", "broker", "bench", "machine", "wall")}
        d["others"] = max(0.0, d["machine"] - d["hub"] - d["broker"] - d["bench"])
        return d


@dataclass
class Progress:
    queue_max: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)


def _sleep_until(when: float) -> float:
    """Sleep until time.time() reaches `when`; how far behind it we then are (seconds, >= 0)."""
    while (wait := when - time.time()) > 0:
        time.sleep(min(wait, 0.05))
    return -wait


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    bench = Run(args)
    rooms = make_rooms(args.rooms)
    grace_ms = round(args.grace * 1000)
    try:
        site = bench.workdir / "site.yaml"
        write_site(site, rooms, args.grace)
        broker_proc, port, broker_stop = start_broker("deploy", bench.workdir / "broker")
        bench.on_close(broker_stop)
        db_url, epoch = bench.database()
        started = time.monotonic()
        base = bench.start_hub(port, db_url, site)
        assert bench.hub is not None
        hub_pid = bench.hub.pid
        hub_ready_s = time.monotonic() - started
        token = create_token(bench.workdir, db_url, site)

        devices = Devices(port, args.clients, epoch, args.clock_offset_ms)
        bench.on_close(devices.close)

        # 1. An open, supervised episode in every room.
        print(f"opening {len(rooms)} episodes ...", file=sys.stderr)
        opened_at = time.time()
        interval = 1.0 / args.open_rate
        n = 0
        for room in rooms:
            for device, kind, value in (
                (room.panel, "observer", "present"),
                (room.door, "occupancy", "occupied"),
                (room.door, "door", "closed"),
            ):
                _sleep_until(opened_at + n * interval)
                devices.publish(room, device, kind, value)
                n += 1
        devices.wait_acked(60)
        deadline = time.monotonic() + 120 + args.rooms / 50
        open_rooms = 0
        while True:
            listed = api_list(base, token, "/api/rooms")
            ours = [r for r in listed if r["site"] == SITE]
            open_rooms = sum(1 for r in ours if r["episode_id"] and r["supervised"] is True)
            if open_rooms == len(rooms):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {open_rooms} of {len(rooms)} rooms have an open, supervised episode"
                )
            time.sleep(1.0)
        episodes = {r["room"]: r["episode_id"] for r in ours}
        open_s = time.time() - opened_at
        time.sleep(1.0)  # let the episodes' own alerts (episode_started) and their records settle

        # 2. The live stream, and the bare round-trip client.
        live = LiveReader(base, token)
        bench.on_close(live.stop)
        if not live.connected.wait(15):
            raise TimeoutError(f"the live stream did not start: {live.errors}")
        rtt = RoundTrip(port)
        bench.on_close(rtt.stop)

        # 3. The observers leave, one room after another, over --stagger seconds.
        print(f"observers leave over {args.stagger:g} s ...", file=sys.stderr)
        spy: subprocess.Popen[bytes] | None = None
        if args.py_spy is not None:
            spy = _start_py_spy(args.py_spy, hub_pid, args.stagger + args.grace + 2)
        before = Phase.now(hub_pid, broker_proc.pid)
        t0 = time.time() + 0.2
        step = args.stagger / len(rooms)
        rtt.start(t0 + args.grace, t0 + args.grace + args.stagger, args.rtt_messages)
        absent: dict[str, int] = {}
        behind = 0.0
        progress = Progress()
        last_sample = time.monotonic()
        for room in rooms:
            behind = max(behind, _sleep_until(t0 + room.index * step))
            absent[room.id] = devices.publish(room, room.panel, "observer", "absent")
            if time.monotonic() - last_sample > 1.0:
                last_sample = _sample(base, progress, t0)
        published_s = time.time() - t0
        last_due = max(absent.values()) / 1000 + args.grace
        give_up = last_due + args.timeout
        print("waiting for the alerts ...", file=sys.stderr)
        while live.rooms_seen() < len(rooms) and time.time() < give_up:
            if time.monotonic() - last_sample > 1.0:
                last_sample = _sample(base, progress, t0)
            time.sleep(0.05)
        waited_all = live.rooms_seen() == len(rooms)
        after = Phase.now(hub_pid, broker_proc.pid)
        rtt.finish(max(0.0, t0 + args.grace + args.stagger - time.time()) + 1.0)
        rtt.stop()
        devices.wait_acked(30)
        time.sleep(0.5)  # an alert still on its way to the live stream
        live.stop()
        if spy is not None:
            spy.wait(60)

        # 4. Every alert, through the API.
        alerts = [
            a
            for a in api_list(base, token, "/api/alerts", state="all")
            if a["kind"] == KIND and a["site"] == SITE
        ]
        hub_problems, hub_log = log_problems(bench.workdir / "hub.log")
        metrics = read_metrics(base)

        outcomes = {r.id: Outcome(r.id, absent[r.id], absent[r.id] + grace_ms) for r in rooms}
        foreign = 0
        for a in sorted(alerts, key=lambda a: str(a["raised_at"])):
            o = outcomes.get(a["room"])
            if o is None or a["episode_id"] != episodes.get(a["room"]):
                foreign += 1
                continue
            o.alerts += 1
            if o.alerts > 1:
                continue
            o.hub_due_ms, o.raised_ms, o.late = _ms(a["due_at"]), _ms(a["raised_at"]), bool(a["late"])
            arrival = live.arrivals.get(a["id"])
            o.arrival = arrival.at if arrival is not None else None
        rows = list(outcomes.values())
        raised = [o for o in rows if o.raised_ms is not None and o.hub_due_ms is not None]
        lateness = [((o.raised_ms or 0) - (o.hub_due_ms or 0)) / 1000 for o in raised]
        e2e = [o.arrival - o.due_ms / 1000 for o in raised if o.arrival is not None]
        push = [o.arrival - (o.raised_ms or 0) / 1000 for o in raised if o.arrival is not None]
        missing = [o.room for o in rows if o.alerts == 0]
        not_live = [o.room for o in raised if o.arrival is None]
        duplicates = [o.room for o in rows if o.alerts > 1]
        mismatch = [o.room for o in raised if o.hub_due_ms != o.due_ms]

        # What the hub shows of a room that has no alert: its live state and its episode's timeline.
        evidence: dict[str, Any] = {}
        if missing:
            now_rooms = {r["room"]: r for r in api_list(base, token, "/api/rooms") if r["site"] == SITE}
            for name in missing[:3]:
                evidence[name] = {
                    "absent_ts": format_ts(dt.datetime.fromtimestamp(absent[name] / 1000, dt.UTC)),
                    "room": now_rooms.get(name),
                    "episode": api_get(base, token, f"/api/episodes/{episodes[name]}"),
                }

        problems: list[str] = []
        if missing:
            problems.append(f"{len(missing)} rooms have no {KIND} alert (first: {', '.join(missing[:5])})")
        if not_live:
            problems.append(
                f"{len(not_live)} alerts never came on the live stream (first: {', '.join(not_live[:5])})"
            )
        if duplicates:
            problems.append(
                f"{len(duplicates)} rooms have more than one (first: {', '.join(duplicates[:5])})"
            )
        if mismatch:
            problems.append(
                f"{len(mismatch)} alerts have a due_at other than the absence's ts + grace "
                f"(first: {', '.join(mismatch[:5])})"
            )
        if foreign:
            problems.append(f"{foreign} {KIND} alerts of episodes this run did not open")

        return {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "command": "python -m bench.alerts " + " ".join(sys.argv[1:]),
            "database": "postgresql" if db_url.startswith("postgres") else "sqlite",
            "rooms": len(rooms),
            "grace_s": args.grace,
            "stagger_s": args.stagger,
            "clock_offset_ms": args.clock_offset_ms,
            "hub_ready_s": hub_ready_s,
            "open_s": open_s,
            "open_events": n,
            "absences_s": published_s,
            "absences_max_behind_ms": behind * 1000,
            "all_seen_live": waited_all,
            "alerts": len(raised),
            "missing": len(missing),
            "not_live": len(not_live),
            "duplicates": len(duplicates),
            "due_mismatch": len(mismatch),
            "late_flagged": sum(1 for o in raised if o.late),
            "lateness": summary(lateness),
            "end_to_end": summary(e2e),
            "raised_to_live": summary(push),
            "bare_rtt": summary(rtt.latencies()),
            "bare_rtt_sent": len(rtt.sent),
            "bare_rtt_received": len(rtt.received),
            "timeline": timeline(rows),
            "live_events": live.events,
            "live_alert_events": live.alert_events,
            "live_reloads": live.reloads,
            "live_errors": live.errors[:5],
            "hub_queue_max": progress.queue_max,
            "hub_queue": progress.samples,
            "hub_internal_errors": int(metrics.get("seclusion_internal_errors_total", 0)),
            "hub_write_failures": int(metrics.get("seclusion_store_write_failures_total", 0)),
            "hub_log_problems": hub_problems,
            "hub_log": hub_log,
            "mqtt_disconnects": devices.lost,
            "missing_evidence": evidence,
            "cpu_s": after.since(before),
            "load_before": load_before,
            "problems": problems,
        }
    finally:
        bench.close()


def _sample(base: str, progress: Progress, t0: float) -> float:
    """The hub's ingest queue, from its metrics (cheap: no lock the ingest thread needs)."""
    with contextlib.suppress(OSError, ValueError):
        queue = int(read_metrics(base).get("seclusion_ingest_queue", 0))
        progress.queue_max = max(progress.queue_max, queue)
        progress.samples.append((round(time.time() - t0, 1), queue))
    return time.monotonic()


def report(f: dict[str, Any]) -> bool:
    """Print the table; True if every room has exactly one lapse alert, on time or not, everywhere."""

    def lat(x: dict[str, float]) -> str:
        if not x["n"]:
            return "n/a"
        return Summary(x["p50"], x["p99"], x["max"], int(x["n"])).ms()

    cpu = f["cpu_s"]
    worst = max(f["timeline"], key=lambda r: r[2], default=None)
    rate = f["rooms"] / f["stagger_s"]
    lines = [
        f"alert benchmark, {f['date']}, {f['machine']}",
        f"  site               {f['rooms']} rooms ({2 * f['rooms']} devices), "
        f"lapse grace {f['grace_s']:g} s, "
        f"observers leave over {f['stagger_s']:g} s ({rate:.0f} rooms/s); {f['database']}; "
        "shipped mosquitto.conf"
        + (f"; device clocks {f['clock_offset_ms']:+d} ms" if f["clock_offset_ms"] else ""),
        f"  episodes           {f['rooms']} open and supervised {f['open_s']:.1f} s after the first of "
        f"{f['open_events']} events (hub ready in {f['hub_ready_s']:.1f} s)",
        f"  absences           published over {f['absences_s']:.1f} s, at most "
        f"{f['absences_max_behind_ms']:.1f} ms behind schedule",
        f"  alerts             {f['alerts']} {KIND} of {f['rooms']} rooms: {f['missing']} missing, "
        f"{f['duplicates']} duplicated, {f['not_live']} not on the live stream, {f['due_mismatch']} with "
        f"due_at != ts + grace, {f['late_flagged']} flagged late",
        f"  lateness           raised_at - due_at (the hub's stamps)    {lat(f['lateness'])}",
        f"  end to end         due -> alert on the live stream          {lat(f['end_to_end'])}",
        f"    of which         raised_at -> alert on the live stream    {lat(f['raised_to_live'])}",
        f"  bare MQTT          QoS 1 publish -> receive, same broker    {lat(f['bare_rtt'])}"
        f"   ({f['bare_rtt_received']} of {f['bare_rtt_sent']}, while the deadlines fall due)",
    ]
    if worst is not None:
        lines.append(
            f"  worst second       {worst[1]} alerts due {worst[0]:g} s after the first deadline: lateness "
            f"p99 {worst[2]:.0f} ms, max {worst[3]:.0f} ms"
        )
    lines += [
        f"  hub                ingest queue at most {f['hub_queue_max']} (sampled every second); "
        f"{f['hub_log_problems']} warnings/errors in its log; internal errors {f['hub_internal_errors']}, "
        f"write failures {f['hub_write_failures']}; live stream: {f['live_events']} events, "
        f"{len(f['live_reloads'])} reloads",
        f"  CPU seconds        hub {cpu['hub']:.1f}, broker {cpu['broker']:.1f}, this process "
        f"{cpu['bench']:.1f}, other processes {cpu['others']:.1f}, over {cpu['wall']:.1f} s of wall time "
        f"({os.cpu_count()} cores; load average before the run {f['load_before']:.2f})",
    ]
    lines += [f"     hub log: {line}" for line in f["hub_log"]]
    for name, ev in f["missing_evidence"].items():
        room, ep = ev["room"] or {}, ev["episode"]
        lines.append(
            f"  no alert: {name}: observer absent at {ev['absent_ts']}; "
            f"now observer {room.get('observer')}, "
            f"supervised {room.get('supervised')}; episode unsupervised_s {ep.get('unsupervised_s')}, "
            f"lapses {ep.get('lapses')}"
        )
        events = [item for item in ep.get("timeline", []) if item.get("type") == "event"]
        lines += [f"     last event: {json.dumps(item, separators=(',', ':'))}" for item in events[-1:]]
    p99_ok = f["lateness"]["n"] > 0 and f["lateness"]["p99"] < TARGET_P99_S
    none_missing = f["missing"] == 0 and f["not_live"] == 0
    lines.append(f"{'PASS' if p99_ok else 'MISS'} p99 lateness < {TARGET_P99_S * 1000:.0f} ms")
    lines.append(f"{'PASS' if none_missing else 'MISS'} no alert missing (API and live stream)")
    if f["problems"]:
        lines.append("FAIL")
        lines += [f"     {p}" for p in f["problems"]]
    print("\n".join(lines))
    return not f["problems"]


def _interrupted(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # stop what was started, as on Ctrl-C
    try:
        figures = run(args)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"FAIL the benchmark could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0 if report(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
