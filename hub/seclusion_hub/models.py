"""Database tables (SQLModel). Every schema change goes through an Alembic migration in migrations/.

Times are stored through `UTCDateTime`: SQLite keeps no timezone, so values go in as UTC and come back
timezone-aware UTC on every database.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

# The key of a table that only grows (events, the audit, timeline notes, delivery attempts, ...):
# 64-bit on PostgreSQL, where a SERIAL key's sequence stops at 2^31 - 1 (two billion readings: a trust's
# schools on one database reach it within years, and every reading after it would be refused).
# SQLite's key stays INTEGER, which is its 64-bit rowid.
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp column that refuses naive datetimes and always returns aware UTC ones."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: the hub stores UTC-aware times only")
        utc = value.astimezone(dt.UTC)
        # SQLite stores text without an offset; PostgreSQL keeps it. Either way the value is UTC.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _ts(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def _json(**kw: Any) -> Any:
    return Field(sa_type=sa.JSON, **kw)


class EventRecord(SQLModel, table=True):
    """Every accepted device event, append-only: the evidence behind every episode."""

    __tablename__ = "event"
    # An episode's timeline reads a room's events by time. Within a site the index orders by time, not
    # by room: events arrive in time order, so each batch adds to the index's last pages instead of one
    # page per room (about 30 fewer pages written, and checkpointed, per batch of 22 events from 50
    # rooms). The price is paid by the timeline, which passes over the other rooms' events of its window
    # inside the index (docs/performance.md: a few milliseconds at a school's volumes).
    __table_args__ = (
        sa.UniqueConstraint("site", "device", "epoch", "seq", name="uq_event_device_seq"),
        sa.Index("ix_event_site_ts_room", "site", "ts", "room"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ROW_ID)
    site: str = Field(max_length=63)
    room: str = Field(max_length=63)
    device: str = Field(max_length=63)
    epoch: int = Field(sa_type=sa.BigInteger)
    seq: int = Field(sa_type=sa.BigInteger)
    event_id: str = Field(max_length=200)
    kind: str = Field(max_length=16)
    value: str = Field(max_length=64)
    staff: str | None = Field(default=None, max_length=100)
    # The time the hub applied it at: the device's `ts`, or, where semantics 4.5 timed it otherwise
    # (a clock corrected by its measured offset, or one that read no plausible time), that time, with
    # the device's own `ts` kept in `device_ts` (null when the two are the same).
    ts: dt.datetime = _ts()
    device_ts: dt.datetime | None = _ts(default=None, nullable=True)
    received_at: dt.datetime = _ts()
    stored_at: dt.datetime = _ts()


class DeadLetter(SQLModel, table=True):
    """A message that broke the contract: kept with the reason, never applied."""

    __tablename__ = "dead_letter"

    id: int | None = Field(default=None, primary_key=True, sa_type=ROW_ID)
    received_at: dt.datetime = _ts(index=True)
    topic: str = Field(max_length=1024)
    reason: str = Field(max_length=2000)
    payload: bytes = Field(sa_type=sa.LargeBinary)
    payload_size: int
    payload_sha256: str = Field(max_length=64)
    truncated: bool = False


class EpisodeRecord(SQLModel, table=True):
    """An episode as the core last saved it, with its accounting as of `saved_at`."""

    __tablename__ = "episode"
    # Migration 0013: a site's episodes newest first (the list's page and cursor, the leaders' period,
    # the leaders' record list, which starts from here), and a child's (the 48 hours before an episode).
    __table_args__ = (
        sa.Index("ix_episode_room_started", "site", "room", "started_at"),
        sa.Index("ix_episode_site_started", "site", "started_at", "id"),
        sa.Index("ix_episode_pupil_started", "pupil_id", "started_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    site: str = Field(max_length=63)
    room: str = Field(max_length=63)
    number: int
    started_at: dt.datetime = _ts(index=True)
    ended_at: dt.datetime | None = _ts(default=None, index=True)
    start_uncertain: bool = False
    end_uncertain: bool = False
    locked: bool = False
    manual: bool = False
    test: bool = False
    incident_id: str = Field(max_length=36)
    pupil_id: str | None = Field(default=None, max_length=36)
    elapsed_s: float = 0.0
    duration_s: float = 0.0
    supervised_s: float = 0.0
    unsupervised_s: float = 0.0
    unknown_s: float = 0.0
    longest_lapse_s: float = 0.0
    # The whole episode as JSON text, written by pydantic's own serializer (the hot path of every commit).
    data: str = Field(sa_type=sa.Text)
    saved_at: dt.datetime = _ts()


class SegmentRecord(SQLModel, table=True):
    """One confinement interval of an episode (door closed to door open)."""

    __tablename__ = "segment"

    episode_id: str = Field(primary_key=True, foreign_key="episode.id", max_length=36)
    idx: int = Field(primary_key=True)
    start: dt.datetime = _ts()
    end: dt.datetime | None = _ts(default=None)


class IncidentRecord(SQLModel, table=True):
    """The incident record every episode opens (semantics 6); never deleted."""

    __tablename__ = "incident"
    # Migration 0013: the record list's page, newest first, of a site and of a site's records in one
    # status (`?status=awaiting_record`). They begin with the site: the site's own index went.
    __table_args__ = (
        sa.Index("ix_incident_site_opened", "site", "opened_at", "id"),
        sa.Index("ix_incident_site_status_opened", "site", "status", "opened_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=36)
    episode_id: str = Field(foreign_key="episode.id", max_length=36, index=True)
    site: str = Field(max_length=63)
    room: str = Field(max_length=63)
    status: str = Field(max_length=32, index=True)
    opened_at: dt.datetime = _ts()
    updated_at: dt.datetime = _ts()
    # Issue 4: the record staff complete (core/incident.py `RecordFields`, as JSON), the child it is
    # about, and each step of the workflow with who did it and when. Deadlines are set when the episode
    # ends, from the profile and the site's school days and timezone (core/deadlines.py).
    pupil_id: str | None = Field(default=None, max_length=36, index=True)
    classification: str | None = Field(default=None, max_length=16)
    record: dict[str, Any] = _json(default_factory=dict)
    ended_at: dt.datetime | None = _ts(default=None)
    record_due_at: dt.datetime | None = _ts(default=None)
    parent_notice_due_at: dt.datetime | None = _ts(default=None)
    parent_copy_due_at: dt.datetime | None = _ts(default=None)
    authority_notice_due_at: dt.datetime | None = _ts(default=None)
    recorded_at: dt.datetime | None = _ts(default=None)
    recorded_by: str | None = Field(default=None, max_length=200)
    # Who last set the classification of a completed record (recording it, or changing it since): a
    # `no_child` record is reviewed by someone else (core/incident.py `review`).
    classified_by: str | None = Field(default=None, max_length=200)
    parent_notified_at: dt.datetime | None = _ts(default=None)
    parent_copy_sent_at: dt.datetime | None = _ts(default=None)
    parent_copy_method: str | None = Field(default=None, max_length=32)
    parent_copy_withheld_at: dt.datetime | None = _ts(default=None)
    parent_copy_withheld_by: str | None = Field(default=None, max_length=200)
    parent_copy_withheld_reason: str | None = Field(default=None, sa_type=sa.Text)
    authority_notified_at: dt.datetime | None = _ts(default=None)
    reviewed_at: dt.datetime | None = _ts(default=None)
    reviewed_by: str | None = Field(default=None, max_length=200)
    closed_at: dt.datetime | None = _ts(default=None)
    closed_by: str | None = Field(default=None, max_length=200)
    # What the hub knew of the episode when the record was signed off (record_facts.py): the signed
    # record shows this from then on, and what the hub learns later beside it, never folded in.
    # None is SQL NULL here (not JSON null): no facts kept, as for a record signed before they were.
    signed: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON(none_as_null=True))


class IncidentStaff(SQLModel, table=True):
    """An adult involved in or witnessing an incident (for the per-staff review); kept in step with the
    record's `staff` field, replaced whole on each change before sign-off."""

    __tablename__ = "incident_staff"

    incident_id: str = Field(primary_key=True, foreign_key="incident.id", max_length=36)
    idx: int = Field(primary_key=True)
    name: str = Field(max_length=200, index=True)
    role: str = Field(max_length=16)  # involved | witness


