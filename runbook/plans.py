"""The plans people sign: for each gate, the facts of the change they were shown,
as a plain dict whose digest goes into their signed decision. The workflows
show these; the activities that make the change rebuild them from their own
request and accept a decision only if the digests match."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from .models import RollbackPlan


def start_request(request: BaseModel) -> dict[str, Any]:
    return request.model_dump(mode="json", exclude={"start", "guard_seal", "guard_facts"})


def start_gate_plan(request: BaseModel, plan: dict[str, Any]) -> dict[str, Any]:
    """What the requester signs at a run's start gate: the request as they made it and the
    plan the run has made from it (the first gate's)."""
    return {
        "kind": "start",
        "workflow": type(request).__name__,
        "request": start_request(request),
        "plan": plan,
    }


def rollback_plan(plan: RollbackPlan) -> dict[str, Any]:
    return {
        "kind": "rollback",
        "namespace": plan.namespace,
        "deployment": plan.deployment,
        "deployment_uid": plan.deployment_uid,
        "from_revision": plan.from_revision,
        "to_revision": plan.to_revision,
        "to_images": plan.to_images,
    }


def migration_plan(
    service: str, from_version: int | None, to_version: int | None, steps: int
) -> dict[str, Any]:
    return {
        "kind": "migration",
        "service": service,
        "from_version": from_version,
        "to_version": to_version,
        "steps": steps,
    }


def clone_plan(
    service: str,
    source: str,
    clone: str,
    point_in_time: dt.datetime,
    checks: Sequence[BaseModel],
) -> dict[str, Any]:
    return {
        "kind": "pitr-clone",
        "service": service,
        "source": source,
        "clone": clone,
        "point_in_time": point_in_time.astimezone(dt.UTC).isoformat(),
        "checks": [c.model_dump(mode="json") for c in checks],
    }


def switch_plan(
    service: str,
    deployment: str,
    source_connection: str,
    clone_connection: str,
    results: Sequence[BaseModel],
) -> dict[str, Any]:
    return {
        "kind": "pitr-switch",
        "service": service,
        "deployment": deployment,
        "from": source_connection,
        "to": clone_connection,
        "checks": [r.model_dump(mode="json") for r in results],
    }
