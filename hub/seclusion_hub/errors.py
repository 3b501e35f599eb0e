"""One root exception; each subclass also inherits the built-in it resembles."""

from __future__ import annotations

import re
from typing import Any

# Text no database keeps: PostgreSQL's text columns refuse NUL, and a lone surrogate is no UTF-8.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_PROBLEM = "contains a NUL character or a lone surrogate"


def unstorable_in(value: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """Where in a JSON value there is text no database can store (the keys leading to it, each with
    such characters taken out), or None."""
    if isinstance(value, str):
        return path if UNSTORABLE.search(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if UNSTORABLE.search(str(key)):
            return (*path, UNSTORABLE.sub("", str(key)))
        found = unstorable_in(item, (*path, str(key)))
        if found is not None:
            return found
    return None


class SeclusionError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(SeclusionError, ValueError):
    """A site file, profile or setting that cannot be used; the message names the file and the key."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


class RejectedMessage(SeclusionError, ValueError):
    """A message from a device that breaks the contract: dead-lettered with this reason, never applied."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class BadRequest(SeclusionError, ValueError):
    """A request the API refuses with 422, naming where the bad field is (`query`, `body`, `path`)."""

    def __init__(self, location: str, field: str, problem: str) -> None:
        self.location = location
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class ChangeRefused(SeclusionError, RuntimeError):
    """A person's change that the database refused for good (not a fault that passes): nothing of it
    was stored, and the hub went on without it. The API answers 500 with this message."""
