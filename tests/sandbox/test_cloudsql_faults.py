"""Fault injection on the Cloud SQL Admin emulator, seen through the client
modoru uses (`activities.sqladmin.SqlAdmin`, the discovery-based REST client):
injected 429/500/503 come back in Google's JSON error shape, the client's own
retries get through a passing fault, a lasting one becomes one plain retryable
line, and every request is in the emulator's log."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator

import pytest
from googleapiclient.http import build_http
from temporalio.exceptions import ApplicationError

from activities.sqladmin import SqlAdmin
from sandbox.cloudsql import CloudSqlEmulator
from sandbox.cloudsql_rest import _collection
from tests.sqladmin_client import running_emulator

PROJECT, NAME = "tekutoko-prod", "tekutoko-db"


@pytest.fixture(scope="module")
async def emulator() -> AsyncIterator[CloudSqlEmulator]:
    async with running_emulator(
        "modoru-csql-faults-",
        NAME,
        database="tekutoko",
        user="tekutoko_app",
        password="walk-secret",
    ) as running:
        yield running


def _admin(emulator: CloudSqlEmulator, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{emulator.url}sandbox/{path}",
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def admin(emulator: CloudSqlEmulator, path: str, body: dict | None = None) -> dict:
    """The emulator runs on this test's loop: blocking calls go to a thread."""
    return await asyncio.to_thread(_admin, emulator, path, body)


async def raw_get(url: str) -> tuple[int, dict, dict]:
    return await asyncio.to_thread(_raw_get, url)


def _raw_get(url: str) -> tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_paths_name_their_collection() -> None:
    assert _collection(f"/v1/projects/{PROJECT}/instances/{NAME}") == "instances"
    assert _collection(f"/v1/projects/{PROJECT}/instances/{NAME}/backupRuns") == "backupRuns"
    assert _collection(f"/v1/projects/{PROJECT}/instances/{NAME}/backupRuns/7") == "backupRuns"
    assert _collection(f"/v1/projects/{PROJECT}/instances/{NAME}/clone") == "instances"
    assert _collection(f"/v1/projects/{PROJECT}/operations/abc") == "operations"
    assert (
        _collection(f"/v1/projects/{PROJECT}/instances/{NAME}/getLatestRecoveryTime") == "instances"
    )


async def test_injected_faults_read_as_googles_errors(emulator: CloudSqlEmulator) -> None:
    url = f"{emulator.url}v1/projects/{PROJECT}/instances/{NAME}"
    try:
        for status, code, reason in (
            (429, "RESOURCE_EXHAUSTED", "rateLimitExceeded"),
            (500, "INTERNAL", "backendError"),
            (503, "UNAVAILABLE", "backendError"),
        ):
            await admin(
                emulator,
                "faults",
                {
                    "rules": [
                        {
                            "resource": "instances",
                            "verb": "get",
                            "status": status,
                            "retry_after_seconds": 2,
                        }
                    ]
                },
            )
            got, headers, body = await raw_get(url)
            assert (
                got == status
                and body["error"]["code"] == status
                and body["error"]["status"] == code
            )
            assert body["error"]["errors"][0]["reason"] == reason and body["error"]["message"]
            assert (headers.get("Retry-After") == "2") is (status == 429)
        # A rule for another collection or verb leaves the call alone.
        await admin(
            emulator,
            "faults",
            {
                "rules": [
                    {"resource": "backupRuns", "status": 503},
                    {"resource": "instances", "verb": "post", "status": 503},
                ]
            },
        )
        assert (await raw_get(url))[0] == 200
    finally:
        await admin(emulator, "faults", {"rules": []})


async def test_the_client_gets_through_a_passing_fault_and_names_a_lasting_one(
    emulator: CloudSqlEmulator,
) -> None:
    client = SqlAdmin(emulator.url, build_http)
    mark = (await admin(emulator, "requests?since=0"))["last"]
    try:
        await admin(
            emulator,
            "faults",
            {"rules": [{"resource": "instances", "verb": "get", "status": 503, "times": 1}]},
        )
        assert (await client.instance(PROJECT, NAME))["name"] == NAME  # the client's own retry
        statuses = [
            e["status"]
            for e in (await admin(emulator, f"requests?since={mark}"))["entries"]
            if e["resource"] == "instances"
        ]
        assert statuses == [503, 200]
        await admin(
            emulator,
            "faults",
            {"rules": [{"resource": "backupRuns", "status": 429, "retry_after_seconds": 0}]},
        )
        with pytest.raises(ApplicationError) as failure:
            await client.backup_runs(PROJECT, NAME)
        assert not failure.value.non_retryable and failure.value.type == "CloudSqlTransient"
        assert failure.value.message.startswith(
            f"Cloud SQL Admin API 429 RESOURCE_EXHAUSTED while listing backup runs of {NAME}: "
            "Quota exceeded"
        )
        assert failure.value.message.endswith("; retrying") and "\n" not in failure.value.message
    finally:
        await admin(emulator, "faults", {"rules": []})


async def test_a_bad_rule_is_refused(emulator: CloudSqlEmulator) -> None:
    request = urllib.request.Request(
        f"{emulator.url}sandbox/faults",
        data=json.dumps({"rules": [{"status": 404}]}).encode(),
        method="PUT",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
    assert refused.value.code == 400
