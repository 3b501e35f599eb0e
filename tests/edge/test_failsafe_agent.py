"""The edge fail-safe in the agent, on mock pins with a fake clock and an in-memory link: who drives the
buzzer and LED, and when. No sleeps, no broker."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from seclusion_contract import format_ts
from seclusion_edge import EdgeAgent, EdgeConfig, FakeClock, WiringError
from seclusion_edge.failsafe import Alarm
from tests.edge.conftest import SETTLE_MS, Bench, FakeLink, door_device, panel_device

ROOM = "seclusion/v1/demo-school/calm-1"
DOOR_EVENT = f"{ROOM}/calm-1-door/event"
PANEL_EVENT = f"{ROOM}/calm-1-panel/event"
INDICATOR = f"{ROOM}/indicator"
HUB_STATUS = "seclusion/v1/_hub/status"
GRACE_S = 15
NUMBERS: dict[str, Any] = {
    "v": 1,
    "supervision": "observer",
    "lapse_grace_s": GRACE_S,
    "checkin_interval_s": 300,
    "ts": "2026-11-21T09:00:00.000Z",
}
PANEL_OUTPUTS = {"buzzer": 13, "led": 26}
DOOR_OUTPUTS = {"buzzer": 18, "led": 23}


def config_topic(device: str) -> str:
    return f"{ROOM}/{device}/config"


class DoorOverMqtt:
    """The room's door device as another agent hears it: events on the room's topics."""

    def __init__(self, link: FakeLink, clock: FakeClock) -> None:
        self.link = link
        self.clock = clock
        self.seq = 0

    def reads(self, kind: str, value: str, ts: dt.datetime | None = None, seq: int | None = None) -> None:
        """The door device's next event, or (`seq`) one it sent before, delivered again."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        when = self.clock.now().wall if ts is None else ts
        self.link.deliver(
            DOOR_EVENT,
            {
                "v": 1,
                "id": f"calm-1-door:0:{seq}",
                "seq": seq,
                "epoch": 0,
                "ts": format_ts(when),
                "kind": kind,
                "value": value,
            },
        )


def indicator(level: str, acknowledged: bool = False, reason: str = "supervision_lapse") -> dict[str, Any]:
    return {
        "v": 1,
        "level": level,
        "reason": reason,
        "ts": "2026-11-21T10:00:00.000Z",
        "acknowledged": acknowledged,
    }


def sounding(agent: EdgeAgent) -> bool:
    return bool(agent.pin_for("buzzer").state)


def driver(agent: EdgeAgent) -> str:
    return agent.alarm.driver


def lit(agent: EdgeAgent) -> bool:
    return bool(agent.pin_for("led").state)


def start_panel(bench: Bench, tmp_path: Path, **outputs: Any) -> EdgeAgent:
    """calm-1-panel with its buzzer and LED, started: its observer reads absent, the numbers arrived."""
    agent = bench.start(panel_device(tmp_path / "panel", outputs={**PANEL_OUTPUTS, **outputs}))
    bench.settle(agent)
    bench.link.deliver(config_topic("calm-1-panel"), NUMBERS)
    return agent


def hub_online(link: FakeLink) -> None:
    link.deliver(HUB_STATUS, {"v": 1, "online": True, "ts": "2026-11-21T09:59:00.000Z"})


# ------------------------------------------------------------------------------ the room's last state


