"""Incident records through the API: the register, the record, the parents, review, sign-off, addenda.

Each test is a story on a real database (SQLite and PostgreSQL): given an episode that has ended, when
staff and leaders act on its record, then the workflow allows or refuses as the incident issue says.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from sqlmodel import col, select

from seclusion_hub.auth import create_token
from seclusion_hub.core import incident as workflow
from seclusion_hub.core.alerts import Alert, AlertContext, AlertSaved, AlertSend, Escalation, alert_id
from seclusion_hub.core.episode import Episode
from seclusion_hub.core.incident import IncidentView, WorkflowError
from seclusion_hub.core.policy import Policy
from seclusion_hub.core.room import OlderLoss
from seclusion_hub.models import AuditEntry, IncidentRecord
from seclusion_hub.record_store import RecordStore
from seclusion_hub.store import Batch
from tests.hub.test_api import T0, Api
from tests.hub.test_notify import SmtpEndpoint
from tests.support.hub import two_device_room

COMPLETE: dict[str, Any] = {
    "staff": [{"name": "Ms Adeyemi", "role": "involved"}, {"name": "Mr Hale", "role": "witness"}],
    "before": "Sam was upset after break and threw chairs in the classroom.",
    "risk": "Sam was at risk of hurting himself and two other children nearby.",
    "de_escalation": "Calm voice, offered the sensory room and a drink, moved the other children out.",
    "condition": "Calm and tired afterwards; had a drink and a snack.",
    "injuries_child": "None seen; checked by the first aider.",
    "injuries_staff": "None.",
    "first_aid": "Checked by the first aider at 10:20, no treatment needed.",
    "child_account": "Sam said the noise in the hall was too much; he drew how he felt.",
    "classification": "seclusion",
    "what_will_change": "A quiet space offered before break; ear defenders available.",
}


class Records(Api):
    def dsl_token(self, role: str = "senior") -> dict[str, str]:
        token = create_token(self.store, "dsl-user", role, ["test-school"], True, T0)  # type: ignore[arg-type]
        return {"Authorization": f"Bearer {token}"}

    def ended_episode(self, start: float = 0) -> dict[str, Any]:
        """An episode in calm-1 from T0+start+2 s to T0+start+602 s; returns it from the API."""
        self.event("test-school", "calm-1", "calm-1-panel", "observer", "present", start)
        self.event("test-school", "calm-1", "calm-1-door", "occupancy", "occupied", start + 1)
        self.event("test-school", "calm-1", "calm-1-door", "door", "closed", start + 2)
        self.event("test-school", "calm-1", "calm-1-door", "door", "open", start + 602)
        self.event("test-school", "calm-1", "calm-1-door", "occupancy", "vacant", start + 603)
        admin = self.token("admin")
        items = self.client.get("/api/episodes", params={"room": "calm-1"}, headers=admin).json()["items"]
        return dict(items[0])


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Records]:
    url = (
        f"sqlite:///{tmp_path / 'hub.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("fresh_postgres_db")
    )
    a = Records(tmp_path, url)
    yield a
    a.service.stop()
    a.client.close()
    a.store.close()


@pytest.fixture
def smtp_endpoint() -> Iterator[SmtpEndpoint]:
    with SmtpEndpoint() as endpoint:
        yield endpoint


def _field_of(response: Any) -> str:
    return json.dumps(response.json()["detail"])


def test_an_ended_episode_leaves_its_record_awaiting_with_deadlines_in_school_days(api: Records) -> None:
    # Given an episode ending on Monday 23 November 2026 at 10:10 UTC (London is on GMT)
    ep = api.ended_episode()
    staff = api.token("staff", "test-school")
    # When staff read its record
    body = api.client.get(f"/api/incidents/{ep['incident_id']}", headers=staff).json()
    # Then it awaits the record, due the same day, the written copy by the end of the next school day
    assert body["status"] == "awaiting_record" and body["episode_id"] == ep["id"]
    assert body["ended_at"] == "2026-11-23T10:10:02.000Z"
    assert body["due"]["record"] == "2026-11-24T00:00:00.000Z"
    assert body["due"]["parent_notice"] == "2026-11-24T00:00:00.000Z"
    assert body["due"]["parent_copy"] == "2026-11-25T00:00:00.000Z"
    assert body["due"]["authority_notice"] is None
    assert "pupil_id" in body["missing"] and "risk" in body["missing"]


def test_updating_a_child_by_reference_changes_only_what_was_sent(api: Records) -> None:
    """Adding a child again by reference (a correction of the name, or a CSV from another system with
    fewer columns) reset the date of birth, SEN, ethnicity, FSM and looked-after status to empty: the
    fairness figures were quietly distorted and the age band's time limit (semantics 2.6) lost the
    child's age (found by a review). A field sent, or a column in the file, is the new value, an empty
    one included; one left out keeps what the register had."""
    senior = api.token("senior", "test-school")
    full = {
        "site": "test-school",
        "reference": "A1",
        "first_name": "Sam",
        "last_name": "Jones",
        "date_of_birth": "2016-03-04",
        "year_group": "Y5",
        "sen": "ehcp",
        "ethnicity": "WBRI",
        "fsm": True,
        "looked_after": True,
        "characteristics": ["disability"],
    }
    assert api.client.post("/api/pupils", json=full, headers=senior).status_code == 201
    renamed = {"site": "test-school", "reference": "A1", "first_name": "Sam", "last_name": "Jones-Smith"}
    body = api.client.post("/api/pupils", json=renamed, headers=senior).json()
    kept = ("date_of_birth", "year_group", "sen", "ethnicity", "fsm", "looked_after", "characteristics")
    assert body["last_name"] == "Jones-Smith"
    assert {k: body[k] for k in kept} == {k: full[k] for k in kept}
    with api.store.session() as s:
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "add_pupil")).all()[-1]
    assert entry.detail["changed"] == ["last_name"]
    # Sent as null: cleared, on purpose.
    cleared = api.client.post("/api/pupils", json={**renamed, "ethnicity": None}, headers=senior).json()
    assert cleared["ethnicity"] is None and cleared["sen"] == "ehcp"
    # A file with fewer columns changes those columns only; an empty cell in a column it has clears.
    csv = "reference,first_name,last_name,year_group,fsm\nA1,Sam,Jones-Smith,Y6,\n"
    done = api.client.post(
        "/api/pupils/import", params={"site": "test-school"}, content=csv.encode(), headers=senior
    )
    assert done.status_code == 200 and done.json() == {"added": 0, "updated": 1}
    (child,) = api.client.get("/api/pupils", headers=senior).json()["items"]
    assert (child["year_group"], child["fsm"]) == ("Y6", None)
    assert (child["date_of_birth"], child["sen"], child["looked_after"]) == ("2016-03-04", "ehcp", True)
    assert child["characteristics"] == ["disability"]


def test_the_register_takes_children_one_by_one_and_from_csv_all_or_nothing(api: Records) -> None:
    senior = api.token("senior", "test-school")
    sam = {"site": "test-school", "reference": "A1", "first_name": "Sam", "last_name": "Jones", "sen": "ehcp"}
    one = api.client.post("/api/pupils", json=sam, headers=senior)
    assert one.status_code == 201 and one.json()["sen"] == "ehcp"
    # The same reference again updates that child, and the audit entry names that child and what changed.
    again = api.client.post("/api/pupils", json={**sam, "year_group": "Y4"}, headers=senior)
    assert again.status_code == 201 and again.json()["id"] == one.json()["id"]
    with api.store.session() as s:
        entries = s.exec(select(AuditEntry).where(AuditEntry.action == "add_pupil")).all()
    assert [e.target_id for e in entries] == [one.json()["id"]] * 2
    assert entries[-1].detail["changed"] == ["year_group"]
    csv = (
        "reference,first_name,last_name,date_of_birth,sen,fsm,looked_after,characteristics\n"
        "A1,Sam,Jones-Smith,2016-04-01,ehcp,yes,no,\n"
        "B2,Aisha,Khan,2015-09-30,sen_support,no,yes,religion;disability\n"
    )
    done = api.client.post(
        "/api/pupils/import", params={"site": "test-school"}, content=csv.encode(), headers=senior
    )
    assert done.status_code == 200 and done.json() == {"added": 1, "updated": 1}
    register = {p["reference"]: p for p in api.client.get("/api/pupils", headers=senior).json()["items"]}
    assert register["A1"]["last_name"] == "Jones-Smith" and register["A1"]["fsm"] is True
    assert register["B2"]["characteristics"] == ["religion", "disability"]
    bad = "reference,first_name,last_name,fsm\nC3,Lee,Park,perhaps\n"
    refused = api.client.post(
        "/api/pupils/import", params={"site": "test-school"}, content=bad.encode(), headers=senior
    )
    assert refused.status_code == 422 and "line 2: fsm" in _field_of(refused)
    unknown = api.client.post(
        "/api/pupils/import",
        params={"site": "test-school"},
        content=b"first_name,last_name,shoe\n",
        headers=senior,
    )
    assert unknown.status_code == 422 and "shoe" in _field_of(unknown)
    # A field past the csv module's limit is a 422 naming the CSV, not a 500.
    huge = f"first_name,last_name\nLee,{'x' * 200_000}\n"
    too_long = api.client.post(
        "/api/pupils/import", params={"site": "test-school"}, content=huge.encode(), headers=senior
    )
    assert too_long.status_code == 422 and "csv" in _field_of(too_long)
    # A name that is only spaces is no name (the parents' copy could not be made later).
    blank = api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": " ", "last_name": "Park"}, headers=senior
    )
    assert blank.status_code == 422 and "first_name" in _field_of(blank)
    blank_csv = "first_name,last_name\nLee, \t\n"
    refused = api.client.post(
        "/api/pupils/import", params={"site": "test-school"}, content=blank_csv.encode(), headers=senior
    )
    assert refused.status_code == 422 and "line 2: last_name" in _field_of(refused)
    assert len(api.client.get("/api/pupils", headers=senior).json()["items"]) == 2, "nothing of a bad file"
    # A page at a time, as every list of the contract: limit and cursor, with no child twice or missed.
    first = api.client.get("/api/pupils", params={"limit": 1}, headers=senior).json()
    assert len(first["items"]) == 1 and first["next"] is not None
    rest = api.client.get("/api/pupils", params={"limit": 1, "cursor": first["next"]}, headers=senior).json()
    assert rest["next"] is None and {p["id"] for p in first["items"] + rest["items"]} == {
        p["id"] for p in register.values()
    }
    # A child added meanwhile, before the cursor, neither pushes another out of the next page nor repeats.
    api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": "A", "last_name": "Aa"}, headers=senior
    )
    again = api.client.get("/api/pupils", params={"limit": 1, "cursor": first["next"]}, headers=senior).json()
    assert again["items"] == rest["items"]
    for params in ({"limit": 5000}, {"limit": 0}, {"cursor": "x"}):
        refused = api.client.get("/api/pupils", params=params, headers=senior)
        assert refused.status_code == 422 and ("limit" in refused.text or "cursor" in refused.text)
    # staff may not read the register as a list; reading it is audited
    assert api.client.get("/api/pupils", headers=api.token("staff", "test-school")).status_code == 403
    with api.store.session() as s:
        reads = s.exec(select(AuditEntry).where(AuditEntry.target_type == "pupils")).all()
    assert any(r.action == "read" for r in reads) and any(r.action == "import_pupils" for r in reads)


def test_a_record_goes_from_awaiting_to_closed_and_then_changes_only_by_addenda(api: Records) -> None:
    ep = api.ended_episode()
    incident = f"/api/incidents/{ep['incident_id']}"
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    dsl = api.dsl_token()
    api.service.start()  # the ingest thread: attaching a child to the room's latest episode goes through it
    pupil = api.client.post(
        "/api/pupils",
        json={
            "site": "test-school",
            "first_name": "Sam",
            "last_name": "Jones",
            "date_of_birth": "2016-04-01",
        },
        headers=senior,
    ).json()

    # Recording an incomplete record is refused, naming what is missing
    early = api.client.post(f"{incident}/record", headers=staff)
    assert early.status_code == 422 and "pupil_id" in _field_of(early)
    # The copy cannot be sent before the record exists
    copy_first = api.client.post(
        f"{incident}/parent-contacts",
        json={"kind": "copy", "method": "email", "outcome": "sent"},
        headers=staff,
    )
    assert copy_first.status_code == 409

    attached = api.client.put(
        f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=staff
    )
    assert attached.status_code == 200
    assert api.client.get(f"/api/episodes/{ep['id']}", headers=staff).json()["pupil_id"] == pupil["id"]
    half = {k: COMPLETE[k] for k in ("staff", "before", "risk")}
    assert api.client.patch(incident, json=half, headers=staff).status_code == 200
    still = api.client.post(f"{incident}/record", headers=staff)
    assert still.status_code == 422 and "de_escalation" in _field_of(still)
    assert api.client.patch(incident, json={"mood": "x"}, headers=staff).status_code == 422
    rest = {k: v for k, v in COMPLETE.items() if k not in half}
    assert api.client.patch(incident, json=rest, headers=staff).json()["missing"] == []
    recorded = api.client.post(f"{incident}/record", headers=staff).json()
    assert recorded["status"] == "recorded" and recorded["recorded_by"] == "staff-user"

    # The parents: a call not answered, then reached; the copy withheld only by a DSL with a reason
    tried = api.client.post(
        f"{incident}/parent-contacts", json={"method": "phone", "outcome": "no_answer"}, headers=staff
    )
    assert tried.status_code == 201 and tried.json()["parent_notified_at"] is None
    reached = api.client.post(
        f"{incident}/parent-contacts", json={"method": "phone", "outcome": "reached"}, headers=staff
    ).json()
    assert reached["parent_notified_at"] is not None and reached["status"] == "recorded"
    not_dsl = api.client.post(f"{incident}/parent-copy/withhold", json={"reason": "x"}, headers=senior)
    assert not_dsl.status_code == 403
    no_reason = api.client.post(f"{incident}/parent-copy/withhold", json={"reason": "  "}, headers=dsl)
    assert no_reason.status_code == 422 and "reason" in _field_of(no_reason)
    sent = api.client.post(
        f"{incident}/parent-contacts",
        json={"kind": "copy", "method": "handed", "outcome": "sent"},
        headers=staff,
    ).json()
    assert sent["status"] == "parent_notified"

    # Review needs the debriefs and the follow-up offer
    early_review = api.client.post(f"{incident}/review", json={}, headers=senior)
    assert early_review.status_code == 422 and "debrief_child" in _field_of(early_review)
    debriefs = {
        "debrief_child": "Talked with Sam.",
        "debrief_staff": "Team debrief.",
        "follow_up_offered": True,
    }
    api.client.patch(incident, json=debriefs, headers=staff)
    assert api.client.post(f"{incident}/review", json={}, headers=staff).status_code == 403
    reviewed = api.client.post(f"{incident}/review", json={"note": "Plan updated."}, headers=senior).json()
    assert reviewed["status"] == "reviewed" and reviewed["record"]["review_note"] == "Plan updated."
    closed = api.client.post(f"{incident}/sign-off", headers=senior).json()
    assert closed["status"] == "closed" and closed["closed_by"] == "senior-user"

    # Signed: no edit, no pupil change; an addendum is dated, with its author, and the record unchanged
    refused = api.client.patch(incident, json={"risk": "changed"}, headers=senior)
    assert refused.status_code == 409
    mailed = api.client.post(
        f"{incident}/parent-copy/send", json={"to": "parent@home.example"}, headers=staff
    )
    assert mailed.status_code == 409 and "signed off" in mailed.text  # refused before any mail is sent
    # The record shows the reviews done: none is added to its episode after the sign-off.
    review = api.client.post(
        f"/api/episodes/{ep['id']}/reviews", json={"name": "senior-check"}, headers=staff
    )
    assert review.status_code == 409 and "signed off" in review.text
    assert (
        api.client.put(
            f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=staff
        ).status_code
        == 409
    )
    added = api.client.post(
        f"{incident}/addenda",
        json={"field": "first_aid", "text": "The check was at 10:25, not 10:20."},
        headers=staff,
    )
    assert added.status_code == 201
    correction = added.json()  # the dated correction with its author (contract section 6)
    assert (correction["author"], correction["field"]) == ("staff-user", "first_aid")
    assert (
        correction["text"].startswith("The check was at 10:25")
        and correction["incident_id"] == ep["incident_id"]
    )
    final = api.client.get(incident, headers=staff).json()
    assert (
        final["record"]["risk"] == COMPLETE["risk"] and final["record"]["first_aid"] == COMPLETE["first_aid"]
    )
    assert final["addenda"] == [{k: correction[k] for k in ("at", "author", "field", "text")}]
    assert [(c["outcome"]) for c in final["parent_contacts"]] == ["no_answer", "reached", "sent"]
    with api.store.session() as s:
        entries = s.exec(select(AuditEntry).where(AuditEntry.target_id == ep["incident_id"])).all()
    actions = [e.action for e in entries]
    for action in (
        "edit",
        "record",
        "parent_notice",
        "parent_copy",
        "review",
        "sign_off",
        "addendum",
        "read",
    ):
        assert action in actions
    with api.store.session() as s:
        attach_entries = s.exec(
            select(AuditEntry).where(AuditEntry.target_id == ep["id"], AuditEntry.action == "attach_pupil")
        ).all()
    # Attached while the room still held the episode: written with the change, by the ingest thread.
    assert [(e.action, e.actor) for e in attach_entries] == [("attach_pupil", "staff-user")]
    edit = next(e for e in entries if e.action == "edit")
    assert (
        edit.detail["before"]["record"] == {} and edit.detail["after"]["record"]["risk"] == COMPLETE["risk"]
    )


def test_two_people_saving_the_record_form_the_second_is_told_someone_else_changed_it(api: Records) -> None:
    """Two people with the record page open each saved the whole form: the second save silently undid the
    first one's correction (found by a review). `GET` now gives the record's version (`ETag`) and `PATCH`
    with `If-Match` saves only onto that version: a record changed since answers 412, nothing saved."""
    ep = api.ended_episode()
    incident = f"/api/incidents/{ep['incident_id']}"
    staff_a = api.token("staff", "test-school")
    staff_b = api.token("staff", "test-school")
    api.client.patch(incident, json=COMPLETE, headers=staff_a)
    # Given both open the record (the form shows the record as it is now, and its version)
    seen_by_a, seen_by_b = (api.client.get(incident, headers=h) for h in (staff_a, staff_b))
    assert seen_by_a.headers["ETag"] == seen_by_b.headers["ETag"] == seen_by_a.json()["version"]
    # When A corrects the injuries and saves
    correction = {"injuries_child": "A graze on the left knee, cleaned by the first aider."}
    saved = api.client.patch(
        incident, json=correction, headers={**staff_a, "If-Match": seen_by_a.headers["ETag"]}
    )
    assert saved.status_code == 200 and saved.headers["ETag"] != seen_by_a.headers["ETag"]
    assert saved.headers["ETag"] == saved.json()["version"]
    # And B, whose page still shows the old record, saves the whole form with the child's account added
    b_form = {**seen_by_b.json()["record"], "child_account": "Sam said he felt trapped by the noise."}
    refused = api.client.patch(
        incident, json=b_form, headers={**staff_b, "If-Match": seen_by_b.headers["ETag"]}
    )
    # Then B is told someone else changed it and nothing was saved; A's correction is kept
    assert refused.status_code == 412 and "someone else changed the record" in refused.text
    final = api.client.get(incident, headers=staff_a)
    assert final.json()["record"]["injuries_child"].startswith("A graze")
    assert final.json()["record"]["child_account"] == COMPLETE["child_account"]
    assert final.headers["ETag"] == saved.headers["ETag"]
    # Two corrections within one tick of the clock are two versions; `*` and a list of tags match
    again = api.client.patch(
        incident,
        json={"injuries_staff": "None seen."},
        headers={**staff_a, "If-Match": f'"x", {final.headers["ETag"]}'},
    )
    assert again.status_code == 200 and again.headers["ETag"] != final.headers["ETag"]
    assert (
        api.client.patch(
            incident, json={"risk": COMPLETE["risk"]}, headers={**staff_b, "If-Match": "*"}
        ).status_code
        == 200
    )
    # Without If-Match the fields sent are added to the record as it is now, as before
    plain = api.client.patch(incident, json={"child_account": "Sam said he felt trapped."}, headers=staff_b)
    assert plain.status_code == 200 and plain.json()["record"]["injuries_child"].startswith("A graze")


def test_a_running_episode_cannot_be_recorded_but_its_child_can_be_attached(api: Records) -> None:
    api.event("test-school", "calm-1", "calm-1-door", "occupancy", "occupied", 0)
    api.event("test-school", "calm-1", "calm-1-door", "door", "closed", 1)
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    ep = api.client.get("/api/episodes", params={"open": "true"}, headers=staff).json()["items"][0]
    api.service.start()
    pupil = api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": "Ana", "last_name": "Lima"}, headers=senior
    ).json()
    assert api.client.post(f"/api/incidents/{ep['incident_id']}/record", headers=staff).status_code == 409
    put = api.client.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=staff)
    assert put.status_code == 200
    assert api.service.machines[("test-school", "calm-1")].state.episode is not None
    assert api.service.machines[("test-school", "calm-1")].state.episode.pupil_id == pupil["id"]
    other = api.client.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": "nobody"}, headers=staff)
    assert other.status_code == 422 and "pupil_id" in _field_of(other)
    assert (
        api.client.get(f"/api/incidents/{ep['incident_id']}", headers=staff).json()["pupil_id"] == pupil["id"]
    )


def test_a_child_attached_to_an_older_episode_keeps_what_the_hub_wrote_on_it_meanwhile(
    api: Records,
) -> None:
    """An episode older than the room's latest is changed in the episode table alone, by the API (a
    child attached) and by the hub's writer (a gap flags it `possible_loss`, semantics 4.4): the child
    is set on the row as it is then, so the flag written after the API read the row is kept."""
    first = api.ended_episode(0)
    api.ended_episode(1000)  # the room's latest now: `first` is older
    api.service.start()
    senior, staff = api.token("senior", "test-school"), api.token("staff", "test-school")
    pupil = api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": "Ana", "last_name": "Lima"}, headers=senior
    ).json()
    read = api.store.get_episode(first["id"])  # the API's copy, before the writer's change
    assert read is not None
    window = OlderLoss("test-school", "calm-1", "calm-1-panel", 2, T0, T0 + dt.timedelta(seconds=700), ())
    api.store.write(Batch(loss_windows=[window]), api.clock.now())
    entry = AuditEntry(
        at=api.clock.now(),
        actor="staff-user",
        action="attach_pupil",
        target_type="episode",
        target_id=read.id,
    )
    RecordStore(api.store.engine).attach_pupil_offline(read, pupil["id"], 9, entry, api.clock.now())
    row = api.store.get_episode(first["id"])
    assert row is not None and row.pupil_id == pupil["id"]
    stored = Episode.model_validate_json(row.data)
    assert stored.possible_loss and (stored.pupil_id, stored.pupil_age) == (pupil["id"], 9)
    # Through the API, on the same older episode: the room no longer holds it, so the same path.
    other = api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": "Bo", "last_name": "Lima"}, headers=senior
    ).json()
    put = api.client.put(f"/api/episodes/{first['id']}/pupil", json={"pupil_id": other["id"]}, headers=staff)
    assert put.status_code == 200
    shown = api.client.get(f"/api/episodes/{first['id']}", headers=staff).json()
    assert shown["pupil_id"] == other["id"] and shown["possible_loss"]


def test_the_workflow_table_refuses_every_step_out_of_order() -> None:
    now = T0 + dt.timedelta(hours=1)
    full = IncidentView(status="awaiting_record", pupil_id="p", record=dict(COMPLETE))
    for status in ("open", "recorded", "parent_notified", "reviewed", "closed"):
        with pytest.raises(WorkflowError) as refused:
            workflow.record(IncidentView(status=status, pupil_id="p", record=dict(COMPLETE)), "a", now)
        assert refused.value.status == 409
    assert workflow.record(full, "a", now)["status"] == "recorded"
    for status in ("open", "awaiting_record", "recorded", "reviewed", "closed"):
        with pytest.raises(WorkflowError):
            workflow.review(IncidentView(status=status, pupil_id="p", record=dict(COMPLETE)), "a", now)
    for status in ("open", "awaiting_record", "recorded", "parent_notified", "closed"):
        with pytest.raises(WorkflowError):
            workflow.sign_off(IncidentView(status=status, pupil_id="p", record={}), "a", now)
    with pytest.raises(WorkflowError) as voluntary:
        workflow.record(
            IncidentView(
                status="awaiting_record", pupil_id="p", record={**COMPLETE, "classification": "voluntary"}
            ),
            "a",
            now,
        )
    assert voluntary.value.field == "voluntary_reason"
    with pytest.raises(WorkflowError) as signed:
        workflow.edit(IncidentView(status="closed", pupil_id="p", record={}), {"risk": "x"})
    assert signed.value.status == 409
    # recorded, told, and the copy withheld by a DSL: the parents count as notified
    told = IncidentView(status="recorded", pupil_id="p", record=dict(COMPLETE), parent_notified_at=now)
    assert (
        workflow.withhold_copy(told, "dsl", True, "A safeguarding reason.", now)["status"]
        == "parent_notified"
    )
    with pytest.raises(WorkflowError) as not_dsl:
        workflow.withhold_copy(told, "someone", False, "A reason.", now)
    assert not_dsl.value.status == 403


def test_a_missed_deadline_raises_report_overdue_once_and_it_resolves_when_done(api: Records) -> None:
    # Given an episode that ended on Monday at 10:10, its record due by the end of the day
    ep = api.ended_episode()
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")

    def check(at: dt.datetime) -> dict[str, dict[str, Any]]:
        api.clock.set(at)
        api.service.process([api.service.report_check()])
        items = api.client.get("/api/alerts", params={"state": "all"}, headers=senior).json()["items"]
        return {a["rule"]: a for a in items if a["kind"] == "report_overdue"}

    # Before midnight nothing is overdue
    assert check(dt.datetime(2026, 11, 23, 23, 59, 59, tzinfo=dt.UTC)) == {}
    # Just after midnight the record and the parents' notice are overdue: raised to the senior tier
    overdue = check(dt.datetime(2026, 11, 24, 0, 0, 30, tzinfo=dt.UTC))
    assert set(overdue) == {"record", "parent_notice"}
    assert all(
        a["tier"] == "senior" and a["severity"] == "warning" and a["resolved_at"] is None
        for a in overdue.values()
    )
    assert overdue["record"]["due_at"] == "2026-11-24T00:00:00.000Z" and overdue["record"]["late"] is True
    # A senior member of staff acknowledges it
    api.service.start()  # acknowledging goes through the ingest thread
    acked = api.client.post(f"/api/alerts/{overdue['record']['id']}/ack", headers=senior)
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "senior-user"
    api.service.stop()
    # Looking again raises nothing new
    again = check(dt.datetime(2026, 11, 24, 0, 1, 30, tzinfo=dt.UTC))
    assert {k: a["id"] for k, a in again.items()} == {k: a["id"] for k, a in overdue.items()}
    # When the record is done, its alert resolves; the parents' notice stays overdue
    pupil = api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": "Sam", "last_name": "Jones"}, headers=senior
    ).json()
    api.service.start()
    api.client.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=staff)
    api.service.stop()
    api.client.patch(f"/api/incidents/{ep['incident_id']}", json=COMPLETE, headers=staff)
    assert api.client.post(f"/api/incidents/{ep['incident_id']}/record", headers=staff).status_code == 200
    after = check(dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC))
    assert after["record"]["resolved_at"] is not None and after["parent_notice"]["resolved_at"] is None
    # The written copy falls due at the end of Tuesday, the next school day
    later = check(dt.datetime(2026, 11, 25, 0, 0, 1, tzinfo=dt.UTC))
    assert later["parent_copy"]["resolved_at"] is None and len(later) == 3


# report_overdue escalates and is sent again like any alert that needs acknowledgement (semantics 5.2)

MIDNIGHT = dt.datetime(2026, 11, 24, 0, 0, tzinfo=dt.UTC)  # the record of Monday's episode falls due


def _after_midnight(seconds: float) -> dt.datetime:
    return MIDNIGHT + dt.timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "postgresql"])
def escalating(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Records]]:
    """A hub whose site has recipients on `tiers` (a channel nobody listens on) and whose room calm-1
    waits 600 s for an acknowledgement and sends an acknowledged alert again every 1800 s."""
    made: list[Records] = []

    def make(tiers: tuple[str, ...]) -> Records:
        url = (
            f"sqlite:///{tmp_path / 'hub.db'}"
            if request.param == "sqlite"
            else request.getfixturevalue("fresh_postgres_db")
        )
        recipients = [{"name": f"The {t}", "tier": t, "notify": ["json://127.0.0.1:9/"]} for t in tiers]
        rooms = [two_device_room("calm-1", ack_timeout_s=600, renotify_s=1800), two_device_room("calm-2")]
        made.append(Records(tmp_path, url, rooms=rooms, recipients=recipients))
        return made[-1]

    yield make
    for a in made:
        a.service.stop()
        a.client.close()
        a.store.close()


def _report_alerts(api: Records, at: dt.datetime) -> dict[str, dict[str, Any]]:
    """The hub looks at the records' deadlines at `at`: every report_overdue alert, by step."""
    api.clock.set(at)
    api.service.process([api.service.report_check()])
    senior = api.token("senior", "test-school")
    items = api.client.get("/api/alerts", params={"state": "all"}, headers=senior).json()["items"]
    return {a["rule"]: a for a in items if a["kind"] == "report_overdue"}


