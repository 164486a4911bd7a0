"""The ReplicaSet controller: keeps the number of pods at spec.replicas and
reports their readiness in status."""

from __future__ import annotations

import copy
from typing import Any

from .clock import Clock, parse_timestamp
from .events import NODE_NAME, EventRecorder
from .resources import PODS, REPLICASETS, ResourceType
from .store import Store
from .workqueue import WorkQueue

Obj = dict[str, Any]


def controller_ref(obj: Obj, kind: str | None = None) -> Obj | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and (kind is None or ref.get("kind") == kind):
            return ref
    return None


def owner_reference(owner: Obj) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_is_ready(pod: Obj) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def ready_since(pod: Obj) -> float | None:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond["type"] == "Ready" and cond["status"] == "True":
            return parse_timestamp(cond["lastTransitionTime"]).timestamp()
    return None


class ReplicaSetController:
    def __init__(self, store: Store, recorder: EventRecorder, clock: Clock) -> None:
        self.store = store
        self.recorder = recorder
        self.clock = clock
        self.queue = WorkQueue("replicaset-controller", self.sync)
        store.add_listener(self._on_change)

    def _on_change(
        self, event_type: str, resource: ResourceType, obj: Obj, old: Obj | None
    ) -> None:
        ns = obj["metadata"].get("namespace", "")
        if resource is REPLICASETS and event_type != "DELETED":
            self.queue.add((ns, obj["metadata"]["name"]))
        elif resource is PODS:
            ref = controller_ref(obj, "ReplicaSet")
            if ref is not None:
                self.queue.add((ns, ref["name"]))

    def active_pods(self, rs: Obj) -> list[Obj]:
        uid = rs["metadata"]["uid"]
        return [
            pod
            for pod in self.store.children(uid, PODS)
            if (controller_ref(pod) or {}).get("uid") == uid
            and not pod["metadata"].get("deletionTimestamp")
            and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        ]

    def sync(self, key: tuple[str, str]) -> None:
        namespace, name = key
        rs = self.store.peek(REPLICASETS, namespace, name)
        if rs is None:
            return
        pods = self.active_pods(rs)
        want = rs["spec"].get("replicas", 1)
        if len(pods) < want:
            for _ in range(want - len(pods)):
                pods.append(self._create_pod(rs))
        elif len(pods) > want:
            for pod in sorted(pods, key=_deletion_rank)[: len(pods) - want]:
                self.store.delete(PODS, namespace, pod["metadata"]["name"])
                self.recorder.record(
                    rs,
                    "Normal",
                    "SuccessfulDelete",
                    f"Deleted pod: {pod['metadata']['name']}",
                    component="replicaset-controller",
                )
            pods = self.active_pods(rs)
        self._update_status(rs, pods)

    def _create_pod(self, rs: Obj) -> Obj:
        template = copy.deepcopy(rs["spec"]["template"])
        meta = template.get("metadata") or {}
        pod = {
            "metadata": {
                "generateName": rs["metadata"]["name"][:58] + "-",
                "labels": meta.get("labels") or {},
                "ownerReferences": [owner_reference(rs)],
            },
            "spec": {**template.get("spec", {}), "nodeName": NODE_NAME},
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        }
        if meta.get("annotations"):
            pod["metadata"]["annotations"] = meta["annotations"]
        created = self.store.create(PODS, pod, rs["metadata"]["namespace"])
        self.recorder.record(
            rs,
            "Normal",
            "SuccessfulCreate",
            f"Created pod: {created['metadata']['name']}",
            component="replicaset-controller",
        )
        return created

    def _update_status(self, rs: Obj, pods: list[Obj]) -> None:
        min_ready = rs["spec"].get("minReadySeconds") or 0
        now = self.clock.now().timestamp()
        labels = (rs["spec"]["template"].get("metadata") or {}).get("labels") or {}
        ready = [p for p in pods if pod_is_ready(p)]
        available = 0
        wake_in: float | None = None
        for pod in ready:
            since = ready_since(pod) or now
            if min_ready == 0 or since + self.clock.real_seconds(min_ready) <= now:
                available += 1
            else:
                remaining = since + self.clock.real_seconds(min_ready) - now
                wake_in = remaining if wake_in is None else min(wake_in, remaining)
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(
                1
                for p in pods
                if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
            ),
            "readyReplicas": len(ready),
            "availableReplicas": available,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        if wake_in is not None:
            self.queue.add_after(
                (rs["metadata"]["namespace"], rs["metadata"]["name"]), wake_in + 0.05
            )
        if rs.get("status") != status:
            updated = dict(rs)
            updated["status"] = status
            self.store.update(REPLICASETS, updated, subresource="status", check_version=False)


def _deletion_rank(pod: Obj) -> tuple:
    """Pods the upstream controller deletes first sort first."""
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(
        pod.get("status", {}).get("phase", "Pending"), 0
    )
    restarts = max(
        (c.get("restartCount", 0) for c in pod.get("status", {}).get("containerStatuses") or []),
        default=0,
    )
    created = pod["metadata"].get("creationTimestamp", "")
    return (
        bool(pod["spec"].get("nodeName")),
        phase_rank,
        pod_is_ready(pod),
        -restarts,
        _negate(created),
        pod["metadata"]["uid"],
    )


def _negate(timestamp: str) -> float:
    return -parse_timestamp(timestamp).timestamp() if timestamp else 0.0
