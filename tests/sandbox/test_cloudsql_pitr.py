"""Point-in-time recovery in the Cloud SQL emulator through the official
client: GetLatestRecoveryTime and Clone restore a real base backup and replay
the source's real WAL archive into a new instance."""

from __future__ import annotations

import asyncio
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

from sandbox.cloudsql import CloudSqlEmulator
from worker.cloud import cloudsql_clients

PROJECT = "tekutoko-prod"
SOURCE = "pitr-src"
CLONE = "pitr-src-clone"
OpStatus = sql.Operation.SqlOperationStatus


@pytest.fixture(scope="module")
async def emulator() -> AsyncIterator[CloudSqlEmulator]:
    # Not tmp_path: under root the server runs as a user who must reach the dir.
    root = Path(tempfile.mkdtemp(prefix="modoru-pitr-"))
    root.chmod(0o755)
    emulator = CloudSqlEmulator(root / "state")
    try:
        await emulator.start()
        await emulator.add_instance(SOURCE, database="shop", user="shop_app", password="pitr-secret")
        yield emulator
    finally:
        await emulator.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def api(emulator: CloudSqlEmulator) -> AsyncIterator[SimpleNamespace]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{emulator.port}")
    instances, _, operations = cloudsql_clients(channel)
    yield SimpleNamespace(instances=instances, operations=operations)
    await channel.close()


async def sql_rows(env: dict[str, str], query: str = "SELECT item FROM orders ORDER BY id") -> list[str]:
    async with await psycopg.AsyncConnection.connect(
        host=env["DATABASE_HOST"], port=env["DATABASE_PORT"], dbname=env["DATABASE_NAME"],
        user=env["DATABASE_USER"], password=env["DATABASE_PASSWORD"], autocommit=True,
    ) as conn:
        cursor = await conn.execute(query)
        return [row[0] for row in await cursor.fetchall()] if cursor.description else []


async def write_history(env: dict[str, str]) -> datetime:
    """Rows that exist at the returned moment, then deleted and replaced after it."""
    await sql_rows(env, "CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)")
    await sql_rows(env, "INSERT INTO orders (item) VALUES ('kept-1'), ('kept-2'), ('kept-3')")
    await asyncio.sleep(0.2)
    point = datetime.now(UTC)
    await asyncio.sleep(0.2)
    await sql_rows(env, "DELETE FROM orders")
    await sql_rows(env, "INSERT INTO orders (item) VALUES ('after-1')")
    return point


@pytest.fixture(scope="module")
async def point(emulator: CloudSqlEmulator) -> datetime:
    return await write_history(emulator.instance(SOURCE).app_env())


async def wait_done(api: SimpleNamespace, name: str, timeout: float = 120) -> sql.Operation:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        op = await api.operations.get(request={"project": PROJECT, "operation": name})
        if op.status == OpStatus.DONE:
            return op
        assert asyncio.get_running_loop().time() < deadline, f"operation {name} still {op.status.name}"
        await asyncio.sleep(0.1)


def clone_request(destination: str, when: datetime | None, source: str = SOURCE) -> dict:
    context: dict = {"destination_instance_name": destination}
    if when is not None:
        context["point_in_time"] = when
    return {"project": PROJECT, "instance": source, "body": {"clone_context": context}}


