"""The examples of contract.md, validated against the contract module both edge and hub import."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from seclusion_contract import (
    AckPayload,
    ContractError,
    EventPayload,
    HeartbeatPayload,
    HubStatusPayload,
    IndicatorPayload,
    StatusPayload,
    Topics,
    ack_payload,
    dump_payload,
    format_ts,
    parse_ts,
)

# Copied from contract.md sections 2 and 3.
STATUS = (
    '{"v":1,"online":true,"ts":"2026-11-21T10:15:02.123Z","agent":"0.1.0","boot":"3f2a",'
    '"uptime_s":12,"sensors":["door","occupancy"],"epoch":0,"last_seq":41}'
)
WILL = '{"v":1,"online":false}'
HEARTBEAT = (
    '{"v":1,"ts":"2026-11-21T10:15:02.123Z","epoch":0,"last_seq":41,"uptime_s":3600,"queued":0,'
    '"state":{"door":"closed","occupancy":"occupied"}}'
)
ACK = '{"v":1,"epoch":0,"seq":41}'
INDICATOR = '{"v":1,"level":"critical","reason":"supervision_lapse","ts":"2026-11-21T10:15:02.123Z"}'
HUB_STATUS = '{"v":1,"online":true,"ts":"2026-11-21T10:15:02.123Z"}'


def test_the_contract_examples_validate() -> None:
    status = StatusPayload.model_validate_json(STATUS)
    assert status.online and status.last_seq == 41 and status.sensors == ["door", "occupancy"]
    assert StatusPayload.model_validate_json(WILL).online is False
    heartbeat = HeartbeatPayload.model_validate_json(HEARTBEAT)
    assert heartbeat.state == {"door": "closed", "occupancy": "occupied"}
    assert AckPayload.model_validate_json(ACK).seq == 41
    assert IndicatorPayload.model_validate_json(INDICATOR).level == "critical"
    assert HubStatusPayload.model_validate_json(HUB_STATUS).online


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        ("door", ["open", "closed"]),
        ("lock", ["engaged", "released"]),
        ("occupancy", ["occupied", "vacant"]),
        ("observer", ["present", "absent"]),
        ("check", ["ok"]),
        ("fault", ["ok", "door-sensor-disconnected"]),
    ],
)
def test_every_kind_and_value_of_the_contract_is_an_event(kind: str, values: list[str]) -> None:
    for value in values:
        body = {"v": 1, "id": "calm-1-door:0:7", "seq": 7, "ts": "2026-11-21T10:15:02.123Z", "kind": kind}
        event = EventPayload.model_validate({**body, "value": value, "unknown_extra": "ignored"})
        assert event.value == value and event.epoch == 0


def test_an_event_round_trips_to_the_exact_wire_format() -> None:
    raw = {"v": 1, "id": "d:0:1", "seq": 1, "ts": "2026-11-21T10:15:02.120Z", "kind": "door", "value": "open"}
    event = EventPayload.model_validate(raw)
    assert json.loads(dump_payload(event)) == {**raw, "epoch": 0}


@pytest.mark.parametrize(
    "change",
    [
        {"seq": "1"},
        {"seq": 0},
        {"v": 2},
        {"kind": "window"},
        {"value": "ajar"},
        {"ts": "2026-11-21T10:15:02Z"},
    ],
)
def test_events_that_break_the_contract_are_refused(change: dict[str, object]) -> None:
    body = {
        "v": 1,
        "id": "d:0:1",
        "seq": 1,
        "ts": "2026-11-21T10:15:02.123Z",
        "kind": "door",
        "value": "open",
    }
    with pytest.raises(ValidationError):
        EventPayload.model_validate({**body, **change})


def test_timestamps_are_utc_with_exactly_milliseconds() -> None:
    when = dt.datetime(2026, 11, 21, 10, 15, 2, 123456, tzinfo=dt.UTC)
    assert format_ts(when) == "2026-11-21T10:15:02.123Z"
    assert parse_ts("2026-11-21T10:15:02.123Z") == when.replace(microsecond=123000)
    with pytest.raises(ContractError):
        format_ts(dt.datetime(2026, 11, 21))  # naive


def test_topics() -> None:
    topics = Topics()
    assert (
        topics.event("demo-school", "calm-1", "calm-1-door")
        == "seclusion/v1/demo-school/calm-1/calm-1-door/event"
    )
    assert topics.indicator("demo-school", "calm-1") == "seclusion/v1/demo-school/calm-1/indicator"
    assert topics.hub_status == "seclusion/v1/_hub/status"
    address = topics.parse_device_topic("seclusion/v1/demo-school/calm-1/calm-1-door/heartbeat")
    assert (address.site, address.room, address.device, address.channel) == (
        "demo-school",
        "calm-1",
        "calm-1-door",
        "heartbeat",
    )
    with pytest.raises(ContractError):
        topics.parse_device_topic("seclusion/v1/Demo/calm-1/calm-1-door/event")
    assert Topics("school/x").ack("s", "r", "d") == "school/x/s/r/d/ack"


def test_broker_urls_of_contract_section_5() -> None:
    from seclusion_contract import parse_broker_url

    plain = parse_broker_url("mqtt://127.0.0.1:1884")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("127.0.0.1", 1884, False, None)
    secure = parse_broker_url("mqtts://hub:p%40ss@broker.school.local")
    assert (secure.port, secure.tls, secure.username, secure.password) == (8883, True, "hub", "p@ss")
    assert secure.redacted() == "mqtts://hub:***@broker.school.local:8883"
    for bad in ("http://x:1883", "mqtt://", "mqtt://host:port", "mqtt://host/path"):
        with pytest.raises(ValueError):
            parse_broker_url(bad)


@given(st.integers(min_value=0, max_value=2**63 - 1), st.integers(min_value=0, max_value=2**63 - 1))
def test_the_hubs_ack_written_out_is_the_ack_payload_byte_for_byte(epoch: int, seq: int) -> None:
    assert ack_payload(epoch, seq) == dump_payload(AckPayload(epoch=epoch, seq=seq))
    assert AckPayload.model_validate_json(ack_payload(epoch, seq)) == AckPayload(epoch=epoch, seq=seq)


@pytest.mark.parametrize(("epoch", "seq"), [(0, -1), (-1, 0), (0, 2**63), (2**63, 0)])
def test_an_ack_is_never_written_with_a_number_its_payload_refuses(epoch: int, seq: int) -> None:
    with pytest.raises(ValueError, match="counters from 0"):
        ack_payload(epoch, seq)
    with pytest.raises(ValidationError):
        AckPayload(epoch=epoch, seq=seq)
