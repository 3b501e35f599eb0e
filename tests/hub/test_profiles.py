"""The policy profiles of policies.md as shipped data files, a site's own profile, per-room overrides, and
the values no profile may hold (docs/profiles.md). Every refusal names the file and the key."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from seclusion_hub.config import builtin_profiles, load_site, profile_parameters
from seclusion_hub.core.policy import Policy
from seclusion_hub.errors import ConfigError

DEFAULT = "england-schools-2026"
POLICIES_MD = {
    DEFAULT,
    "scotland-schools-2024",
    "uk-mha-seclusion",
    "us-cms-hospital",
    "us-prtf",
    "us-or-schools",
    "us-md-nonpublic",
    "us-dc-schools",
    "us-il-schools",
    "us-va-schools",
    "seclusion-prohibited",
    "locked-seclusion-prohibited",
}
CHECK = "check against the current text before relying on it"


def profile_text(name: str) -> str:
    return (resources.files("seclusion_hub") / "profiles" / f"{name}.yaml").read_text(encoding="utf-8")


def policy(name: str) -> dict[str, Any]:
    """A shipped profile's policy, as JSON-like data (tuples as lists, models as dicts)."""
    return Policy.model_validate(profile_parameters(name)).model_dump(mode="json")


def review(name: str, first_s: float, tier: str, every_s: float | None = None) -> dict[str, Any]:
    return {"name": name, "first_s": first_s, "every_s": every_s, "tier": tier}


def alert(after_s: float, kind: str, tier: str) -> dict[str, Any]:
    return {"after_s": after_s, "kind": kind, "tier": tier}


BASE_ALERTS = [
    alert(600, "duration_warning", "room"),
    alert(1200, "duration_escalation", "senior"),
    alert(1800, "duration_escalation", "head"),
]
CMS_BANDS = [
    {"max_age": 8, "max_s": 3600},
    {"max_age": 17, "max_s": 7200},
    {"max_age": 120, "max_s": 14400},
]

# -- every profile is shipped, loads, and says where its numbers come from


def test_every_profile_of_policies_md_is_shipped_and_nothing_else() -> None:
    assert set(builtin_profiles()) == POLICIES_MD


@pytest.mark.parametrize("name", sorted(POLICIES_MD))
def test_each_shipped_profile_loads_builds_a_policy_and_starts_from_the_default(name: str) -> None:
    raw = yaml.safe_load(profile_text(name))
    assert raw["name"] == name
    assert raw["title"]
    assert raw.get("base") == (None if name == DEFAULT else DEFAULT)
    params = profile_parameters(name)
    built = Policy.model_validate(params)
    # what the profile does not set is the base's, number for number
    base = Policy().model_dump()
    for key, value in built.model_dump().items():
        if key not in raw["parameters"]:
            assert value == base[key], f"{name}: {key} should be inherited from {DEFAULT}"
    # and what it sets is what the file says (no key silently dropped on the way)
    assert set(raw["parameters"]) <= set(params)


@pytest.mark.parametrize("name", sorted(POLICIES_MD))
def test_each_profile_file_names_its_sources_and_says_to_check_them(name: str) -> None:
    text = profile_text(name)
    assert CHECK in text
    assert "Sources:" in text
    assert source_tags(text), f"{name} names no source"
    assert "product" in text  # what "product" means is said in the header


