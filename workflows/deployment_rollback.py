"""Method 1 of the runbook as a durable workflow: plan, back up, approve,
announce, undo, wait, verify, announce — with the 5/15-minute deadlines held
by durable timers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook import notices
    from runbook.cd_models import PullCheckRequest, PullDiagnosis
    from runbook.checklist import verified_items
    from runbook.enums import Phase
    from runbook.models import (
        BackupRef,
        BackupRequest,
        Diagnostics,
        PlanRequest,
        RollbackPlan,
        RollbackRequest,
        RollbackResult,
        RollbackStatus,
        UndoRequest,
    )
    from runbook.plans import rollback_plan
    from runbook.policy import approvals_required

    from . import search_attributes as sa
    from .change import ONE_GATE, ChangeWorkflow
    from .deploy_steps import PULL_REASONS
    from .retries import failure_message, failure_type

PULL_DIAGNOSIS = (
    "method-1-pull-diagnosis"  # runs recorded before it asked Artifact Registry nothing
)
# workflow.patched id: the start notice is sent beside the undo, not before it (runs recorded
# before it waited for the notice before undoing). The catalog look-up stays an ordinary
# activity: as a local one it raced the escalation timers started beside it, and a replay
# (a worker restart, a query of a finished run) could meet the timer and the look-up's
# result in another order than the run did (a nondeterminism error, seen under load).
UNDO_SOONER = "undo-sooner"
# workflow.patched id: a search attribute is upserted only when its value changes, and the SLA
# goes with the phase the run ends in: each upsert is a billed action (runs recorded before it
# upserted "planning" again over the starter's value, and the SLA on its own).
INDEX_CHANGES_ONLY = "index-changes-only"


@workflow.defn(name="DeploymentRollback")
class DeploymentRollbackWorkflow(ChangeWorkflow[RollbackRequest, RollbackStatus]):
    KIND = "Rollback"

    @workflow.init
    def __init__(self, request: RollbackRequest) -> None:
        self._plan: RollbackPlan | None = None
        self._changes_only = False  # set by the run (patched) before any upsert
        # search attribute updates that go with the next phase's
        self._held: list[SearchAttributeUpdate[str]] = []
        # Search attributes are kept up to date only when the starter indexed this
        # run with them: a server without modoru's attributes registered would
        # otherwise reject every workflow task.
        self._indexed = workflow.info().typed_search_attributes.get(sa.PHASE) is not None
        self._begin(
            request,
            RollbackStatus,
            f"{request.severity.value} rollback: {request.reason}",
            to_revision=request.to_revision,
            evidence=request.evidence,
        )

    @property
    def _target_label(self) -> str:
        return self._request.deployment

    @workflow.query(name="status")
    def status(self) -> RollbackStatus:
        return self._status

    # -- the procedure -------------------------------------------------------------------

    @workflow.run
    async def run(self, request: RollbackRequest) -> RollbackResult:
        self._count("modoru_rollbacks_started", "rollbacks started")
        try:
            result = await self._carry_out(self._run(request))
        except ApplicationError:
            self._count("modoru_rollbacks_failed", "rollbacks failed")
            raise
        outcome = {Phase.COMPLETED: "completed", Phase.REJECTED: "rejected"}.get(
            result.status.phase, "failed"
        )
        self._count(f"modoru_rollbacks_{outcome}", f"rollbacks {outcome}")
        return result

    async def _run(self, request: RollbackRequest) -> RollbackResult:
        sooner = workflow.patched(UNDO_SOONER)
        self._changes_only = workflow.patched(INDEX_CHANGES_ONLY)
        entry = await self._look_up()
        self._adopt(entry)
        self._set_phase(Phase.PLANNING)
        plan = await self._call(
            refs.PLAN_ROLLBACK,
            PlanRequest.of(entry, to_revision=request.to_revision),
            "plan: read the deployment and its history",
        )
        self._plan = plan
        self._status.from_revision, self._status.to_revision = plan.from_revision, plan.to_revision
        self._status.image_diff = plan.image_diff
        self._check(
            "target",
            f"revision {plan.from_revision} -> {plan.to_revision}: "
            f"{'; '.join(plan.image_diff) or 'same images'}",
        )
        self._check(
            "history", ", ".join(f"{h.revision}:{h.change_cause or '<none>'}" for h in plan.history)
        )
        workflow.set_current_details(
            f"**{request.deployment}**: revision {plan.from_revision} → "
            f"{plan.to_revision}\n\n{chr(10).join(plan.image_diff)}"
        )
        if plan.already_at_target:
            self._status.message = (
                f"deployment/{request.deployment} already runs revision {plan.to_revision}'s "
                "template; nothing to do"
            )
            return self._finish(Phase.COMPLETED, plan=plan, no_op=True)
        if request.dry_run:
            self._status.message = (
                f"dry run: would roll deployment/{request.deployment} back from revision "
                f"{plan.from_revision} to {plan.to_revision}"
            )
            return self._finish(Phase.COMPLETED, plan=plan, no_op=True)

        backup = await self._call(
            refs.BACKUP_DEPLOYMENT,
            BackupRequest.of(
                entry,
                from_revision=plan.from_revision,
                backup_name=f"modoru-backup-{request.deployment}-r{plan.from_revision}-{workflow.info().run_id[:8]}"[
                    :253
                ],
            ),
            "back up the current deployment",
        )
        self._status.backup_configmap = backup.configmap
        self._check("backup", f"configmap/{backup.configmap}")

        if not await self._approval_gate(plan):
            return RollbackResult(
                status=self._status, plan=plan, backup_manifest=backup.manifest_yaml
            )

        start_notice = self._announce_start(
            ("ロールバックを開始します" if request.language == "ja" else "starting the rollback")
            + f" (revision {plan.from_revision} → {plan.to_revision})",
            impact=request.impact,
            cause=request.cause,
            within=timedelta(minutes=2),
        )
        beside = sooner
        if not beside:
            self._started(await start_notice)
        try:
            self._status.pending = None
            undoing = self._call(
                refs.ROLLOUT_UNDO,
                UndoRequest(plan=plan, grant=self._desk.grant(request)),
                f"undo to revision {plan.to_revision}",
            )
            if beside:  # the notice goes out with the undo, which does not wait for a chat service
                delivered, undo = await asyncio.gather(start_notice, undoing)
                self._started(delivered)
            else:
                undo = await undoing
            self._check("undo", undo.message)
            outcome = await self._await_rollout(entry, "wait for the rollout")
            self._status.timings["mitigated"] = workflow.now()
            self._observe_mitigation()
            self._check("rollout", outcome.message)
            self._status.diagnostics = outcome.diagnostics
            verification = await self._check_health(
                entry, "verify pods, health and API", post_checks=entry.post_checks_resolved()
            )
        except ActivityError as err:
            return await self._fail_rollout(err, plan, backup)
        self._status.verification = verification
        for key, evidence in verified_items(verification):
            self._check(key, evidence)
        if not verification.ok:
            failing = "; ".join(f"{c.name}: {c.detail}" for c in verification.checks if not c.ok)
            await self._fail(
                f"verification failed after {verification.attempts} attempts: {failing}",
                announce=True,
            )
            raise ApplicationError(
                self._status.message, type="VerificationFailed", non_retryable=True
            )
        self._record_sla()
        subject, text = notices.complete_notice(
            request.language,
            recovered_at=self._status.timings["mitigated"],
            from_revision=plan.from_revision,
            to_revision=plan.to_revision,
            result=notices.verification_summary(request.language, verification.checks),
        )
        delivered = await self._notify("complete", subject, text)
        self._check(
            "notify_done",
            ", ".join(delivered) or "no channel took the notice",
            done=bool(delivered),
        )
        self._status.message = (
            f"rolled back deployment/{request.deployment} from revision {plan.from_revision} to "
            f"{plan.to_revision} and verified"
        )
        return self._finish(Phase.COMPLETED, plan=plan, backup=backup.manifest_yaml)

    def _started(self, delivered: list[str]) -> None:
        self._check(
            "notify_start",
            ", ".join(delivered) or "no channel took the notice",
            done=bool(delivered),
        )

    async def _approval_gate(self, plan: RollbackPlan) -> bool:
        entry = self._entry
        assert entry is not None
        needed = approvals_required(self._request.severity, entry.approval)
        needed = self._approvals_needed(self._desk, needed)
        return await self._gate(
            self._desk,
            "approval",
            needed,
            rollback_plan(plan),
            what=self._request.deployment,
            kept="",
        )

    def _one_gate(self) -> bool:
        return workflow.patched(ONE_GATE)

    def _waiting(self, started: bool) -> None:
        if started:
            self._count(
                "modoru_approval_waits_started", "rollbacks that began waiting for approval"
            )
        else:
            self._count(
                "modoru_approval_waits_ended",
                "rollbacks that stopped waiting for approval (waiting = started - ended)",
            )

    def _on_deadline(self) -> None:
        super()._on_deadline()
        if "mitigated" not in self._status.timings:
            self._index(sa.SLA.value_set("breached"))
            self._count("modoru_sla_breaches", "rollbacks that missed the runbook's deadline")

    # -- helpers -------------------------------------------------------------------------

    async def _fail_rollout(
        self, err: ActivityError, plan: RollbackPlan, backup: BackupRef
    ) -> RollbackResult:
        """The undo, the rollout or the verification failed: announce it with the
        rollout's diagnostics and fail with the status attached."""
        cause = err.cause
        problems: list[str] = []
        if isinstance(cause, ApplicationError) and cause.details:
            detail = cause.details[0]
            if isinstance(detail, dict):
                diagnostics = Diagnostics.model_validate(detail)
                self._status.diagnostics = diagnostics
                problems = list(diagnostics.problems)
                problems += await self._why_no_pull(diagnostics)
        await self._fail(failure_message(err), announce=True, problems=problems)
        if not workflow.patched(ONE_GATE):
            self._set_phase(Phase.FAILED)  # runs recorded before the shared shell set it twice
        raise ApplicationError(
            f"rollback of deployment/{plan.deployment} failed: {self._status.message}",
            self._status.model_dump(mode="json"),
            type=failure_type(err, "RollbackFailed"),
            non_retryable=True,
        )

    async def _why_no_pull(self, diagnostics: Diagnostics) -> list[str]:
        """Pods that cannot pull the target's image (a tag deleted since that revision
        ran, a repository the nodes may not read): Artifact Registry's verdicts, for
        the failure notice. Nothing when the catalog names no registry."""
        entry = self._entry
        pulling = sorted(
            {p.image for p in diagnostics.pods if p.waiting_reason in PULL_REASONS and p.image}
        )
        if (
            not pulling
            or entry is None
            or entry.registry is None
            or not workflow.patched(PULL_DIAGNOSIS)
        ):
            return []
        try:
            pull: PullDiagnosis = await self._call(
                refs.DIAGNOSE_PULL,
                PullCheckRequest(registry=entry.registry, images=pulling),
                "why the image cannot be pulled: Artifact Registry",
            )
        except ActivityError as err:
            said = failure_message(err)
            return [f"Artifact Registry could not be asked why the image cannot be pulled: {said}"]
        diagnostics.problems = diagnostics.problems + pull.problems
        return pull.problems

    def _record_sla(self) -> None:
        met = self._status.timings["mitigated"] <= self._status.sla_deadline
        if not met and self._status.sla_met is None:
            self._count("modoru_sla_breaches", "rollbacks that missed the runbook's deadline")
        self._status.sla_met = met
        update = sa.SLA.value_set("met" if met else "breached")
        if self._changes_only and self._indexed:
            self._held.append(update)  # upserted with the phase the run ends in
        else:
            self._index(update)

    def _finish(
        self,
        phase: Phase,
        *,
        plan: RollbackPlan | None = None,
        backup: str | None = None,
        no_op: bool = False,
    ) -> RollbackResult:
        self._set_phase(phase)
        if phase is Phase.COMPLETED and not no_op:
            due = workflow.now()
            self._check("rca", f"due {(due + timedelta(hours=24)).isoformat()}", done=False)
            self._check("postmortem", f"due {(due + timedelta(hours=48)).isoformat()}", done=False)
        return RollbackResult(status=self._status, plan=plan, backup_manifest=backup, no_op=no_op)

    def _set_phase(self, phase: Phase) -> None:
        super()._set_phase(phase)
        self._desk.open = phase in (
            Phase.PLANNING,
            Phase.AWAITING_APPROVAL,
        )  # decisions count until the rollback acts

    def _count(self, name: str, description: str) -> None:
        """modoru's own metrics, by service and severity (skipped on replay)."""
        meter = workflow.metric_meter().with_additional_attributes(
            {
                "service": self._request.deployment,
                "namespace": self._request.namespace,
                "severity": self._request.severity.value,
            }
        )
        meter.create_counter(name, description).add(1)

    def _observe_mitigation(self) -> None:
        seconds = (self._status.timings["mitigated"] - self._status.detected_at).total_seconds()
        meter = workflow.metric_meter().with_additional_attributes(
            {"service": self._request.deployment, "severity": self._request.severity.value}
        )
        meter.create_histogram_float(
            "modoru_time_to_mitigate", "seconds from detection to a finished rollout", "s"
        ).record(max(seconds, 0.0))

    def _index_phase(self, phase: Phase) -> None:
        if not self._changes_only:
            super()._index_phase(phase)
            return
        updates, self._held = self._held, []
        if workflow.info().typed_search_attributes.get(sa.PHASE) != phase.value:
            updates.append(sa.PHASE.value_set(phase.value))
        if updates:
            workflow.upsert_search_attributes(updates)

    def _index(self, update: SearchAttributeUpdate[str]) -> None:
        if self._indexed:
            workflow.upsert_search_attributes([update])


def rollback_workflow_id(namespace: str, deployment: str) -> str:
    """One rollback per deployment at a time: the id is the deployment's."""
    return f"rollback-{namespace}-{deployment}"