def _sends(api: Records, alert: dict[str, Any]) -> list[tuple[int, str, str]]:
    """Every send of the alert, in order: its number, tier and reason (one row per channel, merged)."""
    senior = api.token("senior", "test-school")
    body = api.client.get(f"/api/alerts/{alert['id']}", headers=senior).json()
    return sorted({(d["number"], d["tier"], d["reason"]) for d in body["deliveries"]})


def _climb(alert: dict[str, Any]) -> list[tuple[str, dt.datetime]]:
    return [(e["tier"], dt.datetime.fromisoformat(e["at"])) for e in alert["escalations"]]


def test_an_unacknowledged_report_overdue_climbs_each_tier_after_the_rooms_ack_timeout_then_repeats_to_head(
    escalating: Callable[..., Records],
) -> None:
    # Given a site with someone to tell on every tier above the room, and a record due at midnight
    api = escalating(("senior", "dsl", "head"))
    ep = api.ended_episode()
    # When the hub looks just after midnight, the record is overdue: told to the seniors
    raised = _report_alerts(api, _after_midnight(30))["record"]
    assert (raised["tier"], _climb(raised)) == ("senior", [("senior", _after_midnight(30))])
    # Not yet acknowledged 590 s later: the room's ack_timeout_s (600 s) has not run out
    assert _report_alerts(api, _after_midnight(620))["record"]["tier"] == "senior"
    # Then, at each look once it has run out, it moves up a tier: the DSL, the head, and the head again
    dsl = _report_alerts(api, _after_midnight(630))["record"]
    head = _report_alerts(api, _after_midnight(1230))["record"]
    again = _report_alerts(api, _after_midnight(1830))["record"]
    assert (dsl["tier"], head["tier"], again["tier"]) == ("dsl", "head", "head")
    assert _climb(again) == [
        ("senior", _after_midnight(30)),
        ("dsl", _after_midnight(630)),
        ("head", _after_midnight(1230)),
        ("head", _after_midnight(1830)),
    ]
    assert _sends(api, again) == [
        (1, "senior", "raised"),
        (2, "dsl", "escalated"),
        (3, "head", "escalated"),
        (4, "head", "escalated"),
    ]
    # When the record is done, the alert resolves, and nothing more is sent however long the hub looks
    _recorded(api, ep)
    done = _report_alerts(api, _after_midnight(2000))["record"]
    assert done["resolved_at"] is not None and done["note"] == "the report was done"
    for hours in (1, 2, 24):
        after = _report_alerts(api, _after_midnight(2000 + hours * 3600))["record"]
        assert _climb(after) == _climb(again)
    assert len(_sends(api, after)) == 4


