"""Exactly once where the effect lands, for the changes of a Deployment: each run's
one write is counted in the Kubernetes emulator's effect log (never in the
workflow's own record) while (a) about a fifth of every Kubernetes write loses its
answer after it was applied (a 500, a 503 or a reset connection), and (b) the
worker is SIGKILLed between the effect and its activity's completion (the answer
held by the emulator until the worker is dead).

Kinds: the immediate deployment rollback (one spec change, one backup ConfigMap),
the troubleshooting restart (one spec change) and ReplicaSet deletion (one delete,
one ConfigMap keeping its manifest), the restore of a backed-up manifest (one spec
change), and the release guard's rollback (one undo after the release).

Each run has a deployment and a worker process of its own, so runs go side by side.
The short suite (plain pytest, CI) runs two rollbacks under the fault mix and one
with the pinned kill in one stack; MODORU_RELIABILITY=full runs ten of each per kind
and mode (the guard: GUARD_RUNS, one after the other on tekutoko-api)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as kube
from kubernetes import config as kube_config
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy

from activities.kubernetes import clean_manifest
from bench.detection import REGISTRY, release, sleep_until_readable
from bench.harness import IMAGE, fleet_scenario
from runbook.cd_models import ManifestSource
from runbook.guard_models import GuardPhase, GuardRequest, GuardResult
from runbook.models import ApprovalSignal, Phase, RollbackRequest, Severity
from runbook.repair_models import RepairRequest, RestoreRequest
from tests.reliability.effects import (
    KUBERNETES_WRITES,
    Emulator,
    after_write_mix,
    hold_once,
    kill_pinned_to,
    spec_changes,
)
from tests.reliability.stack import FULL, Kill, ReliabilityStack, WorkerProcess
from tests.reliability.test_workflow_worker_kills import APPROVERS
from tests.reliability.test_workflow_worker_kills import catalog as release_catalog
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id
from workflows.release_guard import ReleaseGuardWorkflow
from workflows.restore import RestoreWorkflow, restore_workflow_id
from workflows.troubleshoot import TroubleshootWorkflow, troubleshoot_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
full_only = pytest.mark.skipif(
    not FULL, reason="full reliability suite only (MODORU_RELIABILITY=full)"
)

MIX, PINNED = "after-write mix", "pinned kill"
CLOCK_SPEED = 20  # the sandbox's clock: verification judges a minute of logs in 3 s
RUNS = 10 if FULL else 0  # per kind and mode, full suite
# One after the other on tekutoko-api, about half a minute each (the killed undo is retried
# after its 10-s heartbeat timeout); MODORU_EXACTLY_ONCE_GUARD_RUNS sets another count.
GUARD_RUNS = int(os.environ.get("MODORU_EXACTLY_ONCE_GUARD_RUNS", "10"))
RUN_TIMEOUT = 420.0  # one run, start to close (a killed attempt waits out its timeout)
NS = "default"


@dataclass
class Run:
    """One workflow on a deployment of its own, with a worker of its own."""

    kind: str
    mode: str
    deployment: str
    target: str = ""  # the object whose write is pinned: the deployment, or the ReplicaSet
    extra: dict[str, Any] = field(default_factory=dict)
    worker: WorkerProcess | None = None
    handle: WorkflowHandle | None = None
    kill: Kill | None = None
    result: Any = None
    seconds: float = 0.0
    found: dict[str, Any] = field(default_factory=dict)

    @property
    def what(self) -> str:
        return f"{self.kind} of deployment/{self.deployment} ({self.mode})"


# -- waiting, loudly ---------------------------------------------------------------------------


async def closed(run: Run, timeout: float = RUN_TIMEOUT) -> Any:
    """The run's result once its workflow closed; fails naming the run, its last status and the
    worker's death if it closes late or the worker died on its own."""
    deadline = time.monotonic() + timeout
    while True:
        run.worker.check()
        described = await run.handle.describe()
        if described.status is not None and described.status != WorkflowExecutionStatus.RUNNING:
            return await run.handle.result()
        if time.monotonic() > deadline:
            try:
                status = await run.handle.query("status")
                shown = f"phase {status.get('phase')}: {status.get('message')}"
            except Exception as exc:  # noqa: BLE001 - only for the failure's words
                shown = f"status not readable ({exc})"
            raise AssertionError(
                f"{run.what}: the workflow {run.handle.id} did not close within {timeout:.0f}s; "
                f"last {shown}"
            )
        await asyncio.sleep(0.5)


async def pinned_then_closed(
    run: Run, kube_emulator: Emulator, resource: str, verb: str, started: float
) -> Any:
    """The kill pinned after the run's write (its hold armed already), and the run's close;
    fails if the workflow closes before its write was held."""
    killing = asyncio.create_task(
        kill_pinned_to(
            kube_emulator,
            resource,
            verb,
            run.worker,
            started,
            name=run.target,
            armed=True,
            timeout=RUN_TIMEOUT,
        )
    )
    closing = asyncio.create_task(closed(run))
    done, _ = await asyncio.wait({killing, closing}, return_when=asyncio.FIRST_COMPLETED)
    if killing not in done:
        killing.cancel()
        closing.result()  # a failure of the wait raises here
        raise AssertionError(
            f"{run.what}: the workflow closed before its {verb} of {resource}/{run.target} was "
            "held, so no kill landed after the effect"
        )
    run.kill = killing.result()
    return await closing


async def side_by_side(
    rel: ReliabilityStack,
    client: Client,
    kube_emulator: Emulator,
    runs: list[Run],
    start: Callable[[Client, Run], Awaitable[WorkflowHandle]],
    pinned_write: tuple[str, str],
) -> list[dict[str, Any]]:
    """Start a worker for each run, arm the faults (the after-write mix if any run is in that
    mode, one hold per pinned run's target), run them all and return the effects since."""
    resource, verb = pinned_write
    for run in runs:
        run.worker = rel.worker()
    await asyncio.sleep(3)  # the workers register and poll
    for run in runs:
        run.worker.check()
    rules = after_write_mix(KUBERNETES_WRITES) if any(r.mode == MIX for r in runs) else []
    rules += [
        rule for r in runs if r.mode == PINNED for rule in hold_once(resource, verb, r.target)
    ]
    mark = await asyncio.to_thread(kube_emulator.mark)
    requests_mark = await asyncio.to_thread(rel.mark)
    await asyncio.to_thread(kube_emulator.set_faults, rules)

    async def one(run: Run) -> None:
        started = time.monotonic()
        run.handle = await start(client, run)
        if run.mode == PINNED:
            run.result = await pinned_then_closed(run, kube_emulator, resource, verb, started)
        else:
            run.result = await closed(run)
        run.seconds = time.monotonic() - started
        run.worker.stop()

    try:
        await asyncio.gather(*(one(run) for run in runs))
    finally:
        await asyncio.to_thread(kube_emulator.set_faults, [])
        await asyncio.to_thread(kube_emulator.release)
    requests = await asyncio.to_thread(rel.requests_since, requests_mark)
    applied = [e for e in requests if e.get("applied")]
    lost = Counter(f"{e['resource']}.{e['verb']}" for e in applied if not 200 <= e["status"] < 300)
    batch = {"id": uuid.uuid4().hex, "applied": len(applied), "lost": lost}
    for run in runs:
        run.extra["batch"] = batch
    return await asyncio.to_thread(kube_emulator.effects, mark)


# -- counting and saying -----------------------------------------------------------------------


def named(effects: list[dict[str, Any]], kind: str, name: str | None = None, prefix: str = ""):
    return [
        e
        for e in effects
        if e["kind"] == kind
        and (name is None or e.get("name") == name)
        and (e.get("name") or "").startswith(prefix)
    ]


def summary(kind: str, mode: str, runs: list[Run], phase: str, effects: str) -> str:
    kills = [r.kill for r in runs if r.kill is not None]
    said = (
        f"{len(kills)} ({', '.join(sorted({k.at.split('/')[0] for k in kills}))}, "
        f"at {min(k.seconds for k in kills):.1f}-{max(k.seconds for k in kills):.1f}s)"
        if kills
        else "none"
    )
    ended = sum(1 for r in runs if r.found.get("phase") == phase and r.found.get("verified"))
    slowest = max((r.seconds for r in runs), default=0.0)
    batches = {r.extra["batch"]["id"]: r.extra["batch"] for r in runs if "batch" in r.extra}
    lost = sum((b["lost"] for b in batches.values()), Counter())
    faults = (
        f"; answers lost after the write: {lost.total()} of "
        f"{sum(b['applied'] for b in batches.values())} applied Kubernetes writes"
        + (f" ({', '.join(f'{k} {n}' for k, n in sorted(lost.items()))})" if lost else "")
        if mode == MIX
        else ""
    )
    line = (
        f"exactly once: {kind} {mode}: {ended} of {len(runs)} ended {phase}, effects: {effects}; "
        f"kills: {said}{faults}; slowest {slowest:.0f}s"
    )
    print(line, flush=True)
    return line


