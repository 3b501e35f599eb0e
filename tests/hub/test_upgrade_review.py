"""Upgrade and operations review: what the school's IT technician meets keeping the hub running
(upgrading over a database of real rows, backups and restores, the commands of docs/operations.md).

Each test fails on the code as reviewed and passes once the fault is fixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from seclusion_hub import cli
from seclusion_hub.store import make_engine, migrate


class _Killed(Exception):
    """The hub's process gone (a power cut, `docker compose stop` past its grace period)."""


def _killed_at(engine: sa.Engine, prefix: str) -> None:
    """From the first statement starting with `prefix` on, nothing more reaches the database: as after
    the process died there. Its open transaction is lost, as a dead process's is."""
    dead = [False]

    def before(_conn: Any, _cur: Any, statement: str, *_args: Any) -> None:
        if dead[0] or statement.lstrip().startswith(prefix):
            dead[0] = True
            raise _Killed(statement)

    sa.event.listen(engine, "before_cursor_execute", before)


@pytest.mark.parametrize(
    ("release", "dies_at"),
    [
        # A hub of 0008 (before the events' device_ts), killed as the upgrade stamps 0009.
        ("0008", "UPDATE alembic_version SET version_num='0009'"),
        # A hub of 0007, killed while 0008 copies the audit table (every read is audited: a long copy).
        ("0007", "DROP TABLE audit"),
        # A hub from before the incident records, killed at the very last step of the upgrade.
        ("0002", "UPDATE alembic_version SET version_num='0013'"),
    ],
)
def test_an_upgrade_cut_short_on_sqlite_is_finished_by_the_next_start(
    clean_settings: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    release: str,
    dies_at: str,
) -> None:
    """operations.md: "The hub brings its database up to date as it starts", and 0006 takes "about a
    second per million events". On SQLite the upgrade is not one transaction: the first pending
    migration's schema changes (CREATE TABLE, ALTER TABLE ADD COLUMN, Alembic's `_alembic_tmp_*` copy
    table) are committed one by one by the driver before any row is written, while the version stamp
    is rolled back with the rest. A hub that dies anywhere in the upgrade after them (a power cut, the
    technician's `docker compose restart` of a hub that seemed stuck) can never start again: every
    start and `seclusion-hub migrate` stop with `configuration error: SECLUSION_DATABASE_URL: cannot use
    the database: duplicate column name: device_ts` (or `table pupil already exists`, `table
    _alembic_tmp_audit already exists`), exit 2, in a restart loop under Docker, until someone edits
    the database by hand. The fix: run the SQLite upgrade in a real transaction (emit BEGIN on the
    migration's connection, pysqlite's documented recipe), which SQLite's DDL supports."""
    db = clean_settings / "hub.db"
    url = f"sqlite:///{db}"
    engine = make_engine(url)
    migrate(engine, release)
    with engine.begin() as conn:  # a row of the older release's audit, written as it wrote them
        conn.execute(
            sa.text(
                "INSERT INTO audit (at, actor, action, target_type, target_id, detail)"
                " VALUES ('2026-11-23 10:00:00.123000', 'IT admin', 'read', 'episode', 'e1', '{}')"
            )
        )
    _killed_at(engine, dies_at)
    with pytest.raises(_Killed):
        migrate(engine)
    engine.dispose()

    monkeypatch.setenv("SECLUSION_DATABASE_URL", url)
    code = cli.main(["migrate"])  # the next start, or the technician's `seclusion-hub migrate`
    err = capsys.readouterr().err
    assert code == 0, err
    check = sa.create_engine(url)
    with check.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0013"
        assert conn.execute(sa.text("SELECT actor, at FROM audit")).all() == [
            ("IT admin", "2026-11-23 10:00:00.123000")
        ]
    check.dispose()
