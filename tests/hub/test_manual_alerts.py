"""An episode a senior entered by hand, still going on, raises its duration alerts.

`POST /api/episodes` without `ended_at` records a child confined now in a room whose sensors failed; the
board shows it ("Child in room (entered by hand)") with its clock. The riskiest case of all (nobody's
sensors see the room) was told to nobody as it ran long: the manual episode raised no alert. Its duration
rules (2.6) now raise, escalate and resolve as a sensor episode's do; its supervision is not known, so
it raises no lapse, and no `episode_started` (a senior entered it).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from seclusion_contract import Topics, format_ts
from seclusion_hub.api import create_app
from seclusion_hub.config import load_sites
from seclusion_hub.service import HubService
from tests.hub.test_api import T0, Api

SITE = "test-school"


def _drain(api: Api, service: HubService | None = None) -> None:
    """The commands the API left for the ingest thread (not started here), applied and stored."""
    service = service or api.service
    while not service.inbox.empty():
        service.process([service.inbox.get_nowait()])


def _at(api: Api, seconds: float, service: HubService | None = None) -> None:
    """The hub's clock `seconds` after T0, and a batch (nothing in it) that lets time pass."""
    api.clock.set(T0 + dt.timedelta(seconds=seconds))
    (service or api.service).process([])


def _alerts(api: Api, episode_id: str, state: str = "all") -> dict[str, dict[str, Any]]:
    admin = api.token("admin")
    items = api.client.get(
        "/api/alerts", params={"state": state, "episode_id": episode_id}, headers=admin
    ).json()["items"]
    return {
        a["kind"] + ("/" + str(a["tier"]) if a["kind"] == "duration_escalation" else ""): a for a in items
    }


def test_a_manual_episode_going_on_raises_its_duration_alerts_and_they_resolve_when_it_ends(
    tmp_path: Path,
) -> None:
    api = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        senior = api.token("senior", SITE)
        body = {
            "site": SITE,
            "room": "calm-1",
            "started_at": format_ts(T0 - dt.timedelta(minutes=1)),
            "reason": "door sensor failed; the teacher is timing it",
        }
        created = api.client.post("/api/episodes", json=body, headers=senior)
        assert created.status_code == 201, created.text
        episode = created.json()
        _drain(api)
        _at(api, 530)  # 9 min 50 s in: nothing is due yet
        assert _alerts(api, episode["id"]) == {}
        _at(api, 541)  # 10 min 1 s in: the profile's warning, to the room
        raised = _alerts(api, episode["id"])
        assert set(raised) == {"duration_warning"}, raised  # no lapse, no episode_started
        warning = raised["duration_warning"]
        assert warning["due_at"] == format_ts(T0 + dt.timedelta(seconds=540))
        assert warning["tier"] == "room" and warning["late"] is False and warning["resolved_at"] is None

        # The hub restarts: the episode's deadlines survive (semantics 4.6)
        again = HubService(
            load_sites([tmp_path / "a.yaml", tmp_path / "b.yaml"]), api.store, api.clock, Topics()
        )
        _drain(api, again)
        _at(api, 1141, again)  # 20 min 1 s in: escalated to a senior
        raised = _alerts(api, episode["id"])
        assert raised["duration_escalation/senior"]["resolved_at"] is None, raised
        assert raised["duration_escalation/senior"]["late"] is False

        api.client.close()
        api.service, api.client = again, TestClient(create_app(again))  # the restarted hub's API
        ended = api.client.post(
            f"/api/episodes/{episode['id']}/end",
            json={"ended_at": format_ts(T0 + dt.timedelta(seconds=1150))},
            headers=senior,
        )
        assert ended.status_code == 200, ended.text
        _drain(api, again)
        _at(api, 1142, again)  # a room is looked at again at most every `coalesce_s` (0.25 s)
        assert _alerts(api, episode["id"], "active") == {}, "the episode ended: its alerts resolve"
        _at(api, 1800, again)  # the head's escalation would have been due: the child was out by then
        assert "duration_escalation/head" not in _alerts(api, episode["id"])
    finally:
        api.client.close()
        api.store.close()


def test_a_manual_episode_entered_already_over_raises_nothing(tmp_path: Path) -> None:
    """Entered after the fact (it has its end): nothing to tell anyone now; the record carries it."""
    api = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        senior = api.token("senior", SITE)
        body = {
            "site": SITE,
            "room": "calm-1",
            "started_at": format_ts(T0 - dt.timedelta(hours=2)),
            "ended_at": format_ts(T0 - dt.timedelta(hours=1)),
            "reason": "sensors failed this morning; entered from the log",
        }
        created = api.client.post("/api/episodes", json=body, headers=senior)
        assert created.status_code == 201, created.text
        _drain(api)
        _at(api, 10)
        assert _alerts(api, created.json()["id"]) == {}
    finally:
        api.client.close()
        api.store.close()


def test_no_manual_episode_is_entered_going_on_where_the_sensors_time_one(tmp_path: Path) -> None:
    """The sensors see a child in the room and time it: a hand-entered episode going on there too would
    be one confinement counted twice, each raising its duration alerts. Refused (409), saying which
    episode is the child's; one entered with its end (after the fact) is not refused."""
    api = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        api.event(SITE, "calm-1", "calm-1-door", "occupancy", "occupied", 1)
        api.event(SITE, "calm-1", "calm-1-door", "door", "closed", 2)
        senior = api.token("senior", SITE)
        body = {"site": SITE, "room": "calm-1", "started_at": format_ts(T0), "reason": "sensors look wrong"}
        refused = api.client.post("/api/episodes", json=body, headers=senior)
        assert refused.status_code == 409, refused.text
        assert "the sensors are timing an episode in this room now" in refused.json()["detail"]
        over = {**body, "started_at": format_ts(T0 - dt.timedelta(hours=3))}
        over["ended_at"] = format_ts(T0 - dt.timedelta(hours=2))
        assert api.client.post("/api/episodes", json=over, headers=senior).status_code == 201
        elsewhere = {**body, "room": "calm-2"}  # a room whose sensors time nothing: entered
        assert api.client.post("/api/episodes", json=elsewhere, headers=senior).status_code == 201
    finally:
        api.client.close()
        api.store.close()
