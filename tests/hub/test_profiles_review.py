"""A second review of the policy profiles (policies.md, semantics 2.6): each test states a fault found, what
the user sees now, and the line of the specification it breaks. Each fails until the fault is fixed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient

from seclusion_contract import format_ts
from seclusion_hub.api import create_app
from seclusion_hub.config import profile_parameters
from tests.hub.rooms import PANEL, Room, at
from tests.hub.test_api import T0
from tests.hub.test_records import Records
from tests.support.hub import two_device_room

# -- reviews: each occurrence must be recorded, not banked in advance


def test_reviews_recorded_at_the_start_do_not_stand_for_the_nursing_review_due_at_4_hours() -> None:
    """uk-mha-seclusion: "nursing review every 2 h" (policies.md); semantics 2.6: "`reviews` are due at
    `first_s` and then every `every_s` until each is recorded". A nurse records the nursing review at
    10 min and, by a double entry, again at 11 min. Now the second entry is counted for the occurrence
    due at 4 h (`core/alerts.py`: "a recording counts for the oldest one not yet recorded"), so no
    `review_due` is raised at 4 h although nobody has reviewed the patient for more than 3 hours. A
    recording may answer the occurrence due now (or the first, early), never one two hours ahead."""
    room = Room(**profile_parameters("uk-mha-seclusion"))
    room.send(PANEL, "check", "ok", 0)
    room.occupancy("occupied", 1)
    room.door("closed", 2)
    episode = room.machine.state.episode
    assert episode is not None
    for t in (600, 660):  # the review done once, entered twice
        room.tick(t)
        room.effects += room.machine.record_review(episode.id, "nursing review", "nurse", "", at(t))
    room.run_on_deadlines(4 * 3600 + 60)
    nursing = {a.rule for a in room.alerts("review_due") if a.rule.startswith("nursing review")}
    assert "nursing review#2" in nursing, (
        "no nursing review_due at 4 h: an entry at 11 min was counted for it"
    )


# -- age bands: the child's age as the register has it now


def test_a_corrected_date_of_birth_moves_the_open_episodes_age_band(tmp_path: Path) -> None:
    """us-cms-hospital: "order limit by age: under 9: 1 h, 9 to 17: 2 h, 18+: 4 h"; semantics 2.6: the
    limit is "the age band's maximum when the child's age is known". A child attached to an open episode
    with a mistyped date of birth (1990: the 4 h band) has it corrected in the register (2019: a child
    of 7, the 1 h band). Now the episode keeps the age computed at attach time (`records.py`
    `attach_pupil` is the only place `pupil_age` is set; `add_pupil` and the CSV import change the
    register alone): at 1 h 2 min no `duration_limit` is raised, and none would be until 4 h."""
    api = Records(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", policy="us-cms-hospital")
    try:
        senior = api.token("senior", "test-school")
        child = {"site": "test-school", "reference": "A1", "first_name": "Sam", "last_name": "Jones"}
        pupil = api.client.post(
            "/api/pupils", json={**child, "date_of_birth": "1990-01-01"}, headers=senior
        ).json()
        api.event("test-school", "calm-1", "calm-1-panel", "observer", "present", 0)
        api.event("test-school", "calm-1", "calm-1-door", "occupancy", "occupied", 1)
        api.event("test-school", "calm-1", "calm-1-door", "door", "closed", 2)
        [episode] = api.client.get("/api/episodes", params={"room": "calm-1"}, headers=senior).json()["items"]
        api.service.start()  # attaching a child to the room's open episode goes through the ingest thread
        attached = api.client.put(
            f"/api/episodes/{episode['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=senior
        )
        assert attached.status_code == 200, attached.text
        corrected = api.client.post(
            "/api/pupils", json={**child, "date_of_birth": "2019-06-01"}, headers=senior
        )
        assert corrected.json()["date_of_birth"] == "2019-06-01"
        api.service.stop()
        api.clock.set(T0 + dt.timedelta(seconds=3720))
        api.service.process([])
        alerts = api.client.get("/api/alerts", params={"state": "all"}, headers=senior).json()["items"]
        limits = [a for a in alerts if a["kind"] == "duration_limit"]
        assert limits, "a child of 7 an hour in seclusion, and no duration_limit (the 1 h band)"
    finally:
        api.service.stop()
        api.client.close()
        api.store.close()


# -- a room taken out of the site file: its records still get the site profile's deadlines


def test_ending_a_manual_episode_of_a_room_taken_out_of_the_site_file_gives_its_record_deadlines(
    tmp_path: Path,
) -> None:
    """A manual episode is entered for calm-2 while its sensors are broken; the room is then taken out of
    the site file (closed for works) and the hub restarted. Now the senior who enters the episode's end
    gets a 500: `service.incident_end` reads `loaded.policies[room]`, a KeyError for a room no longer
    there, and the record never reaches `awaiting_record` nor gets its deadlines. policies.md: "a site
    picks one [profile], a room may override numbers"; the site's profile is what such a room falls back
    to (config.py `LoadedSite.profile`), here england-schools-2026: "record same day"."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    before = Records(tmp_path, url)
    senior = before.token("senior", "test-school")
    body = {
        "site": "test-school",
        "room": "calm-2",
        "started_at": format_ts(T0 - dt.timedelta(minutes=20)),
        "reason": "the door sensor failed; timed by the teacher's watch",
    }
    created = before.client.post("/api/episodes", json=body, headers=senior)
    assert created.status_code == 201, created.text
    episode = created.json()
    before.client.close()
    before.store.close()

    after = Records(tmp_path, url, rooms=[two_device_room("calm-1")])
    client = TestClient(create_app(after.service), raise_server_exceptions=False)
    try:
        senior = after.token("senior", "test-school")
        ended = client.post(
            f"/api/episodes/{episode['id']}/end", json={"ended_at": format_ts(T0)}, headers=senior
        )
        assert ended.status_code == 200, f"{ended.status_code}: {ended.text}"
        record = client.get(f"/api/incidents/{episode['incident_id']}", headers=senior).json()
        assert record["status"] == "awaiting_record"
        assert record["due"]["record"] == "2026-11-24T00:00:00.000Z"
    finally:
        client.close()
        after.client.close()
        after.store.close()