def test_report_overdue_escalation_skips_a_tier_with_nobody_to_tell(
    escalating: Callable[..., Records],
) -> None:
    # Given a site with seniors and a head to tell, and no designated safeguarding lead
    api = escalating(("senior", "head"))
    api.ended_episode()
    _report_alerts(api, _after_midnight(30))
    # When nobody acknowledges the overdue record, it goes from the seniors straight to the head
    _report_alerts(api, _after_midnight(630))
    alert = _report_alerts(api, _after_midnight(1230))["record"]
    assert [e["tier"] for e in alert["escalations"]] == ["senior", "head", "head"]
    assert [tier for _, tier, _ in _sends(api, alert)] == ["senior", "head", "head"]


def test_a_senior_may_resolve_a_report_overdue_with_a_note_and_nothing_more_is_sent_for_it(
    escalating: Callable[..., Records],
) -> None:
    """Semantics 5.1 and contract 6: any alert may be resolved by a senior member of staff with a note;
    `report_overdue` was refused (409 "no such alert in this room", and the team's docs said it could not
    be). Resolved by hand, it escalates no further and is not raised again for its step, which is still
    not done (the leaders' figures count the record as late)."""
    api = escalating(("senior", "dsl", "head"))
    ep = api.ended_episode()
    alert = _report_alerts(api, _after_midnight(30))["record"]
    api.clock.set(_after_midnight(100))
    senior = api.token("senior", "test-school")
    api.service.start()
    try:
        staff = api.client.post(
            f"/api/alerts/{alert['id']}/resolve",
            json={"note": "x"},
            headers=api.token("staff", "test-school"),
        )
        note = "the record was made on paper; it is being typed up"
        done = api.client.post(f"/api/alerts/{alert['id']}/resolve", json={"note": note}, headers=senior)
        again = api.client.post(f"/api/alerts/{alert['id']}/resolve", json={"note": note}, headers=senior)
    finally:
        api.service.stop()
    assert staff.status_code == 403
    assert done.status_code == 200, done.text
    body = done.json()
    assert (body["resolved_by"], body["note"]) == ("senior-user", note) and body["resolved_at"] is not None
    assert again.status_code == 409
    later = _report_alerts(api, _after_midnight(30 + 6 * 3600))
    assert later["record"]["id"] == alert["id"] and later["record"]["resolved_at"] is not None
    assert _sends(api, later["record"]) == [(1, "senior", "raised")], "escalated no further"
    incident = api.client.get(f"/api/incidents/{ep['incident_id']}", headers=senior).json()
    assert incident["recorded_at"] is None, "the step itself is not done"


def test_an_acknowledged_report_overdue_stops_climbing_and_is_sent_again_to_its_tier_every_renotify_s(
    escalating: Callable[..., Records],
) -> None:
    # Given an overdue record that has already reached the DSL
    api = escalating(("senior", "dsl", "head"))
    ep = api.ended_episode()
    _report_alerts(api, _after_midnight(30))
    alert = _report_alerts(api, _after_midnight(630))["record"]
    assert alert["tier"] == "dsl"
    # When the DSL acknowledges it (through the ingest thread, like any acknowledgement)
    api.clock.set(_after_midnight(700))
    api.service.start()
    try:
        acked = api.client.post(f"/api/alerts/{alert['id']}/ack", headers=api.token("senior", "test-school"))
    finally:
        api.service.stop()
    assert acked.status_code == 200 and acked.json()["acknowledged_at"] == "2026-11-24T00:11:40.000Z"
    # Then it climbs no further: still with the DSL past another ack_timeout_s
    for seconds in (1230, 1830, 2490):
        still = _report_alerts(api, _after_midnight(seconds))["record"]
        assert still["tier"] == "dsl" and len(still["escalations"]) == 2
    # and it is sent again to the DSL once renotify_s (1800 s) has passed since the acknowledgement,
    # and every renotify_s after that, while the record is not done
    first = _report_alerts(api, _after_midnight(2500))["record"]
    second = _report_alerts(api, _after_midnight(4300))["record"]
    assert _climb(second) == [
        ("senior", _after_midnight(30)),
        ("dsl", _after_midnight(630)),
        ("dsl", _after_midnight(2500)),
        ("dsl", _after_midnight(4300)),
    ]
    assert first["acknowledged_by"] == second["acknowledged_by"] == "senior-user"
    assert _sends(api, second) == [
        (1, "senior", "raised"),
        (2, "dsl", "escalated"),
        (3, "dsl", "renotify"),
        (4, "dsl", "renotify"),
    ]
    # When the record is done, it resolves and is never sent again
    _recorded(api, ep)
    _report_alerts(api, _after_midnight(5000))
    after = _report_alerts(api, _after_midnight(5000 + 6 * 3600))["record"]
    assert after["resolved_at"] is not None and len(_sends(api, after)) == 4


def test_an_acknowledgement_in_the_same_batch_as_a_look_at_the_deadlines_is_kept(api: Records) -> None:
    """A record's alert is acknowledged on the ingest thread, which alone sends it on: whichever comes
    first in a batch, the look never stores it unacknowledged over the acknowledgement."""
    api.ended_episode()
    overdue = _report_alerts(api, _after_midnight(30))
    svc = api.service

    def acknowledge_with_a_look(alert: dict[str, Any], look_first: bool) -> tuple[object, dict[str, Any]]:
        while not svc.inbox.empty():  # what the last batch left for the ingest thread (outcomes)
            svc.process([svc.inbox.get_nowait()])
        done: list[object] = []
        thread = threading.Thread(
            target=lambda: done.append(
                svc.acknowledge_alert("test-school", "calm-1", alert["id"], "Ms Reed", "board")
            )
        )
        thread.start()
        ack = svc.inbox.get(timeout=10)
        svc.process([svc.report_check(), ack] if look_first else [ack, svc.report_check()])
        thread.join(10)
        senior = api.token("senior", "test-school")
        return done[0], api.client.get(f"/api/alerts/{alert['id']}", headers=senior).json()

    # When, its ack_timeout_s (60 s) run out, the record's alert is acknowledged just before the look
    api.clock.set(_after_midnight(100))
    returned, stored = acknowledge_with_a_look(overdue["record"], look_first=False)
    # Then it stays acknowledged, with the seniors, not sent on
    assert isinstance(returned, Alert) and returned.acknowledged_by == "Ms Reed"
    assert stored["acknowledged_by"] == "Ms Reed" and len(stored["escalations"]) == 1
    # When the parents' notice's alert is acknowledged just after a look that sends it on
    returned, stored = acknowledge_with_a_look(overdue["parent_notice"], look_first=True)
    # Then it was sent on once, and the acknowledgement is kept on top of it
    assert stored["acknowledged_by"] == "Ms Reed" and len(stored["escalations"]) == 2
    assert sorted({(d["number"], d["reason"]) for d in stored["deliveries"]}) == [
        (1, "raised"),
        (2, "escalated"),
    ]


