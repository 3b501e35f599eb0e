"""A room under test: a RoomMachine with a fake clock, and a terse way to send it readings."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from seclusion_hub.core.alerts import Alert, AlertSaved, AlertSend, IndicatorChanged
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.core.episode import Episode
from seclusion_hub.core.policy import Policy
from seclusion_hub.core.room import (
    DeviceStatus,
    Effect,
    EpisodeSaved,
    Heartbeat,
    Outcome,
    RoomMachine,
    RoomState,
    SensorEvent,
)
from seclusion_hub.core.site import RoomSpec
from seclusion_hub.store import room_state_json

T0 = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=dt.UTC)
DOOR, PANEL = "calm-1-door", "calm-1-panel"
DEVICES: list[dict[str, Any]] = [
    {"id": DOOR, "sensors": ["door", "lock", "occupancy"], "lock_type": "held"},
    {"id": PANEL, "sensors": ["observer", "check"]},
]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


class Room:
    """Given a room with a door device (door, lock, occupancy) and a panel device (observer, check), or
    the `devices` given."""

    def __init__(
        self,
        *,
        tiers: frozenset[str] = frozenset(),
        devices: list[dict[str, Any]] | None = None,
        **policy: Any,
    ) -> None:
        devices = DEVICES if devices is None else devices
        self.spec = RoomSpec.model_validate({"id": "calm-1", "name": "Calm room 1", "devices": devices})
        self.policy = Policy.model_validate(policy)
        self.clock = FakeClock(T0)
        self.machine = RoomMachine("demo-school", self.spec, self.policy, tiers=tiers)
        self.machine.hub_started(T0)
        self.seq = {str(d["id"]): 0 for d in devices}
        self.outcomes: list[Outcome] = []
        self.effects: list[Effect] = []  # every effect of every tick, in order

    def send(self, device: str, kind: str, value: str, t: float, *, arrive: float | None = None) -> Outcome:
        """The device reports `kind: value` that began at T0+t; it arrives at T0+arrive (default t)."""
        self.seq[device] += 1
        event = SensorEvent(device=device, kind=kind, value=value, ts=at(t), seq=self.seq[device])
        self.clock.set(at(arrive if arrive is not None else t))
        outcome = self.machine.handle(event, self.clock.now())
        self.outcomes.append(outcome)
        self._after_batch()
        return outcome

    def _after_batch(self) -> None:
        # As the hub does after every batch: the alerts are evaluated (liveness only in `tick`).
        self.effects.extend(self.machine.tick(self.clock.now(), liveness=False))

    def door(self, value: str, t: float) -> Outcome:
        return self.send(DOOR, "door", value, t)

    def occupancy(self, value: str, t: float) -> Outcome:
        return self.send(DOOR, "occupancy", value, t)

    def observer(self, value: str, t: float) -> Outcome:
        return self.send(PANEL, "observer", value, t)

    def status(self, device: str, online: bool, t: float, **kw: Any) -> Outcome:
        self.clock.set(at(t))
        outcome = self.machine.handle(DeviceStatus(device=device, online=online, ts=at(t), **kw), at(t))
        self._after_batch()
        return outcome

    def heartbeat(self, device: str, t: float, state: dict[str, str]) -> Outcome:
        self.clock.set(at(t))
        hb = Heartbeat(device=device, ts=at(t), epoch=0, last_seq=self.seq[device], state=state)
        outcome = self.machine.handle(hb, at(t))
        self._after_batch()
        return outcome

    def replay(self, readings: list[tuple[str, str, str, float]], arrive: float) -> None:
        """A device's outbox arrives at T0+arrive, in one batch: (device, kind, value, t) each."""
        self.clock.set(at(arrive))
        for device, kind, value, t in readings:
            self.seq[device] += 1
            event = SensorEvent(device=device, kind=kind, value=value, ts=at(t), seq=self.seq[device])
            self.outcomes.append(self.machine.handle(event, at(arrive)))
        self._after_batch()

    def tick(self, t: float, *, liveness: bool = True) -> list[Effect]:
        """Time passes to T0+t on the hub's clock."""
        self.clock.set(at(t))
        effects = self.machine.tick(at(t), liveness=liveness)
        self.effects.extend(effects)
        return effects

    def run(self, until: float, step: float = 0.1) -> None:
        """Time passes to T0+until in small steps, as the hub's timer would wake it, with the devices
        alive all along (their heartbeats are not the story here: liveness is judged in `tick`)."""
        t = (self.clock.now() - T0).total_seconds()
        while t < until - 1e-9:
            t = min(until, round(t + step, 6))
            self.tick(t, liveness=False)

    def run_on_deadlines(self, until: float) -> list[float]:
        """Time passes to T0+until as the hub lets it: the room is woken only at its own next deadline
        (`next_deadline()`), never in between. Returns the moments it was woken (seconds after T0)."""
        woken: list[float] = []
        end = at(until)
        while True:
            due = self.machine.next_deadline(liveness=False)
            if due is None or due > end:
                self.clock.set(end)
                return woken
            moment = max(due, self.clock.now())
            woken.append((moment - T0).total_seconds())
            self.tick((moment - T0).total_seconds(), liveness=False)
            if len(woken) > 10_000:
                raise AssertionError("the room keeps asking to be woken without anything changing")

    # -- alerts

    def alerts(self, kind: str | None = None, *, active: bool | None = None) -> list[Alert]:
        # The book holds the active alerts; resolved ones are known from the effects that stored them.
        known = {e.alert.id: e.alert for e in self.effects if isinstance(e, AlertSaved)}
        known.update({a.id: a for a in self.machine.state.book.alerts.values()})
        found = [a for a in known.values() if kind is None or a.kind == kind]
        return [a for a in found if active is None or a.active == active]

    def sends(self, kind: str | None = None) -> list[AlertSend]:
        return [
            e for e in self.effects if isinstance(e, AlertSend) and (kind is None or e.alert.kind == kind)
        ]

    def indicator(self) -> list[IndicatorChanged]:
        return [e for e in self.effects if isinstance(e, IndicatorChanged)]


