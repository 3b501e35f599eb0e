"""A review recorded on an episode older than its room's latest.

A review's alert (`review_due`) outlives its episode: the child is out, the review still has to be done
and recorded (semantics 5's table). When another episode had ended in the room before anyone recorded
it, the room no longer held the older episode, the review was refused (409) and its alert could only
be resolved by a senior with a note, escalating meanwhile, as if the review had not been done. Now it is
recorded on the stored episode, and the alert resolves, saying the review was recorded.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from seclusion_contract import Topics
from seclusion_hub.config import load_sites
from seclusion_hub.core.episode import ReviewRecord
from seclusion_hub.models import AuditEntry
from seclusion_hub.record_store import RecordStore
from seclusion_hub.service import HubService
from tests.hub.test_api import T0, Api
from tests.hub.test_manual_alerts import _drain
from tests.support.hub import two_device_room
from tests.support.processes import poll

SITE = "test-school"
CHECK = {"name": "senior check", "first_s": 60, "tier": "senior"}


def _two_episodes(tmp_path: Path) -> tuple[Api, str, str]:
    """calm-1, whose policy asks for a senior check 60 s in: an episode that runs past it (its review
    due), then a second one that ends too. The first episode's id, and its alert's."""
    api = Api(
        tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", rooms=[two_device_room("calm-1", reviews=[CHECK])]
    )
    door, panel = "calm-1-door", "calm-1-panel"
    api.event(SITE, "calm-1", panel, "observer", "present", 0)
    api.event(SITE, "calm-1", door, "occupancy", "occupied", 1)
    api.event(SITE, "calm-1", door, "door", "closed", 2)
    api.event(SITE, "calm-1", door, "occupancy", "occupied", 70)  # the review fell due at 62
    api.event(SITE, "calm-1", door, "door", "open", 80)
    api.event(SITE, "calm-1", door, "occupancy", "vacant", 81)  # free since 80: the first one ends
    api.event(SITE, "calm-1", door, "occupancy", "occupied", 100)
    api.event(SITE, "calm-1", door, "door", "closed", 101)
    api.event(SITE, "calm-1", door, "door", "open", 120)
    api.event(SITE, "calm-1", door, "occupancy", "vacant", 121)
    admin = api.token("admin")
    episodes = api.client.get("/api/episodes", params={"room": "calm-1"}, headers=admin).json()["items"]
    assert len(episodes) == 2 and all(e["ended_at"] for e in episodes), episodes
    first = episodes[-1]["id"]
    [due] = _review_alerts(api, first)
    assert due["resolved_at"] is None
    return api, first, due["id"]


def _review_alerts(api: Api, episode_id: str) -> list[dict[str, Any]]:
    admin = api.token("admin")
    items = api.client.get(
        "/api/alerts", params={"state": "all", "episode_id": episode_id}, headers=admin
    ).json()["items"]
    return [a for a in items if a["kind"] == "review_due"]


def test_a_review_of_an_older_episode_is_recorded_and_its_alert_resolves(tmp_path: Path) -> None:
    api, first, alert_id = _two_episodes(tmp_path)
    api.clock.set(T0 + dt.timedelta(seconds=125))
    api.service.start()
    try:
        staff = api.token("staff", SITE)
        recorded = api.client.post(
            f"/api/episodes/{first}/reviews",
            json={"name": "senior check", "note": "seen, calm"},
            headers=staff,
        )
        assert recorded.status_code == 201, recorded.text
        stored = api.store.get_episode(first)
        assert stored is not None and '"name":"senior check"' in stored.data

        def resolved() -> dict[str, Any] | None:
            [alert] = _review_alerts(api, first)
            return alert if alert["resolved_at"] is not None else None

        alert = poll(resolved, what="the older episode's review alert to resolve")
        assert alert["id"] == alert_id and alert["note"] == "the review was recorded", alert
        timeline = api.client.get(f"/api/episodes/{first}", headers=staff).json()["timeline"]
        assert any(line.get("kind") == "review_recorded" for line in timeline), timeline
        # A name the policy does not have is still refused, naming the field
        wrong = api.client.post(f"/api/episodes/{first}/reviews", json={"name": "nope"}, headers=staff)
        assert wrong.status_code == 422
    finally:
        api.service.stop()
        api.client.close()
        api.store.close()


def test_a_review_stored_just_before_a_crash_resolves_its_alert_at_the_next_start(tmp_path: Path) -> None:
    """The review is stored by the API, and the room told on the ingest thread afterwards: a hub that
    stops in between looks at the alert again as it starts."""
    api, first, alert_id = _two_episodes(tmp_path)
    try:
        now = T0 + dt.timedelta(seconds=124)
        entry = AuditEntry(
            at=now, actor="staff-user", action="review", target_type="episode", target_id=first
        )
        RecordStore(api.store.engine).review_offline(
            first, ReviewRecord(name="senior check", at=now, by="staff-user"), entry, now
        )
        # (the hub stops here: the room was never told)
        again = HubService(
            load_sites([tmp_path / "a.yaml", tmp_path / "b.yaml"]), api.store, api.clock, Topics()
        )
        _drain(api, again)
        api.clock.set(T0 + dt.timedelta(seconds=130))
        again.process([])
        [alert] = _review_alerts(api, first)
        assert alert["id"] == alert_id and alert["resolved_at"] is not None, alert
    finally:
        api.client.close()
        api.store.close()
