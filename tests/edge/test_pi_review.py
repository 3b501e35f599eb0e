"""Review: the edge agent against the realities of a Raspberry Pi on a school door.

No real-time clock (the wall clock starts wrong and NTP steps it), an SD card that goes away, sensors
that fail. Mock pins, a fake clock and the in-memory link: no sleeps, no broker.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from seclusion_contract import format_ts
from seclusion_edge import EdgeAgent, FakeClock
from seclusion_edge import agent as agent_module
from seclusion_edge.failsafe import BASE_NUMBERS
from seclusion_edge.outbox import Outbox
from tests.edge.conftest import SETTLE_MS, Bench, door_device, panel_device
from tests.edge.hub_double import HubDouble
from tests.support.processes import Mosquitto, poll

ROOM = "seclusion/v1/demo-school/calm-1"
DOOR_EVENT = f"{ROOM}/calm-1-door/event"
DOOR_ACK = f"{ROOM}/calm-1-door/ack"
DOOR_OUTPUTS = {"buzzer": 18, "led": 23}
PANEL_OUTPUTS = {"buzzer": 13, "led": 26}
# The room's numbers: a 600 s duration limit, and no lapse within any of these tests.
NUMBERS: dict[str, Any] = {
    "v": 1,
    "supervision": "observer",
    "lapse_grace_s": 100_000,
    "checkin_interval_s": 300,
    "max_duration_s": 600,
    "ts": "2026-11-21T09:00:00.000Z",
}


def config_topic(device: str) -> str:
    return f"{ROOM}/{device}/config"


def sounding(agent: EdgeAgent) -> bool:
    return bool(agent.pin_for("buzzer").state)


# ------------------------------------------------------------------------------- no real-time clock


def test_an_ntp_step_during_an_episode_does_not_sound_the_duration_limit_after_an_agent_restart(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The Pi booted with the clock fake-hwclock saved, two hours behind (no network yet, so no NTP).
    A child is shut in; the broker is unreachable, so the local fail-safe times the episode. 60 s in,
    NTP steps the wall clock forward two hours; 60 s later the agent restarts (a crash, a systemd
    restart, an update), same boot, broker still down. The episode is two minutes old: the 600 s limit
    must not sound. The agent seeds its timers from the stored `ts` of the door's close (by the old,
    wrong clock) measured against the new, right one: the episode looks 2 h 2 min old, and the buzzer
    sounds at once."""
    config = door_device(tmp_path / "door", outputs=DOOR_OUTPUTS)
    first = bench.start(config)
    bench.settle(first)  # start-up: door open, released, vacant
    bench.link.deliver(config_topic("calm-1-door"), NUMBERS)
    bench.link.drop()  # the broker is unreachable: the local fail-safe drives
    first.simulate("occupancy", "occupied")
    first.simulate("door", "closed")
    bench.settle(first)
    assert first.episode_open and first.local_alarm.level == "none"
    bench.settle(first, 60_000)
    clock.jump_wall(dt.timedelta(hours=2))  # NTP syncs: only the wall clock moves
    bench.settle(first, 60_000)
    assert first.local_alarm.level == "none"  # the running agent is right: its timers are monotonic
    first.stop()

    bench.connect_on_start = False
    second = bench.start(config)  # the same boot: the monotonic clock has run on
    second.simulate("occupancy", "occupied")
    second.simulate("door", "closed")
    bench.settle(second)
    assert second.episode_open
    assert second.local_alarm.level == "none", (
        f"two minutes into the episode the local fail-safe says {second.local_alarm}"
    )
    assert not sounding(second)


