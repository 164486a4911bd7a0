"""kubectl's semantics inside the Kubernetes activities."""

from __future__ import annotations

from activities.kubernetes import clean_manifest, rollout_state, same_template, selector_string


def deployment(**status) -> dict:
    return {
        "metadata": {
            "name": "api",
            "generation": 2,
            "uid": "u",
            "resourceVersion": "9",
            "managedFields": [{}],
            "creationTimestamp": "t",
        },
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 2, **status},
    }


def test_rollout_state_speaks_like_kubectl() -> None:
    assert rollout_state(deployment(updatedReplicas=1, replicas=3)) == (
        False,
        'Waiting for deployment "api" rollout to finish: 1 out of 3 new replicas have been '
        "updated...",
        False,
    )
    assert rollout_state(deployment(updatedReplicas=3, replicas=4))[1].endswith(
        "1 old replicas are pending termination..."
    )
    assert rollout_state(deployment(updatedReplicas=3, replicas=3, availableReplicas=2))[
        1
    ].endswith("2 of 3 updated replicas are available...")
    assert rollout_state(deployment(updatedReplicas=3, replicas=3, availableReplicas=3)) == (
        True,
        'deployment "api" successfully rolled out',
        False,
    )
    stuck = deployment(conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}])
    assert rollout_state(stuck) == (False, 'deployment "api" exceeded its progress deadline', True)
    unobserved = deployment()
    unobserved["status"]["observedGeneration"] = 1
    assert rollout_state(unobserved)[1] == "Waiting for deployment spec update to be observed..."


def test_templates_compare_without_the_hash_label_and_empty_fields() -> None:
    a = {
        "metadata": {"labels": {"app": "x", "pod-template-hash": "abc"}},
        "spec": {"containers": [{"name": "c", "image": "i:1", "env": []}]},
    }
    b = {
        "metadata": {"labels": {"app": "x"}, "annotations": {}},
        "spec": {"containers": [{"name": "c", "image": "i:1"}]},
    }
    assert same_template(a, b)
    b["spec"]["containers"][0]["image"] = "i:2"
    assert not same_template(a, b)


def test_backup_manifest_is_clean() -> None:
    manifest = clean_manifest(deployment(replicas=3))
    assert "status" not in manifest
    assert set(manifest["metadata"]) == {"name"}
    assert (manifest["apiVersion"], manifest["kind"]) == ("apps/v1", "Deployment")


def test_selector_string_matches_kubectl() -> None:
    assert (
        selector_string(
            {
                "matchLabels": {"b": "2", "a": "1"},
                "matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["x"]}],
            }
        )
        == "a=1,b=2,t notin (x)"
    )
