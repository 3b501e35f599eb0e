"""The leaders' review through the API, on a stored data set with known answers (SQLite and PostgreSQL).

Given a register of 20 children (10 with SEN support) and episodes stored for some of them, when a
leader asks for the figures, then the rates, ratios, patterns, suppression, CSV and governors' PDF are
what the data say, and every read is audited.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlmodel import col, select

from seclusion_hub.auth import create_token
from seclusion_hub.config import load_sites
from seclusion_hub.core.episode import Episode, ObserverMark, Segment
from seclusion_hub.models import AlertRecord, AuditEntry, EpisodeRecord, IncidentRecord, Pupil
from seclusion_hub.review import (
    CSV_COLUMNS,
    share_down,
    share_up,
    site_lengthy_after_s,
    site_pattern_triggers,
)
from seclusion_hub.store import Batch
from tests.hub.test_api import T0, Api
from tests.hub.test_records import COMPLETE
from tests.support.hub import two_device_room, write_site

SITE = "test-school"
START = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


class Review(Api):
    def leader(self) -> dict[str, str]:
        token = create_token(self.store, "head", "leader", [SITE], False, T0)
        return {"Authorization": f"Bearer {token}"}

    def pupil(self, first: str, sen: str, born: dt.date | None = None) -> str:
        ident = str(uuid.uuid4())
        with self.store.session() as s:
            s.add(
                Pupil(
                    id=ident,
                    site=SITE,
                    first_name=first,
                    last_name="Test",
                    sen=sen,
                    date_of_birth=born,
                    created_at=T0,
                    updated_at=T0,
                )
            )
            s.commit()
        return ident

    def episode(
        self,
        pupil: str | None,
        start: dt.datetime,
        minutes: float,
        room: str = "calm-1",
        test: bool = False,
        observer: list[ObserverMark] | None = None,
    ) -> str:
        """An ended episode, stored as the hub stores one, supervised throughout unless `observer` gives
        other marks; its incident's id."""
        ident = str(uuid.uuid4())
        end = start + dt.timedelta(minutes=minutes)
        ep = Episode(
            id=ident,
            site=SITE,
            room=room,
            number=1,
            started_at=start,
            ended_at=end,
            segments=[Segment(start=start, end=end)],
            incident_id=str(uuid.uuid4()),
            pupil_id=pupil,
            observer=observer if observer is not None else [ObserverMark(ts=start, present=True)],
            test=test,
        )
        opened = {"id": ep.incident_id, "episode_id": ident, "site": SITE, "room": room, "status": "open"}
        self.store.write(
            Batch(
                episodes={ident: ep},
                incidents_opened=[{**opened, "opened_at": start, "updated_at": start, "pupil_id": pupil}],
                incident_status=[self.service.incident_end(SITE, room, ep.incident_id, end, end)],
            ),
            end,
        )
        return ep.incident_id


@pytest.fixture(params=["sqlite", "postgresql"])
def review(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Review]:
    url = (
        f"sqlite:///{tmp_path / 'hub.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("fresh_postgres_db")
    )
    r = Review(tmp_path, url, name="Hillside School", reduction_target_pct=20)
    sen = [r.pupil(f"Sen{i}", "sen_support") for i in range(10)]
    other = [r.pupil(f"Other{i}", "none") for i in range(10)]
    day = dt.timedelta(days=1)
    # Sen0: three episodes within 30 days (the pattern trigger); Sen1 and Sen2 one each; Other0 one.
    r.episode(sen[0], START + 2 * day + dt.timedelta(hours=9), 12)
    r.episode(sen[0], START + 10 * day + dt.timedelta(hours=10), 8)
    r.episode(sen[0], START + 20 * day + dt.timedelta(hours=13), 25, room="calm-2")
    r.episode(sen[1], START + 40 * day + dt.timedelta(hours=9), 4)
    r.episode(sen[2], START + 50 * day + dt.timedelta(hours=11), 6)
    r.episode(other[0], START + 60 * day + dt.timedelta(hours=14), 3)
    r.episode(other[1], START + 61 * day + dt.timedelta(hours=14), 3, test=True)  # a drill: never counted
    r.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    yield r
    r.client.close()
    r.store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def bare(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Review]:
    """A site with no register and no episodes yet."""
    url = (
        f"sqlite:///{tmp_path / 'hub.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("fresh_postgres_db")
    )
    r = Review(tmp_path, url)
    yield r
    r.client.close()
    r.store.close()


