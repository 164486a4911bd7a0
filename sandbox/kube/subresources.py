"""Subresources with their own shapes: a pod's log and a workload's scale."""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from . import errors
from .kubelet import Kubelet
from .patch import apply_patch
from .resources import DEPLOYMENTS, PODS, REPLICASETS, ResourceType
from .selectors import label_selector_string
from .store import Store


def pod_log(
    store: Store, kubelet: Kubelet, request: web.Request, namespace: str, name: str
) -> web.Response:
    pod = store.get(PODS, namespace, name)
    container = request.query.get("container")
    names = [
        c["name"] for key in ("containers", "initContainers") for c in pod["spec"].get(key) or []
    ]
    if container and container not in names:
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    lines = kubelet.logs(pod["metadata"]["uid"], container or None) or []
    tail = request.query.get("tailLines")
    if tail is not None:
        count = int(tail)
        lines = lines[-count:] if count > 0 else []
    if request.query.get("timestamps") not in ("true", "1"):
        lines = [line.split(" ", 1)[1] if " " in line else line for line in lines]
    return web.Response(text="".join(f"{line}\n" for line in lines), content_type="text/plain")


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": obj["spec"].get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": label_selector_string(obj["spec"].get("selector")),
        },
    }


async def scale(
    store: Store, request: web.Request, resource: ResourceType, namespace: str, name: str, verb: str
) -> web.Response:
    if resource not in (DEPLOYMENTS, REPLICASETS):
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
    current = store.get(resource, namespace, name)
    if verb == "get":
        return web.json_response(scale_of(current))
    if verb == "update":
        try:
            body = await request.json()
        except ValueError:
            raise errors.bad_request("the request body is not valid JSON") from None
    elif verb == "patch":
        body = apply_patch(
            request.headers.get("Content-Type", ""), scale_of(current), await request.read()
        )
    else:
        raise errors.method_not_allowed(
            f"{request.method} is not supported on the scale subresource"
        )
    replicas = ((body or {}).get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        raise errors.invalid(
            "autoscaling",
            "Scale",
            name,
            [
                (
                    "spec.replicas",
                    "FieldValueInvalid",
                    f"Invalid value: {replicas}: must be greater than or equal to 0",
                )
            ],
        )
    sent_rv = ((body or {}).get("metadata") or {}).get("resourceVersion")
    updated = copy.deepcopy(current)
    updated["spec"]["replicas"] = replicas
    if sent_rv:
        updated["metadata"]["resourceVersion"] = sent_rv
    return web.json_response(scale_of(store.update(resource, updated)))
