"""An alert acknowledged by several people at once is acknowledged once, and each is told who it was
(contract: acknowledging again changes nothing). For an alert its room no longer holds (resolved), the
API wrote the acknowledgement itself from a row read before, outside the ingest thread, and every
request won (from a review; it failed before the acknowledgement went through the ingest thread)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.hub import SITE, Device, api_get, two_device_room
from tests.support.processes import Mosquitto, poll
from tests.web.conftest import hub_running

pytestmark = pytest.mark.integration


def test_a_resolved_alert_acknowledged_by_two_people_at_once_is_acknowledged_once(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with hub_running(tmp_path, mosquitto, [two_device_room("calm-1", lapse_grace_s=1)]) as hub:
        token = hub.token("staff", SITE, name="Watcher")
        door = Device(mosquitto.url, SITE, "calm-1", "calm-1-door")
        panel = Device(mosquitto.url, SITE, "calm-1", "calm-1-panel")
        try:
            door.status(online=True)
            panel.status(online=True)
            panel.event("observer", "absent")
            door.event("occupancy", "occupied")
            door.event("door", "closed")

            def lapse() -> dict[str, Any] | None:
                items = api_get(hub.port, token, "/api/alerts", state="all")["items"]
                return next((a for a in items if a["kind"] == "supervision_lapse"), None)

            raised = poll(lapse, 15, what="the lapse alert")
            panel.event("observer", "present")  # supervised again: resolved, nobody acknowledged it
            poll(lambda: (lapse() or {}).get("resolved_at"), 15, what="the lapse to resolve")

            # The ingest thread busy with a burst of messages: a person's command waits its turn (here
            # 0.3 s). The window is between the API's read of the row and its own write.
            service = hub.hub.service
            real = service.acknowledge_alert

            def busy(*args: Any, **kwargs: Any) -> Any:
                time.sleep(0.3)
                return real(*args, **kwargs)

            service.acknowledge_alert = busy  # type: ignore[method-assign]
            names = [f"Person {i}" for i in range(6)]
            tokens = [hub.token("staff", SITE, name=n) for n in names]
            answers: list[dict[str, Any]] = []
            start = threading.Barrier(len(tokens))

            def ack(t: str) -> None:
                start.wait()
                r = httpx.post(
                    f"{hub.base}/api/alerts/{raised['id']}/ack",
                    headers={"Authorization": f"Bearer {t}"},
                    timeout=15,
                )
                assert r.status_code == 200, r.text
                answers.append(r.json())

            threads = [threading.Thread(target=ack, args=(t,)) for t in tokens]
            for th in threads:
                th.start()
            for th in threads:
                th.join(20)
            stored = api_get(hub.port, token, f"/api/alerts/{raised['id']}")
            by = {a["acknowledged_by"] for a in answers}
            # Every answer must name the one acknowledgement the hub kept.
            assert by == {stored["acknowledged_by"]}, (
                f"told {sorted(by)} they acknowledged it; the hub kept {stored['acknowledged_by']!r}"
            )
        finally:
            door.close()
            panel.close()
