"""The leaders' review (contract section 6 `/api/reports/...`): figures over a period for one site,
computed by core/analytics.py from the stored episodes, records and register.

What leaves the leaders' screen (the API's JSON unless `suppress=false`, the governors' PDF) has small
numbers suppressed (1 to 4 shown as "fewer than 5"), minutes withheld with their episode count and no
child's flag; the episodes CSV is one row per episode (no names). Every read is audited.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import statistics
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from seclusion_contract import format_ts

from .auth import Principal
from .config import LoadedSite
from .core import analytics
from .core import incident as workflow
from .core.analytics import CHARACTERISTICS, Characteristic, EpisodeFact, PupilFact
from .core.deadlines import local_date
from .core.episode import account
from .core.policy import PatternTrigger, Policy
from .deps import Leader
from .errors import BadRequest
from .models import AuditEntry, EpisodeRecord, IncidentRecord
from .record_store import RecordStore
from .reports import Count, GovernorsReport, render_governors_pdf
from .reports.parent_copy import MONTHS
from .service import HubService

# The columns of the episodes CSV, in order. Add at the end; never rename or reorder (spreadsheets and
# scripts read them by position and by name).
CSV_COLUMNS = (
    "episode_id",
    "site",
    "room",
    "started_at",
    "ended_at",
    "start_uncertain",
    "end_uncertain",
    "elapsed_s",
    "duration_s",
    "supervised_s",
    "unsupervised_s",
    "unknown_s",
    "longest_lapse_s",
    "lapses",
    "locked",
    "manual",
    "test",
    "incident_id",
    "incident_status",
    "classification",
    "pupil_id",
    "record_due_at",
    "recorded_at",
    "parent_notice_due_at",
    "parent_notified_at",
    "parent_copy_due_at",
    "parent_copy_sent_at",
    "parent_copy_withheld_at",
    "reviewed_at",
    "closed_at",
    "counted_as",
    "lapse_alerts",
)


Since = Annotated[dt.datetime | None, Query(alias="from", description="start (default: a year before `to`)")]
Until = Annotated[dt.datetime | None, Query(alias="to", description="end (default: now)")]
SiteQ = Annotated[str | None, Query(max_length=63)]


@dataclass(frozen=True)
class Period:
    start: dt.datetime
    end: dt.datetime


@dataclass
class Facts:
    """Everything the review reads for one site and period."""

    site: LoadedSite
    period: Period
    rows: list[EpisodeRecord]
    incidents: dict[str, IncidentRecord]  # by episode id
    episodes: list[EpisodeFact]
    pupils: list[PupilFact]  # the period's register: the children on roll in it (analytics.on_roll)
    clocks: dict[str, Reading]  # by episode id: an open episode's run to now
    # The episodes of the look-back before the period (the largest `window_days` of the site's pattern
    # triggers): they only complete a pattern across the period's start (`flags`), and count nowhere.
    earlier: list[EpisodeFact] = field(default_factory=list)


def _iso(when: dt.datetime | None) -> str:
    return format_ts(when) if when is not None else ""


def _number(value: float | None, digits: int = 3) -> float | None:
    return round(value, digits) if value is not None else None


def _up(value: float | None, digits: int) -> float | None:
    """A count of lapses per episode, rounded up: one lapse in hundreds of episodes is never 0.0."""
    scale = 10**digits
    return None if value is None else math.ceil(value * scale - 1e-9) / scale


def share_down(share: float | None) -> float | None:
    """A share of time to 3 decimals, rounded down (the time supervised), as the governors' report rounds
    its percentage (reports.governors.percent_down): supervision is never flattered. The small epsilon
    keeps 0.29 (stored as 0.28999...) at 0.29."""
    return None if share is None else math.floor(share * 1000 + 1e-9) / 1000


def share_up(share: float | None) -> float | None:
    """A share of time to 3 decimals, rounded up (the time not supervised, or unknown): one lapse of a
    second in hours of supervision is never rounded away to 0."""
    return None if share is None else math.ceil(share * 1000 - 1e-9) / 1000


def _late(due: dt.datetime | None, done: dt.datetime | None, now: dt.datetime) -> bool:
    """A step done after its deadline, or not done with the deadline passed."""
    if due is None:
        return False
    return (done or now) > due


def review_router(service: HubService, records: RecordStore) -> APIRouter:
    """The `/api/reports/...` endpoints (mounted by api.create_app)."""
    router = APIRouter()

    def site_of(who: Principal, site: str | None) -> LoadedSite:
        visible = [s for s in service.sites if who.may_see(s)]
        if site is None:
            if len(visible) != 1:
                raise BadRequest("query", "site", f"choose a site (one of {', '.join(sorted(visible))})")
            site = visible[0]
        # Whether it is the caller's is asked first: a leader of one school is told no more of a school
        # on the hub than of one that is not (403 either way), as the rest of the API answers.
        if not who.may_see(site):
            raise HTTPException(403, f"no access to site {site!r}")
        if site not in service.sites:
            raise BadRequest("query", "site", "not a site of this hub")
        return service.sites[site]

    def period(start: dt.datetime | None, end: dt.datetime | None) -> Period:
        now = service.clock.now()
        for name, given in (("from", start), ("to", end)):
            if given is not None and given.tzinfo is None:
                raise BadRequest("query", name, "give a time with its offset, e.g. 2026-09-01T00:00:00Z")
            # Near year 1 or 9999 the date arithmetic below overflows (it was a 500)
            if given is not None and not 2000 <= given.year < 2100:
                raise BadRequest("query", name, "must be in the years 2000 to 2099")
        end = end or now
        start = start or end - dt.timedelta(days=365)
        if start >= end:
            raise BadRequest("query", "from", "must be before `to`")
        return Period(start.astimezone(dt.UTC), end.astimezone(dt.UTC))

    def facts(site: LoadedSite, when: Period) -> Facts:
        return gather_facts(service, records, site, when)

    def audited(who: Principal, what: str, site: str, **detail: Any) -> None:
        records.audit(
            AuditEntry(
                at=service.clock.now(),
                actor=who.name,
                action="read",
                target_type=what,
                target_id=site,
                detail=detail,
            )
        )

    def rates(rows: list[analytics.GroupRate]) -> list[dict[str, Any]]:
        return [
            {
                **asdict(r),
                "rate_per_100": _number(r.rate_per_100, 1),
                "rest_rate_per_100": _number(r.rest_rate_per_100, 1),
                "risk_ratio": _number(r.risk_ratio, 2),
                "ci_low": _number(r.ci_low, 2),
                "ci_high": _number(r.ci_high, 2),
            }
            for r in rows
        ]

    @router.get("/api/reports/disproportionality", tags=["reports"])
    def disproportionality(
        who: Leader,
        site: SiteQ = None,
        start: Since = None,
        end: Until = None,
        characteristic: Annotated[Characteristic | None, Query()] = None,
        suppress: bool = True,
    ) -> dict[str, Any]:
        """Rates of seclusion per 100 children for each group against the rest of the register, with
        the risk ratio and its 95 % interval (Katz). Counts of 1 to 4 are withheld unless
        `suppress=false` (the leaders' own screen)."""
        loaded = site_of(who, site)
        f = facts(loaded, period(start, end))
        audited(who, "disproportionality", loaded.id, suppress=suppress)
        chosen = [characteristic] if characteristic is not None else list(CHARACTERISTICS)
        tables = disproportionality_tables(f, chosen, suppress)
        return {
            "site": loaded.id,
            "from": format_ts(f.period.start),
            "to": format_ts(f.period.end),
            "suppressed": suppress,
            "children": len(f.pupils),
            "items": [row for c in chosen for row in rates(tables[c])],
            "next": None,
        }

    @router.get("/api/reports/summary", tags=["reports"])
    def summary(
        who: Leader,
        site: SiteQ = None,
        start: Since = None,
        end: Until = None,
        bucket: Literal["week", "month"] = "week",
        suppress: bool = True,
    ) -> dict[str, Any]:
        """Episodes over time with the trend against the reduction plan, patterns (per child, lengthy,
        rising), by room, staff, group of staff, hour, weekday and timetable period, durations,
        supervision, and late or missing records and parent copies."""
        loaded = site_of(who, site)
        f = facts(loaded, period(start, end))
        audited(who, "summary", loaded.id, suppress=suppress)
        return summary_json(loaded, f, bucket, suppress, service.clock.now())

    @router.get("/api/reports/episodes.csv", tags=["reports"])
    def episodes_csv(who: Leader, site: SiteQ = None, start: Since = None, end: Until = None) -> Response:
        """Episodes and their records, one row each, with stable columns (`CSV_COLUMNS`); no names:
        the child is its register id."""
        loaded = site_of(who, site)
        f = facts(loaded, period(start, end))
        audited(who, "episodes_csv", loaded.id, rows=len(f.rows))
        alerts = {e.id: e.lapse_alerts for e in f.episodes}
        counted_as = {e.id: counted_as_words(e) for e in f.episodes}
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in f.rows:
            i = f.incidents.get(r.id)
            c = f.clocks[r.id]
            writer.writerow(
                [
                    r.id,
                    r.site,
                    r.room,
                    _iso(r.started_at),
                    _iso(r.ended_at),
                    r.start_uncertain,
                    r.end_uncertain,
                    f"{c.elapsed_s:.3f}",
                    f"{c.duration_s:.3f}",
                    f"{c.supervised_s:.3f}",
                    f"{c.unsupervised_s:.3f}",
                    f"{c.unknown_s:.3f}",
                    f"{c.longest_lapse_s:.3f}",
                    c.lapses,
                    r.locked,
                    r.manual,
                    r.test,
                    r.incident_id,
                    i.status if i else "",
                    (i.record.get("classification") or "") if i else "",
                    r.pupil_id or "",
                    _iso(i.record_due_at) if i else "",
                    _iso(i.recorded_at) if i else "",
                    _iso(i.parent_notice_due_at) if i else "",
                    _iso(i.parent_notified_at) if i else "",
                    _iso(i.parent_copy_due_at) if i else "",
                    _iso(i.parent_copy_sent_at) if i else "",
                    _iso(i.parent_copy_withheld_at) if i else "",
                    _iso(i.reviewed_at) if i else "",
                    _iso(i.closed_at) if i else "",
                    counted_as.get(r.id, ""),
                    alerts.get(r.id, 0),
                ]
            )
        # Named by the school's own days: the period's first and last local day (its end is exclusive).
        first = f.period.start.astimezone(loaded.zone)
        last = (f.period.end - dt.timedelta(microseconds=1)).astimezone(loaded.zone)
        name = f"episodes-{loaded.id}-{first:%Y%m%d}-{last:%Y%m%d}.csv"
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
        )

    @router.get("/api/reports/governors.pdf", tags=["reports"])
    def governors_pdf(who: Leader, site: SiteQ = None, start: Since = None, end: Until = None) -> Response:
        """The termly governors' report as PDF: small numbers suppressed, no child named."""
        loaded = site_of(who, site)
        f = facts(loaded, period(start, end))
        audited(who, "governors_report", loaded.id)
        report = governors_report(loaded, f, service.clock.now())
        return Response(
            render_governors_pdf(report),
            media_type="application/pdf",
            headers={
                "Content-Disposition": 'inline; filename="governors-report.pdf"',
                "Cache-Control": "no-store",
            },
        )

    return router


