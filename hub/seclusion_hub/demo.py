"""`seclusion demo`: the whole system on one machine, with nothing else installed (contract section 5).

It starts a broker (the system's Mosquitto when there is one, otherwise amqtt inside this process),
the hub on 127.0.0.1, and three calm rooms whose six edge agents run on gpiozero's mock pins, then
plays three scripted scenarios on those pins, in a loop, in real time:

- calm-1, a short supervised episode: observer at the panel, a child in, door closed, door opened;
- calm-2, a re-closed door: opened for a moment within the re-close grace and closed again (one
  episode, two segments);
- calm-3, a room left alone: door closed on an occupied room with nobody at the panel.

Everything it starts it stops again on Ctrl-C, SIGTERM or the end of `--duration`. No personal data is
made up or shown: the scenarios speak of "a child" and "a member of staff", nothing more.

    seclusion demo [--http-port 8000] [--broker auto|mosquitto|embedded] [--duration SECONDS]
                   [--workdir DIR] [--speed FACTOR] [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import importlib.resources
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from seclusion_contract import DEFAULT_ROOT, Kind

from . import __version__
from .errors import SeclusionError

if TYPE_CHECKING:
    from seclusion_edge import EdgeAgent

    from .runtime import Hub

log = logging.getLogger("seclusion_hub.demo")

SITE = "demo-school"
ROOMS = ("calm-1", "calm-2", "calm-3")
HUB_USER = "seclusion-hub"
MOSQUITTO_FALLBACK = Path("/usr/sbin/mosquitto")
PR_SET_PDEATHSIG = 1  # linux/prctl.h

MIN_STEP_S = 1.0
"""No two scripted steps closer than this, whatever `--speed`: above the longest settle time (500 ms,
occupancy and observer), so each reading is reported as its own event, in the scripted order."""

PRESS_S = 0.2
"""How long the check-in button is held down (its settle time is 30 ms)."""

REST_GAP_S = 0.3
"""When the demo stops, between opening a door and emptying its room: the two must not share a `ts`."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

BrokerChoice = Literal["auto", "mosquitto", "embedded"]
MqttProtocol = Literal["5", "3.1.1"]
DeviceRole = Literal["door", "panel"]
ROLES: tuple[DeviceRole, ...] = ("door", "panel")


class DemoError(SeclusionError, RuntimeError):
    """The demo cannot run as asked (no broker, a port in use, a part that did not start)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------------------- devices

# The wiring of firmware-config/calm-1-door.yaml and calm-1-panel.yaml: each agent has its own
# MockFactory, so every room's devices use the same pin numbers as the real ones would.
DOOR_SENSORS: tuple[dict[str, Any], ...] = (
    {"kind": "door", "pin": 17, "pull": "up", "active": "low", "active_value": "closed"},
    {"kind": "lock", "pin": 27, "pull": "up", "active": "low", "active_value": "engaged"},
    {
        "kind": "occupancy",
        "pin": 22,
        "pull": "down",
        "active": "high",
        "active_value": "occupied",
        "settle_ms": 500,
    },
)
PANEL_SENSORS: tuple[dict[str, Any], ...] = (
    {
        "kind": "observer",
        "pin": 5,
        "pull": "down",
        "active": "high",
        "active_value": "present",
        "settle_ms": 500,
    },
    {"kind": "check", "pin": 6, "pull": "up", "active": "low", "settle_ms": 30},
)


def device_id(room: str, role: DeviceRole) -> str:
    """`calm-1-door`, `calm-1-panel`: the ids demo_site.yaml declares."""
    return f"{room}-{role}"


def all_devices() -> list[str]:
    """Every device of the demo site, door before panel, room by room."""
    return [device_id(room, role) for room in ROOMS for role in ROLES]


def edge_config_data(
    room: str, role: DeviceRole, mqtt_url: str, protocol: MqttProtocol, state_dir: Path
) -> dict[str, Any]:
    """A device file, as `EdgeConfig.model_validate` takes it, for one of the demo's devices."""
    return {
        "site": SITE,
        "room": room,
        "device": device_id(room, role),
        "mqtt": {"url": mqtt_url, "root": DEFAULT_ROOT, "protocol": protocol, "keepalive_s": 30},
        "state_dir": str(state_dir),
        "settle_ms": 100,
        "heartbeat_s": 10,
        "sensors": [dict(s) for s in (DOOR_SENSORS if role == "door" else PANEL_SENSORS)],
    }


