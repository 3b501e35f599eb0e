"""A third review of the edge fixes (3d1b2c1..b994a30): its faults fixed here (the others are limits in
docs/edge.md, "Limits left by the fixes of the Pi review")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from seclusion_edge import EdgeAgent
from tests.edge.conftest import door_device


def test_a_stop_with_the_store_stuck_and_the_broker_unreachable_does_not_hang_in_loop_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b994a30 makes the link's callbacks return during a stop before taking the send lock that a store
    thread stuck in a write holds, so that paho's `loop_stop` (which joins the network thread) returns.
    One callback is left out: `on_pre_connect` -> `EdgeAgent._next_will`, before every CONNECT, takes the
    send lock unconditionally. With the broker unreachable (the reason a site is being restarted, often)
    paho's thread retries every second: it blocks in `_next_will` behind the stuck write, and `stop()`
    hangs in `loop_stop` for as long as the write (7375c0d: "without bound"), after the agent has already
    given the outputs up. Real paho, a refused port; the store's thread held in `_send_pending`."""
    import dataclasses
    import socket
    import threading

    from gpiozero.pins.mock import MockFactory

    import seclusion_edge.agent as agent_module
    from seclusion_edge.mqtt import paho_publisher

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once this block ends: connections are refused
    monkeypatch.setattr(agent_module, "BUSY_TIMEOUT_S", 0.3)
    pre_connect = threading.Event()

    def factory(settings: Any, handlers: Any) -> Any:
        real = settings.next_will

        def next_will() -> Any:
            pre_connect.set()
            return real()

        return paho_publisher(
            dataclasses.replace(
                settings, port=port, reconnect_min_s=1, reconnect_max_s=1, next_will=next_will
            ),
            handlers,
        )

    agent = EdgeAgent(
        door_device(tmp_path / "door"),
        pin_factory=MockFactory(),
        publisher_factory=factory,
        tick_interval_s=0.02,
        boot_id="boot-1",
    )
    stuck, release = threading.Event(), threading.Event()

    def send_pending() -> None:  # the store's thread, in a write that does not return (under the send lock)
        stuck.set()
        release.wait(30)

    monkeypatch.setattr(agent, "_send_pending", send_pending)
    agent.start()
    stopper: threading.Thread | None = None
    try:
        assert stuck.wait(5)
        pre_connect.clear()
        assert pre_connect.wait(5), "paho made no reconnect attempt"
        stopper = threading.Thread(target=agent.stop, daemon=True)
        stopper.start()
        stopper.join(5)
        assert not stopper.is_alive(), "stop() hangs: paho's thread waits for the send lock in _next_will"
    finally:
        release.set()
        if stopper is not None:
            stopper.join(10)


def test_a_contact_sound_again_at_the_stop_does_not_start_failing_after_the_restart(
    bench: Any, clock: Any, tmp_path: Path
) -> None:
    """The door's contact flaps and the lock's chatters: both faults numbered. The door is mended (held
    still, closed) while the lock still chatters, so no `ok` is sent, and its reading is let through
    again. The agent restarts: the door must start sound (its reading in the heartbeat's `state` once
    settled), not failing with the lock because the kept set of failing contacts only ever grew."""
    from tests.edge.conftest import SETTLE_MS
    from tests.edge.test_edge_fixes_review import door_and_lock_failing, toggle

    config, first = door_and_lock_failing(bench, clock, tmp_path)
    door, lock = first.pin_for("door"), first.pin_for("lock")
    door.drive_low()  # mended: closed, and still from now on
    for step in range(15_000 // 10):  # the lock chatters on
        toggle(lock)
        clock.advance(ms=10)
        if step % 2:
            first.tick()
    assert "door" in first.readings(), "the mended door's reading is let through again"
    first.stop()

    second = bench.start(config)
    for _ in range(3):
        clock.advance(ms=SETTLE_MS + 10)
        second.tick()
    # (its pin is read anew: the mock's level after a restart is its pull's) not held back as failing
    assert "door" in second.readings(), second.readings()
