"""The live board, in Chromium, says what the record and the parents' copy say about the same episode (from
a cross-surface review; failed when written). The board is fed what the hub's own `GET /api/rooms`
answered in process (a fake clock), through the page's faked hub (as test_board_races.py)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.hub.test_record_truths import _page, _pupil, _recorded, enter_episode
from tests.hub.test_records import Records
from tests.web.test_board_races import open_board

SITE = "test-school"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Records]:
    a = Records(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    yield a
    a.service.stop()
    a.client.close()
    a.store.close()


def test_a_door_held_shut_is_not_called_locked_on_the_board_while_the_record_and_copy_say_not_locked(
    api: Records, browser: Browser
) -> None:
    """calm-1's door device reports its lock with `lock_type: held` (the door held shut, not bolted). During
    the episode the lock reads `engaged`: the board's Lock row said "Locked", while the record page of
    the same episode says "Held shut" and the parents' copy "Closed and held shut, not locked" and "It was
    not locked" (semantics 2.5: `locked` with the device's `lock_type`; docs/parent-copy.md)."""
    staff = api.token("staff", SITE)
    api.event(SITE, "calm-1", "calm-1-panel", "observer", "present", 0)
    api.event(SITE, "calm-1", "calm-1-door", "occupancy", "occupied", 1)
    api.event(SITE, "calm-1", "calm-1-door", "door", "closed", 2)
    api.event(SITE, "calm-1", "calm-1-door", "lock", "engaged", 5)
    rooms = api.client.get("/api/rooms", headers=staff).json()["items"]
    live = next(r for r in rooms if r["room"] == "calm-1")
    assert live["lock"] == "engaged" and live["episode_id"] is not None
    api.event(SITE, "calm-1", "calm-1-door", "lock", "released", 500)
    api.event(SITE, "calm-1", "calm-1-door", "door", "open", 602)
    api.event(SITE, "calm-1", "calm-1-door", "occupancy", "vacant", 603)
    ep = api.client.get(f"/api/episodes/{live['episode_id']}", headers=staff).json()
    assert ep["locked"] is True and ep["lock_type"] == "held"
    incident = _recorded(api, ep, _pupil(api))
    copy = " ".join(
        re.sub(r"<[^>]+>", " ", api.client.get(f"{incident}/parent-copy.html", headers=staff).text).split()
    )
    assert "held shut, not locked" in copy and "It was not locked" in copy
    assert "Held shut" in _page(api, f"/records/{ep['incident_id']}")

    page = browser.new_page()
    open_board(page, [], rooms, '{"test-school": "Europe/London"}')
    card = page.locator('[data-room="test-school/calm-1"]')
    expect(card).to_contain_text("Child in room")
    lock = card.locator("dt:has-text('Lock') + dd").inner_text()
    assert lock != "Locked", (
        "the board says the door was Locked; the record says Held shut, the parents' copy 'It was not locked'"
    )


def test_a_hand_entered_episode_going_on_is_on_the_board_as_entered_by_hand(
    api: Records, browser: Browser
) -> None:
    """The door sensor failed and a senior entered the episode going on: the board showed the room as
    "Room not in use" (its data had no episode), while the record says the child is still in the room."""
    staff = api.token("staff", SITE)
    enter_episode(api, dt.datetime(2026, 11, 23, 9, 55, tzinfo=dt.UTC))
    rooms = api.client.get("/api/rooms", headers=staff).json()["items"]
    page = browser.new_page()
    open_board(page, [], rooms, '{"test-school": "Europe/London"}')
    card = page.locator('[data-room="test-school/calm-1"]')
    expect(card).to_contain_text("Child in room (entered by hand)")
    expect(card).to_contain_text("Supervision not known: no sensor sees this room")
    expect(page.locator('[data-room="test-school/calm-2"]')).to_contain_text("Room not in use")
