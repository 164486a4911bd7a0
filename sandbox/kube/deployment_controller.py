"""The Deployment controller, after upstream's rolling-update, revision and
progress logic (pkg/controller/deployment)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from typing import Any

from .clock import Clock, parse_timestamp
from .deployment_status import (
    calculate_status,
    complete,
    condition,
    progressing,
    set_condition,
    timed_out,
)
from .errors import ApiError
from .events import EventRecorder
from .replicaset_controller import controller_ref, owner_reference
from .resources import DEPLOYMENTS, REPLICASETS, ResourceType
from .selectors import selector_from_match_labels
from .store import NAME_SUFFIX_ALPHABET, Store
from .workqueue import WorkQueue

Obj = dict[str, Any]

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"
ANNOTATIONS_NOT_COPIED = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        DESIRED_REPLICAS,
        MAX_REPLICAS,
        "deprecated.deployment.rollback.to",
    }
)
REVISION_HISTORY_MAX_CHARS = 2000


def revision_of(obj: Obj | None) -> int:
    if obj is None:
        return 0
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0") or 0)
    except ValueError:
        return 0


def template_without_hash(template: Obj) -> Obj:
    stripped = copy.deepcopy(template)
    labels = (stripped.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return _normalize(stripped)


def _normalize(value: Any) -> Any:
    """Semantic equality treats empty maps and lists as absent, as apiequality does."""
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def templates_equal(a: Obj, b: Obj) -> bool:
    return template_without_hash(a) == template_without_hash(b)


def compute_hash(template: Obj, collision_count: int | None) -> str:
    data = json.dumps(template_without_hash(template), sort_keys=True, separators=(",", ":"))
    digest = int.from_bytes(
        hashlib.blake2b(f"{data}|{collision_count or 0}".encode(), digest_size=4).digest(), "big"
    )
    return "".join(NAME_SUFFIX_ALPHABET[ord(c) % len(NAME_SUFFIX_ALPHABET)] for c in str(digest))


def resolve_int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value)


def fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against spec.replicas."""
    spec = d["spec"]
    if spec.get("strategy", {}).get("type") != "RollingUpdate":
        return 0, 0
    rolling = spec["strategy"].get("rollingUpdate") or {}
    replicas = spec.get("replicas", 1)
    surge = resolve_int_or_percent(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = resolve_int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas) if replicas else 0