MIDNIGHT = dt.datetime(2026, 11, 24, 0, 0, tzinfo=dt.UTC)  # the record of Monday's episode falls due


def _overdue(api: Records, at_: dt.datetime) -> dict[str, Any]:
    """The hub looks at the records' deadlines at `at_`: the `record` step's report_overdue alert."""
    api.clock.set(at_)
    api.service.process([api.service.report_check()])
    senior = api.token("senior", "test-school")
    items = api.client.get("/api/alerts", params={"state": "all"}, headers=senior).json()["items"]
    [alert] = [a for a in items if a["kind"] == "report_overdue" and a["rule"] == "record"]
    return dict(alert)


def test_a_report_overdue_of_a_room_taken_out_escalates_by_the_sites_profile_not_the_built_in_one(
    tmp_path: Path,
) -> None:
    """A site's own profile waits 600 s for an acknowledgement (`ack_timeout_s: 600`). A room whose
    record is overdue has been taken out of the site file. Now its `report_overdue` climbs a tier every
    60 s, the built-in default: `service._report_context` uses `Policy()` for a room no longer
    configured, not the site's profile (which `LoadedSite.profile` keeps for exactly such rooms).
    policies.md: "`ack_timeout_s`: before an unacknowledged alert escalates to the next tier", a number
    of the profile the site picked."""
    (tmp_path / "profiles").mkdir()
    own = {
        "name": "slow-school",
        "base": "england-schools-2026",
        "parameters": {"ack_timeout_s": 600, "renotify_s": 1800},
    }
    (tmp_path / "profiles" / "slow-school.yaml").write_text(yaml.safe_dump(own))
    recipients = [
        {"name": f"The {t}", "tier": t, "notify": ["json://127.0.0.1:9/"]} for t in ("senior", "dsl", "head")
    ]
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    site: dict[str, Any] = {"policy": "profiles/slow-school.yaml", "recipients": recipients}
    before = Records(tmp_path, url, **site)
    before.ended_episode()  # in calm-1, ending Monday 10:10 UTC: its record is due at midnight
    before.client.close()
    before.store.close()

    after = Records(tmp_path, url, rooms=[two_device_room("calm-2")], **site)
    try:
        raised = _overdue(after, MIDNIGHT + dt.timedelta(seconds=30))
        assert raised["tier"] == "senior"
        later = _overdue(after, MIDNIGHT + dt.timedelta(seconds=150))
        assert [e["tier"] for e in later["escalations"]] == ["senior"], (
            "escalated after 60 s though the site's profile says ack_timeout_s 600"
        )
    finally:
        after.service.stop()
        after.client.close()
        after.store.close()
