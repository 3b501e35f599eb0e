"""Second review of the HTTP API against its external contract (contract.md section 6).

Each test fails until its fault is fixed. The hub runs in process on SQLite with a fake clock (the
`api` fixture of tests/hub/conftest.py); the tests call the API the way a client holding a token would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from seclusion_contract import format_ts
from tests.hub.test_api import T0
from tests.hub.test_records import Records
from tests.support.hub import two_device_room


def _names_field(response: Any, location: str, field: str) -> bool:
    """Whether a 422's FastAPI-style `detail` has an error whose `loc` is exactly (location, field)."""
    return any(list(e.get("loc", [])) == [location, field] for e in response.json()["detail"])


# -- 1. Lists: `limit` and `cursor` --------------------------------------------------------------------


def test_a_rooms_cursor_of_a_digit_that_is_not_ascii_is_a_422_naming_cursor_not_a_500(api: Records) -> None:
    """Contract 6: "Lists ... take `limit` ... and `cursor`. A bad request gets 422 naming the field."

    `GET /api/rooms` checks its cursor with `str.isdigit()` and then calls `int()`: "²" (superscript two)
    passes the first and not the second, so the client sees `500 Internal Server Error` for a malformed
    cursor (every other list answers 422 naming `cursor`)."""
    client = TestClient(api.client.app, raise_server_exceptions=False)
    admin = api.token("admin")
    answer = client.get("/api/rooms", params={"cursor": "²"}, headers=admin)
    assert answer.status_code == 422, answer.text
    assert _names_field(answer, "query", "cursor")


def test_the_registers_next_cursor_after_a_child_with_a_long_non_latin_name_is_accepted(
    api: Records,
) -> None:
    """Contract 6: "Lists return `{"items": [...], "next": <cursor or null>}` and take `limit` ... and
    `cursor`."

    The register's cursor is the last child's names and id, JSON with `\\uXXXX` escapes, base64: six
    bytes a Greek, Cyrillic or Arabic letter before base64. A page ending on a child whose two names
    come to about 60 such letters gets a `next` of more than 500 characters, and `Cursor` refuses more
    than 500: the client following `next` gets 422 "cursor: String should have at most 500 characters",
    and the rest of the register can never be reached."""
    senior = api.token("senior", "test-school")
    for first, last in (
        ("Αλέξανδρος-Κωνσταντίνος", "Παπαδόπουλος-Χατζηγεωργίου-Καραμανλή"),
        ("Ζωή", "Παπαδόπουλος-Χατζηγεωργίου-Παπανδρέου"),
    ):
        made = api.client.post(
            "/api/pupils",
            json={"site": "test-school", "first_name": first, "last_name": last},
            headers=senior,
        )
        assert made.status_code == 201, made.text
    first_page = api.client.get("/api/pupils", params={"limit": 1}, headers=senior).json()
    assert first_page["next"] is not None
    rest = api.client.get("/api/pupils", params={"limit": 1, "cursor": first_page["next"]}, headers=senior)
    assert rest.status_code == 200, rest.text
    walked = [p["id"] for p in first_page["items"] + rest.json()["items"]]
    assert len(set(walked)) == 2, "each child once"


# -- 2. Filters: an empty value is never a silently empty list ----------------------------------------


def test_alerts_with_the_contracts_empty_filters_do_not_read_as_no_alerts(api: Records) -> None:
    """Contract 6: "`GET /api/alerts?state=active|all&episode_id=&room=` | staff | alerts", and "A bad
    request gets 422 naming the field."

    A client that sends the filters it does not use empty (`episode_id=&room=`, as the contract writes
    them, as an HTML form or many query builders do) gets `200 {"items": [], "next": null}` while a
    critical supervision lapse is active: the hub filters on `room == ""`. Either an empty filter is no
    filter, or it is a 422 naming it; never "no active alerts"."""
    api.event("test-school", "calm-1", "calm-1-door", "occupancy", "occupied", 0)
    api.event("test-school", "calm-1", "calm-1-door", "door", "closed", 1)
    api.clock.set(T0 + dt.timedelta(seconds=60))
    api.service.process([])
    staff = api.token("staff", "test-school")
    active = api.client.get("/api/alerts", params={"state": "active"}, headers=staff).json()["items"]
    assert "supervision_lapse" in {a["kind"] for a in active}
    answer = api.client.get("/api/alerts?state=active&episode_id=&room=", headers=staff)
    if answer.status_code == 422:
        assert _names_field(answer, "query", "episode_id") or _names_field(answer, "query", "room")
    else:
        assert answer.status_code == 200
        assert [a["id"] for a in answer.json()["items"]] == [a["id"] for a in active], (
            "the active lapse is missing: the empty filters matched nothing"
        )


