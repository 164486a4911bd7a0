"""The names GKE gives the Google Cloud objects behind a Service, as the
monitoring emulators label their series with them (docs/production.md, "GKE
load balancer names", says where each rule comes from).

Ingress (kubernetes/ingress-gce, pkg/utils/namer):

- the NEG of a Service port, and the backend service built on it, is
  `k8s1-{uid8}-{namespace}-{service}-{port}-{hash8}`: uid8 is the first 8
  characters of the cluster uid (16 hex digits in kube-system's `ingress-uid`
  ConfigMap), hash8 the first 8 hex digits of sha256 of
  "uid8;namespace;service;port", and namespace, service and port are trimmed
  together to 38 characters (`trim_fields_evenly`) so the name keeps to 63;
- a v2 Ingress's forwarding rule, URL map and target proxy are
  `k8s2-{fr|fs|um|tp|ts}-{cid8}-{namespace}-{ingress}-{suffix8}`, cid8 and
  suffix8 base-36 content hashes of the kube-system namespace's uid and of
  "uid;namespace;ingress", namespace and ingress trimmed to 36 characters.

Gateway (GKE's controller is closed source): backend services seen in the
wild are `gkegw1-{id4}-{namespace}-{service}-{port}-{hash12}`, always within
63 characters, namespace and service trimmed like the above to 36 characters
less the port's digits while the port stays whole. What goes into id4 and
hash12 is not known: the sandbox hashes its own inputs. Its frontends' names
are not known either: the sandbox gives them the same shape, named after the
Gateway, and names a Gateway's NEGs as ingress-gce does (not verified).

In the sandbox every Service is exposed by an Ingress of its own name, or, if
annotated `modoru.sandbox/exposed-by: gateway`, by a Gateway of its own name."""

from __future__ import annotations

import functools
import hashlib
import uuid

CLUSTER = "tekutoko-prod"
LOCATION = "asia-northeast1"
ZONE = "asia-northeast1-a"
EXPOSED_BY = "modoru.sandbox/exposed-by"  # sandbox-only Service annotation: ingress | gateway

NAME_LIMIT = 63  # Compute Engine resource names
NEG_FIELDS = 38  # namespace + service + port of a NEG name
INGRESS_FIELDS = 36  # namespace + ingress of a v2 frontend name
GATEWAY_FIELDS = 36  # namespace + service + port of a Gateway backend name
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def trim_fields_evenly(budget: int, *fields: str) -> list[str]:
    """Cut fields longer than `budget` together, each in proportion to its
    length (ingress-gce's TrimFieldsEvenly): field i keeps
    len - len * excess // total - 1 characters, and what that leaves unused
    of the budget goes back one character each to the first fields."""
    total = sum(len(f) for f in fields)
    if budget <= 0 or total <= budget:
        return list(fields)
    excess = total - budget
    kept = [len(f) - len(f) * excess // total - 1 for f in fields]
    for i in range(budget - sum(kept)):
        kept[i] += 1
    return [f[:n] for f, n in zip(fields, kept, strict=True)]


def content_hash(text: str, n: int) -> str:
    """ingress-gce's ContentHash: each of the first n bytes of sha256, mod 36,
    as a digit or lowercase letter."""
    return "".join(_BASE36[b % 36] for b in hashlib.sha256(text.encode()).digest()[:n])


@functools.lru_cache(maxsize=64)
def ingress_uid(project: str, cluster: str = CLUSTER) -> str:
    """The cluster uid ingress-gce keeps in kube-system/ingress-uid: 8 random
    bytes in hex upstream, a stable digest of the cluster here."""
    return hashlib.sha256(f"ingress-uid/{project}/{cluster}".encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=64)
def kube_system_uid(project: str, cluster: str = CLUSTER) -> str:
    """The uid of the kube-system Namespace (v2 frontend names hash it)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kube-system/{project}/{cluster}"))


def cluster_uid8(project: str, cluster: str = CLUSTER) -> str:
    return ingress_uid(project, cluster)[:8]


def neg_name_for(uid: str, namespace: str, service: str, port: int) -> str:
    """A NEG (and its backend service) for cluster uid `uid`."""
    uid8 = uid[:8]
    port_text = str(port)
    ns, svc, kept_port = trim_fields_evenly(NEG_FIELDS, namespace, service, port_text)
    digest = hashlib.sha256(f"{uid8};{namespace};{service};{port_text}".encode()).hexdigest()
    return f"k8s1-{uid8}-{ns}-{svc}-{kept_port}-{digest[:8]}"


@functools.lru_cache(maxsize=4096)
def neg_name(project: str, namespace: str, service: str, port: int) -> str:
    return neg_name_for(ingress_uid(project), namespace, service, port)


def ingress_name_for(system_uid: str, kind: str, namespace: str, ingress: str) -> str:
    """A v2 Ingress frontend object: kind fr, fs (HTTPS forwarding rule), um, tp or ts."""
    ns, ing = trim_fields_evenly(INGRESS_FIELDS, namespace, ingress)
    suffix = content_hash(f"{system_uid};{namespace};{ingress}", 8)
    return f"k8s2-{kind}-{content_hash(system_uid, 8)}-{ns}-{ing}-{suffix}"


@functools.lru_cache(maxsize=4096)
def ingress_name(project: str, kind: str, namespace: str, ingress: str) -> str:
    return ingress_name_for(kube_system_uid(project), kind, namespace, ingress)


def gateway_id4(project: str, cluster: str = CLUSTER) -> str:
    return content_hash(f"gateway/{project}/{cluster}", 4)


@functools.lru_cache(maxsize=4096)
def gateway_backend_name(project: str, namespace: str, service: str, port: int) -> str:
    """A Gateway's backend service for a Service port (shape as GKE writes it;
    the hash is the sandbox's own)."""
    port_text = str(port)
    ns, svc = trim_fields_evenly(GATEWAY_FIELDS - len(port_text), namespace, service)
    digest = content_hash(f"{project};{namespace};{service};{port_text}", 12)
    return f"gkegw1-{gateway_id4(project)}-{ns}-{svc}-{port_text}-{digest}"


def gateway_frontend_name(project: str, kind: str, namespace: str, gateway: str) -> str:
    """Not known from GKE: `gkegw1-{id4}-{kind}-{namespace}-{gateway}-{hash}` kept to 63."""
    ns, gw = trim_fields_evenly(GATEWAY_FIELDS - len(kind) - 1, namespace, gateway)
    digest = content_hash(f"{project};{kind};{namespace};{gateway}", 12)
    return f"gkegw1-{gateway_id4(project)}-{kind}-{ns}-{gw}-{digest}"


def https_lb_rule(
    project: str, namespace: str, service: str, port: int, exposed_by: str = "ingress"
) -> dict[str, str]:
    """The `https_lb_rule` labels of a request to the Service's port, through an
    Ingress or a Gateway named after the Service."""
    neg = neg_name(project, namespace, service, port)
    if exposed_by == "gateway":
        frontend = functools.partial(gateway_frontend_name, project)
        backend = gateway_backend_name(project, namespace, service, port)
    else:
        frontend = functools.partial(ingress_name, project)
        backend = neg
    return {
        "project_id": project,
        "region": "global",
        "url_map_name": frontend("um", namespace, service),
        "forwarding_rule_name": frontend("fr", namespace, service),
        "target_proxy_name": frontend("tp", namespace, service),
        "matched_url_path_rule": "UNMATCHED",
        "backend_target_name": backend,
        "backend_target_type": "BACKEND_SERVICE",
        "backend_name": neg,
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