class DeploymentController:
    def __init__(self, store: Store, recorder: EventRecorder, clock: Clock) -> None:
        self.store = store
        self.recorder = recorder
        self.clock = clock
        self.queue = WorkQueue("deployment-controller", self.sync)
        store.add_listener(self._on_change)

    def _on_change(
        self, event_type: str, resource: ResourceType, obj: Obj, old: Obj | None
    ) -> None:
        ns = obj["metadata"].get("namespace", "")
        if resource is DEPLOYMENTS and event_type != "DELETED":
            self.queue.add((ns, obj["metadata"]["name"]))
        elif resource is REPLICASETS:
            ref = controller_ref(obj, "Deployment")
            if ref is not None:
                self.queue.add((ns, ref["name"]))

    # -- the sync loop -----------------------------------------------------------

    def sync(self, key: tuple[str, str]) -> None:
        namespace, name = key
        stored = self.store.peek(DEPLOYMENTS, namespace, name)
        if stored is None:
            return
        d = copy.deepcopy(stored)
        previous_status = copy.deepcopy(d.get("status") or {})
        selects = selector_from_match_labels(d["spec"].get("selector"))
        uid = d["metadata"]["uid"]
        rss = [
            copy.deepcopy(rs)
            for rs in self.store.children(uid, REPLICASETS)
            if (controller_ref(rs) or {}).get("uid") == uid
            and selects(
                {
                    "metadata": {
                        "labels": (rs["spec"]["template"].get("metadata") or {}).get("labels") or {}
                    }
                }
            )
        ]
        status = copy.deepcopy(previous_status)
        status.setdefault("conditions", [])
        self._check_paused_condition(d, status)
        paused = bool(d["spec"].get("paused"))
        new_rs, old_rss = self._sync_revision(d, rss, create=not paused, status=status)
        all_rss = old_rss + ([new_rs] if new_rs else [])
        if paused:
            self._scale_only(d, new_rs, old_rss)
            self._cleanup(d, old_rss)
            self._write_status(
                d,
                calculate_status(
                    d, all_rss, new_rs, status, fenceposts(d)[1], self.clock.timestamp()
                ),
            )
            return
        if d["spec"].get("strategy", {}).get("type") == "Recreate":
            self._rollout_recreate(d, new_rs, old_rss)
        else:
            self._rollout_rolling(d, new_rs, old_rss, previous_status)
        all_rss = old_rss + ([new_rs] if new_rs else [])
        self._sync_rollout_status(d, all_rss, new_rs, status, previous_status)

    # -- revisions and the new ReplicaSet ----------------------------------------

    def _sync_revision(
        self, d: Obj, rss: list[Obj], *, create: bool, status: Obj
    ) -> tuple[Obj | None, list[Obj]]:
        rss.sort(key=lambda rs: (rs["metadata"]["creationTimestamp"], rs["metadata"]["name"]))
        new_rs = next(
            (rs for rs in rss if templates_equal(rs["spec"]["template"], d["spec"]["template"])),
            None,
        )
        old_rss = [rs for rs in rss if rs is not new_rs]
        new_revision = str(max((revision_of(rs) for rs in old_rss), default=0) + 1)
        if new_rs is not None:
            updated = copy.deepcopy(new_rs)
            changed = self._set_new_rs_annotations(d, updated, new_revision, exists=True)
            if changed or updated["spec"].get("minReadySeconds", 0) != d["spec"].get(
                "minReadySeconds", 0
            ):
                updated["spec"]["minReadySeconds"] = d["spec"].get("minReadySeconds", 0)
                new_rs = self.store.update(REPLICASETS, updated, check_version=False)
            if not any(c["type"] == "Progressing" for c in status["conditions"]) and not d[
                "spec"
            ].get("paused"):
                self._set_condition(
                    status,
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    f'Found new replica set "{new_rs["metadata"]["name"]}"',
                )
        elif create:
            new_rs = self._create_new_rs(d, old_rss, new_revision, status)
        if new_rs is not None:
            self._set_deployment_revision(
                d, (new_rs["metadata"].get("annotations") or {}).get(REVISION, new_revision)
            )
        return new_rs, old_rss

    def _set_new_rs_annotations(self, d: Obj, rs: Obj, new_revision: str, *, exists: bool) -> bool:
        annotations = rs["metadata"].setdefault("annotations", {})
        changed = False
        for k, v in (d["metadata"].get("annotations") or {}).items():
            if k not in ANNOTATIONS_NOT_COPIED and annotations.get(k) != v:
                annotations[k] = v
                changed = True
        old = annotations.get(REVISION)
        old_int = int(old) if old and old.isdigit() else 0
        if old_int < int(new_revision):
            annotations[REVISION] = new_revision
            changed = True
            if old is not None:
                history = annotations.get(REVISION_HISTORY, "")
                parts = history.split(",") if history else []
                parts.append(old)
                while len(",".join(parts)) > REVISION_HISTORY_MAX_CHARS and len(parts) > 1:
                    parts.pop(0)
                annotations[REVISION_HISTORY] = ",".join(parts)
        if not exists:
            surge, _ = fenceposts(d)
            annotations[DESIRED_REPLICAS] = str(d["spec"]["replicas"])
            annotations[MAX_REPLICAS] = str(d["spec"]["replicas"] + surge)
        return changed

    def _create_new_rs(self, d: Obj, old_rss: list[Obj], new_revision: str, status: Obj) -> Obj:
        template = copy.deepcopy(d["spec"]["template"])
        pod_hash = compute_hash(template, status.get("collisionCount"))
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        rs = {
            "metadata": {
                "name": f"{d['metadata']['name']}-{pod_hash}",
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [owner_reference(d)],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": d["spec"].get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        rs["spec"]["replicas"] = self._new_rs_replicas(d, old_rss, rs)
        self._set_new_rs_annotations(d, rs, new_revision, exists=False)
        try:
            created = self.store.create(REPLICASETS, rs, d["metadata"]["namespace"])
        except ApiError as exc:
            if exc.code != 409:
                raise
            existing = self.store.peek(
                REPLICASETS, d["metadata"]["namespace"], rs["metadata"]["name"]
            )
            if (
                existing is not None
                and (controller_ref(existing) or {}).get("uid") == d["metadata"]["uid"]
                and templates_equal(existing["spec"]["template"], d["spec"]["template"])
            ):
                return copy.deepcopy(existing)
            status["collisionCount"] = (status.get("collisionCount") or 0) + 1
            self._write_status(
                d, {**(d.get("status") or {}), "collisionCount": status["collisionCount"]}
            )
            raise
        if created["spec"]["replicas"] > 0:
            self._event(
                d,
                f"Scaled up replica set {created['metadata']['name']} to "
                f"{created['spec']['replicas']}",
            )
        self._set_condition(
            status,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            f'Created new replica set "{created["metadata"]["name"]}"',
        )
        return created

    def _set_deployment_revision(self, d: Obj, revision: str) -> None:
        annotations = d["metadata"].get("annotations") or {}
        if annotations.get(REVISION) == revision:
            return
        updated = copy.deepcopy(
            self.store.peek(DEPLOYMENTS, d["metadata"]["namespace"], d["metadata"]["name"])
        )
        updated["metadata"].setdefault("annotations", {})[REVISION] = revision
        stored = self.store.update(DEPLOYMENTS, updated, check_version=False)
        d["metadata"] = stored["metadata"]

    # -- scaling -----------------------------------------------------------------

    def _new_rs_replicas(self, d: Obj, old_rss: list[Obj], new_rs: Obj) -> int:
        replicas = d["spec"]["replicas"]
        if d["spec"].get("strategy", {}).get("type") == "Recreate":
            return replicas
        surge, _ = fenceposts(d)
        current = sum(rs["spec"]["replicas"] for rs in old_rss) + new_rs["spec"]["replicas"]
        max_total = replicas + surge
        if current >= max_total:
            return new_rs["spec"]["replicas"]
        return new_rs["spec"]["replicas"] + min(
            max_total - current, replicas - new_rs["spec"]["replicas"]
        )

    def _scale(self, d: Obj, rs: Obj, count: int) -> bool:
        before = rs["spec"]["replicas"]
        surge, _ = fenceposts(d)
        annotations = rs["metadata"].setdefault("annotations", {})
        want_desired, want_max = str(d["spec"]["replicas"]), str(d["spec"]["replicas"] + surge)
        if (
            before == count
            and annotations.get(DESIRED_REPLICAS) == want_desired
            and annotations.get(MAX_REPLICAS) == want_max
        ):
            return False
        rs["spec"]["replicas"] = count
        annotations[DESIRED_REPLICAS] = want_desired
        annotations[MAX_REPLICAS] = want_max
        stored = self.store.update(REPLICASETS, rs, check_version=False)
        rs.clear()
        rs.update(stored)
        if before != count:
            direction = "up" if count > before else "down"
            self._event(
                d,
                f"Scaled {direction} replica set {rs['metadata']['name']} to {count} from {before}",
            )
        return before != count

    def _scale_only(self, d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        """A paused deployment still follows spec.replicas, without rolling out."""
        active = [rs for rs in old_rss + ([new_rs] if new_rs else []) if rs["spec"]["replicas"] > 0]
        if len(active) == 1 and active[0]["spec"]["replicas"] != d["spec"]["replicas"]:
            self._scale(d, active[0], d["spec"]["replicas"])

    def _rollout_rolling(
        self, d: Obj, new_rs: Obj, old_rss: list[Obj], previous_status: Obj
    ) -> None:
        replicas = d["spec"]["replicas"]
        if new_rs["spec"]["replicas"] > replicas:
            if self._scale(d, new_rs, replicas):
                return
        elif new_rs["spec"]["replicas"] < replicas and self._scale(
            d, new_rs, self._new_rs_replicas(d, old_rss, new_rs)
        ):
            return
        if self._reconcile_old(d, new_rs, old_rss):
            return
        if complete(d, previous_status):
            self._cleanup(d, old_rss)

    def _reconcile_old(self, d: Obj, new_rs: Obj, old_rss: list[Obj]) -> bool:
        if sum(rs["spec"]["replicas"] for rs in old_rss) == 0:
            return False
        _, max_unavailable = fenceposts(d)
        min_available = d["spec"]["replicas"] - max_unavailable
        all_rss = old_rss + [new_rs]
        new_unavailable = new_rs["spec"]["replicas"] - (new_rs.get("status") or {}).get(
            "availableReplicas", 0
        )
        max_scaled_down = (
            sum(rs["spec"]["replicas"] for rs in all_rss) - min_available - new_unavailable
        )
        if max_scaled_down <= 0:
            return False
        oldest_first = sorted(
            old_rss, key=lambda rs: (rs["metadata"]["creationTimestamp"], rs["metadata"]["name"])
        )
        cleaned = 0
        for rs in oldest_first:
            if cleaned >= max_scaled_down:
                break
            available = (rs.get("status") or {}).get("availableReplicas", 0)
            unhealthy = rs["spec"]["replicas"] - available
            if rs["spec"]["replicas"] == 0 or unhealthy <= 0:
                continue
            cut = min(max_scaled_down - cleaned, unhealthy)
            self._scale(d, rs, rs["spec"]["replicas"] - cut)
            cleaned += cut
        available_total = sum(
            (rs.get("status") or {}).get("availableReplicas", 0) for rs in all_rss
        )
        scaled = 0
        if available_total > min_available:
            budget = available_total - min_available
            for rs in oldest_first:
                if scaled >= budget:
                    break
                if rs["spec"]["replicas"] == 0:
                    continue
                cut = min(rs["spec"]["replicas"], budget - scaled)
                self._scale(d, rs, rs["spec"]["replicas"] - cut)
                scaled += cut
        return cleaned + scaled > 0

    def _rollout_recreate(self, d: Obj, new_rs: Obj, old_rss: list[Obj]) -> None:
        for rs in old_rss:
            if rs["spec"]["replicas"]:
                self._scale(d, rs, 0)
        if any((rs.get("status") or {}).get("replicas", 0) for rs in old_rss):
            return  # old pods still running: wait for them to go
        if new_rs["spec"]["replicas"] != d["spec"]["replicas"]:
            self._scale(d, new_rs, d["spec"]["replicas"])

    def _cleanup(self, d: Obj, old_rss: list[Obj]) -> None:
        limit = d["spec"].get("revisionHistoryLimit")
        if limit is None:
            return
        cleanable = [rs for rs in old_rss if not rs["metadata"].get("deletionTimestamp")]
        excess = len(cleanable) - limit
        if excess <= 0:
            return
        cleanable.sort(
            key=lambda rs: (
                revision_of(rs),
                rs["metadata"]["creationTimestamp"],
                rs["metadata"]["name"],
            )
        )
        for rs in cleanable[:excess]:
            rs_status = rs.get("status") or {}
            if rs_status.get("replicas", 0) or rs["spec"]["replicas"]:
                continue
            if rs["metadata"].get("generation", 1) > rs_status.get("observedGeneration", 0):
                continue
            if (
                self.store.peek(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"])
                is not None
            ):
                self.store.delete(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"])

    # -- status --------------------------------------------------------------------

    def _sync_rollout_status(
        self, d: Obj, all_rss: list[Obj], new_rs: Obj | None, status: Obj, previous: Obj
    ) -> None:
        new_status = calculate_status(
            d, all_rss, new_rs, status, fenceposts(d)[1], self.clock.timestamp()
        )
        subject = (
            f'ReplicaSet "{new_rs["metadata"]["name"]}"'
            if new_rs
            else f'Deployment "{d["metadata"]["name"]}"'
        )
        current = condition(new_status, "Progressing")
        deadline = d["spec"].get("progressDeadlineSeconds")
        key = (d["metadata"]["namespace"], d["metadata"]["name"])
        if deadline is not None:
            if complete(d, new_status):
                self._set_condition(
                    new_status,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f"{subject} has successfully progressed.",
                )
            elif progressing(new_status, previous):
                keep = current is not None and current["status"] == "True"
                self._set_condition(
                    new_status,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    f"{subject} is progressing.",
                    force=True,
                    keep_transition=keep,
                )
            elif timed_out(d, new_status, self.clock):
                self._set_condition(
                    new_status,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f"{subject} has timed out progressing.",
                )
            now_progressing = condition(new_status, "Progressing")
            if now_progressing is not None and now_progressing["reason"] not in (
                "NewReplicaSetAvailable",
                "ProgressDeadlineExceeded",
            ):
                updated_at = parse_timestamp(now_progressing["lastUpdateTime"]).timestamp()
                remaining = (
                    updated_at + self.clock.real_seconds(deadline) - self.clock.now().timestamp()
                )
                self.queue.add_after(key, remaining + 0.05)
        self._write_status(d, new_status)

    def _check_paused_condition(self, d: Obj, status: Obj) -> None:
        if d["spec"].get("progressDeadlineSeconds") is None:
            return
        cond = condition(status, "Progressing")
        if cond is not None and cond["reason"] == "ProgressDeadlineExceeded":
            return
        paused = bool(d["spec"].get("paused"))
        was_paused = cond is not None and cond["reason"] == "DeploymentPaused"
        if paused and not was_paused:
            self._set_condition(
                status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused"
            )
        elif not paused and was_paused:
            self._set_condition(
                status, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed"
            )

    def _set_condition(
        self, status: Obj, kind: str, value: str, reason: str, message: str, **options: bool
    ) -> None:
        set_condition(status, kind, value, reason, message, self.clock.timestamp(), **options)

    def _write_status(self, d: Obj, status: Obj) -> None:
        stored = self.store.peek(DEPLOYMENTS, d["metadata"]["namespace"], d["metadata"]["name"])
        if stored is None or stored.get("status") == status:
            return
        updated = dict(stored)
        updated["status"] = status
        self.store.update(DEPLOYMENTS, updated, subresource="status", check_version=False)

    def _event(self, d: Obj, message: str) -> None:
        self.recorder.record(
            d, "Normal", "ScalingReplicaSet", message, component="deployment-controller"
        )
