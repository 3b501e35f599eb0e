"""A review of the two databases and of the crash consistency of what people write (second reviewer).

Each test fails now and passes once its fault is fixed; its docstring says what a user would see.
Every test runs on SQLite and PostgreSQL (`api`, `database`: the fixtures of tests/hub/test_records.py),
or on PostgreSQL alone where the fault is PostgreSQL's.

A crash of the hub between two writes is played by making the second write raise `HubDied`: what the
database holds then is what a hub killed at that moment (SIGKILL, a power cut) leaves behind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from seclusion_hub.models import AlertRecord, AuditEntry, DeadLetter, EpisodeRecord, EventRecord
from tests.hub.test_records import Records, _recorded
from tests.support.hub import two_device_room

MIDNIGHT = dt.datetime(2026, 11, 24, 0, 0, tzinfo=dt.UTC)  # Monday's records fall due


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database's URL, SQLite then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("fresh_postgres_db"))


def _hub(tmp_path: Path, database: str, **kw: Any) -> Iterator[Records]:
    hub = Records(tmp_path, database, **kw)
    yield hub
    hub.service.stop()
    hub.client.close()
    hub.store.close()


@pytest.fixture
def api(tmp_path: Path, database: str) -> Iterator[Records]:
    """The hub's API and records in process (tests/hub/test_records.py), its ingest thread not started."""
    yield from _hub(tmp_path, database)


@pytest.fixture
def reviewing(tmp_path: Path, database: str) -> Iterator[Records]:
    """As `api`, with room calm-1's policy asking for a senior's check every 15 minutes."""
    check = [{"name": "senior-check", "first_s": 900, "every_s": 900, "tier": "senior"}]
    yield from _hub(
        tmp_path, database, rooms=[two_device_room("calm-1", reviews=check), two_device_room("calm-2")]
    )


class HubDied(RuntimeError):
    """The hub process stops here: nothing after this point is written."""


def _die(*_args: Any, **_kwargs: Any) -> None:
    raise HubDied("the hub process was killed here")


def _audit(api: Records, **where: Any) -> list[AuditEntry]:
    with api.store.session() as s:
        query = select(AuditEntry)
        for key, value in where.items():
            query = query.where(getattr(AuditEntry, key) == value)
        return list(s.exec(query.order_by(col(AuditEntry.id))).all())


# -- crash consistency: a person's action written in two commits


def test_an_alert_resolved_by_a_senior_is_never_left_resolved_without_its_audit_entry(
    api: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`POST /api/alerts/{id}/resolve` stores the resolution through the ingest thread (one commit) and
    then writes its audit entry with `store.audit` (a second commit, api.py `resolve`). A hub killed
    between the two leaves an alert resolved by hand, with nothing more sent for it, and no `resolve_alert`
    entry in the audit log: an inspector or the DSL reading the log cannot see that a senior silenced an
    overdue record's reminder, nor the note they gave (and if the second write fails, the person gets a
    500 for a change that was made). Fix: append the entry to the batch that stores the resolution, as
    `set_mode` and `attach_pupil` do (`batch.audits`)."""
    # Given an overdue record's `report_overdue` alert
    api.ended_episode()
    api.clock.set(MIDNIGHT + dt.timedelta(seconds=30))
    api.service.process([api.service.report_check()])
    senior = api.token("senior", "test-school")
    items = api.client.get("/api/alerts", params={"state": "all"}, headers=senior).json()["items"]
    alert = next(a for a in items if a["kind"] == "report_overdue")
    # When a senior resolves it, with any write after the resolution's own killing the hub
    api.service.start()
    try:
        monkeypatch.setattr(api.store, "audit", _die)
        done = api.client.post(
            f"/api/alerts/{alert['id']}/resolve", json={"note": "done on paper"}, headers=senior
        )
    finally:
        monkeypatch.undo()
        api.service.stop()
    assert done.status_code == 200, done.text
    # Then the resolution and its audit entry were stored together: both are there
    with api.store.session() as s:
        row = s.get(AlertRecord, alert["id"])
    assert row is not None
    resolved = row.resolved_at is not None
    audited = bool(_audit(api, action="resolve_alert", target_id=alert["id"]))
    assert (resolved, audited) == (True, True), f"resolved by a person: {resolved}, audited: {audited}"


def test_a_review_recorded_on_an_episode_is_never_left_without_its_audit_entry(
    reviewing: Records,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`POST /api/episodes/{id}/reviews` stores the review through the ingest thread (one commit) and then
    writes its audit entry (`review`, a second commit, api.py `record_review`). A hub killed between the
    two leaves a review in the episode, on the record page and in the signed record, under a person's
    name, with no audit entry of who recorded it: docs/hub.md says such a review is audited. Fix: the
    entry in the batch that stores the review (`batch.audits`), as for a child's attach."""
    api = reviewing
    ep = api.ended_episode()
    staff = api.token("staff", "test-school")
    api.service.start()
    try:
        monkeypatch.setattr(api.store, "audit", _die)  # a second write after the review's would die
        done = api.client.post(
            f"/api/episodes/{ep['id']}/reviews", json={"name": "senior-check"}, headers=staff
        )
    finally:
        monkeypatch.undo()
        api.service.stop()
    assert done.status_code == 201, done.text
    stored = api.store.get_episode(ep["id"])
    assert stored is not None
    reviewed = '"senior-check"' in stored.data
    audited = bool(_audit(api, action="review", target_id=ep["id"]))
    assert (reviewed, audited) == (True, True), f"review stored: {reviewed}, audited: {audited}"


