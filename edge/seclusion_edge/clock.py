"""Time as an input: the agent reads a Clock, so tests step a FakeClock instead of sleeping.

An `Instant` pairs the wall clock (what `ts` reports) with the monotonic clock (what `mono_ms` reports
and what the debounce and heartbeat timers measure): a Raspberry Pi has no real-time clock, so until
NTP syncs the wall clock can jump, while the monotonic one cannot.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True, slots=True)
class Instant:
    """One reading of both clocks: monotonic milliseconds and the aware UTC wall time."""

    mono_ms: int
    wall: dt.datetime


class Clock(Protocol):
    """What the agent needs to know about time."""

    def now(self) -> Instant:
        """The current instant."""
        ...


class SystemClock:
    """The real clocks: `time.monotonic_ns()` (CLOCK_MONOTONIC, since boot on Linux) and UTC wall time."""

    def now(self) -> Instant:
        """The current instant."""
        return Instant(time.monotonic_ns() // 1_000_000, dt.datetime.now(dt.UTC))


class FakeClock:
    """A clock that moves only when told to, for tests and simulations.

    Both clocks advance together; `jump_wall` moves only the wall clock, as an NTP sync after boot does.
    """

    def __init__(
        self,
        start: dt.datetime = dt.datetime(2026, 11, 21, 10, 0, 0, tzinfo=dt.UTC),
        mono_ms: int = 1_000_000,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")
        self._wall = start
        self._mono_ms = mono_ms
        self._lock = threading.Lock()

    def now(self) -> Instant:
        """The current (fake) instant."""
        with self._lock:
            return Instant(self._mono_ms, self._wall)

    def advance(self, seconds: float = 0.0, *, ms: int = 0) -> Instant:
        """Move both clocks forward by `seconds` plus `ms` milliseconds; returns the new instant."""
        step_ms = round(seconds * 1000) + ms
        if step_ms < 0:
            raise ValueError("a monotonic clock does not go back")
        with self._lock:
            self._mono_ms += step_ms
            self._wall += dt.timedelta(milliseconds=step_ms)
            return Instant(self._mono_ms, self._wall)

    def jump_wall(self, delta: dt.timedelta) -> None:
        """Move only the wall clock (an NTP correction); the monotonic clock does not notice."""
        with self._lock:
            self._wall += delta


@functools.cache
def read_boot_id() -> str:
    """This boot's id from the kernel, or a random id made once per process where there is none.

    With `mono_ms`, the boot id lets the hub tell a clock jump from a reboot.
    """
    try:
        text = BOOT_ID_FILE.read_text(encoding="ascii").strip()
    except OSError:
        text = ""
    if text:
        return text
    generated = str(uuid.uuid4())
    log.info("no kernel boot id; using %s for this process", generated)
    return generated