PERIOD = {"site": SITE, "from": "2026-09-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


def test_only_leaders_see_the_review_and_every_read_is_audited(review: Review) -> None:
    for role in ("staff", "senior"):
        headers = review.token(role, SITE)
        assert review.client.get("/api/reports/summary", params=PERIOD, headers=headers).status_code == 403
    leader = review.leader()
    for path in ("summary", "disproportionality", "episodes.csv", "governors.pdf"):
        assert review.client.get(f"/api/reports/{path}", params=PERIOD, headers=leader).status_code == 200
    with review.store.session() as s:
        reads = {a.target_type for a in s.exec(select(AuditEntry).where(AuditEntry.actor == "head")).all()}
    assert reads == {"summary", "disproportionality", "episodes_csv", "governors_report"}
    bad = review.client.get(
        "/api/reports/summary", params={**PERIOD, "from": "2026-12-02T00:00:00Z"}, headers=leader
    )
    assert bad.status_code == 422 and "from" in bad.text


def test_disproportionality_gives_the_risk_ratio_and_withholds_small_numbers_by_default(
    review: Review,
) -> None:
    leader = review.leader()
    params = {**PERIOD, "characteristic": "sen", "suppress": "false"}
    rows = {
        r["group"]: r
        for r in review.client.get("/api/reports/disproportionality", params=params, headers=leader).json()[
            "items"
        ]
    }
    sen = rows["sen_support"]
    # 3 of 10 children with SEN support secluded (5 episodes) against 1 of the other 10
    assert (sen["n"], sen["k"], sen["episodes"], sen["rest_n"], sen["rest_k"]) == (10, 3, 5, 10, 1)
    assert sen["rate_per_100"] == 30.0 and sen["rest_rate_per_100"] == 10.0 and sen["risk_ratio"] == 3.0
    se = math.sqrt(1 / 3 - 1 / 10 + 1 / 1 - 1 / 10)
    assert sen["ci_low"] == round(math.exp(math.log(3) - 1.96 * se), 2)
    assert sen["ci_high"] == round(math.exp(math.log(3) + 1.96 * se), 2)
    hidden = review.client.get(
        "/api/reports/disproportionality", params={**PERIOD, "characteristic": "sen"}, headers=leader
    ).json()
    withheld = {r["group"]: r for r in hidden["items"]}["sen_support"]
    assert hidden["suppressed"] is True and withheld["suppressed"] is True
    assert withheld["k"] is None and withheld["risk_ratio"] is None and withheld["rate_per_100"] is None


def test_the_summary_flags_the_repeated_pattern_and_counts_only_real_episodes(review: Review) -> None:
    leader = review.leader()
    body = review.client.get(
        "/api/reports/summary", params={**PERIOD, "suppress": "false", "bucket": "month"}, headers=leader
    ).json()
    assert body["episodes"] == 6 and body["children"] == 4, "the drill is not counted"
    assert [b["count"] for b in body["trend"]["buckets"]] == [3, 3, 0]  # September, October, November
    assert body["trend"]["verdict"] == "falling" and body["trend"]["target_reduction_pct"] == 20
    patterns = [f for f in body["flags"] if f["kind"] == "pattern"]
    assert len(patterns) == 1 and patterns[0]["count"] == 3 and patterns[0]["label"] == "repeated seclusion"
    lengthy = [f for f in body["flags"] if f["kind"] == "lengthy"]
    assert [f["count"] for f in lengthy] == [1, 1], "12 and 25 minutes pass the first duration alert (10 min)"
    assert body["by_room"] == {"calm-1": 5, "calm-2": 1}
    assert body["durations"]["0-5 min"] == 2 and body["durations"]["20-30 min"] == 1
    assert body["supervision"]["supervised_share"] == 1.0
    assert body["records"]["records_missing"] == 6, "none of the six was ever recorded"
    suppressed = review.client.get("/api/reports/summary", params=PERIOD, headers=leader).json()
    # calm-2's 1 is withheld, and calm-1's 5 with it: the total of 6 is shown, so 5 would give the 1 away
    assert suppressed["by_room"] == {"calm-1": None, "calm-2": None}


def test_the_csv_has_stable_columns_and_no_names_and_the_governors_report_withholds_small_numbers(
    review: Review,
) -> None:
    leader = review.leader()
    response = review.client.get("/api/reports/episodes.csv", params=PERIOD, headers=leader)
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 8
    assert "Sen0" not in response.text and "Test" not in response.text
    pdf = review.client.get("/api/reports/governors.pdf", params=PERIOD, headers=leader)
    assert pdf.content.startswith(b"%PDF")
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Hillside School" in text and "fewer than 5" in text
    assert "Sen0" not in text and "Other0" not in text


def test_each_class_is_counted_apart_once_its_record_is_completed_and_never_before(review: Review) -> None:
    """Semantics 2.2: an episode a completed record calls the child's own use of the calm room, or no
    child in the room, leaves the seclusion figures and is counted on its own line; a draft saying so
    moves nothing (never under-count)."""
    leader, staff = review.leader(), review.token("staff", SITE)
    child, other = review.pupil("Other8", "none"), review.pupil("Other9", "none")
    chose = review.episode(child, START + dt.timedelta(days=70, hours=9), 9, room="calm-2")
    drafted = review.episode(other, START + dt.timedelta(days=71, hours=9), 7, room="calm-2")
    empty = review.episode(None, START + dt.timedelta(days=72, hours=9), 5)
    own_use = {**COMPLETE, "classification": "voluntary", "voluntary_reason": "Asked to go to the calm room."}
    for incident in (chose, drafted):
        assert (
            review.client.patch(f"/api/incidents/{incident}", json=own_use, headers=staff).status_code == 200
        )
    assert review.client.post(f"/api/incidents/{chose}/record", headers=staff).status_code == 200
    nobody = {
        "staff": COMPLETE["staff"],
        "before": "Sam left the room at 09:02 and the door swung shut behind him.",
        "classification": "no_child",
        "no_child_reason": "Ms Adeyemi looked through the panel at 09:03: the room was empty.",
    }
    assert review.client.patch(f"/api/incidents/{empty}", json=nobody, headers=staff).status_code == 200
    assert review.client.post(f"/api/incidents/{empty}/record", headers=staff).status_code == 200
    pending = review.client.get(
        "/api/reports/summary", params={**PERIOD, "suppress": "false"}, headers=leader
    ).json()
    assert (pending["episodes"], pending["classes"]["no_child"]) == (8, 0), "an empty room waits for a review"
    senior = review.token("senior", SITE)
    assert review.client.post(f"/api/incidents/{empty}/review", json={}, headers=senior).status_code == 200

    body = review.client.get(
        "/api/reports/summary", params={**PERIOD, "suppress": "false"}, headers=leader
    ).json()
    assert body["episodes"] == 7, "the six of the fixture and the draft; not the two counted apart"
    assert body["classes"] == {
        "seclusion": 7,
        "voluntary": 1,
        "no_child": 1,
        "unclassified": 7,
        "corrected": 0,
        "voluntary_minutes": 9.0,
        "voluntary_with_lapse": 0,
        "no_child_minutes": 5.0,
    }
    assert body["by_room"] == {"calm-1": 5, "calm-2": 2}, "calm-2: the 25 min episode and the draft"
    assert body["children"] == 5 and body["minutes"]["total"] == 12 + 8 + 25 + 4 + 6 + 3 + 7
    records = body["records"]
    # Every class keeps its record in the timeliness figures: the two recorded on the day of the review
    # (after their deadline) are late but not missing; the draft and the fixture's six are missing. The
    # empty room has no parents to tell: 8 notices are late, not 9.
    assert records["records_missing"] == 7 and records["records_late"] == 9
    assert records["parent_notices_late"] == 8 and records["parent_copies_missing"] == 8
    rates = review.client.get(
        "/api/reports/disproportionality",
        params={**PERIOD, "characteristic": "sen", "suppress": "false"},
        headers=leader,
    ).json()["items"]
    assert {r["group"]: r["k"] for r in rates}["none"] == 2, "Other0 and the draft's child, not Other8"

    hidden = review.client.get("/api/reports/summary", params=PERIOD, headers=leader).json()["classes"]
    assert (hidden["voluntary"], hidden["no_child"], hidden["seclusion"]) == (None, None, 7)
    assert (hidden["voluntary_minutes"], hidden["no_child_minutes"]) == (None, None), "minutes go with counts"

    rows = list(
        csv.DictReader(
            io.StringIO(review.client.get("/api/reports/episodes.csv", params=PERIOD, headers=leader).text)
        )
    )
    by_incident = {r["incident_id"]: r for r in rows}
    assert (
        by_incident[chose]["counted_as"] == "voluntary"
        and by_incident[chose]["classification"] == "voluntary"
    )
    assert by_incident[drafted]["counted_as"] == "seclusion", "a draft's classification moves nothing"
    assert by_incident[empty]["counted_as"] == "no_child"
    assert sorted(r["counted_as"] for r in rows).count("test") == 1

    pdf = review.client.get("/api/reports/governors.pdf", params=PERIOD, headers=leader)
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    words = " ".join(text.split())
    assert (
        "Counted apart: episodes recorded as the child's own choice to use the calm room fewer than 5"
        in words
    )
    assert "recorded as empty (a sensor still reported a child) fewer than 5" in words

    # A reviewed classification changes only by a dated addendum after sign-off; one on the
    # classification puts the episode back among the seclusion figures, parents' deadlines included,
    # whatever its words say (never under-count).
    assert review.client.post(f"/api/incidents/{empty}/sign-off", headers=senior).status_code == 200
    correction = {"text": "CCTV shows Sam was in the room until 09:20.", "field": "classification"}
    added = review.client.post(f"/api/incidents/{empty}/addenda", json=correction, headers=staff)
    assert added.status_code in (200, 201), added.text
    corrected = review.client.get(
        "/api/reports/summary", params={**PERIOD, "suppress": "false"}, headers=leader
    ).json()
    assert corrected["episodes"] == 8 and corrected["classes"]["no_child"] == 0
    assert (corrected["classes"]["unclassified"], corrected["classes"]["corrected"]) == (7, 1)
    assert corrected["records"]["parent_notices_late"] == 9


def test_lengthy_and_pattern_flags_take_every_rooms_own_policy(tmp_path: Path) -> None:
    """A room whose overrides set an earlier duration alert (listed in any order) is judged by it; the
    pattern triggers are every room's (the site's first room's policy used to judge them all)."""
    warn_5 = {"after_s": 300, "kind": "duration_warning", "tier": "room"}
    warn_30 = {"after_s": 1800, "kind": "duration_warning", "tier": "senior"}
    weekly = {"count": 2, "window_days": 7, "label": "twice in a week"}
    write_site(
        tmp_path / "site.yaml",
        [
            two_device_room("calm-1"),
            two_device_room("calm-2", duration_alerts=[warn_30, warn_5], pattern_triggers=[weekly]),
        ],
    )
    [site] = load_sites([tmp_path / "site.yaml"])
    first = site.policies["calm-1"]
    assert site_lengthy_after_s(site) == {
        "calm-1": min(a.after_s for a in first.duration_alerts),
        "calm-2": 300,
    }
    triggers = site_pattern_triggers(site)
    assert [t.label for t in triggers] == [*(t.label for t in first.pattern_triggers), "twice in a week"]


def test_an_open_episode_counts_to_now_in_every_figure(bare: Review) -> None:
    """review.md: length is `elapsed_s`, from the start of the episode to its end, the reading that never
    under-counts; semantics 2.6: to `ended_at` or now. An open episode's row is rewritten only when
    something about it changes: its stored clocks stood still while the child was in the room (the
    summary said 0 minutes of a 40-minute episode, the CSV 0 s, and no lengthy flag)."""
    bare.event(SITE, "calm-1", "calm-1-panel", "observer", "present", 0)
    bare.event(SITE, "calm-1", "calm-1-door", "occupancy", "occupied", 1)
    bare.event(SITE, "calm-1", "calm-1-door", "door", "closed", 2)
    for minute in range(1, 41):  # 40 minutes on, the child still in the room; the hub's idle batches run
        bare.clock.set(T0 + dt.timedelta(minutes=minute, seconds=2))
        bare.service.process([])
    live = bare.client.get("/api/episodes", headers=bare.token("staff", SITE)).json()["items"]
    assert live and live[0]["elapsed_s"] >= 40 * 60 - 1, "the live board says 40 minutes"
    day = {"site": SITE, "from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00:00Z"}
    body = bare.client.get(
        "/api/reports/summary", params={**day, "suppress": "false"}, headers=bare.leader()
    ).json()
    assert body["episodes"] == 1 and body["minutes"]["total"] >= 40.0, body["minutes"]
    assert body["durations"]["30+ min"] == 1
    assert [f["kind"] for f in body["flags"]] == ["lengthy"], "past the first duration alert (10 min)"
    assert body["supervision"]["supervised_share"] == 1.0, "watched throughout, to now"
    [row] = csv.DictReader(
        io.StringIO(bare.client.get("/api/reports/episodes.csv", params=day, headers=bare.leader()).text)
    )
    assert row["ended_at"] == "" and float(row["elapsed_s"]) >= 40 * 60 - 1
    assert float(row["supervised_s"]) == float(row["elapsed_s"])


def test_the_age_band_is_the_age_on_the_schools_first_day_of_the_period(bare: Review) -> None:
    """review.md: `age_band` in completed years on the first day of the period; hours, days, weeks and
    months are the school's, not UTC. A term from 1 September (BST) began on 31 August in UTC: a child
    born on 1 September 2021 is 5 on its first day, not "under 5"."""
    bare.pupil("Birthday", "none", born=dt.date(2021, 9, 1))
    bare.pupil("Older", "none", born=dt.date(2019, 1, 1))
    bare.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    term = {"site": SITE, "from": "2026-09-01T00:00:00+01:00", "to": "2026-12-01T00:00:00Z"}
    rows = bare.client.get(
        "/api/reports/disproportionality",
        params={**term, "characteristic": "age_band", "suppress": "false"},
        headers=bare.leader(),
    ).json()["items"]
    assert {r["group"]: r["n"] for r in rows} == {"5-6": 1, "7-10": 1}


def test_the_rates_count_the_children_on_roll_in_the_period_not_every_leaver_since(bare: Review) -> None:
    """A register keeps its leavers (their records name them), so without their dates every later
    term's rates would divide by every child the school ever had: a rate per 100 falling term after term
    for no reason but the register's age. The register says a child's days on roll (`joined_on`,
    `left_on`, an addition), and a period's figures count the children on roll in it, its own days on
    the school's calendar; a child secluded in the period counts whatever their dates say."""
    staying = [bare.pupil(f"Stay{i}", "none") for i in range(3)]
    leader = bare.leader()
    senior = bare.token("senior", SITE)
    added = [
        bare.client.post("/api/pupils", json={**child, "site": SITE}, headers=senior)
        for child in (
            {"first_name": "Leaver", "last_name": "Test", "sen": "ehcp", "left_on": "2026-07-22"},
            {"first_name": "Last", "last_name": "Day", "sen": "ehcp", "left_on": "2026-09-01"},
            {"first_name": "Joiner", "last_name": "Test", "sen": "ehcp", "joined_on": "2026-12-01"},
            {"first_name": "Early", "last_name": "Date", "sen": "ehcp", "left_on": "2026-08-01"},
        )
    ]
    assert [r.status_code for r in added] == [201] * 4, [r.text for r in added]
    assert added[0].json()["left_on"] == "2026-07-22" and added[2].json()["joined_on"] == "2026-12-01"
    # Secluded in the term although the register says they left before it: counted (never under-count).
    bare.episode(added[3].json()["id"], START + dt.timedelta(days=3, hours=10), 5)
    bare.episode(staying[0], START + dt.timedelta(days=4, hours=10), 5)
    bare.clock.set(dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    term = {"site": SITE, "from": "2026-09-01T00:00:00+01:00", "to": "2026-12-01T00:00:00Z"}
    report = bare.client.get(
        "/api/reports/disproportionality",
        params={**term, "characteristic": "sen", "suppress": "false"},
        headers=leader,
    ).json()
    # On roll: the three staying, Day (whose last day is the term's first) and Early (secluded).
    assert {r["group"]: (r["n"], r["k"]) for r in report["items"]} == {"none": (3, 1), "ehcp": (2, 1)}
    assert report["children"] == 5
    # A last day before the first is refused, naming the field, and nothing is kept.
    wrong = {"first_name": "Back", "last_name": "Wards", "joined_on": "2026-09-02", "left_on": "2026-09-01"}
    refused = bare.client.post("/api/pupils", json={**wrong, "site": SITE}, headers=senior)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "left_on"]
    csv = "first_name,last_name,joined_on,left_on\nBack,Wards,2026-09-02,2026-09-01\n"
    imported = bare.client.post(
        "/api/pupils/import",
        params={"site": SITE},
        content=csv,
        headers={**senior, "Content-Type": "text/csv"},
    )
    assert imported.status_code == 422 and "line 2: left_on" in imported.text
    names = [p["first_name"] for p in bare.client.get("/api/pupils", headers=senior).json()["items"]]
    assert "Back" not in names


def test_a_month_only_partly_inside_the_period_is_marked_and_left_out_of_the_fit(bare: Review) -> None:
    """review.md, Trend: "A week or month only partly inside the period is marked partial". A term to
    2 December: December's 0 is two days, not a month of no seclusion; the governors' PDF printed it as a
    month like the others, and the summary's fit took it for a fall."""
    child = bare.pupil("Steady", "none")
    for month in (9, 10, 11):
        for day in (3, 8, 10, 17, 24):
            bare.episode(child, dt.datetime(2026, month, day, 10, tzinfo=dt.UTC), 5)
    bare.clock.set(dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC))
    term = {"site": SITE, "from": "2026-09-01T00:00:00+01:00", "to": "2026-12-02T12:00:00Z"}
    trend = bare.client.get(
        "/api/reports/summary", params={**term, "bucket": "month", "suppress": "false"}, headers=bare.leader()
    ).json()["trend"]
    assert [(b["label"], b["count"], b["partial"], b["fitted"]) for b in trend["buckets"]] == [
        ("2026-09", 5, False, 5.0),
        ("2026-10", 5, False, 5.0),
        ("2026-11", 5, False, 5.0),
        ("2026-12", 0, True, None),
    ]
    assert trend["verdict"] == "flat" and trend["slope"] == 0.0
    pdf = bare.client.get("/api/reports/governors.pdf", params=term, headers=bare.leader())
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages).split())
    assert "December 2026 (partial) 0" in text and "November 2026 5" in text
    assert "November 2026 (partial)" not in text
    assert "A month marked partial is only partly inside the period" in text


