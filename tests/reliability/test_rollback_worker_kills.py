"""SIGKILL the worker of an `immediate` deployment rollback at every activity
boundary (the moment the history shows the n-th ActivityTaskScheduled) and at
random moments; a new worker starts at once. Every rollback must complete,
verified, with exactly one undo PATCH accepted by the API and one backup
ConfigMap. Each rollback has a deployment and a worker process of its own, so
the kills run side by side.

The short suite (plain pytest, CI) kills at the undo (kept alive by the worker)
and at the rollout wait (which beats for itself), each retried after a 10-s
heartbeat timeout; MODORU_RELIABILITY=full kills at every boundary, verification's
(a 60-s heartbeat timeout) among them, and adds random moments."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from kubernetes import client as kube
from kubernetes import config as kube_config
from temporalio.common import WorkflowIDReusePolicy

from runbook.models import Phase, RollbackRequest, RollbackResult, Severity
from tests.reliability.stack import (
    FULL,
    Kill,
    ReliabilityStack,
    WorkerProcess,
    kill_at_boundaries,
    retried_activities,
    scheduled_activities,
)
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
RANDOM_RUNS, RANDOM_KILLS = 4, 2
SLA_SECONDS = 300
# The sandbox's clock at 20x: verification judges a minute of logs after each undo, which
# at 1x is a minute of waiting per rollback that no kill boundary needs.
CLOCK_SPEED = 20


async def start(client, queue: str, name: str):
    return await client.start_workflow(
        DeploymentRollbackWorkflow.run,
        RollbackRequest(
            deployment=name,
            severity=Severity.IMMEDIATE,
            reason="shared release 1.1.0 is failing",
            requested_by="reliability",
        ),
        id=rollback_workflow_id("default", name),
        task_queue=queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )


async def kill_at_random(
    handle, worker: WorkerProcess, started: float, rng: random.Random
) -> list[Kill]:
    kills = []
    for _ in range(RANDOM_KILLS):
        await asyncio.sleep(rng.uniform(0.2, 4.0))
        if (await handle.describe()).close_time is not None:
            break
        worker.replace()
        kills.append(Kill(at="random", seconds=time.monotonic() - started))
        await asyncio.sleep(3.0)  # the new worker starts polling before it can be killed again
    await handle.result()
    return kills


def backups_of(core: kube.CoreV1Api, name: str) -> list[str]:
    found = core.list_namespaced_config_map(
        "default", label_selector=f"modoru.dev/deployment={name}"
    )
    return [c.metadata.name for c in found.items]


async def one_rollback(rel: ReliabilityStack, client, core, name: str, how) -> dict:
    worker = rel.worker()
    await asyncio.sleep(2.5)  # the worker registers and polls
    worker.check()
    mark = rel.mark()
    started = time.monotonic()
    handle = await start(client, worker.env["MODORU_TASK_QUEUE"], name)
    kills = await how(handle, worker, started)
    result: RollbackResult = await handle.result()
    took = time.monotonic() - started
    undos = rel.writes(mark, "deployments", name)
    found = {
        "deployment": name,
        "kills": [f"{k.at} at {k.seconds:.1f}s" for k in kills],
        "seconds": round(took, 1),
        "phase": result.status.phase.value,
        "verified": bool(result.status.verification and result.status.verification.ok),
        "undo_patches": len(undos),
        "backups": len(backups_of(core, name)),
        "sla_met": result.status.sla_met,
        "retried": await retried_activities(handle),
    }
    worker.stop()
    print(f"  {found}", flush=True)
    return found


async def test_rollbacks_survive_a_worker_killed_at_every_boundary_and_at_random(
    tmp_path: Path,
) -> None:
    boundaries_wanted = None if FULL else {"k8s.rollout_undo", "k8s.wait_rollout"}
    count = 16 if FULL else 4
    with ReliabilityStack(tmp_path, deployments=count, clock_speed=CLOCK_SPEED) as rel:
        client = await rel.client()
        api = kube_config.new_client_from_config(config_file=rel.endpoints["kubeconfig"])
        core = kube.CoreV1Api(api)
        # One rollback without kills names the boundaries.
        plain = await one_rollback(
            rel, client, core, "svc-0000", lambda h, w, s: asyncio.sleep(0, result=[])
        )
        sequence = await scheduled_activities(
            client.get_workflow_handle(rollback_workflow_id("default", "svc-0000"))
        )
        assert plain["phase"] == "completed" and plain["undo_patches"] == 1, plain
        chosen = [
            n
            for n, kind in enumerate(sequence, 1)
            if boundaries_wanted is None or kind in boundaries_wanted
        ]
        print(
            f"\nboundaries: {', '.join(f'#{n} {kind}' for n, kind in enumerate(sequence, 1))}; "
            f"killing at {chosen}",
            flush=True,
        )
        runs = [
            one_rollback(
                rel,
                client,
                core,
                f"svc-{i + 1:04d}",
                lambda h, w, s, n=n: kill_at_boundaries(h, w, {n}, s),
            )
            for i, n in enumerate(chosen)
        ]
        if FULL:
            rng = random.Random(18)
            base = len(chosen) + 1
            runs += [
                one_rollback(
                    rel,
                    client,
                    core,
                    f"svc-{base + i:04d}",
                    lambda h, w, s: kill_at_random(h, w, s, rng),
                )
                for i in range(RANDOM_RUNS)
            ]
        results = await asyncio.gather(*runs)
        api.close()
    for found in results:
        assert found["phase"] == Phase.COMPLETED.value and found["verified"], found
        assert found["undo_patches"] == 1, found  # exactly one undo took effect
        assert found["backups"] == 1, found
        assert found["kills"], found
    killed = sum(len(f["kills"]) for f in results)
    slowest = max(f["seconds"] for f in results)
    print(
        f"{len(results)} rollbacks through {killed} worker kills: all completed and verified, one "
        "undo and one backup each; "
        f"slowest {slowest:.1f}s; SLA met by {sum(1 for f in results if f['sla_met'])}",
        flush=True,
    )
    assert slowest < SLA_SECONDS
