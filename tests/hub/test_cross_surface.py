"""The same episode read on several surfaces says the same facts: the record page and the parents' copy,
the leaders' pages and their figures, the live rooms and the episodes API, the hub's review and the
Grafana dashboards' SQL (from a cross-surface review; each failed when written)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from seclusion_contract import Topics, format_ts
from seclusion_hub.auth import create_token
from seclusion_hub.core.episode import ObserverMark
from seclusion_hub.models import IncidentRecord
from seclusion_hub.service import HubService
from tests.hub.test_api import T0
from tests.hub.test_record_truths import _page, _pupil, _recorded, enter_episode
from tests.hub.test_records import Records
from tests.hub.test_review_api import Review

SITE = "test-school"
UTC = dt.UTC


def _text(html: str) -> str:
    """A page's words, tags stripped and spaces joined."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def _leader_page(api: Records, path: str, **params: str) -> str:
    token = create_token(api.store, "head", "leader", [SITE], False, T0)
    api.client.cookies.set("seclusion_session", token)
    try:
        response = api.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.text
    finally:
        api.client.cookies.clear()


# -- the record page and the parents' copy ------------------------------------------------------------


def test_the_record_page_and_the_parents_copy_give_the_same_supervised_time(api: Records) -> None:
    """An episode of 10 minutes with the panel empty for 59 s: 541 s recorded as supervised. The parents'
    copy rounds supervised time down ("for 9 minutes of the 10 minutes", docs/parent-copy.md: "the time
    supervision was recorded ... is rounded down so supervision is never flattered"); the record page,
    whose `duration_words` says it gives "the parents' copy's words for a duration ... so that a page and
    the letter say the same", told staff "Supervised: 10 minutes" about the same episode."""
    api.event(SITE, "calm-1", "calm-1-panel", "observer", "present", 0)
    api.event(SITE, "calm-1", "calm-1-door", "occupancy", "occupied", 1)
    api.event(SITE, "calm-1", "calm-1-door", "door", "closed", 2)
    api.event(SITE, "calm-1", "calm-1-panel", "observer", "absent", 100)
    api.event(SITE, "calm-1", "calm-1-panel", "observer", "present", 159)
    api.event(SITE, "calm-1", "calm-1-door", "door", "open", 602)
    api.event(SITE, "calm-1", "calm-1-door", "occupancy", "vacant", 603)
    admin = api.token("admin")
    ep = api.client.get("/api/episodes", params={"room": "calm-1"}, headers=admin).json()["items"][0]
    assert ep["elapsed_s"] == 600 and ep["supervised_s"] == 541, ep
    incident = _recorded(api, ep, _pupil(api))
    copy = _text(api.client.get(f"{incident}/parent-copy.html", headers=admin).text)
    assert "for 9 minutes of the 10 minutes" in copy, copy
    page = _text(_page(api, f"/records/{ep['incident_id']}"))
    supervised = re.search(r"Supervised (.+?) Not supervised", page)
    assert supervised is not None, page
    assert supervised.group(1) == "9 minutes", (
        f"the record page says supervised {supervised.group(1)!r}, the parents' copy 9 minutes"
    )


# -- the leaders' incident list and every other surface ----------------------------------------------


def test_the_leaders_incident_list_dates_a_hand_entered_episode_when_it_started_not_when_entered(
    api: Records,
) -> None:
    """A senior enters on Monday 23 November at 10:00 an episode of Sunday 22 November, 14:00 to 14:12
    (the sensors failed). The API, the record page and the leaders' summary put it on Sunday at 14:00;
    the leaders' incident list's "Started" column showed the time it was typed in (the record's
    `opened_at`), and its period filter left it out of Sunday."""
    started = dt.datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
    ep = enter_episode(api, started, started + dt.timedelta(minutes=12))
    assert ep["started_at"] == "2026-11-22T14:00:00.000Z"
    record = _text(_page(api, f"/records/{ep['incident_id']}"))
    assert "Sunday 22 November 2026, 14:00:00" in record
    summary = api.client.get(
        "/api/reports/summary",
        params={
            "site": SITE,
            "from": "2026-11-22T00:00:00Z",
            "to": "2026-11-23T00:00:00Z",
            "suppress": "false",
        },
        headers={"Authorization": f"Bearer {create_token(api.store, 'head', 'leader', [SITE], False, T0)}"},
    ).json()
    assert summary["episodes"] == 1
    listed = _text(
        _leader_page(api, "/review/incidents", site=SITE, **{"from": "2026-11-22", "to": "2026-11-22"})
    )
    assert "No incident matches" not in listed, (
        "the summary counts it on Sunday; the incident list does not list it"
    )
    assert "Sunday 22 November 2026, 14:00" in listed, listed[listed.find("Incidents:") :][:400]


