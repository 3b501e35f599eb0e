"""An independent oracle of the alert rules (semantics 3 and 5, policies.md), compared with RoomMachine.

Written from the design text: for one room (a door device: door, occupancy; a panel: observer, check),
readings in time order (each arriving at its own ts), a child's age attached during an episode, and
acknowledgements, it says which alerts exist, their due_at, raised_at, late, severity, the tiers and
times of every send (escalations), acknowledgement and resolution.

Episodes (start, end, when the hub learns of the end) and their unsupervised intervals come from the
episode oracle of test_room_oracle.py (which checks them against the hub); the alert rules on top of them
are written here. Where the design is silent the oracle follows the hub's documented choice
(docs/alerts.md), said where it is done.
"""

# ruff: noqa: B023 (the rules of one episode are closures over it, called within its iteration)

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import json
import os
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seclusion_hub.core.alerts import Alert
from seclusion_hub.core.room import Heartbeat, RoomMachine, RoomState
from seclusion_hub.store import room_state_json
from tests.hub.rooms import DOOR, PANEL, T0, Room
from tests.hub.test_room_oracle import Oracle as EpisodeOracle
from tests.hub.test_room_oracle import Params, Reading, ms_at, ms_of

TIERS = ("room", "senior", "dsl", "head")
ALL_TIERS = frozenset(TIERS)

# --------------------------------------------------------------------------------------------------
# The policy and the story


@dataclass(frozen=True)
class APolicy:
    supervision: str = "observer"
    lapse_grace_s: float = 15
    checkin_interval_s: float = 60
    no_movement_s: float = 120
    reclose_grace_s: float = 30
    reclose_is_new_episode: bool = False
    # (after_s, kind, tier)
    duration_alerts: tuple[tuple[float, str, str], ...] = (
        (600, "duration_warning", "room"),
        (1200, "duration_escalation", "senior"),
        (1800, "duration_escalation", "head"),
    )
    max_duration_s: float | None = None
    age_bands: tuple[tuple[int, float], ...] = ()  # (max_age, max_s), youngest first
    ack_timeout_s: float = 60
    renotify_s: float = 300
    tiers: frozenset[str] = ALL_TIERS

    def hub_kwargs(self) -> dict[str, Any]:
        return {
            "supervision": self.supervision,
            "lapse_grace_s": self.lapse_grace_s,
            "checkin_interval_s": self.checkin_interval_s,
            "no_movement_s": self.no_movement_s,
            "reclose_grace_s": self.reclose_grace_s,
            "reclose_is_new_episode": self.reclose_is_new_episode,
            "duration_alerts": [{"after_s": a, "kind": k, "tier": t} for a, k, t in self.duration_alerts],
            "max_duration_s": self.max_duration_s,
            "age_band_max_s": [{"max_age": a, "max_s": s} for a, s in self.age_bands],
            "ack_timeout_s": self.ack_timeout_s,
            "renotify_s": self.renotify_s,
        }


@dataclass(frozen=True)
class Action:
    """A person's action at `t` (ms): `age` attaches a child of that age to the open episode; `ack`
    acknowledges the `pick`-th (modulo) active, unacknowledged alert that needs acknowledgement."""

    t: int
    what: str  # "age" | "ack"
    arg: int


@dataclass
class OAlert:
    kind: str
    episode: int  # index of the episode in start order
    tag: str  # the rule, or the moment its condition began (ms)
    due: int
    raised: int
    severity: str
    first_tier: str
    needs_ack: bool
    resolved: int | None  # ms, None: still active at the end
    over: bool = False  # its condition had already ended when it was raised (4.3)
    escalations: list[tuple[str, int]] = field(default_factory=list)
    acked: int | None = None

    def ident(self) -> tuple[Any, ...]:
        return (self.raised, self.kind, self.episode, self.tag)


# --------------------------------------------------------------------------------------------------
# The oracle


def first_tier(wanted: str, tiers: frozenset[str]) -> str:
    """5's table gives the first tier. The design is silent on a first tier with nobody on it: the hub's
    documented choice (alerts.md, "Tiers with nobody on them"): `room` stays `room`; another goes to the
    next tier up that has someone, else the highest below that has, else stays."""
    if wanted == "room":
        return "room"
    return _tell(wanted, tiers)