@dataclass(frozen=True)
class Reading:
    """An episode's clocks as the figures read them: an ended episode's as stored, an open one's at now."""

    elapsed_s: float
    duration_s: float
    supervised_s: float
    unsupervised_s: float
    unknown_s: float
    longest_lapse_s: float
    # Every unsupervised interval of the episode's accounting (semantics 3.4: grace included and however
    # short), of which `longest_lapse_s` is the longest
    lapses: int = 0
    # A gap in a device's events may have hidden readings of it (semantics 4.4): its figures may be
    # incomplete, and no page says it was supervised throughout.
    possible_loss: bool = False


def reading(row: EpisodeRecord, service: HubService, now: dt.datetime) -> Reading:
    """The episode's clocks: an ended one's as its row has them; an open one's run to `now`, from the
    episode as its room has it (its row is rewritten only when something about it changes, so its stored
    clocks stand still while the child is still in the room: the figures would under-count). Its lapses
    are those of its accounting (`account(...).lapses`), the stored episode's for an ended one."""
    ep = service.episode_now(row)
    acc = account(ep, now)
    if row.ended_at is not None:
        return Reading(
            row.elapsed_s,
            row.duration_s,
            row.supervised_s,
            row.unsupervised_s,
            row.unknown_s,
            row.longest_lapse_s,
            len(acc.lapses),
            ep.possible_loss,
        )
    return Reading(
        ep.elapsed_s(now),
        ep.duration_s(now),
        acc.supervised_s,
        acc.unsupervised_s,
        acc.unknown_s,
        acc.longest_lapse_s,
        len(acc.lapses),
        ep.possible_loss,
    )