def check_runs(runs: list[Run], phase: str) -> None:
    for run in runs:
        assert run.found["phase"] == phase and run.found["verified"], (run.what, run.found)
        if run.mode == PINNED:
            assert run.kill is not None, (run.what, "no kill landed")


def per_mode(runs: list[Run]) -> dict[str, list[Run]]:
    found: dict[str, list[Run]] = {}
    for run in runs:
        found.setdefault(run.mode, []).append(run)
    return found


# -- the stacks ---------------------------------------------------------------------------------


def fleet_file(state: Path, n: int, bad_error_ratio: float = 0.6) -> str:
    """A fleet of instant services; `bad_error_ratio` 0: every revision healthy (a restart of
    the live revision must verify)."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / "fleet-scenario.yaml"
    path.write_text(yaml.safe_dump(fleet_scenario(n, bad_error_ratio)))
    return str(path)


def svc(i: int) -> str:
    return f"svc-{i:04d}"


def plan(kind: str, first: int, mix: int, pinned: int) -> list[Run]:
    """Runs on svc-<first>... : `pinned` with the kill, then `mix` under the fault mix."""
    modes = [PINNED] * pinned + [MIX] * mix
    return [Run(kind, mode, svc(first + i)) for i, mode in enumerate(modes)]


# -- 1. the deployment rollback -----------------------------------------------------------------


async def start_rollback(client: Client, run: Run) -> WorkflowHandle:
    return await client.start_workflow(
        DeploymentRollbackWorkflow.run,
        RollbackRequest(
            deployment=run.deployment,
            severity=Severity.IMMEDIATE,
            reason="shared release 1.1.0 is failing",
            requested_by="reliability",
            language="en",
        ),
        id=rollback_workflow_id(NS, run.deployment),
        task_queue=run.worker.env["MODORU_TASK_QUEUE"],
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )


async def test_a_rollback_changes_the_spec_once_and_backs_up_once_through_lost_answers_and_kills(
    tmp_path: Path,
) -> None:
    mix, pinned = (RUNS, RUNS) if FULL else (2, 1)
    runs = plan("rollback", 0, mix, pinned)
    for run in runs:
        run.target = run.deployment
    with ReliabilityStack(tmp_path, deployments=len(runs), clock_speed=CLOCK_SPEED) as rel:
        client = await rel.client()
        emulator = Emulator.of(rel.endpoints, "kubernetes")
        effects = []
        # Full: the modes one after the other, so the pinned runs see no other fault.
        batches = list(per_mode(runs).values()) if FULL else [runs]
        for batch in batches:
            effects += await side_by_side(
                rel, client, emulator, batch, start_rollback, ("deployments", "patch")
            )
    for run in runs:
        changes = spec_changes(effects, run.deployment)
        backups = named(effects, "configmaps.create", prefix=f"modoru-backup-{run.deployment}-r")
        status = run.result.status
        run.found = {
            "phase": status.phase.value,
            "verified": bool(status.verification and status.verification.ok),
            "spec_changes": len(changes),
            "images": [c["images"] for c in changes],
            "patches": len(named(effects, "deployments.patch", run.deployment)),
            "backups": len(backups),
            "kill": run.kill.at if run.kill else None,
            "seconds": round(run.seconds, 1),
        }
        print(f"  {run.what}: {run.found}", flush=True)
    for mode, chosen in per_mode(runs).items():
        summary(
            "rollback",
            mode,
            chosen,
            "completed",
            f"{sum(r.found['spec_changes'] for r in chosen)} spec changes, "
            f"{sum(r.found['backups'] for r in chosen)} backup configmaps created, "
            f"{sum(r.found['patches'] for r in chosen)} deployment patches applied",
        )
    for run in runs:
        i = int(run.deployment.split("-")[1])
        assert run.found["spec_changes"] == 1, (run.what, run.found)  # exactly one undo landed
        assert run.found["images"] == [[IMAGE.format(i=i, version="1.0.0")]], (run.what, run.found)
        assert run.found["backups"] == 1, (run.what, run.found)  # exactly one backup made
    check_runs(runs, "completed")


# -- 2. troubleshooting (restart, delete-replicaset) and restore ---------------------------------


async def start_repair(client: Client, run: Run) -> WorkflowHandle:
    return await client.start_workflow(
        TroubleshootWorkflow.run,
        RepairRequest(
            deployment=run.deployment,
            action=run.kind,
            replicaset=run.extra.get("replicaset", ""),
            severity=Severity.IMMEDIATE,
            reason="old pods remain",
            requested_by="reliability",
            language="en",
        ),
        id=f"{troubleshoot_workflow_id(NS, run.deployment)}-{uuid.uuid4().hex[:6]}",
        task_queue=run.worker.env["MODORU_TASK_QUEUE"],
    )


async def start_restore(client: Client, run: Run) -> WorkflowHandle:
    return await client.start_workflow(
        RestoreWorkflow.run,
        RestoreRequest(
            deployment=run.deployment,
            source=ManifestSource(kind="backup", name=run.extra["backup"]),
            severity=Severity.IMMEDIATE,
            reason="the cluster state is wrong",
            requested_by="reliability",
            language="en",
        ),
        id=f"{restore_workflow_id(NS, run.deployment)}-{uuid.uuid4().hex[:6]}",
        task_queue=run.worker.env["MODORU_TASK_QUEUE"],
    )


def old_replicaset(apps: kube.AppsV1Api, deployment: str) -> str:
    """The deployment's revision-1 ReplicaSet (old: revision 2 is live and complete)."""
    listed = apps.list_namespaced_replica_set(NS, label_selector=f"app={deployment}").items
    found = [
        rs.metadata.name
        for rs in listed
        if (rs.metadata.annotations or {}).get("deployment.kubernetes.io/revision") == "1"
    ]
    assert len(found) == 1, (deployment, [rs.metadata.name for rs in listed])
    return found[0]


