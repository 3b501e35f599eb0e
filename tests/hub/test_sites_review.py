"""One hub serving several schools (a multi-academy trust): what one school's people see and what is
recorded about one school must never depend on another school on the same hub.

Found by reviewing the site limits of the API, the live feed, the deliveries and the audit log with two
sites (`test-school` and `other-school`, tests/hub/test_api.py `Api`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from seclusion_hub.auth import Principal
from seclusion_hub.live import LiveFeed
from tests.hub.test_api import Api

STAFF_TEST_SCHOOL = Principal("board-test-school", "staff", frozenset({"test-school"}))


def _live_row(api: Api, alert_id: str) -> dict[str, Any]:
    admin = api.token("admin")
    body = api.client.get(f"/api/alerts/{alert_id}", headers=admin).json()
    [row] = [d for d in body["deliveries"] if d["channel"] == "live"]
    return dict(row)


def _write_outcomes(api: Api) -> None:
    """The deliveries' outcomes handed to the ingest thread (not started here), written."""
    while not api.service.inbox.empty():
        api.service.process([api.service.inbox.get_nowait()])


# -- 1. Another school's board counts as this school's board ---------------------------------------


def test_an_alert_is_not_recorded_as_on_the_live_board_when_only_another_schools_board_is_open(
    tmp_path: Path,
) -> None:
    """docs/alerts.md: "The live board's row says `no live board was connected` when nobody was
    watching: that too is a fact worth keeping." `AlertDelivery.carry_out` counts the boards an alert
    reached from `LiveFeed.publish`'s answer, which is always None, and falls back on
    `live.has_subscribers`: any stream of any school. With only test-school's board open, an alert of
    other-school (which that board is never sent: `Subscription.accepts`) is recorded `sent` to "the
    live board", so other-school's delivery record says its staff saw it on screen when no screen of
    theirs was open."""
    api = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    feed = LiveFeed()
    api.service.live = feed
    try:

        async def with_test_schools_board_open() -> list[str]:
            with feed.subscribe(STAFF_TEST_SCHOOL) as sub:
                # Given only test-school's board open, when a child is confined at other-school
                api.event("other-school", "quiet-1", "q1", "occupancy", "occupied", 1)
                api.event("other-school", "quiet-1", "q1", "door", "closed", 2)
                got = await sub.next_batch(0.2)
                return [item.data for item in got]

        seen = asyncio.run(with_test_schools_board_open())
        assert not any("other-school" in data for data in seen), "the feed itself keeps to the site"
        _write_outcomes(api)
        admin = api.token("admin")
        alerts = api.client.get("/api/alerts", params={"state": "all"}, headers=admin).json()["items"]
        [raised] = [a for a in alerts if a["site"] == "other-school"]
        row = _live_row(api, raised["id"])
        # Then its live-board delivery says no board of that school was watching
        assert row["status"] != "sent", (
            "other-school's alert is recorded as shown on the live board, but the only board open was "
            f"test-school's, which never received it: {row}"
        )
        assert row["attempts"][0]["error"] == "no live board was connected", row
    finally:
        api.client.close()
        api.store.close()


# -- 2. An administrator limited to one school reads every school's rejected messages ---------------


def test_an_administrator_limited_to_one_school_is_not_shown_another_schools_dead_letters(
    tmp_path: Path,
) -> None:
    """Contract 5: `--site` limits a token (any role) to those sites; 6: another site is a 403. The
    dead letters' list (`api.dead_letters`) needs the admin role and then lists every rejected message
    of the hub, whatever the admin's sites: an IT technician given `--role admin --site test-school`
    reads other-school's topics (its rooms and devices), what was wrong with each message and when."""
    api = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        # Given a message of other-school's device that the hub rejected
        api.event("other-school", "quiet-1", "q1", "door", "ajar", 1)
        everyone = api.client.get("/api/dead-letters", headers=api.token("admin")).json()["items"]
        assert [d["topic"] for d in everyone] == ["seclusion/v1/other-school/quiet-1/q1/event"]
        # When test-school's own administrator lists the dead letters
        limited = api.client.get("/api/dead-letters", headers=api.token("admin", "test-school"))
        # Then other-school's message is not among them (or the list is refused)
        shown = limited.json().get("items", []) if limited.status_code == 200 else []
        assert not any("other-school" in d["topic"] for d in shown), (
            f"an admin limited to test-school is shown other-school's dead letters: {shown}"
        )
    finally:
        api.client.close()
        api.store.close()


# -- 3. The leaders' reports tell a leader which other schools share the hub -----------------------


