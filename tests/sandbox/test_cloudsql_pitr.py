"""Point-in-time recovery in the Cloud SQL emulator through the discovery-based
REST client: GetLatestRecoveryTime and Clone restore a real base backup and replay
the source's real WAL archive into a new instance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from activities.cloudsql import api_time
from sandbox.cloudsql import CloudSqlEmulator
from tests.sqladmin_client import ApiFailure, SqlAdminApi, running_emulator

PROJECT = "tekutoko-prod"
SOURCE = "pitr-src"
CLONE = "pitr-src-clone"


@pytest.fixture(scope="module")
async def emulator() -> AsyncIterator[CloudSqlEmulator]:
    async with running_emulator(
        "modoru-pitr-", SOURCE, database="shop", user="shop_app", password="pitr-secret"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def api(emulator: CloudSqlEmulator) -> SqlAdminApi:
    return SqlAdminApi(emulator.url)


async def sql_rows(
    env: dict[str, str], query: str = "SELECT item FROM orders ORDER BY id"
) -> list[str]:
    async with await psycopg.AsyncConnection.connect(
        host=env["DATABASE_HOST"],
        port=env["DATABASE_PORT"],
        dbname=env["DATABASE_NAME"],
        user=env["DATABASE_USER"],
        password=env["DATABASE_PASSWORD"],
        autocommit=True,
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


async def wait_done(api: SqlAdminApi, name: str, timeout: float = 120) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        op = await api("operations", "get", project=PROJECT, operation=name)
        if op["status"] == "DONE":
            return op
        assert asyncio.get_running_loop().time() < deadline, (
            f"operation {name} still {op['status']}"
        )
        await asyncio.sleep(0.1)


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def clone(
    api: SqlAdminApi, destination: str, when: datetime | None, source: str = SOURCE
) -> dict:
    context: dict = {"destinationInstanceName": destination}
    if when is not None:
        context["pointInTime"] = stamp(when)
    return await api(
        "instances", "clone", project=PROJECT, instance=source, body={"cloneContext": context}
    )


async def window_of(api: SqlAdminApi, instance: str) -> dict:
    return await api(
        "projects.instances", "getLatestRecoveryTime", project=PROJECT, instance=instance
    )


async def operations_of(api: SqlAdminApi, instance: str | None = None) -> list[dict]:
    found = await api(
        "operations", "list", project=PROJECT, **({"instance": instance} if instance else {})
    )
    return found.get("items", [])


def files(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


async def test_the_recovery_window_runs_from_the_oldest_backup_to_now(emulator, api, point) -> None:
    before = datetime.now(UTC)
    window = await window_of(api, SOURCE)
    (backup,) = emulator.instance(SOURCE).successful_backups()
    assert window["kind"] == "sql#getLatestRecoveryTime"
    earliest, latest = (
        api_time(window["earliestRecoveryTime"]),
        api_time(window["latestRecoveryTime"]),
    )
    assert abs(earliest - backup.end_time) < timedelta(milliseconds=1)
    assert earliest < point < latest
    assert before - timedelta(milliseconds=1) <= latest <= datetime.now(UTC)


async def test_a_clone_to_a_point_in_time_holds_the_data_of_that_moment(
    emulator, api, point
) -> None:
    source = emulator.instance(SOURCE)
    op = await clone(api, CLONE, point)
    assert op["operationType"] == "CLONE" and op["status"] == "PENDING"
    assert op["targetId"] == CLONE and op["targetLink"].endswith(f"/instances/{CLONE}")
    # Taken after the request, which archived the source's latest WAL.
    archive_before, backups_before, port_before = (
        files(source.archive_dir),
        files(source.backups_dir),
        source.cluster.port,
    )
    # While it runs, the new name is taken and its operation is listed under it (a retried client
    # finds it there).
    with pytest.raises(ApiFailure) as taken:
        await clone(api, CLONE, point)
    assert (taken.value.code, taken.value.status) == (409, "ALREADY_EXISTS")
    running = await operations_of(api, CLONE)
    assert [o["name"] for o in running] == [op["name"]] and running[0]["status"] != "DONE"

    done = await wait_done(api, op["name"])
    assert "error" not in done and api_time(done["startTime"]) <= api_time(done["endTime"])
    assert (await emulator.wait_operation(op["name"])).error is None
    made = emulator.instance(CLONE)
    assert await sql_rows(made.app_env()) == ["kept-1", "kept-2", "kept-3"]
    # Promoted: it takes writes, on its own port and into its own archive.
    await sql_rows(made.app_env(), "INSERT INTO orders (item) VALUES ('written-on-the-clone')")
    assert made.cluster.port != source.cluster.port and made.archive_dir != source.archive_dir
    assert any(name.startswith("00000002") for name in made.cluster.archived_wal())

    # The source is untouched: same data, still running on the same port, its archive and backups as
    # they were.
    assert await sql_rows(source.app_env()) == ["after-1"]
    assert source.cluster.running and source.cluster.port == port_before
    archive_after = files(source.archive_dir)
    assert {name: archive_after[name] for name in archive_before} == archive_before
    assert not [name for name in archive_after if not name.startswith("00000001")]
    assert files(source.backups_dir) == backups_before

    described = await api("instances", "get", project=PROJECT, instance=CLONE)
    assert described["connectionName"] == f"{PROJECT}:asia-northeast1:{CLONE}"
    assert emulator.address_of(described["connectionName"]) == (
        made.cluster.host,
        made.cluster.port,
    )
    assert described["settings"]["backupConfiguration"]["pointInTimeRecoveryEnabled"]
    assert described["databaseVersion"] == "POSTGRES_18"
    listed = await api("instances", "list", project=PROJECT)
    assert {i["name"] for i in listed["items"]} >= {SOURCE, CLONE}
    assert [o["name"] for o in await operations_of(api, CLONE)] == [op["name"]]
    # A new clone has no backup of its own yet, so nothing to recover it from.
    with pytest.raises(ApiFailure, match="no successful backup") as refused:
        await window_of(api, CLONE)
    assert (refused.value.code, refused.value.status) == (400, "FAILED_PRECONDITION")


async def test_bad_clone_requests_are_refused_and_create_nothing(emulator, api, point) -> None:
    names = {i.name for i in emulator.instances}
    ops = len(await operations_of(api))
    dirs = set((emulator.data_root / "instances").iterdir())
    window = await window_of(api, SOURCE)
    earliest = api_time(window["earliestRecoveryTime"])

    refusals = [
        (
            clone(api, "too-early", earliest - timedelta(hours=1)),
            400,
            "outside the recovery window of instance " + SOURCE,
        ),
        (
            clone(api, "in-the-future", datetime.now(UTC) + timedelta(hours=1)),
            400,
            "outside the recovery window",
        ),
        (clone(api, "no-time", None), 400, "pointInTime is required"),
        (clone(api, SOURCE, point), 409, "already exists"),
        (clone(api, "Bad_Name", point), 400, "not a valid instance name"),
        (clone(api, "", point), 400, "destinationInstanceName"),
        (
            clone(api, "from-nowhere", point, source="no-such-instance"),
            404,
            "The Cloud SQL instance does not exist",
        ),
        (window_of(api, "no-such-instance"), 404, "The Cloud SQL instance does not exist"),
        (
            api(
                "instances",
                "clone",
                project=PROJECT,
                instance=SOURCE,
                body={
                    "cloneContext": {"destinationInstanceName": "typo", "pointInTme": stamp(point)}
                },
            ),
            400,
            "Unknown name \"pointInTme\" at 'body.clone_context'",
        ),
        (
            api(
                "instances",
                "clone",
                project=PROJECT,
                instance=SOURCE,
                body={
                    "cloneContext": {
                        "destinationInstanceName": "bad-time",
                        "pointInTime": "yesterday",
                    }
                },
            ),
            400,
            "Invalid value at 'body.clone_context.point_in_time'",
        ),
    ]
    for call, code, message in refusals:
        with pytest.raises(ApiFailure, match=message) as failure:
            await call
        assert failure.value.code == code, failure.value

    assert {i.name for i in emulator.instances} == names
    assert len(await operations_of(api)) == ops
    assert set((emulator.data_root / "instances").iterdir()) == dirs


async def test_without_pitr_there_is_no_recovery_window_and_no_clone(emulator, api, point) -> None:
    source = emulator.instance(SOURCE)
    source.pitr_enabled = False
    try:
        with pytest.raises(
            ApiFailure, match=f"Point-in-time recovery is not enabled for instance {SOURCE}"
        ):
            await window_of(api, SOURCE)
        with pytest.raises(ApiFailure, match="Point-in-time recovery is not enabled"):
            await clone(api, "no-pitr-clone", point)
    finally:
        source.pitr_enabled = True
    assert "no-pitr-clone" not in {i.name for i in emulator.instances}
    assert not (emulator.data_root / "instances" / "no-pitr-clone").exists()


async def test_a_clone_that_cannot_replay_the_archive_fails_and_keeps_its_files(
    emulator, api
) -> None:
    broken = await emulator.add_instance(
        "pitr-gap", database="shop", user="shop_app", password="gap-secret", initial_backup=False
    )
    with pytest.raises(ApiFailure, match="no successful backup"):
        await window_of(api, "pitr-gap")
    run = await emulator.take_backup("pitr-gap")
    point = await write_history(broken.app_env())
    await window_of(api, "pitr-gap")
    # Lose every segment archived since the backup began: the replay cannot get past the backup.
    assert run.backup is not None
    lost = [
        p
        for p in broken.archive_dir.iterdir()
        if len(p.name) == 24 and p.name > run.backup.start_wal_file
    ]
    assert lost
    for path in lost:
        path.unlink()

    op = await clone(api, "pitr-gap-clone", point, source="pitr-gap")
    done = await wait_done(api, op["name"])
    (error,) = done["error"]["errors"]
    assert error["code"] == "INTERNAL_ERROR"
    assert (
        "point-in-time recovery to" in error["message"]
        and "recovery ended before configured recovery target was reached" in error["message"]
    )
    with pytest.raises(ApiFailure) as missing:
        await api("instances", "get", project=PROJECT, instance="pitr-gap-clone")
    assert missing.value.code == 404
    assert [o["name"] for o in await operations_of(api, "pitr-gap-clone")] == [op["name"]]
    assert "pitr-gap-clone" not in {
        i["name"] for i in (await api("instances", "list", project=PROJECT))["items"]
    }
    # Stopped, but left for a person to look at; the name stays taken until someone removes the
    # files.
    left = emulator.data_root / "instances" / "pitr-gap-clone"
    assert (left / "data" / "PG_VERSION").is_file() and not (
        left / "data" / "postmaster.pid"
    ).exists()
    with pytest.raises(ApiFailure, match="files of an earlier instance pitr-gap-clone remain"):
        await clone(api, "pitr-gap-clone", point, source="pitr-gap")