@pytest.mark.parametrize(
    ("name", "key", "expected"),
    [
        (DEFAULT, "seclusion_allowed", True),
        (DEFAULT, "supervision", "observer"),
        (DEFAULT, "lapse_grace_s", 15),
        (DEFAULT, "duration_alerts", BASE_ALERTS),
        (DEFAULT, "max_duration_s", None),
        (DEFAULT, "record_due", "same_day"),
        (DEFAULT, "parent_notice_due", "same_day"),
        (DEFAULT, "parent_copy_due", {"school_days": 1}),
        (DEFAULT, "authority_notice_due", None),
        (DEFAULT, "pattern_triggers", [{"count": 3, "window_days": 30, "label": "repeated seclusion"}]),
        ("scotland-schools-2024", "parent_notice_due", "same_day"),
        ("scotland-schools-2024", "authority_notice_due", {"working_days": 2}),
        ("scotland-schools-2024", "record_due", {"working_days": 5}),
        ("scotland-schools-2024", "parent_copy_due", {"working_days": 5}),
        ("uk-mha-seclusion", "supervision", "checkin"),
        ("uk-mha-seclusion", "checkin_interval_s", 900),
        (
            "uk-mha-seclusion",
            "reviews",
            [
                review("first medical review", 3600, "senior"),
                review("nursing review", 7200, "room", every_s=7200),
                review("medical review", 14400, "senior", every_s=14400),
            ],
        ),
        ("uk-mha-seclusion", "duration_alerts", [*BASE_ALERTS, alert(28800, "duration_escalation", "head")]),
        ("uk-mha-seclusion", "max_duration_s", None),
        ("us-cms-hospital", "age_band_max_s", CMS_BANDS),
        ("us-cms-hospital", "reviews", [review("face-to-face evaluation", 3600, "senior")]),
        ("us-cms-hospital", "max_duration_s", None),
        ("us-prtf", "age_band_max_s", CMS_BANDS),
        ("us-prtf", "reviews", [review("face-to-face evaluation", 3600, "senior")]),
        ("us-prtf", "supervision", "observer"),
        ("us-or-schools", "supervision", "observer"),
        (
            "us-or-schools",
            "reviews",
            [
                review("parent contacted", 1800, "senior"),
                review("administrator authorisation", 1800, "head", every_s=900),
            ],
        ),
        ("us-or-schools", "parent_notice_due", "same_day"),
        ("us-or-schools", "parent_copy_due", {"hours": 24}),
        ("us-md-nonpublic", "max_duration_s", 1800),
        ("us-md-nonpublic", "lock_mode", "held_only"),
        (
            "us-md-nonpublic",
            "duration_alerts",
            [*BASE_ALERTS[:2], alert(1500, "duration_escalation", "head")],
        ),
        (
            "us-md-nonpublic",
            "pattern_triggers",
            [
                {"count": 3, "window_days": 30, "label": "repeated seclusion"},
                {"count": 10, "window_days": 365, "label": "state notice (10th incident in a year)"},
            ],
        ),
        ("us-dc-schools", "supervision", "checkin"),
        ("us-dc-schools", "checkin_interval_s", 600),
        ("us-dc-schools", "reviews", [review("senior observation", 1800, "senior")]),
        ("us-dc-schools", "max_duration_s", 3600),
        ("us-il-schools", "reviews", [review("reassessment", 900, "room", every_s=900)]),
        ("us-il-schools", "parent_copy_due", {"working_days": 1}),
        (
            "us-il-schools",
            "pattern_triggers",
            [{"count": 3, "window_days": 30, "label": "meeting (3 in 30 days)"}],
        ),
        ("us-va-schools", "parent_notice_due", "same_day"),
        ("us-va-schools", "record_due", {"school_days": 2}),
        ("us-va-schools", "parent_copy_due", {"calendar_days": 7}),
        ("seclusion-prohibited", "seclusion_allowed", False),
        ("seclusion-prohibited", "lock_mode", "allowed"),
        ("locked-seclusion-prohibited", "lock_mode", "forbidden"),
        ("locked-seclusion-prohibited", "supervision", "observer"),
        ("locked-seclusion-prohibited", "seclusion_allowed", True),
    ],
)
def test_each_profiles_distinctive_numbers(name: str, key: str, expected: object) -> None:
    assert policy(name)[key] == expected


# -- every number carries its origin

_DECLARED = re.compile(r"^#\s+\[(\w+)\]\s+\S", re.MULTILINE)
_CITED = re.compile(r"\[(\w+)\]")


def source_tags(text: str) -> set[str]:
    """The sources a profile's header declares: `#   [TAG] title`."""
    return set(_DECLARED.findall(text))


