"""What a notification says: the notice handed to every channel, and its words for a person.

A notice carries the room, the alert, the time and a link, and nothing about the child: there is no
field for it, by design (contract section 4), so no channel can leak what it was never given.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, fields
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..reports.parent_copy import MONTHS

Severity = Literal["info", "warning", "critical"]
Reason = Literal["raised", "escalated", "renotify", "late"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
REASONS: tuple[Reason, ...] = ("raised", "escalated", "renotify", "late")


@dataclass(frozen=True)
class Notice:
    """One alert, to be told to one tier now. Frozen, and free of any personal data."""

    delivery_id: str
    alert_id: str
    kind: str
    severity: Severity
    site: str
    room: str
    room_name: str
    tier: str
    reason: Reason
    due_at: dt.datetime
    raised_at: dt.datetime
    late: bool
    link: str | None
    timezone: str
    rule: str = ""  # the alert's rule: for `report_overdue`, the step of the record that is late
    # When the hub decided to send it (a reminder or an escalation may come days after the alert was
    # raised): its times say their date when it is not this one's day. None: `raised_at`.
    sent_at: dt.datetime | None = None
    # The school, on a hub serving several (a trust's schools, often each with a "Calm room 1", and a
    # trust-wide person told of them all): its site file's `name`, else its id. "" on a hub of one
    # school, whose notices name the room alone.
    site_name: str = ""

    def __post_init__(self) -> None:
        # A bad notice is our bug: refuse it where it is made, not later in a delivery thread.
        for name in ("due_at", "raised_at", "sent_at"):
            value = getattr(self, name)
            if name == "sent_at" and value is None:
                continue
            if not isinstance(value, dt.datetime) or value.tzinfo is None:
                raise ValueError(f"Notice.{name} must be a timezone-aware datetime")
        if self.severity not in SEVERITIES:
            raise ValueError(f"Notice.severity must be one of {', '.join(SEVERITIES)}")
        if self.reason not in REASONS:
            raise ValueError(f"Notice.reason must be one of {', '.join(REASONS)}")
        if not self.delivery_id:
            raise ValueError("Notice.delivery_id must not be empty")


NOTICE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Notice))


def new_delivery_id() -> str:
    """A fresh delivery id: unique per send, so that a receiver can drop a duplicate."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Wording:
    """How one kind of alert is put to a person."""

    name: str  # for the title, lower case: "supervision lapse"
    sentence: str  # what happened; {room} and {time} are filled in
    action: str  # what to do now
    needs_ack: bool


# One sentence per kind of semantics.md section 5. `{time}` is the alert's due time in the site's zone.
WORDING: dict[str, Wording] = {
    "episode_started": Wording(
        "child in a closed room",
        "A child has been in {room} with the door closed since {time}.",
        "Make sure someone is supervising at the viewing panel.",
        needs_ack=False,
    ),
    "supervision_lapse": Wording(
        "supervision lapse",
        # {time} is when the grace ran out, not when nobody was last seen: said so.
        "Nobody has been recorded supervising {room} (at the viewing panel, or by a check-in) for "
        "longer than allowed, as of {time}.",
        "Go to the room now.",
        needs_ack=True,
    ),
    "duration_warning": Wording(
        "duration warning",
        "The episode in {room} reached its duration warning at {time}.",
        "Check whether the child can come out now.",
        needs_ack=True,
    ),
    "duration_escalation": Wording(
        "long episode",
        "The episode in {room} has gone on long enough to be escalated, as of {time}.",
        "A senior member of staff should review it now.",
        needs_ack=True,
    ),
    "duration_limit": Wording(
        "duration limit reached",
        "The episode in {room} reached its maximum duration at {time}.",
        "End it now unless it is still needed to keep someone safe, and record why.",
        needs_ack=True,
    ),
    "review_due": Wording(
        "review due",
        "A review of the episode in {room} was due at {time}.",
        "Review it and record the outcome.",
        needs_ack=True,
    ),
    "no_movement": Wording(
        "no movement",
        "No movement has been detected in {room} for a while, as of {time}.",
        "Go and check on the child now: they may be unwell.",
        needs_ack=True,
    ),
    "lock_forbidden": Wording(
        "lock not allowed",
        "The door of {room} was locked at {time}, and locking is not allowed for this room.",
        "Release the lock now.",
        needs_ack=True,
    ),
    "seclusion_prohibited": Wording(
        "seclusion not allowed",
        "A child has been in {room} with the door closed since {time}, and seclusion is not allowed here.",
        "Go to the room now and end it.",
        needs_ack=True,
    ),
    "device_offline": Wording(
        "device offline",
        "A device of {room} has been offline since before {time}, so the hub cannot see the room.",
        "Check the room in person, then the device's power and network.",
        needs_ack=True,
    ),
    "sensor_fault": Wording(
        "sensor fault",
        "A sensor of {room} reported a fault at {time}.",
        "Check the room in person until the device is fixed.",
        needs_ack=True,
    ),
    "clock_skew": Wording(
        "device clock wrong",
        "A device clock in {room} was found to be wrong at {time}; the hub is correcting its times.",
        "Ask IT to check the device's time settings.",
        needs_ack=False,
    ),
    "report_overdue": Wording(
        "report overdue",
        "The written report of an episode in {room} was due at {time} and is not done.",
        "Complete the record and the report to parents.",
        needs_ack=True,
    ),
}

