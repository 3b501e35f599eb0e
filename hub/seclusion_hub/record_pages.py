"""The staff's record pages: the records to complete (`/records`) and one record (`/records/{id}`).

Server-rendered (Jinja2, every value escaped) with a little plain JavaScript that sends the form and
the workflow's steps to the API (`records.py`) with the session cookie, so the API's own rules, audit
and 422 field errors apply unchanged. Same sign-in as the live board (the session cookie); a page shows
only records of the user's own sites, and a record of another site is "not found", as if it did not
exist. Reads are audited as the API audits them: the record, its episode, and the register when the
page lists it to choose the child. The page names the child of the record, and no other child: the
register is listed only while the child is being chosen.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at definition time.

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

import jinja2
from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .auth import Principal, principal_for
from .core import incident as workflow
from .core.alerts import LATE_AFTER, Alert
from .core.episode import account
from .core.incident import NOT_NEEDED_NO_CHILD, REQUIRED_FOR_REVIEW, RecordFields
from .models import AuditEntry, IncidentRecord
from .parent_mail import lock_state
from .record_facts import CHANGE_WORDS, shown
from .record_store import RecordStore, incident_view, report_due
from .records import record_version
from .reports.parent_copy import format_date, format_duration, format_duration_down
from .service import HubService
from .web import PAGE_HEADERS, session_token, static_file

# The record page's words for what `lock_state` says (the parents' copy has its own).
DOOR_WORDS: Final = {
    "locked": "Locked",
    "held shut": "Held shut",
    "not locked": "Not locked or held",
    "not recorded": "Not recorded (no lock sensor, or the episode was entered by hand)",
}

# -- words

STATUS_WORDS: Final = {
    "open": "The child is still in the room: the record can be completed once this ends",
    "awaiting_record": "Record to complete",
    "recorded": "Recorded",
    "parent_notified": "Parents told: waiting for a senior member of staff to review it",
    "reviewed": "Reviewed: waiting to be signed off",
    "closed": "Signed off",
}

NO_CHILD_WORDS: Final = "Recorded as no child in the room: waiting for a senior member of staff to review it"

# What each role finds on its list: staff complete records and tell parents; senior staff also review
# and sign off.
STAFF_STATUSES: Final = ("awaiting_record", "recorded")
SENIOR_STATUSES: Final = ("awaiting_record", "recorded", "parent_notified", "reviewed")

STEP_WORDS: Final = {
    "record": "Record to be completed",
    "parent_notice": "Parents to be told",
    "parent_copy": "Written copy to be sent to the parents",
    "authority_notice": "Local authority to be told",
}

ALERT_WORDS: Final = {
    "episode_started": "A child is in a closed room",
    "supervision_lapse": "Nobody at the viewing panel",
    "duration_warning": "Time in the room is getting long",
    "duration_escalation": "Time in the room: escalated",
    "duration_limit": "Time limit in the room reached",
    "review_due": "A review of the time in the room is due",
    "no_movement": "No movement seen in the room",
    "lock_forbidden": "Door locked where locking is not allowed",
    "seclusion_prohibited": "A child in a closed room where seclusion is not allowed",
    "device_offline": "A room sensor is offline",
    "sensor_fault": "A room sensor reports a fault",
    "clock_skew": "A room sensor's clock is wrong",
    "report_overdue": "The written record is overdue",
}
SEVERITY_WORDS: Final = {"critical": "Critical", "warning": "Warning", "info": "Information"}

CONTACT_METHODS: Final = (
    ("phone", "Phone call"),
    ("in_person", "In person"),
    ("email", "Email"),
    ("letter", "Letter"),
    ("text_message", "Text message"),
    ("handed", "Handed to the parent"),
    ("post", "Post"),
    ("other", "Other"),
)
NOTICE_OUTCOMES: Final = (
    ("reached", "Reached: the parents were told"),
    ("no_answer", "No answer"),
    ("message_left", "Message left"),
    ("failed", "Could not contact them"),
)
OUTCOME_WORDS: Final = {
    "reached": "reached",
    "no_answer": "no answer",
    "message_left": "message left",
    "sent": "sent",
    "failed": "failed",
    # An email the hub recorded before handing it to the mail server; still so once the send is over,
    # the hub stopped before it heard the outcome.
    "sending": (
        "being sent (if this stays, the hub stopped before it knew whether the email went: ask the family)"
    ),
}
ROLE_WORDS: Final = {"involved": "Involved", "witness": "Witness"}


@dataclass(frozen=True)
class FieldSpec:
    """A field of the staff's record on the form: its plain-English label and hint."""

    name: str
    label: str
    hint: str = ""
    kind: str = "text"  # text | date | staff | classification | yesno


