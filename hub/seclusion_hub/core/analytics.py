"""The leaders' review (docs/review.md, "Figures and how they are counted"): pure functions of plain facts.

Inputs are frozen facts the store hands over (`EpisodeFact`, `PupilFact`); time is passed in, never read.
Every function leaves out test episodes (a room in maintenance) before counting anything: they are never
part of any figure. Episodes whose completed record classifies them as the child's own (voluntary) use of
the calm room, or as no child in the room, are counted apart (semantics 2.2, `classes`); every other
figure is about seclusion, and an episode counts as seclusion until a completed record says otherwise.
Counts of episodes use `elapsed_s`, the reading that never under-counts (semantics 2.6). A figure that
cannot be computed (a share of nothing, a ratio with no one on one side) is None, never a division error.

What leaves the leaders' screen goes through `suppress` (group rates), `suppress_linked` (the group rates
of two characteristics that share children: `sen` and `ehcp`) or `suppress_counts` (any table of
counts): a count from 1 to 4 is withheld, and so is anything from which it could be worked out.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal, TypeVar

from .deadlines import WEEKDAYS, local_date, start_of_local_day
from .policy import PatternTrigger
from .site import Period, Weekday

Characteristic = Literal["sen", "ehcp", "sex", "ethnicity", "fsm", "looked_after", "age_band"]
CHARACTERISTICS: tuple[Characteristic, ...] = (
    "sen",
    "ehcp",
    "sex",
    "ethnicity",
    "fsm",
    "looked_after",
    "age_band",
)
UNKNOWN = "unknown"
SEN_VALUES = ("none", "sen_support", "ehcp")
# Age bands follow the school phases (completed years): early years, key stages 1 to 4, post-16.
AGE_BANDS: tuple[tuple[str, int | None], ...] = (
    ("under 5", 4),
    ("5-6", 6),
    ("7-10", 10),
    ("11-13", 13),
    ("14-15", 15),
    ("16+", None),
)
SUPPRESS_BELOW = 5  # counts 1 to 4 are withheld; 0 is shown
Z_95 = 1.96
FLAT_BAND = 0.05  # a slope within ±5 % of the mean per bucket is "flat"
OUTSIDE_TIMETABLE = "outside the timetable"
NO_STAFF = "no staff named"
UNGROUPED_STAFF = "not in a group"
DURATION_BINS: tuple[tuple[str, float, float], ...] = (
    ("0-5 min", 0, 5 * 60),
    ("5-10 min", 5 * 60, 10 * 60),
    ("10-20 min", 10 * 60, 20 * 60),
    ("20-30 min", 20 * 60, 30 * 60),
    ("30+ min", 30 * 60, math.inf),
)

Bucket = Literal["week", "month"]
Verdict = Literal["rising", "falling", "flat", "unknown"]
K = TypeVar("K")


def _aware(at: dt.datetime, name: str) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} {at.isoformat()} has no timezone: every time must be timezone-aware")


# Facts ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeFact:
    """One episode as the review sees it. `started_at` is timezone-aware; times are seconds; `lapses`
    is the number of supervision lapses, every unsupervised interval of its accounting (semantics 3.4:
    grace included and however short); `lapse_alerts` the `supervision_lapse` alerts raised (a lapse
    past the grace); `staff` names every adult involved."""

    id: str
    site: str
    room: str
    pupil_id: str | None
    started_at: dt.datetime
    elapsed_s: float
    duration_s: float
    supervised_s: float
    unsupervised_s: float
    unknown_s: float
    lapses: int = 0
    locked: bool = False
    staff: tuple[str, ...] = ()
    test: bool = False
    manual: bool = False
    # What its record, once recorded, says the episode was: "seclusion", "voluntary" or "no_child". None
    # while the record is not completed (a draft moves nothing): it is then counted as seclusion.
    classification: str | None = None
    # Its record was completed, and a dated addendum corrects its classification since: counted as
    # seclusion whatever the addendum says (never under-count), with `classification` None, but not
    # waiting for a completed record.
    corrected: bool = False
    lapse_alerts: int = 0
    possible_loss: bool = False  # readings may be missing (semantics 4.4): its figures may be incomplete

    def __post_init__(self) -> None:
        _aware(self.started_at, f"episode {self.id} started_at")

    @property
    def voluntary(self) -> bool:
        """Recorded as the child's own use of the calm room: timed, supervised, counted apart."""
        return self.classification == "voluntary"

    @property
    def no_child(self) -> bool:
        """Recorded as no child in the room (a sensor still reported one): counted apart."""
        return self.classification == "no_child"

    @property
    def seclusion(self) -> bool:
        """Counted as seclusion: recorded so, or not (yet) recorded as anything else."""
        return not (self.voluntary or self.no_child)


@dataclass(frozen=True)
class PupilFact:
    """A child on the site's register. `groups` holds the characteristics the school records: `sen`
    (none, sen_support, ehcp), `ehcp` (derived from `sen` when absent), `sex`, `ethnicity`, `fsm` and
    `looked_after` (booleans). A missing or empty value is "unknown"."""

    id: str
    site: str
    date_of_birth: dt.date | None = None
    groups: Mapping[str, str | bool | None] = field(default_factory=dict, hash=False)
    joined_on: dt.date | None = None  # first day on the school's roll; None: not said
    left_on: dt.date | None = None  # last day on roll; None: not said (still on roll)