def origin_problems(text: str) -> list[str]:
    """Each line under `parameters:` that sets a value without a comment naming a declared source or
    `product`. A bare block key (`reviews:`) sets nothing itself: its items carry the comments."""
    declared = source_tags(text)
    problems: list[str] = []
    inside = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("parameters:"):
            inside = True
            continue
        if not inside or not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            inside = False
            continue
        body, _, comment = line.partition("#")
        body = body.strip()
        if not body.startswith("- ") and body.endswith(":"):
            continue
        cited = set(_CITED.findall(comment))
        if unknown := cited - declared:
            problems.append(f"line {number}: cites an undeclared source {sorted(unknown)}: {line.strip()}")
        elif not cited and "product" not in comment:
            problems.append(f"line {number}: no origin (a [source] or product): {line.strip()}")
    return problems


@pytest.mark.parametrize("name", sorted(POLICIES_MD))
def test_every_number_in_a_profile_carries_its_origin(name: str) -> None:
    assert origin_problems(profile_text(name)) == []


def test_the_origin_check_finds_a_bare_number_and_an_undeclared_source() -> None:
    text = (
        "# Sources:\n#   [A] Some Act 2020\n"
        "name: x\nparameters:\n"
        "  lapse_grace_s: 15     # product\n"
        "  max_duration_s: 60    # [A] s. 1\n"
        "  renotify_s: 300\n"
        "  reviews:\n"
        "    - {name: r, first_s: 30, tier: room}\n"
        "  heartbeat_s: 10       # [B] s. 2\n"
    )
    problems = origin_problems(text)
    assert [p.split(":")[0] for p in problems] == ["line 7", "line 9", "line 10"]
    assert "undeclared" in problems[2]


# -- a site's own profile, and overrides per room

SITE: dict[str, Any] = {
    "site": "demo-school",
    "timezone": "Europe/London",
    "rooms": [
        {"id": "calm-1", "name": "Calm room 1", "devices": ["calm-1-door"]},
    ],
}


