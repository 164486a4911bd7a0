"""Fault injection shapes what clients see; the request log shows what they did."""

from __future__ import annotations

import time

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from tests.conftest import RunningSandbox

NS, NAME = "default", "tekutoko-api"


def set_faults(sandbox: RunningSandbox, *rules: dict) -> None:
    sandbox.admin("faults", method="PUT", body={"rules": list(rules)})


def test_injected_503_on_one_resource_and_verb_only(sandbox, kube_client) -> None:
    apps, core = kube_client
    set_faults(sandbox, {"resource": "deployments", "verb": "get", "status": 503})
    with pytest.raises(ApiException) as info:
        apps.read_namespaced_deployment(NAME, NS)
    assert info.value.status == 503 and "ServiceUnavailable" in info.value.body
    assert apps.list_namespaced_deployment(NS).items  # list is another verb
    assert core.list_namespaced_pod(NS).items


def test_injected_429_carries_retry_after(sandbox, kube_client) -> None:
    apps, _ = kube_client
    set_faults(
        sandbox,
        {"resource": "deployments", "verb": "patch", "status": 429, "retry_after_seconds": 3},
    )
    with pytest.raises(ApiException) as info:
        apps.patch_namespaced_deployment(NAME, NS, {"metadata": {"labels": {"x": "y"}}})
    assert info.value.status == 429
    assert info.value.headers["Retry-After"] == "3"
    assert "x" not in apps.read_namespaced_deployment(NAME, NS).metadata.labels


def test_times_limits_a_fault_and_rate_zero_never_fires(sandbox, kube_client) -> None:
    apps, _ = kube_client
    set_faults(
        sandbox,
        {"resource": "replicasets", "status": 500, "times": 2},
        {"resource": "deployments", "status": 500, "rate": 0},
    )
    for _ in range(2):
        with pytest.raises(ApiException):
            apps.list_namespaced_replica_set(NS)
    assert len(apps.list_namespaced_replica_set(NS).items) == 3
    apps.read_namespaced_deployment(NAME, NS)
    assert sandbox.admin("faults")["rules"][0]["remaining"] == 0


def test_added_latency_and_dropped_connections(sandbox, kube_client) -> None:
    apps, _ = kube_client
    set_faults(sandbox, {"resource": "deployments", "verb": "get", "latency_ms": 300})
    started = time.monotonic()
    apps.read_namespaced_deployment(NAME, NS)
    assert time.monotonic() - started >= 0.3
    set_faults(sandbox, {"resource": "deployments", "verb": "get", "drop": True})
    apps.api_client.configuration.retries = 0
    with pytest.raises((urllib3.exceptions.HTTPError, ConnectionError)):
        apps.read_namespaced_deployment(NAME, NS, _request_timeout=5)


def test_bad_fault_rules_are_refused(sandbox) -> None:
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as info:
        set_faults(sandbox, {"resource": "deployments", "status": 418})
    assert info.value.code == 400
    assert sandbox.admin("faults")["rules"] == []


def test_request_log_shows_verbs_and_that_reads_mutate_nothing(sandbox, kube_client) -> None:
    apps, _ = kube_client
    mark = sandbox.mark()
    apps.read_namespaced_deployment(NAME, NS)
    apps.list_namespaced_replica_set(NS, label_selector="app=tekutoko-api")
    entries = sandbox.requests_since(mark)
    assert [(e["verb"], e["resource"], e["status"]) for e in entries] == [
        ("get", "deployments", 200),
        ("list", "replicasets", 200),
    ]
    assert not [e for e in entries if e["verb"] in ("create", "update", "patch", "delete")]
    apps.patch_namespaced_deployment(NAME, NS, {"metadata": {"labels": {"x": "y"}}})
    patch = sandbox.requests_since(mark)[-1]
    assert (patch["verb"], patch["name"], patch["content_type"]) == (
        "patch",
        NAME,
        "application/strategic-merge-patch+json",
    )
    assert (
        sandbox.sandbox.state_dir.joinpath("requests.jsonl").read_text().count('"verb": "patch"')
        == 1
    )
