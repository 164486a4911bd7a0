"""The approval desk a workflow keeps: approve/reject signals judged against the
catalog's policy (approver roles, never the requester, each identity once),
and the runbook's deadlines with half-time and deadline escalations.

When the catalog has identities, only signed decisions count: each is checked
(signature, signer's key, this run, this gate, the plan shown, expiry, nonce)
and audited either way. Without identities, decisions are plain names, as
before. Deterministic: it only uses workflow time and workflow.wait_condition."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook.attestation import slack_count_problem
    from runbook.catalog import ApprovalPolicy, Channel, Trust
    from runbook.decisions import (
        Expected,
        GateView,
        Grant,
        SignedDecision,
        has_role,
        judge,
        plan_digest,
        seal_problem,
    )
    from runbook.identity import normalize_id
    from runbook.models import ApprovalSignal, AuditEntry, Notice, NoticeResult, RejectSignal
    from runbook.plans import start_gate_plan, start_request
    from runbook.policy import escalation_points, judge_approval, judge_rejection

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runbook.enums import Severity

    from .change_steps import ChangeRequest

SIGNED_DECISIONS = (
    "signed-decisions"  # workflow.patched id: runs recorded before it judge plain names
)

GIVE_UP = timedelta(hours=24)
# What the Web UI's timeline calls each timer.
TIMER_SUMMARY = {
    "half_time": "half-time escalation at {at}",
    "deadline": "runbook deadline at {at}: escalate, SLA missed if not mitigated",
}
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


class AuditTrail:
    """Notes in a status's audit trail, each at the workflow's time."""

    def __init__(self, audit: list[AuditEntry]) -> None:
        self.audit = audit  # the status's list, kept in place

    def note(
        self,
        actor: str,
        action: str,
        *,
        counted: bool | None = None,
        detail: str = "",
        request_id: str = "",
    ) -> None:
        self.audit.append(
            AuditEntry(
                at=workflow.now(),
                actor=actor,
                action=action,
                counted=counted,
                detail=detail,
                request_id=request_id,
            )
        )

    def uncounted(self, actor: str, action: str, detail: str, request_id: str = "") -> None:
        """A decision or a record that does not count, and why."""
        self.note(actor, action, counted=False, detail=detail, request_id=request_id)


class ApprovalDesk(AuditTrail):
    def __init__(self, requested_by: str, audit: list[AuditEntry], approvals: list[str]) -> None:
        super().__init__(audit)
        self.requested_by = requested_by
        self.approvals = approvals  # the status's list, kept in place
        self.policy: ApprovalPolicy | None = None
        self.open = True  # decisions still matter
        self.rejection: RejectSignal | None = None
        self.aborted = False  # the policy gave up at the deadline: nobody rejected
        self.deadline_passed = False
        self._inbox: list[ApprovalSignal | RejectSignal] = []
        self.trust: Trust | None = None
        self.gate: GateView | None = None  # what signers are shown; None until the plan exists
        self.nonces: set[str] = set()  # shared by every desk of the run (ChangeWorkflow._adopt)
        self.counted: list[SignedDecision] = []  # handed to the activities that act on them
        self.counted_at: list[dt.datetime] = []  # when each of `counted` was counted
        self.slack_counted = 0  # how many of `counted` were made in Slack (attested)
        self.requester_id = normalize_id(requested_by)
        # The requester's signed start of this run's plan (signed mode), and the guard's seal.
        self.start: SignedDecision | None = None
        self.start_counted_at: dt.datetime | None = None
        self.start_plan: dict[str, Any] = {}
        self.start_verified = False
        self.seal_counted_at: dt.datetime | None = None

    def receive(self, signal: ApprovalSignal | RejectSignal) -> None:
        if self.policy is None:
            self._inbox.append(signal)  # judged once the catalog says who may approve
        else:
            self._judge(signal)

    def decide(self, signal: ApprovalSignal | RejectSignal) -> AuditEntry:
        """Judge `signal` now (the catalog's policy must be known) and return the
        audit entry the judgement wrote: counted or not, and why."""
        assert self.policy is not None
        before = len(self.audit)
        self._judge(signal)
        return self.audit[before]

    def set_policy(self, policy: ApprovalPolicy, trust: Trust | None = None) -> None:
        self.policy = policy
        if trust is not None and trust.identities and workflow.patched(SIGNED_DECISIONS):
            self.trust = trust
        for signal in self._inbox:
            self._judge(signal)
        self._inbox.clear()

    @property
    def signed(self) -> bool:
        return self.trust is not None

    def verify_start(self, request: ChangeRequest) -> bool:
        """A start carried in the request is no authority (it could be copied from any
        history): in signed mode the requester signs this run's `start` gate instead."""
        if self.trust is not None and getattr(request, "start", None) is not None:
            self.note(
                request.requested_by,
                "start",
                counted=False,
                detail="a start inside the request is not counted: the requester signs this "
                "run's start gate once the plan is shown",
            )
        return False

    def open_start(self, request: ChangeRequest, plan: dict[str, Any]) -> GateView:
        """Show the `start` gate on `request` and `plan`: the requester's signed start must
        name this run, the request and this plan before anything is approved or changed."""
        # ChangeRequest, a protocol, names only what the shell reads; every change's request
        # is a pydantic model, which the plan is made from.
        view = self.show("start", start_gate_plan(cast("BaseModel", request), plan))
        self.note(
            "modoru",
            "start",
            detail=f"waiting for {self.requested_by}'s signed start of this run's plan",
        )
        return view

    def decide_start(self, signal: ApprovalSignal) -> AuditEntry:
        """Judge the requester's signed start at the start gate; the audit entry says
        whether it counted and why."""
        before = len(self.audit)
        self._judge_start(signal)
        return self.audit[before]

    def _judge_start(self, signal: ApprovalSignal) -> None:
        gate = self.gate
        if self.trust is None:
            self.uncounted(signal.by, "start", "this run takes no signed start", signal.request_id)
            return
        if self.start_verified:
            self.uncounted(signal.by, "start", "the start is already signed", signal.request_id)
            return
        if gate is None or gate.gate != "start" or not self.open:
            self.uncounted(signal.by, "start", "no start gate is open", signal.request_id)
            return
        if signal.signed is None:
            self.uncounted(
                signal.by,
                "start",
                "unsigned: this catalog counts only signed starts (--key)",
                signal.request_id,
            )
            return
        verdict = judge(
            signal.signed,
            "start",
            Expected(gate.workflow_id, gate.run_id, gate.gate, gate.digest),
            self.trust.identities,
            workflow.now(),
            self.nonces,
        )
        if verdict.payload is not None and verdict.signer:
            self.nonces.add(verdict.payload.nonce)
        who = verdict.signer or signal.by
        if not verdict.counted:
            self.uncounted(who, "start", verdict.reason, signal.request_id)
            return
        if verdict.signer != normalize_id(self.requested_by):
            self.uncounted(
                who,
                "start",
                f"{verdict.reason}, but the request names {self.requested_by!r} as the requester",
                signal.request_id,
            )
            return
        self.start, self.start_counted_at = signal.signed, workflow.now()
        self.start_plan, self.start_verified = dict(gate.plan), True
        self.requester_id = verdict.signer
        self.note(who, "start", counted=True, detail=verdict.reason, request_id=signal.request_id)

    def guard_seal(self, request: object, plan: dict[str, Any]) -> tuple[bool, bool]:
        """(whether the release guard's seal in `request` starts this run on `plan`, whether
        its breach is immediate): it names this rollback and plan and was made within its
        validity. The activity that acts checks its signature (the workers' key) and this
        moment again."""
        seal = getattr(request, "guard_seal", "")
        if self.trust is None or not seal:
            return False, False
        facts = dict(getattr(request, "guard_facts", {}) or {})
        problem = seal_problem(
            facts, workflow.info().workflow_id, plan, workflow.now(), immediate=False
        )
        if problem:
            self.uncounted("release-guard", "seal", problem)
            return False, False
        self.seal_counted_at = workflow.now()
        self.note("release-guard", "seal", counted=True, detail="the release guard's breach")
        return True, facts.get("severity") == "immediate"

    def immediate_without_approval(self, start_verified: bool, started_by_guard: bool) -> bool:
        """Whether an immediate change may go ahead with no approval: the release guard
        with its evidence, or a verified requester holding the on-call role."""
        if self.trust is None or started_by_guard:
            return True
        if (start_verified or self.start_verified) and has_role(
            self.trust.identities, self.requester_id, [self.trust.oncall_role]
        ):
            return True
        self.note(
            "modoru",
            "approval",
            counted=None,
            detail=f"immediate requested by {self.requester_id}, who is not a verified "
            f"{self.trust.oncall_role}: one approval is needed",
        )
        return False

    def grant(self, request: BaseModel) -> Grant | None:
        """The approvals of the gate shown, for the activity that acts on them (None without
        identities)."""
        if self.trust is None or self.gate is None:
            return None
        return Grant(
            gate=self.gate.gate,
            plan=self.gate.plan,
            decisions=list(self.counted),
            counted_at=list(self.counted_at),
            request_kind=type(request).__name__,
            request=start_request(request),
            start=self.start,
            start_counted_at=self.start_counted_at,
            start_plan=dict(self.start_plan),
            guard_seal=getattr(request, "guard_seal", "") if self.seal_counted_at else "",
            guard_facts=getattr(request, "guard_facts", {}) if self.seal_counted_at else {},
            seal_counted_at=self.seal_counted_at,
        )

    def show(self, gate: str, plan: dict[str, Any]) -> GateView:
        """Open `gate` on `plan`: from now on decisions must name this gate and plan."""
        info = workflow.info()
        self.gate = GateView(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            gate=gate,
            plan=plan,
            digest=plan_digest(plan),
            signed=self.signed,
        )
        return self.gate

    def _judge(self, signal: ApprovalSignal | RejectSignal) -> None:
        assert self.policy is not None
        if self.trust is not None:
            self._judge_signed(signal)
            return
        if signal.decision == "reject":
            verdict = judge_rejection(self.policy, signal.by)
            by_requester = signal.by.strip().lower() == self.requested_by.strip().lower()
            counted = verdict.counted or by_requester
            detail = (
                verdict.reason
                if verdict.counted or not counted
                else f"rejected by the requester {signal.by}"
            )
            if counted and not self.open:
                counted, detail = False, "too late to reject: the change is already under way"
            if counted:
                self.rejection = signal
            self.note(
                signal.by,
                "reject",
                counted=counted,
                detail=f"{detail}: {signal.reason}",
                request_id=signal.request_id,
            )
            return
        if not self.open:
            self.uncounted(signal.by, "approve", "no approval pending", signal.request_id)
            return
        verdict = judge_approval(self.policy, self.requested_by, signal.by, self.approvals)
        if verdict.counted:
            self.approvals.append(signal.by.strip())
        self.note(
            signal.by,
            "approve",
            counted=verdict.counted,
            detail=verdict.reason + (f" ({signal.comment})" if signal.comment else ""),
            request_id=signal.request_id,
        )

    def _judge_signed(self, signal: ApprovalSignal | RejectSignal) -> None:
        assert self.policy is not None and self.trust is not None
        action = signal.decision
        reject = action == "reject"
        if signal.signed is None:
            self.uncounted(
                signal.by,
                action,
                "unsigned: this catalog counts only signed decisions (modoru approve --key)",
                signal.request_id,
            )
            return
        gate = self.gate
        expected = (
            Expected(gate.workflow_id, gate.run_id, gate.gate, gate.digest)
            if gate
            else Expected(workflow.info().workflow_id, workflow.info().run_id, "", "")
        )
        verdict = judge(
            signal.signed,
            action,
            expected,
            self.trust.identities,
            workflow.now(),
            self.nonces,
            self.trust.attestors,
        )
        if verdict.payload is not None and verdict.signer:
            self.nonces.add(verdict.payload.nonce)
        who = verdict.signer or signal.by
        if not verdict.counted:
            reason = verdict.reason if gate else f"no plan has been shown yet ({verdict.reason})"
            self.uncounted(who, action, reason, signal.request_id)
            return
        note = verdict.payload.note if verdict.payload else ""
        if not reject and gate is not None and gate.gate == "start":
            self.uncounted(
                who,
                "approve",
                "the requester has not signed this run's start yet: approve once the approval "
                "gate is shown",
                signal.request_id,
            )
            return
        if reject:
            allowed = (
                has_role(self.trust.identities, who, self.policy.approvers)
                or who == self.requester_id
            )
            if not allowed:
                self.uncounted(
                    who,
                    "reject",
                    f"{verdict.reason}, but {who} holds no approver role and did not request this",
                    signal.request_id,
                )
            elif not self.open:
                self.uncounted(
                    who,
                    "reject",
                    "too late to reject: the change is already under way",
                    signal.request_id,
                )
            else:
                said = signal.words if signal.decision == "reject" else ""
                self.rejection = RejectSignal(by=who, reason=note or said)
                self.note(
                    who,
                    "reject",
                    counted=True,
                    detail=f"{verdict.reason}: {self.rejection.reason}",
                    request_id=signal.request_id,
                )
            return
        if not self.open:
            self.uncounted(who, "approve", "no approval pending", signal.request_id)
        elif who == self.requester_id:
            self.uncounted(
                who,
                "approve",
                f"{who} requested this change and cannot approve it",
                signal.request_id,
            )
        elif not has_role(self.trust.identities, who, self.policy.approvers):
            self.uncounted(
                who,
                "approve",
                f"{who} holds none of the approver roles "
                f"({', '.join(self.policy.approvers) or 'none'})",
                signal.request_id,
            )
        elif who in self.approvals:
            self.uncounted(
                who,
                "approve",
                f"{who} has already approved: two approvals are two people",
                signal.request_id,
            )
        elif verdict.via == "slack" and (
            problem := slack_count_problem(
                self.policy.slack_approvals, expected.gate, self.slack_counted
            )
        ):
            self.uncounted(who, "approve", f"{verdict.reason}, but {problem}", signal.request_id)
        else:
            self.slack_counted += verdict.via == "slack"
            self.approvals.append(who)
            self.counted.append(signal.signed)
            self.counted_at.append(workflow.now())
            self.note(
                who,
                "approve",
                counted=True,
                detail=verdict.reason + (f" ({note})" if note else ""),
                request_id=signal.request_id,
            )

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
            await workflow.wait_condition(
                settled,
                timeout=GIVE_UP,
                timeout_summary=f"approval expiry: give up after {GIVE_UP} without a decision",
            )
        except TimeoutError:
            self.rejection = RejectSignal(by="modoru", reason=f"no approval within {GIVE_UP}")
            self.note("modoru", "expired", counted=True, detail=self.rejection.reason)
        if self.rejection is not None:
            return False
        if len(self.approvals) < needed:
            if policy.on_deadline == "abort":
                self.rejection = RejectSignal(
                    by="modoru", reason="deadline missed without approval; policy aborts"
                )
                self.aborted = True
                return False
            self.note(
                "modoru",
                "approval",
                counted=None,
                detail="deadline missed without approval; policy proceeds",
            )
        return True


async def escalate(
    severity: Severity,
    detected_at: dt.datetime,
    done: Callable[[], bool],
    mitigated: Callable[[], bool],
    on_deadline: Callable[[], None],
    announce: Callable[[str], Awaitable[None]],
) -> None:
    """Half-time and deadline escalations until `done`; nothing once mitigated."""
    for point, at in escalation_points(severity, detected_at):
        delay = (at - workflow.now()).total_seconds()
        if delay > 0:
            try:
                await workflow.wait_condition(
                    done,
                    timeout=delay,
                    timeout_summary=TIMER_SUMMARY[point].format(
                        at=at.isoformat(timespec="seconds")
                    ),
                )
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


async def send_notice(
    channels: list[Channel], kind: str, subject: str, text: str, desk: AuditTrail
) -> list[str]:
    """Send a notice (the one sender of the change workflows and the incident); returns the
    channels that took it. Failing channels are audited in `desk`'s trail, never fatal: a change
    must not wait on a chat service."""
    if not channels:
        return []
    try:
        result: NoticeResult = await workflow.execute_activity(
            refs.NOTIFY.name,
            Notice(kind=kind, subject=subject, text=text, channels=channels),
            result_type=refs.NOTIFY.result,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=NOTIFY_RETRY,
            summary=f"notify: {subject}",
        )
    except ActivityError:
        desk.note("modoru", "notify_failed", detail=subject)
        return []
    for failure in result.failed:
        desk.note("modoru", "notify_failed", detail=f"{subject}: {failure}")
    return result.delivered
