"""The `mosquitto` fixture is a real broker that carries a QoS 1 message."""

from __future__ import annotations

import queue
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from seclusion_contract import stop_client
from tests.support.processes import Mosquitto


def _client(name: str) -> mqtt.Client:
    return mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )


def test_a_qos1_message_goes_through_the_broker(mosquitto: Mosquitto) -> None:
    """Given a subscriber on a fresh broker, when a publisher sends a QoS 1 message, then it arrives once."""
    topic = "seclusion/v1/demo-school/calm-1/calm-1-door/event"
    subscribed: queue.Queue[bool] = queue.Queue()
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        assert not reason.is_failure, reason
        client.subscribe(topic, qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        subscribed.put(all(not r.is_failure for r in reasons))

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        received.put(message)

    subscriber = _client("sub")
    subscriber.on_connect = on_connect
    subscriber.on_subscribe = on_subscribe
    subscriber.on_message = on_message
    publisher = _client("pub")
    subscriber.connect("127.0.0.1", mosquitto.port)
    subscriber.loop_start()
    try:
        assert subscribed.get(timeout=10) is True
        publisher.connect("127.0.0.1", mosquitto.port)
        publisher.loop_start()
        try:
            info = publisher.publish(topic, b'{"v":1}', qos=1)
            info.wait_for_publish(timeout=10)
            assert info.is_published()
        finally:
            publisher.disconnect()
            stop_client(publisher)
        message = received.get(timeout=10)
        assert message.topic == topic
        assert message.payload == b'{"v":1}'
        assert message.qos == 1
        assert received.empty()
    finally:
        subscriber.disconnect()
        stop_client(subscriber)
