"""The staff's record pages (`/records`, `/records/{id}`): access, what each user may do, escaping and
wording in process (FastAPI's TestClient); and a record completed end to end in Debian's Chromium, from
the live board to the parents' PDF.

Screenshots: test-artifacts/records-list.png, record-form.png and record-signed.png
(records-failure.png when the browser test fails).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect
from sqlmodel import select

from seclusion_contract import Topics, format_ts
from seclusion_hub.api import create_app
from seclusion_hub.auth import Role, create_token
from seclusion_hub.config import load_sites
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.ingest import Inbound
from seclusion_hub.models import AuditEntry, IncidentRecord
from seclusion_hub.record_pages import FIELDS
from seclusion_hub.service import HubService
from seclusion_hub.store import Store
from tests.hub.test_records import NO_CHILD
from tests.support.hub import SITE, Device, api_get, two_device_room, write_site
from tests.support.processes import Mosquitto, poll
from tests.web.conftest import RunningHub, hub_running
from tests.web.test_board import ARTIFACTS, devices_online

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)  # a Monday; London is on GMT
WAIT_MS = 10_000

COMPLETE: dict[str, Any] = {
    "staff": [{"name": "Ms Adeyemi", "role": "involved"}, {"name": "Mr Hale", "role": "witness"}],
    "before": "Sam was upset after break; the hall was loud and he threw chairs in the classroom.",
    "risk": "Sam and two other children nearby could have been hurt by the chairs.",
    "de_escalation": "Calm voice, offered the sensory room and a drink, moved the other children out.",
    "condition": "Calm and tired afterwards; had a drink and a snack.",
    "injuries_child": "None seen; checked by the first aider.",
    "injuries_staff": "None.",
    "first_aid": "Checked by the first aider at 10:20, no treatment needed.",
    "child_account": "Sam said the noise in the hall was too much; he drew how he felt.",
    "classification": "seclusion",
    "what_will_change": "A quiet space offered before break; ear defenders available.",
}
# Words that do not respect the child, or that are system words, never on a staff page.
UNKIND = ("restrain", "offender", "incident subject", "perpetrator", "naughty", "non-compliant")


class Hub:
    """A hub in this process on a fake clock: device events go straight to the service."""

    def __init__(self, tmp_path: Path) -> None:
        site = write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
        self.clock = FakeClock(T0)
        self.store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
        self.service = HubService(load_sites([site]), self.store, self.clock, Topics())
        self.app = create_app(self.service)
        self.api = TestClient(self.app)
        self.clients: list[TestClient] = [self.api]
        self.seq: dict[str, int] = {}

    def token(self, role: Role, *sites: str, name: str = "", dsl: bool = False) -> str:
        chosen = list(sites) if sites else ([SITE] if role in ("staff", "senior") else [])
        return create_token(self.store, name or f"{role}-user", role, chosen, dsl, T0)

    def bearer(self, role: Role, *sites: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, *sites)}"}

    def browser(self, role: Role, *sites: str, name: str = "", dsl: bool = False) -> TestClient:
        """A signed-in browser: its own cookie jar with the session cookie of a new token."""
        client = TestClient(self.app)
        self.clients.append(client)
        signed = client.post("/login", data={"token": self.token(role, *sites, name=name, dsl=dsl)})
        assert signed.status_code == 200, signed.text
        return client

    def event(self, device: str, kind: str, value: str, t: float) -> None:
        self.events_together([(device, kind, value, t)], t)

    def events_together(self, readings: list[tuple[str, str, str, float]], arrives: float) -> None:
        """Readings (device, kind, value, seconds after T0) that reach the hub in one batch at `arrives`
        (as a device's outbox replays them after an outage)."""
        self.clock.set(T0 + dt.timedelta(seconds=arrives))
        batch = []
        for device, kind, value, t in readings:
            self.seq[device] = self.seq.get(device, 0) + 1
            body = {
                "v": 1,
                "id": f"{device}:0:{self.seq[device]}",
                "seq": self.seq[device],
                "ts": format_ts(T0 + dt.timedelta(seconds=t)),
                "kind": kind,
                "value": value,
            }
            topic = f"seclusion/v1/{SITE}/calm-1/{device}/event"
            batch.append(Inbound(topic, json.dumps(body).encode(), self.clock.now(), 1, 1))
        self.service.process(list(batch))

    def let_out(self, t: float) -> dict[str, Any]:
        """The door opens at `t` and the room is empty 40 s later: the one episode, ended."""
        self.event("calm-1-door", "door", "open", t)
        self.event("calm-1-door", "occupancy", "vacant", t + 40)
        [ep] = self.api.get("/api/episodes", headers=self.bearer("admin")).json()["items"]
        assert ep["ended_at"] is not None
        return dict(ep)

    def ended_episode(self) -> dict[str, Any]:
        """A child in calm-1 from 10:00:02 to 10:10:02 (GMT), supervised throughout."""
        self.event("calm-1-panel", "observer", "present", 0)
        self.event("calm-1-door", "occupancy", "occupied", 1)
        self.event("calm-1-door", "door", "closed", 2)
        self.event("calm-1-door", "door", "open", 602)
        self.event("calm-1-door", "occupancy", "vacant", 640)
        [ep] = self.api.get("/api/episodes", headers=self.bearer("admin")).json()["items"]
        assert ep["ended_at"] is not None
        return dict(ep)

    def pupil(self, first: str, last: str, year: str = "Year 4") -> str:
        body = {"site": SITE, "first_name": first, "last_name": last, "year_group": year}
        added = self.api.post("/api/pupils", json=body, headers=self.bearer("senior"))
        assert added.status_code == 201, added.text
        return str(added.json()["id"])

    def attach(self, ep: dict[str, Any], pupil_id: str) -> None:
        done = self.api.put(
            f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": pupil_id}, headers=self.bearer("staff")
        )
        assert done.status_code == 200, done.text

    def step(
        self, ep: dict[str, Any], path: str, body: Any = None, role: Role = "staff", dsl: bool = False
    ) -> None:
        headers = {"Authorization": f"Bearer {self.token(role, dsl=dsl)}"}
        url = f"/api/incidents/{ep['incident_id']}{path}"
        done = (
            self.api.patch(url, json=body, headers=headers)
            if path == ""
            else self.api.post(url, json=body if body is not None else {}, headers=headers)
        )
        assert done.status_code in (200, 201), done.text


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub(tmp_path)
    h.service.start()  # the ingest thread: attaching a child to the room's latest episode goes through it
    yield h
    h.service.stop()
    for client in h.clients:
        client.close()
    h.store.close()


def _text(html: str) -> str:
    """The page's words, as a person reads them (tags, scripts and templates aside)."""
    body = re.sub(r"<(script|template)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def _mode(hub: Hub, mode: str, until: dt.datetime | None = None) -> None:
    body: dict[str, Any] = {"mode": mode}
    if until is not None:
        body |= {"reason": "cleaning the room", "expires_at": format_ts(until)}
    done = hub.api.put(f"/api/rooms/{SITE}/calm-1/mode", json=body, headers=hub.bearer("senior"))
    assert done.status_code == 200, done.text


def _at(hub: Hub, t: float) -> None:
    """The hub's clock at T0 + `t` and its timer run (alerts due, sends)."""
    hub.clock.set(T0 + dt.timedelta(seconds=t))
    hub.service.process([])


def _buttons(html: str) -> list[str]:
    return [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", b)).strip()
        for b in re.findall(r"<button\b[^>]*>(.*?)</button>", html, re.S)
    ]


class _Controls(HTMLParser):
    """The form controls of a page outside <template>, and the ids its labels point at."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[str] = []
        self.labelled: set[str] = set()
        self.lang = ""
        self._template = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "template":
            self._template += 1
        elif tag == "html":
            self.lang = a.get("lang") or ""
        elif self._template:
            return
        elif tag == "label" and a.get("for"):
            self.labelled.add(a["for"] or "")
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append(a.get("id") or f"<{tag} name={a.get('name')} without an id>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "template":
            self._template -= 1


# -- in process


def test_without_a_session_the_pages_send_you_to_sign_in_and_show_nothing(hub: Hub) -> None:
    ep = hub.ended_episode()
    for path in ("/records", f"/records/{ep['incident_id']}"):
        response = hub.api.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login", path
        assert "calm-1" not in response.text
    # A bearer token is not a page session: the pages are for people signed in with the cookie.
    bearer = hub.api.get(f"/records/{ep['incident_id']}", headers=hub.bearer("admin"), follow_redirects=False)
    assert bearer.status_code == 303
    # The script and the style sheet are code, open like the board's.
    script = hub.api.get("/static/records/records.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert hub.api.get("/static/records/records.css").status_code == 200
    assert hub.api.get("/static/records/secrets.txt").status_code == 404


def test_another_sites_record_is_not_found_and_their_list_is_empty(hub: Hub) -> None:
    ep = hub.ended_episode()
    outsider = hub.browser("staff", "other-school", name="Mr Elsewhere")
    page = outsider.get(f"/records/{ep['incident_id']}")
    assert page.status_code == 404
    assert "Record not found" in page.text and "Calm room" not in page.text and "10:00" not in page.text
    assert outsider.get("/api/incidents/" + ep["incident_id"]).status_code == 403  # the API agrees
    assert outsider.get("/records/no-such-record").status_code == 404
    listing = outsider.get("/records")
    assert listing.status_code == 200 and "Nothing to do" in listing.text and "Calm room" not in listing.text
    # and the same record is there for the site's own staff
    own = hub.browser("staff", name="Ms Own")
    assert own.get(f"/records/{ep['incident_id']}").status_code == 200
    assert "Calm room calm-1" in own.get("/records").text


def test_each_user_sees_only_the_steps_they_may_take_now(hub: Hub) -> None:
    """Given a record completed and recorded, when staff, a DSL and senior staff open it, then only a
    DSL is offered to withhold the written copy, and only senior staff review and sign off."""
    ep = hub.ended_episode()
    url = f"/records/{ep['incident_id']}"
    staff = hub.browser("staff", name="Ms Staff")
    dsl = hub.browser("staff", name="Mr Safeguarding", dsl=True)
    senior = hub.browser("senior", name="Mrs Senior")

    awaiting = _buttons(staff.get(url).text)
    assert "Mark as recorded" in awaiting and "Save the record" in awaiting
    assert "The written copy was sent" not in awaiting  # the copy is made from the record: not yet

    hub.attach(ep, hub.pupil("Sam", "Taylor"))
    hub.step(ep, "", COMPLETE)
    hub.step(ep, "/record")
    staff_sees = _buttons(staff.get(url).text)
    assert "Mark as recorded" not in staff_sees
    assert "Record a contact with the parents" in staff_sees and "The written copy was sent" in staff_sees
    assert "Withhold the written copy" not in staff_sees
    assert "Withhold the written copy" in _buttons(dsl.get(url).text)
    assert "Withhold the written copy" not in _buttons(senior.get(url).text)  # senior, but not a DSL

    hub.step(ep, "/parent-contacts", {"method": "phone", "outcome": "reached"})
    hub.step(ep, "/parent-contacts", {"kind": "copy", "method": "letter", "outcome": "sent"})
    hub.step(
        ep,
        "",
        {"debrief_child": "Talked with Sam.", "debrief_staff": "Team talk.", "follow_up_offered": True},
    )
    staff_page = staff.get(url).text
    assert "Review" not in _buttons(staff_page) and "Sign off" not in _buttons(staff_page)
    assert "A senior member of staff reviews the record" in staff_page
    assert "Review" in _buttons(senior.get(url).text)
    # The list: staff have nothing left to do on it; senior staff have the review to do.
    assert "Nothing to do" in staff.get("/records").text
    senior_list = senior.get("/records").text
    assert "Parents told: waiting for a senior member of staff to review it" in senior_list

    hub.step(ep, "/review", {"note": "Plan updated."}, role="senior")
    assert "Sign off" not in _buttons(staff.get(url).text)
    signing = _buttons(senior.get(url).text)
    assert "Sign off" in signing and "Review" not in signing

    hub.step(ep, "/sign-off", role="senior")
    closed = staff.get(url).text
    assert 'id="record-form"' not in closed and '<textarea id="f-' not in closed  # read-only now
    assert "This record was signed off by senior-user" in closed
    assert "Add a dated correction" in _buttons(closed)
    assert COMPLETE["risk"] in closed
    assert (
        "As the hub knew it when the record was signed off" in closed and 'id="changed-since"' not in closed
    )

    # The 10-minute warning acknowledged after the sign-off: the page keeps the alert as signed, and
    # says plainly that the hub has learned more since.
    admin = hub.bearer("admin")
    alerts = hub.api.get("/api/alerts", params={"state": "all", "episode_id": ep["id"]}, headers=admin)
    [warning] = [a for a in alerts.json()["items"] if a["kind"] == "duration_warning"]
    acker = {"Authorization": f"Bearer {hub.token('senior', name='Mr Late')}"}
    assert hub.api.post(f"/api/alerts/{warning['id']}/ack", headers=acker).status_code == 200
    later = _text(staff.get(url).text)
    assert "Since the record was signed off, the hub has learned more about this episode: the alerts" in later
    assert "Not acknowledged" in later and "Acknowledged by Mr Late" not in later


def test_a_record_field_holding_markup_is_shown_as_text(hub: Hub) -> None:
    ep = hub.ended_episode()
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    hub.step(ep, "", {"before": hostile, "staff": [{"name": "<b>Ms Bold</b>", "role": "involved"}]})
    staff = hub.browser("staff")
    page = staff.get(f"/records/{ep['incident_id']}")
    assert page.status_code == 200
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert 'value="&lt;b&gt;Ms Bold&lt;/b&gt;"' in page.text
    # The pages may run only the hub's own scripts.
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_each_table_that_scrolls_on_a_phone_is_a_named_region_a_keyboard_reaches(hub: Hub) -> None:
    """A wide table scrolls inside its own box on a narrow screen: Safari's keyboard does not reach
    such a box unless it can take the focus, and a screen reader names it by its table's heading."""
    ep = hub.ended_episode()
    page = hub.browser("staff").get(f"/records/{ep['incident_id']}")
    assert page.status_code == 200
    wraps = re.findall(r'<div class="table-wrap"[^>]*>', page.text)
    assert wraps
    for wrap in wraps:
        assert 'tabindex="0"' in wrap and 'role="region"' in wrap and "aria-labelledby=" in wrap
    assert '<div class="table-wrap" tabindex="0" role="region" aria-labelledby="h-segments">' in page.text


def test_the_list_gives_status_and_deadline_in_words_and_says_overdue(hub: Hub) -> None:
    hub.ended_episode()
    staff = hub.browser("staff")
    hub.clock.set(dt.datetime(2026, 11, 23, 15, 0, tzinfo=dt.UTC))
    on_time = _text(staff.get("/records").text)
    assert "Calm room calm-1 — Monday 23 November 2026, 10:00" in on_time
    assert "How long 10 minutes" in on_time  # from the door closing at 10:00:02 to its opening at 10:10:02
    assert "Record to complete" in on_time
    assert "Record to be completed by the end of Monday 23 November 2026" in on_time
    assert "OVERDUE" not in on_time
    hub.clock.set(dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC))
    late = _text(staff.get("/records").text)
    assert "OVERDUE: Record to be completed by the end of Monday 23 November 2026" in late


def test_the_list_of_records_to_complete_has_every_one_the_most_overdue_first(hub: Hub) -> None:
    """docs/records.md: the list of records that need something done, "the most urgent first (overdue
    ones at the top)". It is read a page at a time, newest first: every page, or the oldest (the most
    overdue) would be dropped past the first 1000 of a status."""
    # Given 1001 records awaiting their record from a month ago (each a minute after the other), and today's
    ep = hub.ended_episode()
    now = hub.clock.now()
    old = []
    with hub.store.session() as s:
        for i in range(1001):
            opened = now - dt.timedelta(days=30) + dt.timedelta(minutes=i)
            row = IncidentRecord(
                id=str(uuid.uuid4()),
                episode_id=ep["id"],
                site=SITE,
                room="calm-1",
                status="awaiting_record",
                opened_at=opened,
                updated_at=opened,
                ended_at=opened + dt.timedelta(minutes=5),
                record_due_at=opened + dt.timedelta(days=1),
                parent_notice_due_at=opened + dt.timedelta(days=1),
            )
            old.append(row.id)
            s.add(row)
        s.commit()
    # When staff open the list of records to complete
    page = hub.browser("staff").get("/records")
    # Then every record is there once, the oldest (the most overdue) at the top
    assert page.status_code == 200
    listed = re.findall(r'data-incident="([0-9a-f-]{36})"', page.text)
    assert sorted(listed) == sorted([*old, ep["incident_id"]])
    assert listed[0] == old[0], "the most overdue record is not at the top"


def test_the_record_shows_the_episode_in_local_time_and_its_alerts(hub: Hub) -> None:
    # Summer time: London is an hour ahead of UTC, and the page says the school's time.
    hub.clock.set(dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC))
    start = (dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC) - T0).total_seconds()
    hub.event("calm-1-panel", "observer", "present", start)
    hub.event("calm-1-door", "occupancy", "occupied", start + 1)
    hub.event("calm-1-door", "door", "closed", start + 2)
    hub.event("calm-1-panel", "observer", "absent", start + 60)
    _at(hub, start + 75)  # the lapse's grace runs out: raised on time, and sent
    hub.event("calm-1-panel", "observer", "present", start + 150)
    hub.event("calm-1-door", "door", "open", start + 302)
    hub.event("calm-1-door", "occupancy", "vacant", start + 340)
    admin = hub.bearer("admin")
    [ep] = hub.api.get("/api/episodes", headers=admin).json()["items"]
    alerts = hub.api.get("/api/alerts", params={"state": "all", "episode_id": ep["id"]}, headers=admin)
    [lapse] = [a for a in alerts.json()["items"] if a["kind"] == "supervision_lapse"]
    acker = {"Authorization": f"Bearer {hub.token('staff', name='Mr Duty')}"}
    assert hub.api.post(f"/api/alerts/{lapse['id']}/ack", headers=acker).status_code == 200
    staff = hub.browser("staff", name="Ms Reader")
    page = _text(staff.get(f"/records/{ep['incident_id']}").text)
    assert "Times are the school's local time (Europe/London)" in page
    assert "Started Monday 1 June 2026, 10:00:02 Ended Monday 1 June 2026, 10:05:02" in page
    assert "Total time 5 minutes Door closed for 5 minutes Door Not locked or held" in page
    assert "1 10:00:02 10:05:02 5 minutes" in page  # the one time the door was closed
    assert (
        "Supervised 3 minutes Not supervised 2 minutes (longest single time: 2 minutes) Not known none"
        in page
    )
    assert "10:01:00 10:02:30 2 minutes" in page  # the lapse: from, to, how long (rounded up)
    assert re.search(
        r"Critical: Nobody at the viewing panel 10:01:15 Acknowledged by Mr Duty at \d\d:\d\d:\d\d"
        r" Ended at 10:02:30",
        page,
    )
    assert "Information: A child is in a closed room 10:00:02 No acknowledgement needed" in page
    with hub.store.session() as s:
        reads = s.exec(select(AuditEntry).where(AuditEntry.actor == "Ms Reader")).all()
    assert {(r.action, r.target_type) for r in reads} >= {("read", "incident"), ("read", "episode")}


