"""The Grafana dashboards (dashboards/*.json), their provisioning and the read-only role they read through.

Every panel's SQL is run for real against a PostgreSQL database built by the hub's own migrations, after
substituting Grafana's macros and template variables the way Grafana's PostgreSQL data source does, and
it is run as the read-only role that deploy/postgres/grafana-readonly.sql creates: a query that needs a
column the role may not read fails here, not on a school's server.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import yaml
from psycopg import sql

from seclusion_hub.core.incident import STATUSES
from seclusion_hub.models import AlertRecord, EpisodeRecord, IncidentRecord
from seclusion_hub.store import Store
from tests.support.postgres import SUPERUSER, Postgres

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))
READONLY_SQL = ROOT / "deploy" / "postgres" / "grafana-readonly.sql"
DATASOURCE_UID = "seclusion-postgres"
# What the role may read. Everything else (pupil, incident_staff, api_token, audit, event, ...) is closed.
READABLE_TABLES = {"episode", "incident", "incident_addendum", "alert"}
FORBIDDEN_TABLES = {"pupil", "api_token", "audit", "event", "incident_staff", "parent_contact"}
# Columns that identify a child, name a member of staff or hold free text: never readable.
FORBIDDEN_COLUMNS = {
    "episode": {"pupil_id", "data"},
    "incident": {
        "pupil_id",
        "record",
        "recorded_by",
        "reviewed_by",
        "closed_by",
        "parent_copy_withheld_by",
        "parent_copy_withheld_reason",
    },
    "alert": {"data"},
    "incident_addendum": {"text", "author", "at"},
}

TIME_FROM = "'2026-01-01T00:00:00Z'"
TIME_TO = "'2026-12-31T00:00:00Z'"
SITE = "demo-school"
NOW = dt.datetime.now(dt.UTC)


# Dashboards as data ----------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref_id: str
    raw_sql: str
    variables: tuple[dict[str, Any], ...]


def all_queries() -> list[Query]:
    queries: list[Query] = []
    for path in DASHBOARD_FILES:
        dashboard = load(path)
        variables = tuple(dashboard["templating"]["list"])
        queries.extend(
            Query(path.name, panel["title"], target["refId"], target["rawSql"], variables)
            for panel in panels(dashboard)
            for target in panel.get("targets", [])
        )
    return queries


def query_of(title: str) -> Query:
    (query,) = [q for q in all_queries() if q.dashboard == "seclusion-overview.json" and q.panel == title]
    return query


# Grafana's substitution ------------------------------------------------------------------------------

VARIABLE = re.compile(r"\$\{(?P<braced>\w+)(?::(?P<format>\w+))?\}|\$(?P<plain>[A-Za-z]\w*)")
TIME_FILTER = re.compile(r"\$__timeFilter\(([^()]+)\)")


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def interpolate(raw_sql: str, variables: Sequence[Mapping[str, Any]], values: Mapping[str, list[str]]) -> str:
    """What Grafana's PostgreSQL data source sends for a query with these variable values.

    Macros as the data source expands them (`$__timeFilter(col)` to `col BETWEEN from AND to`). Variables as
    Grafana's SQL data sources interpolate them: the `sqlstring` format quotes each value and joins them
    with commas; without a format a multi-value or include-All variable is quoted the same way, a
    single-value one goes in raw with its quotes doubled.
    """
    text = TIME_FILTER.sub(lambda m: f"{m.group(1).strip()} BETWEEN {TIME_FROM} AND {TIME_TO}", raw_sql)
    text = text.replace("$__timeFrom()", TIME_FROM).replace("$__timeTo()", TIME_TO)
    assert "$__" not in text, f"a Grafana macro this test does not expand: {text}"
    defined = {variable["name"]: variable for variable in variables}

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        assert name in defined, f"${name} is not a template variable of the dashboard"
        # A variable the caller does not choose keeps the value the dashboard ships (the site timezone).
        chosen = values[name] if name in values else [defined[name]["current"]["value"]]
        multi = bool(defined[name].get("multi") or defined[name].get("includeAll"))
        if match.group("format") == "sqlstring" or multi:
            return ",".join(quote(value) for value in chosen)
        assert match.group("format") is None, f"unexpected variable format in {match.group(0)}"
        (value,) = chosen
        return value.replace("'", "''")

    text = VARIABLE.sub(substitute, text)
    assert "$" not in text, f"something of Grafana's is left in the SQL: {text}"
    return text


# The database: the hub's schema, a few rows, the read-only role ------------------------------------


def ts(day: int, hour: int = 10, month: int = 3) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, 0, tzinfo=dt.UTC)


def episode(
    n: int,
    start: dt.datetime,
    elapsed: float,
    supervised: float,
    unsupervised: float = 0.0,
    unknown: float = 0.0,
    *,
    room: str = "calm-1",
    site: str = SITE,
    ended: bool = True,
    test: bool = False,
) -> dict[str, Any]:
    return {
        "id": f"e{n}",
        "site": site,
        "room": room,
        "number": n,
        "started_at": start,
        "ended_at": start + dt.timedelta(seconds=elapsed) if ended else None,
        "start_uncertain": False,
        "end_uncertain": False,
        "locked": False,
        "manual": False,
        "test": test,
        "incident_id": f"i{n}",
        "pupil_id": None,
        "elapsed_s": elapsed,
        "duration_s": elapsed,
        "supervised_s": supervised,
        "unsupervised_s": unsupervised,
        "unknown_s": unknown,
        "longest_lapse_s": unsupervised,
        "data": "{}",
        "saved_at": start + dt.timedelta(seconds=elapsed),
    }


# Calm-1 of demo-school, week of Monday 2 March 2026: e1, e2, e10 (e3 is a test episode).
# Week of Monday 9 March: e5, e9 ended and e6 still running. e4 is in calm-2, e7 at another school,
# e8 before the time range.
EPISODES = [
    episode(1, ts(2), 240, 200, 40),
    episode(2, ts(4), 660, 600, 0, 60),
    episode(10, ts(6), 300, 300),
    episode(3, ts(5), 100, 0, 100, test=True),
    episode(4, ts(3), 2000, 2000, room="calm-2"),
    episode(5, ts(10), 1500, 1200, 300),
    episode(9, ts(11), 500, 500),
    episode(6, ts(12), 120, 60, 0, 60, ended=False),
    episode(11, ts(12), 50, 50, test=True, ended=False),
    episode(7, ts(2), 300, 0, 300, site="other-school"),
    episode(8, dt.datetime(2025, 12, 29, 10, tzinfo=dt.UTC), 300, 0, 300),
]


def alert(
    n: int, kind: str, episode_id: str | None, *, active: bool = False, room: str = "calm-1"
) -> dict[str, Any]:
    return {
        "id": f"a{n}",
        "site": SITE,
        "room": room,
        "episode_id": episode_id,
        "kind": kind,
        "severity": "critical",
        "active": active,
        "raised_at": ts(2),
        "resolved_at": None if active else ts(3),
        "data": "{}",
        "updated_at": ts(3),
    }


ALERTS = [
    alert(1, "supervision_lapse", "e1"),
    alert(2, "supervision_lapse", "e1"),
    alert(3, "supervision_lapse", "e5"),
    alert(4, "supervision_lapse", "e3"),  # a test episode's: never counted
    alert(5, "supervision_lapse", "e6", active=True),
    alert(6, "device_offline", None, active=True),
    alert(7, "device_offline", None, active=True),
    alert(8, "duration_warning", "e2"),
    alert(9, "device_offline", None, active=True, room="calm-2"),
]


def incident(n: int, status: str, *, room: str = "calm-1", **times: dt.datetime) -> dict[str, Any]:
    start = next(e["started_at"] for e in EPISODES if e["id"] == f"e{n}")
    return {
        "id": f"i{n}",
        "episode_id": f"e{n}",
        "site": SITE,
        "room": room,
        "status": status,
        "opened_at": start,
        "updated_at": start,
        "record": {},
        # Every row with the same keys: an executemany takes its columns from the first row.
        **dict.fromkeys(("record_due_at", "parent_copy_due_at", "parent_copy_withheld_at")),
        **times,
    }


PAST = NOW - dt.timedelta(days=1)
FUTURE = NOW + dt.timedelta(days=1)
INCIDENTS = [
    incident(1, "closed"),
    incident(2, "awaiting_record", record_due_at=PAST),  # record overdue
    incident(10, "awaiting_record", record_due_at=FUTURE),
    incident(5, "recorded", parent_copy_due_at=PAST),  # parents' copy overdue
    incident(9, "recorded", parent_copy_due_at=PAST, parent_copy_withheld_at=PAST),
    incident(6, "open", parent_copy_due_at=PAST),  # still running: nothing is overdue yet
    incident(4, "awaiting_record", room="calm-2", record_due_at=PAST),
]


@dataclass(frozen=True)
class Database:
    server: Postgres
    name: str
    role: str

    def conninfo(self, user: str) -> str:
        return f"host=127.0.0.1 port={self.server.port} user={user} dbname={self.name}"


def run_readonly_sql(db: Database, *args: str, env: Mapping[str, str] | None = None) -> None:
    """Run deploy/postgres/grafana-readonly.sql with psql, the way docs/operations.md says."""
    psql = db.server.bindir / "psql"
    result = subprocess.run(
        [
            *(str(psql), "-X", "-q", "-h", "127.0.0.1", "-p", str(db.server.port)),
            *("-U", SUPERUSER, "-d", db.name, *args, "-f", str(READONLY_SQL)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def database(postgres_server: Postgres) -> Iterator[Database]:
    """A database with the hub's schema, the rows above and the read-only role (a name of its own)."""
    name = postgres_server.create_database()
    db = Database(postgres_server, name, f"grafana_{uuid.uuid4().hex[:12]}")
    store = Store.open(postgres_server.url(name))
    try:
        with store.engine.begin() as conn:
            conn.execute(sa.insert(EpisodeRecord.__table__), EPISODES)  # type: ignore[attr-defined]
            conn.execute(sa.insert(AlertRecord.__table__), ALERTS)  # type: ignore[attr-defined]
            conn.execute(sa.insert(IncidentRecord.__table__), INCIDENTS)  # type: ignore[attr-defined]
    finally:
        store.close()
    # Twice: the file must be safe to run again after an upgrade. Name and password first as psql
    # variables, then from the environment.
    run_readonly_sql(db, "-v", f"grafana_user={db.role}", "-v", "grafana_password=first")
    run_readonly_sql(db, env={"GRAFANA_DB_USER": db.role, "GRAFANA_DB_PASSWORD": "second"})
    try:
        yield db
    finally:
        with psycopg.connect(db.server.conninfo(name), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(db.role)))
        postgres_server.drop_database(name)
        with psycopg.connect(db.server.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(db.role)))