def pattern_lookback(site: LoadedSite) -> dt.timedelta:
    """How far before a period the patterns look: the largest `window_days` of the site's triggers."""
    return dt.timedelta(days=max((t.window_days for t in site_pattern_triggers(site)), default=0))


def gather_facts(service: HubService, records: RecordStore, site: LoadedSite, when: Period) -> Facts:
    """Everything the review reads for one site and period: episodes, their records and staff, lapses
    and the register; and, apart (`earlier`), the episodes of the patterns' look-back before the period.
    An open episode's clocks run to now (`reading`)."""
    now = service.clock.now()
    loaded = records.episodes_between([site.id], when.start - pattern_lookback(site), when.end)
    clocks = {r.id: reading(r, service, now) for r in loaded}
    incidents = {i.episode_id: i for i in records.incidents_for([r.id for r in loaded])}
    staff: dict[str, list[str]] = {}
    for member in records.staff_of([i.id for i in incidents.values()]):
        if member.role == "involved":
            staff.setdefault(member.incident_id, []).append(member.name)
    lapse_alerts = records.lapse_alert_counts([r.id for r in loaded])
    questioned = records.corrected([i.id for i in incidents.values()], "classification")
    facts = [
        EpisodeFact(
            id=r.id,
            site=r.site,
            room=r.room,
            pupil_id=r.pupil_id,
            started_at=r.started_at,
            elapsed_s=clocks[r.id].elapsed_s,
            duration_s=clocks[r.id].duration_s,
            supervised_s=clocks[r.id].supervised_s,
            unsupervised_s=clocks[r.id].unsupervised_s,
            unknown_s=clocks[r.id].unknown_s,
            lapses=clocks[r.id].lapses,
            possible_loss=clocks[r.id].possible_loss,
            lapse_alerts=lapse_alerts.get(r.id, 0),
            locked=r.locked,
            staff=tuple(staff.get(incidents[r.id].id, ())) if r.id in incidents else (),
            test=r.test,
            manual=r.manual,
            classification=completed_classification(incidents.get(r.id), questioned),
            corrected=corrected(incidents.get(r.id), questioned),
        )
        for r in loaded
    ]
    rows = [r for r in loaded if r.started_at >= when.start]
    episodes = [e for e in facts if e.started_at >= when.start]
    earlier = [e for e in facts if e.started_at < when.start]
    clocks = {r.id: clocks[r.id] for r in rows}
    incidents = {r.id: incidents[r.id] for r in rows if r.id in incidents}
    register = [
        PupilFact(
            id=p.id,
            site=p.site,
            date_of_birth=p.date_of_birth,
            groups={
                "sen": None if p.sen == "unknown" else p.sen,
                "sex": p.sex,
                "ethnicity": p.ethnicity,
                "fsm": p.fsm,
                "looked_after": p.looked_after,
            },
            joined_on=p.joined_on,
            left_on=p.left_on,
        )
        for p in records.pupils([site.id], site.id)
    ]
    # The period's register: a leaver is not a child of every later term (their rates' denominators).
    pupils = analytics.on_roll(register, episodes, start=when.start, end=when.end, tz=site.zone)
    return Facts(site, when, rows, incidents, episodes, pupils, clocks, earlier)


