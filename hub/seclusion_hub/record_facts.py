"""What the hub knows of a record's episode: as it is now, or as it was when the record was signed off.

A signed-off record changes only by dated addenda (semantics 6). Its episode can still change after
the signature: an alert acknowledged late, readings a device replays after an outage that move the
supervised and unknown time. So the sign-off keeps what the hub knew (`IncidentRecord.signed`, written
in the sign-off's own transaction), and the record, its page and its written copy show that from then
on. Whatever the hub has learned since is shown beside it and said plainly, never folded in quietly:
staff then record it as a dated correction.

Records signed off before the hub kept this have no `signed` facts: they show the episode as it is now.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from seclusion_contract import format_ts, format_ts_or_none

from .core.alerts import Alert
from .core.analytics import minutes_down, minutes_up
from .core.episode import Episode, account
from .models import IncidentRecord
from .record_store import RecordStore
from .service import HubService

# The parts of `auto` (the API's name for these facts), as a page says them when they have changed.
CHANGE_WORDS = {
    "started_at": "when it started",
    "ended_at": "when it ended",
    "start_uncertain": "whether the start is known exactly",
    "end_uncertain": "whether the end is known exactly",
    "segments": "when the door was closed and opened",
    "elapsed_minutes": "how long it lasted",
    "duration_minutes": "how long the door was closed",
    "minutes_in_48h_before": "the child's time in the 48 hours before",
    "locked": "whether the door was locked or held",
    "lock_type": "how the door was locked or held",
    "supervision": "how supervision was checked",
    "supervised_minutes": "the time supervised",
    "unsupervised_minutes": "the time without supervision",
    "unknown_minutes": "the time the hub could not know",
    "lapses": "the lapses in supervision",
    "unknown": "the devices' outages",
    "alerts": "the alerts (one acknowledged, ended or raised since)",
    "reviews": "the reviews while the child was in the room",
    "manual": "whether it was entered by hand",
    "test": "whether it was a test",
    "possible_loss": "that some of a device's readings may be missing",
}


# Alerts about the record rather than the episode (a step of the record overdue): they carry the
# episode's id, but they are the record's deadlines (shown with them), and the sign-off itself resolves
# them, which is no news about the episode.
RECORD_KINDS = frozenset({"report_overdue"})


@dataclass(frozen=True)
class Facts:
    """The episode behind a record, its alerts, and the child's confined time in the 48 hours before it
    started (None without a child); `signed_at` is set when these are the facts as signed off."""

    episode: Episode
    alerts: tuple[Alert, ...]
    before_48h_s: float | None
    signed_at: dt.datetime | None = None


@dataclass(frozen=True)
class Shown:
    """What a record shows (`facts`) and, for a signed-off record whose episode has changed since, the
    facts as they are now (`now`) with the names of the parts of `auto` that differ (`changed`)."""

    facts: Facts
    now: Facts | None = None
    changed: tuple[str, ...] = ()


def facts_now(service: HubService, records: RecordStore, row: IncidentRecord) -> Facts | None:
    """The record's episode as the hub has it now (None if the episode is missing)."""
    stored = service.store.get_episode(row.episode_id)
    if stored is None:
        return None
    ep = service.episode_now(stored)
    before_48h: float | None = None
    if row.pupil_id is not None:
        now = service.clock.now()
        window = ep.started_at - dt.timedelta(hours=48)
        before_48h = 0.0
        for other in records.child_episodes(row.pupil_id, window, ep.started_at):
            if other.id == ep.id:
                continue
            other_end = min(other.ended_at or now, ep.started_at)
            before_48h += max(0.0, (other_end - max(other.started_at, window)).total_seconds())
    alerts = [Alert.model_validate_json(a.data) for a in records.alerts_of(ep.id)]
    alerts = [a for a in alerts if a.kind not in RECORD_KINDS]
    alerts.sort(key=lambda a: (a.raised_at, a.id))
    return Facts(ep, tuple(alerts), before_48h)


def snapshot(facts: Facts, at: dt.datetime, copy: dict[str, Any] | None = None) -> dict[str, Any]:
    """The facts as the sign-off keeps them (the `signed` column), with what the parents' copy says from
    the site file (`copy`: parent_mail.site_said), so the signed copy keeps saying it."""
    kept: dict[str, Any] = {
        "at": format_ts(at),
        "episode": facts.episode.model_dump(mode="json"),
        "alerts": [a.model_dump(mode="json") for a in facts.alerts],
        "before_48h_s": facts.before_48h_s,
    }
    if copy is not None:
        kept["copy"] = copy
    return kept


