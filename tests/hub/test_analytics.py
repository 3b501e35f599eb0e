"""The leaders' review figures (core/analytics.py, docs/review.md): every answer worked out by hand here."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Collection, Sequence
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seclusion_hub.core.analytics import (
    NO_STAFF,
    OUTSIDE_TIMETABLE,
    UNGROUPED_STAFF,
    Classes,
    EpisodeFact,
    GroupRate,
    PupilFact,
    age_band,
    age_on,
    by_hour,
    by_period,
    by_room,
    by_staff,
    by_staff_group,
    by_weekday,
    characteristic_value,
    classes,
    counted,
    densest_window,
    disproportionality,
    duration_histogram,
    episodes_between,
    katz_interval,
    least_squares_slope,
    pattern_flags,
    period_of,
    risk_ratio,
    shared_groups,
    supervision_compliance,
    suppress,
    suppress_counts,
    suppress_linked,
    trend,
)
from seclusion_hub.core.policy import PatternTrigger
from seclusion_hub.core.site import Period

UTC = dt.UTC
LONDON = ZoneInfo("Europe/London")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
SITE = "oak"
START = dt.datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; London is on GMT
END = dt.datetime(2026, 4, 1, tzinfo=UTC)
THREE_IN_30 = PatternTrigger(count=3, window_days=30, label="repeated seclusion")

_numbers = iter(range(1_000_000))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def episode(
    started_at: dt.datetime,
    pupil_id: str | None = "p1",
    *,
    elapsed_s: float = 600,
    supervised_s: float | None = None,
    unsupervised_s: float = 0,
    unknown_s: float = 0,
    lapses: int = 0,
    room: str = "calm-1",
    staff: tuple[str, ...] = (),
    test: bool = False,
    site: str = SITE,
    classification: str | None = None,
) -> EpisodeFact:
    return EpisodeFact(
        id=f"e{next(_numbers)}",
        site=site,
        room=room,
        pupil_id=pupil_id,
        started_at=started_at,
        elapsed_s=elapsed_s,
        duration_s=elapsed_s,
        supervised_s=elapsed_s - unsupervised_s - unknown_s if supervised_s is None else supervised_s,
        unsupervised_s=unsupervised_s,
        unknown_s=unknown_s,
        lapses=lapses,
        staff=staff,
        test=test,
        classification=classification,
    )


def pupil(pupil_id: str, site: str = SITE, born: dt.date | None = None, **groups: Any) -> PupilFact:
    return PupilFact(id=pupil_id, site=site, date_of_birth=born, groups=groups)


# Disproportionality -------------------------------------------------------------------------------


def sen_school() -> tuple[list[PupilFact], list[EpisodeFact]]:
    """40 children with an EHCP, 8 of them secluded (one of them 3 times: 10 episodes); 160 children
    without SEN, 8 of them secluded once each; plus episodes that must not count."""
    pupils = [pupil(f"ehcp-{i}", sen="ehcp") for i in range(40)]
    pupils += [pupil(f"none-{i}", sen="none") for i in range(160)]
    day = utc(2026, 2, 2, 10)
    episodes = [episode(day + dt.timedelta(days=i), f"ehcp-{i}") for i in range(8)]
    episodes += [
        episode(day + dt.timedelta(days=20), "ehcp-0"),
        episode(day + dt.timedelta(days=30), "ehcp-0"),
    ]
    episodes += [episode(day + dt.timedelta(days=i), f"none-{i}") for i in range(8)]
    episodes += [
        episode(day, "ehcp-20", test=True),  # maintenance: never counted
        episode(START - dt.timedelta(seconds=1), "ehcp-21"),  # before the period
        episode(END, "ehcp-22"),  # the end is excluded
        episode(day, None),  # nobody named: belongs to no group
        episode(day, "somebody-else"),  # not on the register
        episode(day, "ehcp-23", site="elm"),  # another site's episode, with site= given
    ]
    return pupils, episodes


def test_risk_ratio_of_4_with_its_katz_interval() -> None:
    pupils, episodes = sen_school()
    rows = disproportionality(pupils, episodes, "sen", start=START, end=END, tz=UTC, site=SITE)
    assert [row.group for row in rows] == ["none", "ehcp"]
    ehcp = rows[1]
    assert (ehcp.n, ehcp.k, ehcp.episodes) == (40, 8, 10)
    assert (ehcp.rest_n, ehcp.rest_k, ehcp.rest_episodes) == (160, 8, 8)
    assert ehcp.rate_per_100 == pytest.approx(20.0)
    assert ehcp.rest_rate_per_100 == pytest.approx(5.0)
    assert ehcp.risk_ratio == pytest.approx(4.0)
    # Katz: ln 4 ± 1.96 · sqrt(1/8 - 1/40 + 1/8 - 1/160) = ln 4 ± 1.96 · sqrt(0.21875)
    se = math.sqrt(0.21875)
    assert ehcp.ci_low == pytest.approx(4 * math.exp(-1.96 * se))
    assert ehcp.ci_high == pytest.approx(4 * math.exp(1.96 * se))
    assert ehcp.ci_low == pytest.approx(1.5993, abs=1e-4)
    assert ehcp.ci_high == pytest.approx(10.0042, abs=1e-4)
    assert not ehcp.suppressed
    # the other side is the mirror image
    none = rows[0]
    assert none.risk_ratio == pytest.approx(0.25)
    assert none.ci_low is not None and ehcp.ci_high is not None
    assert none.ci_low == pytest.approx(1 / ehcp.ci_high)


def test_ehcp_derived_from_sen_gives_the_same_answer() -> None:
    pupils, episodes = sen_school()
    rows = disproportionality(pupils, episodes, "ehcp", start=START, end=END, tz=UTC, site=SITE)
    assert [(r.group, r.n, r.k) for r in rows] == [("yes", 40, 8), ("no", 160, 8)]
    assert rows[0].risk_ratio == pytest.approx(4.0) and rows[1].risk_ratio == pytest.approx(0.25)
    # without site=, the other site's episode of ehcp-23 counts: 9 of 40 secluded
    everywhere = disproportionality(pupils, episodes, "ehcp", start=START, end=END, tz=UTC)
    assert everywhere[0].k == 9


def test_a_typed_value_is_one_group_whatever_its_case_and_spacing() -> None:
    """The register's `sex` and `ethnicity` are as the school typed them (a CSV from one system, a form
    filled in by hand): "White British" and "white  british" are one group of children, not two
    half-groups whose small counts would each be withheld or read as two rates."""
    pupils = [pupil(f"a{i}", ethnicity="White British") for i in range(6)]
    pupils += [pupil(f"b{i}", ethnicity="white  british ") for i in range(4)]
    pupils += [pupil(f"c{i}", ethnicity="Black Caribbean") for i in range(10)]
    pupils += [pupil("d0", ethnicity="Unknown"), pupil("d1", ethnicity="  ")]
    episodes = [
        episode(utc(2026, 2, 2), "b0"),
        episode(utc(2026, 2, 3), "a1"),
        episode(utc(2026, 2, 4), "c0"),
    ]
    rows = disproportionality(pupils, episodes, "ethnicity", start=START, end=END, tz=UTC)
    assert [(r.group, r.n, r.k) for r in rows] == [
        ("Black Caribbean", 10, 1),
        ("White British", 10, 2),
        ("unknown", 2, 0),
    ]
    links = shared_groups(pupils, "ethnicity", "sex", on=START.date())
    assert links == {("Black Caribbean", "unknown"), ("White British", "unknown"), ("unknown", "unknown")}


def test_unknown_values_form_their_own_group() -> None:
    pupils = [pupil(f"a{i}", sex="female") for i in range(10)]
    pupils += [pupil(f"b{i}", sex="male") for i in range(10)]
    pupils += [pupil(f"c{i}") for i in range(6)] + [pupil("d", sex="")]
    episodes = [
        episode(utc(2026, 2, 2), "c0"),
        episode(utc(2026, 2, 3), "a0"),
        episode(utc(2026, 2, 4), "b1"),
    ]
    rows = {
        row.group: row for row in disproportionality(pupils, episodes, "sex", start=START, end=END, tz=UTC)
    }
    assert list(rows) == ["female", "male", "unknown"]
    assert (rows["unknown"].n, rows["unknown"].k, rows["unknown"].rest_n, rows["unknown"].rest_k) == (
        7,
        1,
        20,
        2,
    )
    assert rows["unknown"].risk_ratio == pytest.approx((1 / 7) / (2 / 20))


def test_undefined_ratios_are_none_never_an_error() -> None:
    # nobody secluded in the rest: no ratio; nobody secluded in the group: ratio 0, no interval
    pupils = [pupil(f"y{i}", fsm=True) for i in range(10)] + [pupil(f"n{i}", fsm=False) for i in range(10)]
    episodes = [episode(utc(2026, 2, 2), "y0")]
    rows = {
        row.group: row for row in disproportionality(pupils, episodes, "fsm", start=START, end=END, tz=UTC)
    }
    assert rows["yes"].risk_ratio is None and rows["yes"].ci_low is None and rows["yes"].ci_high is None
    assert rows["no"].risk_ratio == 0.0 and rows["no"].ci_low is None
    assert rows["no"].rate_per_100 == 0.0


def test_everyone_in_one_group_has_no_rest() -> None:
    pupils = [pupil(f"p{i}", looked_after=True) for i in range(6)]
    (row,) = disproportionality(
        pupils, [episode(utc(2026, 2, 2), "p0")], "looked_after", start=START, end=END, tz=UTC
    )
    assert (row.group, row.n, row.k, row.rest_n, row.rest_k) == ("yes", 6, 1, 0, 0)
    assert row.rest_rate_per_100 is None and row.risk_ratio is None and row.ci_low is None


def test_empty_register_and_no_episodes() -> None:
    assert disproportionality([], [], "sen", start=START, end=END, tz=UTC) == []
    rows = disproportionality([pupil("a", sen="none")], [], "sen", start=START, end=END, tz=UTC)
    assert rows[0].k == 0 and rows[0].rate_per_100 == 0.0 and rows[0].risk_ratio is None


def test_unknown_characteristic_is_refused() -> None:
    with pytest.raises(ValueError, match="not a characteristic"):
        disproportionality([], [], "shoe_size", start=START, end=END, tz=UTC)  # type: ignore[arg-type]


def test_katz_interval_edges() -> None:
    assert katz_interval(0, 10, 2, 10) is None
    assert katz_interval(2, 10, 0, 10) is None
    assert katz_interval(2, 0, 2, 10) is None
    assert katz_interval(None, 10, 2, 10) is None
    # everyone secluded on both sides: no spread at all
    interval = katz_interval(5, 5, 5, 5)
    assert interval is not None and interval[0] == pytest.approx(1.0) and interval[1] == pytest.approx(1.0)
    assert risk_ratio(2, 10, 1, 20) == pytest.approx(4.0)
    assert risk_ratio(2, 0, 1, 20) is None


# Characteristics ------------------------------------------------------------------------------------


def test_characteristic_values() -> None:
    on = dt.date(2026, 9, 1)
    child = pupil("a", sen="sen_support", fsm=True, looked_after=False, ethnicity="WBRI")
    assert characteristic_value(child, "sen", on) == "sen_support"
    assert characteristic_value(child, "ehcp", on) == "no"
    assert characteristic_value(pupil("b", sen="ehcp"), "ehcp", on) == "yes"
    assert characteristic_value(pupil("c"), "ehcp", on) == "unknown"
    assert characteristic_value(pupil("d", sen="ehcp", ehcp=False), "ehcp", on) == "no"  # recorded wins
    assert characteristic_value(child, "fsm", on) == "yes"
    assert characteristic_value(child, "looked_after", on) == "no"
    assert characteristic_value(child, "ethnicity", on) == "WBRI"
    assert characteristic_value(child, "sex", on) == "unknown"
    assert characteristic_value(child, "age_band", on) == "unknown"


def test_age_bands() -> None:
    born = dt.date(2015, 9, 1)
    assert age_on(born, dt.date(2026, 8, 31)) == 10
    assert age_on(born, dt.date(2026, 9, 1)) == 11
    assert age_band(born, dt.date(2026, 8, 31)) == "7-10"
    assert age_band(born, dt.date(2026, 9, 1)) == "11-13"
    leap = dt.date(2012, 2, 29)
    assert age_on(leap, dt.date(2026, 2, 28)) == 13 and age_on(leap, dt.date(2026, 3, 1)) == 14
    assert age_band(dt.date(2023, 1, 1), dt.date(2026, 1, 1)) == "under 5"
    assert age_band(dt.date(2000, 1, 1), dt.date(2026, 1, 1)) == "16+"


def test_age_band_groups_in_order_at_the_reference_date() -> None:
    pupils = [
        pupil("old", born=dt.date(2010, 1, 1)),
        pupil("young", born=dt.date(2020, 6, 1)),
        pupil("turns-11", born=dt.date(2015, 1, 10)),
        pupil("nobody-knows"),
    ]
    rows = disproportionality(pupils, [], "age_band", start=START, end=END, tz=UTC)
    assert [(r.group, r.n) for r in rows] == [("5-6", 1), ("7-10", 1), ("16+", 1), ("unknown", 1)]
    later = disproportionality(pupils, [], "age_band", start=START, end=END, tz=UTC, on=dt.date(2026, 2, 1))
    assert [(r.group, r.n) for r in later] == [("5-6", 1), ("11-13", 1), ("16+", 1), ("unknown", 1)]


def test_age_band_is_the_age_on_the_first_day_of_the_period_at_the_school() -> None:
    """A term from midnight BST on 1 September is 23:00 UTC on 31 August: a child born on 1 September
    2021 is 5 on the school's first day of the period (the UTC date made it 4, "under 5")."""
    term = dt.datetime(2026, 9, 1, tzinfo=LONDON)
    birthday = [pupil("birthday", born=dt.date(2021, 9, 1))]
    rows = disproportionality(
        birthday, [], "age_band", start=term, end=term + dt.timedelta(days=90), tz=LONDON
    )
    assert [(r.group, r.n) for r in rows] == [("5-6", 1)]


