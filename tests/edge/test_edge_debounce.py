"""The debounce alone: a reading counts once it has held for the settle time, dated by its first edge."""

from __future__ import annotations

from seclusion_edge import FakeClock
from seclusion_edge.debounce import Debouncer, Settled

SETTLE = 50


def settled_door(clock: FakeClock) -> Debouncer:
    """A door contact whose start-up reading (inactive: open) has already settled."""
    start = clock.now()
    debouncer = Debouncer(SETTLE, level=False, at=start)
    clock.advance(ms=SETTLE)
    assert debouncer.tick(clock.now().mono_ms) == [Settled(False, start)]
    return debouncer


def test_start_up_reading_is_reported_once_it_has_held() -> None:
    clock = FakeClock()
    start = clock.now()
    debouncer = Debouncer(SETTLE, level=True, at=start)
    assert debouncer.settled is None
    clock.advance(ms=SETTLE - 1)
    assert debouncer.tick(clock.now().mono_ms) == []
    clock.advance(ms=1)
    assert debouncer.tick(clock.now().mono_ms) == [Settled(True, start)]
    assert debouncer.settled is True
    clock.advance(ms=1000)
    assert debouncer.tick(clock.now().mono_ms) == []


def test_a_known_start_up_reading_is_not_reported_again() -> None:
    clock = FakeClock()
    debouncer = Debouncer(SETTLE, level=False, at=clock.now(), settled=False)
    clock.advance(ms=SETTLE)
    assert debouncer.tick(clock.now().mono_ms) == []


def test_a_change_is_reported_after_the_settle_time_dated_by_its_edge() -> None:
    clock = FakeClock()
    debouncer = settled_door(clock)
    clock.advance(ms=500)
    edge = clock.now()
    debouncer.observe(True, edge)
    clock.advance(ms=SETTLE - 1)
    assert debouncer.tick(clock.now().mono_ms) == []
    assert debouncer.unsettled
    clock.advance(ms=1)
    assert debouncer.tick(clock.now().mono_ms) == [Settled(True, edge)]
    assert not debouncer.unsettled


def test_a_glitch_shorter_than_the_settle_time_reports_nothing() -> None:
    clock = FakeClock()
    debouncer = settled_door(clock)
    debouncer.observe(True, clock.advance(ms=100))
    debouncer.observe(False, clock.advance(ms=SETTLE - 10))
    for _ in range(10):
        clock.advance(ms=SETTLE)
        assert debouncer.tick(clock.now().mono_ms) == []
    assert debouncer.settled is False


def test_contact_chatter_is_one_change_from_the_first_edge() -> None:
    clock = FakeClock()
    debouncer = settled_door(clock)
    first = clock.advance(ms=100)
    debouncer.observe(True, first)
    for level in (False, True, False, True):
        debouncer.observe(level, clock.advance(ms=5))
        assert debouncer.tick(clock.now().mono_ms) == []
    clock.advance(ms=SETTLE)
    assert debouncer.tick(clock.now().mono_ms) == [Settled(True, first)]


def test_a_later_change_starts_its_own_burst() -> None:
    clock = FakeClock()
    debouncer = settled_door(clock)
    debouncer.observe(True, clock.advance(ms=100))
    debouncer.observe(False, clock.advance(ms=10))
    clock.advance(ms=SETTLE)
    assert debouncer.tick(clock.now().mono_ms) == []
    real_close = clock.advance(ms=1000)
    debouncer.observe(True, real_close)
    clock.advance(ms=SETTLE)
    assert debouncer.tick(clock.now().mono_ms) == [Settled(True, real_close)]


def test_observing_the_same_level_again_is_not_an_edge() -> None:
    clock = FakeClock()
    debouncer = settled_door(clock)
    edge = clock.advance(ms=100)
    debouncer.observe(True, edge)
    debouncer.observe(True, clock.advance(ms=SETTLE - 1))  # a poll of the pin, not a new edge
    clock.advance(ms=1)
    assert debouncer.tick(clock.now().mono_ms) == [Settled(True, edge)]


def test_zero_settle_reports_at_the_next_tick() -> None:
    clock = FakeClock()
    debouncer = Debouncer(0, level=False, at=clock.now(), settled=False)
    edge = clock.advance(ms=1)
    debouncer.observe(True, edge)
    assert debouncer.tick(edge.mono_ms) == [Settled(True, edge)]


def test_a_reading_that_held_for_the_settle_time_counts_even_when_no_tick_came_while_it_held() -> None:
    """The ticker can be held up (a slow write to the SD card): a door open for 2 s and shut again
    before the next tick was open for 2 s, and both readings are reported, in order, each dated by its
    own first edge."""
    clock = FakeClock()
    debouncer = settled_door(clock)
    opened = clock.advance(ms=100)
    debouncer.observe(True, opened)
    closed = clock.advance(ms=2000)
    debouncer.observe(False, closed)
    debouncer.observe(True, clock.advance(ms=SETTLE - 1))  # chatter: part of the closing's burst
    debouncer.observe(False, clock.advance(ms=1))
    assert debouncer.tick(clock.advance(ms=1000).mono_ms) == [Settled(True, opened), Settled(False, closed)]
    assert debouncer.tick(clock.advance(ms=1000).mono_ms) == []
