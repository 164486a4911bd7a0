"""Record one history per outcome of the workflows, for the replay tests. Run
after an intended, compatible workflow change:

    python -m tests.replay.record             # every history
    python -m tests.replay.record pitr_ mig   # only the names starting so
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import tempfile
import uuid
from pathlib import Path

from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from runbook.catalog import ServiceEntry, Trust
from runbook.decisions import DecisionPayload, SignedDecision
from runbook.guard_models import GuardRequest, StopSignal
from runbook.identity import Identity
from runbook.incident_models import ChangeSignal, ConfirmSignal, FollowUpSignal, IncidentRequest
from runbook.migration_models import MigrationRequest
from runbook.models import (
    ApprovalSignal,
    Phase,
    RejectSignal,
    RollbackRequest,
    ServiceLookup,
    Severity,
)
from runbook.pitr_models import ExpectedQuery, PitrRequest
from runbook.signatures import new_private_key, public_key_line, sign
from starter.signing import payload_for
from starter.start_options import sign_start_gate
from tests import waiting
from tests.workflows.conftest import FakeCluster, binary
from tests.workflows.guard_fakes import ScriptedGuard, breach, clean
from tests.workflows.migration_fakes import FakeSchema
from tests.workflows.pitr_fakes import FakeRecovery, T
from tests.workflows.slack_fakes import SlackCardCluster
from worker.main import WORKFLOW_RUNNER
from workflows.deployment_rollback import DeploymentRollbackWorkflow
from workflows.incident import IncidentWorkflow
from workflows.migration_rollback import MigrationRollbackWorkflow
from workflows.pitr import PointInTimeRecoveryWorkflow
from workflows.release_guard import ReleaseGuardWorkflow

HERE = Path(__file__).parent / "histories"
ONLY: tuple[str, ...] = ()


def wanted(name: str) -> bool:
    return not ONLY or name.startswith(ONLY)


def request(**changes) -> RollbackRequest:
    return RollbackRequest(
        **{
            "deployment": "tekutoko-api",
            "severity": Severity.INVESTIGATE,
            "reason": "error rate 60%",
            "requested_by": "oncall",
            **changes,
        }
    )


async def until(handle, phase: Phase) -> None:
    await waiting.until(
        f"{handle.id} to reach {phase.value}",
        lambda: handle.query(DeploymentRollbackWorkflow.status),
        lambda s: s.phase == phase,
        waiting.phase_of,
        10,
        interval=0.05,
    )


async def record(
    env: WorkflowEnvironment,
    name: str,
    fake: FakeCluster,
    req: RollbackRequest,
    steer=None,
    rejected_at_start: RejectSignal | None = None,
) -> None:
    if not wanted(name):
        return
    queue = f"record-{name}"
    first = (
        {"start_signal": "reject", "start_signal_args": [rejected_at_start]}
        if rejected_at_start
        else {}
    )
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[DeploymentRollbackWorkflow],
        activities=fake.activities(),
    ):
        handle = await env.client.start_workflow(
            DeploymentRollbackWorkflow.run,
            req,
            id=f"replay-{name}-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
            **first,
        )
        if steer is not None:
            await steer(env, handle)
        with contextlib.suppress(Exception):  # failed outcomes are histories too
            await handle.result()
        history = await handle.fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}: {len(history.events)} events")


async def approve(env, handle) -> None:
    await until(handle, Phase.AWAITING_APPROVAL)
    await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="oncall"))
    await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="sre-lead"))


async def reject(env, handle) -> None:
    await until(handle, Phase.AWAITING_APPROVAL)
    await handle.signal(
        DeploymentRollbackWorkflow.reject, RejectSignal(by="backend-lead", reason="forward fix")
    )


async def escalate_then_approve(env, handle) -> None:
    await until(handle, Phase.AWAITING_APPROVAL)
    await env.sleep(dt.timedelta(minutes=16))
    await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="sre-lead"))


async def record_guard(
    env: WorkflowEnvironment, name: str, scripted: ScriptedGuard, req: GuardRequest, steer=None
) -> None:
    if not wanted(name):
        return
    queue = f"record-{name}"
    activities = [*FakeCluster().activities(), *scripted.activities()]
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[ReleaseGuardWorkflow, DeploymentRollbackWorkflow, IncidentWorkflow],
        activities=activities,
        max_heartbeat_throttle_interval=dt.timedelta(milliseconds=100),
    ):
        handle = await env.client.start_workflow(
            ReleaseGuardWorkflow.run,
            req,
            id=f"replay-{name}-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        if steer is not None:
            await steer(scripted, handle)
        with contextlib.suppress(Exception):
            await handle.result()
        # The first run's history: for continue-as-new, the run that handed over.
        history = await env.client.get_workflow_handle(
            handle.id, run_id=handle.first_execution_run_id or handle.result_run_id
        ).fetch_history()
        # the incident a guard opened waits days for people: end it, or time cannot skip for the
        # next recording
        for event in history.events:
            if event.HasField("child_workflow_execution_started_event_attributes"):
                started = event.child_workflow_execution_started_event_attributes
                child = started.workflow_execution.workflow_id
                with contextlib.suppress(Exception):
                    await env.client.get_workflow_handle(child).terminate("recorded")
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}: {len(history.events)} events")


async def stop_guard(scripted: ScriptedGuard, handle) -> None:
    await waiting.until(
        f"{handle.id}'s second watch",
        lambda: len(scripted.watches),
        lambda watches: watches >= 2,
        lambda watches: f"{watches} watches",
        10,
        interval=0.05,
    )
    await handle.signal(
        ReleaseGuardWorkflow.stop, StopSignal(by="oncall", reason="verified by hand")
    )


def guard(**changes) -> GuardRequest:
    return GuardRequest(
        **{
            "deployment": f"api-{uuid.uuid4().hex[:6]}",
            "duration_seconds": 1800,
            "interval_seconds": 15,
            **changes,
        }
    )


async def record_migration(
    env: WorkflowEnvironment, name: str, schema: FakeSchema, req: MigrationRequest, decisions=()
) -> None:
    if not wanted(name):
        return
    queue = f"record-{name}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[MigrationRollbackWorkflow],
        activities=schema.activities(),
    ):
        handle = await env.client.start_workflow(
            MigrationRollbackWorkflow.run,
            req,
            id=f"replay-{name}-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        if decisions:
            await waiting.until(
                f"{handle.id} to await approval",
                lambda: handle.query(MigrationRollbackWorkflow.status),
                lambda s: s.phase == Phase.AWAITING_APPROVAL,
                waiting.phase_of,
                10,
                interval=0.05,
            )
            for signal in decisions:
                await handle.signal(
                    "approve" if isinstance(signal, ApprovalSignal) else "reject", signal
                )
        with contextlib.suppress(Exception):
            await handle.result()
        history = await handle.fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}: {len(history.events)} events")


async def record_pitr(
    env: WorkflowEnvironment, name: str, fake: FakeRecovery, gates: tuple[str, ...] = ()
) -> None:
    if not wanted(name):
        return
    queue = f"record-{name}"
    req = PitrRequest(
        service="tekutoko-api",
        point_in_time=T,
        reason="a job deleted walks",
        requested_by="oncall",
        checks=[ExpectedQuery(name="walks", sql="SELECT count(*) FROM walks", expect="3")],
    )
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[PointInTimeRecoveryWorkflow],
        activities=fake.activities(),
    ):
        handle = await env.client.start_workflow(
            PointInTimeRecoveryWorkflow.run,
            req,
            id=f"replay-{name}-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        for gate in gates:
            await waiting.until(
                f"{handle.id} to await approval at its {gate} gate",
                lambda: handle.query(PointInTimeRecoveryWorkflow.status),
                lambda s, gate=gate: s.phase == Phase.AWAITING_APPROVAL and s.gate == gate,
                lambda s: f"{waiting.phase_of(s)} (gate {s.gate or 'none'})",
                20,
                interval=0.05,
            )
            for who in ("sre-lead", "dba"):
                await handle.signal("approve", ApprovalSignal(by=who))
        with contextlib.suppress(Exception):
            await handle.result()
        history = await handle.fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}: {len(history.events)} events")


async def record_cd(
    env: WorkflowEnvironment, name: str, fake, workflow, req, decision=None
) -> None:
    """A redeploy, restore or troubleshooting history; `decision` is signalled at the gate."""
    if not wanted(name):
        return
    from workflows.redeploy import RedeployWorkflow
    from workflows.restore import RestoreWorkflow
    from workflows.troubleshoot import TroubleshootWorkflow

    queue = f"record-{name}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[RedeployWorkflow, RestoreWorkflow, TroubleshootWorkflow],
        activities=fake.activities(),
    ):
        handle = await env.client.start_workflow(
            workflow.run, req, id=f"replay-{name}-{uuid.uuid4().hex[:6]}", task_queue=queue
        )
        if decision is not None:
            await waiting.until(
                f"{handle.id} to await approval (or to fail)",
                lambda: handle.query("status", result_type=dict),
                lambda s: s["phase"] in ("awaiting_approval", "failed"),
                lambda s: f"phase {s['phase']}: {s.get('message') or '(no message)'}",
                20,
                interval=0.05,
            )
            await handle.signal(
                "approve" if isinstance(decision, ApprovalSignal) else "reject", decision
            )
        with contextlib.suppress(Exception):
            await handle.result()
        history = await handle.fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}: {len(history.events)} events")


async def record_cd_histories(env: WorkflowEnvironment) -> None:
    from runbook.cd_models import ManifestSource, RedeployRequest
    from runbook.repair_models import RepairRequest, RestoreRequest
    from tests.workflows.cd_fakes import FakeCd
    from workflows.redeploy import RedeployWorkflow
    from workflows.restore import RestoreWorkflow
    from workflows.troubleshoot import TroubleshootWorkflow

    def redeploy(**changes) -> RedeployRequest:
        return RedeployRequest(
            **{
                "deployment": "tekutoko-api",
                "tag": "1.2.0",
                "reason": "1.3.0 fails",
                "requested_by": "oncall",
                **changes,
            }
        )

    def restore(**changes) -> RestoreRequest:
        return RestoreRequest(
            **{
                "deployment": "tekutoko-api",
                "source": ManifestSource(kind="artifact", name="deployment-backup-20261119-030000"),
                "reason": "cluster state is wrong",
                "requested_by": "oncall",
                **changes,
            }
        )

    approve, reject = (
        ApprovalSignal(by="sre-lead"),
        RejectSignal(by="backend-lead", reason="forward fix"),
    )
    await record_cd(env, "redeploy_completed", FakeCd(), RedeployWorkflow, redeploy(), approve)
    await record_cd(
        env, "redeploy_refused_absent_tag", FakeCd(), RedeployWorkflow, redeploy(tag="9.9.9")
    )
    await record_cd(env, "redeploy_rejected", FakeCd(), RedeployWorkflow, redeploy(), reject)
    await record_cd(
        env,
        "redeploy_run_failed",
        FakeCd(conclusion="failure"),
        RedeployWorkflow,
        redeploy(),
        approve,
    )
    await record_cd(env, "restore_completed", FakeCd(), RestoreWorkflow, restore(), approve)
    await record_cd(
        env,
        "restore_refused",
        FakeCd(check_problems=["it is deployment/walks-api"]),
        RestoreWorkflow,
        restore(),
    )
    await record_cd(
        env, "restore_pull_failed", FakeCd(pull_fails=True), RestoreWorkflow, restore(), approve
    )
    await record_cd(
        env,
        "troubleshoot_deleted",
        FakeCd(),
        TroubleshootWorkflow,
        RepairRequest(
            deployment="tekutoko-api",
            action="delete-replicaset",
            replicaset="api-old",
            reason="old pods remain",
            requested_by="oncall",
        ),
        approve,
    )
    await record_cd(
        env,
        "troubleshoot_restarted",
        FakeCd(),
        TroubleshootWorkflow,
        RepairRequest(
            deployment="tekutoko-api", action="restart", reason="stale pods", requested_by="oncall"
        ),
        approve,
    )


async def record_forward_fix_histories(env: WorkflowEnvironment) -> None:
    """The forward fix with its real redeploy child (scripted registry, GitHub and cluster)."""
    from runbook.forward_fix_models import ForwardFixRequest, Hotfix
    from tests.workflows.cd_fakes import FakeCd
    from tests.workflows.test_forward_fix import FakeWorld
    from workflows.forward_fix import ForwardFixWorkflow
    from workflows.redeploy import RedeployWorkflow

    hotfix = Hotfix(
        branch="hotfix/plan-column", tag="1.3.2", by="backend-dev", staging_verified=True
    )
    for name, req in (
        (
            "forward_fix_recovered",
            ForwardFixRequest(
                deployment="tekutoko-api",
                reason="000006 dropped a column",
                requested_by="oncall",
                hotfix=hotfix,
            ),
        ),
        (
            "forward_fix_no_hotfix",
            ForwardFixRequest(
                deployment="tekutoko-api",
                reason="000006 dropped a column",
                requested_by="oncall",
                hotfix_wait_hours=1,
            ),
        ),
    ):
        if not wanted(name):
            continue
        by_name = {
            a.__temporal_activity_definition.name: a
            for a in FakeWorld(client=env.client).activities()
        }
        by_name |= {
            a.__temporal_activity_definition.name: a
            for a in FakeCd(tags=["1.3.2", "1.3.0", "1.2.0"]).activities()
        }
        queue = f"record-{name}"
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[ForwardFixWorkflow, RedeployWorkflow],
            activities=list(by_name.values()),
        ):
            # the id is the history's name, as the replay test names it: the child's id is derived
            # from it
            handle = await env.client.start_workflow(
                ForwardFixWorkflow.run, req, id=name, task_queue=queue
            )
            if req.hotfix is not None:
                child = env.client.get_workflow_handle(f"{handle.id}-deploy")

                async def child_phase(child=child) -> str:
                    try:
                        return (await child.query("status", result_type=dict))["phase"]
                    except Exception as err:  # the child has not started yet
                        return f"no status ({err})"

                phase = await waiting.until(
                    f"{child.id} to await approval (or to end)",
                    child_phase,
                    lambda phase: phase in ("awaiting_approval", "completed", "failed"),
                    str,
                    20,
                    interval=0.05,
                )
                if phase == "awaiting_approval":
                    await child.signal("approve", ApprovalSignal(by="sre-lead"))
            with contextlib.suppress(Exception):
                await handle.result()
            history = await handle.fetch_history()
        (HERE / f"{name}.json").write_text(history.to_json())
        print(f"recorded {name}: {len(history.events)} events")


async def record_incident(
    env: WorkflowEnvironment, name: str, fake: FakeCluster, steer, *, rollback: bool = True
) -> None:
    if not wanted(name):
        return
    queue = f"record-{name}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[IncidentWorkflow, DeploymentRollbackWorkflow],
        activities=fake.activities(),
    ):
        detected = await env.get_current_time()
        incident_id = f"replay-{name}-{uuid.uuid4().hex[:6]}"
        handle = await env.client.start_workflow(
            IncidentWorkflow.run,
            IncidentRequest(
                service="tekutoko-api",
                detected_at=detected,
                opened_by="oncall",
                reason="error rate 60%",
            ),
            id=incident_id,
            task_queue=queue,
        )
        if rollback:
            change = ChangeSignal(
                kind="rollback",
                workflow_id=f"{incident_id}-rollback",
                rollback=request(severity=Severity.IMMEDIATE, detected_at=detected),
            )
            await handle.signal(IncidentWorkflow.change, change)
        await steer(env, handle)
        with contextlib.suppress(Exception):
            await handle.result()
        history = await handle.fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}: {len(history.events)} events")


async def incident_until(handle, check, what: str) -> None:
    await waiting.until(
        f"{handle.id}: {what}",
        lambda: handle.query(IncidentWorkflow.status),
        check,
        lambda s: (
            f"incident {s.state}, changes {[(c.workflow_id, c.phase) for c in s.changes]}, "
            f"missing {s.missing}"
        ),
        20,
        interval=0.05,
    )


async def follow_ups(handle) -> None:
    await handle.signal(
        IncidentWorkflow.rca,
        FollowUpSignal(
            by="oncall", summary="1.3.0 dropped an index", link="https://docs.example/rca"
        ),
    )
    await handle.signal(
        IncidentWorkflow.postmortem, FollowUpSignal(by="sre-lead", link="https://docs.example/pm")
    )
    await handle.signal(
        IncidentWorkflow.prevention, FollowUpSignal(by="sre-lead", summary="index check in CI")
    )


async def confirm_everything(env, handle) -> None:
    await incident_until(
        handle, lambda s: s.changes and s.changes[0].verified, "its rollback verified"
    )
    await env.sleep(dt.timedelta(minutes=61))  # one confirmation reminder
    for item in ("user_reports", "main_features", "dashboards"):
        await handle.signal(IncidentWorkflow.confirm, ConfirmSignal(item=item, by="sre-lead"))
    await follow_ups(handle)


async def miss_the_deadlines(env, handle) -> None:
    await incident_until(handle, lambda s: len(s.follow_ups) == 3, "three follow-ups")
    await env.sleep(dt.timedelta(hours=49))  # every reminder and escalation
    await handle.signal(
        IncidentWorkflow.rca, FollowUpSignal(by="oncall", request_id="bad")
    )  # refused: nothing to record
    await follow_ups(handle)


async def nothing(env, handle) -> None:
    return None


def no_pitr_approvals(**changes) -> FakeRecovery:
    entry = FakeRecovery().entry
    return FakeRecovery(
        entry=entry.model_copy(update={"pitr": entry.pitr.model_copy(update={"approvals": 0})}),
        **changes,
    )


def migration(**changes) -> MigrationRequest:
    return MigrationRequest(
        **{
            "service": "tekutoko-api",
            "reason": "migration 5 broke walks",
            "requested_by": "oncall",
            **changes,
        }
    )


def no_approvals(**changes) -> FakeSchema:
    entry = FakeSchema().entry
    return FakeSchema(
        entry=entry.model_copy(
            update={"migration": entry.migration.model_copy(update={"approvals": 0})}
        ),
        **changes,
    )


async def record_signed_histories() -> None:
    """A rollback in signed mode (the catalog has identities): the requester signs the run's
    start gate, an approver approves. Recorded on a dev server: it takes updates."""
    name = "signed_start_then_approval"
    if not wanted(name):
        return
    keys = {who: new_private_key() for who in ("oncall", "sre-lead")}
    fake = FakeCluster()
    trusted = fake.entry.model_copy(
        update={
            "trust": Trust(
                identities=[
                    Identity(id=who, display_name=who, roles=[who], keys=[public_key_line(key)])
                    for who, key in keys.items()
                ]
            )
        }
    )

    @activity.defn(name="catalog.lookup")
    async def lookup(request: ServiceLookup) -> ServiceEntry:
        return trusted

    activities = [
        lookup,
        *[
            a
            for a in fake.activities()
            if a.__temporal_activity_definition.name != "catalog.lookup"
        ],
    ]
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"), data_converter=pydantic_data_converter
    )
    queue = f"record-{name}"
    try:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[DeploymentRollbackWorkflow],
            activities=activities,
            workflow_runner=WORKFLOW_RUNNER,
        ):
            req = request()
            workflow_id = name  # the replay test replays each history under its name
            handle = await env.client.start_workflow(
                DeploymentRollbackWorkflow.run, req, id=workflow_id, task_queue=queue
            )
            with tempfile.TemporaryDirectory() as folder:
                key = Path(folder) / "oncall.key"
                key.write_bytes(keys["oncall"])
                key.chmod(0o600)
                await sign_start_gate(env.client, workflow_id, req, key, task_queue=queue)
            await until(handle, Phase.AWAITING_APPROVAL)
            gate = (await handle.query(DeploymentRollbackWorkflow.status)).pending
            assert gate is not None
            text = DecisionPayload.model_validate(
                payload_for(gate, "approve", "sre-lead").model_dump()
            ).text()
            signed = SignedDecision(payload=text, signature=sign(text, keys["sre-lead"]))
            await handle.execute_update("approval", ApprovalSignal(by="sre-lead", signed=signed))
            await handle.result()
            history = await handle.fetch_history()
    finally:
        await env.shutdown()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}: {len(history.events)} events")


async def record_indexed_history() -> None:
    """An immediate rollback its starter indexed: its phases are upserted as it goes.
    Recorded on a dev server (the test server has no custom search attributes).
    completed_immediate_indexed.json is the same run recorded on 0e9a452's code, before
    upserts were made only on a change."""
    from worker.client import ensure_search_attributes
    from workflows import search_attributes as sa

    name = "completed_immediate_indexed_changes_only"
    if not wanted(name):
        return
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"), data_converter=pydantic_data_converter
    )
    await ensure_search_attributes(env.client)
    queue = f"record-{name}"
    try:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[DeploymentRollbackWorkflow],
            activities=FakeCluster().activities(),
            workflow_runner=WORKFLOW_RUNNER,
        ):
            handle = await env.client.start_workflow(
                DeploymentRollbackWorkflow.run,
                request(severity=Severity.IMMEDIATE),
                id=f"replay-{name}-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
                search_attributes=sa.for_rollback("default", "tekutoko-api", "immediate"),
            )
            await handle.result()
            history = await handle.fetch_history()
    finally:
        await env.shutdown()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}: {len(history.events)} events")


async def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    await record_signed_histories()
    await record_indexed_history()
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        await record(
            env, "completed_immediate", FakeCluster(), request(severity=Severity.IMMEDIATE)
        )
        await record(env, "completed_after_approval", FakeCluster(), request(), approve)
        await record(env, "completed_with_slack_card", SlackCardCluster(), request(), approve)
        # the local look-up and the start notice beside the undo (completed_immediate was before)
        await record(
            env,
            "completed_immediate_undo_sooner",
            FakeCluster(),
            request(severity=Severity.IMMEDIATE),
        )
        await record(env, "rejected", FakeCluster(), request(), reject)
        await record(
            env,
            "rejected_before_gate",
            FakeCluster(),
            request(),
            rejected_at_start=RejectSignal(by="sre-lead", reason="forward fix"),
        )
        await record(env, "escalated", FakeCluster(), request(), escalate_then_approve)
        await record(
            env,
            "refused_missing_revision",
            FakeCluster(plan_error="revision 9 is not in the history"),
            request(to_revision=9),
        )
        await record(env, "already_at_target", FakeCluster(already_at_target=True), request())
        await record(
            env,
            "verification_failed",
            FakeCluster(verify_ok=False),
            request(severity=Severity.IMMEDIATE),
        )
        await record_guard(
            env,
            "guard_rolled_back",
            ScriptedGuard([clean(4), breach(Severity.IMMEDIATE, "error ratio 60.0% > 50%")]),
            guard(),
        )
        await record_guard(
            env,
            "guard_continued_as_new",
            ScriptedGuard(
                [clean(3), clean(3), breach(Severity.IMMEDIATE, "error ratio 60.0% > 50%")]
            ),
            guard(polls_per_run=3),
        )
        await record_guard(
            env, "guard_stopped", ScriptedGuard([clean(2), "block"]), guard(), stop_guard
        )
        await record_guard(env, "guard_window_over", ScriptedGuard([clean(2), "over"]), guard())
        two = (ApprovalSignal(by="sre-lead"), ApprovalSignal(by="backend-lead"))
        await record_guard(
            env,
            "guard_rolled_back_in_incident",
            ScriptedGuard([clean(4), breach(Severity.IMMEDIATE, "error ratio 60.0% > 50%")]),
            guard(),
        )
        await record_incident(env, "incident_closed", FakeCluster(), confirm_everything)
        await record_incident(
            env, "incident_deadlines_missed", FakeCluster(), miss_the_deadlines, rollback=False
        )
        await record_incident(
            env,
            "incident_nothing_changed",
            FakeCluster(plan_error="revision 9 is not in the history"),
            nothing,
        )
        await record_migration(env, "migration_completed", FakeSchema(), migration(), two)
        await record_migration(
            env,
            "migration_rejected",
            FakeSchema(),
            migration(),
            (RejectSignal(by="dba", reason="forward fix"),),
        )
        await record_migration(
            env, "migration_refused_no_backup", FakeSchema(backup_ok=False), migration()
        )
        await record_migration(
            env, "migration_failed_down", no_approvals(fail_down=True), migration()
        )
        await record_migration(
            env,
            "migration_verification_failed",
            no_approvals(rows_after=7),
            migration(to_version=3),
        )
        await record_pitr(env, "pitr_switched", FakeRecovery(), ("clone", "switch"))
        await record_pitr(env, "pitr_check_failed", no_pitr_approvals(check_ok=False))
        await record_pitr(env, "pitr_switched_back", no_pitr_approvals(healthy_on_clone=False))
        await record_pitr(
            env, "pitr_refused", FakeRecovery(problems=["the restore point is in the future"])
        )
        await record_cd_histories(env)
        await record_forward_fix_histories(env)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    import sys

    ONLY = tuple(sys.argv[1:])
    asyncio.run(main())