def on_roll(
    pupils: Iterable[PupilFact],
    episodes: Iterable[EpisodeFact],
    *,
    start: dt.datetime,
    end: dt.datetime,
    tz: dt.tzinfo,
) -> list[PupilFact]:
    """The register of the period [start, end): the children on the school's roll on at least one of
    its days (on the school's calendar, `tz`), a child whose dates are not said counting as on roll. A
    child with a counted episode in the period is on it whatever their dates say: a leaving date typed
    too early never takes a secluded child out of the figures (never under-count)."""
    _aware(start, "start")
    _aware(end, "end")
    first_day = local_date(start, tz)
    last_day = local_date(end - dt.timedelta(microseconds=1), tz)
    secluded = {e.pupil_id for e in episodes_between(episodes, start=start, end=end)}
    return [
        p
        for p in pupils
        if p.id in secluded
        or (
            (p.joined_on is None or p.joined_on <= last_day) and (p.left_on is None or p.left_on >= first_day)
        )
    ]


def age_on(date_of_birth: dt.date, on: dt.date) -> int:
    """Completed years on the date `on` (a child born on 29 February turns a year older on 1 March)."""
    return on.year - date_of_birth.year - ((on.month, on.day) < (date_of_birth.month, date_of_birth.day))


def age_band(date_of_birth: dt.date | None, on: dt.date) -> str:
    """The child's band of `AGE_BANDS` on the date `on`; "unknown" without a date of birth."""
    if date_of_birth is None:
        return UNKNOWN
    age = age_on(date_of_birth, on)
    return next(name for name, top in AGE_BANDS if top is None or age <= top)


def characteristic_value(pupil: PupilFact, characteristic: Characteristic, on: dt.date) -> str:
    """The child's group for one characteristic, as shown: booleans as "yes"/"no", missing as
    "unknown"; `ehcp` is derived from `sen` unless recorded itself; `age_band` is the age on `on`."""
    if characteristic not in CHARACTERISTICS:
        raise ValueError(f"{characteristic!r} is not a characteristic: one of {', '.join(CHARACTERISTICS)}")
    if characteristic == "age_band":
        return age_band(pupil.date_of_birth, on)
    value = pupil.groups.get(characteristic)
    if characteristic == "ehcp" and value is None:
        sen = pupil.groups.get("sen")
        value = None if sen is None or sen == "" else sen == "ehcp"
    if value is None or value == "":
        return UNKNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


# Characteristics the register holds as the school typed them (`sex`, `ethnicity`): one group however
# its case and spacing were typed.
FREE_TEXT: Final = frozenset({"sex", "ethnicity"})


def groups_of(pupils: Iterable[PupilFact], characteristic: Characteristic, on: dt.date) -> dict[str, str]:
    """Each child's group (`characteristic_value`), by child id. A free-text value typed with another case
    or spacing ("White British", "white  british") is one group, not two half-groups, shown under the
    first of its spellings in sorted order; a blank one, or the word "unknown" in any case, is "unknown"."""
    raw = {p.id: characteristic_value(p, characteristic, on) for p in pupils}
    if characteristic not in FREE_TEXT:
        return raw
    shown: dict[str, str] = {}
    for value in sorted({" ".join(v.split()) for v in raw.values()}):
        key = value.casefold()
        shown.setdefault(key, UNKNOWN if key in ("", UNKNOWN) else value)
    return {child: shown[" ".join(value.split()).casefold()] for child, value in raw.items()}


def minutes_up(seconds: float) -> float:
    """Seconds as minutes to a tenth, rounded up: time is never under-counted (600.4 s is 10.1, where
    rounding to the nearest gave 10.0, less than the episode lasted). A hair over a tenth is that tenth."""
    return math.ceil(seconds / 6 - 1e-9) / 10


def minutes_down(seconds: float) -> float:
    """Seconds as minutes to a tenth, rounded down: for time supervised only (never flattered)."""
    return math.floor(seconds / 6 + 1e-9) / 10


def timed(episodes: Iterable[EpisodeFact]) -> list[EpisodeFact]:
    """Every episode that really happened, whatever it is recorded as: all but test episodes."""
    return [e for e in episodes if not e.test]


def counted(episodes: Iterable[EpisodeFact]) -> list[EpisodeFact]:
    """The episodes the figures count as seclusion: every one except test episodes and those a
    completed record classifies as voluntary use or as no child in the room (counted apart, `classes`).
    Unclassified ones count: the review never under-counts."""
    return [e for e in episodes if not e.test and e.seclusion]


@dataclass(frozen=True)
class Classes:
    """The timed episodes of a period, each class apart (semantics 2.2). `seclusion` includes the
    `unclassified` ones (no completed record yet, or an empty room not yet reviewed) and the `corrected`
    ones (a completed record whose classification a dated addendum corrects: counted as seclusion, but
    waiting for nothing); `voluntary` the child's own use of the calm room,
    with its minutes and how many of those episodes had a supervision lapse (it is supervised too);
    `no_child` the episodes recorded as no child in the room, with their minutes."""

    seclusion: int
    unclassified: int
    voluntary: int
    voluntary_minutes: float
    voluntary_with_lapse: int
    no_child: int = 0
    no_child_minutes: float = 0.0
    corrected: int = 0