def counted_as_words(e: EpisodeFact) -> str:
    """How the figures count an episode (the CSV's `counted_as`)."""
    if e.test:
        return "test"
    return e.classification if e.classification in ("voluntary", "no_child") else "seclusion"


def completed_classification(
    incident: IncidentRecord | None, questioned: Collection[str] = frozenset()
) -> str | None:
    """What a completed record says the episode was ("seclusion", "voluntary", "no_child"); None
    without one: a classification moves an episode out of the seclusion figures only once its record
    is completed, never while it is a draft that anyone may still change (never under-count). An empty
    room moves it only once a senior member of staff has reviewed the record, since it takes the
    episode out of every figure about children. A record whose classification a dated addendum
    corrects (`questioned`: once reviewed, that is the only way to correct it) counts as seclusion
    again, whatever the addendum's words say: the figures never under-count."""
    if incident is None or incident.status not in workflow.COMPLETED or incident.id in questioned:
        return None
    value = incident.record.get("classification")
    if value == "no_child" and incident.status not in workflow.REVIEWED:
        return None
    return value if isinstance(value, str) else None


def corrected(incident: IncidentRecord | None, questioned: Collection[str]) -> bool:
    """A completed record whose classification a dated addendum corrects (`questioned`): its episode
    counts as seclusion (`completed_classification`), but it waits for no completed record."""
    return incident is not None and incident.status in workflow.COMPLETED and incident.id in questioned


