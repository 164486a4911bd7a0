"""Steps the runbook's methods 2 and 3 and its troubleshooting share, on top of
the change workflows' shell (`ChangeWorkflow`, which brings the desk, the gate,
the escalations and the failure handling): waiting for the rollout (an image
that cannot be pulled is diagnosed with Artifact Registry, and the problems are
named in the failure notice), verifying as method 1 does, and ticking the
runbook's checklist. Deterministic, like the workflows built on it."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook import notices
    from runbook.catalog import ServiceEntry
    from runbook.cd_models import PullCheckRequest, PullDiagnosis
    from runbook.enums import Phase
    from runbook.models import Diagnostics, Escalating, RolloutOutcome, VerifyResult
    from runbook.policy import approvals_required

    from .change import ChangeWorkflow, Stop
    from .change_steps import ChangeRequest, GatedChangeStatus
    from .retries import failure_message

PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")


class DeploymentRequest(ChangeRequest, Protocol):
    """What a Deployment's change names: its Deployment (and the shell's fields)."""

    @property
    def deployment(self) -> str: ...


class DeploymentStatus(GatedChangeStatus, Protocol):
    """What a Deployment's change keeps (runbook.cd_models.DeploymentChangeStatus)."""

    rollout: str
    verification: VerifyResult | None
    diagnostics: Diagnostics | None
    pull: PullDiagnosis | None


DeployRequestT = TypeVar("DeployRequestT", bound=DeploymentRequest)
DeployStatusT = TypeVar("DeployStatusT", bound=DeploymentStatus)


class DeploySteps(ChangeWorkflow[DeployRequestT, DeployStatusT]):
    """A change of a Deployment: its status keeps the rollout, the diagnostics, the
    pull verdicts and the verification (and, where it has one, the checklist)."""

    @property
    def _target_label(self) -> str:
        return f"deployment/{self._request.deployment}"

    async def _approved(self, plan: dict[str, object], what: str) -> bool:
        """The one approval gate of a Deployment's change: `plan` shown, as many
        approvals as the severity and the catalog ask for; False once rejected."""
        assert self._entry is not None
        return await self._gate(
            self._desk,
            "approval",
            approvals_required(self._request.severity, self._entry.approval),
            plan,
            what=f"{self._target_label}: {what}",
        )

    async def _roll_out(self, entry: ServiceEntry, summary: str) -> RolloutOutcome:
        """`kubectl rollout status`; a stuck rollout fails the run with its diagnostics,
        and pods that cannot pull their image with Artifact Registry's verdicts."""
        try:
            outcome = await self._await_rollout(entry, summary)
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
            await self._fail(message, announce=True, problems=problems + diagnostics.logs[:6])
            raise Stop from None
        self._status.rollout = outcome.message
        self._status.diagnostics = outcome.diagnostics
        self._check("rollout", outcome.message)
        return outcome

    async def _recover(
        self,
        entry: ServiceEntry,
        summary: str,
        *,
        from_revision: int,
        shown: str,
        post_checks: bool = False,
    ) -> RolloutOutcome:
        """The change is made: wait for the rollout (`summary`), keep when the service was
        mitigated (and whether that met the deadline), verify (with the runbook's post-checks
        after a rollback by another method: `post_checks`), and announce the recovery from
        `from_revision`, naming `shown`."""
        outcome = await self._roll_out(entry, summary)
        self._status.timings["mitigated"] = workflow.now()
        if isinstance(self._status, Escalating):
            self._status.sla_met = self._status.timings["mitigated"] <= self._status.sla_deadline
        await self._verify(entry, post_checks=post_checks)
        language = self._request.language
        healthy = "サービス正常稼働中" if language == "ja" else "service healthy"
        subject, text = notices.complete_notice(
            language,
            recovered_at=self._status.timings["mitigated"],
            from_revision=from_revision,
            to_revision=outcome.revision,
            result=f"{healthy} ({shown})",
        )
        await self._notify("complete", subject, text)
        return outcome

    def _complete(self, message: str) -> None:
        self._status.message = message
        self._set_phase(Phase.COMPLETED)

    async def _verify(self, entry: ServiceEntry, *, post_checks: bool = False) -> VerifyResult:
        """Exactly as method 1: pods, health, readiness, the API path and, where configured, the
        metrics; with `post_checks`, CPU and memory, the connection pool and the logs."""
        result = await self._check_health(
            entry,
            "verify pods, health and API",
            post_checks=entry.post_checks_resolved() if post_checks else None,
        )
        self._status.verification = result
        if result.ok:
            self._check_done(result)
        if not result.ok:
            failing = "; ".join(f"{c.name}: {c.detail}" for c in result.checks if not c.ok)
            await self._fail(
                f"verification failed after {result.attempts} attempts: {failing}", announce=True
            )
            raise Stop
        return result

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