def _tell(wanted: str, tiers: frozenset[str]) -> str:
    i = TIERS.index(wanted)
    up = [t for t in TIERS[i:] if t in tiers]
    if up:
        return up[0]
    down = [t for t in TIERS[:i] if t in tiers]
    return down[-1] if down else wanted


def next_tier(current: str, tiers: frozenset[str]) -> str:
    """5.2: the next tier, skipping tiers with no recipients; past `head` it repeats to `head`. (With
    nobody on head, or nobody at all: the hub's documented choice, the highest tier that has someone,
    or the same tier.)"""
    if not tiers:
        return current
    if current == "head":
        return _tell("head", tiers)
    return _tell(TIERS[TIERS.index(current) + 1], tiers)


def limit_s(p: APolicy, age: int | None) -> float | None:
    """2.6: `max_duration_s`, or the age band's maximum when the age is known (the youngest band when it
    is not). Both given: the shorter (the hub's documented choice; the text says "or"). A child older
    than every band: the oldest band (the hub's documented choice; the text is silent)."""
    limits: list[float] = []
    if p.max_duration_s is not None:
        limits.append(p.max_duration_s)
    if p.age_bands:
        if age is None:
            limits.append(p.age_bands[0][1])
        else:
            band = next((b for b in p.age_bands if age <= b[0]), p.age_bands[-1])
            limits.append(band[1])
    return min(limits) if limits else None


class _Episodes(EpisodeOracle):
    """The episode oracle, also noting when each episode became known (the reading that opened it)."""

    def __init__(self, p: Params) -> None:
        super().__init__(p)
        self.known: dict[int, int] = {}

    def _start(self, started_at: int, uncertain: bool = False, earliest: int | None = None) -> None:
        super()._start(started_at, uncertain, earliest)
        self.known[id(self.ep)] = self.now