def classes(episodes: Iterable[EpisodeFact]) -> Classes:
    """Count each class of the timed (non-test) episodes apart."""
    shown = timed(episodes)
    seclusion = [e for e in shown if e.seclusion]
    voluntary = [e for e in shown if e.voluntary]
    empty = [e for e in shown if e.no_child]
    return Classes(
        seclusion=len(seclusion),
        unclassified=sum(1 for e in seclusion if e.classification is None and not e.corrected),
        voluntary=len(voluntary),
        voluntary_minutes=minutes_up(sum(e.elapsed_s for e in voluntary)),
        voluntary_with_lapse=sum(1 for e in voluntary if e.lapses > 0),
        no_child=len(empty),
        no_child_minutes=minutes_up(sum(e.elapsed_s for e in empty)),
        corrected=sum(1 for e in seclusion if e.corrected),
    )


def episodes_between(
    episodes: Iterable[EpisodeFact], *, start: dt.datetime, end: dt.datetime
) -> list[EpisodeFact]:
    """The counted episodes that started in [start, end): from `start` included to `end` excluded."""
    _aware(start, "start")
    _aware(end, "end")
    return [e for e in counted(episodes) if start <= e.started_at < end]


# Disproportionality ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupRate:
    """One group of one characteristic against the rest of the register. Counts are None, and
    `suppressed` True, once `suppress` has withheld them; a rate or ratio is None when it cannot be
    computed or when a count it rests on is withheld."""

    characteristic: str
    group: str
    n: int | None  # children in the group
    k: int | None  # of whom secluded at least once in the period
    episodes: int | None  # episodes of children in the group
    rate_per_100: float | None  # k / n * 100
    rest_n: int | None  # every other child on the register
    rest_k: int | None
    rest_episodes: int | None
    rest_rate_per_100: float | None
    risk_ratio: float | None  # (k / n) / (rest_k / rest_n)
    ci_low: float | None  # 95 % interval of the risk ratio, Katz log method
    ci_high: float | None
    suppressed: bool = False


def rate_per_100(k: int | None, n: int | None) -> float | None:
    """k / n * 100; None when n is 0 or either count is withheld."""
    if k is None or n is None or n == 0:
        return None
    return k / n * 100


def risk_ratio(k1: int | None, n1: int | None, k2: int | None, n2: int | None) -> float | None:
    """(k1 / n1) / (k2 / n2); None when a group is empty, the rest has no one secluded, or a count is
    withheld. k1 = 0 gives 0.0."""
    if k1 is None or n1 is None or k2 is None or n2 is None or n1 == 0 or n2 == 0 or k2 == 0:
        return None
    return (k1 / n1) / (k2 / n2)


def katz_interval(
    k1: int | None, n1: int | None, k2: int | None, n2: int | None, z: float = Z_95
) -> tuple[float, float] | None:
    """The risk ratio's confidence interval by the Katz log method:
    exp(ln RR ± z · sqrt(1/k1 - 1/n1 + 1/k2 - 1/n2)). None when k or n is 0 on either side (the
    logarithm or the variance is undefined) or a count is withheld."""
    if k1 is None or n1 is None or k2 is None or n2 is None or 0 in (k1, n1, k2, n2):
        return None
    log_rr = math.log((k1 / n1) / (k2 / n2))
    # The variance is never negative since k ≤ n; max() only guards rounding at k = n.
    se = math.sqrt(max(0.0, 1 / k1 - 1 / n1 + 1 / k2 - 1 / n2))
    return math.exp(log_rr - z * se), math.exp(log_rr + z * se)


def _group_order(characteristic: str, groups: Iterable[str]) -> list[str]:
    """Groups in a reader's order: the known scale where there is one, else alphabetical; unknown last."""
    scale: Sequence[str] = ()
    if characteristic == "age_band":
        scale = [name for name, _ in AGE_BANDS]
    elif characteristic == "sen":
        scale = SEN_VALUES
    elif characteristic in ("ehcp", "fsm", "looked_after"):
        scale = ("yes", "no")
    rank = {name: i for i, name in enumerate(scale)}
    return sorted(groups, key=lambda g: (g == UNKNOWN, rank.get(g, len(rank)), g))