def signed_facts(row: IncidentRecord) -> Facts | None:
    """The facts the record was signed off with, if the hub kept them. `Episode` and `Alert` refuse
    unknown fields: a change that renames or removes a field of theirs migrates `incident.signed` too
    (a field added with a default needs nothing)."""
    kept = row.signed
    if not kept:
        return None
    return Facts(
        Episode.model_validate(kept["episode"]),
        tuple(Alert.model_validate(a) for a in kept["alerts"]),
        kept["before_48h_s"],
        dt.datetime.fromisoformat(kept["at"]),
    )


def shown(service: HubService, records: RecordStore, row: IncidentRecord) -> Shown | None:
    """What the record shows: the facts as signed once it is signed off (when kept), with what has
    changed since; else the facts as they are now. None if the episode is missing."""
    live = facts_now(service, records, row)
    signed = signed_facts(row)
    if signed is None:
        return Shown(live) if live is not None else None
    if live is None:
        return Shown(signed)
    now = service.clock.now()
    then, current = auto_json(signed, now), auto_json(live, now)
    changed = tuple(key for key in then if then[key] != current.get(key))
    return Shown(signed, live, changed) if changed else Shown(signed)


def auto_json(facts: Facts, now: dt.datetime) -> dict[str, Any]:
    """What the hub fills in from the episode (the API's `auto`): times, segments, lock, supervision,
    lapses, unknown time, alerts with who acknowledged them, reviews, and the child's minutes in the
    48 hours before it started (this episode's own time not included)."""
    ep = facts.episode
    end = ep.end_or(now)
    acc = account(ep, end)
    before_48h = facts.before_48h_s
    return {
        "started_at": format_ts(ep.started_at),
        "ended_at": format_ts_or_none(ep.ended_at),
        "start_uncertain": ep.start_uncertain,
        "end_uncertain": ep.end_uncertain,
        "segments": [{"start": format_ts(s.start), "end": format_ts_or_none(s.end)} for s in ep.segments],
        # Minutes to a tenth, as the pages and the parents' copy round: time up (never under-counted),
        # supervised time down (never flattered).
        "elapsed_minutes": minutes_up(ep.elapsed_s(end)),
        "duration_minutes": minutes_up(ep.duration_s(end)),
        "minutes_in_48h_before": minutes_up(before_48h) if before_48h is not None else None,
        "locked": ep.locked,
        "lock_type": ep.lock_type,
        "supervision": ep.supervision,
        "supervised_minutes": minutes_down(acc.supervised_s),
        "unsupervised_minutes": minutes_up(acc.unsupervised_s),
        "unknown_minutes": minutes_up(acc.unknown_s),
        "lapses": [{"start": format_ts(lapse.start), "end": format_ts(lapse.end)} for lapse in acc.lapses],
        "unknown": [
            {"start": format_ts(u.start), "end": format_ts_or_none(u.end), "device": u.device}
            for u in ep.unknown
        ],
        "alerts": [
            {
                "id": a.id,
                "kind": a.kind,
                "severity": a.severity,
                "raised_at": format_ts(a.raised_at),
                "acknowledged_at": format_ts_or_none(a.acknowledged_at),
                "acknowledged_by": a.acknowledged_by,
                "resolved_at": format_ts_or_none(a.resolved_at),
                # Added: when it was due, raised late (4.3), whether it reached anyone (never, when the
                # hub learnt of it only once it was over, or the room was in maintenance), when its
                # condition ended by the devices' clocks (null where they do not tell, or a person
                # resolved it), and who resolved it by hand and why.
                "due_at": format_ts(a.due_at),
                "late": a.late,
                "sent": a.sends > 0,
                "condition_ended_at": format_ts_or_none(a.condition_ended_at),
                "resolved_by": a.resolved_by,  # a person who resolved it by hand, with their reason
                "resolution_note": a.note if a.resolved_by is not None else None,
            }
            for a in facts.alerts
        ],
        "reviews": [{"name": r.name, "at": format_ts(r.at), "by": r.by, "note": r.note} for r in ep.reviews],
        "manual": ep.manual,
        "test": ep.test,
        "possible_loss": ep.possible_loss,
    }
