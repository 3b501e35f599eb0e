"""Site files, profiles, settings and commands as the school's IT technician meets them: nothing that
cannot be used is accepted silently, and every refusal names the file (or setting) and the key (found by
an operations review; each failed before its fix)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seclusion_hub.config import load_settings, load_site
from seclusion_hub.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SITE = """\
site: oak-school
rooms:
  - id: calm-1
    name: Calm room 1
    devices: [calm-1-door]
"""


def _write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_second_rooms_key_does_not_silently_drop_the_first_rooms(tmp_path: Path) -> None:
    """A technician appends a room block with its own `rooms:` key: plain YAML keeps the last, calm-1
    would be dropped and not watched at all. Refused, naming the key and both lines."""
    path = _write(tmp_path, SITE + "rooms:\n  - {id: calm-2, name: Calm room 2, devices: [calm-2-door]}\n")
    with pytest.raises(ConfigError) as bad:
        load_site(path)
    assert bad.value.source == str(path) and bad.value.key == "rooms"
    assert bad.value.problem == "given twice (lines 2 and 6)"


def test_a_policy_override_given_twice_is_not_silently_the_last(tmp_path: Path) -> None:
    """`lapse_grace_s` 15, then again 300 further down: it would run with a 5 minute lapse grace."""
    path = _write(
        tmp_path,
        SITE + "    policy_overrides:\n      lapse_grace_s: 15\n      supervision: checkin\n"
        "      lapse_grace_s: 300\n",
    )
    try:
        site = load_site(path)
    except ConfigError as exc:
        assert exc.source == str(path) and "lapse_grace_s" in exc.key
        return
    pytest.fail(f"accepted, lapse_grace_s = {site.policies['calm-1'].lapse_grace_s}")


def test_a_timetable_period_that_starts_when_it_ends_is_refused(tmp_path: Path) -> None:
    """A period ending before it starts runs past midnight (analytics.period_of, on purpose); one whose
    end is its start would hold no minute at all: the leaders' review would always count 0 in it."""
    path = _write(tmp_path, "timetable:\n  - {name: Period 1, start: '09:50', end: '09:50'}\n" + SITE)
    with pytest.raises(ConfigError) as bad:
        load_site(path)
    assert bad.value.source == str(path) and bad.value.key.startswith("timetable.0")


def test_a_misspelt_base_in_a_profile_file_names_the_profile_file_and_base(tmp_path: Path) -> None:
    """Named as the profile file's `base`, not as `policy: us-dc-school: no such profile`."""
    profile = _write(
        tmp_path, "name: oak\nbase: us-dc-school\nparameters: {lapse_grace_s: 10}\n", "profiles/oak.yaml"
    )
    path = _write(tmp_path, "policy: profiles/oak.yaml\n" + SITE)
    with pytest.raises(ConfigError) as bad:
        load_site(path)
    assert str(profile) in str(bad.value) and "base" in str(bad.value), str(bad.value)


def test_a_missing_base_file_names_the_profile_that_asks_for_it(tmp_path: Path) -> None:
    profile = _write(
        tmp_path, "name: oak\nbase: other.yaml\nparameters: {lapse_grace_s: 10}\n", "profiles/oak.yaml"
    )
    path = _write(tmp_path, "policy: profiles/oak.yaml\n" + SITE)
    with pytest.raises(ConfigError) as bad:
        load_site(path)
    assert str(profile) in str(bad.value) and "base" in str(bad.value), str(bad.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # the hub then loops "MQTT disconnected: Unspecified error (reconnecting)" for ever
        ("SECLUSION_MQTT_ROOT", "seclusion/+/v1"),
        ("SECLUSION_MQTT_ROOT", "seclusion/v1/"),
        # no scheme: notices link to "seclusion.school.example/#alert-..", the cookie is not Secure and
        # the board's own requests behind the proxy fail the same-origin check
        ("SECLUSION_PUBLIC_URL", "seclusion.school.example"),
        # no persistent session at the broker (a new random id at every connect)
        ("SECLUSION_MQTT_CLIENT_ID", ""),
    ],
)
def test_a_setting_the_hub_cannot_use_is_refused_naming_it(
    clean_settings: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as bad:
        load_settings()
    assert bad.value.key == name


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SECLUSION_")}
    base["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("hub", "contract", "edge", "."))
    return subprocess.run(
        [sys.executable, "-m", "seclusion_hub.cli", *args],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_config_stops_on_an_unusable_mqtt_url(tmp_path: Path) -> None:
    """docs/operations.md: "A setting whose value cannot be used stops the hub (and `seclusion-hub
    check-config`) with its name"."""
    _write(tmp_path, SITE)
    done = _cli(
        tmp_path, "check-config", SECLUSION_SITE_FILES="site.yaml", SECLUSION_MQTT_URL="tcp://broker:1883"
    )
    assert done.returncode == 2, done.stdout
    assert "SECLUSION_MQTT_URL" in done.stderr


def test_a_database_that_cannot_be_reached_is_an_error_naming_the_setting_not_a_traceback(
    tmp_path: Path,
) -> None:
    """A wrong host, port or password in SECLUSION_DATABASE_URL: an error naming it, not a traceback."""
    done = _cli(
        tmp_path,
        "migrate",
        SECLUSION_DATABASE_URL="postgresql+psycopg://seclusion:wrong@127.0.0.1:1/seclusion",
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr, done.stderr[-600:]
    assert "SECLUSION_DATABASE_URL" in done.stderr


def test_a_room_supervision_contradicting_its_policy_override_is_refused(tmp_path: Path) -> None:
    """`supervision: observer` on the room and `policy_overrides: {supervision: both}`: one would win
    silently (the check-in half the override asked for dropped). Refused, naming the room's key."""
    text = SITE.replace("    devices:", "    supervision: observer\n    devices:")
    path = _write(tmp_path, text + "    policy_overrides: {supervision: both}\n")
    try:
        site = load_site(path)
    except ConfigError as exc:
        assert exc.source == str(path) and "supervision" in exc.key
        return
    pytest.fail(f"accepted, supervision = {site.policies['calm-1'].supervision}")


def test_a_token_for_a_site_no_site_file_declares_is_refused(tmp_path: Path) -> None:
    """A misspelt `--site` gave a token that sees nothing."""
    _write(tmp_path, SITE)
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    env = {"SECLUSION_SITE_FILES": "site.yaml", "SECLUSION_DATABASE_URL": db}
    done = _cli(tmp_path, "token", "create", "--name", "s", "--role", "staff", "--site", "oak-shcool", **env)
    assert done.returncode == 2 and "--site oak-shcool" in done.stderr and done.stdout == ""
    done = _cli(tmp_path, "token", "create", "--name", "s", "--role", "staff", "--site", "oak-school", **env)
    assert done.returncode == 0 and len(done.stdout.strip()) > 20, done.stderr
