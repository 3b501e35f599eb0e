"""Second review of the change 05793e1..HEAD: each test states a fault found in it and passes once it is
fixed."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pytest

from seclusion_contract import format_ts
from seclusion_hub.core import incident as workflow
from seclusion_hub.core.alerts import Alert, AlertContext, AlertSend, Escalation, alert_id
from seclusion_hub.core.policy import Policy
from tests.hub.rooms import Room, at
from tests.hub.test_alert_rules import ALL_TIERS, MEDICAL_REVIEW, released_before_the_review
from tests.hub.test_maintenance_service import commands_inline
from tests.hub.test_records import Records

SITE = "test-school"


# --- 1. The hub's clock put back: a review recorded in the step's shadow is never resolved ------------


def test_a_review_recorded_just_after_the_hubs_clock_was_put_back_resolves_its_alert() -> None:
    """`reconcile`'s `went_back` leaves every missing condition unresolved while the clock is behind the
    latest look. A review_due outlives its episode and is judged only while its ended episode is
    `looked_at` (`_looked_at`); the look that records the review drops the episode from `unevaluated`
    (nothing of it is waiting any more). So a review recorded less than the step after an NTP step back
    is never resolved: the alert stays active, escalating to the head, until a senior resolves it by
    hand (semantics 5's table: review_due "resolves when the review is recorded")."""
    # Given a review due after the episode ended, not recorded, looked at up to T0+300
    room = Room(tiers=ALL_TIERS, duration_alerts=[], reviews=MEDICAL_REVIEW, ack_timeout_s=60)
    episode = released_before_the_review(room)
    room.run(300, step=1)
    [review] = room.alerts("review_due", active=True)

    # When NTP steps the hub's clock back 0.7 s and the review is recorded at once
    room.clock.set(at(299.5))
    room.effects.extend(room.machine.record_review(episode, "medical review", "Dr Shah", "seen", at(299.5)))
    # and time goes on well past the step
    room.run(900, step=1)

    # Then the alert has resolved, saying the review was recorded
    [after] = [a for a in room.alerts("review_due") if a.id == review.id]
    assert not after.active, (
        f"review_due still active at T0+900 after the review was recorded at T0+299.5; "
        f"{len(after.escalations)} sends so far, last to {after.escalations[-1].tier}"
    )
    assert after.note == "the review was recorded"


def test_a_lapse_that_ended_after_the_hubs_clock_was_put_back_resolves_and_stops_escalating() -> None:
    """The other side of `went_back`: while the clock is behind the latest look (the whole step, which
    the change's own tests put at ten minutes), no alert whose condition ended is resolved. The observer
    back at the panel (semantics 5: the lapse "resolves when supervised again") leaves the critical lapse
    active, escalating to the DSL and the head, and the room's LED red, for the length of the step."""
    # Given a lapse unacknowledged for a while, escalated every 60 s, looked at up to T0+1000
    room = Room(tiers=ALL_TIERS, ack_timeout_s=60)
    from tests.hub.test_delivery_review import confined_and_unwatched

    confined_and_unwatched(room)
    room.run(1000, step=1)
    [lapse] = room.alerts("supervision_lapse", active=True)
    sends = len(lapse.escalations)

    # When the hub's clock, ten minutes ahead of the devices' all along, is put back to the right time,
    # and the observer is at the panel again at once (T0+401 by the panel's clock and the hub's)
    from tests.hub.rooms import PANEL

    room.send(PANEL, "observer", "present", 401, arrive=401)
    for t in range(402, 600):
        room.tick(t, liveness=False)

    # Then the lapse resolved when the observer came back, and was sent to nobody after
    [after] = [a for a in room.alerts("supervision_lapse") if a.id == lapse.id]
    assert not after.active, (
        f"the lapse is still active 200 s after the observer came back; "
        f"sent {len(after.escalations) - sends} more times since, now to {after.escalations[-1].tier}; "
        f"the LED {room.indicator()[-1].level}"
    )
    assert len(after.escalations) == sends


# --- 2. The send_due cap does not reach a record's report_overdue -----------------------------------


def test_a_report_overdue_escalates_within_its_interval_after_the_hubs_clock_is_put_back() -> None:
    """`send_due` caps `next_send_at` at now + ack_timeout_s so that a clock put back does not hold the
    next escalation back by the step. A record's report_overdue is sent on by `overdue_effects` on a
    COPY of the stored alert, and the copy is only kept when something is sent: the cap is thrown away at
    every look and recomputed from the stored time (set by the clock as it was), so it is always
    now + ack_timeout_s, never due. The escalation waits the whole step (here an hour) after all."""
    ack = 600
    sent = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
    midnight = dt.datetime(2026, 11, 24, 0, 0, tzinfo=dt.UTC)
    due = workflow.ReportDue(
        "inc-1", "ep-1", SITE, "calm-1", due={"record": midnight}, done={"record": False}
    )
    key = "report_overdue/inc-1/record"
    stored = Alert(
        id=alert_id(SITE, "calm-1", key),
        key=key,
        kind="report_overdue",
        severity="warning",
        site=SITE,
        room="calm-1",
        episode_id="ep-1",
        rule="record",
        due_at=midnight,
        raised_at=sent,
        tier="senior",
        escalations=[Escalation(tier="senior", at=sent)],
        sends=1,
        next_send_at=sent + dt.timedelta(seconds=ack),
    )
    ctx = AlertContext(SITE, "calm-1", Policy(ack_timeout_s=ack), frozenset({"senior", "head"}), False)
    known = {stored.id: stored}

    # When the hub's clock is put back an hour just after the send, and the hub looks every minute for
    # twelve minutes (the store gives back the alert as it was stored: nothing was saved)
    stepped = sent - dt.timedelta(hours=1)
    sends: list[AlertSend] = []
    for minute in range(13):
        now = stepped + dt.timedelta(minutes=minute)
        for effect in workflow.overdue_effects([due], known, lambda _s, _r: ctx, now):
            if isinstance(effect, AlertSend):
                sends.append(effect)
            known[effect.alert.id] = effect.alert  # as the store would hold it

    # Then it was escalated within ack_timeout_s of the step (semantics 5.2), as a room's alerts are
    assert [s.reason for s in sends] == ["escalated"], (
        "no escalation of an unacknowledged report_overdue for 12 minutes after the clock went back "
        "(ack_timeout_s 10 minutes)"
    )


# --- 3. refresh_manual: a stale read from one thread overwrites a fresh one from another --------------


def test_a_manual_episode_entered_while_another_thread_refreshes_is_not_lost_from_the_live_rooms(
    api: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`refresh_manual` reads the open hand-entered episodes outside `service.lock` and then replaces
    `manual_open` whole under it. Two API threads at once (a senior ends a manual episode in one room
    while another enters one in calm-1): the one that read first, before calm-1's was written, writes
    last, and calm-1's episode disappears from the live rooms: the board says "Room not in use" about a
    room with a child recorded as confined in it, until the next manual episode is entered or ended."""
    service = api.service
    real = service.store.open_manual_episodes
    slow = threading.Event()
    read_done, go = threading.Event(), threading.Event()

    def open_manual_episodes() -> Any:
        found = real()
        if slow.is_set() and threading.current_thread().name == "slow-refresh":
            read_done.set()
            go.wait(10)
        return found

    monkeypatch.setattr(service.store, "open_manual_episodes", open_manual_episodes)
    slow.set()
    # A refresh (another senior's entry or end elsewhere) has read the table: no manual episode yet
    first = threading.Thread(target=service.refresh_manual, name="slow-refresh")
    first.start()
    assert read_done.wait(10)

    # Meanwhile a senior enters a manual episode in calm-1 (which refreshes in its own thread)
    senior = api.token("senior", SITE)
    made: dict[str, Any] = {}

    def enter() -> None:
        response = api.client.post(
            "/api/episodes",
            json={
                "site": SITE,
                "room": "calm-1",
                "started_at": format_ts(api.clock.now() - dt.timedelta(minutes=5)),
                "reason": "The door sensor is off its bracket; timed by the teacher's watch.",
            },
            headers=senior,
        )
        made["status"], made["body"] = response.status_code, response.json()

    second = threading.Thread(target=enter)
    second.start()
    second.join(2)  # done, or held behind the first refresh (a fix that serialises them)
    go.set()
    first.join(10)
    second.join(10)
    assert made["status"] == 201, made

    # Then the live rooms show calm-1's hand-entered episode
    rooms = {
        r["room"]: r for r in api.client.get("/api/rooms", headers=api.token("staff", SITE)).json()["items"]
    }
    assert rooms["calm-1"]["episode_id"] == made["body"]["id"], (
        "the live rooms lost the manual episode just entered: "
        f"episode_id {rooms['calm-1']['episode_id']!r}, manual_open {service.manual_open!r}"
    )


# --- 4. An escalation taken up after a restart says nobody had acknowledged it by the restart --------


def test_an_escalation_taken_up_after_a_restart_does_not_say_nobody_had_acknowledged_it_by_then(
    tmp_path: Path,
) -> None:
    """notice.py now says "Nobody had acknowledged it by <when decided>", `decided` being the notice's
    `sent_at`. A send taken up after a restart (`Delivery.resume`) is given `sent_at` = the restart, not
    when it was decided (its delivery row's creation): a senior acknowledged at 10:01:30, the hub went
    down, and the escalation decided at 10:01:16 goes out at 10:30 saying "Nobody had acknowledged it by
    10:30:00": false, and the thing the change meant to stop ("a retry reached a senior after a
    colleague had")."""
    import json
    import re

    from seclusion_contract import Topics
    from seclusion_hub.config import load_sites
    from seclusion_hub.core.clock import FakeClock
    from seclusion_hub.ingest import Inbound
    from seclusion_hub.notify import Notice, render_message
    from seclusion_hub.service import HubService
    from seclusion_hub.store import Store
    from tests.support.hub import SITE as HUB_SITE
    from tests.support.hub import two_device_room, write_site

    recipients = [
        {
            "name": "Duty senior",
            "tier": "senior",
            "webhooks": [{"url": "http://127.0.0.1:9/h", "secret": "a-webhook-secret-of-some-length"}],
        }
    ]
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1", lapse_grace_s=5)], recipients=recipients)
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    start = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)  # 10:00 in London

    def service(now: dt.datetime) -> tuple[HubService, list[Notice]]:
        svc = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(now), Topics(), coalesce_s=0)
        svc.ack_message = lambda mid, qos, conn: None
        notices: list[Notice] = []
        svc.delivery.dispatcher.submit = lambda notice, *_a, **_k: notices.append(notice)  # type: ignore[method-assign]

        commands_inline(svc)
        return svc, notices

    def inbound(device: str, seq: int, kind: str, value: str, t: float) -> Inbound:
        when = start + dt.timedelta(seconds=t)
        body = {"v": 1, "id": f"{device}:0:{seq}", "seq": seq, "ts": format_ts(when), "kind": kind}
        payload = json.dumps({**body, "value": value}).encode()
        return Inbound(f"seclusion/v1/{HUB_SITE}/calm-1/{device}/event", payload, when, mid=seq, qos=1)

    try:
        hub, _sent = service(start)
        hub.process(
            [
                inbound("calm-1-panel", 1, "observer", "present", 0),
                inbound("calm-1-door", 1, "occupancy", "occupied", 1),
                inbound("calm-1-door", 2, "door", "closed", 2),
                inbound("calm-1-panel", 2, "observer", "absent", 10),
            ]
        )
        for s in range(11, 77):  # the lapse at 10:00:16 to the room; escalated to the senior at 10:01:16
            hub.clock.set(start + dt.timedelta(seconds=s))  # type: ignore[attr-defined]
            hub.process([])
        book = hub.machines[(HUB_SITE, "calm-1")].state.book
        [lapse] = [a for a in book.alerts.values() if a.kind == "supervision_lapse"]
        assert [e.tier for e in lapse.escalations] == ["room", "senior"]
        # The senior acknowledges it at 10:01:30; the webhook's delivery has not gone out yet
        hub.clock.set(start + dt.timedelta(seconds=90))  # type: ignore[attr-defined]
        hub.acknowledge_alert(HUB_SITE, "calm-1", lapse.id, "Ms Duty", "board")
        assert store.unfinished_deliveries(), "the escalation's delivery is still to do"

        # When the hub is started again at 10:30 and takes the send up
        again, notices = service(start + dt.timedelta(minutes=30))
        again._resume_deliveries()
        [notice] = [n for n in notices if n.reason == "escalated"]
        body = render_message(notice).body
        said = re.search(r"Nobody had acknowledged it by (\d\d):(\d\d):(\d\d)", body)
        assert said is not None, body
        when = start.replace(hour=int(said[1]), minute=int(said[2]), second=int(said[3]))
        assert when < start + dt.timedelta(seconds=90), (
            f"the escalation says nobody had acknowledged it by {said[0][-8:]}, "
            "but Ms Duty acknowledged it at 10:01:30"
        )
    finally:
        store.close()


def test_an_alert_whose_condition_is_gone_resolves_though_the_hubs_clock_was_put_back() -> None:
    """The first version held back every resolution while the clock was behind its latest look: a
    device back online after the hub's clock was put back ten minutes left its critical
    `device_offline` active (and escalating) for the whole step. Its condition is gone both now and at
    the latest look: resolved at once."""
    from tests.hub.rooms import PANEL

    room = Room(tiers=ALL_TIERS, offline_grace_s=20)
    room.observer("present", 0)
    room.occupancy("occupied", 1)
    room.door("closed", 2)
    room.heartbeat(PANEL, 5, {"observer": "present"})
    room.status(PANEL, False, 10)
    room.run(1000, step=1)
    [alert] = room.alerts("device_offline", active=True)
    room.status(PANEL, True, 401, boot="b2", uptime_s=1)  # the clock put back ten minutes; the panel back
    room.tick(402, liveness=False)
    [after] = [a for a in room.alerts("device_offline") if a.id == alert.id]
    assert not after.active and after.resolved_at == at(401)
