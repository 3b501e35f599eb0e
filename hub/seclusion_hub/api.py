"""The HTTP API (contract section 6): JSON under /api, bearer tokens, OpenAPI, /healthz and /metrics."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from seclusion_contract import SLUG, Timestamp, format_ts, format_ts_or_none

from . import __version__
from .auth import Principal, principal_for
from .core.alerts import Alert, AlertError
from .core.episode import Episode, ReviewRecord, Segment, UnknownInterval, account
from .core.incident import Status as IncidentStatus
from .core.policy import Policy
from .core.room import NOT_HELD_REVIEW, RoomMachine
from .delivery import alert_from_row, alert_json
from .deps import Cursor, Limit, Senior, Staff, needs, site_allowed
from .errors import UNSTORABLE, UNSTORABLE_PROBLEM, BadRequest, ChangeRefused, RejectedMessage, unstorable_in
from .leaders import leaders_router
from .live import LiveFeed
from .models import AuditEntry, IncidentRecord
from .record_pages import record_pages_router
from .record_store import RecordStore, SignedOff
from .records import incident_summary, records_router
from .review import review_router
from .service import HubService
from .store import Batch
from .web import session_token, web_router


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


MAX_MAINTENANCE = dt.timedelta(hours=2)


_FIELD_FIRST = re.compile(r"^Value error, (?P<field>[a-z_][a-z0-9_]*): (?P<problem>.+)$", re.S)


def _named(error: dict[str, Any]) -> dict[str, Any]:
    """A rule across a body's fields (a model validator) fails at the body as a whole; its message
    names the field first ("reason: maintenance needs a reason"): the 422 names it in `loc` too, as
    every other refusal does, so a client can put the message beside that field."""
    loc = error.get("loc")
    match = _FIELD_FIRST.match(str(error.get("msg", "")))
    if match is None or not isinstance(loc, (list, tuple)) or tuple(loc) != ("body",):
        return error
    return {**error, "loc": ["body", match["field"]], "msg": match["problem"]}


class ModeChange(_Body):
    """`PUT /api/rooms/{site}/{room}/mode`: maintenance needs a reason and ends within 2 hours."""

    mode: Literal["normal", "maintenance"]
    reason: Annotated[str, Field(min_length=3, max_length=500)] | None = None
    expires_at: Timestamp | None = None

    @model_validator(mode="after")
    def _maintenance_needs(self) -> ModeChange:
        if self.mode == "maintenance":
            if self.reason is None:
                raise ValueError("reason: maintenance needs a reason")
            if self.expires_at is None:
                raise ValueError("expires_at: maintenance needs an expiry (at most 2 hours ahead)")
        return self


class ManualEpisode(_Body):
    """`POST /api/episodes`: an episode entered by hand because the sensors failed."""

    site: Annotated[str, Field(pattern=SLUG.pattern)]
    room: Annotated[str, Field(pattern=SLUG.pattern)]
    started_at: Timestamp
    ended_at: Timestamp | None = None
    reason: Annotated[str, Field(min_length=3, max_length=2000)]

    @model_validator(mode="after")
    def _ordered(self) -> ManualEpisode:
        if self.ended_at is not None and self.ended_at < self.started_at:
            raise BadRequest("body", "ended_at", "before started_at")
        return self


class AlertResolution(_Body):
    """`POST /api/alerts/{id}/resolve`: a senior member of staff resolves an alert, saying why."""

    note: Annotated[str, Field(min_length=3, max_length=2000)]


class ReviewEntry(_Body):
    """`POST /api/episodes/{id}/reviews`: a review of the policy's `reviews`, done and recorded."""

    name: Annotated[str, Field(min_length=1, max_length=100)]
    note: Annotated[str, Field(max_length=2000)] = ""


class EpisodeEnd(_Body):
    """`POST /api/episodes/{id}/end`: the end of a manual episode, entered by hand."""

    ended_at: Timestamp


# Text no database here can store: a NUL character (PostgreSQL refuses it, SQLite takes it) and a lone
# surrogate (a JSON `\ud800` escape without its pair: not UTF-8, so neither can).


