"""Steps the runbook's methods 2 and 3 and its troubleshooting share, on top of
the change workflows' shell (`ChangeSteps`): the approval gate, waiting for
the rollout (an image that cannot be pulled is diagnosed with Artifact
Registry), verifying as method 1 does, and failing with the problems named in
the failure notice. Deterministic, like the workflows that mix it in."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook import notices
    from runbook.catalog import ServiceEntry
    from runbook.cd_models import PullCheckRequest, PullDiagnosis
    from runbook.models import (
        Diagnostics,
        Phase,
        RolloutOutcome,
        RolloutWaitRequest,
        VerifyRequest,
        VerifyResult,
    )

    from .approval import ApprovalDesk
    from .change import ChangeSteps
    from .retries import failure_message

PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")


class Stop(Exception):
    """Ends the run with the status as it stands (a refusal or a failure)."""


class DeploySteps(ChangeSteps):
    _desk: ApprovalDesk

    @property
    def _notes(self) -> ApprovalDesk:
        return self._desk

    async def _gate(self, needed: int, plan: dict, what: str) -> bool:
        """Show the plan and wait for the approvals; False (and a notice) on a rejection."""
        desk = self._desk
        if (
            needed == 0
            and desk.signed
            and not desk.immediate_without_approval(self._start_verified, started_by_guard=False)
        ):
            needed = 1
        self._status.approvals_required = needed
        self._status.pending = desk.show("approval", plan)
        if desk.rejection is None and needed == 0:
            desk.note("modoru", "approval", detail="policy proceeds without approval")
            return True
        self._set_phase(Phase.AWAITING_APPROVAL)
        assert self._entry is not None
        if desk.rejection is None:
            subject, text = notices.approval_needed_notice(
                self._request.language,
                deployment=f"{self._target_label}: {what}",
                workflow_id=self._status.workflow_id,
                approvers=self._entry.approval.approvers,
                deadline=self._status.sla_deadline,
            )
            await self._notify("approval_needed", subject, text)
        approved = desk.rejection is None and await desk.wait(needed)
        desk.open = False
        self._status.pending = None
        if approved:
            return True
        rejection = desk.rejection
        assert rejection is not None
        self._status.message = (
            f"rejected by {rejection.by}: {rejection.reason}; nothing was changed"
        )
        subject, text = notices.rejected_notice(
            self._request.language,
            deployment=self._target_label,
            by=rejection.by,
            reason=rejection.reason,
        )
        await self._notify("rejected", subject, text)
        self._set_phase(Phase.REJECTED)
        return False

    async def _roll_out(self, entry: ServiceEntry, summary: str) -> RolloutOutcome:
        """`kubectl rollout status`; a stuck rollout fails the run with its diagnostics,
        and pods that cannot pull their image with Artifact Registry's verdicts."""
        self._set_phase(Phase.WAITING_ROLLOUT)
        try:
            outcome: RolloutOutcome = await self._call(
                refs.WAIT_ROLLOUT,
                RolloutWaitRequest(
                    namespace=entry.namespace,
                    deployment=entry.deployment,
                    timeout_seconds=entry.rollout_timeout_seconds,
                ),
                summary,
                timeout=entry.rollout_timeout_seconds + 60,
                heartbeat=10,
            )
        except ActivityError as err:
            message = failure_message(err)
            diagnostics = Diagnostics()
            cause = err.cause
            if (
                isinstance(cause, ApplicationError)
                and cause.details
                and isinstance(cause.details[0], dict)
            ):
                diagnostics = Diagnostics.model_validate(cause.details[0])
            self._status.diagnostics = diagnostics
            problems = list(diagnostics.problems)
            pulling = sorted(
                {p.image for p in diagnostics.pods if p.waiting_reason in PULL_REASONS and p.image}
            )
            if pulling and entry.registry is not None:
                pull: PullDiagnosis = await self._call(
                    refs.DIAGNOSE_PULL,
                    PullCheckRequest(registry=entry.registry, images=pulling),
                    "why the image cannot be pulled: Artifact Registry",
                )
                self._status.pull = pull
                problems += pull.problems
            await self._fail_with(message, problems + diagnostics.logs[:6])
            raise Stop from None
        self._status.rollout = outcome.message
        self._status.diagnostics = outcome.diagnostics
        self._check("rollout", outcome.message)
        return outcome

    async def _verify(self, entry: ServiceEntry) -> VerifyResult:
        """Exactly as method 1: pods, health, readiness, the API path and, where configured, the
        metrics."""
        self._set_phase(Phase.VERIFYING)
        result: VerifyResult = await self._call(
            refs.VERIFY_SERVICE,
            VerifyRequest(
                namespace=entry.namespace,
                deployment=entry.deployment,
                service=entry.service,
                paths=entry.check_paths,
                window_seconds=entry.verification_window_seconds,
                monitoring=entry.monitoring,
                recovery=entry.recovery,
            ),
            "verify pods, health and API",
            timeout=entry.verification_window_seconds + 60,
            heartbeat=10,
        )
        self._status.verification = result
        if result.ok:
            self._check_done(result)
        if not result.ok:
            failing = "; ".join(f"{c.name}: {c.detail}" for c in result.checks if not c.ok)
            await self._fail_with(
                f"verification failed after {result.attempts} attempts: {failing}", []
            )
            raise Stop
        return result

    def _check(self, key: str, evidence: str, *, done: bool = True) -> None:
        """Tick the runbook's checklist item `key` with its evidence (statuses without a checklist
        ignore it)."""
        for item in getattr(self._status, "checklist", []):
            if item.key == key:
                item.evidence = evidence
                item.done_at = workflow.now() if done else None

    def _check_done(self, result: VerifyResult) -> None:
        by_name = {c.name: c for c in result.checks}
        for key in ("pods", "health", "api"):
            if key in by_name and by_name[key].ok:
                self._check(key, by_name[key].detail)
        if self._entry is not None:
            self._check(
                "notify_done", ", ".join(c.label for c in self._entry.channels) or "no channel"
            )
        due = workflow.now()
        self._check("rca", f"due {(due + timedelta(hours=24)).isoformat()}", done=False)
        self._check("postmortem", f"due {(due + timedelta(hours=48)).isoformat()}", done=False)

    async def _fail_with(self, message: str, problems: list[str]) -> None:
        self._status.message = message
        self._set_phase(Phase.FAILED)
        subject, text = notices.failure_notice(
            self._request.language,
            at=workflow.now(),
            deployment=self._target_label,
            error=message,
            problems=problems,
        )
        await self._notify("failure", subject, text)

    def _deadline(self) -> None:
        self._desk.deadline_passed = True
        if "mitigated" not in self._status.timings:
            self._status.sla_met = False

    async def _escalation(self, point: str) -> None:
        self._status.escalations.append(point)
        self._desk.note(
            "modoru", "escalation", detail=f"{point} in phase {self._status.phase.value}"
        )
        subject, text = notices.escalation_notice(
            self._request.language,
            point=point,
            deployment=self._target_label,
            deadline=self._status.sla_deadline,
            phase=self._status.phase.value,
        )
        await self._notify("escalation", subject, text)
