"""The forward fix on the time-skipping server: reminders while the hotfix is
awaited, and none once it is recorded; the hotfix is deployed as a redeploy
child with its tag; recovery is announced only when the guard's watch is
clean; no hotfix in time or an error rate that does not fall fail it with a
notice that says so."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from runbook.cd_models import RedeployRequest, RedeployResult, RedeployStatus
from runbook.enums import Severity
from runbook.forward_fix_models import (
    ForwardFixRequest,
    Hotfix,
    ServiceLogs,
    ServiceLogsRequest,
)
from runbook.guard_models import BaselineRequest, GuardBaseline, WatchReport, WatchRequest
from runbook.log_groups import LogLine
from runbook.models import Notice, NoticeResult, Phase, ServiceLookup
from tests.workflows.cd_fakes import entry
from tests.workflows.guard_fakes import breach, clean
from workflows.forward_fix import ForwardFixWorkflow

QUEUE = "test-forward-fix"
DEPLOYED: list[RedeployRequest] = []


@workflow.defn(name="Redeploy", sandboxed=False)  # records into this module's list
class FakeRedeploy:
    """Stands in for the redeploy child: records what it was asked to deploy."""

    @workflow.run
    async def run(self, request: RedeployRequest) -> RedeployResult:
        DEPLOYED.append(request)
        now = workflow.now()
        return RedeployResult(
            status=RedeployStatus(
                workflow_id=workflow.info().workflow_id,
                phase=Phase.COMPLETED,
                namespace=request.namespace,
                deployment=request.deployment,
                tag=request.tag,
                severity=request.severity,
                requested_by=request.requested_by,
                reason=request.reason,
                detected_at=now,
                sla_deadline=now,
                message=f"redeployed {request.tag} and verified",
            )
        )


@dataclass
class FakeWorld:
    watch: WatchReport = field(default_factory=lambda: clean(4))
    notices: list[Notice] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    client: object = None
    hotfix_after_reminders: int | None = (
        None  # people record the hotfix right after this many reminders
    )

    def activities(self) -> list:
        @activity.defn(name="catalog.lookup")
        async def lookup(request: ServiceLookup):
            return entry()

        @activity.defn(name="k8s.service_logs")
        async def logs(request: ServiceLogsRequest) -> ServiceLogs:
            self.calls.append(f"logs tail={request.tail}")
            lines = [
                LogLine(
                    pod=f"api-{i}",
                    text=f'level=error msg="column plan does not exist" request_id={i}',
                )
                for i in range(3)
            ]
            return ServiceLogs(
                pods=["api-0", "api-1", "api-2"],
                lines=lines + [LogLine(pod="api-0", text="level=info msg=ok")],
            )

        @activity.defn(name="guard.baseline")
        async def baseline(request: BaselineRequest) -> GuardBaseline:
            self.calls.append("baseline" if request.release_at else "reading")
            return GuardBaseline(
                error_ratio=0.01 if request.release_at else 0.6, requests=300, p95_ms=80
            )

        @activity.defn(name="guard.watch")
        async def watch(request: WatchRequest) -> WatchReport:
            self.calls.append("watch")
            return self.watch

        @activity.defn(name="notify.send")
        async def send(notice: Notice) -> NoticeResult:
            self.notices.append(notice)
            reminders = sum(n.kind == "reminder" for n in self.notices)
            if notice.kind == "reminder" and reminders == self.hotfix_after_reminders:
                await self.client.get_workflow_handle(activity.info().workflow_id).signal(
                    "hotfix", HOTFIX
                )
            return NoticeResult(delivered=[c.label for c in notice.channels], failed=[])

        return [lookup, logs, baseline, watch, send]


def fix(**changes) -> ForwardFixRequest:
    return ForwardFixRequest(
        **{
            "deployment": "tekutoko-api",
            "reason": "000006 dropped a column",
            "requested_by": "oncall",
            "language": "en",
            "reminder_minutes": 30,
            "hotfix_wait_hours": 4,
            "severity": Severity.IMMEDIATE,
            **changes,
        }
    )


HOTFIX = Hotfix(branch="hotfix/plan-column", tag="1.3.2", by="backend-dev", staging_verified=True)


async def run_fix(env: WorkflowEnvironment, world: FakeWorld, request: ForwardFixRequest):
    DEPLOYED.clear()
    world.client = env.client
    async with Worker(
        env.client,
        task_queue=QUEUE,
        workflows=[ForwardFixWorkflow, FakeRedeploy],
        activities=world.activities(),
        workflow_failure_exception_types=[Exception],
    ):
        handle = await env.client.start_workflow(
            ForwardFixWorkflow.run, request, id=f"ff-{uuid.uuid4().hex[:8]}", task_queue=QUEUE
        )
        try:
            return await handle.result(), handle
        except WorkflowFailureError as failure:
            return failure, handle


async def test_reminders_fire_while_the_hotfix_is_awaited_and_stop_once_it_is_recorded(
    time_skipping_env,
) -> None:
    world = FakeWorld(hotfix_after_reminders=2)
    result, _ = await run_fix(time_skipping_env, world, fix())
    assert not isinstance(result, WorkflowFailureError), result.cause
    assert result.recovered and result.status.phase is Phase.COMPLETED
    assert [n.kind for n in world.notices] == [
        "start",
        "reminder",
        "reminder",
        "complete",
    ]  # at 30 and 60 minutes, none after
    assert result.status.reminders == 2
    assert [d.tag for d in DEPLOYED] == ["1.3.2"] and DEPLOYED[0].requested_by == "backend-dev"
    assert world.calls == ["logs tail=200", "baseline", "reading", "watch"]
    assert "60.0% → 1.0%" in result.status.message and result.status.errors[0].count == 3
    waited = result.status.timings["hotfix_recorded"] - result.status.timings["awaiting_hotfix"]
    assert dt.timedelta(minutes=60) <= waited < dt.timedelta(minutes=61)
    assert any(
        e.action == "hotfix" and "hotfix/plan-column" in e.detail for e in result.status.audit
    )


async def test_a_hotfix_given_at_the_start_is_deployed_without_waiting(time_skipping_env) -> None:
    world = FakeWorld()
    result, _ = await run_fix(time_skipping_env, world, fix(hotfix=HOTFIX))
    assert result.recovered and [n.kind for n in world.notices] == ["start", "complete"]


async def test_no_hotfix_in_time_fails_with_a_notice(time_skipping_env) -> None:
    world = FakeWorld()
    failure, _ = await run_fix(time_skipping_env, world, fix(hotfix_wait_hours=1))
    assert (
        isinstance(failure, WorkflowFailureError)
        and "no hotfix was recorded within 1 h" in failure.cause.message
    )
    assert DEPLOYED == [] and [n.kind for n in world.notices] == ["start", "reminder", "failure"]


async def test_an_error_rate_that_does_not_fall_is_not_announced_as_recovery(
    time_skipping_env,
) -> None:
    world = FakeWorld(watch=breach(Severity.INVESTIGATE, "error ratio 15.0% > 10%"))
    failure, _ = await run_fix(time_skipping_env, world, fix(hotfix=HOTFIX))
    assert (
        isinstance(failure, WorkflowFailureError)
        and "has not fallen: error ratio 15.0% > 10%" in failure.cause.message
    )
    assert [n.kind for n in world.notices] == ["start", "failure"]


def test_a_hotfix_not_verified_on_staging_is_refused() -> None:
    with pytest.raises(ValueError, match="verified on staging"):
        Hotfix(branch="hotfix/x", tag="1.3.2", by="dev", staging_verified=False)
