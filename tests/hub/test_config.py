"""Site files and policy profiles: typed, and every error names the file and the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from seclusion_hub.config import builtin_profiles, load_site, load_sites, profile_parameters
from seclusion_hub.core.policy import Policy
from seclusion_hub.errors import ConfigError

SITE: dict[str, Any] = {
    "site": "demo-school",
    "timezone": "Europe/London",
    "policy": "england-schools-2026",
    "calendar": {
        "school_days": ["mon", "tue", "wed", "thu", "fri"],
        "closures": [{"from": "2026-12-19", "to": "2027-01-04", "name": "Christmas"}],
    },
    "timetable": [{"name": "Period 1", "start": "08:50", "end": "09:50"}],
    "rooms": [
        {
            "id": "calm-1",
            "name": "Calm room 1",
            "supervision": "observer",
            "devices": [
                "calm-1-panel",
                {"id": "calm-1-door", "sensors": ["door", "lock", "occupancy"], "lock_type": "held"},
            ],
            "policy_overrides": {
                "lapse_grace_s": 15,
                "duration_alerts": [{"after_s": 600, "kind": "duration_warning", "tier": "room"}],
            },
        }
    ],
    "recipients": [{"name": "Duty senior leader", "tier": "senior", "notify": ["json://127.0.0.1:9/"]}],
}


def write(tmp_path: Path, body: object, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return path


def test_the_contract_example_site_file_loads(tmp_path: Path) -> None:
    site = load_site(write(tmp_path, SITE))
    assert site.id == "demo-school"
    room = site.room("calm-1")
    assert room is not None and [d.id for d in room.devices] == ["calm-1-panel", "calm-1-door"]
    assert site.policies["calm-1"].lapse_grace_s == 15
    assert len(site.policies["calm-1"].duration_alerts) == 1


def test_the_default_profile_is_read_from_its_file_and_matches_policies_md() -> None:
    params = profile_parameters("england-schools-2026")
    assert Policy.model_validate(params) == Policy()
    assert "england-schools-2026" in builtin_profiles()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"colour": "blue"}, "colour"),
        ({"rooms": [{**SITE["rooms"][0], "camera": True}]}, "rooms.0.camera"),
        ({"rooms": [{**SITE["rooms"][0], "id": "Calm 1"}]}, "rooms.0.id"),
        (
            {"rooms": [{**SITE["rooms"][0], "policy_overrides": {"lapse_grace": 5}}]},
            "rooms.0.policy_overrides.lapse_grace",
        ),
        (
            {"rooms": [{**SITE["rooms"][0], "policy_overrides": {"lapse_grace_s": -5}}]},
            "rooms.0.policy_overrides.lapse_grace_s",
        ),
        ({"timezone": "Europe/Atlantis"}, "timezone"),
        ({"policy": "no-such-profile"}, "policy: no-such-profile: no such profile"),
        ({"policy": "./missing-profile.yaml"}, "policy: "),
        (
            {"recipients": [{"name": "x", "tier": "senior", "notify": ["no-such-service://host/x"]}]},
            "recipients.0.notify.0: not an Apprise URL",
        ),
        (
            {
                "recipients": [
                    {
                        "name": "x",
                        "tier": "senior",
                        "webhooks": [{"url": "https:///no-host", "secret": "s" * 16}],
                    }
                ]
            },
            "recipients.0.webhooks.0: a webhook URL must be http",
        ),
        (
            {"recipients": [{"name": "x", "tier": "senior", "notify": ["mailtos://${NOT_SET_ANYWHERE}@x"]}]},
            "recipients.0.notify.0",
        ),
    ],
)
def test_a_bad_site_file_names_the_file_and_the_key(
    tmp_path: Path, change: dict[str, object], key: str
) -> None:
    path = write(tmp_path, {**SITE, **change})
    with pytest.raises(ConfigError) as err:
        load_site(path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_where_only_a_held_lock_is_allowed_every_lock_must_say_what_it_is(tmp_path: Path) -> None:
    """A maglock nobody described would pass as `held`, the default, and never raise lock_forbidden."""
    site = copy.deepcopy(SITE)
    room = site["rooms"][0]
    room["policy_overrides"]["lock_mode"] = "held_only"
    with pytest.raises(ConfigError) as err:
        load_site(write(tmp_path, site))  # the panel lists no sensors: it might report a lock
    assert "rooms.0.devices.0.lock_type" in str(err.value) and "site.yaml" in str(err.value)
    room["devices"][0] = {"id": "calm-1-panel", "sensors": ["observer", "check"]}
    assert load_site(write(tmp_path, site)).policies["calm-1"].lock_mode == "held_only"
    del room["devices"][1]["lock_type"]
    with pytest.raises(ConfigError, match=r"rooms\.0\.devices\.1\.lock_type"):
        load_site(write(tmp_path, site))
    room["devices"][1]["lock_type"] = "maglock"
    assert load_site(write(tmp_path, site)).room("calm-1").devices[1].lock_type == "maglock"  # type: ignore[union-attr]


def test_a_calendar_without_a_school_day_is_refused_naming_the_key(tmp_path: Path) -> None:
    """A record's deadlines are counted in school days: with none, the first episode's end would fail."""
    site = copy.deepcopy(SITE)
    site["calendar"]["school_days"] = []
    with pytest.raises(ConfigError, match=r"calendar\.school_days") as err:
        load_site(write(tmp_path, site))
    assert "site.yaml" in str(err.value)


def test_occupancy_on_a_device_other_than_the_doors_is_loaded_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A separate inside device is allowed; the technician is told of its known limit (docs/hub.md)."""
    load_site(write(tmp_path, SITE))
    assert "occupancy" not in caplog.text  # the door's device reports it: the layout the hub expects
    site = copy.deepcopy(SITE)
    site["rooms"][0]["devices"] = [
        {"id": "calm-1-door", "sensors": ["door", "lock"], "lock_type": "held"},
        {"id": "calm-1-inside", "sensors": ["occupancy"]},
        {"id": "calm-1-panel", "sensors": ["observer", "check"]},
    ]
    loaded = load_site(write(tmp_path, site))
    assert loaded.room("calm-1") is not None
    assert "site.yaml: room calm-1 reports occupancy from a device other than the door's" in caplog.text


