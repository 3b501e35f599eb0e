"""The parents' written copy made from a record, and sent by email with the PDF attached.

The copy is built from the stored episode (times, segments, supervision) and the record staff completed;
the child is the one on the record, named by first name. The mail goes through Apprise from the site's
`parent_mail` account; the parent's address is never logged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import apprise

from .config import LoadedSite, expand_env
from .core.episode import Episode, account
from .core.incident import RecordFields
from .core.site import RoomSpec
from .models import IncidentAddendum, IncidentRecord, Pupil
from .notify.channels import _instantiate
from .reports import ParentCopy, StaffMember
from .reports.parent_copy import Correction, LockState, format_date

_LOCKS: dict[str, LockState] = {"bolt": "locked", "maglock": "locked", "held": "held shut"}


def lock_state(ep: Episode, room: RoomSpec | None) -> LockState:
    """What a record or its copy may say about the lock. Lock sensors are optional: "not locked" only
    when one of the room's devices reports the lock and the sensors timed the episode; with none (or the
    room no longer in the site file), or for an episode entered by hand because the sensors failed, it
    was not recorded, and it says so rather than "not locked"."""
    if ep.locked:
        return _LOCKS.get(ep.lock_type or "held", "held shut")
    if ep.manual:
        return "not recorded"
    if room is not None and room.has("lock"):
        return "not locked"
    return "not recorded"


def _joined(*parts: tuple[str, str | None]) -> str | None:
    """Text fields put together under their labels (None when all are empty)."""
    said = [(label, text.strip()) for label, text in parts if text and text.strip()]
    if not said:
        return None
    if len(said) == 1 and not said[0][0]:
        return said[0][1]
    return "\n\n".join(f"{label}{text}" for label, text in said)


def site_said(site: LoadedSite, room_id: str, ep: Episode) -> dict[str, Any]:
    """What the copy of a record of this room says from the site file (the school, its timezone and
    contact, the room's name, what it may say about the lock): the sign-off keeps it with the record's
    facts (`IncidentRecord.signed["copy"]`), so the signed copy says what it said when it was signed."""
    room = site.room(room_id)
    contact = site.spec.contact
    return {
        "school_name": site.spec.name or site.id,
        "timezone": site.spec.timezone,
        "room_name": room.name if room is not None else room_id,
        "locked_or_held": lock_state(ep, room),
        "contact_name": contact.name if contact is not None else None,
        "contact_phone": contact.phone if contact is not None else None,
    }


# The parts of the letter a correction may name (an addendum's `field`), in the letter's words. A
# correction of a part the letter does not show (the adults' injuries, the staff debrief, the review)
# is the school's own and stays out of the parents' copy; one naming no part is about the whole record.
LETTER_PARTS: dict[str, str] = {
    "before": "before {name} went into the room",
    "risk": "why the room was used",
    "voluntary_reason": "why {name} used the room",
    "classification": "what kind of time in the room this was",
    "de_escalation": "what we tried first",
    "condition": "how {name} was, and any injuries",
    "injuries_child": "how {name} was, and any injuries",
    "first_aid": "first aid",
    "child_account": "what {name} told us",
    "child_communication": "what {name} told us",
    "what_will_change": "what will change",
    "staff": "who was there",
    "follow_up_offered": "talking with us",
    "follow_up_on": "talking with us",
}


def parent_copy(
    site: LoadedSite,
    incident: IncidentRecord,
    ep: Episode,
    pupil: Pupil,
    now: dt.datetime,
    addenda: Sequence[IncidentAddendum] = (),
) -> ParentCopy:
    """The written copy of one record, for the parents of the child on it. A signed-off record's copy
    says what the sign-off kept of the site file; one signed before the hub kept it (or not signed)
    reads the site file as it is now. `addenda`: the record's dated corrections, oldest first; those of
    the letter's parts (or of the whole record) are in the copy."""
    fields = RecordFields.model_validate(incident.record)
    first = pupil.first_name.strip()
    corrections = [
        Correction(at=a.at, part=LETTER_PARTS[a.field].format(name=first) if a.field else None, text=a.text)
        for a in addenda
        if a.field is None or a.field in LETTER_PARTS
    ]
    acc = account(ep, ep.end_or(now))
    end = ep.ended_at or now
    kept = (incident.signed or {}).get("copy") if incident.status == "closed" else None
    said = kept if kept is not None else site_said(site, incident.room, ep)
    return ParentCopy(
        school_name=said["school_name"],
        site_timezone=said["timezone"],
        child_first_name=pupil.first_name,
        child_full_name=f"{pupil.first_name} {pupil.last_name}",
        started_at=ep.started_at,
        ended_at=end,
        segments=[(s.start, s.end or end) for s in ep.segments],
        elapsed_s=ep.elapsed_s(end),
        duration_s=ep.duration_s(end),
        supervised_s=acc.supervised_s,
        unsupervised_s=acc.unsupervised_s,
        unknown_s=acc.unknown_s,
        longest_lapse_s=acc.longest_lapse_s,
        locked_or_held=said["locked_or_held"],
        room_name=said["room_name"],
        staff=[
            StaffMember(name=s.name, role=None if s.role == "involved" else "who saw what happened")
            for s in fields.staff or []
        ],
        generated_at=now,
        supervision=ep.supervision,
        what_happened_before=fields.before,
        reason=fields.risk,
        de_escalation=fields.de_escalation,
        condition_and_injuries=_joined(("", fields.condition), ("Injuries: ", fields.injuries_child)),
        first_aid=fields.first_aid,
        child_views=_joined(("", fields.child_account), ("How they told us: ", fields.child_communication)),
        what_will_change=fields.what_will_change,
        follow_up=fields.follow_up_on,
        contact_name=said["contact_name"],
        contact_phone=said["contact_phone"],
        start_uncertain=ep.start_uncertain,
        end_uncertain=ep.end_uncertain,
        manual=ep.manual,
        possible_loss=ep.possible_loss,
        voluntary_reason=(fields.voluntary_reason or "").strip() or None
        if fields.classification == "voluntary"
        else None,
        corrections=corrections,
        seclusion=fields.classification == "seclusion",
    )


def covering_email(copy: ParentCopy) -> tuple[str, str]:
    """The covering email's title and body for a copy: what is attached, and whom to ask. It promises
    nothing that may not have happened (a conversation), and names the letter's contact when there is one."""
    school = copy.school_name
    day = format_date(copy.started_at.astimezone(copy.zone).date())
    name = copy.child_first_name.strip()
    attached = (
        f"Please find attached the written record from {school} about the time {name} "
        f"{'was kept in' if copy.kept_in else 'spent in'} "
        f"{copy.room_name} on {day}."
    )
    contact_name = (copy.contact_name or "").strip()
    phone = (copy.contact_phone or "").strip()
    if contact_name and phone:
        ask = f"please contact {contact_name} on {phone}."
    elif contact_name:
        ask = f"please contact {contact_name} at the school."
    elif phone:
        ask = f"please call the school on {phone}."
    else:
        ask = "please reply to this email or call the school."
    return f"A written record from {school}", f"{attached}\n\nIf you would like to talk about it, {ask}"


class MailError(Exception):
    """The mail could not be sent; the message is safe to show (no address, no secret)."""


class AddressError(MailError):
    """The mail library would not send to exactly the address given (it reads it as another, or as
    none): nothing was sent. The message is safe to show."""


class _ParentMailLog(logging.Filter):
    """Installed once on the mail library's logger: while a parents' copy is being prepared or sent, its
    address never reaches a log (replaced in every record), and the library's records below WARNING are
    dropped, whichever thread logs them (Apprise logs the recipient at INFO and DEBUG, from a thread of
    its own pool). Nothing changes the logger's level, so two copies sent at once cannot leave it
    changed."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._addresses: Counter[str] = Counter()  # lower-cased address: sends using it now

    @contextlib.contextmanager
    def sending(self, address: str) -> Iterator[None]:
        """Keep `address` out of the log, and the library's records below WARNING, until the block ends."""
        key = address.lower()
        with self._lock:
            self._addresses[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._addresses[key] -= 1
                self._addresses = +self._addresses  # drop the zeros

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._addresses:
            return True
        if record.levelno < logging.WARNING:
            return False
        with self._lock:
            addresses = list(self._addresses)
        text = record.getMessage()
        lowered = text.lower()
        found = [a for a in addresses if a and a in lowered]
        if found:
            for address in found:
                text = re.sub(re.escape(address), "(the parent's address)", text, flags=re.IGNORECASE)
            record.msg, record.args = text, ()
        return True


_LOG = _ParentMailLog()
logging.getLogger("apprise").addFilter(_LOG)


def send_copy(site: LoadedSite, to: str, copy: ParentCopy, pdf: bytes, timeout_s: float = 30.0) -> None:
    """Send the PDF of `copy` to one parent's address from the site's `parent_mail` account."""
    # Apprise logs an address it drops while it reads the URL, and the recipient as it sends.
    with _LOG.sending(to):
        _send_copy(site, to, copy, pdf, timeout_s)


def check_address(site: LoadedSite, to: str) -> None:
    """What `send_copy` refuses before it sends anything (no `parent_mail` account, a URL the mail
    library does not understand: MailError; an address it reads as another: AddressError), raised
    here first, so that a copy is recorded as being sent only when it may go."""
    with _LOG.sending(to):
        _mail_plugin(site, to)


def _mail_plugin(site: LoadedSite, to: str) -> Any:
    if site.spec.parent_mail is None:
        raise MailError("this site has no parent_mail account in its site file")
    base = expand_env(site.spec.parent_mail, str(site.path), "parent_mail")
    url = base + ("&" if "?" in base else "?") + "to=" + quote(to, safe="@")
    plugin = _instantiate(url, apprise.AppriseAsset())
    if plugin is None:
        raise MailError("the site's parent_mail is not a mail URL Apprise understands")
    # Apprise reads the recipient again itself (a name and an address, several addresses): send only
    # when it reads exactly the one typed, or the parents' copy could go to someone else.
    targets = [str(target[-1]).lower() for target in getattr(plugin, "targets", [])]
    if targets != [to.lower()]:
        raise AddressError(
            "the mail service cannot send to this address as typed; check it, or send the copy another way"
        )
    return plugin


def _send_copy(site: LoadedSite, to: str, copy: ParentCopy, pdf: bytes, timeout_s: float) -> None:
    plugin = _mail_plugin(site, to)
    sender = apprise.Apprise()
    sender.add(plugin)
    title, body = covering_email(copy)
    result: list[bool] = []
    # Apprise logs the recipient at INFO, and again at WARNING when the server refuses it: keep its
    # records below WARNING out of the hub's logs for this send, and the address out of the rest, for
    # as long as the send goes on (past our timeout too: the worker's block ends when the send does).

    def call() -> None:
        with _LOG.sending(to), tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "written-record.pdf"
            path.write_bytes(pdf)
            # Plain text: Apprise's email sends HTML by default, where a name from the register
            # (`Sam<a href=...>`) would be live markup in the school's own email to the family.
            sent = sender.notify(
                body=body, title=title, attach=str(path), body_format=apprise.NotifyFormat.TEXT
            )
            result.append(bool(sent))

    worker = threading.Thread(target=call, name="parent-mail", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not result:
        raise MailError(f"the mail server did not answer within {timeout_s:g} s")
    if not result[0]:
        raise MailError("the mail server refused the message")