def disproportionality(
    pupils: Iterable[PupilFact],
    episodes: Iterable[EpisodeFact],
    characteristic: Characteristic,
    *,
    start: dt.datetime,
    end: dt.datetime,
    tz: dt.tzinfo,
    site: str | None = None,
    on: dt.date | None = None,
) -> list[GroupRate]:
    """For each value of `characteristic` among the register's children, against every child not in it:

    - `n`: children on the register in the group; `k`: of them, those with at least one counted episode
      that started in [start, end); `episodes`: those episodes; the same for the rest of the register;
    - `rate_per_100` = k / n * 100, the risk ratio (group rate / rest rate) and its 95 % Katz interval.

    The register is `pupils` (only those of `site` when given; episodes too). Episodes of a child not on
    the register, or with no child named, belong to no group and are not counted here. Children with no
    recorded value form the group "unknown", reported like any other. The age band is the age on `on`,
    by default the date `start` falls on at the school (`tz`, the site's clocks: a term from midnight BST
    on 1 September starts on 31 August in UTC). Figures are unsuppressed: pass the result to `suppress`
    before it leaves the leaders' screen.
    """
    if characteristic not in CHARACTERISTICS:
        raise ValueError(f"{characteristic!r} is not a characteristic: one of {', '.join(CHARACTERISTICS)}")
    _aware(start, "start")
    _aware(end, "end")
    register = [p for p in pupils if site is None or p.site == site]
    in_site = [e for e in episodes if site is None or e.site == site]
    reference = on if on is not None else local_date(start, tz)
    group_of = groups_of(register, characteristic, reference)
    per_child = Counter(
        e.pupil_id
        for e in episodes_between(in_site, start=start, end=end)
        if e.pupil_id is not None and e.pupil_id in group_of
    )
    total_n = len(group_of)
    total_k = len(per_child)
    total_episodes = sum(per_child.values())
    rows: list[GroupRate] = []
    for group in _group_order(characteristic, set(group_of.values())):
        members = [child for child, g in group_of.items() if g == group]
        n = len(members)
        k = sum(1 for child in members if per_child[child] > 0)
        group_episodes = sum(per_child[child] for child in members)
        rest_n, rest_k = total_n - n, total_k - k
        interval = katz_interval(k, n, rest_k, rest_n)
        rows.append(
            GroupRate(
                characteristic=characteristic,
                group=group,
                n=n,
                k=k,
                episodes=group_episodes,
                rate_per_100=rate_per_100(k, n),
                rest_n=rest_n,
                rest_k=rest_k,
                rest_episodes=total_episodes - group_episodes,
                rest_rate_per_100=rate_per_100(rest_k, rest_n),
                risk_ratio=risk_ratio(k, n, rest_k, rest_n),
                ci_low=interval[0] if interval else None,
                ci_high=interval[1] if interval else None,
            )
        )
    return rows


# Suppression -----------------------------------------------------------------------------------------


def is_small(count: int | None) -> bool:
    """A count the disclosure rule withholds: 1 to 4. Zero is shown."""
    return count is not None and 0 < count < SUPPRESS_BELOW


def _secondary(values: Sequence[int | None], hidden: set[int], zero_too: bool = False) -> set[int]:
    """Indexes to withhold in one column whose total can be known: if exactly one is withheld, the
    smallest other non-zero count goes too, so that total minus the rest does not give it back. With
    `zero_too`, a 0 goes where no other count is non-zero (`suppress_linked`: a count withheld only as a
    link, with every other count of its table 0, would be the total that the other table gives)."""
    if len(hidden) != 1:
        return set()
    others = [(value, i) for i, value in enumerate(values) if i not in hidden and value is not None]
    candidates = [(value, i) for value, i in others if value > 0] or (others if zero_too else [])
    return {min(candidates)[1]} if candidates else set()


_PAIRS = (("n", "rest_n"), ("k", "rest_k"), ("episodes", "rest_episodes"))
_COLUMNS = tuple(name for pair in _PAIRS for name in pair)
Hidden = dict[str, set[int]]  # column -> the indexes of the rows withheld in it


def _small_cells(rows: Sequence[GroupRate]) -> Hidden:
    """Rule 1: every count from 1 to 4, column by column."""
    return {name: {i for i, row in enumerate(rows) if is_small(getattr(row, name))} for name in _COLUMNS}


def _within(rows: Sequence[GroupRate], hidden: Hidden, zero_too: bool = False) -> bool:
    """Rules 2 and 3 until nothing changes (each pass only adds indexes, so this ends); True when
    anything was added."""
    added = False
    changed = True
    while changed:
        changed = False
        for group_name, rest_name in _PAIRS:
            values = [getattr(row, group_name) for row in rows]
            linked = hidden[group_name] | hidden[rest_name]
            linked |= _secondary(values, linked, zero_too)
            changed |= linked != hidden[group_name] or linked != hidden[rest_name]
            hidden[group_name] = hidden[rest_name] = linked
        added |= changed
    return added


def _withhold(rows: Sequence[GroupRate], hidden: Hidden) -> list[GroupRate]:
    """Rule 4: the withheld counts as None, with every rate, ratio and interval resting on one."""
    shown: list[GroupRate] = []
    for i, row in enumerate(rows):
        withheld = {name for name, indexes in hidden.items() if i in indexes}
        if not withheld:
            shown.append(row)
            continue
        counts: dict[str, int | None] = {
            name: None if name in withheld else getattr(row, name) for name in _COLUMNS
        }
        k_n_hidden = bool(withheld & {"k", "n"})
        rest_hidden = bool(withheld & {"rest_k", "rest_n"})
        ratio_hidden = k_n_hidden or rest_hidden
        shown.append(
            replace(
                row,
                n=counts["n"],
                k=counts["k"],
                episodes=counts["episodes"],
                rest_n=counts["rest_n"],
                rest_k=counts["rest_k"],
                rest_episodes=counts["rest_episodes"],
                rate_per_100=None if k_n_hidden else row.rate_per_100,
                rest_rate_per_100=None if rest_hidden else row.rest_rate_per_100,
                risk_ratio=None if ratio_hidden else row.risk_ratio,
                ci_low=None if ratio_hidden else row.ci_low,
                ci_high=None if ratio_hidden else row.ci_high,
                suppressed=True,
            )
        )
    return shown


