"""The incident record's life after its episode (semantics 6, the incident issue): pure rules, no I/O.

    open ──(episode ends: the hub)──▶ awaiting_record ──record──▶ recorded ──(parents told, and the
    written copy sent or withheld)──▶ parent_notified ──review──▶ reviewed ──sign_off──▶ closed

- `open` and `awaiting_record` are the hub's own: a person cannot make an episode end.
- `record` needs every field the guidance asks for (`REQUIRED`); what is missing is named.
- `parent_notified` follows by itself once the parents have been told (a contact that reached them)
  and the written copy has been sent, or withheld with a designated safeguarding lead's reason.
- `review` (senior) needs the debriefs with the child and the staff and the follow-up offer recorded.
- `sign_off` (senior) closes the record. After it the record never changes: corrections are dated
  addenda with their author. Nothing is ever deleted.
- A record completed as `no_child` (semantics 2.2: no child was in the room, a sensor still reported
  one) needs who was there, what happened and how staff know the room was empty (`REQUIRED_NO_CHILD`),
  and names no child: it goes `recorded (or parent_notified) ──review──▶ reviewed`. A senior member of
  staff other than the one who recorded it reviews it; until then the parents' and the authority's
  deadlines run as for any record (a wrong "no child" must never quietly skip the parents), and once
  reviewed those steps are not needed and the classification stays.
- A completed record stays complete: an edit that would leave a required field empty is refused (422).

Each rule is a function of an `IncidentView` (what the record holds now) that returns the columns to
change, or raises `WorkflowError` naming the field and the HTTP status that says why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .alerts import (
    LATE_AFTER,
    Alert,
    AlertContext,
    AlertSaved,
    AlertSend,
    alert_id,
    first_tier,
    send,
    send_due,
)
from .policy import Policy

STATUSES = ("open", "awaiting_record", "recorded", "parent_notified", "reviewed", "closed")
Status = Literal["open", "awaiting_record", "recorded", "parent_notified", "reviewed", "closed"]

Text = Annotated[str, Field(max_length=10_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StaffMember(_Strict):
    """An adult involved in the incident or witnessing it."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    role: Literal["involved", "witness"] = "involved"


class RecordFields(_Strict):
    """What staff complete. Every field optional while the record is drafted; `REQUIRED` before it is
    recorded. Words are the staff's own: the hub never rewrites them."""

    staff: list[StaffMember] | None = Field(default=None, max_length=50)
    before: Text | None = None  # what happened just before
    risk: Text | None = None  # the risk of harm that justified it
    de_escalation: Text | None = None  # de-escalation and less restrictive options tried
    condition: Text | None = None  # the child's condition afterwards
    injuries_child: Text | None = None
    injuries_staff: Text | None = None
    first_aid: Text | None = None  # first aid or medical checks
    child_account: Text | None = None  # the child's own account and views
    child_communication: Text | None = None  # how a child who does not speak communicated them
    classification: Literal["seclusion", "voluntary", "no_child"] | None = None
    voluntary_reason: Text | None = None  # why it is recorded as the child's own use of the room
    no_child_reason: Text | None = None  # how staff know no child was in the room (a sensor was wrong)
    what_will_change: Text | None = None
    debrief_child: Text | None = None
    debrief_child_on: dt.date | None = None
    debrief_staff: Text | None = None
    debrief_staff_on: dt.date | None = None
    follow_up_offered: bool | None = None  # a discussion offered to the parents
    follow_up_on: dt.date | None = None  # its date, once agreed
    review_note: Text | None = None


# Before `record`: what the guidance asks every record to say. A field may say "none" (no injuries),
# but it may not be left empty.
REQUIRED: tuple[str, ...] = (
    "staff",
    "before",
    "risk",
    "de_escalation",
    "condition",
    "injuries_child",
    "injuries_staff",
    "first_aid",
    "child_account",
    "classification",
    "what_will_change",
)
# Before `record` when no child was in the room: no child's account, injuries or parents to ask about.
REQUIRED_NO_CHILD: tuple[str, ...] = ("staff", "before", "classification", "no_child_reason")
# Before `review`: the conversations that follow an incident.
REQUIRED_FOR_REVIEW: tuple[str, ...] = ("debrief_child", "debrief_staff", "follow_up_offered")
# The steps a record completed as `no_child` does not need (no child, so no parents and no report).
NOT_NEEDED_NO_CHILD: tuple[str, ...] = ("parent_notice", "parent_copy", "authority_notice")
# A record is completed from `recorded` on; only then does its classification count (a draft moves nothing).
COMPLETED: tuple[str, ...] = ("recorded", "parent_notified", "reviewed", "closed")
# A senior member of staff has reviewed the record: from here its classification no longer changes.
REVIEWED: tuple[str, ...] = ("reviewed", "closed")


