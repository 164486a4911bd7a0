"""A bad shared release hits M services at once: start an `immediate` rollback
for every one of them against one worker and measure how long until every undo
is applied and every rollout verified, with the worker's memory.

    python -m bench.fleet [--deployments 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from temporalio.common import WorkflowIDReusePolicy

from bench.common import print_json_line, print_machine
from bench.harness import BenchStack, RssSampler, percentile, wait_for_worker
from runbook.models import Phase, RollbackRequest, RollbackResult, Severity
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

START_CONCURRENCY = 64
RUNBOOK_SECONDS = 300


async def run(deployments: int) -> dict:
    with BenchStack(deployments) as bench:
        wait_for_worker()
        pid = bench.worker_pid()
        idle_kib = RssSampler(pid).rss_kib()
        client = await bench.client()
        _, mark = bench.requests_since(0)
        names = [f"svc-{i:04d}" for i in range(deployments)]
        started: dict[str, float] = {}
        limit = asyncio.Semaphore(START_CONCURRENCY)

        async def start(name: str):
            async with limit:
                started[name] = time.time()
                return await client.start_workflow(
                    DeploymentRollbackWorkflow.run,
                    RollbackRequest(deployment=name, severity=Severity.IMMEDIATE, reason="shared release 1.1.0 is failing", requested_by="bench"),
                    id=rollback_workflow_id("default", name), task_queue=bench.settings.task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                )

        with RssSampler(pid) as sampler:
            t0 = time.time()
            handles = await asyncio.gather(*(start(name) for name in names))
            results: list[RollbackResult] = await asyncio.gather(*(h.result() for h in handles))
            t_end = time.time()
        entries, _ = bench.requests_since(mark)
    undo_at = {e["name"]: e["time"] for e in entries if e["resource"] == "deployments" and e["verb"] == "patch"}
    to_undo = [undo_at[n] - started[n] for n in names if n in undo_at]
    verified = sum(1 for r in results if r.status.phase == Phase.COMPLETED and r.status.verification and r.status.verification.ok)
    all_undone = max(undo_at.values()) - t0 if len(undo_at) == deployments else float("nan")
    all_verified = max(r.status.timings["completed"].timestamp() for r in results) - t0
    return {
        "deployments": deployments,
        "undos_applied": len(undo_at),
        "verified": verified,
        "all_undone_s": all_undone,
        "all_verified_s": all_verified,
        "wall_s": t_end - t0,
        "time_to_undo_p50_s": percentile(to_undo, 50),
        "time_to_undo_p99_s": percentile(to_undo, 99),
        "worker_rss_idle_mib": idle_kib / 1024,
        "worker_rss_peak_mib": sampler.peak_kib / 1024,
        "within_runbook_5_min": verified == deployments and all_verified <= RUNBOOK_SECONDS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=1000)
    args = parser.parse_args()
    if args.deployments < 1:
        parser.error("--deployments must be at least 1")
    result = asyncio.run(run(args.deployments))
    print_machine()
    print(f"{'deployments':<28}{result['deployments']}")
    print(f"{'undos applied / verified':<28}{result['undos_applied']} / {result['verified']}")
    print(f"{'every undo applied after':<28}{result['all_undone_s']:.1f} s")
    print(f"{'every rollout verified after':<28}{result['all_verified_s']:.1f} s")
    print(f"{'time to undo p50 / p99':<28}{result['time_to_undo_p50_s']:.2f} s / {result['time_to_undo_p99_s']:.2f} s")
    print(f"{'worker RSS idle / peak':<28}{result['worker_rss_idle_mib']:.0f} MiB / {result['worker_rss_peak_mib']:.0f} MiB")
    print(f"{'within the runbook 5 min':<28}{'yes' if result['within_runbook_5_min'] else 'no'}")
    print_json_line("fleet", result)


if __name__ == "__main__":
    main()
