"""A real, throwaway PostgreSQL server for the tests, started on a free loopback port.

Debian's server binaries refuse to run as root, and CI runs as root: then the server runs as the
`postgres` system user (through `runuser`), in a directory under /tmp that this user owns. As any
other user it simply runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.processes import free_port

SERVER_USER = "postgres"  # the OS account the server runs as when the tests run as root
SUPERUSER = "postgres"  # the database role the tests connect as (trust authentication)
INSTALL_HINT = (
    "PostgreSQL is not installed: the PostgreSQL tests need a real server "
    "(Debian: apt-get install postgresql; ./scripts/test installs it when run as root). "
    "Set SECLUSION_PG_BINDIR to the directory holding initdb and pg_ctl if they are elsewhere."
)


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries cannot be found or the server cannot be run here."""


def _version_key(path: str) -> tuple[int, ...]:
    """Sort /usr/lib/postgresql/<version>/bin by version, numerically."""
    version = Path(path).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def find_bindir() -> Path:
    """The directory that holds initdb, pg_ctl and postgres, newest version first."""
    candidates: list[str] = []
    if override := os.environ.get("SECLUSION_PG_BINDIR"):
        candidates.append(override)
    # Debian and Ubuntu: one directory per major version; pg_config's answer is the same place.
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    if pg_config := shutil.which("pg_config"):
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(result.stdout.strip())
    # Other systems put initdb on PATH (Homebrew, Fedora); /usr/local/bin may hold symlinks to Debian's.
    if initdb := shutil.which("initdb"):
        candidates.append(str(Path(initdb).resolve().parent))
    for candidate in candidates:
        bindir = Path(candidate)
        if all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise PostgresUnavailable(INSTALL_HINT)


def _run_as_server_user() -> list[str]:
    """The command prefix that runs a server binary as a user it accepts."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root, and PostgreSQL refuses to run as root, but there is no '{SERVER_USER}' "
            "user to run it as (Debian's postgresql package creates it)"
        ) from None
    if runuser := shutil.which("runuser"):
        return [runuser, "-u", SERVER_USER, "--"]
    raise PostgresUnavailable("running as root and `runuser` (util-linux) is missing")


@dataclass
class Postgres:
    """One PostgreSQL server in its own temporary directory, trust authentication, loopback only."""

    port: int = field(default_factory=free_port)
    bindir: Path = field(default_factory=find_bindir)
    root: Path | None = None
    started: bool = False

    @property
    def datadir(self) -> Path:
        assert self.root is not None, "start() first"
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        assert self.root is not None, "start() first"
        return self.root / "sock"

    @property
    def logfile(self) -> Path:
        assert self.root is not None, "start() first"
        return self.root / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        """A SQLAlchemy URL for one database of this server."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def conninfo(self, dbname: str = "postgres") -> str:
        """A libpq connection string, for psycopg directly."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def _run(self, *args: str) -> None:
        # cwd: the server user may not be allowed into the tests' working directory.
        assert self.root is not None
        result = subprocess.run(
            [*_run_as_server_user(), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-4000:] if self.logfile.exists() else ""
            raise PostgresUnavailable(
                f"{' '.join(args)} failed with exit code {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}\nserver log: {log}"
            )

    def start(self) -> Postgres:
        """initdb into a fresh directory under /tmp, start the server, return once it accepts connections."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Postgres:
        # Under /tmp, not pytest's tmp_path: that one is mode 0700 for root, closed to the server user.
        self.root = Path(tempfile.mkdtemp(prefix="seclusion-pg-"))
        self.sockdir.mkdir()
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SERVER_USER)
            for path in (self.root, self.sockdir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        # Durability off: a throwaway server for tests, where speed matters and a crash loses nothing.
        options = (
            f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "start",
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "-t",
            "60",
        )
        self.started = True
        return self

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its name (a fresh `t_<hex>` unless one is given)."""
        name = name or f"t_{uuid.uuid4().hex}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing any connection a test left open to it."""
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        try:
            # postmaster.pid also covers a server whose start timed out but which came up after all.
            if self.root is not None and (self.datadir / "postmaster.pid").exists():
                self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast", "-w")
        finally:
            self.started = False
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None