def test_a_device_in_two_rooms_and_a_site_in_two_files_are_refused(tmp_path: Path) -> None:
    twice = {**SITE, "rooms": [SITE["rooms"][0], {**SITE["rooms"][0], "id": "calm-2"}]}
    with pytest.raises(ConfigError, match="device id belongs to two rooms"):
        load_site(write(tmp_path, twice))
    a, b = write(tmp_path, SITE, "a.yaml"), write(tmp_path, SITE, "b.yaml")
    with pytest.raises(ConfigError, match="declared in two files"):
        load_sites([a, b])


def test_a_site_may_use_its_own_profile_file_based_on_a_shipped_one(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"name": "our-school", "base": "england-schools-2026", "parameters": {"lapse_grace_s": 10}},
        "our-profile.yaml",
    )
    site = load_site(
        write(
            tmp_path,
            {**SITE, "policy": "our-profile.yaml", "rooms": [{**SITE["rooms"][0], "policy_overrides": {}}]},
        )
    )
    assert site.policies["calm-1"].lapse_grace_s == 10
    assert site.policies["calm-1"].reclose_grace_s == 30
    write(tmp_path, {"name": "bad", "parameters": {"lapse_grace_s": "soon"}}, "bad.yaml")
    with pytest.raises(ConfigError) as err:
        load_site(write(tmp_path, {**SITE, "policy": "bad.yaml"}))
    assert "bad.yaml" in str(err.value) and "parameters.lapse_grace_s" in str(err.value)


def test_a_webhook_secret_too_short_once_expanded_is_refused_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "short")
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: demo-school\n"
        "rooms: [{id: calm-1, name: Calm room 1, devices: [calm-1-door]}]\n"
        "recipients:\n"
        "  - name: Duty senior\n"
        "    tier: senior\n"
        "    webhooks: [{url: 'https://hooks.example.org/x', secret: '${HOOK_SECRET}'}]\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_site(site)
    assert raised.value.key == "recipients.0.webhooks.0.secret"
    assert str(site) in str(raised.value)
    monkeypatch.setenv("HOOK_SECRET", "long-enough-secret-value")
    assert load_site(site).spec.recipients[0].webhooks[0].secret == "${HOOK_SECRET}"