def run_as_grafana(db: Database, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db.conninfo(db.role)) as conn:
        return conn.execute(query.encode()).fetchall()


def run_panel(db: Database, title: str, rooms: list[str] | None = None) -> list[tuple[Any, ...]]:
    query = query_of(title)
    values = {"site": [SITE], "room": rooms or ["calm-1"]}
    return run_as_grafana(db, interpolate(query.raw_sql, query.variables, values))


def week(day: int) -> dt.datetime:
    return ts(day, hour=0)


# The dashboard files ---------------------------------------------------------------------------------


def test_there_are_dashboards_and_each_is_a_grafana_dashboard() -> None:
    assert [path.name for path in DASHBOARD_FILES] == ["seclusion-overview.json", "seclusion-records.json"]
    uids = set()
    for path in DASHBOARD_FILES:
        dashboard = load(path)
        assert dashboard["schemaVersion"] >= 39
        assert dashboard["uid"] == path.stem
        assert dashboard["title"]
        uids.add(dashboard["uid"])
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        names = [variable["name"] for variable in dashboard["templating"]["list"]]
        # The overview's weeks are the school's: it takes the site's timezone too (a textbox).
        assert names == (
            ["site", "room", "timezone"] if path.name == "seclusion-overview.json" else ["site", "room"]
        )
    assert len(uids) == len(DASHBOARD_FILES)


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_every_panel_reads_the_seclusion_data_source(path: Path) -> None:
    dashboard = load(path)
    data_panels = [panel for panel in panels(dashboard) if panel["type"] != "row"]
    assert data_panels
    for panel in data_panels:
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            assert target["rawQuery"] is True and target["rawSql"].strip(), panel["title"]
            assert target["format"] in {"table", "time_series"}
            if panel["type"] == "timeseries":
                assert target["format"] == "time_series" and 'AS "time"' in target["rawSql"]
    for panel in panels(dashboard):
        if panel["type"] == "row":
            assert "targets" not in panel
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == DATASOURCE_UID
        else:
            assert variable["type"] == "textbox" and variable["current"]["value"] == "Europe/London"


# The panels of what is so now (the time picker does not apply); every other panel follows it.
NOW_PANELS = {
    "Open episodes now",
    "Active alerts by kind",
    "Records overdue",
    "Parents' copies overdue",
    "Overdue, one row each",
}


def test_time_ranged_panels_use_the_time_picker_and_every_panel_the_site_and_room() -> None:
    queries = all_queries()
    assert NOW_PANELS <= {q.panel for q in queries}
    for query in queries:
        assert "${site:sqlstring}" in query.raw_sql and "${room:sqlstring}" in query.raw_sql, query.panel
        assert ("$__timeFilter(" in query.raw_sql) == (query.panel not in NOW_PANELS), query.panel
        if query.panel != "Active alerts by kind":  # every other panel reads episodes: never a test one
            assert "NOT test" in query.raw_sql or "NOT e.test" in query.raw_sql, query.panel


def test_no_query_reads_personal_data() -> None:
    """Static: no panel names the pupil table, a pupil column, staff names or the record's free text
    (the role's grants enforce the same in the database, tested below)."""
    personal = re.compile(
        r"\b(pupil|pupil_id|first_name|last_name|incident_staff|record|recorded_by|reviewed_by|closed_by|"
        r"parent_copy_withheld_by|parent_copy_withheld_reason|data|api_token|audit|event)\b"
    )
    for query in all_queries():
        code = re.sub(r"'(?:[^']|'')*'", "''", query.raw_sql)  # string literals are labels, not columns
        assert not personal.search(code), (query.panel, personal.findall(code))
        assert not re.search(r"(SELECT|,)\s*(\w+\.)?\*", query.raw_sql), f"{query.panel} selects *"


