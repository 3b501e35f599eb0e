"""Alerts: which conditions are due, and the life of each alert (semantics 2.5, 2.6, 3, 4 and 5).

Pure: no I/O, the clock passed in. The room machine asks `conditions()` what its state says is due
now (and when the next thing will be), and `AlertBook.reconcile()` turns that into alerts: raised once,
sent to a tier, escalated until acknowledged, sent again while an acknowledged condition lasts,
resolved when the condition ends. Every change is an effect for the adapters (store, live board,
indicator, notifiers). An alert's identity is its *key*: kind, episode, rule and the moment its
condition began, so a replayed or re-evaluated condition never raises a second alert, and a condition
that comes back after resolution (a new lapse, a new fault) is a new one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict

from seclusion_contract import format_ts

from .episode import Episode, Lapse, account
from .policy import Policy, Review, Tier

Severity = Literal["info", "warning", "critical"]
Level = Literal["none", "info", "warning", "critical"]
SendReason = Literal["raised", "late", "escalated", "renotify"]
TIERS: tuple[Tier, ...] = ("room", "senior", "dsl", "head")
RANK: dict[str, int] = {"none": 0, "info": 1, "warning": 2, "critical": 3}
NAMESPACE = uuid.UUID("0b8e4a52-7d1c-4f0e-9a63-2c5d8e1f7a90")
# A raise more than this after its due time is `late` (contract section 6).
LATE_AFTER = dt.timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class KindRule:
    """A row of semantics section 5's table. `tier` None: the rule that raised it names the tier."""

    severity: Severity
    tier: Tier | None
    needs_ack: bool
    # Its condition can outlast its episode: the episode's end does not resolve it, and it is judged only
    # when its episode is looked at again (a review recorded on the ended episode).
    outlives_episode: bool = False


KINDS: dict[str, KindRule] = {
    "episode_started": KindRule("info", "senior", needs_ack=False),
    "supervision_lapse": KindRule("critical", "room", needs_ack=True),
    "duration_warning": KindRule("warning", None, needs_ack=True),
    "duration_escalation": KindRule("warning", None, needs_ack=True),
    "duration_limit": KindRule("critical", "senior", needs_ack=True),
    # Resolves when the review is recorded, not when the episode ends (5's table).
    "review_due": KindRule("warning", None, needs_ack=True, outlives_episode=True),
    "no_movement": KindRule("critical", "room", needs_ack=True),
    "lock_forbidden": KindRule("critical", "senior", needs_ack=True),
    "seclusion_prohibited": KindRule("critical", "senior", needs_ack=True),
    # In an episode: critical, to the room; otherwise a warning to a senior (set per condition).
    "device_offline": KindRule("warning", "senior", needs_ack=True),
    "sensor_fault": KindRule("warning", "senior", needs_ack=True),
    "clock_skew": KindRule("warning", "senior", needs_ack=False),
    "report_overdue": KindRule("warning", "senior", needs_ack=True),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Escalation(_Model):
    """The alert reached `tier` at `at`."""

    tier: Tier
    at: dt.datetime


class Alert(_Model):
    """One alert: what was due, when it was raised, who it reached, who acted, and how it ended."""

    id: str
    key: str
    kind: str
    severity: Severity
    site: str
    room: str
    episode_id: str | None = None
    rule: str = ""
    detail: dict[str, str] = {}
    due_at: dt.datetime
    raised_at: dt.datetime
    late: bool = False
    needs_ack: bool = True
    tier: Tier
    escalations: list[Escalation] = []
    sends: int = 0
    next_send_at: dt.datetime | None = None
    acknowledged_at: dt.datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_via: str | None = None
    resolved_at: dt.datetime | None = None
    resolved_by: str | None = None
    note: str | None = None
    # When the condition itself ended, by the devices' clocks where they tell (a replay can show a lapse
    # that ended before the hub heard of it).
    condition_ended_at: dt.datetime | None = None
    held: bool = False  # raised while the room was in maintenance: recorded, never sent (2.7, 5.3)

    @property
    def active(self) -> bool:
        return self.resolved_at is None

    def snapshot(self) -> Alert:
        """A copy that later changes to this alert leave alone: its two containers copied, the rest
        (times, strings and `Escalation`s, which are never changed once made) shared. A deep copy
        cost as much as evaluating the room."""
        return self.model_copy(update={"detail": dict(self.detail), "escalations": list(self.escalations)})


@dataclass(frozen=True, slots=True)
class Condition:
    """Something the room's state says is due: an alert exists for it (raised, or resolved)."""

    key: str
    kind: str
    due_at: dt.datetime
    ended_at: dt.datetime | None = None  # None: it holds now
    episode_id: str | None = None
    rule: str = ""
    tier: Tier | None = None
    severity: Severity | None = None
    detail: dict[str, str] = field(default_factory=dict)
    # The alert's detail follows this one's while it lasts (a device's latest fault code); otherwise it
    # is the detail it was raised with.
    follows: bool = False


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What the alert rules need to know of a device."""

    device: str
    online: bool
    offline_since: dt.datetime | None
    offline_detected_at: dt.datetime | None
    fault: tuple[str, dt.datetime] | None  # its latest fault code other than `ok`, and since when it
    # has been faulty (its first fault since its last `ok`)
    skew: tuple[float, dt.datetime] | None  # an offset beyond bounds, and since when


@dataclass(frozen=True, slots=True)
class RoomView:
    """What the alert rules need to know of the room, at one moment."""

    episode: Episode | None
    ended: tuple[Episode, ...]  # episodes that ended since the last evaluation (and the last one)
    occupancy: tuple[str, dt.datetime] | None
    lock: tuple[str, dt.datetime, str | None] | None  # value, since, lock type of its device
    devices: tuple[DeviceView, ...]
    # Open episodes a senior entered by hand because the sensors failed: timed by what was entered.
    manual: tuple[Episode, ...] = ()


@dataclass
class Due:
    """What is due now, and the next moment something more falls due (None: nothing is waiting)."""

    conditions: list[Condition] = field(default_factory=list)
    next_at: dt.datetime | None = None
    # The episodes whose conditions were all looked at: an alert of another episode whose condition
    # outlives it (KindRule.outlives_episode) is left as it is.
    looked_at: set[str] = field(default_factory=set)
    # Why a condition that no longer holds ended, where its rule knows better than its kind's note.
    notes: dict[str, str] = field(default_factory=dict)
    # Ended episodes with a condition due before their end but after `now` (the hub's clock behind the
    # devices', or put back): looked at again when it falls due, never dropped.
    waiting: set[str] = field(default_factory=set)
    # The hub's clock put back: the keys of conditions that were due at the latest look and have not
    # ended (`still_due`). Not due again yet by the clock, they are neither resolved nor forgotten.
    still: set[str] = field(default_factory=set)

    def later(self, when: dt.datetime) -> None:
        if self.next_at is None or when < self.next_at:
            self.next_at = when


def _reviews_answered(ep: Episode, review: Review, start: dt.datetime) -> int:
    """How many occurrences of a recurring review its recordings answer: each recording, in time
    order, counts for the oldest occurrence not yet answered, if it came once the occurrence before
    that one was due (the first may be answered early). A review entered twice, or done ahead, never
    stands for one due hours later: that one is still due when its time comes."""
    answered = 0
    every = _s(review.every_s) if review.every_s is not None else None
    for at in sorted(r.at for r in ep.reviews if r.name == review.name):
        if answered == 0:
            answered = 1
        elif every is not None and at >= start + _s(review.first_s) + every * (answered - 1):
            answered += 1
    return answered


def _s(value: float) -> dt.timedelta:
    return dt.timedelta(seconds=value)


def _number(value: float) -> str:
    """A rule's number as its key, rule and detail say it: `:g` (600, 1200.5) wherever that gives the
    number back exactly, so stored keys stay as they were; otherwise the float's own repr (1000001.0,
    which `:g` would round to 1e+06, the key of another rule)."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