def test_another_devices_lagging_clock_does_not_sound_this_devices_duration_limit(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The door device rebooted after a power cut and has no network time yet (fake-hwclock: an hour
    behind; a school firewall that blocks NTP keeps it so). The panel's clock is right. The hub is
    down, so the panel's fail-safe drives its buzzer. A child is shut in now; the door device's events
    arrive live, within milliseconds, but carry `ts` an hour old by its clock. The panel places them by
    that `ts` against its own wall clock: the episode looks an hour old and the duration limit sounds
    the moment the door shuts."""
    panel = bench.start(panel_device(tmp_path / "panel", outputs=PANEL_OUTPUTS))
    bench.settle(panel)
    bench.link.deliver(config_topic("calm-1-panel"), NUMBERS)
    panel.simulate("observer", "present")  # someone is at the panel: no lapse
    bench.settle(panel)
    lag = dt.timedelta(hours=1)
    # The door device's heartbeat, live as ever (every heartbeat_s, QoS 0, never replayed), by its clock.
    # Adjusted from the review: from two events alone the panel cannot tell a live event from a clock an
    # hour behind and a replay of one an hour old (which must sound): the heartbeats tell it.
    bench.link.deliver(
        f"{ROOM}/calm-1-door/heartbeat",
        {"v": 1, "ts": format_ts(clock.now().wall - lag), "epoch": 0, "last_seq": 0, "uptime_s": 60},
    )
    for seq, (kind, value) in enumerate([("occupancy", "occupied"), ("door", "closed")], start=1):
        bench.link.deliver(
            DOOR_EVENT,
            {
                "v": 1,
                "id": f"calm-1-door:0:{seq}",
                "seq": seq,
                "epoch": 0,
                "ts": format_ts(clock.now().wall - lag),  # now, by the door device's clock
                "kind": kind,
                "value": value,
            },
        )
    bench.settle(panel)
    assert panel.episode_open
    assert panel.local_alarm.level == "none", (
        f"a second into the episode the panel's local fail-safe says {panel.local_alarm}"
    )
    assert not sounding(panel)


# ------------------------------------------------------------------------------------------ storage


def test_an_event_numbered_after_the_state_dir_was_deleted_is_not_lost_silently(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The state directory is removed while the agent runs (a cleanup script, an operator, a tmpfiles
    rule) with the broker unreachable. The door closes on a child and opens again 20 minutes later. The
    agent numbers both events into the outbox's unlinked file, logs nothing, and keeps them only until
    it restarts: then a new, empty store is made and both events are gone. The hub never hears of the
    20-minute confinement (the restart's start-up reading is `open`, as it last knew). Contract: every
    event kept until the hub's ack covers it."""
    state = tmp_path / "door"
    config = door_device(state)
    first = bench.start(config)
    bench.settle(first)  # start-up readings: door open, released, vacant (seq 1-3), acknowledged
    bench.retained[DOOR_ACK] = json.dumps({"v": 1, "epoch": 0, "seq": 3}).encode()
    bench.link.deliver(DOOR_ACK, bench.retained[DOOR_ACK])
    assert first.queued == 0
    bench.link.drop()

    shutil.rmtree(state)
    first.simulate("occupancy", "occupied")
    first.simulate("door", "closed")
    bench.settle(first)
    bench.settle(first, 20 * 60_000)
    first.simulate("door", "open")
    bench.settle(first)
    assert first.queued == 3  # occupied, closed, open: waiting for the broker, the agent believes
    first.stop()

    second = bench.start(config)  # the broker is back: the agent replays what waits in its outbox
    for _ in range(3):
        bench.settle(second)
    kinds = [(e.kind, e.value) for e in bench.link.events()]
    assert ("door", "closed") in kinds, f"after the restart the hub was sent only {kinds}"


# ------------------------------------------------------------------------------------- failing sensors


def test_a_reed_switch_chattering_without_end_is_reported_as_a_fault(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """A door contact with a cut wire and a floating input (or a loose magnet on a rattling door) toggles
    every few milliseconds and never holds for the settle time. Debouncing turns that into no reading at
    all: the hub keeps being told, in every heartbeat, the last settled state (`closed`) while the door's
    real state is unknown, and no `fault` event (which the contract provides for) says the sensor has
    failed. A minute of continuous chatter must produce one."""
    assert SETTLE_MS > 10  # an edge every 10 ms never holds for the settle time
    agent = bench.start(door_device(tmp_path / "door"))
    bench.settle(agent)
    agent.simulate("door", "closed")
    bench.settle(agent)
    bench.link.clear()
    pin = agent.pin_for("door")
    for step in range(60_000 // 10):  # a minute, an edge every 10 ms, a tick every 20 ms
        if step % 2:
            pin.drive_high()
        else:
            pin.drive_low()
        clock.advance(ms=10)
        if step % 2:
            agent.tick()
    faults = [(e.kind, e.value) for e in bench.link.events() if e.kind == "fault"]
    heartbeat_states = [h.state.get("door") for h in bench.link.heartbeats()]
    assert faults, (
        f"a minute of chatter: no fault event; the heartbeats said door = {set(heartbeat_states)}; "
        f"events: {[(e.kind, e.value) for e in bench.link.events()]}"
    )


def test_a_door_contact_flapping_just_slower_than_the_settle_time_is_a_fault_not_thousands_of_events(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The same failing contact, flapping a little slower (every 150 ms, over the 100 ms settle time):
    a loose magnet on a door rattling in a draught, a slowly drifting floating input. With the broker
    unreachable, five minutes of it number 2,000 `door` events (each one a synchronous write to the SD
    card), all replayed to the hub as door openings and closings: episodes opened and ended every
    150 ms. No `fault` event says the sensor has failed, and nothing limits the flood."""
    agent = bench.start(door_device(tmp_path / "door"))
    bench.settle(agent)
    bench.link.drop()
    pin = agent.pin_for("door")
    for step in range(5 * 60_000 // 150):
        if step % 2:
            pin.drive_high()
        else:
            pin.drive_low()
        clock.advance(ms=150)
        agent.tick()
    outbox = agent._outbox
    assert outbox is not None
    waiting = [json.loads(e.payload) for e in outbox.pending()]
    doors = sum(1 for e in waiting if e["kind"] == "door")
    faults = [e["value"] for e in waiting if e["kind"] == "fault"]
    assert faults, (
        f"five minutes of a flapping contact: {len(waiting)} events waiting, {doors} of them door, no fault"
    )


def test_a_store_write_that_waits_does_not_hold_up_the_local_alarm(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The alarm must not wait for the SD card (agent.py: "The alarm comes before the outbox"). Another
    process holds the store's write lock (an operator's `sqlite3 outbox.sqlite3`, a backup job, a
    `seclusion-edge reset-epoch` run by hand; a worn card stalling in an fsync does the same): each
    append then waits BUSY_TIMEOUT_S (10 s) and is tried again at the next tick. The tick that numbers
    the door's close drives the outputs first, then waits in the write; every later tick waits behind
    it on the one ticker thread, so the fail-safe is not evaluated again while the write waits. With the
    broker unreachable and nobody at the panel, the lapse (15 s, the base numbers) is due 20 s into the
    episode, and the buzzer stays silent until the write gives up 10 s later; every later change of the
    alarm (the door opening: the buzzer stopping) is as late for as long as the lock is held, and a card
    stalled in an fsync holds it up without bound. A tick is 20 ms: 3 s is generous."""
    bench.connect_on_start = False  # the broker is unreachable: the local fail-safe drives
    agent = _door_agent(bench, clock, tmp_path)
    agent.start()

    def until(condition: Any, what: str, timeout_s: float = 3.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.005)

    clock.advance(ms=SETTLE_MS)
    until(lambda: agent.queued == 3, "the start-up readings are numbered")
    other = sqlite3.connect(tmp_path / "door" / "outbox.sqlite3", isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        agent.simulate("occupancy", "occupied")
        agent.simulate("door", "closed")
        clock.advance(ms=SETTLE_MS)
        until(lambda: agent.episode_open, "the ticker settles the close")
        assert not sounding(agent)
        clock.advance(seconds=20)  # past the 15 s lapse grace: nobody at the panel
        until(lambda: sounding(agent), f"no buzzer 20 s into an unwatched episode: {agent.local_alarm}")
    finally:
        other.execute("ROLLBACK")
        other.close()


# ------------------------------------------------------------------------------------- long outages


def test_an_idle_tick_does_not_read_every_event_waiting_for_the_hub(tmp_path: Path) -> None:
    """The hub is down for days while the broker is up (a failed hub server over half-term): the agent
    stays connected, every event goes out once and waits in the outbox for the hub's ack. Each tick
    (50 a second) asks the outbox for the events after the last one sent; that query
    (`epoch > ? OR (epoch = ? AND seq > ?)`) is not served by the (epoch, seq) key: SQLite scans the
    whole table, payloads included, 50 times a second. Measured here: 0.2 ms a tick with 5,000 events
    waiting, 6 ms with 50,000; several times that on a Pi, which the alarm's ticks then wait behind.
    Counted in SQLite VM steps (deterministic): the work of asking for nothing new must not grow with
    the backlog."""
    outbox = Outbox.open(tmp_path / "door", "calm-1-door")
    outbox.confirm()

    def steps_for_nothing_new(waiting: int) -> int:
        db = outbox._db
        db.execute("BEGIN")
        have = outbox.last_seq
        db.executemany(
            "INSERT INTO outbox (epoch, seq, payload) VALUES (0, ?, ?)",
            ((seq, b"x" * 300) for seq in range(have + 1, waiting + 1)),
        )
        db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (str(waiting),))
        db.execute("COMMIT")
        outbox._last_seq = waiting
        count = [0]

        def step() -> int:
            count[0] += 1
            return 0

        db.set_progress_handler(step, 100)
        try:
            assert outbox.pending(after=(0, waiting)) == []
        finally:
            db.set_progress_handler(None, 100)
        return count[0]

    small = steps_for_nothing_new(100)
    large = steps_for_nothing_new(20_000)
    outbox.close()
    assert large <= 2 * small + 10, (
        f"asking for nothing new: {small * 100} VM steps with 100 events waiting, {large * 100} with 20,000"
    )


def _door_agent(bench: Bench, clock: FakeClock, tmp_path: Path) -> EdgeAgent:
    """The door's agent with a buzzer and a LED, on the bench's publisher and the fake clock (not
    started; the bench stops it)."""
    agent = EdgeAgent(
        door_device(tmp_path / "door", outputs=DOOR_OUTPUTS),
        pin_factory=MockFactory(),
        clock=clock,
        publisher_factory=bench.factory,
        tick_interval_s=0.005,
        boot_id="boot-1",
    )
    bench.agents.append(agent)
    return agent


def _as_the_hub_applies(seqs: list[int]) -> list[int]:
    """Contract 2: the hub applies a device's event only above the last it applied; the rest are dropped
    as duplicates."""
    applied: list[int] = []
    for seq in seqs:
        if not applied or seq > applied[-1]:
            applied.append(seq)
    return applied


@pytest.mark.integration
def test_after_a_broker_crash_the_replay_reaches_the_hub_in_order(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The broker crashes (deploy/mosquitto.conf: it may lose its last second, "and no event: each edge
    agent ... re-sends it after reconnecting") while the agent is sending: the broker has acknowledged
    (PUBACK) events it never got to the hub, and paho still holds later ones it sent and got no PUBACK
    for. On reconnect the agent replays its outbox from the oldest event, but paho has its own copies of
    the unacknowledged ones and re-sends them too, right after the first 20 of the replay (its default
    in-flight window), ahead of the rest. The hub sees seq 1..19, then the higher stale copies, then
    the replay's 20.. again: it applies the stale ones and drops the replay's as duplicates. The
    events in between, which the outbox kept for exactly this, are lost for good (acked past, then
    removed from the outbox)."""
    config = door_device(
        tmp_path / "state",
        mqtt={"url": mosquitto.url, "keepalive_s": 30, "reconnect_min_s": 3, "reconnect_max_s": 3},
        settle_ms=20,
    )
    clock = FakeClock()
    agent = EdgeAgent(config, pin_factory=MockFactory(), clock=clock, tick_interval_s=None)
    agent.start()
    hub: HubDouble | None = None
    restarted: Mosquitto | None = None
    try:
        poll(lambda: agent.is_connected, 10, what="agent connected")
        paho_client = agent.publisher._client  # type: ignore[attr-defined]

        def toggles(count: int) -> None:
            for _ in range(count):
                pin = agent.pin_for("door")
                if pin.state:
                    pin.drive_low()
                else:
                    pin.drive_high()
                # 600 ms apart (fake time): a door opened and closed this often is not taken for a failing
                # contact (over 20 changes in 10 s is one, and its readings are held back).
                clock.advance(ms=600)
                agent.tick()

        clock.advance(ms=30)
        agent.tick()  # start-up readings: seq 1-3
        poll(lambda: agent._outbox is not None and agent._outbox.confirmed, 10, what="store confirmed")
        toggles(20)  # seq 4-23: the broker acknowledges them; the hub is down (no subscriber yet)
        poll(lambda: agent.last_seq == 23 and not paho_client._out_messages, 10, what="seq 1-23 acknowledged")
        assert mosquitto.proc is not None
        os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # the broker hangs, then crashes
        toggles(30)  # seq 24-53: handed to paho, never acknowledged
        assert agent.last_seq == 53
        mosquitto.proc.kill()
        mosquitto.proc.wait(5)
        mosquitto.proc = None
        poll(lambda: not agent.is_connected, 10, what="agent noticed the crash")

        restarted = Mosquitto(mosquitto.workdir, port=mosquitto.port).start()
        hub = HubDouble(restarted.port)
        # Published once the hub double is connected (its SUBSCRIBE sent first): one published before
        # could go out ahead of the SUBSCRIBE and never come back.
        poll(lambda: hub is not None and hub.connected.is_set(), 10, what="hub connected")
        marker = "seclusion/v1/_review/marker"
        hub.client.publish(marker, b"{}", qos=1)
        poll(lambda: hub is not None and hub.on("marker"), 10, what="hub subscribed before the agent is back")
        poll(lambda: agent.is_connected, 15, what="agent reconnected")
        arrived = hub

        def seen() -> list[int]:
            return [int(e["seq"]) for e in arrived.events()]

        poll(lambda: set(range(1, 54)) <= set(seen()), 15, what="every event sent again")
        poll(lambda: seen().count(53) >= 2 or len(seen()) >= 53, 5, what="the replay done")
        arrival = seen()
        assert _as_the_hub_applies(arrival) == list(range(1, 54)), f"arrival order at the hub: {arrival}"
    finally:
        agent.stop()
        if hub is not None:
            hub.close()
        if restarted is not None:
            restarted.stop()


class _StuckStore:
    """The door's agent, started; from `stall` on, its store's thread stuck in a write that holds the
    send lock (a card stalled in an fsync) until `close`."""

    def __init__(self, bench: Bench, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setattr(agent_module, "BUSY_TIMEOUT_S", 0.05)
        self.agent = agent = _door_agent(bench, clock, tmp_path)
        self.entered, self.release = threading.Event(), threading.Event()
        record = agent._record_or_keep_queued
        self.stalling = False

        def stalled() -> None:
            if self.stalling:
                self.entered.set()
                self.release.wait(10)
            record()

        monkeypatch.setattr(agent, "_record_or_keep_queued", stalled)
        agent.start()
        assert agent._outbox is not None and agent._store_worker is not None
        self.outbox, self.worker = agent._outbox, agent._store_worker

    def stall(self) -> None:
        self.stalling = True
        assert self.entered.wait(5), "the store's thread never ticked"

    def on_network_thread(self, call: Callable[[], None]) -> float:
        """Run `call` as paho's network thread would; how long it took (it must end)."""
        network = threading.Thread(target=call)
        started = time.monotonic()
        network.start()
        network.join(5)
        assert not network.is_alive(), "the link's thread still waits for the stuck write"
        return time.monotonic() - started

    def close(self) -> None:
        """The write returns (the store's thread goes on until the agent stops)."""
        self.stalling = False
        self.release.set()

    def stop(self) -> None:
        self.agent.stop()
        self.worker.join(5)
        assert not self.worker.is_alive()
        self.outbox.close()


@pytest.mark.parametrize("callback", ["connected", "disconnected", "ack", "own status", "config"])
def test_the_links_thread_does_not_wait_for_a_stuck_store_write(
    bench: Bench, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, callback: str
) -> None:
    """A connect, a disconnect, an ack or the device's own status reported while the store's thread is
    stuck in a write holding the send lock: the link's thread returns within LINK_WAIT_S (its
    keepalive and the hub's indicators go on; paho's `loop_stop` would wait for it), and the store's
    thread applies it once its write returns, before it sends anything (found by a review: the link's
    thread waited without bound, and a stop with it)."""
    stuck = _StuckStore(bench, clock, tmp_path, monkeypatch)
    agent = stuck.agent
    stuck.stall()
    calls: dict[str, Callable[[], None]] = {
        "connected": lambda: agent.on_connected(False),
        "disconnected": agent.on_disconnected,
        "ack": lambda: agent.on_message(agent._ack_topic, b'{"v": 1, "epoch": 0, "seq": 1}'),
        "own status": lambda: agent.on_message(agent._status_topic, b'{"v": 1, "online": true}'),
        "config": lambda: agent.on_message(agent._config_topic, config),
    }
    config = BASE_NUMBERS.model_copy(update={"heartbeat_s": 7.0}).model_dump_json().encode()
    try:
        took = stuck.on_network_thread(calls[callback])
        assert took < agent_module.LINK_WAIT_S + 1.0
        assert [kind for kind, _ in agent._link_events] == [callback]  # waits for the store's thread
        indicator = {"v": 1, "level": "warning", "reason": "duration", "ts": "2026-12-07T10:00:00.000Z"}
        stuck.on_network_thread(lambda: bench.link.deliver(agent._indicator_topic, indicator))
        assert agent.indicator is not None and agent.indicator.level == "warning"  # read meanwhile
    finally:
        stuck.close()
    poll(lambda: not agent._link_events, 5, what="the store's thread to apply what the link reported")
    if callback == "disconnected":
        assert agent._replay_due
    if callback == "config":
        assert agent.policy is not None and agent.policy.heartbeat_s == 7.0  # the fail-safe's at once
        assert agent._heartbeat_ms == 7000  # and the rest once the write returned
        assert (tmp_path / "door" / agent_module.POLICY_FILE).read_bytes() == config
    stuck.stop()


def test_what_the_link_reported_behind_a_busy_lock_sends_nothing_before_the_new_connections_status(
    bench: Bench, tmp_path: Path
) -> None:
    """An ack, a drop and a reconnect reported while the send lock is busy are applied in one go: the
    ack's renumbering must not send the outbox on the new connection before the disconnect behind it
    is applied and the connection's status said (found by a review: the queue was emptied first, so a
    send saw nothing waiting)."""
    agent = bench.start(door_device(tmp_path / "state"))
    bench.settle(agent, SETTLE_MS * 10)
    link = bench.link
    assert agent._outbox is not None and agent._outbox.confirmed and agent.last_seq == 3
    held, release = threading.Event(), threading.Event()

    def store_thread() -> None:  # busy in a write
        with agent._send_lock:
            held.set()
            release.wait(10)

    store = threading.Thread(target=store_thread)
    store.start()
    try:
        assert held.wait(5)
        link.deliver(agent._ack_topic, {"v": 1, "epoch": 0, "seq": 8})  # beyond the store: renumbering
        link.drop()
        assert [kind for kind, _ in agent._link_events] == ["ack", "disconnected"]
    finally:
        release.set()
        store.join(5)
    link.clear()
    link.connect()
    assert link.sent[0].topic == agent._status_topic  # the new connection's status before any event
    assert [(e.epoch, e.seq) for e in link.events()] == [(1, 1), (1, 2), (1, 3)]  # renumbered, once


def test_a_reconnect_during_a_stuck_store_write_replays_before_anything_newer_goes_out(
    bench: Bench, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link dropped and came back while the store's thread was stuck in a write: once the write
    returns, the new connection gets the status and the replay from the oldest event waiting first,
    never an event continued from where the last connection was (the hub would apply it ahead of the
    lost ones and drop those as duplicates)."""
    stuck = _StuckStore(bench, clock, tmp_path, monkeypatch)
    agent, link = stuck.agent, bench.link
    # The start-up readings (door open, released, vacant), sent on the first connection and never acked.
    clock.advance(ms=SETTLE_MS * 10)
    sent = poll(lambda: [e.seq for e in link.events()] if len(link.events()) >= 3 else None, 5)
    assert sent == [1, 2, 3]
    stuck.stall()
    try:
        stuck.on_network_thread(link.drop)
        assert [kind for kind, _ in agent._link_events] == ["disconnected"]
        link.clear()
        reconnect = threading.Thread(target=link.connect)  # waits in its pre-connect for the store
        reconnect.start()
    finally:
        stuck.close()
    reconnect.join(5)
    assert not reconnect.is_alive()
    poll(lambda: len(link.events()) >= len(sent), 5, what="the replay")
    assert link.sent[0].topic == agent._status_topic  # the status first
    assert [e.seq for e in link.events()][: len(sent)] == sent  # then the replay, from the oldest
    stuck.stop()


def test_a_stop_waits_for_a_stuck_store_write_at_most_busy_timeout_s(
    bench: Bench, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/edge.md: `stop()` waits for a write in progress at most BUSY_TIMEOUT_S (here 0.05 s). A worn
    card stalled in an fsync never returns: the stop goes on without the store's thread (the outputs off,
    the pins released, the farewell published) and leaves the store to it, instead of hanging."""
    monkeypatch.setattr(agent_module, "BUSY_TIMEOUT_S", 0.05)
    agent = _door_agent(bench, clock, tmp_path)
    entered, release = threading.Event(), threading.Event()
    record = agent._record_or_keep_queued

    def stalled() -> None:  # the store's thread, in a write that does not return until released
        entered.set()
        release.wait(10)
        record()

    monkeypatch.setattr(agent, "_record_or_keep_queued", stalled)
    agent.start()
    outbox = agent._outbox
    assert outbox is not None
    worker = agent._store_worker
    assert worker is not None
    try:
        assert entered.wait(5), "the store's thread never ticked"
        started = time.monotonic()
        agent.stop()
        assert time.monotonic() - started < 5
        assert not agent._running and bench.link.stopped
        assert worker.is_alive()  # still in its write, the store left to it

        # paho's loop_stop waits for its callbacks, which must not wait for the send lock the stuck
        # thread holds: a disconnect and an ack arriving during the stop return at once.
        def network_thread() -> None:
            agent.on_disconnected()
            agent.on_message(agent._ack_topic, b'{"v": 1, "epoch": 0, "seq": 1}')

        late = threading.Thread(target=network_thread)
        late.start()
        late.join(5)
        assert not late.is_alive() and agent.rejected_messages == 0
    finally:
        release.set()
        worker.join(5)
        outbox.close()
    assert not worker.is_alive()