async def refuse_unstorable_text(request: Request) -> None:
    """A NUL character or a lone surrogate in a path, query or JSON body value is refused with 422
    naming the field, before it reaches the database (where it was a 500). Form bodies are left
    alone: they cannot be read twice."""
    problem = UNSTORABLE_PROBLEM
    for name, value in request.path_params.items():
        if UNSTORABLE.search(str(value)):
            raise BadRequest("path", name, problem)
    for name, value in request.query_params.multi_items():
        if UNSTORABLE.search(name + value):
            raise BadRequest("query", UNSTORABLE.sub("", name), problem)
    content_type = request.headers.get("content-type", "").lower()
    if request.method not in ("POST", "PUT", "PATCH") or content_type.startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        return
    raw = await request.body()  # already read (and kept) by FastAPI for a JSON body
    if b"\x00" in raw:
        raise BadRequest("body", "body", problem)
    if b"\\u" in raw:  # only a JSON escape gives either
        try:
            found = unstorable_in(json.loads(raw))
        except ValueError:
            return  # not JSON: FastAPI or the endpoint says so
        if found is not None:
            raise BadRequest("body", ".".join(found) or "body", problem)


def episode_json(ep: Episode, now: dt.datetime) -> dict[str, Any]:
    """An episode as contract section 6 shows it, its clocks read at `now`."""
    acc = account(ep, now)
    return {
        "id": ep.id,
        "site": ep.site,
        "room": ep.room,
        "started_at": format_ts(ep.started_at),
        "start_uncertain": ep.start_uncertain,
        "earliest_start": format_ts_or_none(ep.earliest_start),
        "ended_at": format_ts_or_none(ep.ended_at),
        "end_uncertain": ep.end_uncertain,
        "end_earliest": format_ts_or_none(ep.end_earliest),
        "elapsed_s": ep.elapsed_s(now),
        "duration_s": ep.duration_s(now),
        "locked": ep.locked,
        "lock_type": ep.lock_type,
        "supervision": ep.supervision,
        "supervised_s": acc.supervised_s,
        "unsupervised_s": acc.unsupervised_s,
        "unknown_s": acc.unknown_s,
        "longest_lapse_s": acc.longest_lapse_s,
        "lapses": [
            {"start": format_ts(lp.start), "end": format_ts(lp.end), "s": lp.seconds} for lp in acc.lapses
        ],
        "unknown": [
            {"device": u.device, "start": format_ts(u.start), "end": format_ts_or_none(u.end)}
            for u in ep.unknown
        ],
        "incident_id": ep.incident_id,
        "pupil_id": ep.pupil_id,
        "manual": ep.manual,
        "test": ep.test,
        "possible_loss": ep.possible_loss,
        "clock_uncertain": ep.clock_uncertain,
        "segments": [{"start": format_ts(s.start), "end": format_ts_or_none(s.end)} for s in ep.segments],
    }


class SignedOffReview(HTTPException):
    """A review recorded on the episode of a signed-off record: the record shows the reviews done, and
    signed off it changes only by addenda."""

    def __init__(self) -> None:
        super().__init__(409, "status: the episode's record is signed off; add an addendum instead")


def person_entry(
    who: Principal, action: str, target_type: str, target_id: str, now: dt.datetime, **detail: Any
) -> AuditEntry:
    """The audit entry of a person's read or change: who, what, on what, when, and its detail."""
    return AuditEntry(
        at=now, actor=who.name, action=action, target_type=target_type, target_id=target_id, detail=detail
    )


def _list_read(
    who: Principal, listed: str, site: str | None, filters: dict[str, Any], count: int, now: dt.datetime
) -> AuditEntry:
    """The audit entry of one page of a list read by a person: what was listed (against the site asked
    for, `*` for all the caller's, then named in `sites` for a person limited to some: the audit says
    whose records a person of a trust's school could have read), the filter and how many it showed;
    never what the items hold."""
    detail: dict[str, Any] = {"filter": {k: v for k, v in filters.items() if v is not None}, "count": count}
    if site is None and who.sites is not None:
        detail["sites"] = sorted(who.sites)
    return person_entry(who, "read", listed, site or "*", now, **detail)