def test_a_record_corrected_by_addendum_is_not_waiting_for_a_completed_record(bare: Review) -> None:
    """review.md: `unclassified` is "the ones with no completed record yet, or recorded as `no_child` and
    not yet reviewed". A closed record whose classification an addendum corrects has a completed,
    reviewed record: it counts as seclusion, apart as `corrected`, and waits for nothing."""
    # A record saying no child was in the room names none (records.md).
    incident = bare.episode(None, dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC), 9)
    staff, senior = bare.token("staff", SITE), bare.token("senior", SITE)
    nobody = {
        "staff": COMPLETE["staff"],
        "before": "Sam left the room at 09:02 and the door swung shut behind him.",
        "classification": "no_child",
        "no_child_reason": "Ms Adeyemi looked through the panel at 09:03: the room was empty.",
    }
    assert bare.client.patch(f"/api/incidents/{incident}", json=nobody, headers=staff).status_code == 200
    assert bare.client.post(f"/api/incidents/{incident}/record", headers=staff).status_code == 200
    assert bare.client.post(f"/api/incidents/{incident}/review", json={}, headers=senior).status_code == 200
    assert bare.client.post(f"/api/incidents/{incident}/sign-off", headers=senior).status_code == 200
    correction = {"text": "CCTV shows Sam was in the room until 09:20.", "field": "classification"}
    added = bare.client.post(f"/api/incidents/{incident}/addenda", json=correction, headers=staff)
    assert added.status_code in (200, 201), added.text
    bare.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    november = {"site": SITE, "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    body = bare.client.get(
        "/api/reports/summary", params={**november, "suppress": "false"}, headers=bare.leader()
    ).json()
    assert body["episodes"] == 1 and body["classes"]["seclusion"] == 1 and body["classes"]["no_child"] == 0
    assert body["classes"]["unclassified"] == 0 and body["classes"]["corrected"] == 1
    withheld = bare.client.get("/api/reports/summary", params=november, headers=bare.leader()).json()
    assert withheld["classes"]["corrected"] is None, "1 is a small number"