FIELDS: Final[tuple[FieldSpec, ...]] = (
    FieldSpec(
        "staff",
        "Adults involved and witnesses",
        "Everyone who was involved, and anyone who saw what happened. At least one adult involved.",
        "staff",
    ),
    FieldSpec(
        "before",
        "What happened just before?",
        "Where the child was, what was going on around them, what led up to it.",
    ),
    FieldSpec(
        "risk",
        "What was the risk of harm that made this necessary?",
        "Who could have been hurt, and how. The room is used only to prevent serious harm.",
    ),
    FieldSpec(
        "de_escalation",
        "What was tried first (de-escalation, less restrictive options)?",
        "What staff did to help the child calm down, and what else was offered before the room.",
    ),
    FieldSpec("condition", "How was the child afterwards?", "Their condition and mood when they came out."),
    FieldSpec("injuries_child", "Any injuries to the child", "Write “None” if there were none."),
    FieldSpec("injuries_staff", "Any injuries to staff", "Write “None” if there were none."),
    FieldSpec(
        "first_aid",
        "First aid or medical checks",
        "Who checked, when, and what was done. Write “None needed” if so.",
    ),
    FieldSpec(
        "child_account",
        "The child's own account and views",
        "What the child said or showed about what happened, in their own words where possible.",
    ),
    FieldSpec(
        "child_communication",
        "If the child does not speak, how did they communicate this?",
        "For example signs, symbols, pictures or a communication app. Leave empty if the child spoke.",
    ),
    FieldSpec(
        "classification",
        "How is this recorded?",
        "Seclusion: the child was kept in the room. Voluntary: the child chose to go in and could leave. "
        "No child: the room was empty after all, and a sensor still reported a child.",
        "classification",
    ),
    FieldSpec(
        "voluntary_reason",
        "Why is it recorded as the child's own choice?",
        "Needed when the child chose to use the room: how you know they could leave when they wanted.",
    ),
    FieldSpec(
        "no_child_reason",
        "How do you know no child was in the room?",
        "Needed when no child was in the room: who looked, when, and where the child was. A senior member "
        "of staff reviews it.",
    ),
    FieldSpec(
        "what_will_change",
        "What will change to avoid this happening again?",
        "What the school will do differently, for this child and for others.",
    ),
    FieldSpec(
        "debrief_child",
        "Talking it through with the child afterwards",
        "What was said, and what the child would like to happen next time.",
    ),
    FieldSpec("debrief_child_on", "Date of the talk with the child", "", "date"),
    FieldSpec(
        "debrief_staff",
        "Talking it through with the staff involved",
        "What staff learnt and what they will do differently.",
    ),
    FieldSpec("debrief_staff_on", "Date of the talk with the staff", "", "date"),
    FieldSpec("follow_up_offered", "Was a meeting offered to the parents?", "", "yesno"),
    FieldSpec("follow_up_on", "Date of the meeting, once agreed", "", "date"),
)
SECTIONS: Final = (
    ("Who was there", ("staff",)),
    ("What happened", ("before", "risk", "de_escalation")),
    ("Afterwards", ("condition", "injuries_child", "injuries_staff", "first_aid")),
    ("The child's views", ("child_account", "child_communication")),
    ("How it is recorded", ("classification", "voluntary_reason", "no_child_reason", "what_will_change")),
    (
        "Conversations afterwards (needed before the review)",
        (
            "debrief_child",
            "debrief_child_on",
            "debrief_staff",
            "debrief_staff_on",
            "follow_up_offered",
            "follow_up_on",
        ),
    ),
)
LABELS: Final[dict[str, str]] = {
    **{f.name: f.label for f in FIELDS},
    "pupil_id": "The child",
    "review_note": "Review note",
}
FIELD_BY_NAME: Final = {f.name: f for f in FIELDS}