def test_check_config_reports_each_site_file_or_what_is_wrong_with_exit_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from seclusion_hub import cli

    monkeypatch.chdir(tmp_path)
    # No site file at all: said, not a silent success
    monkeypatch.delenv("SECLUSION_SITE_FILES", raising=False)
    assert cli.main(["check-config"]) == 2
    assert "SECLUSION_SITE_FILES: no site file given" in capsys.readouterr().err
    # A good one: named, with its rooms
    good = write(tmp_path, SITE)
    monkeypatch.setenv("SECLUSION_SITE_FILES", str(good))
    assert cli.main(["check-config"]) == 0
    assert f"{good}: site demo-school, rooms calm-1: ok" in capsys.readouterr().out
    # A notify URL the hub could not use: the file and the entry, never the URL (it may hold a password)
    body = copy.deepcopy(SITE)
    body["recipients"] = [{"name": "x", "tier": "senior", "notify": ["no-such-service://user:pw@host/x"]}]
    bad = write(tmp_path, body, "bad.yaml")
    monkeypatch.setenv("SECLUSION_SITE_FILES", str(bad))
    assert cli.main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: recipients.0.notify.0: not an Apprise URL" in err and "pw@" not in err
    # A site with nobody to tell: said plainly, still exit status 0 (a demo site may have none)
    body = copy.deepcopy(SITE)
    del body["recipients"]
    alone = write(tmp_path, body, "alone.yaml")
    monkeypatch.setenv("SECLUSION_SITE_FILES", str(alone))
    assert cli.main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert f"{alone}: site demo-school, rooms calm-1: ok" in out
    assert (
        f"{alone}: warning: site demo-school has no recipients: every alert reaches only the live board "
        "and the room's indicator" in out
    )
    # Tiers with nobody on them are named (escalation skips them)
    monkeypatch.setenv("SECLUSION_SITE_FILES", str(good))
    assert cli.main(["check-config"]) == 0
    assert (
        f"{good}: note: site demo-school has nobody on the tiers room, dsl, head" in capsys.readouterr().out
    )


def test_tokens_are_made_listed_and_revoked_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from seclusion_hub import cli
    from seclusion_hub.auth import principal_for
    from seclusion_hub.store import Store

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SECLUSION_DATABASE_URL", url)
    # Given a phone's token for a member of staff
    assert cli.main(["token", "create", "--name", "Phone 3", "--role", "staff", "--site", "demo-school"]) == 0
    token = capsys.readouterr().out.strip()
    # The list names it, live, and never shows the token
    assert cli.main(["token", "list"]) == 0
    listed = capsys.readouterr().out
    assert "\tPhone 3\tstaff\tdemo-school\tmade " in listed and listed.rstrip().endswith("\tlive")
    assert token not in listed
    # When the phone is lost and its token revoked by name
    assert cli.main(["token", "revoke", "--name", "Phone 3"]) == 0
    assert "revoked token 1 (Phone 3, staff)" in capsys.readouterr().out
    # Then the token opens nothing any more, the list says so, and revoking again says nothing matched
    store = Store.open(url)
    try:
        assert principal_for(store, token) is None
    finally:
        store.close()
    assert cli.main(["token", "list"]) == 0
    assert "\trevoked " in capsys.readouterr().out
    assert cli.main(["token", "revoke", "--id", "1"]) == 2
    assert "no live token matches" in capsys.readouterr().err


