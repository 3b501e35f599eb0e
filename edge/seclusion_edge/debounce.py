"""Debounce: a contact's new reading counts only once it has held for the settle time.

Pure logic with no threads, no GPIO and no clock of its own: the caller reports each level it sees with
the instant it saw it (`observe`), and asks at a later instant whether a reading has settled (`tick`).
gpiozero's MockPin ignores `bounce_time` and a real pin's kernel debounce drops edges we want to time,
so the debounce is ours and is tested with a fake clock.

A *burst* is a run of edges with less than the settle time between them; it ends when the level has
held for the settle time. The settled reading is the level at the end of the burst, and it is reported
as beginning at the burst's *first* edge: a door that closes at t0 and chatters for 20 ms closed at t0.
A burst that ends on the reading it started from (a knock on the door, a glitch) reports nothing.
A level that held for the settle time is a reading even when no tick came while it held (the ticker
held up by a slow write to the SD card): the next edge ends its burst, and the next tick reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from seclusion_edge.clock import Instant


@dataclass(frozen=True, slots=True)
class Settled:
    """A reading that held for the settle time: `active` is the contact's state, `began` its first edge."""

    active: bool
    began: Instant


class Debouncer:
    """Debounces one contact.

    `settled` starts as given (None: unknown, so the first reading that holds is reported, which is how
    the agent learns each sensor's state at start-up). The level seen at construction starts a burst.
    """

    def __init__(self, settle_ms: int, level: bool, at: Instant, settled: bool | None = None) -> None:
        if settle_ms < 0:
            raise ValueError("settle_ms must not be negative")
        self.settle_ms = settle_ms
        self._settled = settled  # as handed out by `tick`
        self._judged = settled  # the same, and any reading settled since the last tick
        self._level = level
        self._last_edge = at
        # A start-up reading that is not already known is a burst of its own, reported once it has held.
        self._burst_start: Instant | None = None if level == settled else at
        self._ready: list[Settled] = []  # settled between two ticks, oldest first

    @property
    def settled(self) -> bool | None:
        """The last reading `tick` handed out, or None before the first one: what the device has
        reported (a reading settled since, on the edge thread, is news only once a tick takes it)."""
        return self._settled

    @property
    def level(self) -> bool:
        """The level last observed, settled or not."""
        return self._level

    @property
    def unsettled(self) -> bool:
        """True while a burst of edges has not yet held for the settle time."""
        return self._burst_start is not None

    @property
    def burst_began(self) -> Instant | None:
        """The first edge of the burst not yet settled (None when there is none): a reading it settles
        into will be reported as beginning then."""
        return self._burst_start

    def observe(self, level: bool, at: Instant) -> None:
        """Record the level seen at `at`; the same level again is not an edge and changes nothing."""
        if level == self._level:
            return
        self._settle(at.mono_ms)  # the level before this edge may have held long enough, unticked
        self._level = level
        self._last_edge = at
        if self._burst_start is None:
            self._burst_start = at

    def tick(self, now_ms: int) -> list[Settled]:
        """The readings newly settled by `now_ms`, oldest first (usually none or one)."""
        self._settle(now_ms)
        ready, self._ready = self._ready, []
        if ready:
            self._settled = ready[-1].active
        return ready

    def _settle(self, now_ms: int) -> None:
        if self._burst_start is None or now_ms - self._last_edge.mono_ms < self.settle_ms:
            return
        began = self._burst_start
        self._burst_start = None
        if self._level != self._judged:
            self._judged = self._level
            self._ready.append(Settled(self._level, began))
