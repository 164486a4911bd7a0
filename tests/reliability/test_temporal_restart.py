"""Restart the Temporal server (SIGKILL, then start it again on the same SQLite
file and port) while a rollback waits for its approval and while one is
executing: nothing is lost. The waiting rollback keeps its phase, SLA deadline
and approval timers and completes once approved; the executing one completes;
each with exactly one undo. The worker reconnects on its own.

Short suite: the server is down 3 s; MODORU_RELIABILITY=full: 45 s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.common import WorkflowIDReusePolicy

from runbook.models import ApprovalSignal, Phase, RollbackRequest, RollbackResult, Severity
from tests.reliability.stack import FULL, ReliabilityStack
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
DOWN_SECONDS = 45.0 if FULL else 3.0


async def until(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = await predicate()
        except Exception:  # the server may be coming back
            value = None
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_temporal_restart_loses_neither_a_waiting_nor_an_executing_rollback(
    tmp_path: Path,
) -> None:
    with ReliabilityStack(tmp_path, deployments=2, clock_speed=20) as rel:
        worker = rel.worker()
        queue = worker.env["MODORU_TASK_QUEUE"]
        client = await rel.client()
        await asyncio.sleep(2.5)
        mark = rel.mark()

        async def start(name: str, severity: Severity):
            return await client.start_workflow(
                DeploymentRollbackWorkflow.run,
                RollbackRequest(
                    deployment=name,
                    severity=severity,
                    reason="shared release 1.1.0 is failing",
                    requested_by="reliability",
                ),
                id=rollback_workflow_id("default", name),
                task_queue=queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )

        # 1. Waiting: an `investigate` rollback at its approval gate, timers running.
        waiting = await start("svc-0000", Severity.INVESTIGATE)
        before = await until(
            lambda: _phase_is(waiting, Phase.AWAITING_APPROVAL), what="the approval gate"
        )
        timers_before = await _timers(waiting)
        down = rel.restart_temporal(DOWN_SECONDS)
        client = await rel.client()
        waiting = client.get_workflow_handle_for(DeploymentRollbackWorkflow.run, waiting.id)
        after = await until(
            lambda: _phase_is(waiting, Phase.AWAITING_APPROVAL), what="the gate after the restart"
        )
        assert after.sla_deadline == before.sla_deadline
        assert set(timers_before) <= set(await _timers(waiting)), (
            "the approval timers survive the restart"
        )
        await waiting.signal(
            DeploymentRollbackWorkflow.approve, ApprovalSignal(by="bench-approver")
        )
        result: RollbackResult = await asyncio.wait_for(waiting.result(), 120)
        assert result.status.phase is Phase.COMPLETED and result.status.verification.ok, (
            result.status.message
        )
        assert len(rel.writes(mark, "deployments", "svc-0000")) == 1
        print(
            f"\nwaiting: Temporal down {down:.1f}s at the approval gate; {len(timers_before)} "
            "timers kept; completed after approval",
            flush=True,
        )

        # 2. Executing: an `immediate` rollback, the server killed when the rollout wait is
        # scheduled.
        started = time.monotonic()
        executing = await start("svc-0001", Severity.IMMEDIATE)
        await until(lambda: _scheduled(executing, "k8s.wait_rollout"), what="the rollout wait")
        down = rel.restart_temporal(DOWN_SECONDS)
        client = await rel.client()
        executing = client.get_workflow_handle_for(DeploymentRollbackWorkflow.run, executing.id)
        result = await asyncio.wait_for(executing.result(), 180)
        took = time.monotonic() - started
        assert result.status.phase is Phase.COMPLETED and result.status.verification.ok, (
            result.status.message
        )
        assert len(rel.writes(mark, "deployments", "svc-0001")) == 1
        print(
            f"executing: Temporal down {down:.1f}s during the rollout wait; completed "
            f"{took:.1f}s after the start, one undo",
            flush=True,
        )


async def _phase_is(handle, phase: Phase):
    status = await handle.query(DeploymentRollbackWorkflow.status)
    return status if status.phase is phase else None


async def _timers(handle) -> list[int]:
    """Timers started and neither fired nor cancelled (their event ids)."""
    started, ended = {}, set()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            started[event.event_id] = event.timer_started_event_attributes.timer_id
        elif event.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
            ended.add(event.timer_fired_event_attributes.started_event_id)
        elif event.event_type == EventType.EVENT_TYPE_TIMER_CANCELED:
            ended.add(event.timer_canceled_event_attributes.started_event_id)
    return sorted(i for i in started if i not in ended)


async def _scheduled(handle, activity: str) -> bool:
    async for event in handle.fetch_history_events():
        if (
            event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and event.activity_task_scheduled_event_attributes.activity_type.name == activity
        ):
            return True
    return False
