"""Delivery: every channel at once, each on its own worker, failures retried with backoff.

`Dispatcher.submit` returns at once. Each distinct channel has one worker thread and its own queue, so a
slow or dead channel never delays the others; within a channel, a delivery waiting for its retry does not
hold back the next notice either (the queue is ordered by when each is due). Every attempt, good or bad,
is reported through `record`. Time comes from an injected clock: a worker waits until the clock says a
retry is due, and `wake()` makes it look at the clock again (tests step a FakeClock, then wake).
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..core.clock import Clock, SystemClock
from ..errors import SeclusionError
from .channels import Channel, DeliveryError
from .notice import Notice

log = logging.getLogger(__name__)


class DispatcherStopped(SeclusionError, RuntimeError):
    """A notice submitted after `stop()`: refused loudly, never dropped quietly."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: `first_delay_s`, times `factor` after each failure, at most `max_delay_s`.

    A delivery is given up after `max_attempts` attempts, or when its next try would fall more than
    `max_age_s` after the send was decided (its notice submitted), whichever comes first: behind a
    destination that hangs, a notice waiting its turn is not tried hours later, a stale alarm.
    """

    first_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 60.0
    max_attempts: int = 8
    max_age_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.first_delay_s < 0 or self.factor < 1 or self.max_delay_s < 0:
            raise ValueError("delays must not be negative and factor must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed attempt (1, 2, 4 ... capped)."""
        return float(min(self.max_delay_s, self.first_delay_s * self.factor ** max(0, failures - 1)))

    def spent(self, attempts: int, first_at: dt.datetime | None, now: dt.datetime) -> str | None:
        """Why a delivery `attempts` tries in, begun at `first_at`, must not be tried again at `now`;
        None while it may be."""
        if attempts >= self.max_attempts:
            return f"not sent: {attempts} attempts made (the retry limit)"
        if first_at is not None and (now - first_at).total_seconds() > self.max_age_s:
            return f"not sent: more than {self.max_age_s:.0f} s old (the retry limit)"
        return None


@dataclass(frozen=True)
class Progress:
    """Where a delivery taken up after a restart stands: its attempts so far, when it began (its
    delivery row's creation) and when it was last tried. The retry limits count from there."""

    attempts: int
    first_at: dt.datetime
    last_at: dt.datetime | None = None


@dataclass(frozen=True)
class Attempt:
    """One try of one notice on one channel, as it is recorded."""

    delivery_id: str
    alert_id: str
    channel: str  # the channel's label: safe to store
    attempt: int  # 1 for the first try
    at: dt.datetime  # when the try began
    ok: bool
    error: str | None  # short, no secrets; None when ok
    next_retry_at: dt.datetime | None  # None when delivered or given up
    gave_up: bool
    ref: str | None = None  # what the caller named this notice on this channel (`submit`'s `refs`)
    tried: bool = True  # False: not tried, given up unsent (past a limit, or its alert resolved)


@dataclass(order=True)
class _Delivery:
    due: dt.datetime
    seq: int
    notice: Notice = field(compare=False)
    first_at: dt.datetime | None = field(default=None, compare=False)
    attempts: int = field(default=0, compare=False)
    ref: str | None = field(default=None, compare=False)
    last_at: dt.datetime | None = field(default=None, compare=False)  # when it was last tried
    dropped: str | None = field(default=None, compare=False)  # why it must not be retried (drop_retries)