DONE: Final = {
    "saved": "The record was saved.",
    "child": "The child was saved on the record.",
    "child_off": "The child was taken off the record.",
    "recorded": "The record is marked as recorded.",
    "contact": "The contact with the parents was recorded.",
    "copy": "The written copy is recorded as sent.",
    "withheld": "The written copy is withheld, with your reason.",
    "reviewed": "The record is reviewed.",
    "signed": "The record is signed off. From now on it changes only by dated corrections.",
    "addendum": "The dated correction was added.",
}

_STATIC: Final = {
    "records.js": "text/javascript; charset=utf-8",
    "records.css": "text/css; charset=utf-8",
}

# -- times, in the site's timezone and in British English whatever the server's locale


def local_date(when: dt.datetime, zone: ZoneInfo) -> str:
    return format_date(when.astimezone(zone).date())


def local_time(when: dt.datetime, zone: ZoneInfo, seconds: bool = False) -> str:
    """The local wall time; in the hour the clocks go back, which happens twice, with its zone
    ("01:50 BST", then "01:20 GMT"), or a child could be read as out before they were in."""
    local = when.astimezone(zone)
    text = local.strftime("%H:%M:%S" if seconds else "%H:%M")
    if local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset():
        text += f" {local.tzname()}"
    return text


def local_datetime(when: dt.datetime, zone: ZoneInfo, seconds: bool = False) -> str:
    return f"{local_date(when, zone)}, {local_time(when, zone, seconds)}"


def deadline_words(when: dt.datetime, zone: ZoneInfo) -> str:
    """A deadline as people say it: one at local midnight is "by the end of" the day before."""
    t = when.astimezone(zone)
    if t.time() == dt.time(0, 0):
        return f"by the end of {local_date(t - dt.timedelta(days=1), zone)}"
    return f"by {local_datetime(t, zone)}"


def duration_words(seconds: float) -> str:
    """The parents' copy's words for a duration (seconds under a minute, otherwise whole minutes, rounded
    up: a confinement is never under-counted), so that a page and the letter say the same; "none" for
    no time at all (a page's line of unsupervised time, or of the longest lapse, with nothing in it)."""
    if seconds <= 0:
        return "none"
    return format_duration(seconds)


def supervised_words(seconds: float) -> str:
    """The parents' copy's words for supervised time: rounded down, so supervision is never flattered
    (541 s is "9 minutes" on the page as in the letter)."""
    if seconds <= 0:
        return "none"
    return format_duration_down(seconds)


# -- what the pages show


@dataclass
class Deadline:
    step: str
    words: str
    when: str
    done: bool
    overdue: bool
    not_needed: bool = False  # a reviewed record of no child in the room: no parents, no report


@dataclass
class ListItem:
    id: str
    room: str
    site: str
    when: str
    how_long: str
    status: str
    status_words: str
    next_deadline: Deadline | None


@dataclass
class Actions:
    """The steps this user may take on the record now."""

    edit: bool = False
    choose_child: bool = False
    child_off: bool = False  # a child chosen by mistake, or named on a record of an empty room
    record: bool = False
    contact: bool = False
    copy_sent: bool = False
    withhold: bool = False
    review: bool = False
    sign_off: bool = False
    addendum: bool = False
    copy_links: bool = False
    senior: bool = False
    dsl: bool = False
    steps: list[str] = field(default_factory=list)