class IncidentAddendum(SQLModel, table=True):
    """A dated correction to a record, with its author. Append-only: the way a signed record changes."""

    __tablename__ = "incident_addendum"

    id: int | None = Field(default=None, primary_key=True, sa_type=ROW_ID)
    incident_id: str = Field(foreign_key="incident.id", max_length=36, index=True)
    at: dt.datetime = _ts()
    author: str = Field(max_length=200)
    field: str | None = Field(default=None, max_length=64)
    text: str = Field(sa_type=sa.Text)


class ParentContact(SQLModel, table=True):
    """Every attempt to tell the parents (or carers), and every sending of the written copy, with its
    outcome. Append-only."""

    __tablename__ = "parent_contact"

    id: int | None = Field(default=None, primary_key=True, sa_type=ROW_ID)
    incident_id: str = Field(foreign_key="incident.id", max_length=36, index=True)
    at: dt.datetime = _ts()
    by: str = Field(max_length=200)
    kind: str = Field(max_length=16)  # notice | copy (to the parents) | authority (the report to it)
    method: str = Field(max_length=32)  # phone | in_person | email | letter | text_message | other
    outcome: str = Field(max_length=32)  # reached | no_answer | message_left | sent | failed
    note: str = Field(default="", sa_type=sa.Text)


