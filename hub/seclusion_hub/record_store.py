"""The incident records, parent contacts, addenda and the pupil register in the database.

The ingest thread's single writer (store.py) owns episodes and their incidents' opening and ending;
what people do to a record after that is written here, one change per transaction, each with its
audit entry in the same transaction. Nothing here deletes a row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from .core.episode import Episode, ReviewRecord
from .core.incident import (
    NOT_NEEDED_NO_CHILD,
    REVIEWED,
    STATUSES,
    IncidentView,
    ReportDue,
    no_child_reviewed,
)
from .models import (
    AlertRecord,
    AuditEntry,
    EpisodeRecord,
    IncidentAddendum,
    IncidentRecord,
    IncidentStaff,
    ParentContact,
    Pupil,
    TimelineNote,
)


def _classification(record: dict[str, Any]) -> str | None:
    value = record.get("classification")
    return value if isinstance(value, str) else None


def incident_view(row: IncidentRecord) -> IncidentView:
    """What the record's workflow (core/incident.py) needs of a stored incident."""
    return IncidentView(
        status=row.status,
        pupil_id=row.pupil_id,
        record=row.record,
        parent_notified_at=row.parent_notified_at,
        parent_copy_sent_at=row.parent_copy_sent_at,
        parent_copy_withheld_at=row.parent_copy_withheld_at,
        recorded_by=row.recorded_by,
        classified_by=row.classified_by,
    )


# The statuses of a record not signed off, named rather than `status != 'closed'`: an index on the
# status serves `status IN (...)` (the few records still open), never `!=` (every record ever kept).
NOT_CLOSED: tuple[str, ...] = tuple(s for s in STATUSES if s != "closed")


class NotFound(LookupError):
    """No such row."""


class RollOrder(ValueError):
    """A child's last day on roll (`left_on`) before their first (`joined_on`) once an update is merged
    with what the register has: `index` is the child's place in the list saved."""

    def __init__(self, index: int) -> None:
        super().__init__("left_on: the last day on roll is before joined_on, the first")
        self.index = index


class SignedOff(Exception):
    """The record is signed off: it changes only by dated addenda."""


def _same_child(s: Session, pupil: Pupil) -> Pupil | None:
    """The one child of the site with this child's names (case and spacing aside) and date of birth, or
    None (none, or several: two children alike are never guessed between)."""

    def key(name: str) -> str:
        return " ".join(name.split()).casefold()

    alike = [
        p
        for p in s.exec(
            select(Pupil).where(Pupil.site == pupil.site, Pupil.date_of_birth == pupil.date_of_birth)
        ).all()
        if key(p.first_name) == key(pupil.first_name) and key(p.last_name) == key(pupil.last_name)
    ]
    return alike[0] if len(alike) == 1 else None


