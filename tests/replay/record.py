"""Record one history per outcome of DeploymentRollbackWorkflow, for the replay
tests. Run after an intended, compatible workflow change:

    python -m tests.replay.record
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from runbook.models import ApprovalSignal, Phase, RejectSignal, RollbackRequest, Severity
from tests.workflows.conftest import FakeCluster, binary
from workflows.deployment_rollback import DeploymentRollbackWorkflow

HERE = Path(__file__).parent / "histories"


def request(**changes) -> RollbackRequest:
    return RollbackRequest(**{"deployment": "tekutoko-api", "severity": Severity.INVESTIGATE, "reason": "error rate 60%", "requested_by": "oncall", **changes})


async def until(handle, phase: Phase) -> None:
    for _ in range(200):
        if (await handle.query(DeploymentRollbackWorkflow.status)).phase == phase:
            return
        await asyncio.sleep(0.05)


async def record(env: WorkflowEnvironment, name: str, fake: FakeCluster, req: RollbackRequest, steer=None) -> None:
    queue = f"record-{name}"
    async with Worker(env.client, task_queue=queue, workflows=[DeploymentRollbackWorkflow], activities=fake.activities()):
        handle = await env.client.start_workflow(DeploymentRollbackWorkflow.run, req, id=f"replay-{name}-{uuid.uuid4().hex[:6]}", task_queue=queue)
        if steer is not None:
            await steer(env, handle)
        with contextlib.suppress(Exception):  # failed outcomes are histories too
            await handle.result()
        history = await handle.fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}: {len(history.events)} events")


async def approve(env, handle) -> None:
    await until(handle, Phase.AWAITING_APPROVAL)
    await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="oncall"))
    await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="sre-lead"))


async def reject(env, handle) -> None:
    await until(handle, Phase.AWAITING_APPROVAL)
    await handle.signal(DeploymentRollbackWorkflow.reject, RejectSignal(by="backend-lead", reason="forward fix"))


async def escalate_then_approve(env, handle) -> None:
    await until(handle, Phase.AWAITING_APPROVAL)
    await env.sleep(dt.timedelta(minutes=16))
    await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="sre-lead"))


async def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=binary("temporal-test-server"), data_converter=pydantic_data_converter)
    try:
        await record(env, "completed_immediate", FakeCluster(), request(severity=Severity.IMMEDIATE))
        await record(env, "completed_after_approval", FakeCluster(), request(), approve)
        await record(env, "rejected", FakeCluster(), request(), reject)
        await record(env, "escalated", FakeCluster(), request(), escalate_then_approve)
        await record(env, "refused_missing_revision", FakeCluster(plan_error="revision 9 is not in the history"), request(to_revision=9))
        await record(env, "already_at_target", FakeCluster(already_at_target=True), request())
        await record(env, "verification_failed", FakeCluster(verify_ok=False), request(severity=Severity.IMMEDIATE))
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
