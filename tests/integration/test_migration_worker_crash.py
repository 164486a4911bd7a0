"""SIGKILL the worker while `migrate down-to` runs: the exec's heartbeats stop,
the 10 s heartbeat timeout notices, and a new worker runs the (idempotent)
down-to again and finishes the migration rollback within a minute."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from runbook.migration_models import MigrationRequest, MigrationResult
from runbook.models import ApprovalSignal, Phase
from sandbox.scenario import load_scenario
from tests.conftest import RunningSandbox, fast_scenario
from workflows.migration_rollback import MigrationRollbackWorkflow

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SLOW_SECONDS = 6.0
SLOW_API = f"""import os, runpy, sys, time
sys.path.insert(0, {str(REPO)!r})
if sys.argv[1:3] == ["migrate", "down-to"]:
    time.sleep({SLOW_SECONDS})
sys.argv = ["sandbox.app", *sys.argv[1:]]
runpy.run_module("sandbox.app", run_name="__main__", alter_sys=True)
"""


def spawn_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def slow_scenario(tmp_path: Path):
    """tekutoko-release with its database, and a `/slow-api` whose down-to takes SLOW_SECONDS."""
    script = tmp_path / "slow_api.py"
    script.write_text(SLOW_API)
    scenario = fast_scenario(
        "tekutoko-release", databases=load_scenario("tekutoko-release").databases
    )
    images = []
    for rule in scenario.images:
        commands = (
            {**rule.profile.commands, "/slow-api": ["{python}", str(script)]}
            if rule.profile.commands
            else rule.profile.commands
        )
        images.append(
            rule.model_copy(
                update={"profile": rule.profile.model_copy(update={"commands": commands})}
            )
        )
    return scenario.model_copy(update={"images": images})


async def test_a_worker_killed_during_down_to_is_replaced_and_the_rollback_completes(
    dev_env, tmp_path
) -> None:
    sandbox = RunningSandbox(slow_scenario(tmp_path), tmp_path / "sandbox")
    worker = None
    try:
        endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(
            yaml.safe_dump(
                {
                    "services": [
                        {
                            "name": "tekutoko-api",
                            "deployment": "tekutoko-api",
                            "service": "tekutoko-api",
                            "approval": {"approvers": ["sre-lead", "backend-lead"]},
                            "channels": [{"kind": "jsonl", "path": "notices.jsonl"}],
                            "database": {
                                "container": "api",
                                "database": "tekutoko_production",
                                "user": "tekutoko",
                            },
                            "migration": {
                                "container": "api",
                                "cloudsql_instance": "tekutoko-db",
                                "down_to_command": ["/slow-api", "migrate", "down-to", "{version}"],
                            },
                        }
                    ]
                }
            )
        )
        queue = f"mcrash-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "MODORU_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "MODORU_TASK_QUEUE": queue,
            "MODORU_KUBECONFIG": str(sandbox.kubeconfig),
            "MODORU_CATALOG": str(catalog),
            "MODORU_NOTICES_DIR": str(tmp_path),
            "MODORU_CLOUDSQL_ENDPOINT": endpoints["cloud_sql"],
            "MODORU_CLOUDSQL_PROJECT": endpoints["cloudsql_project"],
            "MODORU_CLOUDSQL_INSECURE": "true",
        }
        worker = spawn_worker(env, tmp_path / "worker-1.log")
        handle = await dev_env.client.start_workflow(
            MigrationRollbackWorkflow.run,
            MigrationRequest(
                service="tekutoko-api",
                reason="1.3.0's migration broke walks",
                requested_by="oncall",
                language="en",
            ),
            id=f"mcrash-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        for _ in range(600):
            try:
                status = await handle.query(MigrationRollbackWorkflow.status)
                if status.phase is Phase.AWAITING_APPROVAL:
                    break
                assert status.phase is not Phase.FAILED, status.message
            except AssertionError:
                raise
            except Exception:  # the first workflow task may not have run yet
                pass
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the migration rollback never asked for approval")
        for who in ("sre-lead", "backend-lead"):
            await handle.signal(MigrationRollbackWorkflow.approve, ApprovalSignal(by=who))
        for _ in range(
            300
        ):  # the down-to exec is running (the request log records an exec when it ends)
            pending = (await handle.describe()).raw_description.pending_activities
            if (
                await handle.query(MigrationRollbackWorkflow.status)
            ).phase is Phase.EXECUTING and any(a.activity_type.name == "k8s.exec" for a in pending):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("down-to never started")
        await asyncio.sleep(
            2.0
        )  # down-to sleeps in the pod for SLOW_SECONDS; the worker heartbeats meanwhile
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        worker = spawn_worker(env, tmp_path / "worker-2.log")
        restarted = time.monotonic()
        result: MigrationResult = await asyncio.wait_for(handle.result(), timeout=90)
        took = time.monotonic() - restarted
        assert result.status.phase is Phase.COMPLETED, result.status.message
        assert (result.status.from_version, result.status.to_version) == (5, 4)
        assert took < 60, took
        downs = [c for c in result.status.commands if "down-to" in c.command]
        assert len(downs) == 1 and downs[0].exit_code == 0
        history = await handle.fetch_history()
        retried = [
            e
            for e in history.events
            if e.HasField("activity_task_started_event_attributes")
            and e.activity_task_started_event_attributes.attempt > 1
        ]
        assert retried, "down-to should have been retried on the new worker"
        print(f"\nthe new worker finished the migration rollback {took:.1f}s after it started")
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=20)
        sandbox.stop()
