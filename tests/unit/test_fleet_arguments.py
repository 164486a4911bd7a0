"""bench.fleet's arguments: worker counts as a list, and bad ones refused by name
before any stack starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.fleet import worker_counts


def test_worker_counts_take_one_number_or_several() -> None:
    assert worker_counts("2") == [2]
    assert worker_counts("1,2,4") == [1, 2, 4]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--workers", "1,x"], "--workers takes a number or numbers separated by commas"),
        (["--workers", "0"], "--workers must each be at least 1"),
        (["--cost-only", "--cost-rollbacks", "-1"], "--cost-rollbacks must be 0 or more"),
        (["--deployments", "0"], "--deployments must be at least 1"),
    ],
)
def test_a_bad_argument_is_named_and_nothing_starts(argv: list[str], said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.fleet", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert said in done.stderr and "machine:" not in done.stdout