def test_the_panel_follows_the_door_devices_readings_from_the_rooms_event_topics(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    panel = start_panel(bench, tmp_path)
    door = DoorOverMqtt(bench.link, clock)
    assert panel.room_state() == {"observer": "absent"}
    assert not panel.episode_open

    door.reads("occupancy", "occupied")
    door.reads("door", "closed")
    assert panel.room_state() == {"observer": "absent", "occupancy": "occupied", "door": "closed"}
    assert panel.episode_open

    # A replayed older event changes nothing: the door device's later reading (by its seq) wins.
    door.reads("door", "open", ts=clock.now().wall - dt.timedelta(minutes=5), seq=1)
    assert panel.room_state()["door"] == "closed"
    assert panel.episode_open


def test_a_room_devices_next_reading_wins_after_its_clock_was_set_back(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The door device's clock ran 2 min fast and NTP set it right between two of its events: the
    panel takes them in the device's own order (its seq), as the hub does (semantics 1)."""
    panel = start_panel(bench, tmp_path)
    door = DoorOverMqtt(bench.link, clock)
    ahead = dt.timedelta(seconds=120)
    door.reads("occupancy", "occupied", ts=clock.now().wall + ahead)
    door.reads("door", "open", ts=clock.now().wall + ahead)
    clock.advance(seconds=10)
    door.reads("door", "closed", ts=clock.now().wall)  # seq 3, dated before the opening
    assert panel.room_state()["door"] == "closed" and panel.episode_open


def test_another_devices_newer_reading_wins_after_this_agents_clock_steps_forward(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The panel's NTP steps its clock 60 s forward between two readings of the door device (whose clock
    is 3 s behind): placed on the panel's monotonic clock by their age, the newer would land before the
    older; one device's readings are taken in its own order (its `ts`)."""
    panel = start_panel(bench, tmp_path)
    door = DoorOverMqtt(bench.link, clock)
    behind = dt.timedelta(seconds=3)
    door.reads("occupancy", "occupied", ts=clock.now().wall - behind)
    opened = clock.now().wall - behind
    door.reads("door", "open", ts=opened)
    clock.jump_wall(dt.timedelta(seconds=60))
    clock.advance(seconds=10)
    door.reads("door", "closed", ts=opened + dt.timedelta(seconds=10))
    assert panel.room_state()["door"] == "closed" and panel.episode_open


def door_heartbeat(link: FakeLink, ts: dt.datetime) -> None:
    link.deliver(
        f"{ROOM}/calm-1-door/heartbeat",
        {"v": 1, "ts": format_ts(ts), "epoch": 0, "last_seq": 0, "uptime_s": 60},
    )


def test_a_replayed_close_from_a_door_device_with_a_right_clock_is_timed_from_the_close(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The heartbeats' clock samples do not make old events new: the door device (its clock right,
    heard in its heartbeats) replays, after an outage, a close on an occupied room 20 minutes ago. The
    panel times it from then: the duration limit (600 s) is long past, and sounds at once."""
    panel = start_panel(bench, tmp_path)
    bench.link.deliver(
        config_topic("calm-1-panel"), {**NUMBERS, "lapse_grace_s": 100_000, "max_duration_s": 600}
    )
    panel.simulate("observer", "present")
    bench.settle(panel)
    door_heartbeat(bench.link, clock.now().wall)
    clock.advance(seconds=10)
    door_heartbeat(bench.link, clock.now().wall)
    door = DoorOverMqtt(bench.link, clock)
    closed = clock.now().wall - dt.timedelta(minutes=20)
    door.reads("occupancy", "occupied", ts=closed)
    door.reads("door", "closed", ts=closed)
    bench.settle(panel)
    assert panel.local_alarm.reason == "duration_limit"


def test_a_lagging_door_clock_measured_by_its_heartbeats_survives_the_panels_own_ntp_step(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The door device's clock is an hour behind (heard in its heartbeat); then NTP steps the panel's
    own clock an hour forward. Placed by the door's heartbeats on the panel's monotonic clock, a close
    the door sends now is new: the 600 s limit is not due, and sounds 600 s later."""
    panel = start_panel(bench, tmp_path)
    bench.link.deliver(
        config_topic("calm-1-panel"), {**NUMBERS, "lapse_grace_s": 100_000, "max_duration_s": 600}
    )
    panel.simulate("observer", "present")
    bench.settle(panel)
    lag = dt.timedelta(hours=1)
    door_heartbeat(bench.link, clock.now().wall - lag)
    clock.jump_wall(dt.timedelta(hours=1))
    clock.advance(seconds=5)
    door = DoorOverMqtt(bench.link, clock)
    door.reads("occupancy", "occupied", ts=clock.now().wall - 2 * lag)
    door.reads("door", "closed", ts=clock.now().wall - 2 * lag)
    bench.settle(panel)
    assert panel.episode_open and panel.local_alarm.level == "none"
    bench.settle(panel, 600_000)
    assert panel.local_alarm.reason == "duration_limit"


def test_a_malformed_heartbeat_of_the_room_is_counted_and_samples_no_clock(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    panel = start_panel(bench, tmp_path)
    bench.link.deliver(f"{ROOM}/calm-1-door/heartbeat", b'{"v":1,"ts":"not a time"}')
    assert panel.ignored_room_events == 1
    assert panel._peer_clocks == {}
    assert bench.link.heartbeats()  # its own heartbeats, echoed by the link: no sample of its own clock
    assert "calm-1-panel" not in panel._peer_clocks


def test_its_own_echoed_events_and_malformed_ones_are_ignored_without_harm(
    bench: Bench, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    panel = start_panel(bench, tmp_path)
    later = format_ts(clock.now().wall + dt.timedelta(seconds=1))
    # Our own event, as the broker echoes it: the pins, not the echo, say what the observer is.
    bench.link.deliver(
        PANEL_EVENT,
        {"v": 1, "id": "calm-1-panel:0:9", "seq": 9, "ts": later, "kind": "observer", "value": "present"},
    )
    caplog.set_level("DEBUG", logger="seclusion_edge")
    bench.link.deliver(DOOR_EVENT, b"not json")
    bench.link.deliver(
        DOOR_EVENT,
        {
            "v": 1,
            "id": "x",
            "seq": 1,
            "ts": later,
            "kind": "check",
            "value": "ok",
            "staff": "badge-0042",
            "epoch": "0",
        },
    )
    bench.link.deliver(
        DOOR_EVENT, {"v": 1, "id": "x", "seq": 2, "ts": later, "kind": "door", "value": "ajar"}
    )
    assert panel.room_state() == {"observer": "absent"}
    assert panel.ignored_room_events == 3
    assert panel.rejected_messages == 0  # the hub dead-letters other devices' mistakes; not ours to count
    assert "badge-0042" not in caplog.text and "ajar" not in caplog.text
    assert "ignored an event from calm-1-door" in caplog.text
    panel.tick()  # and the agent carries on


# -------------------------------------------------------------------------- the broker is unreachable


def test_with_the_broker_unreachable_the_buzzer_sounds_past_the_grace_and_stops_when_the_observer_returns(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    # Given an episode the panel heard about from the door device, with the hub online.
    panel = start_panel(bench, tmp_path)
    hub_online(bench.link)
    door = DoorOverMqtt(bench.link, clock)
    door.reads("occupancy", "occupied")
    door.reads("door", "closed")
    panel.tick()
    assert panel.alarm.driver == "hub"

    # When the broker goes away and nobody comes to the panel,
    bench.link.drop()
    bench.settle(panel, GRACE_S * 1000 - 1000)
    # then nothing sounds before the grace runs out,
    assert panel.alarm == Alarm("none", "", "local", led=False, buzzer=False)
    assert not sounding(panel) and not lit(panel)
    # and the buzzer and LED come on once it has.
    bench.settle(panel, 2000)
    assert panel.alarm == Alarm("critical", "supervision_lapse", "local", led=True, buzzer=True)
    assert sounding(panel) and lit(panel)

    # When the observer comes back, it stops.
    panel.simulate("observer", "present")
    bench.settle(panel)
    assert panel.local_alarm.level == "none"
    assert not sounding(panel) and not lit(panel)


def test_a_device_that_never_reached_the_broker_alarms_on_its_own_readings_with_the_numbers_it_kept(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    # A first run heard the room's numbers; then the Pi restarts with the broker down.
    config = door_device(tmp_path / "door", outputs=DOOR_OUTPUTS)
    first = bench.start(config)
    bench.link.deliver(config_topic("calm-1-door"), NUMBERS)
    first.stop()
    bench.connect_on_start = False
    door = bench.start(config)
    assert door.policy is not None and door.policy.lapse_grace_s == GRACE_S

    # Given a child inside and the door shut,
    door.simulate("occupancy", "occupied")
    door.simulate("door", "closed")
    bench.settle(door)
    assert door.episode_open and not door.is_connected
    # when nobody is seen at the panel for the grace, then the door device's own buzzer sounds,
    bench.settle(door, GRACE_S * 1000 - 1000)
    assert not sounding(door)
    bench.settle(door, 2000)
    assert sounding(door) and lit(door)
    assert door.alarm.reason == "supervision_lapse"
    # and the door opening silences it.
    door.simulate("door", "open")
    bench.settle(door)
    assert not door.episode_open
    assert not sounding(door) and not lit(door)


def test_the_devices_own_readings_keep_their_order_when_its_wall_clock_is_set_back(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """Its clock was 10 minutes fast and NTP set it back: the door closing on an occupied room after that
    is still news to the fail-safe (a device's readings come in its own order, semantics 1), so the
    local alarm sounds past the grace with the broker unreachable."""
    door = bench.start(door_device(tmp_path / "door", outputs=DOOR_OUTPUTS))
    bench.settle(door)  # start-up: door open, released, vacant
    bench.link.deliver(config_topic("calm-1-door"), NUMBERS)
    bench.link.drop()
    clock.jump_wall(-dt.timedelta(minutes=10))
    door.simulate("occupancy", "occupied")
    door.simulate("door", "closed")
    bench.settle(door)
    assert door.room_state()["door"] == "closed" and door.episode_open
    bench.settle(door, GRACE_S * 1000 + 1000)
    assert door.local_alarm.level == "critical"


def _stopped_mid_episode(bench: Bench, tmp_path: Path, ms: int) -> EdgeConfig:
    """A door device that heard the room's numbers (a 600 s limit, no lapse within the test), saw a child
    shut in, lost the broker and stopped `ms` into the episode, with no alarm yet; the next start finds
    the broker still down. Returns its device file, for that start."""
    config = door_device(tmp_path / "door", outputs=DOOR_OUTPUTS)
    first = bench.start(config)
    bench.settle(first)
    numbers = {**NUMBERS, "lapse_grace_s": 100_000, "max_duration_s": 600}
    bench.link.deliver(config_topic("calm-1-door"), numbers)
    first.simulate("occupancy", "occupied")
    first.simulate("door", "closed")
    bench.settle(first)
    bench.link.drop()
    assert first.episode_open
    bench.settle(first, ms)
    assert first.episode_open and first.local_alarm.level == "none"
    first.stop()
    bench.connect_on_start = False
    return config


def test_a_restart_during_an_episode_does_not_set_the_local_duration_back(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The agent restarts 500 s into an episode with the broker still down: its start-up readings are
    what it last reported (not sent again), so the local timers go on from the door's close and the
    duration limit (600 s) sounds 600 s after it, not 600 s after the restart."""
    config = _stopped_mid_episode(bench, tmp_path, 500_000)
    second = bench.start(config)  # the numbers come from the file the first one kept
    second.simulate("occupancy", "occupied")
    second.simulate("door", "closed")
    bench.settle(second)
    assert second.episode_open and second.local_alarm.level == "none"
    bench.settle(second, 100_000)  # 600 s after the close, give or take the settle times
    assert second.local_alarm.reason == "duration_limit"


def test_after_a_reboot_mid_episode_the_kept_readings_are_timed_by_the_wall_clock(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """Within one boot the kept readings are placed by their monotonic time (an NTP step does not age
    them: test_pi_review); after a reboot that clock started again, and their `ts` against the wall
    clock is all there is: the duration limit (600 s) still sounds 600 s after the close."""
    config = _stopped_mid_episode(bench, tmp_path, 500_000)
    rebooted = FakeClock(start=clock.now().wall + dt.timedelta(seconds=30), mono_ms=20_000)
    second = EdgeAgent(
        config,
        pin_factory=MockFactory(),
        clock=rebooted,
        publisher_factory=bench.factory,
        tick_interval_s=None,
        boot_id="boot-2",
    )
    bench.agents.append(second)
    second.start()
    second.simulate("occupancy", "occupied")
    second.simulate("door", "closed")
    rebooted.advance(ms=SETTLE_MS)
    second.tick()
    assert second.episode_open and second.local_alarm.level == "none"  # 530 s into the episode
    rebooted.advance(seconds=75)
    second.tick()
    assert second.local_alarm.reason == "duration_limit"


def test_an_agent_restarted_mid_episode_with_a_still_child_keeps_timing_the_episode(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """A documented limit, fixed: the agent restarts 300 s into an episode with the broker down, and the
    child inside is now still, so the PIR reads `vacant` at start-up. From its pins alone the agent saw
    a closed door on an empty room: no episode, and no local alarm ever. It now starts from the room as
    it last numbered it (door closed, occupied, each from when it began), and `vacant` while the door
    stays closed ends nothing (semantics 2.3): the duration limit sounds 600 s after the close."""
    config = _stopped_mid_episode(bench, tmp_path, 300_000)
    second = bench.start(config)  # fresh mock pins: the PIR reads vacant (a still child)
    second.simulate("door", "closed")
    bench.settle(second)
    assert second.room_state()["occupancy"] == "vacant"
    assert second.episode_open, "the episode before the restart is not over: the door never opened"
    assert second.local_alarm.level == "none"
    bench.settle(second, 300_000)
    assert second.local_alarm.reason == "duration_limit"
    # And the door opening ends it, as ever
    second.simulate("door", "open")
    bench.settle(second)
    assert not second.episode_open and second.local_alarm.level == "none"


def test_only_the_first_reading_after_a_restart_carries_on_from_before_it(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The outbox's last door reading is `closed`; the agent starts with the door open and the door shuts
    before the first tick: both readings come out of that tick, and the closing (a new one, not the one
    from before the restart) is what the fail-safe follows."""
    config = door_device(tmp_path / "door")
    first = bench.start(config)
    first.simulate("door", "closed")
    bench.settle(first)
    first.stop()
    clock.advance(seconds=3600)
    second = bench.start(config)  # fresh mock pins: the door reads open at start
    second.simulate("occupancy", "occupied")
    clock.advance(ms=SETTLE_MS + 50)  # the start-up reading has held, the ticker is held up
    second.simulate("door", "closed")
    clock.advance(ms=SETTLE_MS + 50)
    second.tick()
    assert [e.value for e in bench.link.events() if e.kind == "door"][-2:] == ["open", "closed"]
    assert second.room_state()["door"] == "closed" and second.episode_open


def test_the_alarm_does_not_wait_for_the_sd_card(
    bench: Bench, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    door = bench.start(door_device(tmp_path, outputs=DOOR_OUTPUTS))
    bench.settle(door)
    bench.link.deliver(config_topic("calm-1-door"), NUMBERS)
    bench.link.drop()
    outbox = door._outbox
    assert outbox is not None

    def full_card(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(outbox, "append", full_card)
    door.simulate("occupancy", "occupied")
    door.simulate("door", "closed")
    clock.advance(ms=SETTLE_MS + GRACE_S * 1000 + 1000)
    door.tick()  # the failure is logged, not raised
    assert sounding(door)


def test_a_duration_warning_lights_only_the_led(bench: Bench, clock: FakeClock, tmp_path: Path) -> None:
    panel = start_panel(bench, tmp_path)
    bench.link.deliver(
        config_topic("calm-1-panel"),
        {**NUMBERS, "duration_alerts": [{"after_s": 600, "kind": "duration_warning", "tier": "room"}]},
    )
    bench.link.drop()
    door = DoorOverMqtt(bench.link, clock)
    panel.simulate("observer", "present")
    bench.settle(panel)
    door.reads("occupancy", "occupied")
    door.reads("door", "closed")
    bench.settle(panel, 599_000)
    assert not lit(panel)
    bench.settle(panel, 1000)
    assert lit(panel) and not sounding(panel)
    assert panel.alarm.reason == "duration_warning"


# --------------------------------------------------------------------------------- the hub is online


def test_while_the_hub_is_online_its_indicator_drives_the_buzzer_and_led_not_the_local_timers(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    panel = start_panel(bench, tmp_path)
    hub_online(bench.link)
    door = DoorOverMqtt(bench.link, clock)
    door.reads("occupancy", "occupied")
    door.reads("door", "closed")
    bench.settle(panel, GRACE_S * 1000 + 1000)
    assert panel.local_alarm.level == "critical"  # the local timers see the lapse too,
    assert panel.alarm.driver == "hub" and not sounding(panel)  # but the hub has not said so

    for level, acknowledged, led, buzzer in [
        ("critical", False, True, True),
        ("critical", True, True, False),  # acknowledged: the buzzer falls silent, the LED stays
        ("warning", False, True, False),
        ("info", False, False, False),
        ("none", False, False, False),
    ]:
        bench.link.deliver(INDICATOR, indicator(level, acknowledged))
        panel.tick()
        assert (lit(panel), sounding(panel)) == (led, buzzer), (level, acknowledged)
        assert (panel.alarm.driver, panel.alarm.level) == ("hub", level)


def test_the_hubs_last_will_hands_the_outputs_to_the_local_fail_safe_while_the_broker_is_up(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    panel = start_panel(bench, tmp_path)
    hub_online(bench.link)
    bench.link.deliver(INDICATOR, indicator("none", reason=""))
    door = DoorOverMqtt(bench.link, clock)
    door.reads("occupancy", "occupied")
    door.reads("door", "closed")
    bench.settle(panel, GRACE_S * 1000 + 1000)
    assert not sounding(panel)

    bench.link.deliver(HUB_STATUS, {"v": 1, "online": False})  # the hub's Last Will
    panel.tick()
    assert panel.is_connected
    assert (driver(panel), sounding(panel)) == ("local", True)

    hub_online(bench.link)
    panel.tick()
    assert (driver(panel), sounding(panel)) == ("hub", False)

    bench.link.deliver(HUB_STATUS, b"")  # the hub's retained status cleared: no hub known
    panel.tick()
    assert (driver(panel), sounding(panel)) == ("local", True)


def test_after_a_reconnect_the_hub_drives_again_only_once_its_status_has_come_again(
    bench: Bench, tmp_path: Path
) -> None:
    panel = start_panel(bench, tmp_path)
    assert not panel.hub_drives  # connected, but no word from the hub yet
    hub_online(bench.link)
    assert panel.hub_drives
    bench.link.drop()
    assert not panel.hub_drives
    bench.link.connect()
    assert not panel.hub_drives  # the online status from before the outage does not count
    hub_online(bench.link)
    assert panel.hub_drives


# ------------------------------------------------------------------------------------- the hardware


def test_a_tonal_buzzer_plays_a_tone_on_a_pwm_pin(bench: Bench, clock: FakeClock, tmp_path: Path) -> None:
    config = panel_device(tmp_path, outputs={**PANEL_OUTPUTS, "buzzer_type": "tonal"})
    panel = bench.start(config, pin_factory=MockFactory(pin_class=MockPWMPin))
    hub_online(bench.link)
    bench.link.deliver(INDICATOR, indicator("critical"))
    panel.tick()
    pin = panel.pin_for("buzzer")
    assert (pin.state, pin.frequency) == (0.5, 440.0)
    bench.link.deliver(INDICATOR, indicator("none"))
    panel.tick()
    assert not pin.state


def test_a_tonal_buzzer_on_a_pin_without_pwm_is_a_wiring_error(bench: Bench, tmp_path: Path) -> None:
    config = panel_device(tmp_path, outputs={**PANEL_OUTPUTS, "buzzer_type": "tonal"})
    with pytest.raises(WiringError, match=r"outputs\.buzzer: a tonal buzzer needs a PWM-capable pin"):
        bench.start(config)


def test_a_device_without_outputs_still_keeps_the_alarm_state(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    door = bench.start(door_device(tmp_path))
    bench.link.deliver(config_topic("calm-1-door"), NUMBERS)
    bench.link.drop()
    door.simulate("occupancy", "occupied")
    door.simulate("door", "closed")
    bench.settle(door, SETTLE_MS + GRACE_S * 1000 + 1000)
    assert door.alarm == Alarm("critical", "supervision_lapse", "local", led=True, buzzer=True)
    with pytest.raises(KeyError, match="no started buzzer output"):
        door.pin_for("buzzer")


def test_stopping_the_agent_silences_and_releases_the_outputs(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    factory = MockFactory()
    panel = bench.start(panel_device(tmp_path, outputs=PANEL_OUTPUTS), pin_factory=factory)
    hub_online(bench.link)
    bench.link.deliver(INDICATOR, indicator("critical"))
    panel.tick()
    assert factory.pin(13).state
    panel.stop()
    assert not factory.pin(13).state and not factory.pin(26).state
    assert panel.alarm.level == "none"
