"""Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from .clock import parse_timestamp
from .resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    EVENTS,
    NAMESPACES,
    PODS,
    REPLICASETS,
    SECRETS,
    SERVICES,
    ResourceType,
)
from .selectors import label_selector_string

Obj = dict[str, Any]
Column = tuple[str, str, int, Callable[[Obj], Any]]  # name, type, priority, cell


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def human_age(timestamp: str | None, now: dt.datetime | None = None) -> str:
    """kubectl's duration.HumanDuration."""
    if not timestamp:
        return "<unknown>"
    now = now or dt.datetime.now(dt.UTC)
    seconds = int((now - parse_timestamp(timestamp)).total_seconds())
    if seconds < 0:
        return "<invalid>"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def _name(o: Obj) -> str:
    return o["metadata"]["name"]


def _age(o: Obj) -> str:
    return human_age(o["metadata"].get("creationTimestamp"))


def _sidecars(pod: Obj) -> set[str]:
    return {
        c["name"]
        for c in pod["spec"].get("initContainers") or []
        if c.get("restartPolicy") == "Always"
    }


def _pod_status(pod: Obj) -> str:
    # After printPod in kubernetes/pkg/printers/internalversion: init containers first.
    status = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    reason = status.get("reason") or status.get("phase") or "Pending"
    sidecars = _sidecars(pod)
    total_init = len(pod["spec"].get("initContainers") or [])
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated") or {}, state.get("waiting") or {}
        if (
            terminated
            and terminated.get("exitCode") == 0
            or cs.get("name") in sidecars
            and cs.get("started")
        ):
            continue
        if terminated:
            reason = (
                f"Init:{terminated.get('reason') or 'ExitCode:' + str(terminated.get('exitCode'))}"
            )
        elif waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{total_init}"
        return reason
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason"):
            reason = state["terminated"]["reason"]
    return reason


def _pod_ready(pod: Obj) -> str:
    status = pod.get("status") or {}
    sidecars = _sidecars(pod)
    ready = sum(1 for cs in status.get("containerStatuses") or [] if cs.get("ready"))
    ready += sum(
        1
        for cs in status.get("initContainerStatuses") or []
        if cs.get("name") in sidecars and cs.get("started") and cs.get("ready")
    )
    total = len(pod["spec"].get("containers") or []) + len(sidecars)
    return f"{ready}/{total}"


def _pod_restarts(pod: Obj) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    count = sum(cs.get("restartCount", 0) for cs in statuses)
    last = None
    for cs in statuses:
        finished = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        if finished:
            last = finished
    return f"{count} ({human_age(last)} ago)" if count and last else str(count)


def _containers(o: Obj) -> str:
    spec = o["spec"]["template"]["spec"] if "template" in o["spec"] else o["spec"]
    return ",".join(c["name"] for c in spec.get("containers") or [])


def _images(o: Obj) -> str:
    spec = o["spec"]["template"]["spec"] if "template" in o["spec"] else o["spec"]
    return ",".join(c.get("image", "") for c in spec.get("containers") or [])


