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

from collections import deque
from dataclasses import dataclass
from typing import Final

from seclusion_edge.clock import Instant

# A failing contact (a cut wire and a floating input, a loose magnet on a rattling door), judged by
# `ContactWatch`: unstable when a burst has not settled for UNSTABLE_BURST_MS (or 10 settle times, if
# longer), or after FLAP_CHANGES settled changes within FLAP_WINDOW_MS (a door opened and closed ten
# times in ten seconds is no person); stable again once it has not moved for STABLE_MS.
UNSTABLE_BURST_MS: Final = 5_000
FLAP_CHANGES: Final = 20
FLAP_WINDOW_MS: Final = 10_000
STABLE_MS: Final = 10_000


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
    def last_edge(self) -> Instant:
        """The last edge observed (or the construction's instant): the level has held since then."""
        return self._last_edge

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


@dataclass(frozen=True, slots=True)
class Health:
    """A change of a contact's health: `faulty` from `at` (the first edge it may have been wrong from),
    or sound again from `at` (the last edge: it has held since)."""

    faulty: bool
    at: Instant


class ContactWatch:
    """Judges one contact from its debouncer, and holds back its readings while it fails.

    Unstable: a burst that has not settled for `unstable_ms`, or `flap_changes` settled changes within
    `flap_window_ms`. From then on its settled readings are held back (nothing is numbered, nothing
    reaches the fail-safe: the room keeps the reading last let through, or, for a flap whose first
    changes were let through before it was found, the timed reading (`early`) from before it began,
    let through again); once the contact has not
    moved for `stable_ms` it is sound again, and if its reading then differs from the one last let
    through, that reading is let through, dated so that nothing is under-counted: the level `early`
    (the one that starts or prolongs what is timed: a door closed, a room occupied, an observer absent)
    from the earliest it can have begun, the fault's start (but not before the reading last let
    through), so that a door that really shut during the chatter is timed from then; the other level
    from the latest, the last edge, since when the contact has held.

    `faulty_since`: the contact starts as failing (the store says a fault of it was last reported, not
    cleared): it must show it is sound before its readings and the clearing `ok` go out.
    """

    def __init__(
        self,
        settle_ms: int,
        settled: bool | None,
        *,
        faulty_since: Instant | None = None,
        early: bool | None = None,
        unstable_ms: int | None = None,
        flap_changes: int = FLAP_CHANGES,
        flap_window_ms: int = FLAP_WINDOW_MS,
        stable_ms: int = STABLE_MS,
    ) -> None:
        self.unstable_ms = max(UNSTABLE_BURST_MS, 10 * settle_ms) if unstable_ms is None else unstable_ms
        self.flap_changes = flap_changes
        self.flap_window_ms = flap_window_ms
        self.stable_ms = stable_ms
        self.early = early
        self._passed = settled  # the reading last let through, and when it began
        self._passed_at: Instant | None = None
        self._fault_began = faulty_since
        # Each settled change counted, with the reading let through before it (the room's reading before
        # that change): a flap is found at its `flap_changes`-th change, after the earlier ones of the
        # fault were let through.
        self._changes: deque[tuple[Instant, bool | None]] = deque()

    @property
    def faulty(self) -> bool:
        """True from the fault's detection until the contact is sound again."""
        return self._fault_began is not None

    def judge(
        self, debouncer: Debouncer, settled: list[Settled], now: Instant
    ) -> tuple[list[Settled], Health | None]:
        """The readings to let through of those `debouncer.tick` just gave, and the change of health,
        if any, at `now`."""
        before = self._passed
        for reading in settled:
            if self._passed is not None or self._fault_began is not None:  # a first reading is no change
                self._changes.append((reading.began, before))
            before = reading.active
        while self._changes and now.mono_ms - self._changes[0][0].mono_ms > self.flap_window_ms:
            self._changes.popleft()
        if self._fault_began is None:
            burst = debouncer.burst_began
            prior = self._passed
            if burst is not None and now.mono_ms - burst.mono_ms >= self.unstable_ms:
                began: Instant | None = burst
            elif len(self._changes) >= self.flap_changes:
                began, prior = self._changes[0]
            else:
                began = None
            if began is None:
                if settled:
                    self._passed, self._passed_at = settled[-1].active, settled[-1].began
                return settled, None
            self._fault_began = began
            if prior is not None and prior == self.early and self._passed != prior:
                # A flap's first changes were let through before it was found (the room now holds one of
                # them, say `open`); the reading from before the fault began is the one held during it,
                # when it is the timed one: a door shut all along whose magnet rattles is still shut.
                # Dated at the last reading let through (never before it: the hub applies events in
                # order), so that the room's reclose grace (semantics 2.4) keeps the episode going.
                at = self._passed_at if self._passed_at is not None else began
                self._passed, self._passed_at = prior, at
                return [Settled(prior, at)], Health(True, began)
            return [], Health(True, began)
        quiet = debouncer.burst_began is None and now.mono_ms - debouncer.last_edge.mono_ms >= self.stable_ms
        if not quiet:
            return [], None
        began, self._fault_began = self._fault_began, None
        self._changes.clear()
        final = debouncer.settled
        if final is None or final == self._passed:
            return [], Health(False, debouncer.last_edge)
        if final == self.early:
            if self._passed_at is not None and self._passed_at.mono_ms > began.mono_ms:
                began = self._passed_at
        else:
            began = debouncer.last_edge
        self._passed, self._passed_at = final, began
        return [Settled(final, began)], Health(False, debouncer.last_edge)
