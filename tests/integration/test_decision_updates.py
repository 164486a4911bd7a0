"""Decisions answer at once: the approval and rejection updates return the
verdict (counted or not, and why) on a real dev server, and `modoru approve`
prints it; a decision on a finished change is one line."""

from __future__ import annotations

import asyncio
import json

import pytest

from runbook.decisions import DecisionVerdict
from runbook.models import ApprovalSignal, Phase, RejectSignal, RollbackResult
from workflows.deployment_rollback import DeploymentRollbackWorkflow

from .test_rollback_end_to_end import request, start, wait_phase

pytestmark = pytest.mark.integration


async def decide(handle, signal: ApprovalSignal | RejectSignal) -> DecisionVerdict:
    name = "approval" if isinstance(signal, ApprovalSignal) else "rejection"
    return await handle.execute_update(name, signal, result_type=DecisionVerdict)


async def test_the_approval_update_answers_with_the_verdict(stack) -> None:
    handle = await start(stack, request())
    await wait_phase(handle, Phase.AWAITING_APPROVAL)

    mine = await decide(handle, ApprovalSignal(by="oncall"))
    assert (mine.counted, mine.decision, mine.by) == (False, "approve", "oncall")
    assert "requested this rollback and cannot approve it" in mine.reason
    stranger = await decide(handle, ApprovalSignal(by="intern"))
    assert not stranger.counted and "not an approver" in stranger.reason
    assert (await handle.query(DeploymentRollbackWorkflow.status)).phase == Phase.AWAITING_APPROVAL

    ok = await decide(handle, ApprovalSignal(by="sre-lead", comment="go"))
    assert (
        ok.counted
        and ok.gate == "approval"
        and ok.approvals == ["sre-lead"]
        and ok.approvals_required == 1
    )
    final: RollbackResult = await handle.result()
    assert final.status.phase == Phase.COMPLETED
    # The audit trail says the same as the answers did.
    assert [(e.actor, e.counted) for e in final.status.audit if e.action == "approve"] == [
        ("oncall", False),
        ("intern", False),
        ("sre-lead", True),
    ]


async def test_the_rejection_update_counts_and_the_change_ends_rejected(stack) -> None:
    handle = await start(stack, request())
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    verdict = await decide(handle, RejectSignal(by="backend-lead", reason="forward fix ready"))
    assert (
        verdict.counted and verdict.decision == "reject" and "forward fix ready" in verdict.reason
    )
    final: RollbackResult = await handle.result()
    assert final.status.phase == Phase.REJECTED


async def test_the_cli_prints_the_update_s_verdict_and_refuses_a_finished_change(stack) -> None:
    handle = await start(stack, request())
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    stranger = await stack.cli("approve", handle.id, "--by", "intern")
    assert (
        stranger.returncode == 1
        and stranger.stderr.strip().startswith("not counted: ")
        and "not an approver" in stranger.stderr
    )
    ok = await stack.cli("approve", handle.id, "--by", "backend-lead")
    assert (
        ok.returncode == 0
        and ok.stdout.strip().startswith("counted: ")
        and "(1/1 approvals)" in ok.stdout
    )
    await handle.result()

    late = await stack.cli("reject", handle.id, "--by", "sre-lead", "--reason", "too late")
    lines = [line for line in late.stderr.splitlines() if line.strip()]
    assert (
        late.returncode == 2
        and len(lines) == 1
        and lines[0].startswith("modoru: ")
        and handle.id in lines[0]
    ), late.stderr


async def test_the_stock_temporal_cli_gets_the_verdict_from_the_update(stack) -> None:
    from tests.workflows.conftest import binary

    handle = await start(stack, request())
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    proc = await asyncio.create_subprocess_exec(
        binary("temporal"),
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        handle.id,
        "--name",
        "approval",
        "--input",
        '{"by": "backend-lead", "comment": "via temporal CLI"}',
        "--address",
        stack.settings.temporal_address,
        "--output",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    answer = json.loads(out.decode())
    verdict = DecisionVerdict.model_validate(answer.get("result", answer))
    assert (
        verdict.counted and verdict.by == "backend-lead" and "via temporal CLI" in verdict.reason
    ), answer
    final: RollbackResult = await handle.result()
    assert final.status.approvals == ["backend-lead"]