class _Worker:
    """One channel's queue and thread. All fields are guarded by `cond`."""

    def __init__(self, channel: Channel, dispatcher: Dispatcher) -> None:
        self.channel = channel
        self.label = _safe_label(channel)
        self.dispatcher = dispatcher
        self.cond = threading.Condition()
        self.queue: list[_Delivery] = []
        self.in_flight: _Delivery | None = None
        self.stopping = False  # drain: try what was never tried, retry nothing
        self.abandon = False  # stop now: leave whatever is left
        self.thread = threading.Thread(target=self._run, name=f"notify {self.label}", daemon=True)

    def put(self, delivery: _Delivery) -> None:
        with self.cond:
            heapq.heappush(self.queue, delivery)
            self.cond.notify_all()

    def size(self) -> int:
        with self.cond:
            return len(self.queue) + (1 if self.in_flight is not None else 0)

    def _next(self) -> _Delivery | None:
        """The next delivery to try, waiting until it is due; None when the worker should end."""
        clock = self.dispatcher.clock
        with self.cond:
            while True:
                if self.abandon:
                    return None
                if self.stopping:
                    # Draining: only deliveries never tried are still attempted, once each.
                    self.queue = [d for d in self.queue if d.attempts == 0]
                    heapq.heapify(self.queue)
                    if not self.queue:
                        return None
                    self.in_flight = heapq.heappop(self.queue)
                    return self.in_flight
                if self.queue:
                    wait = (self.queue[0].due - clock.now()).total_seconds()
                    if wait <= 0:
                        self.in_flight = heapq.heappop(self.queue)
                        return self.in_flight
                    self.cond.wait(wait)
                else:
                    self.cond.wait()

    def _run(self) -> None:
        while True:
            delivery = self._next()
            if delivery is None:
                return
            try:
                self._attempt(delivery)
            except Exception:
                # Our own bug; the worker must outlive it or this channel goes silent.
                log.exception(
                    "notify worker error: channel=%s delivery=%s alert=%s",
                    self.label,
                    delivery.notice.delivery_id,
                    delivery.notice.alert_id,
                )
            finally:
                with self.cond:
                    self.in_flight = None
                    self.cond.notify_all()

    def _attempt(self, delivery: _Delivery) -> None:
        dispatcher = self.dispatcher
        notice = delivery.notice
        started = dispatcher.clock.now()
        spent = dispatcher.retry.spent(delivery.attempts, delivery.first_at, started)
        if spent is not None:
            # Taken up after a restart past a limit: a stale alarm is not sent (8 attempts, one hour).
            self._give_up_unsent(delivery, spent, started)
            return
        if delivery.first_at is None:
            delivery.first_at = started
        delivery.attempts += 1
        delivery.last_at = started
        error: str | None = None
        try:
            self.channel.send(notice)
        except DeliveryError as exc:
            error = exc.reason or type(exc).__name__
        except Exception as exc:
            error = f"unexpected error: {type(exc).__name__}"
            log.exception(
                "notify channel raised unexpectedly: channel=%s delivery=%s alert=%s attempt=%d",
                self.label,
                notice.delivery_id,
                notice.alert_id,
                delivery.attempts,
            )
        ended = dispatcher.clock.now()
        next_retry: dt.datetime | None = None
        gave_up = False
        with self.cond:
            # Decided and settled under one lock: drop_retries cannot slip in between.
            if error is not None:
                policy = dispatcher.retry
                candidate = ended + dt.timedelta(seconds=policy.delay(delivery.attempts))
                if self.stopping:
                    error += "; not retried: the hub is stopping"
                    gave_up = True
                elif delivery.dropped is not None:
                    error += f"; not retried: {delivery.dropped}"
                    gave_up = True
                elif delivery.attempts >= policy.max_attempts:
                    gave_up = True
                elif (candidate - delivery.first_at).total_seconds() > policy.max_age_s:
                    gave_up = True
                else:
                    next_retry = candidate
            # Settled before it is reported, so that pending() agrees with what was recorded.
            self.in_flight = None
            if next_retry is not None:
                delivery.due = next_retry
                heapq.heappush(self.queue, delivery)
            attempt = Attempt(
                delivery_id=notice.delivery_id,
                alert_id=notice.alert_id,
                channel=self.label,
                attempt=delivery.attempts,
                at=started,
                ok=error is None,
                error=error,
                next_retry_at=next_retry,
                gave_up=gave_up,
                ref=delivery.ref,
            )
            # Logged, then reported before the lock is let go (a hand-over to the ingest thread's inbox,
            # never a wait): a `drop_retries` that takes this retry out reports after it, so its
            # `failed` is the last word on the delivery, not this attempt's `retrying`.
            context = (self.label, notice.kind, notice.alert_id, notice.delivery_id, delivery.attempts)
            if error is None:
                log.info("notice delivered: channel=%s kind=%s alert=%s delivery=%s attempt=%d", *context)
            elif gave_up:
                log.error(
                    "notice NOT delivered, given up: channel=%s kind=%s alert=%s delivery=%s attempt=%d: %s",
                    *context,
                    error,
                )
            else:
                log.warning(
                    "notice delivery failed, will retry at %s: channel=%s kind=%s alert=%s delivery=%s "
                    "attempt=%d: %s",
                    next_retry.isoformat() if next_retry else "?",
                    *context,
                    error,
                )
            dispatcher.report(attempt)

    def _give_up_unsent(
        self, delivery: _Delivery, reason: str, now: dt.datetime, level: int = logging.ERROR
    ) -> None:
        """Record `delivery` as given up without trying it (its attempt count stays as it was)."""
        notice = delivery.notice
        log.log(
            level,
            "notice NOT delivered, given up unsent: channel=%s kind=%s alert=%s delivery=%s after %d "
            "attempts: %s",
            self.label,
            notice.kind,
            notice.alert_id,
            notice.delivery_id,
            delivery.attempts,
            reason,
        )
        with self.cond:
            if self.in_flight is delivery:
                self.in_flight = None
        self.dispatcher.report(
            Attempt(
                delivery_id=notice.delivery_id,
                alert_id=notice.alert_id,
                channel=self.label,
                attempt=delivery.attempts,
                at=delivery.last_at or now,
                ok=False,
                error=reason,
                next_retry_at=None,
                gave_up=True,
                ref=delivery.ref,
                tried=False,
            )
        )

    def cancel(self, alert_id: str) -> list[_Delivery]:
        with self.cond:
            dropped = [d for d in self.queue if d.notice.alert_id == alert_id]
            if dropped:
                self.queue = [d for d in self.queue if d.notice.alert_id != alert_id]
                heapq.heapify(self.queue)
            return dropped

    def drop_retries(self, alert_id: str, reason: str) -> list[_Delivery]:
        """Take out the retries of one alert (deliveries tried at least once); the one being tried is
        not retried after it. A delivery never tried is left to its one try."""
        with self.cond:
            dropped = [d for d in self.queue if d.notice.alert_id == alert_id and d.attempts > 0]
            if dropped:
                self.queue = [d for d in self.queue if not any(d is x for x in dropped)]
                heapq.heapify(self.queue)
            if self.in_flight is not None and self.in_flight.notice.alert_id == alert_id:
                self.in_flight.dropped = reason
            return dropped

    def begin_stop(self) -> list[_Delivery]:
        """Stop retrying; deliveries waiting for a retry are abandoned and returned."""
        with self.cond:
            self.stopping = True
            left = [d for d in self.queue if d.attempts > 0]
            self.queue = [d for d in self.queue if d.attempts == 0]
            heapq.heapify(self.queue)
            self.cond.notify_all()
            return left

    def force_stop(self) -> list[_Delivery]:
        """End now: whatever is still queued is abandoned and returned."""
        with self.cond:
            self.abandon = True
            left, self.queue = self.queue, []
            self.cond.notify_all()
            return left


