"""Real processes for the tests: a Mosquitto broker on a free loopback port, and polling with a deadline."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, seconds: float = 10.0) -> None:
    """Return once something accepts connections on the port, or raise TimeoutError."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def poll(fetch: Callable[[], T | None], seconds: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Call `fetch` until it returns something truthy, or fail after `seconds` (integration tests only)."""
    deadline = time.monotonic() + seconds
    last: T | None = None
    while time.monotonic() < deadline:
        last = fetch()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {seconds} s waiting for {what or fetch!r}; last value {last!r}")


@dataclass
class Mosquitto:
    """A real Mosquitto broker, configured as in production so that it drops no QoS 1 message."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
        data = self.workdir / "mosquitto-data"
        data.mkdir(parents=True, exist_ok=True)
        os.chmod(data, 0o777)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            # As deploy/mosquitto/mosquitto.conf: save every second, not after every change (which
            # rewrites the whole file per message and starved the hub's acks in bench/ingest.py). A
            # crash loses at most a second of broker state, no event: the edge outbox keeps each one
            # until the hub's ack covers it. autosave_interval 0 would save only at a clean shutdown.
            "autosave_interval 1\n"
            "autosave_on_changes false\n"
            # Started as root, Mosquitto drops to its own user, which cannot write under pytest's tmp_path.
            + ("user root\n" if os.geteuid() == 0 else "")
            + "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "persistent_client_expiration 1d\n"
            "set_tcp_nodelay true\n"  # as deploy/mosquitto/mosquitto.conf
        )
        with open(self.workdir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