def test_episodes_with_an_empty_site_and_room_do_not_read_as_no_episodes(api: Records) -> None:
    """Contract 6: "`GET /api/episodes?site=&room=&open=` | staff | episodes, newest first", and "A bad
    request gets 422 naming the field."

    `site=&room=` (empty, as the contract writes them) is taken as the site "" and the room "": an
    admin gets an empty list with an episode going on, and a staff member of the site gets 403 "not
    one of your sites". Either an empty filter is no filter, or a 422 naming it."""
    api.event("test-school", "calm-1", "calm-1-door", "occupancy", "occupied", 0)
    api.event("test-school", "calm-1", "calm-1-door", "door", "closed", 1)
    for who in (api.token("admin"), api.token("staff", "test-school")):
        answer = api.client.get("/api/episodes?site=&room=", headers=who)
        if answer.status_code == 422:
            assert _names_field(answer, "query", "site") or _names_field(answer, "query", "room")
        else:
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["items"]) == 1, "the open episode is missing"


# -- 3. 422 names the field ------------------------------------------------------------------------------


def _mode_without(field: str) -> tuple[str, str, dict[str, Any]]:
    body: dict[str, Any] = {
        "mode": "maintenance",
        "reason": "deep clean",
        "expires_at": format_ts(T0 + dt.timedelta(hours=1)),
    }
    del body[field]
    return ("PUT", "/api/rooms/test-school/calm-1/mode", body)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_mode_without("reason"), "reason"),
        (_mode_without("expires_at"), "expires_at"),
        (
            (
                "POST",
                "/api/episodes",
                {
                    "site": "test-school",
                    "room": "calm-2",
                    "started_at": format_ts(T0 - dt.timedelta(minutes=10)),
                    "ended_at": format_ts(T0 - dt.timedelta(minutes=20)),
                    "reason": "door sensor failed",
                },
            ),
            "ended_at",
        ),
    ],
    ids=[
        "maintenance-without-reason",
        "maintenance-without-expiry",
        "manual-episode-ending-before-it-starts",
    ],
)
def test_a_rule_of_a_body_across_its_fields_names_the_field_in_loc(
    api: Records, request_: tuple[str, str, dict[str, Any]], field: str
) -> None:
    """Contract 6: "A bad request gets 422 naming the field."

    The rules checked by a body's `model_validator` (maintenance needs a reason and an expiry; a manual
    episode does not end before it starts) answer `{"loc": ["body"], "msg": "Value error, reason: ..."}`:
    the field is only in the prose of `msg`. A client (or the board's form) that shows each error
    beside its field by `loc`, as it can for every other 422 of the API (`["body", "expires_at"]` for an
    expiry more than 2 h ahead), cannot place these."""
    method, path, body = request_
    senior = api.token("senior", "test-school")
    answer = api.client.request(method, path, json=body, headers=senior)
    assert answer.status_code == 422, answer.text
    assert _names_field(answer, "body", field), answer.json()


def test_a_manual_episode_for_a_room_the_site_does_not_have_is_a_422_naming_room(api: Records) -> None:
    """Contract 6: "`POST /api/episodes` | senior | a manual episode", and "A bad request gets 422
    naming the field."

    A body naming a room the site file does not have (a typo: `calm-9`) answers 404 "no room", as if
    `/api/episodes` itself were not there; the register's `POST /api/pupils` answers its unknown `site`
    with 422 naming `site`. A client told 404 cannot tell its form which field is wrong."""
    senior = api.token("senior", "test-school")
    body = {
        "site": "test-school",
        "room": "calm-9",
        "started_at": format_ts(T0 - dt.timedelta(minutes=10)),
        "reason": "door sensor failed",
    }
    answer = api.client.post("/api/episodes", json=body, headers=senior)
    assert answer.status_code == 422, answer.text
    assert _names_field(answer, "body", "room")


# -- 4. Reviews: recorded on the episode they were done for ------------------------------------------


