"""Incident records say no more than the system knows and skip nothing the law asks for: a hand-entered
episode's lock, readings that may be missing, a child's own use of the room, a child named on an
empty room's record, a review's own note, what a hand-entered end is audited with (from a review;
each failed before its fix)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from seclusion_contract import format_ts
from tests.hub.test_api import T0
from tests.hub.test_records import COMPLETE, Records


def _pupil(api: Records, first: str = "Sam", last: str = "Jones") -> dict[str, Any]:
    senior = api.token("senior", "test-school")
    body = {"site": "test-school", "first_name": first, "last_name": last}
    return dict(api.client.post("/api/pupils", json=body, headers=senior).json())


def _recorded(api: Records, ep: dict[str, Any], pupil: dict[str, Any]) -> str:
    staff = api.token("staff", "test-school")
    incident = f"/api/incidents/{ep['incident_id']}"
    if not getattr(api, "_started", False):
        api.service.start()  # the ingest thread: attaching a child to the room's latest episode
        api._started = True  # type: ignore[attr-defined]
    put = api.client.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=staff)
    assert put.status_code == 200, put.text
    assert api.client.patch(incident, json=COMPLETE, headers=staff).status_code == 200
    done = api.client.post(f"{incident}/record", headers=staff)
    assert done.status_code == 200, done.text
    return incident


def enter_episode(
    api: Records,
    started_at: dt.datetime,
    ended_at: dt.datetime | None = None,
    *,
    room: str = "calm-1",
    reason: str = "The door sensor is off its bracket; timed by the teacher's watch.",
) -> dict[str, Any]:
    """A senior enters an episode by hand (the sensors failed): `POST /api/episodes`, the episode made."""
    body = {"site": "test-school", "room": room, "started_at": format_ts(started_at), "reason": reason}
    if ended_at is not None:
        body["ended_at"] = format_ts(ended_at)
    made = api.client.post("/api/episodes", json=body, headers=api.token("senior", "test-school"))
    assert made.status_code == 201, made.text
    return dict(made.json())


def test_a_manual_episodes_parent_copy_never_says_the_door_was_not_locked(api: Records) -> None:
    """A manual episode is entered because the sensors failed: nothing recorded the lock. In a room
    whose door device has a lock sensor, the copy told the parents "It was not locked"."""
    senior = api.token("senior", "test-school")
    api.clock.set(T0 + dt.timedelta(hours=1))
    ep = enter_episode(api, T0, T0 + dt.timedelta(minutes=12))
    assert ep["manual"] is True
    incident = _recorded(api, ep, _pupil(api))
    html = api.client.get(f"{incident}/parent-copy.html", headers=senior).text
    page = _page(api, f"/records/{ep['incident_id']}")
    assert "entered by a member of staff" in html
    # Then neither the copy nor the record page claims what no sensor recorded
    said = [words for words in ("It was not locked", "Closed, not locked") if words in html]
    said += ["page: Not locked or held"] if "Not locked or held" in page else []
    assert said == [], "a hand-entered episode's lock was recorded by nobody"


def _page(api: Records, path: str) -> str:
    """A record page as a senior member of staff signed in (the session cookie) sees it."""
    from seclusion_hub.auth import create_token

    token = create_token(api.store, "page-user", "senior", ["test-school"], False, T0)
    api.client.cookies.set("seclusion_session", token)
    try:
        response = api.client.get(path)
        assert response.status_code == 200, response.text
        return response.text
    finally:
        api.client.cookies.clear()


def _ended_with_gap(api: Records) -> dict[str, Any]:
    """An episode during which the panel device skipped a sequence number (a reading lost)."""
    api.event("test-school", "calm-1", "calm-1-panel", "observer", "present", 0)
    api.event("test-school", "calm-1", "calm-1-door", "occupancy", "occupied", 1)
    api.event("test-school", "calm-1", "calm-1-door", "door", "closed", 2)
    api.seq["calm-1-panel"] += 1  # seq 2 never arrives: perhaps `observer: absent`
    api.event("test-school", "calm-1", "calm-1-panel", "observer", "present", 300)
    api.event("test-school", "calm-1", "calm-1-door", "door", "open", 602)
    api.event("test-school", "calm-1", "calm-1-door", "occupancy", "vacant", 603)
    admin = api.token("admin")
    items = api.client.get("/api/episodes", params={"room": "calm-1"}, headers=admin).json()["items"]
    return dict(items[0])


def test_the_parents_copy_says_when_some_readings_may_be_missing(api: Records) -> None:
    """The record page says "Some of a device's readings may be missing ... these times may be
    incomplete"; the parents' copy of the same record says so too, and never "at the viewing panel for
    the whole time": more than the system knows."""
    ep = _ended_with_gap(api)
    assert ep["possible_loss"] is True
    incident = _recorded(api, ep, _pupil(api))
    staff = api.token("staff", "test-school")
    page = _page(api, f"/records/{ep['incident_id']}")
    assert "readings may be missing" in page
    html = api.client.get(f"{incident}/parent-copy.html", headers=staff).text
    assert "at the viewing panel for the whole time" not in html  # more than the system knows
    assert "readings from this time may be missing" in html, (
        "the copy gives no hint that readings may be missing"
    )


