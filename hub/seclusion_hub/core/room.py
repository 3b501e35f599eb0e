"""The per-room state machine: semantics sections 1, 2 and 4, with no I/O and the clock passed in.

`RoomMachine.handle(message, now)` applies one validated message from a device of the room;
`RoomMachine.tick(now)` lets time pass (the re-close grace, device liveness). Both return the effects
for the adapters to carry out; the machine's whole state is a pydantic model the hub stores as a
snapshot in the same transaction as the events that produced it, so a restart resumes exactly here.

Times: `ts` values are the devices' own clocks (semantics 4.5: durations use device timestamps);
`now` is the hub's clock and decides liveness. Every rule below names its section of semantics.md.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from seclusion_contract import format_ts

from ..errors import RejectedMessage
from . import alerts
from .alerts import Alert, AlertBook, AlertContext, AlertEffect, DeviceView, RoomView
from .episode import Episode, ObserverMark, QuietSpell, ReviewRecord, Segment, UnknownInterval
from .policy import Policy
from .site import RoomSpec

NAMESPACE = uuid.UUID("6f1c2d4e-3a5b-4c7d-8e9f-0a1b2c3d4e5f")

# 4.5: a clock that is off is corrected by its measured offset. A time no running clock reads today (a
# Raspberry Pi that booted without the network or a saved time reads 1970; a clock set by hand days
# ahead) is not a time to put on an episode: until the heartbeats have measured such a clock, the
# reading is timed by the monotonic clock from the device's last reading, never after its arrival, or
# at its arrival, and the episode is marked `clock_uncertain`. Never dropped: a door closing on a
# child is a door closing, whatever the clock beside it says. A clock less than a day ahead is a
# clock that is off (and the hub's own clock may have been put back: a time somewhat after its
# arrival is then the right one), measured and corrected as any other.
EARLIEST_PLAUSIBLE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST_AHEAD = dt.timedelta(days=1)


def plausible(ts: dt.datetime, arrival: dt.datetime) -> bool:
    """Whether `ts` can be the time of a device's reading that arrived at `arrival` (`LATEST_AHEAD`)."""
    return EARLIEST_PLAUSIBLE <= ts <= arrival + LATEST_AHEAD


# Observer readings and check-ins kept while a closed room has no episode (RoomState.marks_since_close):
# a dated-back start older than the oldest kept counts as unsupervised until it, never the other way.
EVIDENCE_KEPT = 32
# Door readings kept for a room whose occupancy comes from a device of its own (`door_history`).
DOOR_HISTORY_KEPT = 256
IncidentStatus = Literal["open", "awaiting_record"]


# --- inputs: validated messages, typed ---------------------------------------------------------


# Why a review is not recorded by the room: the episode is not its open or latest one (the API then
# records it on the stored episode).
NOT_HELD_REVIEW = "episode: reviews are recorded on the room's open or latest episode"


@dataclass(frozen=True, slots=True)
class SensorEvent:
    """A device's `event` message (contract section 2)."""

    device: str
    kind: str
    value: str
    ts: dt.datetime
    seq: int
    epoch: int = 0
    staff: str | None = None
    event_id: str = ""
    boot: str | None = None  # the device's boot id and its monotonic clock at `ts` (4.5)
    mono_ms: int | None = None
    # The agent's first reading after it started (contract 2, `startup`, added): `ts` is when it first
    # saw it, the change was at some time before.
    startup: bool = False


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A device's retained `status`: online on every connect, or its Last Will."""

    device: str
    online: bool
    ts: dt.datetime | None = None
    boot: str | None = None
    uptime_s: float | None = None
    epoch: int | None = None
    last_seq: int | None = None
    # The time it carried when that was no plausible time (4.5; `ts` is then None): it dates nothing.
    said_ts: dt.datetime | None = None
    # The connection it belongs to, on the device's monotonic clock (with `boot`): a Last Will names
    # the connection it ends (contract 2, `conn_ms`, added).
    conn_ms: int | None = None
    # Delivered flagged `retain` (MQTT): the broker's stored copy, sent because the hub subscribed (after
    # every reconnect of the hub), not because the device said anything now.
    retained: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A device's heartbeat, with its current reading of each sensor."""

    device: str
    ts: dt.datetime
    epoch: int
    last_seq: int
    state: dict[str, str] = field(default_factory=dict)
    uptime_s: float | None = None  # the agent's, since it started: `ts - uptime_s` moves if its clock is set
    # How many events wait in its outbox for the hub's ack; None when the agent did not say (contract 2).
    # 0 with `last_seq` ahead of the hub: nothing is on its way, the hub lost what it stored.
    queued: int | None = None


Message = SensorEvent | DeviceStatus | Heartbeat


# --- effects: what the adapters carry out --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EpisodeSaved:
    """Store this episode as it now is (the machine keeps no other copy once it has ended)."""

    episode: Episode


@dataclass(frozen=True, slots=True)
class IncidentOpened:
    incident_id: str
    episode_id: str
    site: str
    room: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class IncidentStatusChanged:
    incident_id: str
    status: IncidentStatus
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class Note:
    """A line of the episode's timeline (or the room's, when `episode_id` is None)."""

    episode_id: str | None
    at: dt.datetime
    kind: str
    detail: dict[str, object]


@dataclass(frozen=True, slots=True)
class OlderLoss:
    """4.4: a gap whose missing events fell between `since` (the device's latest reading the hub has)
    and `until` (the event after the gap) may belong to any episode of the room that overlaps that
    window, not only the open and latest ones the machine holds. The writer flags `possible_loss`, with
    a `possible_loss` note, on every ended episode of the room stored with `ended_at > since` and
    `started_at < until`, except those in `skip` (the open and latest ones: the machine's own business)."""

    site: str
    room: str
    device: str
    missing: int
    since: dt.datetime
    until: dt.datetime
    skip: tuple[str, ...]


Effect = EpisodeSaved | IncidentOpened | IncidentStatusChanged | Note | OlderLoss | AlertEffect


@dataclass(slots=True)
class Outcome:
    """What one message did: applied, or dropped as a duplicate, and the effects it produced."""

    applied: bool
    duplicate: bool = False
    gap: int = 0
    effects: list[Effect] = field(default_factory=list)
    # An event's time as applied: its `ts`, or the time 4.5 put it at (a corrected or unreadable clock).
    ts: dt.datetime | None = None


# --- state ----------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reading(_Model):
    value: str
    ts: dt.datetime
    device: str
    uncertain: bool = False


class OfflineSpan(_Model):
    start: dt.datetime
    end: dt.datetime | None = None


class AheadSpell(_Model):
    """Heartbeats of a device counting events the hub has not applied (`last_seq` ahead of its own),
    from the first of them: `seq` (of `epoch`) is that one's `last_seq`, `at` its arrival on the hub's
    clock, `ts` its time and `state` its readings on the device's. Over when those events arrive."""

    epoch: int
    seq: int
    at: dt.datetime
    ts: dt.datetime
    state: dict[str, str] = {}
    # The device's last event applied when the wait began: events arriving meanwhile (a long replay the
    # broker hands over slower than the heartbeats) start the wait again.
    applied_epoch: int = 0
    applied_seq: int = 0
    missing: int = 0  # how many events it counted beyond the hub's, when they were found not coming
    since: dt.datetime | None = None  # the device's latest reading the hub had then (4.4's window)
    said: bool = False  # their possible loss is said (once)


class DeviceState(_Model):
    epoch: int = 0
    seq: int = 0
    online: bool = True
    last_seen: dt.datetime | None = None
    offline_since: dt.datetime | None = None
    offline_detected_at: dt.datetime | None = None
    last_offline: OfflineSpan | None = None
    boot: str | None = None
    gaps: int = 0
    readings: dict[str, Reading] = {}
    # 4.5: arrival minus `ts` of recent heartbeats of the current boot and clock; the smallest is the
    # best estimate of the offset, taken once there are three (`skew_s`, for this boot's clock).
    offsets: list[float] = []
    skew_since: dt.datetime | None = None
    skew_s: float | None = None
    hb_base: dt.datetime | None = None  # `ts - uptime_s` of its last heartbeat: moves when the clock is set
    clock_unchecked: bool = False  # set since, and no three heartbeats have checked the new time yet
    # 4.5, the device's own timeline: its latest event's boot, and a reading the hub timed, with its
    # `mono_ms`, to time the next by the monotonic clock when the wall clock moves under them.
    event_boot: str | None = None
    anchor_mono: int | None = None
    anchor_ts: dt.datetime | None = None
    anchor_checked: bool = False  # timed on a clock the heartbeats had checked
    # Timed at an arrival (its clock read no plausible time): the reading was then or earlier, so the
    # monotonic clock from it gives a latest time, never a least one.
    anchor_late: bool = False
    # When its current boot was first heard of (its status): an older boot's reading, replayed after
    # it, happened before then (the latest time of one whose clock read no plausible time).
    boot_heard_at: dt.datetime | None = None
    reported_ts: dt.datetime | None = None  # the latest `ts` of its events and heartbeats, as applied
    # The latest `ts` of anything heard from its current boot (events, heartbeats, its online status),
    # on its corrected clock: a Last Will is offline from its last message (4.1), which a backlog taken
    # after the hub's own downtime can only date by this, not by its arrival.
    heard_ts: dt.datetime | None = None
    booted_after: dt.datetime | None = None  # `reported_ts` when `boot` was announced: it began after
    previous_boot: str | None = None  # the boot before, and its correction (for its replayed events)
    previous_skew_s: float | None = None
    # The start of the device's current run of faults: its first fault reading since its last `fault: ok`
    # (a different code in between is the same fault going on: sensor_fault resolves on `ok` alone).
    # None with a fault reading held: a state stored before this was kept, and that reading began it.
    fault_since: dt.datetime | None = None
    # Its readings carry a time no clock reads today (`plausible`), so they are timed without it (the
    # monotonic clock, their arrival) until its heartbeats have measured the clock: said once in the
    # timeline for a run of such readings, until a plausible one.
    clock_implausible: bool = False
    # The connection its latest online status announced (`conn_ms` of `boot`), and the latest one a Last
    # Will (or a clean stop) ended: a will naming either, or an older connection of the boot, is one the
    # broker delivered again (the hub stopped before the broker heard it was taken), not a new outage.
    conn_ms: int | None = None
    ended_boot: str | None = None
    ended_conn_ms: int | None = None
    # 4.2, 4.4: its heartbeats count events the hub has not applied (`_events_overdue`).
    ahead: AheadSpell | None = None
    # Its latest heartbeat that counted every event applied, and its `state`: the hub's readings of the
    # device were so then (after any it reconciled), the last time known for a reading found otherwise.
    agreed_ts: dt.datetime | None = None
    agreed_state: dict[str, str] = {}


