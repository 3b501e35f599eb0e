"""The hub's MQTT adapter over TLS (`mqtts://`, the broker's certificate checked against the system's
trust store, here a test CA through `SSL_CERT_FILE`), against a real Mosquitto with a TLS listener:
driven by the ingest thread (TLS keeps decrypted bytes in the SSL object, where a select on the socket
does not see them) or by paho's own thread, a burst arrives whole and in order and what the hub
publishes goes out."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from seclusion_contract import Topics, stop_client
from seclusion_hub.core.clock import SystemClock
from seclusion_hub.ingest import Inbound
from seclusion_hub.mqtt import HubMqtt
from tests.support.mqtt import TOPIC, Driver
from tests.support.processes import free_port, poll, wait_port


@dataclass(frozen=True)
class TlsBroker:
    port: int
    ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(where: Path) -> None:
    """A test CA, and a certificate it signed for 127.0.0.1 (the address the hub connects to)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Test CA",
        cwd=where,
    )
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=where)
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.ext",
        cwd=where,
    )  # fmt: skip


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    where = tmp_path / "tls"
    where.mkdir()
    _certificates(where)
    port = free_port()
    conf = where / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"cafile {where / 'ca.pem'}\ncertfile {where / 'server.pem'}\nkeyfile {where / 'server.key'}\n"
        "allow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\nset_tcp_nodelay true\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with open(where / "mosquitto.log", "ab") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_port(port)
        yield TlsBroker(port, where / "ca.pem")
    finally:
        proc.terminate()
        proc.wait(10)


def _device(broker: TlsBroker) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-device-tls", protocol=paho.MQTTv5)
    client.tls_set(ca_certs=str(broker.ca))
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


@pytest.mark.parametrize("inline", [True, False])
def test_over_tls_a_burst_arrives_whole_and_in_order_and_what_the_hub_publishes_goes_out(
    tls_broker: TlsBroker, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_broker.ca))  # the school's CA in the system's store
    got: list[int] = []
    lock = threading.Lock()

    def on_inbound(inbound: Inbound) -> None:
        with lock:
            got.append(json.loads(inbound.payload)["n"])

    url = f"mqtts://127.0.0.1:{tls_broker.port}"
    mqtt = HubMqtt(url, Topics(), SystemClock(), on_inbound, client_id="test-hub-tls", inline=inline)
    device = _device(tls_broker)
    heard: list[bytes] = []
    topic = Topics().ack("test-school", "calm-1", "calm-1-door")
    device.on_message = lambda _c, _u, msg: heard.append(bytes(msg.payload))
    with contextlib.ExitStack() as stack:  # undone in reverse: the driver first, the device last
        stack.callback(stop_client, device)
        stack.callback(device.disconnect)
        stack.callback(mqtt.stop)
        if inline:
            stack.enter_context(Driver(mqtt))  # the ingest thread's part
        mqtt.start()
        poll(lambda: mqtt.connected and mqtt.backlog_done.is_set(), 20, what="connected over TLS")
        infos = [device.publish(TOPIC, json.dumps({"n": n}).encode(), qos=1) for n in range(300)]
        for info in infos:
            info.wait_for_publish(10)
        poll(lambda: len(got) >= 300, 20, what="the burst through TLS")
        assert got == list(range(300))
        # Retained: the device hears it when it subscribes.
        mqtt.publish(topic, b'{"v":1,"epoch":0,"seq":300}', qos=1, retain=True)
        device.subscribe(topic, qos=1)
        poll(lambda: heard, 10, what="the hub's ack heard by the device")
        assert heard[-1] == b'{"v":1,"epoch":0,"seq":300}'
