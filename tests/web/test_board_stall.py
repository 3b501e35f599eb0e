"""A live stream that goes quiet without closing (the network path stops delivering, the hub's host
hangs, a proxy in front keeps the browser's side open) does not leave the board saying Live (from a
review; it failed before the `ping` event and the board's watchdog)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.support.hub import SITE
from tests.support.processes import free_port
from tests.web.conftest import RunningHub

pytestmark = pytest.mark.integration


class FreezingProxy:
    """A TCP proxy in front of the hub that can stop forwarding without closing anything."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.frozen = threading.Event()
        self.stop = threading.Event()
        self.sockets: list[socket.socket] = []
        self.pumps: list[threading.Thread] = []
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.server.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, up]
            for a, b in ((client, up), (up, client)):
                pump = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                self.pumps.append(pump)
                pump.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        try:
            while not self.stop.is_set():
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                while self.frozen.is_set() and not self.stop.is_set():
                    self.stop.wait(0.05)  # hold it: nothing is closed, nothing is delivered
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for pump in self.pumps:
            pump.join(2)
        for s in [*self.sockets, self.server]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture
def proxy(running_hub: RunningHub) -> Iterator[FreezingProxy]:
    p = FreezingProxy(running_hub.port)
    try:
        yield p
    finally:
        p.close()


def test_a_stream_gone_quiet_is_not_shown_as_live(
    running_hub: RunningHub, proxy: FreezingProxy, browser: Browser
) -> None:
    """The hub sends a `ping` every `keepalive_s` (here 1 s); while they flow the board stays live, and
    after two and a half of them with nothing at all it says it is not live."""
    running_hub.hub.live.keepalive_s = 1.0
    base = f"http://127.0.0.1:{proxy.port}"
    page = browser.new_page()
    page.goto(f"{base}/login")
    page.get_by_label("Access token").fill(running_hub.token("staff", SITE, name="Ms Example"))
    page.get_by_role("button", name="Sign in").click()
    body = page.locator("body")
    expect(body).to_have_attribute("data-live", "on", timeout=10_000)
    page.wait_for_timeout(3000)  # three keep-alives pass, each heard: still live (no false alarm)
    expect(body).to_have_attribute("data-live", "on")

    proxy.frozen.set()  # nothing more reaches the browser, and nothing is closed
    # 10 keep-alive periods of silence: the board must say it may be out of date.
    expect(body).to_have_attribute("data-live", "off", timeout=10_000)
    expect(page.get_by_text("Live updates lost — reconnecting.")).to_be_visible()
