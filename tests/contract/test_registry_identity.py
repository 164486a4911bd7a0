"""Artifact Registry's answers for whoever asks, and the image checks that rely on them.

- testIamPermissions "Tests if the caller has a list of permissions on a resource"
  (the `artifactregistry v1` discovery document): the emulator answers for the
  identity a request authenticates as. The worker (no credentials in the sandbox)
  holds the reader role and may pull; the nodes' service account may pull only
  when the scenario says `nodes_can_pull`, and is asked as through IAM
  Credentials' generateAccessToken (the `iamcredentials v1` document).
- dockerImages.list documents `orderBy` as "The field to order the results by",
  with no values: the client sends none and sorts by updateTime itself."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import httplib2
import pytest
from googleapiclient import discovery as gdiscovery
from googleapiclient.errors import HttpError
from googleapiclient.http import build_http

import activities.artifact_registry as artifact_registry
from activities.artifact_registry import ArtifactRegistry, RegistryActivities, by_update
from runbook.cd_config import RegistryConfig
from runbook.cd_models import PullCheckRequest, RegistryImage
from sandbox import discovery
from sandbox.artifact_registry import PULL_PERMISSION, ArtifactRegistryEmulator
from sandbox.scenario import RegistrySeed

REPO = "projects/tekutoko-prod/locations/asia-northeast1/repositories/tekutoko"
IMAGE = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api"
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def seed(nodes_can_pull: bool) -> RegistrySeed:
    return RegistrySeed.model_validate(
        {
            "nodes_can_pull": nodes_can_pull,
            "images": [
                {"tags": ["1.2.0"], "pushed": "9d"},
                {"package": "aaa-worker", "tags": ["9.9.9"], "pushed": "1m"},
                {"tags": ["1.1.0"], "pushed": "30d"},
                {"tags": ["1.3.0", "latest"], "pushed": "2h"},
                {"tags": ["1.2.1"], "pushed": "5d"},
            ],
        }
    )


@pytest.fixture(params=[True, False], ids=["nodes-can-pull", "nodes-cannot-pull"])
async def emulator(request) -> AsyncIterator[ArtifactRegistryEmulator]:
    emulator = ArtifactRegistryEmulator(seed(request.param), now=NOW)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def refusing() -> AsyncIterator[ArtifactRegistryEmulator]:
    emulator = ArtifactRegistryEmulator(seed(False), now=NOW)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


class Bearer(httplib2.Http):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def request(self, uri, method="GET", body=None, headers=None, *args, **kwargs):
        headers = {**(headers or {}), "authorization": f"Bearer {self.token}"}
        return super().request(uri, method, body, headers, *args, **kwargs)


def built(api: str, version: str, emulator: ArtifactRegistryEmulator) -> Any:
    return gdiscovery.build(
        api,
        version,
        static_discovery=True,
        http=httplib2.Http(),
        client_options={"api_endpoint": emulator.url},
    )


async def run(request: Any, http: Any = None) -> dict[str, Any]:
    return await asyncio.to_thread(request.execute, http=http or httplib2.Http())


def ask_pull(emulator: ArtifactRegistryEmulator) -> Any:
    return (
        built("artifactregistry", "v1", emulator)
        .projects()
        .locations()
        .repositories()
        .testIamPermissions(resource=REPO, body={"permissions": [PULL_PERMISSION]})
    )


def token_request(emulator: ArtifactRegistryEmulator, account: str, **body) -> Any:
    return (
        built("iamcredentials", "v1", emulator)
        .projects()
        .serviceAccounts()
        .generateAccessToken(
            name=f"projects/-/serviceAccounts/{account}", body={"scope": [CLOUD_PLATFORM], **body}
        )
    )


async def refused(request: Any, http: Any = None) -> tuple[int, dict[str, Any]]:
    with pytest.raises(HttpError) as failure:
        await run(request, http)
    return failure.value.status_code, json.loads(failure.value.content)["error"]


# -- the emulator ---------------------------------------------------------------------------


async def test_test_iam_permissions_answers_for_the_caller(emulator) -> None:
    # the worker (no credentials here) holds the reader role: it may pull, whatever the nodes may
    assert await run(ask_pull(emulator)) == {"permissions": [PULL_PERMISSION]}
    answer = await run(token_request(emulator, emulator.node_service_account))
    discovery.check("iamcredentials", "v1", "GenerateAccessTokenResponse", answer)
    as_nodes = await run(ask_pull(emulator), Bearer(answer["accessToken"]))
    discovery.check("artifactregistry", "v1", "TestIamPermissionsResponse", as_nodes)
    assert as_nodes == ({"permissions": [PULL_PERMISSION]} if emulator.seed.nodes_can_pull else {})


async def test_a_token_it_never_issued_is_unauthenticated(refusing) -> None:
    status, error = await refused(ask_pull(refusing), Bearer("ya29.made-up"))
    assert (status, error["status"]) == (401, "UNAUTHENTICATED")
    assert "invalid authentication credentials" in error["message"]


async def test_impersonation_is_refused_as_iam_credentials_refuses_it(refusing) -> None:
    refusing.worker_can_impersonate = False
    status, error = await refused(token_request(refusing, refusing.node_service_account))
    assert (status, error["status"]) == (403, "PERMISSION_DENIED")
    assert "iam.serviceAccounts.getAccessToken" in error["message"]
    status, error = await refused(
        token_request(refusing, "nobody@tekutoko-prod.iam.gserviceaccount.com")
    )
    assert status == 404 and "Gaia id not found" in error["message"]
    status, error = await refused(
        token_request(refusing, refusing.node_service_account, lifetime=300)
    )
    assert status == 400  # the document's Duration is a string ("300s")


# -- the client -----------------------------------------------------------------------------


def config(emulator: ArtifactRegistryEmulator, **extra) -> RegistryConfig:
    return RegistryConfig(
        project="tekutoko-prod",
        repository="tekutoko",
        package="tekutoko-api",
        **extra,
    )


def client(emulator: ArtifactRegistryEmulator, **kwargs) -> ArtifactRegistry:
    return ArtifactRegistry(emulator.url, build_http, iam_endpoint=emulator.url, **kwargs)


async def test_images_are_sorted_by_update_time_here_not_by_an_undocumented_order_by(
    refusing, monkeypatch
) -> None:
    monkeypatch.setattr(artifact_registry, "PAGE_SIZE", 2)  # several pages
    mark = refusing.requests.last_seq
    newest, found = await client(refusing).newest_images(config(refusing), limit=3, tag="1.1.0")
    assert [i.tags for i in newest] == [["1.3.0", "latest"], ["1.2.1"], ["1.2.0"]]
    assert found is not None and found.tags == ["1.1.0"]
    listed = [e for e in refusing.requests.since(mark) if e["path"].endswith("/dockerImages")]
    assert len(listed) == 3  # every page: the server's order says nothing
    assert all("orderBy" not in e["query"] and "pageSize=2" in e["query"] for e in listed)


async def test_a_tag_is_looked_up_until_found(refusing, monkeypatch) -> None:
    monkeypatch.setattr(artifact_registry, "PAGE_SIZE", 2)
    mark = refusing.requests.last_seq
    found = await client(refusing).tagged(config(refusing), "1.2.0")
    assert found is not None and found.uri.startswith(IMAGE + "@")
    assert len(refusing.requests.since(mark)) == 2  # stopped at the page carrying it
    assert await client(refusing).tagged(config(refusing), "0.0.1") is None


def test_ties_keep_the_servers_order_and_undated_images_come_last() -> None:
    at = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    images = [
        RegistryImage(uri="a", updated=None, uploaded=None),
        RegistryImage(uri="b", updated=at),
        RegistryImage(uri="c", updated=at + dt.timedelta(days=1)),
        RegistryImage(uri="d", updated=at),
        RegistryImage(uri="e", uploaded=at + dt.timedelta(days=2)),
    ]
    assert [i.uri for i in by_update(images)] == ["e", "c", "b", "d", "a"]


async def diagnose(emulator: ArtifactRegistryEmulator, **extra):
    return await RegistryActivities(client(emulator, **extra.pop("kw", {}))).diagnose_pull(
        PullCheckRequest(registry=config(emulator, **extra), images=[f"{IMAGE}:2.0.0-missing"])
    )


async def test_without_the_nodes_account_the_worker_says_it_checked_itself(refusing) -> None:
    diagnosis = await diagnose(
        refusing, kw={"caller": "modoru-worker@tekutoko-prod.iam.gserviceaccount.com"}
    )
    assert diagnosis.can_pull is None  # the nodes' permission is not known
    detail = diagnosis.permission_detail
    assert (
        "granted to this worker's own identity (modoru-worker@tekutoko-prod" in detail
        and "answers for its caller" in detail
        and "nodes' service account may pull is not known" in detail
        and "registry.node_service_account" in detail
    ), detail
    assert "tag 2.0.0-missing is not in Artifact Registry" in diagnosis.verdicts[0].detail


async def test_the_nodes_permission_is_asked_as_the_nodes(emulator) -> None:
    diagnosis = await diagnose(emulator, node_service_account=emulator.node_service_account)
    account = emulator.node_service_account
    if emulator.seed.nodes_can_pull:
        assert diagnosis.can_pull is True
        assert f"granted to the nodes' service account {account}" in diagnosis.permission_detail
    else:
        assert diagnosis.can_pull is False
        assert (
            f"denied to the nodes' service account {account} (asked as it); grant it "
            "roles/artifactregistry.reader" in diagnosis.permission_detail
        )


async def test_when_the_worker_may_not_act_as_the_nodes_it_says_so(refusing) -> None:
    refusing.worker_can_impersonate = False
    diagnosis = await diagnose(refusing, node_service_account=refusing.node_service_account)
    detail = diagnosis.permission_detail
    assert diagnosis.can_pull is None
    assert (
        "granted to this worker's own identity" in detail
        and "could not ask as the nodes' service account" in detail
        and "roles/iam.serviceAccountTokenCreator" in detail
    ), detail


def test_the_nodes_account_is_an_optional_service_account_email() -> None:
    assert RegistryConfig(project="p", repository="r", package="x").node_service_account is None
    assert RegistryConfig(
        project="p",
        repository="r",
        package="x",
        node_service_account="123456789-compute@developer.gserviceaccount.com",
    ).node_service_account.endswith("@developer.gserviceaccount.com")
    with pytest.raises(ValueError):
        RegistryConfig(project="p", repository="r", package="x", node_service_account="me")