def records_timeliness(f: Facts, now: dt.datetime) -> dict[str, int]:
    """Records and parent copies done late or not done with their deadline passed: every timed episode
    (voluntary use has its record and its parents' copy too), test episodes out; a record of no child in
    the room has no parents to tell once a senior member of staff has reviewed it (until then, or once
    an addendum corrects it, its parents' deadlines count as for any record: as its episode counts)."""
    timed = analytics.timed(f.episodes)
    incidents = [f.incidents[e.id] for e in timed if e.id in f.incidents]
    with_parents = [f.incidents[e.id] for e in timed if e.id in f.incidents and not e.no_child]
    parents = [(i, i.parent_copy_sent_at or i.parent_copy_withheld_at) for i in with_parents]
    return {
        "records_late": sum(1 for i in incidents if _late(i.record_due_at, i.recorded_at, now)),
        "records_missing": sum(
            1
            for i in incidents
            if i.recorded_at is None and i.record_due_at is not None and i.record_due_at < now
        ),
        "parent_notices_late": sum(
            1 for i, _ in parents if _late(i.parent_notice_due_at, i.parent_notified_at, now)
        ),
        "parent_copies_late": sum(1 for i, done in parents if _late(i.parent_copy_due_at, done, now)),
        "parent_copies_missing": sum(
            1
            for i, done in parents
            if done is None and i.parent_copy_due_at is not None and i.parent_copy_due_at < now
        ),
    }


# Characteristics suppressed together (`ehcp` is derived from `sen`: one table's withheld count would
# be a difference of the other's shown ones)
LINKED: tuple[Characteristic, Characteristic] = ("sen", "ehcp")


def disproportionality_tables(
    f: Facts, chosen: Collection[Characteristic], suppress: bool
) -> dict[Characteristic, list[analytics.GroupRate]]:
    """Each chosen characteristic's rows (`analytics.disproportionality`). Suppressed, `sen` and `ehcp`
    are suppressed together (`analytics.suppress_linked`) whichever of them is asked for, so that asking
    for one and then the other gives no more than asking for both; every other one on its own."""

    def rows(characteristic: Characteristic) -> list[analytics.GroupRate]:
        return analytics.disproportionality(
            f.pupils,
            f.episodes,
            characteristic,
            start=f.period.start,
            end=f.period.end,
            tz=f.site.zone,
            site=f.site.id,
        )

    tables = {c: rows(c) for c in chosen}
    if not suppress:
        return tables
    tables = {c: analytics.suppress(table) for c, table in tables.items() if c not in LINKED}
    if any(c in LINKED for c in chosen):
        first, second = LINKED
        on = local_date(f.period.start, f.site.zone)
        links = analytics.shared_groups(f.pupils, first, second, on=on, site=f.site.id)
        tables[first], tables[second] = analytics.suppress_linked(rows(first), rows(second), links)
    return {c: tables[c] for c in chosen}