def files(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


async def test_the_recovery_window_runs_from_the_oldest_backup_to_now(emulator, api, point) -> None:
    before = datetime.now(UTC)
    window = await api.instances.get_latest_recovery_time(request={"project": PROJECT, "instance": SOURCE})
    (backup,) = emulator.instance(SOURCE).successful_backups()
    assert window.kind == "sql#getLatestRecoveryTime"
    assert window.earliest_recovery_time == backup.end_time
    assert window.earliest_recovery_time < point < window.latest_recovery_time
    assert before <= window.latest_recovery_time <= datetime.now(UTC)


async def test_a_clone_to_a_point_in_time_holds_the_data_of_that_moment(emulator, api, point) -> None:
    source = emulator.instance(SOURCE)
    op = await api.instances.clone(request=clone_request(CLONE, point))
    assert op.operation_type == sql.Operation.SqlOperationType.CLONE and op.status == OpStatus.PENDING
    assert op.target_id == CLONE and op.target_link.endswith(f"/instances/{CLONE}")
    # Taken after the request, which archived the source's latest WAL.
    archive_before, backups_before, port_before = files(source.archive_dir), files(source.backups_dir), source.cluster.port
    # While it runs, the new name is taken and its operation is listed under it (a retried client finds it there).
    with pytest.raises(exceptions.AlreadyExists):
        await api.instances.clone(request=clone_request(CLONE, point))
    running = [o async for o in await api.operations.list(request={"project": PROJECT, "instance": CLONE})]
    assert [o.name for o in running] == [op.name] and running[0].status != OpStatus.DONE

    done = await wait_done(api, op.name)
    assert not done.error.errors and done.start_time <= done.end_time
    assert (await emulator.wait_operation(op.name)).error is None
    clone = emulator.instance(CLONE)
    assert await sql_rows(clone.app_env()) == ["kept-1", "kept-2", "kept-3"]
    # Promoted: it takes writes, on its own port and into its own archive.
    await sql_rows(clone.app_env(), "INSERT INTO orders (item) VALUES ('written-on-the-clone')")
    assert clone.cluster.port != source.cluster.port and clone.archive_dir != source.archive_dir
    assert any(name.startswith("00000002") for name in clone.cluster.archived_wal())

    # The source is untouched: same data, still running on the same port, its archive and backups as they were.
    assert await sql_rows(source.app_env()) == ["after-1"]
    assert source.cluster.running and source.cluster.port == port_before
    archive_after = files(source.archive_dir)
    assert {name: archive_after[name] for name in archive_before} == archive_before
    assert not [name for name in archive_after if not name.startswith("00000001")]
    assert files(source.backups_dir) == backups_before

    described = await api.instances.get(request={"project": PROJECT, "instance": CLONE})
    assert [(ip.type_, ip.ip_address) for ip in described.ip_addresses] == [(sql.SqlIpAddressType.PRIMARY, "127.0.0.1")]
    assert described.settings.user_labels["sandbox-port"] == clone.app_env()["DATABASE_PORT"] == str(clone.cluster.port)
    assert described.settings.backup_configuration.point_in_time_recovery_enabled
    assert described.database_version == sql.SqlDatabaseVersion.POSTGRES_18
    listed = await api.instances.list(request={"project": PROJECT})
    assert {i.name for i in listed.items} >= {SOURCE, CLONE}
    ops = [o async for o in await api.operations.list(request={"project": PROJECT, "instance": CLONE})]
    assert [o.name for o in ops] == [op.name]
    # A new clone has no backup of its own yet, so nothing to recover it from.
    with pytest.raises(exceptions.FailedPrecondition, match="no successful backup"):
        await api.instances.get_latest_recovery_time(request={"project": PROJECT, "instance": CLONE})


async def test_bad_clone_requests_are_refused_and_create_nothing(emulator, api, point) -> None:
    names = {i.name for i in emulator.instances}
    ops = len([o async for o in await api.operations.list(request={"project": PROJECT})])
    dirs = set((emulator.data_root / "instances").iterdir())
    window = await api.instances.get_latest_recovery_time(request={"project": PROJECT, "instance": SOURCE})
    earliest = window.earliest_recovery_time.isoformat().replace("+00:00", "Z")

    with pytest.raises(exceptions.InvalidArgument, match=rf"outside the recovery window of instance {SOURCE}: .* from {earliest} to "):
        await api.instances.clone(request=clone_request("too-early", window.earliest_recovery_time - timedelta(hours=1)))
    with pytest.raises(exceptions.InvalidArgument, match="outside the recovery window"):
        await api.instances.clone(request=clone_request("in-the-future", datetime.now(UTC) + timedelta(hours=1)))
    with pytest.raises(exceptions.InvalidArgument, match="pointInTime is required"):
        await api.instances.clone(request=clone_request("no-time", None))
    with pytest.raises(exceptions.AlreadyExists, match="already exists"):
        await api.instances.clone(request=clone_request(SOURCE, point))
    with pytest.raises(exceptions.InvalidArgument, match="not a valid instance name"):
        await api.instances.clone(request=clone_request("Bad_Name", point))
    with pytest.raises(exceptions.InvalidArgument, match="destinationInstanceName"):
        await api.instances.clone(request=clone_request("", point))
    with pytest.raises(exceptions.NotFound, match="The Cloud SQL instance does not exist"):
        await api.instances.clone(request=clone_request("from-nowhere", point, source="no-such-instance"))
    with pytest.raises(exceptions.NotFound, match="The Cloud SQL instance does not exist"):
        await api.instances.get_latest_recovery_time(request={"project": PROJECT, "instance": "no-such-instance"})

    assert {i.name for i in emulator.instances} == names
    assert len([o async for o in await api.operations.list(request={"project": PROJECT})]) == ops
    assert set((emulator.data_root / "instances").iterdir()) == dirs


async def test_without_pitr_there_is_no_recovery_window_and_no_clone(emulator, api, point) -> None:
    source = emulator.instance(SOURCE)
    source.pitr_enabled = False
    try:
        with pytest.raises(exceptions.FailedPrecondition, match=f"Point-in-time recovery is not enabled for instance {SOURCE}"):
            await api.instances.get_latest_recovery_time(request={"project": PROJECT, "instance": SOURCE})
        with pytest.raises(exceptions.FailedPrecondition, match="Point-in-time recovery is not enabled"):
            await api.instances.clone(request=clone_request("no-pitr-clone", point))
    finally:
        source.pitr_enabled = True
    assert "no-pitr-clone" not in {i.name for i in emulator.instances}
    assert not (emulator.data_root / "instances" / "no-pitr-clone").exists()


async def test_a_clone_that_cannot_replay_the_archive_fails_and_keeps_its_files(emulator, api) -> None:
    broken = await emulator.add_instance("pitr-gap", database="shop", user="shop_app", password="gap-secret", initial_backup=False)
    with pytest.raises(exceptions.FailedPrecondition, match="no successful backup"):
        await api.instances.get_latest_recovery_time(request={"project": PROJECT, "instance": "pitr-gap"})
    run = await emulator.take_backup("pitr-gap")
    point = await write_history(broken.app_env())
    await api.instances.get_latest_recovery_time(request={"project": PROJECT, "instance": "pitr-gap"})
    # Lose every segment archived since the backup began: the replay cannot get past the backup.
    assert run.backup is not None
    lost = [p for p in broken.archive_dir.iterdir() if len(p.name) == 24 and p.name > run.backup.start_wal_file]
    assert lost
    for path in lost:
        path.unlink()

    op = await api.instances.clone(request=clone_request("pitr-gap-clone", point, source="pitr-gap"))
    done = await wait_done(api, op.name)
    (error,) = done.error.errors
    assert error.code == "INTERNAL_ERROR"
    assert "point-in-time recovery to" in error.message and "recovery ended before configured recovery target was reached" in error.message
    with pytest.raises(exceptions.NotFound):
        await api.instances.get(request={"project": PROJECT, "instance": "pitr-gap-clone"})
    listed = [o async for o in await api.operations.list(request={"project": PROJECT, "instance": "pitr-gap-clone"})]
    assert [o.name for o in listed] == [op.name]
    assert "pitr-gap-clone" not in {i.name for i in (await api.instances.list(request={"project": PROJECT})).items}
    # Stopped, but left for a person to look at; the name stays taken until someone removes the files.
    left = emulator.data_root / "instances" / "pitr-gap-clone"
    assert (left / "data" / "PG_VERSION").is_file() and not (left / "data" / "postmaster.pid").exists()
    with pytest.raises(exceptions.AlreadyExists, match="files of an earlier instance pitr-gap-clone remain"):
        await api.instances.clone(request=clone_request("pitr-gap-clone", point, source="pitr-gap"))