def no_child(status: str, record: dict[str, Any]) -> bool:
    """A completed record saying no child was in the room (reviewed or not yet)."""
    return status in COMPLETED and record.get("classification") == "no_child"


def no_child_reviewed(status: str, record: dict[str, Any]) -> bool:
    """A record saying no child was in the room that a senior member of staff has reviewed: only then are
    the parents' and the authority's steps not needed, and only then does it leave the figures."""
    return status in REVIEWED and record.get("classification") == "no_child"


class WorkflowError(Exception):
    """A step the record cannot take now: `status` is the HTTP status (409 conflict, 422 a field, 403
    a role), `field` what it is about."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message


@dataclass(frozen=True)
class IncidentView:
    """What the workflow needs to know of a record."""

    status: str
    pupil_id: str | None
    record: dict[str, Any]
    parent_notified_at: dt.datetime | None = None
    parent_copy_sent_at: dt.datetime | None = None
    parent_copy_withheld_at: dt.datetime | None = None
    recorded_by: str | None = None
    classified_by: str | None = None  # who last set the classification of the completed record

    @property
    def fields(self) -> RecordFields:
        return RecordFields.model_validate(self.record)

    @property
    def signed(self) -> bool:
        return self.status == "closed"

    @property
    def no_child(self) -> bool:
        return no_child(self.status, self.record)

    @property
    def no_child_reviewed(self) -> bool:
        return no_child_reviewed(self.status, self.record)


def missing(view: IncidentView, names: tuple[str, ...] = REQUIRED) -> list[str]:
    """The required fields still empty (blank text counts as empty), in the form's order. A record
    classified `no_child` is asked for `REQUIRED_NO_CHILD` instead of `REQUIRED`, and names no child."""
    fields = view.fields
    if names is REQUIRED and fields.classification == "no_child":
        names = REQUIRED_NO_CHILD
    gaps = ["pupil_id"] if view.pupil_id is None and names is REQUIRED else []
    for name in names:
        value = getattr(fields, name)
        if value is None or (isinstance(value, str) and not value.strip()):
            gaps.append(name)
        elif name == "staff" and not any(s.role == "involved" for s in fields.staff or []):
            gaps.append(name)
    if (
        names is REQUIRED
        and fields.classification == "voluntary"
        and not (fields.voluntary_reason or "").strip()
    ):
        gaps.append("voluntary_reason")
    return gaps


def _names_no_child(view: IncidentView, status: int) -> None:
    """A record saying no child was in the room names no child: its parents' steps count as not needed
    once it is reviewed, so a child named on it would quietly skip them. The child is taken off the
    episode first (`PUT /api/episodes/{id}/pupil` with `null`), or the record says what it was."""
    if view.pupil_id is not None and view.fields.classification == "no_child":
        raise WorkflowError(
            status,
            "pupil_id",
            "the record says no child was in the room but names a child: take the child off the record, "
            "or record what happened to the child",
        )


def child_off(view: IncidentView) -> None:
    """The child taken off a record (`PUT /api/episodes/{id}/pupil` with `null`), until sign-off (the
    caller refuses a signed record). A completed record of a child keeps one (422, `pupil_id`): the
    right child is chosen instead, or the record first changed to say no child was in the room."""
    if view.status in COMPLETED and view.fields.classification != "no_child":
        raise WorkflowError(
            422,
            "pupil_id",
            f"the record is {view.status} and names the child it is about: choose the right child "
            "instead, or change the record to say no child was in the room first",
        )


def _parents_needed(view: IncidentView) -> None:
    if view.no_child:
        raise WorkflowError(
            409, "classification", "the record says no child was in the room: there are no parents to tell"
        )


def edit(view: IncidentView, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply staff's additions or corrections (`PATCH`): the new `record` JSON. A signed record
    refuses (409): only addenda change it now. What a reviewed record says the episode was stays as
    reviewed (409). A completed record stays complete (422 naming the first field left empty): so a
    record recorded as one class and turned into another must say all the other class asks for (an
    empty room's record turned into seclusion needs the child, the risk and the child's account; into
    voluntary use, the reason)."""
    if view.signed:
        raise WorkflowError(409, "status", "the record is signed off: add a dated addendum instead")
    if "review_note" in changes and changes["review_note"] != view.record.get("review_note"):
        raise WorkflowError(422, "review_note", "written by the senior who reviews the record (its review)")
    merged = {**view.record, **changes}
    checked = RecordFields.model_validate(merged)  # raises ValidationError naming the field
    result = checked.model_dump(mode="json", exclude_none=True)
    if checked.classification != view.record.get("classification") and view.status in REVIEWED:
        raise WorkflowError(
            409,
            "classification",
            "the record was reviewed as it is: sign it off, then add a dated addendum",
        )
    if view.status in COMPLETED:
        after = IncidentView(status=view.status, pupil_id=view.pupil_id, record=result)
        gaps = missing(after)
        if view.status in REVIEWED and not after.no_child:
            gaps += missing(after, REQUIRED_FOR_REVIEW)
        if gaps:
            raise WorkflowError(
                422, gaps[0], f"the record is {view.status} and must stay complete: " + ", ".join(gaps)
            )
    return result


