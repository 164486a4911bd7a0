"""MigrationRollbackWorkflow on the time-skipping server: two approvers, the
deadlines, the backup gate, refusals before any change, a failing step down
and an integrity drop."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from runbook.migration_models import MigrationRequest, MigrationResult, MigrationStatus
from runbook.models import ApprovalSignal, Phase, RejectSignal, Severity
from tests.workflows.migration_fakes import FakeSchema
from workflows.migration_rollback import MigrationRollbackWorkflow

QUEUE = "test-migrations"


def worker(env: WorkflowEnvironment, schema: FakeSchema) -> Worker:
    return Worker(
        env.client,
        task_queue=QUEUE,
        workflows=[MigrationRollbackWorkflow],
        activities=schema.activities(),
        workflow_failure_exception_types=[Exception],
    )


def request(**changes) -> MigrationRequest:
    return MigrationRequest(
        **{
            "service": "tekutoko-api",
            "reason": "1.3.0's migration broke walks",
            "requested_by": "oncall",
            **changes,
        }
    )


async def start(env: WorkflowEnvironment, req: MigrationRequest):
    return await env.client.start_workflow(
        MigrationRollbackWorkflow.run, req, id=f"mig-{uuid.uuid4().hex[:8]}", task_queue=QUEUE
    )


async def wait_phase(handle, phase: Phase) -> MigrationStatus:
    for _ in range(200):
        current = await handle.query(MigrationRollbackWorkflow.status)
        if current.phase == phase:
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {phase}")


async def failure(handle) -> str:
    with pytest.raises(WorkflowFailureError) as raised:
        await handle.result()
    return raised.value.cause.message


async def test_two_approvers_neither_the_requester_then_down_and_verify(time_skipping_env) -> None:
    schema = FakeSchema()
    async with worker(time_skipping_env, schema):
        handle = await start(time_skipping_env, request())
        waiting = await wait_phase(handle, Phase.AWAITING_APPROVAL)
        assert (
            waiting.approvals_required == 2
            and waiting.from_version == 5
            and waiting.to_version == 4
        )
        assert not any(c[2] == "down-to" for c in schema.commands)
        for who in ("oncall", "sre-lead", "sre-lead", "mallory"):
            await handle.signal(MigrationRollbackWorkflow.approve, ApprovalSignal(by=who))
        await asyncio.sleep(0.3)
        assert (
            await handle.query(MigrationRollbackWorkflow.status)
        ).phase is Phase.AWAITING_APPROVAL
        await handle.signal(MigrationRollbackWorkflow.approve, ApprovalSignal(by="backend-lead"))
        result: MigrationResult = await handle.result()
    status = result.status
    assert status.phase is Phase.COMPLETED and status.approvals == ["sre-lead", "backend-lead"]
    counted = [(e.actor, e.counted) for e in status.audit if e.action == "approve"]
    assert counted == [
        ("oncall", False),
        ("sre-lead", True),
        ("sre-lead", False),
        ("mallory", False),
        ("backend-lead", True),
    ]
    assert ["/api", "migrate", "down-to", "4"] in schema.commands and schema.version == 4
    assert {c.name for c in status.integrity} == {"tables", "users"} and all(
        c.ok for c in status.integrity
    )
    assert [n.kind for n in schema.notices] == ["approval_needed", "start", "complete"]


async def test_to_version_goes_down_several_steps(time_skipping_env) -> None:
    schema = FakeSchema(
        entry=FakeSchema().entry.model_copy(
            update={"migration": FakeSchema().entry.migration.model_copy(update={"approvals": 0})}
        )
    )
    async with worker(time_skipping_env, schema):
        result: MigrationResult = await (
            await start(time_skipping_env, request(to_version=2))
        ).result()
    assert (
        result.status.steps == 3 and schema.version == 2 and result.status.phase is Phase.COMPLETED
    )


async def test_missed_deadlines_escalate_and_keep_waiting(time_skipping_env) -> None:
    schema = FakeSchema()
    async with worker(time_skipping_env, schema):
        handle = await start(time_skipping_env, request())
        await wait_phase(handle, Phase.AWAITING_APPROVAL)
        await time_skipping_env.sleep(dt.timedelta(minutes=16))
        current = await handle.query(MigrationRollbackWorkflow.status)
        assert current.escalations == ["half_time", "deadline"] and current.sla_met is False
        await handle.signal(
            MigrationRollbackWorkflow.reject, RejectSignal(by="dba", reason="forward fix instead")
        )
        result: MigrationResult = await handle.result()
    assert result.status.phase is Phase.REJECTED and "nothing was changed" in result.status.message
    assert not any(c[2] == "down-to" for c in schema.commands)


@pytest.mark.parametrize(
    ("schema", "req", "needle"),
    [
        (FakeSchema(backup_ok=False), request(), "no successful backup run"),
        (FakeSchema(dirty=True), request(), "dirty at version 5"),
        (FakeSchema(), request(steps=6), "6 steps is more than the 5 applied"),
        (FakeSchema(version=3), request(to_version=4), "newer than the current 3"),
        (
            FakeSchema(available=(1, 3, 5)),
            request(to_version=2),
            "version 2 is not in the migration history",
        ),
        (FakeSchema(), request(service="nobody"), "not in the service catalog"),
    ],
    ids=["no-backup", "dirty", "too-many-steps", "upward", "unknown-version", "unknown-service"],
)
async def test_refusals_change_nothing(
    time_skipping_env, schema: FakeSchema, req: MigrationRequest, needle: str
) -> None:
    async with worker(time_skipping_env, schema):
        handle = await start(time_skipping_env, req)
        message = await failure(handle)
    assert needle in message
    assert not any(c[2] == "down-to" for c in schema.commands) and schema.snapshots == 0


async def test_a_failing_step_down_stops_with_the_dirty_version(time_skipping_env) -> None:
    schema = FakeSchema(
        fail_down=True,
        entry=FakeSchema().entry.model_copy(
            update={"migration": FakeSchema().entry.migration.model_copy(update={"approvals": 0})}
        ),
    )
    async with worker(time_skipping_env, schema):
        handle = await start(time_skipping_env, request(severity=Severity.IMMEDIATE))
        message = await failure(handle)
        status = await handle.query(MigrationRollbackWorkflow.status)
    assert "exited 1" in message and "version 4 (dirty)" in message and "nothing further" in message
    assert (
        status.phase is Phase.FAILED and status.dirty and schema.snapshots == 1
    )  # no after-snapshot, no second step
    assert [n.kind for n in schema.notices][-1] == "failure"


async def test_a_row_count_drop_fails_verification(time_skipping_env) -> None:
    schema = FakeSchema(
        rows_after=7,
        entry=FakeSchema().entry.model_copy(
            update={"migration": FakeSchema().entry.migration.model_copy(update={"approvals": 0})}
        ),
    )
    async with worker(time_skipping_env, schema):
        message = await failure(await start(time_skipping_env, request()))
    assert "verification failed" in message and "users: dropped from 10 to 7 (-3)" in message


async def test_dry_run_reads_and_checks_but_changes_nothing(time_skipping_env) -> None:
    schema = FakeSchema()
    async with worker(time_skipping_env, schema):
        result: MigrationResult = await (
            await start(time_skipping_env, request(dry_run=True))
        ).result()
    assert result.no_op and "would roll" in result.status.message and result.status.backup.ok
    assert not any(c[2] == "down-to" for c in schema.commands)


def test_steps_and_to_version_together_are_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not both"):
        request(steps=1, to_version=3)
