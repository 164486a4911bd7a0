"""Approval latency: from the approve signal leaving the CLI's client to the
undo PATCH arriving at the sandbox.

    python -m bench.approval [--rollbacks 30]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.common import print_json_line, print_machine
from bench.harness import BenchStack, percentile, wait_for_worker
from runbook.models import ApprovalSignal, Phase, RollbackRequest, Severity
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id


async def run(rollbacks: int) -> dict:
    latencies = []
    with BenchStack(rollbacks) as bench:
        wait_for_worker()
        client = await bench.client()
        for i in range(rollbacks):
            name = f"svc-{i:04d}"
            handle = await client.start_workflow(
                DeploymentRollbackWorkflow.run,
                RollbackRequest(deployment=name, severity=Severity.INVESTIGATE, reason="error rate over 10%", requested_by="bench"),
                id=rollback_workflow_id("default", name), task_queue=bench.settings.task_queue,
            )
            while (await handle.query(DeploymentRollbackWorkflow.status)).phase != Phase.AWAITING_APPROVAL:
                await asyncio.sleep(0.02)
            _, mark = bench.requests_since(0)
            sent = time.time()
            await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="bench-approver"))
            patched = None
            while patched is None:
                entries, _ = bench.requests_since(mark)
                patched = next((e["time"] for e in entries if e["resource"] == "deployments" and e["verb"] == "patch" and e["name"] == name), None)
                await asyncio.sleep(0.01)
            latencies.append((patched - sent) * 1000)
            await handle.result()
    return {
        "rollbacks": rollbacks,
        "signal_to_undo_p50_ms": percentile(latencies, 50),
        "signal_to_undo_p99_ms": percentile(latencies, 99),
        "signal_to_undo_max_ms": max(latencies),
        "target_p99_under_500_ms": percentile(latencies, 99) < 500,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollbacks", type=int, default=30)
    args = parser.parse_args()
    if args.rollbacks < 2:
        parser.error("--rollbacks must be at least 2")
    result = asyncio.run(run(args.rollbacks))
    print_machine()
    print(f"approve signal → undo PATCH over {result['rollbacks']} rollbacks: "
          f"p50 {result['signal_to_undo_p50_ms']:.0f} ms, p99 {result['signal_to_undo_p99_ms']:.0f} ms, max {result['signal_to_undo_max_ms']:.0f} ms")
    print(f"target p99 < 500 ms: {'met' if result['target_p99_under_500_ms'] else 'not met'}")
    print_json_line("approval", result)


if __name__ == "__main__":
    main()