def oracle(
    readings: list[Reading], actions: list[Action], p: APolicy, end: int, ticks: list[int] | None = None
) -> list[OAlert]:
    """The alerts of the story. `ticks`: the moments the hub is woken besides each reading (a timer every
    so often); None: it is woken exactly at every deadline (`next_deadline`)."""
    eps = _Episodes(
        Params(
            reclose_grace_s=p.reclose_grace_s,
            checkin_interval_s=p.checkin_interval_s,
            supervision=p.supervision,
            reclose_is_new_episode=p.reclose_is_new_episode,
        )
    )
    for r in readings:
        eps.apply(r)
    eps.finish(end)
    woken = sorted(
        {
            *(ticks or []),
            *(r.t for r in readings),
            *(a.t for a in actions if a.what in ("restart", "age")),
            end,
        }
    )

    def q(t: int) -> int:
        """When the hub first looks at or after `t` (a reading at `t` is applied before that look)."""
        if ticks is None:
            return t
        i = bisect.bisect_left(woken, t)
        return woken[i] if i < len(woken) else end + 10**9

    grace = round(p.lapse_grace_s * 1000)
    out: list[OAlert] = []
    for i, ep in enumerate(eps.episodes):
        known = eps.known[id(ep)]
        # The hub learns that an episode ended at `decided_at` (the door's reading after the re-close
        # grace, a vacant after the opening): until then its timers run (2.4, and the hub's choice to
        # judge the grace by the door device's readings only, room.tick's docstring).
        decided = ep.decided_at
        horizon = decided if decided is not None else end

        def reached(when: int) -> bool:
            # While the episode was (known to be) open: strictly before the reading that ended it (a
            # reading at the very moment is applied first), or by the end of the story.
            return when < decided if decided is not None else when <= end

        ended = ep.ended_at  # the true end (2.4), known to the hub at `decided`

        def alert(
            kind: str, tag: str, due: int, sev: str, tier: str, ack: bool, ends: int | None, ok: bool
        ) -> None:
            """`ends`: when the hub sees the condition end (None: it holds at the end of the story); `ok`:
            it fell due while the child was confined (due by the episode's true end, and lasted past it)."""
            raised = max(q(due), known)
            if (ends is None or raised < ends) and reached(raised):
                out.append(
                    OAlert(kind, i, tag, due, raised, sev, first_tier(tier, p.tiers), ack, ends, False)
                )
            elif ok and ends is not None:
                # Not looked at while it held (the episode known late, no look in between): 4.3, raised
                # once, late, already resolved, never sent.
                at_ = max(ends, known)
                out.append(OAlert(kind, i, tag, due, at_, sev, first_tier(tier, p.tiers), ack, at_, True))

        def within(due: int) -> bool:
            return ended is None or due <= ended

        # 5: episode_started, info, senior, no ack, resolves when the episode ends.
        alert("episode_started", "", ep.started_at, "info", "senior", False, decided, True)

        # 3: every unsupervised interval, as the hub sees it while the episode is open.
        live = dataclasses.replace(ep, ended_at=None)
        for a, b in eps.account(live, horizon)["lapses"]:
            running = b == horizon and decided is None
            if not running and b - a <= grace:
                continue  # absent no longer than the grace
            truly = min(b, ended) if ended is not None else b
            alert(
                "supervision_lapse",
                str(a),
                a + grace,
                "critical",
                "room",
                True,
                None if running else b,
                truly - a > grace,
            )

        # 2.6: each duration rule, due at started_at + after_s; resolves when the episode ends.
        for after_s, kind, tier in p.duration_alerts:
            due = ep.started_at + round(after_s * 1000)
            alert(kind, f"{after_s:g}", due, "warning", tier, True, decided, within(due))

        # 2.6: the limit, by the child's age once known (the youngest band until then).
        # (An age given at the very moment of a reading is attached after it: to the episode it opened.)
        ages = [a for a in actions if a.what == "age" and known <= a.t and reached(a.t)]
        base = limit_s(p, None)
        # A limit set by an age replaces the one before (the hub's documented choice: an alert raised on
        # the youngest band resolves, "the child's age set another limit").
        spans: list[tuple[float | None, int, int | None]] = []  # (limit, from, until)
        current, since = base, known
        for a in ages:
            new = limit_s(p, a.arg)
            if new != current:
                spans.append((current, since, a.t))
                current, since = new, a.t
        spans.append((current, since, None))
        for lim, frm, until in spans:
            if lim is None:
                continue
            due = ep.started_at + round(lim * 1000)
            raised = max(q(due), frm)
            ends = until if until is not None else decided
            tier = first_tier("senior", p.tiers)
            if (ends is None or raised < ends) and reached(raised):
                out.append(
                    OAlert("duration_limit", i, f"{lim:g}", due, raised, "critical", tier, True, ends, False)
                )
            elif until is None and ends is not None and within(due) and due >= frm:
                out.append(
                    OAlert("duration_limit", i, f"{lim:g}", due, ends, "critical", tier, True, ends, True)
                )

        # 2.3: no occupancy signal for no_movement_s while the door is closed.
        occ = [(r.t, r.value) for r in readings if r.kind == "occupancy"]
        quiet_from: int | None = None
        spells: list[tuple[int, int | None]] = []
        for t, value in occ:
            if t <= ep.started_at:
                quiet_from = t if value == "vacant" else None
                continue
            if t >= horizon:
                break
            if value == "vacant" and quiet_from is None:
                quiet_from = t
            elif value == "occupied" and quiet_from is not None:
                spells.append((max(quiet_from, ep.started_at), t))
                quiet_from = None
        if quiet_from is not None:
            spells.append((max(quiet_from, ep.started_at), None))
        for since, until in spells:
            due = since + round(p.no_movement_s * 1000)
            ends = until if until is not None else decided
            if ends is not None and due >= ends:
                continue  # movement read before it fell due
            truly = min(x for x in (until, ended, end) if x is not None)
            alert("no_movement", str(since), due, "critical", "room", True, ends, due < truly)

    # 5.2: acknowledgement (who is acknowledged does not depend on the sends), then the sends.
    for ack in sorted((a for a in actions if a.what == "ack"), key=lambda a: a.t):
        candidates = sorted(
            (
                al
                for al in out
                if al.needs_ack
                and al.acked is None
                and al.raised < ack.t
                and (al.resolved is None or al.resolved > ack.t)
            ),
            key=OAlert.ident,
        )
        if candidates:
            candidates[ack.arg % len(candidates)].acked = ack.t
    for al in out:
        if not al.over:
            _sends(al, p, end, q)
    return out