class RecordStore:
    """Reads and writes of records and the register; safe to call from the API's worker threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # One change of a record at a time in this process: a read, the workflow's decision and the
        # write happen as one step, so two people saving at once cannot undo each other's step.
        self._lock = threading.Lock()
        # And one step on each record at a time, held longer (`unsigned`: a child being attached, which
        # waits for the ingest thread; the copy being emailed) without holding back the other records;
        # always taken before `_lock`, never after it. Reentrant: the thread holding it (`unsigned`)
        # writes its change through `change_incident`, which takes it again.
        self._guard = threading.Lock()
        self._held: dict[str, tuple[threading.RLock, int]] = {}

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- incidents

    def incident(self, incident_id: str) -> IncidentRecord | None:
        with self._session() as s:
            return s.get(IncidentRecord, incident_id)

    def change_incident(
        self,
        incident_id: str,
        decide: Callable[[IncidentRecord], dict[str, Any]],
        audit: Callable[[IncidentRecord, dict[str, Any]], AuditEntry],
        now: dt.datetime,
        *,
        contact: ParentContact | None = None,
        addendum: IncidentAddendum | None = None,
        settle: ParentContact | None = None,
    ) -> IncidentRecord:
        """Read the record, let `decide` return the columns to change (it may raise to refuse), and
        write them with the audit entry (and a contact or addendum) in one transaction. `audit` is
        called with the contact or addendum already given its id, the record not yet changed.
        `settle`: a contact already stored (an email being sent) whose outcome and note are now known."""
        with self._one_step(incident_id), self._lock, self._session() as s:
            row = s.get(IncidentRecord, incident_id)
            if row is None:
                raise NotFound(incident_id)
            changes = decide(row)
            if settle is not None:
                stored = s.get(ParentContact, settle.id)
                if stored is None or stored.incident_id != incident_id:
                    raise NotFound(f"contact {settle.id}")
                stored.outcome, stored.note = settle.outcome, settle.note
                s.add(stored)
            added = [item for item in (contact, addendum) if item is not None]
            if added:
                s.add_all(added)
                s.flush()  # their ids, for the audit entry to name what was added
            entry = audit(row, changes)
            for key, value in changes.items():
                setattr(row, key, value)
            row.updated_at = now
            if "record" in changes:
                # The column beside the record (read by the dashboards, which may not read the record).
                row.classification = _classification(changes["record"])
                staff = changes["record"].get("staff") or []
                s.execute(sa.delete(IncidentStaff).where(col(IncidentStaff.incident_id) == incident_id))
                s.add_all(
                    IncidentStaff(
                        incident_id=incident_id, idx=i, name=m["name"], role=m.get("role", "involved")
                    )
                    for i, m in enumerate(staff)
                )
            s.add(row)
            s.add(entry)
            s.commit()
            s.refresh(row)
            return row

    @contextlib.contextmanager
    def episode_step(self) -> Iterator[None]:
        """Hold the lock a child's attaching to a stored episode holds (`attach_pupil_offline`): an
        episode read, checked and written whole (a hand-entered episode's end) is never written back
        over a child attached meanwhile, and two such writes never both pass their check."""
        with self._lock:
            yield

    @contextlib.contextmanager
    def _one_step(self, incident_id: str) -> Iterator[None]:
        """Hold this record's own lock (made while someone holds or waits for it, then dropped)."""
        with self._guard:
            lock, users = self._held.get(incident_id, (threading.RLock(), 0))
            self._held[incident_id] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._held[incident_id]
                if users == 1:
                    del self._held[incident_id]
                else:
                    self._held[incident_id] = (lock, users - 1)

    @contextlib.contextmanager
    def unsigned(self, incident_id: str) -> Iterator[None]:
        """Hold back every change of this record while the caller acts on it, not signed off (SignedOff
        if it is): no sign-off can come between the check and the caller's change, which the caller's
        thread may write with `change_incident` meanwhile. Other records go on."""
        with self._one_step(incident_id):
            row = self.incident(incident_id)
            if row is not None and row.status == "closed":
                raise SignedOff(incident_id)
            yield

    def contacts(self, incident_id: str) -> list[ParentContact]:
        with self._session() as s:
            query = select(ParentContact).where(ParentContact.incident_id == incident_id)
            return list(s.exec(query.order_by(col(ParentContact.at), col(ParentContact.id))).all())

    def addenda(self, incident_id: str) -> list[IncidentAddendum]:
        with self._session() as s:
            query = select(IncidentAddendum).where(IncidentAddendum.incident_id == incident_id)
            return list(s.exec(query.order_by(col(IncidentAddendum.at), col(IncidentAddendum.id))).all())

    def audit(self, entry: AuditEntry) -> None:
        with self._session() as s:
            s.add(entry)
            s.commit()

    def attach_pupil_offline(
        self,
        episode: EpisodeRecord,
        pupil_id: str | None,
        age: int | None,
        entry: AuditEntry,
        now: dt.datetime,
        changes: dict[str, Any] | None = None,
    ) -> None:
        """Attach a child to an episode the room no longer holds (older than its latest): the stored
        episode and its incident, in one transaction. The hub's writer may change such an episode
        meanwhile (a gap flags it `possible_loss`, semantics 4.4): the child is set on the row as it is
        when written, never on an older copy of it."""
        table = EpisodeRecord.__table__  # type: ignore[attr-defined]
        for _ in range(10):
            with self._lock, self._session() as s:
                row = s.get(EpisodeRecord, episode.id)
                incident = s.get(IncidentRecord, episode.incident_id)
                if row is None or incident is None:
                    raise NotFound(episode.id)
                ep = Episode.model_validate_json(row.data)
                ep.pupil_id, ep.pupil_age = pupil_id, age
                changed = s.connection().execute(
                    sa.update(table)
                    .where(table.c.id == row.id, table.c.data == row.data)
                    .values(pupil_id=pupil_id, data=ep.model_dump_json())
                )
                if changed.rowcount != 1:
                    continue  # written in between: again, on what it is now
                for key, value in (changes or {}).items():
                    setattr(incident, key, value)
                incident.pupil_id, incident.updated_at = pupil_id, now
                # The episode's timeline says so, as the room's machine does for its own episodes:
                # who, never the child (the record has the child).
                note = TimelineNote(
                    site=row.site,
                    room=row.room,
                    episode_id=row.id,
                    at=now,
                    kind="pupil_attached" if pupil_id else "pupil_removed",
                    detail={"by": entry.actor},
                )
                s.add_all([incident, entry, note])
                s.commit()
                return
        raise RuntimeError(f"episode {episode.id} kept changing while a child was attached to it")

    def review_offline(
        self, episode_id: str, review: ReviewRecord, entry: AuditEntry, now: dt.datetime
    ) -> Episode:
        """Record a review on an ended episode the room no longer holds (older than its latest): on the
        stored episode as it is when written (`attach_pupil_offline`'s way), with its timeline line and
        audit entry, in one transaction. The episode as written."""
        table = EpisodeRecord.__table__  # type: ignore[attr-defined]
        for _ in range(10):
            with self._lock, self._session() as s:
                row = s.get(EpisodeRecord, episode_id)
                if row is None:
                    raise NotFound(episode_id)
                ep = Episode.model_validate_json(row.data)
                ep.reviews.append(review)
                changed = s.connection().execute(
                    sa.update(table)
                    .where(table.c.id == row.id, table.c.data == row.data)
                    .values(data=ep.model_dump_json())
                )
                if changed.rowcount != 1:
                    continue  # written in between: again, on what it is now
                note = TimelineNote(
                    site=row.site,
                    room=row.room,
                    episode_id=row.id,
                    at=now,
                    kind="review_recorded",
                    detail={"review": review.name, "by": review.by},
                )
                s.add_all([entry, note])
                s.commit()
                return ep
        raise RuntimeError(f"episode {episode_id} kept changing while a review was recorded on it")

    # -- the pupil register

    def pupils(self, sites: Sequence[str] | None, site: str | None) -> list[Pupil]:
        with self._session() as s:
            query = select(Pupil)
            if sites is not None:
                query = query.where(col(Pupil.site).in_(list(sites)))
            if site is not None:
                query = query.where(Pupil.site == site)
            return list(
                s.exec(query.order_by(col(Pupil.last_name), col(Pupil.first_name), col(Pupil.id))).all()
            )

    def pupil(self, pupil_id: str) -> Pupil | None:
        with self._session() as s:
            return s.get(Pupil, pupil_id)

    def save_pupils(
        self, pupils: list[Pupil], entry: AuditEntry, sent: Sequence[Collection[str]] | None = None
    ) -> tuple[int, int]:
        """Add or update children (matched on site and the school's reference when one is given; without
        a reference, on first and last name, case and spacing aside, and date of birth, when exactly
        one child of the site has them: a file re-imported without references updates its children
        instead of adding each again), all or none; returns (added, updated), and a child given that
        updated another takes its id. `sent[i]`: the fields given for `pupils[i]` (a request's fields,
        a file's columns): an update changes those and keeps the others (a correction of a name, or a
        file from another system with fewer columns, never empties the rest); None: all."""
        added = updated = 0
        with self._lock, self._session() as s:
            for i, pupil in enumerate(pupils):
                existing = None
                if pupil.reference:
                    existing = s.exec(
                        select(Pupil).where(Pupil.site == pupil.site, Pupil.reference == pupil.reference)
                    ).first()
                elif pupil.date_of_birth is not None:
                    existing = _same_child(s, pupil)
                if existing is None:
                    s.add(pupil)
                    added += 1
                    continue
                pupil.id = existing.id
                values = pupil.model_dump(exclude={"id", "created_at"})
                if sent is not None:
                    given = set(sent[i]) | {"site", "reference", "updated_at"}
                    values = {k: v for k, v in values.items() if k in given}
                if not pupil.reference:
                    values.pop("reference", None)  # matched by name and birth: the child keeps theirs
                changed = sorted(
                    k for k, v in values.items() if k != "updated_at" and getattr(existing, k) != v
                )
                for key, value in values.items():
                    setattr(existing, key, value)
                if existing.joined_on and existing.left_on and existing.left_on < existing.joined_on:
                    raise RollOrder(i)  # nothing of the list is kept (the session is not committed)
                s.add(existing)
                updated += 1
                if len(pupils) == 1:  # one child: the entry names that child, and which fields changed
                    entry.target_id = existing.id
                    entry.detail = {**entry.detail, "updated": True, "changed": changed}
            s.add(entry)
            s.commit()
        return added, updated

    # -- what the leaders' review reads

    def episodes_between(
        self, sites: Sequence[str] | None, start: dt.datetime, end: dt.datetime
    ) -> list[EpisodeRecord]:
        with self._session() as s:
            query = select(EpisodeRecord).where(
                col(EpisodeRecord.started_at) >= start, col(EpisodeRecord.started_at) < end
            )
            if sites is not None:
                query = query.where(col(EpisodeRecord.site).in_(list(sites)))
            return list(s.exec(query.order_by(col(EpisodeRecord.started_at))).all())

    def child_episodes(self, pupil_id: str, start: dt.datetime, end: dt.datetime) -> list[EpisodeRecord]:
        """A child's episodes that overlap [start, end) (test episodes left out): started before `end`,
        and ended after `start` or still open. Read through ix_episode_pupil_started: the child's own
        episodes before `end`, never the school's. No bound below on the start: the hub has no longest
        episode (one stays open until its door opens or staff end it, a stuck sensor's for days), so
        an episode that began any time before may still overlap [start, end)."""
        e = EpisodeRecord
        with self._session() as s:
            query = select(e).where(
                e.pupil_id == pupil_id,
                col(e.test).is_(False),
                col(e.started_at) < end,
                sa.or_(col(e.ended_at).is_(None), col(e.ended_at) > start),
            )
            return list(s.exec(query.order_by(col(e.started_at))).all())

    def alerts_of(self, episode_id: str) -> list[AlertRecord]:
        with self._session() as s:
            query = select(AlertRecord).where(AlertRecord.episode_id == episode_id)
            return list(s.exec(query.order_by(col(AlertRecord.raised_at))).all())

    def incidents_for(self, episode_ids: Sequence[str]) -> list[IncidentRecord]:
        with self._session() as s:
            query = select(IncidentRecord).where(col(IncidentRecord.episode_id).in_(list(episode_ids)))
            return list(s.exec(query).all())

    def corrected(self, incident_ids: Sequence[str], field: str) -> set[str]:
        """The records among these with a dated addendum on `field`."""
        a = IncidentAddendum
        with self._session() as s:
            query = select(a.incident_id).where(col(a.incident_id).in_(list(incident_ids)), a.field == field)
            return set(s.exec(query.distinct()).all())

    def staff_of(self, incident_ids: Sequence[str]) -> list[IncidentStaff]:
        with self._session() as s:
            query = select(IncidentStaff).where(col(IncidentStaff.incident_id).in_(list(incident_ids)))
            return list(s.exec(query.order_by(col(IncidentStaff.incident_id), col(IncidentStaff.idx))).all())

    def incidents_page(
        self,
        site: str,
        *,
        status: str | None = None,
        room: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        overdue_at: dt.datetime | None = None,
        limit: int = 50,
        after: tuple[dt.datetime, str] | None = None,
        before: tuple[dt.datetime, str] | None = None,
    ) -> list[tuple[IncidentRecord, dt.datetime]]:
        """A site's incident records with their episode's start, by that start, newest first, filtered (the
        leaders' incident list): a hand-entered episode sits at the time it happened, as everywhere else, not
        at the time it was entered. `overdue_at` keeps those with a deadline passed at that time and its step
        not done. A page by its key (the episode's `started_at`, the record's id): `after` a key, the `limit`
        next older than it; `before` a key, the `limit` newer ones nearest it (still newest first). A record
        that changes or comes meanwhile moves no other across a page's edge, as an offset would."""
        i, e = IncidentRecord, EpisodeRecord
        # From the site's episodes in their order (ix_episode_site_started: the period's range, a page
        # streamed newest first), each record found by its episode: never every record of the site
        # looked up and sorted. A record's site is its episode's.
        query = (
            select(i, e.started_at)
            .select_from(e)
            .join(i, col(i.episode_id) == col(e.id))
            .where(e.site == site, i.site == site)
        )
        if status is not None:
            query = query.where(i.status == status)
        if room is not None:
            query = query.where(i.room == room)
        if start is not None:
            query = query.where(col(e.started_at) >= start)
        if end is not None:
            query = query.where(col(e.started_at) < end)
        if overdue_at is not None:
            query = query.where(col(i.status).in_(NOT_CLOSED), _overdue(overdue_at))
        when, key = col(e.started_at), col(i.id)
        # Each key also bounds the time alone (`<=`, `>=`): the index seeks to the page's edge instead
        # of walking every newer (older) row to it.
        if after is not None:
            query = query.where(
                when <= after[0], sa.or_(when < after[0], sa.and_(when == after[0], key < after[1]))
            )
        if before is not None:
            query = query.where(
                when >= before[0], sa.or_(when > before[0], sa.and_(when == before[0], key > before[1]))
            )
            with self._session() as s:
                nearest = s.exec(query.order_by(when.asc(), key.asc()).limit(limit)).all()
            return [(row, started) for row, started in reversed(nearest)]
        with self._session() as s:
            found = s.exec(query.order_by(when.desc(), key.desc()).limit(limit)).all()
            return [(row, started) for row, started in found]

    def lapse_alert_counts(self, episode_ids: Sequence[str]) -> dict[str, int]:
        """The `supervision_lapse` alerts raised per episode (each for a lapse longer than the grace; the
        episode's lapses themselves are every unsupervised interval of its accounting)."""
        if not episode_ids:
            return {}
        a = AlertRecord
        with self._session() as s:
            query = (
                select(a.episode_id, sa.func.count())
                .where(a.kind == "supervision_lapse", col(a.episode_id).in_(list(episode_ids)))
                .group_by(a.episode_id)
            )
            return {str(e): int(n) for e, n in s.exec(query).all()}

    def next_deadline(self, now: dt.datetime) -> dt.datetime | None:
        """The soonest deadline after `now` of a step not yet done, on a record not signed off: when the
        next `report_overdue` may fall due (the ingest thread looks then, not up to a minute later)."""
        i = IncidentRecord
        steps = (
            (i.record_due_at, (i.recorded_at,)),
            (i.parent_notice_due_at, (i.parent_notified_at,)),
            (i.parent_copy_due_at, (i.parent_copy_sent_at, i.parent_copy_withheld_at)),
            (i.authority_notice_due_at, (i.authority_notified_at,)),
        )
        found: list[dt.datetime] = []
        with self._session() as s:
            for due, done in steps:
                query = select(sa.func.min(due)).where(
                    col(i.status).in_(NOT_CLOSED), col(due) > now, *(col(d).is_(None) for d in done)
                )
                soonest = s.exec(query).one()
                if soonest is not None:
                    found.append(soonest)
        return min(found, default=None)

    def overdue(self, now: dt.datetime) -> list[IncidentRecord]:
        """Records with a deadline passed and its step not done (the `report_overdue` alerts)."""
        i = IncidentRecord
        with self._session() as s:
            query = select(i).where(col(i.status).in_(NOT_CLOSED), _overdue(now))
            return list(s.exec(query).all())


def _overdue(now: dt.datetime) -> Any:
    """A record with a deadline passed at `now` and its step not done (as `report_due` says: a reviewed
    record of no child in the room has no parents' or authority's step)."""
    i = IncidentRecord
    needs_parents = sa.or_(
        col(i.status).not_in(REVIEWED),
        sa.func.coalesce(col(i.record)["classification"].as_string(), "") != "no_child",
    )
    return sa.or_(
        sa.and_(col(i.record_due_at) <= now, col(i.recorded_at).is_(None)),
        sa.and_(
            needs_parents,
            sa.or_(
                sa.and_(col(i.parent_notice_due_at) <= now, col(i.parent_notified_at).is_(None)),
                sa.and_(
                    col(i.parent_copy_due_at) <= now,
                    col(i.parent_copy_sent_at).is_(None),
                    col(i.parent_copy_withheld_at).is_(None),
                ),
                sa.and_(col(i.authority_notice_due_at) <= now, col(i.authority_notified_at).is_(None)),
            ),
        ),
    )


def report_due(row: IncidentRecord) -> ReportDue:
    """A record's deadlines and steps, as the `report_overdue` rule sees them. A record of no child in
    the room, once a senior member of staff has reviewed it, needs no parents' or authority's step:
    those count as done (until then they run as for any record)."""
    done = {
        "record": row.recorded_at is not None,
        "parent_notice": row.parent_notified_at is not None,
        "parent_copy": row.parent_copy_sent_at is not None or row.parent_copy_withheld_at is not None,
        "authority_notice": row.authority_notified_at is not None,
    }
    if no_child_reviewed(row.status, row.record):
        done.update(dict.fromkeys(NOT_NEEDED_NO_CHILD, True))
    return ReportDue(
        incident_id=row.id,
        episode_id=row.episode_id,
        site=row.site,
        room=row.room,
        due={
            "record": row.record_due_at,
            "parent_notice": row.parent_notice_due_at,
            "parent_copy": row.parent_copy_due_at,
            "authority_notice": row.authority_notice_due_at,
        },
        done=done,
        closed=row.status == "closed",
    )