# -- the leaders' summary: minutes never rounded down ---------------------------------------------


def test_the_summarys_longest_and_median_minutes_are_never_below_the_total_of_one_episode(
    tmp_path: Path,
) -> None:
    """One episode of 10 minutes 0.4 s. The summary rounds its total up (10.1: "Up, never down: time is
    never under-counted"), but gave the same single episode's longest and median as 10.0, below its
    length and below the total of which it is the only part; the parents' copy says 11 minutes."""
    r = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", name="Hillside School")
    try:
        kid = r.pupil("A", "none")
        r.episode(kid, dt.datetime(2026, 10, 5, 10, tzinfo=UTC), 10 + 0.4 / 60)
        r.clock.set(dt.datetime(2026, 12, 1, tzinfo=UTC))
        got = r.client.get(
            "/api/reports/summary",
            params={
                "site": SITE,
                "from": "2026-10-01T00:00:00Z",
                "to": "2026-11-01T00:00:00Z",
                "suppress": "false",
            },
            headers=r.leader(),
        ).json()
        minutes = got["minutes"]
        assert minutes["total"] == 10.1, minutes
        assert minutes["longest"] >= 600.4 / 60 and minutes["median"] >= 600.4 / 60, (
            f"one episode of 600.4 s: total {minutes['total']}, longest {minutes['longest']}, "
            f"median {minutes['median']} (rounded down)"
        )
    finally:
        r.client.close()
        r.store.close()


def test_voluntary_minutes_are_rounded_up_like_every_other_total(tmp_path: Path) -> None:
    """An episode of 10 minutes 0.4 s recorded as the child's own use of the room: the summary's
    `voluntary_minutes` said 10.0 (rounded to the nearest tenth, down here) where the same episode
    counted as seclusion is 10.1 minutes (`minutes.total`, rounded up: never under-counted)."""
    r = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", name="Hillside School")
    try:
        kid = r.pupil("A", "none")
        incident_id = r.episode(kid, dt.datetime(2026, 10, 5, 10, tzinfo=UTC), 10 + 0.4 / 60)
        r.clock.set(dt.datetime(2026, 12, 1, tzinfo=UTC))
        params = {
            "site": SITE,
            "from": "2026-10-01T00:00:00Z",
            "to": "2026-11-01T00:00:00Z",
            "suppress": "false",
        }
        as_seclusion = r.client.get("/api/reports/summary", params=params, headers=r.leader()).json()
        with r.store.session() as s:
            row = s.get(IncidentRecord, incident_id)
            assert row is not None
            row.status = "recorded"
            row.record = {"classification": "voluntary", "voluntary_reason": "Asked for the room."}
            s.add(row)
            s.commit()
        as_voluntary = r.client.get("/api/reports/summary", params=params, headers=r.leader()).json()
        assert as_voluntary["classes"]["voluntary"] == 1, as_voluntary["classes"]
        assert as_voluntary["classes"]["voluntary_minutes"] == as_seclusion["minutes"]["total"], (
            as_voluntary["classes"],
            as_seclusion["minutes"],
        )
    finally:
        r.client.close()
        r.store.close()


# -- the leaders' child page: possible loss ----------------------------------------------------------