def backed_up(api: kube.ApiClient, deployment: str, image: str) -> str:
    """A modoru backup ConfigMap of `deployment` as it was at `image` (made here, before the
    count starts): the manifest the restore re-applies."""
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    live = api.sanitize_for_serialization(apps.read_namespaced_deployment(deployment, NS))
    manifest = clean_manifest(live)
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = image
    name = f"modoru-backup-{deployment}-r1-{uuid.uuid4().hex[:8]}"
    core.create_namespaced_config_map(
        NS,
        {
            "metadata": {
                "name": name,
                "labels": {
                    "app.kubernetes.io/managed-by": "modoru",
                    "modoru.dev/deployment": deployment,
                },
                "annotations": {"modoru.dev/revision": "1"},
            },
            "data": {"deployment.yaml": yaml.safe_dump(manifest, sort_keys=False)},
        },
    )
    return name


@full_only
async def test_restart_delete_replicaset_and_restore_each_act_once_through_lost_answers_and_kills(
    tmp_path: Path,
) -> None:
    kinds = ("restart", "delete-replicaset", "restore")
    runs_of = {kind: plan(kind, k * 2 * RUNS, RUNS, RUNS) for k, kind in enumerate(kinds)}
    total = sum(len(r) for r in runs_of.values())
    lines = []
    with ReliabilityStack(
        tmp_path,
        scenario=fleet_file(tmp_path, total, bad_error_ratio=0.0),
        clock_speed=CLOCK_SPEED,
    ) as rel:
        client = await rel.client()
        emulator = Emulator.of(rel.endpoints, "kubernetes")
        api = kube_config.new_client_from_config(config_file=rel.endpoints["kubeconfig"])
        apps = kube.AppsV1Api(api)
        for run in runs_of["restart"]:
            run.target = run.deployment
        for run in runs_of["delete-replicaset"]:
            run.target = run.extra["replicaset"] = await asyncio.to_thread(
                old_replicaset, apps, run.deployment
            )
        for run in runs_of["restore"]:
            run.target = run.deployment
            i = int(run.deployment.split("-")[1])
            run.extra["image"] = IMAGE.format(i=i, version="1.0.0")
            run.extra["backup"] = await asyncio.to_thread(
                backed_up, api, run.deployment, run.extra["image"]
            )
        for kind in kinds:
            pinned_write = (
                ("replicasets", "delete")
                if kind == "delete-replicaset"
                else (
                    "deployments",
                    "patch",
                )
            )
            start = start_restore if kind == "restore" else start_repair
            effects = []
            began = time.monotonic()
            for batch in per_mode(runs_of[kind]).values():
                effects += await side_by_side(rel, client, emulator, batch, start, pinned_write)
            for run in runs_of[kind]:
                status = run.result.status
                changes = spec_changes(effects, run.deployment)
                run.found = {
                    "phase": status.phase.value,
                    "verified": bool(status.verification and status.verification.ok),
                    "spec_changes": len(changes),
                    "images": [c["images"] for c in changes],
                    "images_before": [c["images_before"] for c in changes],
                    "patches": len(named(effects, "deployments.patch", run.deployment)),
                    "kill": run.kill.at if run.kill else None,
                    "seconds": round(run.seconds, 1),
                }
                if kind == "delete-replicaset":
                    run.found.update(
                        deletes=len(named(effects, "replicasets.delete", run.target)),
                        kept=len(
                            named(effects, "configmaps.create", f"modoru-backup-rs-{run.target}")
                        ),
                    )
                print(f"  {run.what}: {run.found}", flush=True)
            for mode, chosen in per_mode(runs_of[kind]).items():
                if kind == "delete-replicaset":
                    said = (
                        f"{sum(r.found['deletes'] for r in chosen)} replicaset deletes, "
                        f"{sum(r.found['kept'] for r in chosen)} keep configmaps created, "
                        f"{sum(r.found['spec_changes'] for r in chosen)} spec changes"
                    )
                else:
                    said = (
                        f"{sum(r.found['spec_changes'] for r in chosen)} spec changes, "
                        f"{sum(r.found['patches'] for r in chosen)} deployment patches applied"
                    )
                lines.append(summary(kind, mode, chosen, "completed", said))
            for run in runs_of[kind]:
                found = run.found
                if kind == "delete-replicaset":
                    assert found["deletes"] == 1 and found["kept"] == 1, (run.what, found)
                    assert found["spec_changes"] == 0, (run.what, found)
                elif kind == "restore":
                    assert found["images"] == [[run.extra["image"]]], (run.what, found)
                else:  # a restart: the same images, a new rollout
                    assert found["spec_changes"] == 1, (run.what, found)
                    assert found["images"] == found["images_before"], (run.what, found)
            print(f"  {kind}: {time.monotonic() - began:.0f}s for both modes", flush=True)
            check_runs(runs_of[kind], "completed")
        api.close()