def _sends(al: OAlert, p: APolicy, end: int, q: Any) -> None:
    """Sent to its first tier when raised; unacknowledged, to the next tier every `ack_timeout_s`;
    acknowledged, to the same tier every `renotify_s` from the acknowledgement; while it is active (a
    send due at the moment it resolves or is acknowledged is not made: those come first)."""
    ack_ms, renotify_ms = round(p.ack_timeout_s * 1000), round(p.renotify_s * 1000)
    al.escalations.append((al.first_tier, al.raised))
    if not al.needs_ack:
        return
    stop = end if al.resolved is None else min(end, al.resolved - 1)
    tier, last = al.escalations[-1]
    while True:
        sent = q(last + ack_ms)
        if sent > stop or (al.acked is not None and sent >= al.acked):
            break
        tier, last = next_tier(tier, p.tiers), sent
        al.escalations.append((tier, last))
    if al.acked is None:
        return
    last = al.acked
    while (sent := q(last + renotify_ms)) <= stop:
        al.escalations.append((tier, sent))
        last = sent


def summary(alerts: list[OAlert]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            a.kind,
            a.episode,
            a.tag,
            a.due,
            a.raised,
            a.raised - a.due > 1000,
            a.severity,
            tuple(a.escalations),
            -1 if a.acked is None else a.acked,
            -1 if a.resolved is None else a.resolved,
        )
        for a in alerts
    )


# --------------------------------------------------------------------------------------------------
# The hub, fed the same story, woken only at its own deadlines


def _deadlines_before(room: Room, t: int, *, inclusive: bool = False) -> None:
    while True:
        due = room.machine.next_deadline(liveness=False)
        if due is None or due > ms_at(t) or (due == ms_at(t) and not inclusive):
            return
        moment = max(due, room.clock.now())
        room.tick((moment - T0).total_seconds(), liveness=False)


def _ident(a: Alert, order: dict[str, int]) -> tuple[Any, ...]:
    return (ms_of(a.raised_at), a.kind, order.get(a.episode_id or "", -1), _tag(a))


def _tag(a: Alert) -> str:
    if a.kind in ("supervision_lapse", "no_movement"):
        return str(ms_of(dt.datetime.fromisoformat(a.detail["since"].replace("Z", "+00:00"))))
    if a.kind in ("duration_warning", "duration_escalation"):
        return a.detail["after_s"]
    if a.kind == "duration_limit":
        return a.detail["limit_s"]
    return ""


def feed(
    readings: list[Reading], actions: list[Action], p: APolicy, end: int, ticks: list[int] | None = None
) -> Room:
    """The hub fed the story: woken at its own deadlines (`ticks` None) or at each of `ticks`; a
    `restart` reloads the room from its stored JSON and looks at it at once, as the hub does at start."""
    room = Room(tiers=p.tiers, **p.hub_kwargs())
    seq = {DOOR: 0, PANEL: 0}
    state: dict[str, str] = {}
    steps: list[tuple[int, int, Any]] = [(r.t, 0, r) for r in readings] + [(a.t, 1, a) for a in actions]
    pending = sorted(ticks or [])

    def wake_before(t: int, inclusive: bool = False) -> None:
        if ticks is None:
            _deadlines_before(room, t, inclusive=inclusive)
            return
        while pending and (pending[0] < t or (inclusive and pending[0] == t)):
            room.tick(pending.pop(0) / 1000, liveness=False)

    for t, _, item in sorted(steps, key=lambda s: (s[0], s[1])):
        wake_before(t)
        if isinstance(item, Reading):
            seq[item.device] += 1
            if item.device == DOOR:
                state[item.kind] = item.value
            room.send(item.device, item.kind, item.value, t / 1000)
            continue
        room.clock.set(ms_at(t))
        ep = room.machine.episode
        if item.what == "age":
            if ep is not None:
                room.effects.extend(room.machine.attach_pupil(ep.id, "p1", item.arg, "Ms Reed", ms_at(t)))
        elif item.what == "restart":
            saved = RoomState.model_validate(json.loads(room_state_json(room.machine.state)))
            room.machine = RoomMachine("demo-school", room.spec, room.policy, saved, tiers=p.tiers)
            room.machine.hub_started(ms_at(t))
            room.tick(t / 1000, liveness=False)
        else:
            order = _order(room)
            candidates = sorted(
                (
                    a
                    for a in room.machine.state.book.alerts.values()
                    if a.active and a.needs_ack and a.acknowledged_at is None and a.raised_at < ms_at(t)
                ),
                key=lambda a: _ident(a, order),
            )
            if candidates:
                chosen = candidates[item.arg % len(candidates)]
                _, effects = room.machine.acknowledge(chosen.id, "Ms Duty", "api", ms_at(t))
                room.effects.extend(effects)
    wake_before(end)
    room.clock.set(ms_at(end))
    heartbeat = Heartbeat(DOOR, ms_at(end), 0, seq[DOOR], dict(state))
    room.effects.extend(room.machine.handle(heartbeat, ms_at(end)).effects)
    room.tick(end / 1000, liveness=False)
    wake_before(end, inclusive=True)
    return room


