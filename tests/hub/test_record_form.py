"""The record page's script, in Debian's Chromium, against the API in process (no server:
every request of the page is answered by FastAPI's TestClient)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Route, sync_playwright

from seclusion_hub.auth import create_token
from tests.hub.test_api import T0
from tests.hub.test_records import COMPLETE, Records
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Records]:
    a = Records(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    yield a
    a.client.close()
    a.store.close()


def test_removing_an_adult_then_taking_a_step_saves_the_removal_first(api: Records) -> None:
    """docs/records.md: "Any step below first saves changes not yet saved in the form." Removing an adult
    (a click, not an `input` event) leaves the form "unchanged" for records.js: a step taken next
    (recording a contact with the parents) saves nothing, the page reloads and the adult is back."""
    ep = api.ended_episode()
    incident = f"/api/incidents/{ep['incident_id']}"
    staff = api.token("staff", "test-school")
    two = {"staff": COMPLETE["staff"], "before": COMPLETE["before"]}  # Ms Adeyemi and Mr Hale
    assert api.client.patch(incident, json=two, headers=staff).status_code == 200
    token = create_token(api.store, "page-user", "staff", ["test-school"], False, T0)
    origin = "http://hub.test"

    def answer(route: Route) -> None:
        request = route.request
        path = request.url.removeprefix(origin)
        api.client.cookies.set("seclusion_session", token)
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("content-type", "if-match", "accept")
        }
        headers["Origin"] = "http://testserver"
        got = api.client.request(request.method, path, content=request.post_data_buffer, headers=headers)
        keep = {k: v for k, v in got.headers.items() if k.lower() in ("content-type", "etag", "location")}
        route.fulfill(status=got.status_code, headers=keep, body=got.content)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route(f"{origin}/**", answer)
            page.goto(f"{origin}/records/{ep['incident_id']}")
            assert page.locator(".staff-name").count() == 2
            page.get_by_role("button", name="Remove adult 2").click()
            assert page.locator(".staff-name").count() == 1
            page.select_option("#contact-method", "phone")
            page.select_option("#contact-outcome", "no_answer")
            with page.expect_navigation():
                page.locator("#contact-form button[type=submit]").click()
        finally:
            browser.close()
    record = api.client.get(incident, headers=staff).json()
    assert len(record["parent_contacts"]) == 1  # the step was taken
    names = [s["name"] for s in record["record"]["staff"]]
    assert names == ["Ms Adeyemi"], f"the adult removed on the page is still on the record: {names}"
