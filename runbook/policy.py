"""The runbook's rules: how long each severity may take, who may approve, and
what a missed deadline does."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .catalog import ApprovalPolicy
from .enums import Severity

DEADLINES = {
    Severity.IMMEDIATE: dt.timedelta(minutes=5),
    Severity.INVESTIGATE: dt.timedelta(minutes=15),
}


def sla_deadline(severity: Severity, detected_at: dt.datetime) -> dt.datetime:
    return detected_at + DEADLINES[severity]


def escalation_points(
    severity: Severity, detected_at: dt.datetime
) -> list[tuple[str, dt.datetime]]:
    """Half time and the deadline itself, when escalation notices go out."""
    window = DEADLINES[severity]
    return [("half_time", detected_at + window / 2), ("deadline", detected_at + window)]


def approvals_required(severity: Severity, policy: ApprovalPolicy) -> int:
    return (
        policy.immediate_approvals
        if severity is Severity.IMMEDIATE
        else policy.investigate_approvals
    )


@dataclass(frozen=True)
class ApprovalVerdict:
    counted: bool
    reason: str


def judge_approval(
    policy: ApprovalPolicy, requested_by: str, approver: str, already: list[str]
) -> ApprovalVerdict:
    """Whether an approval counts: a listed approver, not the requester, once."""
    who = approver.strip()
    if who.lower() == requested_by.strip().lower():
        return ApprovalVerdict(False, f"{who} requested this rollback and cannot approve it")
    if who not in policy.approvers:
        listed = ", ".join(policy.approvers) or "nobody"
        return ApprovalVerdict(
            False, f"{who} is not an approver for this service (approvers: {listed})"
        )
    if who in already:
        return ApprovalVerdict(False, f"{who} has already approved")
    return ApprovalVerdict(True, f"approved by {who}")


def judge_rejection(policy: ApprovalPolicy, rejecter: str) -> ApprovalVerdict:
    """A listed approver, or the requester, may stop a rollback before it acts."""
    who = rejecter.strip()
    if who in policy.approvers:
        return ApprovalVerdict(True, f"rejected by {who}")
    return ApprovalVerdict(False, f"{who} is not an approver for this service and cannot reject it")