def _order(room: Room) -> dict[str, int]:
    from seclusion_hub.core.room import EpisodeSaved

    starts: dict[str, dt.datetime] = {}
    for e in room.effects + [x for o in room.outcomes for x in o.effects]:
        if isinstance(e, EpisodeSaved):
            starts[e.episode.id] = e.episode.started_at
    ep = room.machine.episode
    if ep is not None:
        starts[ep.id] = ep.started_at
    ordered = sorted(starts, key=lambda k: (starts[k], k))
    return {k: i for i, k in enumerate(ordered)}


def hub_summary(room: Room) -> list[tuple[Any, ...]]:
    order = _order(room)
    out = []
    for a in room.alerts():
        if a.kind not in ORACLE_KINDS:
            continue
        out.append(
            (
                a.kind,
                order[a.episode_id or ""],
                _tag(a),
                ms_of(a.due_at),
                ms_of(a.raised_at),
                a.late,
                a.severity,
                tuple((e.tier, ms_of(e.at)) for e in a.escalations),
                -1 if a.acknowledged_at is None else ms_of(a.acknowledged_at),
                -1 if a.resolved_at is None else ms_of(a.resolved_at),
            )
        )
    return sorted(out)


ORACLE_KINDS = {
    "episode_started",
    "supervision_lapse",
    "duration_warning",
    "duration_escalation",
    "duration_limit",
    "no_movement",
}


def check(
    readings: list[Reading],
    actions: list[Action],
    p: APolicy,
    end: int | None = None,
    step_ms: int | None = None,
) -> None:
    if end is None:
        last = max([r.t for r in readings] + [a.t for a in actions] + [0])
        end = last + round(p.reclose_grace_s * 1000) + 60_000
    ticks = None if step_ms is None else list(range(step_ms, end + 1, step_ms))
    want = summary(oracle(readings, actions, p, end, ticks))
    got = hub_summary(feed(readings, actions, p, end, ticks))
    assert got == want, f"\nreadings={readings}\nactions={actions}\npolicy={p}\noracle={want}\nhub   ={got}"


# --------------------------------------------------------------------------------------------------
# Generated stories

GAPS_MS = st.one_of(
    st.integers(200, 2_000),
    st.integers(2_000, 40_000),
    st.integers(40_000, 240_000),
    st.sampled_from([14_000, 16_000, 29_000, 31_000, 59_000, 61_000]),
)
VALUES = {"door": ("open", "closed"), "occupancy": ("occupied", "vacant"), "observer": ("present", "absent")}
DEVICE_OF = {"door": DOOR, "occupancy": DOOR, "observer": PANEL, "check": PANEL}


EDGY_GAPS_MS = st.one_of(
    GAPS_MS,
    st.sampled_from([0, 1, 5_000, 15_000, 20_500, 25_000, 30_000, 45_000, 60_000, 120_000, 180_000]),
)


@st.composite
def stories(
    draw: st.DrawFn,
    kinds: tuple[str, ...],
    acks: bool = False,
    ages: bool = False,
    edgy: bool = False,
    restarts: bool = False,
) -> tuple[list[Reading], list[Action]]:
    readings: list[Reading] = []
    actions: list[Action] = []
    last: dict[str, str] = {}
    t = 0
    aged = False
    choices = list(kinds) + (["ack", "ack"] if acks else []) + (["age"] if ages else [])
    choices += ["restart"] if restarts else []
    for _ in range(draw(st.integers(1, 30))):
        t += draw(EDGY_GAPS_MS if edgy else GAPS_MS)
        kind = draw(st.sampled_from(choices))
        if kind == "ack":
            actions.append(Action(t, "ack", draw(st.integers(0, 5))))
            continue
        if kind == "restart":
            actions.append(Action(t, "restart", 0))
            continue
        if kind == "age":
            if not aged:
                aged = True
                actions.append(Action(t, "age", draw(st.sampled_from([5, 8, 9, 12, 17, 18, 40]))))
            continue
        if kind == "check":
            value = "ok"
        elif kind in last:
            a, b = VALUES[kind]
            value = b if last[kind] == a else a  # a sensor reports changes
        else:
            value = draw(st.sampled_from(VALUES[kind]))
        last[kind] = value
        readings.append(Reading(t, DEVICE_OF[kind], kind, value))
    return readings, actions


