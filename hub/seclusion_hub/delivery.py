"""Carrying out the alerts' effects once they are stored (semantics 5.3): the live board, the room's
indicator, and every notification channel of the tier, all at once; every attempt recorded.

The ingest thread decides and stores; this adapter tells. A send is written as `pending` delivery rows in
the same transaction as the alert change that decided it, so a crash between the commit and the send
loses nothing: at start the hub takes up every delivery not yet done. The outcome of each attempt comes
back to the ingest thread (the database's one writer) as a small command, never blocking the channel.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from seclusion_contract import IndicatorPayload, Topics, dump_payload, format_ts

from .config import LoadedSite
from .core.alerts import TIERS, Alert, AlertSend, IndicatorChanged, SendReason
from .core.clock import Clock
from .core.policy import Tier
from .models import AlertRecord, DeliveryRecord
from .notify import Attempt, Channel, Dispatcher, DispatcherStopped, Notice, Progress, channels_for

log = logging.getLogger(__name__)

LIVE = "live"
INDICATOR = "indicator"
RESOLVED = "the alert was resolved before this notice could be delivered"


class LivePush(Protocol):
    """The live channel to the boards (live.LiveFeed)."""

    @property
    def has_subscribers(self) -> bool: ...

    def publish(self, event: str, data: Mapping[str, Any]) -> int: ...


def alert_json(alert: Alert, room_name: str | None = None) -> dict[str, Any]:
    """An alert as contract section 6 shows it (with a few additions: needs_ack, held, detail)."""

    def ts(value: dt.datetime | None) -> str | None:
        return format_ts(value) if value is not None else None

    return {
        "id": alert.id,
        "kind": alert.kind,
        "severity": alert.severity,
        "site": alert.site,
        "room": alert.room,
        "room_name": room_name,
        "episode_id": alert.episode_id,
        "due_at": format_ts(alert.due_at),
        "raised_at": format_ts(alert.raised_at),
        "late": alert.late,
        "tier": alert.tier,
        "escalations": [{"tier": e.tier, "at": format_ts(e.at)} for e in alert.escalations],
        "acknowledged_at": ts(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_via": alert.acknowledged_via,
        "resolved_at": ts(alert.resolved_at),
        "resolved_by": alert.resolved_by,
        "note": alert.note,
        "condition_ended_at": ts(alert.condition_ended_at),
        "needs_ack": alert.needs_ack,
        "held": alert.held,
        "active": alert.active,
        "rule": alert.rule,
        "detail": alert.detail,
    }


def _tier(name: str) -> Tier:
    return next((t for t in TIERS if t == name), "senior")


def alert_from_row(row: AlertRecord) -> Alert:
    return Alert.model_validate_json(row.data)


@dataclass
class Outbound:
    """What a stored batch asks to be told."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    sends: list[tuple[AlertSend, list[str]]] = field(default_factory=list)  # with their delivery ids
    indicators: dict[tuple[str, str], IndicatorChanged] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.alerts or self.sends or self.indicators)