def age_on(born: dt.date | None, day: dt.date) -> int | None:
    """A child's age in whole years on `day` (the episode's start in the site's timezone), or None
    when the register has no date of birth (the youngest band's limit applies, 2.6)."""
    if born is None:
        return None
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def duration_limit_s(policy: Policy, age: int | None) -> float | None:
    """The hard limit (2.6): the age band's maximum (the youngest band when the age is unknown), and
    `max_duration_s`; when both apply, the shorter, so the limit is never later than either says."""
    limits: list[float] = []
    if policy.max_duration_s is not None:
        limits.append(policy.max_duration_s)
    bands = sorted(policy.age_band_max_s, key=lambda b: b.max_age)
    if bands:
        band = next((b for b in bands if age is not None and age <= b.max_age), None)
        if band is None:
            band = bands[0] if age is None else bands[-1]
        limits.append(band.max_s)
    return min(limits) if limits else None


def lock_violates(policy: Policy, lock_type: str | None) -> bool:
    """2.5: `forbidden` refuses any lock; `held_only` refuses a bolt or a maglock."""
    if policy.lock_mode == "forbidden":
        return True
    return policy.lock_mode == "held_only" and lock_type in ("bolt", "maglock")


def conditions(view: RoomView, policy: Policy, now: dt.datetime) -> Due:
    """Every condition due at `now`, and when the next one falls due."""
    due = Due()
    if view.episode is not None:
        _episode_conditions(view.episode, view, policy, now, due)
        due.looked_at.add(view.episode.id)
    for entered in view.manual:
        _episode_conditions(entered, None, policy, now, due)
        due.looked_at.add(entered.id)
    for ended in view.ended:
        _episode_conditions(ended, None, policy, now, due)
        due.looked_at.add(ended.id)
    _device_conditions(view, policy, now, due)
    return due