def test_a_leader_limited_to_one_school_cannot_tell_another_school_on_the_hub_from_none(
    tmp_path: Path,
) -> None:
    """Contract 6: another site is a 403, and the API answers so before looking (`deps.site_allowed`:
    `GET /api/episodes?site=`, `POST /api/pupils`, `POST /api/pupils/import`, `PUT .../mode`,
    `POST /api/episodes` all refuse a site that is not the caller's with 403 whether or not the hub has
    it; the leaders' pages too). `review.site_of` looks whether the hub has the site first: 422 "not a
    site of this hub" for a made-up one, 403 for a real school of the trust. A leader limited to
    test-school can so list the other schools on the hub by trying names."""
    api = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        leader = api.token("leader", "test-school")
        for path in (
            "/api/reports/summary",
            "/api/reports/disproportionality",
            "/api/reports/episodes.csv",
            "/api/reports/governors.pdf",
        ):
            real = api.client.get(path, params={"site": "other-school"}, headers=leader)
            made_up = api.client.get(path, params={"site": "no-such-school"}, headers=leader)
            assert real.status_code == 403, (path, real.status_code)
            # The same answer for a school on the hub and one that is not: neither is the leader's
            assert made_up.status_code == real.status_code, (
                f"{path}: 403 for other-school but {made_up.status_code} ({made_up.text}) for a school "
                "the hub does not have: whether a school shares the hub is told to a leader of another"
            )
        # As the rest of the API answers (the control): the same 403 for both
        staff = api.token("staff", "test-school")
        for site in ("other-school", "no-such-school"):
            assert api.client.get("/api/episodes", params={"site": site}, headers=staff).status_code == 403
    finally:
        api.client.close()
        api.store.close()


# -- 4. A notice of one school reads exactly as the same notice of another -------------------------


def test_a_notice_says_which_school_the_room_is_in(tmp_path: Path) -> None:
    """A trust's schools are often set up from one template (every school a "Calm room 1"), and a
    trust-wide person (the executive head, the trust's safeguarding lead) is a recipient in each school's
    site file. A notice worded from the room's name alone read word for word the same for either school,
    so the person told "Go to the room now" could not know which school's room. On a hub of several
    schools a notice names the school (its site file's `name`, else its id); on a hub of one, the room
    alone, as before."""
    from seclusion_hub.notify.notice import render_message
    from tests.hub.test_notify import notice

    api = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", name="Hillside School")
    try:
        delivery = api.service.delivery
        assert delivery.school_name("test-school") == "Hillside School"
        assert delivery.school_name("other-school") == "other-school"  # its file names no school
    finally:
        api.client.close()
        api.store.close()
    here = render_message(notice(site="test-school", alert_id="a-1", site_name="Hillside School"))
    there = render_message(notice(site="other-school", alert_id="a-2", site_name="other-school"))
    assert (here.title, here.body) != (there.title, there.body)
    assert here.title == "CRITICAL: supervision lapse, Calm room 1 at Hillside School"
    assert "Nobody has been recorded supervising Calm room 1 at Hillside School (at the" in here.body
    assert "other-school" in there.title and "other-school" in there.body
    # A hub of one school: the room alone (docs/notifications.md's example)
    alone = render_message(notice())
    assert alone.title == "CRITICAL: supervision lapse, Calm room 1"


# -- 6. A school taken out of the hub's site files: its records are read, never a 500 ---------------


def test_a_record_of_a_school_no_longer_in_the_site_files_is_read_and_a_change_is_a_409(
    tmp_path: Path,
) -> None:
    """A school leaves the trust and its site file is taken out of `SECLUSION_SITE_FILES`: its records
    stay in the database. Reading one works; attaching a child, the parents' copy or a sign-off needed
    the school's site file (its clocks, its name) and answered 500 (`KeyError`); now a 409 naming
    `site`, saying what to do."""
    import datetime as dt

    from seclusion_hub.core.episode import Episode, Segment
    from seclusion_hub.models import Pupil
    from seclusion_hub.store import Batch
    from tests.hub.test_api import T0

    api = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        start, end = T0 - dt.timedelta(days=30), T0 - dt.timedelta(days=30, minutes=-5)
        ep = Episode(
            id="gone-ep",
            site="gone-school",
            room="calm-1",
            number=1,
            started_at=start,
            ended_at=end,
            segments=[Segment(start=start, end=end)],
            incident_id="gone-inc",
        )
        opened = {"id": "gone-inc", "episode_id": ep.id, "site": "gone-school", "room": "calm-1"}
        api.store.write(
            Batch(
                episodes={ep.id: ep},
                incidents_opened=[{**opened, "status": "open", "opened_at": start, "updated_at": start}],
            ),
            end,
        )
        with api.store.session() as s:
            s.add(
                Pupil(
                    id="gone-child",
                    site="gone-school",
                    first_name="A",
                    last_name="B",
                    created_at=T0,
                    updated_at=T0,
                )
            )
            s.commit()
        admin = api.token("admin")
        assert api.client.get("/api/incidents/gone-inc", headers=admin).status_code == 200
        attach = api.client.put("/api/episodes/gone-ep/pupil", json={"pupil_id": "gone-child"}, headers=admin)
        assert attach.status_code == 409, attach.text
        assert attach.json()["detail"].startswith("site: 'gone-school' is no longer in the hub's site files")
    finally:
        api.client.close()
        api.store.close()
