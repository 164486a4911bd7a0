"""DeploymentRollbackWorkflow on the time-skipping server: approvals,
deadlines, escalations and the paths that end without a change."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from runbook.cd_config import RegistryConfig
from runbook.models import (
    ApprovalSignal,
    Phase,
    RejectSignal,
    RollbackRequest,
    RollbackResult,
    RollbackStatus,
    Severity,
)
from workflows.deployment_rollback import DeploymentRollbackWorkflow

QUEUE = "test-rollbacks"


def worker(env: WorkflowEnvironment, fake) -> Worker:
    # A bug in workflow code fails the test at once instead of retrying the task forever.
    return Worker(
        env.client,
        task_queue=QUEUE,
        workflows=[DeploymentRollbackWorkflow],
        activities=fake.activities(),
        workflow_failure_exception_types=[Exception],
    )


def request(severity: Severity = Severity.INVESTIGATE, **changes) -> RollbackRequest:
    return RollbackRequest(
        deployment="tekutoko-api",
        severity=severity,
        reason="error rate 60%",
        requested_by="oncall",
        **changes,
    )


async def start(env: WorkflowEnvironment, req: RollbackRequest):
    return await env.client.start_workflow(
        DeploymentRollbackWorkflow.run, req, id=f"rb-{uuid.uuid4()}", task_queue=QUEUE
    )


async def status(handle) -> RollbackStatus:
    return await handle.query(DeploymentRollbackWorkflow.status)


async def wait_phase(handle, phase: Phase) -> RollbackStatus:
    for _ in range(200):
        current = await status(handle)
        if current.phase == phase:
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {phase}")


async def test_immediate_rollback_runs_without_approval_and_meets_the_sla(
    time_skipping_env, fake
) -> None:
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request(Severity.IMMEDIATE))
        result: RollbackResult = await handle.result()
    assert result.status.phase == Phase.COMPLETED and result.status.sla_met is True
    assert fake.calls == ["lookup", "plan", "backup", "undo", "wait", "verify"]
    assert [n.kind for n in fake.notices] == ["start", "complete"]
    assert (
        "【ロールバック開始】" in fake.notices[0].text
        and "リビジョン3からリビジョン2" in fake.notices[1].text
    )
    assert result.status.sla_deadline - result.status.detected_at == dt.timedelta(minutes=5)
    done = {item.key for item in result.status.checklist if item.done_at}
    assert {"decide", "target", "backup", "notify_start", "undo", "rollout", "notify_done"} <= done


async def test_investigate_waits_for_a_listed_approver_not_the_requester(
    time_skipping_env, fake
) -> None:
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request())
        await wait_phase(handle, Phase.AWAITING_APPROVAL)
        await handle.signal(
            DeploymentRollbackWorkflow.approve, ApprovalSignal(by="oncall", request_id="self")
        )
        await handle.signal(
            DeploymentRollbackWorkflow.approve, ApprovalSignal(by="intern", request_id="nobody")
        )
        current = await status(handle)
        assert current.phase == Phase.AWAITING_APPROVAL and "undo" not in fake.calls
        await handle.signal(
            DeploymentRollbackWorkflow.approve, ApprovalSignal(by="sre-lead", request_id="lead")
        )
        result: RollbackResult = await handle.result()
    audit = {e.request_id: e for e in result.status.audit if e.request_id}
    assert audit["self"].counted is False and "requested this rollback" in audit["self"].detail
    assert audit["nobody"].counted is False and "not an approver" in audit["nobody"].detail
    assert audit["lead"].counted is True
    assert result.status.approvals == ["sre-lead"] and result.status.phase == Phase.COMPLETED


async def test_reject_ends_with_nothing_changed(time_skipping_env, fake) -> None:
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request())
        await wait_phase(handle, Phase.AWAITING_APPROVAL)
        await handle.signal(
            DeploymentRollbackWorkflow.reject,
            RejectSignal(by="backend-lead", reason="a forward fix is ready"),
        )
        result: RollbackResult = await handle.result()
    assert result.status.phase == Phase.REJECTED
    assert "undo" not in fake.calls
    assert "a forward fix is ready" in result.status.message
    assert fake.notices[-1].kind == "rejected"


async def test_escalations_at_half_time_and_deadline_and_keep_waiting(
    time_skipping_env, fake
) -> None:
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request())
        await wait_phase(handle, Phase.AWAITING_APPROVAL)
        await time_skipping_env.sleep(dt.timedelta(minutes=16))
        current = await status(handle)
        assert current.escalations == ["half_time", "deadline"]
        assert current.sla_met is False and current.phase == Phase.AWAITING_APPROVAL
        await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="sre-lead"))
        result: RollbackResult = await handle.result()
    assert result.status.phase == Phase.COMPLETED and result.status.sla_met is False
    assert [n.kind for n in fake.notices].count("escalation") == 2


async def test_deadline_proceeds_when_policy_says_so(time_skipping_env, fake) -> None:
    fake.entry.approval.on_deadline = "proceed"
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request())
        result: RollbackResult = await handle.result()
    assert result.status.phase == Phase.COMPLETED
    assert any("policy proceeds" in e.detail for e in result.status.audit)


async def test_a_slow_rollout_breaches_the_five_minute_sla(time_skipping_env, fake) -> None:
    fake.rollout_seconds = 0.5
    async with worker(time_skipping_env, fake):
        handle = await start(
            time_skipping_env,
            request(
                Severity.IMMEDIATE, detected_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
            ),
        )
        result: RollbackResult = await handle.result()
    assert result.status.sla_met is False


async def test_missing_revision_fails_before_any_change(time_skipping_env, fake) -> None:
    fake.plan_error = (
        "revision 9 is not in the history of deployment/tekutoko-api (revisions: 1, 2, 3)"
    )
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request(to_revision=9))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert fake.calls == ["lookup", "plan"]


async def test_already_at_target_and_dry_run_change_nothing(time_skipping_env, fake) -> None:
    fake.already_at_target = True
    async with worker(time_skipping_env, fake):
        result: RollbackResult = await (await start(time_skipping_env, request())).result()
        assert result.no_op and "nothing to do" in result.status.message
        fake.already_at_target = False
        result = await (await start(time_skipping_env, request(dry_run=True))).result()
    assert result.no_op and result.plan.to_revision == 2 and "dry run" in result.status.message
    assert "backup" not in fake.calls and "undo" not in fake.calls


async def test_failed_verification_fails_the_workflow(time_skipping_env, fake) -> None:
    fake.verify_ok = False
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request(Severity.IMMEDIATE))
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert "verification failed" in str(info.value.cause)
    assert fake.notices[-1].kind == "failure"


async def test_a_target_image_that_cannot_be_pulled_is_diagnosed_with_the_registry(
    time_skipping_env, fake
) -> None:
    fake.pull_fails = True
    fake.entry = fake.entry.model_copy(
        update={
            "registry": RegistryConfig(
                project="tekutoko-prod", repository="tekutoko", package="tekutoko-api"
            )
        }
    )
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request(Severity.IMMEDIATE))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert fake.calls[-1] == "diagnose_pull img:1.2.0"
    assert (
        fake.notices[-1].kind == "failure"
        and "tag of img:1.2.0 is not in Artifact Registry" in fake.notices[-1].text
    )


async def test_without_a_registry_a_pull_failure_is_reported_as_it_is(
    time_skipping_env, fake
) -> None:
    fake.pull_fails = True
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request(Severity.IMMEDIATE))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert not any(c.startswith("diagnose_pull") for c in fake.calls)
    assert "ImagePullBackOff" in fake.notices[-1].text


async def test_a_rejection_before_the_gate_is_announced_like_any_other(
    time_skipping_env, fake
) -> None:
    # Signal-with-start: the rejection is in before the catalog says who may reject.
    async with worker(time_skipping_env, fake):
        handle = await time_skipping_env.client.start_workflow(
            DeploymentRollbackWorkflow.run,
            request(),
            id=f"rb-{uuid.uuid4()}",
            task_queue=QUEUE,
            start_signal="reject",
            start_signal_args=[RejectSignal(by="sre-lead", reason="forward fix")],
        )
        result: RollbackResult = await handle.result()
    assert (
        result.status.phase == Phase.REJECTED
        and result.status.message == "rejected by sre-lead: forward fix"
    )
    assert "undo" not in fake.calls
    assert [n.kind for n in fake.notices] == [
        "rejected"
    ]  # no approval was asked for; the channels hear why