def _small(count: int, suppress: bool) -> int | None:
    """One count as it leaves the screen: None when `suppress` and it is 1 to 4."""
    return None if suppress and analytics.is_small(count) else count


def _counts(values: dict[Any, int], suppress: bool) -> dict[str, int | None]:
    shown = {str(k): v for k, v in values.items()}
    return dict(analytics.suppress_counts(shown)) if suppress else dict(shown)


def site_lengthy_after_s(site: LoadedSite, rooms: Iterable[str] = ()) -> dict[str, float]:
    """Each room's first duration alert (the earliest, in whatever order its policy lists them; a room's
    overrides may set their own): past it an episode is flagged `lengthy`. A flag is never lost because
    another room's policy says less.

    Each of `rooms` the site file no longer has (a room taken out: its episodes still count) gets the
    lowest first duration alert of the site's rooms, or where none has one the profile's (the built-in
    default where the profile has none either): such a room never goes without a threshold."""
    limits = {
        room: min(rule.after_s for rule in policy.duration_alerts)
        for room, policy in site.policies.items()
        if policy.duration_alerts
    }
    gone = [room for room in rooms if room not in site.policies]
    if gone:
        fallback = min(
            limits.values(),
            default=min(rule.after_s for rule in (site.profile.duration_alerts or Policy().duration_alerts)),
        )
        limits |= dict.fromkeys(gone, fallback)
    return limits


def site_pattern_triggers(site: LoadedSite) -> list[PatternTrigger]:
    """Every pattern trigger of the site's rooms' policies, each once (a child's pattern spans rooms)."""
    triggers: list[PatternTrigger] = []
    for policy in site.policies.values():
        triggers.extend(t for t in policy.pattern_triggers if t not in triggers)
    return triggers


