"""A real hub process (`seclusion-hub serve`) for integration tests, and a publisher of device messages."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from seclusion_contract import format_ts, stop_client
from tests.support.processes import free_port, poll, wait_port

SITE = "test-school"


def write_site(path: Path, rooms: list[dict[str, Any]], **extra: Any) -> Path:
    """Write a site file (contract section 4) for the test site."""
    body = {
        "site": SITE,
        "timezone": "Europe/London",
        "policy": "england-schools-2026",
        "rooms": rooms,
        **extra,
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def two_device_room(room: str = "calm-1", **overrides: Any) -> dict[str, Any]:
    return {
        "id": room,
        "name": f"Calm room {room}",
        "supervision": "observer",
        "devices": [
            {"id": f"{room}-door", "sensors": ["door", "lock", "occupancy"], "lock_type": "held"},
            {"id": f"{room}-panel", "sensors": ["observer", "check"]},
        ],
        "policy_overrides": {"heartbeat_s": 600, **overrides},
    }


def api_get(port: int, token: str, path: str, **params: Any) -> Any:
    """GET a hub API path on 127.0.0.1 with a bearer token; the JSON body, or an HTTP error raised."""
    response = httpx.get(
        f"http://127.0.0.1:{port}{path}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def _binary(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError(f"{name} is not installed in this environment (pip install -e '.[dev]')")
    return found


@dataclass
class HubProcess:
    """`seclusion-hub serve` in its own process group, with its own database and port."""

    workdir: Path
    mqtt_url: str
    site_file: Path
    database_url: str = ""
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""
    protocol: str = "5"
    extra_env: dict[str, str] = field(default_factory=dict)  # more SECLUSION_* settings

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.database_url:
            self.database_url = f"sqlite:///{self.workdir / 'hub.db'}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SECLUSION_MQTT_URL": self.mqtt_url,
            "SECLUSION_DATABASE_URL": self.database_url,
            "SECLUSION_SITE_FILES": str(self.site_file),
            "SECLUSION_HTTP_HOST": "127.0.0.1",
            "SECLUSION_HTTP_PORT": str(self.port),
            "SECLUSION_MQTT_PROTOCOL": self.protocol,
            **self.extra_env,
        }

    def create_token(self, role: str = "admin", *sites: str) -> str:
        args = [_binary("seclusion-hub"), "token", "create", "--name", f"test-{role}", "--role", role]
        for site in sites:
            args += ["--site", site]
        done = subprocess.run(
            args, env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def start(self, *, wait_mqtt: bool = True) -> HubProcess:
        """Start `seclusion-hub serve`; return once it serves HTTP and (unless `wait_mqtt` is false) says
        it is connected to the broker: devices publishing before a first subscription would be lost."""
        if not self.token:
            self.token = self.create_token()
        with open(self.workdir / "hub.log", "ab") as log:
            self.proc = subprocess.Popen(
                [_binary("seclusion-hub"), "serve"],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_port(self.port, 30)
        if wait_mqtt:
            poll(self._mqtt_connected, 30, what="the hub to connect to the broker")
        return self

    def _mqtt_connected(self) -> bool:
        try:
            response = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5)
        except httpx.HTTPError:
            return False
        return bool(response.json().get("mqtt_connected"))

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, as in a power cut."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def log(self) -> str:
        path = self.workdir / "hub.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def get(self, path: str, **params: Any) -> Any:
        return api_get(self.port, self.token, path, **params)


class Device:
    """A device as the hub sees it on MQTT: publishes events with its own seq, status and heartbeats."""

    def __init__(self, mqtt_url: str, site: str, room: str, device: str, root: str = "seclusion/v1") -> None:
        port = int(mqtt_url.rsplit(":", 1)[1])
        self.site, self.room, self.device, self.root = site, room, device, root
        self.seq = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{device}-{free_port()}")
        self._connected = threading.Event()
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("test device could not connect")

    def topic(self, channel: str) -> str:
        return f"{self.root}/{self.site}/{self.room}/{self.device}/{channel}"

    def publish(
        self, channel: str, body: dict[str, Any] | bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        info = self.client.publish(self.topic(channel), payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def event(self, kind: str, value: str, ts: dt.datetime | None = None, **extra: Any) -> dict[str, Any]:
        self.seq += 1
        when = ts or dt.datetime.now(dt.UTC)
        body = {
            "v": 1,
            "id": f"{self.device}:0:{self.seq}",
            "seq": self.seq,
            "ts": format_ts(when),
            "kind": kind,
            "value": value,
            **extra,
        }
        self.publish("event", body)
        return body

    def status(self, online: bool = True, boot: str = "boot-1", uptime_s: float = 1.0) -> None:
        body: dict[str, Any] = {"v": 1, "online": online}
        if online:
            body.update(
                ts=format_ts(dt.datetime.now(dt.UTC)),
                agent="test",
                boot=boot,
                uptime_s=uptime_s,
                epoch=0,
                last_seq=self.seq,
            )
        self.publish("status", body, retain=True)

    def close(self) -> None:
        self.client.disconnect()
        stop_client(self.client)
