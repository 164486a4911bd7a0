"""The Deployment manifests a scenario's seeds describe, with the Cloud SQL Auth
Proxy v2 as a native sidecar when a seed asks for one."""

from __future__ import annotations

from typing import Any

from .scenario import DeploymentSeed

PROXY_CONTAINER = "cloud-sql-proxy"
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
# What psql in the app container reads when the runbook runs it by hand (psql -h localhost ...).
PSQL_ENV = {
    "PGUSER": "DATABASE_USER",
    "PGDATABASE": "DATABASE_NAME",
    "PGPASSWORD": "DATABASE_PASSWORD",
}


def proxy_container(seed: DeploymentSeed, connection_name: str) -> dict[str, Any]:
    """The Cloud SQL Auth Proxy v2 as a native sidecar, after the upstream
    examples/k8s-sidecar: it listens on 127.0.0.1:<port> in the pod."""
    proxy = seed.cloudsql_proxy
    assert proxy is not None
    return {
        "name": PROXY_CONTAINER,
        "image": proxy.image,
        "restartPolicy": "Always",
        "args": [
            *(["--private-ip"] if proxy.private_ip else []),
            "--structured-logs",
            f"--port={proxy.port}",
            connection_name,
        ],
        "securityContext": {"runAsNonRoot": True},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }


def deployment_manifest(
    seed: DeploymentSeed,
    image: str,
    *,
    connection_name: str | None = None,
    database_secret: str | None = None,
) -> dict[str, Any]:
    """The Deployment a seed describes; with a proxy sidecar, `connection_name`
    is what it is given and `database_secret` feeds the app container's PG* variables."""
    labels = seed.selector
    container: dict[str, Any] = {
        "name": seed.container,
        "image": image,
        "ports": [{"containerPort": seed.container_port, "name": "http"}],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": seed.container_port},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": seed.container_port},
            "periodSeconds": 10,
        },
    }
    if resources := seed.resources.manifest():
        container["resources"] = resources
    env = [{"name": k, "value": v} for k, v in seed.env.items()]
    if seed.cloudsql_proxy is not None and database_secret:
        env += [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": database_secret, "key": key}}}
            for k, key in PSQL_ENV.items()
        ]
    if env:
        container["env"] = env
    if seed.env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": name}} for name in seed.env_from_secrets]
    pod_spec: dict[str, Any] = {"containers": [container]}
    template_meta: dict[str, Any] = {"labels": dict(labels)}
    if seed.cloudsql_proxy is not None:
        # kubectl exec/logs without -c pick the app, not the sidecar, and say nothing about it.
        template_meta["annotations"] = {DEFAULT_CONTAINER: seed.container}
        if connection_name is None:
            raise ValueError(
                f"{seed.name}: a Cloud SQL Auth Proxy sidecar needs the instance connection name"
            )
        pod_spec["initContainers"] = [proxy_container(seed, connection_name)]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": seed.name, "namespace": seed.namespace, "labels": dict(labels)},
        "spec": {
            "replicas": seed.replicas,
            "selector": {"matchLabels": dict(labels)},
            "progressDeadlineSeconds": seed.progress_deadline_seconds,
            "revisionHistoryLimit": seed.revision_history_limit,
            "minReadySeconds": seed.min_ready_seconds,
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }
