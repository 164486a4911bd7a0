"""SIGKILL the worker at every activity boundary of a migration rollback, a
point-in-time recovery and a release guard (one run each, on the embedded
default with the tekutoko-release scenario: a real PostgreSQL behind the Cloud
SQL emulator, Cloud Monitoring at 20x); a new worker starts at once after each
kill. Each run must end as it would without kills, with its one side effect
done once: one step down, one clone, one undo.

Full suite only (MODORU_RELIABILITY=full; `python -m bench.reliability`): an
activity killed before it heartbeats waits for its start-to-close timeout, so
these take minutes."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client as kube
from kubernetes import config as kube_config

from bench.detection import release, sleep_until_readable
from runbook.guard_models import GuardPhase, GuardRequest, GuardResult
from runbook.migration_models import MigrationRequest, MigrationResult
from runbook.models import ApprovalSignal, Phase
from runbook.pitr_models import ExpectedQuery, PitrRequest, PitrResult
from tests.reliability.stack import FULL, ReliabilityStack, kill_at_boundaries, scheduled_activities
from worker.settings import bundled_catalog
from workflows.deployment_rollback import rollback_workflow_id
from workflows.migration_rollback import MigrationRollbackWorkflow
from workflows.pitr import PointInTimeRecoveryWorkflow
from workflows.release_guard import ReleaseGuardWorkflow

pytestmark = [
    pytest.mark.integration,
    pytest.mark.reliability,
    pytest.mark.skipif(not FULL, reason="full reliability suite only (MODORU_RELIABILITY=full)"),
]
APPROVERS = ("sre-lead", "backend-lead")


def catalog(state: Path) -> dict:
    found = yaml.safe_load(bundled_catalog().read_text())
    for entry in found["services"]:
        entry["channels"] = [{"kind": "jsonl", "path": str(state / "notices.jsonl")}]
        entry["pitr"]["operation_poll_seconds"] = 1
    return found


def approver(handle, workflow, gates: set[str]):
    """An on_poll that approves each gate (by both approvers) once."""
    answered: set[str] = set()

    async def on_poll() -> None:
        try:
            status = await handle.query(workflow.status)
        except Exception:  # no worker has the workflow right now
            return
        gate = getattr(status, "gate", None) or "approval"
        if status.phase is Phase.AWAITING_APPROVAL and gate in gates and gate not in answered:
            answered.add(gate)
            for who in APPROVERS:
                await handle.signal(workflow.approve, ApprovalSignal(by=who))

    return on_poll


async def test_migration_pitr_and_guard_survive_a_worker_killed_at_every_boundary(
    tmp_path: Path,
) -> None:
    with ReliabilityStack(
        tmp_path,
        scenario="tekutoko-release",
        catalog=catalog(tmp_path),
        clock_speed=20,
        traffic_rps=30,
    ) as rel:
        client = await rel.client()
        endpoints = rel.endpoints
        sqladmin = endpoints["cloud_sql"].rstrip("/") + "/sandbox"
        summary = []

        # Migration rollback: one step down (5 to 4), the down-to command run once to its end.
        worker = rel.worker()
        await asyncio.sleep(3)
        started = time.monotonic()
        handle = await client.start_workflow(
            MigrationRollbackWorkflow.run,
            MigrationRequest(
                service="tekutoko-api",
                reason="1.3.0's migration broke walks",
                requested_by="reliability",
                language="en",
            ),
            id=f"rel-migrate-{uuid.uuid4().hex[:6]}",
            task_queue=worker.env["MODORU_TASK_QUEUE"],
        )
        kills = await kill_at_boundaries(
            handle, worker, None, started, approver(handle, MigrationRollbackWorkflow, {"approval"})
        )
        result: MigrationResult = await handle.result()
        assert result.status.phase is Phase.COMPLETED, result.status.message
        assert (result.status.from_version, result.status.to_version) == (5, 4)
        downs = [c for c in result.status.commands if "down-to" in c.command]
        assert len(downs) == 1 and downs[0].exit_code == 0, downs
        summary.append(
            f"migration: {len(kills)} kills ({', '.join(k.at for k in kills)}); completed 5 -> 4 "
            f"in {time.monotonic() - started:.0f}s, one down-to"
        )
        print(summary[-1], flush=True)
        worker.stop()

        # Point-in-time recovery: one clone, checked and switched.
        worker = rel.worker()
        await asyncio.sleep(3)
        mark = rel.admin("requests?since=0", base=sqladmin)["last"]
        started = time.monotonic()
        handle = await client.start_workflow(
            PointInTimeRecoveryWorkflow.run,
            PitrRequest(
                service="tekutoko-api",
                point_in_time=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2),
                new_instance="tekutoko-db-rel",
                reason="a cleanup job deleted walks",
                requested_by="reliability",
                language="en",
                checks=[ExpectedQuery(name="one", sql="SELECT 1", expect="1")],
            ),
            id=f"rel-pitr-{uuid.uuid4().hex[:6]}",
            task_queue=worker.env["MODORU_TASK_QUEUE"],
        )
        kills = await kill_at_boundaries(
            handle,
            worker,
            None,
            started,
            approver(handle, PointInTimeRecoveryWorkflow, {"clone", "switch"}),
        )
        result: PitrResult = await handle.result()
        assert result.status.phase is Phase.COMPLETED, result.status.message
        clones = [
            e
            for e in rel.admin(f"requests?since={mark}", base=sqladmin)["entries"]
            if e["path"].endswith("/clone") and e["method"] == "POST" and e["status"] == 200
        ]
        assert len(clones) == 1, clones
        summary.append(
            f"pitr: {len(kills)} kills ({', '.join(k.at for k in kills)}); completed in "
            f"{time.monotonic() - started:.0f}s, one clone"
        )
        print(summary[-1], flush=True)
        worker.stop()

        # Release guard: 1.3.0 released under watch, rolled back (one undo) and verified.
        worker = rel.worker()
        api = kube_config.new_client_from_config(config_file=endpoints["kubeconfig"])
        apps = kube.AppsV1Api(api)
        await asyncio.to_thread(release, apps, "1.2.0")
        await asyncio.to_thread(sleep_until_readable, endpoints["metric_clock"])
        started = time.monotonic()
        handle = await client.start_workflow(
            ReleaseGuardWorkflow.run,
            GuardRequest(
                deployment="tekutoko-api",
                duration_seconds=900,
                interval_seconds=1,
                requested_by="reliability",
                language="en",
            ),
            id=f"rel-guard-{uuid.uuid4().hex[:6]}",
            task_queue=worker.env["MODORU_TASK_QUEUE"],
        )
        released = False

        async def release_when_watching() -> None:
            nonlocal released
            if released:
                return
            try:
                phase = (await handle.query(ReleaseGuardWorkflow.status)).phase
            except Exception:
                return
            if phase is GuardPhase.WATCHING:
                released = True
                mark_box.append(rel.mark())
                await asyncio.to_thread(release, apps, "1.3.0")

        mark_box: list[int] = []
        kills = await kill_at_boundaries(handle, worker, None, started, release_when_watching)
        result: GuardResult = await handle.result()
        assert result.status.phase is GuardPhase.ROLLED_BACK, result.status.message
        child = client.get_workflow_handle(rollback_workflow_id("default", "tekutoko-api"))
        patches = rel.writes(mark_box[0], "deployments", "tekutoko-api")
        assert len(patches) == 2, patches  # the release itself, then exactly one undo
        summary.append(
            f"guard: {len(kills)} kills ({', '.join(k.at for k in kills)}); rolled back and "
            f"verified in {time.monotonic() - started:.0f}s, "
            "one undo; the rollback's own activities: "
            f"{', '.join(await scheduled_activities(child))}"
        )
        print(summary[-1], flush=True)
        api.close()
        worker.stop()
