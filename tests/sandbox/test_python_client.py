"""The official `kubernetes` client against the sandbox: every object it reads
must pass the client's model validation, and the verbs must behave as upstream."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.conftest import RunningSandbox

NS = "default"
NAME = "tekutoko-api"
IMAGE = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api"


def owned_replicasets(apps: client.AppsV1Api) -> list[client.V1ReplicaSet]:
    return apps.list_namespaced_replica_set(NS, label_selector="app=tekutoko-api").items


def revision(obj) -> str:
    return obj.metadata.annotations["deployment.kubernetes.io/revision"]


def wait_rolled_out(
    sandbox: RunningSandbox, apps: client.AppsV1Api, timeout: float = 30
) -> client.V1Deployment:
    def done():
        d = apps.read_namespaced_deployment(NAME, NS)
        s = d.status
        ok = (
            (s.observed_generation or 0) >= d.metadata.generation
            and s.updated_replicas == d.spec.replicas
            and s.replicas == d.spec.replicas
            and s.available_replicas == d.spec.replicas
        )
        return d if ok else None

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = done()
        if d is not None:
            return d
        time.sleep(0.05)
    raise AssertionError("rollout did not finish")


def test_every_kind_deserializes_through_the_client(kube_client) -> None:
    apps, core = kube_client
    assert (
        apps.read_namespaced_deployment(NAME, NS)
        .spec.template.spec.containers[0]
        .image.endswith(":1.3.0")
    )
    assert len(owned_replicasets(apps)) == 3
    pods = core.list_namespaced_pod(NS, label_selector="app=tekutoko-api").items
    assert len(pods) == 3 and all(p.status.phase == "Running" for p in pods)
    assert core.list_namespaced_event(NS).items
    svc = core.read_namespaced_service(NAME, NS)
    assert svc.status.load_balancer.ingress[0].ip == "127.0.0.1" and svc.spec.ports[0].port > 0
    assert core.read_namespaced_secret("tekutoko-db", NS).data["DATABASE_NAME"]
    assert core.read_namespaced_config_map("tekutoko-api-config", NS).data == {"LOG_LEVEL": "info"}
    assert [n.metadata.name for n in core.list_namespace().items] == ["default"]
    scale = apps.read_namespaced_deployment_scale(NAME, NS)
    assert scale.spec.replicas == 3 and scale.status.selector == "app=tekutoko-api"


def test_revisions_and_change_causes_match_the_runbook(kube_client) -> None:
    apps, _ = kube_client
    by_revision = {revision(rs): rs for rs in owned_replicasets(apps)}
    assert sorted(by_revision) == ["1", "2", "3"]
    assert "kubernetes.io/change-cause" not in by_revision["1"].metadata.annotations
    assert (
        by_revision["2"].metadata.annotations["kubernetes.io/change-cause"]
        == "Update to version 1.2.0"
    )
    assert by_revision["3"].spec.replicas == 3 and by_revision["2"].spec.replicas == 0
    for rs in by_revision.values():
        assert rs.metadata.owner_references[0].kind == "Deployment"
        assert rs.metadata.labels["pod-template-hash"] in rs.metadata.name


def test_a_json_patch_undo_reuses_the_old_replicaset(sandbox, kube_client) -> None:
    apps, _ = kube_client
    target = next(rs for rs in owned_replicasets(apps) if revision(rs) == "2")
    template = client.ApiClient().sanitize_for_serialization(target.spec.template)
    template["metadata"]["labels"].pop("pod-template-hash")
    apps.patch_namespaced_deployment(
        NAME,
        NS,
        [
            {"op": "replace", "path": "/spec/template", "value": template},
            {
                "op": "replace",
                "path": "/metadata/annotations",
                "value": {
                    "deployment.kubernetes.io/revision": "3",
                    "kubernetes.io/change-cause": "Update to version 1.2.0",
                },
            },
        ],
    )
    d = wait_rolled_out(sandbox, apps)
    assert revision(d) == "4"
    reused = apps.read_namespaced_replica_set(target.metadata.name, NS)
    assert revision(reused) == "4"
    assert reused.metadata.annotations["deployment.kubernetes.io/revision-history"] == "2"
    assert reused.spec.replicas == 3
    assert len(owned_replicasets(apps)) == 3
    conditions = {c.type: c.reason for c in d.status.conditions}
    assert conditions == {
        "Available": "MinimumReplicasAvailable",
        "Progressing": "NewReplicaSetAvailable",
    }


def test_update_with_a_stale_resource_version_is_a_conflict(kube_client) -> None:
    apps, _ = kube_client
    d = apps.read_namespaced_deployment(NAME, NS)
    d.metadata.labels["team"] = "walks"
    apps.replace_namespaced_deployment(NAME, NS, d)
    d.metadata.labels["team"] = "other"
    with pytest.raises(ApiException) as info:
        apps.replace_namespaced_deployment(NAME, NS, d)
    assert info.value.status == 409
    assert '"reason":"Conflict"' in info.value.body.replace(" ", "")
    assert apps.read_namespaced_deployment(NAME, NS).metadata.labels["team"] == "walks"


def test_missing_objects_are_404_not_found(kube_client) -> None:
    apps, core = kube_client
    with pytest.raises(ApiException) as info:
        apps.read_namespaced_deployment("nope", NS)
    assert info.value.status == 404 and 'deployments.apps \\"nope\\" not found' in info.value.body
    with pytest.raises(ApiException) as info:
        core.list_namespaced_pod("ghost-town") and core.create_namespaced_config_map(
            "ghost-town", {"metadata": {"name": "x"}}
        )
    assert info.value.status == 404 and "namespaces" in info.value.body


def test_an_invalid_deployment_is_422_and_nothing_is_created(kube_client) -> None:
    apps, _ = kube_client
    bad = {
        "metadata": {"name": "broken"},
        "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {
                "metadata": {"labels": {"app": "b"}},
                "spec": {"containers": [{"name": "c"}]},
            },
        },
    }
    with pytest.raises(ApiException) as info:
        apps.create_namespaced_deployment(NS, bad)
    assert info.value.status == 422
    assert "`selector` does not match template `labels`" in info.value.body
    assert "spec.template.spec.containers[0].image" in info.value.body
    assert [d.metadata.name for d in apps.list_namespaced_deployment(NS).items] == [NAME]


def test_strategic_merge_patch_merges_containers_and_env_by_name(sandbox, kube_client) -> None:
    apps, _ = kube_client
    apps.patch_namespaced_deployment(
        NAME,
        NS,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "api",
                                "image": f"{IMAGE}:1.2.0",
                                "env": [{"name": "LOG_FORMAT", "value": "json"}],
                            },
                        ]
                    }
                }
            }
        },
    )
    container = apps.read_namespaced_deployment(NAME, NS).spec.template.spec.containers[0]
    assert container.image == f"{IMAGE}:1.2.0"
    assert {e.name: e.value for e in container.env} == {
        "APP_ENV": "production",
        "LOG_FORMAT": "json",
    }
    assert container.ports[0].container_port == 8080  # untouched lists survive


def test_merge_patch_deletes_keys_with_null(sandbox, kube_client) -> None:
    _, core = kube_client
    request = urllib.request.Request(
        f"{sandbox.url}/api/v1/namespaces/{NS}/configmaps/tekutoko-api-config",
        data=json.dumps({"data": {"LOG_LEVEL": None, "MODE": "safe"}}).encode(),
        method="PATCH",
        headers={"Content-Type": "application/merge-patch+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert core.read_namespaced_config_map("tekutoko-api-config", NS).data == {"MODE": "safe"}


def test_watch_streams_changes_from_a_resource_version(kube_client) -> None:
    apps, _ = kube_client
    listed = apps.list_namespaced_deployment(NS, field_selector=f"metadata.name={NAME}")
    apps.patch_namespaced_deployment_scale(NAME, NS, {"spec": {"replicas": 4}})
    seen = []
    w = watch.Watch()
    for event in w.stream(
        apps.list_namespaced_deployment,
        NS,
        field_selector=f"metadata.name={NAME}",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=5,
    ):
        seen.append((event["type"], event["object"].spec.replicas))
        if event["object"].spec.replicas == 4:
            w.stop()
    assert ("MODIFIED", 4) in seen


def test_scale_subresource_changes_the_pod_count(sandbox, kube_client) -> None:
    apps, core = kube_client
    apps.patch_namespaced_deployment_scale(NAME, NS, {"spec": {"replicas": 5}})
    sandbox.wait_for(
        lambda: len(core.list_namespaced_pod(NS, label_selector="app=tekutoko-api").items) == 5,
        what="5 pods",
    )
    d = wait_rolled_out(sandbox, apps)
    assert d.status.available_replicas == 5
    with pytest.raises(ApiException) as info:
        apps.patch_namespaced_deployment_scale(NAME, NS, {"spec": {"replicas": -1}})
    assert info.value.status == 422


def test_deleting_a_replicaset_collects_its_pods(sandbox, kube_client) -> None:
    apps, core = kube_client
    live = next(rs for rs in owned_replicasets(apps) if rs.spec.replicas == 3)
    pods_before = {p.metadata.name for p in core.list_namespaced_pod(NS).items}
    apps.delete_namespaced_replica_set(live.metadata.name, NS)
    # the deployment controller recreates the ReplicaSet for its template, with new pods
    sandbox.wait_for(
        lambda: not pods_before & {p.metadata.name for p in core.list_namespaced_pod(NS).items},
        what="old pods collected",
    )
    wait_rolled_out(sandbox, apps)


def test_orphan_propagation_keeps_the_pods(sandbox, kube_client) -> None:
    apps, core = kube_client
    apps.delete_namespaced_deployment(NAME, NS, propagation_policy="Orphan")
    assert len(owned_replicasets(apps)) == 3
    assert all(not rs.metadata.owner_references for rs in owned_replicasets(apps))
    assert len(core.list_namespaced_pod(NS).items) == 3


def test_a_crashing_image_restarts_with_growing_counts(sandbox, kube_client) -> None:
    apps, core = kube_client
    apps.patch_namespaced_deployment(
        NAME,
        NS,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "api", "image": f"{IMAGE}:1.4.0-crash"}]}
                }
            }
        },
    )

    def crashing():
        pods = [
            p
            for p in core.list_namespaced_pod(NS).items
            if p.spec.containers[0].image.endswith("-crash")
        ]
        states = [p.status.container_statuses[0] for p in pods if p.status.container_statuses]
        return [
            s
            for s in states
            if s.restart_count >= 2
            and s.state.waiting
            and s.state.waiting.reason == "CrashLoopBackOff"
        ]

    statuses = sandbox.wait_for(crashing, timeout=30, what="CrashLoopBackOff with 2 restarts")
    assert statuses[0].last_state.terminated.exit_code == 1
    reasons = {(e.reason, e.type) for e in core.list_namespaced_event(NS).items}
    assert ("BackOff", "Warning") in reasons
    # old pods stay: maxUnavailable keeps 1.3.0 serving while the new pods crash
    assert apps.read_namespaced_deployment(NAME, NS).status.available_replicas >= 2


def test_an_unpullable_image_reports_pull_errors(sandbox, kube_client) -> None:
    apps, core = kube_client
    apps.patch_namespaced_deployment(
        NAME,
        NS,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "api", "image": f"{IMAGE}:9.9.9-missing"}]}
                }
            }
        },
    )

    def waiting_reasons():
        pods = [
            p
            for p in core.list_namespaced_pod(NS).items
            if p.spec.containers[0].image.endswith("-missing")
        ]
        reasons = {
            p.status.container_statuses[0].state.waiting.reason
            for p in pods
            if p.status.container_statuses and p.status.container_statuses[0].state.waiting
        }
        return reasons if "ImagePullBackOff" in reasons else None

    sandbox.wait_for(waiting_reasons, timeout=30, what="ImagePullBackOff")
    messages = [e.message for e in core.list_namespaced_event(NS).items if e.reason == "Failed"]
    assert any(m.startswith(f'Failed to pull image "{IMAGE}:9.9.9-missing"') for m in messages)
    assert "Error: ErrImagePull" in messages


def test_a_paused_deployment_does_not_roll_out_until_resumed(sandbox, kube_client) -> None:
    apps, _ = kube_client
    apps.patch_namespaced_deployment(NAME, NS, {"spec": {"paused": True}})
    apps.patch_namespaced_deployment(
        NAME,
        NS,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "api", "image": f"{IMAGE}:1.2.0"}]}}
            }
        },
    )
    time.sleep(0.3)
    assert len(owned_replicasets(apps)) == 3
    progressing = next(
        c
        for c in apps.read_namespaced_deployment(NAME, NS).status.conditions
        if c.type == "Progressing"
    )
    assert progressing.reason == "DeploymentPaused"
    apps.patch_namespaced_deployment(NAME, NS, {"spec": {"paused": None}})
    d = wait_rolled_out(sandbox, apps)
    assert revision(d) == "4"


def test_revision_history_limit_cleans_up_old_replicasets(sandbox, kube_client) -> None:
    apps, _ = kube_client
    apps.patch_namespaced_deployment(NAME, NS, {"spec": {"revisionHistoryLimit": 1}})
    apps.patch_namespaced_deployment(
        NAME, NS, {"spec": {"template": {"metadata": {"annotations": {"bump": "1"}}}}}
    )
    wait_rolled_out(sandbox, apps)
    sandbox.wait_for(
        lambda: len(owned_replicasets(apps)) == 2, what="clean-up to one old ReplicaSet"
    )
    revisions = sorted(int(revision(rs)) for rs in owned_replicasets(apps))
    assert revisions == [3, 4]  # the newest old one is kept


def test_pod_logs_are_served(kube_client) -> None:
    _, core = kube_client
    pod = core.list_namespaced_pod(NS).items[0]
    text = core.read_namespaced_pod_log(pod.metadata.name, NS, tail_lines=5)
    assert "version=1.3.0" in text
    with pytest.raises(ApiException) as info:
        core.read_namespaced_pod_log(pod.metadata.name, NS, container="nope")
    assert info.value.status == 400
