"""The Cloud SQL emulator against Google's published contract: the `sqladmin v1`
discovery document shipped in google-api-python-client. Every route it serves
is a method of the document (same HTTP method and path), every body it accepts
or answers fits the document's schema exactly (no unknown field, no wrong
type), and what Google refuses it refuses the same way."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httplib2
import pytest
from googleapiclient import discovery as gdiscovery

from sandbox import discovery
from sandbox.cloudsql import CloudSqlEmulator
from sandbox.cloudsql_rest import ROUTES, build_app
from tests.contract.exchanges import RecordingHttp, methods_used
from tests.sqladmin_client import ApiFailure, SqlAdminApi, running_emulator

PROJECT, NAME = "tekutoko-prod", "contract-db"
METHODS = discovery.methods("sqladmin", "v1")


@pytest.fixture
async def emulator() -> AsyncIterator[CloudSqlEmulator]:
    """An emulator of each test's own (a second or two to start): what one test creates, such as
    a clone, is never another's to find or to collide with."""
    async with running_emulator(
        "modoru-contract-", NAME, database="shop", user="shop_app", password="contract-secret"
    ) as running:
        yield running


def test_every_route_is_a_method_of_the_discovery_document(tmp_path) -> None:
    app = build_app(CloudSqlEmulator(tmp_path / "state"))  # built, never started
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "*" and not route.resource.canonical.startswith("/sandbox/")
    }  # fault injection and the request log
    for method_id in ROUTES:
        spec = METHODS[method_id]
        assert (spec.http_method, "/" + spec.path) in served, method_id
    assert len(served) == len(ROUTES)
    # The document says getLatestRecoveryTime is a GET (some guides show POST).
    assert METHODS["sql.projects.instances.getLatestRecoveryTime"].http_method == "GET"


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "sql#backupRun", "bogus": 1},
        {"id": 5},  # int64 travels as a string
        {"id": "five"},
        {"startTime": "2026-11-28 10:00"},  # no offset
        {"error": {"code": "X", "unknown": True}},
        {"status": "NOT_A_STATUS"},
    ],
)
def test_the_schema_check_refuses_what_google_refuses(bad) -> None:
    with pytest.raises(discovery.SchemaViolation):
        discovery.check("sqladmin", "v1", "BackupRun", bad)


async def test_every_exchange_fits_the_documented_schemas(emulator) -> None:
    RecordingHttp.exchanges = []
    service = gdiscovery.build(
        "sqladmin",
        "v1",
        static_discovery=True,
        http=httplib2.Http(),
        client_options={"api_endpoint": emulator.url},
    )

    async def run(request) -> dict:
        return await asyncio.to_thread(request.execute, http=RecordingHttp())

    async def done(operation: dict, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            seen = await run(service.operations().get(project=PROJECT, operation=operation["name"]))
            if seen["status"] == "DONE":
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"operation {operation['name']} ({operation.get('operationType')}) not DONE "
                    f"after {timeout} s; last seen {seen['status']}"
                )
            await asyncio.sleep(0.1)

    await run(service.instances().get(project=PROJECT, instance=NAME))
    await run(service.instances().list(project=PROJECT))
    runs = await run(service.backupRuns().list(project=PROJECT, instance=NAME, maxResults=5))
    await run(service.backupRuns().get(project=PROJECT, instance=NAME, id=runs["items"][0]["id"]))
    backup = await run(
        service.backupRuns().insert(
            project=PROJECT,
            instance=NAME,
            body={"kind": "sql#backupRun", "description": "contract"},
        )
    )
    await done(backup)
    window = await run(
        service.projects().instances().getLatestRecoveryTime(project=PROJECT, instance=NAME)
    )
    clone = await run(
        service.instances().clone(
            project=PROJECT,
            instance=NAME,
            body={
                "cloneContext": {
                    "kind": "sql#cloneContext",
                    "destinationInstanceName": "contract-clone",
                    "pointInTime": window["latestRecoveryTime"],
                }
            },
        )
    )
    await done(clone)
    await run(service.operations().list(project=PROJECT, instance=NAME))

    used = methods_used("sqladmin", "v1")
    assert used == set(ROUTES)
    assert {i.name for i in emulator.instances} == {NAME, "contract-clone"}


async def test_a_request_the_api_refuses_is_refused_the_same_way(emulator) -> None:
    api = SqlAdminApi(emulator.url)
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    cases = [
        (
            api(
                "instances",
                "clone",
                project=PROJECT,
                instance=NAME,
                body={
                    "cloneContext": {
                        "destinationInstanceName": "x1",
                        "pointInTime": now,
                        "speed": "fast",
                    }
                },
            ),
            400,
            "INVALID_ARGUMENT",
            "Unknown name \"speed\" at 'body.clone_context': Cannot find field.",
        ),
        (
            api(
                "instances",
                "clone",
                project=PROJECT,
                instance=NAME,
                body={"cloneContext": {"destinationInstanceName": NAME, "pointInTime": now}},
            ),
            409,
            "ALREADY_EXISTS",
            "already exists",
        ),
        (
            api("backupRuns", "insert", project=PROJECT, instance=NAME, body={"id": 12}),
            400,
            "INVALID_ARGUMENT",
            "Invalid value at 'body.id' (TYPE_INT64), 12",
        ),
    ]
    for call, code, status, message in cases:
        with pytest.raises(ApiFailure) as failure:
            await call
        assert (failure.value.code, failure.value.status) == (
            code,
            status,
        ) and message in failure.value.message
    # A missing required parameter never leaves the client; a path without it is not a method of the
    # API.
    with pytest.raises(TypeError, match="Missing required parameter"):
        api.request("instances", "clone", project=PROJECT, body={})
    for path, code, text in [
        (
            f"v1/projects/{PROJECT}/instances/{NAME}/backupRuns?orderBy=id",
            400,
            "Cannot bind query parameter",
        ),
        (f"v1/projects/{PROJECT}/instances//clone", 404, "not found"),
        (f"v1/projects/{PROJECT}/instances/{NAME}/backupRuns?maxResults=ten", 400, "Invalid value"),
    ]:
        with pytest.raises(urllib.error.HTTPError) as raw:
            await asyncio.to_thread(urllib.request.urlopen, emulator.url + path, timeout=10)
        error = json.loads(raw.value.read())["error"]
        assert (
            raw.value.code == code == error["code"] and text in error["message"] and error["status"]
        )
    # Nothing refused was made: the emulator holds its one instance, no clone of it.
    assert {i.name for i in emulator.instances} == {NAME}
