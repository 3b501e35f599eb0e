"""Races between the hub's threads (a concurrency review): each test puts two threads in one exact
order with events and barriers (never by hoping for timing), and fails while the race is there.

- Two seniors end the same hand-entered episode at once: both are told it ended, both are audited,
  and the episode keeps one end while its record's deadlines count from the other.
- A child attached to a hand-entered episode while its end is being entered: the end, written from
  the row read before, takes the child off the episode again.
- A hand-entered episode entered while the ingest thread is between working out a room's look and
  pushing it to the boards: the boards get the older look last, and show "not in use" about a room
  with a child recorded as confined in it.
- A notice's failed attempt reported after its alert was resolved and its retry dropped: the delivery
  is left `retrying` for a retry that will never come.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

from sqlmodel import select

from seclusion_contract import Topics, format_ts
from seclusion_hub.config import load_sites
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.delivery import AlertDelivery
from seclusion_hub.models import AuditEntry, EpisodeRecord, IncidentRecord
from seclusion_hub.notify import Attempt, Channel, DeliveryError, Notice
from seclusion_hub.service import HubService
from seclusion_hub.store import Store
from tests.hub.test_api import T0
from tests.hub.test_record_truths import enter_episode
from tests.hub.test_records import Records
from tests.hub.test_service import inbound, left_unwatched
from tests.support.hub import SITE, two_device_room, write_site
from tests.support.processes import poll

WAIT = 10.0  # seconds any one step may take before the test says it is stuck (never reached when well)
# How long a paused thread waits for the other before going on alone: reached only once the race is
# fixed (the other thread then waits for this one, so the two can no longer meet in the window).
ALONE = 2.0


def _open_manual_episode(api: Records, room: str = "calm-1") -> dict[str, Any]:
    return enter_episode(api, T0 - dt.timedelta(minutes=10), room=room)


def _audits(api: Records, action: str) -> list[AuditEntry]:
    with api.store.session() as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.action == action)).all())


# -- ending a hand-entered episode: read, checked, written, with nothing held in between -----------------


def test_two_seniors_ending_the_same_hand_entered_episode_at_once_end_it_once(api: Records) -> None:
    """`POST /api/episodes/{id}/end` reads the row, checks it has not ended, and writes it back, with
    nothing held from the check to the write. Two seniors entering the end at once (one says 10:02,
    the other 10:05) both pass the check: both are told it ended at their time, two `manual_episode_end`
    entries are audited, the episode keeps the last writer's end, and its record's deadlines count from
    the first (the incident's end is written only while it is `open`). Once ended, an end must be
    refused (409), as it is when the two come one after the other."""
    ep = _open_manual_episode(api)
    senior = api.token("senior", SITE)
    both_read = threading.Barrier(2, timeout=ALONE)
    real_get = api.store.get_episode

    def get_then_wait(episode_id: str) -> Any:
        row = real_get(episode_id)
        try:
            both_read.wait()  # each request has read the episode open before either writes
        except threading.BrokenBarrierError:
            pass  # the other waits for this one to finish (the race fixed): go on alone
        return row

    api.store.get_episode = get_then_wait  # type: ignore[method-assign]
    answers: dict[str, Any] = {}

    def end(at: dt.datetime) -> None:
        answers[format_ts(at)] = api.client.post(
            f"/api/episodes/{ep['id']}/end", json={"ended_at": format_ts(at)}, headers=senior
        )

    ends = [T0 - dt.timedelta(minutes=8), T0 - dt.timedelta(minutes=5)]
    threads = [threading.Thread(target=end, args=(at,)) for at in ends]
    for th in threads:
        th.start()
    for th in threads:
        th.join(WAIT)
    api.store.get_episode = real_get  # type: ignore[method-assign]

    codes = sorted(r.status_code for r in answers.values())
    row = api.store.get_episode(ep["id"])
    assert row is not None and row.ended_at is not None
    with api.store.session() as s:
        incident = s.get(IncidentRecord, ep["incident_id"])
    assert incident is not None
    logged = _audits(api, "manual_episode_end")
    assert codes == [200, 409] and len(logged) == 1, (
        f"both ends were taken ({codes}), audited {len(logged)} times; the episode ended at "
        f"{format_ts(row.ended_at)}, its record counts from {format_ts(incident.ended_at)}"
        if incident.ended_at
        else f"both ends were taken ({codes}), audited {len(logged)} times"
    )


def test_a_child_attached_while_a_hand_entered_episodes_end_is_entered_stays_attached(
    api: Records,
) -> None:
    """The end is written from the row as read before (`store.write` puts the whole row back); a child
    attached in between (`attach_pupil_offline`: no room holds a hand-entered episode) is on the
    incident but taken off the episode again: the episode's `pupil_id` is null, so the child's
    page and the leaders' figures (which read the episode) never count this confinement."""
    ep = _open_manual_episode(api)
    api.service.start()  # attaching a child asks the ingest thread first (is it a room's episode?)
    senior = api.token("senior", SITE)
    staff = api.token("staff", SITE)
    pupil = api.client.post(
        "/api/pupils", json={"site": SITE, "first_name": "Sam", "last_name": "Jones"}, headers=senior
    ).json()

    read = threading.Event()
    go = threading.Event()
    real_get = api.store.get_episode
    first = [True]

    def get_then_wait(episode_id: str) -> Any:
        row = real_get(episode_id)
        if first[0]:  # the end's read: it waits, holding the row as it was, until the child is attached
            first[0] = False
            read.set()
            go.wait(ALONE)  # not set in time only once fixed: the attach then waits for the end
        return row

    api.store.get_episode = get_then_wait  # type: ignore[method-assign]
    ended: list[Any] = []
    ender = threading.Thread(
        target=lambda: ended.append(
            api.client.post(f"/api/episodes/{ep['id']}/end", json={"ended_at": format_ts(T0)}, headers=senior)
        )
    )
    ender.start()
    assert read.wait(WAIT)
    attached = api.client.put(
        f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=staff
    )
    assert attached.status_code == 200, attached.text
    go.set()
    ender.join(WAIT)
    api.store.get_episode = real_get  # type: ignore[method-assign]
    assert ended and ended[0].status_code == 200, ended[0].text if ended else "the end did not answer"

    with api.store.session() as s:
        row = s.get(EpisodeRecord, ep["id"])
        incident = s.get(IncidentRecord, ep["incident_id"])
    assert row is not None and incident is not None
    assert incident.pupil_id == pupil["id"]
    assert row.ended_at is not None
    assert row.pupil_id == pupil["id"], (
        f"the record names the child ({incident.pupil_id}); the episode, ended meanwhile, names "
        f"{row.pupil_id!r}"
    )


# -- the live boards: a room's look pushed out of order -----------------------------------------------


class Boards:
    """A live board that keeps what it is pushed."""

    has_subscribers = True

    def __init__(self) -> None:
        self.pushed: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def publish(self, event: str, data: Any) -> int:
        with self._lock:
            self.pushed.append((event, dict(data)))
        return 1

    def last_room(self, room: str) -> dict[str, Any]:
        with self._lock:
            return [d for e, d in self.pushed if e == "room" and d["room"] == room][-1]


def test_a_hand_entered_episode_is_not_hidden_on_the_boards_by_an_older_look_of_its_room(
    api: Records,
) -> None:
    """The ingest thread worked out a touched room's look under `lock` (`_tell_people`), let the lock
    go, then pushed it (`carry_out`). A senior entering an episode going on now in that room in between
    had the API push the room with the episode (`tell_boards`), then the ingest thread pushed its older
    look, without it: the board's last word on the room was "not in use" while `GET /api/rooms` says a
    child is confined there (docs/hub.md: a room with a child recorded as confined in it never reads
    "not in use"). Each look is now worked out and pushed under the lock: here the ingest thread's push
    is held up while the episode is entered, and the API's look, worked out after it, comes last."""
    looked = threading.Event()
    go = threading.Event()

    class SlowBoards(Boards):
        def publish(self, event: str, data: Any) -> int:
            ingest = threading.current_thread().name.startswith("seclusion-ingest")
            if ingest and event == "room" and data["room"] == "calm-1" and not go.is_set():
                looked.set()  # the room's look worked out, its push under way
                go.wait(WAIT)
            return super().publish(event, data)

    boards = SlowBoards()
    api.service.live = boards
    api.service.start()
    # A reading of the panel in calm-1 (an observer in the corridor, no episode): the room is touched.
    api.service.submit(inbound("calm-1", "calm-1-panel", 1, "observer", "present", 0, 1))
    assert looked.wait(WAIT)
    made: list[dict[str, Any]] = []
    entering = threading.Thread(target=lambda: made.append(_open_manual_episode(api)))
    entering.start()
    # The API tells the boards at once; a hub that orders the two pushes makes it wait for the other.
    deadline = time.monotonic() + ALONE
    while time.monotonic() < deadline and not any(
        e == "room" and d["room"] == "calm-1" and d["episode_manual"] for e, d in boards.pushed
    ):
        time.sleep(0.01)
    go.set()
    entering.join(WAIT)
    assert made, "the episode was entered"
    ep = made[0]
    api.service.run_command(lambda _batch: None)  # the reading's batch is over, its pushes made

    staff = api.token("staff", SITE)
    rooms = {r["room"]: r for r in api.client.get("/api/rooms", headers=staff).json()["items"]}
    assert rooms["calm-1"]["episode_id"] == ep["id"]
    shown = boards.last_room("calm-1")
    assert shown["episode_id"] == ep["id"] and shown["episode_manual"] is True, (
        f"the live rooms say {ep['id']} is going on in calm-1; the boards were told last "
        f"episode_id={shown['episode_id']!r}, episode_manual={shown['episode_manual']!r}"
    )


# -- notices: a failed attempt reported after its retry was dropped ---------------------------------


class RefusingChannel:
    """A notification channel whose destination refuses every notice."""

    label = "test:refusing"

    def send(self, notice: Notice) -> None:
        raise DeliveryError("HTTP 500")


class QuietChannel:
    label = "test:quiet"

    def send(self, notice: Notice) -> None:
        pass


def test_a_retry_dropped_as_its_alert_resolves_is_not_left_retrying_by_the_attempt_before_it(
    tmp_path: Path,
) -> None:
    """A channel worker decides a failed attempt's retry under its lock, puts the delivery back in its
    queue, lets the lock go, and only then reports the attempt (`retrying`). The alert is resolved in
    between: `drop_retries` (the ingest thread, after the commit) finds the delivery in the queue and
    reports it `failed` ("resolved before this notice could be delivered"); then the worker's report
    arrives and is written after it. The delivery row ends `retrying`, with a `next_retry_at`, for a
    retry that will never be made: `GET /api/alerts/{id}` says the notice is still being tried, and
    only the next restart settles it."""
    sites = load_sites([write_site(tmp_path / "site.yaml", [two_device_room("calm-1", lapse_grace_s=5)])])
    clock = FakeClock(T0)
    channels: dict[tuple[str, str], list[tuple[str, Channel]]] = {
        (SITE, "room"): [("Room staff", RefusingChannel())],
        (SITE, "senior"): [("Duty senior", QuietChannel())],
    }
    delivery = AlertDelivery({s.id: s for s in sites}, Topics(), clock, channels=channels)
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    hub = HubService(sites, store, clock, Topics(), delivery=delivery, linger_s=0)

    dispatcher = delivery.dispatcher
    real_report = dispatcher.report
    retry_decided = threading.Event()
    go = threading.Event()
    worker_reported = threading.Event()

    def report(attempt: Attempt) -> None:
        if attempt.channel == RefusingChannel.label and attempt.next_retry_at is not None:
            retry_decided.set()  # the retry is queued; its report not yet made
            go.wait(WAIT)
            real_report(attempt)
            worker_reported.set()
            return
        real_report(attempt)

    dispatcher.report = report  # type: ignore[method-assign]
    real_resolved = delivery.resolved
    dropped = threading.Event()

    def resolved(alerts: Any) -> None:
        real_resolved(alerts)
        if any(a.resolved_at is not None for a in alerts.values()):
            dropped.set()

    delivery.resolved = resolved  # type: ignore[method-assign]
    try:
        hub.process(left_unwatched())
        hub.start()
        clock.set(T0 + dt.timedelta(seconds=16))  # the lapse is due; its notice fails once
        [lapse] = poll(lambda: store.active_alerts_of_kind("supervision_lapse"), WAIT, what="the lapse")
        assert retry_decided.wait(WAIT), "the first attempt failed and its retry was queued"

        hub.resolve_alert(SITE, "calm-1", lapse.id, "Ms Senior", "seen to")
        # Its retries dropped after the commit (a dispatcher that orders the two reports makes it
        # wait for the worker's: it then goes on after this pause).
        dropped.wait(ALONE)
        go.set()
        assert worker_reported.wait(WAIT)
        assert dropped.wait(WAIT), "the resolve was stored and its retries dropped"
        hub.run_command(lambda _batch: None)  # everything reported before this is written

        [row] = [d for d in store.deliveries(lapse.id) if d.channel == RefusingChannel.label]
        assert (row.status, row.next_retry_at) == ("failed", None), (
            f"the alert is resolved and its retry dropped; the delivery says {row.status!r}, next try "
            f"{row.next_retry_at}, last error {row.last_error!r}"
        )
        assert dispatcher.pending() == 0
    finally:
        go.set()
        hub.stop()
        store.close()
