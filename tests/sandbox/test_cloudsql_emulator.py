"""The Cloud SQL Admin emulator through the discovery-based REST client:
instances are real PostgreSQL clusters and backup runs real pg_basebackups."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from activities.cloudsql import api_time
from sandbox.cloudsql import LOCATION_FILE, CloudSqlEmulator
from tests.sqladmin_client import ApiFailure, SqlAdminApi, running_emulator

PROJECT = "tekutoko-prod"
NAME = "tekutoko-db"


@pytest.fixture(scope="module")
async def emulator() -> AsyncIterator[CloudSqlEmulator]:
    async with running_emulator(
        "modoru-csql-", NAME, database="tekutoko", user="tekutoko_app", password="walk-secret"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def api(emulator: CloudSqlEmulator) -> SqlAdminApi:
    return SqlAdminApi(emulator.url)


async def wait_done(api: SqlAdminApi, name: str, timeout: float = 60) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        op = await api("operations", "get", project=PROJECT, operation=name)
        if op["status"] == "DONE":
            return op
        assert asyncio.get_running_loop().time() < deadline, (
            f"operation {name} still {op['status']}"
        )
        await asyncio.sleep(0.1)


async def test_get_and_list_describe_the_instance_like_cloud_sql(api) -> None:
    instance = await api("instances", "get", project=PROJECT, instance=NAME)
    assert (instance["kind"], instance["name"], instance["project"], instance["region"]) == (
        "sql#instance",
        NAME,
        PROJECT,
        "asia-northeast1",
    )
    assert instance["databaseVersion"] == "POSTGRES_18" and instance[
        "databaseInstalledVersion"
    ].startswith("POSTGRES_18_")
    assert instance["state"] == "RUNNABLE" and instance["backendType"] == "SECOND_GEN"
    # Private IP only, as a GKE app behind the Auth Proxy's --private-ip reaches it; no port, no
    # sandbox label.
    assert [ip["type"] for ip in instance["ipAddresses"]] == ["PRIVATE"]
    assert "userLabels" not in instance["settings"]
    assert instance["connectionName"] == f"{PROJECT}:asia-northeast1:{NAME}"
    assert (
        instance["selfLink"]
        == f"https://sqladmin.googleapis.com/v1/projects/{PROJECT}/instances/{NAME}"
    )
    assert instance["settings"]["tier"].startswith("db-")
    backup = instance["settings"]["backupConfiguration"]
    assert backup["enabled"] and backup["pointInTimeRecoveryEnabled"]
    assert backup["startTime"] == "18:00" and backup["transactionLogRetentionDays"] == 7
    listed = await api("instances", "list", project=PROJECT)
    assert listed["kind"] == "sql#instancesList" and [i["name"] for i in listed["items"]] == [NAME]


async def test_the_initial_automated_backup_run_succeeded(emulator, api) -> None:
    runs = (await api("backupRuns", "list", project=PROJECT, instance=NAME))["items"]
    first = runs[-1]
    assert (
        first["status"] == "SUCCESSFUL"
        and first["type"] == "AUTOMATED"
        and first["kind"] == "sql#backupRun"
    )
    assert (
        isinstance(first["id"], str) and first["id"].isdigit()
    )  # int64 travels as a decimal string
    assert (
        api_time(first["enqueuedTime"])
        <= api_time(first["startTime"])
        <= api_time(first["endTime"])
        <= datetime.now(UTC)
    )
    assert first["instance"] == NAME and "error" not in first
    record = emulator.instance(NAME).backup_run(int(first["id"]))
    assert record.backup is not None and record.backup.start_wal_file
    assert (record.path / "PG_VERSION").is_file()


async def test_an_on_demand_backup_runs_pg_basebackup_behind_an_operation(emulator, api) -> None:
    op = await api(
        "backupRuns",
        "insert",
        project=PROJECT,
        instance=NAME,
        body={"description": "before rollback"},
    )
    assert (
        op["operationType"] == "BACKUP_VOLUME"
        and op["status"] == "PENDING"
        and op["targetId"] == NAME
    )
    done = await wait_done(api, op["name"])
    assert "error" not in done and api_time(done["insertTime"]) <= api_time(
        done["startTime"]
    ) <= api_time(done["endTime"])
    run = await api(
        "backupRuns", "get", project=PROJECT, instance=NAME, id=done["backupContext"]["backupId"]
    )
    assert (
        run["status"] == "SUCCESSFUL"
        and run["type"] == "ON_DEMAND"
        and run["description"] == "before rollback"
    )
    backup_dir = emulator.instance(NAME).backups_dir / run["id"]
    assert {"PG_VERSION", "backup_label", "backup_manifest"} <= {
        p.name for p in backup_dir.iterdir()
    }

    runs = (await api("backupRuns", "list", project=PROJECT, instance=NAME))["items"]
    assert runs[0]["id"] == run["id"] and [r["enqueuedTime"] for r in runs] == sorted(
        (r["enqueuedTime"] for r in runs), reverse=True
    )
    ops = (await api("operations", "list", project=PROJECT, instance=NAME))["items"]
    assert ops[0]["name"] == op["name"] and ops[-1]["operationType"] == "CREATE"


async def test_backups_run_one_at_a_time_and_list_page_by_page(api) -> None:
    first, second = [
        await api("backupRuns", "insert", project=PROJECT, instance=NAME, body={}) for _ in range(2)
    ]
    done = [await wait_done(api, op["name"]) for op in (first, second)]
    runs = [
        await api(
            "backupRuns", "get", project=PROJECT, instance=NAME, id=op["backupContext"]["backupId"]
        )
        for op in done
    ]
    assert all(r["status"] == "SUCCESSFUL" for r in runs) and api_time(
        runs[0]["endTime"]
    ) <= api_time(runs[1]["startTime"])
    whole = (await api("backupRuns", "list", project=PROJECT, instance=NAME))["items"]
    paged, token = [], None
    while True:
        page = await api(
            "backupRuns",
            "list",
            project=PROJECT,
            instance=NAME,
            maxResults=2,
            **({"pageToken": token} if token else {}),
        )
        paged += [r["id"] for r in page.get("items", [])]
        token = page.get("nextPageToken")
        if not token:
            break
    assert paged == [r["id"] for r in whole] and paged[:2] == [runs[1]["id"], runs[0]["id"]]
    everywhere = (await api("backupRuns", "list", project=PROJECT, instance="-"))["items"]
    assert [r["id"] for r in everywhere] == paged


async def test_a_backup_of_a_stopped_instance_fails_with_an_error(emulator, api) -> None:
    cluster = emulator.instance(NAME).cluster
    await cluster.stop()
    try:
        instance = await api("instances", "get", project=PROJECT, instance=NAME)
        assert instance["settings"]["activationPolicy"] == "NEVER"
        op = await wait_done(
            api,
            (await api("backupRuns", "insert", project=PROJECT, instance=NAME, body={}))["name"],
        )
        (error,) = op["error"]["errors"]
        assert error["kind"] == "sql#operationError" and "not running" in error["message"]
        run = await api(
            "backupRuns", "get", project=PROJECT, instance=NAME, id=op["backupContext"]["backupId"]
        )
        assert run["status"] == "FAILED" and "not running" in run["error"]["message"]
    finally:
        await cluster.start()


async def test_tests_can_age_or_fail_a_recorded_run(emulator, api) -> None:
    record = emulator.instance(NAME).backup_runs[0]
    saved = (record.status, record.end_time)
    record.status, record.end_time = "FAILED", datetime.now(UTC) - timedelta(days=2)
    try:
        run = await api("backupRuns", "get", project=PROJECT, instance=NAME, id=record.id)
        assert run["status"] == "FAILED" and api_time(run["endTime"]) < datetime.now(
            UTC
        ) - timedelta(days=1)
    finally:
        record.status, record.end_time = saved


@pytest.mark.parametrize(
    ("resource", "method", "params", "code", "message"),
    [
        (
            "instances",
            "get",
            {"project": PROJECT, "instance": "nope"},
            404,
            "The Cloud SQL instance does not exist",
        ),
        ("instances", "get", {"project": "someone-else", "instance": NAME}, 403, "not authorized"),
        (
            "backupRuns",
            "get",
            {"project": PROJECT, "instance": NAME, "id": "42"},
            404,
            "backup run does not exist",
        ),
        (
            "backupRuns",
            "insert",
            {"project": PROJECT, "instance": "nope", "body": {}},
            404,
            "instance does not exist",
        ),
        (
            "operations",
            "get",
            {"project": PROJECT, "operation": "00000000-0000-0000-0000-000000000000"},
            404,
            "operation does not exist",
        ),
    ],
)
async def test_unknown_things_are_not_found_and_other_projects_are_denied(
    api, resource, method, params, code, message
) -> None:
    with pytest.raises(ApiFailure, match=message) as failure:
        await api(resource, method, **params)
    assert failure.value.code == code


def test_the_client_refuses_a_call_without_a_required_parameter(api) -> None:
    with pytest.raises(TypeError, match="Missing required parameter"):
        api.request("instances", "get", project=PROJECT)


async def test_the_app_env_logs_in_to_a_database_the_user_owns(emulator) -> None:
    env = emulator.instance(NAME).app_env()
    assert set(env) == {
        "DATABASE_HOST",
        "DATABASE_PORT",
        "DATABASE_NAME",
        "DATABASE_USER",
        "DATABASE_PASSWORD",
    }
    async with await psycopg.AsyncConnection.connect(
        host=env["DATABASE_HOST"],
        port=env["DATABASE_PORT"],
        dbname=env["DATABASE_NAME"],
        user=env["DATABASE_USER"],
        password=env["DATABASE_PASSWORD"],
    ) as conn:
        row = await (
            await conn.execute(
                "SELECT current_user, pg_get_userbyid(datdba) FROM pg_database WHERE datname = "
                "current_database()"
            )
        ).fetchone()
    assert row == ("tekutoko_app", "tekutoko_app")


def test_the_proxy_finds_a_running_instance_by_connection_name(emulator) -> None:
    instance = emulator.instance(NAME)
    assert emulator.address_of(f"{PROJECT}:asia-northeast1:{NAME}") == (
        instance.cluster.host,
        instance.cluster.port,
    )
    assert emulator.address_of(f"{PROJECT}:us-central1:{NAME}") is None
    assert emulator.address_of(f"{PROJECT}:asia-northeast1:nope") is None


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
