"""A review of the edge fail-safe (each test failed against the code as reviewed): a device that never
heard the hub still alarms for an unwatched child. On mock pins with a fake clock and an in-memory link.
"""

from __future__ import annotations

from pathlib import Path

from seclusion_edge import EdgeAgent, FakeClock
from tests.edge.conftest import Bench, door_device

DOOR_OUTPUTS = {"buzzer": 18, "led": 23}


def sounding(agent: EdgeAgent) -> bool:
    return bool(agent.pin_for("buzzer").state)


def test_a_device_that_never_heard_the_hub_still_alarms_for_an_unwatched_child(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """A new (or re-imaged) door device installed while the hub is down, or whose `config` the hub never
    published: it has no kept numbers. Its fail-safe "follows the room but raises nothing", for ever:
    a child shut in, nobody at the panel for an hour, and the door's own buzzer stays silent. Semantics
    5.4: an alarm never depends on the network or the hub; the safe numbers are there to use (the
    contract's defaults for the three added fields already are, and policies.md's base profile gives
    the rest: observer, 15 s grace, 60 s check-in, duration alerts)."""
    bench.connect_on_start = False
    door = bench.start(door_device(tmp_path / "door", outputs=DOOR_OUTPUTS))
    bench.settle(door)
    assert door.policy is None
    door.simulate("occupancy", "occupied")
    door.simulate("door", "closed")
    bench.settle(door)
    assert door.episode_open
    bench.settle(door, 60 * 60 * 1000)
    assert door.local_alarm.level == "critical"
    assert sounding(door)
