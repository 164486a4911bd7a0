"""PointInTimeRecoveryWorkflow on the time-skipping server: two gates, the
operation polled by retries, a failed check stopping before the switch, and
an unhealthy app switched back."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from runbook.models import ApprovalSignal, Phase, RejectSignal
from runbook.pitr_models import ExpectedQuery, PitrRequest, PitrResult, PitrStatus, clone_name
from tests.workflows.pitr_fakes import SOURCE, FakeRecovery, T
from workflows.pitr import PointInTimeRecoveryWorkflow

QUEUE = "test-pitr"
JST = dt.timezone(dt.timedelta(hours=9))


def worker(env: WorkflowEnvironment, fake: FakeRecovery) -> Worker:
    return Worker(
        env.client,
        task_queue=QUEUE,
        workflows=[PointInTimeRecoveryWorkflow],
        activities=fake.activities(),
        workflow_failure_exception_types=[Exception],
    )


def request(**changes) -> PitrRequest:
    return PitrRequest(
        **{
            "service": "tekutoko-api",
            "point_in_time": T.astimezone(JST),
            "reason": "a bad job deleted walks",
            "requested_by": "oncall",
            "checks": [ExpectedQuery(name="walks", sql="SELECT count(*) FROM walks", expect="3")],
            **changes,
        }
    )


async def start(env: WorkflowEnvironment, req: PitrRequest):
    return await env.client.start_workflow(
        PointInTimeRecoveryWorkflow.run, req, id=f"pitr-{uuid.uuid4().hex[:8]}", task_queue=QUEUE
    )


async def at_gate(handle, gate: str) -> PitrStatus:
    for _ in range(200):
        current = await handle.query(PointInTimeRecoveryWorkflow.status)
        if current.phase is Phase.AWAITING_APPROVAL and current.gate == gate:
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached the {gate} gate")


async def approve_both(handle, gate: str) -> PitrStatus:
    await at_gate(handle, gate)
    for who in ("oncall", "sre-lead", "dba"):
        await handle.signal(PointInTimeRecoveryWorkflow.approve, ApprovalSignal(by=who))
    return await handle.query(PointInTimeRecoveryWorkflow.status)


async def test_clone_verify_switch_after_two_gates(time_skipping_env) -> None:
    fake = FakeRecovery()
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request())
        await at_gate(handle, "clone")
        assert fake.calls == ["check"]  # nothing created before the first approvals
        await approve_both(handle, "clone")
        waiting = await at_gate(handle, "switch")
        assert [c.ok for c in waiting.checks] == [True] and not any(
            c.startswith("proxy") for c in fake.calls
        )
        await approve_both(handle, "switch")
        result: PitrResult = await handle.result()
    status = result.status
    clone = clone_name("tekutoko-db", T)
    assert (
        status.phase is Phase.COMPLETED
        and status.clone == clone == "tekutoko-db-pitr-20261128050000"
    )
    assert status.approvals == ["sre-lead", "dba"] and status.switch_approvals == [
        "sre-lead",
        "dba",
    ]
    assert fake.calls == [
        "check",
        f"clone {clone}",
        "poll",
        "poll",
        "verify clone",
        f"proxy {clone}",
    ]
    assert fake.proxy == status.switched == f"tekutoko-prod:asia-northeast1:{clone}"
    assert "kept untouched" in status.message
    assert [n.kind for n in fake.notices] == [
        "approval_needed",
        "start",
        "approval_needed",
        "complete",
    ]


async def test_a_failed_check_stops_before_the_switch(time_skipping_env) -> None:
    fake = FakeRecovery(
        check_ok=False,
        entry=FakeRecovery().entry.model_copy(
            update={"pitr": FakeRecovery().entry.pitr.model_copy(update={"approvals": 0})}
        ),
    )
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request())
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert (
        "failed verification" in failure.value.cause.message
        and "nothing was switched" in failure.value.cause.message
    )
    assert not any(c.startswith("proxy") for c in fake.calls)


async def test_an_unhealthy_app_is_switched_back(time_skipping_env) -> None:
    fake = FakeRecovery(
        healthy_on_clone=False,
        entry=FakeRecovery().entry.model_copy(
            update={"pitr": FakeRecovery().entry.pitr.model_copy(update={"approvals": 0})}
        ),
    )
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request())
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        status = await handle.query(PointInTimeRecoveryWorkflow.status)
    assert "switched back to tekutoko-db" in failure.value.cause.message
    assert fake.calls[-2:] == [f"proxy {status.clone}", "proxy tekutoko-db"]
    assert fake.proxy == SOURCE and status.switched_back and status.switched == ""


async def test_rejecting_the_switch_keeps_the_clone_and_the_app(time_skipping_env) -> None:
    fake = FakeRecovery()
    async with worker(time_skipping_env, fake):
        handle = await start(time_skipping_env, request())
        await approve_both(handle, "clone")
        await at_gate(handle, "switch")
        await handle.signal(
            PointInTimeRecoveryWorkflow.reject,
            RejectSignal(by="dba", reason="the clone lacks today's orders"),
        )
        result: PitrResult = await handle.result()
    assert (
        result.status.phase is Phase.REJECTED
        and "is kept, the app was not switched" in result.status.message
    )
    assert not any(c.startswith("proxy") for c in fake.calls)


async def test_pre_check_problems_refuse_before_anything_is_created(time_skipping_env) -> None:
    fake = FakeRecovery(problems=["the restore point 2026-11-29T05:00:00+00:00 is in the future"])
    async with worker(time_skipping_env, fake):
        with pytest.raises(WorkflowFailureError) as failure:
            await (await start(time_skipping_env, request())).result()
    assert (
        "refused before anything was created" in failure.value.cause.message
        and "in the future" in failure.value.cause.message
    )
    assert fake.calls == ["check"]


def test_a_naive_time_is_refused_and_offsets_are_kept() -> None:
    with pytest.raises(ValidationError, match="time zone offset"):
        request(point_in_time=dt.datetime(2026, 11, 28, 14, 0))
    jst = request(point_in_time=dt.datetime.fromisoformat("2026-11-28T14:00:00+09:00"))
    utc = request(point_in_time=dt.datetime.fromisoformat("2026-11-28T05:00:00Z"))
    assert jst.point_in_time == utc.point_in_time
    assert clone_name("tekutoko-db", jst.point_in_time) == clone_name(
        "tekutoko-db", utc.point_in_time
    )
