"""`GET /api/live` on a real HTTP server: credentials, the SSE frames, sites, keep-alive and shutdown."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.hub import SITE
from tests.support.processes import poll
from tests.web.conftest import RunningHub

pytestmark = pytest.mark.integration


def read_event(lines: Iterator[str], comments: bool = False) -> tuple[str, Any]:
    """The next SSE event as (name, data); with `comments`, a comment line comes back as (":", text)."""
    event = ""
    data: list[str] = []
    for line in lines:
        if line == "":
            if event or data:
                return event or "message", json.loads("\n".join(data))
            continue
        if line.startswith(":"):
            if comments:
                return ":", line[1:].strip()
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    raise EOFError("the stream ended")


def alert(alert_id: str, site: str = SITE, **extra: Any) -> dict[str, Any]:
    return {
        "id": alert_id,
        "kind": "supervision_lapse",
        "severity": "critical",
        "site": site,
        "room": "calm-1",
        **extra,
    }


def login_cookie(hub: RunningHub, token: str) -> str:
    """Sign in through the form, as a browser does; the session cookie as a Cookie header value."""
    response = httpx.post(f"{hub.base}/login", data={"token": token}, timeout=10)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/"
    return f"seclusion_session={response.cookies['seclusion_session']}"


def test_the_live_stream_refuses_a_request_without_valid_credentials(running_hub: RunningHub) -> None:
    url = f"{running_hub.base}/api/live"
    for headers in ({}, {"Authorization": "Bearer sct_nope"}, {"Cookie": "seclusion_session=sct_nope"}):
        response = httpx.get(url, headers=headers, timeout=10)
        assert response.status_code == 401, headers
    assert not running_hub.hub.live.has_subscribers


def test_a_bearer_token_gets_hello_then_the_alerts_and_rooms_of_its_sites(running_hub: RunningHub) -> None:
    """Given a staff member of the test school with the stream open, when alerts for two schools and a
    room change are published, then the stream carries its own school's, in order, and nothing else."""
    live = running_hub.hub.live
    token = running_hub.token("staff", SITE, name="staff-one")
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{running_hub.base}/api/live", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        lines = response.iter_lines()
        name, hello = read_event(lines)
        assert name == "hello"
        assert (hello["v"], hello["user"], hello["role"], hello["sites"]) == (1, "staff-one", "staff", [SITE])
        assert hello["server_time"].endswith("Z")

        live.publish("alert", alert("elsewhere", site="other-school"))
        live.publish("alert", alert("a-1"))
        live.publish("room", {"site": SITE, "room": "calm-1", "door": "closed"})
        assert read_event(lines) == ("alert", alert("a-1"))
        assert read_event(lines) == ("room", {"site": SITE, "room": "calm-1", "door": "closed"})
    # The browser went away: the hub notices and lets go of its queue.
    poll(lambda: not live.has_subscribers, 10, what="the closed stream to be unsubscribed")


def test_the_session_cookie_opens_the_stream_like_a_bearer_token(running_hub: RunningHub) -> None:
    cookie = login_cookie(running_hub, running_hub.token("staff", SITE, name="staff-two"))
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{running_hub.base}/api/live", headers={"Cookie": cookie}) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert read_event(lines)[1]["user"] == "staff-two"
        running_hub.hub.live.publish("alert", alert("a-2"))
        assert read_event(lines) == ("alert", alert("a-2"))


def test_an_open_live_stream_ends_when_its_token_is_revoked(running_hub: RunningHub) -> None:
    """Given a staff member's stream, open with `hello`, when their token is revoked and an alert is
    published, then the stream carries not the alert but `signed_out`, and ends (docs/board.md: revoking
    the token ends the session straight away)."""
    token = running_hub.token("staff", SITE, name="wall screen")
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{running_hub.base}/api/live", headers=headers) as response,
    ):
        lines = response.iter_lines()
        assert read_event(lines)[0] == "hello"
        running_hub.revoke(token)
        assert client.get(f"{running_hub.base}/api/rooms", headers=headers).status_code == 401
        running_hub.hub.live.publish("alert", alert("a-3"))
        assert read_event(lines) == ("signed_out", {})
        with pytest.raises(EOFError):
            read_event(lines, comments=True)


def test_a_quiet_stream_ends_at_its_keep_alive_once_its_token_is_revoked(running_hub: RunningHub) -> None:
    """Given a stream with nothing to carry, when its token is revoked, then it ends at the next
    keep-alive (every 15 s in service) with `signed_out`, not a keep-alive."""
    running_hub.hub.live.keepalive_s = 0.2
    cookie = login_cookie(running_hub, token := running_hub.token("staff", SITE))
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{running_hub.base}/api/live", headers={"Cookie": cookie}) as response,
    ):
        lines = response.iter_lines()
        assert read_event(lines, comments=True)[0] == "hello"
        running_hub.revoke(token)
        deadline = time.monotonic() + 10
        while (event := read_event(lines, comments=True))[0] == "ping":
            assert time.monotonic() < deadline, "the stream went on with keep-alives"
        assert event == ("signed_out", {})


def test_a_quiet_stream_gets_a_keep_alive_event_the_page_sees(running_hub: RunningHub) -> None:
    """A `ping` event, not a comment (EventSource never hands a comment to the page): a board that
    hears nothing for a few keep-alives knows its stream is lost (docs/board.md)."""
    running_hub.hub.live.keepalive_s = 0.2  # 15 s in service
    headers = {"Authorization": f"Bearer {running_hub.token('admin')}"}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{running_hub.base}/api/live", headers=headers) as response,
    ):
        lines = response.iter_lines()
        assert read_event(lines, comments=True)[0] == "hello"
        name, data = read_event(lines, comments=True)
        assert name == "ping" and set(data) == {"server_time"}


def test_stopping_the_hub_ends_the_open_streams_so_the_server_can_stop(running_hub: RunningHub) -> None:
    """Given an open stream, when the hub is told to stop (as by SIGINT), then the stream ends with a
    `reload` event and the HTTP server stops instead of waiting for the browser."""
    headers = {"Authorization": f"Bearer {running_hub.token('admin')}"}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{running_hub.base}/api/live", headers=headers) as response,
    ):
        lines = response.iter_lines()
        assert read_event(lines)[0] == "hello"
        stopper = threading.Thread(target=running_hub.stop)
        stopper.start()
        assert read_event(lines) == ("reload", {"reason": "hub_stopping"})
        try:
            read_event(lines, comments=True)
        except EOFError:
            pass
        else:
            raise AssertionError("the stream went on after `reload`")
        stopper.join(20)
    assert not running_hub.thread.is_alive()


def test_a_stopping_hub_refuses_new_streams(running_hub: RunningHub) -> None:
    running_hub.hub.live.close()
    headers = {"Authorization": f"Bearer {running_hub.token('admin')}"}
    assert httpx.get(f"{running_hub.base}/api/live", headers=headers, timeout=10).status_code == 503
