"""bench/ingest_path.py runs and accounts for every message (a small run: the figures are not asserted)."""

from __future__ import annotations

import pytest

from bench import ingest_path


@pytest.mark.parametrize(
    "args", [["--events", "400", "--batch", "10"], ["--events", "400", "--rate", "1000"]]
)
def test_the_ingest_path_benchmark_stores_and_acknowledges_every_message(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert ingest_path.main(args) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert "us per message" in out
