"""The leaders' review pages: `/review` (use over time, patterns, supervision, records), `/review/fairness`
(disproportionality), `/review/children/{id}` (one child's episodes) and `/review/incidents` (the list
with filters). Server-rendered; every chart is an inline SVG drawn here with its numbers in a table
beside it, so it reads without sight and without colour. Leaders and admins only, their sites only.

On the leaders' own screen small numbers are shown (they need them to act); the governors' PDF linked
from these pages withholds them (the episodes CSV is one row per episode: the page says it is personal
data). Reading a child's page is audited.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from seclusion_contract import format_ts

from .auth import Principal, principal_for
from .config import LoadedSite
from .core import analytics
from .core import incident as workflow
from .core.analytics import CHARACTERISTICS, EpisodeFact, GroupRate
from .models import AuditEntry, IncidentRecord
from .record_pages import _templates, duration_words, local_date, local_datetime, next_deadline, status_words
from .record_store import RecordStore
from .reports.governors import percent_down
from .reports.parent_copy import MONTHS
from .review import (
    GROUP_WORDS,
    Facts,
    Period,
    gather_facts,
    month_words,
    reading,
    site_pattern_triggers,
    summary_json,
)
from .service import HubService
from .store import decode_cursor, encode_cursor
from .web import PAGE_HEADERS, session_token, static_file

CHARACTERISTIC_WORDS = {
    "sen": "Special educational needs",
    "ehcp": "An education, health and care plan",
    "sex": "Sex",
    "ethnicity": "Ethnicity",
    "fsm": "Free school meals",
    "looked_after": "Looked-after children",
    "age_band": "Age",
}
STATUSES = ("open", "awaiting_record", "recorded", "parent_notified", "reviewed", "closed")
# The incident list's filter, in words (the record pages' longer sentences would not fit a menu).
STATUS_CHOICES = {
    "open": "Episode still going on",
    "awaiting_record": "Record to complete",
    "recorded": "Recorded",
    "parent_notified": "Parents told",
    "reviewed": "Reviewed",
    "closed": "Signed off",
}
PAGE = 50  # records on a page of the incident list


@dataclass
class Bar:
    label: str
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclass
class Chart:
    """A bar chart in a 640 x 220 viewBox, with an optional fitted line."""

    title: str
    bars: list[Bar]
    top: int
    line: str | None = None  # SVG points of the trend line


def bar_chart(title: str, counts: dict[str, int], fitted: list[float | None] | None = None) -> Chart:
    width, height, left, bottom = 640.0, 220.0, 36.0, 30.0
    values = list(counts.values())
    top = math.ceil(max([*values, *(level for level in fitted or [] if level is not None), 1]))
    step = (width - left) / max(len(values), 1)
    bars = []
    for i, (label, value) in enumerate(counts.items()):
        h = (height - bottom - 10) * value / top
        bars.append(Bar(label, value, left + i * step + step * 0.1, height - bottom - h, step * 0.8, h))
    line = None
    if fitted:
        points = []
        for i, level in enumerate(fitted):
            if level is None:  # a partial bucket: left out of the fit
                continue
            y = height - bottom - (height - bottom - 10) * max(level, 0) / top
            points.append(f"{left + i * step + step / 2:.1f},{y:.1f}")
        line = " ".join(points)
    return Chart(title, bars, top, line)


@dataclass
class Whisker:
    """A risk ratio and its interval on a log scale (0.1 to 10) in a 640 x 40 viewBox; an interval
    running past either end is marked as cut there."""

    x: float | None
    low: float | None
    high: float | None
    one: float
    cut_low: bool = False
    cut_high: bool = False


def _log_x(value: float) -> float:
    clamped = min(max(value, 0.1), 10.0)
    return 20 + (math.log10(clamped) + 1) / 2 * 600


def whisker(row: GroupRate) -> Whisker:
    return Whisker(
        x=_log_x(row.risk_ratio) if row.risk_ratio else None,
        low=_log_x(row.ci_low) if row.ci_low else None,
        high=_log_x(row.ci_high) if row.ci_high else None,
        one=_log_x(1.0),
        cut_low=row.ci_low is not None and row.ci_low < 0.1,
        cut_high=row.ci_high is not None and row.ci_high > 10,
    )


def ratio_words(row: GroupRate) -> str:
    """A risk ratio read aloud, with how sure it is."""
    if row.risk_ratio is None:
        return (
            "Cannot be worked out: no other children to compare with, nobody secluded among them, "
            "or an empty group."
        )
    rr = row.risk_ratio
    if rr >= 1.25:
        said = f"about {rr:.1f} times as likely to be secluded as other children"
    elif rr <= 0.8:
        said = f"less likely to be secluded than other children ({rr:.1f} times the rate)"
    else:
        said = "about as likely to be secluded as other children"
    if row.ci_low is None or row.ci_high is None:
        return said.capitalize() + "."
    sure = (
        "the interval does not include 1: unlikely to be chance"
        if row.ci_low > 1 or row.ci_high < 1
        else "the interval includes 1: too few children to be sure"
    )
    return f"{said.capitalize()}; 95 % interval {row.ci_low:.2f} to {row.ci_high:.2f}, {sure}."


def site_room_name(site: LoadedSite, room: str) -> str:
    """A room by the name the school gives it in the site file (its id when it has none, or left)."""
    spec = next((r for r in site.spec.rooms if r.id == room), None)
    return spec.name if spec is not None and spec.name else room


WEEKDAY_WORDS = {
    "mon": "Monday",
    "tue": "Tuesday",
    "wed": "Wednesday",
    "thu": "Thursday",
    "fri": "Friday",
    "sat": "Saturday",
    "sun": "Sunday",
}


def bucket_words(b: dict[str, Any], bucket: str, zone: ZoneInfo) -> str:
    """A week or month of the trend as people write it: "October 2026", "week of 7 Sep 2026" (its
    Monday on the school's clocks), not the API's labels ("2026-10", "2026-W41")."""
    if bucket == "month":
        return month_words(str(b["label"]))
    monday = dt.datetime.fromisoformat(str(b["start"]).replace("Z", "+00:00")).astimezone(zone).date()
    return f"week of {monday.day} {MONTHS[monday.month - 1][:3]} {monday.year}"


def trend_words(summary: dict[str, Any], zone: ZoneInfo) -> str:
    """The trend's verdict in words, saying which weeks or months it rests on: a partial one is left out
    of the fit (its count is of fewer days), and the words say so."""
    trend = summary["trend"]
    bucket = trend["bucket"]
    rel = trend["relative_slope"]
    partial = [bucket_words(b, bucket, zone) for b in trend["buckets"] if b["partial"]]
    whole = len(trend["buckets"]) - len(partial)
    left_out = ""
    if partial:
        left_out = (
            f" {' and '.join(partial)} {'is' if len(partial) == 1 else 'are'} only partly inside the period"
            f" (marked partial) and left out of the trend, which rests on the {whole} whole {bucket}"
            f"{'' if whole == 1 else 's'}."
        )
    if trend["verdict"] == "unknown":
        return f"Too short a period to tell whether use is rising or falling.{left_out}"
    if trend["verdict"] == "flat" or rel is None:
        return f"Use is about level from {bucket} to {bucket}.{left_out}"
    direction = "rising" if trend["verdict"] == "rising" else "falling"
    more = "more" if rel > 0 else "fewer"
    return f"Use is {direction}: about {abs(rel) * 100:.0f} % {more} episodes per {bucket}.{left_out}"


# What a completed record says an episode was, in the child page's words.
CLASS_WORDS = {
    "seclusion": "seclusion",
    "voluntary": "the child's own use of the room",
    "no_child": "no child in the room (a sensor still reported one)",
}
UNRECORDED_WORDS = "not recorded yet: counted as seclusion"
UNREVIEWED_EMPTY_WORDS = (
    "recorded as no child in the room, not yet reviewed by a senior member of staff: counted as seclusion"
)
CORRECTED_WORDS = "what it was is corrected by a dated addendum: counted as seclusion"


def recorded_as(classification: str | None, incident: IncidentRecord | None) -> str:
    """How the child page says what an episode was recorded as (`classification` counts only once it
    is completed, for an empty room once reviewed, and not once an addendum corrects it:
    review.completed_classification)."""
    if classification in CLASS_WORDS:
        return CLASS_WORDS[classification]
    if incident is None or incident.status not in workflow.COMPLETED:
        return UNRECORDED_WORDS
    if workflow.no_child(incident.status, incident.record) and incident.status not in workflow.REVIEWED:
        return UNREVIEWED_EMPTY_WORDS
    return CORRECTED_WORDS


def supervised_percent(supervised_s: float, elapsed_s: float) -> str:
    """A share of time recorded as supervised, rounded down (as the governors' report does): 99.6 %
    after a lapse is 99 %, never 100 %; "-" for no time."""
    if not elapsed_s:
        return "-"
    return f"{percent_down(supervised_s / elapsed_s)} %"


def episode_supervised(e: EpisodeFact) -> str:
    """One episode's supervised share as the child's page says it: as its record page says, not known
    for one entered by hand (no sensor saw it), and with readings that may be missing said beside it."""
    if e.manual:
        return "not known (entered by hand)"
    share = supervised_percent(e.supervised_s, e.elapsed_s)
    return f"{share} (readings may be missing)" if e.possible_loss else share


def share_percent(share: float | None) -> str:
    """A share of the summary (already rounded to 3 decimals, supervised down and the rest up:
    review.share_down, share_up) as a percentage to a tenth: 0.999 is "99.9 %"; "-" for none."""
    return "-" if share is None else f"{share * 100:.1f} %"


def _key(listed: tuple[IncidentRecord, dt.datetime]) -> tuple[dt.datetime, str]:
    """Where a record sits in the incident list (newest first): by its episode's start."""
    row, started = listed
    return started, row.id


def room_name(site: LoadedSite, room: str) -> str:
    spec = site.room(room)
    return spec.name if spec is not None else room


def leaders_router(service: HubService, records: RecordStore) -> APIRouter:
    """The leaders' review pages (mounted by api.create_app)."""
    router = APIRouter()
    env = _templates()

    def signed_in(request: Request) -> Principal | None:
        token = session_token(request)
        return principal_for(service.store, token) if token else None

    def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        body = env.get_template(name).render(**context)
        return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)

    def leader(request: Request) -> Principal | Response:
        who = signed_in(request)
        if who is None:
            return RedirectResponse(
                "/login", status.HTTP_303_SEE_OTHER, headers={"Cache-Control": "no-store"}
            )
        if not who.has_role("leader"):
            return page(
                "leaders/refused.html",
                403,
                title="Leaders only",
                user=who,
                current="review",
                is_leader=False,
            )
        return who

    def site_for(who: Principal, asked: str | None) -> LoadedSite:
        visible = sorted(s for s in service.sites if who.may_see(s))
        if not visible:
            raise HTTPException(403, "no site")
        if asked is None or asked == "":
            return service.sites[visible[0]]
        if asked not in service.sites or not who.may_see(asked):
            raise HTTPException(403, f"no access to site {asked!r}")
        return service.sites[asked]

    def period_for(request: Request, zone: ZoneInfo) -> Period:
        """The form's dates (the site's local days, `to` included), default the last 12 months."""
        now = service.clock.now()
        today = now.astimezone(zone).date()

        def day(name: str, default: dt.date) -> dt.date:
            raw = request.query_params.get(name, "")
            try:
                asked = dt.date.fromisoformat(raw) if raw else default
            except ValueError:
                return default
            # Like a date that is not one: near year 1 or 9999 the arithmetic below overflowed (a 500)
            return asked if 2000 <= asked.year < 2100 else default

        # Default: the last 12 calendar months, this one included (whole months from the 1st).
        back = today.year * 12 + today.month - 1 - 11
        first = day("from", dt.date(back // 12, back % 12 + 1, 1))
        last = day("to", today)
        if last < first:
            first, last = last, first
        start = dt.datetime.combine(first, dt.time(0), zone).astimezone(dt.UTC)
        end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(0), zone).astimezone(dt.UTC)
        return Period(start, end)

    def reviewing(request: Request) -> tuple[Principal, LoadedSite, Period] | Response:
        """The signed-in leader, the site and the period the page's form asks for; or the page that
        sends a stranger to sign in or refuses someone who is not a leader."""
        who = leader(request)
        if not isinstance(who, Principal):
            return who
        try:
            site = site_for(who, request.query_params.get("site"))
        except HTTPException:
            # Another school's review (a link, a bookmark): a page saying so, not the API's JSON.
            visible = sorted(s for s in service.sites if who.may_see(s))
            return page(
                "leaders/refused.html",
                403,
                title="Not one of your schools",
                user=who,
                current="review",
                is_leader=True,
                not_yours=True,
                sites=[service.sites[s].spec.name or s for s in visible],
            )
        return who, site, period_for(request, site.zone)

    def audit_read(who: Principal, target_type: str, target_id: str, **detail: Any) -> None:
        """A person's read of the review, as an audit entry."""
        entry = AuditEntry(
            at=service.clock.now(),
            actor=who.name,
            action="read",
            target_type=target_type,
            target_id=target_id,
            detail={"via": "review_page", **detail},
        )
        records.audit(entry)

    def common(who: Principal, site: LoadedSite, when: Period, request: Request) -> dict[str, Any]:
        zone = site.zone
        return {
            "user": who,
            "current": "review",
            "is_leader": True,
            "site": site,
            # Each school by its name in the menu, its id as the value.
            "sites": sorted(
                ((s, service.sites[s].spec.name or s) for s in service.sites if who.may_see(s)),
                key=lambda pair: pair[1].casefold(),
            ),
            "from_day": when.start.astimezone(zone).date().isoformat(),
            "to_day": (when.end - dt.timedelta(microseconds=1)).astimezone(zone).date().isoformat(),
            "period_words": f"{local_date(when.start, zone)} to "
            f"{local_date(when.end - dt.timedelta(microseconds=1), zone)}",
            "query": urlencode(
                [
                    (k, v)
                    for k, v in (
                        ("site", site.id),
                        ("from", request.query_params.get("from", "")),
                        ("to", request.query_params.get("to", "")),
                    )
                    if v
                ]
            ),
            "export": urlencode({"site": site.id, "from": format_ts(when.start), "to": format_ts(when.end)}),
        }

    @router.get("/static/leaders/leaders.css", include_in_schema=False)
    def style() -> Response:
        """The review pages' style sheet."""
        return static_file("leaders.css", {"leaders.css": "text/css"})

    @router.get("/review", include_in_schema=False)
    def overview(request: Request) -> Response:
        """Use over time against the reduction plan, flags, supervision, records, distributions."""
        chosen = reviewing(request)
        if not isinstance(chosen, tuple):
            return chosen
        who, site, when = chosen
        bucket: Literal["week", "month"] = "week" if request.query_params.get("bucket") == "week" else "month"
        facts: Facts = gather_facts(service, records, site, when)
        summary = summary_json(site, facts, bucket, False, service.clock.now())
        trend = summary["trend"]
        # A week or month only partly inside the period is marked, and has no point on the fitted line
        counts = {
            bucket_words(b, bucket, site.zone) + (" (partial)" if b["partial"] else ""): b["count"]
            for b in trend["buckets"]
        }
        fitted = [b["fitted"] for b in trend["buckets"]] if trend["slope"] is not None else None
        pupils = {p.id: p for p in records.pupils([site.id], site.id)}
        windows = {t.label: t.window_days for p in site.policies.values() for t in p.pattern_triggers}
        flags = []
        for flag in summary["flags"]:
            child = pupils.get(flag["pupil_id"]) if flag["pupil_id"] else None
            started = flag["first_start"]
            began = dt.datetime.fromisoformat(started.replace("Z", "+00:00")) if started else None
            when_words = local_datetime(began, site.zone) if began else None
            flags.append({**flag, "child": child, "when": when_words, "window": windows.get(flag["label"])})
        # Only the flags that name their child on the page (overview.html: patterns) name one here.
        named = sorted({f["child"].id for f in flags if f["child"] is not None and f["kind"] == "pattern"})
        charts = {
            "trend": bar_chart("Episodes per " + bucket, counts, fitted),
            "hour": bar_chart(
                "Episodes by hour of the day", {f"{int(h):02d}": c for h, c in summary["by_hour"].items()}
            ),
            "weekday": bar_chart(
                "Episodes by weekday", {WEEKDAY_WORDS.get(d, d): c for d, c in summary["by_weekday"].items()}
            ),
            "durations": bar_chart("How long episodes lasted", summary["durations"]),
            "period": bar_chart("Episodes by timetable period", summary["by_period"]),
        }
        # The flags name children: whose names were on the screen is part of the read.
        audit_read(who, "review", site.id, children_named=named)
        return page(
            "leaders/overview.html",
            title="Review",
            summary=summary,
            charts=charts,
            flags=flags,
            trend_words=trend_words(summary, site.zone),
            by_room={site_room_name(site, r): n for r, n in summary["by_room"].items()},
            shares={
                name: share_percent(summary["supervision"][f"{name}_share"])
                for name in ("supervised", "unsupervised", "unknown")
            },
            bucket=bucket,
            **common(who, site, when, request),
        )

    @router.get("/review/fairness", include_in_schema=False)
    def fairness(request: Request) -> Response:
        """Disproportionality: each group of each characteristic against the rest of the register."""
        chosen = reviewing(request)
        if not isinstance(chosen, tuple):
            return chosen
        who, site, when = chosen
        facts = gather_facts(service, records, site, when)
        tables = []
        for characteristic in CHARACTERISTICS:
            rows = analytics.disproportionality(
                facts.pupils,
                facts.episodes,
                characteristic,
                start=when.start,
                end=when.end,
                tz=site.zone,
                site=site.id,
            )
            tables.append(
                {
                    "name": characteristic,
                    "words": CHARACTERISTIC_WORDS[characteristic],
                    "rows": [
                        {
                            "group": GROUP_WORDS.get(r.group, r.group),
                            "rate": r,
                            "reading": ratio_words(r),
                            "whisker": whisker(r),
                        }
                        for r in rows
                    ],
                }
            )
        # Groups are shown unsuppressed (one child by ethnicity, care or SEN): the read is audited, as
        # the same figures through the API are.
        audit_read(who, "fairness", site.id)
        return page(
            "leaders/fairness.html",
            title="Fairness",
            tables=tables,
            children=len(facts.pupils),
            **common(who, site, when, request),
        )

    @router.get("/review/children/{pupil_id}", include_in_schema=False)
    def child(request: Request, pupil_id: str) -> Response:
        """One child's episodes in the period and the patterns they make (audited)."""
        who = leader(request)
        if not isinstance(who, Principal):
            return who
        pupil = records.pupil(pupil_id)
        site = service.sites.get(pupil.site) if pupil is not None else None
        # Not found, too, for a child of a school the hub no longer serves (taken out of its site files).
        if pupil is None or site is None or not who.may_see(pupil.site):
            return page("not_found.html", 404, title="Not found", user=who, current="review")
        when = period_for(request, site.zone)
        facts = gather_facts(service, records, site, when)
        # Every timed episode of the child's, each with what its completed record says it was (2.2).
        mine = [e for e in analytics.timed(facts.episodes) if e.pupil_id == pupil.id]
        # The pattern's first and last episode as dates where the school is (an episode at 23:30 UTC in
        # summer began the next day there).
        flags = [
            {
                "count": f.count,
                "label": f.label,
                "first": local_date(f.first_start, site.zone),
                "last": local_date(f.last_start, site.zone),
            }
            for f in analytics.pattern_flags(
                [*facts.earlier, *facts.episodes],
                site_pattern_triggers(site),
                service.clock.now(),
                since=when.start,
            )
            if f.pupil_id == pupil.id and f.first_start is not None and f.last_start is not None
        ]
        audit_read(who, "pupil", pupil.id)
        rows = []
        for e in mine:
            incident = facts.incidents.get(e.id)
            rows.append(
                {
                    "when": local_datetime(e.started_at, site.zone),
                    "room": room_name(site, e.room),
                    "minutes": duration_words(e.elapsed_s),
                    "supervised": episode_supervised(e),
                    "status": status_words(incident) if incident else "",
                    "incident_id": incident.id if incident else None,
                    "recorded_as": recorded_as(e.classification, incident),
                }
            )
        return page(
            "leaders/child.html",
            title=f"{pupil.first_name} {pupil.last_name}",
            pupil=pupil,
            rows=rows,
            voluntary=sum(1 for e in mine if e.voluntary),
            flags=flags,
            **common(who, site, when, request),
        )

    @router.get("/review/incidents", include_in_schema=False)
    def incidents(request: Request) -> Response:
        """The incident list with filters, newest first, 50 a page, paged by the Newer and Older links'
        edges (`before`, `after`: the first and last record shown)."""
        chosen = reviewing(request)
        if not isinstance(chosen, tuple):
            return chosen
        who, site, when = chosen
        q = request.query_params
        chosen_status = q.get("status") if q.get("status") in STATUSES else None
        chosen_room = q.get("room") if site.room(q.get("room") or "") is not None else None
        overdue = q.get("overdue") == "1"
        now = service.clock.now()

        def key(name: str) -> tuple[dt.datetime, str] | None:
            """The page's edge from the address (a cursor the Newer or Older link gave); one that is not
            one is no edge, as a date that is not one is ignored: the first page."""
            raw = q.get(name)
            try:
                return decode_cursor(raw) if raw else None
            except ValueError:
                return None

        def listed(**edge: Any) -> list[tuple[IncidentRecord, dt.datetime]]:
            return records.incidents_page(
                site.id,
                status=chosen_status,
                room=chosen_room,
                start=when.start,
                end=when.end,
                overdue_at=now if overdue else None,
                **edge,
            )

        # A page by its edges (the episode's start, the record's id), never by a count of rows: a
        # record done or opened while a leader pages moves no other record across an edge (an offset
        # hid one, or showed one twice).
        rows: list[tuple[IncidentRecord, dt.datetime]] = []
        newer_edge: tuple[dt.datetime, str] | None = None  # the Newer link's: the first record shown
        older_edge: tuple[dt.datetime, str] | None = None  # the Older link's: the last record shown
        asked_newer = key("before")
        if asked_newer is not None:
            nearest = listed(before=asked_newer, limit=PAGE + 1)
            if len(nearest) > PAGE:  # more still newer: the PAGE records nearest the edge
                rows = nearest[1:]
                newer_edge = _key(rows[0])
                if listed(after=_key(rows[-1]), limit=1):
                    older_edge = _key(rows[-1])
            # else back at the top: the first page, full
        if not rows:
            asked_older = key("after") if asked_newer is None else None
            found = listed(after=asked_older, limit=PAGE + 1)
            rows = found[:PAGE]
            if len(found) > PAGE:
                older_edge = _key(rows[-1])
            # Newer ones above this page (an empty page past records since done: above its edge)
            top = _key(rows[0]) if rows else asked_older
            if top is not None and listed(before=top, limit=1):
                newer_edge = top
        items = []
        for row, started in rows:
            episode = service.store.get_episode(row.episode_id)
            deadline = next_deadline(row, site.zone, now)
            items.append(
                {
                    "id": row.id,
                    "room": room_name(site, row.room),
                    "when": local_datetime(started, site.zone),
                    "minutes": duration_words(reading(episode, service, now).elapsed_s) if episode else "",
                    "status": status_words(row),
                    "deadline": deadline,
                }
            )
        return page(
            "leaders/incidents.html",
            title="Incidents",
            items=items,
            newer=encode_cursor(*newer_edge) if newer_edge is not None else None,
            older=encode_cursor(*older_edge) if older_edge is not None else None,
            statuses=STATUS_CHOICES,
            chosen_status=chosen_status,
            chosen_room=chosen_room,
            overdue=overdue,
            rooms=site.spec.rooms,
            filters=urlencode(
                [
                    (k, v)
                    for k, v in (
                        ("site", site.id),
                        ("from", q.get("from", "")),
                        ("to", q.get("to", "")),
                        ("status", chosen_status or ""),
                        ("room", chosen_room or ""),
                        ("overdue", "1" if overdue else ""),
                    )
                    if v
                ]
            ),
            **common(who, site, when, request),
        )

    return router