def write(path: Path, body: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def room(room_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": room_id, "name": room_id, "devices": [f"{room_id}-door"], **extra}


def test_a_site_picks_a_shipped_profile_by_name(tmp_path: Path) -> None:
    # Where only a held lock is allowed, each lock says what it is (config.py).
    door = {"id": "calm-1-door", "lock_type": "held"}
    rooms = [{"id": "calm-1", "name": "Calm room 1", "devices": [door]}]
    site = load_site(write(tmp_path / "site.yaml", {**SITE, "rooms": rooms, "policy": "us-md-nonpublic"}))
    assert site.policies["calm-1"].max_duration_s == 1800
    assert site.policies["calm-1"].lock_mode == "held_only"


def test_a_sites_own_profile_file_with_a_base_and_overrides_per_room(tmp_path: Path) -> None:
    # the site's profile builds on another of its own (a path relative to the profile file itself),
    # which builds on a shipped one
    write(
        tmp_path / "profiles" / "district.yaml",
        {"name": "district", "base": "us-dc-schools", "parameters": {"max_duration_s": 2700}},
    )
    write(
        tmp_path / "profiles" / "our-school.yaml",
        {"name": "our-school", "base": "district.yaml", "parameters": {"lapse_grace_s": 10}},
    )
    site = load_site(
        write(
            tmp_path / "site.yaml",
            {
                **SITE,
                "policy": "profiles/our-school.yaml",
                "rooms": [
                    room(
                        "calm-1",
                        policy_overrides={
                            "max_duration_s": 1800,
                            "reviews": [{"name": "head's visit", "first_s": 900, "tier": "head"}],
                        },
                    ),
                    room("calm-2"),
                    room("calm-3", supervision="both"),
                ],
            },
        )
    )
    one, two, three = (site.policies[r] for r in ("calm-1", "calm-2", "calm-3"))
    assert (one.max_duration_s, two.max_duration_s, three.max_duration_s) == (1800, 2700, 2700)
    assert [r.name for r in one.reviews] == ["head's visit"]
    assert [r.name for r in two.reviews] == ["senior observation"]  # us-dc-schools'
    assert {p.lapse_grace_s for p in (one, two, three)} == {10}  # our-school's
    assert {p.checkin_interval_s for p in (one, two, three)} == {600}  # us-dc-schools'
    assert {p.ack_timeout_s for p in (one, two, three)} == {60}  # england-schools-2026's
    assert (two.supervision, three.supervision) == ("checkin", "both")


def test_profiles_that_inherit_from_each_other_in_a_loop_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {"name": "a", "base": "b.yaml", "parameters": {}})
    write(tmp_path / "b.yaml", {"name": "b", "base": "./a.yaml", "parameters": {}})
    with pytest.raises(ConfigError, match="loop") as err:
        load_site(write(tmp_path / "site.yaml", {**SITE, "policy": "a.yaml"}))
    assert err.value.key == "base"
    assert err.value.source.endswith("a.yaml")


# -- impossible values, refused with the file and the key named

TIME_FIELDS = [name for name in Policy.model_fields if name.endswith("_s") and name != "age_band_max_s"]


def test_the_time_fields_are_the_ones_policies_md_lists() -> None:
    assert set(TIME_FIELDS) == {
        "lapse_grace_s",
        "checkin_interval_s",
        "no_movement_s",
        "occupancy_lookback_s",
        "reclose_grace_s",
        "max_duration_s",
        "ack_timeout_s",
        "renotify_s",
        "heartbeat_s",
        "offline_grace_s",
        "max_clock_skew_s",
    }


REVIEW = {"name": "check", "first_s": 600, "tier": "senior"}
IMPOSSIBLE: list[tuple[dict[str, Any], str]] = [
    *(({name: -1}, name) for name in TIME_FIELDS),
    (
        {"duration_alerts": [{"after_s": -600, "kind": "duration_warning", "tier": "room"}]},
        "duration_alerts.0.after_s",
    ),
    ({"reviews": [{**REVIEW, "first_s": -1}]}, "reviews.0.first_s"),
    ({"reviews": [{**REVIEW, "every_s": -900}]}, "reviews.0.every_s"),
    ({"reviews": [{**REVIEW, "every_s": 0}]}, "reviews.0.every_s"),
    ({"age_band_max_s": [{"max_age": 8, "max_s": -3600}]}, "age_band_max_s.0.max_s"),
    ({"record_due": {"hours": -24}}, "record_due.hours"),
    ({"parent_copy_due": {"school_days": -1}}, "parent_copy_due.school_days"),
    ({"authority_notice_due": {"calendar_days": 1.5}}, "authority_notice_due.calendar_days"),
    ({"record_due": {"days": 2}}, "record_due.days"),
    ({"record_due": "tomorrow"}, "record_due"),
    ({"parent_notice_due": None}, "parent_notice_due"),
    ({"pattern_triggers": [{"count": 3, "window_days": 0, "label": "x"}]}, "pattern_triggers.0.window_days"),
    # not a number at all
    ({"occupancy_lookback_s": float("inf")}, "occupancy_lookback_s"),
    ({"lapse_grace_s": float("-inf")}, "lapse_grace_s"),
    ({"max_duration_s": float("nan")}, "max_duration_s"),
    ({"lapse_grace_s": True}, "lapse_grace_s"),
    ({"heartbeat_s": "10"}, "heartbeat_s"),
    ({"age_band_max_s": [{"max_age": True, "max_s": 3600}]}, "age_band_max_s.0.max_age"),
    # not a name the product knows
    ({"reviews": [{**REVIEW, "tier": "boss"}]}, "reviews.0.tier"),
    (
        {"duration_alerts": [{"after_s": 600, "kind": "duration_limit", "tier": "room"}]},
        "duration_alerts.0.kind",
    ),
    ({"lock_mode": "sometimes"}, "lock_mode"),
    # a grace as long as a hard limit it guards (the base has lapse 15, offline 20, reclose 30)
    ({"max_duration_s": 1800, "lapse_grace_s": 1800}, "lapse_grace_s"),
    ({"max_duration_s": 1800, "offline_grace_s": 2400}, "offline_grace_s"),
    ({"max_duration_s": 1800, "reclose_grace_s": 1800}, "reclose_grace_s"),
    (
        {
            "age_band_max_s": [{"max_age": 8, "max_s": 900}, {"max_age": 120, "max_s": 3600}],
            "offline_grace_s": 900,
        },
        "offline_grace_s",
    ),
    (
        {"duration_alerts": [], "max_duration_s": 10},
        "max_duration_s",
    ),  # the base's lapse 15 is not the file's
    # a lapse tolerated as long as the first duration alert
    ({"lapse_grace_s": 600}, "lapse_grace_s"),
    (
        {"duration_alerts": [{"after_s": 15, "kind": "duration_warning", "tier": "room"}]},
        "duration_alerts.0.after_s",
    ),
    # duration alerts
    ({"max_duration_s": 1500}, "max_duration_s"),  # the base's 1800 s alert would come after it
    (
        {
            "max_duration_s": 1500,
            "duration_alerts": [{"after_s": 1600, "kind": "duration_warning", "tier": "room"}],
        },
        "duration_alerts.0.after_s",
    ),
    (
        {
            "duration_alerts": [
                {"after_s": 600, "kind": "duration_warning", "tier": "room"},
                {"after_s": 600, "kind": "duration_escalation", "tier": "senior"},
            ]
        },
        "duration_alerts.1.after_s",
    ),
    # reviews
    ({"reviews": [REVIEW, {**REVIEW, "first_s": 1200}]}, "reviews.1.name"),
    ({"max_duration_s": 1800, "reviews": [{**REVIEW, "first_s": 2400}]}, "reviews.0.first_s"),
    (
        {"age_band_max_s": [{"max_age": 8, "max_s": 3600}], "reviews": [{**REVIEW, "first_s": 7200}]},
        "reviews.0.first_s",
    ),
    # age bands
    (
        {"age_band_max_s": [{"max_age": 8, "max_s": 3600}, {"max_age": 8, "max_s": 7200}]},
        "age_band_max_s.1.max_age",
    ),
    (
        {"age_band_max_s": [{"max_age": 17, "max_s": 7200}, {"max_age": 8, "max_s": 3600}]},
        "age_band_max_s.1.max_age",
    ),
]


@pytest.mark.parametrize(("params", "key"), IMPOSSIBLE)
def test_an_impossible_value_in_a_profile_file_is_refused_naming_the_file_and_key(
    tmp_path: Path, params: dict[str, Any], key: str
) -> None:
    profile = write(tmp_path / "our-profile.yaml", {"name": "ours", "base": DEFAULT, "parameters": params})
    site = write(tmp_path / "site.yaml", {**SITE, "policy": "our-profile.yaml"})
    with pytest.raises(ConfigError) as err:
        load_site(site)
    assert (err.value.source, err.value.key) == (str(profile), f"parameters.{key}")
    assert str(profile) in str(err.value) and f"parameters.{key}" in str(err.value)


@pytest.mark.parametrize(("params", "key"), IMPOSSIBLE)
def test_an_impossible_room_override_is_refused_naming_the_site_file_and_key(
    tmp_path: Path, params: dict[str, Any], key: str
) -> None:
    site = write(
        tmp_path / "site.yaml",
        {**SITE, "policy": DEFAULT, "rooms": [room("calm-1"), room("calm-2", policy_overrides=params)]},
    )
    with pytest.raises(ConfigError) as err:
        load_site(site)
    assert (err.value.source, err.value.key) == (str(site), f"rooms.1.policy_overrides.{key}")


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"max_duration_s": 1800, "lapse_grace_s": 1800}, ["lapse_grace_s 1800", "max_duration_s 1800"]),
        ({"lapse_grace_s": 600}, ["lapse_grace_s 600", "duration_alerts.0.after_s 600"]),
        ({"max_duration_s": 1500}, ["duration_alerts.2.after_s 1800", "max_duration_s 1500"]),
        (
            {"age_band_max_s": [{"max_age": 8, "max_s": 600}], "offline_grace_s": 600, "duration_alerts": []},
            ["offline_grace_s 600", "age_band_max_s.0.max_s 600"],
        ),
        ({"reviews": [REVIEW, REVIEW]}, ["reviews.1.name", "reviews.0.name"]),
    ],
)
def test_a_conflict_names_every_key_involved(params: dict[str, Any], named: list[str]) -> None:
    with pytest.raises(ValueError, match=r"is not|is past|is also") as err:
        Policy.model_validate(params)
    for text in named:
        assert text in str(err.value)


