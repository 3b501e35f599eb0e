"""Fixtures shared by the hub's tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from seclusion_contract import Topics
from seclusion_hub.config import load_sites
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.service import HubService
from seclusion_hub.store import Store
from tests.hub.rooms import T0
from tests.hub.test_records import Records
from tests.support.hub import two_device_room, write_site


@pytest.fixture
def service(tmp_path: Path) -> Iterator[HubService]:
    """The hub's service on SQLite and a fake clock at T0, two rooms, its ingest thread not started (a
    test calls `process`); what it acknowledges to the broker is in `service.acks`."""
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1"), two_device_room("calm-2")])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    svc = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics())
    acks: list[tuple[int, int, int]] = []
    svc.ack_message = lambda mid, qos, conn: acks.append((mid, qos, conn))
    svc.acks = acks  # type: ignore[attr-defined]
    yield svc
    store.close()


@pytest.fixture
def clean_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SECLUSION_* variable from the test's own environment, and the working directory empty."""
    for name in list(os.environ):
        if name.startswith("SECLUSION_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Records]:
    """The hub's API and records in process, on SQLite, with a fake clock (tests/hub/test_records.py);
    a module with an `api` of its own (PostgreSQL too, another harness) uses that one."""
    a = Records(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    yield a
    a.service.stop()
    a.client.close()
    a.store.close()