def _duration_conditions(ep: Episode, policy: Policy, add: Callable[[Condition], None]) -> None:
    """2.6: duration rules count elapsed time, the reading that never under-counts."""
    start = ep.started_at
    for rule in policy.duration_alerts:
        after = _number(rule.after_s)
        add(
            Condition(
                f"{rule.kind}/{ep.id}/{after}",
                rule.kind,
                start + _s(rule.after_s),
                episode_id=ep.id,
                rule=after,
                tier=rule.tier,
                detail={"after_s": after},
            )
        )
    limit = duration_limit_s(policy, ep.pupil_age)
    if limit is not None:
        # Keyed by the limit when the child's age moved it from the unknown-age one: a limit raised on
        # the youngest band does not stand in for the child's own, which raises in its turn.
        moved = limit != duration_limit_s(policy, None)
        limit_s = _number(limit)
        add(
            Condition(
                f"duration_limit/{ep.id}" + (f"/{limit_s}" if moved else ""),
                "duration_limit",
                start + _s(limit),
                episode_id=ep.id,
                rule=limit_s,
                detail={"limit_s": limit_s},
            )
        )


def _episode_conditions(
    ep: Episode, live: RoomView | None, policy: Policy, now: dt.datetime, due: Due
) -> None:
    """The conditions of one episode. `live` is the room's view while the episode is open; an ended
    episode is judged only on what it recorded, up to its end."""
    end = ep.ended_at

    def add(cond: Condition) -> None:
        if end is not None and cond.due_at > end:
            return  # it would have fallen due after the child was free: never due
        if cond.due_at > now:
            # Not yet due by the hub's clock. For an ended episode too: its devices' clocks (by which it
            # is timed) may run a little ahead of the hub's, or the hub's was put back; the condition
            # did fall due before the child was free, so it is raised (late) when the hub's clock
            # reaches it.
            due.later(cond.due_at)
            if end is not None:
                due.waiting.add(ep.id)
            return
        outlives = KINDS[cond.kind].outlives_episode
        if end is not None and (cond.ended_at is None or cond.ended_at > end) and not outlives:
            cond = replace(cond, ended_at=end)
        due.conditions.append(cond)

    start = ep.started_at
    if ep.manual:
        # Entered by hand because the sensors failed (a senior entered it, so no `episode_started`): no
        # sensor sees the room, so only what time alone decides is due. Its supervision is not known
        # (never a lapse, never no movement); its reviews are not recorded on it (docs/alerts.md).
        if not policy.seclusion_allowed:
            add(Condition(f"seclusion_prohibited/{ep.id}", "seclusion_prohibited", start, episode_id=ep.id))
        _duration_conditions(ep, policy, add)
        return
    add(Condition(f"episode_started/{ep.id}", "episode_started", start, episode_id=ep.id))
    if not policy.seclusion_allowed:
        add(Condition(f"seclusion_prohibited/{ep.id}", "seclusion_prohibited", start, episode_id=ep.id))
    # 3: supervision. Every unsupervised interval longer than the grace is a lapse alert, due when the
    # grace ran out; the one running now is due once it has run for the grace.
    grace = _s(policy.lapse_grace_s)
    # A lapse alert follows what the panel showed (observer readings, check-ins), through any time a
    # device was offline: that time counts as unknown in the episode's accounting, but nobody saw the
    # child supervised in it, so a lapse neither ends nor is hidden by it; the alert resolves only when
    # supervision is seen again (5's table).
    seen = ep.model_copy(update={"unknown": []}) if ep.unknown else ep
    acc = account(seen, now)
    horizon = ep.end_or(now)
    ongoing = ep.is_open and acc.state_now == "unsupervised"
    lapses = list(acc.lapses)
    if ongoing and horizon >= start and (acc.seen_at_end or not (lapses and lapses[-1].end == horizon)):
        # A lapse that begins at this very moment has no length yet, so the accounting lists none; with
        # a grace of 0 it is due now (3.1, 3.2), and is raised now rather than at the next wake-up. Also
        # when supervision was seen at this moment, only for it: the lapse before ended there.
        lapses.append(Lapse(horizon, horizon))
    for lapse in lapses:
        running = ongoing and lapse is lapses[-1]
        if not running and lapse.end - lapse.start <= grace:
            continue
        add(
            Condition(
                f"supervision_lapse/{ep.id}/{format_ts(lapse.start)}",
                "supervision_lapse",
                lapse.start + grace,
                ended_at=None if running else lapse.end,
                episode_id=ep.id,
                detail={"since": format_ts(lapse.start), "mode": ep.supervision},
            )
        )
    # An episode timed from a moment the hub's clock has not reached yet (a device clock a little
    # ahead) is looked at from its start: a lapse under way when it opened is due at start + grace.
    latest = max((m.ts for m in ep.observer), default=now)
    latest = max(latest, start)
    proof = max(ep.checks, default=None)
    if proof is not None and ep.supervision != "observer":
        latest = max(latest, proof + _s(ep.checkin_interval_s))
    if ep.is_open and latest >= horizon:
        # When will a lapse fall due if nothing more arrives? Looked at from past everything the episode
        # already knows: a check-in's proof running out later, or a reading timed at (or, by a clock a
        # little ahead, after) the hub's `now`, which `now` itself cannot see yet.
        probe = max(now, latest) + grace + _s(0.001)
        ahead = account(seen, probe)
        for lapse in ahead.lapses:
            if lapse.start + grace > now and (
                lapse.end == ep.end_or(probe) or lapse.end - lapse.start > grace
            ):
                due.later(lapse.start + grace)
    _duration_conditions(ep, policy, add)
    for review in policy.reviews:
        # Each occurrence is due until a review of its name is recorded, the episode's end included:
        # the child is out, the review still has to be done and recorded (5's table).
        recorded = _reviews_answered(ep, review, start)
        n = 1
        at = start + _s(review.first_s)
        while True:
            key = f"review_due/{ep.id}/{review.name}/{n}"
            if end is not None and at > end:
                # Due after the child was free: never due. One raised before the hub knew of the end
                # resolves, saying so.
                due.notes[key] = "the episode ended before it fell due"
                if at > now or review.every_s is None:
                    break
            elif n <= recorded:
                due.notes[key] = "the review was recorded"
            else:
                add(
                    Condition(
                        key,
                        "review_due",
                        at,
                        episode_id=ep.id,
                        rule=f"{review.name}#{n}",
                        tier=review.tier,
                        detail={"review": review.name, "number": str(n)},
                    )
                )
                if at > now:
                    break
            if review.every_s is None:
                break
            n += 1
            at = at + _s(review.every_s)
    if ep.locked and ep.locked_at is not None and lock_violates(policy, ep.lock_type):
        # Each engagement is its own condition: locked again after a release raises again.
        engaged = ep.lock_engaged_at or ep.locked_at
        lock_end: dt.datetime | None = None
        if live is not None and live.lock is not None and live.lock[0] != "engaged":
            lock_end = max(live.lock[1], engaged)
        add(
            Condition(
                f"lock_forbidden/{ep.id}/{format_ts(engaged)}",
                "lock_forbidden",
                engaged,
                ended_at=lock_end,
                episode_id=ep.id,
                detail={"lock_type": ep.lock_type or "", "lock_mode": policy.lock_mode},
            )
        )
    # 2.3: a PIR goes quiet when a child is still; quiet too long is a welfare check. The spell going on
    # now, and each one the episode recorded as over (4.3: one learnt of only afterwards, from a replay
    # or the hub's backlog, is raised late, for the record; one raised live resolves at its end).
    quiet: list[tuple[dt.datetime, dt.datetime | None]] = [(spell.start, spell.end) for spell in ep.quiet]
    if live is not None and live.occupancy is not None and live.occupancy[0] == "vacant":
        since = max(live.occupancy[1], start)
        if all(spell_start != since for spell_start, _ in quiet):
            quiet.append((since, None))
    for since, quiet_end in quiet:
        add(
            Condition(
                f"no_movement/{ep.id}/{format_ts(since)}",
                "no_movement",
                since + _s(policy.no_movement_s),
                ended_at=quiet_end,
                episode_id=ep.id,
                detail={"since": format_ts(since)},
            )
        )
    if live is not None:
        # 4.1: a device offline during an episode is critical, and goes to the room.
        for dev in live.devices:
            if dev.online or dev.offline_since is None:
                continue
            since = dev.offline_since
            at = max(since + _s(policy.offline_grace_s), dev.offline_detected_at or since, start)
            add(
                Condition(
                    f"device_offline/{ep.id}/{dev.device}/{format_ts(since)}",
                    "device_offline",
                    at,
                    episode_id=ep.id,
                    rule=dev.device,
                    tier="room",
                    severity="critical",
                    detail={"device": dev.device, "since": format_ts(since)},
                )
            )