def _safe_label(channel: Channel) -> str:
    try:
        return str(channel.label)
    except Exception:
        return type(channel).__name__


class Dispatcher:
    """Sends each notice through every channel at once; retries failures; reports every attempt.

    `record(attempt)` is called from the channel's worker thread, once per attempt; if it raises, the
    error is logged and the worker carries on. Channels equal to each other (the same URL) share a
    worker; distinct channels never wait for each other.
    """

    def __init__(
        self,
        record: Callable[[Attempt], None],
        *,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.record = record
        self.clock: Clock = clock or SystemClock()
        self.retry = retry or RetryPolicy()
        self._lock = threading.Lock()
        self._workers: dict[Channel, _Worker] = {}
        self._seq = itertools.count()
        self._stopped = False

    def submit(
        self,
        notice: Notice,
        channels: Iterable[Channel],
        refs: Mapping[Channel, str] | None = None,
        progress: Mapping[Channel, Progress] | None = None,
    ) -> None:
        """Queue `notice` on every channel (each distinct channel once) and return at once.

        `refs` names the notice on each channel for the caller (its delivery row): every attempt carries
        it back as `Attempt.ref`. A label may be shared by two channels (one URL, two secrets), a ref not.
        `progress` carries on a delivery taken up after a restart: its attempts are numbered on from
        there, and the retry limits count its earlier attempts and its age; one already past a limit is
        reported given up (`tried=False`) and not sent.
        """
        now = self.clock.now()
        refs = refs or {}
        progress = progress or {}
        with self._lock:
            if self._stopped:
                raise DispatcherStopped(f"notice {notice.delivery_id} submitted after stop()")
            for channel in dict.fromkeys(channels):
                worker = self._workers.get(channel)
                if worker is None:
                    worker = self._workers[channel] = _Worker(channel, self)
                    worker.thread.start()
                # Its age counts from now, when the send was decided, as after a restart (`progress`).
                delivery = _Delivery(
                    due=now, seq=next(self._seq), notice=notice, first_at=now, ref=refs.get(channel)
                )
                began = progress.get(channel)
                if began is not None:
                    delivery.attempts, delivery.first_at = began.attempts, began.first_at
                    delivery.last_at = began.last_at
                worker.put(delivery)

    def pending(self) -> int:
        """Deliveries not finished yet: queued, waiting for a retry, or being attempted."""
        with self._lock:
            workers = list(self._workers.values())
        return sum(w.size() for w in workers)

    def cancel(self, alert_id: str) -> int:
        """Stop trying the queued deliveries of one alert (not one being attempted); returns how many.

        The hub itself calls `drop_retries` when an alert is resolved; this is for an operator who
        must silence a runaway alert.
        """
        with self._lock:
            workers = list(self._workers.values())
        count = 0
        for worker in workers:
            for delivery in worker.cancel(alert_id):
                count += 1
                log.warning(
                    "notice delivery cancelled: channel=%s alert=%s delivery=%s after %d attempts",
                    worker.label,
                    alert_id,
                    delivery.notice.delivery_id,
                    delivery.attempts,
                )
        return count

    def drop_retries(self, alert_id: str, reason: str) -> int:
        """Stop retrying the notices of one alert: each delivery waiting for a retry is reported given
        up unsent with `reason` (`tried=False`); the one being tried, if it fails, is not retried. A
        delivery never tried yet keeps its one try. Returns how many were dropped now.

        Never blocks on a channel: it takes each worker's lock only as long as its queue is changed,
        so the ingest thread may call it."""
        with self._lock:
            workers = list(self._workers.values())
        count = 0
        now = self.clock.now()
        for worker in workers:
            for delivery in worker.drop_retries(alert_id, reason):
                count += 1
                worker._give_up_unsent(delivery, reason, now, logging.WARNING)
        return count

    def wake(self) -> None:
        """Make every worker read the clock again (after a test steps a FakeClock)."""
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            with worker.cond:
                worker.cond.notify_all()

    def stop(self, timeout: float = 10.0) -> int:
        """Refuse new notices, try once each delivery not yet tried, and end the workers.

        Deliveries waiting for a retry are abandoned at once; what is still queued when `timeout`
        runs out is abandoned too. Each abandoned delivery is logged as an error; returns how many.
        """
        with self._lock:
            self._stopped = True
            workers = list(self._workers.values())
        abandoned: list[tuple[_Worker, _Delivery]] = []
        for worker in workers:
            abandoned += [(worker, d) for d in worker.begin_stop()]
        deadline = time.monotonic() + timeout  # real time: a FakeClock would never let stop() return
        for worker in workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        for worker in workers:
            if worker.thread.is_alive():
                abandoned += [(worker, d) for d in worker.force_stop()]
                log.error(
                    "notify worker still busy after stop timeout: channel=%s (send timeout pending)",
                    worker.label,
                )
        for worker, delivery in abandoned:
            log.error(
                "notice NOT delivered, abandoned at stop: channel=%s kind=%s alert=%s delivery=%s "
                "after %d attempts",
                worker.label,
                delivery.notice.kind,
                delivery.notice.alert_id,
                delivery.notice.delivery_id,
                delivery.attempts,
            )
        return len(abandoned)

    def report(self, attempt: Attempt) -> None:
        """Hand one attempt to `record`; an exception there is logged with context, never raised."""
        try:
            self.record(attempt)
        except Exception:
            log.exception(
                "recording a notice attempt failed: channel=%s alert=%s delivery=%s attempt=%d ok=%s",
                attempt.channel,
                attempt.alert_id,
                attempt.delivery_id,
                attempt.attempt,
                attempt.ok,
            )