# -- 3. the release guard's rollback ------------------------------------------------------------


def release_patch(apps: kube.AppsV1Api, tag: str) -> None:
    """The release itself, without waiting for its rollout (bench.detection.release's patch)."""
    apps.patch_namespaced_deployment(
        "tekutoko-api",
        NS,
        {
            "metadata": {"annotations": {"kubernetes.io/change-cause": f"release {tag}"}},
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "api", "image": f"{REGISTRY}:{tag}"}]}
                }
            },
        },
    )


async def watching(handle: WorkflowHandle, worker: WorkerProcess, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    phase = None
    while True:
        worker.check()
        try:
            phase = (await handle.query(ReleaseGuardWorkflow.status)).phase
        except Exception:  # noqa: BLE001 - no worker has it yet
            phase = None
        if phase is GuardPhase.WATCHING:
            return
        if phase in (GuardPhase.FAILED, GuardPhase.FINISHED, GuardPhase.STOPPED):
            raise AssertionError(f"the guard {handle.id} ended {phase} before it watched")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the guard {handle.id} was not WATCHING within {timeout:.0f}s (last {phase})"
            )
        await asyncio.sleep(0.2)


async def approve_the_guards_rollback(client: Client, stop: asyncio.Event) -> list[str]:
    """Approve the guard's rollback if it waits for approvals: a breach judged in a minute partly
    the healthy revision's is `investigate`, and the pinned kill is after the undo either way.
    Returns the gates approved (none for an `immediate` rollback)."""
    handle = client.get_workflow_handle(rollback_workflow_id(NS, "tekutoko-api"))
    answered: list[str] = []
    while not stop.is_set():
        try:
            status = await handle.query(DeploymentRollbackWorkflow.status)
        except Exception:  # noqa: BLE001 - not started yet, or between workers
            status = None
        if status is not None and status.phase is Phase.AWAITING_APPROVAL:
            key = (await handle.describe()).run_id or ""
            if key not in answered:
                answered.append(key)
                for who in APPROVERS:
                    await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by=who))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    return answered


