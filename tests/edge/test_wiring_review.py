"""Second review of the device files and the wiring an installer follows: faults found.

Each test fails on the code as reviewed and passes once the fault is fixed; the docstring says what the
installer or the school would see.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from seclusion_edge import ConfigError, load_config
from seclusion_edge.cli import main
from tests.edge.conftest import TEST_CA_PEM
from tests.edge.test_edge_config import GOOD, write


@pytest.mark.parametrize(("written", "meant"), [("027", 27), ("017", 17), ("010", 10)])
def test_a_zero_padded_pin_is_not_silently_read_as_an_octal_number(
    tmp_path: Path, written: str, meant: int
) -> None:
    """An installer who lines up the pin column (`pin: 027` for the lock) gets GPIO23 wired instead:
    YAML 1.1 reads a leading 0 as octal, so `027` is 23 (the door file's LED pin), `017` is 15 (the UART
    console's RX), `010` is 8, while `018` or `09` (not octal) are read as meant. The file loads and
    check-config prints `ok`; on the Pi the lock contact is never read (or the agent fights the LED for
    its pin), and the hub never learns the room is locked. The pin must either be read as written (27)
    or be refused naming `sensors.0.pin`."""
    path = write(tmp_path, GOOD.replace("pin: 17", f"pin: {written}"))
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert f"{path}: sensors.0.pin" in str(exc)
        return
    assert config.sensors[0].pin == meant, f"`pin: {written}` was wired as GPIO{config.sensors[0].pin}"


def test_a_zero_padded_output_pin_is_not_silently_read_as_an_octal_number(tmp_path: Path) -> None:
    """The same for the buzzer: `buzzer: 023` drives GPIO19, not GPIO23, so the room's alarm at the door
    stays silent when the fail-safe sounds it, and nothing says why."""
    path = write(tmp_path, GOOD + "outputs: {buzzer: 023, led: 24}\n")
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert f"{path}: outputs.buzzer" in str(exc)
        return
    assert config.outputs is not None
    assert config.outputs.buzzer == 23, f"`buzzer: 023` was wired as GPIO{config.outputs.buzzer}"


@pytest.mark.parametrize(
    ("pin", "pull", "use"), [(14, "up", "UART"), (15, "down", "UART"), (2, "up", "I2C"), (3, "up", "I2C")]
)
def test_check_config_says_a_word_about_a_pin_the_pi_reserves(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    pin: int,
    pull: str,
    use: str,
) -> None:
    """The README keeps the shipped files off GPIO2/3 (I2C, fixed 1.8 kOhm pull-ups) and GPIO14/15 (the
    UART console), but a device file that wires a contact there loads and check-config prints a bare
    `ok`. On a Pi with the serial console enabled (the default on many images) GPIO14/15 belong to the
    UART: the door contact then reads the console's line, and an installer debugging over serial loses
    the console. check-config should at least warn, naming the key and what the pin is for."""
    path = write(tmp_path, GOOD.replace("pin: 17, pull: up", f"pin: {pin}, pull: {pull}"))
    main(["check-config", "--config", str(path)])
    captured = capsys.readouterr()
    said = captured.out + captured.err + caplog.text
    assert "sensors.0.pin" in said and re.search(use, said), said


def test_a_ca_file_with_a_plain_mqtt_url_is_refused_not_ignored(tmp_path: Path) -> None:
    """`mqtt.ca_file` is only used for `mqtts://`. An installer who adds the school's CA but leaves the
    URL `mqtt://` gets a file that loads and a check-config `ok`, and the agent then sends the broker
    password and every event in plain text on the school network, the CA file silently ignored (or,
    with `mqtt://hub:8883`, never connects to the TLS port, with no word about why). Refuse the
    combination naming `mqtt.ca_file`."""
    (tmp_path / "school-ca.pem").write_text(TEST_CA_PEM)
    path = write(
        tmp_path, GOOD.replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883\n  ca_file: school-ca.pem")
    )
    with pytest.raises(ConfigError, match=re.escape(f"{path}: mqtt.ca_file")):
        load_config(path)


@pytest.mark.parametrize(
    "url",
    [
        "mqtt://127.0.0.1:0",  # read as port 1883 without a word
        "'mqtt://hub local:1883'",  # a host name with a space: every connect fails, forever
    ],
)
def test_a_broker_url_that_cannot_work_is_refused_naming_mqtt_url(tmp_path: Path, url: str) -> None:
    """A port of 0 is taken as the default 1883 (a silent default, not what was written), and a host with
    a space passes load and check-config; the agent then retries a connection that can never succeed,
    the hub reports the device offline, and the only clue is a resolver error in the journal. Both should
    fail at start naming `mqtt.url`."""
    path = write(tmp_path, GOOD.replace("mqtt://127.0.0.1:1883", url))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: mqtt.url")):
        load_config(path)


def test_an_empty_state_dir_is_refused_not_taken_as_the_files_own_directory(tmp_path: Path) -> None:
    """`state_dir: ''` (a value deleted while editing) silently becomes the directory of the device file
    (/etc/seclusion-edge under the shipped unit, read-only there with ProtectSystem=strict): check-config
    says ok, and the agent then runs without its outbox, sending no status and no heartbeat, so the hub
    shows the device offline with no config error anywhere. Refuse it naming `state_dir`."""
    path = write(tmp_path, GOOD.replace("state_dir: state", "state_dir: ''"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: state_dir")):
        load_config(path)
