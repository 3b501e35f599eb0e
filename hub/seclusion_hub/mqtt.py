"""The hub's MQTT adapter: the only module of the hub that imports paho.

A persistent session (v5: `clean_start=False` with a session expiry; 3.1.1: `clean_session=False`), QoS 1
subscriptions, and manual acknowledgement: a message is acknowledged to the broker only after what it
changed is committed, so a crash between the two gets it delivered again, never lost.
"""

from __future__ import annotations

import logging
import re
import secrets
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from seclusion_contract import (
    BrokerAddress,
    HubStatusPayload,
    Topics,
    dump_payload,
    parse_broker_url,
    send_at_once_on_open,
    stop_client,
)

from .core.clock import Clock
from .errors import ConfigError
from .ingest import Inbound

log = logging.getLogger(__name__)


def parse_mqtt_url(url: str) -> BrokerAddress:
    """`mqtt://user:pass@host:port` or `mqtts://...`; anything else is a ConfigError."""
    try:
        return parse_broker_url(url)
    except ValueError as exc:
        raise ConfigError("SECLUSION_MQTT_URL", "", str(exc)) from exc


class HubMqtt:
    """Connects, subscribes, hands every message to `on_inbound`, and acknowledges when told."""

    def __init__(
        self,
        url: str,
        topics: Topics,
        clock: Clock,
        on_inbound: Callable[[Inbound], None],
        *,
        client_id: str = "seclusion-hub",
        session_expiry_s: int = 7 * 24 * 3600,
        protocol: str = "5",
        receive_maximum: int = 4096,
        first_conn: int = 0,
    ) -> None:
        self.address = parse_mqtt_url(url)
        self.topics = topics
        self.clock = clock
        self.on_inbound = on_inbound
        self.v5 = protocol == "5"
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.backlog_done = threading.Event()
        self.on_connected: Callable[[], None] = lambda: None
        self.on_disconnected: Callable[[], None] = lambda: None
        self.on_backlog_done: Callable[[], None] = lambda: None
        self._connected = threading.Event()
        self._stopping = False
        self._conn = first_conn  # each connection numbered from here (mqtt_process: one range per child)
        # One marker topic for the client id (a persistent session keeps its subscriptions: a topic of
        # its own per start would pile them up), and a payload naming this adapter and its connection:
        # a marker sent on an earlier connection, or by an earlier process, can come back after a
        # reconnect ahead of the backlog the broker kept since, and must not end it.
        self._marker = self.topics.hub_marker(re.sub(r"[^A-Za-z0-9_.-]", "_", client_id))
        self._nonce = secrets.token_hex(6)
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if self.v5 else paho.MQTTv311,
            clean_session=None if self.v5 else False,
            manual_ack=True,
        )
        if self.address.username:
            self.client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            self.client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        offline = dump_payload(HubStatusPayload(online=False))
        self.client.will_set(self.topics.hub_status, offline, qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_socket_open = send_at_once_on_open
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        """True only between a successful CONNACK and the next disconnect."""
        return self._connected.is_set()

    def start(self) -> None:
        props: Properties | None = None
        if self.v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.session_expiry_s
            props.ReceiveMaximum = self.receive_maximum
            self.client.connect_async(
                self.address.host, self.address.port, keepalive=30, clean_start=False, properties=props
            )
        else:
            self.client.connect_async(self.address.host, self.address.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        """Say the hub is going offline, then disconnect (the session stays for the next start)."""
        self._stopping = True
        if self.connected:
            info = self.client.publish(
                self.topics.hub_status,
                dump_payload(HubStatusPayload(online=False, ts=self.clock.now())),
                1,
                True,
            )
            info.wait_for_publish(timeout=2)
        self.client.disconnect()
        stop_client(self.client)
        self._connected.clear()

    def ack(self, mid: int, qos: int, conn: int) -> None:
        """Acknowledge a delivered message to the broker (after its effects are committed).

        Only on the connection that delivered it: after a reconnect the broker sends it again, and the
        packet id may by then belong to another message that is not yet stored.
        """
        if qos > 0 and conn == self._conn and self.connected:
            self.client.ack(mid, qos)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        result = self.client.publish(topic, payload, qos=qos, retain=retain)
        if result.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            # With no connection paho keeps QoS>0 messages queued for the reconnect; anything else is a fault.
            log.error("publish to %s failed: %s", topic, paho.error_string(result.rc))

    def _marker_payload(self, conn: int) -> bytes:
        return f"{self._nonce}/{conn}".encode()

    # -- paho callbacks (network thread): never raise out of them

    def _on_connect(self, client: paho.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self._connected.clear()
            log.error("MQTT connect to %s:%s refused: %s", self.address.host, self.address.port, reason)
            return
        self._conn += 1
        self.backlog_done.clear()
        try:
            for topic in self.topics.hub_subscriptions():
                client.subscribe(topic, qos=1)
            client.subscribe(self._marker, qos=1)
            # Not `online` yet: the service says so once the backlog is through and the rooms are looked
            # at again with it (their indicators published first). Said now, the rooms' agents would
            # hand their outputs to indicators from before the hub's downtime, and a buzzer sounding for
            # a child unwatched meanwhile would fall silent (semantics 4.6, 5.4).
            # Queued messages of our session come before this marker: when it returns, the backlog is through.
            client.publish(self._marker, self._marker_payload(self._conn), qos=1)
        except Exception:
            # Never let an error escape into paho's network thread (it would die silently). Without its
            # subscriptions the hub is not really connected: drop the socket so that paho reconnects.
            log.exception("setting up the MQTT session failed; reconnecting")
            sock = client.socket()
            if sock is not None:
                sock.close()
            return
        # The service hears of the new connection before anything may see it connected: a batch in
        # between would judge the rooms against the last connection's backlog (4.6).
        try:
            self.on_connected()
        except Exception:
            log.exception("publishing the devices' config after connecting failed")
        self._connected.set()
        log.info("MQTT connected to %s:%s", self.address.host, self.address.port)

    def _on_disconnect(self, _c: paho.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._connected.clear()
        if self._stopping:
            log.info("MQTT disconnected: %s", reason)
        else:
            log.warning("MQTT disconnected: %s (reconnecting)", reason)
        try:
            self.on_disconnected()
        except Exception:
            log.exception("reporting the disconnect failed")

    def _on_message(self, client: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            if msg.topic == self._marker:
                if bytes(msg.payload) == self._marker_payload(self._conn):
                    self.backlog_done.set()
                    self.on_backlog_done()
                else:
                    log.debug("a backlog marker of an earlier connection came back; not this one's")
                if msg.qos:
                    client.ack(msg.mid, msg.qos)
                return
            self.on_inbound(
                Inbound(
                    topic=msg.topic,
                    payload=bytes(msg.payload),
                    received_at=self.clock.now(),
                    mid=msg.mid,
                    qos=msg.qos,
                    retain=bool(msg.retain),
                    conn=self._conn,
                )
            )
        except Exception:
            log.exception("could not hand over a message on %s", msg.topic)