def record(view: IncidentView, who: str, now: dt.datetime) -> dict[str, Any]:
    """Staff say the record is complete: `awaiting_record` → `recorded`."""
    if view.status == "open":
        raise WorkflowError(409, "status", "the episode is still running: record it once it has ended")
    if view.status != "awaiting_record":
        raise WorkflowError(409, "status", f"the record is already {view.status}")
    gaps = missing(view)
    if gaps:
        raise WorkflowError(422, gaps[0], "still to complete: " + ", ".join(gaps))
    _names_no_child(view, 422)
    return {
        "status": "recorded",
        "recorded_at": now,
        "recorded_by": who,
        "classified_by": who,
        **_maybe_notified(view, "recorded"),
    }


def _maybe_notified(view: IncidentView, status: str) -> dict[str, Any]:
    """`recorded` becomes `parent_notified` once the parents were told and the copy is dealt with."""
    told = view.parent_notified_at is not None
    copy = view.parent_copy_sent_at is not None or view.parent_copy_withheld_at is not None
    return {"status": "parent_notified"} if status == "recorded" and told and copy else {}


def parent_contact(
    view: IncidentView, kind: Literal["notice", "copy"], outcome: str, now: dt.datetime, dsl: bool = False
) -> dict[str, Any]:
    """A contact with the parents was made (or tried). A notice that reached them marks them told; a
    copy sent marks the copy sent. The written copy needs the record first: it tells what happened. A
    copy a designated safeguarding lead withheld is sent only by a designated safeguarding lead."""
    if view.signed:
        raise WorkflowError(409, "status", "the record is signed off")
    if view.status == "open":
        raise WorkflowError(409, "status", "the episode is still running")
    _parents_needed(view)
    changes: dict[str, Any] = {}
    if kind == "copy":
        if view.status == "awaiting_record":
            raise WorkflowError(409, "status", "the written copy is made from the record: record it first")
        if outcome in ("sent", "sending") and view.parent_copy_withheld_at is not None and not dsl:
            raise WorkflowError(403, "dsl", "a designated safeguarding lead withheld the written copy")
        if outcome == "sent" and view.parent_copy_sent_at is None:
            changes["parent_copy_sent_at"] = now
    elif outcome == "reached" and view.parent_notified_at is None:
        changes["parent_notified_at"] = now
    after = IncidentView(
        status=view.status,
        pupil_id=view.pupil_id,
        record=view.record,
        parent_notified_at=changes.get("parent_notified_at", view.parent_notified_at),
        parent_copy_sent_at=changes.get("parent_copy_sent_at", view.parent_copy_sent_at),
        parent_copy_withheld_at=view.parent_copy_withheld_at,
    )
    return {**changes, **_maybe_notified(after, view.status)}


