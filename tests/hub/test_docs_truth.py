"""Claims of the documents that the software does not keep (a documentation review).

Each test quotes the claim it holds the software to.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from seclusion_contract import format_ts
from tests.hub.test_api import T0, Api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    yield a
    a.client.close()
    a.store.close()


def test_a_manual_episode_whose_end_is_in_the_future_is_refused_naming_ended_at(api: Api) -> None:
    """docs/hub.md, "Manual episodes": "a time more than 5 minutes ahead of the hub's clock is refused
    (422 naming the field)"; contract section 6: "A bad request gets 422 naming the field". A start in
    the past with an end an hour ahead: the field at fault is `ended_at`, not `started_at`."""
    senior = api.token("senior", "test-school")
    body = {
        "site": "test-school",
        "room": "calm-1",
        "started_at": format_ts(T0 - dt.timedelta(minutes=20)),
        "ended_at": format_ts(T0 + dt.timedelta(hours=1)),
        "reason": "door sensor failed",
    }
    answer = api.client.post("/api/episodes", json=body, headers=senior)
    assert answer.status_code == 422
    named = [tuple(d["loc"]) for d in answer.json()["detail"]]
    assert named == [("body", "ended_at")], named
