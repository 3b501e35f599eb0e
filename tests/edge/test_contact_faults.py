"""A failing contact is a `fault` event, not a flood of readings nor silence (contract 2: `kind: fault`,
a code, `ok` to clear); a real change hidden in the chatter is still reported, never under-counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seclusion_contract import EventPayload
from seclusion_edge import EdgeAgent, FakeClock
from seclusion_edge.debounce import FLAP_CHANGES, FLAP_WINDOW_MS, STABLE_MS, UNSTABLE_BURST_MS
from seclusion_edge.outbox import Outbox
from tests.edge.conftest import SETTLE_MS, Bench, door_device
from tests.hub.rooms import DOOR as DOOR_DEVICE
from tests.hub.rooms import Room


def chatter(agent: EdgeAgent, clock: FakeClock, ms: int) -> None:
    """The door's input toggling every 10 ms (a floating input), ticked every 20 ms."""
    pin = agent.pin_for("door")
    for step in range(ms // 10):
        if step % 2:
            pin.drive_high()
        else:
            pin.drive_low()
        clock.advance(ms=10)
        if step % 2:
            agent.tick()


def waiting(agent: EdgeAgent) -> list[EventPayload]:
    outbox = agent._outbox
    assert outbox is not None
    return [EventPayload.model_validate(json.loads(e.payload)) for e in outbox.pending()]


def test_a_door_that_really_shuts_during_chatter_is_timed_from_the_chatters_start(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    bench.connect_on_start = False
    agent = bench.start(door_device(tmp_path / "door"))
    bench.settle(agent)  # open, released, vacant
    agent.simulate("occupancy", "occupied")
    bench.settle(agent)
    began = clock.now()
    chatter(agent, clock, UNSTABLE_BURST_MS + 1_000)
    events = waiting(agent)
    assert [(e.kind, e.value, e.ts) for e in events[4:]] == [("fault", "door-contact-unstable", began.wall)]
    assert "door" not in agent.readings()  # the heartbeat does not claim a reading it does not know
    assert not agent.episode_open  # the room keeps the reading last let through: open

    agent.simulate("door", "closed")  # it settles, closed
    held = clock.now()
    bench.settle(agent, STABLE_MS - SETTLE_MS)
    assert len(waiting(agent)) == 5  # not yet: it has not held for STABLE_MS
    bench.settle(agent, SETTLE_MS)
    assert [(e.kind, e.value, e.ts) for e in waiting(agent)[5:]] == [
        ("fault", "ok", held.wall),
        ("door", "closed", began.wall),  # from the earliest it can have shut: never under-counted
    ]
    assert agent.episode_open and agent.readings()["door"] == "closed"
    assert agent._failsafe.episode_start == began  # the local timers count from then too


def test_a_contact_flapping_then_settling_open_reports_the_opening_from_when_it_held(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    bench.connect_on_start = False
    agent = bench.start(door_device(tmp_path / "door"))
    bench.settle(agent)
    pin = agent.pin_for("door")
    gap = SETTLE_MS + 50
    for step in range(2 * FLAP_CHANGES + 1):  # closed first, and last: then it holds open
        if step % 2:
            pin.drive_high()
        else:
            pin.drive_low()
        clock.advance(ms=gap)
        agent.tick()
    doors = [e for e in waiting(agent) if e.kind == "door"]
    faults = [e.value for e in waiting(agent) if e.kind == "fault"]
    assert faults == ["door-contact-unstable"]
    assert len(doors) == FLAP_CHANGES  # the start-up reading and the changes before it was found out
    assert doors[-1].value == "closed"  # the last reading let through
    agent.simulate("door", "open")
    held = clock.now()
    bench.settle(agent, STABLE_MS)
    assert [(e.kind, e.value, e.ts) for e in waiting(agent)[-2:]] == [
        ("fault", "ok", held.wall),
        ("door", "open", held.wall),  # from the latest it can have opened: the episode not cut short
    ]


def test_a_door_used_briskly_is_no_fault(bench: Bench, clock: FakeClock, tmp_path: Path) -> None:
    """A door opened and closed about once a second: every change is a reading, and no fault."""
    bench.connect_on_start = False
    agent = bench.start(door_device(tmp_path / "door"))
    bench.settle(agent)
    pin = agent.pin_for("door")
    changes = FLAP_CHANGES - 2
    for step in range(changes):
        if step % 2:
            pin.drive_high()
        else:
            pin.drive_low()
        clock.advance(ms=FLAP_WINDOW_MS // changes)
        agent.tick()
    assert [e.kind for e in waiting(agent)].count("door") == 1 + changes
    assert [e for e in waiting(agent) if e.kind == "fault"] == []


def test_a_fault_not_cleared_before_a_restart_is_cleared_once_the_contact_proves_sound(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    bench.connect_on_start = False
    config = door_device(tmp_path / "door")
    first = bench.start(config)
    bench.settle(first)
    chatter(first, clock, UNSTABLE_BURST_MS + 1_000)
    first.stop()
    outbox = Outbox.open(config.state_dir, "calm-1-door")
    assert json.loads(outbox.pending()[-1].payload)["value"] == "door-contact-unstable"
    outbox.close()

    second = bench.start(config)
    bench.settle(second)
    assert [e.kind for e in waiting(second)].count("fault") == 1  # not cleared yet: it must hold first
    assert "door" not in second.readings()
    bench.settle(second, STABLE_MS)
    assert [(e.kind, e.value) for e in waiting(second) if e.kind == "fault"][-1] == ("fault", "ok")
    assert second.readings()["door"] == "open"


def test_ok_clears_only_when_neither_a_failing_contact_nor_the_tamper_loop_reports_a_fault(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """`fault: ok` clears every fault of the device at the hub: a failing contact's `ok` waits for a
    `fault` sensor (a tamper loop) still active, and the loop's `ok` for a contact still failing."""
    bench.connect_on_start = False
    sensors = [
        {"kind": "door", "pin": 17, "pull": "up", "active": "low", "active_value": "closed"},
        {
            "kind": "fault",
            "pin": 4,
            "pull": "up",
            "active": "high",
            "active_value": "door-sensor-disconnected",
        },
    ]
    agent = bench.start(door_device(tmp_path / "door", sensors=sensors))
    bench.settle(agent)  # door open; the loop (pulled up, active high) reads its code at once

    def faults() -> list[str]:
        return [e.value for e in waiting(agent) if e.kind == "fault"]

    assert faults() == ["door-sensor-disconnected"]
    chatter(agent, clock, UNSTABLE_BURST_MS + 1_000)
    agent.pin_for("door").drive_high()  # it settles, open
    bench.settle(agent, STABLE_MS)
    assert faults() == ["door-sensor-disconnected", "door-contact-unstable"]  # no ok: the loop is open
    agent.pin_for("fault").drive_low()  # the loop closed again
    bench.settle(agent)
    assert faults()[-1] == "ok"

    chatter(agent, clock, UNSTABLE_BURST_MS + 1_000)
    agent.pin_for("fault").drive_high()
    bench.settle(agent)
    agent.pin_for("fault").drive_low()
    bench.settle(agent)  # the loop's ok, while the door still fails: held back
    assert faults()[-2:] == ["door-contact-unstable", "door-sensor-disconnected"]
    agent.pin_for("door").drive_high()
    bench.settle(agent, STABLE_MS)
    assert faults()[-1] == "ok"


@pytest.mark.parametrize("first", ["open", "closed"])
def test_a_shut_door_whose_magnet_starts_rattling_stays_an_episode_at_the_hub_and_in_the_fail_safe(
    bench: Bench, clock: FakeClock, tmp_path: Path, first: str
) -> None:
    """A flap is found at its 20th change, its first 19 let through (`first`: a glitch before the rattle
    or not, which turns the levels over); whichever of them came last, the room then holds the reading
    from before the fault, `closed`, dated at the last one let through: the episode goes on in the
    fail-safe and at the hub (reclose grace, semantics 2.4), fed the events the agent numbered."""
    bench.connect_on_start = False
    agent = bench.start(door_device(tmp_path / "door"))
    started = clock.now().wall
    bench.settle(agent)  # open, released, vacant
    agent.simulate("occupancy", "occupied")
    agent.simulate("door", "closed")
    bench.settle(agent, 12_000)
    door = agent.pin_for("door")
    if first == "closed":  # a glitch first: one change more before the flap, the parity turned
        agent.simulate("door", "open")
        clock.advance(ms=150)
        agent.tick()
    for _ in range(20_000 // 150):
        if door.state:
            door.drive_low()
        else:
            door.drive_high()
        clock.advance(ms=150)
        agent.tick()
    events = waiting(agent)
    assert [e.value for e in events if e.kind == "fault"] == ["door-contact-unstable"]
    assert agent.episode_open and agent.room_state()["door"] == "closed"

    room = Room()
    for event in events:
        room.send(DOOR_DEVICE, event.kind, event.value, (event.ts - started).total_seconds())
    assert room.machine.state.episode is not None, [(e.kind, e.value) for e in events]
    assert room.machine.state.readings["door"].value == "closed"
