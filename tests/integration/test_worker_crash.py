"""SIGKILL the worker in the middle of a rollout: a new worker finishes the
rollback, and the cluster saw exactly one undo."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import pytest
import yaml

from runbook.models import Phase, RollbackRequest, RollbackResult, Severity
from sandbox.scenario import load_scenario
from tests.conftest import RunningSandbox
from workflows.deployment_rollback import DeploymentRollbackWorkflow

pytestmark = pytest.mark.integration


def spawn_worker(env: dict[str, str], log_path) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def test_a_killed_worker_does_not_roll_twice(dev_env, tmp_path) -> None:
    sandbox = RunningSandbox(
        load_scenario("tekutoko"), tmp_path / "sandbox"
    )  # real-time pods: the rollout takes seconds
    worker = None
    try:
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(
            yaml.safe_dump(
                {
                    "services": [
                        {
                            "name": "tekutoko-api",
                            "deployment": "tekutoko-api",
                            "service": "tekutoko-api",
                            "approval": {"approvers": ["sre-lead"]},
                            "channels": [{"kind": "jsonl", "path": "notices.jsonl"}],
                            "verification_window_seconds": 30,
                            "rollout_timeout_seconds": 120,
                        }
                    ]
                }
            )
        )
        queue = f"crash-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "MODORU_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "MODORU_TASK_QUEUE": queue,
            "MODORU_KUBECONFIG": str(sandbox.kubeconfig),
            "MODORU_CATALOG": str(catalog),
            "MODORU_NOTICES_DIR": str(tmp_path),
        }
        worker = spawn_worker(env, tmp_path / "worker-1.log")
        mark = sandbox.mark()
        handle = await dev_env.client.start_workflow(
            DeploymentRollbackWorkflow.run,
            RollbackRequest(
                deployment="tekutoko-api",
                severity=Severity.IMMEDIATE,
                reason="error rate 60%",
                requested_by="oncall",
            ),
            id=f"crash-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        for _ in range(300):
            try:
                if (
                    await handle.query(DeploymentRollbackWorkflow.status)
                ).phase == Phase.WAITING_ROLLOUT:
                    break
            except Exception:  # the first workflow task may not have run yet
                pass
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the rollout never started")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        worker = spawn_worker(env, tmp_path / "worker-2.log")
        result: RollbackResult = await asyncio.wait_for(handle.result(), timeout=150)
        assert result.status.phase == Phase.COMPLETED and result.status.verification.ok
        undo = [
            e
            for e in sandbox.requests_since(mark)
            if e["resource"] == "deployments" and e["verb"] == "patch"
        ]
        assert len(undo) == 1, undo
        history = await handle.fetch_history()
        attempts = [
            e
            for e in history.events
            if e.HasField("activity_task_started_event_attributes")
            and e.activity_task_started_event_attributes.attempt > 1
        ]
        assert attempts, "the wait activity should have been retried on the new worker"
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=20)
        sandbox.stop()