@pytest.fixture
def reviewing(tmp_path: Path) -> Iterator[Records]:
    """A hub whose calm-1 asks for a senior's check 15 minutes into an episode (`senior-check`)."""
    check = [{"name": "senior-check", "first_s": 900, "every_s": 900, "tier": "senior"}]
    a = Records(
        tmp_path,
        f"sqlite:///{tmp_path / 'hub.db'}",
        rooms=[two_device_room("calm-1", reviews=check), two_device_room("calm-2")],
    )
    yield a
    a.service.stop()
    a.client.close()
    a.store.close()


def _timeline_kinds(api: Records, episode_id: str) -> list[str]:
    admin = api.token("admin")
    body = api.client.get(f"/api/episodes/{episode_id}", headers=admin).json()
    return [str(item["kind"]) for item in body["timeline"] if item["type"] != "event"]


@pytest.mark.parametrize("which", ["manual", "older"])
def test_a_child_attached_to_an_episode_is_in_its_timeline_whichever_episode_it_is(
    api: Records, which: str
) -> None:
    """Contract 6: "`GET /api/episodes/{id}` | staff | one episode with `timeline` (every event, alert
    and action, in time order)", and "`PUT /api/episodes/{id}/pupil` ... (open or not)".

    Attaching a child to the room's open or latest episode writes a `pupil_attached` line in its
    timeline. To a manual episode, or to an older one (the room used since), it goes through
    `RecordStore.attach_pupil_offline`, which writes the episode, the record and the audit and no
    timeline line: someone reading the episode sees no sign of who named the child, or when."""
    senior = api.token("senior", "test-school")
    staff = api.token("staff", "test-school")
    if which == "manual":
        body = {
            "site": "test-school",
            "room": "calm-2",
            "started_at": format_ts(T0 - dt.timedelta(minutes=20)),
            "ended_at": format_ts(T0 - dt.timedelta(minutes=5)),
            "reason": "door sensor failed; timed by the teacher's watch",
        }
        episode = api.client.post("/api/episodes", json=body, headers=senior).json()
    else:
        episode = api.ended_episode()
        api.ended_episode(start=2000)  # the room used again: the first is no longer its latest
    pupil = api.client.post(
        "/api/pupils", json={"site": "test-school", "first_name": "Sam", "last_name": "Jones"}, headers=senior
    ).json()
    api.service.start()
    try:
        attached = api.client.put(
            f"/api/episodes/{episode['id']}/pupil", json={"pupil_id": pupil["id"]}, headers=staff
        )
    finally:
        api.service.stop()
    assert attached.status_code == 200, attached.text
    assert "pupil_attached" in _timeline_kinds(api, episode["id"])


def test_an_episodes_overdue_record_alerts_are_in_its_timeline(api: Records) -> None:
    """Contract 6: "one episode with `timeline` (every event, alert and action, in time order)".

    The record of an episode not written by midnight raises `report_overdue` with the episode's
    `episode_id` (it is listed by `GET /api/alerts?episode_id=`). Its raising, its acknowledgement and
    a senior's resolution with a note leave no line in the episode's timeline: only the alerts a room
    machine raises are written there (`RoomMachine._with_notes`); those of `report_check` and of the
    service's own acknowledge and resolve paths are not."""
    episode = api.ended_episode()
    senior = api.token("senior", "test-school")
    api.clock.set(dt.datetime(2026, 11, 24, 0, 0, 30, tzinfo=dt.UTC))
    api.service.process([api.service.report_check()])
    listed = api.client.get(
        "/api/alerts", params={"state": "all", "episode_id": episode["id"]}, headers=senior
    ).json()["items"]
    overdue = next(a for a in listed if a["kind"] == "report_overdue")
    api.service.start()
    try:
        assert api.client.post(f"/api/alerts/{overdue['id']}/ack", headers=senior).status_code == 200
        resolved = api.client.post(
            f"/api/alerts/{overdue['id']}/resolve", json={"note": "written on paper"}, headers=senior
        )
        assert resolved.status_code == 200, resolved.text
    finally:
        api.service.stop()
    admin = api.token("admin")
    timeline = api.client.get(f"/api/episodes/{episode['id']}", headers=admin).json()["timeline"]
    about = [
        item["kind"]
        for item in timeline
        if isinstance(item.get("detail"), dict) and item["detail"].get("alert_id") == overdue["id"]
    ]
    assert about == ["alert_raised", "alert_acknowledged", "alert_resolved"]