def test_a_report_overdue_raised_before_it_escalated_is_taken_up_from_its_last_send() -> None:
    """An alert stored by a hub that never escalated report_overdue has nothing scheduled: it climbs
    from its last send (or from its acknowledgement, sent again) as if it had been raised now."""
    now = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
    due = workflow.ReportDue(
        "inc-1",
        "ep-1",
        "test-school",
        "calm-1",
        due={"record": MIDNIGHT},
        done={"record": False},
    )
    ident = alert_id("test-school", "calm-1", "report_overdue/inc-1/record")
    stored = Alert(
        id=ident,
        key="report_overdue/inc-1/record",
        kind="report_overdue",
        severity="warning",
        site="test-school",
        room="calm-1",
        episode_id="ep-1",
        rule="record",
        due_at=MIDNIGHT,
        raised_at=_after_midnight(30),
        tier="senior",
        escalations=[Escalation(tier="senior", at=_after_midnight(30))],
        sends=1,
    )
    ctx = AlertContext(
        "test-school", "calm-1", Policy(ack_timeout_s=600), frozenset({"senior", "head"}), False
    )
    [send, saved] = workflow.overdue_effects([due], {ident: stored}, lambda _s, _r: ctx, now)
    assert isinstance(send, AlertSend) and (send.tier, send.reason, send.number) == ("head", "escalated", 2)
    assert isinstance(saved, AlertSaved) and saved.change == "escalated"
    assert saved.alert.next_send_at == now + dt.timedelta(seconds=600)
    assert stored.sends == 1, "the stored alert is not changed in place"
    # Acknowledged by that hub: sent again to its tier renotify_s (300 s) after its acknowledgement
    stored.acknowledged_at = now - dt.timedelta(seconds=100)
    assert workflow.overdue_effects([due], {ident: stored}, lambda _s, _r: ctx, now) == []
    later = now + dt.timedelta(seconds=200)
    [send, saved] = workflow.overdue_effects([due], {ident: stored}, lambda _s, _r: ctx, later)
    assert isinstance(send, AlertSend) and (send.tier, send.reason) == ("senior", "renotify")
    assert saved.alert.next_send_at == later + dt.timedelta(seconds=300)


def _another_child_chosen(api: Records, ep: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Staff choose another child, Lee, for the episode's record: the child and the answer to the PUT."""
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    lee = api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": "Lee", "last_name": "Park"}, headers=senior
    ).json()
    api.service.start()
    try:
        moved = api.client.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": lee["id"]}, headers=staff)
    finally:
        api.service.stop()
    return lee, moved


def _recorded(api: Records, ep: dict[str, Any], first: str = "Sam") -> str:
    """Take the episode's record to `recorded` with a child called `first`; returns the incident URL."""
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    pupil = api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": first, "last_name": "Jones"}, headers=senior
    ).json()
    api.service.start()
    try:
        api.client.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=staff)
    finally:
        api.service.stop()
    incident = f"/api/incidents/{ep['incident_id']}"
    api.client.patch(incident, json=COMPLETE, headers=staff)
    assert api.client.post(f"{incident}/record", headers=staff).status_code == 200
    return incident


def _signed_off(api: Records, ep: dict[str, Any]) -> str:
    """Take the episode's record through the parents, the review and the sign-off; returns its URL."""
    incident = _reviewed(api, ep)
    senior = api.token("senior", "test-school")
    assert api.client.post(f"{incident}/sign-off", headers=senior).json()["status"] == "closed"
    return incident


def _reviewed(api: Records, ep: dict[str, Any]) -> str:
    """Take the episode's record through the parents and the review; returns its URL."""
    incident = _recorded(api, ep)
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    for contact in (
        {"method": "phone", "outcome": "reached"},
        {"kind": "copy", "method": "handed", "outcome": "sent"},
    ):
        assert api.client.post(f"{incident}/parent-contacts", json=contact, headers=staff).status_code == 201
    debriefs = {
        "debrief_child": "Talked with Sam.",
        "debrief_staff": "Team debrief.",
        "follow_up_offered": True,
    }
    assert api.client.patch(incident, json=debriefs, headers=staff).status_code == 200
    assert api.client.post(f"{incident}/review", json={}, headers=senior).status_code == 200
    return incident


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database's URL, for a hub and the same hub restarted on it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("fresh_postgres_db"))


def test_the_signed_parents_copy_keeps_what_it_said_when_the_site_file_changes_after_sign_off(
    tmp_path: Path, database: str
) -> None:
    """The copy's door sentence, the room's name, the school's name and contact were read from the site
    file at every rendering, not from what was signed: a lock sensor taken out of the site file a term
    later rewrote what the signed letter said about the door (found by a review). The sign-off now keeps
    them with the episode's facts, and the signed copy says them from then on."""
    # Given a record signed off while the room's door reported its lock
    first = tmp_path / "first"
    first.mkdir()
    api = Records(first, database, name="Hillside School", contact={"name": "Mrs Okafor", "phone": "01234"})
    try:
        ep = api.ended_episode()
        incident = _signed_off(api, ep)
        staff = api.token("staff", "test-school")
        signed_copy = api.client.get(f"{incident}/parent-copy.html", headers=staff).text
    finally:
        api.client.close()
        api.store.close()
    assert "It was not locked." in signed_copy and "Calm room calm-1" in signed_copy
    assert "Hillside School" in signed_copy and "Mrs Okafor" in signed_copy
    # When, a term later, the lock sensor is taken out, the room renamed, the school's contact changed
    room = two_device_room("calm-1")
    room["devices"][0]["sensors"] = ["door", "occupancy"]
    room["name"] = "The Nest"
    later_dir = tmp_path / "later"
    later_dir.mkdir()
    later = Records(
        later_dir, database, rooms=[room, two_device_room("calm-2")], name="Hillside Academy", contact=None
    )
    try:
        token = later.token("staff", "test-school")
        assert later.client.get(incident, headers=token).json()["status"] == "closed"
        copy_now = later.client.get(f"{incident}/parent-copy.html", headers=token).text
        # (A record signed before the hub kept these reads the site file as it is now, as it did)
        with later.store.session() as s:
            row = s.get(IncidentRecord, ep["incident_id"])
            assert row is not None and row.signed is not None
            row.signed = {k: v for k, v in row.signed.items() if k != "copy"}
            s.add(row)
            s.commit()
        older = later.client.get(f"{incident}/parent-copy.html", headers=token).text
    finally:
        later.client.close()
        later.store.close()
    # Then the signed copy says what it said when it was signed
    assert "It was not locked." in copy_now and "Calm room calm-1" in copy_now and "The Nest" not in copy_now
    assert "Hillside School" in copy_now and "Mrs Okafor" in copy_now
    assert "It was not locked." not in older and "The Nest" in older and "Hillside Academy" in older


def test_a_signed_record_keeps_the_episode_as_signed_and_shows_what_the_hub_learned_since_beside_it(
    api: Records,
) -> None:
    # Given a signed-off record whose episode's 10-minute warning nobody acknowledged
    ep = api.ended_episode()
    incident = _signed_off(api, ep)
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    signed = api.client.get(incident, headers=staff).json()
    warning = next(a for a in signed["auto"]["alerts"] if a["kind"] == "duration_warning")
    assert warning["acknowledged_at"] is None and signed["auto_now"] is None and signed["auto_changed"] == []
    assert signed["auto_signed_at"] == signed["closed_at"]
    # When a senior member of staff acknowledges that warning after the sign-off
    api.service.start()
    try:
        acked = api.client.post(f"/api/alerts/{warning['id']}/ack", headers=senior)
    finally:
        api.service.stop()
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "senior-user"
    # Then the record still shows the alert as it was signed, and the acknowledgement beside it, said plainly
    after = api.client.get(incident, headers=staff).json()
    assert after["auto"] == signed["auto"]
    assert after["auto_changed"] == ["alerts"]
    now_warning = next(a for a in after["auto_now"]["alerts"] if a["id"] == warning["id"])
    assert now_warning["acknowledged_by"] == "senior-user"
    # The sign-off's audit entry names what changed in the record, not the episode's facts it kept
    with api.store.session() as s:
        entry = s.exec(
            select(AuditEntry).where(
                AuditEntry.target_id == ep["incident_id"], AuditEntry.action == "sign_off"
            )
        ).one()
    assert "signed" not in entry.detail["after"] and entry.detail["after"]["status"] == "closed"


def test_a_child_being_attached_holds_back_only_its_own_record(api: Records) -> None:
    # Given a child being attached to one record's episode: the step holds that record while it waits
    # for the ingest thread (up to 15 s, longer behind a backlog)
    first, second = api.ended_episode(0), api.ended_episode(3600)
    records = api.client.app.state.records  # type: ignore[attr-defined]
    held, release = threading.Event(), threading.Event()

    def attaching() -> None:
        with records.unsigned(first["incident_id"]):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=attaching)
    holder.start()
    assert held.wait(10)
    # When staff save another record meanwhile
    saved: list[int] = []
    saver = threading.Thread(
        target=lambda: saved.append(
            api.client.patch(
                f"/api/incidents/{second['incident_id']}",
                json={"before": "Upset after lunch."},
                headers=api.token("staff", "test-school"),
            ).status_code
        )
    )
    saver.start()
    saver.join(10)
    # Then it is saved without waiting for the attach
    try:
        assert not saver.is_alive() and saved == [200]
    finally:
        release.set()
        holder.join(10)
        saver.join(30)


def test_the_sign_off_resolving_the_records_own_overdue_alerts_is_no_news_about_the_episode(
    api: Records,
) -> None:
    # Given a record completed the morning after, its deadlines passed: the hub raised report_overdue
    ep = api.ended_episode()
    api.clock.set(dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC))
    api.service.process([api.service.report_check()])
    senior = api.token("senior", "test-school")
    raised = api.client.get("/api/alerts", params={"state": "all"}, headers=senior).json()["items"]
    assert {a["kind"] for a in raised} >= {"report_overdue"}
    incident = _signed_off(api, ep)
    # When the hub next looks at the deadlines, the sign-off resolves the record's own alerts
    api.clock.set(dt.datetime(2026, 11, 24, 8, 1, tzinfo=dt.UTC))
    api.service.process([api.service.report_check()])
    # Then the signed record reports nothing learned about the episode: those alerts are the record's
    body = api.client.get(incident, headers=api.token("staff", "test-school")).json()
    assert body["auto_changed"] == [] and body["auto_now"] is None
    assert [a["kind"] for a in body["auto"]["alerts"]] == ["episode_started", "duration_warning"]


def _sign_off_during(
    api: Records, incident: str, step: Callable[..., Any]
) -> tuple[Callable[..., None], list[threading.Thread], list[int]]:
    """`step` wrapped so that a senior's sign-off of `incident` starts while it is under way (after its
    check that the record is not signed, before its write); returns the wrapper, the sign-off's thread
    (once started) and its answer's status code (once answered)."""
    senior = api.token("senior", "test-school")
    signing: list[threading.Thread] = []
    signed: list[int] = []

    def racing(*args: Any, **kwargs: Any) -> None:
        thread = threading.Thread(
            target=lambda: signed.append(api.client.post(f"{incident}/sign-off", headers=senior).status_code)
        )
        thread.start()
        signing.append(thread)
        thread.join(timeout=1.0)  # the sign-off waits for the step; without the wait it is done by now
        step(*args, **kwargs)

    return racing, signing, signed


def test_a_sign_off_waits_for_a_child_being_attached_and_then_judges_the_record_with_that_child(
    api: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a reviewed record, and a second child on the register
    ep = api.ended_episode()
    incident = _reviewed(api, ep)
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    other = api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": "Lee", "last_name": "Park"}, headers=senior
    ).json()
    # When a senior signs it off while staff are attaching the other child (between the check that the
    # record is not signed and the change itself)
    racing, signing, signed = _sign_off_during(api, incident, api.service.attach_pupil)
    monkeypatch.setattr(api.service, "attach_pupil", racing)
    api.service.start()
    try:
        moved = api.client.put(
            f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": other["id"]}, headers=staff
        )
        signing[0].join(timeout=30)
    finally:
        api.service.stop()
    # Then the child is attached first, and the sign-off then finds a record whose parents' steps start
    # again for the new child (refused: the record and the episode both name the new child, unsigned)
    assert moved.status_code == 200 and signed == [409]
    body = api.client.get(incident, headers=staff).json()
    assert body["status"] == "recorded" and body["pupil_id"] == other["id"]
    assert api.client.get(f"/api/episodes/{ep['id']}", headers=staff).json()["pupil_id"] == other["id"]
    with api.store.session() as s:
        row = s.get(IncidentRecord, ep["incident_id"])
    assert row is not None and row.signed is None


