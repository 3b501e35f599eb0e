"""Review of alert delivery and escalation (semantics 5, docs/alerts.md, docs/notifications.md): each
test states a fault found in review and passes once it is fixed."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seclusion_contract import Topics, format_ts
from seclusion_hub.config import load_sites
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.ingest import Inbound
from seclusion_hub.models import AuditEntry
from seclusion_hub.notify import Notice, render_message
from seclusion_hub.service import HubService
from seclusion_hub.store import Store
from tests.hub.rooms import T0, Room, at
from tests.hub.test_maintenance_service import commands_inline
from tests.support.hub import SITE, two_device_room, write_site
from tests.support.processes import poll
from tests.support.sink import running_sink

ALL_TIERS = frozenset({"room", "senior", "dsl", "head"})
SECRET = "a-webhook-secret-of-some-length"


def confined_and_unwatched(room: Room) -> None:
    """A child in calm-1 with the door closed at T0+2, the observer gone from the panel at T0+10: the
    supervision lapse (grace 15 s) is due at T0+25."""
    room.observer("present", 0)
    room.occupancy("occupied", 1)
    room.door("closed", 2)
    room.observer("absent", 10)


# --- 1. The hub's clock stepped back -------------------------------------------------------------
#
# alerts.md knows the hub's own clock can be put back ("the hub's own clock put back makes every device
# look ahead, and the episodes keep their length"); an NTP step of the hub's clock is an ordinary event.
# A condition not yet due by the (stepped-back) clock is read by `reconcile` as a condition that ended.


def test_a_hub_clock_stepped_back_under_a_second_does_not_resolve_an_active_lapse() -> None:
    # Given a supervision lapse raised at T0+25 (the child still alone, nobody at the panel)
    room = Room(tiers=ALL_TIERS, ack_timeout_s=60)
    confined_and_unwatched(room)
    room.run(25.5)
    [lapse] = room.alerts("supervision_lapse", active=True)
    assert room.indicator()[-1].level == "critical"

    # When NTP steps the hub's clock back 0.7 s, and time then goes on
    room.tick(24.8, liveness=False)
    room.run(200, step=1)

    # Then the lapse is still active ("resolves when supervised again": nobody came back to the panel),
    # it escalated past the room, and the room's LED still shows it
    [after] = [a for a in room.alerts("supervision_lapse") if a.id == lapse.id]
    assert after.active, f"resolved with note {after.note!r} while the child is still unsupervised"
    assert [e.tier for e in after.escalations][:2] == ["room", "senior"]
    assert room.indicator()[-1].level == "critical"


def test_a_hub_clock_stepped_back_does_not_hold_back_the_next_escalation() -> None:
    # Given a lapse unacknowledged for a while, escalated every ack_timeout_s (60 s), last at T0+985
    room = Room(tiers=ALL_TIERS, ack_timeout_s=60)
    confined_and_unwatched(room)
    room.run(1000, step=1)
    [lapse] = room.alerts("supervision_lapse", active=True)
    before = len(lapse.escalations)

    # When the hub's clock is stepped back ten minutes (the lapse still due long before it) and 75 s pass
    for t in range(400, 476):
        room.tick(t, liveness=False)

    # Then it has escalated again: "has none after ack_timeout_s moves to the next tier ... again and
    # again until acknowledged" (semantics 5.2), not ten minutes later when the clock is back where it was
    [lapse] = room.alerts("supervision_lapse", active=True)
    assert len(lapse.escalations) > before, "no escalation for 75 s of an unacknowledged critical alert"


def test_the_service_escalates_on_time_after_its_clock_is_put_back_ten_minutes(tmp_path: Path) -> None:
    """Through the service's own deadlines (the rooms' wake-ups are times by the clock as it was): put
    back ten minutes, the hub still escalates an unacknowledged lapse within `ack_timeout_s`, and the
    lapse stays active throughout."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1", lapse_grace_s=5)])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    clock = FakeClock(T0)
    hub = HubService(load_sites([tmp_path / "site.yaml"]), store, clock, Topics(), coalesce_s=0)
    hub.ack_message = lambda mid, qos, conn: None
    try:
        hub.process(
            [
                _inbound("calm-1-panel", 1, "observer", "present", 0, 1),
                _inbound("calm-1-door", 1, "occupancy", "occupied", 1, 2),
                _inbound("calm-1-door", 2, "door", "closed", 2, 3),
                _inbound("calm-1-panel", 2, "observer", "absent", 10, 4),
            ]
        )
        for s in range(16, 1001):
            clock.set(T0 + dt.timedelta(seconds=s))
            hub.process([])
        machine = hub.machines[(SITE, "calm-1")]

        def lapse() -> Any:
            [found] = [a for a in machine.state.book.alerts.values() if a.kind == "supervision_lapse"]
            return found

        before = len(lapse().escalations)
        for s in range(400, 476):  # put back ten minutes; 75 s pass
            clock.set(T0 + dt.timedelta(seconds=s))
            hub.process([])
        assert lapse().active
        assert len(lapse().escalations) > before, "no escalation for 75 s after the clock was put back"
    finally:
        store.close()


