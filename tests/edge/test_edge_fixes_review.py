"""Second review of fix-edge (merge 5bbb3fc): the two ticker threads, contact faults, restarts mid-fault.

Mock pins, a fake clock and the in-memory link; the two halves of the tick (`_tick_alarm`, the alarm's
thread, and `_tick_store`, the store's) are stepped by hand where their interleaving matters.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from seclusion_contract import EventPayload
from seclusion_edge import EdgeAgent, FakeClock
from seclusion_edge.debounce import UNSTABLE_BURST_MS
from tests.edge.conftest import SETTLE_MS, Bench, door_device
from tests.hub.rooms import DOOR as DOOR_DEVICE
from tests.hub.rooms import Room

TAMPER_LOOP = {
    "kind": "fault",
    "pin": 4,
    "pull": "up",
    "active": "high",
    "active_value": "door-sensor-disconnected",
}
DOOR = {"kind": "door", "pin": 17, "pull": "up", "active": "low", "active_value": "closed"}
LOCK = {"kind": "lock", "pin": 27, "pull": "up", "active": "low", "active_value": "engaged"}
OCCUPANCY = {"kind": "occupancy", "pin": 22, "pull": "down", "active": "high", "active_value": "occupied"}


def waiting(agent: EdgeAgent) -> list[EventPayload]:
    outbox = agent._outbox
    assert outbox is not None
    return [EventPayload.model_validate(json.loads(e.payload)) for e in outbox.pending()]


def toggle(pin: Any) -> None:
    if pin.state:
        pin.drive_low()
    else:
        pin.drive_high()


def door_and_lock_failing(bench: Bench, clock: FakeClock, tmp_path: Path) -> tuple[Any, EdgeAgent]:
    """A door device (door, lock, occupancy) whose door contact flaps (each level holds 150 ms) and, from
    4 s, whose lock contact chatters too: both faults numbered. Its config, and the agent."""
    bench.connect_on_start = False
    config = door_device(tmp_path / "door", sensors=[DOOR, LOCK, OCCUPANCY])
    agent = bench.start(config)
    bench.settle(agent)  # open, released, vacant
    door, lock = agent.pin_for("door"), agent.pin_for("lock")
    for step in range(12_000 // 10):
        if step % 15 == 0:
            toggle(door)
        if step >= 400:
            toggle(lock)
        clock.advance(ms=10)
        if step % 2:
            agent.tick()
    faults = [e.value for e in waiting(agent) if e.kind == "fault"]
    assert faults == ["door-contact-unstable", "lock-contact-unstable"]
    return config, agent


# ------------------------------------------------------------------- the heartbeat's state during a fault


def test_a_heartbeat_does_not_say_fault_ok_while_a_contact_is_unstable(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """A four-wire door contact (firmware-config/README.md): the reed on one input, its tamper loop on a
    `fault` input, closed (`ok`). The reed's wire floats and chatters: the agent numbers
    `fault: door-contact-unstable` and the hub raises sensor_fault. But the heartbeat's `state` carries
    the tamper loop's reading, `fault: ok`, every 10 s. The hub reconciles a heartbeat whose `state`
    differs from what it applied with every event in (hub room.py `_heartbeat` -> `_reconcile`, and
    site.py `reports` takes `fault` from any device): `ok` clears every fault of the device, so the
    sensor_fault of a door that is no longer watched is resolved 10 s after it was raised."""
    agent = bench.start(door_device(tmp_path / "door", sensors=[DOOR, TAMPER_LOOP]))
    started = clock.now().wall
    agent.pin_for("fault").drive_low()  # the loop is closed: ok
    bench.settle(agent)
    assert {(e.kind, e.value) for e in bench.link.events()} >= {("fault", "ok")}
    pin = agent.pin_for("door")
    for step in range((UNSTABLE_BURST_MS + 12_000) // 10):  # a floating input: an edge every 10 ms
        toggle(pin)
        clock.advance(ms=10)
        if step % 2:
            agent.tick()
    (fault,) = [e for e in bench.link.events() if e.kind == "fault" and e.value != "ok"]
    assert fault.value == "door-contact-unstable"
    after = [h for h in bench.link.heartbeats() if h.last_seq >= fault.seq]
    assert after, "no heartbeat after the fault event"

    # The hub, as it receives them: the events, then the first heartbeat after the fault.
    room = Room()
    for event in bench.link.events():
        room.send(DOOR_DEVICE, event.kind, event.value, (event.ts - started).total_seconds())
    assert [a.kind for a in room.alerts("sensor_fault", active=True)] == ["sensor_fault"]
    room.heartbeat(
        DOOR_DEVICE, (after[0].ts - started).total_seconds(), {str(k): v for k, v in after[0].state.items()}
    )
    active = [a.kind for a in room.alerts("sensor_fault", active=True)]
    assert active == ["sensor_fault"], (
        f"a heartbeat after `fault: door-contact-unstable` said fault = {after[0].state.get('fault')}: "
        f"the hub reconciled it as a lost `ok`, and the door's sensor_fault is resolved; the door is "
        f"still unstable ({agent._watches['door'].faulty})"
    )


# --------------------------------------------------------------------------------- a restart mid-fault


def test_every_contact_failing_at_a_stop_starts_failing_after_the_restart(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The door's magnet works loose and the contact flaps (each level holds 150 ms): found out, its
    readings are held back. A minute later the lock's contact, on the same cable, starts to chatter:
    `fault: lock-contact-unstable`. The agent restarts (an update, systemd, a power blip) with both
    still failing. docs/edge.md: "A fault not cleared when the agent stops is kept with the last
    readings: after a restart that contact starts as failing". Only the last `fault` value is kept
    (`readings` has one row per kind), so only the lock starts failing; the door starts sound and its
    flapping is numbered again, a door event every 150 ms (an episode opened and ended at the hub each
    time the room reads occupied) until 20 changes have been counted once more."""
    config, first = door_and_lock_failing(bench, clock, tmp_path)
    first.stop()

    second = bench.start(config)
    before = len(waiting(second))
    door = second.pin_for("door")
    for _ in range(3_000 // 150):  # three seconds more of the same flapping door
        toggle(door)
        clock.advance(ms=150)
        second.tick()
    doors = [(e.value, e.startup) for e in waiting(second)[before:] if e.kind == "door"]
    assert doors == [], f"after the restart the failing door numbered {len(doors)} events: {doors[:4]} ..."


# --------------------------------------------------------------------------- the two ticker threads


def test_a_heartbeat_sent_while_the_alarm_thread_settles_a_reading_does_not_show_it_before_its_event(
    bench: Bench, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An episode ends: staff release the lock, then open the door half a second later. The store's
    thread numbers `lock: released` (a synchronous, fsynced write to the SD card: tens of milliseconds,
    seconds on a worn card); meanwhile the alarm's thread, every 20 ms, settles the door's opening and
    lets it through (`_let_through`, which the heartbeat's `state` reads), handing the reading to the
    store for its next tick. The store's thread then sends the heartbeat that was due: `state` door
    open, `last_seq` the lock's. Every event it counts is applied at the hub, and still the door
    differs: the hub takes it for a lost event (semantics 4.2, hub room.py `_heartbeat` ->
    `_reconcile`): "door found open", the episode ended at the heartbeat's time with its end uncertain
    back to the episode's start, and the real `door: open` that follows a moment later does not
    correct the record (fed to the hub's RoomMachine below). The project's invariant (test_edge_agent.py,
    "a heartbeat never reports a reading that has no event yet") held with one ticker; the split breaks it."""
    agent = bench.start(door_device(tmp_path / "door"))
    started = clock.now().wall
    bench.settle(agent)  # open, released, vacant: seq 1-3
    for kind, value in (("occupancy", "occupied"), ("door", "closed"), ("lock", "engaged")):
        agent.simulate(kind, value)
        bench.settle(agent)
    bench.settle(agent, 60_000)  # a minute of seclusion (a heartbeat goes out)
    clock.advance(seconds=10)  # the next heartbeat is due at the store's next tick
    agent.simulate("lock", "released")
    clock.advance(ms=SETTLE_MS)
    agent._tick_alarm()  # the alarm's thread: the release settles, handed to the store
    agent.simulate("door", "open")
    record = agent._record_or_keep_queued

    def writing() -> None:  # the store's thread, writing the release: the alarm's thread ticks on
        record()
        clock.advance(ms=SETTLE_MS)
        agent._tick_alarm()  # the door's opening settles: let through, handed over for the next tick

    monkeypatch.setattr(agent, "_record_or_keep_queued", writing)
    agent._tick_store()
    monkeypatch.undo()
    heartbeat = bench.link.heartbeats()[-1]
    agent.tick()  # the opening is numbered and sent a moment later

    # The hub, as it receives them: the events the heartbeat counts, the heartbeat, the opening.
    room = Room()
    events = bench.link.events()

    def seconds(ts: dt.datetime) -> float:
        return (ts - started).total_seconds()

    for event in [e for e in events if e.seq <= heartbeat.last_seq]:
        room.send(DOOR_DEVICE, event.kind, event.value, seconds(event.ts))
    room.heartbeat(DOOR_DEVICE, seconds(heartbeat.ts), {str(k): v for k, v in heartbeat.state.items()})
    for event in [e for e in events if e.seq > heartbeat.last_seq]:
        room.send(
            DOOR_DEVICE, event.kind, event.value, seconds(event.ts), arrive=seconds(heartbeat.ts) + 0.05
        )
    episode = room.machine.state.episode or room.machine.state.last_episode
    assert episode is not None
    assert not episode.end_uncertain, (
        f"heartbeat (last_seq {heartbeat.last_seq}) said door {heartbeat.state.get('door')} first: "
        f"the hub's record ends at {episode.ended_at:%H:%M:%S.%f}, uncertain back to {episode.end_earliest}"
    )


def test_a_closed_door_whose_contact_starts_flapping_does_not_end_the_episode_in_the_fail_safe(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """A child is shut in; nobody is at the panel and the broker is unreachable, so the local
    fail-safe drives. 12 s later the door's magnet works loose and the contact flaps (each level
    holds 150 ms), the door itself shut all along. The first 19 changes are let through (open, closed,
    ...); at the 20th the contact is found unstable, the fault dated from the first of them
    (`_changes[0]`), yet the room keeps the reading last let through, one of those very changes:
    `open`. The fail-safe takes the episode as over and the lapse (15 s, the base numbers) never
    sounds, for as long as the magnet rattles: a reading the agent itself dates inside the fault
    decides that the child is free. (The hub, sent the same 19 readings, ends its episode too.)"""
    bench.connect_on_start = False
    agent = bench.start(door_device(tmp_path / "door", outputs={"buzzer": 18, "led": 23}))
    bench.settle(agent)  # open, released, vacant
    agent.simulate("occupancy", "occupied")
    agent.simulate("door", "closed")
    bench.settle(agent)
    assert agent.episode_open
    bench.settle(agent, 12_000)  # (the lapse is due at 15 s)
    door = agent.pin_for("door")
    for _ in range(40_000 // 150):  # 40 s of a rattling magnet on a shut door
        toggle(door)
        clock.advance(ms=150)
        agent.tick()
    faults = [e.value for e in waiting(agent) if e.kind == "fault"]
    assert faults == ["door-contact-unstable"]
    assert agent.episode_open and agent.pin_for("buzzer").state, (
        f"40 s into an unwatched episode on a shut door with a flapping contact: the fail-safe holds "
        f"door = {agent.room_state().get('door')}, episode open {agent.episode_open}, {agent.local_alarm}"
    )
