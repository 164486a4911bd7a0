"""The Cloud SQL Admin emulator through the official gRPC client: instances
are real PostgreSQL clusters and backup runs real pg_basebackups."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import grpc
import psycopg
import pytest
from google.api_core import exceptions
from google.cloud import sqladmin_v1 as sql
from google.cloud.sqladmin_v1.services.sql_instances_service.transports import (
    SqlInstancesServiceGrpcTransport,
)

from sandbox.cloudsql import LOCATION_FILE, CloudSqlEmulator
from worker.cloud import cloudsql_clients

PROJECT = "tekutoko-prod"
NAME = "tekutoko-db"
Status = sql.SqlBackupRunStatus


@pytest.fixture(scope="module")
async def emulator() -> AsyncIterator[CloudSqlEmulator]:
    # Not tmp_path: under root the server runs as a user who must reach the dir.
    root = Path(tempfile.mkdtemp(prefix="modoru-csql-"))
    root.chmod(0o755)
    emulator = CloudSqlEmulator(root / "state")
    try:
        await emulator.start()
        await emulator.add_instance(NAME, database="tekutoko", user="tekutoko_app", password="walk-secret")
        yield emulator
    finally:
        await emulator.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def api(emulator: CloudSqlEmulator) -> AsyncIterator[SimpleNamespace]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{emulator.port}")
    instances, runs, operations = cloudsql_clients(channel)
    yield SimpleNamespace(instances=instances, runs=runs, operations=operations)
    await channel.close()


async def wait_done(api: SimpleNamespace, name: str, timeout: float = 60) -> sql.Operation:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        op = await api.operations.get(request={"project": PROJECT, "operation": name})
        if op.status == sql.Operation.SqlOperationStatus.DONE:
            return op
        assert asyncio.get_running_loop().time() < deadline, f"operation {name} still {op.status.name}"
        await asyncio.sleep(0.1)


async def test_get_and_list_describe_the_instance_like_cloud_sql(api) -> None:
    instance = await api.instances.get(request={"project": PROJECT, "instance": NAME})
    assert (instance.name, instance.project, instance.region) == (NAME, PROJECT, "asia-northeast1")
    assert instance.database_version == sql.SqlDatabaseVersion.POSTGRES_18
    assert instance.database_installed_version.startswith("POSTGRES_18_")
    assert instance.state == sql.DatabaseInstance.SqlInstanceState.RUNNABLE
    assert [(ip.type_, ip.ip_address) for ip in instance.ip_addresses] == [(sql.SqlIpAddressType.PRIMARY, "127.0.0.1")]
    assert instance.connection_name == f"{PROJECT}:asia-northeast1:{NAME}"
    assert instance.self_link == f"https://sqladmin.googleapis.com/v1/projects/{PROJECT}/instances/{NAME}"
    assert instance.settings.tier.startswith("db-")
    backup = instance.settings.backup_configuration
    assert backup.enabled and backup.point_in_time_recovery_enabled
    assert backup.start_time == "18:00" and backup.transaction_log_retention_days == 7
    # The generated pager iterates ApiWarnings (the first repeated field): read .items.
    listed = await api.instances.list(request={"project": PROJECT})
    assert [i.name for i in listed.items] == [NAME] and not [w async for w in listed]


async def test_the_blocking_client_works_too(emulator) -> None:
    def get() -> sql.DatabaseInstance:
        with grpc.insecure_channel(f"127.0.0.1:{emulator.port}") as channel:
            client = sql.SqlInstancesServiceClient(transport=SqlInstancesServiceGrpcTransport(channel=channel))
            return client.get(request={"project": PROJECT, "instance": NAME})

    assert (await asyncio.to_thread(get)).name == NAME


async def test_the_initial_automated_backup_run_succeeded(emulator, api) -> None:
    runs = [r async for r in await api.runs.list(request={"project": PROJECT, "instance": NAME})]
    first = runs[-1]
    assert first.status == Status.SUCCESSFUL and first.type_ == sql.SqlBackupRunType.AUTOMATED
    assert first.enqueued_time <= first.start_time <= first.end_time <= datetime.now(UTC)
    assert first.instance == NAME and not first.error.message
    record = emulator.instance(NAME).backup_run(first.id)
    assert record.backup is not None and record.backup.start_wal_file
    assert (record.path / "PG_VERSION").is_file()


async def test_an_on_demand_backup_runs_pg_basebackup_behind_an_operation(emulator, api) -> None:
    op = await api.runs.insert(request={"project": PROJECT, "instance": NAME, "body": {"description": "before rollback"}})
    assert op.operation_type == sql.Operation.SqlOperationType.BACKUP_VOLUME
    assert op.status == sql.Operation.SqlOperationStatus.PENDING and op.target_id == NAME
    done = await wait_done(api, op.name)
    assert not done.error.errors and done.insert_time <= done.start_time <= done.end_time
    run = await api.runs.get(request={"project": PROJECT, "instance": NAME, "id": done.backup_context.backup_id})
    assert run.status == Status.SUCCESSFUL and run.type_ == sql.SqlBackupRunType.ON_DEMAND
    assert run.description == "before rollback"
    backup_dir = emulator.instance(NAME).backups_dir / str(run.id)
    assert {"PG_VERSION", "backup_label", "backup_manifest"} <= {p.name for p in backup_dir.iterdir()}

    runs = [r async for r in await api.runs.list(request={"project": PROJECT, "instance": NAME})]
    assert runs[0].id == run.id and [r.enqueued_time for r in runs] == sorted((r.enqueued_time for r in runs), reverse=True)
    ops = [o async for o in await api.operations.list(request={"project": PROJECT, "instance": NAME})]
    assert ops[0].name == op.name and ops[-1].operation_type == sql.Operation.SqlOperationType.CREATE


async def test_backups_run_one_at_a_time_and_list_page_by_page(api) -> None:
    first, second = [await api.runs.insert(request={"project": PROJECT, "instance": NAME}) for _ in range(2)]
    done = [await wait_done(api, op.name) for op in (first, second)]
    runs = [await api.runs.get(request={"project": PROJECT, "instance": NAME, "id": op.backup_context.backup_id}) for op in done]
    assert all(r.status == Status.SUCCESSFUL for r in runs) and runs[0].end_time <= runs[1].start_time
    whole = await api.runs.list(request={"project": PROJECT, "instance": NAME})
    paged = [r.id async for r in await api.runs.list(request={"project": PROJECT, "instance": NAME, "max_results": 2})]
    assert paged == [r.id for r in whole.items] and paged[:2] == [runs[1].id, runs[0].id]
    everywhere = await api.runs.list(request={"project": PROJECT, "instance": "-"})
    assert [r.id for r in everywhere.items] == paged


async def test_a_backup_of_a_stopped_instance_fails_with_an_error(emulator, api) -> None:
    cluster = emulator.instance(NAME).cluster
    await cluster.stop()
    try:
        instance = await api.instances.get(request={"project": PROJECT, "instance": NAME})
        assert instance.settings.activation_policy == sql.Settings.SqlActivationPolicy.NEVER
        op = await wait_done(api, (await api.runs.insert(request={"project": PROJECT, "instance": NAME})).name)
        assert "not running" in op.error.errors[0].message
        run = await api.runs.get(request={"project": PROJECT, "instance": NAME, "id": op.backup_context.backup_id})
        assert run.status == Status.FAILED and "not running" in run.error.message
    finally:
        await cluster.start()


async def test_tests_can_age_or_fail_a_recorded_run(emulator, api) -> None:
    record = emulator.instance(NAME).backup_runs[0]
    saved = (record.status, record.end_time)
    record.status, record.end_time = "FAILED", datetime.now(UTC) - timedelta(days=2)
    try:
        run = await api.runs.get(request={"project": PROJECT, "instance": NAME, "id": record.id})
        assert run.status == Status.FAILED and run.end_time < datetime.now(UTC) - timedelta(days=1)
    finally:
        record.status, record.end_time = saved


async def test_unknown_things_are_not_found_and_other_projects_are_denied(emulator, api) -> None:
    with pytest.raises(exceptions.NotFound, match="The Cloud SQL instance does not exist"):
        await api.instances.get(request={"project": PROJECT, "instance": "nope"})
    with pytest.raises(exceptions.PermissionDenied, match="not authorized"):
        await api.instances.get(request={"project": "someone-else", "instance": NAME})
    with pytest.raises(exceptions.NotFound, match="backup run does not exist"):
        await api.runs.get(request={"project": PROJECT, "instance": NAME, "id": 42})
    with pytest.raises(exceptions.NotFound, match="instance does not exist"):
        await api.runs.insert(request={"project": PROJECT, "instance": "nope"})
    with pytest.raises(exceptions.NotFound, match="operation does not exist"):
        await api.operations.get(request={"project": PROJECT, "operation": "00000000-0000-0000-0000-000000000000"})
    with pytest.raises(exceptions.InvalidArgument, match="instance"):
        await api.instances.get(request={"project": PROJECT})
    with pytest.raises(exceptions.InvalidArgument, match="project"):
        await api.runs.list(request={"instance": NAME})
    with pytest.raises(KeyError):
        emulator.instance("nope")


async def test_the_app_env_logs_in_to_a_database_the_user_owns(emulator) -> None:
    env = emulator.instance(NAME).app_env()
    assert set(env) == {"DATABASE_HOST", "DATABASE_PORT", "DATABASE_NAME", "DATABASE_USER", "DATABASE_PASSWORD"}
    async with await psycopg.AsyncConnection.connect(
        host=env["DATABASE_HOST"], port=env["DATABASE_PORT"], dbname=env["DATABASE_NAME"],
        user=env["DATABASE_USER"], password=env["DATABASE_PASSWORD"],
    ) as conn:
        row = await (await conn.execute(
            "SELECT current_user, pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        )).fetchone()
    assert row == ("tekutoko_app", "tekutoko_app")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_a_state_dir_the_server_user_cannot_reach_moves_the_data_to_tmp(tmp_path: Path) -> None:
    private = tmp_path / "state"
    private.mkdir(mode=0o700)
    emulator = CloudSqlEmulator(private)
    root = emulator.data_root
    try:
        assert root.parent == Path("/tmp") and root.stat().st_mode & 0o777 == 0o755
        assert (private / LOCATION_FILE).read_text().strip() == str(root)
        assert CloudSqlEmulator(private).data_root == root  # a restart finds the same data
    finally:
        shutil.rmtree(root, ignore_errors=True)
