"""The shell every change workflow runs in (deployment rollback, migration
rollback, point-in-time recovery, and the next ones): activities called through
typed references with the runbook's retry budget, notices to the service's
channels, phases kept in the status and indexed for the Web UI, the approval
desk with its approve/reject signals and updates, the half-time and deadline
escalations, the approval gate, and failing with a notice. A change workflow
brings only its own steps. Deterministic, like the workflows built on it.

`ChangeSteps` (change_steps.py) is the lower layer (the status built from the
request, activities, the catalog entry, notices, phases, the checklist,
failing); `ChangeWorkflow` adds the desk's decisions, the gate, the start
notice, the escalations and the run's failure handling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import ClassVar, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from runbook import notices
    from runbook.catalog import ServiceEntry
    from runbook.decisions import DecisionVerdict
    from runbook.enums import Phase
    from runbook.models import ApprovalSignal, AuditEntry, RejectSignal
    from runbook.policy import escalation_points

    from .approval import ApprovalDesk, escalate
    from .change_steps import (
        ChangeRequest,
        ChangeStatus,
        ChangeSteps,
        EscalatingStatus,
        GatedChangeStatus,
        RequestT,
        Stop,
    )
    from .retries import failure_message, failure_type
    from .slack_card import CardKeeper, has_slack_channel, make_card

__all__ = [
    "ONE_GATE",
    "TERMINAL",
    "ChangeRequest",
    "ChangeStatus",
    "ChangeSteps",
    "ChangeWorkflow",
    "EscalatingStatus",
    "GatedChangeStatus",
    "RequestT",
    "StatusT",
    "Stop",
]

StatusT = TypeVar("StatusT", bound=GatedChangeStatus)

Result = TypeVar("Result")
TERMINAL = (Phase.COMPLETED, Phase.FAILED, Phase.REJECTED)
# workflow.patched id: the deployment rollback's gate became the shared one (a
# rejection before the gate and a deadline abort are announced like the others').
ONE_GATE = "one-change-gate"
# workflow.patched id: in signed mode the requester signs a start gate on the plan.
START_GATE = "signed-start-gate"
# How long a signed run waits for its requester's signed start (the CLI signs at once).
START_WAIT = timedelta(minutes=10)


class ChangeWorkflow(ChangeSteps[RequestT, StatusT]):
    """A change with an approval desk. A subclass sets `KIND` (failure types are
    `<KIND>Failed` once something changed, `<KIND>Refused` before), calls
    `_begin()` (or `_open()` with a status it built) from its `@workflow.init`,
    defines its `status` query and its `@workflow.run` as
    `return await self._carry_out(self._run(request))` (Temporal wants both declared
    on the workflow's own class, typed by its models), and writes its steps with
    `_look_up`, `_adopt`, `_call`, `_gate`, `_announce_start`, `_notify`, `_set_phase`,
    `_refuse` and `_fail` (or `raise Stop` once the status says why)."""

    KIND: ClassVar[str] = "Change"
    ESCALATE: ClassVar[bool] = True  # half-time and deadline escalations while it runs

    def _adopt(self, entry: ServiceEntry) -> None:
        """The catalog's entry for the service: its approval policy and trust go to
        every desk, and the requester's signed start is checked against it."""
        self._entry = entry
        nonces: set[str] = set()  # a nonce counts once in the whole run, whatever the gate
        for desk in self._desks():
            desk.set_policy(entry.approval, entry.trust)
            desk.nonces = nonces
        self._start_verified = self._desk.verify_start(self._request)

    async def _announce_start(
        self,
        action: str,
        *,
        impact: str = "",
        cause: str = "",
        within: timedelta = timedelta(0),
        expected: datetime | None = None,
    ) -> list[str]:
        """Executing: the channels hear what is done and when recovery is expected (by the
        deadline, or `within` from now if that is later; or `expected`)."""
        self._set_phase(Phase.EXECUTING)
        deadline = getattr(self._status, "sla_deadline", None) or workflow.now()
        subject, text = notices.start_notice(
            self._request.language,
            detected_at=self._detected_at,
            impact=impact or self._request.reason,
            cause=cause,
            action=action,
            expected_recovery=expected or max(deadline, workflow.now() + within),
        )
        return await self._notify("start", subject, text)

    def _desks(self) -> list[ApprovalDesk]:
        return [self._desk]

    def _current_desk(self) -> ApprovalDesk:
        """The desk decisions go to now (a change with two gates has two)."""
        return self._desk

    # -- decisions: signals for `temporal workflow signal`, updates that answer at once --

    @workflow.signal(name="approve")
    def approve(self, signal: ApprovalSignal) -> None:
        self._current_desk().receive(signal)

    @workflow.signal(name="reject")
    def reject(self, signal: RejectSignal) -> None:
        self._current_desk().receive(signal)

    @workflow.update(name="approval")
    async def approval(self, signal: ApprovalSignal) -> DecisionVerdict:
        """Approve, and hear whether the approval counted and why."""
        return await self._decide(signal)

    @workflow.update(name="rejection")
    async def rejection(self, signal: RejectSignal) -> DecisionVerdict:
        """Reject, and hear whether the rejection counted and why."""
        return await self._decide(signal)

    @workflow.update(name="start")
    async def signed_start(self, signal: ApprovalSignal) -> DecisionVerdict:
        """The requester's signed start of this run's plan (signed mode), and whether it
        counted and why."""
        await workflow.wait_condition(
            lambda: self._start_desk() is not None or self._status.phase in TERMINAL
        )
        desk = self._start_desk()
        if desk is None:
            entry = AuditEntry(
                at=workflow.now(),
                actor=signal.by,
                action="start",
                counted=False,
                detail=f"the change ended ({self._status.phase.value}) before its start gate",
                request_id=signal.request_id,
            )
            self._status.audit.append(entry)
        else:
            entry = desk.decide_start(signal)
        return DecisionVerdict(
            decision="start",
            counted=bool(entry.counted),
            reason=entry.detail,
            by=entry.actor,
            gate=desk.gate.gate if desk is not None and desk.gate else "",
            approvals=list(desk.approvals) if desk is not None else [],
            approvals_required=self._status.approvals_required,
            phase=self._status.phase.value,
        )

    def _start_desk(self) -> ApprovalDesk | None:
        """The desk whose start gate has been shown (the run's first gate), if any."""
        return getattr(self, "_start_gate_desk", None)

    async def _decide(self, signal: ApprovalSignal | RejectSignal) -> DecisionVerdict:
        # Decisions are judged once the catalog says who may decide; until then they wait.
        await workflow.wait_condition(
            lambda: self._current_desk().policy is not None or self._status.phase in TERMINAL
        )
        desk = self._current_desk()
        decision = signal.decision
        if desk.policy is None:
            entry = AuditEntry(
                at=workflow.now(),
                actor=signal.by,
                action=decision,
                counted=False,
                detail=f"the change ended ({self._status.phase.value}) before any decision could "
                "count",
                request_id=signal.request_id,
            )
            self._status.audit.append(entry)
        else:
            entry = desk.decide(signal)
        return DecisionVerdict(
            decision=decision,
            counted=bool(entry.counted),
            reason=entry.detail,
            by=entry.actor,
            gate=desk.gate.gate if desk.gate else "",
            approvals=list(desk.approvals),
            approvals_required=self._status.approvals_required,
            phase=self._status.phase.value,
        )

    # -- the run -----------------------------------------------------------------------

    async def _carry_out(self, steps: Awaitable[Result]) -> Result:
        """Run the change's steps with the escalations beside them; a failed activity
        or a `Stop` ends the run as failed (announced once something changed) or refused."""
        escalations = asyncio.create_task(self._escalations()) if self.ESCALATE else None
        try:
            return await steps
        except ActivityError as err:
            changed = self._changed()
            await self._fail(failure_message(err), announce=self._announces_failure(changed))
            raise ApplicationError(
                self._status.message,
                type=failure_type(err, self._failure_kind(changed)),
                non_retryable=True,
            ) from err
        except Stop:
            raise ApplicationError(
                self._status.message, type=self._failure_kind(self._changed()), non_retryable=True
            ) from None
        finally:
            # A run evicted from the worker's cache (a worker shutting down) is closed outside
            # the workflow's loop: there is no clock to read then, and nothing to record.
            if workflow.in_workflow():
                self._status.timings["finished"] = workflow.now()
            if escalations is not None:
                escalations.cancel()

    def _changed(self) -> bool:
        return Phase.EXECUTING.value in self._status.timings

    def _announces_failure(self, changed: bool) -> bool:
        """Whether a failed activity is announced: once something has changed."""
        return changed

    def _failure_kind(self, changed: bool) -> str:
        return f"{self.KIND}{'Failed' if changed else 'Refused'}"

    # -- the approval gate ---------------------------------------------------------------

    def _approvals_needed(self, desk: ApprovalDesk, needed: int) -> int:
        """In signed mode an immediate change with no approvals needs one, unless the
        release guard's valid seal started it or the verified on-call requester signed its
        start: both are known only at the gate, so the gate decides (`_gate`). Having a
        parent and evidence is no proof of the guard: only its seal is."""
        if needed == 0 and desk.signed:
            self._immediate_pending = True
        return needed

    def _refused_seal(self, desk: ApprovalDesk) -> bool:
        """A change carrying a release guard's seal that does not hold: nobody signed its
        start, so it is refused (False) and nothing is changed."""
        reason = desk.audit[-1].detail if desk.audit else "the seal does not hold"
        self._status.message = (
            f"refused: the release guard's seal does not start this run ({reason}); nothing was "
            "changed: start a rollback with your key if one is needed"
        )
        self._set_phase(Phase.REJECTED)
        return False

    def _immediate_needs(self, desk: ApprovalDesk, sealed: bool) -> int:
        """0 when an immediate change may go ahead without approval, else 1 (audited)."""
        started = self._start_desk()
        verified = started is not None and started.start_verified
        return 0 if desk.immediate_without_approval(verified, sealed) else 1

    async def _start_gate(self, desk: ApprovalDesk, plan: dict[str, object], kept: str) -> bool:
        """Signed mode, the run's first gate: show `plan` at the `start` gate and wait for
        the requester's signed start of this run and plan; False (rejected) when it does
        not come in time or the change is rejected meanwhile."""
        self._start_gate_desk = desk
        self._status.pending = desk.open_start(self._request, plan)
        desk.open = True
        try:
            await workflow.wait_condition(
                lambda: desk.start_verified or desk.rejection is not None,
                timeout=START_WAIT,
                timeout_summary=f"start gate: refuse without a signed start after {START_WAIT}",
            )
        except TimeoutError:
            desk.rejection = RejectSignal(
                by="modoru",
                reason=f"no signed start by {self._request.requested_by} within {START_WAIT}",
            )
            desk.note("modoru", "start", counted=True, detail=desk.rejection.reason)
        if desk.start_verified and desk.rejection is None:
            self._status.start_counted = True
            return True
        desk.open = False
        self._status.pending = None
        rejection = desk.rejection
        assert rejection is not None
        self._status.message = f"start refused ({rejection.by}): {rejection.reason}" + (
            kept or "; nothing was changed"
        )
        self._set_phase(Phase.REJECTED)
        return False

    async def _gate(
        self,
        desk: ApprovalDesk,
        gate: str,
        needed: int,
        plan: dict[str, object],
        *,
        what: str,
        kept: str = "; nothing was changed",
    ) -> bool:
        """Show `plan` at `gate` and wait for `needed` approvals; True to go ahead. On a
        rejection (or the policy's abort at the deadline) the status says so with `kept`
        (what is left as it was), the channels hear it, and the phase is rejected.
        `what` names the change in the notices."""
        immediate, self._immediate_pending = getattr(self, "_immediate_pending", False), False
        if desk.signed and workflow.patched(START_GATE):
            first = self._start_desk() is None
            if getattr(self._request, "guard_seal", "") and first:
                # The release guard's seal stands in for a person's start, or nothing does.
                holds, sealed = desk.guard_seal(self._request, dict(plan))
                if not holds:
                    return self._refused_seal(desk)
                self._start_gate_desk = desk  # started: no start gate opens after this
            elif first:
                sealed = False
                if not await self._start_gate(desk, dict(plan), kept):
                    return False
            else:
                sealed = False
            if immediate:
                needed = self._immediate_needs(desk, sealed)
        elif immediate:
            needed = self._immediate_needs(desk, False)
        self._status.approvals_required = needed
        self._status.pending = desk.show(gate, plan)
        desk.open = True
        if desk.rejection is None and needed == 0:
            desk.note(
                "modoru",
                "approval",
                detail=f"{gate}: policy proceeds without approval ({self._request.severity.value})",
            )
            return True
        if desk.rejection is not None and not self._one_gate():
            self._set_phase(Phase.REJECTED)  # recorded before the shared gate: no notice
            return False
        self._set_phase(Phase.AWAITING_APPROVAL)
        card: CardKeeper | None = None
        if desk.rejection is None:
            assert self._entry is not None
            subject, text = notices.approval_needed_notice(
                self._request.language,
                deployment=what,
                workflow_id=self._status.workflow_id,
                approvers=self._entry.approval.approvers,
                deadline=self._status.sla_deadline or workflow.now(),
            )
            if has_slack_channel(self._entry.channels):  # Web API: a message with buttons
                card = CardKeeper(
                    desk,
                    make_card(
                        desk,
                        what,
                        self._request,
                        self._status,
                        self._entry.approval.approvers,
                        needed,
                    ),
                )
                await card.post(self._entry.channels, "approval_needed", subject, text)
            else:
                await self._notify("approval_needed", subject, text)
        self._waiting(True)
        approved = desk.rejection is None and await desk.wait(needed)
        self._waiting(False)
        desk.open = False
        if card is not None:
            await card.close(approved)
        self._status.pending = None
        if approved:
            return True
        rejection = desk.rejection
        assert rejection is not None
        self._status.message = (
            f"{f'{gate} ' if gate != 'approval' else ''}rejected by {rejection.by}: "
            f"{rejection.reason}{kept}"
        )
        if not desk.aborted or self._one_gate():
            subject, text = notices.rejected_notice(
                self._request.language, deployment=what, by=rejection.by, reason=rejection.reason
            )
            await self._notify("rejected", subject, text)
        self._set_phase(Phase.REJECTED)
        return False

    def _one_gate(self) -> bool:
        """False only where a run recorded before the shared gate took another path."""
        return True

    def _waiting(self, started: bool) -> None:
        """Called when the gate starts and stops waiting for approvals (for metrics)."""

    # -- escalations ---------------------------------------------------------------------

    async def _escalations(self) -> None:
        await escalate(
            self._request.severity,
            self._detected_at,
            done=lambda: self._status.phase in TERMINAL,
            mitigated=lambda: "mitigated" in self._status.timings,
            on_deadline=self._on_deadline,
            announce=self._escalation,
        )

    def _escalating(self) -> EscalatingStatus:
        status = self._status
        assert hasattr(status, "escalations") and hasattr(status, "sla_met"), (
            f"{self.KIND} escalates: its status needs escalations and sla_met"
        )
        return status  # type: ignore[return-value]

    def _on_deadline(self) -> None:
        for desk in self._desks():
            desk.deadline_passed = True
        if "mitigated" not in self._status.timings:
            self._escalating().sla_met = False

    async def _escalation(self, point: str) -> None:
        at = dict(escalation_points(self._request.severity, self._detected_at))[point]
        deadline = self._status.sla_deadline or at
        self._escalating().escalations.append(point)
        self._notes.note(
            "modoru",
            "escalation",
            detail=f"{point} at {at.isoformat()} in phase {self._status.phase.value}",
        )
        subject, text = notices.escalation_notice(
            self._request.language,
            point=point,
            deployment=self._target_label,
            deadline=deadline,
            phase=self._status.phase.value,
        )
        await self._notify("escalation", subject, text)