# --- 2. Words that say what is not so -------------------------------------------------------------


def _inbound(device: str, seq: int, kind: str, value: str, t: float, mid: int) -> Inbound:
    when = T0 + dt.timedelta(seconds=t)
    body = {"v": 1, "id": f"{device}:0:{seq}", "seq": seq, "ts": format_ts(when)}
    payload = json.dumps({**body, "kind": kind, "value": value})
    return Inbound(f"seclusion/v1/{SITE}/calm-1/{device}/event", payload.encode(), when, mid=mid, qos=1)


def test_an_escalation_retried_after_it_was_acknowledged_does_not_say_nobody_has_acknowledged_it(
    tmp_path: Path,
) -> None:
    """notifications.md: a notice still retrying once acknowledged is still delivered ("the person may be
    the one about to act on it"); but its words are rendered at each attempt, and they must not tell the
    senior "Nobody has acknowledged it yet." after somebody has."""
    with running_sink(status=500) as hook:
        recipients = [
            {
                "name": "Duty senior",
                "tier": "senior",
                "webhooks": [{"url": f"{hook.url}/hook", "secret": SECRET}],
            }
        ]
        write_site(
            tmp_path / "site.yaml", [two_device_room("calm-1", lapse_grace_s=5)], recipients=recipients
        )
        store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
        clock = FakeClock(T0)
        hub = HubService(load_sites([tmp_path / "site.yaml"]), store, clock, Topics(), linger_s=0)
        hub.process(
            [
                _inbound("calm-1-panel", 1, "observer", "present", 0, 1),
                _inbound("calm-1-door", 1, "occupancy", "occupied", 1, 2),
                _inbound("calm-1-door", 2, "door", "closed", 2, 3),
                _inbound("calm-1-panel", 2, "observer", "absent", 10, 4),
            ]
        )
        hub.start()
        try:

            def lapse_posts() -> list[Any]:
                return [r for r in hook.received() if json.loads(r.body)["kind"] == "supervision_lapse"]

            clock.set(T0 + dt.timedelta(seconds=16))  # the lapse: to the room (nobody listed there)
            [lapse] = poll(lambda: store.active_alerts_of_kind("supervision_lapse"), 10, what="the lapse")
            clock.set(T0 + dt.timedelta(seconds=76))  # escalated to the senior, whose receiver answers 500
            poll(lapse_posts, 10, what="the escalation's first attempt")

            # The senior acknowledges it from the board; the receiver is back; the retry goes out
            hub.acknowledge_alert(SITE, "calm-1", lapse.id, "Ms Duty", "board")
            hook.status = 200
            clock.advance(2)
            hub.delivery.dispatcher.wake()
            retried = poll(lambda: lapse_posts()[1:], 10, what="the escalation's retry")[0]
            body = json.loads(retried.body)["body"]
            assert "Nobody has acknowledged it yet" not in body, body
        finally:
            hub.stop()
            store.close()


@pytest.fixture
def maintenance_service(tmp_path: Path) -> Iterator[tuple[HubService, list[Notice]]]:
    """calm-1 on a site with a senior to tell (a webhook); the notices handed to the dispatcher are kept,
    not sent."""
    recipients = [
        {
            "name": "Duty senior",
            "tier": "senior",
            "webhooks": [{"url": "http://127.0.0.1:9/h", "secret": SECRET}],
        }
    ]
    write_site(
        tmp_path / "site.yaml",
        [two_device_room("calm-1", heartbeat_s=10, offline_grace_s=20)],
        recipients=recipients,
    )
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    svc = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics())
    svc.ack_message = lambda mid, qos, conn: None
    notices: list[Notice] = []
    svc.delivery.dispatcher.submit = lambda notice, *_a, **_k: notices.append(notice)  # type: ignore[method-assign]

    commands_inline(svc)
    for machine in svc.machines.values():
        machine.hub_started(T0)
    yield svc, notices
    store.close()


