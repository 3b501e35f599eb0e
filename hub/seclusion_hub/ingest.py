"""The boundary: a raw MQTT message becomes a typed core message, or a RejectedMessage with its reason."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydantic import ValidationError

from seclusion_contract import (
    ContractError,
    EventPayload,
    HeartbeatPayload,
    StatusPayload,
    TopicAddress,
    Topics,
    payload_to_json,
)

from .config import LoadedSite
from .core.room import DeviceStatus, Heartbeat, Message, SensorEvent
from .errors import UNSTORABLE_PROBLEM, RejectedMessage, unstorable_in

# Times no device clock can give at all: before the Unix epoch (where a Raspberry Pi without a clock
# starts), or a century after the message arrived. Kept out so that no arithmetic on them overflows; a
# clock that is merely wrong (1970, a year ahead) is the room machine's to time (core/room.py,
# `plausible`), never dropped.
EARLIEST_TS = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST_AHEAD = dt.timedelta(days=36_525)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message as the MQTT adapter received it; `mid` is acknowledged to the broker after storing."""

    topic: str
    payload: bytes
    received_at: dt.datetime
    mid: int = 0
    qos: int = 0
    retain: bool = False
    conn: int = 0  # which MQTT connection delivered it: a packet id means something only on its own


@dataclass(frozen=True, slots=True)
class Decoded:
    site: str
    room: str
    message: Message


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


class Decoder:
    """Validates messages against the contract and the registered sites, rooms and devices."""

    def __init__(self, topics: Topics, sites: list[LoadedSite]) -> None:
        self.topics = topics
        self._rooms: dict[tuple[str, str], str] = {}
        for site in sites:
            for room in site.spec.rooms:
                for device in room.devices:
                    self._rooms[(site.id, device.id)] = room.id
        self._known: dict[str, TopicAddress] = {}  # topics already checked, for every later message

    def decode(self, inbound: Inbound) -> Decoded:
        """The typed message, or RejectedMessage naming what is wrong."""
        address = self._known.get(inbound.topic)
        if address is None:
            address = self._address(inbound.topic)
            # Only a registered device's topics are remembered: at most devices x channels entries.
            self._known[inbound.topic] = address
        try:
            data = payload_to_json(inbound.payload)
        except ContractError as exc:
            raise RejectedMessage(str(exc)) from exc
        if not isinstance(data, dict):
            raise RejectedMessage("payload is not a JSON object")
        if "v" not in data:
            # Contract 2: required on every device message (the models take 1 when the hub builds one).
            raise RejectedMessage("v: Field required")
        if b"\\u" in inbound.payload:  # only a JSON escape gives a NUL or a lone surrogate
            found = unstorable_in(data)
            if found is not None:
                # Never stored by every database (PostgreSQL refuses NUL), so never applied: set aside
                # here, on every database alike, as the API refuses such text with 422.
                raise RejectedMessage(f"{'.'.join(found) or 'payload'}: {UNSTORABLE_PROBLEM}")
        try:
            message = self._typed(address.channel, address.device, data, inbound.received_at, inbound.retain)
        except ValidationError as exc:
            raise RejectedMessage(_reason(exc)) from exc
        when = message.ts
        if when is not None and not (EARLIEST_TS <= when <= inbound.received_at + LATEST_AHEAD):
            # Not a clock that is off (semantics 4.5, and the room machine, time those) but a value no
            # device clock gives; kept as a dead letter so that nothing is lost, never applied.
            raise RejectedMessage(f"ts: {when.isoformat()} is not a time any device clock gives")
        return Decoded(address.site, address.room, message)

    def _address(self, topic: str) -> TopicAddress:
        """Where a topic points, if it names a registered device in its own room; else RejectedMessage."""
        try:
            address = self.topics.parse_device_topic(topic)
        except ContractError as exc:
            raise RejectedMessage(str(exc)) from exc
        registered_room = self._rooms.get((address.site, address.device))
        if registered_room is None:
            raise RejectedMessage(f"device {address.device!r} is not registered to site {address.site!r}")
        if registered_room != address.room:
            raise RejectedMessage(
                f"device {address.device!r} belongs to room {registered_room!r}, not {address.room!r}"
            )
        return address

    @staticmethod
    def _typed(
        channel: str, device: str, data: dict[str, object], received_at: dt.datetime, retained: bool
    ) -> Message:
        if channel == "event":
            ev = EventPayload.model_validate(data)
            return SensorEvent(
                device=device,
                kind=ev.kind,
                value=ev.value,
                ts=ev.ts,
                seq=ev.seq,
                epoch=ev.epoch,
                staff=ev.staff,
                event_id=ev.id,
                boot=ev.boot,
                mono_ms=ev.mono_ms,
                startup=ev.startup is True,
            )
        if channel == "status":
            st = StatusPayload.model_validate(data)
            return DeviceStatus(
                device=device,
                online=st.online,
                # The Last Will carries no time: the hub stamps it with its arrival.
                ts=st.ts or received_at,
                boot=st.boot,
                uptime_s=st.uptime_s,
                epoch=st.epoch,
                last_seq=st.last_seq,
                conn_ms=st.conn_ms,
                retained=retained,
            )
        if channel == "heartbeat":
            hb = HeartbeatPayload.model_validate(data)
            return Heartbeat(
                device=device,
                ts=hb.ts,
                epoch=hb.epoch,
                last_seq=hb.last_seq,
                state={str(k): v for k, v in hb.state.items()},
                uptime_s=hb.uptime_s,
                # Told apart from the model's default: an agent that does not say is not one with
                # nothing queued.
                queued=hb.queued if "queued" in hb.model_fields_set else None,
            )
        raise RejectedMessage(f"topic: devices do not publish on {channel!r}")
