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

from seclusion_contract import stop_client
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
    30 minutes; autosave_interval 0 would not save at all until a clean shutdown. The database is saved
    every second, not after every change: autosave_on_changes rewrites the whole file per message, which
    at 2,000 events/s burnt a core and starved the hub's acks (bench/ingest.py, docs/performance.md). A
    crash loses at most a second of broker state and no event: the edge outbox keeps each event until
    the hub's ack covers it, and re-sends it after reconnecting."""
    conf = settings()
    assert conf["persistence"] == "true"
    assert conf["persistence_location"] == "/mosquitto/data/"
    assert conf["autosave_on_changes"] == "false"
    assert conf["autosave_interval"] == "1"
    assert conf["max_queued_messages"] == "0"
    assert conf["listener"] == "1883"


def test_every_packet_is_sent_at_once() -> None:
    """Mosquitto leaves Nagle's algorithm on by default: an ack or an event written while the last
    packet to that client is unacknowledged waits for the client's delayed acknowledgement, up to 40 ms,
    which held the last acks of every bench/ingest.py run (docs/performance.md)."""
    assert settings()["set_tcp_nodelay"] == "true"


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


def test_shipped_config_persists_a_retained_message_within_seconds(broker_dir: Path) -> None:
    """Given Mosquitto running the shipped config, when one retained QoS 1 message arrives, then the
    database holding it is on disk within about a second (the autosave interval), before any shutdown
    (so a crash would lose at most that second)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    assert Path(binary).exists(), "mosquitto is not installed (apt-get install mosquitto)"
    port = free_port()
    topic = "seclusion/v1/_hub/status"
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
            info = client.publish(topic, b'{"v":1,"online":true}', qos=1, retain=True)
            info.wait_for_publish(timeout=10)
        finally:
            client.disconnect()
            stop_client(client)
        db = broker_dir / "mosquitto.db"
        # Saved on the next one-second autosave: poll for it, with room for a slow machine.
        poll(
            lambda: db.exists() and topic.encode() in db.read_bytes(),
            seconds=10,
            what=f"{topic} saved in {db}",
        )
        assert proc.poll() is None, (broker_dir / "mosquitto.log").read_text()
    finally:
        proc.kill()
        proc.wait(5)