SHORT_RULES = (
    (60.0, "duration_warning", "room"),
    (180.0, "duration_escalation", "senior"),
    (400.0, "duration_escalation", "head"),
)


@st.composite
def policies(draw: st.DrawFn, supervision: str | None = None, limits: bool = False) -> APolicy:
    mode = supervision or draw(st.sampled_from(["observer", "checkin", "both"]))
    tiers = draw(
        st.sampled_from(
            [
                ALL_TIERS,
                frozenset({"senior", "head"}),
                frozenset({"senior"}),
                frozenset({"room", "dsl"}),
                frozenset(),
            ]
        )
    )
    max_duration = bands = None
    if limits:
        max_duration = draw(st.sampled_from([None, 400.0, 900.0]))
        bands = draw(
            st.sampled_from([(), ((8, 120.0), (17, 300.0)), ((8, 300.0), (17, 150.0)), ((12, 200.0),)])
        )
    return APolicy(
        supervision=mode,
        lapse_grace_s=draw(st.sampled_from([15.0, 5.0, 0.0, 20.5])),
        checkin_interval_s=draw(st.sampled_from([60.0, 30.0])),
        reclose_is_new_episode=draw(st.booleans()),
        duration_alerts=draw(st.sampled_from([SHORT_RULES, SHORT_RULES[:1], ()])),
        max_duration_s=max_duration,
        age_bands=bands or (),
        ack_timeout_s=draw(st.sampled_from([60.0, 25.0])),
        renotify_s=draw(st.sampled_from([300.0, 45.0])),
        tiers=tiers,
    )


PROPERTY = settings(
    max_examples=int(os.environ.get("ALERT_ORACLE_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY
@given(stories(("door", "occupancy", "observer")), policies("observer"))
def test_oracle_observer_mode(story: tuple[list[Reading], list[Action]], p: APolicy) -> None:
    check(*story, p)


@PROPERTY
@given(stories(("door", "occupancy", "observer", "check")), policies())
def test_oracle_check_in_and_both(story: tuple[list[Reading], list[Action]], p: APolicy) -> None:
    check(*story, p)


@PROPERTY
@given(stories(("door", "occupancy", "observer"), ages=True), policies(limits=True))
def test_oracle_duration_limits_and_ages(story: tuple[list[Reading], list[Action]], p: APolicy) -> None:
    check(*story, p)


@PROPERTY
@given(stories(("door", "occupancy", "observer", "check"), acks=True), policies(limits=True))
def test_oracle_escalation_and_acknowledgement(story: tuple[list[Reading], list[Action]], p: APolicy) -> None:
    check(*story, p)


@PROPERTY
@given(
    stories(("door", "occupancy", "observer", "check"), acks=True, ages=True, edgy=True),
    policies(limits=True),
)
def test_oracle_at_the_boundaries(story: tuple[list[Reading], list[Action]], p: APolicy) -> None:
    check(*story, p)


@PROPERTY
@given(
    stories(("door", "occupancy", "observer", "check"), acks=True, ages=True, restarts=True),
    policies(limits=True),
)
def test_oracle_across_hub_restarts(story: tuple[list[Reading], list[Action]], p: APolicy) -> None:
    check(*story, p)


@PROPERTY
@given(
    stories(("door", "occupancy", "observer", "check"), acks=True, ages=True),
    policies(limits=True),
    st.sampled_from([250, 1000]),
)
def test_oracle_woken_by_a_regular_timer(
    story: tuple[list[Reading], list[Action]], p: APolicy, step_ms: int
) -> None:
    check(*story, p, step_ms=step_ms)
