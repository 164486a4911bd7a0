"""The runbook's method 3 for real: restore from the production pipeline's
backup artifact (downloaded through the GitHub emulator) and from a modoru
backup ConfigMap; a manifest for another object is refused with nothing
changed; an image that cannot be pulled is diagnosed with Artifact Registry's
verdicts in the failure notice."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import yaml
from temporalio.client import WorkflowFailureError

from runbook.cd_models import ManifestSource
from runbook.models import BackupRequest, Phase
from runbook.repair_models import RestoreRequest, RestoreResult, RestoreStatus
from tests.conftest import RunningSandbox, fast_scenario
from tests.integration.cd_stack import IMAGE, CdStack, cd_entry, cd_stack
from tests.waiting import phase_of, until
from workflows.restore import RestoreWorkflow

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(dev_env, sandbox: RunningSandbox, tmp_path) -> AsyncIterator[CdStack]:
    async for running in cd_stack(dev_env, sandbox, tmp_path, cd_entry(tmp_path)):
        yield running


async def restore(
    stack: CdStack, source: ManifestSource, manifest: str = "", approve: bool = True
) -> tuple[RestoreResult | None, str | None]:
    request = RestoreRequest(
        deployment="tekutoko-api",
        source=source,
        manifest=manifest,
        reason="the cluster state is wrong",
        requested_by="oncall",
        language="en",
    )
    handle = await stack.client.start_workflow(
        RestoreWorkflow.run, request, id=f"restore-{uuid.uuid4().hex[:8]}", task_queue=stack.queue
    )
    if approve:
        status = await until(
            "the restore to await approval (or to end)",
            lambda: handle.query(RestoreWorkflow.status),
            lambda s: s.phase in (Phase.AWAITING_APPROVAL, Phase.FAILED, Phase.COMPLETED),
            phase_of,
            60,
        )
        if status.phase is Phase.AWAITING_APPROVAL:
            assert status.check is not None and any(
                line.startswith("+") and "image:" in line for line in status.check.diff
            )
            assert await stack.approve(handle, model=RestoreStatus) is Phase.AWAITING_APPROVAL
    try:
        return await asyncio.wait_for(handle.result(), 120), None
    except WorkflowFailureError as exc:
        return None, exc.cause.message


def backup_artifact_of(stack: CdStack, tag: str) -> str:
    """The backup the pipeline took before it deployed `tag` (the Deployment as it was)."""
    github = stack.sandbox.sandbox.github
    return stack.sandbox.call(
        lambda: next(
            a.name
            for a in github.artifacts.values()
            if github.runs[a.run_id].inputs.get("tag") == tag
        )
    )


async def test_restore_from_the_pipelines_backup_artifact(stack: CdStack) -> None:
    name = backup_artifact_of(stack, "1.3.0")  # taken while 1.2.0 was live
    result, error = await restore(stack, ManifestSource(kind="artifact", name=name))
    assert error is None and result.status.phase is Phase.COMPLETED, error
    assert stack.live_image() == f"{IMAGE}:1.2.0"
    live = json.loads(stack.sandbox.kubectl("get", "deployment/tekutoko-api", "-o", "json").stdout)
    applied = json.loads(
        live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    )
    assert (
        "resourceVersion" not in applied["metadata"] and "uid" not in applied["metadata"]
    )  # server-set fields stripped
    assert [n["kind"] for n in stack.notices()] == ["approval_needed", "start", "complete"]
    assert result.status.verification.ok and name in result.status.fetched


async def test_restore_from_a_modoru_backup_configmap(stack: CdStack) -> None:
    stack.sandbox.kubectl(
        "set", "image", "deployment/tekutoko-api", f"api={IMAGE}:1.2.0"
    )  # a healthy state, then method 1's backup of it
    stack.sandbox.kubectl("rollout", "status", "deployment/tekutoko-api", "--timeout=60s")
    backup = await stack.ops.backup_deployment(
        BackupRequest(
            namespace="default",
            deployment="tekutoko-api",
            from_revision=4,
            backup_name="modoru-backup-tekutoko-api-r4-0a1b2c3d",
        )
    )
    assert backup.created
    stack.sandbox.kubectl(
        "set", "image", "deployment/tekutoko-api", f"api={IMAGE}:1.3.1-flaky"
    )  # the wrong state
    stack.sandbox.kubectl("rollout", "status", "deployment/tekutoko-api", "--timeout=60s")
    result, error = await restore(
        stack, ManifestSource(kind="backup", name="modoru-backup-tekutoko-api-r4-0a1b2c3d")
    )
    assert error is None and result.status.phase is Phase.COMPLETED, error
    assert stack.live_image() == f"{IMAGE}:1.2.0"


async def test_a_manifest_of_another_deployment_is_refused_and_nothing_changes(
    stack: CdStack,
) -> None:
    manifest = yaml.safe_load(
        stack.sandbox.kubectl("get", "deployment/tekutoko-api", "-o", "yaml").stdout
    )
    manifest["metadata"]["name"] = "walks-api"
    manifest["spec"]["selector"] = {"matchLabels": {"app": "walks-api"}}
    mark = stack.sandbox.mark()
    result, error = await restore(
        stack,
        ManifestSource(kind="file", name="walks-api.yaml"),
        yaml.safe_dump(manifest),
        approve=False,
    )
    assert (
        result is None
        and "it is deployment/walks-api, not deployment/tekutoko-api" in error
        and "selector" in error
        and "nothing was changed" in error
    )
    assert [
        e
        for e in stack.sandbox.requests_since(mark)
        if e["verb"] in ("create", "update", "patch", "delete")
    ] == []


@pytest.fixture
async def no_pull_stack(dev_env, tmp_path) -> AsyncIterator[CdStack]:
    scenario = fast_scenario()
    running = RunningSandbox(
        scenario.model_copy(
            update={"registry": scenario.registry.model_copy(update={"nodes_can_pull": False})}
        ),
        tmp_path / "sandbox",
    )
    try:
        async for stack in cd_stack(
            dev_env, running, tmp_path, cd_entry(tmp_path, rollout_timeout_seconds=8)
        ):
            yield stack
    finally:
        running.stop()


async def test_an_image_that_cannot_be_pulled_is_diagnosed_with_the_registry_and_the_permission(
    no_pull_stack: CdStack,
) -> None:
    stack = no_pull_stack
    manifest = yaml.safe_load(
        stack.sandbox.kubectl("get", "deployment/tekutoko-api", "-o", "yaml").stdout
    )
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = f"{IMAGE}:2.0.0-missing"
    result, error = await restore(
        stack, ManifestSource(kind="file", name="bad.yaml"), yaml.safe_dump(manifest)
    )
    assert result is None and error
    [notice] = [n for n in stack.notices() if n["kind"] == "failure"]
    assert "tag 2.0.0-missing is not in Artifact Registry" in notice["text"]
    assert (
        "artifactregistry.repositories.downloadArtifacts" in notice["text"]
        and "denied" in notice["text"]
    )
    assert "ErrImagePull" in notice["text"] or "ImagePullBackOff" in notice["text"]
