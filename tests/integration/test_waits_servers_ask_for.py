"""The waits a server asks for, kept by Temporal: a GitHub rate limit's
`retry-after` and a Cloud SQL recovery window that has not reached the restore
point yet both come back as retryable failures with `next_retry_delay`, and the
next attempt runs no sooner. A GitHub Enterprise Server 3.20 dispatch goes
through on its plain-dispatch fallback, on a real worker."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

from activities.cloudsql_pitr import PitrActivities
from activities.github import GitHubActivities
from runbook.cd_config import CdConfig
from runbook.cd_models import DispatchRequest, RunState
from runbook.pitr_models import PitrCheck, PitrCheckRequest
from sandbox.github import GitHubEmulator, RateLimitKnob
from sandbox.scenario import GitHubSeed

pytestmark = pytest.mark.integration
CD = CdConfig(repository="tekutoko/tekutoko-api", token_env="GH_TOKEN")
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=6)


@workflow.defn(sandboxed=False)
class DispatchOnce:
    @workflow.run
    async def run(self, request: DispatchRequest) -> RunState:
        return await workflow.execute_activity(
            "github.dispatch",
            request,
            result_type=RunState,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RETRY,
        )


@workflow.defn(sandboxed=False)
class CheckOnce:
    @workflow.run
    async def run(self, request: PitrCheckRequest) -> PitrCheck:
        return await workflow.execute_activity(
            "cloudsql.pitr_check",
            request,
            result_type=PitrCheck,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RETRY,
        )


class Lagging:
    """A Cloud SQL admin whose recovery window ends `lag` before each request."""

    def __init__(self, lag: timedelta) -> None:
        self.lag, self.windows = lag, []

    async def instance(self, project: str, name: str) -> dict | None:
        if name != "tekutoko-db":
            return None
        return {"settings": {"backupConfiguration": {"pointInTimeRecoveryEnabled": True}}}

    async def latest_recovery_time(self, project: str, instance: str) -> dict:
        latest = dt.datetime.now(dt.UTC) - self.lag
        self.windows.append(latest)
        return {
            "earliestRecoveryTime": "2026-01-01T00:00:00Z",
            "latestRecoveryTime": latest.isoformat().replace("+00:00", "Z"),
        }

    async def backup_runs(self, project: str, instance: str, max_results: int = 50) -> list:
        return []


@pytest.fixture
async def ghes() -> AsyncIterator[GitHubEmulator]:
    emulator = GitHubEmulator(
        GitHubSeed.model_validate({"enterprise_version": "3.20", "cd": {"step_seconds": 30}})
    )
    await emulator.start()
    yield emulator
    await emulator.stop()


async def run_with(dev_env, activities, workflow_class, request):
    queue = f"waits-{uuid.uuid4().hex[:8]}"
    async with Worker(
        dev_env.client, task_queue=queue, workflows=[workflow_class], activities=activities
    ):
        return await dev_env.client.execute_workflow(
            workflow_class.run, request, id=queue, task_queue=queue
        )


async def test_a_secondary_limit_s_retry_after_is_kept_and_ghes_falls_back(dev_env, ghes) -> None:
    ghes.limit(RateLimitKnob(kind="secondary", resource="dispatches", retry_after_seconds=3))
    gh = GitHubActivities(ghes.url, environ={"GH_TOKEN": ghes.token})
    request = DispatchRequest(
        cd=CD, tag="1.2.0", not_before=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    state = await run_with(dev_env, [gh.dispatch], DispatchOnce, request)
    (run,) = ghes.runs.values()
    assert state.run_id == run.id
    sent = [e for e in ghes.requests.since(0) if e["path"].endswith("/dispatches")]
    # Rate-limited (403, nothing dispatched), then 3 s later the key refused (400), then plain.
    assert [e["status"] for e in sent] == [403, 400, 204]
    assert sent[1]["time"] - sent[0]["time"] >= 3.0
    assert len(ghes.effects.since(0)) == 1


async def test_a_restore_point_inside_the_lag_is_waited_for_on_a_worker(dev_env) -> None:
    admin = Lagging(timedelta(seconds=3))
    point = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    check = await run_with(
        dev_env,
        [PitrActivities(admin, "tekutoko-prod").pitr_check],
        CheckOnce,
        PitrCheckRequest(
            source="tekutoko-db", destination="tekutoko-db-restored", point_in_time=point
        ),
    )
    assert check.problems == [] and check.latest >= point
    # First look: the window 2 s short of the point; the next look came once it had caught up.
    assert len(admin.windows) == 2 and admin.windows[0] < point <= admin.windows[1]