@pytest.fixture(params=["sqlite", "postgresql"])
def reviewing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Records]:
    """A hub whose room calm-1's policy asks for a senior's check every 15 minutes (`senior-check`)."""
    url = (
        f"sqlite:///{tmp_path / 'hub.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("fresh_postgres_db")
    )
    check = [{"name": "senior-check", "first_s": 900, "every_s": 900, "tier": "senior"}]
    a = Records(tmp_path, url, rooms=[two_device_room("calm-1", reviews=check), two_device_room("calm-2")])
    yield a
    a.service.stop()
    a.client.close()
    a.store.close()


def test_a_sign_off_waits_for_a_review_being_recorded_on_the_episode_and_a_later_review_is_refused(
    reviewing: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording a review checked the record, then handed the review to the ingest thread without
    holding the record: a sign-off in between let the review land on the signed record's episode, and
    the record page then said the hub had learned more (found by a review). The record is now held from
    the check to the review's write, as a child's attach holds it: the sign-off waits and signs with it."""
    # Given a reviewed record
    api = reviewing
    ep = api.ended_episode()
    incident = _reviewed(api, ep)
    staff = api.token("staff", "test-school")
    # When a senior signs it off between the check that it is not signed and the review's write
    racing, signing, signed = _sign_off_during(api, incident, api.service.record_review)
    monkeypatch.setattr(api.service, "record_review", racing)
    api.service.start()
    try:
        answer = api.client.post(
            f"/api/episodes/{ep['id']}/reviews", json={"name": "senior-check"}, headers=staff
        )
        signing[0].join(timeout=30)
        # Then the review is recorded first, and the record is signed with it: nothing learned since
        assert answer.status_code == 201 and signed == [200], answer.text
        body = api.client.get(incident, headers=staff).json()
        assert body["status"] == "closed" and body["auto_changed"] == []
        assert [r["name"] for r in body["auto"]["reviews"]] == ["senior-check"]
        # And a review recorded after the sign-off is refused, the episode left as signed
        late = api.client.post(
            f"/api/episodes/{ep['id']}/reviews", json={"name": "senior-check"}, headers=staff
        )
    finally:
        api.service.stop()
    assert late.status_code == 409 and "signed off" in late.text
    assert api.client.get(incident, headers=staff).json()["auto_changed"] == []


def test_changing_the_child_after_the_parents_were_told_starts_the_parents_steps_again(api: Records) -> None:
    """The child of a record may be changed until sign-off. Changed after one family was told and sent
    the copy, the record kept `parent_notified` and went on to review and sign-off: the new child's
    parents were never told, and no `report_overdue` was raised for them (found by a review). Now the
    parents' steps start again for the new child; the earlier contacts stay, and the audit entry says
    which child they were about, by register id."""
    # Given a record whose child's parents were told and handed the copy
    ep = api.ended_episode()
    incident = _recorded(api, ep, first="Sam")
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    sam = api.client.get(incident, headers=staff).json()["pupil_id"]
    for contact in (
        {"method": "phone", "outcome": "reached"},
        {"kind": "copy", "method": "handed", "outcome": "sent"},
    ):
        assert api.client.post(f"{incident}/parent-contacts", json=contact, headers=staff).status_code == 201
    assert api.client.get(incident, headers=staff).json()["status"] == "parent_notified"
    # When staff realise it was another child, and choose her
    lee, moved = _another_child_chosen(api, ep)
    # Then the record is hers, back to `recorded`, her parents not yet told nor sent the copy
    assert moved.status_code == 200, moved.text
    body = api.client.get(incident, headers=staff).json()
    assert body["pupil_id"] == lee["id"] and body["status"] == "recorded"
    assert body["parent_notified_at"] is None and body["parent_copy_sent_at"] is None
    # The earlier contacts are kept, and the audit entry names both children by register id only
    assert [(c["kind"], c["outcome"]) for c in body["parent_contacts"]] == [
        ("notice", "reached"),
        ("copy", "sent"),
    ]
    (entry,) = _audit(api, target_id=ep["id"], action="attach_pupil")[-1:]
    assert entry.detail["pupil_id"] == lee["id"] and entry.detail["previous_pupil_id"] == sam
    again = entry.detail["parents_again"]
    assert again["before"]["status"] == "parent_notified" and again["after"] == {"status": "recorded"}
    assert {"parent_notified_at", "parent_copy_sent_at"} <= again["before"].keys()
    assert len(again["contacts_about_previous_child"]) == 2
    assert "Lee" not in json.dumps(entry.detail) and "Sam" not in json.dumps(entry.detail)
    # And the review waits for her parents; their deadlines are overdue again
    assert api.client.post(f"{incident}/review", json={}, headers=senior).status_code == 409
    later = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.UTC)
    assert ep["incident_id"] in {r.id for r in api.client.app.state.records.overdue(later)}  # type: ignore[attr-defined]


def test_a_child_attached_too_late_for_its_record_leaves_the_signed_record_as_signed(api: Records) -> None:
    # Given a signed-off record, and a second child on the register
    ep = api.ended_episode()
    incident = _signed_off(api, ep)
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    before = api.client.get(incident, headers=staff).json()
    other = api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": "Lee", "last_name": "Park"}, headers=senior
    ).json()
    # When the ingest thread stores an attach only after the sign-off (the API gave up waiting for it on
    # a stalled database, so its check came before the sign-off)
    api.service.start()
    try:
        api.service.attach_pupil(
            "test-school", "calm-1", ep["id"], ep["incident_id"], other["id"], None, "Jo Smith"
        )
    finally:
        api.service.stop()
    # Then the signed record keeps the child it was signed with and what it said; the episode, which is
    # not the record, has the new child
    body = api.client.get(incident, headers=staff).json()
    assert body["status"] == "closed" and body["pupil_id"] == before["pupil_id"] != other["id"]
    assert body["updated_at"] == before["updated_at"] and body["auto"] == before["auto"]
    assert api.client.get(f"/api/episodes/{ep['id']}", headers=staff).json()["pupil_id"] == other["id"]


def test_while_a_copy_is_emailed_the_mail_librarys_lines_below_warning_stay_out_of_the_log(
    tmp_path: Path, smtp_endpoint: SmtpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    """Apprise logs the recipient, the sender and the server at DEBUG and INFO, from a thread of its own
    pool: none of those lines reaches the hub's log, even with the operator's level at DEBUG."""
    api = Records(
        tmp_path,
        f"sqlite:///{tmp_path / 'hub.db'}",
        parent_mail=f"mailto://office@127.0.0.1:{smtp_endpoint.port}?from=office@hillside.example",
    )
    try:
        incident = _recorded(api, api.ended_episode())
        caplog.set_level(logging.DEBUG, logger="apprise")
        caplog.clear()
        sent = api.client.post(
            f"{incident}/parent-copy/send",
            json={"to": "parent@home.example"},
            headers=api.token("staff", "test-school"),
        )
        assert sent.status_code == 200 and len(smtp_endpoint.messages) == 1
        low = [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("apprise") and r.levelno < logging.WARNING
        ]
        assert low == [] and "parent@home" not in caplog.text
    finally:
        api.service.stop()
        api.client.close()
        api.store.close()


def test_the_parents_copy_is_made_from_the_record_names_only_this_child_and_is_audited(api: Records) -> None:
    senior = api.token("senior", "test-school")
    staff = api.token("staff", "test-school")
    api.client.post(
        "/api/pupils",
        json={"site": "test-school", "first_name": "Noor", "last_name": "Other"},
        headers=senior,
    )
    ep = api.ended_episode()
    incident = f"/api/incidents/{ep['incident_id']}"
    assert api.client.get(f"{incident}/parent-copy.pdf", headers=staff).status_code == 409, (
        "not before the record"
    )
    _recorded(api, ep)
    pdf = api.client.get(f"{incident}/parent-copy.pdf", headers=staff)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Sam" in text and "10:00" in text and "10:10" in text and "10 minutes" in text
    assert "Noor" not in text and "Ms Adeyemi" in text
    page = api.client.get(f"{incident}/parent-copy.html", headers=staff)
    assert page.status_code == 200 and "Sam" in page.text and "Noor" not in page.text
    # The room's mode (observer) decides what the copy says was recorded: a person at the panel.
    assert "a member of staff at the viewing panel" in page.text and "supervising Sam" not in page.text
    # Withheld by a DSL: nobody else may open it
    dsl = api.dsl_token()
    withheld = api.client.post(
        f"{incident}/parent-copy/withhold", json={"reason": "Safeguarding."}, headers=dsl
    )
    assert withheld.status_code == 200
    assert withheld.json()["parent_copy_withheld_reason"] == "Safeguarding."  # the DSL's own answer
    # The decision stands: not withheld again over it, and not recorded as handed over by anyone else.
    again = api.client.post(f"{incident}/parent-copy/withhold", json={"reason": "Other."}, headers=dsl)
    assert again.status_code == 409
    handed = {"kind": "copy", "method": "handed", "outcome": "sent"}
    assert api.client.post(f"{incident}/parent-contacts", json=handed, headers=staff).status_code == 403
    # Everyone else sees that it was withheld, when and by whom, never why: not in the record, not in
    # the list (docs/records.md).
    seen = api.client.get(incident, headers=staff).json()
    assert seen["parent_copy_withheld_by"] == withheld.json()["parent_copy_withheld_by"]
    assert seen["parent_copy_withheld_at"] is not None and seen["parent_copy_withheld_reason"] is None
    senior = api.token("senior", "test-school")
    for who in (staff, senior, dsl):
        listed = api.client.get("/api/incidents", headers=who).json()["items"]
        assert [i["parent_copy_withheld_reason"] for i in listed] == [None]
    assert api.client.get(incident, headers=dsl).json()["parent_copy_withheld_reason"] == "Safeguarding."
    assert api.client.get(f"{incident}/parent-copy.pdf", headers=staff).status_code == 403
    assert api.client.get(f"{incident}/parent-copy.pdf", headers=dsl).status_code == 200
    with api.store.session() as s:
        reads = s.exec(select(AuditEntry).where(AuditEntry.action == "read_parent_copy")).all()
    assert [r.detail["format"] for r in reads] == ["pdf", "html", "pdf"]


def test_the_copy_is_emailed_with_the_pdf_attached_and_the_sending_recorded(
    tmp_path: Path, smtp_endpoint: SmtpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    api = Records(
        tmp_path,
        f"sqlite:///{tmp_path / 'hub.db'}",
        name="Hillside School",
        contact={"name": "Mrs Okafor", "phone": "01234 567890"},
        parent_mail=f"mailto://office@127.0.0.1:{smtp_endpoint.port}?from=office@hillside.example",
    )
    try:
        ep = api.ended_episode()
        incident = _recorded(api, ep)
        staff = api.token("staff", "test-school")
        bad = api.client.post(f"{incident}/parent-copy/send", json={"to": "not an address"}, headers=staff)
        assert bad.status_code == 422 and "to" in _field_of(bad)
        refused = api.client.post(
            f"{incident}/parent-copy/send", json={"to": "reject@home.example"}, headers=staff
        )
        assert refused.status_code == 502 and "reject@" not in refused.text
        # An address the mail library would read as another (a name and an address) or as none (a
        # double dot): refused, naming the field, nothing sent, nothing recorded, nothing logged.
        for typed in ("mary.o'neil@home.example", "mary.jones@home..example"):
            misread = api.client.post(f"{incident}/parent-copy/send", json={"to": typed}, headers=staff)
            assert misread.status_code == 422 and "to" in _field_of(misread), misread.text
            assert smtp_endpoint.messages == [] and typed.split("@")[0] not in caplog.text
        sent = api.client.post(
            f"{incident}/parent-copy/send", json={"to": "parent@home.example"}, headers=staff
        )
        assert sent.status_code == 200 and sent.json()["parent_copy_sent_at"] is not None
        [mail] = smtp_endpoint.messages
        assert mail["To"] == "parent@home.example" and "Hillside School" in mail["Subject"]
        text_part = mail.get_body(("plain", "html"))
        assert text_part is not None
        covering = " ".join(str(text_part.get_content()).split())
        assert (
            "Please find attached the written record from Hillside School about the time Sam was kept in"
            in covering
        )
        assert "promised" not in covering and "Mrs Okafor" in covering
        [attached] = list(mail.iter_attachments())
        pdf = attached.get_content()
        assert isinstance(pdf, bytes) and pdf.startswith(b"%PDF")
        text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
        assert "Sam" in text and "Mrs Okafor" in text
        contacts = api.client.get(incident, headers=staff).json()["parent_contacts"]
        assert [(c["kind"], c["outcome"]) for c in contacts] == [("copy", "failed"), ("copy", "sent")]
        # A parent's address is never logged, not even by the mail library when the server refuses it.
        assert "reject@" not in caplog.text and "parent@home" not in caplog.text
    finally:
        api.service.stop()
        api.client.close()
        api.store.close()


def test_a_sign_off_while_the_copy_is_emailed_waits_and_the_copy_sent_is_recorded_and_audited(
    api: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The send checked `closed` on a row read before the mail went out, outside the record's lock: a
    sign-off landing while the mail server was talked to (seconds on SMTP) left a copy at the parent's
    address with no contact and no audit entry (found by a review). The record is now held from the
    check to the contact's write: the sign-off waits for the send, then signs a record that has it."""
    # Given a reviewed record (its copy handed over already; a second one is emailed)
    ep = api.ended_episode()
    incident = _reviewed(api, ep)
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    mailed: list[str] = []
    signing: list[threading.Thread] = []
    signed: list[int] = []

    def sending(site: Any, to: str, copy: Any, pdf: bytes) -> None:
        # When a senior signs the record off while the mail server is being talked to
        thread = threading.Thread(
            target=lambda: signed.append(api.client.post(f"{incident}/sign-off", headers=senior).status_code)
        )
        thread.start()
        signing.append(thread)
        thread.join(timeout=1.0)  # the sign-off waits for this send; without the wait it is done by now
        mailed.append(to)  # the mail server took it

    monkeypatch.setattr("seclusion_hub.records.send_copy", sending)
    monkeypatch.setattr("seclusion_hub.records.check_address", lambda _site, _to: None)  # no mail account
    answer = api.client.post(
        f"{incident}/parent-copy/send", json={"to": "parent@home.example"}, headers=staff
    )
    signing[0].join(timeout=30)
    # Then the copy sent is recorded and audited, and the record is signed off after it, with it
    assert answer.status_code == 200, answer.text
    assert mailed == ["parent@home.example"] and signed == [200]
    body = api.client.get(incident, headers=staff).json()
    assert body["status"] == "closed"
    assert [(c["method"], c["outcome"]) for c in body["parent_contacts"] if c["kind"] == "copy"] == [
        ("handed", "sent"),
        ("email", "sent"),
    ]
    sends = _audit(api, target_id=ep["incident_id"], action="parent_copy")
    # The email is audited as it is handed to the mail server, and again with its outcome
    assert [(e.detail["contact"]["method"], e.detail["contact"]["outcome"]) for e in sends] == [
        ("handed", "sent"),
        ("email", "sending"),
        ("email", "sent"),
    ]
    assert sends[1].detail["contact"]["id"] == sends[2].detail["contact"]["id"], "one contact, settled"
    with api.store.session() as s:
        entries = s.exec(select(AuditEntry).where(AuditEntry.target_id == ep["incident_id"])).all()
    actions = [e.action for e in sorted(entries, key=lambda e: e.id or 0) if e.action != "read"]
    assert actions[-2:] == ["parent_copy", "sign_off"]
    # And once signed, sending is refused before anything is sent
    again = api.client.post(f"{incident}/parent-copy/send", json={"to": "parent@home.example"}, headers=staff)
    assert again.status_code == 409 and "signed off" in again.text and len(mailed) == 1


def test_the_record_is_filled_in_from_the_episode_with_the_childs_time_in_the_48_hours_before(
    api: Records,
) -> None:
    # Given a child confined for 10 minutes at 10:00 and again at 11:00
    first = api.ended_episode(0)
    second = api.ended_episode(3600)
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    pupil = api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": "Sam", "last_name": "Jones"}, headers=senior
    ).json()
    api.service.start()
    try:
        for ep in (first, second):
            put = api.client.put(
                f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=staff
            )
            assert put.status_code == 200
    finally:
        api.service.stop()
    # When staff open the second record, then the hub has filled in the episode and the earlier time
    auto = api.client.get(f"/api/incidents/{second['incident_id']}", headers=staff).json()["auto"]
    assert auto["started_at"] == "2026-11-23T11:00:02.000Z" and auto["elapsed_minutes"] == 10.0
    assert auto["segments"] == [{"start": "2026-11-23T11:00:02.000Z", "end": "2026-11-23T11:10:02.000Z"}]
    assert auto["minutes_in_48h_before"] == 10.0
    assert auto["supervised_minutes"] == 10.0 and auto["lapses"] == [] and auto["locked"] is False
    assert [a["kind"] for a in auto["alerts"]] == [
        "episode_started",
        "duration_warning",
    ]  # 10 minutes reached
    earlier = api.client.get(f"/api/incidents/{first['incident_id']}", headers=staff).json()["auto"]
    assert earlier["minutes_in_48h_before"] == 0.0


