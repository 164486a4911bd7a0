"""The Slack gateway's manifests: reachable by the ingress on its one path, no
cluster credentials, and its attestor key mounted by it alone (the workers get
the bot token, never the key)."""

from __future__ import annotations

import yaml

from tests.deploy.test_manifests import MANIFESTS, ROOT


def named(kind: str, name: str) -> dict:
    return next(m for m in MANIFESTS if m["kind"] == kind and m["metadata"]["name"] == name)


def test_the_gateway_is_listed_exposed_on_one_path_and_holds_no_cluster_token() -> None:
    kustomization = yaml.safe_load((ROOT / "deploy/kubernetes/kustomization.yaml").read_text())
    assert "slack-gateway.yaml" in kustomization["resources"]
    pod = named("Deployment", "modoru-slack-gateway")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["args"][0] == "slack-gateway"
    (rule,) = named("Ingress", "modoru-slack-gateway")["spec"]["rules"]
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [
        ("/slack/interactions", "Exact")
    ]


def test_only_the_gateway_mounts_the_attestor_key() -> None:
    def secret_items(deployment: dict) -> set[str]:
        volumes = deployment["spec"]["template"]["spec"].get("volumes", [])
        return {
            item["key"]
            for v in volumes
            if v.get("secret", {}).get("secretName") == "modoru-slack"
            for item in v["secret"].get("items", [])
        }

    assert "attestor-key" in secret_items(named("Deployment", "modoru-slack-gateway"))
    worker = named("Deployment", "modoru-worker")
    assert "attestor-key" not in secret_items(worker)
    env = {e["name"]: e for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODORU_SLACK_BOT_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "bot-token"
    assert "MODORU_SLACK_ATTESTOR_KEY_FILE" not in env
