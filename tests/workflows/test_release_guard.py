"""ReleaseGuardWorkflow on the time-skipping server with scripted watches: a
breach starts exactly one rollback with the computed severity and evidence,
continue-as-new carries the guard's state, stop ends it, and a rollback that is
already running is never doubled."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from runbook.guard_models import (
    GuardPhase,
    GuardRequest,
    GuardResult,
    StopSignal,
)
from runbook.models import ApprovalSignal, Phase, RollbackRequest, Severity
from tests.waiting import phase_of, until
from tests.workflows.guard_fakes import NOW, ScriptedGuard, breach, clean
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id
from workflows.incident import IncidentWorkflow
from workflows.release_guard import ReleaseGuardWorkflow

QUEUE = "test-guard"


def guard_worker(env: WorkflowEnvironment, fake, scripted: ScriptedGuard) -> Worker:
    lookup_and_rollback = fake.activities()
    return Worker(
        env.client,
        task_queue=QUEUE,
        workflows=[ReleaseGuardWorkflow, DeploymentRollbackWorkflow, IncidentWorkflow],
        activities=[*lookup_and_rollback, *scripted.activities()],
        workflow_failure_exception_types=[Exception],
        max_heartbeat_throttle_interval=dt.timedelta(milliseconds=100),
    )


async def start_guard(env: WorkflowEnvironment, deployment: str, **changes):
    request = GuardRequest(
        deployment=deployment, duration_seconds=1800, interval_seconds=15, **changes
    )
    return await env.client.start_workflow(
        ReleaseGuardWorkflow.run, request, id=f"guard-{uuid.uuid4().hex[:8]}", task_queue=QUEUE
    )


def deployment_name() -> str:
    return f"api-{uuid.uuid4().hex[:8]}"


async def test_an_immediate_breach_starts_one_rollback_with_the_evidence(
    time_skipping_env, fake
) -> None:
    scripted = ScriptedGuard([clean(5), breach(Severity.IMMEDIATE, "error ratio 60.0% > 50%")])
    name = deployment_name()
    async with guard_worker(time_skipping_env, fake, scripted):
        handle = await start_guard(time_skipping_env, name)
        result: GuardResult = await handle.result()
        rollback = time_skipping_env.client.get_workflow_handle(
            rollback_workflow_id("default", name)
        )
        rolled = await rollback.query(DeploymentRollbackWorkflow.status)
    assert (
        result.status.phase is GuardPhase.ROLLED_BACK
        and result.status.rollback_severity == "immediate"
    )
    assert result.status.polls == 6 and scripted.baselines == 1
    assert rolled.severity is Severity.IMMEDIATE and rolled.phase is Phase.COMPLETED
    assert rolled.detected_at == NOW - dt.timedelta(
        seconds=2
    )  # the breach, not the moment the rollback began
    assert "error ratio 60.0% > 50%" in rolled.evidence and any(
        "180 errors" in e for e in rolled.evidence
    )
    assert fake.calls.count("undo") == 1


async def test_an_investigate_breach_waits_for_approval_in_the_rollback(
    time_skipping_env, fake
) -> None:
    scripted = ScriptedGuard(
        [breach(Severity.INVESTIGATE, "p95 300 ms is 3.8x the baseline 80 ms")]
    )
    name = deployment_name()
    async with guard_worker(time_skipping_env, fake, scripted):
        handle = await start_guard(time_skipping_env, name)
        rollback = time_skipping_env.client.get_workflow_handle(
            rollback_workflow_id("default", name)
        )

        async def both():
            guard = await handle.query(ReleaseGuardWorkflow.status)
            gated = None
            if guard.phase is GuardPhase.ROLLING_BACK:
                with contextlib.suppress(Exception):  # the rollback has not started yet
                    gated = await rollback.query(DeploymentRollbackWorkflow.status)
            return guard, gated

        await until(
            "the guard to roll back and its rollback to await approval",
            both,
            lambda seen: seen[1] is not None and seen[1].phase is Phase.AWAITING_APPROVAL,
            lambda seen: f"guard {phase_of(seen[0])}; rollback {phase_of(seen[1])}",
            5,
            interval=0.05,
        )
        assert "undo" not in fake.calls
        await rollback.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="sre-lead"))
        result: GuardResult = await handle.result()
    assert (
        result.status.phase is GuardPhase.ROLLED_BACK
        and result.status.rollback_severity == "investigate"
    )
    assert result.status.rollback_phase == "completed"


async def test_continue_as_new_carries_the_baseline_and_counts(time_skipping_env, fake) -> None:
    scripted = ScriptedGuard(
        [
            clean(3),
            clean(3),
            clean(3),
            clean(3),
            breach(Severity.IMMEDIATE, "health check failed 3 times in a row"),
        ]
    )
    name = deployment_name()
    async with guard_worker(time_skipping_env, fake, scripted):
        handle = await start_guard(time_skipping_env, name, polls_per_run=6)
        result: GuardResult = await handle.result()
        first_run = handle.first_execution_run_id or handle.result_run_id
        description = await time_skipping_env.client.get_workflow_handle(handle.id).describe()
    assert result.status.runs == 3 and result.status.polls == 13
    assert scripted.baselines == 1  # measured once, carried afterwards
    assert all(w.baseline.p95_ms == 80 for w in scripted.watches)
    assert max(w.max_polls for w in scripted.watches) <= 6
    assert description.run_id != first_run
    assert result.status.phase is GuardPhase.ROLLED_BACK


async def test_stop_ends_the_guard_without_a_rollback(time_skipping_env, fake) -> None:
    scripted = ScriptedGuard([clean(2), "block"])
    name = deployment_name()
    async with guard_worker(time_skipping_env, fake, scripted):
        handle = await start_guard(time_skipping_env, name)
        await until(
            "the guard's second watch",
            lambda: len(scripted.watches),
            lambda watches: watches == 2,
            lambda watches: f"{watches} watches",
            5,
            interval=0.05,
        )
        await handle.signal(
            ReleaseGuardWorkflow.stop, StopSignal(by="oncall", reason="release verified by hand")
        )
        result: GuardResult = await handle.result()
    assert result.status.phase is GuardPhase.STOPPED and "oncall" in result.status.message
    assert result.status.rollback_workflow_id is None and "undo" not in fake.calls
    assert scripted.cancelled  # the guard ended only after its watch stopped


async def test_the_window_ending_finishes_quietly(time_skipping_env, fake) -> None:
    scripted = ScriptedGuard([clean(4), "over"])
    async with guard_worker(time_skipping_env, fake, scripted):
        handle = await start_guard(time_skipping_env, deployment_name())
        result: GuardResult = await handle.result()
    assert result.status.phase is GuardPhase.FINISHED and result.status.polls == 5
    assert "undo" not in fake.calls


async def test_a_running_rollback_is_never_doubled(time_skipping_env, fake) -> None:
    scripted = ScriptedGuard([breach(Severity.IMMEDIATE, "error ratio 60.0% > 50%")])
    name = deployment_name()
    async with guard_worker(time_skipping_env, fake, scripted):
        first = await time_skipping_env.client.start_workflow(
            DeploymentRollbackWorkflow.run,
            RollbackRequest(
                deployment=name,
                severity=Severity.INVESTIGATE,
                reason="seen by a person",
                requested_by="oncall",
            ),
            id=rollback_workflow_id("default", name),
            task_queue=QUEUE,
        )
        handle = await start_guard(time_skipping_env, name)
        result: GuardResult = await handle.result()
        described = await first.describe()
        await first.terminate(
            "test over"
        )  # a waiting workflow left behind would stall time skipping for later tests
    assert result.status.phase is GuardPhase.STOPPED and "already running" in result.status.message
    assert (
        described.status is WorkflowExecutionStatus.RUNNING
        and described.run_id == first.result_run_id
    )
    assert "undo" not in fake.calls


@pytest.mark.parametrize(
    "field_, value",
    [
        ("duration_seconds", 5),
        ("interval_seconds", 0.5),
        ("deployment", "Bad_Name"),
        ("polls_per_run", 0),
    ],
)
def test_bad_guard_requests_are_refused(field_, value) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field_):
        GuardRequest(**{"deployment": "tekutoko-api", field_: value})


async def test_with_identities_only_a_signed_stop_by_an_approver_counts(
    time_skipping_env, fake, tmp_path
) -> None:
    from runbook.catalog import Trust
    from runbook.decisions import DecisionPayload, SignedDecision
    from runbook.identity import Identity
    from runbook.signatures import new_private_key, public_key_line, sign
    from starter.signing import payload_for

    keys = {name: new_private_key() for name in ("sre-lead", "viewer")}
    fake.entry = fake.entry.model_copy(
        update={
            "trust": Trust(
                identities=[
                    Identity(
                        id="sre-lead",
                        display_name="SRE lead",
                        roles=["sre-lead"],
                        keys=[public_key_line(keys["sre-lead"])],
                    ),
                    Identity(
                        id="viewer",
                        display_name="Viewer",
                        roles=["viewer"],
                        keys=[public_key_line(keys["viewer"])],
                    ),
                ]
            )
        }
    )
    scripted = ScriptedGuard([clean(2), "block"])
    # Signed payloads carry real times: workflow time must not skip past their expiry.
    with time_skipping_env.auto_time_skipping_disabled():
        async with guard_worker(time_skipping_env, fake, scripted):
            handle = await start_guard(time_skipping_env, deployment_name())
            await until(
                "the guard's second watch",
                lambda: len(scripted.watches),
                lambda watches: watches == 2,
                lambda watches: f"{watches} watches",
                10,
                interval=0.05,
            )
            status = await handle.query(ReleaseGuardWorkflow.status)
            gate = status.pending
            assert gate is not None and gate.gate == "stop" and gate.signed
            # Issued at the server's time, which earlier tests in this module skipped ahead of the
            # wall clock.
            times = {
                "issued_at": status.started_at,
                "expires_at": status.started_at + dt.timedelta(minutes=10),
            }

            def signed(who: str, **changes) -> SignedDecision:
                payload = payload_for(gate, "stop", who, "done").model_copy(
                    update={**times, **changes}
                )
                text = DecisionPayload.model_validate(payload.model_dump()).text()
                return SignedDecision(payload=text, signature=sign(text, keys[who]))

            for signal in (
                StopSignal(by="sre-lead"),
                StopSignal(by="viewer", signed=signed("viewer")),
                StopSignal(by="sre-lead", signed=signed("sre-lead", run_id="another-run")),
            ):
                await handle.signal(ReleaseGuardWorkflow.stop, signal)
            refused = (
                await until(
                    "the guard to refuse the three stops",
                    lambda: handle.query(ReleaseGuardWorkflow.status),
                    lambda status: len(status.refused_stops) == 3,
                    lambda status: f"refused stops {status.refused_stops}",
                    5,
                    interval=0.05,
                )
            ).refused_stops
            expected = ("unsigned", "neither an approver", "names run another-run")
            if len(refused) != 3 or any(
                needle not in reason for needle, reason in zip(expected, refused, strict=True)
            ):
                pytest.fail(f"refused stops: {refused}")
            await handle.signal(
                ReleaseGuardWorkflow.stop, StopSignal(by="sre-lead", signed=signed("sre-lead"))
            )
            result: GuardResult = await handle.result()
    assert (
        result.status.phase is GuardPhase.STOPPED
        and "stopped by sre-lead: done" in result.status.message
    )


@pytest.fixture
async def own_time_skipping_env():
    """A test server of this test's own: its 90-s wait is skipped only if no workflow another
    test of the module left running holds time still (one did, under some orders)."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    from tests.workflows.conftest import binary
    from worker.client import ensure_search_attributes

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await ensure_search_attributes(env.client)
    yield env
    await env.shutdown()


