"""A hub running in this process (HTTP on a free port, a real Mosquitto) for the live board's tests."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, sync_playwright
from sqlmodel import select

from seclusion_hub.auth import Role, create_token, hash_token
from seclusion_hub.config import HubSettings
from seclusion_hub.models import ApiToken
from seclusion_hub.runtime import Hub
from tests.support.hub import SITE, two_device_room, write_site
from tests.support.processes import Mosquitto, free_port, poll


@dataclass
class RunningHub:
    """`Hub.serve_in_thread`: the hub itself (its `live` feed included) and its address."""

    hub: Hub
    server: uvicorn.Server
    thread: threading.Thread
    port: int
    stopped: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, role: Role = "staff", *sites: str, name: str = "") -> str:
        chosen = list(sites) if sites or role not in ("staff", "senior") else [SITE]
        return create_token(
            self.hub.store, name or f"board-{role}", role, chosen, False, dt.datetime.now(dt.UTC)
        )

    def revoke(self, token: str) -> None:
        """Revoke a token as an administrator would (there is no command for it: the row's revoked_at)."""
        with self.hub.store.session() as session:
            row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one()
            row.revoked_at = dt.datetime.now(dt.UTC)
            session.add(row)
            session.commit()

    def stop(self) -> None:
        """Stop HTTP as SIGINT would, then the hub; fails if an open stream holds the server up."""
        if self.stopped:
            return
        self.stopped = True
        self.server.should_exit = True
        self.thread.join(15)
        alive = self.thread.is_alive()
        self.hub.stop()
        assert not alive, "the HTTP server did not stop within 15 s"


@contextmanager
def hub_running(
    tmp_path: Path, mosquitto: Mosquitto, rooms: list[dict[str, Any]], site_files: str | None = None
) -> Iterator[RunningHub]:
    """A hub over these rooms of the test site (or over `site_files`, colon separated, when given),
    serving HTTP on a free port, until the block ends."""
    if site_files is None:
        site_files = str(write_site(tmp_path / "site.yaml", rooms))
    port = free_port()
    settings = HubSettings(
        _env_file=None,
        mqtt_url=mosquitto.url,
        database_url=f"sqlite:///{tmp_path / 'hub.db'}",
        site_files=site_files,
        http_host="127.0.0.1",
        http_port=port,
        mqtt_client_id=f"hub-board-{port}",
    )
    hub = Hub.build(settings)
    server, thread = hub.serve_in_thread()
    running = RunningHub(hub, server, thread, port)
    try:
        poll(lambda: server.started or not thread.is_alive(), 15, what="the HTTP server to start")
        assert server.started, "the HTTP server did not start"
        assert hub.mqtt.backlog_done.wait(15), "the hub did not subscribe to the broker"
        yield running
    finally:
        running.stop()


@pytest.fixture
def running_hub(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[RunningHub]:
    with hub_running(tmp_path, mosquitto, [two_device_room("calm-1"), two_device_room("calm-2")]) as hub:
        yield hub


# Debian's Chromium, driven by Playwright (its own browsers are never downloaded).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Chromium from Debian's package (Playwright's own browsers are never downloaded)."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