INSIDE = "calm-1-pir"


class SplitRoom:
    """Occupancy on a device of its own: a door device (door, lock), one or more PIRs inside (occupancy),
    a panel (observer, check). Its `effects` hold what each message did as well as each tick."""

    def __init__(self, *, pirs: tuple[str, ...] = (INSIDE,), **policy: Any) -> None:
        devices: list[dict[str, Any]] = [{"id": DOOR, "sensors": ["door", "lock"], "lock_type": "bolt"}]
        devices += [{"id": p, "sensors": ["occupancy"]} for p in pirs]
        devices.append({"id": PANEL, "sensors": ["observer", "check"]})
        self.spec = RoomSpec.model_validate({"id": "calm-1", "name": "Calm room 1", "devices": devices})
        self.policy = Policy.model_validate(policy)
        self.clock = FakeClock(at(0))
        self.machine = RoomMachine("demo-school", self.spec, self.policy)
        self.machine.hub_started(at(0))
        self.seq = {str(d["id"]): 0 for d in devices}
        self.effects: list[Effect] = []

    def send(self, device: str, kind: str, value: str, t: float, arrive: float | None = None) -> None:
        self.seq[device] += 1
        ev = SensorEvent(device=device, kind=kind, value=value, ts=at(t), seq=self.seq[device])
        now = at(arrive if arrive is not None else t)
        self.clock.set(now)
        self.effects += self.machine.handle(ev, now).effects
        self.effects += self.machine.tick(now, liveness=False)

    def door(self, *moves: tuple[str, float]) -> None:
        for value, t in moves:
            self.send(DOOR, "door", value, t)

    def heartbeat(self, device: str, t: float, state: dict[str, str]) -> None:
        self.clock.set(at(t))
        hb = Heartbeat(device=device, ts=at(t), epoch=0, last_seq=self.seq[device], state=state)
        self.effects += self.machine.handle(hb, at(t)).effects
        self.effects += self.machine.tick(at(t), liveness=False)

    def status(self, device: str, online: bool, t: float, **kw: Any) -> None:
        self.clock.set(at(t))
        message = DeviceStatus(device=device, online=online, ts=at(t), **kw)
        self.effects += self.machine.handle(message, at(t)).effects
        self.effects += self.machine.tick(at(t), liveness=False)

    def restart_hub(self) -> None:
        """The hub stops and starts again: the room's state reloaded from its stored JSON."""
        state = RoomState.model_validate(json.loads(room_state_json(self.machine.state)))
        self.machine = RoomMachine("demo-school", self.spec, self.policy, state)
        self.machine.hub_started(self.clock.now())

    def episodes(self) -> list[Episode]:
        """Every episode the machine has stored, by id, as last saved, in start order."""
        saved: dict[str, Episode] = {}
        for e in self.effects:
            if isinstance(e, EpisodeSaved):
                saved[e.episode.id] = e.episode
        return sorted(saved.values(), key=lambda ep: ep.started_at)