def test_a_record_says_an_alert_learnt_of_late_was_never_sent_and_when_its_condition_ended(
    hub: Hub,
) -> None:
    # Given a lapse the hub learnt of only once it was over (the panel's readings arrived together,
    # as from an outbox after an outage), and one it raised on time and nobody acknowledged
    hub.event("calm-1-panel", "observer", "present", 0)
    hub.event("calm-1-door", "occupancy", "occupied", 1)
    hub.event("calm-1-door", "door", "closed", 2)
    hub.events_together(
        [("calm-1-panel", "observer", "absent", 60), ("calm-1-panel", "observer", "present", 150)], 200
    )
    hub.event("calm-1-panel", "observer", "absent", 300)
    _at(hub, 315)
    ep = hub.let_out(400)
    # When a member of staff reads the record
    page = _text(hub.browser("staff").get(f"/records/{ep['incident_id']}").text)
    # Then the late one says when it was due, that it reached nobody, and when the lapse itself ended
    # by the panel's clock, not when the hub heard of it
    assert (
        "Critical: Nobody at the viewing panel 10:03:20 (due at 10:01:15; the hub learnt of it late)"
        " Not sent: already over when the hub learnt of it Ended at 10:02:30"
    ) in page
    # And the one raised on time and never acknowledged says so, ended when the door opened
    assert "Critical: Nobody at the viewing panel 10:05:15 Not acknowledged Ended at 10:06:40" in page
    assert "Not acknowledged Ended at 10:03:20" not in page
    # And the API's facts say the same
    record = hub.api.get(f"/api/incidents/{ep['incident_id']}", headers=hub.bearer("admin")).json()
    lapses = [a for a in record["auto"]["alerts"] if a["kind"] == "supervision_lapse"]
    assert [(a["late"], a["sent"], a["due_at"], a["condition_ended_at"]) for a in lapses] == [
        (True, False, "2026-11-23T10:01:15.000Z", "2026-11-23T10:02:30.000Z"),
        (False, True, "2026-11-23T10:05:15.000Z", "2026-11-23T10:06:40.000Z"),
    ]