def test_the_status_table_lists_the_hubs_statuses_in_workflow_order() -> None:
    (query,) = [q for q in all_queries() if q.panel == "Incidents by status"]
    listed = re.findall(r"'(\w+)'", query.raw_sql.split("ARRAY[", 1)[1].split("]", 1)[0])
    assert tuple(listed) == STATUSES


def test_interpolation_follows_grafana() -> None:
    variables = load(DASHBOARD_FILES[0])["templating"]["list"]
    values = {"site": ["o'brien-school"], "room": ["calm-1", "calm-2"]}
    text = interpolate(
        "WHERE $__timeFilter(e.started_at) AND site = ${site:sqlstring} AND room IN ($room) AND s = '$site'",
        variables,
        values,
    )
    assert text == (
        f"WHERE e.started_at BETWEEN {TIME_FROM} AND {TIME_TO} AND site = 'o''brien-school'"
        " AND room IN ('calm-1','calm-2') AND s = 'o''brien-school'"
    )


# Provisioning ----------------------------------------------------------------------------------------


def test_the_data_source_is_provisioned_with_the_read_only_role() -> None:
    config = yaml.safe_load((DASHBOARDS / "provisioning" / "datasources" / "seclusion.yaml").read_text())
    (source,) = config["datasources"]
    assert source["uid"] == DATASOURCE_UID
    assert source["type"] in {"grafana-postgresql-datasource", "postgres"}
    assert source["url"] == "postgres:5432"
    assert source["jsonData"]["database"] == "seclusion"
    assert source["jsonData"]["sslmode"] == "disable"
    assert source["user"] == "${GRAFANA_DB_USER}"
    assert source["secureJsonData"] == {"password": "${GRAFANA_DB_PASSWORD}"}
    assert "password" not in source and "password" not in source["jsonData"]
    assert source["editable"] is False


def test_the_dashboard_provider_reads_the_mounted_folder() -> None:
    config = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards" / "seclusion.yaml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards/seclusion"
    assert provider["allowUiUpdates"] is False


# The read-only role ----------------------------------------------------------------------------------


