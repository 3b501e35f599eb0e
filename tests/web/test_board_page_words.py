"""The board's words, in Chromium with the hub faked in the page (as test_board_races.py): a lock not
yet heard of, an alert of an earlier day (from a review; each failed before its fix)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from playwright.sync_api import Browser, expect

from seclusion_contract import format_ts
from tests.web.test_board import board_alert
from tests.web.test_board_races import open_board


def room(**changes: Any) -> dict[str, Any]:
    """calm-1 as GET /api/rooms shows it: a room with a door device that has a lock sensor."""
    return {
        "site": "test-school",
        "room": "calm-1",
        "name": "Calm room 1",
        "door": "closed",
        "lock": None,
        "has_lock": True,
        "occupancy": "occupied",
        "observer": "present",
        "online": True,
        "episode_id": "ep-1",
        "episode_started_at": format_ts(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)),
        "episode_start_uncertain": False,
        "supervised": True,
        "mode": "normal",
        "mode_until": None,
        "mode_reason": None,
        "supervision": "observer",
        **changes,
    }


def test_a_lock_reading_not_yet_received_shows_as_not_known(browser: Browser) -> None:
    """docs/board.md: 'Lock (Locked / Not locked, for rooms with a lock sensor) ... A reading the hub has
    not received yet shows as Not known.' The room's door device has a lock sensor, no lock reading has
    come yet: the Lock row says Not known (it was left out, so nothing was said about the lock)."""
    page = browser.new_page()
    open_board(page, [], [room()], '{"test-school": "Europe/London"}')
    card = page.locator('[data-room="test-school/calm-1"]')
    expect(card).to_contain_text("Child in room")
    expect(card.locator("dt", has_text="Lock")).to_have_count(1)
    expect(card.locator("dt:has-text('Lock') + dd")).to_have_text("Not known")


def test_an_alert_raised_on_an_earlier_day_says_which_day(browser: Browser) -> None:
    """A record's overdue alert stays on the board for days. Raised three days ago, the board says which
    day ('Raised 09:00:00' alone reads as this morning)."""
    page = browser.new_page()
    raised = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=3)
    a = board_alert(
        "ro-1", raised, kind="report_overdue", rule="record", severity="warning", room_name="Calm room 1"
    )
    open_board(page, [a], [room(episode_id=None, episode_started_at=None)], '{"test-school": "UTC"}')
    meta = page.locator('[data-alert-id="ro-1"] .meta').first
    expect(meta).to_contain_text("Raised")
    text = meta.inner_text()
    day = raised.strftime("%d").lstrip("0")
    said = (raised.strftime("%a"), raised.strftime("%A"), raised.strftime("%b"), f"/{day}", f" {day}")
    assert any(s in text for s in said), f"no day in {text!r}"