def test_a_dated_correction_is_refused_until_the_record_is_signed_off(api: Records) -> None:
    """docs/records.md: "Add a dated correction | staff and above | after sign-off", and the API checks the
    rules again: before sign-off the record itself is edited, so a correction is a 409 naming `status`."""
    # Given a record still awaiting its record
    ep = api.ended_episode()
    incident = f"/api/incidents/{ep['incident_id']}"
    staff = api.token("staff", "test-school")
    assert api.client.get(incident, headers=staff).json()["status"] == "awaiting_record"
    # When staff add a dated correction to it
    added = api.client.post(
        f"{incident}/addenda",
        json={"text": "The child was in fact in the room until 10:20.", "field": "classification"},
        headers=staff,
    )
    # Then it is refused, naming the status, and nothing is added to the record or its audit
    assert added.status_code == 409 and "status" in added.text
    assert api.client.get(incident, headers=staff).json()["addenda"] == []
    with api.store.session() as s:
        done = s.exec(select(AuditEntry).where(AuditEntry.action == "addendum")).all()
    assert done == []


def test_the_audit_entries_of_a_contact_and_of_a_dated_correction_say_what_was_added(api: Records) -> None:
    """An addendum's audit entry held `before: {}, after: {}` (not its field, not when), and a contact's
    only the record's columns it changed: a call nobody answered left an entry saying nothing (found by a
    review). Each now says what was added, by its id: a contact's kind, method and outcome, an addendum's
    field and time; never their free text (the note, the correction), which the record holds."""
    # Given a call to the parents nobody answered, on one record
    first = api.ended_episode()
    incident = _recorded(api, first)
    staff = api.token("staff", "test-school")
    call = {"method": "phone", "outcome": "no_answer", "note": "Mum's mobile, 07700 900123"}
    assert api.client.post(f"{incident}/parent-contacts", json=call, headers=staff).status_code == 201
    (unanswered,) = _audit(api, target_id=first["incident_id"], action="parent_notice")
    assert unanswered.detail["after"] == {}
    assert unanswered.detail["contact"] == {
        "id": unanswered.detail["contact"]["id"],
        "kind": "notice",
        "method": "phone",
        "outcome": "no_answer",
    }
    assert "07700" not in json.dumps(unanswered.detail)
    # And another record, its copy handed to the parents, signed off and then corrected
    second = api.ended_episode(3600)
    incident = _signed_off(api, second)
    (handed,) = _audit(api, target_id=second["incident_id"], action="parent_copy")
    assert {k: handed.detail["contact"][k] for k in ("kind", "method", "outcome")} == {
        "kind": "copy",
        "method": "handed",
        "outcome": "sent",
    }
    assert "parent_copy_sent_at" in handed.detail["after"]
    added = api.client.post(
        f"{incident}/addenda", json={"field": "first_aid", "text": "The check was at 10:25."}, headers=staff
    )
    assert added.status_code == 201
    # Then the correction's entry names the field corrected and the addendum's time, not what it says
    (entry,) = _audit(api, target_id=second["incident_id"], action="addendum")
    assert entry.detail["addendum"]["field"] == "first_aid"
    assert entry.detail["addendum"]["at"] == added.json()["at"]
    assert isinstance(entry.detail["addendum"]["id"], int)
    assert "10:25" not in json.dumps(entry.detail)


def test_the_incident_list_shows_state_and_deadlines_not_what_staff_wrote(api: Records) -> None:
    """docs/incidents.md, Audit: the list (`GET /api/incidents`) is audited a page at a time, not record
    by record, so it shows state and deadlines, not what staff wrote: no draft's classification, nor the
    list of empty fields that follows from it (a voluntary draft asks for `voluntary_reason`)."""
    # Given a draft that staff classified as the child's own use of the room
    ep = api.ended_episode()
    staff = api.token("staff", "test-school")
    draft = {"classification": "voluntary", "voluntary_reason": "She asked to go in and left when ready."}
    incident = f"/api/incidents/{ep['incident_id']}"
    assert api.client.patch(incident, json=draft, headers=staff).status_code == 200
    # When staff list the incidents
    [listed] = api.client.get("/api/incidents", headers=staff).json()["items"]
    # Then the record is there with its state and deadlines, and nothing of what staff wrote
    assert listed["id"] == ep["incident_id"] and listed["status"] == "awaiting_record"
    assert listed["due"]["record"] is not None
    assert not {"record", "classification", "missing"} & listed.keys(), listed
    assert "voluntary" not in json.dumps(listed)
    # And the record itself, read one by one (and audited), still has them
    record = api.client.get(incident, headers=staff).json()
    assert record["classification"] == "voluntary" and "pupil_id" in record["missing"]


def _audit(api: Records, **where: Any) -> list[AuditEntry]:
    with api.store.session() as s:
        query = select(AuditEntry)
        for key, value in where.items():
            query = query.where(getattr(AuditEntry, key) == value)
        return list(s.exec(query.order_by(col(AuditEntry.id))).all())


def test_each_page_of_the_episode_and_incident_lists_read_by_a_person_is_audited(api: Records) -> None:
    """`GET /api/episodes` shows each child's episodes (the child's id, the times, the supervision) and
    left no audit entry, nor did `GET /api/incidents` (found by a review; docs/hub.md: "Reads of an
    episode or an incident by a person are written to the audit table"). Each page read is now an entry,
    as the register's are: what was listed, the filter and the count, nothing of what the items hold."""
    # Given an ended episode with a child attached
    ep = api.ended_episode()
    _recorded(api, ep)
    staff = api.token("staff", "test-school")
    before = len(_audit(api, actor="staff-user", action="read"))
    # When staff list the room's episodes, then the records to complete
    listed = api.client.get("/api/episodes", params={"room": "calm-1"}, headers=staff).json()["items"]
    assert listed[0]["pupil_id"] is not None
    records = api.client.get("/api/incidents", params={"status": "recorded"}, headers=staff).json()["items"]
    assert [r["id"] for r in records] == [ep["incident_id"]]
    # Then each page read is one entry, with its filter and count and no child's id or name
    episodes, incidents = _audit(api, actor="staff-user", action="read")[before:]
    # (`*`: every site of the caller's, named for a person limited to some: whose records they could read)
    assert (episodes.target_type, episodes.target_id) == ("episodes", "*")
    assert episodes.detail == {"filter": {"room": "calm-1"}, "count": len(listed), "sites": ["test-school"]}
    assert (incidents.target_type, incidents.target_id) == ("incidents", "*")
    assert incidents.detail == {"filter": {"status": "recorded"}, "count": 1, "sites": ["test-school"]}
    assert listed[0]["pupil_id"] not in json.dumps([episodes.detail, incidents.detail])


def test_the_report_to_the_authority_is_recorded_once_even_after_sign_off(api: Records) -> None:
    ep = api.ended_episode()
    incident = f"/api/incidents/{ep['incident_id']}"
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    body = {"note": "Emailed to the local authority's safeguarding team."}
    assert api.client.post(f"{incident}/authority-notice", json=body, headers=staff).status_code == 403
    done = api.client.post(f"{incident}/authority-notice", json=body, headers=senior)
    assert done.status_code == 200 and done.json()["authority_notified_at"] is not None
    assert api.client.post(f"{incident}/authority-notice", json=body, headers=senior).status_code == 409
    record = api.client.get(incident, headers=staff).json()
    assert [c["note"] for c in record["authority_contacts"]] == [body["note"]]
    assert record["parent_contacts"] == []


def test_an_overdue_report_to_the_authority_resolves_once_it_is_made() -> None:
    due = T0 + dt.timedelta(days=2)
    rec = workflow.ReportDue(
        incident_id="i",
        episode_id="e",
        site="test-school",
        room="calm-1",
        due={"authority_notice": due},
        done={"authority_notice": False},
    )

    def context(site: str, room: str) -> AlertContext:
        return AlertContext(site, room, Policy(), frozenset(), held=False)

    [saved, send] = workflow.overdue_effects([rec], {}, context, due + dt.timedelta(minutes=1))
    assert isinstance(saved, AlertSaved) and isinstance(send, AlertSend)
    assert saved.alert.rule == "authority_notice" and send.tier == "senior"
    made = workflow.ReportDue(**{**rec.__dict__, "done": {"authority_notice": True}})
    [resolved] = workflow.overdue_effects(
        [made], {saved.alert.id: saved.alert}, context, due + dt.timedelta(hours=1)
    )
    assert isinstance(resolved, AlertSaved)
    assert resolved.alert.resolved_at is not None and resolved.change == "resolved"


