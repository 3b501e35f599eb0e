"""Alerts end to end with real processes: a real Mosquitto, the hub process, its HTTP API and live
stream, a signed webhook and an Apprise `json://` endpoint on loopback. Integration tests: they poll
with a deadline."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from seclusion_contract import parse_ts, stop_client
from seclusion_hub.notify import verify_signature
from tests.support.hub import SITE, Device, HubProcess, two_device_room, write_site
from tests.support.processes import Mosquitto, poll
from tests.support.sink import running_sink

SECRET = "a-webhook-secret-of-some-length"


class LiveStream:
    """The hub's live channel (`GET /api/live`, server-sent events), read on a thread."""

    def __init__(self, port: int, token: str) -> None:
        self.events: list[tuple[str, dict[str, Any], float]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._read, args=(port, token), daemon=True)
        self._thread.start()

    def _read(self, port: int, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream(
            "GET",
            f"http://127.0.0.1:{port}/api/live",
            headers=headers,
            timeout=httpx.Timeout(10.0, read=60.0),
        ) as r:
            event = ""
            for line in r.iter_lines():
                if self._stop:
                    return
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:") and event:
                    data = json.loads(line.partition(":")[2])
                    with self._lock:
                        self.events.append((event, data, time.time()))

    def find(self, kind: str) -> tuple[dict[str, Any], float] | None:
        with self._lock:
            return next(((d, t) for e, d, t in self.events if e == "alert" and d["kind"] == kind), None)


class Indicators:
    """A bare MQTT client on the rooms' indicator topics."""

    def __init__(self, broker: Mosquitto) -> None:
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-indicators")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("seclusion/v1/+/+/indicator", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.seen.append(json.loads(msg.payload))

    def last(self) -> dict[str, Any] | None:
        with self._lock:
            return self.seen[-1] if self.seen else None

    def close(self) -> None:
        self.client.disconnect()
        stop_client(self.client)


def _lapses(hub: HubProcess, state: str = "all") -> list[dict[str, Any]]:
    items = hub.get("/api/alerts", state=state)["items"]
    return [a for a in items if a["kind"] == "supervision_lapse"]


def test_an_observer_absent_past_the_grace_is_alerted_everywhere_at_once_and_acknowledged(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with running_sink() as hook, running_sink() as apprise_sink:
        recipients = [
            {
                "name": "Room staff",
                "tier": "room",
                "notify": [f"json://127.0.0.1:{apprise_sink.port}/apprise"],
                "webhooks": [{"url": f"{hook.url}/hook", "secret": SECRET}],
            }
        ]
        site = write_site(tmp_path / "site.yaml", [two_device_room(lapse_grace_s=2)], recipients=recipients)
        hub = HubProcess(tmp_path / "hub", mosquitto.url, site).start()
        indicators = Indicators(mosquitto)
        door = Device(mosquitto.url, SITE, "calm-1", "calm-1-door")
        panel = Device(mosquitto.url, SITE, "calm-1", "calm-1-panel")
        try:
            live = LiveStream(hub.port, hub.token)
            door.status()
            panel.status()
            panel.event("observer", "present")
            door.event("occupancy", "occupied")
            door.event("door", "closed")
            poll(lambda: hub.get("/api/episodes", open="true")["items"], 15, what="the episode to open")
            poll(lambda: live.events, 10, what="the live stream to start")

            absent = panel.event("observer", "absent")
            due = parse_ts(absent["ts"]) + dt.timedelta(seconds=2)
            [alert] = poll(lambda: _lapses(hub, "active"), 15, what="the lapse alert")
            assert parse_ts(alert["due_at"]) == due
            assert parse_ts(alert["raised_at"]) - due <= dt.timedelta(seconds=1)
            assert alert["late"] is False
            assert (alert["severity"], alert["tier"], alert["room_name"]) == (
                "critical",
                "room",
                "Calm room calm-1",
            )

            pushed, pushed_at = poll(lambda: live.find("supervision_lapse"), 5, what="the live push")
            assert pushed["id"] == alert["id"]
            assert pushed_at - due.timestamp() <= 1.0, "pushed on the live channel within 1 s of the grace"

            shown = poll(
                lambda: (i := indicators.last()) and i["level"] == "critical" and i, 5, what="the indicator"
            )
            assert shown["reason"] == "supervision_lapse"
            assert shown["acknowledged"] is False

            def hooked_of(kind: str) -> list[Any]:
                return [r for r in hook.received() if json.loads(r.body)["kind"] == kind]

            hooked = poll(lambda: hooked_of("supervision_lapse"), 10, what="the webhook")[0]
            # With nobody on the senior tier, the start of the episode (first tier `senior`) went to the
            # room's staff, the highest tier below with someone on it (alerts.md, "Tiers with nobody")
            assert json.loads(hooked_of("episode_started")[0].body)["tier"] == "room"
            assert verify_signature(SECRET, hooked.headers["x-seclusion-signature"], hooked.body)
            assert not verify_signature(
                "another-secret-entirely", hooked.headers["x-seclusion-signature"], hooked.body
            )
            body = json.loads(hooked.body)
            assert (body["kind"], body["room"], body["alert_id"]) == (
                "supervision_lapse",
                "calm-1",
                alert["id"],
            )
            told = poll(apprise_sink.received, 10, what="the Apprise json:// endpoint")[0]
            assert b"Calm room calm-1" in told.body

            acked = httpx.post(
                f"http://127.0.0.1:{hub.port}/api/alerts/{alert['id']}/ack",
                headers={"Authorization": f"Bearer {hub.token}"},
                timeout=10,
            )
            assert acked.status_code == 200, acked.text
            assert acked.json()["acknowledged_by"] == "test-admin"
            assert acked.json()["acknowledged_via"] == "api"
            poll(
                lambda: (i := indicators.last()) and i["acknowledged"] is True and i,
                5,
                what="the indicator to show the acknowledgement",
            )
            again = httpx.post(
                f"http://127.0.0.1:{hub.port}/api/alerts/{alert['id']}/ack",
                headers={"Authorization": f"Bearer {hub.token}"},
                timeout=10,
            )
            assert again.status_code == 200
            assert again.json()["acknowledged_at"] == acked.json()["acknowledged_at"]

            panel.event("observer", "present")
            poll(lambda: not _lapses(hub, "active"), 10, what="the lapse to resolve")
            [done] = _lapses(hub)
            assert done["note"] == "supervised again"
            poll(lambda: (i := indicators.last()) and i["level"] == "info", 5, what="the indicator to calm")

            detail = hub.get(f"/api/alerts/{alert['id']}")
            by_channel = {d["channel"]: d for d in detail["deliveries"]}
            assert by_channel["live"]["status"] == "sent"
            assert by_channel["indicator"]["status"] == "sent"
            webhook = next(d for c, d in by_channel.items() if c.startswith("webhook:"))
            assert webhook["status"] == "sent"
            assert webhook["attempts"][0]["ok"] is True
            assert SECRET not in json.dumps(detail)
            timeline = hub.get(f"/api/episodes/{alert['episode_id']}")["timeline"]
            kinds = [t["kind"] for t in timeline if t["type"] == "decision"]
            assert (
                kinds.index("alert_raised")
                < kinds.index("alert_acknowledged")
                < kinds.index("alert_resolved")
            )
        finally:
            indicators.close()
            door.close()
            panel.close()
            hub.stop()


def test_a_lapse_deadline_that_passes_while_the_hub_is_down_is_raised_once_late_on_restart(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    site = write_site(tmp_path / "site.yaml", [two_device_room(lapse_grace_s=5)])
    hub = HubProcess(tmp_path / "hub", mosquitto.url, site).start()
    door = Device(mosquitto.url, SITE, "calm-1", "calm-1-door")
    panel = Device(mosquitto.url, SITE, "calm-1", "calm-1-panel")
    try:
        door.status()
        panel.status()
        panel.event("observer", "present")
        door.event("occupancy", "occupied")
        door.event("door", "closed")
        absent = panel.event("observer", "absent")
        due = parse_ts(absent["ts"]) + dt.timedelta(seconds=5)

        def stored_absence() -> bool:
            eps = hub.get("/api/episodes", open="true")["items"]
            return bool(eps) and eps[0]["unsupervised_s"] > 0

        poll(stored_absence, 15, what="the absence to be stored")
        assert _lapses(hub) == []  # the deadline is still ~5 s away
        hub.kill()
        # The hub stays down for 10 s: the lapse deadline passes while nothing is running.
        restart_at = time.monotonic() + 10
        while time.monotonic() < restart_at:
            time.sleep(0.2)
        hub.start()
        [alert] = poll(lambda: _lapses(hub), 20, what="the lapse raised on restart")
        assert parse_ts(alert["due_at"]) == due
        assert alert["late"] is True
        assert parse_ts(alert["raised_at"]) - due >= dt.timedelta(seconds=4)
        assert [e["tier"] for e in alert["escalations"]] == ["room"]
        # Exactly once: another restart raises nothing new.
        hub.stop()
        hub.start()
        poll(lambda: hub.get("/healthz")["evaluated"], 20, what="the hub to evaluate its rooms again")
        assert len(_lapses(hub)) == 1
        detail = hub.get(f"/api/alerts/{alert['id']}")
        assert {d["number"] for d in detail["deliveries"]} == {1}
    finally:
        door.close()
        panel.close()
        hub.stop()