def granted_tables(sql_text: str) -> set[str]:
    code = "\n".join(line.split("--", 1)[0] for line in sql_text.splitlines())
    grants = re.findall(r"\bGRANT\s+(.*?);", code, flags=re.IGNORECASE | re.DOTALL)
    tables = set()
    for grant in grants:
        assert not re.search(r"\b(INSERT|UPDATE|DELETE|TRUNCATE|ALL)\b", grant, re.IGNORECASE), grant
        if match := re.search(r"\bON\s+(?:TABLE\s+)?(\w+)\s+TO\b", grant, flags=re.IGNORECASE):
            tables.add(match.group(1).lower())
        else:
            assert re.search(r"\bON\s+(DATABASE|SCHEMA)\b", grant, re.IGNORECASE), grant
    return tables


def test_the_read_only_sql_grants_select_on_the_dashboard_tables_only() -> None:
    text = READONLY_SQL.read_text()
    tables = granted_tables(text)
    assert tables == READABLE_TABLES
    assert not tables & FORBIDDEN_TABLES
    assert "ALL TABLES IN SCHEMA public TO" not in text.upper()
    assert not re.search(r"\bGRANT\b[^;]*\bpg_read_all_data\b", text, re.IGNORECASE)


def test_the_role_reads_the_dashboard_tables_and_no_other(database: Database) -> None:
    with psycopg.connect(database.conninfo(SUPERUSER)) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            ).fetchall()
        ]
        assert FORBIDDEN_TABLES | READABLE_TABLES <= set(tables)
        readable = {
            table
            for table in tables
            if conn.execute(
                "SELECT has_any_column_privilege(%s, %s, 'SELECT')", (database.role, table)
            ).fetchone()
            == (True,)
        }
        assert readable == READABLE_TABLES
        for table, columns in FORBIDDEN_COLUMNS.items():
            for column in columns:
                row = conn.execute(
                    "SELECT has_column_privilege(%s, %s, %s, 'SELECT')", (database.role, table, column)
                ).fetchone()
                assert row == (False,), f"{table}.{column} is readable"
        for table in READABLE_TABLES:
            for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
                row = conn.execute(
                    "SELECT has_table_privilege(%s, %s, %s)", (database.role, table, privilege)
                ).fetchone()
                assert row == (False,), f"{privilege} on {table}"
            for privilege in ("INSERT", "UPDATE"):
                row = conn.execute(
                    "SELECT has_any_column_privilege(%s, %s, %s)", (database.role, table, privilege)
                ).fetchone()
                assert row == (False,), f"{privilege} on a column of {table}"
        role = conn.execute(
            "SELECT rolsuper, rolcanlogin, rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s",
            (database.role,),
        ).fetchone()
        assert role == (False, True, True)


