"""The hub service: one ingest thread that drives the room machines and writes what they decide.

Messages arrive from the MQTT adapter into a queue. The ingest thread takes them in batches, decodes
each at the boundary (rejects go to the dead-letter table with their reason), applies it to its room's
machine, lets time pass on every machine, and writes the whole batch in one transaction. Only then are
the messages acknowledged to the broker and the devices told (on their `ack` topic) what is stored.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc

from seclusion_contract import (
    ConfigPayload,
    DurationAlertRule,
    HubStatusPayload,
    IndicatorPayload,
    Topics,
    ack_payload,
    dump_payload,
    format_ts,
)

from .config import LoadedSite
from .core.alerts import (
    TIERS,
    Alert,
    AlertContext,
    AlertError,
    AlertSaved,
    AlertSend,
    IndicatorChanged,
    acknowledge_alert,
    age_on,
    duration_limit_s,
    resolve_alert_by_person,
)
from .core.clock import Clock
from .core.deadlines import due_dates
from .core.episode import Episode
from .core.incident import overdue_effects
from .core.policy import Policy
from .core.room import (
    Effect,
    EpisodeSaved,
    IncidentOpened,
    IncidentStatusChanged,
    Note,
    OlderLoss,
    RoomMachine,
    SensorEvent,
)
from .delivery import AlertDelivery, LivePush, Outbound
from .errors import ChangeRefused, RejectedMessage
from .ingest import Decoder, Inbound
from .models import AuditEntry, EpisodeRecord, Pupil
from .record_store import RecordStore, report_due
from .store import Batch, Store, dead_letter_row

log = logging.getLogger(__name__)

# The backlog marker normally returns within milliseconds; past this the hub evaluates anyway.
BACKLOG_WAIT_S = 30.0
# A batch not stored after this long (a database refusing writes, or hanging, or a bug retried): the
# hub says it is offline on its status topic, so that the rooms' own fail-safe sounds their alarms
# (semantics 5.4). Well under any profile's `lapse_grace_s` (15 s in england-schools-2026); a batch
# takes milliseconds, a few hundred at most on a busy SD card.
STALL_S = 5.0


class HubMetrics:
    """Prometheus metrics of the hub; no personal data, only rooms and counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "seclusion_events_accepted", "Device events applied and stored", registry=self.registry
        )
        self.rejected = Counter(
            "seclusion_messages_rejected", "Messages dead-lettered", ["channel"], registry=self.registry
        )
        self.duplicates = Counter(
            "seclusion_events_duplicate", "Events dropped as duplicates", registry=self.registry
        )
        self.gaps = Counter(
            "seclusion_events_missing", "Events missing in a device's sequence", registry=self.registry
        )
        self.internal_errors = Counter(
            "seclusion_internal_errors", "Messages a hub bug failed to apply", registry=self.registry
        )
        self.write_failures = Counter(
            "seclusion_store_write_failures", "Batches the database refused", registry=self.registry
        )
        self.open_episodes = Gauge("seclusion_open_episodes", "Episodes open now", registry=self.registry)
        self.queue_depth = Gauge(
            "seclusion_ingest_queue", "Messages waiting for the ingest thread", registry=self.registry
        )
        self.mqtt_connected = Gauge(
            "seclusion_mqtt_connected", "1 while connected to the broker", registry=self.registry
        )
        self.ingest_lag = Histogram(
            "seclusion_ingest_lag_seconds",
            "From a message's arrival at the hub to its commit",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )


class Inbox(queue.SimpleQueue["Inbound | Command"]):
    """The ingest thread's inbox: what to apply, in order. `wake` (set by an MQTT adapter the ingest
    thread drives itself, `HubMqtt.pump`) ends that thread's wait for the network when another thread
    puts something in."""

    def __init__(self) -> None:
        super().__init__()
        self.wake: Callable[[], None] = lambda: None

    def put(self, item: Inbound | Command, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.wake()

    def put_nowait(self, item: Inbound | Command) -> None:
        self.put(item)  # SimpleQueue's own would bypass `put`, and with it the wake-up


@dataclass
class Command:
    """Work for the ingest thread from elsewhere (the API): it alone changes the room machines, so a
    change made by a person is stored in order with the devices' messages, in the same kind of batch."""

    apply: Callable[[Batch], object]
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None
    # Once the ingest thread has taken it (`started`), it will be stored; before, the caller who gave up
    # waiting withdraws it (`withdrawn`), so that a person's retry never applies it twice.
    claim: threading.Lock = field(default_factory=threading.Lock)
    started: bool = False
    withdrawn: bool = False


class _Poisoned(Exception):
    def __init__(self, item: Inbound, reason: str) -> None:
        super().__init__(reason)
        self.item = item
        self.reason = reason


@dataclass
class _Pending:
    """A batch being applied: what to write and what to tell the broker once it is written."""

    batch: Batch = field(default_factory=Batch)
    acks: list[tuple[int, int, int]] = field(default_factory=list)
    devices: set[tuple[str, str, str]] = field(default_factory=set)
    received: list[dt.datetime] = field(default_factory=list)  # one per event applied and stored
    commands: list[Command] = field(default_factory=list)
    out: Outbound = field(default_factory=Outbound)  # what to tell once stored
    touched: set[tuple[str, str]] = field(default_factory=set)  # rooms whose state changed
    # The backlog is through in this batch: the hub's status is said once it is stored and told.
    say_status: bool = False


# Everything of an episode that its row in the episode table shows, except the supervision evidence
# (observer marks and check-ins), which may wait for the row's refresh (HubService.episode_refresh_s).
# Derived from the model, so a field added later is never left out.
_EVIDENCE = frozenset({"observer", "checks"})
_ROW_FIELDS = tuple(name for name in Episode.model_fields if name not in _EVIDENCE)


# "Deferred since" for an episode whose row nothing is known of: its refresh is due at once.
LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def _transient(exc: BaseException) -> bool:
    """A database error that says nothing about the message being written: locked by another writer,
    a disk or connection fault, a server going away. Such a message is retried for as long as it takes,
    never set aside as refused (a read, `Store.ping`, can succeed while writes still fail)."""
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sqlite3.OperationalError))


def _row_key(ep: Episode) -> tuple[object, ...]:
    return tuple(
        tuple(_snapshot(v) for v in value) if isinstance(value, list) else value
        for value in (getattr(ep, name) for name in _ROW_FIELDS)
    )


_SCALARS = (str, int, float, bool, dt.datetime, type(None))


def _snapshot(item: object) -> object:
    """An item of an episode's list (a segment, an unknown interval, a review) as it is now: its field
    values, when they are all plain values (which never change in place), else its repr."""
    if isinstance(item, BaseModel):
        values = tuple(item.__dict__.values())
        if all(isinstance(v, _SCALARS) for v in values):
            return values
    return repr(item)


