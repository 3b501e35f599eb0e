"""Device files: the examples load, and every mistake names the file and the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from seclusion_edge import ConfigError, load_config
from tests.edge.conftest import TEST_CA_PEM

FIRMWARE_CONFIG = Path(__file__).resolve().parents[2] / "firmware-config"

GOOD = """\
site: demo-school
room: calm-1
device: calm-1-door
mqtt:
  url: mqtt://127.0.0.1:1883
state_dir: state
sensors:
  - {kind: door, pin: 17, pull: up, active: low, active_value: closed}
"""


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("name", ["calm-1-door.yaml", "calm-1-panel.yaml"])
def test_the_example_device_files_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECLUSION_MQTT_PASSWORD", "s3cret@:x")
    config = load_config(FIRMWARE_CONFIG / name)
    assert (config.site, config.room) == ("demo-school", "calm-1")
    assert config.device == name.removesuffix(".yaml")
    assert config.mqtt.protocol == "5"
    assert config.mqtt.broker.password == "s3cret@:x"
    assert config.outputs is not None
    assert config.state_dir.is_absolute()


def test_the_door_file_wires_door_lock_and_occupancy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECLUSION_MQTT_PASSWORD", "x")
    config = load_config(FIRMWARE_CONFIG / "calm-1-door.yaml")
    assert [(s.kind, s.reading(True), s.reading(False)) for s in config.sensors] == [
        ("door", "closed", "open"),
        ("lock", "engaged", "released"),
        ("occupancy", "occupied", "vacant"),
    ]


def test_defaults_and_a_state_dir_relative_to_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.state_dir == tmp_path.resolve() / "state"
    assert (config.settle_ms, config.heartbeat_s) == (100, 10)
    assert (config.mqtt.root, config.mqtt.protocol, config.mqtt.session_expiry_s) == (
        "seclusion/v1",
        "5",
        86400,
    )
    assert config.client_id == "seclusion-edge-demo-school-calm-1-door"
    assert config.mqtt.broker.redacted() == "mqtt://127.0.0.1:1883"


def test_protocol_3_1_1_and_mqtts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_PASS", "p@ss:word")
    text = GOOD.replace(
        "  url: mqtt://127.0.0.1:1883",
        "  url: mqtts://calm-1-door:${EDGE_PASS}@hub.example.org\n  protocol: 3.1.1",
    )
    broker = load_config(write(tmp_path, text)).mqtt
    assert broker.protocol == "3.1.1"
    assert broker.broker.tls and broker.broker.port == 8883
    assert (broker.broker.username, broker.broker.password) == ("calm-1-door", "p@ss:word")
    assert broker.broker.redacted() == "mqtts://calm-1-door:***@hub.example.org:8883"


def test_a_ca_file_is_taken_beside_the_file_and_must_hold_a_certificate(tmp_path: Path) -> None:
    """A ca_file that cannot be used passed check-config (which the unit runs before each start), and
    `run` then died at every start with a bare FileNotFoundError: the device never ran its fail-safe,
    and the log named neither the file nor the key."""
    tls = GOOD.replace("mqtt://127.0.0.1:1883", "mqtts://127.0.0.1:8883\n  ca_file: school-ca.pem")
    path = write(tmp_path, tls)
    with pytest.raises(ConfigError) as missing:
        load_config(path)
    ca = tmp_path.resolve() / "school-ca.pem"
    assert str(missing.value) == f"{path}: mqtt.ca_file: cannot read {ca}: No such file or directory"

    ca.mkdir()
    with pytest.raises(ConfigError, match=r"x\.yaml: mqtt\.ca_file: cannot read .*school-ca\.pem"):
        load_config(path)
    ca.rmdir()

    ca.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: mqtt\.ca_file: .*school-ca\.pem holds no CA cert"):
        load_config(path)

    ca.write_text(TEST_CA_PEM)
    assert load_config(path).mqtt.ca_file == ca


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("pull: up", "pull: sideways"), "sensors.0.pull: Input should be 'up', 'down' or 'none'"),
        (("active: low", "active: lo"), "sensors.0.active: Input should be 'high' or 'low'"),
        (
            ("active_value: closed", "active_value: shut"),
            "sensors.0.active_value: 'shut' is not a door reading",
        ),
        (("active_value: closed", "colour: red"), "sensors.0.colour: unknown key"),
        (("kind: door", "kind: window"), "sensors.0.kind: Input should be 'door'"),
        (("pin: 17", "pin: 40"), "sensors.0.pin: BCM pin 40 does not exist"),
        (("pin: 17", "pin: yes"), "sensors.0.pin: a pin is a BCM number"),
        (("device: calm-1-door", "device: Calm 1"), "device: String should match pattern"),
        (("state_dir: state", "state_dir: state\nsettle_ms: -5"), "settle_ms: Input should be greater than"),
        (("state_dir: state", "state_dir: state\nfailsafe: true"), "failsafe: unknown key"),
        (("state_dir: state\n", ""), "state_dir: required key is missing"),
        (("mqtt://127.0.0.1:1883", "http://127.0.0.1"), "mqtt.url: the broker URL is mqtt://"),
        (("mqtt://127.0.0.1:1883", "mqtt://h:${NO_SUCH_VARIABLE_HERE}@h"), "mqtt.url: environment variable"),
        (("  url:", "  protocol: 4\n  url:"), "mqtt.protocol: Input should be '5' or '3.1.1'"),
    ],
)
def test_a_mistake_names_the_file_and_the_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_each_kind_has_at_most_one_sensor_and_each_pin_one_use(tmp_path: Path) -> None:
    twice = GOOD + "  - {kind: door, pin: 27, pull: up, active: low, active_value: closed}\n"
    with pytest.raises(ConfigError, match=r"x\.yaml: sensors\.1\.kind: door is already wired as sensors\.0"):
        load_config(write(tmp_path, twice))
    shared = GOOD + "  - {kind: lock, pin: GPIO17, pull: up, active: low, active_value: engaged}\n"
    with pytest.raises(ConfigError, match=r"sensors\.1\.pin: pin GPIO17 is already used by sensors\.0\.pin"):
        load_config(write(tmp_path, shared))
    buzzer = GOOD + "outputs: {buzzer: 17}\n"
    with pytest.raises(ConfigError, match=r"outputs\.buzzer: pin 17 is already used"):
        load_config(write(tmp_path, buzzer))


def test_check_and_fault_sensors(tmp_path: Path) -> None:
    text = GOOD + (
        "  - {kind: check, pin: 6, pull: up, active: low, staff: badge-7}\n"
        "  - {kind: fault, pin: 16, pull: up, active: high, active_value: door-sensor-disconnected}\n"
    )
    config = load_config(write(tmp_path, text))
    check, fault = config.sensor("check"), config.sensor("fault")
    assert (check.reading(True), check.reading(False), check.staff) == ("ok", None, "badge-7")
    assert (fault.reading(True), fault.reading(False)) == ("door-sensor-disconnected", "ok")

    staffed_door = GOOD.replace("active_value: closed}", "active_value: closed, staff: x}")
    with pytest.raises(ConfigError, match=r"sensors\.0\.staff: only a check button"):
        load_config(write(tmp_path, staffed_door))
    fault_ok = GOOD + "  - {kind: fault, pin: 16, pull: up, active: high, active_value: ok}\n"
    with pytest.raises(ConfigError, match=r"sensors\.1\.active_value: a fault input reports a code"):
        load_config(write(tmp_path, fault_ok))


def test_an_unreadable_or_malformed_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line 2: not valid YAML"):
        load_config(write(tmp_path, "site: a\n  room: [\n", "bad.yaml"))
    # A key given twice: plain YAML keeps the later one without a word (a second `mqtt:` block).
    with pytest.raises(ConfigError, match=r"twice\.yaml: device: given twice \(lines 3 and 4\)"):
        load_config(write(tmp_path, "site: a\nroom: b\ndevice: c\ndevice: d\n", "twice.yaml"))
    with pytest.raises(ConfigError, match=r"list\.yaml: the file must be a mapping"):
        load_config(write(tmp_path, "- a\n", "list.yaml"))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(("# porte posée en 2026\n" + GOOD).encode("latin-1"))  # an editor's other encoding
    with pytest.raises(ConfigError, match=r"latin\.yaml: line 1: not UTF-8 text"):
        load_config(latin)


def test_outputs_take_a_buzzer_type(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD + "outputs: {buzzer: 18, led: 23, buzzer_type: tonal}\n"))
    assert config.outputs is not None
    assert (config.outputs.buzzer, config.outputs.led, config.outputs.buzzer_type) == (18, 23, "tonal")
    led_only = load_config(write(tmp_path, GOOD + "outputs: {led: 23}\n")).outputs
    assert led_only is not None and (led_only.buzzer, led_only.buzzer_type) == (None, "active")
    with pytest.raises(
        ConfigError, match=r"x\.yaml: outputs\.buzzer_type: Input should be 'active' or 'tonal'"
    ):
        load_config(write(tmp_path, GOOD + "outputs: {buzzer: 18, buzzer_type: loud}\n"))
