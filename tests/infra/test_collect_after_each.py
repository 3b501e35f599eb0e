"""`--collect-after-each` (tests/conftest.py): a test that leaves a socket to the garbage collector
fails itself, not whichever test the collector happens to run in. How to find the source of an
unclosed-socket ResourceWarning that failed an unrelated test (README, Development)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The collector's own runs are off in the probe: only the option's collection can find the leak.
PROBE = """
import gc
import socket

gc.disable()


class Cycle:
    def __init__(self) -> None:
        self.me = self
        self.sock = socket.socket()


def test_leaks_a_socket() -> None:
    Cycle()


def test_after_it() -> None:
    pass
"""


@pytest.fixture
def probe(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makepyfile(test_probe=PROBE)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return pytester


def test_the_leak_fails_the_test_that_leaked(probe: pytest.Pytester) -> None:
    result = probe.runpytest_subprocess(
        "-p", "tests.conftest", "--collect-after-each", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2, errors=1)  # the leaking test passes, its teardown fails
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks_a_socket*", "*unclosed <socket.socket*"])