def summary_json(
    site: LoadedSite, f: Facts, bucket: Literal["week", "month"], suppress: bool, now: dt.datetime
) -> dict[str, Any]:
    """The summary's JSON (also what the leaders' pages draw)."""
    zone = site.zone
    shown = analytics.counted(f.episodes)
    trend = analytics.trend(
        f.episodes,
        start=f.period.start,
        end=f.period.end,
        bucket=bucket,
        tz=zone,
        target_reduction_pct=site.spec.reduction_target_pct,
        now=now,  # the month or week going on is partial, and those to come are not counted as 0
    )
    flags = analytics.pattern_flags(
        [*f.earlier, *f.episodes],
        site_pattern_triggers(site),
        now,
        lengthy_after_s=site_lengthy_after_s(site, {e.room for e in f.episodes}),
        trend=trend,
        since=f.period.start,
    )
    compliance = analytics.supervision_compliance(f.episodes)
    seconds = [e.elapsed_s for e in shown]
    classes = analytics.classes(f.episodes)
    split = _counts(
        {"seclusion": classes.seclusion, "voluntary": classes.voluntary, "no_child": classes.no_child},
        suppress,
    )
    unclassified, corrected_ = classes.unclassified, classes.corrected
    with_lapse = classes.voluntary_with_lapse
    children = len({e.pupil_id for e in shown if e.pupil_id is not None})
    episodes = _small(len(shown), suppress)
    lapses = _small(compliance.lapses, suppress)
    # A bucket's count of 1 to 4 is withheld (with another, as in any table of counts); the fitted line
    # and its slope could then work it back (they rest on the counts' sum and weighted sum): withheld too.
    counts = _counts({b.label: b.count for b in trend.buckets}, suppress)
    line_withheld = None in counts.values()
    return {
        "site": site.id,
        "from": format_ts(f.period.start),
        "to": format_ts(f.period.end),
        "suppressed": suppress,
        "episodes": episodes,
        "children": _small(children, suppress),
        "episodes_without_child": _small(sum(1 for e in shown if e.pupil_id is None), suppress),
        # Semantics 2.2: each class apart. Every other figure here is about `seclusion`, which includes
        # the episodes whose record is not completed yet (`unclassified`) and those whose completed
        # record's classification an addendum corrects (`corrected`).
        "classes": {
            **split,
            "unclassified": _small(unclassified, suppress),
            # Of `seclusion` too: completed records whose classification an addendum corrects
            "corrected": _small(corrected_, suppress),
            # Minutes go with their count: shown only where the count is (0 minutes would tell a
            # suppressed count of 0 from one of 1 to 4).
            "voluntary_minutes": None if split["voluntary"] is None else classes.voluntary_minutes,
            "voluntary_with_lapse": _small(with_lapse, suppress),
            "no_child_minutes": None if split["no_child"] is None else classes.no_child_minutes,
        },
        # Minutes go with their count: with 1 to 4 episodes, their total, median and longest give
        # each child's time away (and, with one episode, the count too).
        "minutes": {
            # Up, never down: time is never under-counted.
            "total": None if episodes is None else analytics.minutes_up(sum(seconds)),
            "median": analytics.minutes_up(statistics.median(seconds))
            if seconds and episodes is not None
            else None,
            "longest": analytics.minutes_up(max(seconds)) if seconds and episodes is not None else None,
        },
        "trend": {
            "bucket": trend.bucket,
            "verdict": trend.verdict,
            "slope": None if line_withheld else _number(trend.slope),
            "relative_slope": None if line_withheld else _number(trend.relative_slope),
            "target_reduction_pct": trend.target_reduction_pct,
            "target_verdict": trend.target_verdict,
            "buckets": [
                {
                    "label": b.label,
                    "start": format_ts(b.start),
                    "count": counts[b.label],
                    # partly outside the period: fewer days counted, left out of the fit (None)
                    "partial": b.partial,
                    "fitted": None if line_withheld else _number(level),
                }
                for b, level in zip(trend.buckets, trend.fitted or [None] * len(trend.buckets), strict=True)
            ],
        },
        # (Unsuppressed, no count is withheld, nor the trend line.)
        "flags": _flags_suppressed(flags, line_withheld) if suppress else [_flag_json(fl) for fl in flags],
        "by_room": _counts(analytics.by_room(shown, (r.id for r in site.spec.rooms)), suppress),
        "by_staff": _counts(analytics.by_staff(shown), suppress),
        "by_staff_group": _counts(analytics.by_staff_group(shown, site.spec.staff_groups), suppress),
        "by_hour": _counts(analytics.by_hour(shown, zone), suppress),
        "by_weekday": _counts(analytics.by_weekday(shown, zone), suppress),
        "by_period": _counts(analytics.by_period(shown, site.spec.timetable, zone), suppress),
        "durations": _counts(analytics.duration_histogram(shown), suppress),
        "supervision": {
            # Supervised rounded down, not supervised and unknown up: a lapse is never rounded away (the
            # three may add up to a little more than 1).
            "supervised_share": share_down(compliance.supervised_share),
            "unsupervised_share": share_up(compliance.unsupervised_share),
            "unknown_share": share_up(compliance.unknown_share),
            "lapses": lapses,
            # lapses / episodes: withheld with either count
            "lapses_per_episode": None
            if lapses is None or episodes is None
            else _up(compliance.lapses_per_episode, 2),
            "episodes_with_lapse": _small(compliance.episodes_with_lapse, suppress),
        },
        "records": {k: _small(v, suppress) for k, v in records_timeliness(f, now).items()},
    }


def _flag_json(fl: analytics.Flag) -> dict[str, Any]:
    return {
        "kind": fl.kind,
        "label": fl.label,
        "pupil_id": fl.pupil_id,
        "count": fl.count,
        "episode_ids": list(fl.episode_ids),
        "first_start": _iso(fl.first_start) or None,
        "last_start": _iso(fl.last_start) or None,
    }