def test_the_childs_page_never_shows_fully_supervised_for_an_episode_whose_readings_may_be_missing(
    api: Records,
) -> None:
    """The panel device skipped a sequence number during the episode (`possible_loss`): the record page
    says "readings may be missing", the parents' copy never says "for the whole time" (docs/
    parent-copy.md), yet the leaders' page for the child showed the episode as "100 %" supervised, with
    nothing to say that the readings behind it may be incomplete."""
    api.event(SITE, "calm-1", "calm-1-panel", "observer", "present", 0)
    api.event(SITE, "calm-1", "calm-1-door", "occupancy", "occupied", 1)
    api.event(SITE, "calm-1", "calm-1-door", "door", "closed", 2)
    api.seq["calm-1-panel"] += 1  # seq 2 never arrives: perhaps `observer: absent`
    api.event(SITE, "calm-1", "calm-1-panel", "observer", "present", 300)
    api.event(SITE, "calm-1", "calm-1-door", "door", "open", 602)
    api.event(SITE, "calm-1", "calm-1-door", "occupancy", "vacant", 603)
    admin = api.token("admin")
    ep = api.client.get("/api/episodes", params={"room": "calm-1"}, headers=admin).json()["items"][0]
    assert ep["possible_loss"] is True and ep["unsupervised_s"] == 0
    pupil = _pupil(api)
    _recorded(api, ep, pupil)
    assert "readings may be missing" in _page(api, f"/records/{ep['incident_id']}")
    page = _leader_page(api, f"/review/children/{pupil['id']}", **{"from": "2026-11-01", "to": "2026-11-30"})
    row = next(r for r in re.findall(r"<tr>.*?</tr>", page, re.S) if "/records/" in r)
    words = _text(row)
    assert "100 %" not in words or "missing" in words, (
        f"the child's page: {words!r}: fully supervised, with readings that may be missing"
    )


# -- the live rooms and the episodes API ------------------------------------------------------------


def test_a_hand_entered_episode_still_going_on_is_on_the_live_rooms_too(api: Records) -> None:
    """The door sensor failed; a senior enters the episode going on now (no end yet). The episodes API
    lists it open in calm-1, and its record says "The child is still in the room"; the live rooms
    (`GET /api/rooms`, the board's data) said calm-1 had no episode (`episode_id: null`), so the board
    shows "Room not in use" about a room with a child confined in it."""
    senior = api.token("senior", SITE)
    staff = api.token("staff", SITE)
    ep = enter_episode(api, T0 - dt.timedelta(minutes=5))
    open_now = api.client.get(
        "/api/episodes", params={"room": "calm-1", "open": "true"}, headers=staff
    ).json()
    assert [e["id"] for e in open_now["items"]] == [ep["id"]]
    rooms = {r["room"]: r for r in api.client.get("/api/rooms", headers=staff).json()["items"]}
    assert rooms["calm-1"]["episode_id"] == ep["id"], (
        f"the episodes API: {ep['id']} open in calm-1; the live rooms: {rooms['calm-1']['episode_id']}"
    )
    assert rooms["calm-1"]["episode_manual"] is True and rooms["calm-1"]["supervised"] is None
    assert rooms["calm-1"]["episode_started_at"] == ep["started_at"]
    assert rooms["calm-2"]["episode_id"] is None and rooms["calm-2"]["episode_manual"] is False

    # A hub started again on the same database shows it too (no room machine holds it).
    again = HubService(list(api.service.sites.values()), api.store, api.clock, Topics())
    assert again.manual_open[(SITE, "calm-1")][0] == ep["id"]

    # Its end entered: the boards are told at once, and the room is not in use any more.
    pushed: list[tuple[str, dict[str, Any]]] = []

    class Boards:
        has_subscribers = True

        def publish(self, event: str, data: Any) -> int:
            pushed.append((event, dict(data)))
            return 1

    api.service.live = Boards()
    ended = api.client.post(f"/api/episodes/{ep['id']}/end", json={"ended_at": format_ts(T0)}, headers=senior)
    assert ended.status_code == 200, ended.text
    assert [(event, data["room"], data["episode_id"]) for event, data in pushed] == [("room", "calm-1", None)]
    rooms = {r["room"]: r for r in api.client.get("/api/rooms", headers=staff).json()["items"]}
    assert rooms["calm-1"]["episode_id"] is None


# -- the Grafana dashboards' SQL and the hub's review -----------------------------------------------