def suppress(rows: Sequence[GroupRate]) -> list[GroupRate]:
    """The rows of one characteristic fit to leave the leaders' screen (docs/review.md, "Suppression"):

    1. every count from 1 to 4 (n, k, episodes and the rest's) is withheld (None); 0 is shown;
    2. a group's count and the rest's are withheld together, since they add up to the register's
       total, which the other rows show;
    3. within a column, if only one group's count is withheld, the smallest other non-zero count is
       withheld too, since the groups' counts add up to the same total;
    4. rules 2 and 3 repeat until nothing changes; then every rate, ratio and interval that rests on a
       withheld count is withheld. A row with anything withheld has `suppressed` True.

    Two characteristics that share children in a known way (`sen` and `ehcp`, derived from it) are
    suppressed together: `suppress_linked`.
    """
    hidden = _small_cells(rows)
    _within(rows, hidden)
    return _withhold(rows, hidden)


def shared_groups(
    pupils: Iterable[PupilFact],
    first: Characteristic,
    second: Characteristic,
    *,
    on: dt.date,
    site: str | None = None,
) -> set[tuple[str, str]]:
    """The pairs (a group of `first`, a group of `second`) that share at least one child on the register
    (only the children of `site` when given), each child's group as `groups_of` gives it on
    `on`: for `sen` and a derived `ehcp`, ("ehcp", "yes"), ("none", "no"), ("sen_support", "no") and
    ("unknown", "unknown")."""
    register = [p for p in pupils if site is None or p.site == site]
    first_of, second_of = groups_of(register, first, on), groups_of(register, second, on)
    return {(first_of[p.id], second_of[p.id]) for p in register}


def suppress_linked(
    first: Sequence[GroupRate], second: Sequence[GroupRate], links: Iterable[tuple[str, str]]
) -> tuple[list[GroupRate], list[GroupRate]]:
    """Two characteristics' rows fit to leave the leaders' screen together, when their groups share
    children (`links`: pairs of a group of `first` and a group of `second` with a child in common, from
    `shared_groups`). Suppressed one by one (`suppress`), `sen` and `ehcp` give back what each withholds:
    `ehcp` "no" is `sen` none plus SEN support, so with the total a withheld count of children with an
    EHC plan is a difference of shown counts of both tables.

    So, column by column (n, k, episodes and the rest's): a count withheld in one table withholds every
    linked group's count in the other, and the rules of `suppress` (group and rest together; a lone
    withheld count takes another with it, a 0 where no other is non-zero) run again in both tables,
    until nothing changes. Then no withheld count of either table is a sum or difference of shown ones:
    in each column the withheld groups of both tables are whole sets of linked groups, at least two in
    any table that withholds one. Rates, ratios and intervals go with their counts as in `suppress`.
    """
    index_first = {row.group: i for i, row in enumerate(first)}
    index_second = {row.group: i for i, row in enumerate(second)}
    to_second: dict[int, set[int]] = defaultdict(set)
    to_first: dict[int, set[int]] = defaultdict(set)
    for a, b in links:
        if a in index_first and b in index_second:
            to_second[index_first[a]].add(index_second[b])
            to_first[index_second[b]].add(index_first[a])
    hidden_first, hidden_second = _small_cells(first), _small_cells(second)
    changed = True
    while changed:  # each pass only adds indexes, so this ends
        changed = _within(first, hidden_first, zero_too=True)
        changed |= _within(second, hidden_second, zero_too=True)
        for name in _COLUMNS:
            for source, target, links_of in (
                (hidden_first, hidden_second, to_second),
                (hidden_second, hidden_first, to_first),
            ):
                linked = {j for i in source[name] for j in links_of[i]}
                if not linked <= target[name]:
                    target[name] |= linked
                    changed = True
    return _withhold(first, hidden_first), _withhold(second, hidden_second)


def suppress_counts(counts: Mapping[K, int]) -> dict[K, int | None]:
    """A table of counts (a distribution) fit to leave the leaders' screen: 1 to 4 withheld (None), 0
    shown, and if only one count is withheld the smallest other non-zero one is withheld too, so that
    the total, which the screen may show, does not give it back."""
    keys = list(counts)
    values: list[int | None] = [counts[key] for key in keys]
    hidden = {i for i, value in enumerate(values) if is_small(value)}
    hidden |= _secondary(values, hidden)
    return {key: None if i in hidden else counts[key] for i, key in enumerate(keys)}


# Patterns ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flag:
    """Something for the leaders to look at. `pattern`: a child's episodes in the densest window of a
    trigger; `lengthy`: one episode longer than the threshold; `rising`: the site's trend is rising."""

    kind: Literal["pattern", "lengthy", "rising"]
    label: str
    pupil_id: str | None
    episode_ids: tuple[str, ...]
    first_start: dt.datetime | None
    last_start: dt.datetime | None

    @property
    def count(self) -> int:
        """How many episodes the flag is about."""
        return len(self.episode_ids)


def densest_window(
    starts: Sequence[EpisodeFact], window: dt.timedelta, since: dt.datetime | None = None
) -> list[EpisodeFact]:
    """The largest run of episodes (sorted by start) whose first and last starts are less than `window`
    apart, i.e. that fit in one window [t, t + window); of equal runs, the latest. With `since`, only
    runs with at least one episode that started at or after it (earlier ones only complete a run)."""
    best: tuple[int, int] = (0, 0)
    first = 0
    for last, episode in enumerate(starts):
        while episode.started_at - starts[first].started_at >= window:
            first += 1
        if since is not None and episode.started_at < since:
            continue  # the run's latest episode, and so every one of it, is before `since`
        if last + 1 - first >= best[1] - best[0]:
            best = (first, last + 1)
    return list(starts[best[0] : best[1]])