class Pupil(SQLModel, table=True):
    """A child on the register. Only here, in the hub's database: never on MQTT, in logs or in notices."""

    __tablename__ = "pupil"
    __table_args__ = (sa.UniqueConstraint("site", "reference", name="uq_pupil_site_reference"),)

    id: str = Field(primary_key=True, max_length=36)
    site: str = Field(max_length=63, index=True)
    reference: str | None = Field(default=None, max_length=64)  # the school's own pupil number (UPN)
    first_name: str = Field(max_length=100)
    last_name: str = Field(max_length=100)
    date_of_birth: dt.date | None = None
    year_group: str | None = Field(default=None, max_length=16)
    sex: str | None = Field(default=None, max_length=32)
    ethnicity: str | None = Field(default=None, max_length=64)
    sen: str = Field(default="unknown", max_length=16)  # none | sen_support | ehcp | unknown
    fsm: bool | None = None
    looked_after: bool | None = None
    characteristics: list[str] = _json(default_factory=list)
    # On the school's roll from `joined_on` to `left_on` (its last day), each as the school says; None:
    # not said (on roll as far as the figures know). The leaders' rates count the children on roll in
    # their period, so a leaver is not a child of every later term's register.
    joined_on: dt.date | None = None
    left_on: dt.date | None = None
    created_at: dt.datetime = _ts()
    updated_at: dt.datetime = _ts()


