"""The approval desk a workflow keeps: approve/reject signals judged against the
catalog's policy (listed approvers, never the requester, each once), and the
runbook's deadlines with half-time and deadline escalations. Deterministic: it
only uses workflow time and workflow.wait_condition."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from runbook.catalog import ApprovalPolicy, Channel
    from runbook.models import ApprovalSignal, AuditEntry, Notice, NoticeResult, RejectSignal
    from runbook.policy import escalation_points, judge_approval, judge_rejection

GIVE_UP = timedelta(hours=24)
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


class ApprovalDesk:
    def __init__(self, requested_by: str, audit: list[AuditEntry], approvals: list[str]) -> None:
        self.requested_by = requested_by
        self.audit = audit
        self.approvals = approvals  # the status's list, kept in place
        self.policy: ApprovalPolicy | None = None
        self.open = True  # decisions still matter
        self.rejection: RejectSignal | None = None
        self.aborted = False  # the policy gave up at the deadline: nobody rejected
        self.deadline_passed = False
        self._inbox: list[ApprovalSignal | RejectSignal] = []

    def note(self, actor: str, action: str, *, counted: bool | None = None, detail: str = "", request_id: str = "") -> None:
        self.audit.append(AuditEntry(at=workflow.now(), actor=actor, action=action, counted=counted, detail=detail, request_id=request_id))

    def receive(self, signal: ApprovalSignal | RejectSignal) -> None:
        if self.policy is None:
            self._inbox.append(signal)  # judged once the catalog says who may approve
        else:
            self._judge(signal)

    def set_policy(self, policy: ApprovalPolicy) -> None:
        self.policy = policy
        for signal in self._inbox:
            self._judge(signal)
        self._inbox.clear()

    def _judge(self, signal: ApprovalSignal | RejectSignal) -> None:
        assert self.policy is not None
        if isinstance(signal, RejectSignal):
            verdict = judge_rejection(self.policy, signal.by)
            by_requester = signal.by.strip().lower() == self.requested_by.strip().lower()
            counted = verdict.counted or by_requester
            detail = verdict.reason if verdict.counted or not counted else f"rejected by the requester {signal.by}"
            if counted and not self.open:
                counted, detail = False, "too late to reject: the change is already under way"
            if counted:
                self.rejection = signal
            self.note(signal.by, "reject", counted=counted, detail=f"{detail}: {signal.reason}", request_id=signal.request_id)
            return
        if not self.open:
            self.note(signal.by, "approve", counted=False, detail="no approval pending", request_id=signal.request_id)
            return
        verdict = judge_approval(self.policy, self.requested_by, signal.by, self.approvals)
        if verdict.counted:
            self.approvals.append(signal.by.strip())
        self.note(signal.by, "approve", counted=verdict.counted, detail=verdict.reason + (f" ({signal.comment})" if signal.comment else ""), request_id=signal.request_id)

    async def wait(self, needed: int) -> bool:
        """True once `needed` approvals are in; False on a rejection, after the give-up
        time, or at a missed deadline when the policy aborts."""
        assert self.policy is not None
        policy = self.policy

        def settled() -> bool:
            if self.rejection is not None or len(self.approvals) >= needed:
                return True
            return self.deadline_passed and policy.on_deadline != "keep_waiting"

        try:
            await workflow.wait_condition(settled, timeout=GIVE_UP)
        except TimeoutError:
            self.rejection = RejectSignal(by="modoru", reason=f"no approval within {GIVE_UP}")
            self.note("modoru", "expired", counted=True, detail=self.rejection.reason)
        if self.rejection is not None:
            return False
        if len(self.approvals) < needed:
            if policy.on_deadline == "abort":
                self.rejection = RejectSignal(by="modoru", reason="deadline missed without approval; policy aborts")
                self.aborted = True
                return False
            self.note("modoru", "approval", counted=None, detail="deadline missed without approval; policy proceeds")
        return True


async def escalate(severity, detected_at: dt.datetime, done: Callable[[], bool], mitigated: Callable[[], bool],
                   on_deadline: Callable[[], None], announce: Callable[[str], Awaitable[None]]) -> None:
    """Half-time and deadline escalations until `done`; nothing once mitigated."""
    for point, at in escalation_points(severity, detected_at):
        delay = (at - workflow.now()).total_seconds()
        if delay > 0:
            try:
                await workflow.wait_condition(done, timeout=delay)
                return
            except TimeoutError:
                pass
        if done():
            return
        if point == "deadline":
            on_deadline()
        if mitigated():
            return
        await announce(point)


async def send_notice(channels: list[Channel], kind: str, subject: str, text: str, desk: ApprovalDesk) -> None:
    """Send a notice; failing channels are audited, never fatal: a change must not
    wait on a chat service."""
    if not channels:
        return
    try:
        result: NoticeResult = await workflow.execute_activity(
            "notify.send", Notice(kind=kind, subject=subject, text=text, channels=channels), result_type=NoticeResult,  # type: ignore[arg-type]
            start_to_close_timeout=timedelta(seconds=30), retry_policy=NOTIFY_RETRY, summary=f"notify: {subject}",
        )
    except ActivityError:
        desk.note("modoru", "notify_failed", detail=subject)
        return
    for failure in result.failed:
        desk.note("modoru", "notify_failed", detail=f"{subject}: {failure}")
