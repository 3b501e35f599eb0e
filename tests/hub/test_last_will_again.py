"""A Last Will the broker delivers again (MQTT's QoS 1 is at least once).

The hub stores a batch holding a device's Last Will and is killed before the broker hears that the
batch was taken: at the next start the broker delivers the will again, after the device's return the
hub had already applied. A will (and a clean stop's offline status) names the connection it ends
(`boot`, `conn_ms`, added to contract 2), so the hub knows it for one already ended and changes
nothing; before, the device was taken offline again until its next heartbeat, the hub's downtime
counted as unknown and a `device_offline` alert raised (a known limit in docs/hub.md)."""

from __future__ import annotations

from pathlib import Path

from seclusion_hub.core.clock import FakeClock
from seclusion_hub.core.episode import account
from tests.hub.rooms import DOOR, PANEL, Room, at
from tests.hub.test_backlog import T0, _t, event, restarted, running, status, supervised_episode


def watched(room: Room) -> None:
    room.status(PANEL, True, -10, boot="p1", uptime_s=100, conn_ms=1_000)
    room.observer("present", 0)
    room.occupancy("occupied", 0)
    room.door("closed", 1)


def test_a_last_will_delivered_again_after_the_device_came_back_changes_nothing() -> None:
    room = Room()
    watched(room)
    room.status(PANEL, False, 20, boot="p1", conn_ms=1_000)  # the connection lost
    room.status(PANEL, True, 25, boot="p1", uptime_s=135, conn_ms=31_000)  # back: a new connection
    ep = room.machine.episode
    assert ep is not None
    unknown_before = [(u.start, u.end) for u in ep.unknown]
    room.status(PANEL, False, 60, boot="p1", conn_ms=1_000)  # the same will, delivered again
    assert room.machine.state.devices[PANEL].online
    assert [(u.start, u.end) for u in ep.unknown] == unknown_before
    assert account(ep, at(60)).unknown_s == account(ep, at(25)).unknown_s


def test_a_will_of_an_older_connection_of_the_same_boot_changes_nothing_even_if_never_applied() -> None:
    """The current connection was announced (conn_ms 31000): a will of connection 1000 ended before it."""
    room = Room()
    watched(room)
    room.status(PANEL, True, 25, boot="p1", uptime_s=135, conn_ms=31_000)
    room.status(PANEL, False, 60, boot="p1", conn_ms=1_000)
    assert room.machine.state.devices[PANEL].online


def test_a_will_of_the_boot_before_delivered_again_after_a_restart_changes_nothing() -> None:
    room = Room()
    watched(room)
    room.status(PANEL, False, 20, boot="p1", conn_ms=1_000)
    room.status(PANEL, True, 90, boot="p2", uptime_s=30, conn_ms=5_000)  # the Pi restarted
    room.status(PANEL, False, 95, boot="p1", conn_ms=1_000)  # the old boot's will, again
    assert room.machine.state.devices[PANEL].online


def test_the_will_of_a_newer_connection_is_an_outage_even_if_its_status_never_came() -> None:
    """Connected and lost before its online status went out: its will names a later connection."""
    room = Room()
    watched(room)
    room.status(PANEL, False, 40, boot="p1", conn_ms=45_000)
    assert not room.machine.state.devices[PANEL].online
    ep = room.machine.episode
    assert ep is not None and [u.end for u in ep.unknown] == [None]


def test_the_will_of_the_current_connection_is_an_outage() -> None:
    room = Room()
    watched(room)
    room.status(PANEL, False, 40, boot="p1", conn_ms=1_000)
    assert not room.machine.state.devices[PANEL].online


def test_a_will_that_names_no_connection_is_an_outage_as_before() -> None:
    room = Room()
    watched(room)
    room.status(PANEL, True, 25, boot="p1", uptime_s=135, conn_ms=31_000)
    room.status(PANEL, False, 40)  # an agent that does not name its connections
    assert not room.machine.state.devices[PANEL].online


def test_a_will_after_a_clean_stop_of_the_same_connection_is_one_outage() -> None:
    """The farewell went out, then the connection dropped before its DISCONNECT: the broker publishes
    the will too. One outage, from the farewell."""
    room = Room()
    watched(room)
    room.status(PANEL, False, 30, boot="p1", conn_ms=1_000)  # the farewell
    ep = room.machine.episode
    assert ep is not None
    room.status(PANEL, True, 50, boot="p1", uptime_s=1, conn_ms=51_000)  # the agent started again
    room.status(PANEL, False, 51, boot="p1", conn_ms=1_000)  # that connection's will
    assert room.machine.state.devices[PANEL].online
    assert len(ep.unknown) == 1 and ep.unknown[0].end is not None


def test_a_hub_killed_before_the_broker_heard_it_took_a_will_takes_the_redelivered_will_for_what_it_is(
    tmp_path: Path,
) -> None:
    """Through the service and its database: the will and the device's return are stored, the hub is
    killed before its PUBACKs went out, and the broker's backlog at the next start begins with the will
    again (and the online status, also unacknowledged). Nothing changes: the panel is online, no
    unknown time beyond the real outage, no device_offline alert."""
    clock = FakeClock(T0)
    hub, store = running(tmp_path, clock)
    try:
        first = [
            status(PANEL, -10, 1, online=True, ts=-10, boot="p1", uptime_s=100, conn_ms=1_000),
            *supervised_episode()[1:],
        ]
        hub.process(first)
        clock.set(_t(20))
        will = status(PANEL, 20, 5, online=False, boot="p1", conn_ms=1_000)
        # The agent started again (same boot): its gap is not replayed, so the outage stays unknown.
        back = status(PANEL, 21, 6, online=True, ts=21, boot="p1", uptime_s=1, conn_ms=30_000)
        more = event(PANEL, 2, "observer", "present", 22, 22, 7)
        hub.process([will, back, more])
        ep = hub.machines[("test-school", "calm-1")].episode
        assert ep is not None
        unknown = account(ep, _t(22)).unknown_s
        assert unknown > 0  # the real outage, from the will to the return

        clock.set(_t(300))
        after = restarted(tmp_path, clock, store, [will, back])
        machine = after.machines[("test-school", "calm-1")]
        assert machine.state.devices[PANEL].online
        ep = machine.episode
        assert ep is not None
        assert [u.end is not None for u in ep.unknown] == [True]
        assert account(ep, _t(300)).unknown_s == unknown
        assert not [a for a in machine.state.book.alerts.values() if a.kind == "device_offline"]
    finally:
        store.close()


def test_the_room_state_keeps_the_connections_across_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    hub, store = running(tmp_path, clock)
    try:
        hub.process(
            [
                status(DOOR, 0, 1, online=True, ts=0, boot="d1", uptime_s=5, conn_ms=7_000),
                status(PANEL, 0, 2, online=False, boot="p1", conn_ms=9_000),
            ]
        )
        after = restarted(tmp_path, clock, store, [])
        devices = after.machines[("test-school", "calm-1")].state.devices
        assert (devices[DOOR].boot, devices[DOOR].conn_ms) == ("d1", 7_000)
        assert (devices[PANEL].ended_boot, devices[PANEL].ended_conn_ms) == ("p1", 9_000)
    finally:
        store.close()
