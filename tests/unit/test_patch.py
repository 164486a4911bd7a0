from __future__ import annotations

import json

import pytest

from sandbox.kube.errors import ApiError
from sandbox.kube.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    apply_patch,
    strategic_merge,
)

POD_SPEC = {
    "kind": "Deployment",
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "api",
                        "image": "a:1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 80}],
                    },
                    {"name": "sidecar", "image": "s:1"},
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
            }
        }
    },
}


def containers(obj):
    return obj["spec"]["template"]["spec"]["containers"]


def test_strategic_merge_updates_one_container_by_name() -> None:
    out = strategic_merge(
        POD_SPEC,
        {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "a:2"}]}}}},
        parent_kind="Deployment",
    )
    assert [c["image"] for c in containers(out)] == ["a:2", "s:1"]
    assert containers(out)[0]["env"] == POD_SPEC["spec"]["template"]["spec"]["containers"][0]["env"]
    assert containers(POD_SPEC)[0]["image"] == "a:1"  # the input is not mutated


def test_strategic_merge_env_by_name_and_delete_directive() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "api",
                            "env": [
                                {"name": "B", "value": "3"},
                                {"name": "A", "$patch": "delete"},
                                {"name": "C", "value": "4"},
                            ],
                        }
                    ]
                }
            }
        }
    }
    env = containers(strategic_merge(POD_SPEC, patch))[0]["env"]
    assert env == [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]


def test_strategic_merge_null_deletes_and_replace_directive() -> None:
    out = strategic_merge(POD_SPEC, {"spec": {"template": {"spec": {"volumes": None}}}})
    assert "volumes" not in out["spec"]["template"]["spec"]
    out = strategic_merge(
        POD_SPEC,
        {
            "spec": {
                "template": {
                    "spec": {"$patch": "replace", "containers": [{"name": "only", "image": "o:1"}]}
                }
            }
        },
    )
    assert out["spec"]["template"]["spec"] == {"containers": [{"name": "only", "image": "o:1"}]}


def test_lists_without_a_merge_key_are_replaced() -> None:
    out = strategic_merge({"spec": {"args": ["a", "b"]}}, {"spec": {"args": ["c"]}})
    assert out["spec"]["args"] == ["c"]


def test_service_ports_merge_on_port() -> None:
    svc = {
        "kind": "Service",
        "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]},
    }
    out = apply_patch(
        STRATEGIC_MERGE_PATCH,
        svc,
        json.dumps({"spec": {"ports": [{"port": 80, "name": "web"}]}}).encode(),
    )
    assert out["spec"]["ports"] == [{"port": 80, "name": "web"}, {"port": 443, "name": "https"}]


def test_merge_patch_replaces_lists_whole() -> None:
    out = apply_patch(
        MERGE_PATCH,
        POD_SPEC,
        json.dumps(
            {"spec": {"template": {"spec": {"containers": [{"name": "x", "image": "x:1"}]}}}}
        ).encode(),
    )
    assert containers(out) == [{"name": "x", "image": "x:1"}]


def test_json_patch_and_its_errors() -> None:
    out = apply_patch(
        JSON_PATCH,
        POD_SPEC,
        json.dumps(
            [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "a:9"}]
        ).encode(),
    )
    assert containers(out)[0]["image"] == "a:9"
    with pytest.raises(ApiError) as info:
        apply_patch(
            JSON_PATCH,
            POD_SPEC,
            json.dumps([{"op": "replace", "path": "/metadata/annotations", "value": {}}]).encode(),
        )
    assert info.value.code == 422
    with pytest.raises(ApiError) as info:
        apply_patch(JSON_PATCH, POD_SPEC, b"{not json")
    assert info.value.code == 400
    with pytest.raises(ApiError) as info:
        apply_patch("application/xml", POD_SPEC, b"{}")
    assert info.value.code == 415