@full_only
async def test_the_release_guards_undo_lands_once_through_a_pinned_kill(tmp_path: Path) -> None:
    runs: list[Run] = []
    with ReliabilityStack(
        tmp_path,
        scenario="tekutoko-release",
        catalog=release_catalog(tmp_path),
        clock_speed=CLOCK_SPEED,
        traffic_rps=30,
    ) as rel:
        client = await rel.client()
        endpoints = rel.endpoints
        emulator = Emulator.of(endpoints, "kubernetes")
        api = kube_config.new_client_from_config(config_file=endpoints["kubeconfig"])
        apps = kube.AppsV1Api(api)
        for n in range(GUARD_RUNS):
            run = Run("guard rollback", PINNED, "tekutoko-api", target="tekutoko-api")
            runs.append(run)
            run.worker = rel.worker()
            await asyncio.to_thread(release, apps, "1.2.0")  # healthy; a no-op after an undo
            await asyncio.to_thread(sleep_until_readable, endpoints["metric_clock"])
            started = time.monotonic()
            run.handle = await client.start_workflow(
                ReleaseGuardWorkflow.run,
                GuardRequest(
                    deployment="tekutoko-api",
                    duration_seconds=900,
                    interval_seconds=1,
                    requested_by="reliability",
                    language="en",
                ),
                id=f"rel-guard-{uuid.uuid4().hex[:6]}",
                task_queue=run.worker.env["MODORU_TASK_QUEUE"],
            )
            await watching(run.handle, run.worker)
            mark = await asyncio.to_thread(emulator.mark)
            await asyncio.to_thread(release_patch, apps, "1.3.0")
            # Armed after the release's own PATCH: the next one of tekutoko-api is the undo.
            await asyncio.to_thread(
                emulator.set_faults, hold_once("deployments", "patch", "tekutoko-api")
            )
            approvals_done = asyncio.Event()
            approving = asyncio.create_task(approve_the_guards_rollback(client, approvals_done))
            try:
                result: GuardResult = await pinned_then_closed(
                    run, emulator, "deployments", "patch", started
                )
            finally:
                approvals_done.set()
                await asyncio.to_thread(emulator.set_faults, [])
                await asyncio.to_thread(emulator.release)
            approved = await approving
            run.seconds = time.monotonic() - started
            run.worker.stop()
            effects = await asyncio.to_thread(emulator.effects, mark)
            changes = spec_changes(effects, "tekutoko-api")
            run.found = {
                "phase": result.status.phase.value,
                "verified": result.status.phase is GuardPhase.ROLLED_BACK,
                "spec_changes": len(changes),
                "undos": len(changes) - 1,
                "images": [c["images"] for c in changes],
                "kill": run.kill.at if run.kill else None,
                "approved": bool(approved),
                "seconds": round(run.seconds, 1),
                "message": result.status.message[:160],
            }
            print(f"  guard #{n + 1}: {run.found}", flush=True)
            assert result.status.phase is GuardPhase.ROLLED_BACK, result.status.message
            # The release, then exactly one undo back to 1.2.0.
            assert len(changes) == 2, changes
            assert changes[0]["images"] == [f"{REGISTRY}:1.3.0"], changes
            assert changes[1]["images"] == [f"{REGISTRY}:1.2.0"], changes
        api.close()
    summary(
        "guard rollback",
        PINNED,
        runs,
        GuardPhase.ROLLED_BACK.value,
        f"{sum(r.found['undos'] for r in runs)} undo spec changes after {len(runs)} releases",
    )
    check_runs(runs, GuardPhase.ROLLED_BACK.value)