def _panel(url: str, title: str, dashboard: str = "seclusion-overview.json") -> list[tuple[Any, ...]]:
    """A panel's SQL as Grafana sends it (site test-school, rooms calm-1 and calm-2, all of 2026)."""
    from tests.infra.test_dashboards import all_queries, interpolate

    (query,) = [q for q in all_queries() if q.dashboard == dashboard and q.panel == title]
    text = interpolate(query.raw_sql, query.variables, {"site": [SITE], "room": ["calm-1", "calm-2"]})
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(text.replace(":", r"\:")))]
    finally:
        engine.dispose()


@pytest.fixture
def pg_review(tmp_path: Path, fresh_postgres_db: str) -> Iterator[tuple[Review, str]]:
    r = Review(tmp_path, fresh_postgres_db, name="Hillside School")
    yield r, fresh_postgres_db
    r.client.close()
    r.store.close()


def _summary(r: Review) -> dict[str, Any]:
    params = {"site": SITE, "from": "2026-01-01T00:00:00Z", "to": "2026-12-31T00:00:00Z", "suppress": "false"}
    got = r.client.get("/api/reports/summary", params=params, headers=r.leader())
    assert got.status_code == 200, got.text
    return dict(got.json())


def test_the_dashboard_counts_the_episodes_the_review_counts_not_a_childs_own_use_of_the_room(
    pg_review: tuple[Review, str],
) -> None:
    """Two episodes in the week of 5 October; the record of one is completed as the child's own use of
    the calm room (`voluntary`). The review counts 1 episode of seclusion and the voluntary one apart
    (semantics 2.2: "the leaders' figures count each class apart"); Grafana's "Episodes per week" read
    2 for that week."""
    r, url = pg_review
    kid = r.pupil("A", "none")
    r.episode(kid, dt.datetime(2026, 10, 5, 10, tzinfo=UTC), 5)
    own = r.episode(kid, dt.datetime(2026, 10, 6, 10, tzinfo=UTC), 5)
    with r.store.session() as s:
        row = s.get(IncidentRecord, own)
        assert row is not None
        row.status = "recorded"
        row.record = {"classification": "voluntary", "voluntary_reason": "Asked for the room."}
        row.classification = "voluntary"  # as the hub writes it beside the record (the next test)
        s.add(row)
        s.commit()
    r.clock.set(dt.datetime(2026, 12, 1, tzinfo=UTC))
    summary = _summary(r)
    assert summary["episodes"] == 1 and summary["classes"]["voluntary"] == 1
    weeks = _panel(url, "Episodes per week")
    assert sum(count for _week, count in weeks) == summary["episodes"], (
        f"Grafana: {weeks}; the review: {summary['episodes']} episode(s) of seclusion"
    )


def test_the_incidents_classification_column_follows_its_record(api: Records) -> None:
    """The dashboards may not read the record (what staff wrote), only the `classification` column
    beside it, which nothing wrote: every record read as unclassified there."""
    api.event(SITE, "calm-1", "calm-1-panel", "observer", "present", 0)
    api.event(SITE, "calm-1", "calm-1-door", "occupancy", "occupied", 1)
    api.event(SITE, "calm-1", "calm-1-door", "door", "closed", 2)
    api.event(SITE, "calm-1", "calm-1-door", "door", "open", 62)
    api.event(SITE, "calm-1", "calm-1-door", "occupancy", "vacant", 63)
    admin = api.token("admin")
    ep = api.client.get("/api/episodes", params={"room": "calm-1"}, headers=admin).json()["items"][0]
    _recorded(api, ep, _pupil(api))
    with api.store.session() as s:
        row = s.get(IncidentRecord, ep["incident_id"])
        assert row is not None
        assert row.classification == row.record["classification"] == "seclusion"