def _flags_suppressed(flags: list[analytics.Flag], line_withheld: bool) -> list[dict[str, Any]]:
    """The flags as they leave the screen: none names a child or an episode (a child's flag would show
    their register id, their episodes and when, and a list's length is a count), but one line per
    pattern trigger with the children it flags, and one with the lengthy episodes, each count withheld
    from 1 to 4 like the others; `rising` as it is ("rising: +40% of the mean per week" is the trend
    line's relative slope: just "rising" when the line is withheld)."""
    out: list[dict[str, Any]] = []
    blank: dict[str, Any] = {
        "pupil_id": None,
        "count": None,
        "episode_ids": [],
        "first_start": None,
        "last_start": None,
    }
    children: dict[str, set[str | None]] = {}
    lengthy: list[analytics.Flag] = []
    for fl in flags:
        if fl.kind == "pattern":
            children.setdefault(fl.label, set()).add(fl.pupil_id)
        elif fl.kind == "lengthy":
            lengthy.append(fl)
    for label, kids in children.items():
        out.append({"kind": "pattern", "label": label, **blank, "children": _small(len(kids), True)})
    if lengthy:
        label = lengthy[0].label
        out.append({"kind": "lengthy", "label": label, **blank, "episodes": _small(len(lengthy), True)})
    rising = [fl for fl in flags if fl.kind == "rising"]
    out.extend(_flag_json(fl) | {"label": "rising" if line_withheld else fl.label} for fl in rising)
    return out


# A group of children in words (the register's codes are the school's systems', not people's).
GROUP_WORDS = {
    "sen_support": "SEN support",
    "ehcp": "an EHC plan",
    "none": "no SEN",
    "yes": "yes",
    "no": "no",
    "unknown": "not recorded",
}


def month_words(label: str) -> str:
    """A month bucket's label ("2026-10") as people write it: "October 2026"."""
    year, month = label.split("-")
    return f"{MONTHS[int(month) - 1]} {year}"  # in English whatever the server's locale


def governors_report(site: LoadedSite, f: Facts, now: dt.datetime) -> GovernorsReport:
    """The governors' report's figures, small numbers withheld."""
    shown = analytics.counted(f.episodes)
    seconds = [e.elapsed_s for e in shown]
    compliance = analytics.supervision_compliance(f.episodes)
    trend = analytics.trend(
        f.episodes, start=f.period.start, end=f.period.end, bucket="month", tz=site.zone, now=now
    )
    months = analytics.suppress_counts({b.label: b.count for b in trend.buckets})
    partial = {b.label for b in trend.buckets if b.partial}  # marked: its count is of fewer days
    rooms = analytics.suppress_counts(analytics.by_room(shown, (r.id for r in site.spec.rooms)))
    room_names = {r.id: r.name or r.id for r in site.spec.rooms}
    sen = disproportionality_tables(f, ["sen"], True)["sen"]  # with `ehcp`, which the API may give
    timeliness = records_timeliness(f, now)
    children = len({e.pupil_id for e in shown if e.pupil_id is not None})
    episodes = _small(len(shown), True)
    classes = analytics.classes(f.episodes)
    voluntary, no_child = classes.voluntary, classes.no_child
    return GovernorsReport(
        school_name=site.spec.name or site.id,
        period_start=f.period.start.astimezone(site.zone).date(),
        period_end=(f.period.end - dt.timedelta(microseconds=1)).astimezone(site.zone).date(),
        episodes=episodes,
        children=_small(children, True),
        # Minutes go with their count (as in the suppressed summary)
        # Up, never down (the report rounds up again to whole minutes): time is never under-counted.
        total_minutes=None if episodes is None else analytics.minutes_up(sum(seconds)),
        median_minutes=analytics.minutes_up(statistics.median(seconds))
        if seconds and episodes is not None
        else None,
        supervised_share=compliance.supervised_share,
        lapses=_small(compliance.lapses, True),
        records_late=_small(timeliness["records_late"], True),
        parent_copies_late=_small(timeliness["parent_copies_late"], True),
        voluntary=_small(voluntary, True),
        no_child=_small(no_child, True),
        trend=[Count(month_words(label), count, label in partial) for label, count in months.items()],
        by_room=[Count(room_names.get(room, room), count) for room, count in rooms.items()],
        by_group=[Count(f"SEN: {GROUP_WORDS.get(r.group, r.group)}", r.k) for r in sen],
        # Up: the time the system could not tell is never rounded away (semantics 4: say so plainly).
        unknown_share=share_up(compliance.unknown_share),
        generated_at=now,
        site_timezone=site.spec.timezone,
    )
