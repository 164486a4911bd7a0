"""The worker's keep-alive beats for the write activities only: a write that takes
longer than its heartbeat timeout still completes (so a slow API is not mistaken
for a lost worker), while an activity outside the list gets no beats and times out
as the server would time out any silent one."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

import activities
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
        activities=[slow(refs.ROLLOUT_UNDO.name), slow(refs.WAIT_ROLLOUT.name)],
        interceptors=[KeepAlive()],
        workflow_runner=UnsandboxedWorkflowRunner(),  # the probe is test code, not modoru's
    ):
        return await env.client.execute_workflow(
            KeepAliveProbe.run, activity_name, id=queue, task_queue=queue
        )


async def test_a_slow_write_is_kept_alive_past_its_heartbeat_timeout(time_skipping_env) -> None:
    assert refs.ROLLOUT_UNDO.name in refs.KEPT_ALIVE
    assert await probe(time_skipping_env, refs.ROLLOUT_UNDO.name) == "k8s.rollout_undo done"


async def test_an_activity_that_beats_itself_gets_no_beats_from_the_worker(
    time_skipping_env,
) -> None:
    assert refs.WAIT_ROLLOUT.name not in refs.KEPT_ALIVE
    with pytest.raises(WorkflowFailureError) as failed:
        await probe(time_skipping_env, refs.WAIT_ROLLOUT.name)
    cause = failed.value.cause
    assert isinstance(cause, ActivityError), cause
    assert isinstance(cause.cause, TimeoutError), cause.cause
    assert cause.cause.type is TimeoutType.HEARTBEAT


def test_every_write_is_kept_alive() -> None:
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
    assert {ref.name for ref in writes} <= refs.KEPT_ALIVE


def activity_sources() -> dict[str, str]:
    """Each registered activity's name and source, read from the activity modules."""
    found: dict[str, str] = {}
    for path in sorted(Path(activities.__file__).parent.glob("*.py")):
        module = importlib.import_module(f"activities.{path.stem}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            for _, fn in inspect.getmembers(cls, inspect.isfunction):
                defn = getattr(fn, "__temporal_activity_definition", None)
                if defn is not None:
                    found[defn.name] = inspect.getsource(fn)
    return found


def test_an_activity_that_beats_itself_is_never_beaten_for() -> None:
    """A bare beat would replace the details a retried attempt resumes from. (The scan sees
    beats in the activity's own body; the on-demand backup and the clone's queries beat in
    helpers they call, and are listed by hand.)"""
    sources = activity_sources()
    assert set(sources) == {ref.name for ref in refs.ALL}
    beats_itself = {
        name for name, source in sources.items() if re.search(r"heartbeat\(|Heartbeat\(", source)
    }
    assert beats_itself, "no activity beats itself: the source scan is broken"
    assert beats_itself.isdisjoint(refs.KEPT_ALIVE), beats_itself & refs.KEPT_ALIVE
    assert {refs.CHECK_BACKUP.name, refs.CLONE_QUERIES.name}.isdisjoint(refs.KEPT_ALIVE)
