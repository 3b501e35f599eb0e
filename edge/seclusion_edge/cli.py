"""`seclusion-edge`: run an edge agent, check a device file, or start a new epoch.

    seclusion-edge run --config firmware-config/calm-1-door.yaml [--mock-pins] [--new-epoch]
    seclusion-edge check-config --config firmware-config/calm-1-door.yaml
    seclusion-edge reset-epoch --config firmware-config/calm-1-door.yaml

Exit status: 0 success, 2 a bad device file or wiring (an `mqtt.ca_file` that cannot be read included),
1 anything else (the outbox cannot be opened, the broker link cannot be set up).
`run` stops cleanly on SIGTERM or SIGINT: the retained status becomes `{"v":1,"online":false}`, then
the agent disconnects (a crash leaves the same status through the broker's Last Will).
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from seclusion_edge.agent import EdgeAgent, agent_version, reset_epoch
from seclusion_edge.config import EdgeConfig, load_config
from seclusion_edge.errors import ConfigError, EdgeError
from seclusion_edge.outputs import AlarmOutputs
from seclusion_edge.sensors import SensorInput

log = logging.getLogger("seclusion_edge")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seclusion-edge", description="Seclusion-room edge agent.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {agent_version()}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the agent until SIGTERM or SIGINT")
    run.add_argument("--config", required=True, type=Path, help="the device file (firmware-config/*.yaml)")
    run.add_argument(
        "--mock-pins", action="store_true", help="use gpiozero's MockFactory instead of the Pi's GPIO"
    )
    run.add_argument(
        "--new-epoch", action="store_true", help="start a new epoch first (after replacing the SD card)"
    )

    check = commands.add_parser("check-config", help="validate a device file and its wiring, then exit")
    check.add_argument("--config", required=True, type=Path)

    reset = commands.add_parser("reset-epoch", help="start a new epoch in the device's outbox, then exit")
    reset.add_argument("--config", required=True, type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `seclusion-edge` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        if args.command == "check-config":
            return _check_config(config)
        if args.command == "reset-epoch":
            epoch = reset_epoch(config)
            sys.stdout.write(f"{config.device}: events are now numbered in epoch {epoch}\n")
            return EXIT_OK
        return _run(config, mock_pins=args.mock_pins, new_epoch=args.new_epoch)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_BAD_CONFIG
    except EdgeError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_FAILED


def _check_config(config: EdgeConfig) -> int:
    """Validate the wiring on mock pins (pin names, fixed pulls, clashes) and print a summary."""
    factory = _mock_factory()
    sensors: list[SensorInput] = []
    try:
        for index, sensor in enumerate(config.sensors):
            sensors.append(SensorInput(sensor, factory, lambda _: None, key=config.where(f"sensors.{index}")))
        AlarmOutputs(config.outputs, factory, key=config.where("outputs")).close()
    finally:
        for built in sensors:
            built.close()
    lines = [
        f"{config.source}: ok",
        f"  device {config.site}/{config.room}/{config.device}, broker {config.mqtt.broker.redacted()} "
        f"(MQTT {config.mqtt.protocol}), root {config.mqtt.root}",
        f"  state_dir {config.state_dir}, settle {config.settle_ms} ms, heartbeat {config.heartbeat_s:g} s",
    ]
    lines.extend(
        f"  {sensor.kind:<9} pin {sensor.pin!s:<6} pull {sensor.pull:<4} active {sensor.active:<4} "
        f"-> {sensor.active_value}"
        for sensor in config.sensors
    )
    outputs = config.outputs
    if outputs is not None and (outputs.buzzer is not None or outputs.led is not None):
        buzzer = "-" if outputs.buzzer is None else f"{outputs.buzzer} ({outputs.buzzer_type})"
        led = "-" if outputs.led is None else str(outputs.led)
        lines.append(f"  outputs   buzzer pin {buzzer}, LED pin {led}")
    else:
        lines.append("  outputs   none: this device sounds no local alarm")
    wired: list[tuple[str, object]] = [(f"sensors.{i}.pin", s.pin) for i, s in enumerate(config.sensors)]
    if outputs is not None:
        wired += [("outputs.buzzer", outputs.buzzer), ("outputs.led", outputs.led)]
    for key, pin in wired:
        bcm = _bcm(pin)
        use = RESERVED_PINS.get(bcm) if bcm is not None else None
        if use is not None:
            lines.append(f"  note      {key}: GPIO{bcm} is {use}: wire it elsewhere if you can")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


# Pins a Pi gives to something else on many images: a contact wired there works against it.
RESERVED_PINS = {
    0: "the HAT ID EEPROM's I2C data (ID_SD)",
    1: "the HAT ID EEPROM's I2C clock (ID_SC)",
    2: "I2C SDA, with a fixed 1.8 kOhm pull-up",
    3: "I2C SCL, with a fixed 1.8 kOhm pull-up",
    14: "the UART console's TX (enabled on many Pi images)",
    15: "the UART console's RX (enabled on many Pi images)",
}


def _bcm(pin: object) -> int | None:
    """A pin's BCM number when the file gives one (`17`, `GPIO17`); None for a header name (`BOARD11`)."""
    if isinstance(pin, int) and not isinstance(pin, bool):
        return pin
    match = re.fullmatch(r"(?:GPIO|BCM)(\d+)", str(pin).strip(), re.IGNORECASE)
    return int(match.group(1)) if match else None


def _run(config: EdgeConfig, *, mock_pins: bool, new_epoch: bool) -> int:
    pin_factory: Any | None = None
    if mock_pins:
        pin_factory = _mock_factory()
    if new_epoch:
        reset_epoch(config)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    agent = EdgeAgent(config, pin_factory=pin_factory)
    agent.start()
    try:
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(1.0):
            pass
    finally:
        agent.stop()
    return EXIT_OK


def _mock_factory() -> Any:
    """gpiozero's MockFactory with PWM-capable pins (a tonal buzzer needs one)."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    return MockFactory(pin_class=MockPWMPin)


if __name__ == "__main__":
    raise SystemExit(main())