def _device_conditions(view: RoomView, policy: Policy, now: dt.datetime, due: Due) -> None:
    def add(cond: Condition) -> None:
        if cond.due_at > now:
            due.later(cond.due_at)
        else:
            due.conditions.append(cond)

    ep = view.episode
    for dev in view.devices:
        # An outage that began outside an episode is a warning to a senior; during an episode the
        # episode's own (critical) alert speaks for it, so one outage does not page twice.
        outside = ep is None or (dev.offline_since is not None and dev.offline_since < ep.started_at)
        if not dev.online and dev.offline_since is not None and not outside:
            # A warning raised before the episode was known (its start dated back to the door's close,
            # 2.1, before the outage began) gives way to the episode's own alert: said as it is.
            key = f"device_offline/-/{dev.device}/{format_ts(dev.offline_since)}"
            due.notes[key] = "still offline: the episode's own alert speaks for it"
        if not dev.online and dev.offline_since is not None and outside:
            since = dev.offline_since
            # Due once offline for the grace, and never before the hub could know (a silent device is
            # found out three heartbeats after its last message).
            at = max(since + _s(policy.offline_grace_s), dev.offline_detected_at or since)
            add(
                Condition(
                    f"device_offline/-/{dev.device}/{format_ts(since)}",
                    "device_offline",
                    at,
                    rule=dev.device,
                    detail={"device": dev.device, "since": format_ts(since)},
                )
            )
        if dev.fault is not None:
            # One alert from the device's first fault to its `fault: ok`: keyed by the start of the run,
            # so a different code in between goes on with it, and says its latest code.
            code, since = dev.fault
            add(
                Condition(
                    f"sensor_fault/{dev.device}/{format_ts(since)}",
                    "sensor_fault",
                    min(since, now),
                    rule=dev.device,
                    detail={"device": dev.device, "code": code},
                    follows=True,
                )
            )
        if dev.skew is not None:
            offset, since = dev.skew
            add(
                Condition(
                    f"clock_skew/{dev.device}/{format_ts(since)}",
                    "clock_skew",
                    min(since, now),
                    rule=dev.device,
                    detail={"device": dev.device, "offset_s": f"{offset:.3f}"},
                )
            )