class RoomState(_Model):
    """Everything the machine knows about one room; stored whole after every change."""

    site: str
    room: str
    readings: dict[str, Reading] = {}
    devices: dict[str, DeviceState] = {}
    episode: Episode | None = None
    last_episode: Episode | None = None
    door_opened_at: dt.datetime | None = None
    last_check: dt.datetime | None = None
    episode_count: int = 0
    listening_since: dt.datetime | None = None
    maintenance_from: dt.datetime | None = None
    maintenance_until: dt.datetime | None = None
    maintenance_reason: str | None = None
    book: AlertBook = AlertBook()
    alerts_next_at: dt.datetime | None = None
    # Ended episodes changed since the alerts were last evaluated (stored: a crash in between loses none).
    unevaluated: list[Episode] = []
    # The room's open episodes a senior entered by hand because the sensors failed (2.7), as the episode
    # table has them: timed from the start entered, their duration rules raise alerts (docs/alerts.md).
    manual: list[Episode] = []
    # While the door is closed and no episode is open: the supervision evidence since it closed (the
    # observer reading and check-in it closed on, and each one after), so that an episode dated back to
    # the close (2.1) starts with all of it (at most EVIDENCE_KEPT each, the newest).
    marks_since_close: list[ObserverMark] = []
    checks_since_close: list[dt.datetime] = []
    # And the lock's readings since the close (the one it closed on, each one after): a lock engaged, or
    # engaged and released, before the episode was known is still part of it (2.5).
    locks_since_close: list[Reading] = []
    # And each device's outages that ended since the close and that its return left unknown (4.2): an
    # episode dated back to the close has every one of them as unknown time (4.1), not only the latest
    # (`DeviceState.last_offline`, which a state stored before this list still brings). At most
    # EVIDENCE_KEPT a device: beyond that its two oldest become one span covering both, so the time
    # between them counts as unknown, never as known.
    outages_since_close: list[UnknownInterval] = []
    # Only for a room whose occupancy comes from a device that does not report the door: the door's
    # readings since the oldest latest occupancy reading of such a device (the one in effect then, and
    # each one after; at most DOOR_HISTORY_KEPT), so that an occupancy reading replayed after the door
    # has moved on is judged against the door as it was at the reading's time (`_confined_while_away`).
    door_history: list[Reading] | None = None
    # And the panel's readings over the same time (the observer's, the check-ins'): the supervision of
    # such a confinement, for its record and its alerts (a lapse follows what the panel showed).
    observer_history: list[ObserverMark] | None = None
    check_history: list[dt.datetime] | None = None
    lock_history: list[Reading] | None = None
    # And the spans of the episodes that ended over that time (timed live or found so): a confinement
    # is never recorded twice, whichever inside device's replay comes first.
    episode_spans: list[Segment] | None = None
    # And each device's outages over that time that its return left unknown (4.2).
    outage_history: list[UnknownInterval] | None = None
    # Only for a room whose door and panel are on devices apart (the shipped layout): the panel's readings
    # (observer marks, check-ins) since the door's device's latest report (the one in effect then, and
    # each one after; at most EVIDENCE_KEPT), so that a door's close replayed from its outbox after them
    # (the door's device away while the door closed) starts its episode with the supervision as it was
    # (4.3), not only with the latest reading.
    panel_marks: list[ObserverMark] | None = None
    panel_checks: list[dt.datetime] | None = None


_Timed = TypeVar("_Timed", ObserverMark, Reading)


def _from_start(items: list[_Timed], start: dt.datetime) -> list[_Timed]:
    """Of readings in time order, the one in effect at `start` (the last at or before it) and each after."""
    return [r for r in items if r.ts <= start][-1:] + [r for r in items if r.ts > start]


def _inserted(history: list[_Timed] | None, reading: _Timed) -> list[_Timed]:
    """`history` with `reading` in its place by time (a device's replay may come after later ones)."""
    items = list(history or [])
    at = len(items)
    while at and items[at - 1].ts > reading.ts:
        at -= 1
    items.insert(at, reading)
    return items


def _last(history: list[_Timed] | None, floor: dt.datetime | None) -> list[_Timed] | None:
    """From the item in effect at `floor` (none: all), at most DOOR_HISTORY_KEPT."""
    if history is None:
        return None
    if floor is not None:
        history = _from_start(history, floor)
    return history[-DOOR_HISTORY_KEPT:]


def _fault_run(dev: DeviceState, value: str, ts: dt.datetime) -> None:
    """A fault reading of the device (before it is kept): `ok` ends the run of faults; the first fault
    after it begins one, which a different code goes on with (semantics 5's table)."""
    if value == "ok":
        dev.fault_since = None
    elif dev.fault_since is None:
        held = dev.readings.get("fault")
        dev.fault_since = held.ts if held is not None and held.value != "ok" else ts


# --- the machine ----------------------------------------------------------------------------------


def _ended_before(dev: DeviceState, will: DeviceStatus) -> bool:
    """An offline status (a Last Will, a clean stop's) that names a connection already ended, or one
    of the device's current boot older than the connection its latest online status announced: one the
    broker delivered again, after the hub had applied it, because the hub stopped before saying it was
    taken (MQTT delivers QoS 1 at least once). A will that names no connection is taken as it comes."""
    if will.boot is None or will.conn_ms is None:
        return False
    if (will.boot, will.conn_ms) == (dev.ended_boot, dev.ended_conn_ms):
        return True
    return will.boot == dev.boot and dev.conn_ms is not None and will.conn_ms < dev.conn_ms


