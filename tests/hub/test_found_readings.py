"""The decoder's part in the liveness fixes: the optional `startup` of an event (contract 2, added) and a
heartbeat's `queued` reach the room machine, told apart from an agent that does not send them."""

from __future__ import annotations

import json
from pathlib import Path

from seclusion_contract import Topics, format_ts
from seclusion_hub.config import load_sites
from seclusion_hub.core.room import Heartbeat, SensorEvent
from seclusion_hub.ingest import Decoder, Inbound
from tests.hub.rooms import DOOR, Room, at
from tests.support.hub import SITE, two_device_room, write_site


def _decoder(tmp_path: Path) -> Decoder:
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    return Decoder(Topics(), load_sites([tmp_path / "site.yaml"]))


def _inbound(channel: str, body: dict[str, object]) -> Inbound:
    topic = f"seclusion/v1/{SITE}/calm-1/calm-1-door/{channel}"
    return Inbound(topic, json.dumps({"v": 1, **body}).encode(), at(10))


def test_the_decoder_passes_startup_and_queued_on_and_tells_them_from_an_agent_that_does_not_say(
    tmp_path: Path,
) -> None:
    decoder = _decoder(tmp_path)
    event = {"id": "d:0:1", "seq": 1, "ts": format_ts(at(0)), "kind": "door", "value": "closed"}
    marked = decoder.decode(_inbound("event", {**event, "startup": True})).message
    plain = decoder.decode(_inbound("event", event)).message
    assert isinstance(marked, SensorEvent) and marked.startup
    assert isinstance(plain, SensorEvent) and not plain.startup

    beat = {"ts": format_ts(at(5)), "last_seq": 1, "state": {"door": "closed"}}
    empty = decoder.decode(_inbound("heartbeat", {**beat, "queued": 0})).message
    silent = decoder.decode(_inbound("heartbeat", beat)).message
    assert isinstance(empty, Heartbeat) and empty.queued == 0
    assert isinstance(silent, Heartbeat) and silent.queued is None, "not saying is not `queued: 0`"


def test_an_older_agents_start_up_reading_without_the_mark_is_taken_as_it_comes() -> None:
    """An agent that does not mark its start-up readings: its door close starts the episode as before."""
    room = Room()
    room.occupancy("occupied", 0)
    room.door("closed", 5)
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(5) and not ep.start_uncertain


def test_a_start_up_door_reading_the_hub_already_has_changes_nothing() -> None:
    """The door still closed at the agent's start (an agent whose outbox lost its last reading sends it
    again): the episode goes on from the close the hub saw, not from the agent's start."""
    room = Room()
    room.occupancy("occupied", 0)
    room.door("closed", 5)
    room.seq[DOOR] += 1
    ev = SensorEvent(device=DOOR, kind="door", value="closed", ts=at(500), seq=room.seq[DOOR], startup=True)
    room.machine.handle(ev, at(500))
    ep = room.machine.episode
    assert ep is not None and ep.started_at == at(5) and not ep.start_uncertain
    assert room.machine.state.readings["door"].ts == at(5)


def test_a_retained_status_of_a_boot_the_hub_has_not_heard_takes_the_boot_but_does_not_bring_it_back() -> (
    None
):
    """The door device restarted while the hub was away and the hub's session was lost: the broker's
    copy of its new connect tells of the restart, but not that the device is there now (4.1)."""
    room = Room(heartbeat_s=10)
    room.status(DOOR, True, 0, boot="door-b1", uptime_s=100)
    room.status(DOOR, False, 30)  # its Last Will
    dev = room.machine.state.devices[DOOR]
    assert not dev.online
    room.status(DOOR, True, 500, boot="door-b2", uptime_s=5, retained=True)
    assert not dev.online and dev.boot == "door-b2", "a restart, but nothing heard from it now"
    room.heartbeat(DOOR, 505, {})
    assert dev.online, "its heartbeat is word from it"


def test_heartbeats_ahead_of_a_replay_still_arriving_wait_for_it() -> None:
    """A long replay that the broker hands over slower than the heartbeats: the events are arriving, so
    the heartbeats counting them change nothing; the events tell the story in their order."""
    room = Room(heartbeat_s=10)
    room.door("open", -40)  # seq 1
    for t in range(0, 100, 10):
        room.clock.set(at(t))
        state = {"door": "closed", "occupancy": "occupied"}
        room.machine.handle(Heartbeat(device=DOOR, ts=at(t), epoch=0, last_seq=20, state=state), at(t))
        room.tick(t, liveness=False)
        room.send(DOOR, "lock", "released", t - 60 + 0.5, arrive=t + 1)  # one more of the replay
    assert room.machine.episode is None and room.machine.reading("door") == "open"
    assert room.machine.state.readings.get("occupancy") is None, "no reading taken from the heartbeats"
