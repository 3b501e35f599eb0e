"""Sensor inputs on gpiozero, built with an injected pin factory.

Each contact is a plain `DigitalInputDevice`: the pull resistor is set with `pull_up` (gpiozero refuses
`pull_up` and `active_state` together, and then fixes the active state itself), a floating pin gets an
explicit `active_state`, and the contact's logical state is worked out here from the pin's level and
the configured `active: high|low`, the same way whatever the pull. gpiozero's `bounce_time` is not used
(MockPin ignores it, and the kernel's debounce would hide the first edge we timestamp): debouncing is
`seclusion_edge.debounce`. A PIR's or radar's output pin is read the same way rather than through
`MotionSensor`, whose own sampling thread would be a second, untestable debounce.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gpiozero import DigitalInputDevice
from gpiozero.exc import BadPinFactory, GPIOZeroError

from seclusion_contract import Kind
from seclusion_edge.config import SensorConfig
from seclusion_edge.errors import WiringError

log = logging.getLogger(__name__)

_PULL_UP: dict[str, bool | None] = {"up": True, "down": False, "none": None}


class SensorInput:
    """One configured contact: reports whether it is active, and calls `on_edge` when its level changes.

    `on_edge` runs on whichever thread gpiozero delivers pin events on (synchronously inside
    `MockPin.drive_low()/drive_high()` in tests), so it must be quick and thread-safe.
    """

    def __init__(
        self,
        config: SensorConfig,
        pin_factory: Any | None,
        on_edge: Callable[[SensorInput], None],
        key: str = "sensors",
    ) -> None:
        self.config = config
        self._on_edge = on_edge
        pull_up = _PULL_UP[config.pull]
        try:
            if pull_up is None:
                device = DigitalInputDevice(
                    config.pin, pull_up=None, active_state=config.active_high, pin_factory=pin_factory
                )
            else:
                device = DigitalInputDevice(config.pin, pull_up=pull_up, pin_factory=pin_factory)
        except BadPinFactory as exc:
            raise WiringError(
                f"{key}.pin: no GPIO library works here ({exc}); on a machine that is not a Raspberry Pi, "
                "use --mock-pins"
            ) from None
        except GPIOZeroError as exc:
            raise WiringError(
                f"{key}.pin: cannot use pin {config.pin} for the {config.kind} sensor: {exc}"
            ) from None
        self._device: Any = device
        device.when_activated = self._changed
        device.when_deactivated = self._changed

    @property
    def kind(self) -> Kind:
        """The sensor's kind (door, lock, occupancy, observer, check, fault)."""
        return self.config.kind

    @property
    def pin(self) -> Any:
        """The gpiozero pin object (a MockPin under MockFactory: `drive_low()`/`drive_high()` it)."""
        return self._device.pin

    @property
    def active(self) -> bool:
        """True while the contact is active, read from the pin's level now."""
        pin_high = bool(self._device.pin.state)
        return pin_high == self.config.active_high

    def close(self) -> None:
        """Release the pin."""
        self._device.close()

    def _changed(self) -> None:
        try:
            self._on_edge(self)
        except Exception:
            # Never let our bug kill gpiozero's event thread: the ticker's polling still sees the level.
            log.exception("handling an edge of the %s sensor failed", self.kind)