def test_a_record_says_when_an_alert_held_in_maintenance_was_first_sent(hub: Hub) -> None:
    # Given a lapse due at 10:01:15 in a room in maintenance, held, then sent when the maintenance ended
    # at 10:16:40 and never acknowledged
    hub.event("calm-1-panel", "observer", "present", 0)
    _mode(hub, "maintenance", T0 + dt.timedelta(hours=1))
    hub.event("calm-1-door", "occupancy", "occupied", 1)
    hub.event("calm-1-door", "door", "closed", 2)
    hub.event("calm-1-panel", "observer", "absent", 60)
    _at(hub, 75)
    hub.clock.set(T0 + dt.timedelta(seconds=1000))
    _mode(hub, "normal")
    _at(hub, 1000)
    hub.event("calm-1-panel", "observer", "present", 1100)
    ep = hub.let_out(1200)
    # Then its record says nobody was told before then (not "not acknowledged" from 10:01:15)
    page = _text(hub.browser("staff").get(f"/records/{ep['incident_id']}").text)
    assert (
        "Critical: Nobody at the viewing panel 10:01:15 (held while the room was in maintenance; first sent"
        " at 10:16:40) Not acknowledged Ended at 10:18:20"
    ) in page


def test_a_record_shows_who_resolved_an_alert_by_hand_and_why(hub: Hub) -> None:
    hub.event("calm-1-panel", "observer", "present", 0)
    hub.event("calm-1-door", "occupancy", "occupied", 1)
    hub.event("calm-1-door", "door", "closed", 2)
    hub.event("calm-1-panel", "observer", "absent", 60)
    _at(hub, 75)
    items = hub.api.get("/api/alerts", headers=hub.bearer("senior")).json()["items"]
    [lapse] = [a for a in items if a["kind"] == "supervision_lapse"]
    note = "The teacher was in the room with him"
    done = hub.api.post(
        f"/api/alerts/{lapse['id']}/resolve", json={"note": note}, headers=hub.bearer("senior")
    )
    assert done.status_code == 200, done.text
    hub.event("calm-1-panel", "observer", "present", 150)
    ep = hub.let_out(300)
    page = _text(hub.browser("staff").get(f"/records/{ep['incident_id']}").text)
    assert f"Not acknowledged Resolved by senior-user at 10:01:15: “{note}”" in page
    record = hub.api.get(f"/api/incidents/{ep['incident_id']}", headers=hub.bearer("admin")).json()
    [resolved] = [a for a in record["auto"]["alerts"] if a["kind"] == "supervision_lapse"]
    assert (resolved["resolved_by"], resolved["resolution_note"]) == ("senior-user", note)


