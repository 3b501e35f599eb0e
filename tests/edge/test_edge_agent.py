"""The edge agent on mock pins, with a fake clock and an in-memory broker link: no sleeps, no broker."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seclusion_contract import format_ts
from seclusion_edge import EdgeAgent, FakeClock, reset_epoch
from seclusion_edge.agent import CONFIRM_TIMEOUT_S, REOPEN_INTERVAL_S
from seclusion_edge.config import EdgeConfig
from seclusion_edge.failsafe import BASE_NUMBERS
from seclusion_edge.outbox import Outbox
from tests.edge.conftest import SETTLE_MS, TEST_CA_PEM, Bench, door_device, panel_device

ACK = "seclusion/v1/demo-school/calm-1/calm-1-door/ack"
EVENT = "seclusion/v1/demo-school/calm-1/calm-1-door/event"
STATUS = "seclusion/v1/demo-school/calm-1/calm-1-door/status"


def close_door(agent: EdgeAgent) -> None:
    agent.pin_for("door").drive_low()  # pull-up contact, closed = low


def open_door(agent: EdgeAgent) -> None:
    agent.pin_for("door").drive_high()


# ------------------------------------------------------------------------------------ debounced events


def test_a_door_closing_publishes_one_event_after_the_settle_time_dated_by_its_first_edge(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    agent = started_door()
    first_edge = clock.advance(seconds=5)

    close_door(agent)
    bench.settle(agent, SETTLE_MS - 1)
    assert bench.link.events() == []

    bench.settle(agent, 1)
    [event] = bench.link.events()
    assert (event.kind, event.value) == ("door", "closed")
    assert event.ts == first_edge.wall
    assert event.mono_ms == first_edge.mono_ms
    assert event.boot == "boot-1"
    assert event.id == f"calm-1-door:{event.epoch}:{event.seq}"

    for _ in range(5):
        bench.settle(agent, 1000)
    assert len(bench.link.events()) == 1
    assert agent.readings()["door"] == "closed"


def test_the_event_is_sent_qos1_not_retained_with_the_contract_timestamp(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    agent = started_door()
    edge = clock.advance(ms=1234)
    close_door(agent)
    bench.settle(agent)
    [message] = bench.link.on("event")
    assert message.topic == EVENT
    assert (message.qos, message.retain) == (1, False)
    assert json.loads(message.payload)["ts"] == format_ts(edge.wall)


def test_bounce_shorter_than_the_settle_time_publishes_nothing(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    agent = started_door()
    for _ in range(3):
        close_door(agent)
        clock.advance(ms=SETTLE_MS // 3)
        agent.tick()
        open_door(agent)
        clock.advance(ms=SETTLE_MS // 3)
        agent.tick()
    bench.settle(agent, 10 * SETTLE_MS)
    assert bench.link.events() == []
    assert agent.readings()["door"] == "open"


def test_a_chattering_close_is_one_event_from_the_first_edge(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    agent = started_door()
    first_edge = clock.advance(seconds=1)
    close_door(agent)
    for _ in range(4):
        clock.advance(ms=3)
        open_door(agent)
        clock.advance(ms=3)
        close_door(agent)
        agent.tick()
    bench.settle(agent)
    [event] = bench.link.events()
    assert (event.value, event.ts) == ("closed", first_edge.wall)


def test_each_sensor_is_debounced_on_its_own_settle_time(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    agent = bench.start(_radar_room(tmp_path))
    bench.settle(agent, 500)
    bench.link.clear()
    close_door(agent)
    agent.pin_for("occupancy").drive_high()
    bench.settle(agent, SETTLE_MS)
    assert [(e.kind, e.value) for e in bench.link.events()] == [("door", "closed")]
    bench.settle(agent, 500 - SETTLE_MS)
    assert [(e.kind, e.value) for e in bench.link.events()] == [("door", "closed"), ("occupancy", "occupied")]


def test_a_missed_interrupt_is_caught_by_polling_the_pin(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    agent = started_door()
    pin = agent.pin_for("door")
    pin.edges = "none"  # the pin changes without calling back, as a lost interrupt would
    pin.drive_low()
    first_seen = clock.advance(ms=20)
    agent.tick()
    bench.settle(agent)
    [event] = bench.link.events()
    assert (event.value, event.ts) == ("closed", first_seen.wall)


def test_a_reading_that_could_not_be_stored_is_retried_in_order_on_the_next_tick(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = started_door()
    outbox = agent._outbox
    assert outbox is not None
    real_append = outbox.append
    failures = iter([sqlite3.OperationalError("disk I/O error")])

    def flaky_append(*args: Any, **kwargs: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_append(*args, **kwargs)

    monkeypatch.setattr(outbox, "append", flaky_append)
    edge = clock.advance(seconds=1)
    close_door(agent)
    agent.pin_for("occupancy").drive_high()
    clock.advance(ms=SETTLE_MS)
    agent.tick()  # the failure is logged, not raised
    assert bench.link.events() == []
    agent.tick()
    assert [(e.kind, e.value, e.seq) for e in bench.link.events()] == [
        ("door", "closed", 4),
        ("occupancy", "occupied", 5),
    ]
    assert bench.link.events()[0].ts == edge.wall


def test_a_state_dir_deleted_while_running_is_made_again_and_said_plainly_once(
    bench: Bench, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Contract 2: every event kept until the hub's ack covers it. The state directory removed under
    a running agent, and a file in its way: the store cannot be put back; that is logged once, the
    events go on into the open store, and once the way is clear (tried every REOPEN_INTERVAL_S) the
    store is made again with all of them, its seq going on, and the fail-safe's numbers beside it."""
    state = tmp_path / "state"
    bench.connect_on_start = False
    agent = bench.start(panel_device(state))
    bench.settle(agent)  # observer absent: seq 1
    agent._apply_policy(BASE_NUMBERS, b'{"v":1,"supervision":"observer"}')
    caplog.set_level("INFO", logger="seclusion_edge")
    shutil.rmtree(state)
    state.write_bytes(b"")  # a file where the directory was: it cannot be made again for now
    agent.simulate("check", "ok")
    bench.settle(agent)
    agent.set_contact("check", False)
    bench.settle(agent)
    for _ in range(10):
        agent.tick()
    assert agent.last_seq == 2 and agent.queued == 2
    assert caplog.text.count("cannot be made again") == 1  # once, not at every tick
    assert "badge-0042" not in caplog.text  # the check button's staff reference is not logged
    state.unlink()
    bench.settle(agent, round(REOPEN_INTERVAL_S * 1000))
    assert "made again from the open store: epoch 0, last seq 2, 2 events" in caplog.text
    assert (state / "failsafe-config.json").exists()
    agent.simulate("observer", "present")
    bench.settle(agent)
    agent.stop()
    again = Outbox.open(state, "calm-1-panel")
    assert [json.loads(e.payload)["kind"] for e in again.pending()] == ["observer", "check", "observer"]
    again.close()