# Suppression ----------------------------------------------------------------------------------------


def row(group: str, n: int, k: int, episodes: int, total_n: int, total_k: int, total_e: int) -> GroupRate:
    rest_n, rest_k = total_n - n, total_k - k
    interval = katz_interval(k, n, rest_k, rest_n)
    return GroupRate(
        characteristic="sen",
        group=group,
        n=n,
        k=k,
        episodes=episodes,
        rate_per_100=k / n * 100,
        rest_n=rest_n,
        rest_k=rest_k,
        rest_episodes=total_e - episodes,
        rest_rate_per_100=rest_k / rest_n * 100 if rest_n else None,
        risk_ratio=risk_ratio(k, n, rest_k, rest_n),
        ci_low=interval[0] if interval else None,
        ci_high=interval[1] if interval else None,
    )


def test_counts_of_1_to_4_are_withheld_with_everything_computed_from_them() -> None:
    rows = [row("none", 100, 10, 12, 150, 23, 30), row("sen_support", 30, 3, 8, 150, 23, 30)]
    rows.append(row("ehcp", 20, 10, 10, 150, 23, 30))
    shown = suppress(rows)
    support = shown[1]
    assert support.suppressed
    assert (support.n, support.k, support.episodes) == (30, None, 8)
    assert support.rest_k is None  # 23 - 3: with the total known it would give the 3 back
    assert support.rate_per_100 is None and support.risk_ratio is None
    assert support.ci_low is None and support.ci_high is None
    assert support.rest_rate_per_100 is None
    # only one group's k withheld: the smallest other non-zero k (ehcp's 10 ties none's 10: the first)
    assert shown[0].k is None and shown[0].rest_k is None and shown[0].suppressed
    assert shown[2].k == 10 and shown[2].rest_k == 13
    assert shown[2].risk_ratio == rows[2].risk_ratio and shown[2].ci_low == rows[2].ci_low
    # nobody can now work out a withheld k from the total and the rest
    assert sum(r.k is None for r in shown) == 2