def test_a_record_says_plainly_when_a_devices_readings_may_be_missing(hub: Hub) -> None:
    # Given an episode during which the panel's events 2 to 4 never reached the hub (a gap in its seq)
    hub.event("calm-1-panel", "observer", "present", 0)
    hub.event("calm-1-door", "occupancy", "occupied", 1)
    hub.event("calm-1-door", "door", "closed", 2)
    hub.seq["calm-1-panel"] += 3
    hub.event("calm-1-panel", "observer", "present", 300)
    hub.event("calm-1-door", "door", "open", 602)
    hub.event("calm-1-door", "occupancy", "vacant", 640)
    [ep] = hub.api.get("/api/episodes", headers=hub.bearer("admin")).json()["items"]
    assert ep["possible_loss"] is True
    # Then its record says so beside the times, and the API's filled-in part carries it
    page = _text(hub.browser("staff").get(f"/records/{ep['incident_id']}").text)
    assert "Readings missing Some of a device's readings may be missing" in page
    auto = hub.api.get(f"/api/incidents/{ep['incident_id']}", headers=hub.bearer("staff")).json()["auto"]
    assert auto["possible_loss"] is True


def test_a_record_says_plainly_when_its_times_rest_on_a_device_clock_that_was_wrong(hub: Hub) -> None:
    # Given an episode whose door device's clock read 1970 (a Pi that booted without the network)
    hub.event("calm-1-panel", "observer", "present", 0)
    for n, (kind, value) in enumerate((("occupancy", "occupied"), ("door", "closed")), start=1):
        body = {"v": 1, "id": f"calm-1-door:0:{n}", "seq": n, "ts": f"1970-01-01T00:00:0{n}.000Z"}
        payload = json.dumps({**body, "kind": kind, "value": value}).encode()
        arrived = T0 + dt.timedelta(seconds=n)
        hub.clock.set(arrived)
        hub.service.process(
            [Inbound(f"seclusion/v1/{SITE}/calm-1/calm-1-door/event", payload, arrived, 1, 1)]
        )
    [ep] = hub.api.get("/api/episodes", headers=hub.bearer("admin")).json()["items"]
    assert ep["clock_uncertain"] is True and ep["started_at"] == "2026-11-23T10:00:02.000Z"
    # Then its record says so beside the times
    page = _text(hub.browser("staff").get(f"/records/{ep['incident_id']}").text)
    assert "Device clocks A device's clock was wrong, was set, or restarted during this time" in page