def pattern_flags(
    episodes: Iterable[EpisodeFact],
    triggers: Sequence[PatternTrigger],
    now: dt.datetime,
    *,
    lengthy_after_s: float | Mapping[str, float] | None = None,
    lengthy_label: str = "lengthy episode",
    trend: Trend | None = None,
    since: dt.datetime | None = None,
) -> list[Flag]:
    """The review's flags, for the counted episodes that started at or before `now`:

    - `pattern`, for each child and each trigger: `count` or more of the child's episodes started within
      one window of `window_days` days (a window [t, t + window_days * 24 h), so the first and last
      starts are less than `window_days` days apart). The flag names the episodes of the densest such
      window and its first and last start. Episodes with no child named belong to no pattern.
    - `lengthy`, when `lengthy_after_s` is given: each episode whose `elapsed_s` is longer than it (or
      than its room's, given as room: seconds; a room not named has none), whether or not a child is
      named.
    - `rising`, when a `trend` is given and its verdict is "rising": one flag for the whole trend.

    With `since` (a period's start), episodes before it only complete a pattern: a window is flagged
    only when at least one of its episodes started at or after `since`, and lengthy flags are about
    those episodes only. Pass the episodes of the largest `window_days` before it, so that a pattern
    across the period's start is seen.
    """
    _aware(now, "now")
    if since is not None:
        _aware(since, "since")
    past = sorted((e for e in counted(episodes) if e.started_at <= now), key=lambda e: e.started_at)
    by_child: dict[str, list[EpisodeFact]] = defaultdict(list)
    for episode in past:
        if episode.pupil_id is not None:
            by_child[episode.pupil_id].append(episode)
    flags: list[Flag] = []
    for child in sorted(by_child):
        for trigger in triggers:
            densest = densest_window(by_child[child], dt.timedelta(days=trigger.window_days), since)
            if len(densest) >= trigger.count:
                flags.append(
                    Flag(
                        kind="pattern",
                        label=trigger.label,
                        pupil_id=child,
                        episode_ids=tuple(e.id for e in densest),
                        first_start=densest[0].started_at,
                        last_start=densest[-1].started_at,
                    )
                )
    if lengthy_after_s is not None:
        limits = lengthy_after_s

        def lengthy(e: EpisodeFact) -> bool:
            limit = limits.get(e.room) if isinstance(limits, Mapping) else limits
            return limit is not None and e.elapsed_s > limit

        flags.extend(
            Flag(
                kind="lengthy",
                label=lengthy_label,
                pupil_id=e.pupil_id,
                episode_ids=(e.id,),
                first_start=e.started_at,
                last_start=e.started_at,
            )
            for e in past
            if lengthy(e) and (since is None or e.started_at >= since)
        )
    if trend is not None and trend.verdict == "rising":
        flags.append(
            Flag(
                kind="rising",
                label=f"rising: {trend.relative_slope:+.0%} of the mean per {trend.bucket}"
                if trend.relative_slope is not None
                else "rising",
                pupil_id=None,
                episode_ids=(),
                first_start=trend.buckets[0].start,  # the span of the trend: its first bucket
                last_start=trend.buckets[-1].start,  # and its last
            )
        )
    return flags


# Trend -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrendBucket:
    """One week (Monday to Sunday) or calendar month in the site's local time: [start, end) in UTC."""

    label: str
    start: dt.datetime
    end: dt.datetime
    count: int
    partial: bool  # the bucket reaches outside [start, end) of the trend: fewer days were counted


@dataclass(frozen=True)
class Trend:
    """Episodes per bucket and what they show. The line is fitted to the whole buckets only: a partial
    one (fewer days counted) would read as a fall. `slope` is the least-squares slope in episodes per
    bucket; `mean` the mean count of the whole buckets (of every bucket when none is whole);
    `relative_slope` is slope / mean; `fitted` the line's level at each bucket, None at a partial one
    (left out). The target compares the fitted last whole bucket with the fitted first whole bucket
    reduced by `target_reduction_pct`."""

    bucket: Bucket
    buckets: tuple[TrendBucket, ...]
    mean: float
    slope: float | None
    relative_slope: float | None
    verdict: Verdict
    target_reduction_pct: float | None = None
    expected_last: float | None = None
    fitted_last: float | None = None
    target_verdict: Literal["on track", "behind"] | None = None
    fitted: tuple[float | None, ...] = ()

    @property
    def partial_left_out(self) -> int:
        """How many partial buckets the fit leaves out (a first, a last, or both)."""
        return sum(1 for b in self.buckets if b.partial)


def _bucket_start(day: dt.date, bucket: Bucket) -> dt.date:
    return day - dt.timedelta(days=day.weekday()) if bucket == "week" else day.replace(day=1)


def _next_bucket(day: dt.date, bucket: Bucket) -> dt.date:
    if bucket == "week":
        return day + dt.timedelta(days=7)
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _bucket_label(day: dt.date, bucket: Bucket) -> str:
    if bucket == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


def least_squares_slope(values: Sequence[float]) -> float | None:
    """The ordinary least-squares slope of `values` against 0, 1, 2, ...; None for fewer than 2."""
    m = len(values)
    if m < 2:
        return None
    x_mean = (m - 1) / 2
    y_mean = sum(values) / m
    sxy = sum((x - x_mean) * (y - y_mean) for x, y in enumerate(values))
    sxx = sum((x - x_mean) ** 2 for x in range(m))
    return sxy / sxx