@pytest.mark.parametrize(
    ("tiers", "first"),
    [({"senior", "dsl"}, "senior"), ({"dsl", "head"}, "dsl"), ({"room"}, "room"), (set(), "senior")],
)
def test_an_overdue_report_goes_first_to_the_seniors_or_the_nearest_tier_with_someone_to_tell(
    tiers: set[str], first: str
) -> None:
    """report_overdue's first tier is `senior`; with nobody there it goes up to the next tier that has
    someone, else down to the highest that has, never to nobody (alerts.md, "Tiers")."""
    due = T0 + dt.timedelta(days=2)
    rec = workflow.ReportDue("i", "e", "test-school", "calm-1", due={"record": due}, done={"record": False})
    ctx = AlertContext("test-school", "calm-1", Policy(), frozenset(tiers), held=False)
    [saved, send] = workflow.overdue_effects([rec], {}, lambda _s, _r: ctx, due + dt.timedelta(minutes=1))
    assert isinstance(saved, AlertSaved) and isinstance(send, AlertSend)
    assert (send.tier, saved.alert.tier, send.alert.tier) == (first, first, first)


NO_CHILD: dict[str, Any] = {
    "staff": [{"name": "Ms Adeyemi", "role": "involved"}],
    "before": "Sam left the calm room at 10:00 and the door swung shut behind him.",
    "classification": "no_child",
    "no_child_reason": "Ms Adeyemi looked through the panel at 10:01: the room was empty; Sam was in class.",
}


def test_a_record_of_no_child_in_the_room_asks_only_what_applies_and_has_no_parents_to_tell() -> None:
    """Semantics 2.2: a sensor reported a child in a room that was empty. The record says how staff know,
    names no child, skips the parents' and the authority's steps, and a senior member of staff reviews
    it from `recorded`."""
    now = T0 + dt.timedelta(hours=1)
    draft = IncidentView(status="awaiting_record", pupil_id=None, record={"classification": "no_child"})
    assert workflow.missing(draft) == ["staff", "before", "no_child_reason"], "no child, no child's account"
    done = IncidentView(status="awaiting_record", pupil_id=None, record=dict(NO_CHILD))
    assert workflow.missing(done) == [] and workflow.record(done, "a", now)["status"] == "recorded"
    recorded = IncidentView(status="recorded", pupil_id=None, record=dict(NO_CHILD))
    assert recorded.no_child and not done.no_child, "only a completed record counts as no child"
    steps: list[Callable[[], object]] = [
        lambda: workflow.parent_contact(recorded, "notice", "reached", now),
        lambda: workflow.parent_contact(recorded, "copy", "sent", now),
        lambda: workflow.withhold_copy(recorded, "dsl", True, "A reason.", now),
        lambda: workflow.authority_notified(recorded, now, None),
    ]
    for step in steps:
        with pytest.raises(WorkflowError) as refused:
            step()
        assert refused.value.status == 409 and refused.value.field == "classification"
    reviewed = workflow.review(recorded, "head", now)
    assert reviewed["status"] == "reviewed" and reviewed["reviewed_by"] == "head"
    # Its review takes the episode out of every figure about children: not by the one who recorded it.
    own = IncidentView(status="recorded", pupil_id=None, record=dict(NO_CHILD), recorded_by="head")
    with pytest.raises(WorkflowError) as self_review:
        workflow.review(own, "head", now)
    assert self_review.value.status == 403 and self_review.value.field == "reviewed_by"
    assert workflow.review(own, "deputy", now)["reviewed_by"] == "deputy"
    # Nor by the one who changed a completed record to say so (recorded as seclusion by someone else).
    relabelled = IncidentView(
        status="recorded", pupil_id=None, record=dict(NO_CHILD), recorded_by="teacher", classified_by="head"
    )
    with pytest.raises(WorkflowError) as changed_own:
        workflow.review(relabelled, "head", now)
    assert changed_own.value.status == 403 and changed_own.value.field == "reviewed_by"
    # Told the parents before it was recorded as empty (so `parent_notified`), it is reviewed all the same,
    # without the debriefs a child's record needs.
    notified = IncidentView(status="parent_notified", pupil_id=None, record=dict(NO_CHILD))
    assert workflow.review(notified, "head", now)["status"] == "reviewed"
    # A draft that says no child changes nothing yet: its parents may still be told, its review waits.
    assert workflow.parent_contact(done, "notice", "reached", now)["parent_notified_at"] == now
    # A seclusion record still goes through the parents before its review.
    seclusion = IncidentView(status="recorded", pupil_id="p", record=dict(COMPLETE))
    with pytest.raises(WorkflowError):
        workflow.review(seclusion, "head", now)
    # Turned into an empty room once recorded, it must say how staff know; it skips the parents then.
    with pytest.raises(WorkflowError) as unexplained:
        workflow.edit(seclusion, {"classification": "no_child"})
    assert unexplained.value.status == 422 and unexplained.value.field == "no_child_reason"
    changed = workflow.edit(seclusion, {"classification": "no_child", "no_child_reason": "Empty: we looked."})
    assert IncidentView(status="recorded", pupil_id="p", record=changed).no_child
    # A completed record stays complete whichever way it is changed (never a way round the record or
    # the review): an empty room's record taken back to seclusion needs the child and all a child's
    # record says; seclusion turned into voluntary use needs its reason; no required field is emptied.
    for view, changes, field in (
        (recorded, {"classification": "seclusion"}, "pupil_id"),
        (
            IncidentView(status="recorded", pupil_id="p", record=dict(NO_CHILD)),
            {"classification": "seclusion"},
            "risk",
        ),
        (seclusion, {"classification": "voluntary"}, "voluntary_reason"),
        (seclusion, {"risk": "  "}, "risk"),
        (
            IncidentView(status="reviewed", pupil_id="p", record={**COMPLETE, "debrief_child": "Talked."}),
            {"debrief_child": ""},
            "debrief_child",
        ),
    ):
        with pytest.raises(WorkflowError) as incomplete:
            workflow.edit(view, changes)
        assert incomplete.value.status == 422 and incomplete.value.field == field
    back = workflow.edit(IncidentView(status="recorded", pupil_id="p", record=dict(NO_CHILD)), {**COMPLETE})
    assert back["classification"] == "seclusion"
    assert workflow.edit(seclusion, {"classification": "voluntary", "voluntary_reason": "Chose it."})
    assert workflow.edit(done, {"before": ""}) is not None, "a draft may be emptied and refilled"
    # What a reviewed record says it was stays as reviewed: no quiet change of the figures afterwards.
    for before, after in (("no_child", "seclusion"), ("seclusion", "voluntary")):
        record = {**(NO_CHILD if before == "no_child" else COMPLETE), "voluntary_reason": "Chose it."}
        with pytest.raises(WorkflowError) as frozen:
            workflow.edit(
                IncidentView(status="reviewed", pupil_id=None, record=record), {"classification": after}
            )
        assert frozen.value.status == 409 and frozen.value.field == "classification"
    assert workflow.edit(IncidentView(status="reviewed", pupil_id=None, record=NO_CHILD), {"before": "More."})


def test_an_empty_rooms_record_skips_the_parents_only_once_a_senior_has_reviewed_it(api: Records) -> None:
    """A record of no child in the room makes no copy and takes no contact with parents; its parents'
    deadlines still run, and their alerts go to the seniors, until a senior member of staff reviews it.
    Then those steps are not needed: their alerts resolve and the record is not overdue any more."""
    ep = api.ended_episode()
    staff, senior = api.token("staff", "test-school"), api.token("senior", "test-school")
    incident = f"/api/incidents/{ep['incident_id']}"

    def check(at: dt.datetime) -> dict[str, dict[str, Any]]:
        api.clock.set(at)
        api.service.process([api.service.report_check()])
        items = api.client.get("/api/alerts", params={"state": "all"}, headers=senior).json()["items"]
        return {a["rule"]: a for a in items if a["kind"] == "report_overdue"}

    overdue = check(dt.datetime(2026, 11, 24, 0, 0, 30, tzinfo=dt.UTC))
    assert set(overdue) == {"record", "parent_notice"}
    assert api.client.patch(incident, json=NO_CHILD, headers=staff).status_code == 200
    assert api.client.post(f"{incident}/record", headers=staff).status_code == 200, "no child is needed"
    after = check(dt.datetime(2026, 11, 25, 0, 0, 1, tzinfo=dt.UTC))
    assert set(after) == {"record", "parent_notice", "parent_copy"}, "not reviewed: the copy is due too"
    assert after["record"]["resolved_at"] is not None
    assert after["parent_notice"]["resolved_at"] is None and after["parent_copy"]["resolved_at"] is None
    copy = api.client.get(f"{incident}/parent-copy.pdf", headers=staff)
    assert copy.status_code == 409 and "no child was in the room" in copy.text
    contact = api.client.post(
        f"{incident}/parent-contacts",
        json={"kind": "notice", "method": "phone", "outcome": "reached"},
        headers=staff,
    )
    assert contact.status_code == 409 and "classification" in contact.json()["detail"]
    # Taken back to seclusion, it must be a whole record of a child: the child first.
    back = api.client.patch(incident, json={"classification": "seclusion"}, headers=staff)
    assert back.status_code == 422 and "pupil_id" in back.text
    now = dt.datetime(2026, 11, 25, 0, 2, 1, tzinfo=dt.UTC)
    assert [r.id for r in api.service.records.overdue(now)] == [ep["incident_id"]]
    assert (
        api.client.post(
            f"{incident}/review", json={"note": "Checked the panel log."}, headers=senior
        ).status_code
        == 200
    )
    settled = check(now)
    assert all(a["resolved_at"] is not None for a in settled.values()) and len(settled) == 3
    assert api.service.records.overdue(now) == [], "a reviewed empty room has no parents' step"
    frozen = api.client.patch(incident, json={"classification": "seclusion"}, headers=senior)
    assert frozen.status_code == 409 and frozen.json()["detail"].startswith("classification:")
    body = api.client.get(incident, headers=staff).json()
    assert body["status"] == "reviewed" and body["record"]["review_note"] == "Checked the panel log."
    # The review note is the reviewer's: an edit cannot put other words under their name.
    rewrite = api.client.patch(incident, json={"review_note": "Reviewed: all fine."}, headers=staff)
    assert rewrite.status_code == 422 and "review_note" in rewrite.text
    unchanged = api.client.patch(incident, json={"review_note": "Checked the panel log."}, headers=staff)
    assert unchanged.status_code == 200  # the whole record sent back as it is: nothing changes


def test_a_senior_who_changes_a_record_to_no_child_does_not_review_it_too(api: Records) -> None:
    """Four eyes: the review of a `no_child` record takes the episode out of every figure about
    children, so whoever says no child was there (recording it, or changing a completed record to say
    so) is not the one who reviews it."""
    ep = api.ended_episode()

    def senior(name: str) -> dict[str, str]:
        token = create_token(api.store, name, "senior", ["test-school"], False, T0)
        return {"Authorization": f"Bearer {token}"}

    senior_b, senior_c = senior("senior-b"), senior("senior-c")
    incident = _recorded(api, ep)  # as seclusion, by `staff-user`
    changed = api.client.patch(
        incident, json={"classification": "no_child", "no_child_reason": "I say so."}, headers=senior_b
    )
    assert changed.status_code == 200 and changed.json()["classified_by"] == "senior-b"
    own = api.client.post(f"{incident}/review", json={}, headers=senior_b)
    assert own.status_code == 403 and "reviewed_by" in own.text
    # The record still names the child it was about: reviewed so, her parents' steps would be skipped.
    named = api.client.post(f"{incident}/review", json={}, headers=senior_c)
    assert named.status_code == 409 and "pupil_id" in named.text
    assert api.client.get(incident, headers=senior_c).json()["status"] == "recorded"
    api.service.start()
    try:
        off = api.client.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": None}, headers=senior_b)
    finally:
        api.service.stop()
    assert off.status_code == 200 and off.json()["pupil_id"] is None
    other = api.client.post(f"{incident}/review", json={}, headers=senior_c)
    assert other.status_code == 200 and other.json()["reviewed_by"] == "senior-c"