def withhold_copy(view: IncidentView, who: str, dsl: bool, reason: str, now: dt.datetime) -> dict[str, Any]:
    """The written copy is withheld: only a designated safeguarding lead may decide it, with a reason."""
    if not dsl:
        raise WorkflowError(403, "dsl", "only a designated safeguarding lead may withhold the written copy")
    if not reason.strip():
        raise WorkflowError(422, "reason", "a reason is required to withhold the written copy")
    if view.signed:
        raise WorkflowError(409, "status", "the record is signed off")
    if view.status in ("open", "awaiting_record"):
        raise WorkflowError(409, "status", "the record comes first: record it, then decide about the copy")
    _parents_needed(view)
    if view.parent_copy_sent_at is not None:
        raise WorkflowError(409, "status", "the written copy has already been sent")
    if view.parent_copy_withheld_at is not None:  # the first decision, its author and reason, stand
        raise WorkflowError(409, "status", "the written copy has already been withheld")
    changes: dict[str, Any] = {
        "parent_copy_withheld_at": now,
        "parent_copy_withheld_by": who,
        "parent_copy_withheld_reason": reason.strip(),
    }
    after = IncidentView(
        status=view.status,
        pupil_id=view.pupil_id,
        record=view.record,
        parent_notified_at=view.parent_notified_at,
        parent_copy_sent_at=None,
        parent_copy_withheld_at=now,
    )
    return {**changes, **_maybe_notified(after, view.status)}


def own_no_child(view: IncidentView, who: str) -> bool:
    """A record of no child in the room that `who` recorded, or changed to say so: another senior member
    of staff reviews it (`review`)."""
    return view.no_child and who in (view.recorded_by, view.classified_by)


def review(view: IncidentView, who: str, now: dt.datetime) -> dict[str, Any]:
    """A senior member of staff reviews the record: `parent_notified` → `reviewed`. A record of no child
    in the room, which has no parents to tell and no conversations to record, from `recorded` too; its
    review takes the episode out of every figure about children, so the one who recorded it, or who
    changed the completed record to say so, does not review it (403)."""
    if view.no_child and view.status in ("recorded", "parent_notified"):
        if own_no_child(view, who):
            raise WorkflowError(
                403,
                "reviewed_by",
                "you recorded that no child was in the room: another senior member of staff reviews it",
            )
        # A child named on it (chosen before the record was changed to say so, or after): the record
        # says one thing and names another, and its review would skip that child's parents.
        _names_no_child(view, 409)
        return {"status": "reviewed", "reviewed_at": now, "reviewed_by": who}
    if view.status != "parent_notified":
        need = {
            "open": "the episode is still running",
            "awaiting_record": "the record is not complete yet",
            "recorded": "the parents have not been told and sent the written copy yet",
        }.get(view.status, f"the record is already {view.status}")
        raise WorkflowError(409, "status", need)
    gaps = missing(view, REQUIRED_FOR_REVIEW)
    if gaps:
        raise WorkflowError(422, gaps[0], "before the review, record: " + ", ".join(gaps))
    return {"status": "reviewed", "reviewed_at": now, "reviewed_by": who}


def authority_notified(view: IncidentView, now: dt.datetime, already: dt.datetime | None) -> dict[str, Any]:
    """The report to the authority (a profile's `authority_notice_due`) was made. Once recorded it
    stays as it was; a signed record takes it too, since the report may follow the sign-off."""
    if view.status == "open":
        raise WorkflowError(409, "status", "the episode is still running")
    if view.no_child:
        raise WorkflowError(
            409, "classification", "the record says no child was in the room: there is nothing to report"
        )
    if already is not None:
        raise WorkflowError(409, "status", "the report to the authority is already recorded")
    return {"authority_notified_at": now}


def sign_off(view: IncidentView, who: str, now: dt.datetime) -> dict[str, Any]:
    """A senior member of staff signs the reviewed record off: `reviewed` → `closed`, for good."""
    if view.status != "reviewed":
        raise WorkflowError(409, "status", f"only a reviewed record is signed off (it is {view.status})")
    return {"status": "closed", "closed_at": now, "closed_by": who}


def addendum(view: IncidentView) -> dict[str, Any]:
    """A dated correction is added to a signed-off record (`closed`) only: until then the record itself
    is still edited (docs/records.md, "Add a dated correction ... after sign-off"). It changes nothing
    of the record's own columns."""
    if view.status != "closed":
        raise WorkflowError(
            409,
            "status",
            f"a dated correction is added after sign-off: edit the record instead (it is {view.status})",
        )
    return {}


