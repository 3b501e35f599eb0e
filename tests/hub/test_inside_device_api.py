"""Occupancy on a device of its own, through HubService on SQLite: a confinement timed live is stored once
when the inside device's replay arrives after a later one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from seclusion_contract import format_ts
from tests.hub.test_api import T0, Api
from tests.support.hub import two_device_room


def _api(tmp_path: Path) -> Api:
    room = two_device_room("calm-1")
    room["devices"] = [
        {"id": "calm-1-door", "sensors": ["door", "lock"], "lock_type": "held"},
        {"id": "calm-1-pir", "sensors": ["occupancy"]},
        {"id": "calm-1-panel", "sensors": ["observer", "check"]},
    ]
    return Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", rooms=[room])


def _said(t: float) -> str:
    return format_ts(T0 + dt.timedelta(seconds=t))


def test_a_live_confinement_is_stored_once_when_the_pirs_replay_arrives_after_a_later_one(
    tmp_path: Path,
) -> None:
    """The PIR's last word `occupied`: the close at 100 is an episode (ended at 400, the grace long
    past at the close at 900), the close at 900 another (ended at 1000). The PIR's outbox (a movement at
    150, inside the first) arrives at 2000: the room's record still holds two episodes, two incidents."""
    api = _api(tmp_path)
    try:
        api.event("test-school", "calm-1", "calm-1-pir", "occupancy", "occupied", 0)
        for value, t in (("closed", 100), ("open", 400), ("closed", 900), ("open", 1000)):
            api.event("test-school", "calm-1", "calm-1-door", "door", value, t)
        api.event("test-school", "calm-1", "calm-1-door", "lock", "released", 1100)  # past the grace
        admin = api.token("admin")
        before = api.client.get("/api/episodes", params={"room": "calm-1"}, headers=admin).json()["items"]
        assert len(before) == 2
        api.event("test-school", "calm-1", "calm-1-pir", "occupancy", "vacant", 2000, said=_said(130))
        api.event("test-school", "calm-1", "calm-1-pir", "occupancy", "occupied", 2000, said=_said(150))
        items = api.client.get("/api/episodes", params={"room": "calm-1"}, headers=admin).json()["items"]
        assert sorted((e["started_at"], e["ended_at"]) for e in items) == [
            (_said(100), _said(400)),
            (_said(900), _said(1000)),
        ]
    finally:
        api.client.close()
        api.store.close()
