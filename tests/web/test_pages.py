"""Signing in with a token, the session cookie in the API, and the board's page and files, in process."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from seclusion_contract import Topics
from seclusion_hub.api import create_app
from seclusion_hub.auth import create_token
from seclusion_hub.config import load_sites
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.models import AuditEntry
from seclusion_hub.service import HubService
from seclusion_hub.store import Store
from tests.support.hub import SITE, two_device_room, write_site

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


class Pages:
    def __init__(self, tmp_path: Path) -> None:
        site = write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
        self.store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
        self.service = HubService(load_sites([site]), self.store, FakeClock(T0), Topics())
        self.app = create_app(self.service)
        self.client = TestClient(self.app)

    def token(self, role: str = "staff", name: str = "Ms Example") -> str:
        sites = [SITE] if role in ("staff", "senior") else []
        return create_token(self.store, name, role, sites, False, T0)  # type: ignore[arg-type]


@pytest.fixture
def pages(tmp_path: Path) -> Iterator[Pages]:
    p = Pages(tmp_path)
    yield p
    p.client.close()
    p.store.close()


def test_the_board_without_a_session_sends_you_to_the_sign_in_page(pages: Pages) -> None:
    response = pages.client.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    login = pages.client.get("/login")
    assert login.status_code == 200
    assert "seclusion-hub token create" in login.text
    assert 'name="token"' in login.text and 'type="password"' in login.text
    assert "frame-ancestors 'none'" in login.headers["content-security-policy"]


def test_a_wrong_token_gets_the_form_again_with_a_plain_error_and_no_cookie(pages: Pages) -> None:
    response = pages.client.post("/login", data={"token": "sct_not-a-token"}, follow_redirects=False)
    assert response.status_code == 401
    assert "That token is not valid" in response.text
    assert "set-cookie" not in response.headers
    assert pages.client.post("/login", data={}, follow_redirects=False).status_code == 401


def test_only_an_error_about_the_token_marks_the_token_field_invalid(pages: Pages) -> None:
    """A refused token marks its field (aria-invalid, described by the error); a form sent from another
    site's page says so, but the token typed may be right, so the field is not marked."""
    assert "aria-invalid" not in pages.client.get("/login").text
    refused = pages.client.post("/login", data={"token": "sct_not-a-token"})
    assert 'id="login-error"' in refused.text
    assert 'aria-invalid="true" aria-describedby="login-error"' in refused.text
    foreign = pages.client.post(
        "/login", data={"token": pages.token()}, headers={"Origin": "https://elsewhere.example"}
    )
    assert foreign.status_code == 403 and "own sign-in page" in foreign.text
    assert "aria-invalid" not in foreign.text and "{{" not in foreign.text