def _service_ports(svc: Obj) -> str:
    parts = []
    for port in svc["spec"].get("ports") or []:
        text = f"{port['port']}"
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        parts.append(f"{text}/{port.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _external_ip(svc: Obj) -> str:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if ingress:
        return ",".join(i.get("ip") or i.get("hostname", "") for i in ingress)
    return "<pending>" if svc["spec"].get("type") == "LoadBalancer" else "<none>"


def _event_object(e: Obj) -> str:
    ref = e.get("involvedObject") or {}
    return f"{(ref.get('kind') or '').lower()}/{ref.get('name', '')}"


COLUMNS: dict[str, list[Column]] = {
    PODS.key: [
        ("Name", "string", 0, _name),
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        ("Restarts", "string", 0, _pod_restarts),
        ("Age", "string", 0, _age),
        ("IP", "string", 1, lambda p: (p.get("status") or {}).get("podIP") or "<none>"),
        ("Node", "string", 1, lambda p: p["spec"].get("nodeName") or "<none>"),
    ],
    DEPLOYMENTS.key: [
        ("Name", "string", 0, _name),
        (
            "Ready",
            "string",
            0,
            lambda d: (
                f"{(d.get('status') or {}).get('readyReplicas', 0)}/{d['spec'].get('replicas', 0)}"
            ),
        ),
        ("Up-to-date", "integer", 0, lambda d: (d.get("status") or {}).get("updatedReplicas", 0)),
        ("Available", "integer", 0, lambda d: (d.get("status") or {}).get("availableReplicas", 0)),
        ("Age", "string", 0, _age),
        ("Containers", "string", 1, _containers),
        ("Images", "string", 1, _images),
        ("Selector", "string", 1, lambda d: label_selector_string(d["spec"].get("selector"))),
    ],
    REPLICASETS.key: [
        ("Name", "string", 0, _name),
        ("Desired", "integer", 0, lambda r: r["spec"].get("replicas", 0)),
        ("Current", "integer", 0, lambda r: (r.get("status") or {}).get("replicas", 0)),
        ("Ready", "integer", 0, lambda r: (r.get("status") or {}).get("readyReplicas", 0)),
        ("Age", "string", 0, _age),
        ("Containers", "string", 1, _containers),
        ("Images", "string", 1, _images),
        ("Selector", "string", 1, lambda r: label_selector_string(r["spec"].get("selector"))),
    ],
    EVENTS.key: [
        (
            "Last Seen",
            "string",
            0,
            lambda e: human_age(e.get("lastTimestamp") or e.get("firstTimestamp")),
        ),
        ("Type", "string", 0, lambda e: e.get("type", "")),
        ("Reason", "string", 0, lambda e: e.get("reason", "")),
        ("Object", "string", 0, _event_object),
        ("Message", "string", 0, lambda e: e.get("message", "")),
    ],
    SERVICES.key: [
        ("Name", "string", 0, _name),
        ("Type", "string", 0, lambda s: s["spec"].get("type", "ClusterIP")),
        ("Cluster-IP", "string", 0, lambda s: s["spec"].get("clusterIP") or "<none>"),
        ("External-IP", "string", 0, _external_ip),
        ("Port(s)", "string", 0, _service_ports),
        ("Age", "string", 0, _age),
        (
            "Selector",
            "string",
            1,
            lambda s: (
                ",".join(f"{k}={v}" for k, v in sorted((s["spec"].get("selector") or {}).items()))
                or "<none>"
            ),
        ),
    ],
    CONFIGMAPS.key: [
        ("Name", "string", 0, _name),
        ("Data", "integer", 0, lambda c: len(c.get("data") or {}) + len(c.get("binaryData") or {})),
        ("Age", "string", 0, _age),
    ],
    SECRETS.key: [
        ("Name", "string", 0, _name),
        ("Type", "string", 0, lambda s: s.get("type", "Opaque")),
        ("Data", "integer", 0, lambda s: len(s.get("data") or {})),
        ("Age", "string", 0, _age),
    ],
    NAMESPACES.key: [
        ("Name", "string", 0, _name),
        ("Status", "string", 0, lambda n: (n.get("status") or {}).get("phase", "Active")),
        ("Age", "string", 0, _age),
    ],
}


def _partial_metadata(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


def to_table(
    resource: ResourceType,
    objects: list[Obj],
    resource_version: str,
    include_object: str = "Metadata",
    continue_token: str | None = None,
) -> Obj:
    columns = COLUMNS[resource.key]
    rows = []
    for obj in objects:
        row: Obj = {"cells": [cell(obj) for _, _, _, cell in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = _partial_metadata(obj)
        rows.append(row)
    metadata: Obj = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if name == "Name" else "",
                "description": "",
                "priority": priority,
            }
            for name, kind, priority, _ in columns
        ],
        "rows": rows,
    }