def drive(agent: EdgeAgent, kind: Kind, value: str, wait: Callable[[float], object] = time.sleep) -> None:
    """Set the agent's mock pin so that its `kind` sensor reads `value`, whatever the wiring.

    A check-in (`check`, `ok`) is a press: held for PRESS_S, then released (a release reports nothing).
    """
    agent.simulate(kind, value)
    if kind == "check":
        try:
            wait(PRESS_S)
        finally:
            agent.set_contact("check", False)


# ------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Step:
    """One scripted change in a room: `after_s` (at speed 1) after the previous step."""

    after_s: float
    device: DeviceRole
    kind: Kind
    value: str
    say: str


@dataclass(frozen=True)
class Scenario:
    """A room's script, played in a loop: first `start_after_s`, then its steps, then `rest_s` of quiet."""

    room: str
    title: str
    steps: tuple[Step, ...]
    start_after_s: float = 0.0
    rest_s: float = 20.0

    def cycle_s(self, speed: float = 1.0) -> float:
        """How long one cycle takes at this speed (steps and rest)."""
        return sum(scaled(s.after_s, speed) for s in self.steps) + scaled(self.rest_s, speed)


def scaled(seconds: float, speed: float) -> float:
    """A scripted wait at `speed`, never shorter than MIN_STEP_S (a zero wait stays zero)."""
    if seconds <= 0:
        return 0.0
    return max(seconds / speed, MIN_STEP_S)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        room="calm-1",
        title="a short supervised episode",
        steps=(
            Step(0, "panel", "observer", "present", "a member of staff is at the viewing panel"),
            Step(2, "door", "occupancy", "occupied", "a child is in the room; the door is open"),
            Step(3, "door", "door", "closed", "door closed with a child inside; observer at the panel"),
            Step(15, "panel", "check", "ok", "staff check-in recorded at the panel"),
            Step(15, "door", "door", "open", "door opened; the child is free to leave"),
            Step(
                3, "door", "occupancy", "vacant", "room empty: the episode ends at the moment the door opened"
            ),
            Step(2, "panel", "observer", "absent", "the member of staff leaves the panel"),
        ),
        start_after_s=0,
        rest_s=20,
    ),
    Scenario(
        room="calm-2",
        title="a door re-closed within the grace",
        steps=(
            Step(0, "panel", "observer", "present", "a member of staff is at the viewing panel"),
            Step(2, "door", "occupancy", "occupied", "a child is in the room; the door is open"),
            Step(3, "door", "door", "closed", "door closed with a child inside; observer at the panel"),
            Step(20, "door", "door", "open", "door opened for a moment; the child is still inside"),
            Step(
                5,
                "door",
                "door",
                "closed",
                "door closed again within the re-close grace: the same episode, a second segment",
            ),
            Step(20, "door", "door", "open", "door opened; the child is free to leave"),
            Step(
                3, "door", "occupancy", "vacant", "room empty: the episode ends at the moment the door opened"
            ),
            Step(2, "panel", "observer", "absent", "the member of staff leaves the panel"),
        ),
        start_after_s=5,
        rest_s=20,
    ),
    Scenario(
        room="calm-3",
        title="a room left alone",
        steps=(
            Step(
                0, "door", "occupancy", "occupied", "a child is in the room; nobody is at the viewing panel"
            ),
            Step(
                3,
                "door",
                "door",
                "closed",
                "door closed with a child inside and nobody at the viewing panel: "
                "the time counts as unsupervised",
            ),
            Step(45, "door", "door", "open", "door opened; the child is free to leave"),
            Step(
                3,
                "door",
                "occupancy",
                "vacant",
                "room empty: the episode ends, its unsupervised time recorded",
            ),
        ),
        start_after_s=10,
        rest_s=20,
    ),
)

# At rest a room's door is open (first), then nobody is inside and nobody is at the panel.
REST: tuple[tuple[DeviceRole, Kind, str], ...] = (
    ("door", "lock", "released"),
    ("door", "occupancy", "vacant"),
    ("panel", "observer", "absent"),
)


