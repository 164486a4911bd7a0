"""The release guard on the `promql` source at the real clock (speed 1), on `modoru up`'s
own stack (tekutoko-release: 15-s scrapes, samples readable 5 s later): a release that
fails 60% of its calls is rolled back `immediate` on PromQL readings and verified, each
step in order; healthy releases that fail 3% of their calls under bursts of traffic are
not rolled back. The timings are recorded, not asserted: bench.detection measures them
(`--presets promql`, with `--tries` for many healthy releases)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bench.detection_promql import (
    SCRAPE_SECONDS,
    PromqlStack,
    bad_release,
    healthy_bursty,
    promql_stack,
)
from tests.realtime.conftest import record

pytestmark = pytest.mark.realtime
HEALTHY_TRIES = 2
WATCH_SECONDS = 60
RUNBOOK_INVESTIGATE_SECONDS = 15 * 60


@pytest.fixture(scope="module")
async def stack(tmp_path_factory) -> AsyncIterator[PromqlStack]:
    async with promql_stack(tmp_path_factory.mktemp("promql")) as running:
        yield running


async def test_a_release_failing_60_percent_is_rolled_back_and_verified(
    stack: PromqlStack,
) -> None:
    timeline = await bad_release(stack.client, stack.settings, stack.apps, stack.url)
    record("promql_bad_release", **timeline)
    assert timeline["severity"] == "immediate"
    assert timeline["guard_phase"] == "rolled_back"  # verified
    assert any("error ratio" in reason for reason in timeline["reasons"])
    # decided on a PromQL reading: a rate over two scrape intervals, not whole minutes
    assert timeline["window_s"] == 2 * SCRAPE_SECONDS
    assert (
        0 <= timeline["breach_seen_s"] <= timeline["rollback_started_s"] <= timeline["verified_s"]
    )
    assert timeline["rollback_started_s"] < RUNBOOK_INVESTIGATE_SECONDS


@pytest.mark.parametrize("seed", range(HEALTHY_TRIES))
async def test_a_healthy_release_under_bursts_is_not_rolled_back(
    stack: PromqlStack, seed: int
) -> None:
    outcome = await healthy_bursty(
        stack.client, stack.settings, stack.apps, stack.url, WATCH_SECONDS, seed
    )
    record("promql_healthy_bursty", **outcome)
    assert outcome["probe_failures"] > 0  # the release really failed some calls
    assert not outcome["false_rollback"], outcome["reasons"]
    assert outcome["phase"] == "finished"