def status_words(row: IncidentRecord) -> str:
    """The record's status in words, with what is left to do once it is recorded."""
    if row.status in ("recorded", "parent_notified") and workflow.no_child(row.status, row.record):
        return NO_CHILD_WORDS
    if row.status != "recorded":
        return STATUS_WORDS.get(row.status, row.status)
    todo = []
    if row.parent_notified_at is None:
        todo.append("tell the parents")
    if row.parent_copy_sent_at is None and row.parent_copy_withheld_at is None:
        todo.append("send the written copy")
    return "Recorded: still to " + " and ".join(todo) if todo else STATUS_WORDS["recorded"]


def deadlines(row: IncidentRecord, zone: ZoneInfo, now: dt.datetime) -> list[Deadline]:
    """Every deadline the profile sets for the record, in step order, with whether it is done or overdue."""
    due = report_due(row)
    reviewed_empty = workflow.no_child_reviewed(row.status, row.record)
    items = []
    for step, when in due.due.items():
        if when is None:
            continue
        done = due.done.get(step, False)
        items.append(
            Deadline(
                step=step,
                words=STEP_WORDS.get(step, step),
                when=deadline_words(when, zone),
                done=done,
                overdue=not done and not due.closed and when <= now,
                not_needed=reviewed_empty and step in NOT_NEEDED_NO_CHILD,
            )
        )
    return items


def next_deadline(row: IncidentRecord, zone: ZoneInfo, now: dt.datetime) -> Deadline | None:
    due = report_due(row)
    pending = [
        (when, workflow.STEPS.index(step), step)
        for step, when in due.due.items()
        if when is not None and not due.done.get(step, False)
    ]
    if not pending or due.closed:
        return None
    when, _order, step = min(pending)
    return Deadline(step, STEP_WORDS.get(step, step), deadline_words(when, zone), False, when <= now)


def alert_line(alert: Alert, when: Callable[[dt.datetime | None], str]) -> dict[str, str]:
    """An alert as the record's table says it: when it was raised (and, raised late, when it was due),
    whether it reached anyone and who acknowledged it, and when its condition ended by the devices'
    clocks (or who resolved it). One the hub learnt of only once it was over (4.3: a replay, the hub's
    backlog) was never sent, so it is not "not acknowledged"; a held one was kept from everyone while
    the room was in maintenance."""
    raised = when(alert.raised_at)
    if alert.late:
        raised = f"{raised} (due at {when(alert.due_at)}; the hub learnt of it late)"
    first_sent = alert.escalations[0].at if alert.escalations else None
    if first_sent is not None and first_sent - alert.raised_at > LATE_AFTER:
        # Held while the room was in maintenance (the only thing that delays a first send), sent after.
        raised = f"{raised} (held while the room was in maintenance; first sent at {when(first_sent)})"
    never_sent = None
    if alert.sends == 0 and alert.held:
        never_sent = "Not sent to anyone: the room was in maintenance"
    elif alert.sends == 0 and not alert.active:
        never_sent = "Not sent: already over when the hub learnt of it"
    if alert.acknowledged_at is not None:
        ack = f"Acknowledged by {alert.acknowledged_by or 'someone'} at {when(alert.acknowledged_at)}"
        if never_sent is not None:
            ack = f"{ack} ({never_sent[0].lower()}{never_sent[1:]})"
    elif never_sent is not None:
        ack = never_sent
    elif not alert.needs_ack:
        ack = "No acknowledgement needed"
    else:
        ack = "Not acknowledged"
    if alert.active:
        ended = "Still active"
    elif alert.resolved_by is not None:
        ended = f"Resolved by {alert.resolved_by} at {when(alert.resolved_at)}"
        if alert.note:
            ended = f"{ended}: “{alert.note}”"
    else:
        # When the condition ended by the devices' clocks where they tell (a lapse over, the episode
        # ended), else when the hub saw it end (a device back, a review recorded).
        ended = f"Ended at {when(alert.condition_ended_at or alert.resolved_at)}"
    return {
        "what": ALERT_WORDS.get(alert.kind, alert.kind.replace("_", " ")),
        "severity": SEVERITY_WORDS.get(alert.severity, alert.severity),
        "raised": raised,
        "ack": ack,
        "resolved": ended,
    }