@dataclass
class DemoRoom:
    """A room's two agents, driven by its scenario on a thread of its own."""

    scenario: Scenario
    agents: dict[DeviceRole, EdgeAgent]
    speed: float
    stop: threading.Event
    report: Callable[[str, dt.datetime], str | None] = lambda _room, _since: None
    cycles: int = 0
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def room(self) -> str:
        return self.scenario.room

    def apply(self, step: Step) -> None:
        drive(self.agents[step.device], step.kind, step.value, self.stop.wait)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"demo-{self.room}", daemon=True)
        self.thread.start()

    def join(self, timeout_s: float = 5.0) -> None:
        if self.thread is not None:
            self.thread.join(timeout_s)
            self.thread = None

    def rest(self) -> None:
        """Open the door, then empty the room and the panel, so that no episode is left open.

        The `vacant` reading must be timed after the opening to end the episode at once (semantics
        2.4); one timed with it would leave the episode waiting out the re-close grace.
        """
        drive(self.agents["door"], "door", "open")
        time.sleep(REST_GAP_S)
        for role, kind, value in REST:
            drive(self.agents[role], kind, value)

    def _run(self) -> None:
        try:
            self._play()
        except Exception:
            log.exception("%s: the scenario stopped on an error", self.room)

    def _play(self) -> None:
        if self.stop.wait(scaled(self.scenario.start_after_s, self.speed)):
            return
        while not self.stop.is_set():
            self.cycles += 1
            began = dt.datetime.now(dt.UTC)
            log.info("%s: %s (cycle %d)", self.room, self.scenario.title, self.cycles)
            for step in self.scenario.steps:
                if self.stop.wait(scaled(step.after_s, self.speed)):
                    return
                self.apply(step)
                log.info("%s: %s", self.room, step.say)
            # Give the last reading time to settle and the hub time to store it, then say what it recorded.
            rest = scaled(self.scenario.rest_s, self.speed)
            pause = min(2.0, rest)
            if self.stop.wait(pause):
                return
            summary = self.report(self.room, began)
            if summary:
                log.info("%s: %s", self.room, summary)
            if self.stop.wait(rest - pause):
                return


# ---------------------------------------------------------------------------------------- brokers


@dataclass
class RunningBroker:
    """The broker the demo started: how each user reaches it, and how to stop it."""

    kind: Literal["mosquitto", "embedded"]
    description: str
    protocol: MqttProtocol
    url_for: Callable[[str], str]
    redacted: str
    stop: Callable[[], None]
    alive: Callable[[], bool]


def find_mosquitto() -> str | None:
    """The system's `mosquitto`: on the PATH, or /usr/sbin (not on a normal user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if MOSQUITTO_FALLBACK.is_file() and os.access(MOSQUITTO_FALLBACK, os.X_OK):
        return str(MOSQUITTO_FALLBACK)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a listener could bind `host:port` now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_port(port: int, seconds: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """True once something accepts connections on 127.0.0.1:port; False after `seconds` or on death."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and alive():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


def mosquitto_conf(port: int, data_dir: Path) -> str:
    """The demo's Mosquitto configuration: loopback only, and no QoS 1 message dropped or lost.

    As deploy/mosquitto/mosquitto.conf: the database saved every second (the default saves every
    30 min; 0 would turn autosaving off; saving after every change, with autosave_on_changes, rewrites
    the whole file per message, which at 2,000 events/s starved the hub's acks in bench/ingest.py). A
    broker crash loses at most a second of broker state and no event, since each agent keeps an event
    in its outbox until the hub's ack covers it and re-sends it after reconnecting. No cap on queued
    or in-flight messages (the default 1000 drops QoS 1 messages to a slow subscriber without a word).
    Every packet sent at once (`set_tcp_nodelay`: with Nagle's algorithm on, an ack or an indicator can
    wait up to 40 ms for the client's delayed acknowledgement of the packet before). Anonymous clients
    are allowed because the listener is on 127.0.0.1 only; `user` keeps the demo's own user, so that
    the broker may write its files in the demo's private working directory when the demo runs as root.
    """
    return (
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
        "persistence true\n"
        f"persistence_location {data_dir}/\n"
        "autosave_interval 1\n"
        "autosave_on_changes false\n"
        "max_queued_messages 0\n"
        "max_inflight_messages 0\n"
        "persistent_client_expiration 1d\n"
        "set_tcp_nodelay true\n"
    )


def mosquitto_version(binary: str) -> str:
    """`2.0.11`, from `mosquitto -h`; empty when it cannot be told."""
    try:
        done = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5, check=False)  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return ""
    for word in (done.stdout + done.stderr).split():
        if word[:1].isdigit() and "." in word:
            return word
    return ""


