"""Migration rollbacks on a real PostgreSQL: the sandbox's Cloud SQL instance,
the app's migrate command run through pods/exec, the backup gate through the
Cloud SQL Admin client, verification with read-only SQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psycopg
import pytest
from googleapiclient.http import build_http
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from kubernetes.aio.stream import WsApiClient
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.cloudsql import CloudSqlActivities
from activities.database import DatabaseActivities
from activities.notify import NotifyActivities
from activities.pod_exec import PodExecActivities
from activities.sqladmin import SqlAdmin
from activities.verify import VerifyActivities
from runbook.catalog import (
    ApprovalPolicy,
    Catalog,
    Channel,
    DatabaseAccess,
    IntegrityCheck,
    MigrationConfig,
    ServiceEntry,
)
from runbook.migration_models import MigrationRequest, MigrationResult
from runbook.models import ApprovalSignal, Phase
from tests.conftest import RunningSandbox
from tests.waiting import phase_of, until
from worker.main import WORKFLOWS
from workflows.migration_rollback import MigrationRollbackWorkflow

pytestmark = pytest.mark.integration
MIGRATIONS = Path(__file__).resolve().parents[2] / "sandbox" / "app" / "migrations"


@dataclass
class MigrationStack:
    client: object
    queue: str
    sandbox: RunningSandbox
    apps: kube.AppsV1Api
    env: dict

    async def cli(self, *args: str) -> subprocess.CompletedProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starter.cli",
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())

    @property
    def instance(self):
        return self.sandbox.sandbox.cloudsql.instance("tekutoko-db")

    async def query(self, text: str) -> list[tuple]:
        env = self.instance.app_env()
        async with await psycopg.AsyncConnection.connect(
            host=env["DATABASE_HOST"],
            port=env["DATABASE_PORT"],
            dbname=env["DATABASE_NAME"],
            user=env["DATABASE_USER"],
            password=env["DATABASE_PASSWORD"],
        ) as conn:
            return await (await conn.execute(text)).fetchall()

    async def tables(self) -> set[str]:
        return {
            r[0]
            for r in await self.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }

    async def run(
        self, approvers: tuple[str, ...] = ("sre-lead", "backend-lead"), **changes
    ) -> tuple[object, MigrationResult | None, str | None]:
        request = MigrationRequest(
            **{
                "service": "tekutoko-api",
                "reason": "1.3.0's migration broke walks",
                "requested_by": "oncall",
                "language": "en",
                **changes,
            }
        )
        handle = await self.client.start_workflow(
            MigrationRollbackWorkflow.run,
            request,
            id=f"migration-{uuid.uuid4().hex[:8]}",
            task_queue=self.queue,
        )
        status = await until(
            "the migration rollback to await approval (or to end)",
            lambda: handle.query(MigrationRollbackWorkflow.status),
            lambda s: s.phase in (Phase.AWAITING_APPROVAL, Phase.FAILED, Phase.COMPLETED),
            phase_of,
            30,
        )
        if status.phase is Phase.AWAITING_APPROVAL:
            for who in approvers:
                await handle.signal(MigrationRollbackWorkflow.approve, ApprovalSignal(by=who))
        try:
            return handle, await asyncio.wait_for(handle.result(), 120), None
        except WorkflowFailureError as exc:
            return handle, None, exc.cause.message


@pytest.fixture
async def migrations(
    dev_env, db_sandbox: RunningSandbox, tmp_path
) -> AsyncIterator[MigrationStack]:
    endpoints = json.loads(db_sandbox.sandbox.endpoints_path.read_text())
    entry = ServiceEntry(
        name="tekutoko-api",
        deployment="tekutoko-api",
        service="tekutoko-api",
        approval=ApprovalPolicy(approvers=["sre-lead", "backend-lead"]),
        channels=[Channel(kind="jsonl", path=str(tmp_path / "notices.jsonl"))],
        database=DatabaseAccess(container="api", database="tekutoko_production", user="tekutoko"),
        migration=MigrationConfig(
            container="api",
            cloudsql_instance="tekutoko-db",
            integrity_checks=[
                IntegrityCheck(name="users", sql="SELECT count(*) FROM users"),
                IntegrityCheck(name="walks", sql="SELECT count(*) FROM walks"),
            ],
        ),
    )
    configuration = kube.Configuration()
    await kube_config.load_kube_config(
        config_file=str(db_sandbox.kubeconfig), client_configuration=configuration
    )
    api, ws_api = kube.ApiClient(configuration), WsApiClient(configuration=configuration)
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    cloudsql = CloudSqlActivities(
        SqlAdmin(endpoints["cloud_sql"], build_http), endpoints["cloudsql_project"]
    )
    queue = f"migrations-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as session:
        verify = VerifyActivities(apps, core, session)
        pods = PodExecActivities(kube.CoreV1Api(ws_api), verify, Catalog(services=[entry]))
        activities = [
            CatalogActivities(Catalog(services=[entry])).service,
            pods.exec_in_pod,
            cloudsql.check_backup,
            DatabaseActivities(core, apps, pods).snapshot,
            NotifyActivities(environ={}, base_dir=tmp_path).send,
        ]
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=activities,
            workflow_failure_exception_types=[Exception],
        ):
            env = {
                **os.environ,
                "MODORU_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
                "MODORU_TASK_QUEUE": queue,
            }
            yield MigrationStack(dev_env.client, queue, db_sandbox, apps, env)
    await ws_api.close()
    await api.close()


async def broken_migrations(stack: MigrationStack, tmp_path: Path, down_5: str) -> None:
    """Point the app at a copy of its migrations whose version 5 reverts badly,
    as a faulty release would ship (the pods roll to pick up the setting)."""
    folder = tmp_path / "broken-migrations"
    shutil.copytree(MIGRATIONS, folder)
    (folder / "000005_create_badges.down.sql").write_text(down_5)
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "api", "env": [{"name": "MIGRATIONS_DIR", "value": str(folder)}]}
                    ]
                }
            }
        }
    }
    await stack.apps.patch_namespaced_deployment("tekutoko-api", "default", patch)
    await until(
        "the Deployment to roll out the broken migrations' setting",
        lambda: stack.apps.read_namespaced_deployment("tekutoko-api", "default"),
        lambda d: (
            d.status.observed_generation >= d.metadata.generation
            and d.status.updated_replicas
            == d.status.replicas
            == d.status.available_replicas
            == d.spec.replicas
        ),
        lambda d: (
            f"generation {d.metadata.generation} (observed {d.status.observed_generation}), "
            f"{d.spec.replicas} replicas wanted, {d.status.replicas} in all, "
            f"{d.status.updated_replicas} updated, {d.status.available_replicas} available"
        ),
        20,
        interval=0.05,
    )


async def test_down_one_step_drops_the_newest_migration_and_verifies(
    migrations: MigrationStack,
) -> None:
    assert "badges" in await migrations.tables()
    _, result, error = await migrations.run()
    assert error is None and result is not None
    status = result.status
    assert status.phase is Phase.COMPLETED and (status.from_version, status.to_version) == (5, 4)
    assert status.approvals == ["sre-lead", "backend-lead"] and status.backup.ok
    assert "badges" not in await migrations.tables() and "users" in await migrations.tables()
    assert await migrations.query("SELECT version, dirty FROM schema_migrations") == [(4, False)]
    assert [c.command[2] for c in status.commands] == ["version", "history", "down-to", "version"]
    assert all(c.ok for c in status.integrity) and "dropped: badges" in status.integrity[0].detail


async def test_down_to_a_version_reverts_several(migrations: MigrationStack) -> None:
    _, result, error = await migrations.run(to_version=2)
    assert error is None and result.status.steps == 3
    tables = await migrations.tables()
    assert {"users", "walks"} <= tables and not {"walk_points", "badges", "user_badges"} & tables
    columns = {
        r[0]
        for r in await migrations.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
        )
    }
    assert "daily_step_goal" not in columns  # migration 4 really reverted


async def test_a_migration_failing_half_way_leaves_the_workflow_failed_and_dirty(
    migrations: MigrationStack, tmp_path: Path
) -> None:
    await broken_migrations(
        migrations, tmp_path, "DROP TABLE user_badges;\nSELECT no_such_column FROM badges;\n"
    )
    _, result, error = await migrations.run()
    # As golang-migrate does, a failed revert of 5 leaves the version it was heading for, dirty.
    assert (
        result is None
        and "exited 1" in error
        and "no_such_column" in error
        and "now at version 4 (dirty)" in error
    ), error
    assert await migrations.query("SELECT version, dirty FROM schema_migrations") == [(4, True)]
    assert "user_badges" in await migrations.tables()  # the failed step's transaction rolled back


@pytest.mark.parametrize("problem", ["failed", "stale"])
async def test_no_fresh_backup_refuses_before_any_change(
    migrations: MigrationStack, problem: str
) -> None:
    for run in migrations.instance.backup_runs:
        if problem == "failed":
            run.status = "FAILED"
        else:
            run.end_time = dt.datetime.now(dt.UTC) - dt.timedelta(hours=30)
    handle, result, error = await migrations.run()
    assert result is None and "refused before any change" in error
    assert (
        "no successful backup run" if problem == "failed" else "h old, older than 24 h"
    ) in error
    status = await handle.query(MigrationRollbackWorkflow.status)
    assert (
        all(c.command[2] != "down-to" for c in status.commands) and status.approvals_required == 0
    )
    assert await migrations.query("SELECT version, dirty FROM schema_migrations") == [(5, False)]


async def test_verification_catches_a_row_count_drop(
    migrations: MigrationStack, tmp_path: Path
) -> None:
    await broken_migrations(
        migrations,
        tmp_path,
        "DROP TABLE IF EXISTS user_badges;\nDROP TABLE IF EXISTS badges;\nDELETE FROM walks "
        "WHERE id % 2 = 0;\n",
    )
    before = (await migrations.query("SELECT count(*) FROM walks"))[0][0]
    _, result, error = await migrations.run()
    assert (
        result is None
        and "verification failed" in error
        and f"walks: dropped from {before}" in error
    ), error


async def test_bad_requests_are_refused_with_the_reason(migrations: MigrationStack) -> None:
    _, _, error = await migrations.run(steps=9)
    assert "9 steps is more than the 5 applied" in error
    _, _, error = await migrations.run(to_version=7)
    assert "newer than the current 5" in error
    _, _, error = await migrations.run(service="nobody")
    assert "not in the service catalog" in error


async def test_the_cli_starts_approves_and_shows_a_migration_rollback(
    migrations: MigrationStack,
) -> None:
    started = await migrations.cli(
        "migrate-down",
        "start",
        "--service",
        "tekutoko-api",
        "--steps",
        "1",
        "--reason",
        "drill",
        "--requested-by",
        "oncall",
    )
    assert (
        started.returncode == 0
        and "migration-tekutoko-api" in started.stdout
        and "awaiting_approval" in started.stdout
    ), started.stderr
    mine = await migrations.cli("approve", "migration-tekutoko-api", "--by", "oncall")
    assert mine.returncode == 1 and "requested this rollback" in mine.stderr
    for who in ("sre-lead", "backend-lead"):
        assert (
            await migrations.cli("approve", "migration-tekutoko-api", "--by", who)
        ).returncode == 0
    handle = migrations.client.get_workflow_handle(
        "migration-tekutoko-api", result_type=MigrationResult
    )
    result = await asyncio.wait_for(handle.result(), 120)
    assert result.status.phase is Phase.COMPLETED
    shown = await migrations.cli("status", "migration-tekutoko-api", "--json")
    assert json.loads(shown.stdout)["to_version"] == 4
    listed = await migrations.cli("list")
    assert (
        "MigrationRollback\tmigration-tekutoko-api" in listed.stdout
        and "completed" in listed.stdout
    )