def test_the_register_is_listed_only_while_the_child_is_chosen_and_that_read_is_audited(hub: Hub) -> None:
    ep = hub.ended_episode()
    sam = hub.pupil("Sam", "Taylor")
    hub.pupil("Aisha", "Khan", "Year 5")
    staff = hub.browser("staff", name="Ms Chooser")
    url = f"/records/{ep['incident_id']}"
    choosing = staff.get(url).text
    assert "Sam Taylor, Year 4" in choosing and "Aisha Khan, Year 5" in choosing
    assert "Not chosen yet" in choosing
    with hub.store.session() as s:
        reads = s.exec(select(AuditEntry).where(AuditEntry.actor == "Ms Chooser")).all()
    assert ("read", "pupils", SITE) in {(r.action, r.target_type, r.target_id) for r in reads}

    hub.attach(ep, sam)
    chosen = staff.get(url).text
    assert "This record is about <strong>Sam Taylor</strong>" in chosen
    assert "Aisha" not in chosen and "Khan" not in chosen, "another child's name on the page"
    assert "Choose a different child" in chosen
    again = staff.get(url, params={"choose": "child"}).text
    assert "Aisha Khan" in again and "selected>Sam Taylor" in again


def test_the_pages_are_labelled_in_british_english_and_kind_words(hub: Hub) -> None:
    ep = hub.ended_episode()
    hub.pupil("Sam", "Taylor")
    staff = hub.browser("staff", dsl=True)
    for path in ("/records", f"/records/{ep['incident_id']}"):
        html = staff.get(path).text
        controls = _Controls()
        controls.feed(html)
        assert controls.lang == "en-GB"
        unlabelled = [c for c in controls.controls if c not in controls.labelled]
        assert unlabelled == [], f"controls without a label on {path}: {unlabelled}"
        assert html.count("<h1>") == 1
        words = _text(html).lower()
        assert [w for w in UNKIND if w in words] == [], path
    record = staff.get(f"/records/{ep['incident_id']}").text
    for label in (
        "What happened just before?",
        "What was the risk of harm that made this necessary?",
        "What was tried first (de-escalation, less restrictive options)?",
        "The child&#39;s own account and views",
        "If the child does not speak, how did they communicate this?",
        "The child chose to use the room (voluntary)",
    ):
        assert label in record
    assert 'role="alert"' in record
    assets = "".join(
        (Path(__file__).resolve().parents[2] / "hub/seclusion_hub/web" / name).read_text().lower()
        for name in ("records.js", "templates/record.html", "templates/records_list.html")
    )
    assert [w for w in UNKIND if w in assets] == []
    assert "http://" not in assets and "https://" not in assets, "every asset is the hub's own"


# -- in a real browser


def _sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/")


def _done(page: Page, words: str) -> None:
    expect(page.locator("#done")).to_have_text(words, timeout=WAIT_MS)


@pytest.mark.integration
def test_a_record_is_completed_from_the_board_to_the_parents_pdf(
    tmp_path: Path, mosquitto: Mosquitto, browser: Browser
) -> None:
    """Given a child was in calm-1 for 10 minutes (real device events through Mosquitto), when staff
    follow the board's link to the record, choose the child, complete it, mark it recorded, tell the
    parents and send the copy, and senior staff review and sign it off, then the record is read-only,
    takes a dated correction, and the parents' written copy is a PDF."""
    with hub_running(tmp_path, mosquitto, [two_device_room("calm-1")]) as hub:
        door, panel = devices_online(mosquitto, "calm-1")
        try:
            incident_id = _episode_happens(hub, door, panel)
            staff_page = browser.new_page(viewport={"width": 1024, "height": 900})  # a tablet
            senior_page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            errors: list[str] = []
            for p in (staff_page, senior_page):
                p.on("pageerror", lambda error: errors.append(str(error)))
            current = staff_page
            try:
                _staff_complete_the_record(staff_page, hub, incident_id)
                current = senior_page
                _senior_staff_review_and_sign_off(senior_page, hub, incident_id)
                assert errors == [], "a page's script failed"
            except BaseException:
                ARTIFACTS.mkdir(exist_ok=True)
                current.screenshot(path=ARTIFACTS / "records-failure.png", full_page=True)
                raise
        finally:
            door.close()
            panel.close()