def missing_labels(names: Sequence[str]) -> list[tuple[str, str]]:
    return [(name, LABELS.get(name, name)) for name in names]


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("seclusion_hub", "web/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def record_pages_router(service: HubService, records: RecordStore) -> APIRouter:
    """`/records`, `/records/{id}` and their two static files (mounted by api.create_app)."""
    router = APIRouter()
    store = service.store
    env = _templates()

    def signed_in(request: Request) -> Principal | None:
        token = session_token(request)
        return principal_for(store, token) if token else None

    def to_login() -> Response:
        return RedirectResponse("/login", status.HTTP_303_SEE_OTHER, headers={"Cache-Control": "no-store"})

    def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        body = env.get_template(name).render(**context)
        return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)

    def audit(who: Principal, action: str, target_type: str, target_id: str, **detail: Any) -> None:
        records.audit(
            AuditEntry(
                at=service.clock.now(),
                actor=who.name,
                action=action,
                target_type=target_type,
                target_id=target_id,
                detail={"via": "record_page", **detail},
            )
        )

    def zone_of(site: str) -> ZoneInfo:
        loaded = service.sites.get(site)
        return loaded.zone if loaded is not None else ZoneInfo("UTC")

    def room_name(site: str, room: str) -> str:
        loaded = service.sites.get(site)
        spec = loaded.room(room) if loaded is not None else None
        return spec.name if spec is not None else room

    def site_name(site: str) -> str:
        loaded = service.sites.get(site)
        return (loaded.spec.name or site) if loaded is not None else site

    @router.get("/static/records/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        """The record pages' script and style sheet."""
        return static_file(name, _STATIC)

    @router.get("/records", include_in_schema=False)
    def records_list(request: Request) -> Response:
        """The user's records that need something done now, most urgent first."""
        who = signed_in(request)
        if who is None:
            return to_login()
        sites = sorted(who.sites) if who.sites is not None else None
        wanted = SENIOR_STATUSES if who.has_role("senior") else STAFF_STATUSES
        rows: list[IncidentRecord] = []
        for wanted_status in wanted:
            # Every record of the status, page after page: the list comes newest first, so stopping at a
            # page would drop the oldest, the most overdue.
            cursor: str | None = None
            while True:
                found, cursor = store.list_incidents(sites, None, wanted_status, 1000, cursor)
                rows.extend(found)
                if cursor is None:
                    break
        if not who.has_role("senior"):
            # A record of no child in the room, once recorded, waits only for a senior's review.
            rows = [r for r in rows if not workflow.no_child(r.status, r.record)]
        now = service.clock.now()
        items = []
        for row in rows:
            zone = zone_of(row.site)
            episode = store.get_episode(row.episode_id)
            start = episode.started_at if episode is not None else row.opened_at
            end = (episode.ended_at if episode is not None else row.ended_at) or now
            items.append(
                ListItem(
                    id=row.id,
                    room=room_name(row.site, row.room),
                    site=site_name(row.site),
                    when=local_datetime(start, zone),
                    how_long=duration_words(max((end - start).total_seconds(), 0)),
                    status=row.status,
                    status_words=status_words(row),
                    next_deadline=next_deadline(row, zone, now),
                )
            )
        far = dt.datetime.max.replace(tzinfo=dt.UTC)
        by_row = {row.id: row for row in rows}

        def urgency(item: ListItem) -> tuple[int, dt.datetime, str]:
            row = by_row[item.id]
            due = report_due(row)
            pending = [w for s, w in due.due.items() if w is not None and not due.done.get(s, False)]
            return (
                0 if item.next_deadline and item.next_deadline.overdue else 1,
                min(pending, default=far),
                item.id,
            )

        items.sort(key=urgency)
        return page(
            "records_list.html",
            title="Records to complete",
            user=who,
            items=items,
            senior=who.has_role("senior"),
            current="records",
        )

    @router.get("/records/{incident_id}", include_in_schema=False)
    def record_page(request: Request, incident_id: str) -> Response:
        """One record: what the hub knows of the episode, and the form and steps for the staff."""
        who = signed_in(request)
        if who is None:
            return to_login()
        row = records.incident(incident_id) if len(incident_id) <= 36 else None
        if row is None or not who.may_see(row.site):
            # Another site's record is not found, as if it did not exist: its existence is not shown.
            return page("not_found.html", 404, title="Record not found", user=who, current="")
        # A signed-off record shows its episode as signed, and what the hub has learned since apart.
        facts = shown(service, records, row)
        if facts is None:
            return page("not_found.html", 404, title="Record not found", user=who, current="")
        ep = facts.facts.episode
        now = service.clock.now()
        zone = zone_of(row.site)
        audit(who, "read", "incident", row.id)
        audit(who, "read", "episode", ep.id)

        view = incident_view(row)
        fields = RecordFields.model_validate(row.record)
        contacts = records.contacts(row.id)
        senior = who.has_role("senior")
        # A record completed as no child in the room has no parents to tell (core/incident.py).
        parents = not view.no_child
        copy_done = row.parent_copy_sent_at is not None or row.parent_copy_withheld_at is not None
        after_record = parents and row.status in ("recorded", "parent_notified", "reviewed")
        actions = Actions(
            edit=row.status != "closed",
            choose_child=row.status != "closed",
            child_off=row.status != "closed"
            and row.pupil_id is not None
            and (row.status not in workflow.COMPLETED or fields.classification == "no_child"),
            record=row.status == "awaiting_record",
            contact=parents and row.status in ("awaiting_record", "recorded", "parent_notified", "reviewed"),
            copy_sent=after_record and not copy_done,
            withhold=who.dsl and after_record and not copy_done,
            # An empty room's record is reviewed by a senior other than the one who recorded it.
            review=senior
            and (row.status == "parent_notified" or (view.no_child and row.status == "recorded"))
            and not workflow.own_no_child(view, who.name)
            and not (view.no_child and row.pupil_id is not None),  # the child taken off first
            sign_off=senior and row.status == "reviewed",
            addendum=row.status == "closed",
            copy_links=parents
            and row.status not in ("open", "awaiting_record")
            and row.pupil_id is not None
            and (row.parent_copy_withheld_at is None or who.dsl),
            senior=senior,
            dsl=who.dsl,
        )

        pupil = records.pupil(row.pupil_id) if row.pupil_id else None
        choosing = actions.choose_child and (pupil is None or request.query_params.get("choose") == "child")
        register: list[dict[str, str]] = []
        if choosing:
            # The register is listed only while the child is being chosen, and that read is audited.
            pupils = records.pupils(None, row.site)
            audit(who, "read", "pupils", row.site, count=len(pupils))
            for p in pupils:
                extra = f", {p.year_group}" if p.year_group else ""
                register.append({"id": p.id, "name": f"{p.first_name} {p.last_name}{extra}"})

        acc = account(ep, ep.end_or(now))
        start_day = ep.started_at.astimezone(zone).date()

        def when(at: dt.datetime | None) -> str:
            if at is None:
                return "still going on"
            same_day = at.astimezone(zone).date() == start_day
            return local_time(at, zone, seconds=True) if same_day else local_datetime(at, zone, seconds=True)

        segments = [
            {
                "n": i,
                "start": when(seg.start),
                "end": when(seg.end),
                "length": duration_words(((seg.end or ep.end_or(now)) - seg.start).total_seconds()),
            }
            for i, seg in enumerate(ep.segments, start=1)
        ]
        lapses = [
            {"start": when(lp.start), "end": when(lp.end), "length": duration_words(lp.seconds)}
            for lp in acc.lapses
        ]
        alerts = [alert_line(alert, when) for alert in facts.facts.alerts]
        loaded = service.sites.get(row.site)
        door = DOOR_WORDS[lock_state(ep, loaded.room(row.room) if loaded is not None else None)]

        missing = workflow.missing(view) if row.status in ("open", "awaiting_record") else []
        review_missing = (
            workflow.missing(view, REQUIRED_FOR_REVIEW)
            if row.status in ("recorded", "parent_notified") and not view.no_child
            else []
        )
        done_key = request.query_params.get("done", "")
        record_values = fields.model_dump(mode="json")
        return page(
            "record.html",
            title=f"Record: {room_name(row.site, row.room)}, {local_date(ep.started_at, zone)}",
            user=who,
            current="record",
            row=row,
            # The version the form shows: its save is refused (412) if the record changed since.
            version=record_version(row),
            ep=ep,
            status_words=status_words(row),
            no_child=view.no_child,
            no_child_reviewed=view.no_child_reviewed,
            site_name=site_name(row.site),
            room_name=room_name(row.site, row.room),
            timezone=str(zone),
            started=local_datetime(ep.started_at, zone, seconds=True),
            ended=local_datetime(ep.ended_at, zone, seconds=True) if ep.ended_at else None,
            elapsed=duration_words(ep.elapsed_s(now)),
            closed_for=duration_words(ep.duration_s(now)),
            door=door,
            supervised=supervised_words(acc.supervised_s),
            unsupervised=duration_words(acc.unsupervised_s),
            unknown=duration_words(acc.unknown_s),
            longest_lapse=duration_words(acc.longest_lapse_s),
            segments=segments,
            lapses=lapses,
            alerts=alerts,
            reviews=[{"name": r.name, "at": when(r.at), "by": r.by, "note": r.note} for r in ep.reviews],
            signed_at=local_datetime(facts.facts.signed_at, zone) if facts.facts.signed_at else None,
            changed_since=[CHANGE_WORDS.get(key, key.replace("_", " ")) for key in facts.changed],
            deadlines=deadlines(row, zone, now),
            pupil=pupil,
            choosing=choosing,
            register=register,
            actions=actions,
            fields=FIELDS,
            sections=[(title, [FIELD_BY_NAME[n] for n in names]) for title, names in SECTIONS],
            values=record_values,
            staff_rows=record_values.get("staff") or [],
            role_words=ROLE_WORDS,
            missing=missing_labels(missing),
            review_missing=missing_labels(review_missing),
            labels=LABELS,
            contact_methods=CONTACT_METHODS,
            notice_outcomes=NOTICE_OUTCOMES,
            outcome_words=OUTCOME_WORDS,
            method_words=dict(CONTACT_METHODS),
            contacts=[
                {
                    "at": local_datetime(c.at, zone),
                    "by": c.by,
                    "kind": "Written copy" if c.kind == "copy" else "Telling the parents",
                    "method": dict(CONTACT_METHODS).get(c.method, c.method),
                    "outcome": OUTCOME_WORDS.get(c.outcome, c.outcome),
                    "note": c.note,
                }
                for c in contacts
                if c.kind != "authority"
            ],
            # The report to the local authority is not a contact with the parents (the API keeps it
            # apart too, `authority_contacts`).
            authority_contacts=[
                {"at": local_datetime(c.at, zone), "by": c.by, "note": c.note}
                for c in contacts
                if c.kind == "authority"
            ],
            addenda=[
                {
                    "at": local_datetime(a.at, zone),
                    "author": a.author,
                    "field": LABELS.get(a.field, a.field) if a.field else None,
                    "text": a.text,
                }
                for a in records.addenda(row.id)
            ],
            history=[
                (label, by, local_datetime(at, zone))
                for label, by, at in (
                    ("Recorded", row.recorded_by, row.recorded_at),
                    ("Written copy withheld", row.parent_copy_withheld_by, row.parent_copy_withheld_at),
                    ("Reviewed", row.reviewed_by, row.reviewed_at),
                    ("Signed off", row.closed_by, row.closed_at),
                )
                if at is not None
            ],
            # The reason may be a safeguarding matter: shown to designated safeguarding leads only.
            withheld_reason=row.parent_copy_withheld_reason if who.dsl else None,
            done=DONE.get(done_key),
            local_datetime=lambda at: local_datetime(at, zone),
        )

    return router