# --- effects ------------------------------------------------------------------------------------


# "updated": its detail changed while its condition lasts (a device's new fault code).
Change = Literal["raised", "released", "escalated", "renotified", "acknowledged", "resolved", "updated"]


@dataclass(frozen=True, slots=True)
class AlertSaved:
    """Store this alert as it now is, and show it on the live board; `change` says what happened."""

    alert: Alert
    change: Change


@dataclass(frozen=True, slots=True)
class AlertSend:
    """Tell the people of `tier` (every channel at once), once what decided it is stored."""

    alert: Alert
    tier: Tier
    reason: SendReason
    number: int  # the alert's n-th send: with the alert's id, unique


@dataclass(frozen=True, slots=True)
class IndicatorChanged:
    """The room's indicator (LED and buzzer) should now show this."""

    level: Level
    reason: str
    acknowledged: bool
    at: dt.datetime


AlertEffect = AlertSaved | AlertSend | IndicatorChanged


class IndicatorState(_Model):
    level: Level = "none"
    reason: str = ""
    acknowledged: bool = False


class AlertBook(_Model):
    """A room's alerts: the active ones by key, and the keys of resolved ones whose condition may still
    be reported (with their episode), so that the same condition never raises a second alert. Part of
    the room's stored state, written with every change of the room: a resolved alert itself lives in the
    `alert` table, only its key stays here (bench/ingest.py: the snapshot is the hot path)."""

    alerts: dict[str, Alert] = {}
    resolved: dict[str, str] = {}  # key -> episode id ("" for a room-level alert)
    indicator: IndicatorState = IndicatorState()
    # The latest time the alerts were reconciled at: a `now` before it is the hub's own clock put back
    # (NTP stepping it), when a condition not yet due again by the clock has not ended.
    looked_until: dt.datetime | None = None


class AlertError(Exception):
    """A person's action on an alert that cannot be done (unknown alert, already resolved)."""


@dataclass
class AlertContext:
    """What the book needs to know beyond its own state: who is there to tell, and whether the room's
    alerts are held (maintenance)."""

    site: str
    room: str
    policy: Policy
    tiers_with_recipients: frozenset[str]
    held: bool  # the room is in maintenance now
    test_episodes: frozenset[str] = frozenset()  # episodes flagged `test`: their alerts are held too
    # The room's open and latest episodes: their resolved alerts are kept, so late data about them
    # finds its alert already there instead of raising it again.
    keep_episodes: frozenset[str] = frozenset()
    # The room's open episode, if any: an alert that outlives its ended episode (a review not recorded)
    # is for the staff's screens, not the room's LED, which would say a child is still inside.
    open_episode: str | None = None