class RoomMachine:
    """The rules for one room. Not thread-safe: the hub drives each machine from one thread."""

    def __init__(
        self,
        site: str,
        spec: RoomSpec,
        policy: Policy,
        state: RoomState | None = None,
        *,
        tiers: frozenset[str] = frozenset(),
    ) -> None:
        self.site = site
        self.spec = spec
        self.policy = policy
        self.tiers = tiers  # the tiers that have someone to tell (escalation skips the others)
        self.mode = spec.supervision or policy.supervision
        self.state = state if state is not None else RoomState(site=site, room=spec.id)
        for device in spec.devices:
            self.state.devices.setdefault(device.id, DeviceState())
        # Devices that report occupancy but not the door: their readings reach the hub in their own order.
        self._inside = frozenset(
            d.id for d in spec.devices if spec.reports(d.id, "occupancy") and not spec.reports(d.id, "door")
        )
        # Devices that report the door and not the panel, and the panel's devices apart from the door's:
        # with both, the panel's readings are kept for a close the door's device may replay later.
        self._door_apart = frozenset(
            d.id for d in spec.devices if spec.reports(d.id, "door") and not spec.reports(d.id, "observer")
        )
        panel = frozenset(
            d.id
            for d in spec.devices
            if (spec.reports(d.id, "observer") or spec.reports(d.id, "check"))
            and not spec.reports(d.id, "door")
        )
        self._panel_apart = panel if self._door_apart else frozenset()
        self._effects: list[Effect] = []
        self._now = dt.datetime.min.replace(tzinfo=dt.UTC)  # the arrival of the message being applied

    # -- public API

    def handle(self, message: Message, now: dt.datetime) -> Outcome:
        """Apply one message from a device of this room. Raises RejectedMessage, changing nothing."""
        self._check_device(message)
        self._effects = []
        self._now = now
        original = message
        message = self._corrected(message, now)
        self._heard(message)
        if isinstance(message, SensorEvent):
            outcome = self._event(message, now)
        elif isinstance(message, DeviceStatus):
            self._status(message, now)
            outcome = Outcome(applied=True)
        else:
            self._heartbeat(message, now)
            outcome = Outcome(applied=True)
        ep = self.state.episode
        if (
            message is not original
            and ep is not None
            and not ep.clock_uncertain
            and not isinstance(message, DeviceStatus)
        ):
            ep.clock_uncertain = True  # its times rest on a corrected clock (4.5)
            self._saved(ep)
        outcome.effects = self._effects
        self._effects = []
        return outcome

    def tick(self, now: dt.datetime, *, liveness: bool = True) -> list[Effect]:
        """Let time pass up to `now` on the hub's clock: device liveness (semantics 4.1, only while the
        hub is listening) and the alerts (5): what is due is raised, what ended is resolved, what waits
        for an acknowledgement escalates.

        The re-close grace is not judged here: only the door's own device can show that its door stayed
        open past the grace (its next event or heartbeat, timed by its clock, with nothing pending).
        Until then the episode goes on being timed: late or silent, the hub never under-counts.
        """
        self._effects = []
        if liveness:
            self._liveness(now)
        self._evaluate(now)
        effects, self._effects = self._effects, []
        return effects

    # -- alerts (semantics 5): people's actions

    def acknowledge(self, alert_id: str, who: str, via: str, now: dt.datetime) -> tuple[Alert, list[Effect]]:
        """A person acknowledges an alert of this room; raises alerts.AlertError if it is not here."""
        alert, effects = alerts.acknowledge(
            self.state.book, alert_id, who, via, self._alert_context(now), now
        )
        return alert, self.with_notes(effects, now)

    def resolve_alert(
        self, alert_id: str, who: str, note: str, now: dt.datetime
    ) -> tuple[Alert, list[Effect]]:
        """A senior member of staff resolves an alert with a note."""
        alert, effects = alerts.resolve_by_person(
            self.state.book, alert_id, who, note, self._alert_context(now), now
        )
        return alert, self.with_notes(effects, now)

    def record_review(
        self, episode_id: str, name: str, who: str, note: str, now: dt.datetime
    ) -> list[Effect]:
        """A review of the policy's `reviews` was done (2.6): its due alert resolves, the episode's end
        having left it active (5's table). Raises RejectedMessage (`NOT_HELD_REVIEW`) when the episode
        is not this room's open or latest one: an older one's review is recorded where it is stored
        (`RecordStore.review_offline`), and the room looks at it again (`reconsider`)."""
        ep = next(
            (e for e in (self.state.episode, self.state.last_episode) if e and e.id == episode_id), None
        )
        if ep is None:
            raise RejectedMessage(NOT_HELD_REVIEW)
        self._effects = []
        ep.reviews.append(ReviewRecord(name=name, at=now, by=who, note=note))
        self._note(ep.id, now, "review_recorded", {"review": name, "by": who})
        self._saved(ep)
        self._evaluate(now)
        effects, self._effects = self._effects, []
        return effects

    def attach_pupil(
        self, episode_id: str, pupil_id: str | None, age: int | None, who: str, now: dt.datetime
    ) -> list[Effect]:
        """The child of the episode, from the register (the API's `PUT /api/episodes/{id}/pupil`): the
        age band limit (2.6) now knows the child's age; `None` takes the child off (the age unknown
        again: the youngest band). Raises RejectedMessage when the episode is not this room's open or
        latest one (the API then updates the stored episode alone)."""
        ep = next(
            (e for e in (self.state.episode, self.state.last_episode) if e and e.id == episode_id), None
        )
        if ep is None:
            raise RejectedMessage("episode: not the room's open or latest episode")
        self._effects = []
        ep.pupil_id, ep.pupil_age = pupil_id, age
        # Never the child's name: see the record.
        self._note(ep.id, now, "pupil_attached" if pupil_id else "pupil_removed", {"by": who})
        self._saved(ep)
        self._evaluate(now)
        effects, self._effects = self._effects, []
        return effects

    def pupil_born(
        self, born: Mapping[str, dt.date | None], zone: dt.tzinfo, now: dt.datetime
    ) -> list[Effect]:
        """The register as it is now gives the children's dates of birth (`born`, by `pupil_id`): the
        open and latest episodes naming one of them take the child's age at their start, in the site's
        timezone (`zone`), so the age band's limit (2.6) follows the register: a mistyped date of birth
        corrected moves the limit at once, and one removed makes the age unknown again."""
        self._effects = []
        changed = False
        for ep in (self.state.episode, self.state.last_episode):
            if ep is None or ep.pupil_id is None or ep.pupil_id not in born:
                continue
            age = alerts.age_on(born[ep.pupil_id], ep.started_at.astimezone(zone).date())
            if age != ep.pupil_age:
                ep.pupil_age = age
                self._saved(ep)
                changed = True
        if changed:
            self._evaluate(now)
        effects, self._effects = self._effects, []
        return effects

    def alert(self, alert_id: str) -> Alert | None:
        try:
            return alerts.find(self.state.book, alert_id)
        except alerts.AlertError:
            return None

    def _alert_context(self, now: dt.datetime) -> AlertContext:
        tests = frozenset(
            e.id
            for e in (self.state.episode, self.state.last_episode, *self.state.unevaluated)
            if e is not None and e.test
        )
        keep = frozenset(e.id for e in (self.state.episode, self.state.last_episode) if e is not None)
        return AlertContext(
            self.site,
            self.spec.id,
            self.policy,
            self.tiers,
            self.in_maintenance(now),
            tests,
            keep,
            self.state.episode.id if self.state.episode is not None else None,
        )

    def _view(self) -> RoomView:
        st = self.state
        devices: list[DeviceView] = []
        for name, dev in st.devices.items():
            fault = dev.readings.get("fault")
            devices.append(
                DeviceView(
                    device=name,
                    online=dev.online,
                    offline_since=dev.offline_since,
                    offline_detected_at=dev.offline_detected_at,
                    fault=(fault.value, dev.fault_since or fault.ts)
                    if fault is not None and fault.value != "ok"
                    else None,
                    skew=(dev.skew_s, dev.skew_since)
                    if dev.skew_since is not None and dev.skew_s is not None
                    else None,
                )
            )
        occupancy = st.readings.get("occupancy")
        lock = st.readings.get("lock")
        lock_spec = self.spec.device(lock.device) if lock is not None else None
        return RoomView(
            episode=st.episode,
            ended=tuple(st.unevaluated),
            occupancy=(occupancy.value, occupancy.ts) if occupancy is not None else None,
            lock=(lock.value, lock.ts, lock_spec.lock_type if lock_spec else None)
            if lock is not None
            else None,
            devices=tuple(devices),
            manual=tuple(st.manual),
        )

    def _evaluate(self, now: dt.datetime) -> None:
        view = self._view()
        due = alerts.conditions(view, self.policy, now)
        alerts.still_due(self.state.book, view, self.policy, now, due)
        # Looked at: only those with a condition still to fall due (by the hub's clock) are kept.
        self.state.unevaluated = [e for e in self.state.unevaluated if e.id in due.waiting]
        effects = alerts.reconcile(self.state.book, due, self._alert_context(now), now)
        self.state.alerts_next_at = due.next_at
        self._effects.extend(self.with_notes(effects, now))

    @staticmethod
    def with_notes(effects: Sequence[AlertEffect], now: dt.datetime) -> list[Effect]:
        """The effects, each alert change followed by its line in the episode's (or room's) timeline
        (also for the alerts the service changes itself: a record's `report_overdue`)."""
        out: list[Effect] = []
        for effect in effects:
            out.append(effect)
            if isinstance(effect, alerts.AlertSaved):
                a = effect.alert
                detail: dict[str, object] = {"alert_id": a.id, "alert": a.kind, "severity": a.severity}
                if effect.change == "raised":
                    detail.update(due_at=format_ts(a.due_at), late=a.late, held=a.held)
                elif effect.change in ("released", "escalated", "renotified"):
                    detail["tier"] = a.tier
                elif effect.change == "acknowledged":
                    detail.update(by=a.acknowledged_by, via=a.acknowledged_via)
                elif effect.change == "resolved":
                    detail.update(by=a.resolved_by, note=a.note)
                elif effect.change == "updated":
                    detail["detail"] = dict(a.detail)
                out.append(Note(a.episode_id, now, f"alert_{effect.change}", detail))
        return out

    def reconsider(self, ep: Episode, now: dt.datetime) -> list[Effect]:
        """An ended episode the room no longer holds, changed where it is stored (a review recorded on
        it): its alerts still active are judged again on what it says now (`alerts.reconsider`: a
        review's alert resolves; nothing is raised again)."""
        st = self.state
        held = {e.id for e in (st.episode, st.last_episode) if e is not None}
        if ep.id in held:
            return []
        effects = alerts.reconsider(st.book, ep, self.policy, self._alert_context(now), now)
        return self.with_notes(effects, now)

    def outliving(self) -> set[str]:
        """The episodes of the room's active alerts whose condition outlives their episode (a review
        due), that the room no longer holds: looked at again from the episode table at start."""
        st = self.state
        held = {e.id for e in (st.episode, st.last_episode, *st.unevaluated) if e is not None}
        return {
            a.episode_id
            for a in st.book.alerts.values()
            if a.active
            and a.episode_id
            and a.episode_id not in held
            and alerts.KINDS[a.kind].outlives_episode
        }

    def hand_entered(self, open_now: Sequence[Episode], ended: Sequence[Episode]) -> bool:
        """The room's open hand-entered episodes are now `open_now`; `ended`: those it held open that
        have ended since, looked at once more up to their end (their duration alerts resolve). True
        when anything changed (the room's state is then to be stored and its alerts looked at)."""
        st = self.state
        before = [(e.id, e.started_at, e.pupil_age) for e in st.manual]
        st.manual = [e.model_copy(deep=True) for e in open_now]
        st.unevaluated.extend(e.model_copy(deep=True) for e in ended)
        return bool(ended) or before != [(e.id, e.started_at, e.pupil_age) for e in st.manual]

    def hub_started(self, now: dt.datetime) -> None:
        """The hub (re)started listening: its own downtime is not device downtime (semantics 4.6)."""
        self.state.listening_since = now

    def set_maintenance(
        self, until: dt.datetime | None, reason: str | None, now: dt.datetime
    ) -> list[Effect]:
        """Maintenance until `until` (None: back to normal): episodes still open, flagged `test` (2.7)."""
        st = self.state
        if until is None:
            st.maintenance_from = st.maintenance_until = st.maintenance_reason = None
            kind = "maintenance_ended"
        else:
            st.maintenance_from, st.maintenance_until, st.maintenance_reason = now, until, reason
            kind = "maintenance_started"
        ep = st.episode
        detail: dict[str, object] = {"until": format_ts(until)} if until is not None else {}
        return [Note(ep.id if ep else None, now, kind, detail)]

    def in_maintenance(self, when: dt.datetime) -> bool:
        st = self.state
        return (
            st.maintenance_from is not None
            and st.maintenance_until is not None
            and st.maintenance_from <= when < st.maintenance_until
        )

    def next_deadline(self, *, liveness: bool = True) -> dt.datetime | None:
        """The earliest moment `tick` could change something, or None. `liveness=False`: as `tick` with
        liveness off sees it (the hub cannot hear the broker, so device silence decides nothing)."""
        deadlines: list[dt.datetime] = []
        for dev in self.state.devices.values():
            due = self._liveness_due(dev) if liveness else None
            if due is not None:
                deadlines.append(due)
        if self.state.alerts_next_at is not None:
            deadlines.append(self.state.alerts_next_at)
        send = alerts.next_send(self.state.book)
        if send is not None:
            deadlines.append(send)
        until = self.state.maintenance_until
        if until is not None and any(a.held and a.active for a in self.state.book.alerts.values()):
            deadlines.append(until)  # what maintenance held is told when it runs out by itself
        return min(deadlines, default=None)

    def view_moments(self) -> list[dt.datetime]:
        """The moments the room's look changes with time alone, with no message and no effect: its
        maintenance running out, and during an episode of a check-in room the last check-in's proof
        running out (shown not supervised from then: 3.2). The hub pushes the room to the boards then."""
        moments: list[dt.datetime] = []
        if self.state.maintenance_until is not None:
            moments.append(self.state.maintenance_until)
        last = self.state.last_check
        if self.state.episode is not None and self.mode in ("checkin", "both") and last is not None:
            moments.append(last + self._seconds(self.policy.checkin_interval_s))
        return moments

    @property
    def episode(self) -> Episode | None:
        return self.state.episode

    @property
    def online(self) -> bool:
        return all(dev.online for dev in self.state.devices.values())

    def reading(self, kind: str) -> str | None:
        current = self.state.readings.get(kind)
        return current.value if current else None

    # -- messages

    def _check_device(self, message: Message) -> None:
        spec = self.spec.device(message.device)
        if spec is None:
            raise RejectedMessage(f"device {message.device!r} is not registered to room {self.spec.id!r}")
        if isinstance(message, SensorEvent) and not self.spec.reports(message.device, message.kind):
            raise RejectedMessage(f"kind: device {message.device!r} does not report {message.kind!r}")

    def _event(self, ev: SensorEvent, now: dt.datetime) -> Outcome:
        dev = self.state.devices[ev.device]
        if (ev.epoch, ev.seq) <= (dev.epoch, dev.seq):
            return Outcome(applied=False, duplicate=True)
        gap = 0
        if dev.seq > 0 or dev.epoch > 0:
            expected_first = dev.seq + 1 if ev.epoch == dev.epoch else 1
            gap = ev.seq - expected_first
        # The missing events fell after the device's latest reading the hub has, before this one.
        since = max((r.ts for r in dev.readings.values()), default=None)
        dev.epoch, dev.seq = ev.epoch, ev.seq
        self._seen(ev.device, now)
        if gap > 0:
            dev.gaps += gap
            self._possible_loss(ev.device, gap, ev.ts, since)
        if self._reports_the_door(ev.device):
            self._advance(ev.ts)
        if ev.startup and ev.kind == "door":
            self._door_at_start(ev.device, ev.value, ev.ts)
        else:
            self._apply(ev.device, ev.kind, ev.value, ev.ts, staff=ev.staff)
        return Outcome(applied=True, gap=max(gap, 0), ts=ev.ts)

    def _door_at_start(self, device: str, value: str, ts: dt.datetime) -> None:
        """The door as the agent found it when it started (4.2: the device's return brings the room up to
        date): not a close or an opening seen as it happened, but one at some time before `ts`, after
        the hub last knew the door otherwise. Reconciled as a heartbeat's `state` is: a door found open
        ends the episode with its bounds, one found closed on a child starts one `start_uncertain`, with
        the last time it was known open as its earliest start. The same door as the hub's is no news:
        the hub has it from when it began."""
        mine = self.state.devices[device].readings.get("door")
        if mine is not None and mine.value == value:
            return
        self._reconcile(device, "door", value, ts, mine, at_start=True)

    def _status(self, status: DeviceStatus, now: dt.datetime) -> None:
        dev = self.state.devices[status.device]
        if not status.online:
            if _ended_before(dev, status):
                return  # the end of a connection already ended, or of one older than the device's own
            if status.boot is not None and status.conn_ms is not None:
                dev.ended_boot, dev.ended_conn_ms = status.boot, status.conn_ms
            # A Last Will: offline from the device's last message (semantics 4.1): when it arrived, or
            # the time it carried if earlier (a backlog taken after the hub's own downtime arrives all
            # at once, long after the device sent it). Only ever earlier: an outage is never shortened
            # by a device's clock.
            if dev.online:
                since = dev.last_seen or now
                if dev.heard_ts is not None:
                    since = min(since, dev.heard_ts)
                self._go_offline(status.device, since, now)
            return
        same_boot = status.boot is not None and status.boot == dev.boot
        if status.retained:
            # The broker's copy of the device's latest connect, delivered because the hub subscribed: it
            # says nothing about now (4.1: offline from its last message, which this is not), nor does
            # it make a gap known (4.2: a return that covers it does). A device alive now heartbeats
            # within `heartbeat_s`. Only a boot the hub has not heard of is news: it restarted.
            if status.boot is not None and not same_boot:
                dev.boot_heard_at = now
                dev.boot = status.boot
                dev.conn_ms = status.conn_ms
            return
        # Its `ts` is on the corrected clock already (`_corrected`), as this boot's other reports are.
        if (
            same_boot
            and dev.reported_ts is not None
            and ((status.ts is not None and status.ts < dev.reported_ts) or status.said_ts is not None)
        ):
            # Older than what this boot has reported since: the broker's retained copy, delivered again
            # when the hub subscribes. It says nothing about now: the device is not heard by it, and a
            # gap in its reports is not made known by it (4.2). One whose time is no plausible time
            # cannot be shown newer: taken the same way (its device's next report tells).
            return
        was_offline = not dev.online
        # Back from the status's arrival, not the time it carries: a device back from a restart may
        # come with its clock behind (a Pi without a real-time clock), and an outage is never shortened
        # on a clock nobody has checked.
        self._seen(status.device, now)
        span = dev.last_offline
        if span is not None and span.end is not None and same_boot and status.uptime_s is not None:
            booted = (status.ts or now) - dt.timedelta(seconds=status.uptime_s)
            if booted <= span.start:
                # Same boot, up all along: its outbox replays the gap, so the gap is known again (4.2).
                self._forget_unknown(status.device, span.start)
                dev.last_offline = None
                self._note(None, now, "gap_recovered", {"device": status.device})
        elif was_offline:
            self._note(None, now, "device_back", {"device": status.device, "same_boot": same_boot})
        if status.boot is not None:
            if status.boot != dev.boot:
                dev.boot_heard_at = now
            dev.boot = status.boot
            dev.conn_ms = status.conn_ms

    def _corrected(self, message: Message, now: dt.datetime) -> Message:
        """4.5: a device whose clock is off by more than `max_clock_skew_s` has its timestamps corrected
        by the estimated offset, and the episode it touches is marked `clock_uncertain`; a clock that
        moves under a running device, or comes back from a restart behind, is found and said."""
        dev = self.state.devices[message.device]
        if isinstance(message, DeviceStatus):
            if message.online:
                # A new connection: the clock may have been set while it was away, where no heartbeat
                # could see it, so the next three heartbeats measure it again (and a new run of the
                # agent counts its uptime from 0).
                dev.hb_base = None
                dev.offsets = []
                known = dev.boot or dev.event_boot
                if message.boot is not None and known not in (None, message.boot):
                    self._restarted(message.device, now)
                if message.ts is not None:
                    same_boot = message.boot is not None and message.boot == dev.boot
                    if same_boot and dev.skew_since is not None and dev.skew_s is not None:
                        # 4.5: on the corrected clock, as this boot's other reports are.
                        message = replace(message, ts=message.ts + dt.timedelta(seconds=dev.skew_s))
                    if message.ts is not None and not plausible(message.ts, now):
                        # A time of no use to date anything by (an outage, its boot): none.
                        return replace(message, ts=None, said_ts=message.ts)
            return message
        if isinstance(message, Heartbeat):
            self._heartbeat_clock(message, now)
            shifted = self._shifted(message, dev)
            if not plausible(shifted.ts, now):
                # Its offset is sampled above from the time it said; sent live, it is timed on arrival.
                self._implausible(message.device, message.ts, now)
                return replace(shifted, ts=now)
            if dev.booted_after is not None and message.uptime_s is not None and len(dev.offsets) < 3:
                # Not yet measured since a restart: never before the old boot's last report.
                floor = dev.booted_after + dt.timedelta(seconds=message.uptime_s)
                if shifted.ts < floor - dt.timedelta(seconds=self.policy.max_clock_skew_s):
                    shifted = replace(shifted, ts=floor)
                    self._clock_uncertain()
            dev.clock_implausible = False
            if len(dev.offsets) >= 3:  # a time the heartbeats have measured the clock of
                dev.reported_ts = max(dev.reported_ts or shifted.ts, shifted.ts)
            return shifted
        if (message.epoch, message.seq) <= (dev.epoch, dev.seq):
            return message  # a duplicate: dropped
        return self._event_clock(message, now)

    def _shifted(self, message: SensorEvent | Heartbeat, dev: DeviceState) -> SensorEvent | Heartbeat:
        if dev.skew_since is None or dev.skew_s is None:
            return message
        return replace(message, ts=message.ts + dt.timedelta(seconds=dev.skew_s))

    def _restarted(self, device: str, now: dt.datetime) -> None:
        """A new boot: its clock is not the old one's. Its own heartbeats check it again, and it began
        after the latest time the old boot reported."""
        dev = self.state.devices[device]
        dev.offsets = []
        dev.booted_after = dev.reported_ts
        dev.clock_unchecked = False
        dev.previous_boot = dev.boot or dev.event_boot
        dev.previous_skew_s = dev.skew_s if dev.skew_since is not None else None
        if dev.skew_since is not None:
            dev.skew_since = dev.skew_s = None
            self._note(None, now, "clock_skew_cleared", {"device": device, "reason": "the device restarted"})
        if self.state.episode is not None:
            detail: dict[str, object] = {"device": device, "reason": "restarted during the episode"}
            self._note(None, now, "clock_unchecked", detail)
            self._clock_uncertain()

    def _heartbeat_clock(self, hb: Heartbeat, now: dt.datetime) -> None:
        dev = self.state.devices[hb.device]
        if hb.uptime_s is not None:
            base = hb.ts - dt.timedelta(seconds=hb.uptime_s)
            # A second on top of the bound: an agent may count its uptime in whole seconds.
            if (
                dev.hb_base is not None
                and abs((base - dev.hb_base).total_seconds()) > self.policy.max_clock_skew_s + 1
            ):
                self._clock_set(hb.device, now)
            dev.hb_base = base
        self._sample_offset(hb, now)

    def _clock_set(self, device: str, now: dt.datetime) -> None:
        """The device's clock was set while it ran (NTP at last, or by hand): what its heartbeats said
        was of the old clock; the next three check the new one."""
        dev = self.state.devices[device]
        dev.offsets = []
        if dev.clock_unchecked:
            return  # the same change, seen again
        dev.clock_unchecked = True
        detail: dict[str, object] = {"device": device, "reason": "the device's clock was set while it ran"}
        if dev.skew_since is not None:
            dev.skew_since = dev.skew_s = None
            self._note(None, now, "clock_skew_cleared", detail)
        else:
            self._note(None, now, "clock_jump", detail)
        self._clock_uncertain()

    def _event_clock(self, ev: SensorEvent, now: dt.datetime) -> SensorEvent:
        """The time an event (new, in `(epoch, seq)` order) is applied at. Within one boot, when the wall
        clock and the monotonic clock disagree, the reading is timed by the monotonic clock from the
        last reading timed on a checked clock, until heartbeats have checked the new time: so an
        episode's length never takes the jump. After a restart, no reading is timed before the
        device's own reports from before it."""
        dev = self.state.devices[ev.device]
        bound = dt.timedelta(seconds=self.policy.max_clock_skew_s)
        current = dev.boot is None or ev.boot is None or ev.boot == dev.boot
        if current:
            candidate = self._shifted(ev, dev).ts
        elif ev.boot == dev.previous_boot and dev.previous_skew_s is not None:
            candidate = ev.ts + dt.timedelta(seconds=dev.previous_skew_s)  # its own boot's correction
        else:
            candidate = ev.ts
        readable = plausible(candidate, now)
        if readable:
            dev.clock_implausible = False
        ts = candidate if readable else self._latest(ev, now)
        if ev.boot is not None and ev.mono_ms is not None:
            checked = readable and current and len(dev.offsets) >= 3 and not dev.clock_unchecked
            if ev.boot == dev.event_boot and dev.anchor_ts is not None and dev.anchor_mono is not None:
                expected = dev.anchor_ts + dt.timedelta(milliseconds=ev.mono_ms - dev.anchor_mono)
                if readable and abs(candidate - expected) <= bound:
                    self._anchor(dev, ev.mono_ms, candidate, dev.anchor_checked or checked)
                    return self._at(ev, candidate, dev, now)
                if current and dev.anchor_checked and not dev.clock_unchecked:
                    # The first sign that the clock was set: the heartbeats checked the old one.
                    self._clock_set(ev.device, now)
                    candidate, checked = ev.ts, False
                    readable = plausible(candidate, now)
                if not readable:
                    # No clock to go by: the monotonic clock from the last reading timed, never later
                    # than its arrival (a reading timed at an arrival gives only a latest time).
                    self._implausible(ev.device, ev.ts, now)
                    # Never before the reading it followed (that one may be ahead of the hub's clock):
                    # a run replayed from its outbox arrives at once, each after the one before, as
                    # the device saw them (a vacant reading after the door opened ends the episode),
                    # a millisecond apart where the arrival leaves no more room.
                    ts = self._by_monotonic_clock(
                        ev, expected, dev.anchor_ts, ev.mono_ms > dev.anchor_mono, now
                    )
                    late = ts != expected or dev.anchor_late
                    self._anchor(dev, ev.mono_ms, ts, dev.anchor_checked and not late, late=late)
                    return self._at(ev, ts, dev, now, late=late)
                if checked and dev.anchor_late and candidate < dev.anchor_ts:
                    # Measured, yet before the reading it followed (timed at an arrival, a latest
                    # time): the clock was set since its heartbeats measured it, and the correction
                    # is of the old clock. The monotonic clock, until a heartbeat finds the setting.
                    ts = self._by_monotonic_clock(
                        ev, expected, dev.anchor_ts, ev.mono_ms > dev.anchor_mono, now
                    )
                    self._anchor(dev, ev.mono_ms, ts, False, late=True)
                elif checked:
                    # Measured since it was set: the measured time; from a reading on an unmeasured
                    # clock, never earlier than the monotonic clock says (from one timed at an arrival,
                    # the monotonic clock gives a latest time only).
                    exact = dev.anchor_checked or dev.anchor_late
                    ts = candidate if exact else max(candidate, expected)
                    self._anchor(dev, ev.mono_ms, candidate, True)
                elif dev.anchor_checked:
                    ts = expected  # by the monotonic clock, from a reading on a checked clock
                else:
                    if dev.anchor_late:
                        # From a reading timed at an arrival, the monotonic clock gives a latest time:
                        # a candidate after it is too late, and one before that reading would put
                        # this one before the one it followed; either way the monotonic clock.
                        late = candidate > expected or candidate < dev.anchor_ts
                        ts = expected if late else candidate
                        if dev.boot is not None and ev.boot != dev.boot:
                            # An older boot's: never after the new one was first heard of, nor
                            # before the reading it followed.
                            ts = max(min(ts, self._latest(ev, now)), dev.anchor_ts)
                    else:
                        late, ts = False, max(candidate, expected)  # never earlier than both say
                    self._anchor(dev, ev.mono_ms, ts, False, late=late)
                    if ts != expected:
                        self._note(
                            None,
                            now,
                            "clock_jump",
                            {"device": ev.device, "reason": "the device's clock moved"},
                        )
                self._clock_uncertain()
            else:
                if not readable:
                    self._implausible(ev.device, ev.ts, now)
                restart = dev.event_boot is not None and ev.boot != dev.event_boot
                # Announced by its status: after what the old boot reported before it (nothing known:
                # no floor; the latest report now may be this boot's own heartbeats). Unannounced:
                # after the latest report heard.
                announced = dev.boot is not None and ev.boot == dev.boot
                after = dev.booted_after if announced else dev.reported_ts
                if restart and after is not None:
                    floor = after + dt.timedelta(milliseconds=ev.mono_ms)
                    if not readable:
                        # Timed at the latest it can have happened (its arrival): never before the old
                        # boot's last report (a clock that was ahead).
                        ts = max(ts, after)
                    elif ts < floor - bound:
                        # Restarted with its clock behind (a Pi without a real-time clock comes back
                        # with the time it last saved): this reading came after the old boot's last.
                        detail = {
                            "device": ev.device,
                            "behind_s": round((floor - ts).total_seconds(), 3),
                        }
                        ts = floor
                        self._note(None, now, "clock_behind", detail)
                        self._clock_uncertain()
                    elif not checked and self.state.episode and not self.state.episode.clock_uncertain:
                        # A restart no status announced (one that was has flagged the episode).
                        detail = {"device": ev.device, "reason": "restarted during the episode"}
                        self._note(None, now, "clock_unchecked", detail)
                        self._clock_uncertain()
                prior = max((r.ts for r in dev.readings.values()), default=None)
                if restart and prior is not None and ts < prior:
                    # A new boot's readings all came after the old boot's: never timed before them
                    # (timed at an arrival, or on a clock that was ahead, they may be later than it).
                    ts = prior
                    self._clock_uncertain()
                dev.event_boot = ev.boot
                self._anchor(dev, ev.mono_ms, ts, checked and ts == candidate, late=not readable)
        elif not readable:
            self._implausible(ev.device, ev.ts, now)
        late = dev.anchor_late if ev.boot is not None and ev.mono_ms is not None else not readable
        return self._at(ev, ts, dev, now, late=late)

    def _by_monotonic_clock(
        self, ev: SensorEvent, expected: dt.datetime, after: dt.datetime, moved: bool, now: dt.datetime
    ) -> dt.datetime:
        """A reading timed by the monotonic clock from the device's anchor (`expected`), never later than
        it can have happened (`_latest`), never before the reading it followed (`after`): a millisecond
        after it when the monotonic clock `moved` and the latest time leaves no more room, so a run
        replayed at once keeps the device's order."""
        step = dt.timedelta(milliseconds=1 if moved else 0)
        return max(min(expected, self._latest(ev, now)), after + step)

    def _latest(self, ev: SensorEvent, now: dt.datetime) -> dt.datetime:
        """The latest time a reading can have happened at: its arrival, or, from an older boot than the
        device's current one, when the current one was first heard of."""
        dev = self.state.devices[ev.device]
        if (
            ev.boot is not None
            and dev.boot is not None
            and ev.boot != dev.boot
            and dev.boot_heard_at is not None
        ):
            return min(now, dev.boot_heard_at)
        return now

    def _anchor(
        self, dev: DeviceState, mono_ms: int, ts: dt.datetime, checked: bool, *, late: bool = False
    ) -> None:
        dev.anchor_mono, dev.anchor_ts, dev.anchor_checked, dev.anchor_late = mono_ms, ts, checked, late

    def _at(
        self, ev: SensorEvent, ts: dt.datetime, dev: DeviceState, now: dt.datetime, *, late: bool = False
    ) -> SensorEvent:
        """The event at `ts`. One timed at a latest time only (`late`: its arrival, its device's clock
        unreadable) is not what the device last reported: a restart's floor is never built on it."""
        if not plausible(ts, now):
            # Timed by the monotonic clock into a time no clock reads (a `mono_ms` far off): on arrival.
            self._implausible(ev.device, ev.ts, now)
            ts, late = now, True
        if not late:
            dev.reported_ts = max(dev.reported_ts or ts, ts)
            if ev.boot is not None and dev.boot is not None and ev.boot != dev.boot:
                # An older boot's reading replayed after the new one announced itself: the new boot
                # began after it too.
                dev.booted_after = max(dev.booted_after or ts, ts)
        return ev if ts == ev.ts else replace(ev, ts=ts)

    def _implausible(self, device: str, said: dt.datetime, now: dt.datetime) -> None:
        """A reading whose time no clock reads today (`plausible`): said once in the timeline for a run of
        such readings, and the open episode's times rest on a guess."""
        dev = self.state.devices[device]
        if not dev.clock_implausible:
            dev.clock_implausible = True
            detail: dict[str, object] = {"device": device, "said": format_ts(said)}
            self._note(None, now, "clock_implausible", detail)
        self._clock_uncertain()

    def _clock_uncertain(self) -> None:
        ep = self.state.episode
        if ep is not None and not ep.clock_uncertain:
            ep.clock_uncertain = True  # some of its times rest on a clock that moved under them
            self._saved(ep)

    def _sample_offset(self, hb: Heartbeat, now: dt.datetime) -> None:
        # Heartbeats only: they are sent live (QoS 0, never replayed from an outbox), so arrival minus
        # `ts` is the clock offset plus the network's delay (never less), and the smallest of a few is
        # the best estimate of the offset.
        dev = self.state.devices[hb.device]
        dev.offsets = [*dev.offsets[-5:], (now - hb.ts).total_seconds()]
        if len(dev.offsets) < 3:
            return
        dev.clock_unchecked = False
        offset = min(dev.offsets)
        if abs(offset) > self.policy.max_clock_skew_s:
            if dev.skew_since is None:
                dev.skew_since = now
                self._note(None, now, "clock_skew", {"device": hb.device, "offset_s": round(offset, 3)})
            dev.skew_s = round(offset, 3)
        elif dev.skew_since is not None:
            dev.skew_since = dev.skew_s = None
            self._note(None, now, "clock_skew_cleared", {"device": hb.device})

    def _heartbeat(self, hb: Heartbeat, now: dt.datetime) -> None:
        dev = self.state.devices[hb.device]
        self._seen(hb.device, now)
        found: AheadSpell | None = None
        if (hb.epoch, hb.last_seq) > (dev.epoch, dev.seq):
            found = self._events_overdue(dev, hb, now)
            if found is None:
                return  # events still on their way: their own order tells the story
        else:
            if self._reports_the_door(hb.device):
                # Every event of the door's device is applied and its clock says this much time passed.
                self._advance(hb.ts)
            if (hb.epoch, hb.last_seq) < (dev.epoch, dev.seq):
                # Sent before events already applied (a heartbeat can overtake nothing, but be overtaken:
                # another topic, QoS 0): its state is older than theirs, and the next heartbeat tells.
                return
        for kind, value in sorted(hb.state.items()):
            if kind == "check" or not self.spec.reports(hb.device, kind):
                continue
            mine = dev.readings.get(kind)
            if mine is not None and mine.value == value:
                continue
            # Every event of the device is applied (or those it counts are not coming) and still the
            # reading differs: an event was lost.
            ts = hb.ts
            if found is not None and found.state.get(kind) == value:
                # So it was already at the first heartbeat that counted the missing events.
                ts = found.ts if mine is None else max(found.ts, mine.ts)
            self._reconcile(hb.device, kind, value, ts, mine)
        # Kept as it came (no copy: a heartbeat is never changed), once per heartbeat.
        dev.agreed_ts, dev.agreed_state = hb.ts, hb.state
        if found is not None:
            if not found.said:
                found.said = True
                self._possible_loss(hb.device, found.missing, found.ts, found.since)
            if self._reports_the_door(hb.device):
                self._advance(hb.ts)

    def _events_overdue(self, dev: DeviceState, hb: Heartbeat, now: dt.datetime) -> AheadSpell | None:
        """A heartbeat counting events the hub has not applied (4.2, 4.4). One such is a heartbeat that
        overtook its events (another topic, QoS 0): None, they are on their way. But the hub does not
        wait for ever: its state is reconciled (the spell returned) when the agent says nothing waits in
        its outbox (`queued: 0`: a hub stored and acknowledged them, and this one no longer has them, a
        new database or one restored from a backup), or when the heartbeats have gone on counting them
        for 3 x `heartbeat_s` with none arriving (taken by the broker and lost on the way to the hub:
        the agent re-sends only after a reconnect). Only ever a spell of the same `last_seq` or beyond."""
        if dev.seq > 0 or dev.epoch > 0:
            missing = hb.last_seq - dev.seq if hb.epoch == dev.epoch else hb.last_seq
        else:
            missing = 0  # a device never heard of: not loss (as a first event with seq > 1, 4.4)
        since = max((r.ts for r in dev.readings.values()), default=None)
        if hb.queued == 0:
            # Nothing will come: the hub's numbers are the device's from here.
            dev.epoch, dev.seq = hb.epoch, hb.last_seq
            dev.gaps += missing
            dev.ahead = None
            found = AheadSpell(epoch=hb.epoch, seq=hb.last_seq, at=now, ts=hb.ts, state=dict(hb.state))
            found.missing, found.since, found.said = missing, since, missing <= 0
            return found
        spell = dev.ahead
        if spell is None or (dev.epoch, dev.seq) >= (spell.epoch, spell.seq):
            # The first heartbeat ahead (or ahead again, after the events the last spell counted came).
            dev.ahead = AheadSpell(
                epoch=hb.epoch,
                seq=hb.last_seq,
                at=now,
                ts=hb.ts,
                state=dict(hb.state),
                since=since,
                applied_epoch=dev.epoch,
                applied_seq=dev.seq,
            )
            return None
        if (spell.applied_epoch, spell.applied_seq) != (dev.epoch, dev.seq):
            # Some of them arrived since: they are on their way after all, and the wait starts again.
            spell.at, spell.applied_epoch, spell.applied_seq = now, dev.epoch, dev.seq
            return None
        if now - spell.at < self._seconds(3 * self.policy.heartbeat_s):
            return None
        if not spell.said:
            spell.missing = max(missing, 0)
            spell.said = spell.missing <= 0
        return spell

    def _reports_the_door(self, device: str) -> bool:
        door = self.state.readings.get("door")
        return door is not None and door.device == device

    def _known_until(self, device: str, kind: str, mine: Reading | None) -> dt.datetime | None:
        """The last time the hub knew the device's reading of `kind` was `mine` (before it was found
        otherwise): its own time, the device's last message before its latest outage, or its latest
        heartbeat that showed it so with every event applied (4.2's "last known" bound)."""
        dev = self.state.devices[device]
        known = [mine.ts] if mine is not None else []
        if dev.last_offline is not None:
            known.append(dev.last_offline.start)
        if mine is not None and dev.agreed_ts is not None and dev.agreed_state.get(kind) == mine.value:
            known.append(dev.agreed_ts)
        return max(known, default=None)

    def _reconcile(
        self,
        device: str,
        kind: str,
        value: str,
        ts: dt.datetime,
        mine: Reading | None,
        *,
        at_start: bool = False,
    ) -> None:
        ep = self.state.episode
        dev = self.state.devices[device]
        if kind == "door" and value == "open" and ep is not None and self.state.door_opened_at is None:
            # Door open on return and no event says when: end between the bounds (semantics 4.2).
            earliest = self._known_until(device, kind, mine) or ep.started_at
            ep.end_uncertain = True
            ep.end_earliest = max(earliest, ep.started_at)
            dev.readings[kind] = Reading(value=value, ts=ts, device=device, uncertain=True)
            self.state.readings[kind] = dev.readings[kind]
            found: dict[str, object] = {"device": device, "earliest": format_ts(ep.end_earliest)}
            if at_start:
                found["at_start"] = True
            self._note(ep.id, ts, "door_found_open", found)
            self._end_episode(max(ts, ep.started_at), "the door was found open after a gap")
            return
        detail: dict[str, object] = {"device": device, "kind": kind, "value": value}
        if at_start:
            detail["at_start"] = True
        self._note(ep.id if ep else None, ts, "reading_reconciled", detail)
        before = ep
        self._apply(device, kind, value, ts, uncertain=True)
        opened = self.state.episode
        if opened is not None and opened is not before:
            # Opened on a reading nobody saw begin: the true start may be earlier, as early as the last
            # time the door was known open (2.1 keeps the earliest possible start).
            opened.start_uncertain = True
            if kind == "door" and opened.earliest_start is None:
                known_open = self._known_until(device, kind, mine)
                if known_open is not None and known_open < opened.started_at:
                    opened.earliest_start = known_open
            self._saved(opened)

    # -- readings and episodes

    def _apply(
        self,
        device: str,
        kind: str,
        value: str,
        ts: dt.datetime,
        *,
        staff: str | None = None,
        uncertain: bool = False,
    ) -> None:
        dev = self.state.devices[device]
        reading = Reading(value=value, ts=ts, device=device, uncertain=uncertain)
        if kind == "fault":
            _fault_run(dev, value, ts)
        dev.readings[kind] = reading
        if device in self._panel_apart and kind in ("observer", "check"):
            self._keep_panel(kind, reading)
        if self._inside:
            self._keep_history(device, kind, reading)
        ep = self.state.episode
        # 4.3: what a replay reveals about the past is written into the episode it belongs to, the ended
        # one as well as (or instead of) the one open now.
        late = self._ended_episode_at(kind, ts)
        if kind == "check":
            if self.state.last_check is None or ts > self.state.last_check:
                self.state.last_check = ts
            if late is not None:
                late.checks.append(ts)
                self._saved(late)
            if ep is not None:
                ep.checks.append(ts)
                self._saved(ep)  # evidence: its row may wait for the refresh, the room's state may not
                return
            self._keep_evidence(kind, value, ts)
            return
        if kind == "observer" and late is not None:
            late.observer.append(ObserverMark(ts=ts, present=value == "present"))
            self._saved(late)
        current = self.state.readings.get(kind)
        if current is not None and current.device != device and ts < current.ts:
            return  # another device's later reading of this kind wins (semantics 1)
        if kind == "occupancy" and ep is not None and current is not None and current.value == "vacant":
            if value == "occupied":
                self._quiet_spell(ep, current.ts, ts)
        self.state.readings[kind] = reading
        if ep is None:
            self._keep_evidence(kind, value, ts)
        else:
            if kind == "observer":
                ep.observer.append(ObserverMark(ts=ts, present=value == "present"))
                self._saved(ep)
            elif kind == "lock" and value == "engaged":
                self._lock_engaged(ep, device, ts, current)
        if kind in ("door", "occupancy"):
            self._door_or_occupancy(kind, value, ts, current if not uncertain else None)

    def _keep_panel(self, kind: str, reading: Reading) -> None:
        """The panel's reading kept (`RoomState.panel_marks`) while the door's device may still replay a
        close from before it: since the door's devices' latest report (the reading in effect then, and
        each one after). Before the room's reading of this kind takes it: the first one kept is seeded
        with the reading in effect before it."""
        st = self.state
        heard = [st.devices[d].heard_ts for d in self._door_apart]
        floor = min(h for h in heard if h is not None) if all(h is not None for h in heard) else None
        if kind == "observer":
            marks = st.panel_marks
            if not marks:
                before = st.readings.get("observer")
                marks = (
                    [] if before is None else [ObserverMark(ts=before.ts, present=before.value == "present")]
                )
            marks = _inserted(marks, ObserverMark(ts=reading.ts, present=reading.value == "present"))
            st.panel_marks = (_from_start(marks, floor) if floor is not None else marks)[-EVIDENCE_KEPT:]
            return
        interval = self._seconds(self.policy.checkin_interval_s)
        checks = set(st.panel_checks or ([st.last_check] if st.last_check is not None else []))
        checks.add(reading.ts)
        kept = sorted(c for c in checks if floor is None or c + interval > floor)
        st.panel_checks = kept[-EVIDENCE_KEPT:]

    def _keep_history(self, device: str, kind: str, reading: Reading) -> None:
        """A room with occupancy on a device apart from the door's: the door's, the panel's and the
        lock's readings kept, in time order, for as long as an inside device's next reading may be older
        than them; an `occupied` reading older than the door's latest is judged against them."""
        st = self.state
        if kind == "door":
            st.door_history = _inserted(st.door_history, reading)
        elif kind == "lock":
            st.lock_history = _inserted(st.lock_history, reading)
        elif kind == "observer":
            mark = ObserverMark(ts=reading.ts, present=reading.value == "present")
            st.observer_history = _inserted(st.observer_history, mark)
        elif kind == "check":
            st.check_history = sorted([*(st.check_history or []), reading.ts])
        elif kind == "occupancy" and device in self._inside and reading.value == "occupied":
            door = st.readings.get("door")
            if door is not None and door.ts > reading.ts:
                self._found_in_history(device, reading.ts)
        self._prune_history()

    def _prune_history(self) -> None:
        """From the readings in effect at the oldest of the inside devices' latest occupancy readings
        (each device's come in its order: nothing older is judged again), and for the panel and the lock
        from the door's close in effect then (a confinement is dated back to it, 2.1); at most
        DOOR_HISTORY_KEPT of each."""
        st = self.state
        latest = [st.devices[d].readings.get("occupancy") for d in self._inside]
        floor = min(r.ts for r in latest if r is not None) if all(latest) else None
        if floor is not None:
            # Back to the door reading in effect then (a confinement is dated back to its close).
            floor = min([floor, *[r.ts for r in st.door_history or [] if r.ts <= floor][-1:]])
        st.door_history = _last(st.door_history, floor)
        st.lock_history = _last(st.lock_history, floor)
        st.observer_history = _last(st.observer_history, floor)
        if st.check_history is not None:
            proof = None if floor is None else floor - self._seconds(self.policy.checkin_interval_s)
            st.check_history = [c for c in st.check_history if proof is None or c > proof][
                -DOOR_HISTORY_KEPT:
            ]
        if st.episode_spans is not None:
            spans = [span for span in st.episode_spans if floor is None or (span.end or floor) >= floor]
            st.episode_spans = spans[-DOOR_HISTORY_KEPT:]
        if st.outage_history is not None:
            st.outage_history = [o for o in st.outage_history if floor is None or (o.end or floor) >= floor]

    def _found_in_history(self, device: str, ts: dt.datetime) -> None:
        """2.1, 2.4 and 4.3 for occupancy on a device apart from the door's: a child's presence replayed
        after the door has moved on, timed while the door was closed, was a confinement. Each is written
        as it was, from the door's history: its start as 2.1 dates it, a segment for each re-closing
        within the grace (a new episode at it under `reclose_is_new_episode`), ended at the opening the
        grace ran out after; one that goes on now is the room's open episode. Its supervision and its
        lock as the panel and the lock showed them, the devices' outages left unknown as unknown, its
        record opened, its alerts raised (late, for what is over). One timed already is left alone."""
        st = self.state
        history = st.door_history or []
        before = [r for r in history if r.ts <= ts]
        if not before or before[-1].value != "closed":
            return  # the door was open (or not known): nobody was shut in then
        closed = before[-1]
        grace = self._seconds(self.policy.reclose_grace_s)
        chains: list[list[Segment]] = [[Segment(start=closed.ts)]]
        opened: dt.datetime | None = None
        over = False  # the last chain ended: the door stayed open past the grace
        for r in (r for r in history if r.ts > ts):
            if r.value == "open" and opened is None:
                chains[-1][-1].end = opened = r.ts
            elif r.value == "closed" and opened is not None:
                if r.ts > opened + grace:
                    over = True
                    break
                if self.policy.reclose_is_new_episode:
                    chains.append([Segment(start=r.ts)])  # nobody left: confined again, a new episode
                else:
                    chains[-1].append(Segment(start=r.ts))
                opened = None
        # Open since longer than the grace by now: over at the opening, as `_advance` would end it.
        over = over or (opened is not None and self._now > opened + grace)
        lookback = self._seconds(self.policy.occupancy_lookback_s)
        late_start = ts > closed.ts + lookback
        for n, segments in enumerate(chains):
            if n == 0 and late_start:
                segments[0].start = ts  # reported long after the close: dated by the reading (2.1)
            current = n == len(chains) - 1 and not over
            end = segments[-1].end if not current else None
            known = [
                *(st.episode_spans or []),
                *([] if st.episode is None else [Segment(start=st.episode.started_at)]),
            ]
            first = closed.ts if n == 0 else segments[0].start
            if any((end is None or k.start <= end) and (k.end is None or k.end >= first) for k in known):
                continue  # timed already: live, or by another reading of a replay
            if current and st.episode is not None:
                continue
            uncertain = n == 0 and (closed.uncertain or late_start)
            earliest = closed.ts if n == 0 and late_start else None
            self._found_episode(device, segments, uncertain=uncertain, earliest=earliest, ended=not current)
            if current:
                st.door_opened_at = opened  # open within its grace: `_advance` ends it as it would live

    def _found_episode(
        self,
        device: str,
        segments: list[Segment],
        *,
        uncertain: bool,
        earliest: dt.datetime | None,
        ended: bool,
    ) -> None:
        st = self.state
        start = segments[0].start
        end = segments[-1].end if ended else None
        ep = self._new_episode(start, uncertain=uncertain, earliest=earliest)
        ep.ended_at, ep.segments = end, segments
        until = end or dt.datetime.max.replace(tzinfo=dt.UTC)
        ep.observer.extend(m for m in _from_start(st.observer_history or [], start) if m.ts <= until)
        interval = self._seconds(self.policy.checkin_interval_s)
        ep.checks.extend(c for c in st.check_history or [] if start < c + interval and c <= until)
        self._locks_into(ep, st.lock_history or [], start, until)
        # 4.1: a device's outage its return left unknown is unknown time here too (4.2), and so is the
        # outage of one offline now.
        gaps = [(o.device, o.start, o.end) for o in st.outage_history or []]
        gaps += [(d, dev.offline_since or start, None) for d, dev in st.devices.items() if not dev.online]
        for dev_id, since, back in sorted(gaps, key=lambda g: (g[1], g[0])):
            if since < until and (back is None or back > start):
                gap_end = back if end is None else min(end, back or end)
                ep.unknown.append(UnknownInterval(device=dev_id, start=max(start, since), end=gap_end))
        self._effects.append(IncidentOpened(ep.incident_id, ep.id, self.site, self.spec.id, start))
        detail: dict[str, object] = {"start_uncertain": uncertain, "found_late_from": device}
        if earliest is not None:
            detail["earliest_start"] = format_ts(earliest)
        self._note(ep.id, start, "episode_started", detail)
        if end is None:
            st.episode = ep  # going on now: the room's open episode, timed on from here
            st.marks_since_close, st.checks_since_close, st.locks_since_close = [], [], []
            st.outages_since_close = []
            self._saved(ep)
            return
        reason = "the door opened (found from the door's history when the inside device's readings came)"
        self._note(ep.id, end, "episode_ended", {"reason": reason, "end_uncertain": False})
        self._effects.append(IncidentStatusChanged(ep.incident_id, "awaiting_record", end))
        st.episode_spans = [*(st.episode_spans or []), Segment(start=start, end=end)]
        if st.last_episode is None or (st.last_episode.ended_at or end) <= start:
            st.last_episode = ep  # the latest ended episode: late supervision readings find it
        self._saved(ep)

    def _keep_evidence(self, kind: str, value: str, ts: dt.datetime) -> None:
        """Outside an episode: what an episode dated back to the door's close will need (see RoomState)."""
        st = self.state
        if kind == "door":
            st.marks_since_close, st.checks_since_close, st.locks_since_close = [], [], []
            st.outages_since_close = []
            if value == "closed":  # what it closed on
                observer = st.readings.get("observer")
                if st.panel_marks and observer is not None and observer.ts > ts:
                    # A close replayed after later panel readings (the door's device was away): the
                    # panel as it was at the close, and each reading since (4.3).
                    st.marks_since_close.extend(_from_start(st.panel_marks, ts))
                elif observer is not None:
                    st.marks_since_close.append(
                        ObserverMark(ts=observer.ts, present=observer.value == "present")
                    )
                if st.panel_checks and st.last_check is not None and st.last_check > ts:
                    proof = self._seconds(self.policy.checkin_interval_s)
                    st.checks_since_close.extend(c for c in st.panel_checks if c + proof > ts)
                elif st.last_check is not None:
                    st.checks_since_close.append(st.last_check)
                lock = st.readings.get("lock")
                if lock is not None:
                    st.locks_since_close.append(lock)
            return
        door = st.readings.get("door")
        if door is None or door.value != "closed":
            return
        if kind == "observer":
            st.marks_since_close.append(ObserverMark(ts=ts, present=value == "present"))
            del st.marks_since_close[:-EVIDENCE_KEPT]
        elif kind == "check":
            st.checks_since_close.append(ts)
            del st.checks_since_close[:-EVIDENCE_KEPT]
        elif kind == "lock":
            reading = st.readings.get("lock")
            if reading is not None and reading.ts == ts:  # not another lock's older reading (1)
                st.locks_since_close.append(reading)
                del st.locks_since_close[:-EVIDENCE_KEPT]

    def _ended_episode_at(self, kind: str, ts: dt.datetime) -> Episode | None:
        """The last ended episode, if a supervision reading of `kind` timed `ts` bears on it (a replay
        arriving after its end): timed within it, or before its start when it is what the episode
        started with: an observer reading no older than any it holds from before its start (of one
        millisecond, the later to arrive wins: semantics 1), or a check-in still proving its start (3.2)."""
        last = self.state.last_episode
        if kind not in ("observer", "check") or last is None or last.ended_at is None or ts >= last.ended_at:
            return None
        if ts >= last.started_at:
            return last
        if kind == "check":
            return last if ts + self._seconds(last.checkin_interval_s) > last.started_at else None
        before = [m.ts for m in last.observer if m.ts <= last.started_at]
        return last if not before or ts >= max(before) else None

    def _door_or_occupancy(
        self, kind: str, value: str, ts: dt.datetime, before: Reading | None = None
    ) -> None:
        """A door or occupancy reading applied: episodes open, segment, end (2.1 to 2.4). `before`: the
        room's reading of the kind it replaced, when this one is a device's event (not a reconciled one)."""
        ep = self.state.episode
        if ep is None:
            self._maybe_open()
            return
        opened = self.state.door_opened_at
        if opened is None:
            if kind == "door" and value == "closed":
                if before is not None and before.uncertain and ts < ep.started_at:
                    self._start_found(ep, ts)
            elif kind == "door" and value == "open":
                # 2.4: the segment ends when the door opens; the episode waits for the re-close grace.
                ep.segments[-1].end = max(ts, ep.segments[-1].start)
                self.state.door_opened_at = ts
                self._note(ep.id, ts, "door_opened", {})
                self._saved(ep)
                # 2.4: a vacant reading timed after the opening ends it, also one that reached the hub
                # first (occupancy from a device of its own, whose message overtook the door's).
                held = self.state.readings.get("occupancy")
                if held is not None and held.value == "vacant" and held.ts > ts:
                    self._end_episode(ts, "the room was vacant after the door opened")
            # 2.3: vacant while the door is closed never ends an episode.
            return
        if kind == "occupancy" and value == "vacant" and ts > opened:
            self._end_episode(opened, "the room was vacant after the door opened")
        elif kind == "door" and value == "closed":
            if self.policy.reclose_is_new_episode:
                self._end_episode(opened, "the door re-closed: a new episode by policy")
                # Nobody left (no vacant reading after the opening): the child is confined again now,
                # even if a still child's PIR reads vacant.
                self._open_episode(ts, uncertain=False, earliest=None)
            else:
                ep.segments.append(Segment(start=ts))
                self.state.door_opened_at = None
                self._note(ep.id, ts, "door_reclosed", {"segment": len(ep.segments)})
                self._saved(ep)

    def _start_found(self, ep: Episode, ts: dt.datetime) -> None:
        """4.3: the close an episode was found by without seeing it (a heartbeat's `state`, its event
        lost or late) arrives after all, numbered late with its own time: the episode starts then, as
        2.1 dates it, and its start is known. Never moved later: a confinement is never under-counted."""
        first = ep.segments[0]
        if first.start == ep.started_at:
            first.start = ts
        detail: dict[str, object] = {"was": format_ts(ep.started_at)}
        ep.started_at = ts
        ep.start_uncertain = False
        ep.earliest_start = None
        self._note(ep.id, ts, "start_found", detail)
        self._saved(ep)

    def _advance(self, until: dt.datetime) -> None:
        """End an episode whose door has stayed open past the re-close grace, as of `until`."""
        opened = self.state.door_opened_at
        if self.state.episode is None or opened is None:
            return
        if until > opened + self._seconds(self.policy.reclose_grace_s):
            self._end_episode(opened, "the door stayed open past the re-close grace")

    def _maybe_open(self) -> None:
        door = self.state.readings.get("door")
        occupancy = self.state.readings.get("occupancy")
        if door is None or occupancy is None or door.value != "closed" or occupancy.value != "occupied":
            return
        # 2.1: nobody enters through a closed door, so the start is the close, unless occupancy was
        # first reported so long after it that the room may have been shut empty.
        closed_at = door.ts
        if occupancy.ts <= closed_at + self._seconds(self.policy.occupancy_lookback_s):
            self._open_episode(closed_at, uncertain=door.uncertain, earliest=None)
        else:
            self._open_episode(occupancy.ts, uncertain=True, earliest=closed_at)

    def _new_episode(self, start: dt.datetime, *, uncertain: bool, earliest: dt.datetime | None) -> Episode:
        """The room's next episode, from `start`, one segment open (its id and its record's from the
        room, its start and its number: the same episode again after a replay)."""
        st = self.state
        st.episode_count += 1
        episode_id = str(
            uuid.uuid5(NAMESPACE, f"{self.site}/{self.spec.id}/{format_ts(start)}/{st.episode_count}")
        )
        return Episode(
            id=episode_id,
            site=self.site,
            room=self.spec.id,
            number=st.episode_count,
            started_at=start,
            start_uncertain=uncertain,
            earliest_start=earliest,
            segments=[Segment(start=start)],
            incident_id=str(uuid.uuid5(NAMESPACE, f"incident/{episode_id}")),
            supervision=self.mode,
            checkin_interval_s=self.policy.checkin_interval_s,
            test=self.in_maintenance(start),
        )

    def _open_episode(self, start: dt.datetime, *, uncertain: bool, earliest: dt.datetime | None) -> None:
        st = self.state
        ep = self._new_episode(start, uncertain=uncertain, earliest=earliest)
        # Supervision as it was from the start: the observer reading at the start and each one after,
        # and the check-ins still proving it (a start dated back to the door's close needs the readings
        # since the close, not only the latest).
        marks = list(st.marks_since_close)
        observer = st.readings.get("observer")
        if observer is not None:
            marks.append(ObserverMark(ts=observer.ts, present=observer.value == "present"))
        # Of readings of one millisecond the last to arrive is the room's (semantics 1), so a reading
        # kept twice keeps the place of its later copy.
        marks = list({(m.ts, m.present): m for m in reversed(marks)}.values())[::-1]
        marks.sort(key=lambda m: m.ts)
        ep.observer.extend(_from_start(marks, start))
        interval = self._seconds(self.policy.checkin_interval_s)
        checks = set(st.checks_since_close) | ({st.last_check} if st.last_check is not None else set())
        ep.checks.extend(sorted(c for c in checks if c + interval > start))
        locks = list(st.locks_since_close)
        # Every outage since a close the start is dated back to lies inside the episode: nobody knows
        # what the device saw then (4.1), unless its return made it known (4.2, and then it is not kept).
        outages = {(o.device, o.start, o.end): o for o in st.outages_since_close}
        for device, dev in st.devices.items():
            span = dev.last_offline
            if span is not None:
                key = (device, span.start, span.end)
                outages.setdefault(key, UnknownInterval(device=device, start=span.start, end=span.end))
        st.marks_since_close, st.checks_since_close, st.locks_since_close = [], [], []
        st.outages_since_close = []
        for outage in sorted(outages.values(), key=lambda o: (o.start, o.device)):
            if outage.end is not None and outage.end > start:
                ep.unknown.append(
                    UnknownInterval(
                        device=outage.device, start=max(start, outage.start), end=max(start, outage.end)
                    )
                )
        for device, dev in st.devices.items():
            if not dev.online:
                ep.unknown.append(
                    UnknownInterval(device=device, start=max(start, dev.offline_since or start))
                )
        st.episode = ep
        st.door_opened_at = None
        self._effects.append(IncidentOpened(ep.incident_id, ep.id, self.site, self.spec.id, start))
        detail: dict[str, object] = {"start_uncertain": uncertain}
        if earliest is not None:
            detail["earliest_start"] = format_ts(earliest)
        self._note(ep.id, start, "episode_started", detail)
        lock = st.readings.get("lock")
        if lock is not None and lock not in locks:
            locks.append(lock)
        # The reading in effect at the start, then each one after (a start dated by a late occupancy
        # reading, 2.1, comes after some of them: a lock released by then did not hold the child).
        self._locks_into(ep, sorted(locks, key=lambda r: r.ts), start)
        self._saved(ep)

    def _end_episode(self, at: dt.datetime, reason: str) -> None:
        ep = self.state.episode
        if ep is None:
            return
        ep.ended_at = max(at, ep.started_at)
        occupancy = self.state.readings.get("occupancy")
        if occupancy is not None and occupancy.value == "vacant":
            self._quiet_spell(ep, occupancy.ts, ep.ended_at)
        last = ep.segments[-1]
        if last.end is None:
            last.end = max(ep.ended_at, last.start)
        for gap in ep.unknown:
            if gap.end is None:
                gap.end = max(ep.ended_at, gap.start)
        self.state.episode = None
        self.state.last_episode = ep
        self.state.door_opened_at = None
        if self._inside:  # a replay of an inside device never records it again
            span = Segment(start=ep.started_at, end=ep.ended_at)
            self.state.episode_spans = [*(self.state.episode_spans or []), span]
        self._note(ep.id, ep.ended_at, "episode_ended", {"reason": reason, "end_uncertain": ep.end_uncertain})
        self._effects.append(IncidentStatusChanged(ep.incident_id, "awaiting_record", ep.ended_at))
        self._saved(ep)

    def _quiet_spell(self, ep: Episode, since: dt.datetime, until: dt.datetime) -> None:
        """No movement read from `since` to `until` during `ep`: kept when longer than `no_movement_s`,
        so that the alert rules raise it even when the hub learns of it only afterwards."""
        start = max(since, ep.started_at)
        if (until - start).total_seconds() <= self.policy.no_movement_s:
            return
        if any(spell.start == start for spell in ep.quiet):
            return
        ep.quiet.append(QuietSpell(start=start, end=until))
        self._saved(ep)

    def _locks_into(
        self, ep: Episode, locks: list[Reading], start: dt.datetime, until: dt.datetime | None = None
    ) -> None:
        """The lock's readings (in time order) into an episode from `start` (to `until`): the one in effect
        at the start, then each one after, each engagement marked as `_apply` marks one."""
        before: Reading | None = None
        for reading in _from_start(locks, start):
            if until is not None and reading.ts > until:
                break
            if reading.value == "engaged":
                self._lock_engaged(ep, reading.device, max(reading.ts, start), before)
            before = reading

    def _lock_engaged(self, ep: Episode, device: str, ts: dt.datetime, before: Reading | None) -> None:
        """A lock engaged during `ep` (`before`: the room's lock reading until then): the first engagement
        marks it locked; another after a release, or another lock of the room, is an engagement again."""
        if not ep.locked:
            self._mark_locked(ep, device, ts)
        elif before is None or before.value != "engaged" or before.device != device:
            self._mark_relocked(ep, device, ts)

    def _mark_locked(self, ep: Episode, device: str, ts: dt.datetime) -> None:
        spec = self.spec.device(device)
        ep.locked = True
        ep.lock_type = spec.lock_type if spec else None
        ep.locked_at = ep.lock_engaged_at = max(ts, ep.started_at)
        self._note(ep.id, ts, "locked", {"lock_type": ep.lock_type})
        self._saved(ep)

    def _mark_relocked(self, ep: Episode, device: str, ts: dt.datetime) -> None:
        """Locked again after a release within the same episode: a new engagement, judged on its own
        (a lock refused by the profile raises again), and the stronger lock type is the one kept."""
        spec = self.spec.device(device)
        kind = spec.lock_type if spec else None
        if kind in ("bolt", "maglock") and ep.lock_type not in ("bolt", "maglock"):
            ep.lock_type = kind
        ep.lock_engaged_at = max(ts, ep.started_at)
        self._note(ep.id, ts, "locked", {"lock_type": kind, "again": True})
        self._saved(ep)

    # -- devices

    def _heard(self, message: Message) -> None:
        """Keep the latest time the device's current boot has reported (`DeviceState.heard_ts`)."""
        dev = self.state.devices[message.device]
        ts = message.ts
        if isinstance(message, DeviceStatus):
            if not message.online:
                return
            if message.boot is not None and message.boot != dev.boot:
                dev.heard_ts = ts  # a new boot: its clock, not the old one's (None: no time to go by)
                return
        elif isinstance(message, SensorEvent) and (message.epoch, message.seq) <= (dev.epoch, dev.seq):
            return  # a duplicate, on its uncorrected clock: it tells nothing new
        if ts is not None:
            dev.heard_ts = max(dev.heard_ts or ts, ts)

    def _seen(self, device: str, now: dt.datetime) -> None:
        dev = self.state.devices[device]
        dev.last_seen = now
        if dev.online:
            return
        dev.online = True
        since = dev.offline_since or now
        dev.offline_since = dev.offline_detected_at = None
        dev.last_offline = OfflineSpan(start=since, end=now)
        if self._inside:
            outage = UnknownInterval(device=device, start=since, end=now)
            self.state.outage_history = [*(self.state.outage_history or []), outage][-DOOR_HISTORY_KEPT:]
        ep = self.state.episode
        if ep is None:
            self._keep_outage(UnknownInterval(device=device, start=since, end=now))
            return
        for gap in ep.unknown:
            if gap.device == device and gap.end is None:
                gap.end = max(now, gap.start)
        self._saved(ep)

    def _keep_outage(self, outage: UnknownInterval) -> None:
        """Outside an episode: an outage that ended while the door was closed, which an episode dated
        back to the close will need (see RoomState.outages_since_close)."""
        st = self.state
        door = st.readings.get("door")
        if door is None or door.value != "closed":
            return  # the door's next change clears what is kept
        st.outages_since_close.append(outage)
        mine = [i for i, o in enumerate(st.outages_since_close) if o.device == outage.device]
        if len(mine) > EVIDENCE_KEPT:
            first, second = st.outages_since_close[mine[0]], st.outages_since_close[mine[1]]
            st.outages_since_close[mine[1]] = UnknownInterval(
                device=outage.device, start=min(first.start, second.start), end=second.end
            )
            del st.outages_since_close[mine[0]]

    def _go_offline(self, device: str, since: dt.datetime, now: dt.datetime) -> None:
        dev = self.state.devices[device]
        dev.online = False
        dev.offline_since = since
        dev.offline_detected_at = now
        ep = self.state.episode
        if ep is not None:
            ep.unknown.append(UnknownInterval(device=device, start=max(since, ep.started_at)))
            self._saved(ep)
        ended = self.state.last_episode
        if ended is not None and ended is not ep and ended.ended_at is not None and since < ended.ended_at:
            # Found offline only after the episode ended (its Last Will, or three heartbeats of silence,
            # came after the child was free): offline from its last message all the same (4.1), so the
            # rest of that episode is unknown, not supervised.
            start = max(since, ended.started_at)
            ended.unknown.append(UnknownInterval(device=device, start=start, end=ended.ended_at))
            self._saved(ended)
        self._note(
            ep.id if ep else None, now, "device_offline", {"device": device, "since": format_ts(since)}
        )

    def _forget_unknown(self, device: str, start: dt.datetime) -> None:
        st = self.state
        st.outages_since_close = [
            o for o in st.outages_since_close if not (o.device == device and o.start >= start)
        ]
        if st.outage_history is not None:
            st.outage_history = [
                o for o in st.outage_history if not (o.device == device and o.start >= start)
            ]
        for ep in (self.state.episode, self.state.last_episode):
            if ep is None:
                continue
            kept = [gap for gap in ep.unknown if not (gap.device == device and gap.start >= start)]
            if len(kept) != len(ep.unknown):
                ep.unknown = kept
                self._saved(ep)

    def _liveness_due(self, dev: DeviceState) -> dt.datetime | None:
        listening = self.state.listening_since
        if not dev.online or listening is None:
            return None
        base = max(dev.last_seen, listening) if dev.last_seen is not None else listening
        return base + self._seconds(3 * self.policy.heartbeat_s)

    def _liveness(self, now: dt.datetime) -> None:
        for device, dev in self.state.devices.items():
            due = self._liveness_due(dev)
            if due is not None and now >= due:
                since = dev.last_seen or self.state.listening_since or now
                self._go_offline(device, since, now)

    def _possible_loss(self, device: str, missing: int, ts: dt.datetime, since: dt.datetime | None) -> None:
        """4.4: a gap is possible loss on the device and on every episode the missing events may belong
        to: the open one, the last ended one when the gap (from the device's latest reading the hub has
        to this event; unknown: any time) overlaps it (a replay arriving after it ended), and any older
        one it overlaps (more than one episode ended while the events were being lost), which the room
        no longer holds: the writer flags those in the stored episodes (`OlderLoss`)."""
        ep = self.state.episode
        if ep is not None:
            ep.possible_loss = True
            self._saved(ep)
        last = self.state.last_episode
        noted = ep.id if ep else None
        if (
            last is not None
            and last.ended_at is not None
            and (since is None or since < last.ended_at)
            and ts > last.started_at
        ):
            if not last.possible_loss:
                last.possible_loss = True
                self._saved(last)
            noted = noted or last.id  # its timeline says why it is flagged
        self._note(noted, ts, "possible_loss", {"device": device, "missing": missing})
        if since is not None:
            held = tuple(e.id for e in (ep, last) if e is not None)
            self._effects.append(OlderLoss(self.site, self.spec.id, device, missing, since, ts, held))
        # `since` unknown (no reading of the device kept): the window has no start, and only the open
        # and latest episodes are flagged (above), as before; older ones are left as they are.

    # -- effects

    def _saved(self, ep: Episode) -> None:
        self._effects.append(EpisodeSaved(ep))
        if ep.ended_at is not None:
            # Ended, and changed since the alerts last looked: what it now shows (a lapse inside a
            # replay) is still raised, late, for the record.
            pending = self.state.unevaluated
            pending[:] = [e for e in pending if e.id != ep.id]
            pending.append(ep)

    def _note(self, episode_id: str | None, at: dt.datetime, kind: str, detail: dict[str, object]) -> None:
        self._effects.append(Note(episode_id, at, kind, detail))

    @staticmethod
    def _seconds(value: float) -> dt.timedelta:
        return dt.timedelta(seconds=value)