# -- report_overdue (semantics 5): a deadline of the record passed and its step is not done

STEPS = ("record", "parent_notice", "parent_copy", "authority_notice")


@dataclass(frozen=True)
class ReportDue:
    """One record's deadlines and whether each step is done (a step once done stays done)."""

    incident_id: str
    episode_id: str
    site: str
    room: str
    due: dict[str, dt.datetime | None]  # step -> deadline (None: the profile sets none)
    done: dict[str, bool]  # step -> done (or, for the copy, withheld by a DSL)
    closed: bool = False


def overdue_effects(
    records: list[ReportDue],
    known: dict[str, Alert],
    context: Callable[[str, str], AlertContext],
    now: dt.datetime,
) -> list[AlertSaved | AlertSend]:
    """The `report_overdue` alerts to raise (sent to the senior tier, or the nearest with someone to tell:
    `first_tier`), to send on (5.2, as a room's
    alerts are: to the next tier with recipients once `ack_timeout_s` has passed unacknowledged, past
    `head` to `head` again; once acknowledged, to the acknowledging tier every `renotify_s`) and to
    resolve (the step was done, or the record closed). `known` holds every report alert already raised
    for these records, active or not: an alert is raised once per record and step, and again only when
    a step it resolved as done is to do once more (the record's child changed: the parents' steps start
    again for the new child), as a new round with its own id. One a person resolved with a note is not
    raised again while its step stays not done. `context(site, room)` gives the room's policy
    (`ack_timeout_s`, `renotify_s`) and the tiers that have someone to tell. Nothing in `known` is
    changed: what changes is a copy."""
    effects: list[AlertSaved | AlertSend] = []
    for rec in records:
        for step in STEPS:
            due = rec.due.get(step)
            done = rec.done.get(step, False) or rec.closed
            key = f"report_overdue/{rec.incident_id}/{step}"  # a later round's: key + "/2", ...
            rounds = sorted(
                (a for a in known.values() if a.key == key or a.key.startswith(f"{key}/")),
                key=lambda a: (a.raised_at, a.id),
            )
            existing = next((a for a in rounds if a.active), rounds[-1] if rounds else None)
            if existing is not None and existing.active:
                if done:
                    resolved = existing.model_copy(deep=True)
                    resolved.resolved_at, resolved.note = now, "the report was done"
                    resolved.next_send_at = None
                    effects.append(AlertSaved(resolved, "resolved"))
                else:
                    ctx = context(rec.site, rec.room)
                    alert = existing.model_copy(deep=True)
                    _take_up(alert, ctx.policy)
                    effects += send_due(alert, ctx, now)
                continue
            if due is None or due > now or done:
                continue
            if existing is not None:
                if existing.resolved_by is not None:
                    continue  # a person resolved it, with a note: not raised again for this step
                # Resolved when its step was done, and the step is to do again: a new round.
                key = f"{key}/{len(rounds) + 1}"
            ident = alert_id(rec.site, rec.room, key)
            ctx = context(rec.site, rec.room)
            alert = Alert(
                id=ident,
                key=key,
                kind="report_overdue",
                severity="warning",
                site=rec.site,
                room=rec.room,
                episode_id=rec.episode_id,
                rule=step,
                detail={"step": step, "due": due.isoformat(), "incident_id": rec.incident_id},
                due_at=due,
                raised_at=now,
                late=now - due > LATE_AFTER,
                needs_ack=True,
                tier=first_tier("senior", ctx),
            )
            effects.append(AlertSaved(alert, "raised"))
            effects.append(send(alert, alert.tier, "raised", now, ctx))
    return effects


def _take_up(alert: Alert, policy: Policy) -> None:
    """An alert stored by a hub that sent `report_overdue` once and never again has no next send: it is
    taken up from its last send (unacknowledged) or from its acknowledgement, as if sent by this one."""
    if alert.next_send_at is not None or alert.held:
        return
    if alert.acknowledged_at is not None:
        alert.next_send_at = alert.acknowledged_at + dt.timedelta(seconds=policy.renotify_s)
    else:
        last = alert.escalations[-1].at if alert.escalations else alert.raised_at
        alert.next_send_at = last + dt.timedelta(seconds=policy.ack_timeout_s)
