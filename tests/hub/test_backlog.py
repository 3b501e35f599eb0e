"""What a backlog tells the hub after its own downtime (semantics 4.1-4.6): the broker's persistent
session hands over, all at once, what the devices published while the hub was down. Their times are
the devices' own; the arrival times say only when the hub came back."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from seclusion_contract import Topics, format_ts
from seclusion_hub.config import load_sites
from seclusion_hub.core.alerts import Alert
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.core.episode import account
from seclusion_hub.ingest import Inbound
from seclusion_hub.service import Command, HubService
from seclusion_hub.store import Store
from tests.hub.rooms import DOOR, PANEL
from tests.support.hub import SITE, two_device_room, write_site

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


def _t(t: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=t)


def event(device: str, seq: int, kind: str, value: str, t: float, arrive: float, mid: int) -> Inbound:
    body = {
        "v": 1,
        "id": f"{device}:0:{seq}",
        "seq": seq,
        "ts": format_ts(_t(t)),
        "kind": kind,
        "value": value,
    }
    topic = f"seclusion/v1/{SITE}/calm-1/{device}/event"
    return Inbound(topic, json.dumps(body).encode(), _t(arrive), mid=mid, qos=1)


def status(device: str, arrive: float, mid: int, **body: Any) -> Inbound:
    payload = {"v": 1, **body}
    if "ts" in payload:
        payload["ts"] = format_ts(_t(payload["ts"]))
    topic = f"seclusion/v1/{SITE}/calm-1/{device}/status"
    return Inbound(topic, json.dumps(payload).encode(), _t(arrive), mid=mid, qos=1)


def running(tmp_path: Path, clock: FakeClock) -> tuple[HubService, Store]:
    site = tmp_path / "site.yaml"
    if not site.exists():
        write_site(site, [two_device_room("calm-1")])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    hub = HubService(load_sites([site]), store, clock, Topics(), coalesce_s=0)
    hub.ack_message = lambda mid, qos, conn: None
    return hub, store


def restarted(tmp_path: Path, clock: FakeClock, store: Store, backlog: list[Inbound]) -> HubService:
    """A hub killed and started again on the same database; the broker hands it `backlog`, then the
    marker comes back (as runtime.py wires it)."""
    after = HubService(load_sites([tmp_path / "site.yaml"]), store, clock, Topics(), coalesce_s=0)
    after.ack_message = lambda mid, qos, conn: None
    after.backlog_done = after.backlog_applied
    for machine in after.machines.values():
        machine.hub_started(clock.now())
    for item in backlog:
        after.submit(item)
    after.backlog_marker()
    while items := after._take():
        after.process(items)
    assert after.backlog_applied()
    return after


def supervised_episode() -> list[Inbound | Command]:
    """The panel online (boot p1) with the observer present; a child shut in calm-1 at T0+1."""
    return [
        status(PANEL, -10, 1, online=True, ts=-10, boot="p1", uptime_s=100),
        event(PANEL, 1, "observer", "present", 0, 0, 2),
        event(DOOR, 1, "occupancy", "occupied", 0, 0, 3),
        event(DOOR, 2, "door", "closed", 1, 1, 4),
    ]


def test_a_device_outage_while_the_hub_was_down_is_unknown_time_not_supervised(tmp_path: Path) -> None:
    """The hub is down from T0+100 to T0+1000. The backlog: the observer came back at T0+250, then the
    panel died (its Last Will) and came back on a new boot at T0+900. Nobody knows who was at the
    panel from T0+250 to T0+900: unknown time (4.1, 4.2). The outage was timed by the backlog's
    arrival (all at T0+1000), so it shrank to nothing and 650 s were recorded as supervised (found by
    a review)."""
    clock = FakeClock(T0)
    hub, store = running(tmp_path, clock)
    try:
        hub.process(supervised_episode())
        clock.set(_t(1000))
        backlog = [
            event(PANEL, 2, "observer", "absent", 200, 1000, 10),
            event(PANEL, 3, "observer", "present", 250, 1000, 11),
            status(PANEL, 1000, 12, online=False),  # its Last Will, kept for the hub's session
            status(PANEL, 1000, 13, online=True, ts=900, boot="p2", uptime_s=0, epoch=0, last_seq=3),
        ]
        after = restarted(tmp_path, clock, store, backlog)
        ep = after.machines[(SITE, "calm-1")].episode
        assert ep is not None
        acc = account(ep, _t(1000))
        assert acc.supervised_s + acc.unsupervised_s + acc.unknown_s == ep.elapsed_s(_t(1000))
        # Unknown from its last message (T0+250) until the hub heard it back (T0+1000): its status says
        # T0+900, but a new boot's clock is checked by nobody yet, and an outage is never shortened on it.
        [gap] = [g for g in ep.unknown if g.device == PANEL]
        assert (gap.start, gap.end) == (_t(250), _t(1000))
        assert acc.unknown_s == 750
        assert acc.unsupervised_s == 50  # T0+200 to T0+250, from the backlog's own times
    finally:
        store.close()


def test_a_device_back_from_a_power_cut_with_its_clock_behind_keeps_its_whole_outage(tmp_path: Path) -> None:
    """A Pi back from a power cut restores the time it last saved until NTP: its online status says it
    is back at T0+95, though it was heard back at T0+500. The outage ends when the hub heard it back,
    never at a time on a clock nobody has checked (ending it at the status's time counted 400 s of the
    outage as supervised: found by a review of an earlier version of this change)."""
    clock = FakeClock(T0)
    hub, store = running(tmp_path, clock)
    try:
        hub.process(supervised_episode())
        clock.set(_t(100))
        hub.process([status(PANEL, 100, 5, online=False)])  # its Last Will, live
        clock.set(_t(500))
        hub.process([status(PANEL, 500, 6, online=True, ts=95, boot="p2", uptime_s=30, epoch=0, last_seq=1)])
        ep = hub.machines[(SITE, "calm-1")].episode
        assert ep is not None
        [gap] = [g for g in ep.unknown if g.device == PANEL]
        assert (gap.start, gap.end) == (_t(1), _t(500))  # its last message (T0+0) is before the start
        assert account(ep, _t(500)).unknown_s == 499  # the episode began at T0+1
    finally:
        store.close()


def test_a_quiet_spell_the_backlog_reveals_is_raised_late_and_kept_with_the_episode(tmp_path: Path) -> None:
    """The hub is down from T0+5 to T0+600. The backlog: the occupancy sensor read no movement from
    T0+20 to T0+400 (the profile's `no_movement_s` is 120 s). The welfare check that fell due at T0+140
    is stored, late, resolved at T0+400, for the record; and the spell stays with the episode across
    the restart after (semantics 4.3, 4.6)."""
    clock = FakeClock(T0)
    hub, store = running(tmp_path, clock)
    try:
        hub.process(supervised_episode())
        clock.set(_t(600))
        backlog = [
            event(DOOR, 3, "occupancy", "vacant", 20, 600, 10),
            event(DOOR, 4, "occupancy", "occupied", 400, 600, 11),
        ]
        after = restarted(tmp_path, clock, store, backlog)
        alerts = [
            a for a in store.list_alerts(None, None, None, None, 100, None)[0] if a.kind == "no_movement"
        ]
        assert len(alerts) == 1
        alert = Alert.model_validate_json(alerts[0].data)
        assert (alert.due_at, alert.late, alert.active) == (_t(140), True, False)
        assert alert.condition_ended_at == _t(400)
        again = HubService(load_sites([tmp_path / "site.yaml"]), store, clock, Topics(), coalesce_s=0)
        ep = again.machines[(SITE, "calm-1")].episode
        assert ep is not None and [(q.start, q.end) for q in ep.quiet] == [(_t(20), _t(400))]
        assert after.machines[(SITE, "calm-1")].episode is not None
    finally:
        store.close()


def test_a_marker_heard_before_a_reconnect_does_not_end_the_next_connections_backlog(
    tmp_path: Path,
) -> None:
    """The marker came back on one connection and waits in the inbox; the link drops and comes back
    before the ingest thread reaches it. That marker says nothing of the new connection's backlog:
    the backlog is through only at the new connection's own marker (found by a review)."""
    clock = FakeClock(T0)
    hub, _store = running(tmp_path, clock)
    hub.backlog_done = hub.backlog_applied
    hub.reconnected()  # the first connection
    hub.backlog_marker()  # its marker heard, not yet applied
    hub.reconnected()  # the link dropped and came back
    while items := hub._take():
        hub.process(items)
    assert not hub.backlog_applied()
    hub.backlog_marker()  # the new connection's marker
    while items := hub._take():
        hub.process(items)
    assert hub.backlog_applied()