def test_an_alert_held_in_maintenance_is_not_said_to_have_been_learned_of_late(
    maintenance_service: tuple[HubService, list[Notice]],
) -> None:
    """notifications.md: "(late) when the hub learned of it after it was due (a device that was offline, a
    hub restart)". A device unplugged for cleaning is known of on time, held (alerts.md "Maintenance"),
    and sent when maintenance ends: its words must not say the hub learned of it late."""
    svc, notices = maintenance_service
    audit = AuditEntry(
        at=at(0), actor="Ms Head", action="mode_maintenance", target_type="room", target_id="x"
    )
    svc.set_mode(SITE, "calm-1", at(7200), "cleaning", audit)
    svc.clock.set(at(1))  # type: ignore[attr-defined]
    will = json.dumps({"v": 1, "online": False}).encode()
    svc.process([Inbound(f"seclusion/v1/{SITE}/calm-1/calm-1-door/status", will, at(1), mid=1, qos=1)])
    for t in range(2, 60):  # the hub's wake-ups, each second
        svc.clock.set(at(t))  # type: ignore[attr-defined]
        svc.process([])
    book = svc.machines[(SITE, "calm-1")].state.book
    [held] = [a for a in book.alerts.values() if a.kind == "device_offline" and a.rule == "calm-1-door"]
    assert held.held and not held.late and notices == []  # raised on time (due T0+21), held

    svc.clock.set(at(60))  # type: ignore[attr-defined]
    svc.set_mode(SITE, "calm-1", None, None, audit)
    [notice] = [n for n in notices if n.alert_id == held.id]
    body = render_message(notice).body
    assert "learned of it late" not in body, body


# --- 3. Many alerts at once behind a channel that hangs ------------------------------------------


def test_behind_a_channel_that_hangs_no_notice_is_tried_more_than_the_age_limit_after_it_was_decided() -> (
    None
):
    """notifications.md: a delivery is given up "one hour after the first"; across a restart "its hour
    counts from when the send was decided", and one "more than an hour old ... is not sent" (a stale
    alarm). In the running hub the hour counts from a notice's first attempt instead, so behind a
    destination that hangs (10 s an attempt) the notices of many alerts at once (a 200-room site, every
    room's alert) wait in its queue and are first tried hours after they were decided: with the default
    policy and 400 notices, 340 of them more than an hour late, the last after 3 h 50 min. Shown here with
    an age limit of 60 s and 12 notices."""
    import threading
    import time

    from seclusion_hub.notify import Attempt, DeliveryError, Dispatcher, RetryPolicy

    clock = FakeClock(T0)
    attempts: list[Attempt] = []
    lock = threading.Lock()
    submitted = threading.Event()  # every notice is decided at T0, before the first attempt ends
    # The healthy destination takes every notice at once, before the hanging one's time runs on the
    # shared fake clock (in real time they run side by side; here the clock is the hanging one's).
    healthy_done = threading.Event()
    healthy_sent = [0]

    def record(attempt: Attempt) -> None:
        with lock:
            attempts.append(attempt)

    class Hangs:
        label = "webhook:http://hangs.example#00000000"

        def send(self, notice: Notice) -> None:
            submitted.wait(5)
            healthy_done.wait(10)
            clock.advance(10)  # the attempt's 10 s timeout runs out (on the fake clock)
            raise DeliveryError("timed out after 10 s")

    class Healthy:
        label = "apprise:ntfy://ntfy.example#11111111"

        def send(self, notice: Notice) -> None:
            with lock:
                healthy_sent[0] += 1
                if healthy_sent[0] == 12:
                    healthy_done.set()

    dispatcher = Dispatcher(record, clock=clock, retry=RetryPolicy(max_age_s=60))
    decided: dict[str, dt.datetime] = {}
    hangs, healthy_channel = Hangs(), Healthy()  # one destination each, as a tier's recipients have
    try:
        for i in range(12):
            notice = _notice(f"alert-{i}")
            decided[notice.delivery_id] = clock.now()
            dispatcher.submit(notice, [hangs, healthy_channel])
        submitted.set()
        deadline = time.monotonic() + 20
        while dispatcher.pending() and time.monotonic() < deadline:
            dispatcher.wake()
            time.sleep(0.01)
        assert dispatcher.pending() == 0
    finally:
        dispatcher.stop(1)
    with lock:
        tried = [a for a in attempts if a.tried and a.channel.startswith("webhook:")]
        healthy = [a for a in attempts if a.ok and a.channel.startswith("apprise:")]
    assert len(healthy) == 12  # the healthy channel is not held back (sound)
    stale = [
        (a.delivery_id, a.attempt, (a.at - decided[a.delivery_id]).total_seconds())
        for a in tried
        if (a.at - decided[a.delivery_id]).total_seconds() > 60
    ]
    assert stale == [], f"tried more than the 60 s age limit after the send was decided: {stale}"


def _notice(alert_id: str) -> Notice:
    return Notice(
        delivery_id=f"{alert_id}/1",
        alert_id=alert_id,
        kind="supervision_lapse",
        severity="critical",
        site=SITE,
        room="calm-1",
        room_name="Calm room 1",
        tier="room",
        reason="raised",
        due_at=T0,
        raised_at=T0,
        late=False,
        link=None,
        timezone="Europe/London",
    )
