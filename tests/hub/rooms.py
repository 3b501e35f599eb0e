"""A room under test: a RoomMachine with a fake clock, and a terse way to send it readings."""

from __future__ import annotations

import datetime as dt
from typing import Any

from seclusion_hub.core.clock import FakeClock
from seclusion_hub.core.policy import Policy
from seclusion_hub.core.room import DeviceStatus, Heartbeat, Outcome, RoomMachine, SensorEvent
from seclusion_hub.core.site import RoomSpec

T0 = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=dt.UTC)
DOOR, PANEL = "calm-1-door", "calm-1-panel"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


class Room:
    """Given a room with a door device (door, lock, occupancy) and a panel device (observer, check)."""

    def __init__(self, **policy: Any) -> None:
        self.spec = RoomSpec.model_validate(
            {
                "id": "calm-1",
                "name": "Calm room 1",
                "devices": [
                    {"id": DOOR, "sensors": ["door", "lock", "occupancy"], "lock_type": "held"},
                    {"id": PANEL, "sensors": ["observer", "check"]},
                ],
            }
        )
        self.policy = Policy.model_validate(policy)
        self.clock = FakeClock(T0)
        self.machine = RoomMachine("demo-school", self.spec, self.policy)
        self.machine.hub_started(T0)
        self.seq = {DOOR: 0, PANEL: 0}
        self.outcomes: list[Outcome] = []

    def send(self, device: str, kind: str, value: str, t: float, *, arrive: float | None = None) -> Outcome:
        """The device reports `kind: value` that began at T0+t; it arrives at T0+arrive (default t)."""
        self.seq[device] += 1
        event = SensorEvent(device=device, kind=kind, value=value, ts=at(t), seq=self.seq[device])
        self.clock.set(at(arrive if arrive is not None else t))
        outcome = self.machine.handle(event, self.clock.now())
        self.outcomes.append(outcome)
        return outcome

    def door(self, value: str, t: float) -> Outcome:
        return self.send(DOOR, "door", value, t)

    def occupancy(self, value: str, t: float) -> Outcome:
        return self.send(DOOR, "occupancy", value, t)

    def observer(self, value: str, t: float) -> Outcome:
        return self.send(PANEL, "observer", value, t)

    def status(self, device: str, online: bool, t: float, **kw: Any) -> Outcome:
        self.clock.set(at(t))
        return self.machine.handle(DeviceStatus(device=device, online=online, ts=at(t), **kw), at(t))

    def heartbeat(self, device: str, t: float, state: dict[str, str]) -> Outcome:
        self.clock.set(at(t))
        hb = Heartbeat(device=device, ts=at(t), epoch=0, last_seq=self.seq[device], state=state)
        return self.machine.handle(hb, at(t))

    def tick(self, t: float) -> None:
        self.clock.set(at(t))
        self.machine.tick(at(t))
