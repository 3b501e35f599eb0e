"""HTTP API of the incident records and the pupil register (contract section 6, the incident issue).

Every read of a record or of the register by a person is audited; every change is audited in the same
transaction as the change. A signed-off record refuses changes (409): corrections are addenda.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from seclusion_contract import SLUG, format_ts, format_ts_or_none

from .auth import Principal
from .config import LoadedSite
from .core import incident as workflow
from .core.alerts import age_on
from .core.episode import Episode
from .core.incident import RecordFields, WorkflowError
from .deps import Cursor, Limit, Senior, Staff, site_allowed
from .errors import BadRequest, RejectedMessage
from .models import AuditEntry, EpisodeRecord, IncidentAddendum, IncidentRecord, ParentContact, Pupil
from .parent_mail import AddressError, MailError, check_address, parent_copy, send_copy, site_said
from .record_facts import auto_json, facts_now, shown, snapshot
from .record_store import NotFound, RecordStore, RollOrder, SignedOff, incident_view
from .reports import ParentCopy, render_html, render_pdf
from .service import HubService
from .store import pack_cursor, unpack_cursor
from .web import DOCUMENT_HEADERS

log = logging.getLogger(__name__)

SEN = ("none", "sen_support", "ehcp", "unknown")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PupilIn(_Body):
    """A child on the register (`POST /api/pupils`)."""

    site: Annotated[str, Field(pattern=SLUG.pattern)]
    reference: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    # A name is not blank: the parents' copy and every page need one (a space alone is none).
    first_name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"\S")]
    last_name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"\S")]
    date_of_birth: dt.date | None = None
    year_group: Annotated[str, Field(max_length=16)] | None = None
    sex: Annotated[str, Field(max_length=32)] | None = None
    ethnicity: Annotated[str, Field(max_length=64)] | None = None
    sen: Literal["none", "sen_support", "ehcp", "unknown"] = "unknown"
    fsm: bool | None = None
    looked_after: bool | None = None
    characteristics: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=20
    )
    joined_on: dt.date | None = None  # first day on the school's roll (an addition to the contract)
    left_on: dt.date | None = None  # last day on roll: a leaver is not counted in later periods' rates

    @model_validator(mode="after")
    def _roll_in_order(self) -> PupilIn:
        if self.joined_on is not None and self.left_on is not None and self.left_on < self.joined_on:
            raise ValueError("left_on: the last day on roll is before joined_on, the first")
        return self


class PupilChoice(_Body):
    """`PUT /api/episodes/{id}/pupil`: a child of the register, or `null` to take the child off (an
    addition to the contract: a child chosen by mistake, or a record of an empty room)."""

    pupil_id: Annotated[str, Field(min_length=1, max_length=36)] | None


WRITTEN_COPY_METHODS = ("email", "letter", "handed", "post", "other")


class ContactIn(_Body):
    """A contact with the parents: a notice (told what happened) or the written copy."""

    kind: Literal["notice", "copy"] = "notice"
    method: Literal["phone", "in_person", "email", "letter", "text_message", "handed", "post", "other"]
    outcome: Literal["reached", "no_answer", "message_left", "sent", "failed"]
    note: Annotated[str, Field(max_length=2000)] = ""

    @field_validator("method")
    @classmethod
    def _in_writing(cls, method: str, info: ValidationInfo) -> str:
        # The parents get the record in writing (semantics 6): a call or a conversation is a notice,
        # never the written copy (the page offers only these; the API holds to them too).
        if info.data.get("kind") == "copy" and method not in WRITTEN_COPY_METHODS:
            raise ValueError(f"the written copy is sent in writing: one of {', '.join(WRITTEN_COPY_METHODS)}")
        return method


class WithholdIn(_Body):
    reason: Annotated[str, Field(min_length=1, max_length=4000)]


class NoteIn(_Body):
    note: Annotated[str, Field(max_length=4000)] = ""


class AddendumIn(_Body):
    """A dated correction: what was wrong (optionally which field) and what is right."""

    text: Annotated[str, Field(min_length=3, max_length=10_000)]
    field: Annotated[str, Field(max_length=64)] | None = None


def pupil_json(p: Pupil) -> dict[str, Any]:
    return {
        "id": p.id,
        "site": p.site,
        "reference": p.reference,
        "first_name": p.first_name,
        "last_name": p.last_name,
        "date_of_birth": p.date_of_birth.isoformat() if p.date_of_birth else None,
        "year_group": p.year_group,
        "sex": p.sex,
        "ethnicity": p.ethnicity,
        "sen": p.sen,
        "fsm": p.fsm,
        "looked_after": p.looked_after,
        "characteristics": p.characteristics,
        "joined_on": p.joined_on.isoformat() if p.joined_on else None,
        "left_on": p.left_on.isoformat() if p.left_on else None,
    }


def record_version(row: IncidentRecord) -> str:
    """The record's version as stored, as an HTTP entity tag (quoted): a digest of every column, so any
    change of the record (a field, a step, its child) is a new version, even two within one tick of the
    clock. `GET` gives it (`ETag`, and `version`); `PATCH` with `If-Match` saves only onto it."""
    # Not why the parents' copy was withheld: the version is seen by every member of staff, and the reason
    # only by safeguarding leads; a digest of it would let a guess be confirmed (its time and author,
    # which staff see, change the version when a copy is withheld).
    stored = json.dumps(row.model_dump(exclude={"parent_copy_withheld_reason"}), sort_keys=True, default=str)
    return '"' + hashlib.sha256(stored.encode()).hexdigest()[:32] + '"'


def version_matches(if_match: str, version: str) -> bool:
    """`If-Match` (RFC 9110 13.1.1): `*`, or a list of entity tags compared strongly (a weak one never
    matches)."""
    tags = [t.strip() for t in if_match.split(",")]
    return "*" in tags or version in tags


def incident_json(row: IncidentRecord, dsl: bool) -> dict[str, Any]:
    """The record as the API shows it: no child's name here (the register has it; `pupil_id` links). Why
    a copy was withheld may be a safeguarding matter: only a designated safeguarding lead (`dsl`) sees
    the reason; everyone else sees that it was withheld, when and by whom (docs/records.md)."""
    return {
        "id": row.id,
        "episode_id": row.episode_id,
        "site": row.site,
        "room": row.room,
        "status": row.status,
        "version": record_version(row),
        "opened_at": format_ts(row.opened_at),
        "updated_at": format_ts(row.updated_at),
        "ended_at": format_ts_or_none(row.ended_at),
        "pupil_id": row.pupil_id,
        "classification": row.record.get("classification"),
        "record": row.record,
        "due": {
            "record": format_ts_or_none(row.record_due_at),
            "parent_notice": format_ts_or_none(row.parent_notice_due_at),
            "parent_copy": format_ts_or_none(row.parent_copy_due_at),
            "authority_notice": format_ts_or_none(row.authority_notice_due_at),
        },
        "recorded_at": format_ts_or_none(row.recorded_at),
        "recorded_by": row.recorded_by,
        "classified_by": row.classified_by,
        "parent_notified_at": format_ts_or_none(row.parent_notified_at),
        "parent_copy_sent_at": format_ts_or_none(row.parent_copy_sent_at),
        "parent_copy_withheld_at": format_ts_or_none(row.parent_copy_withheld_at),
        "parent_copy_withheld_by": row.parent_copy_withheld_by,
        "parent_copy_withheld_reason": row.parent_copy_withheld_reason if dsl else None,
        "authority_notified_at": format_ts_or_none(row.authority_notified_at),
        "reviewed_at": format_ts_or_none(row.reviewed_at),
        "reviewed_by": row.reviewed_by,
        "closed_at": format_ts_or_none(row.closed_at),
        "closed_by": row.closed_by,
        "missing": workflow.missing(incident_view(row)) if row.status in ("open", "awaiting_record") else [],
    }


def incident_summary(row: IncidentRecord) -> dict[str, Any]:
    """A record in a list: its state and deadlines, without what staff wrote (reading that is a read of
    the record, audited one by one through `GET /api/incidents/{id}`): not the record's fields, not its
    `classification` (a draft's too), no reason for a withheld copy either, whoever asks. Nor `missing`:
    the fields a record asks for follow its classification (`voluntary_reason` for voluntary use,
    `no_child_reason` and none of the child's for an empty room), so the list of what is still empty
    would say what a draft was classified as."""
    body = incident_json(row, dsl=False)
    for written in ("record", "classification", "missing"):
        del body[written]
    return body


# Why a child's days on roll are refused: said once, for a request and a file alike.
ROLL = "the last day on roll cannot come before the first"
_TRUE = {"yes", "y", "true", "1"}
_ACROSS = re.compile(r"^Value error, (?P<field>[a-z_]+): (?P<problem>.+)$", re.S)
_FALSE = {"no", "n", "false", "0"}
CSV_COLUMNS = (
    "reference",
    "first_name",
    "last_name",
    "date_of_birth",
    "year_group",
    "sex",
    "ethnicity",
    "sen",
    "fsm",
    "looked_after",
    "characteristics",
    "joined_on",
    "left_on",
)


def parse_register_csv(text: str, site: str, now: dt.datetime) -> tuple[list[Pupil], frozenset[str]]:
    """The register from CSV (header row; `first_name` and `last_name` required, the other columns of
    `CSV_COLUMNS` optional), and the columns it has. BadRequest names the line and the column of the
    first problem."""
    try:
        return _parse_register_csv(text, site, now)
    except csv.Error as exc:  # a field past the csv module's limit, a NUL: the line, never a 500
        raise BadRequest("body", "csv", f"not a CSV the register can read: {exc}") from exc


def _parse_register_csv(text: str, site: str, now: dt.datetime) -> tuple[list[Pupil], frozenset[str]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    columns = ", ".join(CSV_COLUMNS)
    if header and not any(h in CSV_COLUMNS for h in header):
        # Most likely a file without its header row: the first child's line. Never echoed (a name).
        raise BadRequest("body", "header", f"the first line must be the header row (columns: {columns})")
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        # A header row (it has a known heading) with one the register does not know: a heading, named.
        raise BadRequest("body", unknown[0], f"unknown column (columns: {columns})")
    for needed in ("first_name", "last_name"):
        if needed not in header:
            raise BadRequest("body", needed, "the CSV needs this column")
    pupils: list[Pupil] = []
    seen: set[str] = set()
    for line, raw in enumerate(reader, start=2):
        if any(v is None for k, v in raw.items() if k is not None):
            # Fewer cells than the header: a missing cell is not an empty one (an update would keep what
            # an empty one leaves out), and a row cut short is more likely a mistake than a choice.
            raise BadRequest("body", f"line {line}", "fewer cells than the header row has columns")
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        data: dict[str, Any] = {"site": site}
        for key in (
            "reference",
            "first_name",
            "last_name",
            "date_of_birth",
            "year_group",
            "sex",
            "ethnicity",
            "joined_on",
            "left_on",
        ):
            if row.get(key):
                data[key] = row[key]
        if row.get("sen"):
            data["sen"] = row["sen"].lower()
        for key in ("fsm", "looked_after"):
            value = row.get(key, "").lower()
            if value:
                if value not in _TRUE | _FALSE:
                    raise BadRequest("body", f"line {line}: {key}", "use yes or no")
                data[key] = value in _TRUE
        if row.get("characteristics"):
            data["characteristics"] = [c.strip() for c in row["characteristics"].split(";") if c.strip()]
        try:
            checked = PupilIn.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where, problem = ".".join(str(p) for p in first["loc"]), first["msg"]
            across = _ACROSS.match(problem) if not where else None
            if across is not None:  # a rule across the row's columns names its column first
                where, problem = across["field"], across["problem"]
            raise BadRequest("body", f"line {line}: {where}", problem) from exc
        if checked.reference:
            if checked.reference in seen:
                raise BadRequest("body", f"line {line}: reference", "listed twice in this file")
            seen.add(checked.reference)
        pupils.append(Pupil(id=str(uuid.uuid4()), created_at=now, updated_at=now, **checked.model_dump()))
    return pupils, frozenset(header)


def records_router(service: HubService, records: RecordStore) -> APIRouter:
    """The incident and register endpoints (mounted by api.create_app)."""
    router = APIRouter()

    def audit(who: Principal, action: str, target_type: str, target_id: str, **detail: Any) -> AuditEntry:
        return AuditEntry(
            at=service.clock.now(),
            actor=who.name,
            action=action,
            target_type=target_type,
            target_id=target_id,
            detail=detail,
        )

    def site_of(site: str) -> LoadedSite:
        """The site file of a record's school; 409 once the school is in none of the hub's site files
        (taken out: its records are kept and read, but its name, clocks and profile are not known)."""
        loaded = service.sites.get(site)
        if loaded is None:
            raise HTTPException(
                409,
                f"site: {site!r} is no longer in the hub's site files, so its records can be read but not "
                "changed or sent (put its site file back to do so)",
            )
        return loaded

    def found(incident_id: str, who: Principal) -> IncidentRecord:
        row = records.incident(incident_id)
        if row is None:
            raise HTTPException(404, "no such incident")
        site_allowed(who, row.site)
        return row

    def change(
        incident_id: str,
        who: Principal,
        action: str,
        decide: Callable[[IncidentRecord], dict[str, Any]],
        **extra: Any,
    ) -> dict[str, Any]:
        found(incident_id, who)
        now = service.clock.now()

        def audited(row: IncidentRecord, changes: dict[str, Any]) -> AuditEntry:
            # The facts a sign-off keeps are the episode's own (its data, read and audited apart).
            before = {k: _jsonable(getattr(row, k)) for k in changes if k != "signed"}
            after = {k: _jsonable(v) for k, v in changes.items() if k != "signed"}
            # What was added besides (the record's own columns may not change): a contact by its kind,
            # method and outcome, an addendum by its field and time, each by its id; never their free
            # text (a note, a correction), which the record keeps and its reads are audited.
            added: dict[str, Any] = {}
            contact: ParentContact | None = extra.get("contact") or extra.get("settle")
            if contact is not None:
                added["contact"] = {
                    "id": contact.id,
                    "kind": contact.kind,
                    "method": contact.method,
                    "outcome": contact.outcome,
                }
            addendum: IncidentAddendum | None = extra.get("addendum")
            if addendum is not None:
                added["addendum"] = {"id": addendum.id, "at": format_ts(addendum.at), "field": addendum.field}
            return audit(who, action, "incident", row.id, before=before, after=after, **added)

        try:
            row = records.change_incident(incident_id, decide, audited, now, **extra)
        except WorkflowError as exc:
            if exc.status == 422:
                raise BadRequest("body", exc.field, exc.message) from exc
            raise HTTPException(exc.status, f"{exc.field}: {exc.message}") from exc
        except NotFound as exc:
            raise HTTPException(404, "no such incident") from exc
        return incident_json(row, who.dsl)

    @router.get("/api/incidents/{incident_id}", tags=["incidents"])
    def incident(incident_id: str, who: Staff, response: Response) -> dict[str, Any]:
        """One incident record with what the hub filled in (`auto`), its parent contacts and addenda.
        Every read by a person is audited. `ETag`: the record's version, for `PATCH` with `If-Match`."""
        row = found(incident_id, who)
        records.audit(audit(who, "read", "incident", row.id))
        body = incident_json(row, who.dsl)
        response.headers["ETag"] = body["version"]
        facts = shown(service, records, row)
        now = service.clock.now()
        body["auto"] = auto_json(facts.facts, now) if facts is not None else None
        # A signed-off record shows the episode as it was signed; what the hub has learned since is
        # beside it, never folded in (record_facts.py).
        body["auto_signed_at"] = format_ts_or_none(facts.facts.signed_at) if facts is not None else None
        body["auto_now"] = auto_json(facts.now, now) if facts is not None and facts.now is not None else None
        body["auto_changed"] = list(facts.changed) if facts is not None else []
        contacts = records.contacts(row.id)
        body["parent_contacts"] = [
            {
                "at": format_ts(c.at),
                "by": c.by,
                "kind": c.kind,
                "method": c.method,
                "outcome": c.outcome,
                "note": c.note,
            }
            for c in contacts
            if c.kind != "authority"
        ]
        body["authority_contacts"] = [
            {"at": format_ts(c.at), "by": c.by, "note": c.note} for c in contacts if c.kind == "authority"
        ]
        body["addenda"] = [
            {"at": format_ts(a.at), "author": a.author, "field": a.field, "text": a.text}
            for a in records.addenda(row.id)
        ]
        return body

    @router.patch(
        "/api/incidents/{incident_id}",
        tags=["incidents"],
        responses={412: {"description": "someone else changed the record since `If-Match`: nothing saved"}},
    )
    def edit_incident(
        incident_id: str,
        body: RecordFields,
        who: Staff,
        response: Response,
        if_match: Annotated[str | None, Header(max_length=1000)] = None,
    ) -> dict[str, Any]:
        """Add or correct the record's fields (only those sent change). 409 once signed off. With
        `If-Match` (the `ETag` of the record read): saved only if nobody changed the record since, else
        412 and nothing is saved. Without it, the fields sent are saved onto the record as it is now."""
        changes = body.model_dump(mode="json", exclude_unset=True)

        def decide(row: IncidentRecord) -> dict[str, Any]:
            if if_match is not None and not version_matches(if_match, record_version(row)):
                raise WorkflowError(
                    412,
                    "If-Match",
                    "someone else changed the record since you read it; nothing was saved: read it again "
                    "to see their change",
                )
            view = incident_view(row)
            result: dict[str, Any] = {"record": workflow.edit(view, changes)}
            if view.status in workflow.COMPLETED and result["record"].get("classification") != row.record.get(
                "classification"
            ):
                result["classified_by"] = who.name  # the one who says now what the episode was
            return result

        saved = change(incident_id, who, "edit", decide)
        response.headers["ETag"] = saved["version"]
        return saved

    @router.post("/api/incidents/{incident_id}/record", tags=["incidents"])
    def complete_record(incident_id: str, who: Staff) -> dict[str, Any]:
        """Staff say the record is complete (`awaiting_record` → `recorded`); 422 names what is missing."""
        now = service.clock.now()
        return change(
            incident_id, who, "record", lambda row: workflow.record(incident_view(row), who.name, now)
        )

    @router.post("/api/incidents/{incident_id}/parent-contacts", tags=["incidents"], status_code=201)
    def parent_contact(incident_id: str, body: ContactIn, who: Staff) -> dict[str, Any]:
        """A contact with the parents, tried or made: every attempt is kept with its outcome."""
        now = service.clock.now()
        contact = ParentContact(
            incident_id=incident_id,
            at=now,
            by=who.name,
            kind=body.kind,
            method=body.method,
            outcome=body.outcome,
            note=body.note,
        )
        return change(
            incident_id,
            who,
            f"parent_{body.kind}",
            lambda row: workflow.parent_contact(incident_view(row), body.kind, body.outcome, now, who.dsl),
            contact=contact,
        )

    @router.post("/api/incidents/{incident_id}/parent-copy/withhold", tags=["incidents"])
    def withhold_copy(incident_id: str, body: WithholdIn, who: Staff) -> dict[str, Any]:
        """A designated safeguarding lead withholds the written copy, with the reason (403 for others)."""
        now = service.clock.now()
        return change(
            incident_id,
            who,
            "withhold_parent_copy",
            lambda row: workflow.withhold_copy(incident_view(row), who.name, who.dsl, body.reason, now),
        )

    @router.post("/api/incidents/{incident_id}/review", tags=["incidents"])
    def review(incident_id: str, body: NoteIn, who: Senior) -> dict[str, Any]:
        """A senior member of staff reviews the record (`parent_notified` → `reviewed`)."""
        now = service.clock.now()

        def decide(row: IncidentRecord) -> dict[str, Any]:
            changes = workflow.review(incident_view(row), who.name, now)
            # Each review's own note (or none): an earlier reviewer's words never stand under this name.
            record = {k: v for k, v in row.record.items() if k != "review_note"}
            if body.note:
                record["review_note"] = body.note
            if record != row.record:
                changes["record"] = record
            return changes

        return change(incident_id, who, "review", decide)

    @router.post("/api/incidents/{incident_id}/sign-off", tags=["incidents"])
    def sign_off(incident_id: str, who: Senior) -> dict[str, Any]:
        """Sign the reviewed record off (`closed`): from now on it changes only by addenda."""
        now = service.clock.now()

        def decide(row: IncidentRecord) -> dict[str, Any]:
            changes = workflow.sign_off(incident_view(row), who.name, now)
            # Read under the records' lock, as the record is signed: no child attached in between.
            facts = facts_now(service, records, row)
            if facts is not None:
                # And what the parents' copy says from the site file: the signed copy keeps saying it.
                said = site_said(site_of(row.site), row.room, facts.episode)
                changes["signed"] = snapshot(facts, now, said)
            return changes

        return change(incident_id, who, "sign_off", decide)

    @router.post("/api/incidents/{incident_id}/authority-notice", tags=["incidents"])
    def authority_notice(incident_id: str, body: NoteIn, who: Senior) -> dict[str, Any]:
        """Record that the report to the local authority (or the state) was made, with a note of how and
        to whom; it resolves an overdue report's alert."""
        now = service.clock.now()

        def decide(row: IncidentRecord) -> dict[str, Any]:
            return workflow.authority_notified(incident_view(row), now, row.authority_notified_at)

        note = ParentContact(
            incident_id=incident_id,
            at=now,
            by=who.name,
            kind="authority",
            method="other",
            outcome="sent",
            note=body.note,
        )
        return change(incident_id, who, "authority_notice", decide, contact=note)

    @router.post("/api/incidents/{incident_id}/addenda", tags=["incidents"], status_code=201)
    def addendum(incident_id: str, body: AddendumIn, who: Staff) -> dict[str, Any]:
        """A dated correction with its author, on a signed-off record only (409 before: the record itself
        is edited until then); the record is left as it was signed."""
        if body.field is not None and body.field not in RecordFields.model_fields:
            raise BadRequest("body", "field", "not a field of the record")
        now = service.clock.now()
        note = IncidentAddendum(
            incident_id=incident_id, at=now, author=who.name, field=body.field, text=body.text
        )
        change(incident_id, who, "addendum", lambda row: workflow.addendum(incident_view(row)), addendum=note)
        # The correction as stored (contract section 6), as the record lists it under `addenda`.
        return {
            "incident_id": incident_id,
            "at": format_ts(now),
            "author": who.name,
            "field": body.field,
            "text": body.text,
        }

    def copy_of(incident_id: str, who: Principal) -> tuple[IncidentRecord, ParentCopy]:
        """The written copy of a record: only once it is recorded, with its child attached; a copy a
        DSL withheld is shown to a DSL only."""
        row = found(incident_id, who)
        if row.status in ("open", "awaiting_record"):
            raise HTTPException(409, "the written copy is made from the record: complete and record it first")
        if workflow.no_child(row.status, row.record):
            raise HTTPException(
                409, "classification: the record says no child was in the room: there is no copy for parents"
            )
        if row.parent_copy_withheld_at is not None and not who.dsl:
            raise HTTPException(403, "a designated safeguarding lead withheld the written copy")
        facts = shown(service, records, row)
        pupil = records.pupil(row.pupil_id) if row.pupil_id else None
        if facts is None or pupil is None:
            raise HTTPException(409, "choose the child on the record first")
        now = service.clock.now()
        addenda = records.addenda(row.id)
        return row, parent_copy(site_of(row.site), row, facts.facts.episode, pupil, now, addenda)

    @router.get("/api/incidents/{incident_id}/parent-copy.pdf", tags=["incidents"])
    def parent_copy_pdf(incident_id: str, who: Staff) -> Response:
        """The parents' written copy as PDF (audited: it names the child)."""
        row, copy = copy_of(incident_id, who)
        records.audit(audit(who, "read_parent_copy", "incident", row.id, format="pdf"))
        headers = {
            "Content-Disposition": 'inline; filename="written-record.pdf"',
            "Cache-Control": "no-store",
        }
        return Response(render_pdf(copy), media_type="application/pdf", headers=headers)

    @router.get("/api/incidents/{incident_id}/parent-copy.html", tags=["incidents"])
    def parent_copy_html(incident_id: str, who: Staff) -> HTMLResponse:
        """The parents' written copy as a web page (audited)."""
        row, copy = copy_of(incident_id, who)
        records.audit(audit(who, "read_parent_copy", "incident", row.id, format="html"))
        return HTMLResponse(render_html(copy), headers=DOCUMENT_HEADERS)

    @router.post("/api/incidents/{incident_id}/parent-copy/send", tags=["incidents"])
    def send_parent_copy(incident_id: str, body: SendCopyIn, who: Staff) -> dict[str, Any]:
        """Email the written copy (PDF attached) from the site's `parent_mail` account; the sending
        is recorded as a contact with its outcome, sent or failed (502 when it failed). The record is
        held from the check that it is not signed off to the contact's write: a sign-off waits for the
        send, so a copy that went out is always recorded and audited, and a signed record refuses
        before anything is sent."""
        found(incident_id, who)
        try:
            with records.unsigned(incident_id):
                return _send_copy(incident_id, body, who)
        except SignedOff as exc:
            # Signed off: the record changes only by addenda, and its parents' copy is done with.
            raise HTTPException(
                409, "status: the record is signed off; the copy can no longer be sent"
            ) from exc

    def _send_copy(incident_id: str, body: SendCopyIn, who: Principal) -> dict[str, Any]:
        row, copy = copy_of(incident_id, who)
        site = site_of(row.site)

        def copy_step(outcome: str, at: dt.datetime) -> Callable[[IncidentRecord], dict[str, Any]]:
            return lambda current: workflow.parent_contact(
                incident_view(current), "copy", outcome, at, who.dsl
            )

        try:
            check_address(site, body.to)
        except AddressError as exc:  # nothing was sent: a bad address, not a failed send
            raise HTTPException(422, f"to: {exc}") from exc
        except MailError as exc:  # no account to send from: tried, and nothing went
            failed = ParentContact(
                incident_id=row.id,
                at=service.clock.now(),
                by=who.name,
                kind="copy",
                method="email",
                outcome="failed",
                note=f"to {body.to}: {exc}",
            )
            change(incident_id, who, "parent_copy", copy_step("failed", failed.at), contact=failed)
            raise HTTPException(502, f"the written copy was not sent: {exc}") from exc
        # Recorded (and audited) before the mail server has it: a hub that stops while it sends leaves
        # an attempt whose outcome is not known on the record, never a copy out with no trace.
        attempt = ParentContact(
            incident_id=row.id,
            at=service.clock.now(),
            by=who.name,
            kind="copy",
            method="email",
            outcome="sending",
            note=f"to {body.to}",
        )
        change(incident_id, who, "parent_copy", copy_step("sending", attempt.at), contact=attempt)
        try:
            send_copy(site, body.to, copy, render_pdf(copy))
        except MailError as exc:
            attempt.outcome, attempt.note = "failed", f"to {body.to}: {exc}"
            change(incident_id, who, "parent_copy", copy_step("failed", attempt.at), settle=attempt)
            status = 422 if isinstance(exc, AddressError) else 502
            raise HTTPException(status, f"the written copy was not sent: {exc}") from exc
        attempt.outcome = "sent"
        return change(incident_id, who, "parent_copy", copy_step("sent", service.clock.now()), settle=attempt)

    @router.put("/api/episodes/{episode_id}/pupil", tags=["episodes"])
    def attach_pupil(episode_id: str, body: PupilChoice, who: Staff) -> dict[str, Any]:
        """Attach a child from the register to an episode (open or not) and to its incident record, or
        take the child off (`pupil_id: null`), until the record is signed off. Audited either way."""
        row: EpisodeRecord | None = service.store.get_episode(episode_id)
        if row is None:
            raise HTTPException(404, "no such episode")
        site_allowed(who, row.site)
        pupil_id: str | None = None
        age: int | None = None  # unknown: the youngest age band's limit (semantics 2.6)
        if body.pupil_id is not None:
            pupil = records.pupil(body.pupil_id)
            if pupil is None or pupil.site != row.site:
                raise BadRequest("body", "pupil_id", "no child with this id on this site's register")
            ep = Episode.model_validate_json(row.data)
            pupil_id = pupil.id
            age = age_on(pupil.date_of_birth, ep.started_at.astimezone(site_of(row.site).zone).date())
        try:
            # No sign-off between the check and the change: the signed record keeps its child.
            with records.unsigned(row.incident_id):
                incident = records.incident(row.incident_id)
                if incident is not None:
                    view = incident_view(incident)
                    if pupil_id is None:
                        workflow.child_off(view)
                    elif view.no_child_reviewed:
                        # Reviewed as an empty room, its parents' steps count as not needed: a child
                        # named on it now would quietly skip them.
                        raise HTTPException(
                            409,
                            "the record was reviewed as no child in the room: sign it off and add a dated "
                            "addendum saying which child was there",
                        )
                if pupil_id is None and (incident is None or incident.pupil_id is None):
                    return {"episode_id": episode_id, "pupil_id": None, "incident_id": row.incident_id}
                restart, detail = _parents_again(incident, pupil_id, records) if incident else ({}, {})
                action = "attach_pupil" if pupil_id is not None else "detach_pupil"
                entry = audit(who, action, "episode", episode_id, pupil_id=pupil_id, **detail)
                try:
                    # The change and its audit entry in one transaction, whichever way the episode is held.
                    service.attach_pupil(
                        row.site,
                        row.room,
                        episode_id,
                        row.incident_id,
                        pupil_id,
                        age,
                        who.name,
                        entry,
                        restart,
                    )
                except RejectedMessage:
                    records.attach_pupil_offline(row, pupil_id, age, entry, service.clock.now(), restart)
            if row.manual:
                service.refresh_manual()  # a hand-entered episode going on: its room takes the child's age
        except SignedOff as exc:
            raise HTTPException(409, "the record is signed off: add a dated addendum instead") from exc
        except WorkflowError as exc:
            raise BadRequest("body", exc.field, exc.message) from exc
        return {"episode_id": episode_id, "pupil_id": pupil_id, "incident_id": row.incident_id}

    @router.get("/api/pupils", tags=["pupils"])
    def pupils(
        who: Senior,
        site: Annotated[str | None, Query(max_length=63)] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """The register of the caller's sites, by name, a page at a time (audited: it holds children's
        details; each page read is an entry with the number of children it showed). The cursor is the
        last child shown: a child added or removed meanwhile neither hides nor repeats another."""
        if site is not None:
            site_allowed(who, site)
        after: tuple[str, ...] | None = None
        if cursor is not None:
            try:
                after = tuple(unpack_cursor(cursor, 3))
            except ValueError as exc:
                raise BadRequest("query", "cursor", "not a cursor this API returned") from exc
        rows = records.pupils(sorted(who.sites) if who.sites is not None else None, site)

        def order(p: Pupil) -> tuple[str, str, str]:
            return (p.last_name, p.first_name, p.id)

        # One order for the page and its cursor, whatever the database's collation.
        rows.sort(key=order)
        if after is not None:
            rows = [p for p in rows if order(p) > after]
        page = rows[:limit]
        limited = {"sites": sorted(who.sites)} if site is None and who.sites is not None else {}
        records.audit(audit(who, "read", "pupils", site or "*", count=len(page), **limited))
        nxt = pack_cursor(order(page[-1])) if len(rows) > limit else None
        return {"items": [pupil_json(p) for p in page], "next": nxt}

    @router.post("/api/pupils", tags=["pupils"], status_code=201)
    def add_pupil(body: PupilIn, who: Senior) -> dict[str, Any]:
        """Add a child to the register (or update the one with the same `reference`)."""
        site_allowed(who, body.site)
        now = service.clock.now()
        if body.site not in service.sites:
            raise BadRequest("body", "site", "not a site of this hub")
        pupil = Pupil(id=str(uuid.uuid4()), created_at=now, updated_at=now, **body.model_dump())
        born = _born(records.pupils(None, body.site))
        # An update changes what the request gives (null included) and keeps the rest.
        try:
            records.save_pupils([pupil], audit(who, "add_pupil", "pupil", pupil.id), [body.model_fields_set])
        except RollOrder as exc:
            raise BadRequest("body", "left_on", "before joined_on as the register has it: " + ROLL) from exc
        saved = records.pupils(None, body.site)
        _ages_again(service, body.site, born, saved)
        match = next(
            (p for p in saved if p.id == pupil.id or (pupil.reference and p.reference == pupil.reference)),
            pupil,
        )
        return pupil_json(match)

    @router.post("/api/pupils/import", tags=["pupils"])
    async def import_pupils(
        request: Request, who: Senior, site: Annotated[str, Query(pattern=SLUG.pattern)]
    ) -> dict[str, Any]:
        """Import the register from CSV (the request body, `text/csv`, UTF-8): all rows or none. Rows
        with a `reference` already on the register update that child."""
        site_allowed(who, site)
        if site not in service.sites:
            raise BadRequest("query", "site", "not a site of this hub")
        raw = await request.body()
        if len(raw) > 5_000_000:
            raise HTTPException(413, "the file is larger than 5 MB")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BadRequest("body", "encoding", "the CSV must be UTF-8") from exc
        now = service.clock.now()
        pupils, columns = parse_register_csv(text, site, now)
        born = _born(records.pupils(None, site))
        # An update changes the file's columns (an empty cell clears) and keeps the others.
        try:
            added, updated = records.save_pupils(
                pupils,
                audit(who, "import_pupils", "pupils", site, rows=len(pupils), columns=sorted(columns)),
                [columns] * len(pupils),
            )
        except RollOrder as exc:
            raise BadRequest("body", f"line {exc.index + 2}: left_on", "before joined_on: " + ROLL) from exc
        _ages_again(service, site, born, records.pupils(None, site))
        return {"added": added, "updated": updated}

    return router


def _born(pupils: list[Pupil]) -> dict[str, dt.date | None]:
    return {p.id: p.date_of_birth for p in pupils}


def _ages_again(
    service: HubService, site: str, before: dict[str, dt.date | None], pupils: list[Pupil]
) -> None:
    """Children already on the register whose date of birth the change corrected (or removed): the
    rooms' episodes naming them take their age again, so the age band's limit follows the register
    (semantics 2.6). The register's change is stored whatever happens here; a hub too busy to take the
    ages now says so in its log (by count: no child is named in a log)."""
    changed = {p.id: p.date_of_birth for p in pupils if p.id in before and before[p.id] != p.date_of_birth}
    if not changed:
        return
    service.refresh_manual()  # hand-entered episodes going on take their children's ages again
    try:
        service.register_changed(site, changed)
    except TimeoutError:
        log.warning(
            "%d children's dates of birth changed on the register of %s, but the hub did not take their "
            "ages into the rooms' episodes in time: an episode's age band may follow the old date until "
            "the child is chosen again on its record",
            len(changed),
            site,
        )


# The parents' steps of a record: told, and the copy sent or withheld (by whom, why, how it was sent).
PARENT_STEPS = (
    "parent_notified_at",
    "parent_copy_sent_at",
    "parent_copy_method",
    "parent_copy_withheld_at",
    "parent_copy_withheld_by",
    "parent_copy_withheld_reason",
)


def _parents_again(
    row: IncidentRecord, pupil_id: str | None, records: RecordStore
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A record's child changed to another, or taken off: the parents told so far were another
    child's. Their steps start again for the new child (the dates cleared, so the deadlines and
    `report_overdue` apply again; `parent_notified` back to `recorded`, and a review made about the
    other child's record with it).
    Returns the columns to change and what the audit entry says: the register ids before and after,
    the steps' dates before, and the ids of the earlier contacts (kept, about the previous child); the
    reason a copy was withheld stays in the withholding's own entry, never copied here."""
    previous = row.pupil_id
    if previous is None or previous == pupil_id:
        return {}, {}
    detail: dict[str, Any] = {"previous_pupil_id": previous}
    done = {k: getattr(row, k) for k in PARENT_STEPS if getattr(row, k) is not None}
    if not done:
        return {}, detail
    changes: dict[str, Any] = dict.fromkeys(PARENT_STEPS)
    if row.status in ("parent_notified", "reviewed"):
        changes.update(status="recorded", reviewed_at=None, reviewed_by=None)
    contacts = [c.id for c in records.contacts(row.id) if c.kind in ("notice", "copy")]
    detail["parents_again"] = {
        "before": {
            "status": row.status,
            **{k: _jsonable(v) for k, v in done.items() if k != "parent_copy_withheld_reason"},
            **({"reviewed_at": _jsonable(row.reviewed_at)} if row.reviewed_at is not None else {}),
        },
        "after": {"status": changes.get("status", row.status)},
        "contacts_about_previous_child": contacts,
    }
    return changes, detail


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_ts(value)
    return value


class SendCopyIn(_Body):
    """`POST /api/incidents/{id}/parent-copy/send`: email the written copy to a parent."""

    to: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
