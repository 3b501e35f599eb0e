"""Semantics 4.6: a hub killed with SIGKILL mid-episode comes back to the same episode, still timing it,
and applies what devices published while it was down (its MQTT session persisted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.hub import SITE, Device, HubProcess, two_device_room, write_site
from tests.support.processes import Mosquitto, poll


def _open_episode(hub: HubProcess) -> dict[str, Any] | None:
    items = hub.get("/api/episodes", site=SITE, room="calm-1", open="true")["items"]
    return items[0] if items else None


@pytest.mark.parametrize(("protocol", "mqtt_process"), [("5", "false"), ("3.1.1", "false"), ("5", "true")])
def test_sigkill_mid_episode_then_restart_resumes_the_same_episode(
    tmp_path: Path, mosquitto: Mosquitto, protocol: str, mqtt_process: str
) -> None:
    site = write_site(tmp_path / "site.yaml", [two_device_room()])
    settings = {"SECLUSION_MQTT_PROCESS": mqtt_process}
    hub = HubProcess(tmp_path / "hub", mosquitto.url, site, protocol=protocol, extra_env=settings).start()
    door = Device(mosquitto.url, SITE, "calm-1", "calm-1-door")
    panel = Device(mosquitto.url, SITE, "calm-1", "calm-1-panel")
    try:
        door.status()
        panel.status()
        panel.event("observer", "present")
        door.event("occupancy", "occupied")
        closed = door.event("door", "closed")
        before = poll(lambda: _open_episode(hub), 15, what="the episode to open")
        assert before["started_at"] == closed["ts"]

        hub.kill()
        # While the hub is down: the observer walks away. The broker keeps it for the hub's session.
        absent = panel.event("observer", "absent")
        hub.start()

        def resumed() -> dict[str, Any] | None:
            ep = _open_episode(hub)
            return ep if ep and ep["unsupervised_s"] > 0 else None

        after = poll(resumed, 20, what="the restarted hub to apply the event sent while it was down")
        assert after["id"] == before["id"]
        assert after["started_at"] == before["started_at"]
        assert after["ended_at"] is None
        assert after["incident_id"] == before["incident_id"]
        assert after["lapses"][0]["start"] == absent["ts"]
        assert after["elapsed_s"] > before["elapsed_s"]
        later = poll(
            lambda: (ep := _open_episode(hub)) and ep["elapsed_s"] > after["elapsed_s"] and ep,
            10,
            what="the clock to keep running",
        )
        assert later["id"] == before["id"]
        full = hub.get(f"/api/episodes/{before['id']}")
        timeline_events = [(t["kind"], t["value"]) for t in full["timeline"] if t["type"] == "event"]
        assert ("observer", "absent") in timeline_events
        incident = hub.get(f"/api/incidents/{before['incident_id']}")
        assert incident["status"] == "open"
    finally:
        door.close()
        panel.close()
        hub.stop()
