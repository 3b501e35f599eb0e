"""The PostgreSQL fixtures start a real server that the tests can use."""

from __future__ import annotations

import psycopg
from sqlalchemy.engine import make_url


def _conninfo(sqlalchemy_url: str) -> str:
    url = make_url(sqlalchemy_url)
    return f"host={url.host} port={url.port} user={url.username} dbname={url.database}"


def test_postgres_url_accepts_a_query(postgres_url: str) -> None:
    """Given the session's database, when we ask for `select 1`, then the server answers 1."""
    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    with psycopg.connect(_conninfo(postgres_url)) as conn:
        row = conn.execute("select 1").fetchone()
    assert row == (1,)


def test_fresh_database_is_empty_and_writable(fresh_postgres_db: str) -> None:
    """Given a fresh database, then it has no tables of ours, and a test can create one."""
    with psycopg.connect(_conninfo(fresh_postgres_db)) as conn:
        row = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        ).fetchone()
        assert row == (0,)
        conn.execute("create table probe (id integer primary key)")
        conn.execute("insert into probe values (1)")
        assert conn.execute("select id from probe").fetchall() == [(1,)]


def test_each_test_gets_its_own_database(fresh_postgres_db: str, postgres_url: str) -> None:
    """Given a fresh database, then it is not the session's shared one."""
    assert make_url(fresh_postgres_db).database != make_url(postgres_url).database
    assert (make_url(fresh_postgres_db).database or "").startswith("t_")
