"""Properties of the room machine that must hold for any sequence of readings (hypothesis)."""

from __future__ import annotations

import datetime as dt
import typing
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from seclusion_hub.core.episode import Episode, account
from seclusion_hub.core.room import (
    DeviceStatus,
    EpisodeSaved,
    Message,
    RoomMachine,
    RoomState,
    SensorEvent,
)
from seclusion_hub.store import restore_room_state, room_state_row
from tests.hub.rooms import DOOR, PANEL, Room, at


@dataclass(frozen=True)
class Step:
    message: Message
    now: dt.datetime


READINGS = [
    (DOOR, "door", "open"),
    (DOOR, "door", "closed"),
    (DOOR, "occupancy", "occupied"),
    (DOOR, "occupancy", "vacant"),
    (DOOR, "lock", "engaged"),
    (DOOR, "lock", "released"),
    (PANEL, "observer", "present"),
    (PANEL, "observer", "absent"),
    (PANEL, "check", "ok"),
]


@st.composite
def scenarios(draw: st.DrawFn) -> list[Step]:
    """Readings in time order per device, sometimes a Last Will or a return, and the hub's clock."""
    steps: list[Step] = []
    seq = {DOOR: 0, PANEL: 0}
    t = 0.0
    for _ in range(draw(st.integers(1, 40))):
        t += draw(st.sampled_from([0.0, 0.5, 3.0, 14.0, 16.0, 29.0, 31.0, 90.0, 200.0]))
        choice = draw(st.integers(0, len(READINGS) + 1))
        if choice < len(READINGS):
            device, kind, value = READINGS[choice]
            seq[device] += 1
            delay = draw(st.sampled_from([0.0, 0.0, 0.2, 5.0]))
            steps.append(Step(SensorEvent(device, kind, value, at(t), seq[device]), at(t + delay)))
        else:
            device = draw(st.sampled_from([DOOR, PANEL]))
            online = choice == len(READINGS)
            steps.append(Step(DeviceStatus(device, online, at(t), boot="b", uptime_s=t), at(t)))
    return steps


def run(
    steps: list[Step], room: Room | None = None, table: dict[str, str] | None = None
) -> tuple[Room, list[Episode]]:
    """Apply the steps; `table` gets each saved episode's JSON as the episode table would hold it."""
    room = room or Room()
    episodes: dict[str, Episode] = {}
    for step in steps:
        outcome = room.machine.handle(step.message, step.now)
        for effect in outcome.effects + room.machine.tick(step.now):
            if isinstance(effect, EpisodeSaved):
                episodes[effect.episode.id] = effect.episode
        if table is not None:  # written with the step's batch, as it is at its end
            table.update((ep_id, ep.model_dump_json()) for ep_id, ep in episodes.items())
            episodes.clear()
    return room, list(episodes.values())


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(scenarios())
def test_an_episode_never_starts_later_than_the_door_closed_on_an_occupied_room(steps: list[Step]) -> None:
    room = Room()
    for step in steps:
        msg = step.message
        before = room.machine.episode
        occupancy = room.machine.state.readings.get("occupancy")
        room.machine.handle(msg, step.now)
        closes_on_occupied = (
            isinstance(msg, SensorEvent)
            and msg.kind == "door"
            and msg.value == "closed"
            and occupancy is not None
            and occupancy.value == "occupied"
            and occupancy.ts <= msg.ts
        )
        if closes_on_occupied and isinstance(msg, SensorEvent):
            ep = room.machine.episode
            assert ep is not None, "a door closing on an occupied room must be timed"
            assert ep.started_at <= msg.ts
            if before is None:
                assert ep.started_at == msg.ts
        room.machine.tick(step.now)


