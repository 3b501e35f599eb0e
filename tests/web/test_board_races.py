"""The live board's script in Debian's Chromium with the hub faked inside the page (an EventSource the
test drives, `fetch` answered by the test), so that races between the live stream and a person's
acknowledgement can be put in an exact order (found by a review)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect

from tests.web.test_board import board_alert

WEB = Path(__file__).resolve().parents[2] / "hub/seclusion_hub/web"
BASE = "http://board.test"

FAKE = r"""
(() => {
  window.__alerts = [];
  window.__rooms = [];
  window.__pendingAck = null;
  class FakeES {
    constructor(url) { this.url = url; this.readyState = 1; this.handlers = {}; window.__es = this;
      setTimeout(() => this.emit("hello", {server_time: new Date().toISOString()}), 0); }
    addEventListener(type, fn) { (this.handlers[type] = this.handlers[type] || []).push(fn); }
    emit(type, data) { for (const fn of this.handlers[type] || []) fn({data: JSON.stringify(data)}); }
    close() { this.readyState = 2; }
  }
  FakeES.CLOSED = 2;
  window.EventSource = FakeES;
  const json = (body) =>
    new Response(JSON.stringify(body), {status: 200, headers: {"Content-Type": "application/json"}});
  const realFetch = window.fetch.bind(window);
  window.fetch = (url, opts) => {
    url = String(url);
    if (url.includes("/ack"))
      return new Promise((resolve) => { window.__pendingAck = (body) => resolve(json(body)); });
    if (url.startsWith("/api/rooms")) return Promise.resolve(json({items: window.__rooms, next: null}));
    if (url.startsWith("/api/alerts")) return Promise.resolve(json({items: window.__alerts, next: null}));
    return realFetch(url, opts);
  };
})();
"""


def alert(alert_id: str, **changes: Any) -> dict[str, Any]:
    """A no-movement alert in calm-1 ("Calm room 1"), waiting for acknowledgement."""
    now = dt.datetime.now(dt.UTC)
    return board_alert(alert_id, now, **{"kind": "no_movement", "room_name": "Calm room 1", **changes})


def open_board(
    page: Page, alerts: list[dict[str, Any]], rooms: list[dict[str, Any]] | None = None, zones: str = "{}"
) -> None:
    """The board's page and script as served, the hub faked in the page (FAKE): its lists hold `alerts`
    and `rooms`, its sites' timezones are `zones` (the page's JSON)."""
    html = (WEB / "board.html").read_text().replace("{{user}}", "Ms Test").replace("{{review}}", "")
    html = html.replace("{{zones}}", zones.replace('"', "&quot;"))

    def serve(route: Any) -> None:
        url = route.request.url
        if url.endswith("/static/board.js"):
            route.fulfill(body=(WEB / "board.js").read_text(), content_type="text/javascript")
        elif url.endswith("/static/board.css"):
            route.fulfill(body=(WEB / "board.css").read_text(), content_type="text/css")
        else:
            route.fulfill(body=html, content_type="text/html")

    page.route(f"{BASE}/**", serve)
    rooms_given = "" if rooms is None else f"\nwindow.__rooms = {json.dumps(rooms)};"
    page.add_init_script(FAKE + f"\nwindow.__alerts = {json.dumps(alerts)};" + rooms_given)
    page.goto(f"{BASE}/")
    expect(page.locator("body")).to_have_attribute("data-live", "on", timeout=5000)


def push(page: Page, a: dict[str, Any]) -> None:
    page.evaluate("a => window.__es.emit('alert', a)", a)


def test_an_acknowledgements_answer_never_brings_back_an_alert_the_stream_said_was_resolved(
    browser: Browser,
) -> None:
    """The acknowledgement is taken in the same batch as the reading that resolves the alert: the live
    stream says resolved, then the request's answer (the alert acknowledged, not yet resolved) comes.
    It put the alert back on the board, announced as new, for up to a minute."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    a = alert("nm-1")
    open_board(page, [a])
    card = page.locator('[data-alert-id="nm-1"]')
    card.get_by_role("button", name="Acknowledge: No movement seen in the room — Calm room 1").click()
    page.wait_for_function("window.__pendingAck !== null")
    now = dt.datetime.now(dt.UTC).isoformat()
    acked = {**a, "acknowledged_at": now, "acknowledged_by": "Ms Test"}
    push(page, {**acked, "resolved_at": now})  # the live stream: the child moved, resolved
    expect(card).to_have_count(0)
    page.evaluate("b => window.__pendingAck(b)", acked)  # the request's answer, older
    # Something new after it, to know the answer has been dealt with: only that is announced.
    push(page, alert("nm-2", room="calm-2", room_name="Calm room 2"))
    news = page.locator("#alert-news p, #alert-news-urgent p")
    expect(news).to_have_count(1)
    assert "Calm room 2" in news.inner_text()
    expect(card).to_have_count(0)
    assert errors == []


def test_a_held_critical_alert_sent_when_maintenance_ends_is_announced(browser: Browser) -> None:
    """Held while the room was in maintenance, it was announced politely as held; once sent (critical,
    waiting for someone, the board beeping) a screen reader heard nothing of it."""
    page = browser.new_page()
    open_board(page, [])
    push(page, alert("held-1", held=True))
    expect(page.locator("#alert-news p")).to_have_count(1)
    push(page, alert("held-1", held=False, late=True))
    expect(page.locator("body")).to_have_attribute("data-alarm", "on")
    urgent = page.locator("#alert-news-urgent p")
    expect(urgent).to_have_count(1)
    assert "Maintenance over" in urgent.inner_text() and "Calm room 1" in urgent.inner_text()
