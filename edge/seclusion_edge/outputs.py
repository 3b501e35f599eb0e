"""The room's buzzer and LED on gpiozero, built with an injected pin factory.

The buzzer is a `gpiozero.Buzzer` (an active buzzer module: sounds while its pin is high) or, with
`buzzer_type: tonal`, a `gpiozero.TonalBuzzer` (a passive piezo played at its middle tone, A4; it
needs a PWM pin: `MockFactory(pin_class=MockPWMPin)` in tests). The LED is a `gpiozero.LED`. Both are
steady while on: a blink or beep pattern would need gpiozero's background threads, and a steady
output is what a test (and a person at the door) can read at once. What to show is decided elsewhere
(`seclusion_edge.failsafe.choose_alarm`); this only carries it out, and only when it changes.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from gpiozero import LED, Buzzer, TonalBuzzer
from gpiozero.exc import BadPinFactory, GPIOZeroError, PinPWMUnsupported

from seclusion_edge.config import OutputsConfig
from seclusion_edge.errors import WiringError

log = logging.getLogger(__name__)

OutputName = Literal["buzzer", "led"]


class AlarmOutputs:
    """The configured outputs (either may be absent). Call from one thread (the agent's ticker)."""

    def __init__(self, config: OutputsConfig | None, pin_factory: Any | None, key: str = "outputs") -> None:
        self._buzzer: Any = None
        self._led: Any = None
        self._tonal = config is not None and config.buzzer_type == "tonal"
        self._buzzer_on = False
        self._led_on = False
        if config is None:
            return
        try:
            if config.buzzer is not None:
                self._buzzer = self._build("buzzer", config.buzzer, pin_factory, f"{key}.buzzer")
            if config.led is not None:
                self._led = self._build("led", config.led, pin_factory, f"{key}.led")
        except BaseException:
            self.close()
            raise

    def _build(self, name: OutputName, pin: int | str, pin_factory: Any | None, key: str) -> Any:
        try:
            if name == "led":
                return LED(pin, pin_factory=pin_factory)
            if self._tonal:
                return TonalBuzzer(pin, pin_factory=pin_factory)
            return Buzzer(pin, pin_factory=pin_factory)
        except BadPinFactory as exc:
            raise WiringError(
                f"{key}: no GPIO library works here ({exc}); on a machine that is not a Raspberry Pi, "
                "use --mock-pins"
            ) from None
        except PinPWMUnsupported:
            raise WiringError(f"{key}: a tonal buzzer needs a PWM-capable pin; pin {pin} is not") from None
        except GPIOZeroError as exc:
            raise WiringError(f"{key}: cannot use pin {pin} for the {name}: {exc}") from None

    @property
    def names(self) -> list[OutputName]:
        """The outputs this device has."""
        found: list[OutputName] = []
        if self._buzzer is not None:
            found.append("buzzer")
        if self._led is not None:
            found.append("led")
        return found

    @property
    def buzzer_on(self) -> bool:
        """Whether the buzzer was last told to sound."""
        return self._buzzer_on

    @property
    def led_on(self) -> bool:
        """Whether the LED was last told to light."""
        return self._led_on

    def pin_for(self, name: str) -> Any:
        """The gpiozero pin of the `buzzer` or `led` (a MockPin under MockFactory); KeyError if absent."""
        device = {"buzzer": self._buzzer, "led": self._led}.get(name)
        if device is None:
            raise KeyError(name)
        if name == "buzzer" and self._tonal:
            return device.pwm_device.pin
        return device.pin

    def show(self, *, led: bool, buzzer: bool) -> None:
        """Light the LED and sound the buzzer, or not; an output already in that state is left alone."""
        if self._led is not None and led != self._led_on:
            self._led.value = led
            self._led_on = led
        if self._buzzer is not None and buzzer != self._buzzer_on:
            if self._tonal:
                if buzzer:
                    self._buzzer.play(self._buzzer.mid_tone)
                else:
                    self._buzzer.stop()
            else:
                self._buzzer.value = buzzer
            self._buzzer_on = buzzer

    def close(self) -> None:
        """Silence and release the pins."""
        # Switched off first: releasing a GPIO line does not always drive it low.
        try:
            self.show(led=False, buzzer=False)
        except GPIOZeroError:
            log.exception("switching the buzzer or LED off failed")
        for device in (self._buzzer, self._led):
            if device is not None:
                try:
                    device.close()
                except GPIOZeroError:
                    log.exception("releasing an output pin failed")
        self._buzzer = None
        self._led = None
        self._buzzer_on = False
        self._led_on = False