@PROPERTY
@given(scenarios())
def test_duration_is_the_sum_of_segments_and_time_is_partitioned(steps: list[Step]) -> None:
    _room, episodes = run(steps)
    now = steps[-1].now + dt.timedelta(seconds=5)
    for ep in episodes:
        end = ep.ended_at or now
        expected = sum(((s.end or end) - s.start).total_seconds() for s in ep.segments)
        assert abs(ep.duration_s(now) - expected) < 0.002
        assert ep.duration_s(now) <= ep.elapsed_s(now) + 0.001
        acc = account(ep, now)
        total = acc.supervised_s + acc.unsupervised_s + acc.unknown_s
        assert abs(total - ep.elapsed_s(now)) < 0.002
        assert all(lapse.end > lapse.start for lapse in acc.lapses)
        for a, b in zip(ep.segments, ep.segments[1:], strict=False):
            assert a.end is not None and a.end <= b.start


@PROPERTY
@given(scenarios())
def test_vacant_while_the_door_is_closed_never_ends_an_episode(steps: list[Step]) -> None:
    room = Room()
    for step in steps:
        msg = step.message
        before = room.machine.episode
        door_closed = room.machine.reading("door") == "closed" and room.machine.state.door_opened_at is None
        room.machine.handle(msg, step.now)
        if isinstance(msg, SensorEvent) and msg.kind == "occupancy" and msg.value == "vacant" and door_closed:
            if before is not None and (room.machine.state.readings["door"].ts <= msg.ts):
                assert room.machine.episode is before
                assert before.ended_at is None
        room.machine.tick(step.now)


@PROPERTY
@given(scenarios())
def test_replaying_the_same_messages_gives_the_same_result(steps: list[Step]) -> None:
    first, _ = run(steps)
    second, _ = run(steps)
    assert first.machine.state.model_dump_json() == second.machine.state.model_dump_json()


@PROPERTY
@given(scenarios(), st.integers(0, 39), st.booleans())
def test_a_restart_from_the_stored_snapshot_changes_nothing(
    steps: list[Step], cut: int, by_reference: bool
) -> None:
    """Also when the stored state names its episodes' rows instead of holding them (store.room_state_row):
    then every change to an episode must have been saved with it (EpisodeSaved), or it is lost."""
    cut = min(cut, len(steps))
    straight, _ = run(steps)
    table: dict[str, str] = {}
    head, _ = run(steps[:cut], table=table)
    row = room_state_row(head.machine.state, frozenset() if by_reference else None, at(0))
    if by_reference:
        assert (row["episode_id"] is None) == (head.machine.state.episode is None)
        assert (row["last_episode_id"] is None) == (head.machine.state.last_episode is None)
    stored = restore_room_state(row["state"], row["episode_id"], row["last_episode_id"], table)
    resumed = Room()
    resumed.machine = RoomMachine("demo-school", resumed.spec, resumed.policy, stored)
    run(steps[cut:], resumed)
    assert resumed.machine.state.model_dump_json() == straight.machine.state.model_dump_json()


@PROPERTY
@given(scenarios(), st.data())
def test_a_duplicate_changes_nothing(steps: list[Step], data: st.DataObject) -> None:
    events = [s for s in steps if isinstance(s.message, SensorEvent)]
    if not events:
        return
    room, _ = run(steps)
    again = data.draw(st.sampled_from(events))
    before = room.machine.state.model_dump_json()
    outcome = room.machine.handle(again.message, steps[-1].now)
    assert outcome.duplicate and not outcome.applied and not outcome.effects
    assert room.machine.state.model_dump_json() == before


def _models_under(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        stack: list[object] = [field.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                _models_under(t, seen)
            stack.extend(typing.get_args(t))


def test_every_field_of_a_stored_room_state_that_may_be_none_defaults_to_none() -> None:
    """The store leaves absent values out of a room's state (store.room_state_json): that loses nothing
    only while every field that may be None defaults to None, in RoomState and every model inside it."""
    models: set[type[BaseModel]] = set()
    _models_under(RoomState, models)
    assert len(models) > 5  # the episode, the alert book, the devices... are found
    for model in models:
        for name, field in model.model_fields.items():
            if type(None) in typing.get_args(field.annotation):
                assert field.default is None, (
                    f"{model.__name__}.{name} may be None but defaults to {field.default!r}"
                )