def test_a_voluntary_records_copy_says_the_child_chose_to_use_the_room(api: Records) -> None:
    """The record says the child chose to use the room and could leave (`voluntary`, with its reason);
    the parents' copy says so, with the reason, not "Why we used the calm room"."""
    ep = api.ended_episode()
    staff = api.token("staff", "test-school")
    api.service.start()
    api._started = True  # type: ignore[attr-defined]
    pupil = _pupil(api)
    incident = f"/api/incidents/{ep['incident_id']}"
    api.client.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=staff)
    reason = "Sam asked for the calm room and came out by himself when he was ready."
    body = {**COMPLETE, "classification": "voluntary", "voluntary_reason": reason}
    assert api.client.patch(incident, json=body, headers=staff).status_code == 200
    assert api.client.post(f"{incident}/record", headers=staff).status_code == 200
    html = api.client.get(f"{incident}/parent-copy.html", headers=staff).text
    assert "Why we used" not in html  # not the school's decision
    assert "chose to use the room" in html and reason in html, (
        "the copy never says it was the child's own use"
    )


def test_the_page_never_says_not_locked_for_a_room_without_a_lock_sensor(tmp_path: Path) -> None:
    """Lock sensors are optional. For a room none of whose devices reports the lock, the parents' copy
    says it "was not recorded", and so does the record page staff complete (not "Not locked or held")."""
    room = {
        "id": "calm-1",
        "name": "Calm room calm-1",
        "supervision": "observer",
        "devices": [
            {"id": "calm-1-door", "sensors": ["door", "occupancy"]},
            {"id": "calm-1-panel", "sensors": ["observer", "check"]},
        ],
        "policy_overrides": {"heartbeat_s": 600},
    }
    api = Records(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", rooms=[room])
    try:
        ep = api.ended_episode()
        incident = _recorded(api, ep, _pupil(api))
        html = api.client.get(f"{incident}/parent-copy.html", headers=api.token("staff", "test-school")).text
        assert "whether it was locked or held shut was not recorded" in html
        page = _page(api, f"/records/{ep['incident_id']}")
        assert "Not locked or held" not in page, "the page says more than the sensors recorded"
    finally:
        api.service.stop()
        api.client.close()
        api.store.close()


def test_a_second_review_with_no_note_does_not_keep_the_first_reviewers_note_about_another_child(
    api: Records,
) -> None:
    """docs/incidents.md: after the child is changed, the earlier review's "note stays in the record
    until the next review replaces it": a next review without a note never shows the earlier reviewer's
    note, about the other child, under the new review."""
    ep = api.ended_episode()
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    first, second = _pupil(api, "Sam", "Jones"), _pupil(api, "Ana", "Lima")
    incident = _recorded(api, ep, first)

    def parents_and_debriefs() -> None:
        api.client.post(
            f"{incident}/parent-contacts", json={"method": "phone", "outcome": "reached"}, headers=staff
        )
        sent = api.client.post(
            f"{incident}/parent-contacts",
            json={"kind": "copy", "method": "handed", "outcome": "sent"},
            headers=staff,
        )
        assert sent.json()["status"] == "parent_notified", sent.text

    parents_and_debriefs()
    debriefs = {
        "debrief_child": "Talked with Sam.",
        "debrief_staff": "Team debrief.",
        "follow_up_offered": True,
    }
    assert api.client.patch(incident, json=debriefs, headers=staff).status_code == 200
    old_note = "Sam's plan updated: ear defenders before assembly."
    assert (
        api.client.post(f"{incident}/review", json={"note": old_note}, headers=senior).json()["status"]
        == "reviewed"
    )
    # The record was about another child: changed, the parents' steps and the review start again
    put = api.client.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": second["id"]}, headers=staff)
    assert put.status_code == 200
    assert api.client.get(incident, headers=staff).json()["status"] == "recorded"
    parents_and_debriefs()
    from seclusion_hub.auth import create_token

    second_token = create_token(api.store, "second-senior", "senior", ["test-school"], False, T0)
    other_senior = {"Authorization": f"Bearer {second_token}"}
    again = api.client.post(f"{incident}/review", json={}, headers=other_senior).json()
    assert again["status"] == "reviewed" and again["reviewed_by"] == "second-senior"
    assert again["record"].get("review_note") != old_note, (
        "the old reviewer's note is kept under the new review"
    )


NO_CHILD: dict[str, Any] = {
    "staff": [{"name": "Ms Adeyemi", "role": "involved"}],
    "before": "The room was checked after the PIR kept reporting.",
    "classification": "no_child",
    "no_child_reason": "Ms Adeyemi looked through the panel: the room was empty.",
}


def test_a_child_attached_to_a_reviewed_empty_rooms_record_does_not_quietly_skip_the_parents(
    api: Records,
) -> None:
    """A record reviewed as "no child in the room" needs no parents' steps. Staff then attach a child to
    it (there was one after all): the API takes it (200), the record now names a child, and its parents'
    deadlines still count as met, "Not needed", no `report_overdue`: the parents are never told. The
    docs: such a record "names no child", and "a wrong 'no child' never quietly skips the parents"."""
    ep = api.ended_episode()
    staff, senior = api.token("staff", "test-school"), api.token("senior", "test-school")
    incident = f"/api/incidents/{ep['incident_id']}"
    api.service.start()
    api._started = True  # type: ignore[attr-defined]
    assert api.client.patch(incident, json=NO_CHILD, headers=staff).status_code == 200
    assert api.client.post(f"{incident}/record", headers=staff).status_code == 200
    assert api.client.post(f"{incident}/review", json={}, headers=senior).json()["status"] == "reviewed"
    child = _pupil(api)
    put = api.client.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": child["id"]}, headers=staff)
    body = api.client.get(incident, headers=staff).json()
    late = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    overdue = [r.id for r in api.service.records.overdue(late)]
    # Either the child is refused on a record that says no child was there, or her parents are owed
    # their notice and copy again.
    assert put.status_code == 409 or ep["incident_id"] in overdue, (
        f"child attached ({put.status_code}), record {body['status']} / {body['classification']} names "
        f"{body['pupil_id']}, and nothing is overdue: the parents are never told"
    )


def test_a_hand_entered_end_is_audited_with_what_was_entered(api: Records) -> None:
    """docs/incidents.md, Audit: every change by a person is audited with what it changed: a
    hand-entered end names the end time entered and the record it moves to `awaiting_record`."""
    from sqlmodel import select

    from seclusion_hub.models import AuditEntry

    senior = api.token("senior", "test-school")
    api.clock.set(T0 + dt.timedelta(hours=1))
    made = enter_episode(api, T0, room="calm-2")
    ended = api.client.post(
        f"/api/episodes/{made['id']}/end",
        json={"ended_at": format_ts(T0 + dt.timedelta(minutes=9))},
        headers=senior,
    )
    assert ended.status_code == 200, ended.text
    with api.store.session() as s:
        entries = s.exec(select(AuditEntry)).all()
    manual_end = [e for e in entries if e.action == "manual_episode_end"]
    assert manual_end and "ended_at" in json_text(manual_end[0].detail), (
        "the end time entered is not in its entry"
    )
    assert manual_end[0].detail["incident_id"] == made["incident_id"]
    assert manual_end[0].detail["ended_at"] == format_ts(T0 + dt.timedelta(minutes=9))


def json_text(value: Any) -> str:
    import json

    return json.dumps(value)
