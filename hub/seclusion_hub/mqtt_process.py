"""The hub's MQTT adapter in a process of its own (`SECLUSION_MQTT_PROCESS=true`; off by default).

Receiving MQTT costs about half as much Python per message as applying it (paho reads and parses every
packet, answers it, and sends the devices' acks), and in one process both share one interpreter lock.
Here the same `HubMqtt` runs in a child process and the two talk over two pipes (measured in
docs/performance.md: a burst is taken sooner, a steady load no quicker on two cores, for about 1.2
CPU-s more per 20,000 messages):

- child → hub: what arrived, in arrival order, a list at a time: messages (`Inbound`), and the
  connection's news (connected, disconnected, the backlog marker back);
- hub → child: what to do, a list at a time: acknowledge a message (after its effects are committed),
  publish.

Nothing else changes: a message is still acknowledged to the broker only after it is stored, on the
connection that delivered it. If the hub dies, the child sees its pipe close and exits at once without
a DISCONNECT, so the broker publishes the hub's Last Will as before; if the child dies, the hub says so
in its log, counts itself disconnected, and starts another (its connections are numbered apart, so no
late ack reaches a message of the new connection).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from seclusion_contract import Topics

from .core.clock import Clock, SystemClock
from .ingest import Inbound
from .mqtt import HubMqtt, parse_mqtt_url

log = logging.getLogger(__name__)

# Connection numbers of the n-th child start at n * _CONN_SPAN: an ack meant for a connection of an
# earlier child can never match one of a later child.
_CONN_SPAN = 1_000_000
_RESTART_MAX_S = 30.0


@dataclass(frozen=True)
class _Params:
    url: str
    root: str
    client_id: str
    session_expiry_s: int
    protocol: str
    receive_maximum: int
    first_conn: int
    log_level: int


class MqttProcess:
    """`HubMqtt`'s interface (start, stop, ack, publish, connected, backlog_done, on_connected), served by a
    child process; callbacks run on this process's reader thread, in the order the child saw them."""

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
    ) -> None:
        self.address = parse_mqtt_url(url)  # a bad address is a ConfigError here, not in the child
        # What each child is started with; `_spawn` adds its connection numbers and the log level. The
        # child stamps arrivals with the system clock (`clock` is taken for HubMqtt's signature only).
        self._params = _Params(
            url=url,
            root=topics.root,
            client_id=client_id,
            session_expiry_s=session_expiry_s,
            protocol=protocol,
            receive_maximum=receive_maximum,
            first_conn=0,
            log_level=logging.NOTSET,
        )
        self.on_inbound = on_inbound
        self.backlog_done = threading.Event()
        self.on_connected: Callable[[], None] = lambda: None
        self.on_disconnected: Callable[[], None] = lambda: None
        self.on_backlog_done: Callable[[], None] = lambda: None
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._out: list[tuple[Any, ...]] = []
        self._out_ready = threading.Condition()
        self._to_child: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._from_child: Connection | None = None
        self._threads: list[threading.Thread] = []
        self._generation = 0
        self.restarts = 0

    @property
    def connected(self) -> bool:
        """True only between the child's report of a CONNACK (with subscriptions) and its next disconnect."""
        return self._connected.is_set()

    def start(self) -> None:
        self._stopping.clear()
        self._spawn()
        reader = threading.Thread(target=self._supervise, name="seclusion-mqtt-reader", daemon=True)
        writer = threading.Thread(target=self._write, name="seclusion-mqtt-writer", daemon=True)
        self._threads = [reader, writer]
        reader.start()
        writer.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the child to say the hub is going offline and disconnect, then wait for it."""
        with self._out_ready:
            self._out.append(("stop",))  # before `_stopping`: the writer sends all it has, then ends
            self._stopping.set()
            self._out_ready.notify_all()
        process = self._process
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the MQTT process did not stop within %.0f s; ending it", timeout)
                process.kill()
                process.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        self._connected.clear()

    def ack(self, mid: int, qos: int, conn: int) -> None:
        """Acknowledge a delivered message to the broker (after its effects are committed); the child
        sends it only on the connection that delivered it (`HubMqtt.ack`)."""
        if qos > 0:
            self._send(("ack", mid, qos, conn))

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self._send(("pub", topic, payload, qos, retain))

    @property
    def pid(self) -> int | None:
        """The child's process id (for a benchmark's accounting and for tests)."""
        return self._process.pid if self._process is not None else None

    # -- the hub's side

    def _send(self, item: tuple[Any, ...]) -> None:
        with self._out_ready:
            self._out.append(item)
            self._out_ready.notify()

    def _write(self) -> None:
        """The writer thread: whatever the hub asked for since the last send, as one list. While no child
        is there to take it (between a crash and its successor), it waits, so that nothing the hub
        published is lost; acks meant for the dead child's connection are dropped by the next."""
        while True:
            with self._out_ready:
                while not self._out and not self._stopping.is_set():
                    self._out_ready.wait()
                items, self._out = self._out, []
                conn = self._to_child
            if not items:
                return  # stopping, and all sent
            try:
                if conn is None:
                    raise OSError("no MQTT process")
                conn.send(items)
            except OSError:
                with self._out_ready:
                    self._out[:0] = items
                    if self._stopping.is_set():
                        return
                    # Until the reader thread has started another child (or the hub stops).
                    while self._to_child is conn and not self._stopping.is_set():
                        self._out_ready.wait()

    def _spawn(self) -> None:
        """Start a child: a fresh interpreter running this module alone (not multiprocessing's spawn,
        which would import the hub's main module again), with one pipe each way."""
        from_child, child_out = os.pipe()
        child_in, to_child = os.pipe()
        try:
            process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                [sys.executable, "-m", __name__, str(child_in), str(child_out)],
                pass_fds=(child_in, child_out),
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            for fd in (from_child, to_child):
                os.close(fd)
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        params = dataclasses.replace(
            self._params,
            first_conn=self._generation * _CONN_SPAN,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        self._generation += 1
        writer = Connection(to_child, readable=False)
        self._from_child = Connection(from_child, writable=False)
        self._process = process
        with contextlib.suppress(OSError):  # a child that died at once is seen by the reader thread
            writer.send(params)
        with self._out_ready:
            old, self._to_child = self._to_child, writer
            self._out_ready.notify_all()
        if old is not None:
            old.close()

    def _supervise(self) -> None:
        """The reader thread: hand over what the child reports; start another child if it dies."""
        delay = 1.0
        while True:
            started = time.monotonic()
            reader = self._from_child
            if reader is not None:
                self._read(reader)
                reader.close()
            self._connected.clear()
            process = self._process
            code = None
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = process.wait(1.0)
            if self._stopping.is_set():
                return
            # Quickly the first time; backing off while it keeps dying within the minute.
            delay = 1.0 if time.monotonic() - started > 60 else min(_RESTART_MAX_S, delay * 2)
            log.error(
                "the MQTT process ended unexpectedly (exit code %s); starting another in %.0f s", code, delay
            )
            while not self._stopping.wait(delay):
                try:
                    self._spawn()
                except OSError:
                    log.exception("starting the MQTT process failed; trying again in %.0f s", delay)
                    continue
                self.restarts += 1
                break
            else:
                return

    def _read(self, conn: Connection) -> None:
        on_inbound = self.on_inbound
        while True:
            try:
                items = conn.recv()
            except (EOFError, OSError):
                return
            for item in items:
                try:
                    if item[0] == "m":
                        _, topic, payload, received_at, mid, qos, retain, num = item
                        on_inbound(Inbound(topic, payload, received_at, mid, qos, retain, num))
                    else:
                        self._news(item)
                except Exception:  # never lose the reader thread to one bad item
                    log.exception("could not hand over what the MQTT process reported")

    def _news(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "connected":
            self.backlog_done.clear()
            try:  # before anything may see it connected (mqtt.py says why)
                self.on_connected()
            except Exception:
                log.exception("publishing the devices' config after connecting failed")
            self._connected.set()
        elif kind == "disconnected":
            self._connected.clear()
            try:
                self.on_disconnected()
            except Exception:
                log.exception("reporting the disconnect failed")
        elif kind == "backlog":
            self.backlog_done.set()
            try:
                self.on_backlog_done()
            except Exception:
                log.exception("reporting the backlog through failed")


# -- the child


def _child_main(params: _Params, to_hub: Connection, from_hub: Connection) -> None:
    # Signals are the hub's to handle (a Ctrl-C or a service manager's SIGTERM reaches the whole group):
    # the child stops when the hub tells it to, or when the hub's end of the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=params.log_level, format="%(asctime)s %(levelname)s %(name)s[mqtt]: %(message)s"
    )
    outbox: list[tuple[Any, ...]] = []
    ready = threading.Condition()

    def report(item: tuple[Any, ...]) -> None:
        with ready:
            outbox.append(item)
            ready.notify()

    def on_inbound(m: Inbound) -> None:
        report(("m", m.topic, m.payload, m.received_at, m.mid, m.qos, m.retain, m.conn))

    mqtt = HubMqtt(
        params.url,
        Topics(params.root),
        SystemClock(),
        on_inbound,
        client_id=params.client_id,
        session_expiry_s=params.session_expiry_s,
        protocol=params.protocol,
        receive_maximum=params.receive_maximum,
        first_conn=params.first_conn,
    )
    mqtt.on_connected = lambda: report(("connected",))
    mqtt.on_disconnected = lambda: report(("disconnected",))
    mqtt.on_backlog_done = lambda: report(("backlog",))

    def forward() -> None:
        while True:
            with ready:
                while not outbox:
                    ready.wait()
                items = outbox[:]
                outbox.clear()
            try:
                to_hub.send(items)
            except OSError:
                os._exit(0)  # the hub is gone: as if this process were part of it (the Will tells)

    threading.Thread(target=forward, name="seclusion-mqtt-forward", daemon=True).start()
    mqtt.start()
    while True:
        try:
            commands = from_hub.recv()
        except (EOFError, OSError):
            os._exit(0)  # the hub died: no DISCONNECT, so the broker publishes the hub's Last Will
        for command in commands:
            kind = command[0]
            if kind == "ack":
                mqtt.ack(command[1], command[2], command[3])
            elif kind == "pub":
                mqtt.publish(command[1], command[2], qos=command[3], retain=command[4])
            elif kind == "stop":
                mqtt.stop()  # says the hub is going offline, then DISCONNECT (the session stays)
                return


def main(argv: list[str]) -> None:
    """`python -m seclusion_hub.mqtt_process IN OUT`: the child, started by `MqttProcess` only."""
    from_hub = Connection(int(argv[0]), writable=False)
    to_hub = Connection(int(argv[1]), readable=False)
    params = from_hub.recv()
    if not isinstance(params, _Params):
        raise SystemExit("seclusion_hub.mqtt_process is started by the hub, not by hand")
    _child_main(params, to_hub, from_hub)


if __name__ == "__main__":
    # Run as the module's own name, so that what the hub pickles (`_Params`) is this module's class.
    from seclusion_hub.mqtt_process import main as _main

    _main(sys.argv[1:])