@pytest.mark.parametrize(
    "params",
    [
        {"lapse_grace_s": 0, "offline_grace_s": 0, "reclose_grace_s": 0, "occupancy_lookback_s": 0},
        {
            "supervision": "checkin",
            "checkin_interval_s": 30,
            "lapse_grace_s": 120,
        },  # the grace follows the proof
        {"max_duration_s": 1800},  # an alert at the limit itself is allowed
        {"max_duration_s": 1800, "reviews": [{**REVIEW, "first_s": 1800}]},  # so is a review
        {"max_duration_s": 3600, "age_band_max_s": [{"max_age": 8, "max_s": 7200}]},
        {
            "age_band_max_s": [{"max_age": 8, "max_s": 3600}],
            "reviews": [{**REVIEW, "first_s": 3600, "every_s": 60}],
        },
        {  # a review past the youngest band's limit still falls due for an older child
            "age_band_max_s": [{"max_age": 8, "max_s": 3600}, {"max_age": 120, "max_s": 14400}],
            "reviews": [{**REVIEW, "first_s": 7200}],
        },
        {"no_movement_s": 7200, "max_duration_s": 1800},  # a long welfare check is loose, not impossible
        {"duration_alerts": [], "lapse_grace_s": 600},
        {"parent_copy_due": None, "record_due": {"hours": 0.5}, "authority_notice_due": {"school_days": 0}},
    ],
)
def test_legitimate_edges_are_accepted(params: dict[str, Any]) -> None:
    Policy.model_validate(params)