def trend(
    episodes: Iterable[EpisodeFact],
    *,
    start: dt.datetime,
    end: dt.datetime,
    bucket: Bucket = "week",
    tz: dt.tzinfo,
    target_reduction_pct: float | None = None,
    now: dt.datetime | None = None,
) -> Trend:
    """Counted episodes that started in [start, end), per local week (Monday to Sunday) or calendar
    month of the site, every bucket from the one holding `start` to the one holding the last moment
    before `end` (and, given `now`, before now: a bucket yet to begin is no bucket), empty ones as 0. A
    bucket reaching outside [start, end), or past `now`, is marked `partial` and left out of the fit
    (its count is of fewer days: a last week of two days, or the month going on, would read as a
    fall); pass whole weeks or months to have every bucket in it.

    The verdict, from the whole buckets only: `relative_slope` = least-squares slope / mean count per
    whole bucket; above +5 % "rising", below -5 % "falling", else "flat" (also when there are no
    episodes at all); "unknown" with fewer than 2 whole buckets. With `target_reduction_pct`, the fitted
    level of the first whole bucket (at least 0) reduced by that percentage is `expected_last`; the
    fitted level of the last whole bucket at or below it is "on track", above it "behind".
    """
    _aware(start, "start")
    _aware(end, "end")
    if end <= start:
        raise ValueError(f"the trend's end {end.isoformat()} is not after its start {start.isoformat()}")
    if target_reduction_pct is not None and not 0 <= target_reduction_pct <= 100:
        raise ValueError(f"target_reduction_pct {target_reduction_pct} is not between 0 and 100")
    if now is not None:
        _aware(now, "now")
    upto = end if now is None else max(start + dt.timedelta(microseconds=1), min(end, now))
    first_day = _bucket_start(local_date(start, tz), bucket)
    last_day = local_date(upto - dt.timedelta(microseconds=1), tz)
    days: list[dt.date] = []
    day = first_day
    while day <= last_day:
        days.append(day)
        day = _next_bucket(day, bucket)
    per_bucket = Counter(
        _bucket_start(local_date(e.started_at, tz), bucket)
        for e in episodes_between(episodes, start=start, end=end)
    )
    buckets: list[TrendBucket] = []
    for i, day in enumerate(days):
        b_start = start_of_local_day(day, tz)
        b_end = start_of_local_day(days[i + 1] if i + 1 < len(days) else _next_bucket(day, bucket), tz)
        buckets.append(
            TrendBucket(
                label=_bucket_label(day, bucket),
                start=b_start,
                end=b_end,
                count=per_bucket[day],
                partial=b_start < start or b_end > upto,
            )
        )
    whole = [float(b.count) for b in buckets if not b.partial]  # contiguous: only an end can be partial
    counts = whole or [float(b.count) for b in buckets]
    mean = sum(counts) / len(counts)
    slope = least_squares_slope(whole)
    relative = None if slope is None or mean == 0 else slope / mean
    verdict: Verdict
    if slope is None:
        verdict = "unknown"
    elif relative is not None and relative > FLAT_BAND:
        verdict = "rising"
    elif relative is not None and relative < -FLAT_BAND:
        verdict = "falling"
    else:
        verdict = "flat"
    result = Trend(
        bucket=bucket,
        buckets=tuple(buckets),
        mean=mean,
        slope=slope,
        relative_slope=relative,
        verdict=verdict,
    )
    if slope is None:
        return replace(result, target_reduction_pct=target_reduction_pct)
    intercept = mean - slope * (len(whole) - 1) / 2  # the level at the first whole bucket
    first_whole = next(i for i, b in enumerate(buckets) if not b.partial)
    result = replace(
        result,
        fitted=tuple(
            None if b.partial else intercept + slope * (i - first_whole) for i, b in enumerate(buckets)
        ),
    )
    if target_reduction_pct is None:
        return result
    fitted_last = intercept + slope * (len(whole) - 1)
    expected_last = max(0.0, intercept) * (1 - target_reduction_pct / 100)
    return replace(
        result,
        target_reduction_pct=target_reduction_pct,
        expected_last=expected_last,
        fitted_last=fitted_last,
        # a small tolerance so that a fit landing exactly on the target is not "behind" by rounding
        target_verdict="on track" if fitted_last <= expected_last + 1e-9 else "behind",
    )


# Distributions ---------------------------------------------------------------------------------------


def by_hour(episodes: Iterable[EpisodeFact], tz: dt.tzinfo) -> dict[int, int]:
    """Counted episodes by the local hour (0 to 23) of their start; every hour present."""
    hours = Counter(e.started_at.astimezone(tz).hour for e in counted(episodes))
    return {hour: hours[hour] for hour in range(24)}


def by_weekday(episodes: Iterable[EpisodeFact], tz: dt.tzinfo) -> dict[Weekday, int]:
    """Counted episodes by the local weekday of their start, `mon` to `sun`; every day present."""
    days = Counter(WEEKDAYS[e.started_at.astimezone(tz).weekday()] for e in counted(episodes))
    return {day: days[day] for day in WEEKDAYS}


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def period_of(local_time: dt.time, timetable: Sequence[Period]) -> str:
    """The timetable period a local time of day falls in: from its start included to its end excluded;
    a period ending before it starts runs past midnight (a residential night); the first listed wins
    where periods overlap. "outside the timetable" when none holds it."""
    minute = local_time.hour * 60 + local_time.minute
    for period in timetable:
        begin, finish = _minutes(period.start), _minutes(period.end)
        inside = begin <= minute < finish if begin <= finish else minute >= begin or minute < finish
        if inside:
            return period.name
    return OUTSIDE_TIMETABLE


