"""The live board in a real browser (Debian's Chromium, driven by Playwright) against a running hub.

A screenshot of the board is saved as test-artifacts/board.png (and board-failure.png when it fails).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from seclusion_contract import format_ts
from seclusion_hub.api import room_json
from tests.support.hub import SITE, Device, api_get, two_device_room
from tests.support.processes import Mosquitto, poll
from tests.web.conftest import RunningHub, hub_running

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WAIT_MS = 10_000


def devices_online(mosquitto: Mosquitto, room: str) -> tuple[Device, Device]:
    door = Device(mosquitto.url, SITE, room, f"{room}-door")
    panel = Device(mosquitto.url, SITE, room, f"{room}-panel")
    door.status(online=True)
    panel.status(online=True)
    return door, panel


def publish_room(hub: RunningHub, room: str, **changes: Any) -> dict[str, Any]:
    """What the service publishes when a room changes: the room as GET /api/rooms shows it."""
    service = hub.hub.service
    with service.lock:
        body = {**room_json(service.machines[(SITE, room)], service.clock.now()), **changes}
    hub.hub.live.publish("room", body)
    return body


def board_alert(alert_id: str, raised: dt.datetime, **changes: Any) -> dict[str, Any]:
    """An alert as the service publishes it: a lapse in calm-1 waiting for acknowledgement, unless
    `changes` say otherwise."""
    alert: dict[str, Any] = {
        "id": alert_id,
        "kind": "supervision_lapse",
        "severity": "critical",
        "site": SITE,
        "room": "calm-1",
        "room_name": "Calm room calm-1",
        "episode_id": "ep-1",
        "due_at": format_ts(raised),
        "raised_at": format_ts(raised),
        "late": False,
        "tier": "room",
        "escalations": [{"tier": "room", "at": format_ts(raised)}],
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "note": None,
        "needs_ack": True,
        "held": False,
    }
    return {**alert, **changes}


def signed_in_board(page: Page, hub: RunningHub, name: str = "Ms Example") -> None:
    page.goto(f"{hub.base}/login")
    page.get_by_label("Access token").fill(hub.token("staff", SITE, name=name))
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("body")).to_have_attribute("data-live", "on", timeout=WAIT_MS)


def test_the_board_shows_a_room_and_an_alert_live_and_acknowledges_it(
    running_hub: RunningHub, mosquitto: Mosquitto, browser: Browser
) -> None:
    """Given a hub with two calm rooms, a member of staff signs in on the board; when a child is shut in
    calm-1 with nobody at the viewing panel and an alert is raised, the board shows both without a
    reload, beeps once sound is enabled, and the Acknowledge button asks the hub to acknowledge it."""
    token = running_hub.token("staff", SITE, name="Ms Example")
    door, panel = devices_online(mosquitto, "calm-1")
    devices_online(mosquitto, "calm-2")
    poll(
        lambda: all(r["online"] for r in api_get(running_hub.port, token, "/api/rooms")["items"]),
        15,
        what="both rooms online",
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        _story(page, running_hub, token, door, panel)
        assert errors == [], "the board's script failed"
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "board-failure.png", full_page=True)
        raise
    finally:
        door.close()
        panel.close()


def _story(page: Page, hub: RunningHub, token: str, door: Device, panel: Device) -> None:
    # Signing in: the board sends a stranger to the sign-in page, which takes the token.
    page.goto(f"{hub.base}/")
    expect(page).to_have_url(f"{hub.base}/login")
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{hub.base}/")
    body = page.locator("body")
    expect(body).to_have_attribute("data-live", "on", timeout=WAIT_MS)
    expect(page.get_by_role("heading", name="Calm room calm-1")).to_be_visible()
    expect(page.get_by_role("heading", name="Calm room calm-2")).to_be_visible()
    expect(page.get_by_text("No active alerts.")).to_be_visible()
    expect(page.get_by_text("Sound is off.")).to_be_visible()
    page.evaluate("window.notReloaded = true")

    # A child shut in calm-1 with nobody at the viewing panel: real device events through Mosquitto.
    panel.event("observer", "absent")
    door.event("occupancy", "occupied")
    door.event("door", "closed")
    poll(
        lambda: api_get(hub.port, token, "/api/episodes", open="true")["items"],
        15,
        what="the episode to open",
    )
    publish_room(hub, "calm-1")
    calm1 = page.locator('[data-room="test-school/calm-1"]')
    expect(calm1).to_contain_text("Child in room — ", timeout=WAIT_MS)
    expect(calm1).to_contain_text("Not supervised")
    expect(calm1).to_contain_text("Nobody at the viewing panel")
    clock = calm1.locator(".clock")
    expect(clock).to_have_text(re.compile(r"^\d+:\d\d$"))
    shown = clock.inner_text()
    expect(clock).not_to_have_text(shown, timeout=WAIT_MS)  # it runs, second by second

    # A start the hub is unsure of is shown as such.
    started = format_ts(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4, seconds=12))
    publish_room(
        hub,
        "calm-2",
        door="closed",
        occupancy="occupied",
        episode_id="ep-calm-2",
        episode_started_at=started,
        episode_start_uncertain=True,
        supervised=None,
    )
    calm2 = page.locator('[data-room="test-school/calm-2"]')
    expect(calm2).to_contain_text(re.compile(r"Child in room — about 4:1\d"), timeout=WAIT_MS)
    expect(calm2).to_contain_text("Supervision not known")

    # An alert is raised: it appears without a reload, and the board starts its alarm.
    now = dt.datetime.now(dt.UTC)
    alert: dict[str, Any] = {
        "id": "alert-1",
        "kind": "supervision_lapse",
        "severity": "critical",
        "site": SITE,
        "room": "calm-1",
        "room_name": "Calm room calm-1",
        "episode_id": "ep-1",
        "due_at": format_ts(now - dt.timedelta(seconds=3)),
        "raised_at": format_ts(now),
        "late": True,
        "tier": "room",
        "escalations": [{"tier": "room", "at": format_ts(now)}],
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "note": None,
        "needs_ack": True,
        "held": False,
    }
    hub.hub.live.publish("alert", alert)
    item = page.locator('[data-alert-id="alert-1"]')
    expect(item).to_contain_text("Nobody at the viewing panel — Calm room calm-1", timeout=WAIT_MS)
    expect(item).to_contain_text("Critical")
    expect(item).to_contain_text("Raised late")
    expect(item).to_contain_text("Told: Room staff")
    expect(body).to_have_attribute("data-alarm", "on")
    assert page.evaluate("window.notReloaded") is True, "the page was reloaded"

    # A notice's link (notifications.md: …/#alert-{id}) brings its alert's Acknowledge button forward.
    page.evaluate("location.hash = '#alert-alert-1'")
    expect(item.get_by_role("button", name=re.compile("^Acknowledge"))).to_be_focused(timeout=WAIT_MS)
    expect(item).to_have_class(re.compile(r"\blinked\b"))

    # Sound needs a person's click first; until then the board says it is off.
    page.get_by_role("button", name="Enable sound").click()
    expect(body).to_have_attribute("data-sound", "on")
    expect(page.get_by_text("Sound is off.")).to_be_hidden()

    # Acknowledge: the board asks the hub with the session cookie ...
    acknowledge = page.get_by_role(
        "button", name="Acknowledge: Nobody at the viewing panel — Calm room calm-1"
    )
    with page.expect_request(
        lambda r: r.method == "POST" and r.url == f"{hub.base}/api/alerts/alert-1/ack"
    ) as sent:
        acknowledge.click()
    assert "seclusion_session=" in sent.value.all_headers().get("cookie", "")
    # ... and the hub's confirmation, as the service publishes it, shows who acknowledged.
    acked = {**alert, "acknowledged_at": format_ts(dt.datetime.now(dt.UTC)), "acknowledged_by": "Ms Example"}
    hub.hub.live.publish("alert", acked)
    expect(item).to_contain_text("Acknowledged by Ms Example", timeout=WAIT_MS)
    expect(item.get_by_role("button", name=re.compile("^Acknowledge"))).to_have_count(0)
    expect(body).to_have_attribute("data-alarm", "off")

    # A warning that waits for acknowledgement, and one held because its room is in maintenance.
    hub.hub.live.publish(
        "alert",
        {**alert, "id": "alert-2", "kind": "duration_warning", "severity": "warning", "late": False},
    )
    hub.hub.live.publish(
        "alert",
        {
            **alert,
            "id": "alert-3",
            "room": "calm-2",
            "room_name": "Calm room calm-2",
            "held": True,
            "late": False,
        },
    )
    expect(page.locator('[data-alert-id="alert-3"]')).to_contain_text("Held: room in maintenance")
    expect(page.locator('[data-alert-id="alert-2"]')).to_contain_text("Time in the room is getting long")
    expect(body).to_have_attribute("data-alarm", "off")  # a held alert is not sounded
    # A record's overdue alerts name the step that is late (its rule), one alert per step.
    for n, (step, words) in enumerate(
        [
            ("parent_copy", "The parents' written copy is overdue"),
            ("authority_notice", "The report to the authority is overdue"),
            ("a-newer-step", "The written record is overdue"),
        ]
    ):
        overdue = {
            **acked,
            "id": f"report-{n}",
            "kind": "report_overdue",
            "severity": "warning",
            "rule": step,
        }
        hub.hub.live.publish("alert", overdue)
        expect(page.locator(f'[data-alert-id="report-{n}"]')).to_contain_text(f"{words} — Calm room calm-1")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "board.png", full_page=True)

    # A resolved alert leaves the board.
    hub.hub.live.publish(
        "alert", {**alert, "id": "alert-2", "resolved_at": format_ts(dt.datetime.now(dt.UTC))}
    )
    expect(page.locator('[data-alert-id="alert-2"]')).to_have_count(0, timeout=WAIT_MS)

    # When the stream is lost, the board says so plainly.
    hub.hub.live.close()
    expect(page.get_by_text("Live updates lost — reconnecting")).to_be_visible(timeout=WAIT_MS)
    expect(body).to_have_attribute("data-live", "off")


def test_a_real_lapse_reaches_the_board_and_is_acknowledged_from_it(
    tmp_path: Path, mosquitto: Mosquitto, browser: Browser
) -> None:
    """Given a room whose lapse grace is 2 s and a member of staff on the board; when the observer
    leaves the viewing panel of an occupied, closed room, then the hub's own alert appears on the board
    without a reload, and its Acknowledge button acknowledges it at the hub, through the board."""
    with hub_running(tmp_path, mosquitto, [two_device_room("calm-1", lapse_grace_s=2)]) as hub:
        token = hub.token("staff", SITE, name="Mr Board")
        door, panel = devices_online(mosquitto, "calm-1")
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            page.goto(f"{hub.base}/login")
            page.get_by_label("Access token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            body = page.locator("body")
            expect(body).to_have_attribute("data-live", "on", timeout=WAIT_MS)
            page.evaluate("window.notReloaded = true")

            alert = _child_shut_in_alone(hub, door, panel, token)
            item = page.locator(f'[data-alert-id="{alert["id"]}"]')
            expect(item).to_contain_text("Nobody at the viewing panel — Calm room calm-1", timeout=WAIT_MS)
            expect(body).to_have_attribute("data-alarm", "on")
            assert page.evaluate("window.notReloaded") is True, "the page was reloaded"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / "board-real-alert.png", full_page=True)

            item.get_by_role("button", name=re.compile("^Acknowledge")).click()
            expect(item).to_contain_text("Acknowledged by Mr Board", timeout=WAIT_MS)
            expect(body).to_have_attribute("data-alarm", "off")
            stored = api_get(hub.port, token, f"/api/alerts/{alert['id']}")
            assert (stored["acknowledged_by"], stored["acknowledged_via"]) == ("Mr Board", "board")
            assert stored["resolved_at"] is None  # acknowledged, not resolved: the child is still alone

            # When its token is revoked, the open board says it is signed out with the next change, at
            # once: not after the browser's reconnect (3 s) is refused.
            hub.revoke(token)
            publish_room(hub, "calm-1")
            expect(page.get_by_text("You are signed out")).to_be_visible(timeout=2_000)
            expect(body).to_have_attribute("data-live", "off")
            assert page.evaluate("window.notReloaded") is True, "the page was reloaded"
            assert errors == [], "the board's script failed"
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / "board-real-failure.png", full_page=True)
            raise
        finally:
            door.close()
            panel.close()


def test_a_refused_token_is_read_out_and_tied_to_its_field(running_hub: RunningHub, browser: Browser) -> None:
    """The sign-in page's error stood apart from the token field: a screen reader on the field heard
    nothing of it. Now the error is an alert, the field is marked invalid and described by it, and the
    cursor is back in the field to try again."""
    page = browser.new_page()
    try:
        page.goto(f"{running_hub.base}/login")
        field = page.get_by_label("Access token")
        expect(field).not_to_have_attribute("aria-invalid", "true")
        expect(page.get_by_role("alert")).to_have_count(0)
        field.fill("sct_not-a-token")
        page.get_by_role("button", name="Sign in").click()
        words = "That token is not valid (unknown, mistyped or revoked). Try again."
        expect(page.get_by_role("alert")).to_have_text(words)
        expect(field).to_have_attribute("aria-invalid", "true")
        expect(field).to_have_accessible_description(words)
        expect(field).to_be_focused()
        # Typed again, right this time: signed in.
        field.fill(running_hub.token("staff", SITE, name="Ms Example"))
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{running_hub.base}/")
    finally:
        page.close()


def test_the_board_shows_times_in_the_sites_timezone_whatever_the_browsers(
    running_hub: RunningHub, browser: Browser
) -> None:
    """A laptop still set to another zone (or a leader away) showed the hub's times in its own zone: a
    lapse raised at 10:15:02 in a London school read 05:15:02 in New York's. Now the school's clock."""
    token = running_hub.token("staff", SITE, name="Ms Example")
    context = browser.new_context(timezone_id="America/New_York", locale="en-GB")
    page = context.new_page()
    try:
        page.goto(f"{running_hub.base}/login")
        page.get_by_label("Access token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("body")).to_have_attribute("data-live", "on", timeout=WAIT_MS)
        raised = dt.datetime(2026, 6, 15, 9, 15, 2, tzinfo=dt.UTC)  # 10:15:02 in London (BST)
        running_hub.hub.live.publish(
            "alert",
            {
                "id": "alert-tz",
                "kind": "supervision_lapse",
                "severity": "critical",
                "site": SITE,
                "room": "calm-1",
                "room_name": "Calm room calm-1",
                "episode_id": "ep-1",
                "due_at": format_ts(raised),
                "raised_at": format_ts(raised),
                "late": False,
                "tier": "room",
                "escalations": [{"tier": "room", "at": format_ts(raised)}],
                "acknowledged_at": format_ts(raised + dt.timedelta(minutes=1)),
                "acknowledged_by": "Mr Duty",
                "resolved_at": None,
                "resolved_by": None,
                "note": None,
                "needs_ack": True,
                "held": False,
            },
        )
        item = page.locator('[data-alert-id="alert-tz"]')
        # School time (London, summer), whatever the browser's zone; raised on an earlier day than
        # today, so its day comes first (the day as the browser's language writes it).
        expect(item).to_contain_text(re.compile(r"Raised \S.*15.* 10:15:02"), timeout=WAIT_MS)
        expect(item).to_contain_text(re.compile(r"Acknowledged by Mr Duty at \S.*15.* 10:16:02"))
        assert page.evaluate("new Date().getTimezoneOffset()") in (240, 300)  # the browser is in New York
    finally:
        context.close()


# The contrast (WCAG 2.x) of every piece of text in an element with what is behind it, as the browser
# paints it: each ancestor's background (every colour of a striped one) and opacity composited.
_CONTRASTS = """(root) => {
  const parse = (c) => {
    const p = c.match(/rgba?\\(([^)]*)\\)/)[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, below) => {
    const a = top[3] + below[3] * (1 - top[3]);
    if (a === 0) return [0, 0, 0, 0];
    const mix = (i) => (top[i] * top[3] + below[i] * below[3] * (1 - top[3])) / a;
    return [mix(0), mix(1), mix(2), a];
  };
  const fills = (el) => {
    const style = getComputedStyle(el);
    const colour = parse(style.backgroundColor);
    const stops = (style.backgroundImage.match(/rgba?\\([^)]*\\)/g) || []).map(parse);
    return stops.length ? stops.map((stop) => over(stop, colour)) : [colour];
  };
  // Each way the text's backdrop may look: its colour inside the innermost opacity group, and the groups.
  const backdrops = (el) => {
    const chain = [];
    for (let node = el; node; node = node.parentElement) chain.unshift(node);
    let paths = [{ inside: [255, 255, 255, 1], groups: [] }];
    for (const node of chain) {
      const opacity = Number(getComputedStyle(node).opacity);
      if (opacity < 1) {
        const group = (p) => ({ inside: [0, 0, 0, 0], groups: [...p.groups, { opacity, behind: p.inside }] });
        paths = paths.map(group);
      }
      paths = paths.flatMap((p) => fills(node).map((fill) => ({ ...p, inside: over(fill, p.inside) })));
    }
    return paths;
  };
  const flatten = (path, colour) => {
    let c = colour;
    for (const g of [...path.groups].reverse()) c = over([c[0], c[1], c[2], c[3] * g.opacity], g.behind);
    return c;
  };
  const luminance = (c) => {
    const lin = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  };
  const ratio = (a, b) => {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const texts = [root, ...root.querySelectorAll("*")].filter(
    (el) => el.checkVisibility() && [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim()),
  );
  return texts.map((el) => {
    const text = parse(getComputedStyle(el).color);
    const worst = Math.min(
      ...backdrops(el).map((p) => ratio(flatten(p, over(text, p.inside)), flatten(p, p.inside))),
    );
    return [el.textContent.trim().slice(0, 40), Math.round(worst * 100) / 100];
  });
}"""


def test_every_text_of_an_acknowledged_alert_has_enough_contrast(
    running_hub: RunningHub, browser: Browser
) -> None:
    """An acknowledged alert was faded with opacity .85: its grey and green text fell to 4.2-4.4:1, below
    WCAG AA's 4.5:1. Now it is told apart by colours that keep every text at 4.5:1 or more."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        signed_in_board(page, running_hub)
        raised = dt.datetime.now(dt.UTC)
        acked = {"acknowledged_at": format_ts(raised), "acknowledged_by": "Ms Example"}
        for alert in (
            board_alert("acked-critical", raised, late=True, **acked),
            board_alert("acked-warning", raised, kind="duration_warning", severity="warning", **acked),
            board_alert("acked-info", raised, kind="device_offline", severity="info", **acked),
            board_alert(
                "acked-held", raised, room="calm-2", room_name="Calm room calm-2", held=True, **acked
            ),
        ):
            running_hub.hub.live.publish("alert", alert)
            card = page.locator(f'[data-alert-id="{alert["id"]}"]')
            expect(card).to_contain_text("Acknowledged by Ms Example", timeout=WAIT_MS)
            expect(card).to_have_class(re.compile(r"\backnowledged\b"))
            contrasts = card.evaluate(_CONTRASTS)
            assert len(contrasts) >= 4, contrasts  # the heading, its severity, the times, who acknowledged
            low = [(text, ratio) for text, ratio in contrasts if ratio < 4.5]
            assert low == [], (alert["id"], low)
    finally:
        page.close()


