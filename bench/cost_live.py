"""Rollbacks on the embedded stack (Temporal dev server, sandbox, worker), a
small batch of each kind at a time, indexed as the CLI starts them: the CPU
each process spends per rollback above what it spends idle, the activity
heartbeats that reached the server, and the histories the runs wrote (real
activity payloads)."""

from __future__ import annotations

import asyncio
import collections
import time

from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy

from bench.cost import (
    change_histories,
    history_cost,
    metrics_port_of,
    per_change,
    process_cpu_seconds,
    read_metrics,
    server_counter,
    sum_costs,
)
from bench.harness import BenchStack, wait_for_pollers, wait_for_worker
from runbook.models import ApprovalSignal, Phase, RollbackRequest, Severity
from workflows import search_attributes as sa
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

IDLE_SECONDS = 10.0
LIVE_KINDS = {
    "rollback immediate": Severity.IMMEDIATE,
    "rollback investigate, approved": Severity.INVESTIGATE,
}


def stack_processes(bench: BenchStack) -> dict[str, int]:
    return {name: proc.pid for name, proc, _ in bench.stack.processes if proc.poll() is None}


def cpu_now(processes: dict[str, int]) -> dict[str, float]:
    return {name: process_cpu_seconds(pid) for name, pid in processes.items()}


async def approve_when_asked(handle: WorkflowHandle) -> None:
    """The approver's update once the rollback shows its plan (polls its status)."""
    while (await handle.query(DeploymentRollbackWorkflow.status)).phase != (
        Phase.AWAITING_APPROVAL
    ):
        await asyncio.sleep(0.5)
    await handle.execute_update(
        DeploymentRollbackWorkflow.approval, ApprovalSignal(by="bench-approver")
    )


async def batch(bench: BenchStack, client, names: list[str], severity: Severity) -> list[str]:
    async def one(name: str) -> str:
        handle = await client.start_workflow(
            DeploymentRollbackWorkflow.run,
            RollbackRequest(
                deployment=name,
                severity=severity,
                reason="shared release 1.1.0 is failing",
                requested_by="bench",
            ),
            id=rollback_workflow_id("default", name),
            task_queue=bench.settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            # indexed as `modoru rollback start` indexes it: its phase upserts are actions too
            search_attributes=sa.for_rollback("default", name, severity.value),
        )
        if severity is Severity.INVESTIGATE:
            await approve_when_asked(handle)
        result = await handle.result()
        assert result.status.phase is Phase.COMPLETED, result.status.message
        return handle.id

    return list(await asyncio.gather(*(one(n) for n in names)))


def cluster_calls(entries: list[dict], rollbacks: int) -> dict[str, float]:
    """Kubernetes API requests the sandbox logged, per rollback, by verb and resource."""
    counted = collections.Counter(f"{e['verb']} {e['resource']}" for e in entries)
    return {k: v / rollbacks for k, v in sorted(counted.items())}


async def live_costs(rollbacks: int) -> dict[str, dict]:
    kinds = list(LIVE_KINDS.items())
    with BenchStack(rollbacks * len(kinds)) as bench:
        wait_for_worker()
        client = await bench.client()
        await wait_for_pollers(client, bench.settings.task_queue)
        await asyncio.sleep(2.0)
        processes = stack_processes(bench)
        temporal = next(p for n, p, _ in bench.stack.processes if n == "temporal")
        port = metrics_port_of(list(temporal.args))
        before, t0 = cpu_now(processes), time.monotonic()
        await asyncio.sleep(IDLE_SECONDS)
        idle = {n: (c - before[n]) / (time.monotonic() - t0) for n, c in cpu_now(processes).items()}
        found: dict[str, dict] = {}
        for k, (kind, severity) in enumerate(kinds):
            names = [f"svc-{i:04d}" for i in range(k * rollbacks, (k + 1) * rollbacks)]
            beats0 = server_counter(read_metrics(port), "RecordActivityTaskHeartbeat")
            _, mark = bench.requests_since(0)
            before, t0 = cpu_now(processes), time.monotonic()
            ids = await batch(bench, client, names, severity)
            seconds = time.monotonic() - t0
            after = cpu_now(processes)
            beats = server_counter(read_metrics(port), "RecordActivityTaskHeartbeat") - beats0
            entries, _ = bench.requests_since(mark)
            costs = [history_cost(await change_histories(client, wid)) for wid in ids]
            cost = per_change(sum_costs(costs), rollbacks)
            cost["actions"]["heartbeat"] = beats / rollbacks
            cost["actions_total"] += beats / rollbacks

            spent = {
                n: 1000 * max(after[n] - before[n] - idle[n] * seconds, 0.0) / rollbacks
                for n in processes
            }
            found[kind] = {
                **cost,
                "worker_cpu_ms": spent["worker"],
                "temporal_cpu_ms": spent["temporal"],
                "sandbox_cpu_ms": spent["sandbox"],
                "cluster_calls": cluster_calls(entries, rollbacks),
                "idle_cpu_ms_per_s": {n: 1000 * v for n, v in idle.items()},
                "batch_seconds": seconds,
                "runs": rollbacks,
            }
    return found
