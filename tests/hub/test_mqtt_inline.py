"""The hub's MQTT adapter driven by the ingest thread itself (`HubMqtt(inline=True)`, the hub's default),
against a real Mosquitto: the thread that pumps takes the messages and writes its acknowledgements, no
network thread of paho's runs, other threads' packets go out at once, the pump never waits for a broker
that is down, and a standby thread drives the connection while nobody pumps."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from seclusion_contract import Topics, stop_client
from seclusion_hub.core.clock import SystemClock
from seclusion_hub.ingest import Inbound
from seclusion_hub.mqtt import HubMqtt
from tests.support.mqtt import Driver, paho_client, publish_numbers, retained
from tests.support.processes import Mosquitto, free_port, poll


class Seen:
    """What the adapter handed over, with the thread it was handed over on."""

    def __init__(self) -> None:
        self.items: list[tuple[Inbound, int, str]] = []
        self.lock = threading.Lock()

    def __call__(self, inbound: Inbound) -> None:
        with self.lock:
            self.items.append((inbound, threading.get_ident(), threading.current_thread().name))

    def numbers(self) -> list[int]:
        with self.lock:
            return [json.loads(i.payload)["n"] for i, _t, _n in self.items]

    def threads(self) -> set[str]:
        with self.lock:
            return {name for _i, _t, name in self.items}


@contextlib.contextmanager
def _inline(url: str, seen: Callable[[Inbound], None], client_id: str = "test-hub") -> Iterator[HubMqtt]:
    mqtt = HubMqtt(url, Topics(), SystemClock(), seen, client_id=client_id, inline=True)
    try:
        yield mqtt
    finally:
        mqtt.stop()


def _paho_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client-")]


def test_the_thread_that_pumps_takes_the_messages_and_its_acknowledgements_settle_them(
    mosquitto: Mosquitto,
) -> None:
    seen = Seen()
    with _inline(mosquitto.url, seen) as mqtt, Driver(mqtt) as driver:
        mqtt.start()
        poll(lambda: mqtt.connected and mqtt.backlog_done.is_set(), 20, what="the first connection")
        assert _paho_threads() == []  # no network thread of paho's: the driver reads and writes
        publish_numbers(mosquitto, range(50))
        poll(lambda: len(seen.numbers()) == 50, 20, what="50 messages through the pump")
        assert seen.numbers() == list(range(50))
        # Read by the driver (the standby thread only steps in when a loaded machine leaves the driver
        # unscheduled for 0.2 s), never by a thread of paho's.
        threads = seen.threads()
        assert "test-ingest" in threads
        assert threads <= {"test-ingest", "seclusion-mqtt-standby"}
        items = [inbound for inbound, _t, _n in seen.items]

        def store_thirty() -> None:  # the hub stored these; the other 20 it never got to
            for item in items[:30]:
                mqtt.ack(item.mid, item.qos, item.conn)

        driver.jobs.put(store_thirty)
        mqtt.wake()
        poll(lambda: driver.jobs.empty() and not mqtt.client.want_write(), 10, what="the acks written")

    # The next hub (same client id, same session) is given exactly the 20 never acknowledged.
    again = Seen()
    with _inline(mosquitto.url, again) as mqtt, Driver(mqtt):
        mqtt.start()
        poll(lambda: mqtt.backlog_done.is_set(), 20, what="the next connection's backlog")
        assert again.numbers() == list(range(30, 50))


def test_another_threads_packet_ends_the_pumps_wait_and_goes_out_at_once(mosquitto: Mosquitto) -> None:
    """The ingest thread waits on the network for up to half a second between batches; a packet that
    the HTTP API or a notifier queues meanwhile must not wait for that to end."""
    with _inline(mosquitto.url, Seen()) as mqtt, Driver(mqtt, timeout=5.0) as driver:
        mqtt.start()
        poll(lambda: mqtt.connected and mqtt.backlog_done.is_set(), 20, what="the first connection")
        got: list[float] = []
        listener = paho_client(mosquitto, "test-listener")
        topic = Topics().ack("test-school", "calm-1", "calm-1-door")
        subscribed = threading.Event()
        listener.on_message = lambda _c, _u, _m: got.append(time.monotonic())
        listener.on_subscribe = lambda *_a: subscribed.set()
        listener.subscribe(topic, qos=1)
        try:
            assert subscribed.wait(10)
            for n in range(3):
                sent = time.monotonic()
                mqtt.publish(topic, json.dumps({"n": n}).encode(), qos=1)  # from this thread, not the driver
                poll(lambda: len(got) > n, 10, what=f"publish {n} out")  # noqa: B023 (polled at once)
                assert got[n] - sent < 1.0, "the packet waited for the pump's timeout"
            waited = len(driver.pumps)
            mqtt.wake()
            poll(lambda: len(driver.pumps) > waited, 2, what="the wait ended by wake()")
        finally:
            listener.disconnect()
            stop_client(listener)


def test_without_a_broker_the_pump_never_waits_on_connecting_and_connects_once_one_is_up(
    tmp_path: Path,
) -> None:
    """Connecting is another thread's work: the ingest thread, which also times the rooms' alerts, must
    never be held by a broker that is down or slow to answer."""
    port = free_port()
    seen = Seen()
    with _inline(f"mqtt://127.0.0.1:{port}", seen) as mqtt:
        mqtt.retry_min_s, mqtt.retry_max_s = 0.2, 0.5
        mqtt.start()
        for _ in range(5):
            started = time.monotonic()
            mqtt.pump(0.1)
            assert time.monotonic() - started < 1.0
        assert not mqtt.connected
        broker = Mosquitto(tmp_path / "broker", port=port).start()
        try:
            with Driver(mqtt):
                poll(lambda: mqtt.connected and mqtt.backlog_done.is_set(), 20, what="connected once up")
                publish_numbers(broker, range(3))
                poll(lambda: seen.numbers() == [0, 1, 2], 10, what="the messages")
        finally:
            mqtt.stop()
            broker.stop()


def test_while_nobody_pumps_the_standby_thread_drives_the_connection(mosquitto: Mosquitto) -> None:
    """The ingest thread held by a write that waits for the database: messages still come in (to wait
    in the inbox), the link stays alive, and what other threads publish (the hub's word that it is
    offline) still goes out."""
    seen = Seen()
    with _inline(mosquitto.url, seen) as mqtt:
        mqtt.start()  # and nobody pumps
        poll(lambda: mqtt.connected and mqtt.backlog_done.is_set(), 20, what="connected by the standby")
        publish_numbers(mosquitto, range(3))
        poll(lambda: seen.numbers() == [0, 1, 2], 10, what="the messages")
        assert seen.threads() == {"seclusion-mqtt-standby"}
        status = Topics().hub_status
        mqtt.publish(status, b'{"v":1,"online":false,"ts":"2026-12-07T10:00:00.000Z"}', qos=1, retain=True)
        assert poll(lambda: retained(mosquitto, status), 10, what="the status out") == {
            "v": 1,
            "online": False,
            "ts": "2026-12-07T10:00:00.000Z",
        }


def test_a_message_the_standby_thread_read_ends_the_next_pumps_wait_at_once(mosquitto: Mosquitto) -> None:
    """Back from a long write, the ingest thread may wait for the standby's turn to end and then wait on
    the network, with a message the standby read meanwhile already in its inbox: that message's wake-up
    must end the wait, not the wait's timeout (found by a review: the standby's own wake-ups were
    skipped, and its turns took those meant for the ingest thread)."""
    seen = Seen()
    adapters: list[HubMqtt] = []

    def inbox_put(inbound: Inbound) -> None:  # as the hub's inbox does (`Inbox.put`)
        seen(inbound)
        adapters[0].wake()

    with _inline(mosquitto.url, inbox_put) as mqtt:
        adapters.append(mqtt)
        mqtt.start()
        mqtt.pump(0.0)  # this thread is the ingest thread; away from now on
        poll(lambda: mqtt.connected and mqtt.backlog_done.is_set(), 20, what="connected by the standby")
        publish_numbers(mosquitto, range(1))
        poll(lambda: seen.numbers() == [0], 10, what="the message")
        assert seen.threads() == {"seclusion-mqtt-standby"}
        time.sleep(0.1)  # the standby's next turns: they leave the wake-up where it is
        started = time.monotonic()
        mqtt.pump(5.0)
        assert time.monotonic() - started < 2.5, "the pump waited out its timeout"


def test_a_stop_says_offline_and_disconnects_cleanly_after_the_last_acknowledgements(
    mosquitto: Mosquitto,
) -> None:
    """`Hub.stop` calls `stop` once the ingest thread has ended: the caller then drives the connection
    itself, and what is queued goes out in order, the offline word with its time, then the DISCONNECT
    (so the broker does not publish the Last Will over it)."""
    seen = Seen()
    mqtt = HubMqtt(mosquitto.url, Topics(), SystemClock(), seen, client_id="test-hub", inline=True)
    with Driver(mqtt):
        mqtt.start()
        poll(lambda: mqtt.connected and mqtt.backlog_done.is_set(), 20, what="the first connection")
        publish_numbers(mosquitto, range(5))
        poll(lambda: len(seen.numbers()) == 5, 10, what="the messages")
    for item, _t, _n in seen.items:  # stored by the last batch, acknowledged as the hub stops
        mqtt.ack(item.mid, item.qos, item.conn)
    mqtt.stop()
    assert mqtt.client.socket() is None
    assert not mqtt.connected
    status = retained(mosquitto, Topics().hub_status)
    assert status is not None
    assert status["online"] is False
    assert "ts" in status  # said by the hub as it stopped, not its Last Will (which has no time)
    again = Seen()
    with _inline(mosquitto.url, again) as mqtt2, Driver(mqtt2):
        mqtt2.start()
        poll(lambda: mqtt2.backlog_done.is_set(), 20, what="the next connection's backlog")
        assert again.numbers() == []  # every acknowledgement reached the broker before the DISCONNECT


def test_a_broker_that_is_down_is_asked_again_after_a_growing_wait_not_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Never a tight loop of connection attempts, which would fill the log and load the broker's host."""
    mqtt = HubMqtt(f"mqtt://127.0.0.1:{free_port()}", Topics(), SystemClock(), Seen(), inline=True)
    mqtt.retry_min_s, mqtt.retry_max_s = 0.2, 0.8
    caplog.set_level("WARNING", logger="seclusion_hub.mqtt")

    def attempts() -> list[float]:
        return [r.created for r in caplog.records if "failed" in r.getMessage()]

    try:
        mqtt.start()
        poll(lambda: len(attempts()) >= 4, 10, what="four attempts")
        gaps = [b - a for a, b in itertools.pairwise(attempts())]
        # 0.2 s, then twice as long each time up to retry_max_s (only lower bounds: a loaded machine
        # may make any wait longer, never shorter).
        assert gaps[0] >= 0.15
        assert gaps[1] >= 0.35
        assert gaps[2] >= 0.75
        assert not mqtt.connected
    finally:
        mqtt.stop()


def test_an_adapter_not_inline_has_no_pump() -> None:
    mqtt = HubMqtt("mqtt://127.0.0.1:1", Topics(), SystemClock(), Seen(), client_id="test-hub")
    try:
        with pytest.raises(RuntimeError, match="inline"):
            mqtt.pump(0.0)
    finally:
        stop_client(mqtt.client)


def test_paho_threads_helper_sees_a_network_thread(mosquitto: Mosquitto) -> None:
    """The check of the first test could fail: a client on paho's own thread shows up in it."""
    client = paho_client(mosquitto, "test-threaded")
    try:
        assert _paho_threads() != []
    finally:
        client.disconnect()
        stop_client(client)