def by_period(episodes: Iterable[EpisodeFact], timetable: Sequence[Period], tz: dt.tzinfo) -> dict[str, int]:
    """Counted episodes by the timetable period their local start falls in (`period_of`), in timetable
    order, then "outside the timetable"; every period present."""
    periods = Counter(period_of(e.started_at.astimezone(tz).time(), timetable) for e in counted(episodes))
    names = [*dict.fromkeys(p.name for p in timetable), OUTSIDE_TIMETABLE]
    return {name: periods[name] for name in names}


def _sorted_counts(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


def by_room(episodes: Iterable[EpisodeFact], rooms: Iterable[str] = ()) -> dict[str, int]:
    """Counted episodes per room (pass one site's episodes), most first; each of `rooms` (the site
    file's) shown even with 0, as a room with none is a figure too."""
    counts = Counter[str](dict.fromkeys(rooms, 0))
    counts.update(e.room for e in counted(episodes))
    return _sorted_counts(counts)


def staff_key(name: str) -> str:
    """A member of staff as the figures count them: the name typed with its case and spacing set aside
    ("Ms  Ade" and "ms ade" are one person, not two half-counts)."""
    return " ".join(name.split()).casefold()


def by_staff(episodes: Iterable[EpisodeFact]) -> dict[str, int]:
    """Episodes each named member of staff was involved in (an episode counts once for each of its
    staff, so the counts add up to more than the episodes), most first; episodes naming nobody are
    counted under "no staff named" rather than dropped. Names differing only in case or spacing are one
    person, shown as the first of their spellings in sorted order."""
    keys = Counter[str]()
    spellings: dict[str, str] = {}
    for e in counted(episodes):
        for name in e.staff:
            shown = " ".join(name.split())
            key = staff_key(name)
            spellings[key] = min(spellings.get(key, shown), shown)
        keys.update({staff_key(name) for name in e.staff} or {NO_STAFF})
    return _sorted_counts(Counter({spellings.get(key, key): n for key, n in keys.items()}))


def by_staff_group(episodes: Iterable[EpisodeFact], groups: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """Episodes each group of staff (`groups`: each group's members, as the site file's `staff_groups`
    lists them) was involved in, an episode counting once per group however many of its members were
    there. A name listed in several groups counts for each of them; staff in no group count under
    "not in a group", episodes naming nobody under "no staff named"."""
    groups_of: dict[str, set[str]] = defaultdict(set)
    for group, names in groups.items():
        for name in names:
            groups_of[staff_key(name)].add(group)  # as typed in the record, case and spacing aside
    counts = Counter[str](dict.fromkeys(groups, 0))  # each group shown, even with 0
    for e in counted(episodes):
        counts.update(
            {group for name in e.staff for group in groups_of.get(staff_key(name)) or {UNGROUPED_STAFF}}
            or {NO_STAFF}
        )
    return _sorted_counts(counts)


def duration_histogram(episodes: Iterable[EpisodeFact]) -> dict[str, int]:
    """Counted episodes by `elapsed_s` in fixed bins of minutes: 0-5, 5-10, 10-20, 20-30, 30+, each
    from its lower bound included to its upper bound excluded (exactly 5 minutes is in 5-10)."""
    bins = Counter(duration_bin(e.elapsed_s) for e in counted(episodes))
    return {name: bins[name] for name, _, _ in DURATION_BINS}


def duration_bin(elapsed_s: float) -> str:
    """The `DURATION_BINS` label for a length in seconds (a negative length, which the hub never
    produces, falls in the first)."""
    return next((name for name, _, high in DURATION_BINS if elapsed_s < high), DURATION_BINS[-1][0])


# Supervision -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compliance:
    """How well counted episodes were supervised. Shares are of the summed `elapsed_s` (None when that
    is 0); `lapses_per_episode` is None without episodes."""

    episodes: int
    elapsed_s: float
    supervised_share: float | None
    unsupervised_share: float | None
    unknown_share: float | None
    lapses: int
    lapses_per_episode: float | None
    episodes_with_lapse: int


def supervision_compliance(episodes: Iterable[EpisodeFact]) -> Compliance:
    """Share of episode time supervised (sum of `supervised_s` / sum of `elapsed_s`), unsupervised and
    unknown likewise; lapses (every unsupervised interval: `EpisodeFact.lapses`), lapses per episode;
    episodes with at least one lapse."""
    shown = counted(episodes)
    elapsed = sum(e.elapsed_s for e in shown)

    def share(part: Callable[[EpisodeFact], float]) -> float | None:
        return sum(part(e) for e in shown) / elapsed if elapsed > 0 else None

    lapses = sum(e.lapses for e in shown)
    return Compliance(
        episodes=len(shown),
        elapsed_s=elapsed,
        supervised_share=share(lambda e: e.supervised_s),
        unsupervised_share=share(lambda e: e.unsupervised_s),
        unknown_share=share(lambda e: e.unknown_s),
        lapses=lapses,
        lapses_per_episode=lapses / len(shown) if shown else None,
        episodes_with_lapse=sum(1 for e in shown if e.lapses > 0),
    )
