"""The redeploy, restore and troubleshooting workflows on the time-skipping
server: nothing is dispatched, applied or deleted before the approval; a
rejection or a refusal changes nothing; the runbook's deadline escalates while
approval is awaited; a failed pipeline run and an image that cannot be pulled
are named in the failure notice."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from runbook.cd_models import ManifestSource, RedeployRequest
from runbook.models import ApprovalSignal, Phase, RejectSignal
from runbook.repair_models import RepairRequest, RestoreRequest
from tests.workflows.cd_fakes import FakeCd
from workflows.redeploy import RedeployWorkflow
from workflows.restore import RestoreWorkflow
from workflows.troubleshoot import TroubleshootWorkflow

QUEUE = "test-cd"
ALL = [RedeployWorkflow, RestoreWorkflow, TroubleshootWorkflow]


def worker(env: WorkflowEnvironment, fake: FakeCd) -> Worker:
    return Worker(
        env.client,
        task_queue=QUEUE,
        workflows=ALL,
        activities=fake.activities(),
        workflow_failure_exception_types=[Exception],
    )


def redeploy(**changes) -> RedeployRequest:
    return RedeployRequest(
        **{
            "deployment": "tekutoko-api",
            "tag": "1.2.0",
            "reason": "1.3.0 fails",
            "requested_by": "oncall",
            "language": "en",
            **changes,
        }
    )


async def start(env: WorkflowEnvironment, workflow, request):
    return await env.client.start_workflow(
        workflow.run, request, id=f"cd-{uuid.uuid4().hex[:8]}", task_queue=QUEUE
    )


async def at_gate(handle, workflow):
    for _ in range(200):
        status = await handle.query(workflow.status)
        if status.phase in (Phase.AWAITING_APPROVAL, Phase.FAILED):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("never reached the gate")


async def test_redeploy_dispatches_only_after_approval_and_follows_the_run(
    time_skipping_env,
) -> None:
    fake = FakeCd()
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, RedeployWorkflow, redeploy())
        waiting = await at_gate(handle, RedeployWorkflow)
        assert (
            fake.calls == ["images", "plan"]
            and waiting.pending.plan["to_image"].endswith(":1.2.0")
            and waiting.pending.plan["tag"] == "1.2.0"
        )
        await handle.signal(
            RedeployWorkflow.approve, ApprovalSignal(by="oncall")
        )  # the requester does not count
        await handle.signal(RedeployWorkflow.approve, ApprovalSignal(by="sre-lead"))
        result = await handle.result()
    assert result.status.phase is Phase.COMPLETED
    assert fake.calls == [
        "images",
        "plan",
        "dispatch 1.2.0",
        "run waiting",
        "run in_progress",
        "run completed",
        "wait",
        "verify",
    ]
    assert [n.kind for n in fake.notices] == ["approval_needed", "start", "complete"]
    assert any(
        "waiting for a reviewer of environment production" in e.detail for e in result.status.audit
    )
    done = {item.key for item in result.status.checklist if item.done_at}
    assert {
        "decide",
        "target",
        "history",
        "notify_start",
        "undo",
        "backup",
        "rollout",
        "notify_done",
    } <= done
    assert {item.key: item.done_at for item in result.status.checklist}[
        "postmortem"
    ] is None  # due, not done


@pytest.mark.parametrize(
    ("tag", "said"), [("9.9.9", "is not in Artifact Registry"), ("1.3.0", "is already live")]
)
async def test_redeploy_refuses_an_absent_or_live_tag_before_anything_is_dispatched(
    time_skipping_env, tag, said
) -> None:
    fake = FakeCd()
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, RedeployWorkflow, redeploy(tag=tag))
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert said in failure.value.cause.message and failure.value.cause.type == "RedeployRefused"
    assert not any(c.startswith("dispatch") for c in fake.calls) and fake.notices == []


async def test_a_rejected_redeploy_dispatches_nothing(time_skipping_env) -> None:
    fake = FakeCd()
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, RedeployWorkflow, redeploy())
        await at_gate(handle, RedeployWorkflow)
        await handle.signal(
            RedeployWorkflow.reject, RejectSignal(by="backend-lead", reason="forward fix is ready")
        )
        result = await handle.result()
    assert result.status.phase is Phase.REJECTED and "nothing was changed" in result.status.message
    assert fake.calls == ["images", "plan"] and [n.kind for n in fake.notices] == [
        "approval_needed",
        "rejected",
    ]


async def test_the_deadline_escalates_while_the_redeploy_awaits_approval(time_skipping_env) -> None:
    fake = FakeCd()
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, RedeployWorkflow, redeploy())
        await at_gate(handle, RedeployWorkflow)
        await time_skipping_env.sleep(dt.timedelta(minutes=16))
        status = await handle.query(RedeployWorkflow.status)
        assert status.escalations == ["half_time", "deadline"] and status.sla_met is False
        await handle.signal(RedeployWorkflow.approve, ApprovalSignal(by="sre-lead"))
        result = await handle.result()
    assert result.status.phase is Phase.COMPLETED


async def test_a_failed_pipeline_run_fails_the_redeploy_with_its_steps(time_skipping_env) -> None:
    fake = FakeCd(conclusion="failure")
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, RedeployWorkflow, redeploy(severity="immediate"))
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert (
        "concluded failure" in failure.value.cause.message
        and failure.value.cause.type == "RedeployFailed"
    )
    assert "wait" not in fake.calls and "deploy: Deploy" in fake.notices[-1].text


def restore(**changes) -> RestoreRequest:
    return RestoreRequest(
        **{
            "deployment": "tekutoko-api",
            "source": ManifestSource(kind="artifact", name="deployment-backup-20261119-030000"),
            "reason": "cluster state is wrong",
            "requested_by": "oncall",
            "language": "en",
            **changes,
        }
    )


async def test_restore_applies_only_after_approval(time_skipping_env) -> None:
    fake = FakeCd()
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, RestoreWorkflow, restore())
        waiting = await at_gate(handle, RestoreWorkflow)
        assert fake.calls == [
            "download deployment-backup-20261119-030000",
            "check",
        ] and waiting.check.diff == ["-image: 1.3.0", "+image: 1.2.0"]
        assert waiting.pending.plan["manifest_sha256"] == "d" * 64
        await handle.signal(RestoreWorkflow.approve, ApprovalSignal(by="sre-lead"))
        result = await handle.result()
    assert result.status.phase is Phase.COMPLETED and fake.calls[-3:] == ["apply", "wait", "verify"]


async def test_an_invalid_manifest_is_refused_before_the_gate(time_skipping_env) -> None:
    fake = FakeCd(check_problems=["it is deployment/walks-api, not deployment/tekutoko-api"])
    async with worker(time_skipping_env, fake):
        handle = await start(
            time_skipping_env,
            RestoreWorkflow,
            restore(source=ManifestSource(kind="backup", name="modoru-backup-x")),
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert (
        "walks-api" in failure.value.cause.message and failure.value.cause.type == "RestoreRefused"
    )
    assert "apply" not in fake.calls and fake.notices == []


async def test_an_image_pull_failure_is_diagnosed_in_the_failure_notice(time_skipping_env) -> None:
    fake = FakeCd(pull_fails=True)
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, RestoreWorkflow, restore(severity="immediate"))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await handle.query(RestoreWorkflow.status)
    assert fake.calls[-2:] == ["wait", "diagnose"] and status.pull is not None
    failure = fake.notices[-1]
    assert (
        failure.kind == "failure"
        and "tag 2.0.0-missing is not in Artifact Registry" in failure.text
        and "downloadArtifacts: granted" in failure.text
    )


async def test_a_troubleshooting_step_is_rejected_and_nothing_is_deleted(time_skipping_env) -> None:
    fake = FakeCd()
    async with worker(time_skipping_env, fake):
        handle = await start(
            time_skipping_env,
            TroubleshootWorkflow,
            RepairRequest(
                deployment="tekutoko-api",
                action="delete-replicaset",
                replicaset="api-old",
                reason="old pods remain",
                requested_by="oncall",
                language="en",
            ),
        )
        await at_gate(handle, TroubleshootWorkflow)
        await handle.signal(
            TroubleshootWorkflow.reject,
            RejectSignal(by="sre-lead", reason="they drain by themselves"),
        )
        result = await handle.result()
    assert result.status.phase is Phase.REJECTED and fake.calls == ["repair plan"]


async def test_a_restart_is_the_same_restart_however_often_it_is_tried(time_skipping_env) -> None:
    fake = FakeCd()
    async with worker(time_skipping_env, fake):
        handle = await start(
            time_skipping_env,
            TroubleshootWorkflow,
            RepairRequest(
                deployment="tekutoko-api",
                action="restart",
                reason="stale pods",
                requested_by="oncall",
                language="en",
            ),
        )
        waiting = await at_gate(handle, TroubleshootWorkflow)
        await handle.signal(TroubleshootWorkflow.approve, ApprovalSignal(by="backend-lead"))
        result = await handle.result()
    restarted = waiting.pending.plan["restarted_at"]
    assert result.status.phase is Phase.COMPLETED and fake.calls == [
        "repair plan",
        f"restart {restarted}",
        "wait",
        "verify",
    ]


def restart() -> RepairRequest:
    return RepairRequest(
        deployment="tekutoko-api",
        action="restart",
        reason="stale pods",
        requested_by="oncall",
        language="en",
    )


@pytest.mark.parametrize(
    ("workflow", "request_of"),
    [(RedeployWorkflow, redeploy), (RestoreWorkflow, restore), (TroubleshootWorkflow, restart)],
)
async def test_decisions_sent_as_updates_hear_whether_they_counted(
    time_skipping_env, workflow, request_of
) -> None:
    fake = FakeCd()
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, workflow, request_of())
        await at_gate(handle, workflow)
        own = await handle.execute_update(workflow.approval, ApprovalSignal(by="oncall"))
        counted = await handle.execute_update(workflow.approval, ApprovalSignal(by="sre-lead"))
        result = await handle.result()
    assert not own.counted and own.reason and own.gate == "approval"
    assert counted.counted and counted.approvals == ["sre-lead"]
    assert result.status.phase is Phase.COMPLETED


async def test_a_rejection_sent_as_an_update_stops_the_redeploy_at_the_gate(
    time_skipping_env,
) -> None:
    fake = FakeCd()
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, RedeployWorkflow, redeploy())
        await at_gate(handle, RedeployWorkflow)
        verdict = await handle.execute_update(
            RedeployWorkflow.rejection, RejectSignal(by="backend-lead", reason="forward fix ready")
        )
        result = await handle.result()
    assert verdict.counted and verdict.decision == "reject"
    assert result.status.phase is Phase.REJECTED and fake.calls == ["images", "plan"]
