"""One hub serves a database at a time.

Two hubs on one database (a second `seclusion-hub serve` typed into the running container to watch its
log, a second compose project on the same volume) would take the broker's session from each other, each
applying and acknowledging events the other's rooms never see, and each writing its rooms' state over
the other's: an episode ended in front of one stays open in the other. So `serve` takes this lock first
and refuses to start without it, naming `SECLUSION_DATABASE_URL`. `migrate` and `token` do not take it:
the documents run them beside the live hub.

- SQLite: an exclusive `flock` on `<database file>.serving` beside the file, held for as long as the
  hub serves; the operating system lets go of it when the process ends, however it ends.
- PostgreSQL: a session-level advisory lock, held by a connection of its own (in autocommit, so it is
  never a transaction left open), released when that connection closes or the server sees it gone.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .errors import ConfigError

# The advisory lock's key: any number no other program on the database uses ("SECL" in ASCII).
ADVISORY_KEY = 0x5345434C
REFUSED = (
    "another hub is already serving this database; run one hub per database (to watch the running hub, "
    "use its log: docker compose logs -f hub)"
)


class ServingLock:
    """Held while a hub serves its database (`take`, then `release`)."""

    def __init__(self, fd: int | None = None, conn: Connection | None = None) -> None:
        self._fd = fd
        self._conn = conn

    @classmethod
    def take(cls, engine: Engine) -> ServingLock:
        """The lock of the engine's database, or a ConfigError when another hub holds it."""
        if engine.dialect.name == "sqlite":
            database = engine.url.database
            if not database or database == ":memory:":
                return cls()  # a database of this process alone
            path = Path(database).resolve().with_name(Path(database).name + ".serving")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError("SECLUSION_DATABASE_URL", "", REFUSED) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for whoever looks
            return cls(fd=fd)
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            held = conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}).scalar()
        except BaseException:
            conn.close()
            raise
        if not held:
            conn.close()
            raise ConfigError("SECLUSION_DATABASE_URL", "", REFUSED)
        return cls(conn=conn)

    def release(self) -> None:
        """Let another hub serve the database (also when the process ends, whatever way)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                # Unlocked by name: the pool keeps the connection's session open after close().
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
            finally:
                conn.close()
