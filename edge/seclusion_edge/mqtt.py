"""The paho-mqtt 2.x adapter: the only module of the edge agent that imports paho.

A persistent session either way: MQTT v5 with `clean_start=False` and a Session Expiry Interval (in v5,
`clean_start=False` without an expiry keeps no session), or 3.1.1 with `clean_session=False`. paho
reconnects on its own (`connect_async` + `loop_start`, with `reconnect_delay_set` backoff).
`is_connected` is our own flag: set by an accepted CONNACK, cleared by a disconnect or a failed
connect, so the agent never believes it is connected when it is not. On every accepted connect paho's
own copies of unacknowledged messages from the connection before are dropped (paho would re-send them
after on_connect, out of order with the agent's replay): the agent's outbox replay alone re-sends.
Exceptions raised by the agent's handlers are logged here and never reach paho's network thread. A TLS
setup that fails (a CA file that cannot be read or holds no certificate) is a `LinkError` as the
publisher is built.
"""

from __future__ import annotations

import logging
import socket
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from seclusion_contract import send_at_once_on_open, stop_client
from seclusion_edge.errors import LinkError
from seclusion_edge.link import LinkHandlers, LinkSettings, Message

log = logging.getLogger(__name__)


class PahoPublisher:
    """A `Publisher` over paho-mqtt; build it with `PahoPublisher(settings, handlers)`, then `start()`."""

    def __init__(self, settings: LinkSettings, handlers: LinkHandlers) -> None:
        self._settings = settings
        self._handlers = handlers
        self._connected = threading.Event()
        self._started = False
        self._client = self._build_client()

    @property
    def is_connected(self) -> bool:
        """True only between an accepted CONNACK and the next disconnect or failed connect."""
        return self._connected.is_set()

    def start(self) -> None:
        """Begin connecting in the background; paho keeps reconnecting with backoff until `stop()`."""
        s = self._settings
        if s.protocol == "5":
            # paho's Properties constructor is untyped; the session expiry is what makes the session persist.
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = s.session_expiry_s
            self._client.connect_async(
                s.host, s.port, s.keepalive_s, clean_start=False, properties=properties
            )
        else:
            self._client.connect_async(s.host, s.port, s.keepalive_s)
        self._client.loop_start()
        self._started = True
        log.info("connecting to %s:%d as %s (MQTT %s)", s.host, s.port, s.client_id, s.protocol)

    def publish(self, message: Message) -> bool:
        """Hand a message to the current connection; False when there is none (the caller keeps it)."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def stop(self, farewell: Message | None = None, timeout_s: float = 2.0) -> None:
        """Publish `farewell` if connected and wait for the broker's PUBACK, then disconnect cleanly.

        A clean DISCONNECT makes the broker discard the Last Will, hence the farewell status.
        """
        if not self._started:
            return
        if farewell is not None and self._connected.is_set():
            info = self._client.publish(
                farewell.topic, farewell.payload, qos=farewell.qos, retain=farewell.retain
            )
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # The link went in the moment since the flag was read (paho closes the socket before it
                # reports the loss); paho's wait would raise. The broker's Last Will says it instead.
                log.warning("the farewell status was not published: %s", paho.error_string(info.rc))
            else:
                info.wait_for_publish(timeout_s)
                if not info.is_published():
                    log.warning("the farewell status was not acknowledged within %.1f s", timeout_s)
        self._client.disconnect()
        stop_client(self._client)
        self._connected.clear()
        self._started = False

    def sever(self) -> None:
        """Drop the TCP connection without a DISCONNECT, as a crash or a pulled cable would.

        The broker then publishes the Last Will, and paho reconnects by itself. For tests and the demo.
        """
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)

    def _build_client(self) -> paho.Client:
        s = self._settings
        v5 = s.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            # v5 takes clean_start at connect time; 3.1.1 takes clean_session here.
            clean_session=None if v5 else False,
            reconnect_on_failure=True,
        )
        if log.isEnabledFor(logging.DEBUG):
            # paho's own log repeats every failed reconnect at ERROR level; we log those ourselves.
            client.enable_logger(logging.getLogger("seclusion_edge.paho"))
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            try:
                client.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                with_what = f"the CA file {s.ca_file}" if s.ca_file else "the system's CA certificates"
                reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
                raise LinkError(f"cannot set up TLS with {with_what}: {reason}") from None
        client.will_set(s.will.topic, s.will.payload, qos=s.will.qos, retain=s.will.retain)
        client.reconnect_delay_set(min_delay=s.reconnect_min_s, max_delay=s.reconnect_max_s)
        client.on_pre_connect = self._on_pre_connect
        client.on_socket_open = send_at_once_on_open
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_pre_connect(self, client: paho.Client, userdata: object) -> None:
        """Just before every CONNECT, the first and each reconnect (paho calls this whatever ended the
        connection before, where on_disconnect is not always called): the Last Will it opens with.

        A connection still counted as up here ended without on_disconnect (paho's loop gives up on a
        `select` that raises and reconnects): it is counted down and the agent told first, so that
        nothing newer goes out on the next connection ahead of the replay of what the last one lost."""
        if self._connected.is_set():
            self._connected.clear()
            log.warning(
                "the connection to %s:%d ended unreported; connecting again",
                self._settings.host,
                self._settings.port,
            )
            self._tell_disconnected()
        next_will = self._settings.next_will
        if next_will is None:
            return
        try:
            will = next_will()
        except Exception:
            log.exception("the agent failed to name its next connection; its Last Will is the last one")
            return
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._connected.clear()
            log.warning(
                "broker %s:%d refused the connection: %s", self._settings.host, self._settings.port, reason
            )
            return
        # paho keeps every QoS 1 message of the last connection that the broker did not acknowledge, and
        # sends them again on this one right after on_connect, behind the first messages (its in-flight
        # window) of the agent's own replay and ahead of the rest: the hub would then apply newer events
        # before older ones and drop the older as duplicates. The agent's outbox replay, strictly in
        # (epoch, seq) order, is the only source of what is sent again; the status is published anew
        # too. paho's copies go (drop_out_messages, paho-mqtt >= 2.2 as pinned), before anything is published
        # here. The session stays persistent: the broker's side of it (the subscriptions and what it
        # queued for this client) is untouched, and a QoS 1 PUBLISH needs no packet id of the old one.
        dropped = client.drop_out_messages()
        if dropped:
            log.info("%d unacknowledged messages of the last connection left to the replay", len(dropped))
        self._connected.set()
        log.info(
            "connected to %s:%d (session present: %s)",
            self._settings.host,
            self._settings.port,
            flags.session_present,
        )
        if self._settings.subscriptions:
            client.subscribe([(topic, 1) for topic in self._settings.subscriptions])
        try:
            self._handlers.on_connected(flags.session_present)
        except Exception:
            log.exception("the agent failed to handle a new connection")

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        self._connected.clear()
        log.warning("cannot reach broker %s:%d; retrying", self._settings.host, self._settings.port)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected:
            log.warning("disconnected from %s:%d: %s", self._settings.host, self._settings.port, reason)
        self._tell_disconnected()

    def _tell_disconnected(self) -> None:
        try:
            self._handlers.on_disconnected()
        except Exception:
            log.exception("the agent failed to handle a disconnect")

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            self._handlers.on_message(message.topic, bytes(message.payload))
        except Exception:
            log.exception("the agent failed to handle a message on %s", message.topic)


def paho_publisher(settings: LinkSettings, handlers: LinkHandlers) -> PahoPublisher:
    """The production `PublisherFactory`."""
    return PahoPublisher(settings, handlers)