class HubService:
    """Owns the room machines. The ingest thread is their only writer; readers take `lock`."""

    def __init__(
        self,
        sites: list[LoadedSite],
        store: Store,
        clock: Clock,
        topics: Topics,
        *,
        batch_size: int = 500,
        linger_s: float = 0.003,
        metrics: HubMetrics | None = None,
        delivery: AlertDelivery | None = None,
        coalesce_s: float = 0.25,
        report_check_s: float = 60.0,
        episode_refresh_s: float = 1.0,
        public_url: str = "",
        stall_s: float = STALL_S,
    ) -> None:
        self.sites = {s.id: s for s in sites}
        self.store = store
        self.clock = clock
        self.topics = topics
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.metrics = metrics or HubMetrics()
        self.decoder = Decoder(topics, sites)
        self.delivery = delivery or AlertDelivery(self.sites, topics, clock, public_url=public_url)
        self.delivery.record_rows = self._record_delivery
        self.delivery.publish = lambda topic, payload, qos, retain: self.publish(topic, payload, qos, retain)
        self.delivery.connected = lambda: self.listening()
        self.lock = threading.RLock()
        self.inbox = Inbox()
        # The MQTT adapter's `pump` when the ingest thread drives the connection itself (HubMqtt inline):
        # then every wait of that thread reads and writes the broker's messages meanwhile.
        self.pump: Callable[[float], None] | None = None
        self.machines: dict[tuple[str, str], RoomMachine] = {}
        # Each room's next deadline, kept for the rooms each batch touches: the wait and the tick then
        # look at one number per room, not at its whole state (bench/alerts.py: 2,000 rooms).
        self._deadlines: dict[tuple[str, str], dt.datetime | None] = {}
        self._due: list[tuple[dt.datetime, tuple[str, str]]] = []  # a heap; stale entries skipped
        self._open: set[tuple[str, str]] = set()  # rooms with an open episode (the gauge)
        self._pending: _Pending | None = None
        self._was_listening = True
        self._ticked_at: dt.datetime | None = None  # the clock at the last `_tick`: put back if later
        # True while a batch waits to be stored (a write refused, a bug retried): the messages behind it
        # wait in the inbox, the devices' heartbeats among them, so the hub is as deaf as without the
        # broker, and device liveness is not judged (semantics 4.1, 4.6).
        self._stalled = False
        self._backlog_applied = False  # the marker's place in the inbox reached (backlog_marker)
        # Since when the batch in hand has waited to be stored (None between batches), and whether the
        # hub has said it is offline because of it (`watch`): online again with the next commit.
        self.stall_s = stall_s
        self.monotonic: Callable[[], float] = time.monotonic
        self._unstored_since: float | None = None
        self._said_offline = False
        self._status_lock = threading.Lock()
        self._connection = 0  # counts `reconnected`: a marker counts only for its own connection
        self._status_said = -1  # the connection whose status the hub has said (once its backlog was through)
        self._offline_said_on: int | None = None  # the connection the hub last said offline on
        # While messages are queued, a touched room's alerts are evaluated at most this long after.
        self.coalesce_s = coalesce_s
        self.report_check_s = report_check_s
        self._report_next: dt.datetime | None = None  # set by the last look at the records (ingest thread)
        self.records = RecordStore(store.engine)
        self._looked_at: dict[tuple[str, str], dt.datetime] = {}
        # The episode table's row of an open episode whose only news is supervision evidence (observer
        # marks, check-ins) is rewritten at most every `episode_refresh_s`; anything else about it is
        # written with the batch that changed it. The API reads open episodes from the rooms themselves.
        # The room's state, written with every batch, names the episode's row when this process knows
        # that row holds the episode as it is (`_current_rows`), and otherwise carries it whole
        # (store.room_state_row): after a (re)load nothing is known, until the row is written again.
        self.episode_refresh_s = episode_refresh_s
        self._episode_rows: dict[str, tuple[tuple[object, ...], dt.datetime]] = {}  # as last committed
        self._deferred: dict[str, tuple[tuple[str, str], dt.datetime]] = {}  # id: room, deferred since
        self._current_rows: set[str] = set()  # open episodes whose row is the episode as it is
        # How a room looks on the live board (set by the API, which owns the JSON of a room).
        self.room_view: Callable[[RoomMachine, dt.datetime], dict[str, object]] | None = None
        # Episodes entered by hand and still going on, by room (no machine holds them): the live rooms
        # show them, so a room with a child recorded as confined never reads "not in use". Read and
        # changed under `lock`.
        self.manual_open: dict[tuple[str, str], tuple[str, dt.datetime]] = {}
        self._manual_lock = threading.Lock()
        self.ack_message: Callable[[int, int, int], None] = lambda _mid, _qos, _conn: None
        self.publish: Callable[[str, bytes, int, bool], None] = lambda _t, _p, _q, _r: None
        self.backlog_done: Callable[[], bool] = lambda: True
        self.listening: Callable[[], bool] = lambda: True
        self._stop = threading.Event()
        self._taking = True  # False from `stop_taking`: what the broker delivers is left to it
        self._gave_up = False  # a batch given up unwritten as the hub stopped (process)
        # The rooms may be ahead of the database (a reload failed): no batch is applied until one works.
        self._rooms_dirty = False
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._listening_since = time.monotonic()
        self._evaluated = False
        self.healthy = True
        self._load_machines()
        self.refresh_manual()  # after the rooms: one holding an episode that has ended since lets it go
        for (site, room), machine in self.machines.items():
            # A review recorded on an older episode just before a crash: its alert is looked at again.
            for episode_id in sorted(machine.outliving()):
                self.reconsider(site, room, episode_id)

    # -- lifecycle

    def _reload_rooms(self) -> None:
        """Put the rooms back where the database is (a batch failed after applying). Until that has
        worked no batch is applied (`process`): taken again on rooms still ahead of the database, its
        events would be dropped as duplicates, then acknowledged without ever being stored."""
        self._rooms_dirty = True
        self._load_machines()
        self._rooms_dirty = False

    def _load_machines(self) -> None:
        snapshots = self.store.load_room_states()
        machines: dict[tuple[str, str], RoomMachine] = {}
        for site in self.sites.values():
            for room in site.spec.rooms:
                state = snapshots.get((site.id, room.id))
                machines[(site.id, room.id)] = RoomMachine(
                    site.id, room, site.policies[room.id], state, tiers=self.delivery.tiers(site.id)
                )
        # Rooms the database holds that no site file names any more (taken out, renamed): nothing times
        # them now, so an episode left open there stays open until a person sees to it. Said at start
        # and in /healthz; their alerts can still be acknowledged and resolved.
        self.unconfigured_rooms: list[dict[str, object]] = [
            {"site": site, "room": room, "open_episode": state.episode is not None}
            for (site, room), state in sorted(snapshots.items())
            if (site, room) not in machines
        ]
        # Whatever was known of the episode table is known no longer (a failed write, a restart): every
        # open episode is carried whole by its room and its row rewritten with the next batch.
        self._current_rows.clear()
        for key, machine in machines.items():
            ep = machine.episode
            if ep is not None and not ep.manual:
                self._deferred[ep.id] = (key, LONG_AGO)
        with self.lock:
            self.machines = machines
            self._deadlines = {}
            self._due = []
            for key, machine in machines.items():
                self._set_deadline(key, machine.next_deadline())
            self._open = {key for key, m in machines.items() if m.episode is not None}
        self.metrics.open_episodes.set(len(self._open))

    def start(self) -> None:
        for site in self.sites_without_recipients():
            # Site id and tier names only: never a recipient's name or URL.
            log.warning(
                "site %s has no recipients: every alert reaches only the live board and the room's "
                "indicator (add `recipients` to its site file)",
                site,
            )
        for gone in self.unconfigured_rooms:
            # Site and room ids only, never a child's.
            log.warning(
                "room %s of site %s is in the database but in no site file: it is not watched%s",
                gone["room"],
                gone["site"],
                ", and an episode there is still open: nothing times it or alerts on it (put the room "
                "back in its site file to go on timing it)"
                if gone["open_episode"]
                else "",
            )
        now = self.clock.now()
        with self.lock:
            for machine in self.machines.values():
                machine.hub_started(now)
        self._resume_deliveries()
        self._stop.clear()
        self._taking = True
        self._said_offline = False
        self._gave_up = False
        self._thread = threading.Thread(target=self._run, name="seclusion-ingest", daemon=True)
        self._thread.start()
        self._watcher = threading.Thread(target=self._watch_loop, name="seclusion-stall-watch", daemon=True)
        self._watcher.start()

    def stop_taking(self) -> None:
        """Take no more messages from the broker (the hub is stopping): each one delivered from now on
        is left unacknowledged, so the broker keeps it and delivers it again at the next start, after
        everything taken before it (none is lost, and none is stored twice over). The hub says it is
        offline at once: while it writes what it took (seconds, with a notice in flight) the rooms run
        their own fail-safe, as nothing it hears now is acted on."""
        with self._status_lock:
            self._taking = False
            self._said_offline = True
            self._publish_status(online=False)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the notifiers, then the ingest thread, and write what they reported on the way.

        The notifiers stop first, while the ingest thread still runs: the notices they try once as they
        stop report their outcomes to the inbox, and those are written like any other. What arrived
        after the ingest thread's last batch is written here, once it has ended (the database has one
        writer at a time), each message acknowledged only after its commit, as always. An outcome never
        written would leave its delivery `pending`, and the next start would send it again.
        """
        self.delivery.stop()
        self._stop.set()
        self.inbox.wake()  # the ingest thread, waiting on the network, sees it at once
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.join(timeout)
        thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():
            log.error(
                "the ingest thread did not end within %.0f s; what is left in its inbox is not written",
                timeout,
            )
            return
        self._drain()

    def _drain(self) -> None:
        """After the ingest thread ended: take and write what is left in its inbox, in order. The
        outcomes reported by writing it (the live board's, the indicator's) are taken too. Nothing, if
        a batch was given up unwritten as the hub stopped (a stalled database): what came after it must
        not be stored before it (process)."""
        if self._gave_up:
            log.warning("a batch was left unwritten at stop; what is left in the inbox is not written either")
            return
        for _ in range(3):
            items: list[Inbound | Command] = []
            while True:
                try:
                    items.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            if not items:
                return
            for start in range(0, len(items), self.batch_size):
                try:
                    written = self.process(items[start : start + self.batch_size])
                except Exception:
                    written = False
                    log.exception("writing what was left in the inbox at stop failed")
                if not written:
                    # Nothing of this batch, nor anything after it, is acknowledged: the broker sends
                    # the messages again, in order, and their sends stay `pending`, for the next start.
                    log.warning("the database did not take what was left in the inbox at stop")
                    return

    def refresh_manual(self) -> None:
        """Read the open hand-entered episodes again (at start, and after one is entered or ended):
        the latest-started of each room's."""
        # The read and the replace under one lock: a read made before another's entry, replacing the
        # map after that entry's own refresh, would hide it.
        with self._manual_lock:
            found: dict[tuple[str, str], tuple[str, dt.datetime]] = {}
            for row in self.store.open_manual_episodes():
                found[(row.site, row.room)] = (row.id, row.started_at)
            with self.lock:
                self.manual_open = found
                held = any(m.state.manual for m in self.machines.values())
        if found or held:
            # The rooms take them too, on the ingest thread (their duration alerts): not waited for, so
            # a person's entry is answered once stored; the hub's start runs this again.
            self.inbox.put(Command(self._hand_entered))

    def reconsider(self, site: str, room: str, episode_id: str) -> None:
        """An ended episode the room no longer holds was changed where it is stored (a review recorded
        on it): the room looks at its alerts again, on the ingest thread (not waited for)."""
        key = (site, room)

        def apply(batch: Batch) -> None:
            machine = self.machines.get(key)
            stored = self.store.get_episode(episode_id)
            if machine is None or stored is None:
                return
            effects = machine.reconsider(Episode.model_validate_json(stored.data), self.clock.now())
            if effects:
                pending = self._current()
                self._collect(key, effects, pending)
                batch.rooms[key] = machine.state
                pending.touched.add(key)

        self.inbox.put(Command(apply))

    def _hand_entered(self, batch: Batch) -> None:
        """Each room's open hand-entered episodes as the episode table has them now; those a room held
        that have ended are looked at once more, up to their end (a Command: the ingest thread)."""
        pending = self._current()
        now_open: dict[tuple[str, str], list[Episode]] = {}
        for row in self.store.open_manual_episodes():
            ep = Episode.model_validate_json(row.data)
            loaded = self.sites.get(row.site)
            if ep.pupil_id is not None and loaded is not None:
                # The child's age as the register has it now (a date of birth corrected since, another
                # child chosen): the age band's limit follows the register (2.6).
                with self.store.session() as s:
                    pupil = s.get(Pupil, ep.pupil_id)
                born = pupil.date_of_birth if pupil is not None else None
                ep.pupil_age = age_on(born, ep.started_at.astimezone(loaded.zone).date())
            now_open.setdefault((row.site, row.room), []).append(ep)
        for key, machine in self.machines.items():
            open_now = now_open.get(key, [])
            gone = {e.id for e in machine.state.manual} - {e.id for e in open_now}
            ended: list[Episode] = []
            for episode_id in sorted(gone):
                stored = self.store.get_episode(episode_id)
                if stored is not None:
                    ep = Episode.model_validate_json(stored.data)
                    if ep.ended_at is not None:
                        ended.append(ep)
            if machine.hand_entered(open_now, ended):
                batch.rooms[key] = machine.state
                pending.touched.add(key)

    @property
    def live(self) -> LivePush | None:
        """The live channel to the boards: every alert and room change is pushed there."""
        return self.delivery.live

    @live.setter
    def live(self, feed: LivePush | None) -> None:
        self.delivery.live = feed

    def _tell_people(self, pending: _Pending) -> None:
        """After the commit: the live boards, the indicators and the notifiers (semantics 5.3)."""
        out = pending.out
        live = self.delivery.live
        if live is not None and live.has_subscribers and self.room_view is not None and pending.touched:
            now = self.clock.now()
            # Worked out and pushed under the lock, as an API thread pushes a room's view (a hand-entered
            # episode's): an older view of a room never overtakes a newer one on the boards.
            with self.lock:
                for key in sorted(pending.touched):
                    live.publish("room", self.room_view(self.machines[key], now))
        if out:
            self.delivery.carry_out(out, [])

    def _resume_deliveries(self) -> None:
        """Sends decided before a crash and not delivered: take them up again (semantics 4.6)."""
        unfinished = self.store.unfinished_deliveries()
        if not unfinished:
            return
        alerts: dict[str, Alert] = {}
        for row in unfinished:
            if row.alert_id not in alerts:
                stored = self.store.get_alert(row.alert_id)
                if stored is not None:
                    alerts[row.alert_id] = Alert.model_validate_json(stored.data)
        count = self.delivery.resume(unfinished, alerts)
        log.info("took up %d unfinished alert sends from before the restart", count)

    def _record_delivery(self, attempts: list[dict[str, object]], updates: list[dict[str, object]]) -> None:
        """A channel's outcome, from any thread: written by the ingest thread in its next batch."""

        def apply(batch: Batch) -> None:
            batch.attempts.extend(attempts)
            batch.delivery_updates.extend(updates)

        self.inbox.put(Command(apply))

    def report_check(self) -> Command:
        """The ingest thread's look at records whose deadlines passed (`report_overdue`, semantics 5)."""

        def apply(batch: Batch) -> None:
            try:
                look(batch)
            except Exception:
                # Nobody waits for this command: say it here, and try again at the next look.
                log.exception("looking for overdue records failed")
                raise

        def look(batch: Batch) -> None:
            now = self.clock.now()
            overdue = self.records.overdue(now)
            active = self.store.active_alerts_of_kind("report_overdue")
            ids = {r.id for r in overdue} | {a.detail.get("incident_id", "") for a in active}
            rows = {r.id: r for r in overdue}
            for incident_id in ids - set(rows):
                row = self.records.incident(incident_id) if incident_id else None
                if row is not None:
                    rows[row.id] = row
            dues = [report_due(row) for row in rows.values()]
            episodes = {d.episode_id for d in dues}
            # Every report alert of these records, active or not (a step has one per round: a record's
            # child changed starts the parents' steps again); one this batch already changed
            # (acknowledged just before) is taken as it now is.
            known = self.store.alerts_of_episodes("report_overdue", sorted(episodes))
            known.update(
                {
                    i: a
                    for i, a in batch.alerts.items()
                    if a.kind == "report_overdue" and a.episode_id in episodes
                }
            )
            by_room: dict[tuple[str, str], list[AlertSaved | AlertSend]] = {}
            changed: dict[str, Alert] = dict(known)
            for effect in overdue_effects(dues, known, self._report_context, now):
                by_room.setdefault((effect.alert.site, effect.alert.room), []).append(effect)
                changed[effect.alert.id] = effect.alert
            pending = self._current()
            for key, effects in by_room.items():
                # Each change in the episode's timeline too, as a room's own alerts are.
                self._collect(key, RoomMachine.with_notes(effects, now), pending)
            # The next look: at the soonest record deadline or send due (escalation, reminder), so an
            # overdue record is raised on time rather than up to `report_check_s` late.
            sends = [
                a.next_send_at
                for a in changed.values()
                if a.active and a.next_send_at is not None and a.next_send_at > now
            ]
            upcoming = [t for t in (self.records.next_deadline(now), *sends) if t is not None]
            self._report_next = min(upcoming, default=None)

        return Command(apply)

    def _report_context(self, site: str, room: str) -> AlertContext:
        """What a record's `report_overdue` alerts are sent by (5.2): its room's policy (`ack_timeout_s`,
        `renotify_s`, the room's `policy_overrides` included) and the tiers with recipients, as the
        room's machine has them. Never held: a record's deadline is no device of a room in maintenance.
        A room no longer configured is sent by its site's profile (the built-in one for a site no longer
        configured either) to its site's tiers."""
        machine = self.machines.get((site, room))
        if machine is None:
            loaded = self.sites.get(site)
            policy = loaded.profile if loaded is not None else Policy()
            return AlertContext(site, room, policy, self.delivery.tiers(site), held=False)
        return AlertContext(site, room, machine.policy, machine.tiers, held=False)

    def submit(self, inbound: Inbound) -> None:
        """Called by the MQTT adapter (paho's network thread, or mqtt_process's reader thread): hand
        over, never block."""
        if self._taking:
            self.inbox.put(inbound)

    # -- the ingest thread

    def _run(self) -> None:
        next_report_check = 0.0
        retry: list[Inbound | Command] = []
        failures = 0
        while not self._stop.is_set():
            items = retry
            try:
                if not items:
                    due = self._report_next is not None and self.clock.now() >= self._report_next
                    if due or time.monotonic() >= next_report_check:
                        # A look every `report_check_s`, and at the soonest deadline or send the last
                        # look found (`_report_next`): a record's deadline is raised on time, not late.
                        next_report_check = time.monotonic() + self.report_check_s
                        self._report_next = None  # the look works it out again
                        self.inbox.put(self.report_check())
                    items = self._take()
                self.process(items)
                retry, failures = [], 0
            except Exception:
                # A bug of ours outside a message's own apply (the rules' look at the clock, an effect's
                # handling): the rooms may have moved ahead of the database. Put them back where the
                # database is and take the same messages again after a pause, for as long as it takes:
                # unacknowledged until stored, so none is lost, and a device is never told a later one
                # is stored while these are not. /healthz says so meanwhile. A person's action already
                # stored (done) is not taken again.
                failures += 1
                log.exception(
                    "ingest batch of %d messages failed (attempt %d); retrying", len(items), failures
                )
                self.healthy = False
                self._stalled = True
                self.metrics.internal_errors.inc()
                try:
                    self._reload_rooms()
                except Exception:
                    log.exception("reloading the rooms failed; retried before anything is applied")
                retry = [i for i in items if not (isinstance(i, Command) and i.done.is_set())]
                self._pause(min(30.0, 0.5 * 2**failures))
        if retry:
            # Stopped while a batch waited to be taken again: it was never stored, so nothing after it
            # may be (`_drain`): the broker delivers them all again, in order, at the next start.
            self._gave_up = True

    def run_command(self, apply: Callable[[Batch], object], timeout: float = 15.0) -> object:
        """Run `apply` on the ingest thread within its next batch; return its result once stored."""
        command = Command(apply)
        self.inbox.put(command)
        if not command.done.wait(timeout):
            with command.claim:
                if not command.started:
                    command.withdrawn = True  # never applied: the person may safely try again
                    raise TimeoutError("the hub did not store the change in time; nothing was changed")
            # Taken and being stored (a slow database): its outcome, not a second try, is the answer.
            if not command.done.wait(max(60.0, timeout)):
                raise TimeoutError("the hub is still storing the change: look again before trying again")
        if command.error is not None:
            raise command.error
        return command.result

    def _take(self) -> list[Inbound | Command]:
        timeout = self._wait_seconds()
        items: list[Inbound | Command] = []
        pump = self.pump
        try:
            if pump is None:
                first = self.inbox.get(timeout=timeout)
            else:
                first = self._pump_for_first(pump, timeout)
        except queue.Empty:
            return items
        items.append(first)
        # Gather a batch for `linger_s` from the arrival of its first message: one commit (an fsync) and
        # one room snapshot serve the whole batch (measured: bench/ingest.py). One sleep, then take what
        # came: waking for every message as it arrives cost more than the messages (the thread handing
        # them over wants the same interpreter lock). A message that already waited while the last batch
        # was written has gathered its batch: no more sleep for it than what is left of its linger.
        # Driving the connection itself, the thread reads what arrives meanwhile instead of sleeping.
        if self.linger_s > 0 and 1 + self.inbox.qsize() < self.batch_size:
            waited = (
                (self.clock.now() - first.received_at).total_seconds() if isinstance(first, Inbound) else 0
            )
            if waited < self.linger_s:
                rest = self.linger_s - max(0.0, waited)
                if pump is None:
                    time.sleep(rest)
                else:
                    until = time.monotonic() + rest
                    while (left := until - time.monotonic()) > 0 and 1 + self.inbox.qsize() < self.batch_size:
                        pump(left)
        while len(items) < self.batch_size:
            try:
                items.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return items

    def _pump_for_first(self, pump: Callable[[float], None], timeout: float) -> Inbound | Command:
        """The inbox's first item, driving the connection until one comes (or `queue.Empty`). The
        connection is driven once first, even with items waiting (a backlog taken a batch at a time):
        what the last batch queued, its acknowledgements, goes out now, not after the backlog."""
        pump(0.0)
        until = time.monotonic() + timeout
        while True:
            try:
                return self.inbox.get_nowait()
            except queue.Empty:
                left = until - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    raise
                pump(left)

    def _pause(self, seconds: float) -> bool:
        """Wait `seconds` before trying again (True: stopping meanwhile). Driving the connection, the
        ingest thread goes on with it meanwhile: the link stays alive, and what arrives waits in the
        inbox, unacknowledged until stored, as it would in the broker."""
        pump = self.pump
        if pump is None or threading.current_thread() is not self._thread:
            return self._stop.wait(seconds)
        until = time.monotonic() + seconds
        while not self._stop.is_set() and (left := until - time.monotonic()) > 0:
            pump(min(left, 0.5))
        return self._stop.is_set()

    def _wait_seconds(self) -> float:
        now = self.clock.now()
        with self.lock:
            soonest = self._soonest()
        if soonest is None:
            return 0.5
        return max(0.0, min(0.5, (soonest - now).total_seconds()))

    def process(self, items: list[Inbound | Command]) -> bool:
        """Apply a batch, write it, then acknowledge it; False only when the hub is stopping and the
        batch was given up unwritten (nothing after it may then be written: its devices would be told
        a later `seq` is stored, and this batch's events, sent again, would be taken for duplicates).

        A message that a bug of ours fails to apply, or that the database refuses while it accepts
        others, is set aside as a dead letter with the error, and the rest of the batch is applied again
        from the stored state: one poisoned message never stops the rooms. A database that refuses
        everything is retried with backoff, for as long as it takes, and nothing is acknowledged.
        """
        if self._unstored_since is None:
            self._unstored_since = self.monotonic()
        attempt = 0
        while self._rooms_dirty:
            # A reload failed (the database down for reads too): the rooms may hold a batch that was
            # never stored. Nothing is applied to them until they are put back where the database is.
            try:
                self._reload_rooms()
            except Exception:
                attempt += 1
                self._stalled = True
                self.healthy = False
                log.exception(
                    "reloading the rooms failed (attempt %d); nothing is applied until it works", attempt
                )
                if self._pause(min(30.0, 0.5 * 2**attempt)):
                    self._gave_up = True  # `_drain` then writes nothing: these were never stored
                    return False
        attempt = 0
        poisoned: dict[int, str] = {}
        while True:
            try:
                pending = self._apply(items, poisoned)
            except _Poisoned as bad:
                log.error("applying a message on %s failed: %s", bad.item.topic, bad.reason)
                self.metrics.internal_errors.inc()
                poisoned[id(bad.item)] = bad.reason
                self._reload_rooms()  # undo what the batch did before it failed
                continue
            written_at = self.clock.now()
            deferred, keys = self._defer_episode_rows(pending.batch, written_at)
            pending.batch.stale_episodes = self._stale(pending.batch, deferred)
            try:
                self.store.write(pending.batch, written_at)
                self._episode_rows_written(pending.batch, deferred, keys, written_at)
                break
            except Exception as exc:
                attempt += 1
                self._stalled = True
                self.metrics.write_failures.inc()
                log.exception("database write failed (attempt %d); reloading the rooms and retrying", attempt)
                self.healthy = False
                # The machines moved ahead of the database: put them back where the database is.
                self._reload_rooms()
                if attempt >= 3 and len(items) > 1:
                    for n, item in enumerate(items):  # find the message the database refuses, if one
                        try:
                            taken = self.process([item])
                        except Exception:
                            # Those before it are stored and acknowledged: the caller (`_run`) takes
                            # only the rest again, not their dead letters and acknowledgements twice.
                            del items[:n]
                            raise
                        if not taken:
                            return False  # stopping: nothing after it
                    return True
                single = items[0] if len(items) == 1 else None
                refused_for_good = attempt >= 3 and not _transient(exc) and self.store.ping()
                if refused_for_good and isinstance(single, Inbound) and id(single) not in poisoned:
                    poisoned[id(single)] = f"the database refused it: {type(exc).__name__}: {exc}"[:1500]
                    continue
                if refused_for_good and isinstance(single, Command):
                    # A person's change the database refuses alone, while it answers (a bug of ours):
                    # tried again for ever, it would hold back every later message. Nothing of it is
                    # kept (the rooms were put back above); the person is told, the hub goes on.
                    log.error("a person's change was refused by the database; nothing of it was stored")
                    single.error = ChangeRefused(
                        "the database refused this change, so nothing was changed (the hub's log has "
                        f"the reason: {type(exc).__name__})"
                    )
                    single.done.set()
                    self._stored()
                    return True
                if self._pause(min(30.0, 0.5 * 2**attempt)):
                    self._gave_up = True  # `_drain` then writes nothing after it
                    return False
        self._stored()
        stored = self.clock.now()
        for received in pending.received:
            self.metrics.ingest_lag.observe(max(0.0, (stored - received).total_seconds()))
        self.metrics.accepted.inc(len(pending.received))
        for command in pending.commands:
            command.done.set()
        for mid, qos, conn in pending.acks:
            self.ack_message(mid, qos, conn)
        self._tell_devices(pending.devices)
        self._tell_people(pending)
        if pending.say_status:
            with self._status_lock:
                if self._status_said != self._connection and self.listening() and self._taking:
                    self._publish_status(online=not self._said_offline)
                    self._status_said = self._connection
        with self.lock:
            for key in pending.touched:
                if self.machines[key].episode is not None:
                    self._open.add(key)
                else:
                    self._open.discard(key)
            self.metrics.open_episodes.set(len(self._open))
        self.metrics.queue_depth.set(self.inbox.qsize())
        return True

    def _stored(self) -> None:
        """A batch is stored: the hub is healthy again, and says it is online if it had said otherwise."""
        self.healthy = True
        self._stalled = False
        with self._status_lock:
            self._unstored_since = None
            if not self._said_offline or not self._taking:
                return
            self._said_offline = False
            if self._status_said == self._connection:
                # Else the connection's backlog is not through yet: online is said once it is.
                self._publish_status(online=True)
        log.warning("storing again: the hub says it is online")

    # -- the stall watch: a database that takes nothing must not leave the rooms relying on the hub

    def _watch_loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.watch()
            except Exception:
                log.exception("watching the ingest for a stall failed")

    def watch(self) -> None:
        """Say the hub is offline (retained `_hub/status`) once a batch has waited `stall_s` to be
        stored: the hub hears the broker but can neither keep nor act on what it hears, so no alert
        would be raised, and the rooms, believing the hub online, would keep their own alarms quiet.
        With the hub offline each room's agent runs its fail-safe (semantics 5.4); the next stored batch
        says online again (`_stored`). `/healthz` says `healthy: false` meanwhile."""
        with self._status_lock:
            if self._said_offline:
                # Said again on each new connection while it holds: the adapter counts a connection up
                # only after `reconnected`, and a broker that saw no loss (the hub's side of the link
                # dropped, its session taken over at once) publishes no Last Will; the broker would keep
                # the last connection's online word for as long as the database takes nothing.
                if self._offline_said_on != self._connection and self._publish_status(online=False):
                    log.warning("connected again while storing nothing: the hub says again it is offline")
                return
            since = self._unstored_since
            if since is None:
                return
            waited = self.monotonic() - since
            if waited < self.stall_s:
                return
            self._said_offline = True
            self.healthy = False  # a write that waits (a lock held, a server silent) raises nothing
            self._publish_status(online=False)
        log.error(
            "nothing stored for %.0f s (the database refuses or does not answer): the hub now says it "
            "is offline, so that the rooms' own alarms take over until it stores again",
            waited,
        )

    def _publish_status(self, *, online: bool) -> bool:
        """Only while connected: paho would queue it and send it after a reconnect, behind the status
        the reconnect says, and an older word would be the one the broker keeps. After a reconnect the
        status is said again once the backlog marker is back (`backlog_marker`), and offline by `watch`
        as soon as the link counts as up. True when said."""
        if not self.listening():
            return False
        payload = HubStatusPayload(online=online, ts=self.clock.now())
        self.publish(self.topics.hub_status, dump_payload(payload), 1, True)
        if not online:
            self._offline_said_on = self._connection
        return True

    def _apply(self, items: list[Inbound | Command], poisoned: dict[int, str]) -> _Pending:
        pending = _Pending()
        with self.lock:
            self._pending = pending
            for item in items:
                if isinstance(item, Command):
                    with item.claim:
                        if item.withdrawn:
                            continue  # its caller gave up before it was taken: never applied
                        item.started = True
                    pending.commands.append(item)
                    try:
                        item.result = item.apply(pending.batch)
                    except Exception as exc:  # reported to the caller, not a reason to stop ingest
                        item.error = exc
                    continue
                pending.acks.append((item.mid, item.qos, item.conn))
                reason = poisoned.get(id(item))
                if reason is not None:
                    pending.batch.dead_letters.append(
                        dead_letter_row(item.topic, item.payload, reason, item.received_at)
                    )
                    continue
                self._apply_one(item, pending)
            # Liveness is judged only while the hub hears the broker and has taken its backlog: the
            # hub's own deafness is not the devices' downtime (semantics 4.6).
            backlog_through = self.backlog_done() or time.monotonic() - self._listening_since > BACKLOG_WAIT_S
            if backlog_through:
                self._tick(pending)
                if self._status_said != self._connection:
                    pending.say_status = True  # also when the marker never came back (BACKLOG_WAIT_S)
            self._refresh_deferred(pending.batch)
            self._pending = None
        return pending

    def _defer_episode_rows(
        self, batch: Batch, now: dt.datetime
    ) -> tuple[dict[str, tuple[str, str]], dict[str, tuple[object, ...]]]:
        """Take out of the batch the open episodes whose row changed only in supervision evidence since
        it was last written, less than `episode_refresh_s` ago; returns them (id: room), and the row
        keys it worked out for those that stay (id: key)."""
        deferred: dict[str, tuple[str, str]] = {}
        keys: dict[str, tuple[object, ...]] = {}
        if self.episode_refresh_s <= 0:
            return deferred, keys
        refresh = dt.timedelta(seconds=self.episode_refresh_s)
        for episode_id, ep in list(batch.episodes.items()):
            last = self._episode_rows.get(episode_id)
            if ep.ended_at is not None or ep.manual or last is None or now - last[1] >= refresh:
                continue
            key = keys[episode_id] = _row_key(ep)
            if last[0] == key:
                del batch.episodes[episode_id]
                del keys[episode_id]
                deferred[episode_id] = (ep.site, ep.room)
        return deferred, keys

    def _stale(self, batch: Batch, deferred: dict[str, tuple[str, str]]) -> frozenset[str]:
        """The open episodes of the batch's rooms that the episode table will not hold as the rooms have
        them once the batch is written: the rooms carry those whole. An ended episode's row is written
        with every change to it (never deferred), so it is never among them."""
        written = batch.episodes.keys()
        stale = set(deferred)
        for state in batch.rooms.values():
            ep = state.episode
            if ep is not None and ep.id not in written and ep.id not in self._current_rows:
                stale.add(ep.id)
        return frozenset(stale)

    def _episode_rows_written(
        self,
        batch: Batch,
        deferred: dict[str, tuple[str, str]],
        keys: dict[str, tuple[object, ...]],
        now: dt.datetime,
    ) -> None:
        """After the commit: what the episode table now holds, and what waits for its refresh."""
        for episode_id, ep in batch.episodes.items():
            self._deferred.pop(episode_id, None)
            if ep.ended_at is None and not ep.manual:
                key = keys.get(episode_id)
                self._episode_rows[episode_id] = (key if key is not None else _row_key(ep), now)
                self._current_rows.add(episode_id)
            else:
                self._episode_rows.pop(episode_id, None)
                self._current_rows.discard(episode_id)
        for episode_id, room in deferred.items():
            self._deferred.setdefault(episode_id, (room, now))
            self._current_rows.discard(episode_id)

    def _refresh_deferred(self, batch: Batch) -> None:
        """Put back into the batch the open episodes whose row was written `episode_refresh_s` ago or
        more and has news waiting (every batch, an idle one at least every half second, runs this)."""
        if not self._deferred:
            return
        now = self.clock.now()
        refresh = dt.timedelta(seconds=self.episode_refresh_s)
        for episode_id, (room, since) in list(self._deferred.items()):
            written = self._episode_rows.get(episode_id)
            if now - (written[1] if written is not None else since) < refresh:
                continue
            machine = self.machines.get(room)
            ep = machine.episode if machine is not None else None
            if ep is None or ep.id != episode_id:
                del self._deferred[episode_id]  # it ended, and was written then
                continue
            batch.episodes[episode_id] = ep

    def _apply_one(self, inbound: Inbound, pending: _Pending) -> None:
        batch = pending.batch
        try:
            decoded = self.decoder.decode(inbound)
            machine = self.machines[(decoded.site, decoded.room)]
            outcome = machine.handle(decoded.message, inbound.received_at)
        except RejectedMessage as exc:
            channel = inbound.topic.rsplit("/", 1)[-1]
            self.metrics.rejected.labels(
                channel=channel if channel in ("event", "status", "heartbeat") else "other"
            ).inc()
            batch.dead_letters.append(
                dead_letter_row(inbound.topic, inbound.payload, exc.reason, inbound.received_at)
            )
            return
        except Exception as exc:
            # A bug of ours, not a bad message: the machine may be half-changed, so the batch starts
            # again from the stored state without this message, which is kept with the error.
            log.exception("applying a message on %s failed", inbound.topic)
            raise _Poisoned(inbound, f"internal error while applying: {type(exc).__name__}: {exc}") from exc
        message = decoded.message
        key = (decoded.site, decoded.room)
        if isinstance(message, SensorEvent):
            # Told again what is stored, duplicates included: a re-sent event gets its ack back.
            pending.devices.add((decoded.site, decoded.room, message.device))
            if outcome.duplicate:
                self.metrics.duplicates.inc()
                return
            if outcome.gap:
                self.metrics.gaps.inc(outcome.gap)
            batch.events.append(
                {
                    "site": decoded.site,
                    "room": decoded.room,
                    "device": message.device,
                    "epoch": message.epoch,
                    "seq": message.seq,
                    "event_id": message.event_id,
                    "kind": message.kind,
                    "value": message.value,
                    "staff": message.staff,
                    # Stored at the time it was applied at, so an episode's timeline finds it; the
                    # device's own `ts`, when 4.5 timed it otherwise, beside it.
                    "ts": outcome.ts or message.ts,
                    "device_ts": message.ts if outcome.ts not in (None, message.ts) else None,
                    "received_at": inbound.received_at,
                }
            )
            pending.received.append(inbound.received_at)
        self._collect(key, outcome.effects, pending)
        batch.rooms[key] = machine.state
        pending.touched.add(key)

    def _tick(self, pending: _Pending) -> None:
        """Let time pass on the rooms this batch touched and on those with a deadline due: their alerts
        are evaluated (always, once the backlog is through) and device liveness judged (only while the
        hub hears the broker: its own deafness is not the devices' downtime, semantics 4.6)."""
        now = self.clock.now()
        listening = self.listening() and not self._stalled
        # The rooms' cached deadlines leave out device silence while the hub is deaf: when hearing comes
        # back (or goes), every room is looked at again.
        everything = not self._evaluated or listening != self._was_listening
        self._was_listening = listening
        if self._ticked_at is not None and now < self._ticked_at:
            # The hub's own clock was put back (NTP stepping it): every deadline was set by the clock as
            # it was, so later by the step. Every room is looked at again, its deadlines set anew.
            log.warning(
                "the hub's clock went back %.3f s: every room's alerts looked at again",
                (self._ticked_at - now).total_seconds(),
            )
            everything = True
        self._ticked_at = now
        if not self._evaluated:
            # First evaluation after a (re)start, once the broker's backlog is through (semantics 4.6).
            self._evaluated = True
            log.info("backlog through; evaluating %d rooms against the clock", len(self.machines))
        if everything:
            keys: set[tuple[str, str]] = set(self.machines)
        else:
            # A room is looked at once its messages of the moment are in: at once when it was last looked
            # at more than `coalesce_s` ago, else that long after the last look (a room sending 40 events
            # a second is evaluated 4 times a second, not 40; bench/ingest.py). Its deadlines still
            # wake it exactly; this only ever brings a look forward.
            keys = set()
            for key in pending.touched:
                last = self._looked_at.get(key)
                if last is None or self.coalesce_s <= 0 or (now - last).total_seconds() >= self.coalesce_s:
                    keys.add(key)
                    continue
                soon = last + dt.timedelta(seconds=self.coalesce_s)
                current = self._deadlines.get(key)
                if current is None or current > soon:
                    self._set_deadline(key, soon)
        if not everything:
            while self._due and self._due[0][0] <= now:
                when, key = heapq.heappop(self._due)
                if self._deadlines.get(key) == when:
                    keys.add(key)
                    self._deadlines[key] = None  # consumed: whatever comes next is pushed anew
        # After a look at every room, their next looks are spread over the coalescing window rather than
        # left due together: otherwise busy rooms stay in step, and every `coalesce_s` one batch
        # evaluates and writes them all (a 30 ms batch among 4 ms ones at 50 rooms, bench/ingest.py).
        # A room's look is only ever brought forward by this.
        spread = self.coalesce_s / len(keys) if everything and keys and self.coalesce_s > 0 else 0.0
        for i, key in enumerate(sorted(keys) if spread else keys):
            machine = self.machines[key]
            previous = self._looked_at.get(key)
            self._looked_at[key] = now - dt.timedelta(seconds=spread * i)
            effects = machine.tick(now, liveness=listening)
            if effects:
                self._collect(key, effects, pending)
                pending.batch.rooms[key] = machine.state
                pending.touched.add(key)
            # A change of the room's look that time alone brings (maintenance over, a check-in's proof
            # run out) reaches the boards when it comes, not with the room's next message.
            moments = machine.view_moments()
            if previous is not None and any(previous < m <= now for m in moments):
                pending.touched.add(key)
            upcoming = [m for m in moments if m > now]
            deadline = machine.next_deadline(liveness=listening)
            self._set_deadline(
                key, min([*upcoming, *([deadline] if deadline is not None else [])], default=None)
            )

    def _set_deadline(self, key: tuple[str, str], when: dt.datetime | None) -> None:
        if self._deadlines.get(key) == when:
            return
        self._deadlines[key] = when
        if when is not None:
            heapq.heappush(self._due, (when, key))

    def _soonest(self) -> dt.datetime | None:
        """The earliest deadline of any room (stale heap entries are dropped on the way)."""
        while self._due:
            when, key = self._due[0]
            if self._deadlines.get(key) == when:
                return when
            heapq.heappop(self._due)
        return None

    def _collect(self, key: tuple[str, str], effects: list[Effect], pending: _Pending) -> None:
        site, room = key
        batch = pending.batch
        for effect in effects:
            if isinstance(effect, AlertSaved):
                batch.alerts[effect.alert.id] = effect.alert
                pending.out.alerts[effect.alert.id] = effect.alert
            elif isinstance(effect, AlertSend):
                rows = self.delivery.delivery_rows(effect, self.clock.now())
                batch.deliveries.extend(rows)
                pending.out.sends.append((effect, [r["id"] for r in rows]))
            elif isinstance(effect, IndicatorChanged):
                pending.out.indicators[key] = effect
            elif isinstance(effect, EpisodeSaved):
                batch.episodes[effect.episode.id] = effect.episode
            elif isinstance(effect, IncidentOpened):
                batch.incidents_opened.append(
                    {
                        "id": effect.incident_id,
                        "episode_id": effect.episode_id,
                        "site": effect.site,
                        "room": effect.room,
                        "status": "open",
                        "opened_at": effect.at,
                        "updated_at": effect.at,
                        "record": {},  # the column's default, given: the row then skips SQLAlchemy
                    }
                )
            elif isinstance(effect, IncidentStatusChanged):
                batch.incident_status.append(
                    self.incident_end(site, room, effect.incident_id, effect.at, effect.at)
                )
            elif isinstance(effect, OlderLoss):
                batch.loss_windows.append(effect)
            elif isinstance(effect, Note):
                batch.notes.append(
                    {
                        "site": site,
                        "room": room,
                        "episode_id": effect.episode_id,
                        "at": effect.at,
                        "kind": effect.kind,
                        "detail": effect.detail,
                    }
                )

    def _tell_devices(self, devices: set[tuple[str, str, str]]) -> None:
        acks: list[tuple[str, bytes]] = []
        with self.lock:
            for site, room, device in sorted(devices):
                dev = self.machines[(site, room)].state.devices.get(device)
                if dev is not None:
                    payload = ack_payload(dev.epoch, dev.seq)
                    acks.append((self.topics.ack(site, room, device), payload))
        for topic, payload in acks:
            self.publish(topic, payload, 1, True)

    def set_mode(
        self, site: str, room: str, until: dt.datetime | None, reason: str | None, audit: AuditEntry
    ) -> None:
        """Maintenance until `until`, or normal (None), stored through the ingest thread with its audit."""
        key = (site, room)

        def apply(batch: Batch) -> None:
            machine = self.machines[key]
            pending = self._current()
            self._collect(key, machine.set_maintenance(until, reason, self.clock.now()), pending)
            batch.rooms[key] = machine.state
            batch.audits.append(audit)
            # Looked at in this batch: maintenance ended early sends what it held now, and the room's
            # next wake-up is no longer the old end of maintenance.
            pending.touched.add(key)

        self.run_command(apply)

    def _current(self) -> _Pending:
        """The batch being applied (commands run inside it, on the ingest thread)."""
        if self._pending is None:
            raise RuntimeError("a command ran outside a batch")
        return self._pending

    # -- people's actions on alerts, stored through the ingest thread

    def _room_command(
        self,
        key: tuple[str, str],
        act: Callable[[RoomMachine, dt.datetime], tuple[object, list[Effect]]],
        unheld: Callable[[dt.datetime], tuple[object, list[Effect]]] | None = None,
        entry: AuditEntry | None = None,
    ) -> object:
        """Run `act` on the room's machine in the next batch. A room no longer in the site file has no
        machine: `unheld` then changes what it left in the tables (its alerts), or the change is refused.
        `entry`: the person's change audited in the same transaction as the change (never one without
        the other, whenever the hub stops)."""

        def apply(batch: Batch) -> object:
            machine = self.machines.get(key)
            now = self.clock.now()
            pending = self._current()
            if machine is None:
                if unheld is None:
                    raise RejectedMessage(f"room {key[1]!r} is no longer in the site file of {key[0]!r}")
                result, effects = unheld(now)
                self._collect(key, effects, pending)
            else:
                result, effects = act(machine, now)
                self._collect(key, effects, pending)
                batch.rooms[key] = machine.state
                pending.touched.add(key)
            if entry is not None:
                batch.audits.append(entry)
            return result

        return self.run_command(apply)

    def acknowledge_alert(self, site: str, room: str, alert_id: str, who: str, via: str) -> Alert | None:
        """Acknowledge an alert of a room, or a record's `report_overdue` (which no room holds: it lives
        in the alert table only); None when neither holds it (long resolved)."""

        def act(machine: RoomMachine, now: dt.datetime) -> tuple[object, list[Effect]]:
            try:
                alert, effects = machine.acknowledge(alert_id, who, via, now)
            except AlertError:
                report, effects = self._acknowledge_report(machine, alert_id, who, via, now)
                if report is None:
                    # Long resolved, no longer held by its room: recorded here, on the ingest thread,
                    # so that of several people acknowledging at once the first is kept and told.
                    return unheld(now)
                return report, effects
            return alert.model_copy(deep=True), effects

        def unheld(now: dt.datetime) -> tuple[object, list[Effect]]:
            # No room holds it (long resolved, or its room left the site file): the acknowledgement is
            # recorded, and nothing is sent again (it is over, or no room's policy remains to send it).
            alert = self._stored_alert(alert_id)
            if alert is None or alert.acknowledged_at is not None:
                return alert, []
            alert.acknowledged_at, alert.acknowledged_by, alert.acknowledged_via = now, who, via
            alert.next_send_at = None
            return alert.model_copy(deep=True), RoomMachine.with_notes(
                [AlertSaved(alert, "acknowledged")], now
            )

        result = self._room_command((site, room), act, unheld)
        return result if isinstance(result, Alert) else None

    def _stored_alert(self, alert_id: str) -> Alert | None:
        """An alert as it now is in the table (this batch's change first), as a copy to change."""
        pending = self._current()
        stored = pending.batch.alerts.get(alert_id) or self.store.alerts_by_id([alert_id]).get(alert_id)
        return stored.model_copy(deep=True) if stored is not None else None

    def _report_alert(self, alert_id: str) -> Alert | None:
        """A record's `report_overdue` alert as it now is (this batch's change first), or None."""
        stored = self._stored_alert(alert_id)
        return stored if stored is not None and stored.kind == "report_overdue" else None

    def _acknowledge_report(
        self, machine: RoomMachine, alert_id: str, who: str, via: str, now: dt.datetime
    ) -> tuple[Alert | None, list[Effect]]:
        """On the ingest thread, which alone sends `report_overdue` on (`report_check`): acknowledged
        here, it is never overwritten by a look that read it unacknowledged. Its escalation stops, and
        it is sent again to the acknowledging tier every `renotify_s` of its room's policy."""
        alert = self._report_alert(alert_id)
        if alert is None:
            return None, []
        policy = self._report_context(machine.site, machine.spec.id).policy
        if not acknowledge_alert(alert, who, via, policy, now):
            return alert, []
        return alert.model_copy(deep=True), RoomMachine.with_notes([AlertSaved(alert, "acknowledged")], now)

    def resolve_alert(
        self, site: str, room: str, alert_id: str, who: str, note: str, entry: AuditEntry | None = None
    ) -> Alert:
        """Resolve an active alert with a note, with its audit `entry`; AlertError when it is not active
        in the room."""

        def act(machine: RoomMachine, now: dt.datetime) -> tuple[object, list[Effect]]:
            try:
                alert, effects = machine.resolve_alert(alert_id, who, note, now)
            except AlertError:
                # A record's `report_overdue` lives in the alert table only (semantics 5.1: any alert
                # may be resolved by a senior with a note); on this thread, like its acknowledgement.
                resolved = self._report_alert(alert_id)
                if resolved is None:
                    raise
                resolve_alert_by_person(resolved, who, note, now)
                return resolved.model_copy(deep=True), RoomMachine.with_notes(
                    [AlertSaved(resolved, "resolved")], now
                )
            return alert.model_copy(deep=True), effects

        def unheld(now: dt.datetime) -> tuple[object, list[Effect]]:
            alert = self._stored_alert(alert_id)  # of a room no longer in the site file
            if alert is None:
                raise AlertError("no such alert")
            resolve_alert_by_person(alert, who, note, now)
            return alert.model_copy(deep=True), RoomMachine.with_notes([AlertSaved(alert, "resolved")], now)

        result = self._room_command((site, room), act, unheld, entry)
        if not isinstance(result, Alert):
            raise TypeError("resolving an alert returned no alert")
        return result

    def record_review(
        self,
        site: str,
        room: str,
        episode_id: str,
        name: str,
        who: str,
        note: str,
        entry: AuditEntry | None = None,
    ) -> None:
        """Record a review of the policy's `reviews` on an episode, with its audit `entry`
        (RejectedMessage when not possible)."""

        def act(machine: RoomMachine, now: dt.datetime) -> tuple[object, list[Effect]]:
            return None, machine.record_review(episode_id, name, who, note, now)

        self._room_command((site, room), act, entry=entry)

    def attach_pupil(
        self,
        site: str,
        room: str,
        episode_id: str,
        incident_id: str,
        pupil_id: str | None,
        age: int | None,
        who: str,
        entry: AuditEntry | None = None,
        incident: dict[str, Any] | None = None,
    ) -> None:
        """Attach a child of the register to the room's open or latest episode and to its incident (or
        take the child off: `pupil_id` None), in one transaction with its audit `entry`
        (RejectedMessage when the room no longer holds that episode: nothing is written then).
        `incident`: more of the record's columns to change with it (the parents' steps started again
        for another child)."""
        key = (site, room)

        def apply(batch: Batch) -> None:
            machine = self.machines.get(key)
            if machine is None:  # its room left the site file: the episode's row is changed instead
                raise RejectedMessage(f"room {room!r} is no longer in the site file of {site!r}")
            now = self.clock.now()
            effects = machine.attach_pupil(episode_id, pupil_id, age, who, now)
            pending = self._current()
            self._collect(key, effects, pending)
            batch.rooms[key] = machine.state
            batch.incident_changes.append(
                (incident_id, {**(incident or {}), "pupil_id": pupil_id, "updated_at": now})
            )
            if entry is not None:
                batch.audits.append(entry)
            pending.touched.add(key)

        self.run_command(apply)

    def register_changed(self, site: str, born: Mapping[str, dt.date | None]) -> None:
        """The pupil register of `site` changed (a child added or corrected, a file imported): `born`
        gives its children's dates of birth as they are now. The rooms' open and latest episodes naming
        one of them take the child's age again (RoomMachine.pupil_born), on the ingest thread."""
        loaded = self.sites.get(site)
        if loaded is None:
            return

        def apply(batch: Batch) -> None:
            now = self.clock.now()
            pending = self._current()
            for key, machine in self.machines.items():
                held = (machine.state.episode, machine.state.last_episode)
                if key[0] != site or not any(ep is not None and ep.pupil_id in born for ep in held):
                    continue
                effects = machine.pupil_born(born, loaded.zone, now)
                self._collect(key, effects, pending)
                batch.rooms[key] = machine.state
                pending.touched.add(key)

        self.run_command(apply)

    def incident_end(
        self, site: str, room: str, incident_id: str, ended_at: dt.datetime, at: dt.datetime
    ) -> dict[str, Any]:
        """The incident's change when its episode ends: `awaiting_record`, with the profile's deadlines
        counted in the site's school days and timezone."""
        loaded = self.sites[site]
        # A room taken out of the site file since (a hand-entered episode ended later): the site's profile.
        policy = loaded.policies.get(room, loaded.profile)
        due = due_dates(policy, ended_at, loaded.spec.calendar, loaded.zone)
        return {
            "incident_id": incident_id,
            "new_status": "awaiting_record",
            "at": at,
            "ended_at": ended_at,
            "record_due_at": due.record,
            "parent_notice_due_at": due.parent_notice,
            "parent_copy_due_at": due.parent_copy,
            "authority_notice_due_at": due.authority_notice,
        }

    def backlog_marker(self) -> None:
        """The marker the hub sent itself came back (the MQTT adapter's thread): whatever the broker kept
        for the hub is in the inbox before it. The backlog is through once the ingest thread has applied
        up to here, not before: a backlog judged against the clock half-applied raises what it shows
        never happened (semantics 4.6)."""

        connection = self._connection

        def apply(_batch: Batch) -> None:
            # Only for the connection it came on: a marker heard just before the link dropped may be
            # applied after the next connection began, with that connection's backlog still to come.
            if connection == self._connection:
                self._backlog_applied = True
                # Said after this batch is stored and the rooms, looked at again with the backlog, have
                # had their indicators published (`process`): an agent hands its outputs to the hub on
                # this word, so the indicators it then follows are the hub's present view, not those from
                # before its downtime. And what paho kept from before the reconnect has gone out by
                # then: no older word queued then is the one the broker keeps.
                if self._pending is not None:
                    self._pending.say_status = True

        self.inbox.put(Command(apply))

    def backlog_applied(self) -> bool:
        return self._backlog_applied

    def disconnected(self) -> None:
        """The MQTT link dropped (the MQTT adapter's thread): the hub hears nothing now, so nothing is
        judged against the clock until the next connection's backlog is through (4.6)."""
        self._backlog_applied = False

    def reconnected(self) -> None:
        """The MQTT link is back (the MQTT adapter's thread): liveness counts again from now, once the
        backlog the broker kept for the hub is through."""
        self._listening_since = time.monotonic()
        self._connection += 1
        self._backlog_applied = False
        # Offline while nothing is stored is said again on the new connection by `watch`: not from
        # here, where the adapter does not yet count the link as up (and what paho kept unacknowledged
        # from the last connection it sends after this; `watch` publishes later).

        def apply(batch: Batch) -> None:
            now = self.clock.now()
            pending = self._current()
            for key, machine in self.machines.items():
                machine.hub_started(now)
                batch.rooms[key] = machine.state
                pending.touched.add(key)  # their deadlines count device silence again
                # Each device's retained ack again, after this batch's commit: a broker that lost its
                # store (and the acks in it) would otherwise leave a device with a new SD card unable
                # to learn what the hub already has of it (docs/edge.md), until its next event.
                for device, dev in machine.state.devices.items():
                    if dev.epoch or dev.seq:
                        pending.devices.add((key[0], key[1], device))

        self.inbox.put(Command(apply))

    def publish_configs(self) -> None:
        """Tell every device its room's numbers for its own fail-safe timers (retained `config`)."""
        now = self.clock.now()
        for site in self.sites.values():
            for room in site.spec.rooms:
                policy = site.policies[room.id]
                payload = dump_payload(
                    ConfigPayload(
                        supervision=self.machines[(site.id, room.id)].mode,
                        lapse_grace_s=policy.lapse_grace_s,
                        checkin_interval_s=policy.checkin_interval_s,
                        duration_alerts=[
                            DurationAlertRule(after_s=r.after_s, kind=r.kind, tier=r.tier)
                            for r in policy.duration_alerts
                        ],
                        # The limit as the hub applies it to a child whose age it does not know
                        # (2.6: the youngest band's, or max_duration_s if shorter): devices hold no
                        # child's details, so their fail-safe sounds the earliest limit that may apply.
                        max_duration_s=duration_limit_s(policy, None),
                        heartbeat_s=policy.heartbeat_s,
                        occupancy_lookback_s=policy.occupancy_lookback_s,
                        reclose_grace_s=policy.reclose_grace_s,
                        reclose_is_new_episode=policy.reclose_is_new_episode,
                        ts=now,
                    )
                )
                for device in room.devices:
                    self.publish(self.topics.config(site.id, room.id, device.id), payload, 1, True)
        # The indicators, as the rooms' alerts have them now (retained: a new agent sees them at once).
        with self.lock:
            shown = {key: m.state.book.indicator for key, m in self.machines.items()}
        for (site_id, room_id), indicator in shown.items():
            self.publish(
                self.topics.indicator(site_id, room_id),
                dump_payload(
                    IndicatorPayload(
                        level=indicator.level,
                        reason=indicator.reason,
                        acknowledged=indicator.acknowledged,
                        ts=now,
                    )
                ),
                1,
                True,
            )

    # -- reads for the API (under the lock: the ingest thread mutates the machines)

    def episode_now(self, row: EpisodeRecord) -> Episode:
        """A stored episode as it is now: an open one from its room (its row may be up to
        `episode_refresh_s` behind), an ended one as stored."""
        live = self.live_episode(row.id) if row.ended_at is None else None
        return live or Episode.model_validate_json(row.data)

    def live_episode(self, episode_id: str) -> Episode | None:
        """The open episode with this id, as the machine has it now (fresher than the database)."""
        with self.lock:
            for machine in self.machines.values():
                ep = machine.episode
                if ep is not None and ep.id == episode_id:
                    return ep.model_copy(deep=True)
        return None

    def sites_without_recipients(self) -> list[str]:
        """The sites nobody is told of: their alerts reach only the live board and the indicator."""
        return sorted(site for site in self.sites if not self.delivery.tiers(site))

    def tiers_without_recipients(self) -> dict[str, list[str]]:
        """For each site, its tiers with nobody to tell, in order (escalation skips them)."""
        return {site: [t for t in TIERS if t not in self.delivery.tiers(site)] for site in sorted(self.sites)}

    def status(self) -> dict[str, object]:
        return {
            "healthy": self.healthy,
            # True while the hub says it is offline because nothing is stored (`watch`).
            "storing_stalled": self._said_offline and self._taking,
            "queue": self.inbox.qsize(),
            "evaluated": self._evaluated,
            "now": format_ts(self.clock.now()),
            "sites_without_recipients": self.sites_without_recipients(),
            "tiers_without_recipients": self.tiers_without_recipients(),
            "rooms_not_in_site_files": self.unconfigured_rooms,
        }