def start_mosquitto(binary: str, workdir: Path) -> RunningBroker:
    """Mosquitto on a free loopback port with a generated configuration, its log in the workdir."""
    folder = workdir / "mosquitto"
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port, data), encoding="utf-8")
    with open(folder / "mosquitto.log", "ab") as out:
        # A session of its own: Ctrl-C in a terminal signals the whole foreground process group, and the
        # broker must outlive the demo's own shutdown (the agents' last events and farewells go through it).
        proc = subprocess.Popen(  # noqa: S603
            [binary, "-c", str(conf)],
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # started before the demo has any other thread
        )
    if not wait_port(port, 10, lambda: proc.poll() is None):
        _end_process(proc)
        raise DemoError(f"Mosquitto ({binary}) did not start; see {folder / 'mosquitto.log'}")

    def stop() -> None:
        _end_process(proc)
        log.info("Mosquitto stopped")

    version = mosquitto_version(binary)
    url = f"mqtt://127.0.0.1:{port}"
    return RunningBroker(
        kind="mosquitto",
        description=f"Mosquitto {version} ({binary}), MQTT v5".replace("  ", " "),
        protocol="5",
        url_for=lambda _user: url,
        redacted=url,
        stop=stop,
        alive=lambda: proc.poll() is None,
    )