def test_the_dashboards_lapse_panels_count_alerts_and_say_so_not_the_reviews_lapses(
    pg_review: tuple[Review, str],
) -> None:
    """An episode in which the panel was empty for 10 s (inside the 15 s grace: no alert). The review
    counts it as 1 lapse, 1 episode with a lapse (docs/review.md: "The figures count lapses", every
    unsupervised interval); Grafana's panel said 0 lapses and 0 episodes with a lapse, under the same
    name: it counts `supervision_lapse` alerts, and the role may not read an episode's intervals. So
    the panel and its columns are named for what they count."""
    from tests.infra.test_dashboards import all_queries

    r, url = pg_review
    kid = r.pupil("A", "none")
    start = dt.datetime(2026, 10, 5, 10, tzinfo=UTC)
    r.episode(
        kid,
        start,
        5,
        observer=[
            ObserverMark(ts=start, present=True),
            ObserverMark(ts=start + dt.timedelta(seconds=60), present=False),
            ObserverMark(ts=start + dt.timedelta(seconds=70), present=True),
        ],
    )
    r.clock.set(dt.datetime(2026, 12, 1, tzinfo=UTC))
    summary = _summary(r)
    assert summary["supervision"]["lapses"] == 1 and summary["supervision"]["episodes_with_lapse"] == 1
    assert not [q for q in all_queries() if "lapse" in q.panel.lower() and "alert" not in q.panel.lower()]
    ((alerts, with_alert),) = _panel(url, "Supervision lapse alerts, whole period")
    assert (alerts, with_alert) == (0, 0)
    (query,) = [q for q in all_queries() if q.panel == "Supervision lapse alerts, whole period"]
    assert '"lapse alerts"' in query.raw_sql and '"episodes with a lapse alert"' in query.raw_sql


def test_the_dashboards_records_overdue_leave_out_test_episodes_as_the_review_does(
    pg_review: tuple[Review, str],
) -> None:
    """A test episode (the room in maintenance) whose record nobody completed, past its deadline. The
    review never counts it ("Test episodes ... are never counted, anywhere": `records_missing` 0), and
    the dashboards' README says so of Grafana too ("as in the hub's review"); its "Records overdue" said
    1."""
    r, url = pg_review
    r.episode(None, dt.datetime(2026, 10, 5, 10, tzinfo=UTC), 5, test=True)
    r.clock.set(dt.datetime(2026, 12, 1, tzinfo=UTC))
    summary = _summary(r)
    assert summary["records"]["records_missing"] == 0
    ((overdue,),) = _panel(url, "Records overdue")
    assert overdue == summary["records"]["records_missing"], f"Grafana: {overdue} record(s) overdue"


# -- the incident record's figures (the API's `auto`) and the record page ------------------------------


def test_the_incident_records_minutes_never_under_count_what_its_page_and_copy_say(api: Records) -> None:
    """An episode of 600.4 s with the panel empty for 60.6 s: 539.8 s supervised. `GET /api/incidents/{id}`
    fills in `auto.elapsed_minutes` 10.0 (rounded to the nearest tenth: below the 10.007 minutes it
    lasted) and `auto.supervised_minutes` 9.0 (above the 8.997 recorded: supervision flattered), where
    the record page and the parents' copy round time up and supervision down (11 minutes; 8 minutes of
    the 11), and the review rounds its minutes up (semantics: "the hub never under-counts a
    confinement"; docs/parent-copy.md: supervision "is rounded down so supervision is never
    flattered")."""
    api.event(SITE, "calm-1", "calm-1-panel", "observer", "present", 0)
    api.event(SITE, "calm-1", "calm-1-door", "occupancy", "occupied", 1)
    api.event(SITE, "calm-1", "calm-1-door", "door", "closed", 2)
    api.event(SITE, "calm-1", "calm-1-panel", "observer", "absent", 100)
    api.event(SITE, "calm-1", "calm-1-panel", "observer", "present", 160.6)
    api.event(SITE, "calm-1", "calm-1-door", "door", "open", 602.4)
    api.event(SITE, "calm-1", "calm-1-door", "occupancy", "vacant", 603)
    staff = api.token("staff", SITE)
    ep = api.client.get("/api/episodes", params={"room": "calm-1"}, headers=staff).json()["items"][0]
    assert ep["elapsed_s"] == 600.4 and ep["supervised_s"] == 539.8, ep
    auto = api.client.get(f"/api/incidents/{ep['incident_id']}", headers=staff).json()["auto"]
    assert auto["elapsed_minutes"] >= ep["elapsed_s"] / 60, (
        f"the record's elapsed_minutes {auto['elapsed_minutes']} is below {ep['elapsed_s']} s"
    )
    assert auto["supervised_minutes"] <= ep["supervised_s"] / 60, (
        f"the record's supervised_minutes {auto['supervised_minutes']} is above {ep['supervised_s']} s"
    )
