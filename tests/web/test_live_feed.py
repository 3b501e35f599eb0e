"""The live feed: publish from any thread, never blocking; each subscriber its own bounded queue and sites."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import pytest

from seclusion_hub.auth import Principal
from seclusion_hub.live import LiveEvent, LiveFeed, Subscription, SubscriptionEnded

STAFF_A = Principal("staff-a", "staff", frozenset({"school-a"}))
STAFF_B = Principal("staff-b", "staff", frozenset({"school-b"}))
ADMIN = Principal("admin", "admin", None)


def alert(site: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"{site}-{n}", "site": site, "room": "calm-1", "kind": "supervision_lapse", **extra}


async def collect(sub: Subscription, count: int, seconds: float = 10.0) -> list[LiveEvent]:
    """Read until `count` events came, failing after `seconds`."""
    got: list[LiveEvent] = []
    deadline = time.monotonic() + seconds
    while len(got) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(got)} of {count} events within {seconds} s"
        got += await sub.next_batch(remaining)
    return got


def test_events_published_from_many_threads_all_arrive_each_threads_in_its_order() -> None:
    """Given a subscriber, when four threads publish 250 events each, then it gets all 1000, and each
    thread's events in the order it published them."""
    feed = LiveFeed(queue_size=10_000)
    threads, per_thread = 4, 250

    async def run() -> list[LiveEvent]:
        with feed.subscribe(ADMIN) as sub:
            start = threading.Barrier(threads)

            def publisher(t: int) -> None:
                start.wait(10)
                for n in range(per_thread):
                    feed.publish("alert", {"site": "school-a", "thread": t, "n": n})

            workers = [threading.Thread(target=publisher, args=(t,)) for t in range(threads)]
            for w in workers:
                w.start()
            got = await collect(sub, threads * per_thread)
            for w in workers:
                w.join(10)
            return got

    got = asyncio.run(run())
    seen: dict[int, list[int]] = {t: [] for t in range(threads)}
    for item in got:
        data = json.loads(item.data)
        seen[data["thread"]].append(data["n"])
    assert all(ns == list(range(per_thread)) for ns in seen.values())
    assert not feed.has_subscribers


def test_a_waiting_reader_is_woken_by_a_publish_from_another_thread() -> None:
    feed = LiveFeed()

    async def run() -> tuple[list[LiveEvent], float]:
        with feed.subscribe(STAFF_A) as sub:
            publish = threading.Thread(target=feed.publish, args=("alert", alert("school-a", 1)))
            # Started once the reader below waits: call_soon runs when this task yields.
            asyncio.get_running_loop().call_soon(publish.start)
            began = time.monotonic()
            got = await sub.next_batch(30)
            publish.join(10)
            return got, time.monotonic() - began

    got, took = asyncio.run(run())
    assert [(e.event, json.loads(e.data)["id"]) for e in got] == [("alert", "school-a-1")]
    assert took < 5, "woken by the publish, not by the timeout"


def test_a_slow_subscriber_is_ended_and_nobody_else_waits_for_it() -> None:
    """Given a subscriber that reads and one that never does, when more events come than a queue holds,
    then the slow one is ended (its page resyncs) and the other gets every event."""
    feed = LiveFeed(queue_size=10)

    async def run() -> None:
        fast = feed.subscribe(STAFF_A)
        slow = feed.subscribe(STAFF_A)
        got: list[LiveEvent] = []
        for n in range(30):
            began = time.monotonic()
            feed.publish("alert", alert("school-a", n))
            assert time.monotonic() - began < 0.5, "publish never blocks"
            got += await fast.next_batch(5)
        assert [json.loads(e.data)["id"] for e in got] == [f"school-a-{n}" for n in range(30)]
        assert slow.ended == "fell_behind"
        with pytest.raises(SubscriptionEnded) as ended:
            await slow.next_batch(5)  # at once: what it held was stale, and is gone
        assert ended.value.reason == "fell_behind"
        assert feed.subscriber_count() == 1
        assert feed.dropped == 1
        feed.unsubscribe(fast)

    asyncio.run(run())
    assert not feed.has_subscribers


def test_each_subscriber_sees_only_its_own_sites() -> None:
    feed = LiveFeed()

    async def run() -> dict[str, list[str]]:
        subs = {"a": feed.subscribe(STAFF_A), "b": feed.subscribe(STAFF_B), "admin": feed.subscribe(ADMIN)}
        feed.publish("alert", alert("school-a", 1))
        feed.publish("room", {"site": "school-b", "room": "calm-9"})
        feed.publish("alert", {"id": "no-site"})  # site-less data: only for those who see every site
        feed.publish("alert", alert("school-a", 2))
        seen: dict[str, list[str]] = {}
        for name, sub in subs.items():
            items = await sub.next_batch(1)
            seen[name] = [
                f"{e.event}:{json.loads(e.data).get('id') or json.loads(e.data)['room']}" for e in items
            ]
            feed.unsubscribe(sub)
        return seen

    seen = asyncio.run(run())
    assert seen["a"] == ["alert:school-a-1", "alert:school-a-2"]
    assert seen["b"] == ["room:calm-9"]
    assert seen["admin"] == ["alert:school-a-1", "room:calm-9", "alert:no-site", "alert:school-a-2"]


def test_publishing_with_nobody_listening_builds_nothing() -> None:
    feed = LiveFeed()
    assert not feed.has_subscribers
    feed.publish("alert", {"site": "school-a", "not_json": object()})  # not even serialised


def test_a_bad_event_name_is_refused_and_unserialisable_data_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = LiveFeed()

    async def run() -> list[LiveEvent]:
        with feed.subscribe(ADMIN) as sub:
            with pytest.raises(ValueError, match="event"):
                feed.publish("alert\ndata: forged", alert("school-a", 1))
            with caplog.at_level(logging.ERROR, logger="seclusion_hub.live"):
                feed.publish("alert", {"site": "school-a", "when": object()})
            return await sub.next_batch(0.05)

    assert asyncio.run(run()) == []
    assert "could not be serialised" in caplog.text


def test_a_reader_with_nothing_to_read_gets_an_empty_batch_for_its_keep_alive() -> None:
    feed = LiveFeed()

    async def run() -> list[LiveEvent]:
        with feed.subscribe(STAFF_A) as sub:
            return await sub.next_batch(0.05)

    assert asyncio.run(run()) == []


def test_close_ends_every_stream_after_what_it_holds_and_refuses_new_ones() -> None:
    feed = LiveFeed()

    async def run() -> None:
        sub = feed.subscribe(STAFF_A)
        feed.publish("alert", alert("school-a", 1))
        closer = threading.Thread(target=feed.close)  # from another thread, as at shutdown
        closer.start()
        got = await collect(sub, 1)
        closer.join(10)
        assert json.loads(got[0].data)["id"] == "school-a-1"
        with pytest.raises(SubscriptionEnded) as ended:
            await sub.next_batch(10)
        assert ended.value.reason == "hub_stopping"
        late = feed.subscribe(STAFF_A)
        with pytest.raises(SubscriptionEnded):
            await late.next_batch(10)

    asyncio.run(run())
    assert feed.closed and not feed.has_subscribers


def test_sse_frames_are_one_event_one_data_line() -> None:
    feed = LiveFeed()

    async def run() -> list[LiveEvent]:
        with feed.subscribe(ADMIN) as sub:
            feed.publish("alert", {"site": "school-a", "note": "two\nlines"})
            return await sub.next_batch(1)

    (item,) = asyncio.run(run())
    assert item.sse() == 'event: alert\ndata: {"site":"school-a","note":"two\\nlines"}\n\n'
