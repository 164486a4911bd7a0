"""A gate's approval message kept in step with its desk: posted with the
approval-needed notice when a service's channels include a Slack channel id
(the Web API, with buttons), then shown again after each decision (who decided,
n of m) and once more when the gate closes (the outcome; no buttons). The
message is a view of the desk; it decides nothing. Deterministic: it reads the
desk and runs activities."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook.approval_card import ApprovalCard, SlackMessageRef, plan_summary
    from runbook.catalog import Channel
    from runbook.models import AuditEntry, CardUpdate, Notice, NoticeResult

    from .approval import NOTIFY_RETRY, ApprovalDesk

if TYPE_CHECKING:
    from .change_steps import ChangeRequest


def has_slack_channel(channels: list[Channel]) -> bool:
    return any(c.kind == "slack" and c.channel for c in channels)


def decision_line(entry: AuditEntry) -> str:
    where = (
        " in Slack"
        if entry.detail.startswith(("approved in Slack by ", "rejected in Slack by "))
        else ""
    )
    if entry.counted and entry.action == "approve":
        return f":white_check_mark: {entry.actor} approved{where}"
    if entry.counted and entry.action == "reject":
        return f":no_entry: {entry.actor} rejected{where}"
    detail = entry.detail if len(entry.detail) <= 160 else entry.detail[:159] + "…"
    return f":grey_question: {entry.actor} ({entry.action}) not counted: {detail}"


def make_card(
    desk: ApprovalDesk,
    what: str,
    request: ChangeRequest,
    status: object,
    approvers: list[str],
    needed: int,
) -> ApprovalCard:
    gate = desk.gate
    assert gate is not None
    return ApprovalCard(
        service=what,
        summary=plan_summary(gate.plan, list(getattr(status, "image_diff", []) or [])),
        severity=request.severity.value,
        deadline=getattr(status, "sla_deadline", None),
        evidence=list(getattr(request, "evidence", []) or [])[:20],
        workflow_id=gate.workflow_id,
        run_id=gate.run_id,
        gate=gate.gate,
        digest=gate.digest,
        approvers=list(approvers),
        approvals=list(desk.approvals),
        approvals_required=needed,
    )


class CardKeeper:
    def __init__(self, desk: ApprovalDesk, card: ApprovalCard) -> None:
        self.desk, self.card = desk, card
        self.messages: list[SlackMessageRef] = []
        self._seen = len(desk.audit)
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def post(self, channels: list[Channel], kind: str, subject: str, text: str) -> None:
        """The approval-needed notice to every channel, the Slack ones as this card."""
        try:
            result: NoticeResult = await workflow.execute_activity(
                refs.NOTIFY.name,
                Notice(kind=kind, subject=subject, text=text, channels=channels, card=self.card),
                result_type=refs.NOTIFY.result,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTIFY_RETRY,
                summary=f"notify: {subject}",
            )
        except ActivityError:
            self.desk.note("modoru", "notify_failed", detail=subject)
            return
        for failure in result.failed:
            self.desk.note("modoru", "notify_failed", detail=f"{subject}: {failure}")
        self.messages = list(result.posted)
        if self.messages:
            self._task = asyncio.create_task(self._follow())

    def _take_new(self) -> bool:
        new = self.desk.audit[self._seen :]
        self._seen = len(self.desk.audit)
        lines = [decision_line(e) for e in new if e.action in ("approve", "reject")]
        self.card.decisions.extend(lines)
        self.card.approvals = list(self.desk.approvals)
        return bool(lines)

    async def _follow(self) -> None:
        while not self._closing:
            await workflow.wait_condition(
                lambda: len(self.desk.audit) > self._seen or self._closing
            )
            if not self._closing and self._take_new():
                await self._show()

    async def _show(self) -> None:
        try:
            await workflow.execute_activity(
                refs.NOTIFY_CARD.name,
                CardUpdate(card=self.card, messages=self.messages),
                result_type=refs.NOTIFY_CARD.result,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTIFY_RETRY,
                summary=f"slack: {self.card.service} {self.card.outcome or 'decisions'}",
            )
        except ActivityError:
            self.desk.note("modoru", "notify_failed", detail="the Slack approval message")

    async def close(self, approved: bool) -> None:
        """The gate closed: the outcome, and the buttons gone."""
        if not self.messages:
            return
        self._closing = True
        if self._task is not None:
            await self._task
        self._take_new()
        rejection = self.desk.rejection
        if approved:
            self.card.outcome = "approved"
        elif rejection is None or rejection.by == "modoru" or self.desk.aborted:
            self.card.outcome = "expired"
        else:
            self.card.outcome = "rejected"
        await self._show()
