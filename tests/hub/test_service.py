"""The ingest service in process: a bug of ours on one message never stops the rooms or loses the others."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from seclusion_contract import Topics, format_ts
from seclusion_hub.config import load_sites
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.core.room import Message, Outcome, RoomMachine
from seclusion_hub.ingest import Inbound
from seclusion_hub.models import DeadLetter, EventRecord
from seclusion_hub.service import HubService
from seclusion_hub.store import Store
from tests.support.hub import SITE, two_device_room, write_site

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[HubService]:
    write_site(tmp_path / "site.yaml", [two_device_room("calm-1"), two_device_room("calm-2")])
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    svc = HubService(load_sites([tmp_path / "site.yaml"]), store, FakeClock(T0), Topics())
    acks: list[tuple[int, int, int]] = []
    svc.ack_message = lambda mid, qos, conn: acks.append((mid, qos, conn))
    svc.acks = acks  # type: ignore[attr-defined]
    yield svc
    store.close()


def inbound(room: str, device: str, seq: int, kind: str, value: str, t: float, mid: int) -> Inbound:
    when = T0 + dt.timedelta(seconds=t)
    body: dict[str, Any] = {
        "v": 1,
        "id": f"{device}:0:{seq}",
        "seq": seq,
        "ts": format_ts(when),
        "kind": kind,
    }
    payload = json.dumps({**body, "value": value}).encode()
    return Inbound(f"seclusion/v1/{SITE}/{room}/{device}/event", payload, when, mid=mid, qos=1)


def test_a_message_our_code_fails_on_is_set_aside_and_the_rest_of_the_batch_applied(
    service: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_handle = RoomMachine.handle

    def buggy(self: RoomMachine, message: Message, now: dt.datetime) -> Outcome:
        outcome = real_handle(self, message, now)  # changes the machine first, then fails: the worst case
        if self.spec.id == "calm-2":
            raise RuntimeError("a bug in the rules")
        return outcome

    monkeypatch.setattr(RoomMachine, "handle", buggy)
    service.process(
        [
            inbound("calm-1", "calm-1-door", 1, "occupancy", "occupied", 0, mid=1),
            inbound("calm-2", "calm-2-door", 1, "occupancy", "occupied", 0, mid=2),
            inbound("calm-1", "calm-1-door", 2, "door", "closed", 1, mid=3),
        ]
    )
    assert service.machines[(SITE, "calm-1")].episode is not None
    calm2 = service.machines[(SITE, "calm-2")]
    assert calm2.reading("occupancy") is None, "the half-applied message was undone"
    assert calm2.state.devices["calm-2-door"].seq == 0
    with service.store.session() as s:
        events = s.exec(select(EventRecord)).all()
        letters = s.exec(select(DeadLetter)).all()
    assert [(e.room, e.seq) for e in events] == [("calm-1", 1), ("calm-1", 2)]
    assert len(letters) == 1 and "internal error while applying: RuntimeError" in letters[0].reason
    assert sorted(mid for mid, _, _ in service.acks) == [1, 2, 3]  # type: ignore[attr-defined]
    assert service.healthy


def test_liveness_waits_while_the_hub_cannot_hear_the_broker(service: HubService) -> None:
    service.start()
    service.stop()
    clock = service.clock
    assert isinstance(clock, FakeClock)
    service.listening = lambda: False
    clock.advance(3600)
    service.process([])
    assert all(dev.online for m in service.machines.values() for dev in m.state.devices.values())
    service.listening = lambda: True
    service.process([])
    assert not any(dev.online for m in service.machines.values() for dev in m.state.devices.values())