def _child_shut_in_alone(hub: RunningHub, door: Device, panel: Device, token: str) -> dict[str, Any]:
    """A child shut in calm-1 and the observer gone from its viewing panel (real device events): the
    hub's own lapse alert, once raised (the room's lapse grace is 2 s)."""
    panel.event("observer", "present")
    door.event("occupancy", "occupied")
    door.event("door", "closed")
    panel.event("observer", "absent")
    [alert] = poll(
        lambda: [
            a
            for a in api_get(hub.port, token, "/api/alerts", state="active")["items"]
            if a["kind"] == "supervision_lapse"
        ],
        15,
        what="the hub's lapse alert",
    )
    return dict(alert)


@pytest.mark.parametrize("move_before", [True, False], ids=["moveBefore", "without-moveBefore"])
def test_the_focus_stays_on_an_alert_while_the_board_changes_and_goes_to_its_card_once_acknowledged(
    tmp_path: Path, mosquitto: Mosquitto, browser: Browser, move_before: bool
) -> None:
    """Every live update rebuilt the list of alerts: a keyboard user on an Acknowledge button lost the
    focus (to the page) whenever anything changed, and again once it was pressed. Now each alert's card
    is changed in place: the focus stays on the button whatever changes around it, even as its card
    moves up the list; once acknowledged, it is on the card, which says who acknowledged it; once the
    alert has left the board, on the list's heading. In a browser without Element.moveBefore (which
    moves a card with its focus), the focus is given back after the move."""
    rooms = [two_device_room("calm-1", lapse_grace_s=2), two_device_room("calm-2")]
    with hub_running(tmp_path, mosquitto, rooms) as hub:
        door, panel = devices_online(mosquitto, "calm-1")
        others = devices_online(mosquitto, "calm-2")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        if not move_before:
            page.add_init_script("delete Element.prototype.moveBefore")
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            signed_in_board(page, hub, name="Mr Keys")
            assert page.evaluate("typeof document.body.moveBefore === 'function'") is move_before
            token = hub.token("staff", SITE, name="Duty office")
            # An older alert in calm-2 waiting too (as the service publishes one): listed first.
            earlier = board_alert(
                "calm-2-lapse",
                dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
                room="calm-2",
                room_name="Calm room calm-2",
            )
            hub.hub.live.publish("alert", earlier)
            first = page.locator('[data-alert-id="calm-2-lapse"]')
            expect(first).to_be_visible(timeout=WAIT_MS)
            alert = _child_shut_in_alone(hub, door, panel, token)
            card = page.locator(f'[data-alert-id="{alert["id"]}"]')
            button = card.get_by_role("button", name=re.compile("^Acknowledge"))
            expect(button).to_be_visible(timeout=WAIT_MS)
            cards = page.locator("#alerts > li")
            expect(cards.nth(1)).to_have_attribute("data-alert-id", alert["id"])
            # A keyboard user goes from the first alert's button to this one's.
            first.get_by_role("button").focus()
            page.keyboard.press("Tab")
            expect(button).to_be_focused()

            # A room changes ...
            publish_room(hub, "calm-2", name="Calm room calm-2 (east)")
            expect(page.get_by_role("heading", name="Calm room calm-2 (east)")).to_be_visible(timeout=WAIT_MS)
            expect(button).to_be_focused()
            # ... a new alert comes ...
            warning = board_alert(
                "calm-2-warning",
                dt.datetime.now(dt.UTC),
                kind="duration_warning",
                severity="warning",
                room="calm-2",
                room_name="Calm room calm-2",
            )
            hub.hub.live.publish("alert", warning)
            expect(page.locator('[data-alert-id="calm-2-warning"]')).to_be_visible(timeout=WAIT_MS)
            expect(button).to_be_focused()
            # ... this alert itself is escalated ...
            told = [*alert["escalations"], {"tier": "senior", "at": format_ts(dt.datetime.now(dt.UTC))}]
            hub.hub.live.publish("alert", {**alert, "tier": "senior", "escalations": told})
            expect(card).to_contain_text(
                "Told: Senior staff (escalated 1\N{MULTIPLICATION SIGN})", timeout=WAIT_MS
            )
            expect(button).to_be_focused()
            # ... and the first is acknowledged on another screen: this one moves to the top.
            acked_elsewhere = {
                "acknowledged_at": format_ts(dt.datetime.now(dt.UTC)),
                "acknowledged_by": "Ms Other",
            }
            hub.hub.live.publish("alert", {**earlier, **acked_elsewhere})
            expect(cards.first).to_have_attribute("data-alert-id", alert["id"], timeout=WAIT_MS)
            expect(button).to_be_focused()

            # Enter acknowledges it at the hub; the focus goes to its card, which now says so.
            page.keyboard.press("Enter")
            expect(card).to_contain_text("Acknowledged by Mr Keys", timeout=WAIT_MS)
            expect(card).to_be_focused()
            expect(card).to_have_accessible_name(
                re.compile("Nobody at the viewing panel — Calm room calm-1$")
            )
            expect(card).to_have_accessible_description(re.compile("Acknowledged by Mr Keys at "))
            assert api_get(hub.port, token, f"/api/alerts/{alert['id']}")["acknowledged_by"] == "Mr Keys"

            # The observer is back: the hub resolves the lapse, its card leaves; the focus goes to the
            # list's heading.
            panel.event("observer", "present")
            expect(card).to_have_count(0, timeout=WAIT_MS)
            expect(page.get_by_role("heading", name=re.compile("^Active alerts"))).to_be_focused()
            assert errors == [], "the board's script failed"
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / "board-focus-failure.png", full_page=True)
            raise
        finally:
            for device in (door, panel, *others):
                device.close()


