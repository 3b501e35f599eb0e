"""One root exception; each subclass also inherits the built-in it resembles."""

from __future__ import annotations


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