def test_the_public_url_reaches_the_alerts_links_and_the_pages(tmp_path: Path) -> None:
    """SECLUSION_PUBLIC_URL was read and never passed on: no notice ever carried its link
    (notifications.md), not even the demo's."""
    from seclusion_hub.config import HubSettings
    from seclusion_hub.runtime import Hub
    from tests.support.hub import two_device_room, write_site

    site = write_site(tmp_path / "site.yaml", [two_device_room("calm-1")])
    settings = HubSettings(
        _env_file=None,
        mqtt_url="mqtt://127.0.0.1:9",
        database_url=f"sqlite:///{tmp_path / 'hub.db'}",
        site_files=str(site),
        public_url="https://hub.school.example/",
        mqtt_process=False,
    )
    hub = Hub.build(settings)
    try:
        assert hub.service.delivery.public_url == "https://hub.school.example"
        assert hub.app.state.public_url == "https://hub.school.example"
    finally:
        hub.store.close()


# -- the hub's settings (contract section 5): every error names the variable and where it was set


def test_a_setting_that_cannot_be_used_is_named_with_where_it_was_set(
    clean_settings: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from seclusion_hub.cli import main
    from seclusion_hub.config import load_settings

    monkeypatch.setenv("SECLUSION_HTTP_PORT", "abc")
    with pytest.raises(ConfigError) as from_env:
        load_settings()
    assert (from_env.value.source, from_env.value.key) == ("environment", "SECLUSION_HTTP_PORT")
    assert "errors.pydantic.dev" not in str(from_env.value)
    # The same from the .env file: its path is named
    monkeypatch.delenv("SECLUSION_HTTP_PORT")
    (clean_settings / ".env").write_text("SECLUSION_HTTP_PORT=99999\n")
    with pytest.raises(ConfigError) as from_file:
        load_settings()
    assert (from_file.value.source, from_file.value.key) == (
        str(clean_settings / ".env"),
        "SECLUSION_HTTP_PORT",
    )
    assert "less than or equal to 65535" in from_file.value.problem
    # The command says so, and exits 2 (no traceback)
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error: ") and "SECLUSION_HTTP_PORT" in err and ".env" in err


def test_a_misspelt_setting_is_refused_with_the_one_it_was_meant_to_be(
    clean_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo was ignored: the hub then kept its records in the default SQLite file while the school
    backed up its PostgreSQL database."""
    from seclusion_hub.config import load_settings

    (clean_settings / ".env").write_text("SECLUSION_DATABSE_URL=postgresql+psycopg://u:p@db/seclusion\n")
    with pytest.raises(ConfigError) as typo:
        load_settings()
    assert typo.value.key == "SECLUSION_DATABSE_URL"
    assert "did you mean SECLUSION_DATABASE_URL?" in typo.value.problem
    # Names other parts read (Compose's, the edge agent's) are not the hub's business
    (clean_settings / ".env").write_text("SECLUSION_SITE_FILE_ON_HOST=./deploy/site.yaml\n")
    monkeypatch.setenv("SECLUSION_MQTT_PASSWORD", "secret")
    monkeypatch.setenv("SECLUSION_INGEST_LINGER_MS", "2")
    assert load_settings().ingest_linger_ms == 2


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgres://u:p@127.0.0.1:1/db", "for PostgreSQL write postgresql+psycopg://"),
        (
            "sqlite:////nonexistent-folder/x.db",
            "the folder /nonexistent-folder of the SQLite file does not exist",
        ),
        ("not a url", "not a database URL"),
    ],
)
def test_a_database_url_that_cannot_work_is_refused_before_anything_connects(
    clean_settings: Path, monkeypatch: pytest.MonkeyPatch, url: str, says: str
) -> None:
    from seclusion_hub.config import load_settings

    monkeypatch.setenv("SECLUSION_DATABASE_URL", url)
    with pytest.raises(ConfigError) as bad:
        load_settings()
    assert bad.value.key == "SECLUSION_DATABASE_URL" and says in bad.value.problem


def test_every_setting_of_the_hub_is_in_the_operations_guide() -> None:
    import re

    from seclusion_hub.config import HubSettings

    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    table = text[text.index("## Settings") : text.index("Only for `docker-compose.yml`")]
    listed = set(re.findall(r"^\| `(SECLUSION_[A-Z_]+)`", table, re.M))
    assert {f"SECLUSION_{name.upper()}" for name in HubSettings.model_fields} == listed
