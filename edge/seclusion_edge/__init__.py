"""The edge agent of the seclusion-room monitor: door, lock, occupancy, observer and check-in contacts
on a Raspberry Pi's GPIO, debounced, numbered, kept in an outbox and sent to the hub over MQTT.

Public API: `EdgeAgent` (one device's agent), `load_config` / `EdgeConfig` (the device file),
`SystemClock` / `FakeClock` (time as an input), `reset_epoch`. See docs/edge.md.
"""

from __future__ import annotations

from seclusion_edge.agent import EdgeAgent, agent_version, reset_epoch
from seclusion_edge.clock import Clock, FakeClock, Instant, SystemClock
from seclusion_edge.config import EdgeConfig, load_config
from seclusion_edge.errors import (
    ConfigError,
    EdgeError,
    LinkError,
    OutboxError,
    OutboxUnavailable,
    WiringError,
)

__all__ = [
    "Clock",
    "ConfigError",
    "EdgeAgent",
    "EdgeConfig",
    "EdgeError",
    "FakeClock",
    "Instant",
    "LinkError",
    "OutboxError",
    "OutboxUnavailable",
    "SystemClock",
    "WiringError",
    "agent_version",
    "load_config",
    "reset_epoch",
]