def test_a_new_alert_is_announced_once_in_words(
    tmp_path: Path, mosquitto: Mosquitto, browser: Browser
) -> None:
    """New alerts were shown but not announced: a screen reader user heard nothing. Now each new alert is
    announced once, in the words its card shows (the kind and the room, no child's name): a critical one
    waiting for someone at once (assertive), any other politely; not again when it changes, and not the
    alerts already on the board when it opens."""
    rooms = [two_device_room("calm-1", lapse_grace_s=2), two_device_room("calm-2")]
    with hub_running(tmp_path, mosquitto, rooms) as hub:
        door, panel = devices_online(mosquitto, "calm-1")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            signed_in_board(page, hub, name="Ms Listener")
            news, urgent_news = page.locator("#alert-news"), page.locator("#alert-news-urgent")
            expect(news).to_have_attribute("aria-live", "polite")
            expect(urgent_news).to_have_attribute("aria-live", "assertive")
            expect(news.locator("p")).to_have_count(0)
            token = hub.token("staff", SITE, name="Duty office")

            # The hub's own alerts for a child shut in alone: the start (for information) and the lapse.
            alert = _child_shut_in_alone(hub, door, panel, token)
            lapse = "New alert (Critical): Nobody at the viewing panel — Calm room calm-1."
            started = "New alert (Information): A child is in a closed room — Calm room calm-1."
            expect(urgent_news.locator("p")).to_have_text([lapse], timeout=WAIT_MS)
            expect(news.locator("p")).to_have_text([started])
            # A warning, and a critical alert held by maintenance (sent to nobody: not urgent either).
            now = dt.datetime.now(dt.UTC)
            calm2 = {"room": "calm-2", "room_name": "Calm room calm-2"}
            hub.hub.live.publish(
                "alert", board_alert("warning-1", now, kind="duration_warning", severity="warning", **calm2)
            )
            hub.hub.live.publish("alert", board_alert("held-1", now, held=True, **calm2))
            told = [
                started,
                "New alert (Warning): Time in the room is getting long — Calm room calm-2.",
                "New alert (Critical): Nobody at the viewing panel — Calm room calm-2."
                " Held: room in maintenance.",
            ]
            expect(news.locator("p")).to_have_text(told, timeout=WAIT_MS)

            # Shown again and again (a room changes, the lapse is escalated and acknowledged): told once.
            publish_room(hub, "calm-2", name="Calm room calm-2 (east)")
            expect(page.get_by_role("heading", name="Calm room calm-2 (east)")).to_be_visible(timeout=WAIT_MS)
            card = page.locator(f'[data-alert-id="{alert["id"]}"]')
            escalated = [*alert["escalations"], {"tier": "senior", "at": format_ts(dt.datetime.now(dt.UTC))}]
            hub.hub.live.publish("alert", {**alert, "tier": "senior", "escalations": escalated})
            expect(card).to_contain_text("escalated 1\N{MULTIPLICATION SIGN}", timeout=WAIT_MS)
            card.get_by_role("button", name=re.compile("^Acknowledge")).click()
            expect(card).to_contain_text("Acknowledged by Ms Listener", timeout=WAIT_MS)
            expect(urgent_news.locator("p")).to_have_text([lapse])
            expect(news.locator("p")).to_have_text(told)

            # A board opened now shows the lapse, and announces nothing: it is on the list already.
            later = browser.new_page(viewport={"width": 1280, "height": 900})
            signed_in_board(later, hub, name="Mr Later")
            expect(later.locator(f'[data-alert-id="{alert["id"]}"]')).to_be_visible(timeout=WAIT_MS)
            expect(later.locator("#alert-news p, #alert-news-urgent p")).to_have_count(0)
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / "board-news-failure.png", full_page=True)
            raise
        finally:
            door.close()
            panel.close()
