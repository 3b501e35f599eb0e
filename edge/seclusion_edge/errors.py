"""The edge agent's exceptions: one root, each subclass also the built-in it resembles."""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error the edge agent raises on purpose."""


class ConfigError(EdgeError, ValueError):
    """A device file that cannot be used; the message names the file and the key."""


class OutboxError(EdgeError, RuntimeError):
    """The sequence store or outbox cannot be used (wrong device, unwritable directory)."""


class OutboxUnavailable(OutboxError):
    """The store cannot be opened for now (a full or read-only SD card, a disk error, a lock); it is kept."""


class LinkError(EdgeError, RuntimeError):
    """The broker link cannot be set up (TLS: a CA file that cannot be read or holds no certificate)."""


class WiringError(ConfigError):
    """A sensor's pin cannot be set up as configured (pin in use, fixed pull, unknown name)."""