def test_a_full_sd_card_keeps_the_readings_queued_and_the_heartbeat_and_waiting_events_going(
    bench: Bench,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Contract 2: a heartbeat every heartbeat_s with the current readings. A full card stops the
    numbering of readings, not the device: it must go on telling the hub it is there and what its
    sensors read (else the hub declares it offline after three heartbeats), send what already waits in
    the outbox, and number the queued readings, in order, once the card has room again."""
    bench.connect_on_start = False
    agent = bench.start(panel_device(tmp_path, heartbeat_s=10))
    bench.settle(agent)  # observer absent: numbered, waiting for a connection
    outbox = agent._outbox
    assert outbox is not None
    real_append = outbox.append
    full = True

    def full_card(*args: Any, **kwargs: Any) -> Any:
        if full:
            raise sqlite3.OperationalError("database or disk is full")
        return real_append(*args, **kwargs)

    monkeypatch.setattr(outbox, "append", full_card)
    caplog.set_level("DEBUG", logger="seclusion_edge")
    pressed = clock.advance(seconds=1)
    agent.simulate("check", "ok")
    bench.settle(agent)
    agent.set_contact("check", False)
    present = clock.advance(seconds=1)
    agent.simulate("observer", "present")
    bench.settle(agent)
    bench.link.connect()
    for _ in range(6):  # a minute: the hub declares a device offline after three missed heartbeats
        bench.settle(agent, 10_000)
    assert [(e.kind, e.value) for e in bench.link.events()] == [("observer", "absent")]
    heartbeats = bench.link.heartbeats()
    assert len(heartbeats) >= 6
    assert heartbeats[-1].state == {"observer": "present"} and heartbeats[-1].last_seq == 1
    assert caplog.text.count("cannot number readings") == 1  # once, not at every tick
    assert "database or disk is full" in caplog.text
    assert "badge-0042" not in caplog.text  # the check button's staff reference is not logged

    full = False
    agent.tick()
    assert [(e.kind, e.value, e.ts, e.seq) for e in bench.link.events()[1:]] == [
        ("check", "ok", pressed.wall, 2),
        ("observer", "present", present.wall, 3),
    ]
    assert "the outbox takes readings again" in caplog.text


def test_a_door_opening_that_held_while_the_ticker_was_held_up_is_still_published(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    """The pin's edges are recorded on gpiozero's thread while the ticker waits (say on a slow SD card
    write): a door open for 2 s and shut again before the next tick is two events, not none."""
    agent = started_door()
    close_door(agent)
    bench.settle(agent)
    bench.link.clear()
    opened = clock.now()
    open_door(agent)
    clock.advance(seconds=2)
    closed = clock.now()
    close_door(agent)
    clock.advance(seconds=1)
    agent.tick()
    assert [(e.kind, e.value, e.ts) for e in bench.link.events()] == [
        ("door", "open", opened.wall),
        ("door", "closed", closed.wall),
    ]


def test_a_heartbeat_never_reports_a_reading_that_has_no_event_yet(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading can settle on gpiozero's edge thread while a tick is between taking the settled
    readings and sending the heartbeat; the heartbeat's `state` must not show it before its event is
    numbered, or the hub takes it for a lost event (contract 2) and ends the episode as found open."""
    agent = started_door()
    agent.pin_for("occupancy").drive_high()
    close_door(agent)
    bench.settle(agent)
    clock.advance(seconds=10)  # a heartbeat is due
    bench.link.clear()
    open_door(agent)
    drive = agent._drive_outputs

    def meanwhile(now: Any) -> None:  # the edge thread, while the ticker waits for the send lock
        drive(now)
        if clock.now().mono_ms < now.mono_ms + SETTLE_MS:
            clock.advance(ms=SETTLE_MS + 10)
            close_door(agent)  # the open reading has held: it settles on the edge thread

    monkeypatch.setattr(agent, "_drive_outputs", meanwhile)
    clock.advance(ms=50)
    agent.tick()
    (heartbeat,) = bench.link.heartbeats()
    assert heartbeat.state["door"] == "closed" and heartbeat.last_seq == 5
    assert [e.kind for e in bench.link.events()] == []  # the opening is numbered at the next tick
    monkeypatch.undo()
    agent.tick()
    assert [(e.seq, e.value) for e in bench.link.events()] == [(6, "open")]


def _radar_room(tmp_path: Path) -> EdgeConfig:
    """calm-1-door as shipped: the door settles in 100 ms, the occupancy radar in 500 ms."""
    return door_device(
        tmp_path,
        sensors=[
            {"kind": "door", "pin": 17, "pull": "up", "active": "low", "active_value": "closed"},
            {
                "kind": "occupancy",
                "pin": 22,
                "pull": "down",
                "active": "high",
                "active_value": "occupied",
                "settle_ms": 500,
            },
        ],
    )


def _tick_every_10_ms(bench: Bench, agent: EdgeAgent, ms: int) -> None:
    for _ in range(ms // 10):
        bench.settle(agent, 10)


def test_the_child_leaving_just_before_the_door_shuts_is_numbered_before_the_shut(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    # Given an occupied room with its door open (the radar settles in 500 ms, the door in 100)
    agent = bench.start(_radar_room(tmp_path))
    agent.pin_for("occupancy").drive_high()
    _tick_every_10_ms(bench, agent, 600)
    bench.link.clear()
    # When the child leaves and the door shuts 200 ms later
    left = clock.now()
    agent.pin_for("occupancy").drive_low()
    _tick_every_10_ms(bench, agent, 200)
    shut = clock.now()
    close_door(agent)
    _tick_every_10_ms(bench, agent, 150)
    # Then the shut, settled first, waits for the reading that began before it ...
    assert bench.link.events() == []
    assert agent.readings()["door"] == "open"  # nor does the heartbeat's state run ahead of the events
    _tick_every_10_ms(bench, agent, 200)
    # ... and the hub is told in the order it happened: no episode for an empty room
    assert [(e.kind, e.value, e.ts) for e in bench.link.events()] == [
        ("occupancy", "vacant", left.wall),
        ("door", "closed", shut.wall),
    ]
    assert [e.seq for e in bench.link.events()] == sorted(e.seq for e in bench.link.events())
    assert agent.readings() == {"door": "closed", "occupancy": "vacant"}


def test_readings_settled_in_one_late_tick_are_numbered_in_the_order_they_began(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    # Given an occupied room with its door closed (an episode), and the ticker held up by a slow write
    agent = bench.start(door_device(tmp_path / "state"))
    agent.pin_for("occupancy").drive_high()
    close_door(agent)
    bench.settle(agent)
    bench.link.clear()
    # When the door opens, the room empties a second later and the door shuts half a second after that,
    # all before the next tick
    opened = clock.now()
    open_door(agent)
    clock.advance(seconds=1)
    vacant = clock.now()
    agent.pin_for("occupancy").drive_low()
    clock.advance(seconds=0.5)
    shut = clock.now()
    close_door(agent)
    bench.settle(agent, 1000)
    # Then they are numbered as they happened (by sensor they would end the episode after the shut)
    assert [(e.kind, e.value, e.ts) for e in bench.link.events()] == [
        ("door", "open", opened.wall),
        ("occupancy", "vacant", vacant.wall),
        ("door", "closed", shut.wall),
    ]


def test_a_sensor_that_never_settles_holds_the_others_back_only_briefly(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    # Given the radar (500 ms) flickering without end
    agent = bench.start(_radar_room(tmp_path))
    _tick_every_10_ms(bench, agent, 600)
    bench.link.clear()
    radar = agent.pin_for("occupancy")
    radar.drive_high()
    _tick_every_10_ms(bench, agent, 50)
    # When the door shuts while it flickers
    shut = clock.now()
    close_door(agent)
    published_at = None
    for step in range(200):
        if step % 20 == 0:
            radar.drive_low() if step % 40 == 0 else radar.drive_high()
        bench.settle(agent, 10)
        if published_at is None and bench.link.events():
            published_at = clock.now()
    # Then the shut is numbered within twice the longest settle time of its own beginning
    assert [(e.kind, e.value, e.ts) for e in bench.link.events()] == [("door", "closed", shut.wall)]
    assert published_at is not None and published_at.mono_ms - shut.mono_ms <= 2 * 500 + 10


def test_a_reading_waiting_for_another_is_numbered_at_the_stop_with_its_own_time(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    # Given the radar's reading settling while the door's shut waits behind it
    agent = bench.start(_radar_room(tmp_path))
    agent.pin_for("occupancy").drive_high()
    _tick_every_10_ms(bench, agent, 600)
    agent.pin_for("occupancy").drive_low()
    _tick_every_10_ms(bench, agent, 100)
    shut = clock.now()
    close_door(agent)
    _tick_every_10_ms(bench, agent, 150)
    link = bench.link
    link.clear()
    # When the agent is stopped before the radar settles
    agent.stop()
    # Then the shut is in the outbox with its own time, sent at the next start (the vacant, still
    # settling, is observed again then)
    again = bench.start(_radar_room(tmp_path))
    bench.settle(again, 0)
    sent = [(e.kind, e.value, e.ts) for e in bench.link.events()]
    assert ("door", "closed", shut.wall) in sent
    assert link.events() == []


def test_a_reading_that_had_settled_before_the_stop_is_numbered_at_the_stop_one_still_settling_is_not(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """Only a reading *still settling* is dropped at a stop. A door shut that had held for the settle
    time when SIGTERM came (the ticker simply had not run since) is a reading: it was lost, and if the
    door opened again before the restart the hub never heard of the confinement at all."""
    agent = bench.start(door_device(tmp_path / "state"))
    bench.settle(agent)
    shut = clock.advance(seconds=1)
    close_door(agent)
    clock.advance(ms=SETTLE_MS + 15)  # settled; the stop comes before the next tick
    agent.pin_for("occupancy").drive_high()  # and the child's arrival is still settling
    clock.advance(ms=SETTLE_MS - 1)
    link = bench.link
    link.clear()
    agent.stop()
    assert [(e.kind, e.value, e.ts) for e in link.events()] == []  # numbered, not sent: it was stopping
    bench.start(door_device(tmp_path / "state"))  # the replay: nothing was acked
    replayed = [(e.seq, e.kind, e.value, e.ts) for e in bench.link.events()]
    assert replayed[3:] == [(4, "door", "closed", shut.wall)]  # and not the occupancy, still settling


# -------------------------------------------------------------------------------- start-up readings


def test_start_up_readings_are_published_once_settled(bench: Bench, clock: FakeClock, tmp_path: Path) -> None:
    start = clock.now()
    agent = bench.start(door_device(tmp_path))
    agent.pin_for("occupancy").drive_high()  # someone is inside while the agent starts
    bench.settle(agent, SETTLE_MS - 1)
    assert bench.link.events() == []
    bench.settle(agent, 1)
    events = bench.link.events()
    assert [(e.kind, e.value, e.seq) for e in events] == [
        ("door", "open", 1),
        ("lock", "released", 2),
        ("occupancy", "occupied", 3),
    ]
    assert events[0].ts == start.wall
    # Each is the agent's first reading: when it first saw it, not when it began (contract 2, added).
    assert [e.startup for e in events] == [True, True, True]
    assert agent.readings() == {"door": "open", "lock": "released", "occupancy": "occupied"}


def test_an_unchanged_reading_is_not_published_again_after_a_restart_a_changed_one_is(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    config = door_device(tmp_path)
    agent = bench.start(config)
    bench.settle(agent)
    bench.link.deliver(ACK, {"v": 1, "epoch": 0, "seq": 3})
    agent.stop()

    second = bench.start(config)
    second.pin_for("door").drive_low()  # the door was shut while the agent was down
    bench.settle(second)
    assert [(e.kind, e.value, e.seq, e.startup) for e in bench.link.events()] == [("door", "closed", 4, True)]
    assert second.readings() == {"door": "closed", "lock": "released", "occupancy": "vacant"}
    # A change seen as it happened is not marked (the field left out of the payload).
    clock.advance(seconds=5)
    second.pin_for("door").drive_high()
    bench.settle(second)
    opened = bench.link.events()[-1]
    assert (opened.kind, opened.value, opened.startup) == ("door", "open", None)


def test_a_check_button_press_publishes_ok_with_the_staff_reference_and_its_release_nothing(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    agent = bench.start(panel_device(tmp_path))
    bench.settle(agent)
    assert [(e.kind, e.value) for e in bench.link.events()] == [("observer", "absent")]
    bench.link.clear()

    for _ in range(2):
        press = clock.advance(seconds=30)
        agent.pin_for("check").drive_low()
        bench.settle(agent)
        agent.pin_for("check").drive_high()
        bench.settle(agent)
        assert bench.link.events()[-1].ts == press.wall
    events = bench.link.events()
    assert [(e.kind, e.value, e.staff, e.startup) for e in events] == [
        ("check", "ok", "badge-0042", None)
    ] * 2
    assert "check" not in agent.readings()


# ------------------------------------------------------------------------------- status and heartbeat


def test_every_connect_publishes_a_retained_online_status_and_the_will_says_offline(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    started_door()
    link = bench.link
    # The Last Will the first connection opened with (named just before its CONNECT)
    first = json.loads(link.will.payload)
    assert first == {"v": 1, "online": False, "boot": "boot-1", "conn_ms": first["conn_ms"]}
    assert (link.will.topic, link.will.qos, link.will.retain) == (STATUS, 1, True)

    clock.advance(seconds=42)
    link.drop()
    link.connect()
    [message] = link.on("status")
    assert (message.qos, message.retain) == (1, True)
    status = json.loads(message.payload)
    assert status["online"] is True
    assert status["boot"] == "boot-1"
    assert status["sensors"] == ["door", "lock", "occupancy"]
    assert (status["epoch"], status["last_seq"]) == (0, 3)
    assert status["uptime_s"] == pytest.approx(42.1)
    assert status["agent"]
    # The connection is named in its status and in the Last Will it was opened with: a new one for each.
    assert [json.loads(w.payload) for w in link.wills] == [first]
    assert json.loads(link.will.payload) == {**first, "conn_ms": status["conn_ms"]}
    assert status["conn_ms"] > first["conn_ms"]


def test_each_connection_has_its_own_last_will_so_a_will_delivered_again_is_known_for_an_old_one(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    started_door()
    link = bench.link
    announced = [json.loads(link.will.payload)["conn_ms"]]  # its status was read by the fixture
    for _ in range(3):
        clock.advance(seconds=1)
        link.drop()
        link.connect()
        announced.append(json.loads(link.on("status")[-1].payload)["conn_ms"])
    # Every will the broker published names the connection it ended, as that connection's status did.
    assert [json.loads(w.payload)["conn_ms"] for w in link.wills] == announced[:3]
    assert announced == sorted(set(announced))


def test_a_clean_stop_says_offline_for_its_own_connection(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    agent = started_door()
    link = bench.link
    clock.advance(seconds=5)
    link.drop()
    link.connect()
    online = json.loads(link.on("status")[-1].payload)
    agent.stop()
    farewell = json.loads(link.on("status")[-1].payload)
    assert farewell["online"] is False and farewell["ts"]
    assert (farewell["boot"], farewell["conn_ms"]) == (online["boot"], online["conn_ms"])


def test_the_agent_subscribes_to_its_ack_config_room_indicator_hub_status_room_events_and_own_status(
    bench: Bench, tmp_path: Path
) -> None:
    bench.start(door_device(tmp_path))
    assert set(bench.link.settings.subscriptions) == {
        ACK,
        "seclusion/v1/demo-school/calm-1/calm-1-door/config",
        "seclusion/v1/demo-school/calm-1/indicator",
        "seclusion/v1/_hub/status",
        "seclusion/v1/demo-school/calm-1/+/event",
        "seclusion/v1/demo-school/calm-1/+/heartbeat",  # the other devices' clocks
        STATUS,  # its own: a new store waits for the copy of the status it published
    }
    assert bench.link.settings.protocol == "5"
    assert bench.link.settings.client_id == "seclusion-edge-demo-school-calm-1-door"


def test_heartbeats_carry_the_current_readings_every_heartbeat_s(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    agent = bench.start(panel_device(tmp_path, heartbeat_s=10))
    agent.tick()
    [first] = bench.link.heartbeats()  # at once after connecting, before the readings have settled
    assert first.state == {}

    agent.pin_for("observer").drive_high()
    bench.settle(agent, SETTLE_MS)
    bench.settle(agent, 10_000 - SETTLE_MS - 1)
    assert len(bench.link.heartbeats()) == 1
    bench.settle(agent, 1)
    [_, second] = bench.link.heartbeats()
    assert second.state == {"observer": "present"}
    assert (second.epoch, second.last_seq, second.queued) == (0, 1, 1)
    assert second.uptime_s == pytest.approx(10.0)
    [message] = bench.link.on("heartbeat")[1:]
    assert (message.qos, message.retain) == (0, False)


def test_no_heartbeat_is_queued_while_disconnected(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    agent = started_door()
    bench.link.drop()
    for _ in range(5):
        bench.settle(agent, 10_000)
    bench.link.connect()
    agent.tick()
    assert len(bench.link.heartbeats()) == 1


# ------------------------------------------------------------------------------------ outbox and ack


def test_events_while_disconnected_wait_and_are_sent_in_order_after_the_reconnect(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    agent = started_door()
    link = bench.link
    link.drop()
    assert not agent.is_connected
    close_door(agent)
    bench.settle(agent)
    agent.pin_for("occupancy").drive_high()
    bench.settle(agent)
    assert link.events() == []
    assert agent.queued == 5

    link.connect()
    assert agent.is_connected
    assert [(e.seq, e.kind, e.value) for e in link.events()] == [
        (1, "door", "open"),
        (2, "lock", "released"),
        (3, "occupancy", "vacant"),
        (4, "door", "closed"),
        (5, "occupancy", "occupied"),
    ]
    assert link.on("status")[0] is link.sent[0]  # the status goes first, then the replay


def test_a_replay_longer_than_one_batch_goes_out_whole_and_in_order(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox is read a batch at a time (`SEND_BATCH`); the replay still sends every event once."""
    monkeypatch.setattr("seclusion_edge.agent.SEND_BATCH", 2)
    agent = started_door()
    link = bench.link
    link.drop()
    for _ in range(2):
        close_door(agent)
        bench.settle(agent)
        open_door(agent)
        bench.settle(agent)
    link.connect()
    assert [e.seq for e in link.events()] == [1, 2, 3, 4, 5, 6, 7]
    close_door(agent)
    bench.settle(agent)  # a new event, after the replay: sent once
    assert [e.seq for e in link.events()] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_tick_between_paho_saying_connected_and_the_replay_sends_nothing_ahead_of_it(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    """Contract 2: events leave strictly in (epoch, seq) order. paho marks a new connection connected a
    moment before it calls `on_connected`; a tick then (the ticker thread) must not send newer events
    ahead of an older one the dead connection took and never delivered: the hub would drop that one
    as a duplicate, and its ack would then remove it from the outbox."""
    agent = started_door()
    link = bench.link
    link.deliver(ACK, {"v": 1, "epoch": 0, "seq": 3})
    close_door(agent)
    bench.settle(agent)  # seq 4 handed to the connection...
    link.clear()  # ...which had silently died: it never arrived
    link.drop()
    agent.pin_for("occupancy").drive_high()
    bench.settle(agent)  # seq 5 waits in the outbox
    link.connected = True  # paho: connected...
    agent.tick()  # ...and the ticker runs before paho calls on_connected
    assert link.events() == []
    link.handlers.on_connected(False)
    assert [(e.seq, e.kind, e.value) for e in link.events()] == [
        (4, "door", "closed"),
        (5, "occupancy", "occupied"),
    ]


def test_no_heartbeat_goes_before_the_status_and_the_replay(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    agent = started_door()
    bench.link.drop()
    clock.advance(seconds=30)  # a heartbeat is due
    bench.link.connected = True  # paho: connected, on_connected not called yet
    agent.tick()
    assert bench.link.heartbeats() == []
    bench.link.handlers.on_connected(False)
    agent.tick()
    assert bench.link.on("status")[0] is bench.link.sent[0] and len(bench.link.heartbeats()) == 1


def test_an_agent_started_again_in_the_same_process_sends_nothing_before_its_replay(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    agent = bench.start(door_device(tmp_path / "state"))
    bench.settle(agent)
    close_door(agent)
    bench.settle(agent)  # seq 1-4 sent, not acknowledged
    agent.stop()
    bench.connect_on_start = False
    agent.start()
    bench.link.clear()
    agent.pin_for("occupancy").drive_high()
    bench.settle(agent)  # seq 5 numbered
    bench.link.connected = True  # paho: connected, on_connected not called yet
    agent.tick()
    assert bench.link.events() == [] and bench.link.heartbeats() == []


def test_an_ack_removes_the_events_it_covers_and_a_reconnect_resends_only_the_rest(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    agent = started_door()
    close_door(agent)
    bench.settle(agent)
    assert agent.queued == 4

    bench.link.deliver(ACK, {"v": 1, "epoch": 0, "seq": 3})
    assert agent.queued == 1
    bench.link.clear()
    bench.link.drop()
    bench.link.connect()
    assert [e.seq for e in bench.link.events()] == [4]

    bench.link.deliver(ACK, {"v": 1, "epoch": 0, "seq": 4})
    assert agent.queued == 0
    bench.link.clear()
    bench.link.drop()
    bench.link.connect()
    assert bench.link.events() == []


def test_seq_continues_after_a_restart_and_the_outbox_resends_what_the_hub_has_not_acked(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    config = door_device(tmp_path)
    first = bench.start(config)
    bench.settle(first)
    first.pin_for("door").drive_low()
    bench.settle(first)
    bench.links[0].deliver(ACK, {"v": 1, "epoch": 0, "seq": 2})
    first.stop()

    second = bench.start(config)
    assert (second.epoch, second.last_seq, second.queued) == (0, 4, 2)
    assert [(e.seq, e.kind, e.value) for e in bench.link.events()] == [
        (3, "occupancy", "vacant"),
        (4, "door", "closed"),
    ]
    second.pin_for("door").drive_high()
    bench.settle(second)
    assert [(e.seq, e.value) for e in bench.link.events()[2:]] == [(5, "open")]
    assert bench.link.statuses()[0].last_seq == 4


def test_an_ack_from_an_older_epoch_covers_nothing_of_the_new_one(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    config = door_device(tmp_path)
    agent = bench.start(config)
    bench.settle(agent)
    agent.stop()
    assert reset_epoch(config) == 1

    agent = bench.start(config)
    agent.pin_for("door").drive_low()
    bench.settle(agent)
    # The old epoch's events still wait and go first; the new epoch starts at seq 1.
    assert [(e.epoch, e.seq) for e in bench.link.events()] == [(0, 1), (0, 2), (0, 3), (1, 1)]
    bench.link.deliver(ACK, {"v": 1, "epoch": 0, "seq": 3})
    assert agent.queued == 1
    assert (agent.epoch, agent.last_seq) == (1, 1)


def test_an_ack_beyond_the_store_means_the_store_was_lost_so_waiting_events_move_to_a_new_epoch(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    agent = bench.start(door_device(tmp_path / "new-sd-card"))
    bench.settle(agent)
    assert [(e.epoch, e.seq) for e in bench.link.events()] == [(0, 1), (0, 2), (0, 3)]
    bench.link.clear()

    # The hub had stored up to seq 500 from this device before its SD card was replaced.
    bench.link.deliver(ACK, {"v": 1, "epoch": 0, "seq": 500})
    assert (agent.epoch, agent.last_seq, agent.queued) == (1, 3, 3)
    events = bench.link.events()
    assert [(e.epoch, e.seq, e.kind) for e in events] == [(1, 1, "door"), (1, 2, "lock"), (1, 3, "occupancy")]
    assert events[0].id == "calm-1-door:1:1"

    close_door(agent)
    bench.settle(agent)
    assert (bench.link.events()[-1].epoch, bench.link.events()[-1].seq) == (1, 4)


def ack(epoch: int, seq: int) -> bytes:
    return json.dumps({"v": 1, "epoch": epoch, "seq": seq}).encode()


def test_a_new_store_that_numbered_past_the_hubs_last_seq_offline_moves_past_the_retained_ack_first(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """A replaced SD card: the new store starts at epoch 0 and numbers its start-up readings (0,1..3)
    while offline, but the hub has stored (0,2) from the old card, and a retained ack says so. Sent as
    they are, (0,1) and (0,2) would be dropped as duplicates and the ack (0,2) would then cover them:
    lost. The new store sends nothing until the connection has shown it the hub's retained ack."""
    # Given the hub's retained ack of the old card's events, and a new card that starts offline
    bench.retained[ACK] = ack(0, 2)
    bench.connect_on_start = False
    agent = bench.start(door_device(tmp_path / "new-sd-card"))
    bench.settle(agent)
    assert (agent.epoch, agent.last_seq) == (0, 3)
    # When it connects (the broker sends the retained ack, then the copy of the agent's status)
    bench.link.connect()
    # Then its events went out in the next epoch, all three, once each, and none in epoch 0
    events = bench.link.events()
    assert [(e.epoch, e.seq, e.kind) for e in events] == [(1, 1, "door"), (1, 2, "lock"), (1, 3, "occupancy")]
    assert events[0].id == "calm-1-door:1:1"
    # And the hub's acks of them work as ever
    bench.link.deliver(ACK, ack(1, 3))
    assert agent.queued == 0


def test_a_new_device_the_hub_never_stored_anything_of_sends_once_its_own_status_comes_back(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """No retained ack at all (a new device): the copy of the status published after subscribing comes
    after any retained message, so once it is back there is none, and the events go in epoch 0."""
    # Given a new store on a broker that does not send its messages back at once
    bench.echo = False
    agent = bench.start(door_device(tmp_path / "state"))
    bench.settle(agent)  # a heartbeat is due from the connect on
    # Then nothing but its status went out: no event, no heartbeat
    assert [m.topic for m in bench.link.sent] == [STATUS]
    # When the broker delivers an older retained status of the device (its Last Will), nothing changes
    bench.link.deliver(STATUS, {"v": 1, "online": False})
    agent.tick()
    assert bench.link.events() == [] and bench.link.heartbeats() == []
    # When the copy of this connection's status arrives
    bench.link.deliver(STATUS, bench.link.sent[0].payload)
    # Then the events go, in epoch 0, and the heartbeat follows at the next tick
    assert [(e.epoch, e.seq) for e in bench.link.events()] == [(0, 1), (0, 2), (0, 3)]
    agent.tick()
    assert len(bench.link.heartbeats()) == 1


def test_every_ack_before_the_status_comes_back_counts_and_the_store_moves_past_the_highest(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The device's persistent session may hold acks published while it was away, before the retained
    one: the store stays unconfirmed, moving past each that names its epoch or later, until the copy of
    its status says the retained messages are through."""
    bench.echo = False
    agent = bench.start(door_device(tmp_path / "state"))
    bench.settle(agent)
    bench.link.deliver(ACK, ack(0, 5))  # queued for the session
    assert (agent.epoch, agent.last_seq, agent.queued) == (1, 3, 3)
    bench.link.deliver(ACK, ack(1, 7))  # the retained one: the old card had moved to epoch 1 since
    assert (agent.epoch, agent.last_seq, agent.queued) == (2, 3, 3)
    assert bench.link.events() == []
    bench.link.deliver(STATUS, bench.link.on("status")[-1].payload)
    assert [(e.epoch, e.seq) for e in bench.link.events()] == [(2, 1), (2, 2), (2, 3)]
    bench.link.deliver(ACK, ack(1, 7))  # a stale ack from after that changes nothing
    assert (agent.epoch, agent.last_seq, agent.queued) == (2, 3, 3)


def test_a_new_store_stays_unconfirmed_across_a_restart_until_a_connection_has_shown_it_the_hubs_ack(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    config = door_device(tmp_path / "state")
    bench.echo = False
    agent = bench.start(config)
    bench.settle(agent)
    agent.stop()  # connected, but its status never came back

    bench.echo = True
    bench.retained[ACK] = ack(0, 9)
    bench.start(config)
    assert [(e.epoch, e.seq) for e in bench.link.events()] == [(1, 1), (1, 2), (1, 3)]


def test_a_new_store_whose_status_never_comes_back_sends_after_the_timeout_with_a_warning(
    bench: Bench, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bench.echo = False
    agent = bench.start(door_device(tmp_path / "state"))
    bench.settle(agent)
    clock.advance(seconds=CONFIRM_TIMEOUT_S - 1)
    agent.tick()
    assert bench.link.events() == []
    clock.advance(seconds=1)
    agent.tick()
    assert [(e.epoch, e.seq) for e in bench.link.events()] == [(0, 1), (0, 2), (0, 3)]
    assert "has not sent back this device's status" in caplog.text
    # Confirmed for good: after a reconnect, it replays at once
    bench.link.drop()
    bench.link.clear()
    bench.link.connect()
    assert [(e.epoch, e.seq) for e in bench.link.events()] == [(0, 1), (0, 2), (0, 3)]


def test_after_reset_epoch_the_store_looks_at_the_hubs_ack_again_and_its_older_events_are_acked_as_ever(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """`reset-epoch` says the store was lost: the hub may already have numbers of the new epoch too
    (a store lost twice)."""
    # Given a store that sent (0,1..3), then moved to epoch 1 by `reset-epoch`, and numbered (1,1)
    config = door_device(tmp_path / "state")
    agent = bench.start(config)
    bench.settle(agent)
    agent.stop()
    assert reset_epoch(config) == 1
    bench.echo = False
    agent = bench.start(config)
    close_door(agent)
    bench.settle(agent)
    # When an ack of its own epoch-0 events arrives, it covers them as ever
    bench.link.deliver(ACK, ack(0, 2))
    assert agent.queued == 2
    # When the hub's ack names epoch 1 (a store before this one had reached it), the store moves past
    bench.link.deliver(ACK, ack(1, 4))
    assert bench.link.events() == []
    bench.link.deliver(STATUS, bench.link.on("status")[-1].payload)
    # Then what waited goes out in epoch 2 (the hub would have dropped (0,3) too, below its (1,4))
    assert [(e.epoch, e.seq, e.kind, e.value) for e in bench.link.events()] == [
        (2, 1, "occupancy", "vacant"),
        (2, 2, "door", "closed"),
    ]


def test_stop_publishes_a_retained_offline_status(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    agent = started_door()
    agent.stop()
    [message] = bench.link.on("status")
    assert message.retain
    payload = json.loads(message.payload)
    assert payload["online"] is False
    assert payload["ts"] == format_ts(clock.now().wall)
    assert bench.link.stopped
    agent.stop()  # stopping twice is harmless


# ------------------------------------------------------------------------------- messages from the hub


def test_config_indicator_and_hub_status_are_kept_and_bad_messages_counted(
    bench: Bench, clock: FakeClock, started_door: Callable[..., EdgeAgent]
) -> None:
    agent = started_door()
    link = bench.link
    link.deliver(
        "seclusion/v1/demo-school/calm-1/calm-1-door/config",
        {"v": 1, "supervision": "observer", "lapse_grace_s": 15, "checkin_interval_s": 300, "heartbeat_s": 5},
    )
    link.deliver(
        "seclusion/v1/demo-school/calm-1/indicator",
        {"v": 1, "level": "warning", "reason": "duration_warning", "ts": "2026-11-21T10:00:01.000Z"},
    )
    link.deliver("seclusion/v1/_hub/status", {"v": 1, "online": False})
    assert agent.policy is not None and agent.policy.lapse_grace_s == 15
    assert agent.indicator is not None and agent.indicator.level == "warning"
    assert agent.hub_status is not None and agent.hub_status.online is False

    link.deliver(ACK, b"not json")
    link.deliver(ACK, {"v": 1, "epoch": "0", "seq": 1})
    link.deliver("seclusion/v1/demo-school/calm-1/indicator", {"v": 1, "level": "panic", "ts": "now"})
    link.deliver(ACK, b"")  # a retained message being cleared is not an error
    assert agent.rejected_messages == 3
    assert agent.queued == 3

    # The hub's heartbeat interval wins: it declares the device offline after three missed ones.
    bench.settle(agent, 5000)
    assert len(link.heartbeats()) == 1


def test_simulate_drives_mock_pins_by_reading_whatever_the_wiring(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    agent = bench.start(door_device(tmp_path))  # door: pull-up, active low; occupancy: pull-down, active high
    bench.settle(agent)
    agent.simulate("door", "closed")
    agent.simulate("occupancy", "occupied")
    assert (agent.pin_for("door").state, agent.pin_for("occupancy").state) == (False, True)
    bench.settle(agent)
    assert agent.readings() == {"door": "closed", "lock": "released", "occupancy": "occupied"}
    agent.simulate("door", "open")
    bench.settle(agent)
    assert agent.readings()["door"] == "open"
    with pytest.raises(ValueError, match="'present' is not a reading"):
        agent.simulate("door", "present")


def test_pin_for_names_a_missing_sensor(bench: Bench, started_door: Callable[..., EdgeAgent]) -> None:
    agent = started_door()
    with pytest.raises(KeyError, match="no started observer sensor"):
        agent.pin_for("observer")


def test_a_pin_that_cannot_be_used_is_a_wiring_error_naming_the_key(bench: Bench, tmp_path: Path) -> None:
    from seclusion_edge import WiringError

    # GPIO2 (I2C SDA) has a fixed pull-up on a Raspberry Pi: it cannot be pulled down.
    config = panel_device(
        tmp_path,
        sensors=[
            {"kind": "observer", "pin": 2, "pull": "down", "active": "high", "active_value": "present"},
        ],
    )
    with pytest.raises(WiringError, match=r"sensors\.0\.pin: cannot use pin 2"):
        bench.start(config)


def test_a_broker_link_that_cannot_be_set_up_is_a_link_error_and_start_releases_the_outbox_and_pins(
    bench: Bench, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CA file that was readable when the device file was loaded and is gone at the start (paho's TLS
    setup raised a bare FileNotFoundError, and the outbox and the pins stayed open)."""
    from gpiozero.pins.mock import MockFactory

    from seclusion_edge import LinkError, load_config
    from seclusion_edge.outbox import Outbox

    ca = tmp_path / "school-ca.pem"
    ca.write_text(TEST_CA_PEM)
    device = tmp_path / "calm-1-door.yaml"
    device.write_text(
        "site: demo-school\nroom: calm-1\ndevice: calm-1-door\n"
        "mqtt: {url: 'mqtts://127.0.0.1:8883', ca_file: school-ca.pem}\nstate_dir: state\n"
        "sensors:\n  - {kind: door, pin: 17, pull: up, active: low, active_value: closed}\n"
        "outputs: {buzzer: 18}\n"
    )
    config = load_config(device)
    ca.unlink()
    closed: list[Path] = []
    close = Outbox.close

    def close_and_note(outbox: Outbox) -> None:
        closed.append(outbox.path)
        close(outbox)

    monkeypatch.setattr(Outbox, "close", close_and_note)
    pins = MockFactory()
    agent = EdgeAgent(config, pin_factory=pins, clock=clock, tick_interval_s=None)  # paho's publisher
    with pytest.raises(LinkError) as error:
        agent.start()
    assert str(error.value) == (
        f"{device}: mqtt.ca_file: cannot set up TLS with the CA file {ca.resolve()}: "
        "No such file or directory"
    )
    assert closed == [config.state_dir / "outbox.sqlite3"]
    # The pins are free again: the same pins of the same factory can be set up.
    again = bench.start(door_device(config.state_dir, outputs={"buzzer": 18}), pin_factory=pins)
    assert again.readings() == {} and again.pin_for("buzzer") is not None