@pytest.mark.integration
def test_two_people_saving_the_record_at_once_the_second_is_told_and_keeps_what_they_typed(
    tmp_path: Path, mosquitto: Mosquitto, browser: Browser
) -> None:
    """Two people had the record page open and each saved the whole form: the second save silently
    undid the first (found by a review). Now each page sends only the fields its person changed, onto
    the version it showed: the second is told that someone else changed the record meanwhile, nothing of
    theirs is saved, and what they typed stays on the page."""
    with hub_running(tmp_path, mosquitto, [two_device_room("calm-1")]) as hub:
        door, panel = devices_online(mosquitto, "calm-1")
        try:
            incident_id = _episode_happens(hub, door, panel)
            now = dt.datetime.now(dt.UTC)
            pages = []
            for name in ("Ms Adeyemi", "Mr Hale"):
                page = browser.new_page(viewport={"width": 1024, "height": 900})
                _sign_in(page, hub.base, create_token(hub.hub.store, name, "staff", [SITE], False, now))
                page.goto(f"{hub.base}/records/{incident_id}")
                pages.append(page)
            first, second = pages
            try:
                # Given both have the record open; the first saves what happened before
                first.get_by_label("What happened just before?").fill(COMPLETE["before"])
                first.get_by_role("button", name="Save the record").click()
                _done(first, "The record was saved.")
                # When the second, whose page still shows the record as it was, saves the risk
                second.get_by_label("What was the risk of harm that made this necessary?").fill(
                    COMPLETE["risk"]
                )
                second.get_by_role("button", name="Save the record").click()
                # Then they are told plainly, nothing is saved, and what they typed is still there
                expect(second.locator("#record-errors")).to_contain_text(
                    "Someone else changed this record while you had it open. Nothing was saved",
                    timeout=WAIT_MS,
                )
                assert "done=saved" not in second.url
                expect(
                    second.get_by_label("What was the risk of harm that made this necessary?")
                ).to_have_value(COMPLETE["risk"])
                token = hub.token("admin", name="Duty office")
                record = api_get(hub.port, token, f"/api/incidents/{incident_id}")["record"]
                assert record == {"before": COMPLETE["before"]}
                # And once they reload, they see the first one's words and save theirs onto them
                second.reload()
                expect(second.get_by_label("What happened just before?")).to_have_value(COMPLETE["before"])
                second.get_by_label("What was the risk of harm that made this necessary?").fill(
                    COMPLETE["risk"]
                )
                second.get_by_role("button", name="Save the record").click()
                _done(second, "The record was saved.")
                record = api_get(hub.port, token, f"/api/incidents/{incident_id}")["record"]
                assert record == {"before": COMPLETE["before"], "risk": COMPLETE["risk"]}
            except BaseException:
                ARTIFACTS.mkdir(exist_ok=True)
                second.screenshot(path=ARTIFACTS / "records-failure.png", full_page=True)
                raise
        finally:
            door.close()
            panel.close()


@pytest.mark.integration
def test_the_adults_fields_are_described_by_their_error(
    tmp_path: Path, mosquitto: Mosquitto, browser: Browser
) -> None:
    """The adults' error ("This is still to complete.") was shown above their rows, but their fields were
    described by the hint alone: a screen reader on "Adult 1: name" heard "invalid" and not why. Now each
    adult's name and role are described by the error too (the name by the hint first), rows added
    after it included."""
    with hub_running(tmp_path, mosquitto, [two_device_room("calm-1")]) as hub:
        door, panel = devices_online(mosquitto, "calm-1")
        try:
            incident_id = _episode_happens(hub, door, panel)
            page = browser.new_page(viewport={"width": 1024, "height": 900})
            try:
                now = dt.datetime.now(dt.UTC)
                _sign_in(
                    page, hub.base, create_token(hub.hub.store, "Ms Adeyemi", "staff", [SITE], False, now)
                )
                page.goto(f"{hub.base}/records/{incident_id}")
                name, role = page.get_by_label("Adult 1: name"), page.get_by_label("Adult 1: role")
                [hint] = [f.hint for f in FIELDS if f.name == "staff"]
                expect(name).to_have_accessible_description(hint)
                page.get_by_role("button", name="Mark as recorded").click()
                missing = "This is still to complete."
                # The error's "⚠" (a CSS ::before) is read out too.
                hinted = re.compile(rf"^{re.escape(hint)} .*{re.escape(missing)}$")
                unhinted = re.compile(rf"^\W*{re.escape(missing)}$")
                expect(page.locator("#err-staff")).to_have_text(missing, timeout=WAIT_MS)
                expect(name).to_have_attribute("aria-invalid", "true")
                expect(name).to_have_accessible_description(hinted)
                expect(role).to_have_accessible_description(unhinted)
                page.get_by_role("button", name="Add another adult").click()
                expect(page.get_by_label("Adult 2: name")).to_have_accessible_description(hinted)
                expect(page.get_by_label("Adult 2: role")).to_have_accessible_description(unhinted)
            except BaseException:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=ARTIFACTS / "records-failure.png", full_page=True)
                raise
        finally:
            door.close()
            panel.close()


