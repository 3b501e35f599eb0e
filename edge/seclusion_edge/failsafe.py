"""The edge fail-safe: the room's own lapse and duration timers, run by every agent of the room.

Pure logic (semantics.md 5.4): no paho, no gpiozero, no clock of its own. The agent feeds it the room's
readings (its own, and the other devices' from the room's event topics) with the instant each began,
and asks at each tick what the room's local alarm is now. Who actually drives the buzzer and LED, the
hub's `indicator` or this verdict, is `choose_alarm`.

Time. Every reading carries an `Instant`: `wall` is its `ts`, `mono_ms` places it on this agent's
monotonic clock, which is what the timers measure. A reading from another device is placed there once,
when it arrives (by the agent: through that device's clock offset, measured from its heartbeats, or
`on_local_axis` before there is any), so a later jump of the wall clock (NTP after a boot without a
real-time clock) does not move a running timer. Which reading of a kind is the latest: between two of
one device, that device's own order, as the hub takes them (semantics 1): this agent's by its
monotonic clock, another's by its `(epoch, seq)`, whatever its clock did; between two devices, the
later on this agent's monotonic clock.

The rules, a simpler form of semantics.md sections 2 and 3 with the numbers of the `config` topic:

- An episode opens when the door is `closed` and the room `occupied`; it starts at the door's close,
  also when occupancy was reported after it but within `occupancy_lookback_s` (nobody enters through a
  closed door), else at the occupancy reading. `vacant` while the door stays closed does not end it (a
  still child is quiet to a PIR). The door's `open` stops its alarm; closed again within
  `reclose_grace_s` of the opening, with no `vacant` timed after the opening, the same episode goes on
  from its start (semantics 2.4 and 2.6: duration counts the elapsed time), or a new one starts at the
  re-close when `reclose_is_new_episode`; later, or after such a `vacant`, the rules above start a new
  one.
- Observer mode: a lapse is due `lapse_grace_s` after the observer went absent, or after the start
  when nobody has been present since. Check-in mode: each `check: ok` proves observation for
  `checkin_interval_s`; the lapse is due `lapse_grace_s` after the proof runs out (after the start when
  there is none, or it ran out before the start). `both`: whichever is due first.
- Each `duration_alerts` entry is due at start + `after_s` (a warning); `max_duration_s` makes
  `duration_limit` due (critical). A lapse is critical.

The alarm stops as soon as its condition does: the observer is back, a check-in came, the door opened.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final, Literal

from seclusion_contract import ConfigPayload, DurationAlertRule, IndicatorPayload
from seclusion_edge.clock import Instant

__all__ = [
    "Alarm",
    "Driver",
    "FailSafe",
    "LocalAlarm",
    "LocalLevel",
    "RoomReading",
    "choose_alarm",
    "on_local_axis",
]

LocalLevel = Literal["none", "warning", "critical"]
Level = Literal["none", "info", "warning", "critical"]
Driver = Literal["hub", "local"]

SUPERVISION_LAPSE: Final = "supervision_lapse"
DURATION_LIMIT: Final = "duration_limit"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def on_local_axis(ts: dt.datetime, now: Instant) -> Instant:
    """Place a reading that began at `ts` (another device's clock) on this agent's monotonic clock.

    Its age is measured now, against this agent's wall clock, and never taken as negative: a device
    whose clock runs ahead cannot push a reading into the future and so delay a timer.
    """
    age_ms = max(round((now.wall - ts).total_seconds() * 1000), 0)
    return Instant(now.mono_ms - age_ms, ts)


@dataclass(frozen=True, slots=True)
class RoomReading:
    """The latest reading of one kind in the room: its value and when it began."""

    value: str
    at: Instant
    device: str | None = None  # another device of the room; None: this agent's own reading
    order: tuple[int, int] | None = None  # that device's (epoch, seq) for the reading


@dataclass(frozen=True, slots=True)
class LocalAlarm:
    """The fail-safe's verdict: `none`, `warning` (a duration alert) or `critical` (a lapse, the limit).

    `reason` is the alert kind behind the level (`supervision_lapse`, `duration_limit`,
    `duration_warning`, `duration_escalation`), empty for `none`.
    """

    level: LocalLevel = "none"
    reason: str = ""


NO_ALARM: Final = LocalAlarm()


# The numbers a device that never heard the hub's `config` runs its fail-safe on: the base profile's
# (policies.md, `england-schools-2026`: observer at the panel, 15 s grace, a check-in proving 60 s, the
# duration alerts at 10, 20 and 30 minutes). An alarm never waits for the hub (semantics 5.4): a device
# installed or re-imaged while the hub is down still sounds for an unwatched child.
BASE_NUMBERS: Final = ConfigPayload(
    supervision="observer",
    lapse_grace_s=15,
    checkin_interval_s=60,
    duration_alerts=[
        DurationAlertRule(after_s=600, kind="duration_warning", tier="room"),
        DurationAlertRule(after_s=1200, kind="duration_escalation", tier="senior"),
        DurationAlertRule(after_s=1800, kind="duration_escalation", tier="head"),
    ],
)


class FailSafe:
    """One room's last known state and the local alarm it calls for. Not thread-safe: the agent locks.

    `policy` is the room's `config` payload; until one arrives the alarms run on the base profile's
    numbers (`BASE_NUMBERS`), and an episode already open when the room's own arrive is timed on from
    its real start.
    """

    def __init__(self, policy: ConfigPayload | None = None) -> None:
        self.policy = policy
        self._readings: dict[str, RoomReading] = {}
        self._episode_start: Instant | None = None
        # The episode the door last opened on: (its start, the door's opening), while it may go on.
        self._opened: tuple[Instant, Instant] | None = None

    @property
    def episode_start(self) -> Instant | None:
        """When the open episode began, as this agent knows it; None while there is none."""
        return self._episode_start

    def reading(self, kind: str) -> RoomReading | None:
        """The latest reading of a kind (for `check`, the latest check-in), or None."""
        return self._readings.get(kind)

    def state(self) -> dict[str, str]:
        """The room's last known reading of each kind (check-ins left out: they are moments)."""
        return {kind: r.value for kind, r in self._readings.items() if kind != "check"}

    def observe(
        self,
        kind: str,
        value: str,
        at: Instant,
        device: str | None = None,
        order: tuple[int, int] | None = None,
    ) -> bool:
        """Take a reading of the room (`device`, `order`: the other device that sent it and its event's
        `(epoch, seq)`; None: this agent's own); returns False when it is not news.

        The later reading wins, so a replayed older event changes nothing, and neither does the same
        reading twice. Later in the device's own order when both are one device's, as the hub takes
        them (semantics 1): this agent's by its monotonic clock, another's by its `(epoch, seq)`, so
        that no clock set back or stepped forward, its own or this agent's, makes its next reading look
        old. Between two devices, later on this agent's monotonic clock.
        """
        current = self._readings.get(kind)
        if current is not None:
            if device is not None and current.device == device and order and current.order:
                if order <= current.order:
                    return False
            elif at.mono_ms < current.at.mono_ms or (
                at.mono_ms == current.at.mono_ms and value == current.value
            ):
                return False
        self._readings[kind] = RoomReading(value, at, device, order)
        opened = self._opened
        if (
            kind == "occupancy"
            and value == "vacant"
            and opened is not None
            and at.mono_ms > opened[1].mono_ms
        ):
            self._opened = None  # 2.4: vacant after the door opened: the child left, the episode is over
        if kind in ("door", "occupancy"):
            self._follow_episode()
        return True

    def _follow_episode(self) -> None:
        door = self._readings.get("door")
        if door is None or door.value != "closed":
            if door is not None and self._episode_start is not None:
                self._opened = (self._episode_start, door.at)  # 2.4: it may go on if the door re-closes
            self._episode_start = None  # the door opened: the child is free to leave
            return
        if self._episode_start is not None:
            return  # still closed: `vacant` does not end an episode
        opened, self._opened = self._opened, None
        if opened is not None and door.at.mono_ms - opened[1].mono_ms <= _ms(self._number("reclose_grace_s")):
            # 2.4: closed again within the grace and nobody left: the same episode goes on (its duration
            # counts from its start, 2.6), or, by policy, a new one starts now, whatever the PIR says.
            new_episode = self._setting("reclose_is_new_episode")
            self._episode_start = door.at if new_episode else opened[0]
            return
        occupancy = self._readings.get("occupancy")
        if occupancy is not None and occupancy.value == "occupied":
            # 2.1: occupied before the door shut, or reported within the lookback after it: the child was
            # shut in at the close. Reported later (a PIR that woke long after an empty room was shut):
            # from that report.
            lookback_ms = _ms(self._number("occupancy_lookback_s"))
            if occupancy.at.mono_ms <= door.at.mono_ms + lookback_ms:
                self._episode_start = door.at
            else:
                self._episode_start = occupancy.at

    def _number(self, name: str) -> float:
        """A number of the room's `config`; without one yet, the policy default the contract gives it."""
        return float(self._setting(name))

    def _setting(self, name: str) -> Any:
        return getattr(self.numbers, name)

    @property
    def numbers(self) -> ConfigPayload:
        """The room's numbers, or the base profile's until the hub's `config` has come."""
        return self.policy if self.policy is not None else BASE_NUMBERS

    def lapse_due_ms(self) -> int | None:
        """When a supervision lapse is (or was) due, on the monotonic clock; None while supervised."""
        start = self._episode_start
        policy = self.numbers
        if start is None:
            return None
        grace_ms = _ms(policy.lapse_grace_s)
        due: list[int] = []
        if policy.supervision in ("observer", "both"):
            observer = self._readings.get("observer")
            if observer is None or observer.value != "present":
                # Absent since the start at the latest ("never present since the start" included).
                since = start.mono_ms if observer is None else max(start.mono_ms, observer.at.mono_ms)
                due.append(since + grace_ms)
        if policy.supervision in ("checkin", "both"):
            check = self._readings.get("check")
            proof_ends = start.mono_ms
            if check is not None:
                proof_ends = max(proof_ends, check.at.mono_ms + _ms(policy.checkin_interval_s))
            due.append(proof_ends + grace_ms)
        return min(due) if due else None

    def evaluate(self, now_ms: int) -> LocalAlarm:
        """The local alarm at `now_ms` (this agent's monotonic clock)."""
        start = self._episode_start
        policy = self.numbers
        if start is None:
            return NO_ALARM
        lapse_due = self.lapse_due_ms()
        if lapse_due is not None and now_ms >= lapse_due:
            return LocalAlarm("critical", SUPERVISION_LAPSE)
        elapsed_ms = now_ms - start.mono_ms
        if policy.max_duration_s is not None and elapsed_ms >= _ms(policy.max_duration_s):
            return LocalAlarm("critical", DURATION_LIMIT)
        due_rules = [rule for rule in policy.duration_alerts if elapsed_ms >= _ms(rule.after_s)]
        if due_rules:
            latest = max(due_rules, key=lambda rule: rule.after_s)
            return LocalAlarm("warning", latest.kind)
        return NO_ALARM


@dataclass(frozen=True, slots=True)
class Alarm:
    """What the room's outputs show: the level and reason, who decided it, and the two outputs."""

    level: Level
    reason: str
    driver: Driver
    led: bool
    buzzer: bool


QUIET: Final = Alarm("none", "", "local", led=False, buzzer=False)


def choose_alarm(local: LocalAlarm, indicator: IndicatorPayload | None, hub_drives: bool) -> Alarm:
    """Who drives the buzzer and LED, and how.

    While the hub drives (the broker is connected and the hub's status is online), the room's
    `indicator`: the LED is lit for `warning` and `critical`, the buzzer sounds for `critical` until
    every alert behind it is `acknowledged`; `info` lights nothing (an episode has started: news for
    the staff's screens, not an alarm at the door). No indicator yet reads as `none`.

    Otherwise the local fail-safe: buzzer and LED for `critical`, the LED alone for `warning`.
    """
    if hub_drives:
        if indicator is None:
            return Alarm("none", "", "hub", led=False, buzzer=False)
        alarming = indicator.level in ("warning", "critical")
        return Alarm(
            indicator.level,
            indicator.reason,
            "hub",
            led=alarming,
            buzzer=indicator.level == "critical" and not indicator.acknowledged,
        )
    return Alarm(
        local.level,
        local.reason,
        "local",
        led=local.level != "none",
        buzzer=local.level == "critical",
    )
