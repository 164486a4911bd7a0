"""Approval messages in Block Kit, posted and updated with the Slack Web API
(`slack_sdk`'s `AsyncWebClient` and block models). The bot token is the worker's
own (`MODORU_SLACK_BOT_TOKEN` or its file), never a notice's; a failure is told
by Slack's error code alone. The buttons name the gate (workflow id, run id,
gate, plan digest); the gateway checks all of it again before anything counts,
so a button is a hint, never an authority."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.web.async_client import AsyncWebClient

from runbook.approval_card import APPROVE_ACTION, REJECT_ACTION, ApprovalCard, SlackMessageRef
from runbook.notices import _when

APPROVE, REJECT = APPROVE_ACTION, REJECT_ACTION
quiet_log = logging.getLogger("modoru.notices.slack_api")
quiet_log.setLevel(logging.WARNING)  # slack_sdk logs request bodies at DEBUG


def _clip(text: str, limit: int = 2900) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def card_text(card: ApprovalCard) -> str:
    """The message's plain text (notifications, screen readers)."""
    state = {
        "": "approval needed",
        "approved": "approved",
        "rejected": "rejected",
        "expired": "expired",
    }[card.outcome]
    return f"{card.service}: {state} ({len(card.approvals)}/{card.approvals_required})"


def card_blocks(card: ApprovalCard, web_ui: str | None) -> list[Block]:
    title = {
        "": "Approval needed",
        "approved": "Approved",
        "rejected": "Rejected",
        "expired": "Expired without approval",
    }[card.outcome]
    facts = [
        MarkdownTextObject(text=f"*Service*\n{card.service}"),
        MarkdownTextObject(text=f"*Severity*\n{card.severity}"),
        MarkdownTextObject(text=f"*Approvals*\n{len(card.approvals)} of {card.approvals_required}"),
    ]
    if card.deadline is not None:
        facts.append(MarkdownTextObject(text=f"*Deadline*\n{_when(card.deadline)}"))
    blocks: list[Block] = [
        HeaderBlock(text=_clip(f"{title}: {card.service}", 150)),
        SectionBlock(fields=facts),
    ]
    if card.summary:
        plan = "\n".join(f"• {line}" for line in card.summary)
        blocks.append(SectionBlock(text=_clip(f"*Plan* (gate `{card.gate}`)\n{plan}")))
    if card.evidence:
        seen = "\n".join(f"• {line}" for line in card.evidence[:10])
        blocks.append(SectionBlock(text=_clip(f"*Evidence*\n{seen}")))
    if card.decisions:
        blocks.append(DividerBlock())
        blocks.append(SectionBlock(text=_clip("\n".join(card.decisions[-10:]))))
    if card.open:
        value = card.button_value()
        buttons = [
            ButtonElement(text="Approve", action_id=APPROVE, value=value, style="primary"),
            ButtonElement(text="Reject", action_id=REJECT, value=value, style="danger"),
        ]
        blocks.append(ActionsBlock(block_id="modoru.decide", elements=buttons))
    context = [
        MarkdownTextObject(
            text=f"`{card.workflow_id}` · approvers: {', '.join(card.approvers) or 'none'} · "
            f"plan {card.digest[:12]}"
        )
    ]
    if web_ui:
        context.append(MarkdownTextObject(text=f"<{web_ui}|Open in the Temporal Web UI>"))
    blocks.append(ContextBlock(elements=context))
    for block in blocks:
        block.validate_json()
    return blocks


def web_ui_link(base: str | None, namespace: str, card: ApprovalCard) -> str | None:
    if not base:
        return None
    return f"{base.rstrip('/')}/namespaces/{namespace}/workflows/{card.workflow_id}/{card.run_id}"


class SlackCards:
    """Posts and updates approval messages with the worker's bot token."""

    def __init__(self, token: str, base_url: str, web_ui: str | None = None) -> None:
        self.client = AsyncWebClient(token=token, base_url=base_url, logger=quiet_log)
        self.web_ui = web_ui

    async def post(
        self, channel: str, text: str, card: ApprovalCard | None, namespace: str
    ) -> SlackMessageRef:
        try:
            if card is None:
                answer = await self.client.chat_postMessage(channel=channel, text=_clip(text))
            else:
                answer = await self.client.chat_postMessage(
                    channel=channel,
                    text=card_text(card),
                    blocks=card_blocks(card, web_ui_link(self.web_ui, namespace, card)),
                )
        except SlackApiError as exc:
            raise SlackFailed(str(exc.response.get("error", "error"))) from None
        return SlackMessageRef(channel=str(answer["channel"]), ts=str(answer["ts"]))

    async def update(self, ref: SlackMessageRef, card: ApprovalCard, namespace: str) -> None:
        try:
            await self.client.chat_update(
                channel=ref.channel,
                ts=ref.ts,
                text=card_text(card),
                blocks=card_blocks(card, web_ui_link(self.web_ui, namespace, card)),
            )
        except SlackApiError as exc:
            raise SlackFailed(str(exc.response.get("error", "error"))) from None


class SlackFailed(Exception):
    """Slack's error code, and nothing else of the exchange."""
