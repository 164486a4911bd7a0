"""Deployment status as upstream computes it: replica counts and the
Available and Progressing conditions."""

from __future__ import annotations

import copy
from typing import Any

from .clock import Clock, parse_timestamp

Obj = dict[str, Any]


def complete(d: Obj, status: Obj) -> bool:
    replicas = d["spec"]["replicas"]
    return (
        status.get("updatedReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
        and status.get("observedGeneration", 0) >= d["metadata"].get("generation", 1)
    )


def calculate_status(
    d: Obj, all_rss: list[Obj], new_rs: Obj | None, status: Obj, max_unavailable: int, now: str
) -> Obj:
    def total(field: str) -> int:
        return sum((rs.get("status") or {}).get(field, 0) for rs in all_rss)

    available = total("availableReplicas")
    spec_total = sum(rs["spec"]["replicas"] for rs in all_rss)
    result = {
        "observedGeneration": d["metadata"].get("generation", 1),
        "replicas": total("replicas"),
        "updatedReplicas": (new_rs.get("status") or {}).get("replicas", 0) if new_rs else 0,
        "readyReplicas": total("readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": max(0, spec_total - available),
        "conditions": copy.deepcopy(status.get("conditions") or []),
    }
    if status.get("collisionCount") is not None:
        result["collisionCount"] = status["collisionCount"]
    if available >= d["spec"]["replicas"] - max_unavailable:
        set_condition(
            result,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
        )
    else:
        set_condition(
            result,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
        )
    return result


def timed_out(d: Obj, status: Obj, clock: Clock) -> bool:
    cond = condition(status, "Progressing")
    if cond is None or cond["reason"] == "NewReplicaSetAvailable":
        return False
    if cond["reason"] == "ProgressDeadlineExceeded":
        return True
    updated_at = parse_timestamp(cond["lastUpdateTime"]).timestamp()
    return (
        updated_at + clock.real_seconds(d["spec"]["progressDeadlineSeconds"])
        < clock.now().timestamp()
    )


def set_condition(
    status: Obj,
    kind: str,
    value: str,
    reason: str,
    message: str,
    now: str,
    *,
    force: bool = False,
    keep_transition: bool = False,
) -> None:
    """SetDeploymentCondition: same status and reason is a no-op unless forced;
    the transition time moves only when the status changes."""
    conditions = status.setdefault("conditions", [])
    existing = next((c for c in conditions if c["type"] == kind), None)
    if (
        existing is not None
        and existing["status"] == value
        and existing["reason"] == reason
        and not force
    ):
        return
    transition = now
    if (
        existing is not None
        and existing["status"] == value
        and (existing["reason"] != reason or keep_transition)
    ):
        transition = existing["lastTransitionTime"]
    conditions[:] = [c for c in conditions if c["type"] != kind]
    conditions.append(
        {
            "type": kind,
            "status": value,
            "lastUpdateTime": now,
            "lastTransitionTime": transition,
            "reason": reason,
            "message": message,
        }
    )


def condition(status: Obj, kind: str) -> Obj | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


def progressing(new: Obj, old: Obj) -> bool:
    old_old = old.get("replicas", 0) - old.get("updatedReplicas", 0)
    new_old = new.get("replicas", 0) - new.get("updatedReplicas", 0)
    return (
        new.get("updatedReplicas", 0) > old.get("updatedReplicas", 0)
        or new_old < old_old
        or new.get("readyReplicas", 0) > old.get("readyReplicas", 0)
        or new.get("availableReplicas", 0) > old.get("availableReplicas", 0)
    )
