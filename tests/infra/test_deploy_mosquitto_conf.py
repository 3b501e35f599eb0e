"""The broker configuration shipped for docker-compose loads in a real Mosquitto 2 and loses nothing."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.processes import free_port, poll, wait_port

CONF = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "mosquitto.conf"


def settings() -> dict[str, str]:
    """The active (uncommented) settings of the shipped file, last one wins."""
    found: dict[str, str] = {}
    for line in CONF.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            found[key] = value
    return found


def test_settings_that_keep_every_message() -> None:
    """The defaults drop queued QoS 1 messages (max_queued_messages 1000) and save to disk only every
    30 minutes; autosave_interval 0 would not save at all until a clean shutdown."""
    conf = settings()
    assert conf["persistence"] == "true"
    assert conf["persistence_location"] == "/mosquitto/data/"
    assert conf["autosave_on_changes"] == "true"
    assert conf["autosave_interval"] == "1"
    assert conf["max_queued_messages"] == "0"
    assert conf["listener"] == "1883"


@pytest.fixture
def broker_dir() -> Iterator[Path]:
    """A directory under /tmp the broker can write to after it drops root for the `mosquitto` user."""
    path = Path(tempfile.mkdtemp(prefix="seclusion-mqtt-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("mosquitto")
        os.chown(path, user.pw_uid, user.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_shipped_config_persists_a_retained_message_at_once(broker_dir: Path) -> None:
    """Given Mosquitto running the shipped config, when one retained QoS 1 message arrives, then the
    database is on disk at once, before any shutdown (so a crash would not lose it)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    assert Path(binary).exists(), "mosquitto is not installed (apt-get install mosquitto)"
    port = free_port()
    text = CONF.read_text()
    text = re.sub(r"(?m)^listener 1883$", f"listener {port} 127.0.0.1", text)
    text = text.replace("persistence_location /mosquitto/data/", f"persistence_location {broker_dir}/")
    conf = broker_dir / "mosquitto.conf"
    conf.write_text(text)
    with open(broker_dir / "mosquitto.log", "wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="conf-probe", protocol=mqtt.MQTTv311)
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            info = client.publish("seclusion/v1/_hub/status", b'{"v":1,"online":true}', qos=1, retain=True)
            info.wait_for_publish(timeout=10)
        finally:
            client.disconnect()
            client.loop_stop()
        db = broker_dir / "mosquitto.db"
        poll(lambda: db.exists() and db.stat().st_size > 0, seconds=5, what=f"{db} written")
        assert proc.poll() is None, (broker_dir / "mosquitto.log").read_text()
    finally:
        proc.kill()
        proc.wait(5)
