"""Orchestration overhead, like for like: N sequential `immediate` rollbacks
through the workflow, a no-op workflow with the same number of activities, and
the same activities called directly by a plain script without Temporal, side
by side in one run. The workflow and the no-op run on ONE worker (built with
the production worker's options, `worker.main.worker_options`, and its
activities, `worker.main.activities_for`) on one task queue, taking turns, so
machine load falls on both alike; the sandbox sends steady traffic, so
verification reads a live service rather than waiting for probes.

    python -m bench.overhead [--rollbacks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from unittest import mock

import aiohttp
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.kubernetes import KubernetesActivities
from activities.notify import NotifyActivities
from activities.verify import VerifyActivities
from bench.common import print_json_line, print_machine
from bench.harness import BenchStack, percentile, wait_for_worker
from bench.noop_workflow import NoOpWorkflow, nothing
from runbook.models import (
    BackupRequest,
    Notice,
    PlanRequest,
    RollbackRequest,
    RolloutWaitRequest,
    ServiceLookup,
    Severity,
    UndoRequest,
    VerifyRequest,
)
from worker.catalog_file import load_catalog
from worker.cloud import monitoring_for
from worker.main import WORKFLOWS, activities_for, kubernetes_configuration, worker_options
from worker.settings import Settings
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

ACTIVITIES_PER_ROLLBACK = 8  # lookup, plan, backup, notify, undo, wait, verify, notify
NAME = "svc-0000"
TRAFFIC_RPS = 20


async def one_rollback(client, queue: str) -> tuple[float, int]:
    started = time.perf_counter()
    result = await client.execute_workflow(
        DeploymentRollbackWorkflow.run,
        RollbackRequest(
            deployment=NAME, severity=Severity.IMMEDIATE, reason="overhead", requested_by="bench"
        ),
        id=rollback_workflow_id("default", NAME),
        task_queue=queue,
    )
    assert not result.no_op and result.status.verification.ok, result.status.message
    return time.perf_counter() - started, result.status.verification.attempts


async def one_noop(client, queue: str) -> float:
    started = time.perf_counter()
    await client.execute_workflow(
        NoOpWorkflow.run, ACTIVITIES_PER_ROLLBACK, id=f"noop-{uuid.uuid4().hex}", task_queue=queue
    )
    return time.perf_counter() - started


async def side_by_side(
    bench: BenchStack, client, n: int, warm_up: int = 2
) -> tuple[list[float], list[float], list[int]]:
    """The workflow and the no-op taking turns on one worker built as the production worker is."""
    queue = f"bench-overhead-{uuid.uuid4().hex[:6]}"
    with mock.patch.dict(os.environ, {**bench.stack.worker_env(), "MODORU_TASK_QUEUE": queue}):
        settings = Settings()
    configuration = await kubernetes_configuration(settings)
    api = kube.ApiClient(configuration)
    flows, noops, rounds = [], [], []
    async with aiohttp.ClientSession() as session:
        activities = activities_for(api, session, settings, monitoring_for(settings, session))
        async with Worker(
            client,
            task_queue=queue,
            workflows=[*WORKFLOWS, NoOpWorkflow],
            activities=[*activities, nothing],
            **worker_options(settings),
        ):
            for i in range(warm_up + n):
                took, attempts = await one_rollback(client, queue)
                noop = await one_noop(client, queue)
                if i >= warm_up:
                    flows.append(took)
                    noops.append(noop)
                    rounds.append(attempts)
    await api.close()
    return flows, noops, rounds


async def direct(bench: BenchStack, n: int) -> list[float]:
    """The same activity code, called in order by a plain script."""
    catalog = load_catalog(bench.state / "catalog.yaml")
    api = await kube_config.new_client_from_config(config_file=bench.endpoints["kubeconfig"])
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    env = ActivityEnvironment()
    durations = []
    async with aiohttp.ClientSession() as session:
        k8s, verify, notify = (
            KubernetesActivities(apps, core),
            VerifyActivities(apps, core, session),
            NotifyActivities(base_dir=bench.state),
        )
        for i in range(n):
            started = time.perf_counter()
            entry = await env.run(
                CatalogActivities(catalog).lookup,
                ServiceLookup(namespace="default", deployment=NAME),
            )
            plan = await env.run(
                k8s.plan_rollback, PlanRequest(namespace="default", deployment=NAME)
            )
            await env.run(
                k8s.backup_deployment,
                BackupRequest(
                    namespace="default",
                    deployment=NAME,
                    from_revision=plan.from_revision,
                    backup_name=f"direct-{i}-{uuid.uuid4().hex[:6]}",
                ),
            )
            await env.run(
                notify.send, Notice(kind="start", subject="s", text="t", channels=entry.channels)
            )
            await env.run(k8s.rollout_undo, UndoRequest(plan=plan))
            await env.run(
                k8s.wait_rollout,
                RolloutWaitRequest(
                    namespace="default",
                    deployment=NAME,
                    timeout_seconds=entry.rollout_timeout_seconds,
                ),
            )
            await env.run(
                verify.verify_service,
                VerifyRequest(
                    namespace="default",
                    deployment=NAME,
                    service=entry.service,
                    paths=entry.check_paths,
                    window_seconds=entry.verification_window_seconds,
                ),
            )
            await env.run(
                notify.send, Notice(kind="complete", subject="s", text="t", channels=entry.channels)
            )
            durations.append(time.perf_counter() - started)
    await api.close()
    return durations


async def run(n: int) -> dict:
    # Rollbacks flip between two revisions; both must verify, so neither is bad here.
    with BenchStack(1, bad_error_ratio=0.0, traffic_rps=TRAFFIC_RPS) as bench:
        wait_for_worker()
        client = await bench.client()
        flows, noops, rounds = await side_by_side(bench, client, n)
        await direct(bench, 2)  # warm-up: connections, caches
        directs = await direct(bench, n)
    p50 = {
        key: percentile(values, 50)
        for key, values in (("workflow", flows), ("direct", directs), ("noop", noops))
    }
    p95 = {
        key: percentile(values, 95)
        for key, values in (("workflow", flows), ("direct", directs), ("noop", noops))
    }
    paired = statistics.median(f / o for f, o in zip(flows, noops, strict=True))
    return {
        "rollbacks": n,
        "traffic_rps": TRAFFIC_RPS,
        "p50_s": p50,
        "p95_s": p95,
        "verification_rounds_p50": statistics.median(rounds),
        "workflow_over_noop": p50["workflow"] / p50["noop"],
        "workflow_over_noop_paired_median": paired,
        "workflow_over_direct": p50["workflow"] / p50["direct"],
        "target_workflow_over_noop_at_most_1_3": p50["workflow"] / p50["noop"] <= 1.3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollbacks", type=int, default=20)
    args = parser.parse_args()
    if args.rollbacks < 2:
        parser.error("--rollbacks must be at least 2")
    result = asyncio.run(run(args.rollbacks))
    print_machine()
    print(f"{'per rollback':<16}{'p50 s':>8}{'p95 s':>8}")
    for key in ("workflow", "direct", "noop"):
        print(f"{key:<16}{result['p50_s'][key]:>8.3f}{result['p95_s'][key]:>8.3f}")
    print(
        f"workflow / no-op: {result['workflow_over_noop']:.2f} (target ≤ 1.3; median of paired "
        f"runs {result['workflow_over_noop_paired_median']:.2f})   "
        f"workflow / direct: {result['workflow_over_direct']:.2f}   verification rounds p50: "
        f"{result['verification_rounds_p50']:g}"
    )
    print_json_line("overhead", result)


if __name__ == "__main__":
    main()
