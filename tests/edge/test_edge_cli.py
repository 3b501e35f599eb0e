"""The `seclusion-edge` command: check-config and reset-epoch (run is covered by the MQTT tests)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from seclusion_edge.cli import main
from seclusion_edge.outbox import Outbox

DEVICE = """\
site: demo-school
room: calm-1
device: calm-1-door
mqtt:
  url: mqtt://calm-1-door:${EDGE_TEST_PASSWORD}@127.0.0.1:1883
state_dir: state
sensors:
  - {kind: door, pin: 17, pull: up, active: low, active_value: closed}
  - {kind: occupancy, pin: 22, pull: down, active: high, active_value: occupied}
"""


@pytest.fixture
def device_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGE_TEST_PASSWORD", "hunter2")
    path = tmp_path / "calm-1-door.yaml"
    path.write_text(DEVICE)
    return path


def test_check_config_prints_a_summary_without_the_password(
    device_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(device_file)]) == 0
    out = capsys.readouterr().out
    assert f"{device_file}: ok" in out
    assert "mqtt://calm-1-door:***@127.0.0.1:1883" in out
    assert "door      pin 17" in out
    assert "hunter2" not in out


def test_check_config_reports_a_bad_key_with_the_file_and_exit_status_2(
    device_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device_file.write_text(DEVICE.replace("pull: down", "pull: sideways"))
    assert main(["check-config", "--config", str(device_file)]) == 2
    assert f"{device_file}: sensors.1.pull: Input should be" in capsys.readouterr().err


def test_check_config_names_a_file_that_is_not_utf8_with_exit_status_2(
    device_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device_file.write_bytes(("# posée\n" + DEVICE).encode("latin-1"))
    assert main(["check-config", "--config", str(device_file)]) == 2
    assert f"{device_file}: line 1: not UTF-8 text" in capsys.readouterr().err


def test_check_config_tries_the_wiring_on_mock_pins(
    device_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GPIO3 (I2C SCL) has a fixed pull-up on a Raspberry Pi.
    device_file.write_text(DEVICE.replace("pin: 22, pull: down", "pin: 3, pull: down"))
    assert main(["check-config", "--config", str(device_file)]) == 2
    assert f"{device_file}: sensors.1.pin: cannot use pin 3" in capsys.readouterr().err


def test_reset_epoch_moves_the_outbox_to_the_next_epoch(
    device_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reset-epoch", "--config", str(device_file)]) == 0
    assert main(["reset-epoch", "--config", str(device_file)]) == 0
    assert "epoch 2" in capsys.readouterr().out
    outbox = Outbox.open(device_file.parent / "state", "calm-1-door")
    assert (outbox.epoch, outbox.last_seq) == (2, 0)
    outbox.close()


def test_an_outbox_of_another_device_fails_with_status_1(
    device_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Outbox.open(device_file.parent / "state", "calm-1-panel").close()
    assert main(["reset-epoch", "--config", str(device_file)]) == 1
    assert "belongs to device 'calm-1-panel'" in capsys.readouterr().err


def test_check_config_tries_the_outputs_too(device_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    device_file.write_text(DEVICE + "outputs: {buzzer: 18, led: 23, buzzer_type: tonal}\n")
    assert main(["check-config", "--config", str(device_file)]) == 0
    assert "outputs   buzzer pin 18 (tonal), LED pin 23" in capsys.readouterr().out

    device_file.write_text(DEVICE + "outputs: {buzzer: 18, led: BOARD12}\n")  # BOARD12 is GPIO18
    assert main(["check-config", "--config", str(device_file)]) == 2
    assert f"{device_file}: outputs.led: cannot use pin BOARD12" in capsys.readouterr().err


def test_a_ca_file_that_cannot_be_read_fails_check_config_and_run_with_status_2(
    device_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check-config (run by the unit before each start) passed a missing ca_file, and `run` then died
    with a bare FileNotFoundError traceback at every start."""
    device_file.write_text(DEVICE.replace("@127.0.0.1:1883", "@127.0.0.1:8883\n  ca_file: school-ca.pem"))
    device_file.write_text(device_file.read_text().replace("mqtt://", "mqtts://"))
    message = f"{device_file}: mqtt.ca_file: cannot read {device_file.parent.resolve() / 'school-ca.pem'}"
    assert main(["check-config", "--config", str(device_file)]) == 2
    assert message in capsys.readouterr().err

    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own handlers
    assert main(["run", "--config", str(device_file), "--mock-pins"]) == 2
    assert message in capsys.readouterr().err
