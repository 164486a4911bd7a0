"""A point-in-time recovery through a struggling Cloud SQL Admin API: about a
fifth of its answers 500/503, then about a quarter 429 (each mix one run).
The recovery must complete, checked and switched, with exactly one clone
accepted by the API. Full suite only (a real PostgreSQL clone per run)."""

from __future__ import annotations

import datetime as dt

import pytest

from runbook.models import Phase
from runbook.pitr_models import ExpectedQuery
from sandbox.scenario import FaultRule
from tests.integration.conftest import dev_env  # noqa: F401 - the fixture, for this directory
from tests.integration.test_pitr import (
    JST,
    PitrStack,
    corrupt,
    recovery,  # noqa: F401 - the fixture
)
from tests.reliability.stack import FULL

pytestmark = [
    pytest.mark.integration,
    pytest.mark.reliability,
    pytest.mark.skipif(not FULL, reason="full reliability suite only (MODORU_RELIABILITY=full)"),
]

MIXES = {
    "~20% 500/503": [FaultRule(status=500, rate=0.1), FaultRule(status=503, rate=0.11)],
    "~25% 429": [
        FaultRule(status=429, rate=0.125, retry_after_seconds=1),
        FaultRule(status=429, rate=0.143, retry_after_seconds=2),
    ],
}


@pytest.mark.parametrize("mix", list(MIXES))
async def test_a_recovery_completes_through_cloud_sql_faults(
    recovery: PitrStack,  # noqa: F811 - the fixture
    mix: str,
) -> None:
    cloudsql = recovery.sandbox.sandbox.cloudsql
    at, count = await corrupt(recovery)
    mark = recovery.sandbox.call(lambda: cloudsql.requests.last_seq)
    recovery.sandbox.call(lambda: cloudsql.faults.replace(MIXES[mix]))
    started = dt.datetime.now(dt.UTC)
    try:
        result, error = await recovery.run(
            point_in_time=at.astimezone(JST),
            new_instance="tekutoko-db-faults",
            checks=[
                ExpectedQuery(name="walks", sql="SELECT count(*) FROM walks", expect=str(count))
            ],
        )
    finally:
        recovery.sandbox.call(lambda: cloudsql.faults.replace([]))
    took = (dt.datetime.now(dt.UTC) - started).total_seconds()
    assert error is None, error
    assert result.status.phase is Phase.COMPLETED and all(c.ok for c in result.status.checks)
    entries = recovery.sandbox.call(lambda: cloudsql.requests.since(mark))
    clones = [e for e in entries if e["path"].endswith("/clone") and e["status"] == 200]
    faulted = [e for e in entries if e["status"] in (429, 500, 503)]
    assert len(clones) == 1, clones
    assert faulted, "the faults were there to get through"
    print(
        f"cloud sql {mix}: recovery completed in {took:.0f}s through {len(faulted)} faulted "
        f"answers of {len(entries)}; one clone",
        flush=True,
    )