def _episode_happens(hub: RunningHub, door: Device, panel: Device) -> str:
    """Sam is in calm-1 for 10 minutes, 12 minutes ago (the devices' outboxes replay it now), with a
    minute and a half when nobody was at the viewing panel. Returns the record's id."""
    token = hub.token("admin", name="Duty office")
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=12)
    panel.event("observer", "present", t0)
    door.event("occupancy", "occupied", t0 + dt.timedelta(seconds=1))
    door.event("door", "closed", t0 + dt.timedelta(seconds=2))
    panel.event("observer", "absent", t0 + dt.timedelta(seconds=120))
    panel.event("observer", "present", t0 + dt.timedelta(seconds=210))
    door.event("door", "open", t0 + dt.timedelta(seconds=602))
    door.event("occupancy", "vacant", t0 + dt.timedelta(seconds=640))  # the re-close grace has passed
    [ep] = poll(
        lambda: [e for e in api_get(hub.port, token, "/api/episodes")["items"] if e["ended_at"]],
        15,
        what="the episode to end",
    )
    for first, last, year in (("Sam", "Taylor", "Year 4"), ("Aisha", "Khan", "Year 5")):
        added = httpx.post(
            f"{hub.base}/api/pupils",
            json={"site": SITE, "first_name": first, "last_name": last, "year_group": year},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert added.status_code == 201, added.text
    return str(ep["incident_id"])


def _staff_complete_the_record(page: Page, hub: RunningHub, incident_id: str) -> None:
    token = create_token(hub.hub.store, "Ms Adeyemi", "staff", [SITE], False, dt.datetime.now(dt.UTC))
    _sign_in(page, hub.base, token)

    # From the live board to the records to complete, and the record.
    page.get_by_role("link", name="Records to complete").click()
    expect(page).to_have_url(f"{hub.base}/records")
    expect(page.get_by_role("heading", level=1)).to_have_text("Records to complete")
    item = page.locator(f'[data-incident="{incident_id}"]')
    expect(item).to_contain_text("Record to complete")
    expect(item).to_contain_text("How long10 minutes")
    expect(item).to_contain_text("Record to be completed by the end of")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "records-list.png", full_page=True)
    item.get_by_role("link").click()
    expect(page).to_have_url(f"{hub.base}/records/{incident_id}")
    expect(page.locator("#total-time")).to_have_text("10 minutes")
    expect(page.locator("#supervision")).to_contain_text("Not supervised")
    expect(page.locator("#missing")).to_contain_text("The child")

    # The child, from the register; after that, no other child's name is on the page.
    page.get_by_role("combobox", name="The child").select_option(label="Aisha Khan, Year 5")
    page.get_by_role("button", name="Save the child").click()
    _done(page, "The child was saved on the record.")
    # Chosen by mistake: taken off again (a `null` child sent by the page), then the right child.
    page.get_by_role("button", name="Take Aisha off this record").click()
    _done(page, "The child was taken off the record.")
    expect(page.locator("#missing")).to_contain_text("The child")
    page.get_by_role("combobox", name="The child").select_option(label="Sam Taylor, Year 4")
    page.get_by_role("button", name="Save the child").click()
    _done(page, "The child was saved on the record.")
    expect(page.locator("#child-name")).to_have_text("Sam Taylor")
    assert "Aisha" not in page.content()

    # The record, in the staff's words; adults as repeatable rows.
    page.get_by_label("Adult 1: name").fill("Ms Adeyemi")
    page.get_by_role("button", name="Add another adult").click()
    expect(page.get_by_label("Adult 2: name")).to_be_focused()
    page.get_by_label("Adult 2: name").fill("Mr Hale")
    page.get_by_label("Adult 2: role").select_option("witness")
    # A field the hub refuses (too long, past a browser that ignores maxlength): the 422 is shown by it.
    before = page.get_by_label("What happened just before?")
    before.evaluate("(el) => el.removeAttribute('maxlength')")
    before.fill("x" * 10_001)
    page.get_by_role("button", name="Save the record").click()
    expect(page.locator("#err-before")).to_contain_text("at most 10000 characters", timeout=WAIT_MS)
    expect(page.locator("#record-errors")).to_contain_text("What happened just before?: String should have")
    expect(before).to_have_attribute("aria-invalid", "true")
    assert "done=saved" not in page.url  # nothing saved: the page did not reload
    before.fill(COMPLETE["before"])
    page.get_by_label("What was the risk of harm that made this necessary?").fill(COMPLETE["risk"])
    page.get_by_label("What was tried first (de-escalation, less restrictive options)?").fill(
        COMPLETE["de_escalation"]
    )
    page.get_by_label("How was the child afterwards?").fill(COMPLETE["condition"])
    page.get_by_label("Any injuries to the child").fill(COMPLETE["injuries_child"])
    page.get_by_label("Any injuries to staff").fill(COMPLETE["injuries_staff"])
    page.get_by_label("First aid or medical checks").fill(COMPLETE["first_aid"])
    page.get_by_label("The child's own account and views").fill(COMPLETE["child_account"])
    page.get_by_label("Seclusion", exact=True).check()
    page.get_by_label("Talking it through with the child afterwards").fill(
        "Talked with Sam the same afternoon."
    )
    page.get_by_label("Date of the talk with the child").fill("2026-11-23")
    page.get_by_label("Talking it through with the staff involved").fill("Team talk after school.")
    page.get_by_role("radio", name="Yes").check()
    page.screenshot(path=ARTIFACTS / "record-form.png", full_page=True)

    # "What will change" is left empty: marking it recorded saves it and says, by label, what is missing.
    page.get_by_role("button", name="Mark as recorded").click()
    errors = page.locator("#record-errors")
    expect(errors).to_contain_text("cannot be marked as recorded yet", timeout=WAIT_MS)
    expect(errors).to_contain_text("What will change to avoid this happening again?")
    expect(errors).to_have_attribute("role", "alert")
    expect(page.locator("#err-what_will_change")).to_have_text("This is still to complete.")
    expect(page.get_by_label("What will change to avoid this happening again?")).to_have_attribute(
        "aria-invalid", "true"
    )
    page.get_by_label("What will change to avoid this happening again?").fill(COMPLETE["what_will_change"])
    page.get_by_role("button", name="Mark as recorded").click()
    _done(page, "The record is marked as recorded.")
    expect(page.locator("#record-status")).to_contain_text(
        "still to tell the parents and send the written copy"
    )
    expect(page.get_by_label("Adult 2: name")).to_have_value("Mr Hale")

    # The parents: told by phone, and the written copy sent. A change not yet saved is saved first.
    page.get_by_label("Date of the talk with the staff").fill("2026-11-24")
    page.get_by_label("How", exact=True).select_option("phone")
    page.get_by_label("Outcome").select_option("reached")
    page.get_by_role("button", name="Record a contact with the parents").click()
    _done(page, "The contact with the parents was recorded.")
    expect(page.get_by_label("Date of the talk with the staff")).to_have_value("2026-11-24")
    expect(page.locator("#parents-told")).to_contain_text("Yes")
    expect(page.get_by_role("button", name="Withhold the written copy")).to_have_count(0)  # not a DSL
    page.get_by_label("How it was sent").select_option("email")
    page.get_by_role("button", name="The written copy was sent").click()
    _done(page, "The written copy is recorded as sent.")
    expect(page.locator("#record-status")).to_have_text(
        "Parents told: waiting for a senior member of staff to review it"
    )
    expect(page.get_by_role("button", name="Review")).to_have_count(0)  # staff do not review
    expect(page.get_by_role("button", name="Sign off")).to_have_count(0)


