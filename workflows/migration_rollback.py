"""The runbook's migration rollback as a durable workflow: read the schema's
version and history with the app's own command in one of its pods, require a
fresh Cloud SQL backup, take two approvals, step down, and verify the schema
and the data with read-only SQL.

Steps are turned into the version they lead to and the app's `down-to` runs,
so a retried activity never reverts twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from runbook import notices
    from runbook.catalog import MigrationConfig, ServiceEntry
    from runbook.decisions import Grant
    from runbook.migration_models import (
        BackupCheck,
        BackupCheckRequest,
        DatabaseSnapshot,
        ExecRequest,
        ExecResult,
        MigrationRequest,
        MigrationResult,
        MigrationStatus,
        SnapshotRequest,
    )
    from runbook.migrations import (
        MigrationRefused,
        SchemaState,
        parse_history,
        parse_version,
        plan_down,
    )
    from runbook.models import (
        ApprovalSignal,
        CheckResult,
        Phase,
        RejectSignal,
        ServiceByName,
    )
    from runbook.plans import migration_plan
    from runbook.policy import sla_deadline

    from .approval import ApprovalDesk, escalate
    from .change import ChangeSteps
    from .retries import failure_message, failure_type

TERMINAL = (Phase.COMPLETED, Phase.FAILED, Phase.REJECTED)
EXEC_HEARTBEAT_SECONDS = 10  # k8s.exec heartbeats every 2 s while the command runs: a lost worker is noticed in seconds


class Stop(Exception):
    """Ends the run with the status as it stands (a refusal or a failure)."""


@workflow.defn(name="MigrationRollback")
class MigrationRollbackWorkflow(ChangeSteps):
    @workflow.init
    def __init__(self, request: MigrationRequest) -> None:
        now = workflow.now()
        detected = request.detected_at or now
        self._request = request
        self._entry: ServiceEntry | None = None
        self._start_verified = False
        self._status = MigrationStatus(
            workflow_id=workflow.info().workflow_id, phase=Phase.PLANNING, service=request.service, severity=request.severity,
            requested_by=request.requested_by, reason=request.reason, detected_at=detected,
            sla_deadline=sla_deadline(request.severity, detected), timings={"started": now},
        )
        self._desk = ApprovalDesk(request.requested_by, self._status.audit, self._status.approvals)
        wanted = f"down to version {request.to_version}" if request.to_version is not None else f"down {request.steps or 1} step(s)"
        self._desk.note(request.requested_by, "requested", detail=f"migration rollback {wanted}: {request.reason}")

    @property
    def _notes(self) -> ApprovalDesk:
        return self._desk

    @property
    def _target_label(self) -> str:
        return f"{self._request.service} (schema)"

    @workflow.signal(name="approve")
    def approve(self, signal: ApprovalSignal) -> None:
        self._desk.receive(signal)

    @workflow.signal(name="reject")
    def reject(self, signal: RejectSignal) -> None:
        self._desk.receive(signal)

    @workflow.query(name="status")
    def status(self) -> MigrationStatus:
        return self._status

    @workflow.run
    async def run(self, request: MigrationRequest) -> MigrationResult:
        escalations = asyncio.create_task(escalate(
            request.severity, self._status.detected_at, done=lambda: self._status.phase in TERMINAL,
            mitigated=lambda: "mitigated" in self._status.timings, on_deadline=self._deadline, announce=self._escalation,
        ))
        try:
            return await self._run(request)
        except ActivityError as err:
            await self._fail(failure_message(err), announce=self._status.phase is Phase.EXECUTING)
            raise ApplicationError(self._status.message, type=failure_type(err, "MigrationRollbackFailed"), non_retryable=True) from err
        except Stop:
            changed = Phase.EXECUTING.value in self._status.timings
            raise ApplicationError(self._status.message, type="MigrationRollbackFailed" if changed else "MigrationRollbackRefused", non_retryable=True) from None
        finally:
            self._status.timings["finished"] = workflow.now()
            escalations.cancel()

    async def _run(self, request: MigrationRequest) -> MigrationResult:
        entry: ServiceEntry = await self._activity("catalog.service", ServiceByName(name=request.service), ServiceEntry, "look up the service catalog")
        if entry.migration is None:
            await self._fail(f"service {request.service!r} has no migration settings in the catalog (migration: cloudsql_instance, database_secret, ...)")
            raise Stop
        self._entry, config = entry, entry.migration
        self._desk.set_policy(entry.approval, entry.trust)
        self._start_verified = self._desk.verify_start(request)
        self._status.namespace, self._status.deployment = entry.namespace, entry.deployment

        state = await self._read_state(config)
        try:
            steps, target = plan_down(state, request.steps, request.to_version)
        except MigrationRefused as refused:
            await self._fail(f"refused before any change: {refused}")
            raise Stop from None
        self._status.from_version, self._status.to_version, self._status.steps = state.version, target, steps
        workflow.set_current_details(f"**{request.service}** schema {state.version} → {target if target is not None else 'nil'} ({steps} step{'s' if steps != 1 else ''})")

        backup: BackupCheck = await self._activity("cloudsql.check_backup", BackupCheckRequest(
            instance=config.cloudsql_instance, project=config.cloudsql_project, max_age_hours=config.backup_max_age_hours,
            take_if_missing=config.on_demand_backup and not request.dry_run,
        ), BackupCheck, "check for a fresh Cloud SQL backup", timeout=3700, heartbeat=60)
        self._status.backup = backup
        self._desk.note("modoru", "backup", counted=backup.ok, detail=backup.detail)
        if not backup.ok:
            await self._fail(f"refused before any change: {backup.detail}")
            raise Stop
        if request.dry_run:
            self._status.message = f"dry run: would roll {request.service}'s schema back from version {state.version} to {target if target is not None else 'nil'} ({steps} steps)"
            self._set_phase(Phase.COMPLETED)
            return MigrationResult(status=self._status, no_op=True)
        self._status.before = await self._snapshot(entry, config, "read the tables and integrity numbers before")

        if not await self._approval_gate(config.approvals):
            return MigrationResult(status=self._status)

        self._set_phase(Phase.EXECUTING)
        subject, text = notices.start_notice(
            request.language, detected_at=self._status.detected_at, impact=request.reason, cause="",
            action=f"migrate down-to {target if target is not None else 0} ({state.version} → {target if target is not None else 'nil'})",
            expected_recovery=max(self._status.sla_deadline, workflow.now() + timedelta(minutes=5)),
        )
        await self._notify("start", subject, text)
        self._status.pending = None
        down = await self._exec(config, "down_to", "migrate down", version=target or 0, steps=steps, grant=self._desk.grant(request))
        version, dirty = await self._version(config)
        if down.exit_code != 0 or dirty or version != target:
            said = (down.stderr or down.stdout).strip().splitlines()[-1:] or [""]
            self._status.dirty = dirty
            await self._fail(f"{' '.join(down.command)} exited {down.exit_code}: {said[0]}; the schema is now at version {version if version is not None else 'nil'}{' (dirty)' if dirty else ''}; nothing further was run", announce=True)
            raise Stop
        self._status.timings["mitigated"] = workflow.now()
        self._status.sla_met = self._status.timings["mitigated"] <= self._status.sla_deadline

        self._set_phase(Phase.VERIFYING)
        self._status.after = await self._snapshot(entry, config, "read the tables and integrity numbers after")
        self._status.integrity = self._compare(config, self._status.before, self._status.after)
        failing = [c for c in self._status.integrity if not c.ok]
        if failing:
            await self._fail("verification failed: " + "; ".join(f"{c.name}: {c.detail}" for c in failing), announce=True)
            raise Stop
        subject, text = notices.migration_complete_notice(request.language, done_at=workflow.now(), service=request.service,
                                                          from_version=state.version, to_version=target, result="; ".join(c.detail for c in self._status.integrity) or "schema at the target version")
        await self._notify("complete", subject, text)
        self._status.message = f"rolled {request.service}'s schema back from version {state.version} to {target if target is not None else 'nil'} and verified"
        self._set_phase(Phase.COMPLETED)
        return MigrationResult(status=self._status)

    # -- steps ---------------------------------------------------------------------------

    async def _read_state(self, config: MigrationConfig) -> SchemaState:
        version, dirty = await self._version(config)
        history = await self._exec(config, "history", "migrate history")
        if history.exit_code != 0:
            await self._fail(f"{' '.join(history.command)} exited {history.exit_code}: {history.stderr.strip()[-300:]}")
            raise Stop
        applied, available = parse_history(history.stdout)
        self._status.from_version, self._status.dirty = version, dirty
        return SchemaState(version=version, dirty=dirty, applied=tuple(applied), available=tuple(available))

    async def _version(self, config: MigrationConfig) -> tuple[int | None, bool]:
        result = await self._exec(config, "version", "migrate version")
        try:
            return parse_version(result.stdout, result.stderr)
        except ValueError as exc:
            await self._fail(f"{' '.join(result.command)} exited {result.exit_code}: {exc}")
            raise Stop from None

    async def _exec(self, config: MigrationConfig, action: str, summary: str, *, version: int | None = None, steps: int = 0,
                    grant: Grant | None = None) -> ExecResult:
        result: ExecResult = await self._activity("k8s.exec", ExecRequest(
            service=self._request.service, action=action, version=version, steps=steps, grant=grant,  # type: ignore[arg-type]
        ), ExecResult, summary, timeout=config.command_timeout_seconds + 60, heartbeat=EXEC_HEARTBEAT_SECONDS)
        self._status.commands.append(result)
        self._desk.note("modoru", "exec", detail=f"{' '.join(result.command)} in {result.pod}: exit {result.exit_code}")
        return result

    async def _snapshot(self, entry: ServiceEntry, config: MigrationConfig, summary: str) -> DatabaseSnapshot:
        assert entry.database is not None  # the catalog requires it with migration
        return await self._activity("db.snapshot", SnapshotRequest(namespace=entry.namespace, deployment=entry.deployment, access=entry.database,
                                                                   checks=config.integrity_checks),
                                    DatabaseSnapshot, summary + " (psql in an app pod)", timeout=entry.database.query_timeout_seconds * (len(config.integrity_checks) + 1) + 120)

    @staticmethod
    def _compare(config: MigrationConfig, before: DatabaseSnapshot | None, after: DatabaseSnapshot) -> list[CheckResult]:
        assert before is not None
        gone = sorted(set(before.tables) - set(after.tables))
        added = sorted(set(after.tables) - set(before.tables))
        found = [CheckResult(name="tables", ok=True, detail=f"{len(after.tables)} tables; dropped: {', '.join(gone) or 'none'}; added: {', '.join(added) or 'none'}")]
        for check in config.integrity_checks:
            was, now = before.values.get(check.name), after.values.get(check.name)
            if now is None and was is not None:
                found.append(CheckResult(name=check.name, ok=not check.must_not_drop, detail=f"was {was:g}, now unreadable (its table is gone)"))
            elif was is not None and now is not None and now < was:
                found.append(CheckResult(name=check.name, ok=not check.must_not_drop, detail=f"dropped from {was:g} to {now:g} ({now - was:+g})"))
            else:
                found.append(CheckResult(name=check.name, ok=True, detail=f"{was if was is None else f'{was:g}'} → {now if now is None else f'{now:g}'}"))
        return found

    async def _approval_gate(self, needed: int) -> bool:
        if needed == 0 and self._desk.signed and not self._desk.immediate_without_approval(self._start_verified, started_by_guard=False):
            needed = 1
        self._status.approvals_required = needed
        status = self._status
        self._status.pending = self._desk.show("approval", migration_plan(self._request.service, status.from_version, status.to_version, status.steps or 0))
        if self._desk.rejection is None and needed == 0:
            self._desk.note("modoru", "approval", detail="policy proceeds without approval")
            return True
        self._set_phase(Phase.AWAITING_APPROVAL)
        if self._desk.rejection is None:
            assert self._entry is not None
            subject, text = notices.approval_needed_notice(self._request.language, deployment=self._target_label, workflow_id=self._status.workflow_id,
                                                            approvers=self._entry.approval.approvers, deadline=self._status.sla_deadline)
            await self._notify("approval_needed", subject, text)
        approved = self._desk.rejection is None and await self._desk.wait(needed)
        self._desk.open = False
        self._status.pending = None
        if approved:
            return True
        rejection = self._desk.rejection
        assert rejection is not None
        self._status.message = f"rejected by {rejection.by}: {rejection.reason}; nothing was changed"
        subject, text = notices.rejected_notice(self._request.language, deployment=self._target_label, by=rejection.by, reason=rejection.reason)
        await self._notify("rejected", subject, text)
        self._set_phase(Phase.REJECTED)
        return False

    # -- helpers -------------------------------------------------------------------------

    def _deadline(self) -> None:
        self._desk.deadline_passed = True
        if "mitigated" not in self._status.timings:
            self._status.sla_met = False

    async def _escalation(self, point: str) -> None:
        self._status.escalations.append(point)
        self._desk.note("modoru", "escalation", detail=f"{point} in phase {self._status.phase.value}")
        subject, text = notices.escalation_notice(self._request.language, point=point, deployment=self._target_label,
                                                  deadline=self._status.sla_deadline, phase=self._status.phase.value)
        await self._notify("escalation", subject, text)



def migration_workflow_id(service: str) -> str:
    """One schema rollback per service at a time."""
    return f"migration-{service}"
