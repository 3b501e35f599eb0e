"""The live board of a hub serving several schools (a multi-academy trust), in a real browser.

Found by reviewing the board with two sites set up from one template (each school a "Calm room 1").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, expect

from seclusion_hub.api import room_json
from tests.support.hub import two_device_room
from tests.support.processes import Mosquitto
from tests.web.conftest import RunningHub, hub_running
from tests.web.test_board import board_alert

pytestmark = pytest.mark.integration

WAIT_MS = 10_000
SCHOOLS = {"north-school": "North Academy", "south-school": "South Academy"}


@contextmanager
def trust_hub(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[RunningHub]:
    """A hub over two schools of one trust, each with the same "Calm room 1" (one template)."""
    files = []
    for site, name in SCHOOLS.items():
        path = tmp_path / f"{site}.yaml"
        room = {**two_device_room("calm-1"), "name": "Calm room 1"}
        room["devices"] = [{**d, "id": f"{site}-{d['id']}"} for d in room["devices"]]
        path.write_text(
            yaml.safe_dump(
                {
                    "site": site,
                    "name": name,
                    "timezone": "Europe/London",
                    "policy": "england-schools-2026",
                    "rooms": [room],
                },
                sort_keys=False,
            )
        )
        files.append(str(path))
    with hub_running(tmp_path, mosquitto, [], site_files=":".join(files)) as running:
        yield running


def test_an_alert_on_a_trust_board_says_which_schools_room_it_is(
    tmp_path: Path, mosquitto: Mosquitto, browser: Browser
) -> None:
    """A board signed in for both schools (the trust's duty office) names each room card's school once
    it shows more than one (board.js `roomCard`: "Calm room 1 (south-school)"). An alert's card
    (board.js `alertWords`, `fillAlertCard`) says only "Nobody at the viewing panel — Calm room 1": a
    critical lapse at South Academy reads exactly as one at North Academy, and whoever runs to "Calm
    room 1" may run to the wrong school. Nothing on the card (nor its spoken announcement) says which."""
    with trust_hub(tmp_path, mosquitto) as hub:
        token = hub.token("leader", *SCHOOLS, name="Trust duty office")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{hub.base}/login")
            page.get_by_label("Access token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("body")).to_have_attribute("data-live", "on", timeout=WAIT_MS)
            # The room cards say which school (the control)
            south_room = page.locator('[data-room="south-school/calm-1"]')
            expect(south_room).to_contain_text("south-school", timeout=WAIT_MS)
            # When a lapse is raised at South Academy's Calm room 1
            service = hub.hub.service
            with service.lock:
                view = room_json(service.machines[("south-school", "calm-1")], service.clock.now())
            hub.hub.live.publish("room", view)
            raised = dt.datetime.now(dt.UTC)
            alert = board_alert("south-lapse", raised, site="south-school", room_name="Calm room 1")
            hub.hub.live.publish("alert", alert)
            card = page.locator('[data-alert-id="south-lapse"]')
            expect(card).to_contain_text("Calm room 1", timeout=WAIT_MS)
            # Then its card says which school's Calm room 1
            words = card.inner_text()
            assert "south-school" in words or "South Academy" in words, (
                f"the alert's card does not say which school: {words!r}"
            )
        finally:
            page.close()
