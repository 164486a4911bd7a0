"""Each change kind run on the time-skipping test server with the workflow tests'
fake activities: the histories (events, bytes, actions) every commit's workflow
code writes for one change, and the CPU the workflow side spends on it (this
process runs the worker; the test server is its child). Seconds, not minutes:
the durable timers are skipped. Activity payloads are the fakes' (smaller than a
real cluster's: the live mode measures those)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid

import psutil
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.cost import change_histories, history_cost, own_cpu_seconds, per_change, sum_costs
from runbook.cd_models import RedeployRequest
from runbook.guard_models import GuardRequest
from runbook.models import ApprovalSignal, Phase, RollbackRequest, Severity
from tests.workflows.cd_fakes import FakeCd
from tests.workflows.conftest import FakeCluster, binary
from tests.workflows.guard_fakes import ScriptedGuard, breach, clean
from worker.main import WORKFLOW_RUNNER, WORKFLOWS
from workflows.deployment_rollback import DeploymentRollbackWorkflow
from workflows.redeploy import RedeployWorkflow
from workflows.release_guard import ReleaseGuardWorkflow

KINDS = ("rollback investigate, approved", "rollback immediate", "guard rollback", "redeploy")


def rollback(severity: Severity) -> RollbackRequest:
    return RollbackRequest(
        deployment="tekutoko-api", severity=severity, reason="error rate 60%", requested_by="oncall"
    )


async def until_phase(handle: WorkflowHandle, phase: str) -> None:
    for _ in range(400):
        status = await handle.query("status", result_type=dict)
        if status["phase"] == phase:
            return
        if status["phase"] in ("failed", "completed", "rejected"):
            raise RuntimeError(f"{handle.id} ended {status['phase']}: {status.get('message')}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{handle.id} never reached {phase}")


async def one(env: WorkflowEnvironment, kind: str, queue: str) -> tuple[str, list[str]]:
    """Run one change of `kind` to its end; its id and the ids of what to end afterwards."""
    client = env.client
    wid = f"cost-{uuid.uuid4().hex[:8]}"
    if kind == "rollback immediate":
        handle = await client.start_workflow(
            DeploymentRollbackWorkflow.run, rollback(Severity.IMMEDIATE), id=wid, task_queue=queue
        )
    elif kind == "rollback investigate, approved":
        handle = await client.start_workflow(
            DeploymentRollbackWorkflow.run, rollback(Severity.INVESTIGATE), id=wid, task_queue=queue
        )
        await until_phase(handle, Phase.AWAITING_APPROVAL.value)
        await handle.execute_update(
            DeploymentRollbackWorkflow.approval, ApprovalSignal(by="sre-lead")
        )
    elif kind == "guard rollback":
        handle = await client.start_workflow(
            ReleaseGuardWorkflow.run,
            GuardRequest(
                deployment=f"api-{uuid.uuid4().hex[:6]}", duration_seconds=1800, interval_seconds=15
            ),
            id=wid,
            task_queue=queue,
        )
    else:
        handle = await client.start_workflow(
            RedeployWorkflow.run,
            RedeployRequest(
                deployment="tekutoko-api", tag="1.2.0", reason="1.3.0 fails", requested_by="oncall"
            ),
            id=wid,
            task_queue=queue,
        )
        await until_phase(handle, Phase.AWAITING_APPROVAL.value)
        await handle.signal("approve", ApprovalSignal(by="sre-lead"))
    await handle.result()
    return wid, []


async def measure(kind: str, runs: int) -> dict:
    """`runs` changes of `kind`, one after another, on a fresh test server."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    queue = f"cost-{uuid.uuid4().hex[:6]}"
    if kind == "redeploy":
        activities = FakeCd().activities()
    else:
        script = [clean(4), breach(Severity.IMMEDIATE, "error ratio 60.0% > 50%")] * (runs + 1)
        activities = [*FakeCluster().activities(), *ScriptedGuard(script).activities()]
    server = [p for p in psutil.Process().children() if "temporal" in " ".join(p.cmdline())]
    try:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=activities,
            workflow_runner=WORKFLOW_RUNNER,
            max_heartbeat_throttle_interval=dt.timedelta(milliseconds=100),
        ):
            await one(env, kind, queue)  # warm: imports, the sandbox's first module load
            cpu0 = own_cpu_seconds()
            srv0 = sum(sum(p.cpu_times()[:2]) for p in server)
            ids = [(await one(env, kind, queue))[0] for _ in range(runs)]
            cpu = own_cpu_seconds() - cpu0
            srv = sum(sum(p.cpu_times()[:2]) for p in server) - srv0
            costs = [history_cost(await change_histories(env.client, wid)) for wid in ids]
            await _end_open(env.client, ids)
    finally:
        await env.shutdown()
    return {
        **per_change(sum_costs(costs), runs),
        "worker_cpu_ms": 1000 * cpu / runs,  # includes the bench's own client calls
        "temporal_cpu_ms": 1000 * srv / runs,
        "sandbox_cpu_ms": None,
        "runs": runs,
    }


async def _end_open(client: Client, ids: list[str]) -> None:
    """The incidents a guard opened wait days for people: end them."""
    for wid in ids:
        for history in await change_histories(client, wid):
            if history.workflow_id != wid:
                with contextlib.suppress(Exception):
                    await client.get_workflow_handle(history.workflow_id).terminate("measured")


async def recorded_costs(runs: int = 3, kinds: tuple[str, ...] = KINDS) -> dict[str, dict]:
    return {kind: await measure(kind, runs) for kind in kinds}