# -- PostgreSQL: what SQLite takes and PostgreSQL refuses

INT32_MAX = 2**31 - 1


def _ids_reach_int32_max(api: Records, table: str) -> None:
    """Make `table`'s next new row the one after id 2^31 - 1, as a busy hub's years of rows do: SQLite's
    rowid is 64-bit; a PostgreSQL `SERIAL` key's sequence stops at 2^31 - 1."""
    with api.store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            seq = conn.execute(sa.text(f"SELECT pg_get_serial_sequence('{table}', 'id')")).scalar_one()
            conn.execute(sa.text("SELECT setval(:seq, :at)"), {"seq": seq, "at": INT32_MAX - 1})
        else:
            # A rowid table without AUTOINCREMENT numbers a new row max(rowid) + 1: one row at the edge.
            if table == "event":
                conn.execute(
                    sa.text(
                        "INSERT INTO event (id, site, room, device, epoch, seq, event_id, kind, value,"
                        " ts, received_at, stored_at) VALUES (:id, 'elsewhere', 'r', 'd', 0, 1, 'd:0:1',"
                        " 'door', 'open', '2020-01-01 00:00:00.000000', '2020-01-01 00:00:00.000000',"
                        " '2020-01-01 00:00:00.000000')"
                    ),
                    {"id": INT32_MAX - 1},
                )
            else:
                conn.execute(
                    sa.text(
                        f"INSERT INTO {table} (id, at, actor, action, target_type, target_id, detail)"  # noqa: S608
                        " VALUES (:id, '2020-01-01 00:00:00.000000', 'x', 'x', 'x', 'x', '{}')"
                    ),
                    {"id": INT32_MAX - 1},
                )


def test_device_readings_keep_being_stored_past_the_two_billionth_event(api: Records) -> None:
    """The event table's key is a 32-bit `SERIAL` on PostgreSQL (`sa.Integer` primary key, migration
    0001); SQLite's rowid is 64-bit. Events are never deleted: at the 720,000 a day of
    docs/performance.md a school passes 2^31 in about eight years, a trust of ten such schools on one
    PostgreSQL database (the deployment docs/operations.md suggests it for) within a year. From then on
    every device reading is refused by the database ("nextval: reached maximum value of sequence") and
    set aside as a dead letter: a door opening is never applied, an episode never ends, no new one
    starts, and the hub carries on as if nothing were wrong. Fix: 64-bit keys on PostgreSQL for the
    append-only tables (event, audit, timeline_note, delivery_attempt, dead_letter, parent_contact,
    incident_addendum: `sa.BigInteger().with_variant(sa.Integer(), "sqlite")`), with a migration."""
    _ids_reach_int32_max(api, "event")
    # When a child goes in, the door closes, and ten minutes later it opens and the child leaves
    for device, kind, value, t in (
        ("calm-1-panel", "observer", "present", 0),
        ("calm-1-door", "occupancy", "occupied", 1),
        ("calm-1-door", "door", "closed", 2),
        ("calm-1-door", "door", "open", 602),
        ("calm-1-door", "occupancy", "vacant", 603),
    ):
        api.event("test-school", "calm-1", device, kind, value, t)
    # Then every reading is stored and the episode has ended, as on SQLite
    with api.store.session() as s:
        dead = [d.reason[:110] for d in s.exec(select(DeadLetter)).all()]
        kept = s.exec(select(EventRecord).where(EventRecord.site == "test-school")).all()
        episodes = [(e.started_at, e.ended_at) for e in s.exec(select(EpisodeRecord)).all()]
    assert dead == [], f"device readings set aside: {dead}"
    assert len(kept) == 5 and len(episodes) == 1 and episodes[0][1] is not None, episodes


