"""The Artifact Registry emulator against Google's published contract: the
`artifactregistry v1` discovery document shipped in google-api-python-client.
Every route is a method of the document (same HTTP method and path), every
answer fits the document's schema exactly, and what Google refuses (an unknown
query parameter, an unknown body field, a bad enum) is refused the same way.
The client is the discovery-based one, as gcloud's own calls are made."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httplib2
import pytest
from googleapiclient import discovery as gdiscovery
from googleapiclient.errors import HttpError

from sandbox import discovery
from sandbox.artifact_registry import (
    GENERATE_ACCESS_TOKEN,
    PULL_PERMISSION,
    ROUTES,
    ArtifactRegistryEmulator,
    build_app,
)
from sandbox.scenario import RegistrySeed, Scenario
from tests.contract.exchanges import RecordingHttp, methods_used

METHODS = discovery.methods("artifactregistry", "v1")
REPO = "projects/tekutoko-prod/locations/asia-northeast1/repositories/tekutoko"
PACKAGE = f"{REPO}/packages/tekutoko-api"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def seed(nodes_can_pull: bool = True) -> RegistrySeed:
    return RegistrySeed.model_validate(
        {
            "nodes_can_pull": nodes_can_pull,
            "images": [
                {"tags": ["1.1.0"], "pushed": "30d"},
                {"tags": ["1.2.0"], "pushed": "9d"},
                {"tags": ["1.3.0", "latest"], "pushed": "2h"},
            ],
        }
    )


@pytest.fixture(scope="module")
async def emulator() -> AsyncIterator[ArtifactRegistryEmulator]:
    emulator = ArtifactRegistryEmulator(seed(), now=NOW)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def repositories(emulator: ArtifactRegistryEmulator) -> Any:
    service = gdiscovery.build(
        "artifactregistry",
        "v1",
        static_discovery=True,
        http=httplib2.Http(),
        client_options={"api_endpoint": emulator.url},
    )
    return service.projects().locations().repositories()


async def run(request: Any) -> dict[str, Any]:
    return await asyncio.to_thread(request.execute, http=RecordingHttp())


def test_every_route_is_a_method_of_the_discovery_document() -> None:
    app = build_app(ArtifactRegistryEmulator(seed()))
    served = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method not in ("*", "HEAD")
    }
    for method_id in ROUTES:
        spec = METHODS[method_id]
        assert (spec.http_method, "/" + spec.path) in served, method_id
    # the request log and a hotfix build's push belong to the practice world; IAM Credentials'
    # generateAccessToken is its own document's (tests/contract/test_registry_identity.py)
    practice = {route for route in served if route[1].startswith("/sandbox/")}
    iam = discovery.methods("iamcredentials", "v1")[GENERATE_ACCESS_TOKEN]
    assert served - practice - {(iam.http_method, "/" + iam.path)} == {
        (METHODS[m].http_method, "/" + METHODS[m].path) for m in ROUTES
    }


async def test_every_exchange_fits_the_documented_schemas(emulator) -> None:
    RecordingHttp.exchanges = []
    repos = repositories(emulator)
    await run(repos.get(name=REPO))
    packages = await run(repos.packages().list(parent=REPO))
    assert [p["name"] for p in packages["packages"]] == [PACKAGE]
    await run(repos.packages().get(name=PACKAGE))
    # What `gcloud artifacts docker images list --include-tags --sort-by=~update_time` asks for.
    versions = await run(
        repos.packages()
        .versions()
        .list(parent=PACKAGE, view="FULL", orderBy="update_time desc", pageSize=2)
    )
    assert [
        [t["name"].rsplit("/", 1)[1] for t in v["relatedTags"]] for v in versions["versions"]
    ] == [["1.3.0", "latest"], ["1.2.0"]]
    rest = await run(
        repos.packages()
        .versions()
        .list(
            parent=PACKAGE,
            view="FULL",
            orderBy="update_time desc",
            pageToken=versions["nextPageToken"],
        )
    )
    assert [v["relatedTags"][0]["name"].rsplit("/", 1)[1] for v in rest["versions"]] == [
        "1.1.0"
    ] and "nextPageToken" not in rest
    basic = await run(repos.packages().versions().list(parent=PACKAGE))
    assert all("relatedTags" not in v for v in basic["versions"])
    await run(repos.packages().versions().get(name=versions["versions"][0]["name"], view="FULL"))
    tags = await run(
        repos.packages()
        .tags()
        .list(parent=PACKAGE, filter=f'version="{versions["versions"][1]["name"]}"')
    )
    assert [t["name"].rsplit("/", 1)[1] for t in tags["tags"]] == ["1.2.0"]
    images = await run(repos.dockerImages().list(parent=REPO, orderBy="upload_time desc"))
    newest = images["dockerImages"][0]
    digest = versions["versions"][0]["name"].rsplit("/", 1)[1]
    assert (
        newest["uri"]
        == f"asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api@{digest}"
    )
    assert newest["tags"] == ["1.3.0", "latest"] and newest["uploadTime"] == (
        NOW - timedelta(hours=2)
    ).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert await run(repos.dockerImages().get(name=newest["name"])) == newest
    allowed = await run(
        repos.testIamPermissions(
            resource=REPO,
            body={"permissions": [PULL_PERMISSION, "artifactregistry.repositories.delete"]},
        )
    )
    assert allowed == {"permissions": [PULL_PERMISSION]}

    used = methods_used("artifactregistry", "v1")
    assert used == set(ROUTES)
    assert [(e["method"], e["status"]) for e in emulator.requests.since(0)][-1] == ("POST", 200)


async def test_nodes_without_the_pull_permission_are_told_so_when_asked_as_them() -> None:
    emulator = ArtifactRegistryEmulator(seed(nodes_can_pull=False))
    await emulator.start()
    try:
        ask = repositories(emulator).testIamPermissions(
            resource=REPO, body={"permissions": [PULL_PERMISSION]}
        )
        # testIamPermissions answers for its caller: the worker (no credentials here) may pull
        assert await run(ask) == {"permissions": [PULL_PERMISSION]}
        iam = gdiscovery.build(
            "iamcredentials",
            "v1",
            static_discovery=True,
            http=httplib2.Http(),
            client_options={"api_endpoint": emulator.url},
        )
        token = (
            await run(
                iam.projects()
                .serviceAccounts()
                .generateAccessToken(
                    name=f"projects/-/serviceAccounts/{emulator.node_service_account}",
                    body={"scope": ["https://www.googleapis.com/auth/cloud-platform"]},
                )
            )
        )["accessToken"]
        as_nodes = await asyncio.to_thread(ask.execute, http=Bearer(token))
        assert as_nodes == {}  # an empty TestIamPermissionsResponse: nothing allowed
        discovery.check("artifactregistry", "v1", "TestIamPermissionsResponse", as_nodes)
    finally:
        await emulator.stop()


class Bearer(httplib2.Http):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def request(self, uri, method="GET", body=None, headers=None, *args, **kwargs):
        headers = {**(headers or {}), "authorization": f"Bearer {self.token}"}
        return super().request(uri, method, body, headers, *args, **kwargs)


async def test_a_request_the_api_refuses_is_refused_the_same_way(emulator) -> None:
    repos = repositories(emulator)
    cases = [
        (
            repos.testIamPermissions(resource=REPO, body={"permissions": ["a.b.c"], "role": "x"}),
            400,
            'Unknown name "role"',
        ),
        (
            repos.testIamPermissions(
                resource=REPO, body={"permissions": "artifactregistry.repositories.get"}
            ),
            400,
            "Invalid value at 'body.permissions'",
        ),
        (
            repos.packages().get(name=f"{REPO}/packages/nope"),
            404,
            "Requested entity was not found.",
        ),
        (repos.packages().versions().list(parent=PACKAGE, orderBy="size desc"), 400, "order_by"),
        (
            repos.get(name="projects/other/locations/asia-northeast1/repositories/tekutoko"),
            403,
            "denied on resource",
        ),
    ]
    for request, code, text in cases:
        with pytest.raises(HttpError) as failure:
            await run(request)
        error = json.loads(failure.value.content)["error"]
        assert (
            failure.value.status_code == code == error["code"]
            and text in error["message"]
            and error["status"]
        )
    with pytest.raises(TypeError):  # the document's enum never leaves the client
        repos.packages().versions().list(parent=PACKAGE, view="EVERYTHING")
    for path, code, text in [
        (f"v1/{PACKAGE}/versions?view=EVERYTHING", 400, "Invalid value"),
        (f"v1/{PACKAGE}/tags?sort=name", 400, "Cannot bind query parameter"),
        (f"v1/{PACKAGE}/tags?pageSize=ten", 400, "Invalid value"),
        (f"v1/{REPO}/images", 404, "not found"),
    ]:
        with pytest.raises(urllib.error.HTTPError) as raw:
            await asyncio.to_thread(urllib.request.urlopen, emulator.url + path, timeout=10)
        error = json.loads(raw.value.read())["error"]
        assert raw.value.code == code == error["code"] and text in error["message"]


def test_the_scenario_keeps_the_registry_and_the_deployments_consistent() -> None:
    base = {
        "name": "t",
        "registry": seed().model_dump(),
        "deployments": [
            {
                "name": "tekutoko-api",
                "revisions": [
                    {
                        "image": "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/"
                        "tekutoko-api:1.2.0"
                    },
                    {
                        "image": "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/"
                        "tekutoko-api:2.0.0-missing"
                    },
                ],
            }
        ],
    }
    Scenario.model_validate(base)  # a -missing tag may be absent: the kubelet fails to pull it
    base["deployments"][0]["revisions"].append(
        {"image": "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api:9.9.9"}
    )
    with pytest.raises(ValueError, match="9.9.9 is not in registry.images"):
        Scenario.model_validate(base)
    with pytest.raises(ValueError, match="-missing are the ones absent"):
        RegistrySeed.model_validate({"images": [{"tags": ["1.0.0-missing"]}]})


def test_the_github_section_needs_the_registry_and_its_deployment() -> None:
    deployments = [
        {
            "name": "tekutoko-api",
            "revisions": [
                {
                    "image": "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/"
                    "tekutoko-api:1.2.0"
                }
            ],
        }
    ]
    with pytest.raises(ValueError, match="add a registry section"):
        Scenario.model_validate({"name": "t", "deployments": deployments, "github": {}})
    with pytest.raises(ValueError, match="'web' is not one of the scenario's deployments"):
        Scenario.model_validate(
            {
                "name": "t",
                "deployments": deployments,
                "registry": seed().model_dump(),
                "github": {"cd": {"deployment": "web"}},
            }
        )
    assert (
        Scenario.model_validate(
            {"name": "t", "deployments": deployments, "registry": seed().model_dump(), "github": {}}
        ).github.cd.file
        == "cd-production.yml"
    )