async def test_a_guard_started_before_any_whole_minute_waits_for_the_first_one(
    own_time_skipping_env, fake
) -> None:
    time_skipping_env = own_time_skipping_env
    scripted = ScriptedGuard([clean(3), "over"], no_data_yet=1)
    async with guard_worker(time_skipping_env, fake, scripted):
        handle = await start_guard(time_skipping_env, deployment_name())
        result: GuardResult = await handle.result()
    # read once before the data existed, waited for the first readable minute, read again
    assert scripted.baselines == 2 and result.status.phase is GuardPhase.FINISHED
    started = result.status.started_at
    assert scripted.data_since == [started, started]  # no data before the guard began is no error
    history = await handle.fetch_history()
    timers = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToSeconds()
        for e in history.events
        if e.HasField("timer_started_event_attributes")
    ]
    assert timers and 85 <= timers[0] <= 95, timers


async def test_without_waiting_for_data_the_guard_fails_saying_when_it_will_be_readable(
    time_skipping_env, fake
) -> None:
    scripted = ScriptedGuard([clean(3)], no_data_yet=1)
    async with guard_worker(time_skipping_env, fake, scripted):
        handle = await start_guard(time_skipping_env, deployment_name(), wait_for_data=False)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await handle.query(ReleaseGuardWorkflow.status)
    assert status.phase is GuardPhase.FAILED and scripted.baselines == 1
    assert status.message.startswith("no whole minute of data yet: the first one ends at ")