def room_json(
    machine: RoomMachine, now: dt.datetime, manual: tuple[str, dt.datetime] | None = None
) -> dict[str, Any]:
    """A room's live state as contract section 6 shows it. `manual`: an episode entered by hand and
    still going on in the room (its id and start), shown when the sensors show none: the room is not
    "not in use" while a child is recorded as confined in it, though no sensor sees it."""
    ep = machine.episode
    supervised: bool | None = None
    if ep is not None:
        state = account(ep, now).state_now
        supervised = None if state in ("unknown", None) else state == "supervised"
    by_hand = manual if ep is None else None
    started = ep.started_at if ep else (by_hand[1] if by_hand else None)
    st = machine.state
    maintenance = machine.in_maintenance(now)
    return {
        "site": machine.site,
        "room": machine.spec.id,
        "name": machine.spec.name,
        "door": machine.reading("door"),
        "lock": machine.reading("lock"),
        # Added: whether a device of the room reports the lock (a lock not yet heard of is "not known"),
        # and what its lock is (the site file's `lock_type`): a door held shut is not a locked door.
        "has_lock": machine.spec.has("lock"),
        "lock_type": next(
            (d.lock_type for d in machine.spec.devices if machine.spec.reports(d.id, "lock")), None
        ),
        "occupancy": machine.reading("occupancy"),
        "observer": machine.reading("observer"),
        "online": machine.online,
        "episode_id": ep.id if ep else (by_hand[0] if by_hand else None),
        # Additions to the contract, for the live board's running clock.
        "episode_started_at": format_ts_or_none(started),
        "episode_start_uncertain": ep.start_uncertain if ep else (False if by_hand else None),
        "episode_manual": by_hand is not None,
        "supervised": supervised,
        "mode": "maintenance" if maintenance else "normal",
        "mode_until": format_ts_or_none(st.maintenance_until) if maintenance else None,
        "mode_reason": st.maintenance_reason if maintenance else None,
        "supervision": machine.mode,
    }