def test_signing_in_sets_an_httponly_strict_cookie_and_opens_the_board(pages: Pages) -> None:
    """Given a token made by `seclusion-hub token create`, when it is pasted into the form, then the hub
    keeps it in a session cookie that scripts cannot read, and the board greets its holder by name."""
    token = pages.token(name="Ms <Example>")
    response = pages.client.post("/login", data={"token": f"  {token}\n"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"seclusion_session={token};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http (a test server): a Secure cookie would never come back
    board = pages.client.get("/", follow_redirects=False)
    assert board.status_code == 200
    assert "Signed in as <strong>Ms &lt;Example&gt;</strong>" in board.text
    assert "Enable sound" in board.text and "Sound is off" in board.text
    assert '<script src="/static/board.js"' in board.text
    assert board.headers["x-frame-options"] == "DENY"
    with pages.store.session() as s:
        logins = s.exec(select(AuditEntry).where(AuditEntry.action == "login")).all()
    assert [(a.actor, a.target_type) for a in logins] == [("Ms <Example>", "web")]


def test_the_board_links_to_the_review_for_leaders_only(pages: Pages) -> None:
    for role, linked in (("staff", False), ("senior", False), ("leader", True), ("admin", True)):
        client = TestClient(pages.app)
        assert client.post("/login", data={"token": pages.token(role)}).status_code == 200
        board = client.get("/")
        assert board.status_code == 200
        assert ('<a href="/review">Review</a>' in board.text) is linked, role
        assert "{{" not in board.text
        client.close()


def test_over_https_the_cookie_is_secure(pages: Pages) -> None:
    client = TestClient(pages.app, base_url="https://hub.school.example")
    response = client.post("/login", data={"token": pages.token()}, follow_redirects=False)
    assert "Secure" in response.headers["set-cookie"]


def test_the_api_takes_the_session_cookie_wherever_it_takes_a_bearer_token(pages: Pages) -> None:
    pages.client.post("/login", data={"token": pages.token("senior")})
    rooms = pages.client.get("/api/rooms")
    assert rooms.status_code == 200 and rooms.json()["items"][0]["room"] == "calm-1"
    body = {"site": SITE, "room": "calm-1", "started_at": "2026-11-23T09:00:00.000Z", "reason": "door sensor"}
    assert pages.client.post("/api/episodes", json=body).status_code == 201
    # A request that changes something must come from the hub's own pages, not another site's.
    foreign = pages.client.post("/api/episodes", json=body, headers={"Origin": "https://elsewhere.example"})
    assert foreign.status_code == 401
    own = pages.client.post("/api/episodes", json=body, headers={"Origin": "http://testserver"})
    assert own.status_code == 201


def test_a_staff_cookie_has_no_more_rights_than_the_token(pages: Pages) -> None:
    pages.client.post("/login", data={"token": pages.token("staff")})
    assert pages.client.get("/api/dead-letters").status_code == 403


def test_signing_out_clears_the_cookie(pages: Pages) -> None:
    pages.client.post("/login", data={"token": pages.token()})
    assert pages.client.get("/api/rooms").status_code == 200
    response = pages.client.post("/logout", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert 'seclusion_session=""' in response.headers["set-cookie"]
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert pages.client.get("/api/rooms").status_code == 401
    assert pages.client.get("/", follow_redirects=False).status_code == 303


def test_the_board_files_are_served_and_nothing_else(pages: Pages) -> None:
    script = pages.client.get("/static/board.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "EventSource" in script.text
    assert pages.client.get("/static/board.css").headers["content-type"].startswith("text/css")
    for path in ("/static/board.html", "/static/..%2Fapi.py", "/static/nothing.js"):
        assert pages.client.get(path).status_code == 404, path


def test_the_live_stream_is_documented_and_the_pages_are_not(pages: Pages) -> None:
    paths = pages.client.get("/openapi.json").json()["paths"]
    assert "text/event-stream" in paths["/api/live"]["get"]["responses"]["200"]["content"]
    assert not {"/", "/login", "/logout"} & set(paths)


def test_behind_the_schools_https_proxy_the_cookie_is_secure_and_the_pages_may_act(tmp_path: Path) -> None:
    """operations.md puts the hub behind the school's HTTPS reverse proxy, which speaks plain http to it
    with its own Host (nginx's default: the upstream's name). With SECLUSION_PUBLIC_URL saying where
    people reach the hub, the cookie is Secure and the board's own requests (Origin: the public
    address) may act; before, the cookie went out without Secure and Acknowledge was refused (401)."""
    site = write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    service = HubService(load_sites([site]), store, FakeClock(T0), Topics())
    app = create_app(service, public_url="https://hub.school.example/")
    client = TestClient(app, base_url="http://hub:8000")
    try:
        token = create_token(store, "Ms Example", "senior", [SITE], False, T0)
        public = {"Origin": "https://hub.school.example"}
        response = client.post("/login", data={"token": token}, headers=public, follow_redirects=False)
        assert response.status_code == 303
        assert "Secure" in response.headers["set-cookie"]
        # The browser sends the cookie to the proxy over https; the proxy passes it on over http.
        client.cookies.clear()
        cookie = {"Cookie": f"seclusion_session={token}"}
        body = {"site": SITE, "room": "calm-1", "started_at": "2026-11-23T09:00:00.000Z", "reason": "door"}
        assert client.post("/api/episodes", json=body, headers=public | cookie).status_code == 201
        elsewhere = {"Origin": "https://elsewhere.example"}
        assert client.post("/api/episodes", json=body, headers=elsewhere | cookie).status_code == 401
        # The public address's scheme counts too: the same host over plain http is another origin.
        downgraded = {"Origin": "http://hub.school.example"}
        assert client.post("/api/episodes", json=body, headers=downgraded | cookie).status_code == 401
    finally:
        client.close()
        store.close()
