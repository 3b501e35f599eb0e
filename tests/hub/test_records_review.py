"""Faults found by a review of the record workflow, its deadlines and the pupil register (each fails
before its fix). SQLite only: each is a rule of the workflow, not of a database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seclusion_hub.auth import create_token
from tests.hub.test_api import T0
from tests.hub.test_records import COMPLETE, Records

NO_CHILD: dict[str, Any] = {
    "staff": [{"name": "Ms Adeyemi", "role": "involved"}],
    "before": "The room was checked after the PIR kept reporting.",
    "classification": "no_child",
    "no_child_reason": "Ms Adeyemi looked through the panel: the room was empty.",
}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Records]:
    a = Records(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    a.service.start()  # the ingest thread: attaching a child to the room's latest episode goes through it
    yield a
    a.service.stop()
    a.client.close()
    a.store.close()


def _senior(api: Records, name: str) -> dict[str, str]:
    token = create_token(api.store, name, "senior", ["test-school"], False, T0)
    return {"Authorization": f"Bearer {token}"}


def _pupil(api: Records, first: str = "Sam", last: str = "Jones", **more: Any) -> dict[str, Any]:
    body = {"site": "test-school", "first_name": first, "last_name": last, **more}
    made = api.client.post("/api/pupils", json=body, headers=api.token("senior", "test-school"))
    assert made.status_code == 201, made.text
    return dict(made.json())


def _attach(api: Records, ep: dict[str, Any], pupil: dict[str, Any]) -> Any:
    return api.client.put(
        f"/api/episodes/{ep['id']}/pupil",
        json={"pupil_id": pupil["id"]},
        headers=api.token("staff", "test-school"),
    )


def test_a_phone_call_is_not_the_written_copy(api: Records) -> None:
    """Semantics: every use is "recorded and reported in writing to parents". The page offers the written
    copy as sent only by email, letter, handed, post or other (record.html); docs/records.md: "The API
    checks the rules again, so a button that is not on the page cannot be used some other way". The API
    takes `{kind: copy, method: phone, outcome: sent}` and marks the written copy sent, and with a
    phone notice the record goes to `parent_notified`: nothing in writing ever reached the parents."""
    ep = api.ended_episode()
    staff = api.token("staff", "test-school")
    incident = f"/api/incidents/{ep['incident_id']}"
    assert _attach(api, ep, _pupil(api)).status_code == 200
    assert api.client.patch(incident, json=COMPLETE, headers=staff).status_code == 200
    assert api.client.post(f"{incident}/record", headers=staff).status_code == 200
    for method in ("phone", "in_person"):
        by_voice = api.client.post(
            f"{incident}/parent-contacts",
            json={"kind": "copy", "method": method, "outcome": "sent"},
            headers=staff,
        )
        assert by_voice.status_code == 422 or by_voice.json()["parent_copy_sent_at"] is None, (
            f"a written copy 'sent' by {method} marks the copy sent"
        )
    told = api.client.post(
        f"{incident}/parent-contacts",
        json={"kind": "notice", "method": "phone", "outcome": "reached"},
        headers=staff,
    )
    assert told.json()["status"] == "recorded", "parents told by phone, and no written copy: not done"


def test_a_short_csv_row_does_not_silently_empty_a_childs_date_of_birth(api: Records) -> None:
    """docs/incidents.md, the register: "an update changes only what it gives ... so a corrected name, or
    a file from another system with fewer columns, never empties a child's date of birth or
    characteristics (the figures and the age band's time limit rest on them)". A row shorter than the
    header (its last cells missing, not empty) is read as empty cells: the child's date of birth and SEN
    are cleared without a word (200, updated 1). Either the row is refused (422 naming the line) or
    what it does not give is kept."""
    senior = api.token("senior", "test-school")
    _pupil(api, reference="A1", date_of_birth="2016-03-04", sen="ehcp")
    csv = "reference,first_name,last_name,date_of_birth,sen\nA1,Sam,Jones-Smith\n"
    done = api.client.post(
        "/api/pupils/import", params={"site": "test-school"}, content=csv.encode(), headers=senior
    )
    (child,) = api.client.get("/api/pupils", headers=senior).json()["items"]
    if done.status_code == 422:
        assert "line 2" in done.text and child["last_name"] == "Jones"
        return
    assert (child["date_of_birth"], child["sen"]) == ("2016-03-04", "ehcp"), (
        f"import answered {done.status_code} {done.text} and emptied the child's date of birth and SEN"
    )
