"""Faults after the write: the emulator applies the request, logs the effect, and then
loses the answer (a 5xx, a reset connection, or an answer held until the test lets it go).
The undo, retried through them, changes the Deployment's spec once, as the effect log
counts it; a concurrent change between its read and its PATCH fails the PATCH's test."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error

import pytest
import urllib3
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from activities.kubernetes import KubernetesActivities
from runbook.models import PlanRequest, UndoRequest
from tests.conftest import RunningSandbox

NS, NAME = "default", "tekutoko-api"


def set_faults(sandbox: RunningSandbox, *rules: dict) -> None:
    sandbox.admin("faults", method="PUT", body={"rules": list(rules)})


def effects(sandbox: RunningSandbox, since: int = 0) -> list[dict]:
    return sandbox.admin(f"effects?since={since}")["entries"]


def spec_changes(sandbox: RunningSandbox, since: int) -> list[dict]:
    return [
        e
        for e in effects(sandbox, since)
        if e["resource"] == "deployments" and e["name"] == NAME and e.get("spec_changed")
    ]


def label_patch(value: str) -> dict:
    return {"spec": {"template": {"metadata": {"labels": {"probe": value}}}}}


def test_a_write_answered_500_after_it_was_applied(sandbox, kube_client) -> None:
    apps, _ = kube_client
    mark = sandbox.admin("effects")["last"]
    set_faults(
        sandbox, {"resource": "deployments", "verb": "patch", "when": "after", "status": 500}
    )
    with pytest.raises(ApiException) as info:
        apps.patch_namespaced_deployment(NAME, NS, label_patch("after-500"))
    assert info.value.status == 500 and "after patch deployments was applied" in info.value.body
    set_faults(sandbox)
    live = apps.read_namespaced_deployment(NAME, NS)
    assert live.spec.template.metadata.labels["probe"] == "after-500"  # the write stood
    [change] = spec_changes(sandbox, mark)
    assert change["generation"] == change["generation_before"] + 1
    [logged] = [e for e in sandbox.requests_since(0) if e["verb"] == "patch"]
    assert logged["status"] == 500 and logged["applied"] is True
    # A rule `before` the write (the default) still refuses instead of applying.
    set_faults(sandbox, {"resource": "deployments", "verb": "patch", "status": 503})
    with pytest.raises(ApiException):
        apps.patch_namespaced_deployment(NAME, NS, label_patch("before-503"))
    set_faults(sandbox)
    assert apps.read_namespaced_deployment(NAME, NS).spec.template.metadata.labels["probe"] == (
        "after-500"
    )
    assert len(spec_changes(sandbox, mark)) == 1


def test_a_write_whose_connection_drops_after_it_was_applied(sandbox, kube_client) -> None:
    apps, _ = kube_client
    mark = sandbox.admin("effects")["last"]
    set_faults(sandbox, {"resource": "deployments", "verb": "patch", "when": "after", "drop": True})
    apps.api_client.configuration.retries = 0
    with pytest.raises((urllib3.exceptions.HTTPError, ConnectionError)):
        apps.patch_namespaced_deployment(NAME, NS, label_patch("dropped"), _request_timeout=10)
    set_faults(sandbox)
    assert apps.read_namespaced_deployment(NAME, NS).spec.template.metadata.labels["probe"] == (
        "dropped"
    )
    assert len(spec_changes(sandbox, mark)) == 1


def test_a_held_answer_waits_for_its_release(sandbox, kube_client) -> None:
    apps, _ = kube_client
    set_faults(
        sandbox,
        {"resource": "deployments", "verb": "patch", "when": "after", "hold": True, "times": 1},
    )
    answered: list[object] = []
    caller = threading.Thread(
        target=lambda: answered.append(
            apps.patch_namespaced_deployment(NAME, NS, label_patch("held"))
        )
    )
    caller.start()
    deadline = time.monotonic() + 10
    while not (held := sandbox.admin("holds")["held"]):
        assert time.monotonic() < deadline, "the PATCH was never held"
        time.sleep(0.05)
    assert held[0]["resource"] == "deployments" and held[0]["name"] == NAME
    assert not answered
    # The effect is there while the answer is held: the moment a test kills the caller.
    live = apps.read_namespaced_deployment(NAME, NS)
    assert live.spec.template.metadata.labels["probe"] == "held"
    assert sandbox.admin("holds/release", method="POST", body={})["released"] == 1
    caller.join(10)
    assert answered and sandbox.admin("holds")["held"] == []


def test_after_write_rules_are_checked(sandbox) -> None:
    for bad in (
        {"hold": True},  # a hold needs an applied write
        {"when": "after", "status": 429},  # 429 says "not applied"
        {"when": "during"},
    ):
        with pytest.raises(urllib.error.HTTPError) as info:
            set_faults(sandbox, {"resource": "deployments", **bad})
        assert info.value.code == 400
    assert sandbox.admin("faults")["rules"] == []
    with pytest.raises(urllib.error.HTTPError) as info:
        sandbox.admin("holds/release?id=x", method="POST", body={})
    assert info.value.code == 400


@pytest.fixture
async def k8s(sandbox):
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    yield KubernetesActivities(kube.AppsV1Api(api), kube.CoreV1Api(api))
    await api.close()


async def test_the_undo_retried_after_a_lost_answer_changes_the_spec_once(
    sandbox, k8s: KubernetesActivities
) -> None:
    plan = await k8s.plan_rollback(PlanRequest(namespace=NS, deployment=NAME))
    mark = (await asyncio.to_thread(sandbox.admin, "effects"))["last"]
    await asyncio.to_thread(
        set_faults,
        sandbox,
        {"resource": "deployments", "verb": "patch", "when": "after", "status": 503, "times": 1},
    )
    with pytest.raises(Exception) as lost:  # the client's ApiException for the 503
        await k8s.rollout_undo(UndoRequest(plan=plan))
    assert getattr(lost.value, "status", None) == 503 or "503" in str(lost.value)
    again = await k8s.rollout_undo(UndoRequest(plan=plan))  # Temporal's retry of the activity
    assert not again.patched and "already matches" in again.message
    changes = await asyncio.to_thread(spec_changes, sandbox, mark)
    assert len(changes) == 1 and changes[0]["images"] == plan.to_images, changes


async def test_a_change_between_the_undos_read_and_its_patch_fails_the_test(
    sandbox, k8s: KubernetesActivities
) -> None:
    plan = await k8s.plan_rollback(PlanRequest(namespace=NS, deployment=NAME))
    read = k8s._deployment

    async def read_then_someone_edits(namespace: str, name: str) -> dict:
        found = await read(namespace, name)
        await k8s.apps.patch_namespaced_deployment(name, namespace, label_patch("concurrent"))
        return found

    k8s._deployment = read_then_someone_edits  # type: ignore[method-assign]
    mark = (await asyncio.to_thread(sandbox.admin, "effects"))["last"]
    with pytest.raises(ApplicationError, match="changed while rolling back") as refused:
        await k8s.rollout_undo(UndoRequest(plan=plan))
    assert not refused.value.non_retryable  # the retry reads it again
    changes = await asyncio.to_thread(spec_changes, sandbox, mark)
    assert [c["images"] for c in changes] == [plan.from_images]  # only the concurrent edit


def test_the_cd_jobs_deploy_is_in_the_clusters_effect_log(sandbox) -> None:
    """The CD job sets the image without the Kubernetes API; its rollout is still one entry in
    the log every Deployment change goes to, so exactly-once counts see a redeploy's deploy."""
    mark = sandbox.admin("effects")["last"]
    target = sandbox.sandbox.github.target
    old = sandbox.call(lambda: target.manifest())["spec"]["template"]["spec"]["containers"]
    image = old[0]["image"].rsplit(":", 1)[0] + ":cd-probe"
    generation = sandbox.call(lambda: target.set_image(image, "redeploy cd-probe"))
    [change] = spec_changes(sandbox, mark)
    assert change["via"] == "cd-job" and change["verb"] == "update", change
    assert change["generation"] == generation == change["generation_before"] + 1, change
    assert change["images_before"][0] == old[0]["image"] and change["images"][0] == image, change
