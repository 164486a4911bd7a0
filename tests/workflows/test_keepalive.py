"""The worker's keep-alive beats for the write activities only: a write that takes
longer than its heartbeat timeout still completes (so a slow API is not mistaken
for a lost worker), while an activity outside the list gets no beats and times out
as the server would time out any silent one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from runbook import activity_refs as refs
from worker.keepalive import KeepAlive

SLOWER_THAN_THE_TIMEOUT = 2.5  # seconds of work against a 1-s heartbeat timeout


@workflow.defn(name="KeepAliveProbe")
class KeepAliveProbe:
    @workflow.run
    async def run(self, activity_name: str) -> str:
        return await workflow.execute_activity(
            activity_name,
            SLOWER_THAN_THE_TIMEOUT,
            result_type=str,
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


def slow(name: str):
    @activity.defn(name=name)
    async def work(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return f"{name} done"

    return work


async def probe(env, activity_name: str) -> str:
    queue = f"keepalive-{uuid.uuid4().hex[:6]}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[KeepAliveProbe],
        activities=[slow(refs.ROLLOUT_UNDO.name), slow(refs.NOTIFY.name)],
        interceptors=[KeepAlive()],
        workflow_runner=UnsandboxedWorkflowRunner(),  # the probe is test code, not modoru's
    ):
        return await env.client.execute_workflow(
            KeepAliveProbe.run, activity_name, id=queue, task_queue=queue
        )


async def test_a_slow_write_is_kept_alive_past_its_heartbeat_timeout(time_skipping_env) -> None:
    assert refs.ROLLOUT_UNDO.name in refs.KEPT_ALIVE
    assert await probe(time_skipping_env, refs.ROLLOUT_UNDO.name) == "k8s.rollout_undo done"


async def test_an_activity_outside_the_list_gets_no_beats(time_skipping_env) -> None:
    assert refs.NOTIFY.name not in refs.KEPT_ALIVE
    with pytest.raises(WorkflowFailureError) as failed:
        await probe(time_skipping_env, refs.NOTIFY.name)
    cause = failed.value.cause
    assert isinstance(cause, ActivityError), cause
    assert isinstance(cause.cause, TimeoutError), cause.cause
    assert cause.cause.type is TimeoutType.HEARTBEAT


def test_every_write_and_no_self_beating_activity_is_kept_alive() -> None:
    writes = {
        refs.BACKUP_DEPLOYMENT,
        refs.ROLLOUT_UNDO,
        refs.RESTORE_APPLY,
        refs.DELETE_REPLICASET,
        refs.ROLLOUT_RESTART,
        refs.DISPATCH,
        refs.START_CLONE,
        refs.SWITCH_PROXY,
    }
    assert {ref.name for ref in writes} == refs.KEPT_ALIVE
    # These beat with details a retried attempt resumes from; a bare beat would erase them.
    for ref in (refs.WAIT_ROLLOUT, refs.EXEC, refs.CHECK_BACKUP, refs.GUARD_WATCH):
        assert ref.name not in refs.KEPT_ALIVE, ref