@pytest.mark.parametrize(("count", "withheld"), [(0, False), (1, True), (4, True), (5, False), (40, False)])
def test_the_threshold(count: int, withheld: bool) -> None:
    shown = suppress_counts({"a": count, "b": 100, "c": 200})
    assert (shown["a"] is None) is withheld
    assert (shown["b"] is None) is withheld  # the lone withheld count takes the next smallest with it
    assert shown["c"] == 200


def test_zero_is_shown() -> None:
    rows = [row("yes", 40, 0, 0, 200, 20, 25), row("no", 160, 20, 25, 200, 20, 25)]
    shown = suppress(rows)
    assert shown == rows
    assert shown[0].k == 0 and not shown[0].suppressed


def test_a_small_rest_withholds_the_group_count_too() -> None:
    rows = [row("no", 180, 30, 40, 190, 32, 43), row("yes", 10, 2, 3, 190, 32, 43)]
    shown = suppress(rows)
    assert shown[1].k is None and shown[1].episodes is None and shown[1].n == 10
    assert shown[0].rest_k is None and shown[0].k is None  # complement of a withheld 2
    assert shown[0].rest_episodes is None and shown[0].episodes is None
    assert shown[0].n == 180 and shown[0].rest_n == 10
    assert shown[0].risk_ratio is None and shown[0].rate_per_100 is None


def test_suppress_counts_secondary_and_zero() -> None:
    assert suppress_counts({"a": 3, "b": 10, "c": 7, "d": 0}) == {"a": None, "b": 10, "c": None, "d": 0}
    assert suppress_counts({"a": 2, "b": 3, "c": 9}) == {"a": None, "b": None, "c": 9}
    assert suppress_counts({"a": 3, "b": 0}) == {"a": None, "b": 0}
    assert suppress_counts({}) == {}


registers = st.lists(
    st.tuples(st.sampled_from(["none", "sen_support", "ehcp", None]), st.integers(0, 3)),
    min_size=1,
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(register=registers)
def test_suppressed_reports_cannot_be_back_calculated(register: list[tuple[str | None, int]]) -> None:
    pupils = [pupil(f"p{i}", sen=sen) for i, (sen, _) in enumerate(register)]
    episodes = [
        episode(START + dt.timedelta(days=j), f"p{i}")
        for i, (_, times) in enumerate(register)
        for j in range(times)
    ]
    rows = disproportionality(pupils, episodes, "sen", start=START, end=END, tz=UTC)
    shown = suppress(rows)
    assert [r.group for r in shown] == [r.group for r in rows]
    for before, after in zip(rows, shown, strict=True):
        for name in ("n", "k", "episodes", "rest_n", "rest_k", "rest_episodes"):
            value = getattr(after, name)
            assert value is None or value == 0 or value >= 5
            assert value is None or value == getattr(before, name)
        for group_name, rest_name in (("n", "rest_n"), ("k", "rest_k"), ("episodes", "rest_episodes")):
            assert (getattr(after, group_name) is None) == (getattr(after, rest_name) is None)
        if after.k is None or after.n is None:
            assert after.rate_per_100 is None and after.risk_ratio is None and after.ci_low is None
        if after.rest_k is None or after.rest_n is None:
            assert after.rest_rate_per_100 is None and after.risk_ratio is None and after.ci_high is None
        assert (after == before) != after.suppressed  # a row is marked exactly when it changed
    if len(shown) >= 2:
        for name in ("n", "k", "episodes"):
            # one lone withheld count in a column would be the total minus the others
            assert sum(getattr(r, name) is None for r in shown) != 1


def _rank(vectors: list[list[Fraction]]) -> int:
    """The rank of a few short vectors (Gaussian elimination in exact fractions)."""
    rows = [list(v) for v in vectors]
    rank = 0
    for col in range(len(rows[0]) if rows else 0):
        pivot = next((r for r in range(rank, len(rows)) if rows[r][col] != 0), None)
        if pivot is None:
            continue
        rows[rank], rows[pivot] = rows[pivot], rows[rank]
        for r in range(len(rows)):
            if r != rank and rows[r][col] != 0:
                factor = rows[r][col] / rows[rank][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[rank], strict=True)]
        rank += 1
    return rank


