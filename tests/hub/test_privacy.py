"""Children's data: what a person is shown is audited, what a page or an error says names no child and
no other school (found by a privacy review; each failed before its fix)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from seclusion_hub.models import AuditEntry
from tests.hub.test_api import Api
from tests.support.hub import two_device_room

REVIEWED_ROOM = two_device_room(
    "calm-1", reviews=[{"name": "senior-check", "first_s": 900, "tier": "senior"}]
)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", rooms=[REVIEWED_ROOM, two_device_room("calm-2")])
    yield a
    a.service.stop()
    a.client.close()
    a.store.close()


def _audits(api: Api) -> list[AuditEntry]:
    with api.store.session() as s:
        return list(s.exec(select(AuditEntry)).all())


def _open_episode(api: Api) -> dict[str, Any]:
    api.event("test-school", "calm-1", "calm-1-panel", "observer", "present", 0)
    api.event("test-school", "calm-1", "calm-1-door", "occupancy", "occupied", 1)
    api.event("test-school", "calm-1", "calm-1-door", "door", "closed", 2)
    admin = api.token("admin")
    return dict(api.client.get("/api/episodes", params={"room": "calm-1"}, headers=admin).json()["items"][0])


def test_recording_a_review_returns_the_episode_and_audits_that_read(api: Api) -> None:
    """POST /api/episodes/{id}/reviews answers with the whole episode (the child's `pupil_id`, the
    times, the supervision accounting, the reviews with their notes): a change and a read of the
    episode by a person, audited as GET /api/episodes/{id} is."""
    episode = _open_episode(api)
    senior = api.token("senior", "test-school")
    pupil = api.client.post(
        "/api/pupils",
        json={"site": "test-school", "first_name": "Sam", "last_name": "Jones"},
        headers=senior,
    ).json()
    staff = api.token("staff", "test-school")
    api.service.start()  # attaching and reviewing go through the ingest thread
    assert (
        api.client.put(
            f"/api/episodes/{episode['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=staff
        ).status_code
        == 200
    )
    before = len(_audits(api))
    answer = api.client.post(
        f"/api/episodes/{episode['id']}/reviews", json={"name": "senior-check", "note": "ok"}, headers=staff
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["pupil_id"] == pupil["id"], "the answer shows the child of the episode"
    new = _audits(api)[before:]
    assert any(
        e.actor == "staff-user" and e.target_type == "episode" and e.target_id == episode["id"] for e in new
    ), f"no audit entry for the episode shown to staff-user: {[(e.action, e.target_type) for e in new]}"


def test_a_register_file_without_a_header_row_is_refused_without_echoing_a_childs_name(api: Api) -> None:
    """api.py's own rule for 422s: "Name the field and the problem, never the value" (a child's name).
    A register file exported without its header row would make the first child's row the header: the
    422 says the header row is missing, and never echoes the child's name or date of birth."""
    senior = api.token("senior", "test-school")
    csv = "Samira,Okonkwo-Bright,2016-03-04\nLeo,Hart,2015-01-02\n"
    answer = api.client.post(
        "/api/pupils/import",
        params={"site": "test-school"},
        content=csv.encode(),
        headers={**senior, "Content-Type": "text/csv"},
    )
    assert answer.status_code == 422
    assert "Samira" not in answer.text and "Okonkwo" not in answer.text and "2016-03-04" not in answer.text, (
        answer.text
    )


def test_the_record_page_does_not_list_the_report_to_the_authority_as_a_contact_with_the_parents(
    tmp_path: Path,
) -> None:
    """`POST /api/incidents/{id}/authority-notice` stores the report to the local authority as a
    contact of kind `authority` (records.py). The API keeps it apart (`authority_contacts`); so does the
    record page: staff are never told the parents were contacted when only the authority was."""
    from tests.web.test_record_pages import Hub as PagesHub

    hub = PagesHub(tmp_path)
    hub.service.start()
    try:
        ep = hub.ended_episode()
        note = {"note": "Reported to the LA designated officer by phone"}
        hub.step(ep, "/authority-notice", note, "senior")
        api = hub.api.get(f"/api/incidents/{ep['incident_id']}", headers=hub.bearer("staff")).json()
        assert api["parent_contacts"] == [] and len(api["authority_contacts"]) == 1
        page = hub.browser("staff").get(f"/records/{ep['incident_id']}")
        assert page.status_code == 200
        assert "Contacts with the parents" not in page.text and "Telling the parents" not in page.text, (
            "the authority's report is shown as a contact with the parents"
        )
        assert "Report to the local authority" in page.text and note["note"] in page.text
    finally:
        hub.service.stop()
        for client in hub.clients:
            client.close()
        hub.store.close()


