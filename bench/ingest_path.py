"""The ingest thread's own work, without MQTT: what one event costs the hub to decode, apply and store.

Run from the repository root:

    .venv/bin/python -m bench.ingest_path [--devices 50] [--events 20000] [--batch 10] [--rate 2000]
                                          [--story episodes|sensors] [--profile FILE]

Builds the hub's service in this process on the same generated site and the same story per device as
`bench/ingest.py` (one room per device, SQLite file in a temporary directory), feeds it `--events`
messages in batches of `--batch` (round-robin over the devices, 1 % malformed, as the ingest benchmark
sends them) through `HubService.process` (decode, apply, alert rules, one transaction per batch,
acknowledgements and the devices' acks, which go nowhere here), and prints the CPU microseconds per
event, the wall time per batch and the rows stored. `--rate N` instead hands the messages to the
running ingest thread at N a second, as the MQTT adapter does, and prints the time from hand-over to
acknowledgement (p50, p99): the ingest thread's part of bench/ingest.py's latency, with nothing else
on the machine. `--story sensors` sends the same rates without any episode. `--profile FILE` writes a
cProfile of a batch run.

This is the part of `bench/ingest.py`'s hub CPU that is not paho's network thread: a figure to compare
changes to the ingest path by, run after run, with far less noise than the whole benchmark.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import CYCLE, SITE, STORIES, write_site  # noqa: E402
from seclusion_contract import Topics, format_ts  # noqa: E402
from seclusion_hub.config import load_sites  # noqa: E402
from seclusion_hub.core.clock import SystemClock  # noqa: E402
from seclusion_hub.ingest import Inbound  # noqa: E402
from seclusion_hub.service import Command, HubService  # noqa: E402
from seclusion_hub.store import Store  # noqa: E402

Message = tuple[str, dict[str, object] | bytes]


def messages(
    devices: list[tuple[str, str]], count: int, topics: Topics, story: tuple[tuple[str, str], ...] = CYCLE
) -> list[Message]:
    """`count` messages, round-robin over the devices, each device telling the benchmark's story; a
    valid event is a dict until it is handed over (`encode`), when it gets its `ts`: the devices' clocks
    are the hub's, as in bench/ingest.py."""
    out: list[Message] = []
    seqs = dict.fromkeys((d for _, d in devices), 0)
    for i in range(count):
        room, dev = devices[i % len(devices)]
        topic = topics.event(SITE, room, dev)
        if i % 100 == 99:  # 1 % malformed, as in bench/ingest.py
            out.append((topic, b'{"bench_bad": true, "v": 1, "kind": "door", "value": '))
            continue
        seqs[dev] += 1
        seq = seqs[dev]
        kind, value = story[(seq - 1) % len(story)]
        body = {"v": 1, "id": f"{dev}:1:{seq}", "seq": seq, "epoch": 1, "boot": "b"}
        out.append((topic, body | {"kind": kind, "value": value}))
    return out


def stamps(batch: list[Message], now: dt.datetime) -> list[dt.datetime]:
    """Each message's `ts` within a batch made at `now`: a device's later message a millisecond later,
    its last one at `now` (in large batches a device has several messages, and readings of the same
    millisecond would tell a different story: a door opening and the room emptying at one instant)."""
    left: dict[str, int] = {}
    for topic, _ in batch:
        left[topic] = left.get(topic, 0) + 1
    out = []
    for topic, _ in batch:
        left[topic] -= 1
        out.append(now - dt.timedelta(milliseconds=left[topic]))
    return out