def worked_out(tables: Sequence[Sequence[GroupRate]], links: Collection[tuple[str, str]]) -> list[str]:
    """The withheld counts of two linked tables that a reader can work out from the shown ones by sums
    and differences. Each column (n, k, episodes) is a sum over the children, each of whom is in one
    group of each table: its unknowns are the counts of each linked pair of groups (0 for a pair with no
    child in common, which the register tells). A group's count is the sum of its pairs, the rest's the
    sum of the others; a withheld count can be worked out exactly when its sum is a combination of the
    shown ones."""
    pairs = sorted(links)
    found = []
    for group_name, rest_name in (("n", "rest_n"), ("k", "rest_k"), ("episodes", "rest_episodes")):
        shown: list[list[Fraction]] = []
        withheld: list[tuple[str, list[Fraction]]] = []
        for side, rows in enumerate(tables):
            for r in rows:
                member = [Fraction(int(pair[side] == r.group)) for pair in pairs]
                for name, vector in ((group_name, member), (rest_name, [1 - m for m in member])):
                    if getattr(r, name) is None:
                        withheld.append((f"{r.characteristic} {r.group} {name}", vector))
                    else:
                        shown.append(vector)
        known = _rank(shown)
        # (a sum over no pair, such as the rest of a table's only group, is 0 whatever the register)
        found += [cell for cell, vector in withheld if any(vector) and _rank([*shown, vector]) == known]
    return found


def sen_and_ehcp(
    pupils: list[PupilFact], episodes: list[EpisodeFact]
) -> tuple[list[GroupRate], list[GroupRate], set[tuple[str, str]]]:
    sen = disproportionality(pupils, episodes, "sen", start=START, end=END, tz=UTC)
    ehcp = disproportionality(pupils, episodes, "ehcp", start=START, end=END, tz=UTC)
    return sen, ehcp, shared_groups(pupils, "sen", "ehcp", on=START.date())


def test_sen_and_ehcp_suppressed_one_by_one_give_back_a_withheld_count() -> None:
    """review.md: small numbers are withheld "so that no child can be identified from a small count".
    `ehcp` is derived from `sen`, so its "no" group is sen none plus SEN support. Each table suppressed
    on its own withheld the 3 children with an EHC plan secluded, yet the two tables together gave the 3
    back: 34 secluded in all, less none's 20, less (ehcp "no" 25 less none's 20), less unknown's 6."""
    pupils, episodes = [], []
    groups = [("none", "none", 100, 20), ("support", "sen_support", 30, 5), ("ehcp", "ehcp", 10, 3)]
    for prefix, value, n, k in [*groups, ("unknown", None, 20, 6)]:
        for i in range(n):
            pupils.append(pupil(f"{prefix}{i}", sen=value))
            if i < k:
                episodes.append(episode(START + dt.timedelta(days=1), f"{prefix}{i}"))
    sen, ehcp, links = sen_and_ehcp(pupils, episodes)
    assert links == {("none", "no"), ("sen_support", "no"), ("ehcp", "yes"), ("unknown", "unknown")}
    apart = [*suppress(sen), *suppress(ehcp)]
    assert "sen ehcp k" in worked_out([suppress(sen), suppress(ehcp)], links), "the leak, one by one"
    shown_sen, shown_ehcp = suppress_linked(sen, ehcp, links)
    assert worked_out([shown_sen, shown_ehcp], links) == []
    # The 3 is withheld in both; withholding it in one spreads to its links in the other, whose lone
    # withheld count takes another with it, and so on: here every k and episodes count of both.
    assert {r.group: r.k for r in shown_sen} == dict.fromkeys(["none", "sen_support", "ehcp", "unknown"])
    assert {r.group: r.k for r in shown_ehcp} == dict.fromkeys(["yes", "no", "unknown"])
    assert [r.n for r in shown_sen] == [100, 30, 10, 20], "nothing small among the n: all shown"
    assert [r.n for r in shown_ehcp] == [10, 130, 20]
    assert all(r.suppressed for r in (*shown_sen, *shown_ehcp)) and any(not r.suppressed for r in apart)


def test_suppress_linked_withholds_no_more_than_its_links_need() -> None:
    """A small count in a group linked to nothing small spreads to its links and, through their lone
    withheld counts, to as few others as the rules need; groups with nothing to hide stay shown."""
    pupils = [pupil(f"a{i}", sen="none") for i in range(40)] + [pupil(f"b{i}", sen="ehcp") for i in range(40)]
    pupils += [pupil(f"c{i}", sen="sen_support") for i in range(40)]
    day = START + dt.timedelta(days=1)
    episodes = [episode(day, f"a{i}") for i in range(10)] + [episode(day, f"b{i}") for i in range(2)]
    episodes += [episode(day, f"c{i}") for i in range(12)]
    sen, ehcp, links = sen_and_ehcp(pupils, episodes)
    shown_sen, shown_ehcp = suppress_linked(sen, ehcp, links)
    assert worked_out([shown_sen, shown_ehcp], links) == []
    # sen k: none 10, support 12, ehcp 2: the 2 and (smallest other) none's 10; ehcp k: yes 2, no 22:
    # yes and no; no's links, none and SEN support, are withheld in sen: all three.
    assert [r.k for r in shown_sen] == [None, None, None] and [r.k for r in shown_ehcp] == [None, None]
    assert all(r.n == 40 for r in shown_sen), "n has nothing small: shown"