def test_after_the_records_child_is_changed_the_new_childs_overdue_parents_notice_is_raised_again(
    api: Records,
) -> None:
    """Changing a record's child starts the parents' steps again. A step whose `report_overdue` had been
    raised and resolved (the first family told) was never raised again: the new child's parents were
    never told and no senior was chased (found by a review). It is now raised again, as a new round with
    its own id; the first round stays as it was."""
    ep = api.ended_episode()
    # The parents' notice falls overdue at midnight and is raised
    first = _report_alerts(api, _after_midnight(30))
    assert first["parent_notice"]["resolved_at"] is None
    incident = _recorded(api, ep, first="Sam")
    staff = api.token("staff", "test-school")
    senior = api.token("senior", "test-school")
    told = api.client.post(
        f"{incident}/parent-contacts",
        json={"kind": "notice", "method": "phone", "outcome": "reached"},
        headers=staff,
    )
    assert told.status_code == 201, told.text
    resolved = _report_alerts(api, _after_midnight(9 * 3600))["parent_notice"]
    assert resolved["resolved_at"] is not None and resolved["note"] == "the report was done"
    # The child was another: her parents' steps start again, the notice's deadline long passed
    _, moved = _another_child_chosen(api, ep)
    assert moved.status_code == 200, moved.text
    assert api.client.get(incident, headers=staff).json()["parent_notified_at"] is None
    _report_alerts(api, _after_midnight(10 * 3600))
    items = api.client.get("/api/alerts", params={"state": "all"}, headers=senior).json()["items"]
    notices = sorted(
        (a for a in items if a["kind"] == "report_overdue" and a["rule"] == "parent_notice"),
        key=lambda a: a["raised_at"],
    )
    assert [(a["id"] == resolved["id"], a["resolved_at"] is None) for a in notices] == [
        (True, False),
        (False, True),
    ]
    assert notices[1]["late"] is True and notices[1]["tier"] == resolved["tier"]
    # Looked at again, nothing more is raised; told, the new round resolves like the first
    _report_alerts(api, _after_midnight(10 * 3600 + 60))
    again = api.client.get("/api/alerts", params={"state": "all"}, headers=senior).json()["items"]
    assert len([a for a in again if a["kind"] == "report_overdue" and a["rule"] == "parent_notice"]) == 2
    assert (
        api.client.post(
            f"{incident}/parent-contacts",
            json={"kind": "notice", "method": "phone", "outcome": "reached"},
            headers=staff,
        ).status_code
        == 201
    )
    _report_alerts(api, _after_midnight(11 * 3600))
    final = api.client.get("/api/alerts", params={"state": "all"}, headers=senior).json()["items"]
    rounds = [a for a in final if a["kind"] == "report_overdue" and a["rule"] == "parent_notice"]
    assert len(rounds) == 2 and all(a["resolved_at"] is not None for a in rounds)


# -- a child taken off a record (the limits of a `no_child` record and a child, decided)


def _put_child(api: Records, ep: dict[str, Any], pupil_id: str | None, who: dict[str, str]) -> Any:
    api.service.start()
    try:
        return api.client.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": pupil_id}, headers=who)
    finally:
        api.service.stop()


def test_a_child_chosen_by_mistake_is_taken_off_the_record_and_the_room_empty_is_recorded(
    api: Records,
) -> None:
    """A PIR still reported Sam, who had just left, when the door swung shut; staff chose him on the
    record before anyone looked. A record saying no child was in the room cannot name him: recording it
    so was accepted and left his name on a record whose parents' steps then count as not needed. Now
    the record step refuses (422 naming `pupil_id`) until he is taken off (`pupil_id: null`, an
    addition to the contract), which is audited and seen in the episode's timeline."""
    # Given an ended episode whose record names Sam, drafted as an empty room
    ep = api.ended_episode()
    staff = api.token("staff", "test-school")
    incident = f"/api/incidents/{ep['incident_id']}"
    sam = _pupil_called(api, "Sam")
    assert _put_child(api, ep, sam, staff).status_code == 200
    assert api.client.patch(incident, json=NO_CHILD, headers=staff).status_code == 200
    # When staff mark it recorded, it is refused, naming the child
    refused = api.client.post(f"{incident}/record", headers=staff)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "pupil_id"]
    assert api.client.get(incident, headers=staff).json()["status"] == "awaiting_record"
    # When they take him off, the record and the episode name nobody, and it is recorded
    off = _put_child(api, ep, None, staff)
    assert off.status_code == 200 and off.json()["pupil_id"] is None, off.text
    assert api.client.get(incident, headers=staff).json()["pupil_id"] is None
    episode = api.client.get(f"/api/episodes/{ep['id']}", headers=staff).json()
    assert episode["pupil_id"] is None
    assert "pupil_removed" in [item["kind"] for item in episode["timeline"]]
    assert api.client.post(f"{incident}/record", headers=staff).json()["status"] == "recorded"
    # And the audit says who took which child off, by register id only
    (entry,) = _audit(api, target_id=ep["id"], action="detach_pupil")
    assert entry.actor == "staff-user" and entry.detail == {"pupil_id": None, "previous_pupil_id": sam}
    # Taking off a child a record does not name changes nothing and writes nothing
    assert _put_child(api, ep, None, staff).status_code == 200
    assert len(_audit(api, target_id=ep["id"], action="detach_pupil")) == 1


def test_a_recorded_empty_rooms_record_takes_the_child_who_was_there_and_then_needs_the_parents(
    api: Records,
) -> None:
    """Recorded as "no child in the room", a record could not take a child before its review (attaching
    waited for the classification, and changing the classification back to seclusion waited for the
    child): a dead end. Now the child is chosen on it, its review is refused while it names a child
    (409, `pupil_id`: reviewed so, her parents' steps would count as not needed), and the record is
    completed as what happened; then her parents are told as for any record."""
    ep = api.ended_episode()
    staff, senior = api.token("staff", "test-school"), api.token("senior", "test-school")
    incident = f"/api/incidents/{ep['incident_id']}"
    assert api.client.patch(incident, json=NO_CHILD, headers=staff).status_code == 200
    assert api.client.post(f"{incident}/record", headers=staff).json()["status"] == "recorded"
    # When a senior learns Sam was in the room after all, and chooses him
    sam = _pupil_called(api, "Sam")
    chosen = _put_child(api, ep, sam, senior)
    assert chosen.status_code == 200, chosen.text
    # Then the record cannot be reviewed as an empty room while it names him
    review = api.client.post(f"{incident}/review", json={}, headers=senior)
    assert review.status_code == 409 and "pupil_id" in review.text
    # And once it says what happened to him, his parents are owed their notice and copy
    seclusion = {**COMPLETE, "classification": "seclusion"}
    changed = api.client.patch(incident, json=seclusion, headers=senior)
    assert changed.status_code == 200, changed.text
    body = api.client.get(incident, headers=staff).json()
    assert body["pupil_id"] == sam and body["status"] == "recorded" and body["classification"] == "seclusion"
    phoned = {"method": "phone", "outcome": "reached"}
    told = api.client.post(f"{incident}/parent-contacts", json=phoned, headers=staff)
    assert told.status_code == 201, told.text


def test_a_completed_record_of_a_child_keeps_its_child_and_a_signed_or_reviewed_one_is_not_changed(
    api: Records,
) -> None:
    """Taking the child off is for a record not yet complete, or one saying no child was there. A
    completed record of a child keeps one (422, `pupil_id`: choose the right child instead); a record
    reviewed as an empty room takes no child (409: an addendum after sign-off says who was there); a
    signed record is not changed (409)."""
    ep = api.ended_episode()
    staff, senior = api.token("staff", "test-school"), api.token("senior", "test-school")
    incident = _recorded(api, ep, first="Sam")
    sam = api.client.get(incident, headers=staff).json()["pupil_id"]
    kept = _put_child(api, ep, None, staff)
    assert kept.status_code == 422 and kept.json()["detail"][0]["loc"] == ["body", "pupil_id"]
    assert api.client.get(incident, headers=staff).json()["pupil_id"] == sam
    assert not _audit(api, target_id=ep["id"], action="detach_pupil")
    # A record reviewed as an empty room (another episode)
    other = api.ended_episode(start=1000)
    empty = f"/api/incidents/{other['incident_id']}"
    assert api.client.patch(empty, json=NO_CHILD, headers=staff).status_code == 200
    assert api.client.post(f"{empty}/record", headers=staff).status_code == 200
    assert api.client.post(f"{empty}/review", json={}, headers=senior).json()["status"] == "reviewed"
    late = _put_child(api, other, sam, staff)
    assert late.status_code == 409 and "addendum" in late.text
    assert api.client.get(empty, headers=staff).json()["pupil_id"] is None
    assert api.client.post(f"{empty}/sign-off", headers=senior).json()["status"] == "closed"
    assert _put_child(api, other, None, staff).status_code == 409


def _pupil_called(api: Records, first: str) -> str:
    senior = api.token("senior", "test-school")
    made = api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": first, "last_name": "Jones"}, headers=senior
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def test_the_parents_copy_made_after_sign_off_carries_the_corrections_of_its_parts(api: Records) -> None:
    """After sign-off the record changes only by dated corrections. The parents' copy made afterwards
    was made from the signed record alone: a parent sent it then read what the school had corrected
    (an injury found the next day). Now the copy carries the corrections of what the letter says, and
    general ones, with their dates; a correction of a part the letter does not show (the adults'
    injuries) stays the school's own."""
    ep = api.ended_episode()
    incident = _signed_off(api, ep)
    staff = api.token("staff", "test-school")
    for body in (
        {"text": "A bruise on Sam's left arm was found the next morning.", "field": "injuries_child"},
        {"text": "Ms Adeyemi's wrist was sprained.", "field": "injuries_staff"},
        {"text": "The times above were checked against the panel's log."},
    ):
        added = api.client.post(f"{incident}/addenda", json=body, headers=staff)
        assert added.status_code in (200, 201), added.text
    copy = api.client.get(f"{incident}/parent-copy.html", headers=staff)
    assert copy.status_code == 200, copy.text
    text = html.unescape(" ".join(re.sub(r"<[^>]+>", " ", copy.text).split()))
    assert "Corrections to this record" in text
    assert "how Sam was, and any injuries A bruise on Sam's left arm was found the next morning." in text
    assert "The times above were checked against the panel's log." in text
    assert "wrist" not in text, "a correction of the adults' injuries is not the parents' to read"
    assert text.index("A bruise") < text.index("The times above"), "oldest first"


def test_a_register_file_without_references_imported_again_updates_its_children(api: Records) -> None:
    """A register exported without the school's references (or a child added by hand without one) was
    added again by every import: each child twice, their episodes split between two entries of the
    register, the figures counting two children. Without a reference, a child is now matched on first
    and last name (case and spacing aside) and date of birth, when exactly one child of the site has
    them; two children alike are never guessed between."""
    senior = api.token("senior", "test-school")
    csv = (
        "first_name,last_name,date_of_birth,year_group\n"
        "Sam,Jones,2016-04-01,Year 4\n"
        "Aisha,Khan,2015-09-30,Year 5\n"
    )

    def load(text: str) -> Any:
        done = api.client.post(
            "/api/pupils/import", params={"site": "test-school"}, content=text.encode(), headers=senior
        )
        assert done.status_code == 200, done.text
        return done.json()

    assert load(csv) == {"added": 2, "updated": 0}
    ids = {p["first_name"]: p["id"] for p in api.client.get("/api/pupils", headers=senior).json()["items"]}
    # The same file, a year on, with the names typed differently: the same two children, updated
    again = (
        "first_name,last_name,date_of_birth,year_group\n"
        "sam,  JONES,2016-04-01,Year 5\n"
        "Aisha,Khan,2015-09-30,Year 6\n"
    )
    assert load(again) == {"added": 0, "updated": 2}
    register = api.client.get("/api/pupils", headers=senior).json()["items"]
    assert {p["id"] for p in register} == set(ids.values()) and len(register) == 2
    # A child added by hand with a reference keeps it when a file without references updates them
    by_hand = {"site": "test-school", "reference": "C3", "first_name": "Lee", "last_name": "Park"}
    lee = api.client.post("/api/pupils", json={**by_hand, "date_of_birth": "2017-01-02"}, headers=senior)
    assert load("first_name,last_name,date_of_birth,sen\nLee,Park,2017-01-02,sen_support\n") == {
        "added": 0,
        "updated": 1,
    }
    [kept] = [
        p for p in api.client.get("/api/pupils", headers=senior).json()["items"] if p["first_name"] == "Lee"
    ]
    assert kept["id"] == lee.json()["id"] and kept["reference"] == "C3" and kept["sen"] == "sen_support"
    # One added by hand without a reference, matched the same way, is the same child
    same = api.client.post(
        "/api/pupils",
        json={
            "site": "test-school",
            "first_name": "Aisha",
            "last_name": "Khan",
            "date_of_birth": "2015-09-30",
        },
        headers=senior,
    )
    assert same.status_code == 201 and same.json()["id"] == ids["Aisha"]
    # Two children alike (same names and birthday) are never guessed between: the file adds another
    twin = {"site": "test-school", "reference": "T1", "first_name": "Sam", "last_name": "Jones"}
    api.client.post("/api/pupils", json={**twin, "date_of_birth": "2016-04-01"}, headers=senior)
    assert load("first_name,last_name,date_of_birth\nSam,Jones,2016-04-01\n") == {"added": 1, "updated": 0}