# `report_overdue` is raised for each step of a record on its own deadline (core/incident.py STEPS):
# the notice names the step that is late and what to do about it.
REPORT_STEPS: dict[str, Wording] = {
    "record": Wording(
        "record overdue",
        "The record of an episode in {room} was due at {time} and is not complete.",
        "Complete the record.",
        needs_ack=True,
    ),
    "parent_notice": Wording(
        "parents not yet told",
        "The parents of the child in an episode in {room} were to be told of it by {time}, and this "
        "is not recorded as done.",
        "Tell the parents, and record that you have.",
        needs_ack=True,
    ),
    "parent_copy": Wording(
        "parents' written copy overdue",
        "The parents' written copy of the record of an episode in {room} was due at {time} and is not "
        "recorded as sent.",
        "Send the written copy (or have a DSL record why it is withheld), and record it.",
        needs_ack=True,
    ),
    "authority_notice": Wording(
        "report to the authority overdue",
        "The report to the authority of an episode in {room} was due at {time} and is not recorded as made.",
        "Make the report, and record it.",
        needs_ack=True,
    ),
}

# A kind this table does not know (a newer hub rule) is still sent, in general words: never dropped.
FALLBACK = Wording(
    "alert", "An alert about {room} was due at {time}.", "Open the live board.", needs_ack=True
)

_SEVERITY_WORD: dict[str, str] = {"info": "INFO", "warning": "WARNING", "critical": "CRITICAL"}
_REASON_TAG: dict[str, str] = {
    "raised": "",
    "escalated": " (escalated)",
    "renotify": " (reminder)",
    "late": "",
}


@dataclass(frozen=True)
class Message:
    """The words a person reads: a short title and a plain body."""

    title: str
    body: str


def _zone(name: str) -> tuple[dt.tzinfo, str]:
    try:
        return ZoneInfo(name), name
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC, "UTC"


_MONTHS = tuple(month[:3] for month in MONTHS)


def _local(when: dt.datetime, zone: dt.tzinfo, reference: dt.datetime) -> str:
    """`10:15:02`, with the date in front when it is not the reference's local date, and the zone's
    name in the hour the clocks go back ("01:30:00 BST", then "01:30:00 GMT": the same wall time twice).
    The month in English whatever the server's locale."""
    local = when.astimezone(zone)
    text = local.strftime("%H:%M:%S")
    if local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset():
        text += f" {local.tzname()}"
    if local.date() == reference.astimezone(zone).date():
        return text
    return f"{local.day} {_MONTHS[local.month - 1]} {local.year} {text}"


def render_message(notice: Notice, sent_at: dt.datetime | None = None) -> Message:
    """Title and body for a person: the room (and its school, on a hub of several), what happened and
    when (site time, dated when not of the day it is sent: `sent_at`, else the notice's), what to do,
    a link."""
    wording = WORDING.get(notice.kind, FALLBACK)
    if notice.kind == "report_overdue":
        wording = REPORT_STEPS.get(notice.rule, wording)
    zone, zone_name = _zone(notice.timezone)
    room = notice.room_name.strip() or notice.room
    if notice.site_name.strip():
        room = f"{room} at {notice.site_name.strip()}"
    name = wording.name if notice.kind in WORDING else notice.kind.replace("_", " ")
    tag = _REASON_TAG.get(notice.reason, "")
    # `late` as a reason without the alert being late: an alert held while the room was in maintenance,
    # raised on time and sent now that the maintenance is over (the hub did not learn of it late).
    released = notice.reason == "late" and not notice.late
    if notice.late:
        tag += " (late)"
    elif released:
        tag += " (after maintenance)"
    title = f"{_SEVERITY_WORD.get(notice.severity, 'ALERT')}: {name}{tag}, {room}"
    today = sent_at or notice.sent_at or notice.raised_at
    time = f"{_local(notice.due_at, zone, today)} ({zone_name} local time)"
    parts = [wording.sentence.format(room=room, time=time)]
    decided = notice.sent_at or notice.raised_at
    if notice.reason == "escalated":
        # As of when the hub decided to escalate: a retry of this notice may go out after someone has.
        parts.append(f"Nobody had acknowledged it by {_local(decided, zone, today)}.")
    elif notice.reason == "renotify":
        parts.append("This is a reminder: it is still going on.")
    if notice.late:
        raised = _local(notice.raised_at, zone, today)
        parts.append(f"The hub learned of it late, at {raised}.")
    elif released:
        parts.append("It was held while the room was in maintenance, and is sent now that it is over.")
    parts.append(wording.action)
    verb = "Acknowledge" if wording.needs_ack else "Details"
    if notice.link:
        parts.append(f"{verb}: {notice.link}")
    else:
        parts.append("Open the live board to acknowledge." if wording.needs_ack else "See the live board.")
    return Message(title=title, body=" ".join(parts))
