"""Method 1 of the runbook as a durable workflow: plan, back up, approve,
announce, undo, wait, verify, announce — with the 5/15-minute deadlines held
by durable timers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from runbook import notices
    from runbook.catalog import ServiceEntry
    from runbook.checklist import new_checklist, verified_items
    from runbook.models import (
        ApprovalSignal,
        AuditEntry,
        BackupRef,
        BackupRequest,
        Diagnostics,
        Notice,
        NoticeResult,
        Phase,
        PlanRequest,
        RejectSignal,
        RollbackPlan,
        RollbackRequest,
        RollbackResult,
        RollbackStatus,
        RolloutOutcome,
        RolloutWaitRequest,
        ServiceLookup,
        UndoRequest,
        UndoResult,
        VerifyRequest,
        VerifyResult,
    )
    from runbook.plans import rollback_plan
    from runbook.policy import approvals_required, sla_deadline

    from . import search_attributes as sa
    from .approval import ApprovalDesk, escalate
    from .retries import SLA_RETRY, budget, failure_message, failure_type

NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
TERMINAL = (Phase.COMPLETED, Phase.FAILED, Phase.REJECTED)


@workflow.defn(name="DeploymentRollback")
class DeploymentRollbackWorkflow:
    @workflow.init
    def __init__(self, request: RollbackRequest) -> None:
        now = workflow.now()
        detected = request.detected_at or now
        self._request = request
        self._entry: ServiceEntry | None = None
        self._plan: RollbackPlan | None = None
        self._start_verified = False
        # Search attributes are kept up to date only when the starter indexed this
        # run with them: a server without modoru's attributes registered would
        # otherwise reject every workflow task.
        self._indexed = workflow.info().typed_search_attributes.get(sa.PHASE) is not None
        self._status = RollbackStatus(
            workflow_id=workflow.info().workflow_id,
            phase=Phase.PLANNING,
            namespace=request.namespace,
            deployment=request.deployment,
            severity=request.severity,
            requested_by=request.requested_by,
            reason=request.reason,
            to_revision=request.to_revision,
            detected_at=detected,
            sla_deadline=sla_deadline(request.severity, detected),
            timings={"started": now},
            checklist=new_checklist(request.language),
            evidence=request.evidence,
        )
        self._desk = ApprovalDesk(request.requested_by, self._status.audit, self._status.approvals)
        self._audit(request.requested_by, "requested", detail=f"{request.severity.value} rollback: {request.reason}")
        self._check("decide", f"{request.severity.value}: {request.reason}")

    # -- signals and queries -----------------------------------------------------------

    @workflow.signal(name="approve")
    def approve(self, signal: ApprovalSignal) -> None:
        self._desk.receive(signal)

    @workflow.signal(name="reject")
    def reject(self, signal: RejectSignal) -> None:
        self._desk.receive(signal)

    @workflow.query(name="status")
    def status(self) -> RollbackStatus:
        return self._status

    # -- the procedure -------------------------------------------------------------------

    @workflow.run
    async def run(self, request: RollbackRequest) -> RollbackResult:
        escalations = asyncio.create_task(escalate(
            request.severity, self._status.detected_at, done=lambda: self._status.phase in TERMINAL,
            mitigated=lambda: "mitigated" in self._status.timings, on_deadline=self._on_deadline, announce=self._announce_escalation,
        ))
        self._count("modoru_rollbacks_started", "rollbacks started")
        try:
            result = await self._run(request)
            outcome = {Phase.COMPLETED: "completed", Phase.REJECTED: "rejected"}.get(result.status.phase, "failed")
            self._count(f"modoru_rollbacks_{outcome}", f"rollbacks {outcome}")
            return result
        except ActivityError as err:
            # Refused before anything changed (catalog, plan, backup): fail with the
            # activity's own words, so the CLI and the Web UI show what to fix.
            message = failure_message(err)
            self._status.message = message
            self._set_phase(Phase.FAILED)
            self._count("modoru_rollbacks_failed", "rollbacks failed")
            raise ApplicationError(message, type=failure_type(err, "RollbackRefused"), non_retryable=True) from err
        except ApplicationError:
            self._count("modoru_rollbacks_failed", "rollbacks failed")
            raise
        finally:
            self._status.timings["finished"] = workflow.now()
            escalations.cancel()

    async def _run(self, request: RollbackRequest) -> RollbackResult:
        self._entry = await self._activity("catalog.lookup", ServiceLookup(namespace=request.namespace, deployment=request.deployment), ServiceEntry, "look up the service catalog")
        self._desk.set_policy(self._entry.approval, self._entry.trust)
        self._start_verified = self._desk.verify_start(request)
        self._set_phase(Phase.PLANNING)
        plan: RollbackPlan = await self._activity("k8s.plan_rollback", PlanRequest(namespace=request.namespace, deployment=request.deployment, to_revision=request.to_revision), RollbackPlan, "plan: read the deployment and its history")
        self._plan = plan
        self._status.from_revision, self._status.to_revision = plan.from_revision, plan.to_revision
        self._status.image_diff = plan.image_diff
        self._check("target", f"revision {plan.from_revision} -> {plan.to_revision}: {'; '.join(plan.image_diff) or 'same images'}")
        self._check("history", ", ".join(f"{h.revision}:{h.change_cause or '<none>'}" for h in plan.history))
        workflow.set_current_details(f"**{request.deployment}**: revision {plan.from_revision} → {plan.to_revision}\n\n{chr(10).join(plan.image_diff)}")
        if plan.already_at_target:
            self._status.message = f"deployment/{request.deployment} already runs revision {plan.to_revision}'s template; nothing to do"
            return self._finish(Phase.COMPLETED, plan=plan, no_op=True)
        if request.dry_run:
            self._status.message = f"dry run: would roll deployment/{request.deployment} back from revision {plan.from_revision} to {plan.to_revision}"
            return self._finish(Phase.COMPLETED, plan=plan, no_op=True)

        backup = await self._activity("k8s.backup_deployment", BackupRequest(
            namespace=request.namespace, deployment=request.deployment, from_revision=plan.from_revision,
            backup_name=f"modoru-backup-{request.deployment}-r{plan.from_revision}-{workflow.info().run_id[:8]}"[:253],
        ), BackupRef, "back up the current deployment")
        self._status.backup_configmap = backup.configmap
        self._check("backup", f"configmap/{backup.configmap}")

        if not await self._approval_gate():
            return self._finish(Phase.REJECTED, plan=plan, backup=backup.manifest_yaml)

        self._set_phase(Phase.EXECUTING)
        expected = max(self._status.sla_deadline, workflow.now() + timedelta(minutes=2))
        subject, text = notices.start_notice(
            request.language, detected_at=self._status.detected_at, impact=request.impact or request.reason, cause=request.cause,
            action=("ロールバックを開始します" if request.language == "ja" else "starting the rollback") + f" (revision {plan.from_revision} → {plan.to_revision})",
            expected_recovery=expected,
        )
        delivered = await self._notify("start", subject, text)
        self._check("notify_start", ", ".join(delivered) or "no channel took the notice", done=bool(delivered))
        try:
            self._status.pending = None
            undo: UndoResult = await self._activity("k8s.rollout_undo", UndoRequest(plan=plan, grant=self._desk.grant(request)), UndoResult,
                                                    f"undo to revision {plan.to_revision}")
            self._check("undo", undo.message)
            self._set_phase(Phase.WAITING_ROLLOUT)
            outcome: RolloutOutcome = await self._activity(
                "k8s.wait_rollout",
                RolloutWaitRequest(namespace=request.namespace, deployment=request.deployment, timeout_seconds=self._entry.rollout_timeout_seconds),
                RolloutOutcome, "wait for the rollout", timeout=self._entry.rollout_timeout_seconds + 60, heartbeat=10,
            )
            self._status.timings["mitigated"] = workflow.now()
            self._observe_mitigation()
            self._check("rollout", outcome.message)
            self._status.diagnostics = outcome.diagnostics
            self._set_phase(Phase.VERIFYING)
            verification: VerifyResult = await self._activity(
                "verify.service",
                VerifyRequest(namespace=request.namespace, deployment=request.deployment, service=self._entry.service,
                              paths=self._entry.check_paths, window_seconds=self._entry.verification_window_seconds,
                              monitoring=self._entry.monitoring, recovery=self._entry.recovery, post_checks=self._entry.post_checks_resolved()),
                VerifyResult, "verify pods, health and API", timeout=self._entry.verification_window_seconds + 60, heartbeat=10,
            )
        except ActivityError as err:
            return await self._fail(err, plan, backup.manifest_yaml)
        self._status.verification = verification
        for key, evidence in verified_items(verification):
            self._check(key, evidence)
        if not verification.ok:
            failing = "; ".join(f"{c.name}: {c.detail}" for c in verification.checks if not c.ok)
            self._status.message = f"verification failed after {verification.attempts} attempts: {failing}"
            await self._announce_failure(self._status.message, [])
            raise ApplicationError(self._status.message, type="VerificationFailed", non_retryable=True)
        self._record_sla()
        subject, text = notices.complete_notice(
            request.language, recovered_at=self._status.timings["mitigated"], from_revision=plan.from_revision,
            to_revision=plan.to_revision, result=notices.verification_summary(request.language, verification.checks),
        )
        delivered = await self._notify("complete", subject, text)
        self._check("notify_done", ", ".join(delivered) or "no channel took the notice", done=bool(delivered))
        self._status.message = f"rolled back deployment/{request.deployment} from revision {plan.from_revision} to {plan.to_revision} and verified"
        return self._finish(Phase.COMPLETED, plan=plan, backup=backup.manifest_yaml)

    async def _approval_gate(self) -> bool:
        entry = self._entry
        assert entry is not None
        needed = approvals_required(self._request.severity, entry.approval)
        if needed == 0 and self._desk.signed:
            guard = workflow.info().parent is not None and bool(self._request.evidence)
            needed = 0 if self._desk.immediate_without_approval(self._start_verified, guard) else 1
        self._status.approvals_required = needed
        assert self._plan is not None
        self._status.pending = self._desk.show("approval", rollback_plan(self._plan))
        if self._desk.rejection is not None:
            return False
        if needed == 0:
            self._audit("modoru", "approval", counted=None, detail=f"{self._request.severity.value}: policy proceeds without approval")
            return True
        self._set_phase(Phase.AWAITING_APPROVAL)
        subject, text = notices.approval_needed_notice(self._request.language, deployment=self._request.deployment, workflow_id=self._status.workflow_id, approvers=entry.approval.approvers, deadline=self._status.sla_deadline)
        await self._notify("approval_needed", subject, text)
        self._count("modoru_approval_waits_started", "rollbacks that began waiting for approval")
        approved = await self._desk.wait(needed)
        self._status.pending = None
        self._count("modoru_approval_waits_ended", "rollbacks that stopped waiting for approval (waiting = started - ended)")
        if approved:
            return True
        rejection = self._desk.rejection
        assert rejection is not None
        if self._desk.aborted:
            self._status.message = rejection.reason
            return False
        self._status.message = f"rejected by {rejection.by}: {rejection.reason}"
        subject, text = notices.rejected_notice(self._request.language, deployment=self._request.deployment, by=rejection.by, reason=rejection.reason)
        await self._notify("rejected", subject, text)
        return False

    def _on_deadline(self) -> None:
        self._desk.deadline_passed = True
        if "mitigated" not in self._status.timings:
            self._status.sla_met = False
            self._index(sa.SLA.value_set("breached"))
            self._count("modoru_sla_breaches", "rollbacks that missed the runbook's deadline")

    async def _announce_escalation(self, point: str) -> None:
        at = self._status.sla_deadline if point == "deadline" else self._status.detected_at + (self._status.sla_deadline - self._status.detected_at) / 2
        self._status.escalations.append(point)
        self._audit("modoru", "escalation", detail=f"{point} at {at.isoformat()} in phase {self._status.phase.value}")
        subject, text = notices.escalation_notice(self._request.language, point=point, deployment=self._request.deployment, deadline=self._status.sla_deadline, phase=self._status.phase.value)
        await self._notify("escalation", subject, text)

    # -- helpers -------------------------------------------------------------------------

    async def _activity(self, name: str, arg, result_type, summary: str, *, timeout: int = 60, heartbeat: int | None = None):
        """Transient errors are retried until the SLA deadline is near (workflows/retries.py)."""
        return await workflow.execute_activity(
            name, arg, result_type=result_type,
            start_to_close_timeout=timedelta(seconds=timeout),
            schedule_to_close_timeout=budget(self._status.sla_deadline, workflow.now(), at_least=timedelta(seconds=timeout)),
            heartbeat_timeout=timedelta(seconds=heartbeat) if heartbeat else None,
            retry_policy=SLA_RETRY, summary=summary,
        )

    async def _notify(self, kind: str, subject: str, text: str) -> list[str]:
        """Send a notice; returns the channels that took it. Failing channels are
        audited, never fatal: a rollback must not wait on a chat service."""
        if self._entry is None or not self._entry.channels:
            return []
        try:
            result: NoticeResult = await workflow.execute_activity(
                "notify.send", Notice(kind=kind, subject=subject, text=text, channels=self._entry.channels), result_type=NoticeResult,
                start_to_close_timeout=timedelta(seconds=30), retry_policy=NOTIFY_RETRY, summary=f"notify: {subject}",
            )
        except ActivityError:
            self._audit("modoru", "notify_failed", detail=subject)
            return []
        for failure in result.failed:
            self._audit("modoru", "notify_failed", detail=f"{subject}: {failure}")
        return result.delivered

    async def _fail(self, err: ActivityError, plan: RollbackPlan, backup: str) -> RollbackResult:
        cause = err.cause
        message = failure_message(err)
        problems: list[str] = []
        if isinstance(cause, ApplicationError) and cause.details:
            detail = cause.details[0]
            if isinstance(detail, dict):
                diagnostics = Diagnostics.model_validate(detail)
                self._status.diagnostics = diagnostics
                problems = diagnostics.problems
        self._status.message = message
        await self._announce_failure(message, problems)
        self._finish(Phase.FAILED, plan=plan, backup=backup)
        raise ApplicationError(f"rollback of deployment/{plan.deployment} failed: {message}", self._status.model_dump(mode="json"), type=failure_type(err, "RollbackFailed"), non_retryable=True)

    async def _announce_failure(self, message: str, problems: list[str]) -> None:
        self._set_phase(Phase.FAILED)
        subject, text = notices.failure_notice(self._request.language, at=workflow.now(), deployment=self._request.deployment, error=message, problems=problems)
        await self._notify("failure", subject, text)

    def _record_sla(self) -> None:
        met = self._status.timings["mitigated"] <= self._status.sla_deadline
        if not met and self._status.sla_met is None:
            self._count("modoru_sla_breaches", "rollbacks that missed the runbook's deadline")
        self._status.sla_met = met
        self._index(sa.SLA.value_set("met" if met else "breached"))

    def _finish(self, phase: Phase, *, plan: RollbackPlan | None = None, backup: str | None = None, no_op: bool = False) -> RollbackResult:
        self._set_phase(phase)
        if phase is Phase.COMPLETED and not no_op:
            due = workflow.now()
            self._check("rca", f"due {(due + timedelta(hours=24)).isoformat()}", done=False)
            self._check("postmortem", f"due {(due + timedelta(hours=48)).isoformat()}", done=False)
        return RollbackResult(status=self._status, plan=plan, backup_manifest=backup, no_op=no_op)

    def _set_phase(self, phase: Phase) -> None:
        self._status.phase = phase
        self._desk.open = phase in (Phase.PLANNING, Phase.AWAITING_APPROVAL)  # decisions count until the rollback acts
        self._status.timings[phase.value] = workflow.now()
        self._index(sa.PHASE.value_set(phase.value))

    def _count(self, name: str, description: str) -> None:
        """modoru's own metrics, by service and severity (skipped on replay)."""
        meter = workflow.metric_meter().with_additional_attributes({
            "service": self._request.deployment, "namespace": self._request.namespace, "severity": self._request.severity.value,
        })
        meter.create_counter(name, description).add(1)

    def _observe_mitigation(self) -> None:
        seconds = (self._status.timings["mitigated"] - self._status.detected_at).total_seconds()
        meter = workflow.metric_meter().with_additional_attributes({"service": self._request.deployment, "severity": self._request.severity.value})
        meter.create_histogram_float("modoru_time_to_mitigate", "seconds from detection to a finished rollout", "s").record(max(seconds, 0.0))

    def _index(self, update) -> None:
        if self._indexed:
            workflow.upsert_search_attributes([update])

    def _audit(self, actor: str, action: str, *, counted: bool | None = None, detail: str = "", request_id: str = "") -> None:
        self._status.audit.append(AuditEntry(at=workflow.now(), actor=actor, action=action, counted=counted, detail=detail, request_id=request_id))

    def _check(self, key: str, evidence: str, *, done: bool = True) -> None:
        for item in self._status.checklist:
            if item.key == key:
                item.evidence = evidence
                item.done_at = workflow.now() if done else None


def rollback_workflow_id(namespace: str, deployment: str) -> str:
    """One rollback per deployment at a time: the id is the deployment's."""
    return f"rollback-{namespace}-{deployment}"