def _die_with_parent() -> None:
    """In the broker's process, before exec: SIGTERM when the demo dies (Linux), even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _end_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_embedded(workdir: Path, users: Sequence[str]) -> RunningBroker:
    """amqtt in this process, with password authentication; its clients speak MQTT 3.1.1."""
    from .embedded_broker import EmbeddedBroker, EmbeddedBrokerError, amqtt_version

    broker = EmbeddedBroker(workdir / "amqtt", users)
    try:
        address = broker.start()
    except EmbeddedBrokerError as exc:
        raise DemoError(str(exc)) from exc

    def stop() -> None:
        broker.stop()
        log.info("embedded broker stopped")

    return RunningBroker(
        kind="embedded",
        description=f"embedded amqtt {amqtt_version()} (in this process), MQTT 3.1.1, password auth",
        protocol="3.1.1",
        url_for=address.url,
        redacted=address.redacted(),
        stop=stop,
        alive=lambda: broker.running,
    )


def start_broker(choice: BrokerChoice, workdir: Path) -> RunningBroker:
    """`auto`: Mosquitto when installed, else the embedded broker; or exactly the one asked for."""
    binary = find_mosquitto() if choice in ("auto", "mosquitto") else None
    if choice == "mosquitto" and binary is None:
        raise DemoError(
            "--broker mosquitto: no `mosquitto` on the PATH or in /usr/sbin "
            "(apt-get install mosquitto, or use --broker embedded)",
            EXIT_USAGE,
        )
    if binary is not None:
        return start_mosquitto(binary, workdir)
    return start_embedded(workdir, [HUB_USER, *all_devices()])


# --------------------------------------------------------------------------------------- the demo


@dataclass(frozen=True)
class DemoOptions:
    """The command line, checked."""

    http_port: int = 8000
    broker: BrokerChoice = "auto"
    duration_s: float = 0.0
    workdir: Path | None = None
    speed: float = 1.0
    verbose: bool = False


def _site_file(workdir: Path) -> Path:
    # A copy in the workdir: the hub reads site files by path, and a package may live in a zip.
    source = importlib.resources.files("seclusion_hub") / "demo_site.yaml"
    target = workdir / "demo_site.yaml"
    target.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    return target


def _write_private(path: Path, text: str) -> None:
    path.touch()
    path.chmod(0o600)
    path.write_text(text, encoding="utf-8")


def start_hub(
    options: DemoOptions, workdir: Path, broker: RunningBroker, port: int
) -> tuple[Hub, str, Callable[[], None]]:
    """The hub on 127.0.0.1:port, its database in the workdir; returns it, an admin token and its stop."""
    from .auth import create_token
    from .config import HubSettings
    from .runtime import Hub

    settings = HubSettings(
        _env_file=None,  # the demo's settings are all here; a stray .env must not redirect it
        mqtt_url=broker.url_for(HUB_USER),
        mqtt_root=DEFAULT_ROOT,
        mqtt_client_id="seclusion-hub-demo",
        database_url=f"sqlite:///{workdir / 'hub.db'}",
        site_files=str(_site_file(workdir)),
        http_host="127.0.0.1",
        http_port=port,
        public_url=f"http://127.0.0.1:{port}",
    )
    hub = Hub.build(settings, protocol=broker.protocol)
    # The demo's one user may do every step of a record, withholding a parents' copy (a DSL's) included.
    token = create_token(hub.store, "demo-admin", "admin", [], True, hub.service.clock.now())
    _write_private(workdir / "token", token + "\n")
    seed_register(hub)
    server, thread = hub.serve_in_thread()

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        hub.stop()
        log.info("hub stopped")

    deadline = time.monotonic() + 15
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        stop()
        raise DemoError(f"the hub's HTTP server did not start on 127.0.0.1:{port}")
    if not hub.mqtt.backlog_done.wait(max(deadline - time.monotonic(), 1.0)):
        stop()
        raise DemoError(f"the hub could not connect and subscribe to the broker at {broker.redacted}")
    return hub, token, stop


# A made-up register so that a record can be completed in the demo; no real child is named anywhere.
DEMO_REGISTER = (
    ("D001", "Alex", "Example", "2016-03-14", "Year 5", "sen_support"),
    ("D002", "Sam", "Sample", "2017-09-02", "Year 4", "ehcp"),
    ("D003", "Robin", "Demo", "2015-11-20", "Year 6", "none"),
)


def seed_register(hub: Hub) -> None:
    """Put the made-up register on the demo site once (a kept workdir keeps it)."""
    from .models import AuditEntry, Pupil
    from .record_store import RecordStore

    records = RecordStore(hub.store.engine)
    if records.pupils(None, SITE):
        return
    now = hub.service.clock.now()
    pupils = [
        Pupil(
            id=f"demo-pupil-{ref.lower()}",
            site=SITE,
            reference=ref,
            first_name=first,
            last_name=last,
            date_of_birth=dt.date.fromisoformat(born),
            year_group=year,
            sen=sen,
            created_at=now,
            updated_at=now,
        )
        for ref, first, last, born, year, sen in DEMO_REGISTER
    ]
    entry = AuditEntry(
        at=now, actor="seclusion demo", action="import_pupils", target_type="pupils", target_id=SITE
    )
    records.save_pupils(pupils, entry)


def start_agents(workdir: Path, broker: RunningBroker) -> tuple[dict[str, EdgeAgent], Callable[[], None]]:
    """The six agents, each on its own MockFactory, their outboxes under workdir/edge/."""
    from gpiozero.pins.mock import MockFactory

    from seclusion_edge import EdgeAgent, EdgeConfig, EdgeError

    run_id = os.urandom(4).hex()
    agents: dict[str, EdgeAgent] = {}
    factories: list[Any] = []

    def stop() -> None:
        for agent in agents.values():
            try:
                agent.stop()
            except Exception:
                log.exception("agent %s did not stop cleanly", agent.config.device)
        for factory in factories:
            factory.close()
        log.info("edge agents stopped")

    try:
        for room in ROOMS:
            for role in ROLES:
                device = device_id(room, role)
                data = edge_config_data(
                    room, role, broker.url_for(device), broker.protocol, workdir / "edge" / device
                )
                config = EdgeConfig.model_validate(data)
                factory = MockFactory()
                factories.append(factory)
                # A boot id per device and run, as six separate Raspberry Pis would have.
                agent = EdgeAgent(config, pin_factory=factory, boot_id=f"demo-{run_id}-{device}")
                agents[device] = agent.start()
    except EdgeError as exc:
        stop()
        raise DemoError(f"an edge agent did not start: {exc}") from exc
    except BaseException:
        stop()
        raise
    return agents, stop


def wait_for_agents(agents: dict[str, EdgeAgent], seconds: float = 20.0) -> bool:
    """True once every agent is connected, its start-up readings settled and stored by the hub."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready = True
        for agent in agents.values():
            kinds = {k for k in agent.sensor_kinds if k != "check"}
            if not agent.is_connected or set(agent.readings()) != kinds or agent.queued:
                ready = False
                break
        if ready:
            return True
        time.sleep(0.1)
    return False


