"""1,000 malformed or hostile messages: none applied, all dead-lettered with a reason, the hub healthy."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from tests.support.hub import SITE, Device, HubProcess, two_device_room, write_site
from tests.support.processes import Mosquitto, poll

GOOD: dict[str, Any] = {
    "v": 1,
    "id": "x:0:1",
    "seq": 1,
    "ts": "2026-11-21T10:15:02.123Z",
    "kind": "door",
    "value": "closed",
}


def _with(**changes: Any) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


# (room, device, channel, payload, what the reason must mention)
HOSTILE: list[tuple[str, str, str, bytes, str]] = [
    ("calm-1", "calm-1-door", "event", b"{not json", "JSON"),
    ("calm-1", "calm-1-door", "event", b"\xff\xfe\x00garbage", "UTF-8"),
    ("calm-1", "calm-1-door", "event", b"[1, 2, 3]", "object"),
    ("calm-1", "calm-1-door", "event", b"null", "object"),
    ("calm-1", "calm-1-door", "event", _with(seq="5"), "seq"),
    ("calm-1", "calm-1-door", "event", _with(seq=True), "seq"),
    ("calm-1", "calm-1-door", "event", _with(seq=0), "seq"),
    ("calm-1", "calm-1-door", "event", _with(epoch=-1), "epoch"),
    ("calm-1", "calm-1-door", "event", _with(v=2), "v"),
    # contract 2: `v` is required (it was taken as 1 when missing)
    ("calm-1", "calm-1-door", "event", _with(v=...), "v: Field required"),
    ("calm-1", "calm-1-door", "status", json.dumps({"online": False}).encode(), "v: Field required"),
    (
        "calm-1",
        "calm-1-door",
        "heartbeat",
        json.dumps({"ts": GOOD["ts"], "state": {"door": "open"}}).encode(),
        "v: Field required",
    ),
    ("calm-1", "calm-1-door", "event", _with(ts=1763720102), "ts"),
    ("calm-1", "calm-1-door", "event", _with(ts="2026-11-21T10:15:02Z"), "ts"),
    ("calm-1", "calm-1-door", "event", _with(ts="2026-11-21 10:15:02.123+01:00"), "ts"),
    ("calm-1", "calm-1-door", "event", _with(ts="2026-13-45T10:15:02.123Z"), "ts"),
    # before the Unix epoch: no device clock gives it (1970 itself is a clock that is wrong: applied)
    (
        "calm-1",
        "calm-1-door",
        "event",
        _with(ts="1969-12-31T23:59:59.000Z"),
        "not a time any device clock gives",
    ),
    ("calm-1", "calm-1-door", "event", _with(kind="window"), "kind"),
    ("calm-1", "calm-1-door", "event", _with(value="ajar"), "value"),
    ("calm-1", "calm-1-door", "event", _with(kind="fault", value="Bad Code!"), "value"),
    ("calm-1", "calm-1-door", "event", _with(kind=...), "kind"),
    ("calm-1", "calm-1-door", "event", _with(id=...), "id"),
    ("calm-1", "calm-1-door", "event", _with(kind="observer", value="present"), "does not report"),
    ("calm-1", "calm-1-door", "event", _with(value="closed", pad="x" * 20_000), "limit"),
    ("calm-1", "calm-1-door", "event", b"{" + b'"a":' * 50_000 + b"1}", "limit"),
    ("calm-1", "ghost-device", "event", _with(), "not registered"),
    ("calm-2", "calm-1-door", "event", _with(), "belongs to room"),
    ("Calm-1", "calm-1-door", "event", _with(), "slug"),
    (
        "calm-1",
        "calm-1-door",
        "heartbeat",
        json.dumps({"v": 1, "ts": GOOD["ts"], "state": {"door": "ajar"}}).encode(),
        "state",
    ),
    ("calm-1", "calm-1-door", "status", json.dumps({"v": 1, "online": "yes"}).encode(), "online"),
    ("calm-1", "calm-1-door", "ack", json.dumps({"v": 1, "epoch": 0, "seq": 1}).encode(), "do not publish"),
]


def test_a_thousand_hostile_messages_are_all_dead_lettered_and_none_applied(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    site = write_site(tmp_path / "site.yaml", [two_device_room("calm-1"), two_device_room("calm-2")])
    hub = HubProcess(tmp_path / "hub", mosquitto.url, site).start()
    sender = Device(mosquitto.url, SITE, "calm-1", "calm-1-door")
    try:
        sent: list[str] = []
        for i in range(1000):
            room, device, channel, payload, _ = HOSTILE[i % len(HOSTILE)]
            topic = f"seclusion/v1/{SITE}/{room}/{device}/{channel}"
            sender.client.publish(topic, payload, qos=1).wait_for_publish(10)
            sent.append(topic)
        # The ack topic is the hub's own: it does not subscribe to it, so those never reach it.
        expected = sum(1 for i in range(1000) if HOSTILE[i % len(HOSTILE)][2] != "ack")
        db = tmp_path / "hub" / "hub.db"

        def dead_letters() -> list[tuple[str, str]] | None:
            with sqlite3.connect(db) as conn:
                rows = conn.execute("select topic, reason from dead_letter").fetchall()
            return rows if len(rows) >= expected else None

        rows = poll(dead_letters, 60, what=f"{expected} dead letters")
        assert len(rows) == expected
        assert all(reason.strip() for _, reason in rows)
        for room, device, channel, _payload, mention in HOSTILE:
            if channel == "ack":
                continue
            topic = f"seclusion/v1/{SITE}/{room}/{device}/{channel}"
            reasons = {reason for t, reason in rows if t == topic}
            assert any(mention in reason for reason in reasons), (topic, mention, reasons)
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from event").fetchone()[0] == 0
            assert conn.execute("select count(*) from episode").fetchone()[0] == 0
        health = httpx.get(f"http://127.0.0.1:{hub.port}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        metrics = httpx.get(f"http://127.0.0.1:{hub.port}/metrics", timeout=10).text
        rejected = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("seclusion_messages_rejected_total")
        )
        assert rejected == expected
        # And the hub still does its job.
        sender.status()
        sender.event("occupancy", "occupied")
        sender.event("door", "closed")
        poll(lambda: hub.get("/api/episodes", site=SITE, open="true")["items"], 15, what="a real episode")
    finally:
        sender.close()
        hub.stop()
