"""The shared shell on its own: a change workflow that brings only its own steps
(look up, gate, act) gets the approval desk, the gate and its notices, the
escalations, and failing as refused before a change and failed (announced)
after one."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from runbook import activity_refs as refs
from runbook.catalog import ApprovalPolicy, Channel, ServiceEntry
from runbook.migration_models import ExecRequest, ExecResult
from runbook.models import (
    ApprovalSignal,
    Notice,
    NoticeResult,
    Phase,
    RejectSignal,
    ServiceByName,
)
from tests.waiting import phase_of, until
from tests.workflows.toy_change import ToyChange, ToyRequest, ToyStatus

QUEUE = "test-change-shell"


class Toys:
    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def activities(self) -> list:
        @activity.defn(name=refs.SERVICE.name)
        async def service(request: ServiceByName) -> ServiceEntry:
            return ServiceEntry(
                name=request.name,
                deployment=request.name,
                service=request.name,
                approval=ApprovalPolicy(approvers=["sre-lead"]),
                channels=[Channel(kind="console")],
            )

        @activity.defn(name=refs.NOTIFY.name)
        async def notify(notice: Notice) -> NoticeResult:
            self.notices.append(notice)
            return NoticeResult(delivered=["console"])

        @activity.defn(name=refs.EXEC.name)
        async def exec_(request: ExecRequest) -> ExecResult:
            raise ApplicationError(
                "the pod went away mid-change", type="ExecFailed", non_retryable=True
            )

        return [service, notify, exec_]


async def run_toy(
    env: WorkflowEnvironment, toys: Toys, request: ToyRequest, steer=None
) -> tuple[ToyStatus, ToyStatus | BaseException]:
    """The toy's final status (queried while its worker runs) and its result or failure."""
    async with Worker(
        env.client, task_queue=QUEUE, workflows=[ToyChange], activities=toys.activities()
    ):
        handle = await env.client.start_workflow(
            ToyChange.run, request, id=f"toy-{uuid.uuid4().hex[:8]}", task_queue=QUEUE
        )
        if steer is not None:
            await until(
                "the toy change to await approval",
                lambda: handle.query(ToyChange.status),
                lambda s: s.phase is Phase.AWAITING_APPROVAL,
                phase_of,
                10,
                interval=0.05,
            )
            await steer(handle)
        outcome: ToyStatus | BaseException
        try:
            outcome = await handle.result()
        except WorkflowFailureError as exc:
            outcome = exc.cause
        return await handle.query(ToyChange.status), outcome


async def test_a_change_with_only_its_own_steps_is_gated_and_completes(time_skipping_env) -> None:
    toys = Toys()

    async def approve(handle) -> None:
        await handle.signal(
            ToyChange.approve, ApprovalSignal(by="oncall")
        )  # the requester: not counted
        await handle.signal(ToyChange.approve, ApprovalSignal(by="sre-lead"))

    _, result = await run_toy(time_skipping_env, toys, ToyRequest(), approve)
    assert (
        isinstance(result, ToyStatus)
        and result.phase is Phase.COMPLETED
        and result.approvals == ["sre-lead"]
    )
    assert [(e.actor, e.counted) for e in result.audit if e.action == "approve"] == [
        ("oncall", False),
        ("sre-lead", True),
    ]
    assert [n.kind for n in toys.notices] == ["approval_needed"]


async def test_a_rejection_is_announced_and_changes_nothing(time_skipping_env) -> None:
    toys = Toys()

    async def reject(handle) -> None:
        await handle.signal(ToyChange.reject, RejectSignal(by="sre-lead", reason="forward fix"))

    _, result = await run_toy(time_skipping_env, toys, ToyRequest(), reject)
    assert isinstance(result, ToyStatus) and result.phase is Phase.REJECTED
    assert (
        result.message == "rejected by sre-lead: forward fix; nothing was changed"
        and Phase.EXECUTING.value not in result.timings
    )
    assert [n.kind for n in toys.notices] == ["approval_needed", "rejected"]


async def test_a_stop_before_any_change_is_a_refusal_without_a_failure_notice(
    time_skipping_env,
) -> None:
    toys = Toys()
    status, raised = await run_toy(time_skipping_env, toys, ToyRequest(refuse=True))
    assert (
        isinstance(raised, ApplicationError)
        and raised.type == "ToyRefused"
        and raised.non_retryable
    )
    assert raised.message == "refused before any change: the toy says no"
    assert status.phase is Phase.FAILED and "finished" in status.timings and toys.notices == []


async def test_a_failed_activity_after_the_change_fails_the_run_and_is_announced(
    time_skipping_env,
) -> None:
    toys = Toys()

    async def approve(handle) -> None:
        await handle.signal(ToyChange.approve, ApprovalSignal(by="sre-lead"))

    status, raised = await run_toy(
        time_skipping_env, toys, ToyRequest(break_after_change=True), approve
    )
    assert (
        isinstance(raised, ApplicationError)
        and raised.type == "ExecFailed"
        and raised.non_retryable
    )
    assert raised.message == "the pod went away mid-change"
    assert [n.kind for n in toys.notices] == ["approval_needed", "failure"]
    assert "the pod went away mid-change" in toys.notices[-1].text
    assert status.phase is Phase.FAILED and status.message == "the pod went away mid-change"


async def test_the_shell_escalates_at_half_time_while_the_change_waits(time_skipping_env) -> None:
    toys = Toys()

    async def wait_then_approve(handle) -> None:
        await time_skipping_env.sleep(dt.timedelta(minutes=8))
        current = await handle.query(ToyChange.status)
        assert current.escalations == ["half_time"] and current.sla_met is None
        await handle.signal(ToyChange.approve, ApprovalSignal(by="sre-lead"))

    _, result = await run_toy(time_skipping_env, toys, ToyRequest(), wait_then_approve)
    assert isinstance(result, ToyStatus) and result.phase is Phase.COMPLETED
    assert [n.kind for n in toys.notices] == ["approval_needed", "escalation"]
    assert any(
        e.action == "escalation" and e.detail.startswith("half_time at ") for e in result.audit
    )


@pytest.fixture
def client(time_skipping_env: WorkflowEnvironment):
    return time_skipping_env.client
