"""What the detection benchmarks share: a stack on tekutoko-release with a catalog of
their own, and a release guard followed from its start to its rollback."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from runbook.guard_models import GuardPhase, GuardRequest, GuardStatus
from starter.embedded import EmbeddedStack, free_port
from worker.settings import Settings, bundled_catalog
from workflows.release_guard import ReleaseGuardWorkflow, guard_workflow_id


def started_detection_stack(
    state: Path,
    monitoring: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    speed: float,
    traffic_rps: int,
    traffic_seconds: int,
) -> EmbeddedStack:
    """`modoru up`'s stack on tekutoko-release, started (the caller stops it), its catalog
    the bundled one with each service's monitoring as `monitoring` makes it from the bundled
    one, notices to a file and one approver. The worker takes the catalog from
    MODORU_CATALOG as the stack starts; the variable is as it was once it has."""
    catalog = yaml.safe_load(bundled_catalog().read_text())
    for entry in catalog["services"]:
        entry["monitoring"] = monitoring(entry["monitoring"])
        entry["channels"] = [{"kind": "jsonl", "path": str(state / "notices.jsonl")}]
        entry["approval"]["approvers"] = ["sre-lead"]
    (state / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    stack = EmbeddedStack(
        state_dir=state,
        temporal_port=free_port(),
        ui_port=free_port(),
        scenario="tekutoko-release",
        persist=False,
        traffic_rps=traffic_rps,
        traffic_seconds=traffic_seconds,
        clock_speed=speed,
    )
    before = os.environ.get("MODORU_CATALOG")
    os.environ["MODORU_CATALOG"] = str(state / "catalog.yaml")
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    finally:
        if before is None:
            os.environ.pop("MODORU_CATALOG", None)
        else:
            os.environ["MODORU_CATALOG"] = before
    return stack


async def watching_guard(client, settings: Settings, *, interval: float, duration: int):
    """A release guard on tekutoko-api, once it watches (its baseline recorded)."""
    guard = await client.start_workflow(
        ReleaseGuardWorkflow.run,
        GuardRequest(
            deployment="tekutoko-api",
            duration_seconds=duration,
            interval_seconds=interval,
            requested_by="bench",
            language="en",
        ),
        id=f"{guard_workflow_id('default', 'tekutoko-api')}-{uuid.uuid4().hex[:6]}",
        task_queue=settings.task_queue,
    )
    while (
        phase := (status := await guard.query(ReleaseGuardWorkflow.status)).phase
    ) is not GuardPhase.WATCHING:
        if phase in (GuardPhase.FAILED, GuardPhase.FINISHED):
            raise RuntimeError(f"the guard ended {phase.value}: {status.message}")
        await asyncio.sleep(0.1)
    return guard


async def guard_decision(guard) -> GuardStatus:
    """The guard's status once it has started a rollback."""
    while not (status := await guard.query(ReleaseGuardWorkflow.status)).rollback_workflow_id:
        if status.phase in (GuardPhase.FAILED, GuardPhase.FINISHED):
            raise RuntimeError(f"the guard ended {status.phase.value}: {status.message}")
        await asyncio.sleep(0.1)
    return status