class AlertDelivery:
    """Tells people about alerts through every channel, and records what happened."""

    def __init__(
        self,
        sites: Mapping[str, LoadedSite],
        topics: Topics,
        clock: Clock,
        *,
        public_url: str = "",
        channels: Mapping[tuple[str, str], list[tuple[str, Channel]]] | None = None,
    ) -> None:
        self.sites = sites
        self.topics = topics
        self.clock = clock
        self.public_url = public_url.rstrip("/")
        # (site, tier) -> [(recipient name, channel)], each channel once per tier.
        self.channels: dict[tuple[str, str], list[tuple[str, Channel]]] = dict(channels or {})
        if channels is None:
            for site in sites.values():
                for recipient in site.spec.recipients:
                    built = channels_for([recipient])
                    known = self.channels.setdefault((site.id, recipient.tier), [])
                    for channel in built:
                        # Channels are equal when their URLs are: each destination is told once per tier.
                        if all(existing != channel for _, existing in known):
                            known.append((recipient.name, channel))
        self.live: LivePush | None = None
        self.publish: Callable[[str, bytes, int, bool], None] = lambda _t, _p, _q, _r: None
        self.connected: Callable[[], bool] = lambda: False
        # Where attempts' outcomes go: to the ingest thread, which writes them (set by the service).
        self.record_rows: Callable[[list[dict[str, Any]], list[dict[str, Any]]], None] = lambda _a, _u: None
        self._room_names = {(s.id, r.id): r.name for s in sites.values() for r in s.spec.rooms}
        self._school_names = {s.id: s.spec.name or s.id for s in sites.values()}
        self.dispatcher = Dispatcher(self._record, clock=clock)

    def tiers(self, site: str) -> frozenset[str]:
        """The tiers of a site that have someone to tell: escalation skips the others (5.2)."""
        return frozenset(tier for (s, tier), found in self.channels.items() if s == site and found)

    def room_name(self, site: str, room: str) -> str:
        return self._room_names.get((site, room), room)

    def school_name(self, site: str) -> str:
        """The school a notice names beside its room on a hub of several schools (its site file's
        `name`, else its id); "" on a hub of one, whose notices name the room alone."""
        if len(self._school_names) < 2:
            return ""
        return self._school_names.get(site) or site

    # -- inside the batch: the rows that make a send survive a crash

    def delivery_rows(self, send: AlertSend, now: dt.datetime) -> list[dict[str, Any]]:
        """One `pending` row per channel this send goes through."""
        alert = send.alert
        base = f"{alert.id}/{send.number}"
        rows = [self._row(f"{base}/{LIVE}", send, LIVE, "the live board", now)]
        if send.reason in ("raised", "late"):
            rows.append(self._row(f"{base}/{INDICATOR}", send, INDICATOR, "the room's indicator", now))
        for i, (recipient, channel) in enumerate(self.channels.get((alert.site, send.tier), [])):
            rows.append(self._row(f"{base}/{i}", send, channel.label, recipient, now))
        return rows

    @staticmethod
    def _row(row_id: str, send: AlertSend, channel: str, recipient: str, now: dt.datetime) -> dict[str, Any]:
        return {
            "id": row_id,
            "alert_id": send.alert.id,
            "number": send.number,
            "tier": send.tier,
            "reason": send.reason,
            "channel": channel[:300],
            "recipient": recipient[:200],
            "status": "pending",
            "attempts": 0,
            "created_at": now,
            "last_attempt_at": None,
            "next_retry_at": None,
            "last_error": None,
        }

    # -- after the commit: tell

    def carry_out(self, out: Outbound, rooms: list[dict[str, Any]]) -> None:
        """Push, publish and notify what a stored batch decided. Never raises: a failing channel is
        recorded and retried, and never holds the others back."""
        # An alert stored resolved: its notices still retrying are dropped (docs/notifications.md).
        self.resolved(out.alerts)
        now = self.clock.now()
        live = self.live
        boards: dict[str, int] = {}  # by alert: the streams of boards allowed to see it that it reached
        if live is not None and live.has_subscribers:
            for view in rooms:
                live.publish("room", view)
            # Every alert sent now is pushed to the boards (a reminder too), so its live row says
            # whether a board of its school had it.
            pushed = dict(out.alerts)
            for send, _rows in out.sends:
                pushed.setdefault(send.alert.id, send.alert)
            for alert in pushed.values():
                data = alert_json(alert, self.room_name(alert.site, alert.room))
                boards[alert.id] = live.publish("alert", data)
        for (site, room), changed in out.indicators.items():
            payload = IndicatorPayload(
                level=changed.level, reason=changed.reason, ts=changed.at, acknowledged=changed.acknowledged
            )
            try:
                self.publish(self.topics.indicator(site, room), dump_payload(payload), 1, True)
            except Exception:
                log.exception("publishing the indicator of %s/%s failed", site, room)
        attempts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for send, row_ids in out.sends:
            for row_id in row_ids:
                if row_id.endswith(f"/{LIVE}"):
                    # Only a board of the alert's school counts: another school's is never sent it.
                    ok = boards.get(send.alert.id, 0) > 0
                    error = None if ok else "no live board was connected"
                    self._outcome(attempts, updates, row_id, 1, now, ok, error, None)
                elif row_id.endswith(f"/{INDICATOR}"):
                    ok = self.connected()
                    error = None if ok else "not connected to the broker: the indicator is sent on reconnect"
                    self._outcome(attempts, updates, row_id, 1, now, ok, error, None)
            self._notify(send)
        if attempts:
            self.record_rows(attempts, updates)

    def _notify(self, send: AlertSend, only: Mapping[int, DeliveryRecord] | None = None) -> bool:
        """Queue the notice on the tier's channels (only those at the places `only` gives, if given,
        each carrying on from its row: its attempts so far and its creation time)."""
        alert = send.alert
        base = f"{alert.id}/{send.number}"
        # Each channel's own delivery row, by its place in the tier: two channels may share a label.
        refs: dict[Channel, str] = {}
        progress: dict[Channel, Progress] = {}
        for i, (_, channel) in enumerate(self.channels.get((alert.site, send.tier), [])):
            if channel in refs:
                continue
            if only is None:
                refs[channel] = f"{base}/{i}"
            elif i in only:
                row = only[i]
                refs[channel] = row.id
                progress[channel] = Progress(row.attempts, row.created_at, row.last_attempt_at)
        if not refs:
            return False
        site = self.sites.get(alert.site)
        # When the send was decided: now, or for one taken up after a restart, when its rows were made
        # (an escalation's words say who had not acknowledged it by then).
        decided = min((p.first_at for p in progress.values()), default=None)
        notice = Notice(
            delivery_id=f"{alert.id}/{send.number}",
            alert_id=alert.id,
            kind=alert.kind,
            severity=alert.severity,
            site=alert.site,
            room=alert.room,
            room_name=self.room_name(alert.site, alert.room),
            tier=send.tier,
            reason=send.reason,
            due_at=alert.due_at,
            raised_at=alert.raised_at,
            late=alert.late,
            link=f"{self.public_url}/#alert-{alert.id}" if self.public_url else None,
            timezone=site.spec.timezone if site is not None else "UTC",
            rule=alert.rule,
            sent_at=decided or self.clock.now(),
            site_name=self.school_name(alert.site),
        )
        try:
            self.dispatcher.submit(notice, list(refs), refs, progress)
        except DispatcherStopped:
            # Decided while the hub stops: its delivery rows are stored `pending`, taken up at the next start.
            log.warning("the hub is stopping: the notice of alert %s is sent when it starts again", alert.id)
            return False
        except Exception:
            log.exception("could not queue the notice of alert %s", alert.id)
            return False
        return True

    def resume(self, pending: list[DeliveryRecord], alerts: Mapping[str, Alert]) -> int:
        """After a restart: send again, through the channels not yet done, what was decided but not
        delivered. Returns how many sends were taken up."""
        groups: dict[tuple[str, int], list[DeliveryRecord]] = {}
        for row in pending:
            groups.setdefault((row.alert_id, row.number), []).append(row)
        attempts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        now = self.clock.now()
        count = 0
        for (alert_id, number), rows in groups.items():
            alert = alerts.get(alert_id)
            open_rows = {row.id: row for row in rows if row.channel not in (LIVE, INDICATOR)}
            for row in rows:
                if row.channel in (LIVE, INDICATOR) or alert is None:
                    # A live push or an indicator is a moment, not a message: it cannot be sent late.
                    # The board and the indicator show the alert's present state on reconnect.
                    reason = "the hub stopped before this was done"
                    self._outcome(attempts, updates, row.id, row.attempts + 1, now, False, reason, None)
            if alert is None:
                continue
            if alert.resolved_at is not None and any(row.attempts > 0 for row in open_rows.values()):
                # Resolved while it was retrying: its retries are dropped, as they are while the hub runs.
                for row in [r for r in open_rows.values() if r.attempts > 0]:
                    self._outcome(
                        attempts,
                        updates,
                        row.id,
                        row.attempts,
                        row.last_attempt_at or now,
                        False,
                        RESOLVED,
                        None,
                        tried=False,
                    )
                    del open_rows[row.id]
            if not open_rows:
                continue
            reason_of: dict[str, SendReason] = {"raised": "raised", "late": "late", "escalated": "escalated"}
            send = AlertSend(alert, _tier(rows[0].tier), reason_of.get(rows[0].reason, "renotify"), number)
            places = self._places(send, list(open_rows.values()), attempts, updates, now)
            if places and self._notify(send, only=places):
                count += 1
        if attempts or updates:
            self.record_rows(attempts, updates)
        return count

    def _places(
        self,
        send: AlertSend,
        rows: list[DeliveryRecord],
        attempts: list[dict[str, Any]],
        updates: list[dict[str, Any]],
        now: dt.datetime,
    ) -> dict[int, DeliveryRecord]:
        """Each unfinished row's channel in the tier as the site file lists it now, found by its
        recipient and its channel's label, not by its old place: recipients may have been added,
        removed or reordered since (by place, a row was sent to somebody else's channel, and a removed
        recipient's send recorded as sent). A row whose recipient and channel are gone from the tier is
        recorded as not sent, with why; it is not left pending for ever."""
        free: dict[tuple[str, str], list[int]] = {}
        by_label: dict[str, list[int]] = {}
        for i, (recipient, channel) in enumerate(self.channels.get((send.alert.site, send.tier), [])):
            free.setdefault((recipient[:200], channel.label[:300]), []).append(i)
            by_label.setdefault(channel.label[:300], []).append(i)
        places: dict[int, DeliveryRecord] = {}
        ordered = sorted(rows, key=lambda r: _place_of(r.id))
        unmatched: list[DeliveryRecord] = []
        for row in ordered:
            found = [i for i in free.get((row.recipient, row.channel), []) if i not in places]
            if found:
                places[found[0]] = row
            else:
                unmatched.append(row)
        for row in unmatched:
            # A destination two recipients of the tier share (a duty phone) is kept once, under the
            # first listed: after a reorder, or with that one removed, it is the same destination.
            same = [i for i in by_label.get(row.channel, []) if i not in places]
            if same:
                places[same[0]] = row
                continue
            reason = "no longer a recipient of this tier in the site file: not sent"
            at = row.last_attempt_at or now
            self._outcome(attempts, updates, row.id, row.attempts, at, False, reason, None, tried=False)
        return places

    def _record(self, attempt: Attempt) -> None:
        """The dispatcher's callback (a channel's worker thread)."""
        row_id = attempt.ref or f"{attempt.delivery_id}/?"
        attempts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        self._outcome(
            attempts,
            updates,
            row_id,
            attempt.attempt,
            attempt.at,
            attempt.ok,
            attempt.error,
            attempt.next_retry_at,
            gave_up=attempt.gave_up,
            tried=attempt.tried,
        )
        if not attempt.ok and attempt.tried:
            log.warning(
                "delivery %s through %s failed (attempt %d): %s",
                attempt.delivery_id,
                attempt.channel,
                attempt.attempt,
                attempt.error,
            )
        self.record_rows(attempts, updates)

    @staticmethod
    def _outcome(
        attempts: list[dict[str, Any]],
        updates: list[dict[str, Any]],
        row_id: str,
        number: int,
        at: dt.datetime,
        ok: bool,
        error: str | None,
        retry_at: dt.datetime | None,
        *,
        gave_up: bool = False,
        tried: bool = True,
    ) -> None:
        """One attempt's row and its delivery's update. Not `tried` (given up unsent): the delivery is
        updated, `failed` with the reason, its attempt count and last attempt as they were; no attempt
        row is added, since nothing was sent."""
        # Both columns hold 500 characters (PostgreSQL refuses more: the batch would stall on it).
        error = (error or None) and str(error)[:500]
        if tried:
            attempts.append({"delivery_id": row_id, "attempt": number, "at": at, "ok": ok, "error": error})
        status = "sent" if ok else ("failed" if gave_up or retry_at is None else "retrying")
        updates.append(
            {
                "delivery_id": row_id,
                "new_status": status,
                "attempt": number,
                "at": at,
                "retry_at": retry_at,
                "error": error,
            }
        )

    def resolved(self, alerts: Mapping[str, Alert]) -> None:
        """Alerts just stored resolved: the retries of their notices are dropped and recorded `failed`
        (RESOLVED). A notice never tried yet keeps its one try. Called by the ingest thread after the
        commit; never waits for a channel."""
        for alert in alerts.values():
            if alert.resolved_at is not None:
                self.dispatcher.drop_retries(alert.id, RESOLVED)

    def stop(self, timeout: float = 5.0) -> None:
        self.dispatcher.stop(timeout)


def _place_of(row_id: str) -> int:
    """A channel row's place in its tier when it was decided (the last part of its id)."""
    last = row_id.rsplit("/", 1)[-1]
    return int(last) if last.isascii() and last.isdigit() else 0
