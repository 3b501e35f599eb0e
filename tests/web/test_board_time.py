"""A room's state that changes by the passing of time alone (a check-in's proof running out, a
maintenance window ending) is pushed to the board when it comes (from a review: the board showed the old
state until its once-a-minute resync, or until some other change touched the room)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from seclusion_contract import format_ts
from tests.support.hub import SITE, Device, api_get, two_device_room
from tests.support.processes import Mosquitto, poll
from tests.web.conftest import hub_running
from tests.web.test_board import signed_in_board

pytestmark = pytest.mark.integration


def test_a_check_in_running_out_shows_not_supervised_on_the_board(
    tmp_path: Path, mosquitto: Mosquitto, browser: Browser
) -> None:
    """Check-in mode (semantics 3.2): a check-in proves observation for `checkin_interval_s`; once it
    runs out the child is not supervised (the grace only delays the alert; 3.4: the lapse counts from
    then). GET /api/rooms says `supervised: false` at once, and so does the board."""
    room = two_device_room("calm-1", checkin_interval_s=3, lapse_grace_s=60)
    room["supervision"] = "checkin"
    with hub_running(tmp_path, mosquitto, [room]) as hub:
        token = hub.token("staff", SITE)
        door = Device(mosquitto.url, SITE, "calm-1", "calm-1-door")
        panel = Device(mosquitto.url, SITE, "calm-1", "calm-1-panel")
        try:
            door.status(online=True)
            panel.status(online=True)
            page = browser.new_page()
            signed_in_board(page, hub)
            panel.event("check", "ok")
            door.event("occupancy", "occupied")
            door.event("door", "closed")
            card = page.locator('[data-room="test-school/calm-1"]')
            expect(card).to_contain_text("Child in room", timeout=10_000)
            expect(card.locator(".supervision")).to_have_text("Supervised", timeout=10_000)
            # The check-in's proof runs out 3 s after it: the hub says not supervised.
            poll(
                lambda: api_get(hub.port, token, "/api/rooms")["items"][0]["supervised"] is False,
                15,
                what="the hub to say the child is not supervised",
            )
            # The board must say so too (within a few seconds, not at its next minute's resync).
            expect(card.locator(".supervision")).to_have_text("Not supervised", timeout=8_000)
        finally:
            door.close()
            panel.close()


def test_a_maintenance_window_that_runs_out_is_not_shown_as_still_on(
    tmp_path: Path, mosquitto: Mosquitto, browser: Browser
) -> None:
    """Maintenance set to end in 3 s: once it has ended, GET /api/rooms says mode 'normal', and the board
    no longer says 'Maintenance until …: alerts held' (telling staff alerts were held when they were not)."""
    with hub_running(tmp_path, mosquitto, [two_device_room("calm-1")]) as hub:
        token = hub.token("staff", SITE)
        senior = hub.token("senior", SITE)
        page = browser.new_page()
        signed_in_board(page, hub)
        until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
        response = httpx.put(
            f"{hub.base}/api/rooms/{SITE}/calm-1/mode",
            json={"mode": "maintenance", "reason": "cleaning", "expires_at": format_ts(until)},
            headers={"Authorization": f"Bearer {senior}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        card = page.locator('[data-room="test-school/calm-1"]')
        expect(card).to_contain_text("alerts held", timeout=10_000)
        poll(
            lambda: api_get(hub.port, token, "/api/rooms")["items"][0]["mode"] == "normal",
            15,
            what="maintenance to end",
        )
        expect(card).not_to_contain_text("alerts held", timeout=8_000)