class TimelineNote(SQLModel, table=True):
    """What the core decided and when: episode started, door opened, device offline, and so on."""

    __tablename__ = "timeline_note"
    __table_args__ = (sa.Index("ix_note_room_at", "site", "room", "at"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=ROW_ID)
    site: str = Field(max_length=63)
    room: str = Field(max_length=63)
    episode_id: str | None = Field(default=None, max_length=36, index=True)
    at: dt.datetime = _ts()
    kind: str = Field(max_length=64)
    detail: dict[str, Any] = _json()


class RoomSnapshot(SQLModel, table=True):
    """The room machine's whole state, written in the same transaction as the events that made it.

    The room's open and latest episodes are in `state` whole unless the episode table holds them as
    they are: then `state` leaves them out and the two ids say which rows to load them from."""

    __tablename__ = "room_state"

    site: str = Field(primary_key=True, max_length=63)
    room: str = Field(primary_key=True, max_length=63)
    state: str = Field(sa_type=sa.Text)  # RoomState as JSON text
    episode_id: str | None = Field(default=None, max_length=36)  # `episode` is that row's
    last_episode_id: str | None = Field(default=None, max_length=36)  # `last_episode` is that row's
    updated_at: dt.datetime = _ts()


class ApiToken(SQLModel, table=True):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True, sa_type=ROW_ID)
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    sites: list[str] = _json(default_factory=list)
    dsl: bool = False
    token_hash: str = Field(max_length=64, unique=True)
    created_at: dt.datetime = _ts()
    revoked_at: dt.datetime | None = _ts(default=None)


class AuditEntry(SQLModel, table=True):
    """Who read or changed what, and when. Append-only."""

    __tablename__ = "audit"

    id: int | None = Field(default=None, primary_key=True, sa_type=ROW_ID)
    at: dt.datetime = _ts(index=True)
    actor: str = Field(max_length=200)
    action: str = Field(max_length=64)
    target_type: str = Field(max_length=32)
    target_id: str = Field(max_length=200)  # an id, or "site/room" (63 characters each)
    detail: dict[str, Any] = _json(default_factory=dict)


class AlertRecord(SQLModel, table=True):
    """An alert as it now is (semantics 5): raised, escalated, acknowledged, resolved. Never deleted."""

    __tablename__ = "alert"
    # Migration 0013: `ix_alert_site_raised` for the list's page, newest first, and its cursor.
    __table_args__ = (
        sa.Index("ix_alert_room_raised", "site", "room", "raised_at"),
        sa.Index("ix_alert_site_raised", "site", "raised_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=36)
    site: str = Field(max_length=63)
    room: str = Field(max_length=63)
    episode_id: str | None = Field(default=None, max_length=36, index=True)
    kind: str = Field(max_length=32)
    severity: str = Field(max_length=16)
    active: bool = Field(index=True)
    raised_at: dt.datetime = _ts(index=True)
    resolved_at: dt.datetime | None = _ts(default=None)
    data: str = Field(sa_type=sa.Text)  # the whole Alert as JSON text
    updated_at: dt.datetime = _ts()


class DeliveryRecord(SQLModel, table=True):
    """One send of an alert to one channel (the live board, the room's indicator, an Apprise URL, a
    webhook): stored `pending` in the same transaction as the alert change that decided it, so a send
    survives a crash of the hub; then updated with every attempt's outcome."""

    __tablename__ = "delivery"

    id: str = Field(primary_key=True, max_length=80)
    alert_id: str = Field(max_length=36, index=True)
    number: int  # the alert's n-th send
    tier: str = Field(max_length=16)
    reason: str = Field(max_length=16)
    channel: str = Field(max_length=300)  # a label without secrets
    recipient: str = Field(max_length=200)
    status: str = Field(max_length=16, index=True)  # pending | sent | retrying | failed
    attempts: int = 0
    created_at: dt.datetime = _ts()
    last_attempt_at: dt.datetime | None = _ts(default=None)
    next_retry_at: dt.datetime | None = _ts(default=None)
    last_error: str | None = Field(default=None, max_length=500)


class DeliveryAttempt(SQLModel, table=True):
    """Every attempt to deliver, with its outcome. Append-only."""

    __tablename__ = "delivery_attempt"

    id: int | None = Field(default=None, primary_key=True, sa_type=ROW_ID)
    delivery_id: str = Field(max_length=80, index=True)
    attempt: int
    at: dt.datetime = _ts()
    ok: bool
    error: str | None = Field(default=None, max_length=500)
