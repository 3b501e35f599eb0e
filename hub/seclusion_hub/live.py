"""The live channel: what changes on the hub, pushed to every open board (Server-Sent Events).

`LiveFeed.publish` is called from any thread (the ingest thread above all) and never blocks: it
serialises the data once and hands it to each subscriber's own bounded queue. A subscriber is an
SSE stream on the event loop; it is woken with `loop.call_soon_threadsafe`, once per burst. A stream
that falls behind is ended (its page is told to fetch everything again) rather than slowing anyone
else or growing without bound. Each subscriber sees only the sites its principal may see.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal

from seclusion_contract import format_ts

from .auth import Principal

log = logging.getLogger(__name__)

QUEUE_SIZE: Final = 1000
KEEPALIVE_S: Final = 15.0
RETRY_MS: Final = 3000
"""How long a browser waits before it reconnects a stream that ended (the SSE `retry` field)."""

EVENT_NAME: Final = re.compile(r"^[a-z][a-z_]{0,31}$")

EndReason = Literal["fell_behind", "hub_stopping", "unsubscribed"]


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One published event: its name and its data, already JSON (serialised once for everyone)."""

    event: str
    data: str
    site: str | None

    def sse(self) -> str:
        """The event as an SSE frame (JSON never holds a raw newline, so one `data:` line)."""
        return f"event: {self.event}\ndata: {self.data}\n\n"


class SubscriptionEnded(Exception):
    """The subscription ended and its queue is empty; `reason` says why."""

    def __init__(self, reason: EndReason) -> None:
        super().__init__(reason)
        self.reason: EndReason = reason


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime):
        return format_ts(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def sse_frame(event: str, data: Mapping[str, Any]) -> str:
    """An SSE frame for data made by the stream itself (hello, reload)."""
    return LiveEvent(event, json.dumps(data, separators=(",", ":"), default=_json_default), None).sse()


class Subscription:
    """One stream's queue. Filled from any thread, read on the event loop it was made on."""

    def __init__(self, feed: LiveFeed, who: Principal, loop: asyncio.AbstractEventLoop, maxsize: int) -> None:
        self._feed = feed
        self.who = who
        self._loop = loop
        self._maxsize = maxsize
        self._items: deque[LiveEvent] = deque()
        self._lock = threading.Lock()
        self._wake = asyncio.Event()  # touched on the loop only
        self.ended: EndReason | None = None

    def accepts(self, event: LiveEvent) -> bool:
        """Whether the principal may see the event: its site's, or every site for site-less data."""
        if event.site is None:
            return self.who.sites is None
        return self.who.may_see(event.site)

    def offer(self, event: LiveEvent) -> bool:
        """Queue an event (any thread); False when this subscription has ended and should be dropped."""
        with self._lock:
            if self.ended is not None:
                return False
            if len(self._items) >= self._maxsize:
                # Behind by a whole queue: what it holds is stale anyway. End the stream; the page
                # fetches everything again when it reconnects.
                self._items.clear()
                self.ended = "fell_behind"
                keep = False
                wake = True
            else:
                wake = not self._items  # a reader waits only on an empty queue: one wake per burst
                self._items.append(event)
                keep = True
        if wake:
            self._wake_soon()
        return keep

    def end(self, reason: EndReason) -> None:
        """End the stream once its queue is drained (any thread)."""
        with self._lock:
            if self.ended is not None:
                return
            self.ended = reason
        self._wake_soon()

    def _wake_soon(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop is closed: nobody reads this stream any more
            with self._lock:
                self.ended = self.ended or "hub_stopping"

    async def next_batch(self, timeout: float) -> list[LiveEvent]:
        """Every queued event, waiting at most `timeout` seconds for one ([] when none came).

        Raises SubscriptionEnded once the subscription has ended and its queue is empty.
        """
        deadline = self._loop.time() + timeout
        while True:
            with self._lock:
                items = list(self._items)
                self._items.clear()
                if not items:
                    if self.ended is not None:
                        raise SubscriptionEnded(self.ended)
                    self._wake.clear()  # under the lock: an offer after this schedules a new wake
            if items:
                return items
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return []
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return []

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._feed.unsubscribe(self)


class LiveFeed:
    """Fan-out of the hub's changes (`alert`, `room`) to the open live streams."""

    def __init__(self, queue_size: int = QUEUE_SIZE, keepalive_s: float = KEEPALIVE_S) -> None:
        self.queue_size = queue_size
        self.keepalive_s = keepalive_s
        self._lock = threading.Lock()
        self._subscribers: set[Subscription] = set()
        self._closed = False
        self.dropped = 0
        """Subscribers ended because they fell behind, since start."""

    @property
    def has_subscribers(self) -> bool:
        """Whether anyone listens: callers may skip building the data when nobody does."""
        return bool(self._subscribers)

    @property
    def closed(self) -> bool:
        return self._closed

    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, event: str, data: Mapping[str, Any]) -> int:
        """Send an event to every subscriber allowed to see `data["site"]`; how many streams it was
        queued on (a board of another school is not one of them). Any thread; never blocks."""
        if not self._subscribers:
            return 0
        if not EVENT_NAME.match(event):
            raise ValueError(f"event: {event!r} is not a live event name")
        try:
            text = json.dumps(data, separators=(",", ":"), default=_json_default)
        except (TypeError, ValueError):
            # A bug of ours: the caller (the ingest thread) must go on; the page resyncs on reconnect.
            log.exception("live event %r could not be serialised; not sent", event)
            return 0
        site = data.get("site")
        item = LiveEvent(event, text, site if isinstance(site, str) else None)
        with self._lock:
            subscribers = list(self._subscribers)
        allowed = [sub for sub in subscribers if sub.accepts(item)]
        behind = [sub for sub in allowed if not sub.offer(item)]
        if behind:
            fell = sum(1 for sub in behind if sub.ended == "fell_behind")
            with self._lock:
                self._subscribers.difference_update(behind)
                self.dropped += fell
            if fell:
                log.warning("%d live stream(s) fell behind and were ended; their pages will resync", fell)
        return len(allowed) - len(behind)

    def subscribe(self, who: Principal) -> Subscription:
        """A new subscription for the running event loop (use it as a context manager)."""
        sub = Subscription(self, who, asyncio.get_running_loop(), self.queue_size)
        with self._lock:
            if self._closed:
                sub.end("hub_stopping")
            else:
                self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.end("unsubscribed")
        with self._lock:
            self._subscribers.discard(sub)

    def close(self) -> None:
        """End every stream and refuse new ones (at shutdown: the HTTP server waits for open streams)."""
        with self._lock:
            self._closed = True
            subscribers = list(self._subscribers)
            self._subscribers.clear()
        for sub in subscribers:
            sub.end("hub_stopping")