sen_registers = st.lists(
    st.tuples(
        st.sampled_from(["none", "sen_support", "ehcp", None]),
        st.sampled_from([None, None, True, False]),  # an EHC plan recorded itself now and then
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(register=sen_registers)
def test_linked_sen_and_ehcp_tables_cannot_be_back_calculated(
    register: list[tuple[str | None, bool | None, int]],
) -> None:
    """No withheld count of either table is a sum or difference of shown counts of both, and every rule
    of `suppress` still holds in each table."""
    pupils = [pupil(f"p{i}", sen=sen, ehcp=ehcp) for i, (sen, ehcp, _) in enumerate(register)]
    episodes = [
        episode(START + dt.timedelta(days=j), f"p{i}")
        for i, (_, _, times) in enumerate(register)
        for j in range(times)
    ]
    sen, ehcp, links = sen_and_ehcp(pupils, episodes)
    shown = suppress_linked(sen, ehcp, links)
    assert worked_out(shown, links) == []
    for rows, after_rows in zip((sen, ehcp), shown, strict=True):
        single = suppress(rows)
        for before, alone, after in zip(rows, single, after_rows, strict=True):
            for name in ("n", "k", "episodes", "rest_n", "rest_k", "rest_episodes"):
                value = getattr(after, name)
                assert value is None or value == getattr(before, name)
                assert getattr(alone, name) is not None or value is None, "at least what suppress withholds"
            if after.k is None or after.n is None or after.rest_k is None or after.rest_n is None:
                assert after.risk_ratio is None and after.ci_low is None and after.ci_high is None
            assert (after == before) != after.suppressed


# Patterns -------------------------------------------------------------------------------------------

NOW = utc(2026, 6, 1)


def test_three_within_30_days_flags() -> None:
    first = utc(2026, 3, 1, 9)
    trio = [
        episode(first, "p1"),
        episode(first + dt.timedelta(days=12), "p1"),
        episode(first + dt.timedelta(days=30) - dt.timedelta(seconds=1), "p1"),
    ]
    (flag,) = pattern_flags(trio, [THREE_IN_30], NOW)
    assert (flag.kind, flag.label, flag.pupil_id) == ("pattern", "repeated seclusion", "p1")
    assert flag.episode_ids == tuple(e.id for e in trio) and flag.count == 3
    assert (flag.first_start, flag.last_start) == (first, trio[-1].started_at)


def test_three_spread_over_31_days_do_not() -> None:
    # 1, 16 and 31 March: the first and last are 30 days apart, 31 days counted inclusively
    spread = [episode(utc(2026, 3, day, 9), "p1") for day in (1, 16, 31)]
    assert pattern_flags(spread, [THREE_IN_30], NOW) == []


def test_the_densest_window_is_named() -> None:
    days = [0, 40, 45, 50, 55, 90]
    episodes = [episode(utc(2026, 1, 1) + dt.timedelta(days=d), "p1") for d in days]
    (flag,) = pattern_flags(episodes, [THREE_IN_30], NOW)
    assert flag.episode_ids == tuple(e.id for e in episodes[1:5])
    assert flag.first_start == utc(2026, 2, 10) and flag.last_start == utc(2026, 2, 25)


def test_densest_window_prefers_the_latest_of_equals() -> None:
    episodes = [episode(utc(2026, 1, 1) + dt.timedelta(days=d), "p1") for d in (0, 1, 100, 101)]
    assert densest_window(episodes, dt.timedelta(days=30)) == episodes[2:]
    assert densest_window([], dt.timedelta(days=30)) == []
    # with `since`, a run must reach it: the densest of those with an episode from then on
    trio = [episode(utc(2026, 1, 1) + dt.timedelta(days=d), "p1") for d in (0, 1, 2, 100)]
    month = dt.timedelta(days=30)
    assert densest_window(trio, month) == densest_window(trio, month, utc(2026, 1, 3)) == trio[:3]
    assert densest_window(trio, month, utc(2026, 1, 4)) == trio[3:]
    assert densest_window(trio, month, utc(2026, 5, 1)) == []


def test_only_episodes_up_to_now_and_not_tests() -> None:
    base = utc(2026, 5, 20)
    episodes = [
        episode(base, "p1"),
        episode(base + dt.timedelta(days=1), "p1"),
        episode(NOW + dt.timedelta(seconds=1), "p1"),  # after now
        episode(base, "p2"),
        episode(base + dt.timedelta(days=1), "p2"),
        episode(base + dt.timedelta(days=2), "p2", test=True),
        episode(base, None),
        episode(base, None),
        episode(base, None),  # nobody named: no pattern
    ]
    assert pattern_flags(episodes, [THREE_IN_30], NOW) == []
    at_now = [*episodes[:2], episode(NOW, "p1")]  # at now counts
    assert [f.pupil_id for f in pattern_flags(at_now, [THREE_IN_30], NOW)] == ["p1"]


def test_a_pattern_across_the_start_of_the_period_is_flagged_when_one_episode_is_in_it() -> None:
    """review.md, Patterns: `count` episodes within one window, "at any time up to now". The figures read
    only the period's episodes, so a child secluded on 24 and 28 August and again on 2 September (3 in
    9 days) was not flagged on the autumn term's review. With `since`, earlier episodes complete a
    window, and a window is flagged only when one of its episodes is in the period."""
    term, now = utc(2026, 8, 31, 23), utc(2026, 12, 1)  # 1 September at the school; the review
    august = [episode(utc(2026, 8, 24, 10), "p1"), episode(utc(2026, 8, 28, 10), "p1")]
    september = episode(utc(2026, 9, 2, 10), "p1")
    (flag,) = pattern_flags([*august, september], [THREE_IN_30], now, since=term)
    assert flag.episode_ids == (*(e.id for e in august), september.id)
    assert (flag.first_start, flag.last_start) == (august[0].started_at, september.started_at)
    # Three all before the period: a window with none of its episodes in the period is not this review's
    before = [*august, episode(utc(2026, 8, 30, 10), "p1")]
    assert pattern_flags(before, [THREE_IN_30], now, since=term) == []
    assert len(pattern_flags(before, [THREE_IN_30], now)) == 1
    # The densest window with an episode in the period is named, not a denser one wholly before it
    early = [episode(utc(2026, 7, 1, 10 + i), "p1") for i in range(4)]
    (flag,) = pattern_flags([*early, *august, september], [THREE_IN_30], now, since=term)
    assert flag.count == 3 and flag.last_start == september.started_at
    # A lengthy episode before the period is not flagged on this review
    long_before = episode(utc(2026, 8, 30, 10), "p2", elapsed_s=3600)
    assert pattern_flags([long_before], [], now, lengthy_after_s=600, since=term) == []


def test_each_trigger_is_its_own_flag() -> None:
    yearly = PatternTrigger(count=10, window_days=365, label="state notice")
    episodes = [episode(utc(2025, 7, 1) + dt.timedelta(days=20 * i), "p1") for i in range(10)]
    flags = pattern_flags(episodes, [THREE_IN_30, yearly], NOW)
    assert [(f.label, f.count) for f in flags] == [("state notice", 10)]
    flags = pattern_flags([*episodes, episode(utc(2026, 1, 2), "p1")], [THREE_IN_30, yearly], NOW)
    assert {f.label for f in flags} == {"repeated seclusion", "state notice"}


def test_lengthy_episodes() -> None:
    episodes = [
        episode(utc(2026, 3, 1), "p1", elapsed_s=1800),
        episode(utc(2026, 3, 2), None, elapsed_s=1801),
        episode(utc(2026, 3, 3), "p2", elapsed_s=5000, test=True),
    ]
    flags = pattern_flags(episodes, [], NOW, lengthy_after_s=1800)
    assert [(f.kind, f.pupil_id, f.episode_ids) for f in flags] == [("lengthy", None, (episodes[1].id,))]
    assert pattern_flags(episodes, [], NOW) == []


def test_lengthy_is_judged_by_each_rooms_own_first_duration_alert() -> None:
    """A room whose policy overrides set an earlier first duration alert flags its own episodes by it
    (the site's first room's policy used to judge every room)."""
    eight_minutes = [
        episode(utc(2026, 3, 1), "p1", elapsed_s=480, room="calm-1"),
        episode(utc(2026, 3, 2), "p1", elapsed_s=480, room="calm-2"),
        episode(utc(2026, 3, 3), "p1", elapsed_s=480, room="calm-3"),  # a room with no duration alert
    ]
    flags = pattern_flags(eight_minutes, [], NOW, lengthy_after_s={"calm-1": 600, "calm-2": 300})
    assert [f.episode_ids for f in flags] == [(eight_minutes[1].id,)]


def test_rising_flag_from_the_trend() -> None:
    rising = weekly_trend([1, 2, 3, 4])
    flags = pattern_flags([], [], NOW, trend=rising)
    assert [(f.kind, f.pupil_id, f.label) for f in flags] == [
        ("rising", None, "rising: +40% of the mean per week")
    ]
    assert flags[0].first_start == START
    assert pattern_flags([], [], NOW, trend=weekly_trend([4, 4, 4, 4])) == []


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        pattern_flags([], [], dt.datetime(2026, 6, 1))


# Trend ----------------------------------------------------------------------------------------------


def weekly_trend(counts: Sequence[int], *, target: float | None = None) -> Any:
    """Episodes on the Wednesday of each week from Monday 5 January 2026, `counts[i]` in week i."""
    episodes = [
        episode(START + dt.timedelta(weeks=week, days=2, hours=10, minutes=j), "p1")
        for week, count in enumerate(counts)
        for j in range(count)
    ]
    return trend(
        episodes,
        start=START,
        end=START + dt.timedelta(weeks=len(counts)),
        bucket="week",
        tz=LONDON,
        target_reduction_pct=target,
    )


@pytest.mark.parametrize(
    ("counts", "slope", "verdict"),
    [
        ([1, 2, 3, 4], 1.0, "rising"),
        ([4, 3, 2, 1], -1.0, "falling"),
        ([5, 5, 5, 5], 0.0, "flat"),
        ([10, 10, 10, 11], 0.3, "flat"),  # 0.3 / 10.25 = 2.9 % a week
        ([20, 20, 20, 24], 1.2, "rising"),  # 1.2 / 21 = 5.7 % a week
        ([24, 20, 20, 20], -1.2, "falling"),
        ([0, 0, 0, 0], 0.0, "flat"),
    ],
)
def test_trend_verdicts(counts: list[int], slope: float, verdict: str) -> None:
    result = weekly_trend(counts)
    assert [b.count for b in result.buckets] == counts
    assert result.slope == pytest.approx(slope)
    assert result.verdict == verdict
    assert result.mean == pytest.approx(sum(counts) / len(counts))


def test_trend_includes_empty_buckets_and_labels_them() -> None:
    result = weekly_trend([3, 0, 0, 3])
    assert [b.label for b in result.buckets] == ["2026-W02", "2026-W03", "2026-W04", "2026-W05"]
    assert [b.count for b in result.buckets] == [3, 0, 0, 3]
    assert result.slope == pytest.approx(0.0) and result.verdict == "flat"
    assert not any(b.partial for b in result.buckets)


def test_one_bucket_is_unknown() -> None:
    result = weekly_trend([3])
    assert result.slope is None and result.verdict == "unknown" and result.target_verdict is None


def test_target_reduction() -> None:
    # fitted 10, 9, 8, 7: a 30 % reduction of 10 expects 7, so on track; 40 % expects 6, behind
    on_track = weekly_trend([10, 9, 8, 7], target=30)
    assert on_track.fitted_last == pytest.approx(7.0) and on_track.expected_last == pytest.approx(7.0)
    assert on_track.target_verdict == "on track"
    behind = weekly_trend([10, 9, 8, 7], target=40)
    assert behind.expected_last == pytest.approx(6.0) and behind.target_verdict == "behind"
    assert weekly_trend([0, 0, 0, 2], target=10).target_verdict == "behind"
    with pytest.raises(ValueError, match="between 0 and 100"):
        weekly_trend([1, 2], target=120)


def test_monthly_buckets_and_partial_ones() -> None:
    episodes = [episode(utc(2026, m, 10), "p1") for m in (1, 2, 2, 4)]
    result = trend(episodes, start=utc(2026, 1, 15), end=utc(2026, 4, 30, 23), bucket="month", tz=LONDON)
    assert [b.label for b in result.buckets] == ["2026-01", "2026-02", "2026-03", "2026-04"]
    assert [b.count for b in result.buckets] == [0, 2, 0, 1]  # 10 January is before the start
    assert [b.partial for b in result.buckets] == [True, False, False, False]
    assert result.buckets[3].start == utc(2026, 3, 31, 23)  # 1 April, BST
    assert result.buckets[3].end == utc(2026, 4, 30, 23)


def test_a_partial_bucket_is_left_out_of_the_fit() -> None:
    """Steady use, 4 a week, and a period ending on the Tuesday of the fourth week: that week's 1 is of
    two days, not a fall. It is marked partial and the line is fitted to the three whole weeks."""
    steady = [
        episode(START + dt.timedelta(weeks=w, days=d, hours=10), "p1") for w in range(3) for d in range(4)
    ]
    steady.append(episode(START + dt.timedelta(weeks=3, hours=10), "p1"))
    result = trend(
        steady, start=START, end=START + dt.timedelta(weeks=3, days=2), tz=LONDON, target_reduction_pct=20
    )
    assert [(b.count, b.partial) for b in result.buckets] == [(4, False), (4, False), (4, False), (1, True)]
    assert result.partial_left_out == 1 and result.fitted == (4.0, 4.0, 4.0, None)
    assert result.slope == pytest.approx(0.0) and result.mean == 4.0 and result.verdict == "flat"
    assert result.target_verdict == "behind", "level at 4 against a target of 3.2"
    # A first partial week too: still the whole ones only
    late_start = trend(
        steady, start=START + dt.timedelta(days=3), end=START + dt.timedelta(weeks=3, days=2), tz=LONDON
    )
    assert [b.partial for b in late_start.buckets] == [True, False, False, True]
    assert late_start.fitted == (None, 4.0, 4.0, None) and late_start.verdict == "flat"
    # Fewer than two whole weeks: no trend to tell
    short = trend(steady, start=START, end=START + dt.timedelta(weeks=1, days=2), tz=LONDON)
    assert short.verdict == "unknown" and short.slope is None and short.fitted == ()


def test_weeks_follow_local_time_across_the_clock_changes() -> None:
    episodes = [
        episode(utc(2026, 3, 29, 22, 30), "p1"),  # Sunday 23:30 BST: the week of 23 March
        episode(utc(2026, 3, 29, 23, 30), "p1"),  # Monday 30 March 00:30 BST: the next week
        episode(utc(2026, 10, 25, 23, 30), "p1"),  # Sunday 23:30 GMT: the week of 19 October
        episode(utc(2026, 10, 26, 0, 30), "p1"),  # Monday 00:30 GMT
    ]
    spring = trend(episodes, start=utc(2026, 3, 23), end=utc(2026, 4, 5, 23), tz=LONDON)
    assert [(b.label, b.count) for b in spring.buckets] == [("2026-W13", 1), ("2026-W14", 1)]
    assert spring.buckets[1].start == utc(2026, 3, 29, 23)
    assert spring.buckets[0].end - spring.buckets[0].start == dt.timedelta(hours=7 * 24 - 1)
    autumn = trend(episodes, start=utc(2026, 10, 18, 23), end=utc(2026, 11, 2), tz=LONDON)
    assert [(b.label, b.count) for b in autumn.buckets] == [("2026-W43", 1), ("2026-W44", 1)]
    assert autumn.buckets[0].end - autumn.buckets[0].start == dt.timedelta(hours=7 * 24 + 1)


def test_months_follow_local_time() -> None:
    # 03:00 UTC on 1 August is 20:00 on 31 July in Los Angeles
    episodes = [episode(utc(2026, 8, 1, 3), "p1")]
    result = trend(episodes, start=utc(2026, 7, 1, 7), end=utc(2026, 9, 1, 7), bucket="month", tz=LOS_ANGELES)
    assert [(b.label, b.count) for b in result.buckets] == [("2026-07", 1), ("2026-08", 0)]


def test_trend_of_nothing() -> None:
    result = trend([], start=START, end=START + dt.timedelta(weeks=3), tz=LONDON)
    assert [b.count for b in result.buckets] == [0, 0, 0]
    assert result.mean == 0 and result.relative_slope is None and result.verdict == "flat"
    with pytest.raises(ValueError, match="not after"):
        trend([], start=START, end=START, tz=LONDON)


def test_least_squares_slope() -> None:
    assert least_squares_slope([]) is None and least_squares_slope([3.0]) is None
    assert least_squares_slope([1.0, 3.0]) == pytest.approx(2.0)
    assert least_squares_slope([2.0, 4.0, 3.0, 7.0]) == pytest.approx(1.4)


# Distributions --------------------------------------------------------------------------------------


def test_by_hour_in_local_time() -> None:
    episodes = [
        episode(utc(2026, 7, 15, 8, 30)),
        episode(utc(2026, 1, 15, 8, 30)),
        episode(utc(2026, 7, 15, 23)),
    ]
    hours = by_hour(episodes, LONDON)
    assert list(hours) == list(range(24))
    assert (hours[9], hours[8], hours[0], sum(hours.values())) == (1, 1, 1, 3)


def test_by_weekday_in_local_time() -> None:
    # Sunday 23:30 UTC in July is Monday 00:30 BST
    days = by_weekday([episode(utc(2026, 7, 19, 23, 30)), episode(utc(2026, 7, 19, 12))], LONDON)
    assert list(days) == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    assert (days["mon"], days["sun"], sum(days.values())) == (1, 1, 2)


TIMETABLE = (
    Period(name="P1", start="08:50", end="09:50"),
    Period(name="P2", start="09:50", end="10:50"),
    Period(name="Break", start="10:50", end="11:10"),
    Period(name="Lunch", start="12:30", end="13:30"),
    Period(name="Night", start="21:00", end="07:00"),
)


@pytest.mark.parametrize(
    ("hhmm", "name"),
    [
        ("08:49", OUTSIDE_TIMETABLE),
        ("08:50", "P1"),
        ("09:49", "P1"),
        ("09:50", "P2"),
        ("11:10", OUTSIDE_TIMETABLE),
        ("12:59", "Lunch"),
        ("20:59", OUTSIDE_TIMETABLE),
        ("22:00", "Night"),
        ("00:00", "Night"),
        ("06:59", "Night"),
        ("07:00", OUTSIDE_TIMETABLE),
    ],
)
def test_period_of(hhmm: str, name: str) -> None:
    assert period_of(dt.time.fromisoformat(hhmm), TIMETABLE) == name


def test_by_period_uses_the_local_start() -> None:
    episodes = [
        episode(utc(2026, 7, 15, 8, 55)),  # 09:55 BST: P2
        episode(utc(2026, 1, 15, 8, 55)),  # 08:55 GMT: P1
        episode(utc(2026, 7, 15, 11, 45)),  # 12:45 BST: Lunch
        episode(utc(2026, 7, 15, 15)),  # 16:00 BST: outside
        episode(utc(2026, 7, 15, 10), test=True),
    ]
    assert by_period(episodes, TIMETABLE, LONDON) == {
        "P1": 1,
        "P2": 1,
        "Break": 0,
        "Lunch": 1,
        "Night": 0,
        OUTSIDE_TIMETABLE: 1,
    }
    assert by_period(episodes, (), LONDON) == {OUTSIDE_TIMETABLE: 4}


def test_by_room() -> None:
    episodes = [episode(START, room="calm-2"), episode(START, room="calm-1"), episode(START, room="calm-2")]
    assert list(by_room(episodes).items()) == [("calm-2", 2), ("calm-1", 1)]


def test_by_staff_and_staff_group() -> None:
    episodes = [
        episode(START, staff=("Ann", "Ben")),
        episode(START, staff=("Ann", "Ann", "Cas")),
        episode(START, staff=("Dee",)),
        episode(START, staff=()),
        episode(START, staff=("Ann",), test=True),
    ]
    assert by_staff(episodes) == {"Ann": 2, "Ben": 1, "Cas": 1, "Dee": 1, NO_STAFF: 1}
    assert next(iter(by_staff(episodes))) == "Ann"
    groups = {"teaching assistant": ("Ann", "Ben"), "teacher": ("Cas",)}
    assert by_staff_group(episodes, groups) == {
        "teaching assistant": 2,
        NO_STAFF: 1,
        UNGROUPED_STAFF: 1,
        "teacher": 1,
    }


def test_a_name_typed_with_other_case_or_spacing_is_the_same_member_of_staff() -> None:
    """The record's adults are typed by hand: "Ms Ade" on one record and "ms  ade" on the next were two
    people in the per-staff figures, each with half the count, and the second "not in a group" though
    the site file lists Ms Ade (found by the figures review). Case and spacing are set aside."""
    episodes = [
        episode(START, staff=("Ms Ade",)),
        episode(START, staff=("ms  ade", " Mr Bell ")),
        episode(START, staff=("MS ADE", "Ms Ade")),
    ]
    assert by_staff(episodes) == {"MS ADE": 3, "Mr Bell": 1}
    groups = {"teaching assistants": ("Ms Ade",), "teachers": ("mr bell",)}
    assert by_staff_group(episodes, groups) == {"teaching assistants": 3, "teachers": 1}


def test_a_name_in_two_groups_counts_for_each_group_and_an_episode_once_per_group() -> None:
    """review.md: "an episode counts once for a group however many of its members were there". A name
    the site file lists in two groups counted for the last group only (a name -> group dict): the
    episode vanished from the other."""
    groups = {"teaching assistants": ("Ms Amis",), "team-teach trained": ("Ms Amis", "Mr Bell")}
    episodes = [episode(START, staff=("Ms Amis",)), episode(START, staff=("Ms Amis", "Mr Bell"))]
    assert by_staff_group(episodes, groups) == {"team-teach trained": 2, "teaching assistants": 2}
    assert by_staff_group([episode(START, staff=("Mr Bell", "Mr Cole"))], groups) == {
        UNGROUPED_STAFF: 1,
        "team-teach trained": 1,
        "teaching assistants": 0,  # every group shown, even with 0 (docs/review.md)
    }


def test_duration_histogram_bins() -> None:
    lengths = [0, 299, 300, 599, 600, 1199, 1200, 1799, 1800, 7200]
    episodes = [episode(START, elapsed_s=s) for s in lengths] + [episode(START, elapsed_s=7200, test=True)]
    assert duration_histogram(episodes) == {
        "0-5 min": 2,
        "5-10 min": 2,
        "10-20 min": 2,
        "20-30 min": 2,
        "30+ min": 2,
    }


# Supervision ----------------------------------------------------------------------------------------


def test_supervision_compliance() -> None:
    episodes = [
        episode(START, elapsed_s=600, unsupervised_s=100, unknown_s=50, lapses=2),
        episode(START, elapsed_s=400),
        episode(START, elapsed_s=1000, unsupervised_s=1000, lapses=5, test=True),
    ]
    result = supervision_compliance(episodes)
    assert result.episodes == 2 and result.elapsed_s == 1000
    assert result.supervised_share == pytest.approx(0.85)
    assert result.unsupervised_share == pytest.approx(0.10)
    assert result.unknown_share == pytest.approx(0.05)
    assert (result.lapses, result.lapses_per_episode, result.episodes_with_lapse) == (2, 1.0, 1)


def test_supervision_compliance_of_nothing() -> None:
    result = supervision_compliance([])
    assert result.episodes == 0 and result.supervised_share is None and result.lapses_per_episode is None
    zero = supervision_compliance([episode(START, elapsed_s=0)])
    assert zero.supervised_share is None and zero.lapses_per_episode == 0.0


# Test episodes and empty inputs, everywhere -----------------------------------------------------------

FIGURES: list[tuple[str, Callable[[list[EpisodeFact]], object]]] = [
    ("by_hour", lambda es: by_hour(es, LONDON)),
    ("by_weekday", lambda es: by_weekday(es, LONDON)),
    ("by_period", lambda es: by_period(es, TIMETABLE, LONDON)),
    ("by_room", by_room),
    ("by_staff", by_staff),
    ("by_staff_group", lambda es: by_staff_group(es, {"teacher": ("Ann",)})),
    ("duration_histogram", duration_histogram),
    ("supervision_compliance", supervision_compliance),
    ("trend", lambda es: trend(es, start=START, end=END, tz=LONDON)),
    ("pattern_flags", lambda es: pattern_flags(es, [THREE_IN_30], NOW, lengthy_after_s=60)),
    ("episodes_between", lambda es: episodes_between(es, start=START, end=END)),
    (
        "disproportionality",
        lambda es: disproportionality(
            [pupil("p1", sen="ehcp"), pupil("p2")], es, "sen", start=START, end=END, tz=UTC
        ),
    ),
]


@pytest.mark.parametrize(("name", "figure"), FIGURES, ids=[name for name, _ in FIGURES])
def test_test_episodes_never_count(name: str, figure: Callable[[list[EpisodeFact]], object]) -> None:
    real = [episode(utc(2026, 2, 2, 10), "p1", staff=("Ann",)), episode(utc(2026, 2, 9, 14), "p2")]
    tests = [
        episode(
            utc(2026, 2, 3, 3) + dt.timedelta(days=i),
            "p1",
            elapsed_s=4000,
            room="calm-9",
            staff=("Zed",),
            test=True,
        )
        for i in range(5)
    ]
    assert figure(real + tests) == figure(real)
    assert figure(real) != figure([])


@pytest.mark.parametrize(("name", "figure"), FIGURES, ids=[name for name, _ in FIGURES])
def test_empty_inputs_do_not_fail(name: str, figure: Callable[[list[EpisodeFact]], object]) -> None:
    figure([])


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        episode(dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        episodes_between([], start=dt.datetime(2026, 1, 1), end=END)
    with pytest.raises(ValueError, match="timezone-aware"):
        disproportionality([], [], "sen", start=START, end=dt.datetime(2026, 1, 1), tz=UTC)


# Classes (semantics 2.2) ------------------------------------------------------------------------------


def test_voluntary_use_is_counted_apart_and_an_unclassified_episode_counts_as_seclusion() -> None:
    own = episode(utc(2026, 2, 2, 10), "p1", elapsed_s=900, lapses=1, classification="voluntary")
    recorded = episode(utc(2026, 2, 3, 10), "p1", elapsed_s=300, classification="seclusion")
    waiting = episode(utc(2026, 2, 4, 10), "p2", elapsed_s=480)  # no completed record yet
    drill = episode(utc(2026, 2, 5, 10), "p2", classification="voluntary", test=True)
    empty = episode(utc(2026, 2, 6, 10), None, elapsed_s=120, classification="no_child")
    every = [own, recorded, waiting, drill, empty]
    assert counted(every) == [recorded, waiting]
    assert classes(every) == Classes(
        seclusion=2,
        unclassified=1,
        voluntary=1,
        voluntary_minutes=15.0,
        voluntary_with_lapse=1,
        no_child=1,
        no_child_minutes=2.0,
    )
    # Every figure is about seclusion: the voluntary episode is in none of them.
    assert by_room(every) == {"calm-1": 2}
    # A completed record whose classification an addendum corrects counts as seclusion, apart from
    # those still waiting for a completed record
    corrected = dataclasses.replace(recorded, id="e-corrected", classification=None, corrected=True)
    assert (classes([*every, corrected]).seclusion, classes([*every, corrected]).unclassified) == (3, 1)
    assert classes([*every, corrected]).corrected == 1 and counted([corrected]) == [corrected]
    assert duration_histogram(every)["10-20 min"] == 0 and duration_histogram(every)["0-5 min"] == 0
    assert supervision_compliance(every).lapses == 0
    assert (
        pattern_flags([own, *(episode(utc(2026, 2, d, 10), "p1") for d in (9, 10))], [THREE_IN_30], END) == []
    )
    flagged = pattern_flags(
        [recorded, *(episode(utc(2026, 2, d, 10), "p1") for d in (9, 10))], [THREE_IN_30], END
    )
    assert [f.count for f in flagged] == [3]
    rows = disproportionality(
        [pupil("p1"), pupil("p2")], [own, waiting], "sex", start=START, end=END, tz=UTC, site=SITE
    )
    assert [(r.group, r.k, r.episodes) for r in rows] == [("unknown", 1, 1)], "p2 only: p1 chose the room"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([None, "seclusion", "voluntary", "no_child"]), st.booleans()), max_size=30
    )
)
def test_the_classes_partition_the_timed_episodes(kinds: list[tuple[str | None, bool]]) -> None:
    every = [
        episode(START + dt.timedelta(hours=i), classification=c, test=t) for i, (c, t) in enumerate(kinds)
    ]
    split = classes(every)
    real = [e for e in every if not e.test]
    assert split.seclusion + split.voluntary + split.no_child == len(real)
    assert split.seclusion == len(counted(every)) == sum(by_room(every).values())
    assert split.unclassified == sum(1 for e in real if e.classification is None)
    assert all(e.classification in (None, "seclusion") for e in counted(every)), "the others count apart"
