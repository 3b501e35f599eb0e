"""Fixtures shared by every test: real brokers and databases, started on free loopback ports."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import Postgres, PostgresUnavailable
from tests.support.processes import Mosquitto

pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--collect-after-each",
        action="store_true",
        help="run the garbage collector after every test, so that a resource one leaks (an unclosed "
        "socket's ResourceWarning) fails that test, not whichever test the collector happens to run in",
    )


@pytest.fixture(autouse=True)
def _collect_after_each(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if request.config.getoption("--collect-after-each"):
        gc.collect()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh Mosquitto broker for one test."""
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """One real PostgreSQL server for the whole test session; fails (never skips) if PostgreSQL is missing."""
    try:
        server = Postgres().start()
    except PostgresUnavailable as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:  # failed outside the except block, so that the message is shown once
        pytest.fail(problem, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: Postgres) -> str:
    """SQLAlchemy URL `postgresql+psycopg://postgres@127.0.0.1:PORT/DBNAME` of a database for the session."""
    return postgres_server.url(postgres_server.create_database("seclusion_test"))


@pytest.fixture
def fresh_postgres_db(postgres_server: Postgres) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty database (`t_<uuid>`) for one test, dropped afterwards."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)