def alert_id(site: str, room: str, key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{site}/{room}/{key}"))


def reconcile(book: AlertBook, due: Due, ctx: AlertContext, now: dt.datetime) -> list[AlertEffect]:
    """Raise what is due and not yet raised, resolve what has ended, and send what must be sent."""
    effects: list[AlertEffect] = []
    seen: set[str] = set()
    book.looked_until = now if book.looked_until is None else max(book.looked_until, now)
    for cond in due.conditions:
        seen.add(cond.key)
        if cond.key in book.resolved:
            continue  # raised once and resolved: the same condition never raises it again
        alert = book.alerts.get(cond.key)
        if alert is None:
            alert = _raise(cond, ctx, now)
            book.alerts[cond.key] = alert
            effects.append(AlertSaved(alert, "raised"))
            if alert.active and not alert.held:
                effects.append(send(alert, alert.tier, "late" if alert.late else "raised", now, ctx))
        elif alert.active and cond.ended_at is not None:
            _resolve(alert, now, None, _ended_note(alert), cond.ended_at)
            effects.append(AlertSaved(alert, "resolved"))
        elif alert.active and cond.follows and cond.detail != alert.detail:
            alert.detail = dict(cond.detail)
            effects.append(AlertSaved(alert, "updated"))
    for key, alert in list(book.alerts.items()):
        if alert.active and key not in seen and key not in due.still and _looked_at(alert, due):
            # Its condition no longer holds (an occupancy signal, a recorded review, the device back).
            _resolve(alert, now, None, due.notes.get(key) or _ended_note(alert), None)
            effects.append(AlertSaved(alert, "resolved"))
        if not alert.active:
            _keep_key_only(book, key, alert)
    for key, episode in list(book.resolved.items()):
        if key not in seen and key not in due.still and (not episode or episode not in ctx.keep_episodes):
            # Resolved, its condition gone, and its episode past: nothing could raise it again.
            del book.resolved[key]
    for alert in book.alerts.values():
        if alert.active and alert.held and not ctx.held:
            # Maintenance is over and its condition still holds (a device left unplugged, a test
            # episode still going on): staff are told now, marked late.
            alert.held = False
            effects.append(send(alert, first_tier(alert.tier, ctx), "late", now, ctx))
            effects.append(AlertSaved(alert, "released"))
    effects.extend(_sends_due(book, ctx, now))
    effects.extend(_indicator(book, ctx, now))
    return effects


def _keep_key_only(book: AlertBook, key: str, alert: Alert) -> None:
    """A resolved alert, stored by its AlertSaved: the book keeps only its key from now on."""
    del book.alerts[key]
    book.resolved[key] = alert.episode_id or ""


def reconsider(
    book: AlertBook, ep: Episode, policy: Policy, ctx: AlertContext, now: dt.datetime
) -> list[AlertEffect]:
    """An ended episode the room no longer holds, changed where it is stored (a review recorded on
    it): its alerts still active are judged again on what it says now, and resolve if their condition
    has ended (a review recorded). Never raises one: its other conditions were raised, and resolved,
    while the room held it, and the book has let their keys go since."""
    mine = {key: alert for key, alert in book.alerts.items() if alert.active and alert.episode_id == ep.id}
    if not mine or ep.ended_at is None:
        return []
    due = Due()
    _episode_conditions(ep, None, policy, now, due)
    holding = {c.key: c for c in due.conditions}
    effects: list[AlertEffect] = []
    for key, alert in mine.items():
        cond = holding.get(key)
        if cond is not None and cond.ended_at is None:
            continue  # still due: a review not recorded yet
        note = (due.notes.get(key) if cond is None else None) or _ended_note(alert)
        _resolve(alert, now, None, note, cond.ended_at if cond is not None else None)
        effects.append(AlertSaved(alert, "resolved"))
        _keep_key_only(book, key, alert)
    if effects:
        effects.extend(_indicator(book, ctx, now))
    return effects


# A latest look further ahead than this is a clock that was wrong, not one put back: forgotten.
LOOKED_UNTIL_KEPT = dt.timedelta(days=1)


def still_due(book: AlertBook, view: RoomView, policy: Policy, now: dt.datetime, due: Due) -> None:
    """The hub's own clock put back (NTP stepping it): a condition due at the latest look (`looked_until`)
    may not be due again yet by the clock, though nothing about it ended (a lapse goes on, an episode is
    still open). Judged at that look instead: one still due then and not ended is kept (`due.still`),
    neither resolved nor forgotten; one that ended (the observer back, a review recorded, the device
    back) or is gone resolves as it would have."""
    then = book.looked_until
    if then is None or now >= then:
        return
    if then - now > LOOKED_UNTIL_KEPT:
        book.looked_until = now
        return
    ep = view.episode
    if ep is not None:
        # And past the open episode's latest evidence: a reading timed after that look (by a device's
        # clock, right where the hub's was ahead) may end a condition, the observer back at the panel.
        then = max([then, *(m.ts for m in ep.observer), *ep.checks])
    looked = conditions(view, policy, then)
    due.still = {c.key for c in looked.conditions if c.ended_at is None}


def _looked_at(alert: Alert, due: Due) -> bool:
    """Whether what `due` says is all there is to say about the alert's condition: an alert whose
    condition outlives its episode (a review not yet recorded) is judged only when its ended episode is
    looked at again (a review recorded on it); the room may not even hold that episode any more."""
    if not KINDS[alert.kind].outlives_episode or not alert.episode_id:
        return True
    return alert.episode_id in due.looked_at


def _holds(episode_id: str | None, ctx: AlertContext) -> bool:
    """2.7: while the room is in maintenance its own alerts (a device unplugged for cleaning) and its
    test episodes' are held. A real episode's are never held; and nothing is held once maintenance
    is over (at most 2 hours), a test episode that goes on after it included."""
    return ctx.held and (not episode_id or episode_id in ctx.test_episodes)


def acknowledge(
    book: AlertBook, alert_id_: str, who: str, via: str, ctx: AlertContext, now: dt.datetime
) -> tuple[Alert, list[AlertEffect]]:
    """A person has seen it and is acting: escalation stops. Acknowledging again changes nothing."""
    alert = find(book, alert_id_)
    if not acknowledge_alert(alert, who, via, ctx.policy, now):
        return alert, []
    effects: list[AlertEffect] = [AlertSaved(alert, "acknowledged")]
    effects.extend(_indicator(book, ctx, now))
    return alert, effects


def acknowledge_alert(alert: Alert, who: str, via: str, policy: Policy, now: dt.datetime) -> bool:
    """Record the acknowledgement on the alert itself (a room's, or one no room holds: a record's
    `report_overdue`); False when it was already acknowledged, which changes nothing."""
    if alert.acknowledged_at is not None:
        return False
    alert.acknowledged_at, alert.acknowledged_by, alert.acknowledged_via = now, who, via
    # While the condition lasts it is sent again to the acknowledging tier every `renotify_s` (5.2): an
    # alert that needs acknowledgement. One that needs none (the start of an episode) was sent once; that
    # someone acknowledged it is recorded, and it is not sent again.
    renotify = alert.active and not alert.held and alert.needs_ack
    alert.next_send_at = now + _s(policy.renotify_s) if renotify else None
    return True


def resolve_by_person(
    book: AlertBook, alert_id_: str, who: str, note: str, ctx: AlertContext, now: dt.datetime
) -> tuple[Alert, list[AlertEffect]]:
    """A senior member of staff resolves it with a note. The same condition will not raise it again;
    a new one (a new lapse) will."""
    alert = find(book, alert_id_)
    if not alert.active:
        raise AlertError("the alert is already resolved")
    _resolve(alert, now, who, note, None)
    effects: list[AlertEffect] = [AlertSaved(alert, "resolved")]
    effects.extend(_indicator(book, ctx, now))
    return alert, effects


def resolve_alert_by_person(alert: Alert, who: str, note: str, now: dt.datetime) -> None:
    """A senior member of staff resolves an alert no room holds (a record's `report_overdue`) with a
    note: nothing more is sent for it, and it is not raised again for the same step."""
    if not alert.active:
        raise AlertError("the alert is already resolved")
    _resolve(alert, now, who, note, None)


def find(book: AlertBook, alert_id_: str) -> Alert:
    for alert in book.alerts.values():
        if alert.id == alert_id_:
            return alert
    raise AlertError("no such alert in this room")


def next_send(book: AlertBook) -> dt.datetime | None:
    return min((a.next_send_at for a in book.alerts.values() if a.next_send_at is not None), default=None)


def tier_to_tell(wanted: Tier, ctx: AlertContext) -> Tier:
    """The tier an alert meant for `wanted` is sent to, so that it reaches a person: `wanted` if someone
    is on it, else the next tier up that has someone, else the highest tier below it that has, else
    `wanted` itself (nobody at all on the site: the live board and the room's indicator only)."""
    have = ctx.tiers_with_recipients
    i = TIERS.index(wanted)
    for tier in TIERS[i:]:
        if tier in have:
            return tier
    for tier in reversed(TIERS[:i]):
        if tier in have:
            return tier
    return wanted


def first_tier(wanted: Tier, ctx: AlertContext) -> Tier:
    """The first tier an alert is sent to (5's table, or its rule's). `room` stays `room` with nobody
    listed on it: the room's own channels (the indicator at the door, the live board that every send goes
    through) are how room staff are told, and escalation moves it on after `ack_timeout_s`. Any other
    tier with nobody on it: the nearest that has someone (`tier_to_tell`)."""
    return wanted if wanted == "room" else tier_to_tell(wanted, ctx)


def _raise(cond: Condition, ctx: AlertContext, now: dt.datetime) -> Alert:
    rule = KINDS[cond.kind]
    tier: Tier = first_tier(cond.tier or rule.tier or "senior", ctx)
    alert = Alert(
        id=alert_id(ctx.site, ctx.room, cond.key),
        key=cond.key,
        kind=cond.kind,
        severity=cond.severity or rule.severity,
        site=ctx.site,
        room=ctx.room,
        episode_id=cond.episode_id,
        rule=cond.rule,
        detail=dict(cond.detail),
        due_at=cond.due_at,
        raised_at=now,
        late=now - cond.due_at > LATE_AFTER,
        needs_ack=rule.needs_ack,
        tier=tier,
        held=_holds(cond.episode_id, ctx),
    )
    if cond.ended_at is not None:
        # 4.3: already over when the hub learnt of it: raised once, late, for the record; never sent.
        _resolve(alert, now, None, _ended_note(alert), cond.ended_at)
    return alert


def _resolve(
    alert: Alert, now: dt.datetime, who: str | None, note: str | None, ended: dt.datetime | None
) -> None:
    alert.resolved_at, alert.resolved_by, alert.note = now, who, note
    alert.condition_ended_at = ended
    alert.next_send_at = None


def send(alert: Alert, tier: Tier, reason: SendReason, now: dt.datetime, ctx: AlertContext) -> AlertSend:
    """Send the alert to `tier` now, recorded as an escalation on it, and schedule what follows: the
    next tier after `ack_timeout_s` while unacknowledged, the same tier after `renotify_s` once
    acknowledged (5.2)."""
    alert.escalations.append(Escalation(tier=tier, at=now))
    alert.tier = tier
    alert.sends += 1
    if alert.needs_ack and alert.acknowledged_at is None:
        alert.next_send_at = now + _s(ctx.policy.ack_timeout_s)
    elif alert.needs_ack:
        alert.next_send_at = now + _s(ctx.policy.renotify_s)
    else:
        alert.next_send_at = None
    return AlertSend(alert.snapshot(), tier, reason, alert.sends)


def _next_tier(current: Tier, ctx: AlertContext) -> Tier:
    """5.2: the next tier up that has someone to tell; past `head`, or with nobody further up, the highest
    tier that has someone (never one with nobody). With nobody at all on the site it stays where it is."""
    if not ctx.tiers_with_recipients:
        return current
    if current == "head":
        return tier_to_tell("head", ctx)
    return tier_to_tell(TIERS[TIERS.index(current) + 1], ctx)


def _sends_due(book: AlertBook, ctx: AlertContext, now: dt.datetime) -> list[AlertEffect]:
    effects: list[AlertEffect] = []
    for alert in book.alerts.values():
        effects.extend(send_due(alert, ctx, now))
    return effects


def send_due(alert: Alert, ctx: AlertContext, now: dt.datetime) -> list[AlertSend | AlertSaved]:
    """5.2 for one alert at `now`: escalated to the next tier, or sent again to its tier, if its
    `next_send_at` has come (a room's alerts, and a record's `report_overdue`, which no room holds)."""
    capped: list[AlertSend | AlertSaved] = []
    if alert.next_send_at is not None and alert.active and not alert.held:
        # Never further ahead than its interval: after the hub's clock was put back, a time set by the
        # clock as it was would hold the next escalation back by the step (semantics 5.2: every
        # `ack_timeout_s` until acknowledged). Saved, so the next look counts from it.
        wait = ctx.policy.ack_timeout_s if alert.acknowledged_at is None else ctx.policy.renotify_s
        if alert.next_send_at > now + _s(wait):
            alert.next_send_at = now + _s(wait)
            capped.append(AlertSaved(alert, "updated"))
    if alert.next_send_at is None or alert.next_send_at > now or not alert.active or alert.held:
        return capped
    if alert.acknowledged_at is None:
        return [
            send(alert, _next_tier(alert.tier, ctx), "escalated", now, ctx),
            AlertSaved(alert, "escalated"),
        ]
    if not alert.needs_ack:
        # Acknowledged, and needs no acknowledgement: never sent again (a re-send stored by an
        # earlier hub, which scheduled one for it, is dropped).
        alert.next_send_at = None
        return []
    return [send(alert, alert.tier, "renotify", now, ctx), AlertSaved(alert, "renotified")]


def _indicator(book: AlertBook, ctx: AlertContext, now: dt.datetime) -> list[AlertEffect]:
    active = [a for a in book.alerts.values() if a.active and not a.held and _at_the_door(a, ctx)]
    if active:
        top = max(active, key=lambda a: (RANK[a.severity], -a.raised_at.timestamp()))
        level: Level = top.severity
        reason = top.kind
        at_level = [a for a in active if a.severity == top.severity and a.needs_ack]
        acknowledged = all(a.acknowledged_at is not None for a in at_level)
    else:
        level, reason, acknowledged = "none", "", False
    new = IndicatorState(level=level, reason=reason, acknowledged=acknowledged)
    if new == book.indicator:
        return []
    book.indicator = new
    return [IndicatorChanged(level, reason, acknowledged, now)]


def _at_the_door(alert: Alert, ctx: AlertContext) -> bool:
    """Whether the alert lights the room's indicator: not one that outlives its ended episode."""
    return not KINDS[alert.kind].outlives_episode or alert.episode_id == ctx.open_episode


_ENDED = {
    "episode_started": "the episode ended",
    "supervision_lapse": "supervised again",
    "duration_warning": "the episode ended",
    "duration_escalation": "the episode ended",
    "duration_limit": "the episode ended, or the child's age set another limit",
    # A recorded review says so (Due.notes); this is any other way its occurrence stopped being due.
    "review_due": "the review is no longer due",
    "no_movement": "an occupancy signal, or the episode ended",
    "lock_forbidden": "the lock was released, or the episode ended",
    "seclusion_prohibited": "the episode ended",
    "device_offline": "the device is back",
    "sensor_fault": "the device reported its fault cleared",
    "clock_skew": "the device's clock is back within bounds",
    "report_overdue": "the report was done",
}


def _ended_note(alert: Alert) -> str:
    if alert.kind == "device_offline" and alert.episode_id:
        # The episode's own outage alert also ends with the episode; an outage that goes on is then
        # a warning of its own.
        return "the device is back, or the episode ended"
    return _ENDED.get(alert.kind, "the condition ended")


def active(alerts: Iterable[Alert]) -> list[Alert]:
    return [a for a in alerts if a.active]