# -- unknown parameters


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"lapse_grace": 5}, "lapse_grace"),
        ({"max_duration_minutes": 30}, "max_duration_minutes"),
        ({"reviews": [{**REVIEW, "every": 900}]}, "reviews.0.every"),
        ({"age_band_max_s": [{"max_age": 8, "max_s": 3600, "min_age": 0}]}, "age_band_max_s.0.min_age"),
    ],
)
def test_an_unknown_parameter_is_refused_with_its_key(
    tmp_path: Path, params: dict[str, Any], key: str
) -> None:
    profile = write(tmp_path / "our-profile.yaml", {"name": "ours", "base": DEFAULT, "parameters": params})
    with pytest.raises(ConfigError) as err:
        load_site(write(tmp_path / "site.yaml", {**SITE, "policy": "our-profile.yaml"}))
    assert (err.value.source, err.value.key) == (str(profile), f"parameters.{key}")
    assert "Extra inputs are not permitted" in err.value.problem

    site = write(tmp_path / "site.yaml", {**SITE, "rooms": [room("calm-1", policy_overrides=params)]})
    with pytest.raises(ConfigError) as err:
        load_site(site)
    assert (err.value.source, err.value.key) == (str(site), f"rooms.0.policy_overrides.{key}")


def test_an_unknown_key_of_the_profile_file_itself_is_refused(tmp_path: Path) -> None:
    profile = write(tmp_path / "our-profile.yaml", {"name": "ours", "base": DEFAULT, "paramaters": {}})
    with pytest.raises(ConfigError) as err:
        load_site(write(tmp_path / "site.yaml", {**SITE, "policy": "our-profile.yaml"}))
    assert (err.value.source, err.value.key) == (str(profile), "paramaters")