def episode_report(hub: Hub) -> Callable[[str, dt.datetime], str | None]:
    """What the hub recorded for a room's latest episode, in one line with no personal data."""
    from .core.episode import Episode, account

    def report(room: str, since: dt.datetime) -> str | None:
        rows, _ = hub.store.list_episodes(None, SITE, room, None, 1, None)
        if not rows:
            return "the hub has recorded no episode yet"
        episode = hub.service.live_episode(rows[0].id) or Episode.model_validate_json(rows[0].data)
        if episode.started_at < since - dt.timedelta(seconds=5):
            return "the hub has not recorded this cycle's episode yet"
        now = hub.service.clock.now()
        acc = account(episode, now)
        state = "ended" if episode.ended_at is not None else "still open"
        segments = len(episode.segments)
        return (
            f"the hub recorded an episode ({state}) of {episode.elapsed_s(now):.1f} s in {segments} "
            f"segment{'s' if segments != 1 else ''}: supervised {acc.supervised_s:.1f} s, "
            f"unsupervised {acc.unsupervised_s:.1f} s, unknown {acc.unknown_s:.1f} s (episode {episode.id})"
        )

    def guarded(room: str, since: dt.datetime) -> str | None:
        try:
            return report(room, since)
        except Exception:
            log.exception("%s: could not read the episode back from the hub", room)
            return None

    return guarded


def banner(
    options: DemoOptions, port: int, token: str, broker: RunningBroker, workdir: Path, temporary: bool
) -> str:
    """What the demo prints once everything runs."""
    base = f"http://127.0.0.1:{port}"
    token_file = workdir / "token"
    kept = "removed when the demo stops" if temporary else "kept"
    speed = "" if options.speed == 1 else f" (scenarios at {options.speed:g}x speed)"
    until = f"for {options.duration_s:g} s" if options.duration_s else "until Ctrl-C"
    lines = [
        "",
        f"Seclusion demo {__version__} is running {until}{speed}.",
        f"  API:      {base}/api/rooms  (and {base}/api/episodes, ...; every endpoint in the docs below)",
        f"  API docs: {base}/docs",
        f"  Token:    {token}",
        f"            (role admin; also in {token_file})",
        f"  Board:    {base}/  (the live board: sign in there with the token above)",
        f"  Records:  {base}/records  (complete an episode's record; three made-up children on the register)",
        f"  Review:   {base}/review  (the leaders' figures, patterns and fairness between groups)",
        f"  Broker:   {broker.description} at {broker.redacted}",
        f"  Workdir:  {workdir} (database, device outboxes, broker files; {kept})",
        f'  Try:      curl -s -H "Authorization: Bearer $(cat {token_file})" {base}/api/rooms',
        f"  Rooms of site {SITE}:",
        *(f"    {s.room}: {s.title}, about {s.cycle_s(options.speed):.0f} s a cycle" for s in SCENARIOS),
        "",
    ]
    return "\n".join(lines) + "\n"


def run_demo(options: DemoOptions, out: Any = None) -> int:
    """Run the demo until Ctrl-C, SIGTERM or the end of `duration_s`; returns the exit status."""
    out = out or sys.stdout
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_stop_on_signals(stop))
        temporary = options.workdir is None
        if options.workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="seclusion-demo-"))
            stack.callback(shutil.rmtree, workdir, True)
        else:
            workdir = options.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        port = options.http_port or free_port()
        if not port_is_free(port):
            raise DemoError(
                f"--http-port {port}: 127.0.0.1:{port} is in use; choose another port", EXIT_USAGE
            )

        broker = start_broker(options.broker, workdir)
        stack.callback(_quietly, "the broker", broker.stop)
        log.info("broker: %s at %s", broker.description, broker.redacted)

        hub, token, stop_hub = start_hub(options, workdir, broker, port)
        stack.callback(_quietly, "the hub", stop_hub)
        log.info("hub: listening on http://127.0.0.1:%d", port)

        agents, stop_agents = start_agents(workdir, broker)
        stack.callback(_quietly, "the edge agents", stop_agents)
        if not wait_for_agents(agents):
            raise DemoError("the edge agents did not come online within 20 s")
        log.info("edge agents: %d online (%s)", len(agents), ", ".join(agents))

        rooms = [
            DemoRoom(
                scenario,
                {role: agents[device_id(scenario.room, role)] for role in ROLES},
                options.speed,
                stop,
                episode_report(hub),
            )
            for scenario in SCENARIOS
        ]
        stack.callback(_settle_rooms, rooms, agents, open_episodes(hub), stop, options.verbose)
        out.write(banner(options, port, token, broker, workdir, temporary))
        out.flush()
        for room in rooms:
            room.start()

        deadline = time.monotonic() + options.duration_s if options.duration_s else None
        while not stop.wait(0.25):
            if deadline is not None and time.monotonic() >= deadline:
                log.info("demo: --duration of %g s is over; stopping", options.duration_s)
                break
            if not broker.alive():
                raise DemoError("the broker stopped unexpectedly; stopping the demo")
        stop.set()
        log.info("demo: stopping")
    log.info("demo: stopped")
    return EXIT_OK