def _lapse_alert_on_first_episode(review: Review) -> None:
    """A (resolved) supervision lapse alert stored against the earliest episode."""
    with review.store.session() as s:
        first = s.exec(select(EpisodeRecord).order_by(col(EpisodeRecord.started_at))).first()
        assert first is not None
        s.add(
            AlertRecord(
                id=str(uuid.uuid4()),
                episode_id=first.id,
                site=SITE,
                room="calm-1",
                kind="supervision_lapse",
                severity="warning",
                active=False,
                raised_at=first.started_at,
                data="{}",
                updated_at=first.started_at,
            )
        )
        s.commit()


def test_the_suppressed_summary_withholds_every_small_count(bare: Review) -> None:
    """review.md: anything that leaves the leaders' screen withholds every count from 1 to 4 (children
    in a group, children secluded, episodes ...), as the governors' PDF withholds "Children involved". Six
    episodes of two children, one with a lapse in supervision and none recorded: the suppressed summary
    said `children: 2` under `suppressed: true`, and its lapses, trend and records likewise."""
    kids = [bare.pupil(f"Kid{i}", "none") for i in range(2)]
    for i in range(6):  # 3, 2 and 1 in the weeks from 2, 9 and 16 November; a lapse in the first
        start = dt.datetime(2026, 11, 2 + 3 * i, 10, tzinfo=dt.UTC)
        bare.episode(kids[i % 2], start, 5, observer=absent(start, MINUTE, 20) if i == 0 else None)
    bare.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    november = {"site": SITE, "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "bucket": "week"}
    shown = bare.client.get(
        "/api/reports/summary", params={**november, "suppress": "false"}, headers=bare.leader()
    ).json()
    assert (
        shown["children"],
        shown["supervision"]["lapses"],
        shown["supervision"]["episodes_with_lapse"],
    ) == (
        2,
        1,
        1,
    )
    body = bare.client.get("/api/reports/summary", params=november, headers=bare.leader()).json()
    assert body["suppressed"] is True and body["episodes"] == 6, "6 is not a small number"
    assert body["children"] is None and body["episodes_without_child"] == 0, "0 names nobody"
    supervision = body["supervision"]
    assert (supervision["lapses"], supervision["episodes_with_lapse"], supervision["lapses_per_episode"]) == (
        None,
        None,
        None,
    ), "lapses per episode would give the lapses back"
    assert all(b["count"] in (None, 0) or b["count"] >= 5 for b in body["trend"]["buckets"])
    assert body["trend"]["slope"] is None and {b["fitted"] for b in body["trend"]["buckets"]} == {None}
    assert body["records"]["records_missing"] == 6 and body["records"]["records_late"] == 6


def test_what_leaves_the_screen_withholds_small_counts_their_minutes_and_each_childs_flags(
    bare: Review,
) -> None:
    """review.md: everything that leaves the leaders' screen withholds counts of 1 to 4. The governors'
    PDF printed 3 episodes, their total and median minutes (with 3 episodes of one child, the minutes
    give each child's time away) and 1 lapse; the suppressed summary listed the child's pattern flag with
    their register id, episodes and dates, and the lengthy episode's own flag."""
    kid = bare.pupil("Kid", "none")
    for day, minutes in ((2, 5), (9, 6), (16, 40)):  # 3 in 30 days: a pattern; 40 minutes: lengthy
        start = dt.datetime(2026, 11, day, 10, tzinfo=dt.UTC)
        bare.episode(kid, start, minutes, observer=absent(start, MINUTE, 20) if day == 2 else None)
    bare.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    november = {"site": SITE, "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}

    shown = bare.client.get(
        "/api/reports/summary", params={**november, "suppress": "false"}, headers=bare.leader()
    ).json()
    assert {f["kind"] for f in shown["flags"]} == {"pattern", "lengthy"}
    assert [f["pupil_id"] for f in shown["flags"] if f["kind"] == "pattern"] == [kid]
    assert shown["minutes"]["total"] == 51.0, "the leaders' own screen has everything"

    body = bare.client.get("/api/reports/summary", params=november, headers=bare.leader()).json()
    assert body["suppressed"] is True and body["episodes"] is None
    assert body["minutes"] == {"total": None, "median": None, "longest": None}, "minutes go with their count"
    assert kid not in json.dumps(body), "no child's register id leaves the screen"
    flags = {f["kind"]: f for f in body["flags"]}
    assert set(flags) == {"pattern", "lengthy"}
    for flag in flags.values():
        assert flag["pupil_id"] is None and flag["episode_ids"] == [] and flag["count"] is None
        assert flag["first_start"] is None and flag["last_start"] is None
    assert flags["pattern"]["children"] is None and flags["lengthy"]["episodes"] is None, "1 is small"

    pdf = bare.client.get("/api/reports/governors.pdf", params=november, headers=bare.leader())
    words = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages).split())
    assert "Episodes fewer than 5" in words
    assert "(no member of staff recorded supervising) fewer than 5" in words
    assert "Total time in the rooms not shown" in words and "51 minutes" not in words
    assert "episode not shown" in words