def _senior_staff_review_and_sign_off(page: Page, hub: RunningHub, incident_id: str) -> None:
    token = create_token(hub.hub.store, "Mrs Brown", "senior", [SITE], False, dt.datetime.now(dt.UTC))
    _sign_in(page, hub.base, token)
    page.goto(f"{hub.base}/records")
    page.locator(f'[data-incident="{incident_id}"]').get_by_role("link").click()
    page.get_by_label("Review note (optional)").fill("Plan updated: quiet space before break.")
    page.get_by_role("button", name="Review", exact=True).click()
    _done(page, "The record is reviewed.")
    page.get_by_label(re.compile("^I have read the record")).check()
    page.get_by_role("button", name="Sign off").click()
    _done(page, "The record is signed off. From now on it changes only by dated corrections.")

    # Read-only: no form, no fields to type in; the record as it was signed.
    expect(page.locator("#record-form")).to_have_count(0)
    expect(page.get_by_role("textbox", name="What happened just before?")).to_have_count(0)
    expect(page.locator("#read-only-note")).to_contain_text("signed off by Mrs Brown")
    expect(page.get_by_text(COMPLETE["risk"])).to_be_visible()
    page.screenshot(path=ARTIFACTS / "record-signed.png", full_page=True)

    # A dated correction, with its author.
    page.get_by_label("Which part does it correct? (optional)").select_option("first_aid")
    page.get_by_label("The correction").fill("The check was at 10:25, not 10:20.")
    page.get_by_role("button", name="Add a dated correction").click()
    _done(page, "The dated correction was added.")
    expect(page.locator("#addenda")).to_contain_text("The check was at 10:25, not 10:20.")
    expect(page.locator("#addenda")).to_contain_text("by Mrs Brown, about “First aid or medical checks”")

    # The parents' written copy, as the link gives it.
    href = page.get_by_role("link", name="Parents' written copy (PDF)").get_attribute("href")
    assert href == f"/api/incidents/{incident_id}/parent-copy.pdf"
    pdf = page.request.get(f"{hub.base}{href}")
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.body().startswith(b"%PDF")


def test_a_senior_who_changed_a_record_to_no_child_is_not_offered_its_review(hub: Hub) -> None:
    """The page offers the review only to those the API lets review: not the senior member of staff who
    changed a completed record to say no child was in the room (the API answers 403)."""
    ep = hub.ended_episode()
    url = f"/records/{ep['incident_id']}"
    hub.attach(ep, hub.pupil("Sam", "Taylor"))
    hub.step(ep, "", COMPLETE)
    hub.step(ep, "/record")
    changer, other = hub.browser("senior", name="Mr Changer"), hub.browser("senior", name="Mrs Other")
    changed = changer.patch(f"/api/incidents/{ep['incident_id']}", json=NO_CHILD)
    assert changed.status_code == 200 and changed.json()["classified_by"] == "Mr Changer"
    assert "Review" not in _buttons(changer.get(url).text)
    assert changer.post(f"/api/incidents/{ep['incident_id']}/review", json={}).status_code == 403
    # The record still names Sam: it is not reviewed as an empty room until he is taken off it.
    named = other.get(url).text
    assert "Review" not in _buttons(named) and "Take Sam off this record" in _buttons(named)
    assert "The record says no child was in the room, but it names Sam." in _text(named)
    off = other.put(f"/api/episodes/{ep['id']}/pupil", json={"pupil_id": None})
    assert off.status_code == 200, off.text
    assert "Review" in _buttons(other.get(url).text)


def test_an_empty_rooms_record_goes_to_a_seniors_review_without_the_parents(hub: Hub) -> None:
    """A sensor reported a child in a room that was empty: staff record it as such and say how they know;
    no parents' steps are offered, and the record waits for a senior member of staff's review."""
    ep = hub.ended_episode()
    url = f"/records/{ep['incident_id']}"
    staff, senior = hub.browser("staff", name="Ms Staff"), hub.browser("senior", name="Mrs Senior")
    form = _text(staff.get(url).text)
    assert "No child was in the room (a sensor still reported one)" in form
    assert "How do you know no child was in the room?" in form
    hub.step(ep, "", NO_CHILD)
    hub.step(ep, "/record")
    page = staff.get(url).text
    assert "the deadlines for telling the parents still stand" in _text(page), "not reviewed yet"
    buttons = _buttons(page)
    assert "Record a contact with the parents" not in buttons and "The written copy was sent" not in buttons
    assert "Review" not in buttons and "Review" in _buttons(senior.get(url).text)
    # A senior member of staff who recorded it (the same name) is not offered its review.
    recorder = hub.browser("senior", name="staff-user")
    assert "Review" not in _buttons(recorder.get(url).text)
    assert "Nothing to do" in staff.get("/records").text
    waiting = "Recorded as no child in the room: waiting for a senior member of staff to review it"
    assert waiting in _text(senior.get("/records").text)
    hub.step(ep, "/review", {"note": "The panel's log agrees."}, role="senior")
    reviewed = _text(senior.get(url).text)
    assert "there are no parents to tell and no written copy to send" in reviewed
    assert "Not needed (no child was in the room): Parents" in reviewed and "Done: Parents" not in reviewed
    assert "Sign off" in _buttons(senior.get(url).text)


def test_the_record_page_names_the_zone_of_a_time_in_the_hour_the_clocks_go_back(tmp_path: Path) -> None:
    """A child in the room from 00:50:02 to 01:20:02 UTC on 25 October 2026 (Europe/London) was shown as
    started 01:50:02, ended 01:20:02: out before in, on the record inspectors read. In the hour that
    happens twice, a time now carries its zone (found by a review of local times)."""
    hub = Hub(tmp_path)
    hub.service.start()
    try:
        start = (dt.datetime(2026, 10, 25, 0, 50, tzinfo=dt.UTC) - T0).total_seconds()
        hub.clock.set(T0 + dt.timedelta(seconds=start))
        hub.event("calm-1-panel", "observer", "present", start)
        hub.event("calm-1-door", "occupancy", "occupied", start + 1)
        hub.event("calm-1-door", "door", "closed", start + 2)
        hub.event("calm-1-door", "door", "open", start + 1802)
        hub.event("calm-1-door", "occupancy", "vacant", start + 1840)
        [ep] = hub.api.get("/api/episodes", headers=hub.bearer("admin")).json()["items"]
        page = _text(hub.browser("staff").get(f"/records/{ep['incident_id']}").text)
        assert "01:50:02 BST" in page and "01:20:02 GMT" in page, page[page.find("Started") :][:200]
    finally:
        hub.service.stop()
        for client in hub.clients:
            client.close()
        hub.store.close()
