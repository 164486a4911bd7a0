"""The runbook's remedies for old pods that remain, as approved steps on the
sandbox: an old ReplicaSet is deleted and a rollout restarted only after
approval (nothing changes while the approval is awaited), the live ReplicaSet
is never deleted, and a deleted ReplicaSet's manifest is kept."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.client import WorkflowFailureError

from runbook.models import Phase
from runbook.repair_models import RepairRequest, RepairStatus
from tests.conftest import RunningSandbox
from tests.integration.cd_stack import IMAGE, CdStack, cd_entry, cd_stack
from tests.waiting import phase_of, until
from workflows.troubleshoot import TroubleshootWorkflow

pytestmark = pytest.mark.integration
MUTATING = ("create", "update", "patch", "delete")


@pytest.fixture
async def stack(dev_env, sandbox: RunningSandbox, tmp_path) -> AsyncIterator[CdStack]:
    sandbox.kubectl(
        "set", "image", "deployment/tekutoko-api", f"api={IMAGE}:1.2.0"
    )  # healthy, so verification can pass
    sandbox.kubectl("rollout", "status", "deployment/tekutoko-api", "--timeout=60s")
    async for running in cd_stack(dev_env, sandbox, tmp_path, cd_entry(tmp_path)):
        yield running


def replicasets(stack: CdStack) -> dict[int, dict]:
    listed = json.loads(
        stack.sandbox.kubectl("get", "replicasets", "-l", "app=tekutoko-api", "-o", "json").stdout
    )["items"]
    return {
        int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]): rs for rs in listed
    }


async def start(stack: CdStack, **changes):
    request = RepairRequest(
        **{
            "deployment": "tekutoko-api",
            "reason": "old pods remain",
            "requested_by": "oncall",
            "language": "en",
            **changes,
        }
    )
    return await stack.client.start_workflow(
        TroubleshootWorkflow.run,
        request,
        id=f"troubleshoot-{uuid.uuid4().hex[:8]}",
        task_queue=stack.queue,
    )


async def awaiting(handle) -> RepairStatus:
    return await until(
        "the repair to reach its approval gate (or to fail)",
        lambda: handle.query(TroubleshootWorkflow.status),
        lambda s: s.phase in (Phase.AWAITING_APPROVAL, Phase.FAILED),
        phase_of,
        60,
    )


async def test_an_old_replicaset_is_deleted_only_after_approval_and_kept(stack: CdStack) -> None:
    old = replicasets(stack)[1]["metadata"]["name"]
    handle = await start(stack, action="delete-replicaset", replicaset=old)
    mark = stack.sandbox.mark()
    status = await awaiting(handle)
    assert status.phase is Phase.AWAITING_APPROVAL and {
        rs.role for rs in status.plan.replicasets if rs.name == old
    } == {"old"}
    await asyncio.sleep(1)
    assert [
        e for e in stack.sandbox.requests_since(mark) if e["verb"] in MUTATING
    ] == []  # nothing before the approval
    assert old in [rs["metadata"]["name"] for rs in replicasets(stack).values()]
    assert await stack.approve(handle, model=RepairStatus) is Phase.AWAITING_APPROVAL
    result = await asyncio.wait_for(handle.result(), 90)
    assert result.status.phase is Phase.COMPLETED, result.status.message
    assert old not in [rs["metadata"]["name"] for rs in replicasets(stack).values()]
    kept = json.loads(
        stack.sandbox.kubectl("get", f"configmap/modoru-backup-rs-{old}", "-o", "json").stdout
    )
    assert f"name: {old}" in kept["data"]["replicaset.yaml"]
    assert [
        (e.actor, e.action)
        for e in result.status.audit
        if e.action in ("approve", "delete-replicaset")
    ] == [("sre-lead", "approve"), ("modoru", "delete-replicaset")]


async def test_the_live_replicaset_is_never_deleted(stack: CdStack) -> None:
    live = replicasets(stack)[max(replicasets(stack))]["metadata"]["name"]
    mark = stack.sandbox.mark()
    handle = await start(stack, action="delete-replicaset", replicaset=live)
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), 30)
    assert (
        "is the live one" in failure.value.cause.message
        and "nothing was changed" in failure.value.cause.message
    )
    assert [e for e in stack.sandbox.requests_since(mark) if e["verb"] in MUTATING] == []


async def test_a_restart_happens_only_after_approval(stack: CdStack) -> None:
    def restarted_at() -> str | None:
        deployment = json.loads(
            stack.sandbox.kubectl("get", "deployment/tekutoko-api", "-o", "json").stdout
        )
        return (deployment["spec"]["template"]["metadata"].get("annotations") or {}).get(
            "kubectl.kubernetes.io/restartedAt"
        )

    handle = await start(stack, action="restart")
    await awaiting(handle)
    await asyncio.sleep(1)
    assert restarted_at() is None
    said = await stack.cli(
        "approve", handle.id, "--by", "backend-lead", "--comment", "stale pods"
    )  # the CLI's approve, as a user gives it
    assert said.returncode == 0 and "counted" in said.stdout, said.stdout + said.stderr
    result = await asyncio.wait_for(handle.result(), 90)
    assert result.status.phase is Phase.COMPLETED, result.status.message
    assert restarted_at() is not None and result.status.verification.ok
    assert "successfully rolled out" in result.status.rollout
    shown = await stack.cli("status", handle.id)
    assert (
        shown.returncode == 0 and "restartedAt" not in shown.stderr and "completed" in shown.stdout
    ), shown.stdout + shown.stderr
    as_json = json.loads((await stack.cli("status", handle.id, "--json")).stdout)
    assert as_json["action"] == "restart" and as_json["phase"] == "completed"


async def test_a_crashing_pods_log_tail_is_in_the_stuck_rollouts_diagnostics(
    stack: CdStack,
) -> None:
    stack.sandbox.kubectl("set", "image", "deployment/tekutoko-api", f"api={IMAGE}:1.3.1-crash")

    async def diagnosed():
        deployment = stack.ops._serialize(
            await stack.ops.apps.read_namespaced_deployment("tekutoko-api", "default")
        )
        return await stack.ops.diagnose(deployment, with_events=True)

    diagnostics = await until(
        "a crashing pod's log tail in the diagnostics",
        diagnosed,
        lambda d: bool(d.logs),
        lambda d: f"no logs; problems {d.problems}",
        20,
        interval=0.2,
    )
    assert (
        any("CrashLoopBackOff" in p or "Error" in p for p in diagnostics.problems)
        or diagnostics.problems
    )
    assert (
        diagnostics.logs
        and diagnostics.logs[0].startswith("pod/tekutoko-api-")
        and len(diagnostics.logs) <= 51
    )
