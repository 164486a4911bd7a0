"""The ways to run modoru for real: the compose file, the image and the
in-cluster manifests, checked without a Docker engine or a cluster."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
MANIFESTS = [
    doc
    for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
    if path.name != "kustomization.yaml"
    for doc in yaml.safe_load_all(path.read_text())
    if doc
]


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose_spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(COMPOSE)


def test_compose_services_named_anywhere_exist_and_images_are_pinned() -> None:
    services = COMPOSE["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.split(":", 1)[1] in services
        image = service.get("image", "")
        if "build" not in service and not image.startswith("modoru:"):
            assert re.search(r":[0-9][\w.-]*$", image), (
                f"{name}: image {image!r} is not pinned to a version"
            )
    assert services["temporal-setup"]["restart"] == "no"
    assert "ModoruPhase" in " ".join(services["temporal-setup"]["command"])


def test_each_host_port_is_declared_once() -> None:
    ports = [p.rsplit(":", 1)[0] for s in COMPOSE["services"].values() for p in s.get("ports", [])]
    assert len(ports) == len(set(ports)), ports


def test_dockerfile_runs_the_worker_as_a_non_root_user_from_a_slim_base() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(
        r"^FROM python:3\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64} AS python$", text, re.M
    )  # tests/deploy/test_image.py: the digest
    assert re.search(r"^USER modoru$", text, re.M)
    assert 'ENTRYPOINT ["modoru"]' in text and 'CMD ["worker"]' in text
    assert "[dev]" not in text  # only runtime dependencies in the image


def test_manifests_are_valid_kubernetes_objects() -> None:
    assert {m["kind"] for m in MANIFESTS} >= {
        "Deployment",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Namespace",
    }
    for manifest in MANIFESTS:
        kubernetes_validate.validate(manifest, "1.32", strict=True)


VERBS = {
    "read": "get",
    "list": "list",
    "patch": "patch",
    "create": "create",
    "replace": "update",
    "delete": "delete",
}
RESOURCES = {
    "deployment": ("apps", "deployments"),
    "replica_set": ("apps", "replicasets"),
    "pod": ("", "pods"),
    "event": ("", "events"),
    "config_map": ("", "configmaps"),
    "service": ("", "services"),
    "namespace": ("", "namespaces"),
    "secret": ("", "secrets"),
}


def calls_in_code() -> set[tuple[str, str, str]]:
    """(group, resource, verb) for every Kubernetes client call the activities make."""
    found = set()
    for path in (ROOT / "activities").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "exec_core"
            ):
                assert node.attr.startswith("connect_get_namespaced_pod_exec"), (
                    f"{path.name}: unexpected exec call {node.attr}"
                )
                # The WebSocket upgrade is a GET; the API server authorizes it as create on
                # pods/exec.
                found |= {("", "pods/exec", "get"), ("", "pods/exec", "create")}
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr in ("apps", "core")
                and node.attr != "api_client"
            ):
                name = node.attr.removesuffix(
                    "_without_preload_content"
                )  # the same request, answered as raw JSON
                match = re.fullmatch(
                    r"(read|list|patch|create|replace|delete)_(?:namespaced_)?(\w+?)(?:_(status|scale|log))?",
                    name,
                )
                assert match, f"{path.name}: cannot map {name} to an RBAC verb"
                verb, kind, sub = match.groups()
                group, resource = RESOURCES[kind]
                found.add((group, f"{resource}/{sub}" if sub else resource, VERBS[verb]))
    return found


def granted() -> set[tuple[str, str, str]]:
    rules = set()
    for manifest in MANIFESTS:
        if manifest["kind"] in ("Role", "ClusterRole"):
            for rule in manifest["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            rules.add((group, resource, verb))
    return rules


def test_rbac_grants_exactly_what_the_activities_call() -> None:
    used, allowed = calls_in_code(), granted()
    assert used, "no Kubernetes calls found: the scan is broken"
    assert used - allowed == set(), f"calls without a rule: {sorted(used - allowed)}"
    assert allowed - used == set(), f"rules no code needs: {sorted(allowed - used)}"


def test_the_worker_and_the_codec_server_read_the_same_codec_keys_secret() -> None:
    kustomization = yaml.safe_load(
        (ROOT / "deploy" / "kubernetes" / "kustomization.yaml").read_text()
    )
    assert "codec-server.yaml" in kustomization["resources"]
    deployments = {m["metadata"]["name"]: m for m in MANIFESTS if m["kind"] == "Deployment"}
    for name in ("modoru-worker", "modoru-codec-server"):
        pod = deployments[name]["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        volume = next(
            v
            for v in pod["volumes"]
            if v.get("secret", {}).get("secretName") == "modoru-codec-keys"
        )
        assert (
            volume["secret"]["items"] == [{"key": "keys", "path": "keys"}]
            and "optional" not in volume["secret"]
        )
        mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
        assert (
            mount["readOnly"] and env["MODORU_CODEC_KEYS_FILE"] == f"{mount['mountPath']}/keys"
        ), name
        assert (
            "MODORU_CODEC_KEYS" not in env
        )  # a file from the Secret, not key material in the pod spec
    assert (
        deployments["modoru-codec-server"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
        == "codec-server"
    )


def test_the_codec_server_needs_a_token_and_only_the_ingress_reaches_it() -> None:
    [server] = [
        m
        for m in MANIFESTS
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "modoru-codec-server"
    ]
    pod = server["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert "--allow-encode" not in container["args"]  # the UI only decodes
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "MODORU_CODEC_TOKEN" not in env  # the token is a mounted Secret, not in the pod spec
    volume = next(
        v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "modoru-codec-token"
    )
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] and env["MODORU_CODEC_TOKEN_FILE"] == f"{mount['mountPath']}/token"
    assert volume["secret"]["defaultMode"] == 0o400 and "optional" not in volume["secret"]

    [policy] = [
        m
        for m in MANIFESTS
        if m["kind"] == "NetworkPolicy"
        and m["spec"]["podSelector"]["matchLabels"] == server["spec"]["selector"]["matchLabels"]
    ]
    assert policy["metadata"]["namespace"] == server["metadata"]["namespace"]
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["spec"]["egress"] == []  # it calls nothing
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] and all(peer for peer in rule["from"])  # never "from anywhere"
    for peer in rule["from"]:
        assert "ipBlock" not in peer
        assert peer.get("namespaceSelector", {}).get("matchLabels")  # one named namespace
    port = container["ports"][0]["containerPort"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]
