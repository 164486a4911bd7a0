"""The names GKE gives the Google Cloud objects behind a Service, as the
monitoring emulators label their series with them.

An Ingress's forwarding rule, URL map and target proxy follow ingress-gce's v2
namer, `k8s2-{fr|um|tp}-{cluster uid8}-{namespace}-{ingress}-{hash8}`; the
NEG of a Service port, and the backend service built on it,
`k8s1-{cluster uid8}-{namespace}-{service}-{port}-{hash8}`. Here every
Service is exposed by an Ingress of the same name."""

from __future__ import annotations

import functools
import hashlib

CLUSTER = "tekutoko-prod"
LOCATION = "asia-northeast1"
ZONE = "asia-northeast1-a"


@functools.lru_cache(maxsize=4096)
def _hash8(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:8]


def cluster_uid8(project: str, cluster: str = CLUSTER) -> str:
    return _hash8("cluster-uid", project, cluster)


def neg_name(project: str, namespace: str, service: str, port: int) -> str:
    uid = cluster_uid8(project)
    return f"k8s1-{uid}-{namespace}-{service}-{port}-{_hash8(uid, namespace, service, str(port))}"


def ingress_name(project: str, kind: str, namespace: str, ingress: str) -> str:
    uid = cluster_uid8(project)
    return f"k8s2-{kind}-{uid}-{namespace}-{ingress}-{_hash8(uid, namespace, ingress)}"


def https_lb_rule(project: str, namespace: str, service: str, port: int) -> dict[str, str]:
    backend = neg_name(project, namespace, service, port)
    return {
        "project_id": project,
        "region": "global",
        "url_map_name": ingress_name(project, "um", namespace, service),
        "forwarding_rule_name": ingress_name(project, "fr", namespace, service),
        "target_proxy_name": ingress_name(project, "tp", namespace, service),
        "matched_url_path_rule": "UNMATCHED",
        "backend_target_name": backend,
        "backend_target_type": "BACKEND_SERVICE",
        "backend_name": backend,
        "backend_type": "NETWORK_ENDPOINT_GROUP",
        "backend_scope": ZONE,
        "backend_scope_type": "ZONE",
    }


def prometheus_target(project: str, namespace: str, job: str, pod: str) -> dict[str, str]:
    """A pod scraped by a PodMonitoring named `job`: instance is pod:port-name."""
    return {
        "project_id": project,
        "location": LOCATION,
        "cluster": CLUSTER,
        "namespace": namespace,
        "job": job,
        "instance": f"{pod}:http",
    }


def k8s_container(project: str, namespace: str, pod: str, container: str) -> dict[str, str]:
    """The k8s_container monitored resource of a container (GKE system metrics and logs)."""
    return {
        "project_id": project,
        "location": LOCATION,
        "cluster_name": CLUSTER,
        "namespace_name": namespace,
        "pod_name": pod,
        "container_name": container,
    }
