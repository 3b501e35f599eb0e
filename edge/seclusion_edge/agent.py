"""The edge agent: sensors, debounce, outbox and broker link, wired together for one device.

How it runs:

- Pin edges (gpiozero's thread, or synchronously inside `MockPin.drive_low()` in tests) are recorded
  in the sensor's `Debouncer` with the clock's current instant. Nothing else happens on that thread.
- `tick()` does the work: it also polls each pin (a missed interrupt is caught within one tick), asks
  each debouncer for newly settled readings, numbers and stores them in the outbox, sends what the
  current connection has not carried yet, and sends the heartbeat when due. In production two small
  threads run it every `tick_interval_s`, one half each: the alarm's (settle, fail-safe, buzzer and
  LED) and the store's (number, send, heartbeat), so that a store write that waits (another process's
  lock, a card stalled in an fsync) never holds up the alarm. Tests build the agent with
  `tick_interval_s=None`, step a `FakeClock` and call `tick()` themselves (both halves, in turn).
- On every (re)connect, on the network thread: the retained online status, then every event still in
  the outbox, in `(epoch, seq)` order, before anything newer. New events always queue behind older
  ones, so the hub sees them strictly in order.
- The hub's retained `ack` removes the events it covers. An ack *above* anything this store has
  numbered means the store was lost or replaced (the hub would drop our low numbers as duplicates), so
  the agent moves to a new epoch and renumbers what is waiting.
- A new store (a fresh SD card, a lost store's replacement, `reset-epoch`) is *unconfirmed*: the hub may
  have this device's numbers from before it, even above what it has numbered itself, which no later ack
  could tell apart from its own. So it sends no event and no heartbeat until the connection has shown
  it the hub's retained ack, or that there is none: the agent subscribes to its own status too, and the
  broker's copy of the status it published after subscribing comes back after any retained message of
  that subscription. Any ack it receives meanwhile is about events it never sent; one that names its
  epoch or later moves it past it, renumbering what waits. Then the store is confirmed, for good, and
  the replay starts. If the status never comes back (a broker that withholds it) the agent goes ahead
  after `CONFIRM_TIMEOUT_S`, with a warning.
- The edge fail-safe (`seclusion_edge.failsafe`): the agent follows the room's last known state (its
  own readings, and the other devices' from the room's event topics) with the room's numbers from its
  `config` topic (kept in the state directory, so they survive a restart without a broker). Each tick
  decides what the buzzer and LED show: the room's `indicator` while the broker is connected and the
  hub's status is online, the local fail-safe's own timers otherwise. No network is needed for that.
- No SD card is needed for it either. A store that cannot be opened for now (a full or read-only card,
  a disk error, a lock) does not stop the start: the agent runs without it, settled readings waiting in
  memory as when the card fills while it runs, and tries to open it every `REOPEN_INTERVAL_S` from the
  tick. Meanwhile it reports only numbers it can read (`Outbox.open_readable`): with none, it publishes
  no status and no heartbeat (it would have to invent `epoch` and `last_seq`) and the local fail-safe
  drives the outputs, since the hub hears nothing of this device. Acks wait in memory for the store.

Start-up readings: each sensor's first settled reading is published only if it differs from the last
reading the outbox published for that kind (or there is none): the hub already knows an unchanged
reading, and a repeat would carry the agent's start time as if the door had just closed. A check
button reports only presses. Heartbeats carry every current reading either way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, get_args

from pydantic import ValidationError

from seclusion_contract import (
    AckPayload,
    ConfigPayload,
    ContractError,
    EventPayload,
    HeartbeatPayload,
    HubStatusPayload,
    IndicatorPayload,
    Kind,
    StatusPayload,
    Topics,
    dump_payload,
    payload_to_json,
)
from seclusion_edge.clock import Clock, Instant, SystemClock, read_boot_id
from seclusion_edge.config import EdgeConfig
from seclusion_edge.debounce import ContactWatch, Debouncer, Health, Settled
from seclusion_edge.errors import LinkError, OutboxError, OutboxUnavailable
from seclusion_edge.failsafe import NO_ALARM, QUIET, Alarm, FailSafe, LocalAlarm, choose_alarm, on_local_axis
from seclusion_edge.link import LinkSettings, Message, Publisher, PublisherFactory
from seclusion_edge.outbox import BUSY_TIMEOUT_S, EventKey, Outbox
from seclusion_edge.outputs import AlarmOutputs
from seclusion_edge.sensors import SensorInput

log = logging.getLogger(__name__)

DEFAULT_TICK_INTERVAL_S: Final = 0.02
# How long a new store waits on a connection for its own status to come back (normally milliseconds)
# before it sends its events without having seen what the hub has of this device.
CONFIRM_TIMEOUT_S: Final = 10.0
# How many events `_send_pending` reads from the outbox at a time.
SEND_BATCH: Final = 200
# How many of another device's latest heartbeats estimate its clock (the hub keeps six too).
PEER_CLOCK_SAMPLES: Final = 6
# How often the tick tries again to open a store that could not be opened (a full or read-only card).
REOPEN_INTERVAL_S: Final = 5.0
# How long paho's network thread waits for the send lock before it leaves what the link reported (a
# connect, a disconnect, an ack, this device's own status, the hub's config) to the store's thread: a
# write stalled on the SD card must not hold the link's thread too (its keepalive, the hub's indicators).
LINK_WAIT_S: Final = 0.25
# The room's numbers as the hub last sent them (the raw `config` payload), beside the outbox.
POLICY_FILE: Final = "failsafe-config.json"


# The readings that start or prolong what the room's timers count (an episode, a lapse): a contact
# sound again after a fault reports one of these from the earliest it can have begun, any other from
# the latest (`ContactWatch`), so that no episode and no lapse is under-counted.
TIMED_FROM_EARLIEST: Final = frozenset({"closed", "engaged", "occupied", "absent"})


# Every kind a contact can be (a fault kept in the store names one of them).
_CONTACT_KINDS: Final[tuple[Kind, ...]] = get_args(Kind)


def _epoch_ms(ts: dt.datetime) -> int:
    """An aware time as milliseconds since the Unix epoch."""
    return round(ts.timestamp() * 1000)


def fault_code(kind: str) -> str:
    """The `fault` event's value for a contact of that kind that fails (contract: `^[a-z0-9-]{1,64}$`)."""
    return f"{kind}-contact-unstable"


@dataclass(frozen=True, slots=True)
class FaultNote:
    """A `fault` event to number: a code (`fault_code`) or `ok`, and when it began; `contact`, the
    kind of the contact that fails (None for `ok`)."""

    value: str
    began: Instant
    contact: Kind | None = None


# What the alarm's tick hands to the store's: a sensor's settled reading, or a fault event.
Noted = tuple[Kind, Settled | FaultNote]


def agent_version() -> str:
    """The installed package's version, reported in the status message."""
    try:
        return importlib.metadata.version("seclusion")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class EdgeAgent:
    """One device's agent. Construct, `start()`, and `stop()` (or use it as a context manager).

    - `config`: the device file, from `load_config` or `EdgeConfig.model_validate`.
    - `pin_factory`: a gpiozero pin factory; None uses gpiozero's default (the Pi's GPIO). Give each
      in-process agent its own `MockFactory()` so that two devices may use the same pin numbers.
    - `clock`: a `Clock`; `SystemClock()` by default, a `FakeClock` in tests.
    - `publisher_factory`: builds the broker link; paho (`seclusion_edge.mqtt`) by default.
    - `tick_interval_s`: how often the ticker thread calls `tick()`; None starts no thread (the caller
      calls `tick()`, as tests stepping a fake clock do).
    - `boot_id`: overrides the kernel's boot id (for simulations of several devices in one process).

    The constructor only checks and remembers; pins, files and sockets are opened by `start()`.
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        pin_factory: Any | None = None,
        clock: Clock | None = None,
        publisher_factory: PublisherFactory | None = None,
        tick_interval_s: float | None = DEFAULT_TICK_INTERVAL_S,
        boot_id: str | None = None,
    ) -> None:
        if tick_interval_s is not None and tick_interval_s <= 0:
            raise ValueError("tick_interval_s must be positive, or None to tick by hand")
        self.config = config
        self.topics = Topics(config.mqtt.root)
        self._pin_factory = pin_factory
        self._clock: Clock = clock or SystemClock()
        self._publisher_factory = publisher_factory
        self._tick_interval_s = tick_interval_s
        self._boot_id = boot_id
        self._event_topic = self.topics.event(config.site, config.room, config.device)
        self._status_topic = self.topics.status(config.site, config.room, config.device)
        self._heartbeat_topic = self.topics.heartbeat(config.site, config.room, config.device)
        self._ack_topic = self.topics.ack(config.site, config.room, config.device)
        self._config_topic = self.topics.config(config.site, config.room, config.device)
        self._indicator_topic = self.topics.indicator(config.site, config.room)
        self._hub_status_topic = self.topics.hub_status
        self._room_events_topic = self.topics.room_events(config.site, config.room)
        self._room_heartbeats_topic = f"{self.topics.root}/{config.site}/{config.room}/+/heartbeat"
        self._room_prefix = f"{self.topics.root}/{config.site}/{config.room}/"

        # Pin edges and the ticker meet here; held only for in-memory debounce bookkeeping.
        self._sensor_lock = threading.Lock()
        # Orders everything that is sent: the on-connect replay (network thread) and the ticker's sends.
        self._send_lock = threading.RLock()
        # What the link reported, in order, waiting for the send lock (`_link_reported`): applied by
        # whichever thread holds it next, the network thread or the store's.
        self._link_events: list[tuple[str, Any]] = []
        self._link_events_lock = threading.Lock()
        self._sensors: dict[str, SensorInput] = {}
        self._debouncers: dict[Kind, Debouncer] = {}
        # Each contact's health (`ContactWatch`): a failing one is a `fault` event, its readings held back.
        self._watches: dict[Kind, ContactWatch] = {}
        # The contacts whose fault this device numbered and has not cleared (`ok`) since: kept in the
        # store with the events (`Outbox.failing_contacts`), so that each one failing at a stop starts
        # as failing after it, and must show it is sound before `ok`. Guarded by the send lock.
        self._failing: set[Kind] = set()
        self._first_reading_due: set[Kind] = set()
        # Settled readings not yet in the outbox (a failed write is retried next tick, in order).
        self._unrecorded: list[Noted] = []
        # True from a failed write to the outbox until one succeeds: logged once, not at every tick.
        self._store_failed = False
        # Settled readings waiting for another sensor's burst that began before them (`_in_order`), and
        # the reading of each kind last let through (to the fail-safe, and handed to the store).
        self._held: list[tuple[Kind, Settled]] = []
        self._let_through: dict[Kind, bool | None] = {}
        self._hold_limit_ms = 0
        # Each kind's reading as the outbox has numbered it (or found unchanged since the last run), on
        # the store's thread: the heartbeat's `state`, which must never show a reading the alarm's thread
        # has let through but the store not yet numbered (its `last_seq` would not count its event, and
        # the hub would take the difference for a lost event: semantics 4.2). Guarded by the send lock.
        self._numbered: dict[Kind, str] = {}
        # The store; a read-only view of it (`Outbox.open_readable`) or None while it cannot be opened,
        # tried again from the tick at `_next_open_ms`. The hub's latest ack waits for it meanwhile.
        self._outbox: Outbox | None = None
        self._next_open_ms = 0
        self._open_refused = False
        # When to try again to put back a store whose file was deleted (`_relink_store_if_lost`).
        self._next_relink_ms = 0
        self._relink_failed = False
        self._unapplied_ack: AckPayload | None = None
        # True while the current connection has had no status: its numbers were not known at connect.
        self._unannounced = False
        self._publisher: Publisher | None = None
        self._sent_upto: EventKey | None = None
        # True from a disconnect (and before the first connect) until `on_connected` has restarted the
        # replay from the outbox's oldest event: paho says "connected" a moment before it calls
        # `on_connected`, and a tick in between must not send newer events ahead of older ones the last
        # connection took but never delivered (the hub would drop those as duplicates).
        self._replay_due = True
        # The status published on the current connection, and when: a new store waits for the broker's
        # copy of it (see the module's docstring), or for CONFIRM_TIMEOUT_S from then.
        self._status_sent: bytes | None = None
        self._connected_ms: int | None = None
        # Each kind's last reading before this start, with when it began: for the fail-safe's timers.
        self._last_run: dict[str, tuple[str, Instant]] = {}
        self._heartbeat_ms = round(config.heartbeat_s * 1000)
        self._next_heartbeat_ms = 0
        self._last_heartbeat_ms: int | None = None
        self._started_ms = 0
        # The device's monotonic clock when the current (or next) connection was opened: with the boot
        # id, it names the connection in its status and its Last Will (`_will`).
        self._conn_ms = 0
        self._running = False
        self._stopping = False
        self._ticker: threading.Thread | None = None
        self._ticker_stop = threading.Event()
        # The store's own thread (with a ticker): numbering, sending and the heartbeat, so that a write
        # that waits (another process's lock, a card stalled in an fsync) never holds up the alarm.
        self._store_worker: threading.Thread | None = None
        self._store_wake = threading.Event()
        # Readings the alarm's tick settled, in order, for the store's tick to number.
        self._handoff_lock = threading.Lock()
        self._handoff: list[Noted] = []
        # The fail-safe is fed by the ticker (own readings) and the network thread (the room's).
        self._failsafe_lock = threading.Lock()
        self._failsafe = FailSafe()
        # Samples of each other device's clock (`_take_room_heartbeat`), guarded by the fail-safe lock.
        self._peer_clocks: dict[str, deque[int]] = {}
        self._outputs: AlarmOutputs | None = None
        self._policy_raw: bytes | None = None
        # True once the hub's status said online on the current connection; cleared by every connect
        # and disconnect, so a status from before an outage never hands the outputs back to the hub.
        self._hub_online = False
        self._local_alarm: LocalAlarm = NO_ALARM
        self._alarm: Alarm = QUIET
        self._output_failed = False

        self.policy: ConfigPayload | None = None
        """The hub's latest retained `config` for this device (policy numbers for the fail-safe)."""
        self.indicator: IndicatorPayload | None = None
        """The room's latest retained `indicator` (LED and buzzer level)."""
        self.hub_status: HubStatusPayload | None = None
        """The hub's latest retained status (online or its Last Will)."""
        self.ignored_room_events = 0
        """Events on the room's topics from other devices that did not follow the contract."""
        self.rejected_messages = 0
        """Incoming messages that did not follow the contract (logged and ignored)."""

    # ----------------------------------------------------------------------------------- life cycle

    def start(self) -> EdgeAgent:
        """Open the outbox, set up the pins, start connecting and (unless disabled) the ticker thread.

        If any step fails, what the earlier ones opened (the outbox, the pins) is closed again. A broker
        link that cannot be set up (TLS with a CA file that cannot be read) is a `LinkError` naming the
        device file and the key. A store that cannot be opened for now (`OutboxUnavailable`: a full or
        read-only card) is no failure: the agent starts without it and the tick tries it again; one of
        another device is still an OutboxError.
        """
        if self._running:
            raise RuntimeError("the agent is already running")
        self._stopping = False
        self._first_reading_due.clear()
        self._unrecorded.clear()
        self._handoff.clear()
        self._store_failed = False
        self._held.clear()
        self._let_through.clear()
        self._numbered.clear()
        self._hold_limit_ms = 0
        self._unapplied_ack, self._unannounced, self._open_refused = None, False, False
        self._next_relink_ms, self._relink_failed = 0, False
        with self._link_events_lock:
            self._link_events.clear()
        try:
            outbox: Outbox | None = Outbox.open(self.config.state_dir, self.config.device)
        except OutboxUnavailable as exc:
            # The alarm does not wait for the card: run without the store (a store of another device
            # is still refused, by open_readable, when it can tell).
            outbox = Outbox.open_readable(self.config.state_dir, self.config.device)
            log.error(
                "%s; readings wait in memory, the outbox is tried again every %g s; %s",
                exc,
                REOPEN_INTERVAL_S,
                "no status or heartbeat until its numbers can be read"
                if outbox is None
                else f"its numbers read as they stand: epoch {outbox.epoch}, last seq {outbox.last_seq}",
            )
        last_readings = {} if outbox is None else outbox.last_readings()
        self._failing = set(self._stored_failing(outbox, last_readings))
        clocks = {} if outbox is None else outbox.last_reading_clocks()
        placed_at = self._clock.now()
        self._last_run = {
            kind: (value, self._placed(began, clocks.get(kind), placed_at))
            for kind, (value, began) in last_readings.items()
            if began is not None and kind != "fault"
        }
        self._replay_due, self._sent_upto = True, None
        self._status_sent, self._connected_ms = None, None
        self._load_stored_policy()
        with self._failsafe_lock:
            self._failsafe = FailSafe(self.policy)
            # The room as this device last numbered it before the restart, each reading from when it
            # began: an episode open then is open now, so that a still child's PIR, `vacant` at start-up,
            # does not hide it from the local timers (vacant while the door stays closed ends nothing).
            for kind, (value, began) in sorted(self._last_run.items(), key=lambda item: item[1][1].mono_ms):
                self._failsafe.observe(kind, value, began)
        self._hub_online = False
        self._local_alarm = NO_ALARM
        self._alarm = QUIET
        try:
            self._build_sensors()
            self._outputs = AlarmOutputs(
                self.config.outputs, self._pin_factory, key=self.config.where("outputs")
            )
            factory = self._publisher_factory or _default_publisher_factory()
            self._conn_ms = self._clock.now().mono_ms
            publisher = factory(self._link_settings(), self)
        except BaseException as exc:
            self._close_pins()
            if outbox is not None:
                outbox.close()
            if isinstance(exc, LinkError):
                key = "mqtt.url" if self.config.mqtt.ca_file is None else "mqtt.ca_file"
                raise LinkError(f"{self.config.where(key)}: {exc}") from None
            raise
        self._outbox = outbox
        self._publisher = publisher
        now = self._clock.now()
        self._started_ms = now.mono_ms
        self._next_heartbeat_ms = now.mono_ms
        self._next_open_ms = now.mono_ms + round(REOPEN_INTERVAL_S * 1000)
        self._running = True
        log.info(
            "agent %s/%s/%s starting: %s",
            self.config.site,
            self.config.room,
            self.config.device,
            "without its outbox"
            if outbox is None
            else f"epoch {outbox.epoch}, last seq {outbox.last_seq}, {outbox.queued()} queued"
            + (
                ""
                if outbox.confirmed
                else " (a new store: its events wait for the hub's ack, or none, first)"
            ),
        )
        self._publisher.start()
        if self._tick_interval_s is not None:
            self._ticker_stop.clear()
            self._ticker = threading.Thread(
                target=self._run_ticker, name=f"edge-ticker-{self.config.device}", daemon=True
            )
            self._store_worker = threading.Thread(
                target=self._run_store_worker, name=f"edge-store-{self.config.device}", daemon=True
            )
            self._ticker.start()
            self._store_worker.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop ticking, publish the retained offline status, disconnect, and release pins and files.

        A reading still settling is dropped: the next start observes it again as a start-up reading. One
        that has settled is numbered now, with its own time, in the order the readings began: one that
        waits for another sensor's (`_in_order`), and one that has held for the settle time but was not
        ticked yet (the stop came between two ticks).
        """
        if not self._running:
            return
        self._ticker_stop.set()
        self._store_wake.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        stuck = False
        if self._store_worker is not None:
            # A write that waits for a lock gives up after BUSY_TIMEOUT_S; one stalled in an fsync (a worn
            # card) may never return: the stop does not wait for it longer than that either.
            self._store_worker.join(BUSY_TIMEOUT_S)
            stuck = self._store_worker.is_alive()
            self._store_worker = None
        if stuck:
            # The store's thread holds the send lock and the store: what was not numbered is lost, and
            # the store is left to that thread (closed with the process), not closed under its write.
            self._stopping = True
            log.error(
                "the outbox's write has not returned after %g s; stopping without it: readings not yet "
                "numbered are lost, those in the outbox are kept",
                BUSY_TIMEOUT_S,
            )
            self._outbox = None
        else:
            self._number_at_stop()
        farewell = self._will(ts=self._clock.now().wall)
        # Outside the send lock: waiting for the PUBACK needs the network thread, which may want it.
        if self._publisher is not None:
            self._publisher.stop(farewell, timeout_s)
        self._close_pins()
        self._alarm = QUIET
        if self._outbox is not None:
            self._outbox.close()
            self._outbox = None
        self._publisher = None
        self._running = False
        log.info("agent %s stopped", self.config.device)

    def _number_at_stop(self) -> None:
        """Number, at a stop, every reading that has settled (the store's thread has ended)."""
        with self._send_lock:
            with self._sensor_lock:
                now = self._clock.now()
                self._settle(now)  # a contact that fails lets nothing through, nor is it cleared here
                waiting = sorted(self._held, key=lambda item: item[1].began.mono_ms)
                self._held = []
            with self._handoff_lock:
                handed, self._handoff = self._handoff, []
            self._unrecorded.extend(handed)  # settled before those still held: numbered first
            self._unrecorded.extend(waiting)
            if self._writable is None:
                if self._unrecorded:
                    log.error("%d readings are lost: the outbox could not be opened", len(self._unrecorded))
            else:
                self._relink_store_if_lost(now, retry_now=True)
                try:
                    self._record_unrecorded()
                except Exception:
                    log.exception("readings not yet numbered at the stop could not be stored")
            self._stopping = True

    def __enter__(self) -> EdgeAgent:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------------- public state

    @property
    def is_connected(self) -> bool:
        """True only while the broker connection is up (after an accepted CONNACK)."""
        return self._publisher is not None and self._publisher.is_connected

    @property
    def publisher(self) -> Publisher:
        """The broker link (a `PahoPublisher` unless another factory was given)."""
        if self._publisher is None:
            raise RuntimeError("the agent is not started")
        return self._publisher

    @property
    def epoch(self) -> int:
        """The epoch events are numbered in."""
        return self._require_outbox().epoch

    @property
    def last_seq(self) -> int:
        """The last seq numbered in the current epoch."""
        return self._require_outbox().last_seq

    @property
    def queued(self) -> int:
        """Events in the outbox, not yet covered by the hub's ack."""
        return self._require_outbox().queued()

    @property
    def boot_id(self) -> str:
        """The boot id sent with events and status."""
        return self._boot_id or read_boot_id()

    @property
    def sensor_kinds(self) -> list[Kind]:
        """The kinds this device reports, in the order of its file."""
        return [sensor.kind for sensor in self.config.sensors]

    def pin_for(self, kind: str) -> Any:
        """The gpiozero pin of the sensor of that kind, or of the `buzzer` or `led` output.

        A MockPin under MockFactory: `agent.pin_for("door").drive_low()` closes a door wired
        pull-up/active-low (with a FakeClock, advance past `settle_ms` and call `tick()` to get the
        event); `agent.pin_for("buzzer").state` is True while an active buzzer sounds (a tonal one's
        PWM pin reads its duty cycle, 0.5 while it plays).
        """
        if kind in self._sensors:
            return self._sensors[kind].pin
        if kind in ("buzzer", "led"):
            if self._outputs is not None and kind in self._outputs.names:
                return self._outputs.pin_for(kind)
            raise KeyError(f"device {self.config.device} has no started {kind} output")
        raise KeyError(f"device {self.config.device} has no started {kind} sensor")

    def set_contact(self, kind: str, active: bool) -> None:
        """Drive a mock pin so that the contact of that kind reads active (or not), whatever its wiring.

        Only under gpiozero's MockFactory (a TypeError otherwise). The reading is published once it has
        held for the settle time, like a real one.
        """
        pin = self.pin_for(kind)
        if not hasattr(pin, "drive_high"):
            raise TypeError(f"the {kind} pin is real hardware; set_contact needs gpiozero's MockFactory")
        if active == self.config.sensor(kind).active_high:
            pin.drive_high()
        else:
            pin.drive_low()

    def simulate(self, kind: str, value: str) -> None:
        """Drive a mock pin to the level that reads as `value` (`simulate("door", "closed")`).

        For a check button, `simulate("check", "ok")` presses it; release it with
        `set_contact("check", False)` once the press has settled.
        """
        sensor = self.config.sensor(kind)
        if value == sensor.reading(True):
            self.set_contact(kind, True)
        elif value == sensor.reading(False) and value is not None:
            self.set_contact(kind, False)
        else:
            raise ValueError(f"{value!r} is not a reading of this device's {kind} sensor")

    @property
    def alarm(self) -> Alarm:
        """What the buzzer and LED show now (as of the last tick), and who decided it (`hub`, `local`)."""
        return self._alarm

    @property
    def local_alarm(self) -> LocalAlarm:
        """The local fail-safe's verdict at the last tick, whether or not it drives the outputs."""
        return self._local_alarm

    @property
    def hub_drives(self) -> bool:
        """True while the room's indicator drives the outputs: connected, the hub said online, and the
        hub hears this device (not while the store's numbers cannot be read: no status, no heartbeat)."""
        return self.is_connected and self._hub_online and self._outbox is not None

    @property
    def episode_open(self) -> bool:
        """Whether the room's last known state is an episode (door closed on an occupied room)."""
        with self._failsafe_lock:
            return self._failsafe.episode_start is not None

    def room_state(self) -> dict[str, str]:
        """The room's last known reading of each kind: this device's and the room's other devices'."""
        with self._failsafe_lock:
            return self._failsafe.state()

    def readings(self) -> dict[Kind, str]:
        """The current debounced reading of each sensor as the outbox has numbered it, and the device's
        `fault` as its events say it (a failing contact's code, a tamper loop's reading): the heartbeat's
        `state`, never ahead of its `last_seq` (a reading the alarm's thread settled is here once the
        store's thread has numbered it, not while it is handed over). Only while the store cannot take
        readings (a full card, a store not open) do the readings waiting for it show too: the hub
        reconciles them as lost events until theirs follow. A check button has none; nor has a contact
        while it fails: its reading is not known."""
        with self._sensor_lock:
            failing = {kind for kind, watch in self._watches.items() if watch.faulty}
        with self._send_lock:
            numbered = dict(self._numbered)
            if self._store_failed or self._writable is None:
                for kind, reading in self._unrecorded:
                    if isinstance(reading, FaultNote):
                        numbered["fault"] = reading.value
                    elif kind != "check":
                        value = self.config.sensor(kind).reading(reading.active)
                        if value is not None:
                            numbered[kind] = value
        # `fault` as the events say it: a failing contact's code (`fault_code`) as well as a tamper
        # loop's reading, whichever was numbered last (the hub takes `ok` for every fault cleared).
        kinds = [*self.sensor_kinds, *([] if "fault" in self.sensor_kinds else ["fault"])]
        return {
            kind: numbered[kind]
            for kind in kinds
            if kind in numbered and kind != "check" and kind not in failing
        }

    # ------------------------------------------------------------------------------------ the work

    def tick(self) -> None:
        """Settle readings, number and send new events, and send the heartbeat when it is due.

        Two halves: the alarm's (`_tick_alarm`: settle, fail-safe, buzzer and LED) and the store's
        (`_tick_store`: number, send, heartbeat). Called by hand (tests), both run here in turn; with a
        ticker, each has its own thread, so that the alarm never waits for the SD card."""
        if not self._running:
            return
        self._tick_alarm()
        self._tick_store()

    def _tick_alarm(self) -> None:
        """Settle readings, feed them to the fail-safe and drive the outputs; hand the readings to the
        store's tick. Takes no lock the store's work holds for long: never the send lock."""
        now = self._clock.now()
        with self._sensor_lock:
            health = self._settle(now)
            settled = self._in_order(now)
            raised, cleared = self._fault_events(health)
            if any(watch.faulty for watch in self._watches.values()):
                # A `fault` sensor's `ok` (a tamper loop closed again) would clear, at the hub, a failing
                # contact's fault too (`ok` clears every fault of the device): it waits for that one's `ok`.
                settled = [(k, r) for k, r in settled if k != "fault" or r.active]
        # The alarm comes before the outbox: it must not wait for the SD card, nor for the network.
        with self._failsafe_lock:
            for kind, reading in settled:
                value = self.config.sensor(kind).reading(reading.active)
                if value is not None:
                    self._failsafe.observe(kind, value, self._began_for_failsafe(kind, value, reading, now))
        self._drive_outputs(now)
        if settled or raised or cleared:
            with self._handoff_lock:
                self._handoff.extend(cleared)
                self._handoff.extend(settled)
                self._handoff.extend(raised)
            self._store_wake.set()

    def _settle(self, now: Instant) -> list[tuple[Kind, Health]]:
        """Each pin read and each debouncer ticked; the readings its contact's watch lets through are
        held for `_in_order`; returns the changes of health (caller holds `_sensor_lock`)."""
        changes: list[tuple[Kind, Health]] = []
        for kind, debouncer in self._debouncers.items():
            debouncer.observe(self._sensors[kind].active, now)
            passed, health = self._watches[kind].judge(debouncer, debouncer.tick(now.mono_ms), now)
            self._held.extend((kind, reading) for reading in passed)
            if health is not None:
                changes.append((kind, health))
        return changes

    def _fault_events(self, changes: list[tuple[Kind, Health]]) -> tuple[list[Noted], list[Noted]]:
        """The `fault` events for the contacts' changes of health: each failing contact's code as it
        is found, and `ok` once none fails any more (contract: `ok` clears; the hub's `sensor_fault`
        resolves on it alone). Caller holds `_sensor_lock`."""
        raised: list[Noted] = []
        cleared: list[Noted] = []
        for kind, health in changes:
            if health.faulty:
                log.warning(
                    "the %s contact is unstable (it never holds for the settle time, or changes too often):"
                    " its readings are held back until it has not moved for %g s",
                    kind,
                    self._watches[kind].stable_ms / 1000,
                )
                raised.append(("fault", FaultNote(fault_code(kind), health.at, kind)))
            else:
                log.warning("the %s contact is stable again", kind)
                if not any(watch.faulty for watch in self._watches.values()) and not self._let_through.get(
                    "fault"
                ):
                    # No contact fails any more, and no `fault` sensor (a tamper loop) reports one.
                    cleared.append(("fault", FaultNote("ok", health.at)))
        return raised, cleared

    def _tick_store(self) -> None:
        """Number the readings the alarm's tick handed over, send what waits, and the heartbeat."""
        with self._send_lock:
            if self._stopping or not self._running:
                return
            now = self._clock.now()
            self._apply_link_events()
            with self._handoff_lock:
                settled, self._handoff = self._handoff, []
            self._open_outbox_if_due(now)
            self._relink_store_if_lost(now)
            self._unrecorded.extend(settled)
            self._record_or_keep_queued()
            # What the link reported during a write (a stalled card): before anything is sent, so that
            # nothing goes out on a new connection ahead of its status and replay.
            self._apply_link_events()
            self._forget_mended()
            self._confirm_if_waited_too_long(now)
            self._send_pending()
            self._send_heartbeat_if_due(now)

    def _forget_mended(self) -> None:
        """A contact kept as failing that is sound again (its watch let its readings through), while
        another still fails (so no `ok`): no longer kept as failing, so that a restart does not start it
        failing (caller holds the send lock). Only ever removes: a new fault is kept with its event."""
        if not self._failing or self._unrecorded:
            return  # (a fault's event still waiting to be numbered: judged once it is)
        with self._sensor_lock:
            mended = {
                kind for kind in self._failing if kind in self._watches and not self._watches[kind].faulty
            }
        outbox = self._writable
        if not mended or outbox is None:
            return
        try:
            outbox.keep_failing(frozenset(self._failing - mended))
        except Exception:
            log.exception("the contacts sound again could not be stored; tried again at the next tick")
            return
        self._failing -= mended

    def _in_order(self, now: Instant) -> list[tuple[Kind, Settled]]:
        """The settled readings that may be numbered now, in the order they began (semantics 1: the hub
        applies a device's events in `seq` order). Sensors settle at different speeds (a door in 100 ms,
        a radar in 500): a reading waits while another sensor's burst that began before it has not
        settled (one of the same instant does not hold it), so that the child leaving just before the
        door shut is not numbered after the shut (the hub would time an empty room). It waits at most
        twice the longest settle time (a sensor chattering without end holds nothing back for longer).
        The fail-safe takes the readings in the same order. Caller holds `_sensor_lock`."""
        held = sorted(self._held, key=lambda item: item[1].began.mono_ms)  # stable: one instant, pin order
        bursts = [d.burst_began.mono_ms for d in self._debouncers.values() if d.burst_began is not None]
        first_burst = min(bursts, default=None)
        ready = 0
        for _kind, reading in held:
            began = reading.began.mono_ms
            if first_burst is not None and began > first_burst and now.mono_ms - began < self._hold_limit_ms:
                break
            ready += 1
        out, self._held = held[:ready], held[ready:]
        for kind, reading in out:
            self._let_through[kind] = reading.active
        return out

    def _record_or_keep_queued(self) -> None:
        """`_record_unrecorded`, but a store that fails (a full SD card, a disk error) is logged, once per
        run of failures, and does not stop the tick: the readings stay queued, in order, for the next
        tick, and what already waits in the outbox and the heartbeat still go out (caller holds the send
        lock). The log names the error and how many readings wait, never a reading's content. A store
        not open yet (`_open_outbox_if_due`) keeps them queued the same way."""
        outbox = self._writable
        if outbox is None:
            return
        try:
            self._record_unrecorded()
        except (sqlite3.Error, OSError, OutboxError) as exc:
            if not self._store_failed:
                log.error(
                    "cannot number readings in the outbox %s (%s: %s); %d waiting, retried every tick",
                    outbox.path,
                    type(exc).__name__,
                    exc,
                    len(self._unrecorded),
                )
            self._store_failed = True
        else:
            if self._store_failed:
                log.warning("the outbox takes readings again; those that waited are numbered")
            self._store_failed = False

    def _open_outbox_if_due(self, now: Instant) -> None:
        """Try again, every REOPEN_INTERVAL_S, to open a store that could not be opened at the start
        (caller holds the send lock). Once open, the hub's ack that waited is applied, and a connection
        that could not be told the store's numbers (or was told others) gets its status and replay."""
        readable = self._outbox
        if self._writable is not None or now.mono_ms < self._next_open_ms:
            return
        self._next_open_ms = now.mono_ms + round(REOPEN_INTERVAL_S * 1000)
        try:
            outbox = Outbox.open(self.config.state_dir, self.config.device, wait_s=0)
        except (OutboxError, sqlite3.Error, OSError) as exc:
            if isinstance(exc, OutboxUnavailable):
                log.debug("the outbox still cannot be opened: %s", exc)
            elif not self._open_refused:
                log.error("the outbox cannot be used (%s); retried every %g s", exc, REOPEN_INTERVAL_S)
                self._open_refused = True
            return
        self._outbox = outbox
        if readable is not None:
            readable.close()
        log.warning(
            "the outbox opens: epoch %d, last seq %d, %d queued; the %d readings that waited follow",
            outbox.epoch,
            outbox.last_seq,
            outbox.queued(),
            len(self._unrecorded) + len(self._held),
        )
        told = readable is not None and (readable.epoch, readable.last_seq) == (outbox.epoch, outbox.last_seq)
        ack, self._unapplied_ack = self._unapplied_ack, None
        if ack is not None:
            self._apply_ack(ack)
        if self.is_connected and (self._unannounced or not (self._replay_due or (told and outbox.confirmed))):
            self._announce(now)

    def _relink_store_if_lost(self, now: Instant, *, retry_now: bool = False) -> None:
        """Put the store back at its path if its file was deleted or replaced while the agent runs (the
        state directory removed by a cleanup script or by hand): SQLite would go on numbering events into
        the unlinked file, all lost at the next restart. A `stat` per tick; the store is copied whole and
        continues (`Outbox.relink`, logged as an error), its seq going on. If that fails (the card now
        read-only), it is logged once and tried again every REOPEN_INTERVAL_S: events go on into the
        unlinked file meanwhile, which keeps them until the agent stops (caller holds the send lock)."""
        outbox = self._writable
        if outbox is None or not outbox.unlinked:
            return
        if not retry_now and now.mono_ms < self._next_relink_ms:
            return
        try:
            outbox.relink()
        except (OSError, sqlite3.Error) as exc:
            self._next_relink_ms = now.mono_ms + round(REOPEN_INTERVAL_S * 1000)
            if not self._relink_failed:
                log.error(
                    "outbox %s was deleted or replaced while the agent ran, and cannot be made again "
                    "(%s: %s); %d events are kept only in the open, deleted file until the agent stops; "
                    "retried every %g s",
                    outbox.path,
                    type(exc).__name__,
                    exc,
                    outbox.queued(),
                    REOPEN_INTERVAL_S,
                )
            self._relink_failed = True
            return
        self._relink_failed = False
        if self._policy_raw is not None:
            self._store_policy(self._policy_raw)  # the fail-safe's numbers were beside it

    def _record_unrecorded(self) -> None:
        """Number and store the settled readings not yet in the outbox, in order (caller holds the send
        lock). Raises if the store fails; that reading and those after it stay queued."""
        while self._unrecorded:
            kind, reading = self._unrecorded[0]
            self._record(kind, reading)
            del self._unrecorded[0]

    def _record(self, kind: Kind, reading: Settled | FaultNote) -> None:
        if isinstance(reading, FaultNote):
            failing = set() if reading.contact is None else self._failing | {reading.contact}
            event = self._require_outbox().append(
                "fault", reading.value, reading.began, self.boot_id, failing=frozenset(failing)
            )
            self._numbered["fault"] = reading.value
            self._failing = failing
            log.info("event %s: fault %s", event.id, reading.value)
            return
        sensor = self.config.sensor(kind)
        value = sensor.reading(reading.active)
        outbox = self._require_outbox()
        if value is None:
            pass  # a check button's release
        elif kind in self._first_reading_due and outbox.last_reading(kind) == value:
            log.info("%s is still %s since the last run; not reported again", kind, value)
            self._numbered[kind] = value  # its event, numbered before, is at or below `last_seq`
        else:
            # A first reading that differs from the last one sent changed while the agent was not
            # running: it began at some time before the agent saw it, which the event says (the hub
            # then bounds the change by what it last knew). A check-in is a press seen as it happened.
            startup = kind in self._first_reading_due and kind != "check"
            # A tamper loop's `ok` clears every fault of the device at the hub (it is let through only
            # once no contact fails): none is kept as failing either.
            clears = kind == "fault" and value == "ok"
            event = outbox.append(
                kind,
                value,
                reading.began,
                self.boot_id,
                sensor.staff,
                startup=startup,
                failing=frozenset() if clears else None,
            )
            if clears:
                self._failing = set()
            self._numbered[kind] = value
            log.info("event %s: %s %s", event.id, kind, value)
        self._first_reading_due.discard(kind)

    @staticmethod
    def _stored_failing(
        outbox: Outbox | None, last_readings: dict[str, tuple[str, dt.datetime | None]]
    ) -> frozenset[Kind]:
        """The contacts failing when the agent last stopped: as the store keeps them, or, for a store of
        an earlier version, the one the last `fault` value names."""
        if outbox is None:
            return frozenset()
        kept = outbox.failing_contacts()
        if kept is not None:
            return frozenset(kind for kind in kept if kind in _CONTACT_KINDS)
        last = last_readings.get("fault", ("ok", None))[0]
        return frozenset(kind for kind in _CONTACT_KINDS if fault_code(kind) == last)

    def _send_pending(self) -> None:
        # Caller holds the send lock: events leave strictly in (epoch, seq) order, each exactly once
        # per connection; a failed hand-over stops here and the next connect replays from the outbox.
        publisher = self._publisher
        outbox = self._outbox
        if (
            publisher is None
            or outbox is None
            or not publisher.is_connected
            or self._replay_due
            or not outbox.confirmed
            or self._link_events  # what the link reported goes first (a new connection: its replay)
        ):
            return
        while True:
            # In batches: a replay of a long outage's backlog never holds all of it in memory at once.
            batch = outbox.pending(after=self._sent_upto, limit=SEND_BATCH)
            for event in batch:
                if not publisher.publish(Message(self._event_topic, event.payload, qos=1, retain=False)):
                    return
                self._sent_upto = event.key
            if len(batch) < SEND_BATCH:
                return

    def _began_for_failsafe(self, kind: Kind, value: str, reading: Settled, now: Instant) -> Instant:
        """When a settled reading began, for the local timers. A start-up reading that is what this
        device last numbered before it restarted is not reported again (`_record`): the room has been so
        since then, and the timers count from then, so that a restart during an episode does not set
        its duration back (the hub, told nothing new, keeps timing it from the door's close too)."""
        last = self._last_run.pop(kind, None)  # the first reading of each kind only, and no SD card here
        if last is None or last[0] != value:
            return reading.began
        return min(last[1], reading.began, key=lambda instant: instant.mono_ms)

    def _placed(self, began: dt.datetime, clock: tuple[str, int] | None, now: Instant) -> Instant:
        """A reading this device numbered before a restart, placed on the monotonic clock: within this
        boot by its own monotonic time, whatever the wall clock did since (NTP stepping the clock of a Pi
        without a real-time clock: its `ts` against the new wall clock would make an episode of two
        minutes look hours old); from another boot (the monotonic clock started again), or a store that
        did not keep it, by its `ts` against the wall clock, all there is."""
        if clock is not None and clock[0] == self.boot_id and 0 <= clock[1] <= now.mono_ms:
            return Instant(clock[1], began)
        return on_local_axis(began, now)

    def _send_heartbeat_if_due(self, now: Instant) -> None:
        publisher = self._publisher
        outbox = self._outbox
        if (
            publisher is None
            or outbox is None  # its numbers are not known: none are invented
            or not publisher.is_connected
            or self._replay_due  # the status and the replay go first
            or self._link_events  # (as in `_send_pending`)
            or not outbox.confirmed  # its epoch and last_seq may yet change
            or now.mono_ms < self._next_heartbeat_ms
        ):
            return
        heartbeat = HeartbeatPayload(
            ts=now.wall,
            epoch=outbox.epoch,
            last_seq=outbox.last_seq,
            uptime_s=self._uptime_s(now),
            queued=outbox.queued(),
            state=self.readings(),
        )
        publisher.publish(Message(self._heartbeat_topic, dump_payload(heartbeat), qos=0, retain=False))
        self._last_heartbeat_ms = now.mono_ms
        self._next_heartbeat_ms = now.mono_ms + self._heartbeat_ms

    def _drive_outputs(self, now: Instant) -> None:
        with self._failsafe_lock:
            local = self._failsafe.evaluate(now.mono_ms)
        hub_drives = self.hub_drives
        alarm = choose_alarm(local, self.indicator, hub_drives)
        if local != self._local_alarm:
            self._local_alarm = local
            log.info("local fail-safe: %s%s", local.level, f" ({local.reason})" if local.reason else "")
        if alarm == self._alarm and not self._output_failed:
            return
        previous, self._alarm = self._alarm, alarm
        if alarm.driver != previous.driver:
            log.info("the buzzer and LED now follow %s", self._driver_description(alarm))
        if alarm != previous:
            level = logging.WARNING if alarm.driver == "local" and alarm.level != "none" else logging.INFO
            log.log(
                level,
                "room alarm %s%s from %s: buzzer %s, LED %s",
                alarm.level,
                f" ({alarm.reason})" if alarm.reason else "",
                alarm.driver,
                "on" if alarm.buzzer else "off",
                "on" if alarm.led else "off",
            )
        if self._outputs is None:
            return
        try:
            self._outputs.show(led=alarm.led, buzzer=alarm.buzzer)
        except Exception:
            # Retried every tick; logged once, not fifty times a second.
            if not self._output_failed:
                log.exception("driving the buzzer or LED failed; retrying")
            self._output_failed = True
        else:
            self._output_failed = False

    def _driver_description(self, alarm: Alarm) -> str:
        if alarm.driver == "hub":
            return "the hub's indicator"
        if not self.is_connected:
            return "the local fail-safe (the broker is unreachable)"
        if self.hub_status is not None and not self.hub_status.online:
            return "the local fail-safe (the hub is offline)"
        return "the local fail-safe (no word from the hub yet)"

    def _run_ticker(self) -> None:
        """The alarm's thread: settle, fail-safe, outputs, every tick; nothing here waits for the store."""
        interval = self._tick_interval_s or DEFAULT_TICK_INTERVAL_S
        while not self._ticker_stop.wait(interval):
            try:
                self._tick_alarm()
            except Exception:
                # A failing tick must not end the agent.
                log.exception("agent tick failed")

    def _run_store_worker(self) -> None:
        """The store's thread: numbers what the alarm's tick settled (woken at once), sends, and sends
        the heartbeat, every tick too. A write that waits holds up only this thread."""
        interval = self._tick_interval_s or DEFAULT_TICK_INTERVAL_S
        while not self._ticker_stop.is_set():
            self._store_wake.wait(interval)
            self._store_wake.clear()
            if self._ticker_stop.is_set():
                return
            try:
                self._tick_store()
            except Exception:
                # A failing tick must not end the agent (a full SD card is handled in the tick itself).
                log.exception("agent store tick failed")

    # ------------------------------------------------------------------ LinkHandlers (network thread)

    def on_connected(self, session_present: bool) -> None:
        """Publish the online status and replay the outbox, in order, before anything newer."""
        # The hub's retained status comes again after the subscriptions; until then the fail-safe drives.
        self._hub_online = False
        self._link_reported("connected", session_present)

    def _connected_now(self) -> None:
        # Caller holds the send lock (`_apply_link_events`).
        if self._publisher is None:
            return
        if self._outbox is None:
            # No status: it would have to invent the store's numbers. The broker keeps the last one
            # (offline), and the hub hears from this device once the store opens.
            self._unannounced = True
            log.info("connected, but the outbox's numbers are not known: no status until they are")
            return
        self._announce(self._clock.now())

    def _announce(self, now: Instant) -> None:
        """The retained online status and the replay of the outbox (caller holds the send lock)."""
        publisher = self._publisher
        outbox = self._outbox
        if publisher is None or outbox is None:
            return
        status = StatusPayload(
            online=True,
            ts=now.wall,
            agent=agent_version(),
            boot=self.boot_id,
            uptime_s=self._uptime_s(now),
            sensors=self.sensor_kinds,
            epoch=outbox.epoch,
            last_seq=outbox.last_seq,
            conn_ms=self._conn_ms,
        )
        payload = dump_payload(status)
        self._status_sent, self._connected_ms = payload, now.mono_ms
        publisher.publish(Message(self._status_topic, payload, qos=1, retain=True))
        self._sent_upto = None
        self._replay_due, self._unannounced = False, False
        self._send_pending()
        self._next_heartbeat_ms = now.mono_ms  # the hub gets the current readings at once
        log.info("online: epoch %d, last seq %d, %d queued", outbox.epoch, outbox.last_seq, outbox.queued())

    def on_disconnected(self) -> None:
        """Events stay in the outbox for the next connect; the local fail-safe drives the outputs."""
        self._hub_online = False
        self._link_reported("disconnected", None)

    def _disconnected_now(self) -> None:
        # Caller holds the send lock (`_apply_link_events`).
        self._replay_due = True  # the next connection replays from the oldest event waiting
        self._status_sent, self._connected_ms, self._unannounced = None, None, False
        log.debug("agent %s is offline; events wait in the outbox", self.config.device)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Take in the hub's ack, this device's config, the room indicator, the hub status, and the
        room's events and heartbeats."""
        if topic.startswith(self._room_prefix) and topic.endswith("/event"):
            self._take_room_event(topic, payload)
            return
        if topic.startswith(self._room_prefix) and topic.endswith("/heartbeat"):
            self._take_room_heartbeat(topic, payload)
            return
        if topic == self._status_topic:
            self._link_reported("own status", payload)
            return
        if not payload:
            # A retained message being cleared: no indicator or hub status any more (the fail-safe's
            # numbers are kept; without them it could not run at all).
            if topic == self._indicator_topic:
                self.indicator = None
            elif topic == self._hub_status_topic:
                self.hub_status = None
                self._hub_online = False
            return
        try:
            data = payload_to_json(payload)
            if topic == self._ack_topic:
                self._link_reported("ack", AckPayload.model_validate(data))
            elif topic == self._config_topic:
                self._apply_policy(ConfigPayload.model_validate(data), payload)
            elif topic == self._indicator_topic:
                self.indicator = IndicatorPayload.model_validate(data)
            elif topic == self._hub_status_topic:
                self.hub_status = HubStatusPayload.model_validate(data)
                self._hub_online = self.hub_status.online
                log.info("hub is %s", "online" if self.hub_status.online else "offline")
        except (ContractError, ValidationError) as exc:
            self.rejected_messages += 1
            log.warning("ignored a message on %s that does not follow the contract: %s", topic, exc)

    def _apply_ack(self, ack: AckPayload) -> None:
        # Caller holds the send lock (`_apply_link_events`, `_open_outbox_if_due`).
        outbox = self._writable
        if outbox is None:
            # Nothing can be written (or even read): the latest ack waits for the store to open.
            if self._unapplied_ack is None or (ack.epoch, ack.seq) > (
                self._unapplied_ack.epoch,
                self._unapplied_ack.seq,
            ):
                self._unapplied_ack = ack
            return
        if not outbox.confirmed:
            self._apply_ack_to_a_new_store(outbox, ack)
            return
        if (ack.epoch, ack.seq) > (outbox.epoch, outbox.last_seq):
            log.warning(
                "the hub has stored up to epoch %d seq %d, beyond this store (epoch %d, last seq %d): "
                "the store was lost or replaced; renumbering waiting events into a new epoch",
                ack.epoch,
                ack.seq,
                outbox.epoch,
                outbox.last_seq,
            )
            outbox.start_epoch(ack.epoch + 1, renumber_pending=True)
            self._sent_upto = None
            self._send_pending()
            return
        removed = outbox.acknowledge(ack.epoch, ack.seq)
        if removed:
            log.debug("hub acknowledged up to %d:%d; %d events done", ack.epoch, ack.seq, removed)

    def _apply_ack_to_a_new_store(self, outbox: Outbox, ack: AckPayload) -> None:
        # Caller holds the send lock. The store has sent nothing in its epoch (it sends only once
        # confirmed), so this ack is about events of a store before it: one that names its epoch or
        # later would have the hub drop its numbers up to there as duplicates, and then cover them.
        if (ack.epoch, ack.seq) >= (outbox.epoch, 1):
            log.warning(
                "the hub has stored up to epoch %d seq %d of this device, from before this new store "
                "(epoch %d, last seq %d): renumbering its waiting events into epoch %d",
                ack.epoch,
                ack.seq,
                outbox.epoch,
                outbox.last_seq,
                ack.epoch + 1,
            )
            outbox.start_epoch(ack.epoch + 1, renumber_pending=True)
            self._sent_upto = None
        else:
            # Older epochs only: events this store sent before `reset-epoch`, which it covers as usual.
            outbox.acknowledge(ack.epoch, ack.seq)
        # Still unconfirmed: a later ack (the retained one after those the session queued) may name more.

    def _take_own_status(self, payload: bytes) -> None:
        """The broker's copy of a status of this device: the one published on this connection, after
        the subscriptions, comes after every retained message they brought, the hub's ack included
        (caller holds the send lock: `_apply_link_events`)."""
        if self._outbox is None or self._outbox.confirmed:
            return
        if self._status_sent is None or payload != self._status_sent:
            return  # the retained copy from before this connection (or its Last Will)
        self._confirm("the hub's retained ack, if any, has been seen")

    def _link_reported(self, kind: str, detail: Any) -> None:
        """What the link reported (paho's network thread), applied in the order it came under the send
        lock: here if the lock comes within LINK_WAIT_S, else by the store's thread, woken for it, before
        it sends anything. A write stalled on the SD card holds the send lock; the link's thread must
        not wait for it (its keepalive, the hub's indicators; and paho's `loop_stop` waits for it)."""
        with self._link_events_lock:
            first = not self._link_events
            self._link_events.append((kind, detail))
        with self._send_lock_unless_stopping(LINK_WAIT_S) as locked:
            if locked:
                self._apply_link_events()
                return
        if not self._stopping:
            if first:  # once while they wait (an ack comes for every event)
                log.info(
                    "the send lock is busy (a write to the card that waits, or a long replay): what the "
                    "link reports is left to the store's thread"
                )
            self._store_wake.set()

    def _apply_link_events(self) -> None:
        """Apply what the link reported, in order (caller holds the send lock). Nothing during a stop:
        `start` sets it all again."""
        applied = False
        while True:
            # One at a time: those behind stay visible to `_send_pending` and the heartbeat, which send
            # nothing while any waits (a disconnect behind an ack: nothing on the new connection before
            # its status and replay).
            with self._link_events_lock:
                if self._stopping:
                    self._link_events.clear()
                    return
                if not self._link_events:
                    break
                kind, detail = self._link_events.pop(0)
            applied = True
            if kind == "connected":
                self._connected_now()
            elif kind == "disconnected":
                self._disconnected_now()
            elif kind == "ack":
                self._apply_ack(detail)
            elif kind == "config":
                self._keep_policy(*detail)
            else:
                self._take_own_status(detail)
        if applied:
            self._send_pending()  # what a send held back while others waited

    def _confirm_if_waited_too_long(self, now: Instant) -> None:
        # Caller holds the send lock.
        outbox = self._outbox
        if (
            outbox is None
            or outbox.confirmed
            or self._replay_due
            or self._connected_ms is None
            or not self.is_connected
            or self._link_events  # the hub's retained ack may be among them
        ):
            return
        if now.mono_ms - self._connected_ms >= round(CONFIRM_TIMEOUT_S * 1000):
            log.warning(
                "the broker has not sent back this device's status within %g s; sending the new store's "
                "events without knowing what the hub already has of this device",
                CONFIRM_TIMEOUT_S,
            )
            self._confirm("timed out")

    def _confirm(self, why: str) -> None:
        # Caller holds the send lock.
        outbox = self._require_outbox()
        outbox.confirm()
        log.info("new store confirmed (%s): epoch %d, last seq %d", why, outbox.epoch, outbox.last_seq)
        self._send_pending()

    def _take_room_event(self, topic: str, payload: bytes) -> None:
        """A reading from another device of the room, for the fail-safe's view of the room."""
        try:
            device = self.topics.parse_device_topic(topic).device
        except ContractError:
            self.ignored_room_events += 1
            log.debug("ignored a message on an unexpected room topic")
            return
        if device == self.config.device:
            return  # our own event, echoed by the broker: the fail-safe had it at the tick
        try:
            event = EventPayload.model_validate(payload_to_json(payload))
        except (ContractError, ValidationError) as exc:
            # No payload content in the log: a malformed event may carry anything (a staff reference).
            self.ignored_room_events += 1
            kind = "not JSON" if isinstance(exc, ContractError) else f"{exc.error_count()} contract errors"
            log.debug("ignored an event from %s that does not follow the contract (%s)", device, kind)
            return
        with self._failsafe_lock:
            at = self._peer_placed(device, event.ts, self._clock.now())
            news = self._failsafe.observe(event.kind, event.value, at, device, (event.epoch, event.seq))
        if news:
            log.debug("room reading from %s: %s %s", device, event.kind, event.value)

    def _take_room_heartbeat(self, topic: str, payload: bytes) -> None:
        """A heartbeat of another device of the room: a sample of its clock (semantics 4.5, as the hub
        does). Sent live, never replayed (QoS 0, after the replay), so its arrival on this agent's
        monotonic clock minus its `ts` is that device's clock offset plus the network's delay, never
        less: the smallest of the last PEER_CLOCK_SAMPLES is the estimate (`_peer_placed`)."""
        try:
            device = self.topics.parse_device_topic(topic).device
        except ContractError:
            self.ignored_room_events += 1
            return
        if device == self.config.device:
            return  # our own, echoed by the broker
        try:
            heartbeat = HeartbeatPayload.model_validate(payload_to_json(payload))
        except (ContractError, ValidationError):
            self.ignored_room_events += 1
            log.debug("ignored a heartbeat from %s that does not follow the contract", device)
            return
        sample = self._clock.now().mono_ms - _epoch_ms(heartbeat.ts)
        with self._failsafe_lock:
            samples = self._peer_clocks.setdefault(device, deque(maxlen=PEER_CLOCK_SAMPLES))
            samples.append(sample)

    def _peer_placed(self, device: str, ts: dt.datetime, now: Instant) -> Instant:
        """When another device's reading began, on this agent's monotonic clock (caller holds the
        fail-safe lock). With samples of its clock from its heartbeats: its `ts` by that device's own
        clock, mapped through the smallest sample, so that neither its clock being off (a device without
        network time, an hour behind: its live events would look an hour old and sound the duration
        limit at once) nor this agent's wall clock stepping moves it. Without any yet (just started, or
        the device sends none): its `ts` against this agent's wall clock (`on_local_axis`), which errs
        towards sounding for a device whose clock is behind. Never in the future either way."""
        samples = self._peer_clocks.get(device)
        if not samples:
            return on_local_axis(ts, now)
        return Instant(min(now.mono_ms, _epoch_ms(ts) + min(samples)), ts)

    def _apply_policy(self, policy: ConfigPayload, raw: bytes | None = None) -> None:
        self.policy = policy
        with self._failsafe_lock:
            self._failsafe.policy = policy
        # The rest waits for the send lock (the file is written beside the store, on the same card).
        self._link_reported("config", (policy, raw))

    def _keep_policy(self, policy: ConfigPayload, raw: bytes | None) -> None:
        """Keep the hub's numbers on the card and follow its heartbeat (caller holds the send lock)."""
        if raw is not None and raw != self._policy_raw:
            self._policy_raw = raw
            self._store_policy(raw)
            log.info(
                "fail-safe numbers: %s supervision, lapse grace %g s, check-in interval %g s, "
                "%d duration alerts, max duration %s",
                policy.supervision,
                policy.lapse_grace_s,
                policy.checkin_interval_s,
                len(policy.duration_alerts),
                "none" if policy.max_duration_s is None else f"{policy.max_duration_s:g} s",
            )
        # The hub declares a device offline after 3 heartbeats; follow its heartbeat when it sets one.
        if "heartbeat_s" in policy.model_fields_set:
            self._heartbeat_ms = round(policy.heartbeat_s * 1000)
            if self._last_heartbeat_ms is not None:
                self._next_heartbeat_ms = min(
                    self._next_heartbeat_ms, self._last_heartbeat_ms + self._heartbeat_ms
                )

    # ---------------------------------------------------------------------------------- internals

    def _store_policy(self, raw: bytes) -> None:
        # Kept so that an agent restarted while the broker or the hub is down still has its numbers.
        path = self.config.state_dir / POLICY_FILE
        partial = path.with_name(POLICY_FILE + ".new")
        try:
            with open(partial, "wb") as file:
                file.write(raw)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        except OSError as exc:
            log.warning("cannot keep the fail-safe numbers in %s: %s", path, exc.strerror or exc)

    def _load_stored_policy(self) -> None:
        if self.policy is not None:
            return  # restarted in the same process: the numbers in memory are at least as new
        path = self.config.state_dir / POLICY_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            log.info("no fail-safe numbers yet: the local fail-safe waits for the hub's config")
            return
        except OSError as exc:
            log.warning("cannot read the fail-safe numbers in %s: %s", path, exc.strerror or exc)
            return
        try:
            policy = ConfigPayload.model_validate(payload_to_json(raw))
        except (ContractError, ValidationError):
            log.warning("the fail-safe numbers in %s are unreadable; waiting for the hub's config", path)
            return
        self._policy_raw = raw
        self._apply_policy(policy)
        log.info("fail-safe numbers from the last run: %s supervision", policy.supervision)

    def _close_pins(self) -> None:
        for sensor in self._sensors.values():
            sensor.close()
        self._sensors.clear()
        with self._sensor_lock:
            self._debouncers.clear()
            self._watches.clear()
        if self._outputs is not None:
            self._outputs.close()
            self._outputs = None

    def _build_sensors(self) -> None:
        now = self._clock.now()
        try:
            for index, config in enumerate(self.config.sensors):
                sensor = SensorInput(
                    config, self._pin_factory, self._on_edge, key=self.config.where(f"sensors.{index}")
                )
                self._sensors[config.kind] = sensor
                settle = self.config.settle_ms if config.settle_ms is None else config.settle_ms
                # A check button starts released: only a press is ever news.
                known = False if config.kind == "check" else None
                failing = config.kind in self._failing
                with self._sensor_lock:
                    self._debouncers[config.kind] = Debouncer(settle, sensor.active, now, settled=known)
                    self._watches[config.kind] = ContactWatch(
                        settle,
                        known,
                        faulty_since=now if failing else None,
                        early=config.reading(True) in TIMED_FROM_EARLIEST,
                    )
                    self._let_through[config.kind] = known
                    self._hold_limit_ms = max(self._hold_limit_ms, 2 * settle)
                self._first_reading_due.add(config.kind)
        except BaseException:
            for sensor in self._sensors.values():
                sensor.close()
            self._sensors.clear()
            with self._sensor_lock:
                self._debouncers.clear()
                self._watches.clear()
            raise

    def _on_edge(self, sensor: SensorInput) -> None:
        now = self._clock.now()
        with self._sensor_lock:
            debouncer = self._debouncers.get(sensor.kind)
            if debouncer is not None:
                debouncer.observe(sensor.active, now)

    def _will(self, ts: dt.datetime | None = None) -> Message:
        """The retained offline status of the current connection: its Last Will (no `ts`: the broker
        sends it, at a time nobody knows) or the farewell of a clean stop (`ts`)."""
        status = StatusPayload(online=False, ts=ts, boot=self.boot_id, conn_ms=self._conn_ms)
        return Message(self._status_topic, dump_payload(status), qos=1, retain=True)

    def _next_will(self) -> Message:
        """Just before each CONNECT (the publisher's network thread): a new name for the connection about
        to open, and its Last Will. Named apart from every one before, so that the hub can tell that
        connection's will, should the broker deliver it again, from the next one's.

        It waits for the send lock without a time limit, and that is what keeps a new connection from
        coming up in the middle of a store's tick (`_send_pending` looks at its guards once, before it
        sends a batch): a limit here would need a connection count checked at every publish."""
        with self._send_lock_unless_stopping():
            self._conn_ms = max(self._clock.now().mono_ms, self._conn_ms + 1)
            return self._will()

    @contextlib.contextmanager
    def _send_lock_unless_stopping(self, within_s: float | None = None) -> Iterator[bool]:
        """The send lock for paho's network thread, unless a stop begins while it waits, or `within_s`
        runs out (True: held). `loop_stop` waits for that thread, and a store's thread stuck in a write
        at the stop holds the lock: waiting for it would hold the stop with it."""
        locked = False
        deadline = None if within_s is None else time.monotonic() + within_s
        while not self._stopping and not (locked := self._send_lock.acquire(timeout=0.05)):
            if deadline is not None and time.monotonic() >= deadline:
                break
        try:
            yield locked
        finally:
            if locked:
                self._send_lock.release()

    def _link_settings(self) -> LinkSettings:
        mqtt = self.config.mqtt
        broker = mqtt.broker
        return LinkSettings(
            host=broker.host,
            port=broker.port,
            client_id=self.config.client_id,
            will=self._will(),
            subscriptions=(
                self._ack_topic,
                self._config_topic,
                self._indicator_topic,
                self._hub_status_topic,
                self._room_events_topic,
                self._room_heartbeats_topic,  # the other devices' clocks, for their events' times
                self._status_topic,  # its own: the copy of the status published after subscribing
            ),
            protocol=mqtt.protocol,
            tls=broker.tls,
            ca_file=mqtt.ca_file,
            username=broker.username,
            password=broker.password,
            session_expiry_s=mqtt.session_expiry_s,
            keepalive_s=mqtt.keepalive_s,
            reconnect_min_s=mqtt.reconnect_min_s,
            reconnect_max_s=mqtt.reconnect_max_s,
            next_will=self._next_will,
        )

    def _uptime_s(self, now: Instant) -> float:
        return max(now.mono_ms - self._started_ms, 0) / 1000

    @property
    def _writable(self) -> Outbox | None:
        """The store, when it is open to write (not while it cannot be opened, nor read-only)."""
        outbox = self._outbox
        return outbox if outbox is not None and not outbox.read_only else None

    def _require_outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError("the outbox is not open yet" if self._running else "the agent is not started")
        return self._outbox


def _default_publisher_factory() -> PublisherFactory:
    # Imported here so that the core (and its unit tests with a fake link) does not need paho loaded.
    from seclusion_edge.mqtt import paho_publisher

    return paho_publisher


def reset_epoch(config: EdgeConfig) -> int:
    """Move the device's outbox to a new epoch (after a lost or replaced store); returns the new epoch."""
    outbox = Outbox.open(config.state_dir, config.device)
    with contextlib.closing(outbox):
        # Unconfirmed: the hub may have numbers of the new epoch too (a store lost twice); the agent
        # looks at its retained ack before it sends any.
        return outbox.start_epoch(unconfirmed=True)
