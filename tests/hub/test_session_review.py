"""Second review of the session's changes: each test fails on the fault it names."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from seclusion_contract import Topics
from seclusion_hub.api import create_app
from seclusion_hub.config import load_sites
from seclusion_hub.service import HubService
from tests.hub.test_api import T0, Api
from tests.hub.test_manual_alerts import _drain
from tests.support.hub import two_device_room

SITE = "test-school"
CHECK = {"name": "senior check", "first_s": 60, "tier": "senior"}
WARN_30 = [{"after_s": 30, "kind": "duration_warning", "tier": "room"}]


def _by_ingest(api: Api, call: Callable[[], Any], service: HubService | None = None) -> Any:
    """An API call that waits for the ingest thread (not started here): its commands drained meanwhile."""
    service = service or api.service
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", call()))
    thread.start()
    while thread.is_alive():
        _drain(api, service)
        thread.join(0.01)
    _drain(api, service)
    return out["r"]


def _alerts(api: Api, episode_id: str) -> dict[str, dict[str, Any]]:
    admin = api.token("admin")
    items = api.client.get(
        "/api/alerts", params={"state": "all", "episode_id": episode_id}, headers=admin
    ).json()["items"]
    return {a["kind"]: a for a in items}


def _older_with_acknowledged_warning(tmp_path: Path) -> tuple[Api, str]:
    """calm-1: a first episode (2 s to 80 s) whose 30 s duration warning a member of staff
    acknowledged and whose senior check (due 62 s) is not recorded; then a second episode that ends."""
    room = two_device_room("calm-1", reviews=[CHECK], duration_alerts=WARN_30)
    api = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", rooms=[room])
    door, panel = "calm-1-door", "calm-1-panel"
    api.event(SITE, "calm-1", panel, "observer", "present", 0)
    api.event(SITE, "calm-1", door, "occupancy", "occupied", 1)
    api.event(SITE, "calm-1", door, "door", "closed", 2)
    api.event(SITE, "calm-1", door, "occupancy", "occupied", 40)  # the warning fell due at 32
    admin = api.token("admin")
    [episode] = api.client.get("/api/episodes", params={"room": "calm-1"}, headers=admin).json()["items"]
    first = episode["id"]
    warning = _alerts(api, first)["duration_warning"]
    staff = api.token("staff", SITE)
    acked = _by_ingest(api, lambda: api.client.post(f"/api/alerts/{warning['id']}/ack", headers=staff))
    assert acked.status_code == 200, acked.text
    api.event(SITE, "calm-1", door, "occupancy", "occupied", 70)
    api.event(SITE, "calm-1", door, "door", "open", 80)
    api.event(SITE, "calm-1", door, "occupancy", "vacant", 81)
    api.event(SITE, "calm-1", door, "occupancy", "occupied", 100)
    api.event(SITE, "calm-1", door, "door", "closed", 101)
    api.event(SITE, "calm-1", door, "door", "open", 120)
    api.event(SITE, "calm-1", door, "occupancy", "vacant", 121)
    before = _alerts(api, first)
    assert before["duration_warning"]["acknowledged_by"] == "staff-user", before
    assert before["duration_warning"]["resolved_at"] is not None
    assert before["review_due"]["resolved_at"] is None
    return api, first


def _raised_lines(api: Api, episode_id: str) -> list[str]:
    admin = api.token("admin")
    timeline = api.client.get(f"/api/episodes/{episode_id}", headers=admin).json()["timeline"]
    return [line["detail"]["alert"] for line in timeline if line.get("kind") == "alert_raised"]


def test_a_review_of_an_older_episode_leaves_its_other_alerts_as_they_were(tmp_path: Path) -> None:
    """Fault: RoomMachine.reconsider puts the whole stored episode back before the alerts; its other
    conditions (whose resolved keys the room forgot once the episode was no longer its latest) are
    raised again under the same alert id, and the stored alert row is overwritten: its raising time,
    its acknowledgement (a person's change) lost, a second `alert_raised` line on the timeline."""
    api, first = _older_with_acknowledged_warning(tmp_path)
    try:
        before = _alerts(api, first)["duration_warning"]
        api.clock.set(T0 + dt.timedelta(seconds=125))
        staff = api.token("staff", SITE)
        recorded = _by_ingest(
            api,
            lambda: api.client.post(
                f"/api/episodes/{first}/reviews", json={"name": "senior check"}, headers=staff
            ),
        )
        assert recorded.status_code == 201, recorded.text
        api.clock.set(T0 + dt.timedelta(seconds=126))
        api.service.process([])
        after = _alerts(api, first)
        assert after["review_due"]["resolved_at"] is not None  # what the change was for: it works
        assert after["duration_warning"]["acknowledged_by"] == "staff-user", after["duration_warning"]
        assert after["duration_warning"]["raised_at"] == before["raised_at"], after["duration_warning"]
        assert sorted(_raised_lines(api, first)) == ["duration_warning", "episode_started", "review_due"]
    finally:
        api.client.close()
        api.store.close()


def test_a_restart_does_not_raise_an_older_episodes_alerts_again(tmp_path: Path) -> None:
    """Fault: the start-up pass (HubService.__init__: `outliving` then `reconsider`) runs at every start
    for each older episode whose review is still not recorded, with no review recorded at all: the
    same re-raising, at each restart of the hub."""
    api, first = _older_with_acknowledged_warning(tmp_path)
    try:
        before = _alerts(api, first)["duration_warning"]
        api.clock.set(T0 + dt.timedelta(seconds=300))
        again = HubService(
            load_sites([tmp_path / "a.yaml", tmp_path / "b.yaml"]), api.store, api.clock, Topics()
        )
        _drain(api, again)
        again.process([])
        after = _alerts(api, first)
        assert after["review_due"]["resolved_at"] is None  # still not recorded
        assert after["duration_warning"]["acknowledged_by"] == "staff-user", after["duration_warning"]
        assert after["duration_warning"]["raised_at"] == before["raised_at"], after["duration_warning"]
        assert sorted(_raised_lines(api, first)) == ["duration_warning", "episode_started", "review_due"]
    finally:
        api.client.close()
        api.store.close()


BANDS = [{"max_age": 8, "max_s": 900}, {"max_age": 17, "max_s": 1800}]


def test_a_younger_child_attached_to_a_manual_episode_going_on_moves_its_limit(tmp_path: Path) -> None:
    """Fault: a child attached to (or changed on) an open hand-entered episode is written on the stored
    episode alone (records.attach_pupil: the room does not hold it, `attach_pupil_offline`), and nothing
    tells the room (no `refresh_manual`): RoomState.manual keeps the age it last read. Here the child was
    first mistaken for a 15-year-old (read by the room at the hub's restart), then corrected to the
    6-year-old it was: the 6-year-old's 15-minute limit is never raised (the 15-year-old's 30 is)."""
    room = two_device_room("calm-1", age_band_max_s=BANDS)
    api = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", rooms=[room])
    try:
        senior, admin = api.token("senior", SITE), api.token("admin")
        older = {"site": SITE, "first_name": "Sam", "last_name": "Older", "date_of_birth": "2011-01-01"}
        younger = {"site": SITE, "first_name": "Alex", "last_name": "Younger", "date_of_birth": "2020-01-01"}
        older_id = api.client.post("/api/pupils", json=older, headers=admin).json()["id"]
        younger_id = api.client.post("/api/pupils", json=younger, headers=admin).json()["id"]
        body = {
            "site": SITE,
            "room": "calm-1",
            "started_at": "2026-11-23T09:59:00.000Z",
            "reason": "sensors down",
        }
        created = api.client.post("/api/episodes", json=body, headers=senior)
        assert created.status_code == 201, created.text
        episode_id = created.json()["id"]
        _drain(api)

        def put(pupil: str) -> Any:
            return api.client.put(
                f"/api/episodes/{episode_id}/pupil", json={"pupil_id": pupil}, headers=senior
            )

        assert _by_ingest(api, lambda: put(older_id)).status_code == 200
        again = HubService(
            load_sites([tmp_path / "a.yaml", tmp_path / "b.yaml"]), api.store, api.clock, Topics()
        )
        _drain(api, again)  # the restarted hub's rooms read the open manual episode: the child is 15
        api.client.close()
        api.service, api.client = again, TestClient(create_app(again))  # the restarted hub's API
        assert _by_ingest(api, lambda: put(younger_id)).status_code == 200
        stored = api.store.get_episode(episode_id)
        assert stored is not None and '"pupil_age":6' in stored.data
        api.clock.set(T0 + dt.timedelta(seconds=845))  # 904 s in: past the 6-year-old's 900 s limit
        again.process([])
        raised = _alerts(api, episode_id)
        assert "duration_limit" in raised, raised
    finally:
        api.client.close()
        api.store.close()


def test_a_last_day_on_roll_before_the_first_is_refused_on_an_update_too(tmp_path: Path) -> None:
    """Fault: PupilIn._roll_in_order compares only the request's own dates; an update (the same
    `reference`) giving `left_on` alone is merged onto the stored `joined_on` (RecordStore.save_pupils
    keeps the fields not sent), so a typo (2025 for 2027) is stored, not a 422 (docs/incidents.md), and
    the child is on no period's register (analytics.on_roll): the leaders' `children` under-counted."""
    api = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        senior = api.token("senior", SITE)
        child = {
            "site": SITE,
            "reference": "R1",
            "first_name": "Sam",
            "last_name": "Lee",
            "joined_on": "2026-09-01",
        }
        assert api.client.post("/api/pupils", json=child, headers=senior).status_code == 201
        typo = {
            "site": SITE,
            "reference": "R1",
            "first_name": "Sam",
            "last_name": "Lee",
            "left_on": "2025-07-20",
        }
        answer = api.client.post("/api/pupils", json=typo, headers=senior)
        stored = answer.json()
        assert answer.status_code == 422, (stored["joined_on"], stored["left_on"])
        assert stored["detail"][0]["loc"] == ["body", "left_on"]
        # A file with only a `left_on` column is refused the same way, naming its line; nothing kept
        csv = "reference,first_name,last_name,left_on\nR1,Sam,Lee,2027-07-20\nR1b,Ann,Lee,\n"
        headers = {**senior, "Content-Type": "text/csv"}
        ok = api.client.post("/api/pupils/import", params={"site": SITE}, content=csv, headers=headers)
        assert ok.status_code == 200, ok.text
        bad = csv.replace("2027-07-20", "2025-07-20").replace("R1b", "R2")
        refused = api.client.post("/api/pupils/import", params={"site": SITE}, content=bad, headers=headers)
        assert refused.status_code == 422 and "line 2: left_on" in refused.text, refused.text
        [sam] = [
            p for p in api.client.get("/api/pupils", headers=senior).json()["items"] if p["reference"] == "R1"
        ]
        assert (sam["joined_on"], sam["left_on"]) == ("2026-09-01", "2027-07-20")
        assert "R2" not in {
            p["reference"] for p in api.client.get("/api/pupils", headers=senior).json()["items"]
        }
    finally:
        api.client.close()
        api.store.close()
