"""The hub's MQTT adapter: the only module of the hub that imports paho.

A persistent session (v5: `clean_start=False` with a session expiry; 3.1.1: `clean_session=False`), QoS 1
subscriptions, and manual acknowledgement: a message is acknowledged to the broker only after what it
changed is committed, so a crash between the two gets it delivered again, never lost.

Who drives the connection (reads, writes, keepalive), one of two ways:

- **inline** (the hub's default): the ingest thread itself, between its batches and while it gathers
  one (`pump`), through paho's own interface for an outside loop (`loop_read`, `loop_write`,
  `loop_misc`). A message goes from the socket to the batch on one thread, and its acknowledgements go
  out the moment the batch is committed: no second Python thread asks for the interpreter lock for
  every packet (measured: docs/performance.md). Connecting, which can block for seconds, is left to a
  small thread of its own (`_connect_loop`), so the ingest thread never waits for a broker that is down.
  Other threads (the HTTP API, the notifiers) still publish at any time: paho queues the packet and
  `wake` makes the ingest thread write it at once. When the ingest thread has not driven the connection
  for 0.2 s (a write waiting for the database), a standby thread drives it meanwhile (`_stand_by`), so
  that the hub's word that it is offline still reaches the rooms and the link stays alive.
- **threaded** (`inline=False`: the MQTT process's child, the tests of the adapter on its own, and
  `SECLUSION_MQTT_THREAD=true`): paho's own network thread (`loop_start`), as before 2026-12-07.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import select
import socket
import ssl
import threading
import time
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

# Inline: the waits between connection attempts, as paho's own thread has them (`reconnect_delay_set`).
_RETRY_MIN_S = 1.0
_RETRY_MAX_S = 30.0
_STANDBY_S = 0.2  # the ingest thread away this long: the standby thread drives the connection meanwhile
_STANDBY_TURN_S = 0.02  # the longest the ingest thread, back, waits for the standby thread's turn to end


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
        inline: bool = False,
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
        self.inline = inline
        # Inline: the thread that pumps (the ingest thread; at stop the stopping one), the link it may
        # drive (a socket connected by `_connect_loop`), and the wake-up of its wait (`wake`).
        self._io = threading.Lock()  # one driver at a time: the ingest thread, the standby, or `stop`
        self._pumper: int | None = None
        self._link = threading.Event()
        self._need_connect = threading.Event()
        self._closing = threading.Event()
        self._connector: threading.Thread | None = None
        self._standby: threading.Thread | None = None
        self._pumped_at = time.monotonic()
        self._in_pump = False
        # Inline: the wait before connecting again after a loss, as paho's own `reconnect_delay_set`.
        self.retry_min_s = _RETRY_MIN_S
        self.retry_max_s = _RETRY_MAX_S
        self._tries = 0  # connection attempts since the broker last accepted one
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        if inline:
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            # paho's interface for an outside loop: with this set, a packet queued by any thread is only
            # queued (never written by that thread), and whoever drives the client is woken to write it.
            self.client.on_socket_register_write = self._on_register_write

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
        if not self.inline:
            self.client.loop_start()
            return
        self._need_connect.set()
        self._connector = threading.Thread(
            target=self._connect_loop, name="seclusion-mqtt-connect", daemon=True
        )
        self._connector.start()
        self._standby = threading.Thread(target=self._stand_by, name="seclusion-mqtt-standby", daemon=True)
        self._standby.start()

    def stop(self) -> None:
        """Say the hub is going offline, then disconnect (the session stays for the next start).

        Inline, this is called once the ingest thread has ended (`Hub.stop`): the caller drives the
        client from here, so that what the last batches queued (their acknowledgements) goes out before
        the offline word and the DISCONNECT, in that order."""
        self._stopping = True
        self._closing.set()
        self._need_connect.set()  # lets the connecting thread see it should end
        if self.connected:
            info = self.client.publish(
                self.topics.hub_status,
                dump_payload(HubStatusPayload(online=False, ts=self.clock.now())),
                1,
                True,
            )
            if info.rc != paho.MQTT_ERR_SUCCESS:
                # The link went in the moment since `connected` was read (paho closes the socket before
                # it reports the loss): nothing to wait for, and paho's wait would raise. The retained
                # offline word is then the broker's Will.
                log.info("hub offline status not sent: %s", paho.error_string(info.rc))
            elif self.inline:
                self._pump_until(info.is_published, 2.0)
            else:
                info.wait_for_publish(timeout=2)
        self.client.disconnect()
        if self.inline:
            # Until the DISCONNECT is written (paho closes the socket after it): a clean end, so the broker
            # drops the Will; the offline word went out just before.
            self._pump_until(lambda: self.client.socket() is None, 1.0)
            if self._standby is not None:
                self._standby.join(timeout=5.0)
            if self._connector is not None:
                self._connector.join(timeout=1.0)  # a daemon: a connect still trying is not waited for
        stop_client(self.client)
        self._connected.clear()
        self._link.clear()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

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
        if self.inline:
            self.wake()  # paho's own call (`_on_register_write`) comes only when its queue was empty

    # -- inline: the ingest thread drives the client

    def wake(self) -> None:
        """Return the pumping thread from its wait in `pump` at once (a packet to write, an item in its
        inbox). Nothing when called by that thread itself: it looks at both before it waits again. The
        standby thread's calls (a message it read) do wake it, and the standby never takes a wake-up
        (`_drive`): the ingest thread, back, may be waiting for the standby's turn to end, to wait on
        the network next with that message already in its inbox."""
        if self._wake_w is None or threading.get_ident() == self._pumper:
            return
        with contextlib.suppress(OSError):  # full (a wake-up is already waiting) or closed (stopped)
            self._wake_w.send(b"\0")

    def pump(self, timeout: float) -> None:
        """Drive the connection for at most `timeout` seconds, returning as soon as something happened:
        read what has arrived (each message handed to `on_inbound` on this thread), write what is
        queued, keep the connection alive. Without a connection, wait for `wake` or the timeout."""
        self._pumper = threading.get_ident()
        self._in_pump = True
        try:
            self._drive(timeout, woken=True)
        finally:
            self._in_pump = False
            self._pumped_at = time.monotonic()

    def _stand_by(self) -> None:
        """Drive the connection whenever the ingest thread has not for `_STANDBY_S` (a write waiting
        for the database, a long batch): the hub's word that it is offline while it stores nothing
        (`HubService.watch`) must still reach the rooms, and the link must stay alive. In short turns,
        so that the ingest thread, back, takes over within one."""
        while not self._closing.is_set():
            away = time.monotonic() - self._pumped_at
            if self._in_pump or away < _STANDBY_S:  # the ingest thread in its wait, or back from it lately
                self._closing.wait(_STANDBY_S - away if away < _STANDBY_S else _STANDBY_S)
                continue
            try:
                self._drive(_STANDBY_TURN_S, woken=False)
            except Exception:
                log.exception("driving the MQTT connection while the ingest thread is away failed")
                self._closing.wait(_STANDBY_S)

    def _drive(self, timeout: float, *, woken: bool) -> None:
        """One turn: wait for the network (and, if `woken`, for `wake`) up to `timeout`, then read,
        write and keep alive. The standby's turns (not `woken`) leave a wake-up for the pumping thread,
        whose it is; a packet another thread queues during one goes out at the next turn, 20 ms on."""
        with self._io:
            wake_r = self._wake_r
            if wake_r is None:
                raise RuntimeError("pump is for an inline HubMqtt")
            sock = self.client.socket() if self._link.is_set() else None
            pending = 0
            if sock is not None and hasattr(sock, "pending"):
                # TLS: bytes already decrypted wait in the SSL object, not in the socket
                pending = sock.pending()
            readers: list[Any] = [wake_r] if woken else []
            if sock is not None:
                readers.append(sock)
            writers: list[Any] = [sock] if sock is not None and self.client.want_write() else []
            try:
                readable, _w, _x = select.select(readers, writers, [], 0.0 if pending else max(0.0, timeout))
            except (OSError, ValueError):
                self._lost()  # the socket closed under the select (not by paho: nothing here does)
                return
            if wake_r in readable:
                with contextlib.suppress(OSError):
                    while wake_r.recv(4096):
                        pass
            if sock is None:
                return
            rc = paho.MQTT_ERR_SUCCESS
            if sock in readable or pending:
                rc = self.client.loop_read()
            if rc == paho.MQTT_ERR_SUCCESS and self.client.want_write():
                rc = self.client.loop_write()  # what was queued, this thread's acknowledgements among it
            if rc == paho.MQTT_ERR_SUCCESS:
                # The keepalive: a PINGREQ when due; the link dropped when it goes unanswered.
                rc = self.client.loop_misc()
            if rc != paho.MQTT_ERR_SUCCESS or self.client.socket() is None:
                self._lost()

    def _pump_until(self, done: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not done() and self._link.is_set() and (left := deadline - time.monotonic()) > 0:
            self.pump(min(left, 0.05))

    def _lost(self) -> None:
        """The link is gone (read or written to no avail, or unanswered): hand it to `_connect_loop`."""
        if self._link.is_set():
            self._link.clear()
            if self._connected.is_set():
                # paho reports a loss it finds itself (`_on_disconnect`); this one it did not find.
                self._on_disconnect(self.client, None, None, "connection lost", None)
            if not self._closing.is_set():
                self._need_connect.set()

    def _connect_loop(self) -> None:
        """Connect, and connect again whenever the driver loses the link: at once the first time, then
        after `retry_min_s` (1 s), twice as long with each attempt that fails up to `retry_max_s` (30 s),
        as paho's own thread does. A connection the broker refuses or drops before it accepts it counts
        as failed: the wait starts again from `retry_min_s` only after a CONNACK that accepts."""
        first = True
        while True:
            self._need_connect.wait()
            if self._closing.is_set():
                return
            if not first:
                self._tries += 1
                wait_s = min(self.retry_min_s * 2 ** min(self._tries - 1, 16), self.retry_max_s)
                if self._closing.wait(wait_s):
                    return
            first = False
            try:
                self.client.reconnect()  # the TCP (and TLS) connection; the CONNECT queued for the driver
            except Exception as exc:
                log.warning(
                    "MQTT connect to %s:%s failed: %s (trying again)",
                    self.address.host,
                    self.address.port,
                    exc,
                )
                continue
            if self._closing.is_set():  # stopped while it connected: this connection is not wanted
                sock = self.client.socket()
                if sock is not None:
                    sock.close()
                return
            self._need_connect.clear()
            self._link.set()
            self.wake()

    def _on_register_write(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        self.wake()

    def _marker_payload(self, conn: int) -> bytes:
        return f"{self._nonce}/{conn}".encode()

    # -- paho callbacks (network thread): never raise out of them

    def _on_connect(self, client: paho.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self._connected.clear()
            log.error("MQTT connect to %s:%s refused: %s", self.address.host, self.address.port, reason)
            return
        self._conn += 1
        self._tries = 0
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
            if isinstance(sock, socket.socket):
                # Shut, not closed: paho's next read finds the end and handles the loss as any other
                # (its disconnect callback, then a reconnect), whichever thread drives the client.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            elif sock is not None:
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