def test_a_record_can_still_be_opened_past_the_two_billionth_audit_entry(api: Records) -> None:
    """Every read of a record, of an episode, of each page of a list and of the register is an audit
    entry, and the audit table's key is a 32-bit `SERIAL` on PostgreSQL. Past 2^31 entries the audit
    write is refused, and since a record is audited before it is shown, `GET /api/incidents/{id}` (and
    every audited page) answers 500: nobody can open a record any more, on PostgreSQL only. Fix: a
    64-bit key there (see the test above)."""
    ep = api.ended_episode()
    _ids_reach_int32_max(api, "audit")
    staff = api.token("staff", "test-school")
    try:
        for _ in range(2):
            opened = api.client.get(f"/api/incidents/{ep['incident_id']}", headers=staff)
            assert opened.status_code == 200
    except sa.exc.DBAPIError as exc:
        pytest.fail(f"opening the record failed (a 500): {exc.orig}")


def test_a_copy_the_mail_server_took_is_on_the_record_even_if_the_hub_dies_before_saying_so(
    api: Records,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`POST /api/incidents/{id}/parent-copy/send` hands the PDF to the mail server and only then writes
    the contact (`copy`, `email`, `sent`) and its audit entry. A hub killed in between (or a database
    that fails that write: SQLite locked for 30 s, a PostgreSQL restart) leaves a copy of a child's
    record in a parent's mailbox with no trace on the record: the record still says the copy is to be
    sent, `report_overdue` is raised for it, and staff send it again (docs/incidents.md: "a copy that went
    out is always recorded and audited"). Fix: record the attempt (with its audit entry) before talking to
    the mail server, e.g. a contact `outcome: sending`, and complete it after; a restart then shows an
    attempt whose outcome is not known instead of nothing."""
    ep = api.ended_episode()
    incident = _recorded(api, ep)
    staff = api.token("staff", "test-school")
    mailed: list[str] = []
    monkeypatch.setattr("seclusion_hub.records.send_copy", lambda _site, to, _copy, _pdf: mailed.append(to))
    monkeypatch.setattr("seclusion_hub.records.check_address", lambda _site, _to: None)  # no mail account
    records = api.client.app.state.records  # type: ignore[attr-defined]
    change = records.change_incident

    def dies_after_the_mail(*args: Any, **kwargs: Any) -> Any:
        contact = kwargs.get("contact") or kwargs.get("settle")
        if mailed and contact is not None and contact.method == "email" and contact.outcome == "sent":
            raise HubDied("the hub process was killed here")
        return change(*args, **kwargs)

    monkeypatch.setattr(records, "change_incident", dies_after_the_mail)
    with pytest.raises(HubDied):
        api.client.post(f"{incident}/parent-copy/send", json={"to": "parent@home.example"}, headers=staff)
    monkeypatch.undo()
    assert mailed == ["parent@home.example"], "the mail server took the copy"
    body = api.client.get(incident, headers=staff).json()
    emailed = [c for c in body["parent_contacts"] if c["kind"] == "copy" and c["method"] == "email"]
    assert emailed, "a copy in the parent's mailbox, and no trace of it on the record"


def test_a_token_name_too_long_to_keep_is_refused_alike_on_both_databases(database: str) -> None:
    """`api_token.name` is `VARCHAR(200)` (and so are `audit.actor`, `recorded_by`, `closed_by` and the
    others a person's name is copied into). SQLite ignores the length: `seclusion-hub token create --name
    <201 characters>` makes a token there, while on PostgreSQL the same command fails with a database
    error ("value too long for type character varying(200)"). A name is refused before the database,
    naming `--name`, as `--site` and `--role` are (auth.create_token), on both alike."""
    from seclusion_hub.auth import create_token
    from seclusion_hub.store import Store

    store = Store.open(database)
    try:
        with pytest.raises(ValueError, match="name"):
            create_token(store, "A" * 201, "admin", [], False, MIDNIGHT)
    finally:
        store.close()
