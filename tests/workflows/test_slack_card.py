"""The approval message in Slack follows the gate: posted as a card whose buttons
name this run's gate and plan, shown again after each decision, and closed with
the outcome and no buttons."""

from __future__ import annotations

import json

from temporalio.worker import Worker

from runbook.models import ApprovalSignal, Phase, RejectSignal
from tests.workflows.slack_fakes import POSTED, SlackCardCluster
from tests.workflows.test_rollback_workflow import QUEUE, request, start, wait_phase
from workflows.deployment_rollback import DeploymentRollbackWorkflow


def worker(env, fake: SlackCardCluster) -> Worker:
    return Worker(
        env.client,
        task_queue=QUEUE,
        workflows=[DeploymentRollbackWorkflow],
        activities=fake.activities(),
        workflow_failure_exception_types=[Exception],
    )


async def test_the_card_names_the_gate_follows_each_decision_and_closes_approved(
    time_skipping_env,
) -> None:
    fake = SlackCardCluster()
    updates = fake.updates
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request())
        status = await wait_phase(handle, Phase.AWAITING_APPROVAL)
        await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="oncall"))
        await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="sre-lead"))
        result = await handle.result()
    (posted,) = [n for n in fake.notices if n.kind == "approval_needed"]
    card = posted.card
    assert card is not None and card.open and card.approvals_required == 1
    gate = status.pending
    assert gate is not None
    assert json.loads(card.button_value()) == {
        "w": gate.workflow_id,
        "r": gate.run_id,
        "g": gate.gate,
        "d": gate.digest,
    }
    assert "image: img:1.3.0 → img:1.2.0" in card.summary and "revision 3 → 2" in card.summary
    last = updates[-1].card
    assert last.outcome == "approved" and last.approvals == ["sre-lead"]
    assert any("oncall (approve) not counted" in line for line in last.decisions)
    assert any("sre-lead approved" in line for line in last.decisions)
    assert all(u.messages == [POSTED] for u in updates)
    assert result.status.phase == Phase.COMPLETED


async def test_a_rejected_gate_s_card_says_so_and_keeps_no_buttons(time_skipping_env) -> None:
    fake = SlackCardCluster()
    updates = fake.updates
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request())
        await wait_phase(handle, Phase.AWAITING_APPROVAL)
        await handle.signal(
            DeploymentRollbackWorkflow.reject, RejectSignal(by="backend-lead", reason="fix ready")
        )
        await handle.result()
    last = updates[-1].card
    assert last.outcome == "rejected" and not last.open
    assert any("backend-lead rejected" in line for line in last.decisions)
