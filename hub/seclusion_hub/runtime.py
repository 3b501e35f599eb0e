"""The composition root: settings in, a running hub out (store, rooms, MQTT, HTTP), wired in one place."""

from __future__ import annotations

import gc
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI

from seclusion_contract import Topics

from .api import create_app
from .config import HubSettings, LoadedSite, load_sites
from .core.clock import Clock, SystemClock
from .live import LiveFeed
from .mqtt import HubMqtt
from .mqtt_process import MqttProcess
from .service import HubService
from .serving_lock import ServingLock
from .store import Store

log = logging.getLogger(__name__)

MQTT_READY_WAIT_S = 10.0


@dataclass
class Hub:
    """Every part of a running hub."""

    settings: HubSettings
    sites: list[LoadedSite]
    store: Store
    service: HubService
    mqtt: HubMqtt | MqttProcess
    app: FastAPI
    live: LiveFeed

    @classmethod
    def build(cls, settings: HubSettings, clock: Clock | None = None, protocol: str | None = None) -> Hub:
        clock = clock or SystemClock()
        sites = load_sites(settings.site_paths())
        store = Store.open(settings.database_url)
        topics = Topics(settings.mqtt_root)
        service = HubService(
            sites,
            store,
            clock,
            topics,
            batch_size=settings.ingest_batch,
            linger_s=settings.ingest_linger_ms / 1000,
            public_url=settings.public_url,
        )
        # MQTT in a process of its own (mqtt_process.py) when SECLUSION_MQTT_PROCESS says so; its arrival
        # stamps come from the system clock, so a hub built on another clock (tests) keeps it in a thread.
        own_process = settings.mqtt_process and isinstance(clock, SystemClock)
        inbound = (settings.mqtt_url, topics, clock, service.submit)
        options: dict[str, Any] = {
            "client_id": settings.mqtt_client_id,
            "session_expiry_s": settings.mqtt_session_expiry_s,
            "protocol": protocol or settings.mqtt_protocol,
        }
        mqtt: HubMqtt | MqttProcess
        if own_process:
            mqtt = MqttProcess(*inbound, **options)
        else:
            # Inline unless told otherwise: the ingest thread reads, applies, stores and acknowledges,
            # all on one thread (mqtt.py; docs/performance.md).
            mqtt = HubMqtt(*inbound, **options, inline=not settings.mqtt_thread)
            if mqtt.inline:
                service.pump = mqtt.pump
                service.inbox.wake = mqtt.wake
        service.ack_message = mqtt.ack
        service.publish = lambda topic, payload, qos, retain: mqtt.publish(
            topic, payload, qos=qos, retain=retain
        )
        # Through once the ingest thread reaches the marker's place in the inbox, not when paho hears it:
        # the broker's backlog may still wait in the inbox before it.
        service.backlog_done = service.backlog_applied
        mqtt.on_backlog_done = service.backlog_marker
        service.listening = lambda: mqtt.connected

        def on_connected() -> None:
            service.reconnected()
            service.publish_configs()

        mqtt.on_connected = on_connected
        mqtt.on_disconnected = service.disconnected
        live = LiveFeed()
        service.live = live  # the service pushes every alert and room change to the live boards
        app = create_app(service, lambda: mqtt.connected, live, public_url=settings.public_url)
        return cls(settings, sites, store, service, mqtt, app, live)

    def start(self) -> None:
        """Start taking messages: the ingest thread first, so nothing delivered waits for it."""
        # What start-up built lives as long as the process: keep it out of the collector's full passes,
        # which otherwise pause ingest for tens of milliseconds (measured in bench/ingest.py).
        gc.freeze()
        self.service.start()
        self.mqtt.start()
        # Serve HTTP once subscribed (the marker the hub sends itself has come back), or after
        # MQTT_READY_WAIT_S without a broker: whoever sees the port open and then has a device publish
        # must not lose the message to a subscription not yet made (a first start has no session yet).
        # The MQTT process needs about half a second to start; a broker that is down delays the HTTP
        # API by this much at most, and /healthz then says `mqtt_connected: false`.
        if not self.mqtt.backlog_done.wait(MQTT_READY_WAIT_S):
            log.warning(
                "not subscribed to the broker at %s after %.0f s; serving HTTP anyway, still trying",
                self.mqtt.address.redacted(),
                MQTT_READY_WAIT_S,
            )

    def stop(self) -> None:
        """Stop in the order that loses nothing and repeats nothing: take no more messages (what the
        broker delivers now stays unacknowledged and comes again at the next start) and say offline at
        once (the rooms' fail-safe takes over); write what was taken and acknowledge it while the
        connection is still open (acknowledged after it closed, a stored message would be delivered
        again: a Last Will applied twice); then disconnect."""
        self.live.close()
        self.service.stop_taking()
        self.service.stop()
        self.mqtt.stop()
        self.store.close()

    def serve(self) -> None:
        """Run until SIGINT or SIGTERM (uvicorn handles both), then stop cleanly."""
        config = uvicorn.Config(
            self.app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_level="info",
            access_log=False,
        )
        server = _Server(config, self.live)
        # One hub per database (serving_lock.py): refused before it takes any message.
        lock = ServingLock.take(self.store.engine)
        try:
            self.start()
            try:
                server.run()
            finally:
                self.stop()
        finally:
            lock.release()

    def serve_in_thread(self) -> tuple[uvicorn.Server, threading.Thread]:
        """Start everything with the HTTP server on a thread (for the demo and in-process tests)."""
        config = uvicorn.Config(
            self.app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_level="warning",
            access_log=False,
        )
        server = _Server(config, self.live)
        self.start()
        thread = threading.Thread(target=server.run, name="seclusion-http", daemon=True)
        thread.start()
        return server, thread


class _Server(uvicorn.Server):
    """uvicorn waits for every open response before it stops: end the live streams first."""

    def __init__(self, config: uvicorn.Config, live: LiveFeed) -> None:
        super().__init__(config)
        self.live = live

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.live.close()
        await super().shutdown(sockets)