def test_the_role_can_read_episodes_and_not_pupils(database: Database) -> None:
    assert run_as_grafana(database, "SELECT count(*) FROM episode") == [(len(EPISODES),)]
    for forbidden in (
        "SELECT first_name FROM pupil",
        "SELECT count(*) FROM pupil",
        "SELECT pupil_id FROM episode",
        "SELECT * FROM episode",
        "SELECT record FROM incident",
        "SELECT token_hash FROM api_token",
        "SELECT count(*) FROM audit",
        "SELECT count(*) FROM event",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            run_as_grafana(database, forbidden)


def test_the_role_cannot_write(database: Database) -> None:
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        run_as_grafana(database, "CREATE TABLE scratch (id int)")
    with psycopg.connect(database.conninfo(database.role)) as conn:
        conn.execute("SET TRANSACTION READ WRITE")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE episode SET test = true")


# The panels' SQL, run as the role --------------------------------------------------------------------


@pytest.mark.parametrize("rooms", [["calm-1"], ["calm-1", "calm-2"]], ids=["one-room", "two-rooms"])
@pytest.mark.parametrize("query", all_queries(), ids=lambda q: f"{q.dashboard}:{q.panel}:{q.ref_id}")
def test_every_query_runs_as_the_read_only_role(database: Database, query: Query, rooms: list[str]) -> None:
    text = interpolate(query.raw_sql, query.variables, {"site": [SITE], "room": rooms})
    rows = run_as_grafana(database, text)
    assert rows, f"{query.panel} returned no rows from the seeded database"


def test_the_variable_queries_list_sites_and_rooms(database: Database) -> None:
    site, room, *_ = load(DASHBOARD_FILES[0])["templating"]["list"]
    assert run_as_grafana(database, interpolate(site["query"], [site, room], {})) == [
        ("demo-school",),
        ("other-school",),
    ]
    rooms = interpolate(room["query"], [site, room], {"site": [SITE]})
    assert run_as_grafana(database, rooms) == [("calm-1",), ("calm-2",)]


def test_episodes_per_week(database: Database) -> None:
    """Test episodes, other sites, other rooms and episodes outside the time range are not counted;
    a running episode is."""
    assert run_panel(database, "Episodes per week") == [(week(2), 3), (week(9), 3)]
    assert run_panel(database, "Episodes per week", ["calm-1", "calm-2"]) == [(week(2), 4), (week(9), 3)]


def test_supervision_per_week(database: Database) -> None:
    """Shares of the summed elapsed time of the ended episodes: week 1 is e1, e2, e10 (1,200 s, 1,100
    supervised, 40 unsupervised, 60 unknown); week 2 is e5 and e9 (2,000 s, 1,700 supervised)."""
    rows = run_panel(database, "Supervision per week (% of episode time)")
    assert [row[0] for row in rows] == [week(2), week(9)]
    assert [tuple(round(float(value), 3) for value in row[1:]) for row in rows] == [
        (91.667, 3.333, 5.0),
        (85.0, 15.0, 0.0),
    ]
    (whole,) = run_panel(database, "Supervised, whole period")
    assert round(float(whole[0]), 3) == round(100 * 2800 / 3200, 3)


def test_lapses_per_episode(database: Database) -> None:
    rows = run_panel(database, "Supervision lapse alerts per episode, per week")
    assert [(row[0], round(row[1], 3)) for row in rows] == [
        (week(2), round(2 / 3, 3)),
        (week(9), round(2 / 3, 3)),
    ]
    assert run_panel(database, "Supervision lapse alerts, whole period") == [(4, 3)]


def test_durations(database: Database) -> None:
    rows = run_panel(database, "Episode length per week (minutes)")
    # Week 1: 240, 300 and 660 s; week 2: 500 and 1,500 s.
    assert [(row[0], round(row[1], 3), round(row[2], 3)) for row in rows] == [
        (week(2), 5.0, round((300 + 0.8 * 360) / 60, 3)),
        (week(9), round(1000 / 60, 3), round((500 + 0.9 * 1000) / 60, 3)),
    ]
    # Exactly 5 minutes (e10) is in 5-10; e4 (33 min) only with calm-2 selected.
    bins = [("0-5 min", 1), ("5-10 min", 2), ("10-20 min", 1), ("20-30 min", 1), ("30+ min", 0)]
    assert run_panel(database, "Episodes by length") == bins
    assert run_panel(database, "Episodes by length", ["calm-1", "calm-2"]) == [*bins[:4], ("30+ min", 1)]


def test_now_panels(database: Database) -> None:
    assert run_panel(database, "Open episodes now") == [(1,)]
    assert run_panel(database, "Active alerts by kind") == [("device_offline", 2), ("supervision_lapse", 1)]
    assert run_panel(database, "Records overdue") == [(1,)]
    assert run_panel(database, "Records overdue", ["calm-1", "calm-2"]) == [(2,)]
    assert run_panel(database, "Parents' copies overdue") == [(1,)]


def test_records_dashboard(database: Database) -> None:
    values = {"site": [SITE], "room": ["calm-1"]}
    by_title = {q.panel: q for q in all_queries() if q.dashboard == "seclusion-records.json"}
    status = by_title["Incidents by status"]
    assert run_as_grafana(database, interpolate(status.raw_sql, status.variables, values)) == [
        ("open", 1),
        ("awaiting_record", 2),
        ("recorded", 2),
        ("parent_notified", 0),
        ("reviewed", 0),
        ("closed", 1),
    ]
    overdue = by_title["Overdue, one row each"]
    rows = run_as_grafana(database, interpolate(overdue.raw_sql, overdue.variables, values))
    # Ordered by when each was due, then room and start: here both fell due at the same moment.
    assert [(room, started, what) for room, started, what, _ in rows] == [
        ("calm-1", ts(4), "record"),
        ("calm-1", ts(10), "parents' copy"),
    ]
    assert all(due == PAST for *_, due in rows)
