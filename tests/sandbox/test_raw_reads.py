"""The rollout poll's reads skip the client's models (activities.kubernetes.read_json):
the same JSON the API sent, and the same failures the models' path raised."""

from __future__ import annotations

from datetime import timedelta

import pytest
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.exceptions import ApplicationError

from activities.kubernetes import KubernetesActivities


@pytest.fixture
async def k8s(sandbox):
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    yield KubernetesActivities(kube.AppsV1Api(api), kube.CoreV1Api(api))
    await api.close()


async def test_a_raw_read_is_the_apis_json_and_the_models_agree(k8s: KubernetesActivities) -> None:
    raw = await k8s._deployment("default", "tekutoko-api")
    model = k8s.apps.api_client.sanitize_for_serialization(
        await k8s.apps.read_namespaced_deployment("tekutoko-api", "default")
    )
    assert raw["metadata"]["name"] == "tekutoko-api" and raw["kind"] == "Deployment"
    assert (
        raw["spec"]["template"]["spec"]["containers"][0]["image"]
        == model["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    assert raw["status"]["observedGeneration"] == model["status"]["observedGeneration"]
    diagnostics = await k8s.diagnose(raw, with_events=False)
    assert len(diagnostics.pods) == raw["spec"]["replicas"] and all(
        p.ready for p in diagnostics.pods
    )


async def test_raw_reads_fail_as_before(sandbox, k8s: KubernetesActivities) -> None:
    with pytest.raises(ApplicationError) as missing:
        await k8s._deployment("default", "nope")
    assert missing.value.type == "DeploymentNotFound" and missing.value.non_retryable
    sandbox.admin(
        "faults",
        "PUT",
        {
            "rules": [
                {"resource": "deployments", "verb": "get", "status": 429, "retry_after_seconds": 2}
            ]
        },
    )
    try:
        with pytest.raises(ApplicationError) as throttled:
            await k8s._deployment("default", "tekutoko-api")
    finally:
        sandbox.admin("faults", "PUT", {"rules": []})
    assert not throttled.value.non_retryable and throttled.value.next_retry_delay == timedelta(
        seconds=2
    )
    assert (
        throttled.value.message
        == "Kubernetes API 429 Too Many Requests on reading deployment/tekutoko-api; retrying in "
        "2s (Retry-After)"
    )