def encode(message: Message, now: dt.datetime) -> bytes:
    body = message[1]
    if isinstance(body, bytes):
        return body
    # `mono_ms` as a device's monotonic clock would read at `ts` (its boot at the Unix epoch): with
    # any other value the hub would see a clock set while the device ran, at every message.
    mono_ms = int(now.timestamp() * 1000)
    return json.dumps(body | {"ts": format_ts(now), "mono_ms": mono_ms}, separators=(",", ":")).encode()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--profile", type=Path, default=None, help="write a cProfile of the run here")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="instead of batches: messages handed to the running ingest thread at this rate (messages/s)",
    )
    p.add_argument(
        "--story",
        choices=sorted(STORIES),
        default="episodes",
        help="episodes: bench/ingest.py's story (an episode every 16 events); sensors: no episode at all",
    )
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="seclusion-ingest-path-") as tmp:
        work = Path(tmp)
        devices = write_site(work / "site.yaml", args.devices)
        topics = Topics()
        store = Store.open(f"sqlite:///{work / 'hub.db'}")
        service = HubService(load_sites([work / "site.yaml"]), store, SystemClock(), topics)
        acks = 0

        def ack(_mid: int, _qos: int, _conn: int) -> None:
            nonlocal acks
            acks += 1

        published = 0

        def publish(_t: str, _p: bytes, _q: int, _r: bool) -> None:
            nonlocal published
            published += 1

        service.ack_message = ack
        service.publish = publish
        service.backlog_done = lambda: True
        service.listening = lambda: True
        # What start() does, without its thread: this process is the ingest thread.
        service.process([Command(lambda _b: None)])
        gc.freeze()  # as the hub does once it has started (runtime.py)

        msgs = messages(devices, args.events, topics, STORIES[args.story])
        if args.rate > 0:
            return paced(service, store, msgs, args.rate, args.story)
        batches = [msgs[i : i + args.batch] for i in range(0, len(msgs), args.batch)]
        prof = cProfile.Profile() if args.profile else None
        walls: list[float] = []
        cpu = 0.0
        t0 = time.perf_counter()
        for n, batch in enumerate(batches):
            now = service.clock.now()
            items: list[Inbound | Command] = [
                Inbound(m[0], encode(m, ts), now, mid=n * args.batch + k + 1, qos=1)
                for k, (m, ts) in enumerate(zip(batch, stamps(batch, now), strict=True))
            ]
            w0 = time.perf_counter()
            c0 = time.process_time()
            if prof is not None:
                prof.enable()
            service.process(items)
            if prof is not None:
                prof.disable()
            cpu += time.process_time() - c0
            walls.append(time.perf_counter() - w0)
        wall = time.perf_counter() - t0
        with store.engine.connect() as conn:
            from sqlalchemy import text

            events = conn.execute(text("SELECT count(*) FROM event")).scalar_one()
            dead = conn.execute(text("SELECT count(*) FROM dead_letter")).scalar_one()
        store.close()
    walls.sort()
    print(
        f"ingest path: {args.events} messages ({args.story}), {args.devices} devices, batches of {args.batch}"
    )
    print(f"  CPU {cpu:.2f} s = {cpu / args.events * 1e6:.0f} us per message; wall {wall:.2f} s")
    p50 = walls[len(walls) // 2] * 1e3
    p99 = walls[int(len(walls) * 0.99)] * 1e3
    print(f"  per batch: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {walls[-1] * 1e3:.2f} ms")
    print(f"  stored {events} events, {dead} dead letters; {acks} acknowledged, {published} device acks")
    if prof is not None:
        prof.dump_stats(str(args.profile))
        print(f"  profile written to {args.profile}")
    ok = events + dead == args.events and acks == args.events
    if not ok:
        print("FAIL not every message was stored and acknowledged")
    return 0 if ok else 1


def paced(service: HubService, store: Store, msgs: list[Message], rate: float, story: str) -> int:
    """Hand the messages to the ingest thread at `rate` as the MQTT adapter would, and time each one from
    its hand-over to its acknowledgement (after the commit): the ingest thread's part of the latency."""
    handed: dict[int, float] = {}
    acked: dict[int, float] = {}

    def ack(mid: int, _qos: int, _conn: int) -> None:
        acked[mid] = time.monotonic()

    service.ack_message = ack
    service.start()
    cpu0 = time.process_time()
    start = time.monotonic() + 0.1
    for i, message in enumerate(msgs):
        due = start + i / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        now = service.clock.now()
        body = encode(message, now)
        handed[i + 1] = time.monotonic()
        service.submit(Inbound(message[0], body, now, mid=i + 1, qos=1))
    deadline = time.monotonic() + 60
    while len(acked) < len(msgs) and time.monotonic() < deadline:
        time.sleep(0.01)
    cpu = time.process_time() - cpu0
    service.stop()
    store.close()
    lat = sorted((acked[m] - handed[m]) * 1e3 for m in acked)
    print(f"ingest path, paced: {len(msgs)} messages ({story}) at {rate:.0f}/s handed to the ingest thread")
    print(f"  CPU {cpu:.2f} s = {cpu / len(msgs) * 1e6:.0f} us per message")
    if lat:
        p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
        print(f"  hand-over -> acknowledged: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms")
    ok = len(acked) == len(msgs)
    if not ok:
        print(f"FAIL {len(msgs) - len(acked)} messages never acknowledged")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