def create_app(
    service: HubService,
    mqtt_connected: Callable[[], bool] = lambda: False,
    live: LiveFeed | None = None,
    *,
    public_url: str = "",
) -> FastAPI:
    """The FastAPI application over a running HubService, with the web pages and the live stream;
    `public_url`: where people reach the hub (SECLUSION_PUBLIC_URL), behind a proxy perhaps."""
    app = FastAPI(
        title="Seclusion hub",
        version=__version__,
        description="Times every confinement, watches supervision, and keeps the record. Contract v1.",
        dependencies=[Depends(refuse_unstorable_text)],
    )
    store = service.store
    app.state.store = store

    def room_view(machine: RoomMachine, now: dt.datetime) -> dict[str, Any]:
        """A room's live state, with its hand-entered episode going on, if any (caller holds the lock)."""
        return room_json(machine, now, service.manual_open.get((machine.site, machine.spec.id)))

    def tell_boards(site: str, room: str) -> None:
        """A hand-entered episode began or ended: the room's boards are told (the ingest thread tells
        them of every other change)."""
        service.refresh_manual()
        live = service.live
        machine = service.machines.get((site, room))
        if live is None or machine is None or not live.has_subscribers:
            return
        with service.lock:  # worked out and pushed under the lock, as the ingest thread pushes its views
            live.publish("room", room_view(machine, service.clock.now()))

    app.state.public_url = public_url.rstrip("/")

    @app.middleware("http")
    async def _credentials_first(request: Request, call_next: Any) -> Any:
        # Credentials are checked before a body is read, so that a request without them gets 401 (the
        # contract), never a 422 about a body it had no right to send.
        if request.url.path.startswith("/api/"):
            header = request.headers.get("authorization") or f"Bearer {session_token(request) or ''}"
            scheme, _, token = header.partition(" ")
            valid = scheme.lower() == "bearer" and bool(token)
            if valid:
                valid = await run_in_threadpool(principal_for, store, token.strip()) is not None
            if not valid:
                return JSONResponse(
                    {"detail": "valid credentials required"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 echoes what was sent (`input`): a child's name, a record's free text. Name
        # the field and the problem, never the value.
        detail = [
            _named({key: value for key, value in error.items() if key in ("loc", "msg", "type")})
            for error in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(BadRequest)
    async def _bad_request(_request: Request, exc: BadRequest) -> JSONResponse:
        detail = [{"loc": [exc.location, exc.field], "msg": exc.problem, "type": "value_error"}]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(ChangeRefused)
    async def _refused(_request: Request, exc: ChangeRefused) -> JSONResponse:
        # A bug of ours (the hub's log has the database's error): the person is told nothing changed.
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    @app.exception_handler(TimeoutError)
    async def _timeout(_request: Request, exc: TimeoutError) -> JSONResponse:
        # The ingest thread did not store a person's change in time (a slow or stalled database): its
        # message says whether it may be tried again (run_command).
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.get("/healthz", tags=["operations"])
    def healthz() -> JSONResponse:
        """Liveness and readiness: 200 while the ingest thread and the database are well."""
        body: dict[str, Any] = {"status": "ok", "mqtt_connected": mqtt_connected(), **service.status()}
        try:
            store.count(IncidentRecord)
        except Exception:
            body["status"] = "database unavailable"
            return JSONResponse(body, status_code=503)
        if not service.healthy:
            body["status"] = "ingest failing"
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    @app.get("/metrics", tags=["operations"])
    def metrics() -> Response:
        """Prometheus metrics: counts only, no personal data."""
        service.metrics.mqtt_connected.set(1 if mqtt_connected() else 0)
        service.metrics.queue_depth.set(service.inbox.qsize())
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/rooms", tags=["rooms"])
    def rooms(who: Staff, limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
        """Every room the caller may see, with its live state."""
        now = service.clock.now()
        items: list[dict[str, Any]] = []
        with service.lock:
            for (site, _room_id), machine in sorted(service.machines.items()):
                if not who.may_see(site):
                    continue
                items.append(room_view(machine, now))
        start = 0
        if cursor is not None:
            # ASCII digits only: str.isdigit() takes "²", which int() then refuses (a 500).
            if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 9:
                raise BadRequest("query", "cursor", "not a cursor this API returned")
            start = int(cursor)
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {"items": page, "next": str(start + limit) if more else None}

    @app.get("/api/episodes", tags=["episodes"])
    def episodes(
        who: Staff,
        site: Annotated[str | None, Query(max_length=63)] = None,
        room: Annotated[str | None, Query(max_length=63)] = None,
        open: bool | None = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Episodes, newest first. An empty filter (`?site=&room=`, as the contract writes them) is no
        filter, never a filter on "" that reads as no episodes."""
        site, room = site or None, room or None
        if site is not None:
            site_allowed(who, site)
        sites = sorted(who.sites) if who.sites is not None else None
        try:
            rows, nxt = store.list_episodes(sites, site, room, open, limit, cursor)
        except ValueError as exc:
            raise BadRequest("query", "cursor", "not a cursor this API returned") from exc
        now = service.clock.now()
        # A page of episodes is a read of each child's episodes (their ids, times, supervision): audited
        # as the register's pages are, one entry per page with its filter and count, nothing personal.
        filters = {
            "site": site,
            "room": room,
            "open": open,
            "next_page": True if cursor is not None else None,
        }
        store.audit(_list_read(who, "episodes", site, filters, len(rows), now))
        return {"items": [episode_json(service.episode_now(r), now) for r in rows], "next": nxt}

    @app.get("/api/episodes/{episode_id}", tags=["episodes"])
    def episode(episode_id: str, who: Staff) -> dict[str, Any]:
        """One episode with its timeline: every event, decision and action, in time order."""
        row = store.get_episode(episode_id)
        if row is None:
            raise HTTPException(404, "no such episode")
        site_allowed(who, row.site)
        ep = service.episode_now(row)
        now = service.clock.now()
        body = episode_json(ep, now)
        start = ep.earliest_start or ep.started_at
        # The readings that led to it come before the start: include the look-back window.
        # A room taken out of the site file since has no policy left: the widest look-back its site's
        # rooms have (the profile's default when none is left), so no reading that led to it is hidden.
        loaded = service.sites.get(ep.site)
        policies = loaded.policies if loaded is not None else {}
        policy = policies.get(ep.room)
        lookback = (
            policy.occupancy_lookback_s
            if policy is not None
            else max(
                (p.occupancy_lookback_s for p in policies.values()), default=Policy().occupancy_lookback_s
            )
        )
        window_start = start - dt.timedelta(seconds=lookback)
        timeline: list[dict[str, Any]] = [
            {
                "at": format_ts(ev.ts),
                "type": "event",
                "kind": ev.kind,
                "value": ev.value,
                "device": ev.device,
                "seq": ev.seq,
                "epoch": ev.epoch,
                "received_at": format_ts(ev.received_at),
                # Added: what the device's clock said, when the hub timed the reading otherwise (4.5).
                "device_ts": format_ts_or_none(ev.device_ts),
            }
            for ev in store.episode_events(ep.site, ep.room, window_start, ep.ended_at)
        ]
        timeline.extend(
            {"at": format_ts(note.at), "type": "decision", "kind": note.kind, "detail": note.detail}
            for note in store.episode_notes(ep.id)
        )
        timeline.sort(key=lambda item: (item["at"], 0 if item["type"] == "event" else 1))
        body["timeline"] = timeline
        store.audit(person_entry(who, "read", "episode", ep.id, now))
        return body

    def _machine(who: Principal, site: str, room: str) -> RoomMachine:
        site_allowed(who, site)
        machine = service.machines.get((site, room))
        if machine is None:
            raise HTTPException(404, f"no room {room!r} at site {site!r}")
        return machine

    @app.put("/api/rooms/{site}/{room}/mode", tags=["rooms"])
    def set_mode(site: str, room: str, change: ModeChange, who: Senior) -> dict[str, Any]:
        """Maintenance (cleaning, testing): episodes still recorded, flagged `test`; at most 2 hours."""
        _machine(who, site, room)  # 403 or 404 before anything changes
        now = service.clock.now()
        until = change.expires_at if change.mode == "maintenance" else None
        if until is not None and not now < until <= now + MAX_MAINTENANCE:
            raise BadRequest("body", "expires_at", "must be in the future and at most 2 hours ahead")
        service.set_mode(
            site,
            room,
            until,
            change.reason,
            person_entry(
                who,
                f"mode_{change.mode}",
                "room",
                f"{site}/{room}",
                now,
                reason=change.reason,
                expires_at=format_ts_or_none(until),
            ),
        )
        with service.lock:
            # Looked up again: a batch that failed meanwhile may have reloaded the machines.
            return room_view(service.machines[(site, room)], service.clock.now())

    @app.post("/api/episodes", tags=["episodes"], status_code=201)
    def manual_episode(body: ManualEpisode, who: Senior) -> dict[str, Any]:
        """An episode entered by hand when the sensors failed: marked `manual`, its time all unknown."""
        # The site and room are the body's fields: one the hub does not have is a 422 naming it (a
        # path's is a 404). The site's access is checked first: another site is still a 403.
        site_allowed(who, body.site)
        if body.site not in service.sites:
            raise BadRequest("body", "site", "not a site of this hub")
        if (body.site, body.room) not in service.machines:
            raise BadRequest("body", "room", f"no room {body.room!r} at site {body.site!r}")
        now = service.clock.now()
        # A time that has passed: more than 5 minutes ahead of the hub's clock is refused, naming it.
        if body.started_at > now + dt.timedelta(minutes=5):
            raise BadRequest("body", "started_at", "in the future")
        if body.ended_at and body.ended_at > now + dt.timedelta(minutes=5):
            raise BadRequest("body", "ended_at", "in the future")
        if body.ended_at is None:
            with service.lock:
                timed = service.machines[(body.site, body.room)].episode
            if timed is not None:
                # The sensors see a child in the room and time it: one confinement, one episode (two
                # would each raise their duration alerts, and the figures would count it twice).
                raise HTTPException(
                    409,
                    f"room: the sensors are timing an episode in this room now (since "
                    f"{format_ts(timed.started_at)}); its record is that episode's ({timed.id})",
                )
        episode_id = str(uuid.uuid4())
        ep = Episode(
            id=episode_id,
            site=body.site,
            room=body.room,
            number=0,
            started_at=body.started_at,
            ended_at=body.ended_at,
            segments=[Segment(start=body.started_at, end=body.ended_at)],
            manual=True,
            incident_id=str(uuid.uuid4()),
            # No sensor saw it: whether the child was supervised is not known to the system.
            unknown=[UnknownInterval(device="manual", start=body.started_at, end=body.ended_at)],
        )
        batch = Batch(
            episodes={ep.id: ep},
            incidents_opened=[
                {
                    "id": ep.incident_id,
                    "episode_id": ep.id,
                    "site": ep.site,
                    "room": ep.room,
                    "status": "open",
                    "opened_at": now,
                    "updated_at": now,
                }
            ],
            # Entered already over: `awaiting_record` with the deadlines of any ended episode, counted
            # from its end, so a record entered late is late in the figures and reminders too.
            incident_status=[]
            if body.ended_at is None
            else [service.incident_end(ep.site, ep.room, ep.incident_id, body.ended_at, now)],
            notes=[
                {
                    "site": ep.site,
                    "room": ep.room,
                    "episode_id": ep.id,
                    "at": now,
                    "kind": "manual_episode_entered",
                    "detail": {"by": who.name, "reason": body.reason},
                }
            ],
        )
        batch.audits.append(person_entry(who, "manual_episode", "episode", ep.id, now, reason=body.reason))
        store.write(batch, now)  # the episode, its incident and its audit entry: all or nothing
        tell_boards(ep.site, ep.room)
        return episode_json(ep, now)

    @app.post("/api/episodes/{episode_id}/end", tags=["episodes"])
    def end_manual_episode(episode_id: str, body: EpisodeEnd, who: Senior) -> dict[str, Any]:
        """Enter the end of an open manual episode (sensor episodes end by what the sensors show)."""
        # Read, checked and written as one step: two people ending it at once end it once (the other
        # is told it has ended), and a child attached meanwhile is not written over.
        with records.episode_step():
            ep = _end_manual(episode_id, body, who)
        tell_boards(ep.site, ep.room)
        return episode_json(ep, service.clock.now())

    def _end_manual(episode_id: str, body: EpisodeEnd, who: Principal) -> Episode:
        row = store.get_episode(episode_id)
        if row is None:
            raise HTTPException(404, "no such episode")
        site_allowed(who, row.site)
        ep = Episode.model_validate_json(row.data)
        if not ep.manual:
            raise HTTPException(409, "only a manual episode is ended by hand")
        if ep.ended_at is not None:
            raise HTTPException(409, "the episode has already ended")
        if body.ended_at < ep.started_at:
            raise BadRequest("body", "ended_at", "before started_at")
        now = service.clock.now()
        if body.ended_at > now + dt.timedelta(minutes=5):  # as when one is entered: a time that has passed
            raise BadRequest("body", "ended_at", "in the future")
        ep.ended_at = ep.segments[-1].end = body.ended_at
        for gap in ep.unknown:
            gap.end = gap.end or body.ended_at
        batch = Batch(
            episodes={ep.id: ep},
            incident_status=[service.incident_end(ep.site, ep.room, ep.incident_id, body.ended_at, now)],
            notes=[
                {
                    "site": ep.site,
                    "room": ep.room,
                    "episode_id": ep.id,
                    "at": now,
                    "kind": "manual_episode_ended",
                    "detail": {"by": who.name},
                }
            ],
        )
        # What was entered, and the record it moves to `awaiting_record` (with its deadlines).
        batch.audits.append(
            person_entry(
                who,
                "manual_episode_end",
                "episode",
                ep.id,
                now,
                ended_at=format_ts(body.ended_at),
                incident_id=ep.incident_id,
            )
        )
        store.write(batch, now)
        return ep

    @app.get("/api/incidents", tags=["incidents"])
    def incidents(
        who: Staff,
        status_: Annotated[IncidentStatus | None, Query(alias="status")] = None,
        site: Annotated[str | None, Query(max_length=63)] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Incident records, newest first (`status`: one of the record's statuses; another is a 422, not
        an empty list that would read as nothing to do). An empty `site` is no filter."""
        site = site or None
        if site is not None:
            site_allowed(who, site)
        sites = sorted(who.sites) if who.sites is not None else None
        try:
            rows, nxt = store.list_incidents(sites, site, status_, limit, cursor)
        except ValueError as exc:
            raise BadRequest("query", "cursor", "not a cursor this API returned") from exc
        filters = {"site": site, "status": status_, "next_page": True if cursor is not None else None}
        store.audit(_list_read(who, "incidents", site, filters, len(rows), service.clock.now()))
        return {"items": [incident_summary(r) for r in rows], "next": nxt}

    @app.get("/api/alerts", tags=["alerts"])
    def alerts(
        who: Staff,
        state: Annotated[str, Query(pattern="^(active|all)$")] = "active",
        episode_id: Annotated[str | None, Query(max_length=36)] = None,
        room: Annotated[str | None, Query(max_length=63)] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Alerts, newest first: `active` (default) or `all`, for an episode or a room. An empty filter
        (`?episode_id=&room=`, as the contract writes them) is no filter: a filter on "" would answer no
        alerts while a lapse is active."""
        episode_id, room = episode_id or None, room or None
        sites = None if who.sites is None else sorted(who.sites)
        try:
            rows, nxt = store.list_alerts(
                sites, True if state == "active" else None, episode_id, room, limit, cursor
            )
        except ValueError as exc:
            raise BadRequest("query", "cursor", "not a cursor this API returned") from exc
        return {"items": [_alert_body(alert_from_row(r)) for r in rows], "next": nxt}

    def _alert_body(alert: Alert) -> dict[str, Any]:
        return alert_json(alert, service.delivery.room_name(alert.site, alert.room))

    def _alert_row(who: Principal, alert_id: str) -> Alert:
        row = store.get_alert(alert_id)
        if row is None:
            raise HTTPException(404, "no such alert")
        site_allowed(who, row.site)
        return alert_from_row(row)

    @app.get("/api/alerts/{alert_id}", tags=["alerts"])
    def alert(alert_id: str, who: Staff) -> dict[str, Any]:
        """One alert, with every send and every attempt to deliver it (channel labels hold no secret)."""
        found = _alert_row(who, alert_id)
        body = _alert_body(found)
        body["deliveries"] = [
            {
                "id": d.id,
                "number": d.number,
                "tier": d.tier,
                "reason": d.reason,
                "channel": d.channel,
                "recipient": d.recipient,
                "status": d.status,
                "attempts": [
                    {"attempt": a.attempt, "at": format_ts(a.at), "ok": a.ok, "error": a.error}
                    for a in store.delivery_attempts(d.id)
                ],
            }
            for d in store.deliveries(alert_id)
        ]
        return body

    @app.post("/api/alerts/{alert_id}/ack", tags=["alerts"])
    def acknowledge(alert_id: str, request: Request, who: Staff) -> dict[str, Any]:
        """Acknowledge an alert: its escalation stops. Acknowledging again changes nothing."""
        found = _alert_row(who, alert_id)
        via = "api" if request.headers.get("authorization") else "board"
        if found.acknowledged_at is not None:
            return _alert_body(found)
        # Recorded on the ingest thread (also one no room holds any more): of several people
        # acknowledging at once, the first is kept, and the others are told who it was.
        done = service.acknowledge_alert(found.site, found.room, alert_id, who.name, via)
        return _alert_body(done if done is not None else found)

    @app.post("/api/alerts/{alert_id}/resolve", tags=["alerts"])
    def resolve(alert_id: str, body: AlertResolution, who: Senior) -> dict[str, Any]:
        """Resolve an alert by a person, with a note (audited). The same condition will not raise it
        again; a new one will."""
        found = _alert_row(who, alert_id)
        if found.resolved_at is not None:
            raise HTTPException(409, "the alert is already resolved")
        entry = person_entry(who, "resolve_alert", "alert", alert_id, service.clock.now(), note=body.note)
        try:
            # The resolution and its audit entry in one transaction.
            done = service.resolve_alert(found.site, found.room, alert_id, who.name, body.note, entry)
        except AlertError as exc:
            raise HTTPException(409, str(exc)) from exc
        return _alert_body(done)

    @app.post("/api/episodes/{episode_id}/reviews", tags=["episodes"], status_code=201)
    def record_review(episode_id: str, body: ReviewEntry, who: Staff) -> dict[str, Any]:
        """Record a review the policy asks for (its `reviews`); the user comes from the credentials."""
        row = store.get_episode(episode_id)
        if row is None:
            raise HTTPException(404, "no such episode")
        site_allowed(who, row.site)
        records: RecordStore = app.state.records
        record = records.incident(row.incident_id) if row.incident_id else None
        if record is not None and record.status == "closed":
            raise SignedOffReview()
        loaded = service.sites.get(row.site)
        policy = loaded.policies.get(row.room) if loaded is not None else None
        if policy is None:
            raise HTTPException(
                409, f"room {row.room!r} is no longer in the site file: its policy's reviews are unknown"
            )
        names = [r.name for r in policy.reviews]
        if body.name not in names:
            known = ", ".join(names) if names else "none: this room's policy asks for no reviews"
            raise BadRequest("body", "name", f"not a review of this room's policy (reviews: {known})")
        # A change by a person, and a read: the answer shows the whole episode (its child's id too).
        # Written with the review, in one transaction.
        entry = person_entry(who, "review", "episode", episode_id, service.clock.now(), review=body.name)
        try:
            # Held from the check to the review's write (as a child's attach is): a sign-off waits for it.
            with records.unsigned(row.incident_id) if row.incident_id else contextlib.nullcontext():
                try:
                    service.record_review(
                        row.site, row.room, episode_id, body.name, who.name, body.note, entry
                    )
                except RejectedMessage as exc:
                    if exc.reason != NOT_HELD_REVIEW or (row.ended_at is None and not row.manual):
                        raise
                    # An episode the room no longer holds (a newer one has ended since): recorded on
                    # the stored episode, and the room looks at its alerts again (its review resolves).
                    review = ReviewRecord(name=body.name, at=entry.at, by=who.name, note=body.note)
                    records.review_offline(episode_id, review, entry, entry.at)
                    service.reconsider(row.site, row.room, episode_id)
        except SignedOff as exc:
            raise SignedOffReview() from exc
        except RejectedMessage as exc:
            raise HTTPException(409, exc.reason) from exc
        ep = service.episode_now(store.get_episode(episode_id) or row)
        return episode_json(ep, service.clock.now())

    @app.get("/api/dead-letters", tags=["operations"])
    def dead_letters(
        who: Annotated[Principal, Depends(needs("admin"))], limit: Limit = 100, cursor: Cursor = None
    ) -> dict[str, Any]:
        """The rejected messages, newest first, with their reasons, a page at a time. An administrator
        limited to some sites sees those whose topic is of their sites (a topic naming no site of
        theirs, or none at all, only an administrator of every site sees)."""
        prefixes = None
        if who.sites is not None:
            prefixes = [f"{service.topics.root}/{site}/" for site in sorted(who.sites)]
        try:
            rows, nxt = store.dead_letters(limit, cursor, prefixes)
        except ValueError as exc:
            raise BadRequest("query", "cursor", "not a cursor this API returned") from exc
        return {
            "items": [
                {
                    "id": r.id,
                    "received_at": format_ts(r.received_at),
                    "topic": r.topic,
                    "reason": r.reason,
                    "payload_size": r.payload_size,
                    "payload_sha256": r.payload_sha256,
                    "truncated": r.truncated,
                }
                for r in rows
            ],
            "next": nxt,
        }

    service.room_view = room_view
    app.state.records = records = RecordStore(store.engine)
    app.include_router(records_router(service, records))
    app.include_router(record_pages_router(service, records))
    app.include_router(review_router(service, records))
    app.include_router(leaders_router(service, records))
    app.state.live = live = live if live is not None else LiveFeed()
    app.include_router(web_router(service, live, needs("staff")))
    return app
