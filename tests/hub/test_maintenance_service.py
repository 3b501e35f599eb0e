"""Ending maintenance early through the service (the API's PUT .../mode) releases what it held at
once (docs/alerts.md "Maintenance": nothing is held once maintenance is over, whether it was
ended or ran out), not at the old end of maintenance."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from seclusion_contract import Topics
from seclusion_hub.config import load_sites
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.ingest import Inbound
from seclusion_hub.models import AuditEntry
from seclusion_hub.service import Command, HubService
from seclusion_hub.store import Store
from tests.support.hub import SITE, two_device_room, write_site

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
ROOM = "calm-1"


def at(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def commands_inline(svc: HubService) -> None:
    """The ingest thread is not running: a person's command is applied in a batch of its own, at once."""

    def run_command(apply, timeout: float = 15.0):  # type: ignore[no-untyped-def]
        command = Command(apply)
        svc.process([command])
        if command.error is not None:
            raise command.error
        return command.result

    svc.run_command = run_command  # type: ignore[method-assign]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[HubService]:
    write_site(tmp_path / "site.yaml", [two_device_room(ROOM, heartbeat_s=10, offline_grace_s=20)])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    svc = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics())
    svc.ack_message = lambda mid, qos, conn: None
    commands_inline(svc)
    for machine in svc.machines.values():
        machine.hub_started(T0)
    yield svc
    store.close()


def last_will(device: str, t: float, mid: int) -> Inbound:
    payload = json.dumps({"v": 1, "online": False}).encode()
    return Inbound(f"seclusion/v1/{SITE}/{ROOM}/{device}/status", payload, at(t), mid=mid, qos=1)


def step(svc: HubService, t: float) -> None:
    svc.clock.set(at(t))  # type: ignore[attr-defined]
    svc.process([])  # the ingest thread's wake-up with nothing in the inbox


def audit(action: str, t: float) -> AuditEntry:
    return AuditEntry(
        at=at(t), actor="Ms Head", action=action, target_type="room", target_id=f"{SITE}/{ROOM}"
    )


def test_ending_maintenance_early_releases_the_held_device_offline_alerts_at_once(
    service: HubService,
) -> None:
    sent: list[tuple[str, str]] = []
    real = service.delivery.carry_out

    def spy(out, rooms):  # type: ignore[no-untyped-def]
        sent.extend((s.alert.kind, s.reason) for s, _ in out.sends)
        return real(out, rooms)

    service.delivery.carry_out = spy  # type: ignore[method-assign]
    service.set_mode(SITE, ROOM, at(7200), "cleaning", audit("mode_maintenance", 0))
    # Both devices unplugged for the cleaning.
    service.clock.set(at(1))  # type: ignore[attr-defined]
    service.process([last_will(f"{ROOM}-door", 1, 1), last_will(f"{ROOM}-panel", 1, 2)])
    for t in range(5, 60, 5):
        step(service, t)
    book = service.machines[(SITE, ROOM)].state.book
    offline = [a for a in book.alerts.values() if a.kind == "device_offline"]
    assert len(offline) == 2 and all(a.held for a in offline), "held while in maintenance"
    assert sent == []

    # The cleaning is done early; somebody forgot to plug the devices back in.
    service.clock.set(at(60))  # type: ignore[attr-defined]
    service.set_mode(SITE, ROOM, None, None, audit("mode_normal", 60))
    # Maintenance is over: what it held and still holds is told in the same batch (the pure machine's
    # rule: test_alert_rules.py's held-in-maintenance tests), not at the old end of maintenance.
    assert all(not a.held for a in offline), "still held once maintenance was ended"
    assert sorted(sent) == [("device_offline", "late"), ("device_offline", "late")]
    assert service.machines[(SITE, ROOM)].next_deadline() != at(7200)