def test_the_board_does_not_name_the_other_schools_on_the_hub(api: Api) -> None:
    """A staff member limited to test-school is given, in the live board's page, only their own sites'
    timezones (web.py `zones`), never another school on the hub, which the API refuses them (403)."""
    from seclusion_hub.auth import create_token
    from tests.hub.test_api import T0

    token = create_token(api.store, "staff-user", "staff", ["test-school"], False, T0)
    assert (
        api.client.get(
            "/api/episodes", params={"site": "other-school"}, headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 403
    )
    assert api.client.post("/login", data={"token": token}).status_code == 200
    board = api.client.get("/")
    assert board.status_code == 200 and "test-school" in board.text
    assert "other-school" not in board.text, "the board names a school this user may not see"


def test_a_refused_record_of_another_school_does_not_say_which_school_it_belongs_to(api: Api) -> None:
    """Asked for a record by its id only, the 403 never names the school the record belongs to."""
    admin = api.token("admin")
    made = api.client.post(
        "/api/episodes",
        json={
            "site": "other-school",
            "room": "quiet-1",
            "started_at": "2026-11-23T09:00:00.000Z",
            "ended_at": "2026-11-23T09:05:00.000Z",
            "reason": "sensors were off",
        },
        headers=admin,
    )
    assert made.status_code == 201, made.text
    incident_id = made.json()["incident_id"]
    staff = api.token("staff", "test-school")
    answer = api.client.get(f"/api/incidents/{incident_id}", headers=staff)
    assert answer.status_code == 403
    assert "other-school" not in answer.text, answer.text


def test_the_overviews_audit_entry_names_only_the_children_the_page_showed(tmp_path: Path) -> None:
    """leaders.py overview: "whose names were on the screen is part of the read" (`children_named`).
    The page names a child only in a `pattern` flag (overview.html): a lengthy episode's child, not
    shown, is not recorded in the audit log as read by the leader."""
    api = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        api.event("test-school", "calm-1", "calm-1-panel", "observer", "present", 0)
        api.event("test-school", "calm-1", "calm-1-door", "occupancy", "occupied", 1)
        api.event("test-school", "calm-1", "calm-1-door", "door", "closed", 2)
        api.event("test-school", "calm-1", "calm-1-door", "door", "open", 902)  # past the 600 s alert
        api.event("test-school", "calm-1", "calm-1-door", "occupancy", "vacant", 903)
        admin = api.token("admin")
        [ep] = api.client.get("/api/episodes", headers=admin).json()["items"]
        senior = api.token("senior", "test-school")
        pupil = api.client.post(
            "/api/pupils",
            json={"site": "test-school", "first_name": "Samira", "last_name": "Okafor"},
            headers=senior,
        ).json()
        api.service.start()
        staff = api.token("staff", "test-school")
        put = api.client.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=staff)
        assert put.status_code == 200, put.text
        from seclusion_hub.auth import create_token
        from tests.hub.test_api import T0

        token = create_token(api.store, "leader-user", "leader", [], False, T0)
        assert api.client.post("/login", data={"token": token}).status_code == 200
        page = api.client.get("/review", params={"site": "test-school"})
        assert page.status_code == 200 and "A lengthy episode" in page.text
        assert "Samira" not in page.text, "the page does not name the child of a lengthy episode"
        [entry] = [e for e in _audits(api) if e.actor == "leader-user" and e.target_type == "review"]
        assert entry.detail["children_named"] == [], entry.detail
    finally:
        api.service.stop()
        api.client.close()
        api.store.close()
