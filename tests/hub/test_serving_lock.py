"""One hub serves a database at a time (serving_lock.py): found by the operations review, where a second
`seclusion-hub serve` on the same SQLite file started and the two hubs took the broker's session from
each other, each writing its rooms' state over the other's."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from seclusion_hub import cli
from seclusion_hub.errors import ConfigError
from seclusion_hub.serving_lock import ServingLock
from seclusion_hub.store import make_engine
from tests.support.hub import two_device_room, write_site


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("fresh_postgres_db"))


def test_a_second_hub_on_a_database_being_served_is_refused_until_the_first_lets_go(database: str) -> None:
    # Given a hub serving the database
    first_engine, second_engine = make_engine(database), make_engine(database)
    try:
        first = ServingLock.take(first_engine)
        # When a second one asks (another process's engine), it is refused, naming the setting
        with pytest.raises(ConfigError, match="SECLUSION_DATABASE_URL: another hub is already serving"):
            ServingLock.take(second_engine)
        # Then, once the first stops, the next may serve
        first.release()
        second = ServingLock.take(second_engine)
        second.release()
    finally:
        first_engine.dispose()
        second_engine.dispose()


def test_seclusion_hub_serve_on_a_database_being_served_exits_with_the_reason(
    clean_settings: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The technician types `seclusion-hub serve` into the running container to watch the hub: it stops
    at once, exit 2, saying why, before it takes a single message from the broker."""
    site = write_site(clean_settings / "site.yaml", [two_device_room("calm-1")])
    url = f"sqlite:///{clean_settings / 'hub.db'}"
    monkeypatch.setenv("SECLUSION_DATABASE_URL", url)
    monkeypatch.setenv("SECLUSION_SITE_FILES", str(site))
    monkeypatch.setenv("SECLUSION_MQTT_URL", "mqtt://127.0.0.1:9")  # never reached: refused before
    engine = make_engine(url)
    running = ServingLock.take(engine)
    try:
        assert cli.main(["serve"]) == 2
        err = capsys.readouterr().err
        assert "configuration error: SECLUSION_DATABASE_URL: another hub is already serving" in err
        # `migrate` and `token` still run beside the serving hub, as the documents do
        assert cli.main(["migrate"]) == 0
    finally:
        running.release()
        engine.dispose()
    with sa.create_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
