"""Operations review (docs/operations.md followed literally): faults of the hub's software found there.

Each test fails on the code as reviewed and passes once the fault is fixed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from seclusion_hub import cli
from seclusion_hub.config import load_settings
from seclusion_hub.errors import ConfigError
from seclusion_hub.store import Store


def test_a_bad_setting_spelt_in_lower_case_in_the_environment_is_said_to_come_from_the_environment(
    clean_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """operations.md: "A setting whose value cannot be used stops the hub ... with its name and where it
    was set". The settings are read whatever the case of the name (pydantic-settings is case-insensitive),
    but `where` looks the upper-case name up in the environment only: a `seclusion_http_port=abc` in the
    environment, with no `.env` anywhere, was blamed on `<working dir>/.env`, a file that does not exist."""
    monkeypatch.setenv("seclusion_http_port", "abc")
    assert not (clean_settings / ".env").exists()
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.key == "SECLUSION_HTTP_PORT"
    assert caught.value.source == "environment", caught.value


def test_a_database_written_by_a_newer_hub_stops_migrate_with_a_configuration_error_not_a_traceback(
    clean_settings: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """operations.md says an unusable database stops `serve`, `migrate` and `token` with
    `SECLUSION_DATABASE_URL: ...`, "not a traceback". A database whose schema is from a newer hub (the
    upgrade rolled back by checking out the older release, or a backup of a newer hub restored onto an
    older one) raised alembic's CommandError ("Can't locate revision identified by ...") out of
    `main` as a traceback; in Docker (`restart: unless-stopped`) the hub then restarts for ever."""
    db = clean_settings / "hub.db"
    url = f"sqlite:///{db}"
    Store.open(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    monkeypatch.setenv("SECLUSION_DATABASE_URL", url)
    code = cli.main(["migrate"])  # raised alembic.util.exc.CommandError
    err = capsys.readouterr().err
    assert code == 2
    assert "SECLUSION_DATABASE_URL" in err and "0099" in err