def open_episodes(hub: Hub) -> Callable[[], list[str]]:
    """The rooms in which the hub has an episode open right now."""

    def rooms() -> list[str]:
        with hub.service.lock:
            return sorted(room for (_site, room), m in hub.service.machines.items() if m.episode is not None)

    return rooms


def _settle_rooms(
    rooms: list[DemoRoom],
    agents: dict[str, EdgeAgent],
    still_open: Callable[[], list[str]],
    stop: threading.Event,
    verbose: bool,
) -> None:
    """Stop the scenarios and leave every room at rest, stored by the hub, before the agents stop."""
    stop.set()
    for room in rooms:
        room.join()
    for room in rooms:
        try:
            room.rest()
        except Exception:
            log.exception("%s: could not return the room to rest", room.room)
    time.sleep(0.7)  # past the longest settle time (500 ms), so the readings become events
    deadline = time.monotonic() + 5
    while (any(a.queued for a in agents.values()) or still_open()) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = still_open()
    if left:
        log.warning(
            "demo: an episode is still open in %s; the hub keeps it for the next run", ", ".join(left)
        )
    else:
        log.info("demo: doors opened and rooms left empty; no episode is open")
    if not verbose:
        # The stop is ours: each client's "disconnected" warning from here on says nothing new.
        for name in ("seclusion_edge", "seclusion_hub.mqtt"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _quietly(what: str, stop: Callable[[], None]) -> None:
    try:
        stop()
    except Exception:
        log.exception("%s did not stop cleanly", what)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (a second Ctrl-C interrupts at once); restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("demo: %s received; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------- command line


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError("a factor above 0, at most 1000")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("seconds, 0 or more (0: until Ctrl-C)")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a TCP port, 1 to 65535 (0: any free port)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seclusion", description="Seclusion-room monitoring.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run a broker, the hub and three simulated rooms on this machine",
        description="Run a broker, the hub and three simulated calm rooms (edge agents on mock pins "
        "playing scripted scenarios) on this machine, until Ctrl-C.",
    )
    demo.add_argument(
        "--http-port",
        type=_port,
        default=8000,
        help="the API's port on 127.0.0.1 (default 8000; 0: any free)",
    )
    demo.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "embedded"),
        default="auto",
        help="auto (default): the system's Mosquitto if installed, else the embedded amqtt broker",
    )
    demo.add_argument(
        "--duration",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="stop after this long (0, default: until Ctrl-C)",
    )
    demo.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the database, outboxes and broker files here "
        "(default: a temporary directory, removed at the end)",
    )
    demo.add_argument(
        "--speed",
        type=_positive,
        default=1.0,
        metavar="FACTOR",
        help="play the scenarios this many times faster (default 1: real time; steps stay 1 s apart or more)",
    )
    demo.add_argument("--verbose", action="store_true", help="show the hub's, agents' and broker's own logs")
    return parser


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(message)s"
        if not verbose
        else "%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    log.setLevel(logging.INFO)
    if not verbose:
        # amqtt logs every connection at INFO, and its state machine library every transition.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _missing_parts() -> list[str]:
    import importlib.util

    return [
        name for name in ("seclusion_edge", "gpiozero", "uvicorn") if importlib.util.find_spec(name) is None
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `seclusion` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    options = DemoOptions(
        http_port=args.http_port,
        broker=args.broker,
        duration_s=args.duration,
        workdir=args.workdir,
        speed=args.speed,
        verbose=args.verbose,
    )
    _configure_logging(options.verbose)
    missing = _missing_parts()
    if missing:
        sys.stderr.write(f"seclusion demo needs {', '.join(missing)}: pip install 'seclusion[demo]'\n")
        return EXIT_USAGE
    try:
        return run_demo(options)
    except DemoError as exc:
        sys.stderr.write(f"seclusion demo: {exc}\n")
        return exc.exit_code
    except SeclusionError as exc:  # a configuration error of the hub or an agent: a bug of the demo's
        sys.stderr.write(f"seclusion demo: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("seclusion demo: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
