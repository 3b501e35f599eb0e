"""A review of the edge fail-safe and of the hand-over between the hub's indicator and the local alarm.

Each test states one fault found, on mock pins with a fake clock and an in-memory link; each fails
against the code as reviewed and passes once the fault is fixed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from seclusion_contract import format_ts
from seclusion_edge import EdgeAgent, FakeClock
from tests.edge.conftest import Bench, FakeLink, door_device, panel_device

ROOM = "seclusion/v1/demo-school/calm-1"
DOOR_EVENT = f"{ROOM}/calm-1-door/event"
PANEL_EVENT = f"{ROOM}/calm-1-panel/event"
PANEL_STATUS = f"{ROOM}/calm-1-panel/status"
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


class OtherDevice:
    """Another device of the room as an agent hears it: its events on the room's event topic."""

    def __init__(self, device: str, link: FakeLink, clock: FakeClock) -> None:
        self.device = device
        self.link = link
        self.clock = clock
        self.seq = 0

    def reads(self, kind: str, value: str) -> None:
        self.seq += 1
        self.link.deliver(
            f"{ROOM}/{self.device}/event",
            {
                "v": 1,
                "id": f"{self.device}:0:{self.seq}",
                "seq": self.seq,
                "epoch": 0,
                "ts": format_ts(self.clock.now().wall),
                "kind": kind,
                "value": value,
            },
        )


def indicator(level: str, ts: dt.datetime, *, acknowledged: bool = False, reason: str = "") -> dict[str, Any]:
    return {"v": 1, "level": level, "reason": reason, "ts": format_ts(ts), "acknowledged": acknowledged}


def hub_status(online: bool, ts: dt.datetime | None = None) -> dict[str, Any]:
    return {"v": 1, "online": online} | ({} if ts is None else {"ts": format_ts(ts)})


def sounding(agent: EdgeAgent) -> bool:
    return bool(agent.pin_for("buzzer").state)


def start_panel(bench: Bench, tmp_path: Path) -> EdgeAgent:
    """calm-1-panel with its buzzer and LED, started: its observer reads absent, the numbers arrived."""
    agent = bench.start(panel_device(tmp_path / "panel", outputs=PANEL_OUTPUTS))
    bench.settle(agent)
    bench.link.deliver(config_topic("calm-1-panel"), NUMBERS)
    return agent


def lapse_sounding_with_the_hub_down(bench: Bench, clock: FakeClock, tmp_path: Path) -> EdgeAgent:
    """The hub was online with the room quiet (its indicator `info`: an episode began), then crashed (its
    Last Will, broker up); the observer is away, and the panel's own buzzer sounds the lapse."""
    panel = start_panel(bench, tmp_path)
    panel.simulate("observer", "present")
    bench.settle(panel)
    bench.link.deliver(HUB_STATUS, hub_status(True, clock.now().wall))
    door = OtherDevice("calm-1-door", bench.link, clock)
    door.reads("occupancy", "occupied")
    door.reads("door", "closed")
    bench.link.deliver(INDICATOR, indicator("info", clock.now().wall, reason="episode_started"))
    bench.settle(panel)
    assert panel.alarm.driver == "hub" and not sounding(panel)

    bench.link.deliver(HUB_STATUS, hub_status(False))  # the hub's Last Will
    panel.simulate("observer", "absent")
    bench.settle(panel, GRACE_S * 1000 + 5000)
    assert panel.alarm.driver == "local" and sounding(panel)
    return panel


# ------------------------------------------------------------------------------- the hand-over