def test_the_suppressed_summary_counts_the_children_a_pattern_flags(bare: Review) -> None:
    """With enough children flagged, the suppressed summary says how many for each trigger, and how many
    episodes were lengthy, still without naming one."""
    kids = [bare.pupil(f"Kid{i}", "none") for i in range(5)]
    for i, kid in enumerate(kids):
        for day in (2, 9, 16):
            bare.episode(kid, dt.datetime(2026, 11, day, 10 + i, tzinfo=dt.UTC), 35 if day == 2 else 5)
    bare.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    november = {"site": SITE, "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    body = bare.client.get("/api/reports/summary", params=november, headers=bare.leader()).json()
    flags = {f["kind"]: f for f in body["flags"]}
    assert flags["pattern"]["children"] == 5 and flags["lengthy"]["episodes"] == 5
    assert body["episodes"] == 15 and body["minutes"]["total"] == 5 * 45.0
    assert not any(kid in json.dumps(body) for kid in kids)


def test_the_episodes_csv_is_named_by_the_schools_own_days(bare: Review) -> None:
    """The leaders' page asks for 1 September to 31 October (local days) as 2026-08-31T23:00Z to
    2026-11-01T00:00Z; the file was named 20260831-20261101, two days nobody chose."""
    bare.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    params = {"site": SITE, "from": "2026-08-31T23:00:00Z", "to": "2026-11-01T00:00:00Z"}
    got = bare.client.get("/api/reports/episodes.csv", params=params, headers=bare.leader())
    assert "episodes-test-school-20260901-20261031.csv" in got.headers["content-disposition"]


def test_an_episode_counts_for_every_group_its_member_of_staff_is_in(tmp_path: Path) -> None:
    """review.md, group of staff: "an episode counts once for a group however many of its members were
    there". The site file accepts a name in two groups; the summary built a name -> group dict, so the
    last group won and the episode disappeared from the other."""
    groups = {"teaching assistants": ["Ms Adeyemi"], "team-teach trained": ["Ms Adeyemi", "Mr Bell"]}
    r = Review(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", staff_groups=groups)
    try:
        incident = r.episode(r.pupil("Ann", "none"), dt.datetime(2026, 10, 5, 10, tzinfo=dt.UTC), 5)
        staff = {
            "staff": [{"name": "Ms Adeyemi", "role": "involved"}, {"name": "Mr Bell", "role": "involved"}]
        }
        patched = r.client.patch(f"/api/incidents/{incident}", json=staff, headers=r.token("staff", SITE))
        assert patched.status_code == 200, patched.text
        r.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
        body = r.client.get(
            "/api/reports/summary", params={**PERIOD, "suppress": "false"}, headers=r.leader()
        ).json()
        assert body["by_staff_group"] == {"team-teach trained": 1, "teaching assistants": 1}
    finally:
        r.client.close()
        r.store.close()


def absent(start: dt.datetime, after: dt.timedelta, seconds: float) -> list[ObserverMark]:
    """Observer marks: present from `start`, away for `seconds` from `after` later, then back."""
    away = start + after
    return [
        ObserverMark(ts=start, present=True),
        ObserverMark(ts=away, present=False),
        ObserverMark(ts=away + dt.timedelta(seconds=seconds), present=True),
    ]


def test_a_lapse_is_never_rounded_away_in_the_supervision_shares(bare: Review) -> None:
    """An hour with 1.5 s unsupervised: the summary rounded each share to 3 decimals to nearest, so it
    said supervised 1.0 and not supervised 0.0 (and the overview page 100.0 % and 0.0 %), while the
    child page and the governors' PDF (percent_down) said 99 %. Supervised now rounds down, the rest up."""
    start = dt.datetime(2026, 10, 5, 10, tzinfo=dt.UTC)
    bare.episode(None, start, 60, observer=absent(start, dt.timedelta(minutes=30), 1.5))
    bare.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    for hidden in ("true", "false"):
        shares = bare.client.get(
            "/api/reports/summary", params={**PERIOD, "suppress": hidden}, headers=bare.leader()
        ).json()["supervision"]
        assert (shares["supervised_share"], shares["unsupervised_share"], shares["unknown_share"]) == (
            0.999,
            0.001,
            0.0,
        )


@pytest.mark.parametrize(
    ("share", "down", "up"),
    [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.29, 0.29, 0.29), (0.0004, 0.0, 0.001), (0.9996, 0.999, 1.0)],
)
def test_shares_round_down_when_supervised_and_up_otherwise(share: float, down: float, up: float) -> None:
    assert (share_down(share), share_up(share)) == (down, up)
    assert share_down(None) is None and share_up(None) is None


def test_a_room_taken_out_of_the_site_file_is_judged_by_the_lowest_first_duration_alert(
    tmp_path: Path,
) -> None:
    """review.md: lengthy flags every episode past its room's first duration alert. A room taken out of
    the site file keeps its episodes in every count, but had no threshold at all, so a 45-minute episode
    there was never flagged. It now falls back to the lowest first alert of the site's rooms, or the
    profile's where no room has one."""
    warn_5 = {"after_s": 300, "kind": "duration_warning", "tier": "room"}
    write_site(
        tmp_path / "site.yaml",
        [two_device_room("calm-1"), two_device_room("calm-2", duration_alerts=[warn_5])],
    )
    [site] = load_sites([tmp_path / "site.yaml"])
    limits = site_lengthy_after_s(site, ["calm-1", "old-room"])
    assert limits == {"calm-1": 600, "calm-2": 300, "old-room": 300}
    write_site(tmp_path / "quiet.yaml", [two_device_room("calm-1", duration_alerts=[])])
    [quiet] = load_sites([tmp_path / "quiet.yaml"])
    assert site_lengthy_after_s(quiet, ["calm-1", "old-room"]) == {"old-room": 600}, "the profile's first"


def test_a_lengthy_episode_in_a_room_taken_out_of_the_site_file_is_still_flagged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    before = Review(tmp_path / "before", url, rooms=[two_device_room("calm-1"), two_device_room("old-room")])
    long_one = before.episode(None, dt.datetime(2026, 10, 5, 10, tzinfo=dt.UTC), 45, room="old-room")
    before.episode(None, dt.datetime(2026, 10, 6, 10, tzinfo=dt.UTC), 9, room="old-room")
    before.client.close()
    before.store.close()
    after = Review(tmp_path / "after", url, rooms=[two_device_room("calm-1")])  # old-room taken out
    try:
        after.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
        body = after.client.get(
            "/api/reports/summary", params={**PERIOD, "suppress": "false"}, headers=after.leader()
        ).json()
        assert body["by_room"] == {"old-room": 2, "calm-1": 0}, "counted ..."
        with after.store.session() as s:
            episode_id = s.exec(select(IncidentRecord.episode_id).where(IncidentRecord.id == long_one)).one()
        lengthy = [f["episode_ids"] for f in body["flags"] if f["kind"] == "lengthy"]
        assert lengthy == [[episode_id]], "... and 45 minutes is past the lowest first alert (10 min)"
    finally:
        after.client.close()
        after.store.close()


def test_three_episodes_within_30_days_are_flagged_even_across_the_start_of_the_period(bare: Review) -> None:
    """review.md, Patterns: a child is flagged when `count` or more of their episodes started within one
    window, "at any time up to now". The figures read only the episodes that started in the chosen
    period, so a child secluded on 24 and 28 August and again on 2 September (3 in 9 days) was not
    flagged on the autumn term's review. The look-back (30 days, the largest window) completes it; the
    August episodes count nowhere else."""
    child = bare.pupil("Ann", "none")
    for day in (dt.datetime(2026, 8, 24, 10), dt.datetime(2026, 8, 28, 10), dt.datetime(2026, 9, 2, 10)):
        bare.episode(child, day.replace(tzinfo=dt.UTC), 45)
    bare.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    term = {"site": SITE, "from": "2026-09-01T00:00:00+01:00", "to": "2026-12-01T00:00:00Z"}
    body = bare.client.get(
        "/api/reports/summary", params={**term, "suppress": "false"}, headers=bare.leader()
    ).json()
    (pattern,) = [f for f in body["flags"] if f["kind"] == "pattern"]
    assert (pattern["pupil_id"], pattern["count"]) == (child, 3)
    assert pattern["first_start"] == "2026-08-24T10:00:00.000Z", "the window begins before the period"
    assert pattern["last_start"] == "2026-09-02T10:00:00.000Z"
    assert [f["count"] for f in body["flags"] if f["kind"] == "lengthy"] == [1], "September's 45 min only"
    assert body["episodes"] == 1 and body["minutes"]["total"] == 45.0, "August counts nowhere else"
    rows = list(
        csv.DictReader(
            io.StringIO(bare.client.get("/api/reports/episodes.csv", params=term, headers=bare.leader()).text)
        )
    )
    assert len(rows) == 1
    hidden = bare.client.get("/api/reports/summary", params=term, headers=bare.leader()).json()
    assert [f["children"] for f in hidden["flags"] if f["kind"] == "pattern"] == [None], "1 child: small"
    # A term that starts after the third: nothing of it in the period, no flag
    later = {**term, "from": "2026-09-03T00:00:00Z"}
    body = bare.client.get(
        "/api/reports/summary", params={**later, "suppress": "false"}, headers=bare.leader()
    ).json()
    assert body["flags"] == []


def test_the_lapses_count_every_unsupervised_interval_as_longest_lapse_s_does(bare: Review) -> None:
    """Semantics 3.4: every unsupervised interval is a lapse, "grace included and however short", and
    `longest_lapse_s` is the longest of them. The review counted lapses as `supervision_lapse` alerts
    (only those past the grace), so the CSV said lapses 0 next to longest_lapse_s 10, and the summary
    that no episode had a lapse while the time not supervised was not 0. The alerts are counted apart,
    as `lapse_alerts`."""
    start = dt.datetime(2026, 10, 5, 10, tzinfo=dt.UTC)
    # away 10 s (within the 15 s grace: no alert), then 20 s (past it); a second episode with no lapse
    marks = [
        ObserverMark(ts=start + dt.timedelta(seconds=t), present=present)
        for t, present in ((0, True), (300, False), (310, True), (360, False), (380, True))
    ]
    bare.episode(None, start, 12, observer=marks)
    bare.episode(None, start + dt.timedelta(days=1), 12)
    _lapse_alert_on_first_episode(bare)  # as the hub raised it, for the 20 s
    bare.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    text = bare.client.get("/api/reports/episodes.csv", params=PERIOD, headers=bare.leader()).text
    first, second = csv.DictReader(io.StringIO(text))
    assert (float(first["unsupervised_s"]), float(first["longest_lapse_s"])) == (30.0, 20.0)
    assert (first["lapses"], first["lapse_alerts"]) == ("2", "1")
    assert (second["lapses"], second["lapse_alerts"], second["longest_lapse_s"]) == ("0", "0", "0.000")
    body = bare.client.get(
        "/api/reports/summary", params={**PERIOD, "suppress": "false"}, headers=bare.leader()
    ).json()["supervision"]
    assert (body["lapses"], body["episodes_with_lapse"], body["lapses_per_episode"]) == (2, 1, 1.0)


def test_an_open_episodes_lapses_count_to_now(bare: Review) -> None:
    """An open episode's lapses are those of its accounting to now, as its other clocks are."""
    bare.event(SITE, "calm-1", "calm-1-panel", "observer", "present", 0)
    bare.event(SITE, "calm-1", "calm-1-door", "occupancy", "occupied", 1)
    bare.event(SITE, "calm-1", "calm-1-door", "door", "closed", 2)
    bare.event(SITE, "calm-1", "calm-1-panel", "observer", "absent", 60)
    bare.event(SITE, "calm-1", "calm-1-panel", "observer", "present", 65)  # 5 s: within the grace
    bare.clock.set(T0 + dt.timedelta(minutes=2))
    day = {"site": SITE, "from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00:00Z"}
    [row] = csv.DictReader(
        io.StringIO(bare.client.get("/api/reports/episodes.csv", params=day, headers=bare.leader()).text)
    )
    assert row["ended_at"] == "" and (row["lapses"], row["lapse_alerts"]) == ("1", "0")
    assert float(row["longest_lapse_s"]) == 5.0


def test_the_sen_and_ehcp_tables_are_suppressed_together_wherever_either_is(bare: Review) -> None:
    """`ehcp` is derived from `sen`: its "no" is sen none plus SEN support. Suppressed one by one, sen
    showed SEN support 5 and unknown 5 and ehcp showed "no" 10, with 18 secluded in all: none is 10 - 5
    and the 3 children with an EHC plan 18 - 5 - 5 - 5, both withheld. Now a count withheld in either
    table withholds its linked groups' in the other, through the API (one characteristic or all) and in
    the governors' SEN table alike."""
    groups = [("N", "none", 8, 5), ("S", "sen_support", 6, 5), ("E", "ehcp", 5, 3), ("U", "unknown", 5, 5)]
    for prefix, sen, n, k in groups:
        for i in range(n):
            child = bare.pupil(f"{prefix}{i}", sen)
            if i < k:
                bare.episode(child, dt.datetime(2026, 10, 5 + i, 10, tzinfo=dt.UTC), 5)
    bare.clock.set(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))

    def table(**asked: str) -> dict[tuple[str, str], dict[str, object]]:
        items = bare.client.get(
            "/api/reports/disproportionality", params={**PERIOD, **asked}, headers=bare.leader()
        ).json()["items"]
        return {(r["characteristic"], r["group"]): r for r in items if r["characteristic"] in ("sen", "ehcp")}

    shown = table(suppress="false")
    assert {g: r["k"] for (c, g), r in shown.items() if c == "sen"} == {
        "none": 5,
        "sen_support": 5,
        "ehcp": 3,
        "unknown": 5,
    }
    assert {g: r["k"] for (c, g), r in shown.items() if c == "ehcp"} == {"yes": 3, "no": 10, "unknown": 5}
    every = table()
    assert {key: r["k"] for key, r in every.items()} == dict.fromkeys(every), "every k withheld"
    assert {key: r["n"] for key, r in every.items()} == {key: r["n"] for key, r in shown.items()}
    assert all(r["suppressed"] and r["risk_ratio"] is None for r in every.values())
    one_by_one = {**table(characteristic="sen"), **table(characteristic="ehcp")}
    assert one_by_one == every, "asking for one and then the other gives no more than asking for both"
    pdf = bare.client.get("/api/reports/governors.pdf", params=PERIOD, headers=bare.leader())
    words = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages).split())
    # Withheld with the small count, though it is 5: "withheld", never "fewer than 5", which is untrue
    assert "SEN: SEN support withheld" in words and "SEN: SEN support 5" not in words
    assert "SEN: SEN support fewer than 5" not in words
    assert "SEN: unknown 5" not in words