def test_the_hub_coming_back_does_not_silence_a_sounding_lapse_with_its_indicator_from_before(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The hub restarts while the panel's own buzzer sounds a lapse. The hub says `online` on connecting
    (hub/mqtt.py `_on_connect`) and republishes each room's indicator as its store has it
    (`publish_configs`): from before the crash, `info`, since it has not yet taken the broker's backlog
    (the observer's `absent`) nor evaluated the room (semantics 4.6). The panel hands the outputs over
    on the status alone, and the buzzer falls silent while the child is still unwatched, until the hub
    has caught up and raises the lapse, late. The buzzer should stop when the condition ends or the
    hub's indicator has said so (acknowledged), not because the hub came back."""
    panel = lapse_sounding_with_the_hub_down(bench, clock, tmp_path)

    # The hub reconnects: its status, then its indicators as they were before the crash.
    bench.link.deliver(HUB_STATUS, hub_status(True, clock.now().wall))
    bench.link.deliver(INDICATOR, indicator("info", clock.now().wall, reason="episode_started"))
    bench.settle(panel)
    assert panel.local_alarm.level == "critical"  # nobody is at the panel yet
    assert sounding(panel), "the hub came back knowing nothing of the lapse, and the buzzer fell silent"

    # Once the hub has taken its backlog it raises the lapse (late); a person acknowledges it.
    bench.link.deliver(INDICATOR, indicator("critical", clock.now().wall, reason="supervision_lapse"))
    bench.settle(panel)
    assert panel.alarm.driver == "hub" and sounding(panel)
    bench.link.deliver(
        INDICATOR, indicator("critical", clock.now().wall, acknowledged=True, reason="supervision_lapse")
    )
    bench.settle(panel)
    assert not sounding(panel)


def test_an_acknowledgement_from_before_the_hubs_crash_does_not_silence_a_new_lapse(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """A first lapse was acknowledged (indicator `critical`, acknowledged), then the hub crashed. The
    observer came back and left again: a new lapse, sounded by the panel. When the hub comes back, its
    retained (and republished) indicator still carries the acknowledgement of the first lapse, and the
    panel takes it as silencing the second, which nobody has acknowledged."""
    panel = start_panel(bench, tmp_path)
    bench.link.deliver(HUB_STATUS, hub_status(True, clock.now().wall))
    door = OtherDevice("calm-1-door", bench.link, clock)
    door.reads("occupancy", "occupied")
    door.reads("door", "closed")
    bench.settle(panel, GRACE_S * 1000 + 5000)
    acked = indicator("critical", clock.now().wall, acknowledged=True, reason="supervision_lapse")
    bench.link.deliver(INDICATOR, acked)
    bench.settle(panel)
    assert panel.alarm.driver == "hub" and not sounding(panel)

    bench.link.deliver(HUB_STATUS, hub_status(False))  # the hub crashes
    panel.simulate("observer", "present")  # the first lapse ends
    bench.settle(panel, 5000)
    panel.simulate("observer", "absent")  # a second one begins
    bench.settle(panel, GRACE_S * 1000 + 5000)
    assert panel.alarm.driver == "local" and sounding(panel)

    bench.link.deliver(HUB_STATUS, hub_status(True, clock.now().wall))
    bench.link.deliver(INDICATOR, {**acked, "ts": format_ts(clock.now().wall)})  # as its store has it
    bench.settle(panel)
    assert panel.local_alarm.level == "critical"
    assert sounding(panel), "an acknowledgement of the first lapse silenced the second"


# ------------------------------------------------------------- a room on two devices, each alone


def test_the_door_device_cut_off_from_the_panel_does_not_keep_trusting_an_observer_it_cannot_see(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The door device heard the panel say `present`, then the broker went down. The door closes on a
    child (the door device knows; the panel, cut off, does not), and the observer walks away (the panel
    knows; the door device does not). Neither agent ever alarms: the panel sees no episode, the door
    device times supervision on a `present` it can no longer check. The hub, in the door device's
    place, would call this room's state unknown and raise `device_offline`, critical in an episode
    (semantics 4.1); the fail-safe is silent for as long as the outage lasts (semantics 5.4: an alarm
    never depends on the network)."""
    door = bench.start(door_device(tmp_path / "door", outputs=DOOR_OUTPUTS))
    bench.settle(door)
    bench.link.deliver(config_topic("calm-1-door"), NUMBERS)
    panel = OtherDevice("calm-1-panel", bench.link, clock)
    panel.reads("observer", "present")
    assert door.room_state()["observer"] == "present"

    bench.link.drop()  # the broker is gone: the door device hears nothing of the panel from now on
    door.simulate("occupancy", "occupied")
    door.simulate("door", "closed")
    bench.settle(door)
    assert door.episode_open
    bench.settle(door, 10 * 60 * 1000)  # ten minutes, the observer long gone for all anyone at the door knows
    assert door.local_alarm.level == "critical"
    assert sounding(door)


def test_the_door_device_stops_trusting_the_panel_once_its_last_will_says_it_is_gone(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """Broker up, hub down: the panel device dies (its Last Will is published on its status topic). The
    door device goes on timing supervision on the panel's last `present` for the rest of the episode:
    it does not follow the room's devices' status (nor their heartbeats), so a dead panel looks like a
    watched child. The hub would raise `device_offline`, critical in an episode (semantics 4.1)."""
    door = bench.start(door_device(tmp_path / "door", outputs=DOOR_OUTPUTS))
    bench.settle(door)
    bench.link.deliver(config_topic("calm-1-door"), NUMBERS)
    bench.link.deliver(HUB_STATUS, hub_status(False))
    panel = OtherDevice("calm-1-panel", bench.link, clock)
    panel.reads("observer", "present")
    door.simulate("occupancy", "occupied")
    door.simulate("door", "closed")
    bench.settle(door)
    assert door.episode_open and door.alarm.driver == "local"

    bench.link.deliver(PANEL_STATUS, {"v": 1, "online": False, "boot": "boot-1", "conn_ms": 1})
    bench.settle(door, 10 * 60 * 1000)
    assert door.local_alarm.level == "critical"
    assert sounding(door)


# ------------------------------------------------------------------------------------ a restart


def test_a_restart_during_an_episode_with_a_still_child_keeps_the_episode(
    bench: Bench, clock: FakeClock, tmp_path: Path
) -> None:
    """The door device restarts (a watchdog, a power blip) 5 minutes into an episode with the broker
    down; the child is still, so the PIR now reads `vacant`. Semantics 2.3: vacant while the door is
    closed never ends an episode, and the hub (told only `vacant`) keeps it open. The restarted agent
    has the occupied reading in its outbox (`last_readings`) but feeds its fail-safe only the pins: door
    closed + vacant is no episode, so no lapse and no duration alarm sounds for the rest of it."""
    config = door_device(tmp_path / "door", outputs=DOOR_OUTPUTS)
    first = bench.start(config)
    bench.settle(first)
    bench.link.deliver(config_topic("calm-1-door"), {**NUMBERS, "max_duration_s": 600})
    first.simulate("occupancy", "occupied")
    first.simulate("door", "closed")
    bench.settle(first)
    bench.link.drop()
    first.simulate("occupancy", "vacant")  # the child has gone still
    bench.settle(first, 1000)
    assert first.episode_open  # vacant while closed: still an episode
    bench.settle(first, 5 * 60 * 1000)
    first.stop()

    bench.connect_on_start = False
    second = bench.start(config)  # fresh pins: the PIR reads vacant
    second.simulate("door", "closed")
    bench.settle(second)
    assert second.room_state()["door"] == "closed"
    assert second.episode_open, "the restarted agent lost the episode: door closed, PIR vacant"
    bench.settle(second, 10 * 60 * 1000)
    assert sounding(second)


# --------------------------------------------------------------------------- no numbers yet


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
