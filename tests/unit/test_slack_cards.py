"""Approval messages through the Web API: the notify activity posts the card to the
catalog's Slack channel with the worker's bot token and updates it in place; the
emulator (which checks blocks with slack_sdk's models) takes both."""

from __future__ import annotations

import datetime as dt

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.notify import NotifyActivities
from activities.slack_cards import APPROVE, REJECT, SlackCards
from runbook.approval_card import ApprovalCard, SlackMessageRef
from runbook.catalog import Catalog, Channel, ServiceEntry
from runbook.models import CardUpdate, Notice
from sandbox.slack import SlackEmulator

SLACK = Channel(kind="slack", channel="C0INCIDENT")
CARD = ApprovalCard(
    service="tekutoko-api",
    summary=["image: api:1.3.0 → api:1.2.0", "revision 3 → 2"],
    severity="investigate",
    deadline=dt.datetime(2026, 12, 7, 3, 15, tzinfo=dt.UTC),
    evidence=["error ratio 0.42 over 60 s"],
    workflow_id="rollback-default-tekutoko-api",
    run_id="0193a0b2-run-this",
    gate="approval",
    digest="a" * 64,
    approvers=["sre-lead", "backend-lead"],
    approvals_required=1,
)


def catalog() -> Catalog:
    entry = ServiceEntry(
        name="tekutoko-api", deployment="tekutoko-api", service="tekutoko-api", channels=[SLACK]
    )
    return Catalog(services=[entry])


@pytest.fixture
async def slack():
    emulator = SlackEmulator()
    await emulator.start()
    yield emulator
    await emulator.stop()


def buttons(message) -> list[str]:
    return [
        element["action_id"]
        for block in message.blocks
        if block["type"] == "actions"
        for element in block["elements"]
    ]


async def test_the_card_is_posted_with_buttons_and_updated_in_place_without_them(slack):
    cards = SlackCards(slack.space.bot_token, slack.api_url, "http://127.0.0.1:8233")
    notify = NotifyActivities(catalog=catalog(), slack=cards)
    notice = Notice(kind="approval_needed", subject="s", text="t", channels=[SLACK], card=CARD)
    result = await ActivityEnvironment().run(notify.send, notice)
    assert result.delivered == ["slack:#C0INCIDENT"] and len(result.posted) == 1
    (message,) = slack.space.messages["C0INCIDENT"]
    assert buttons(message) == [APPROVE, REJECT]
    assert "api:1.3.0 → api:1.2.0" in str(message.blocks)
    assert "/workflows/rollback-default-tekutoko-api/0193a0b2-run-this" in str(message.blocks)
    closed = CARD.model_copy(
        update={
            "outcome": "approved",
            "approvals": ["sre-lead"],
            "decisions": [":white_check_mark: sre-lead approved in Slack"],
        }
    )
    update = CardUpdate(card=closed, messages=result.posted)
    assert (await ActivityEnvironment().run(notify.update_card, update)).delivered
    assert message.edited and buttons(message) == []
    assert "sre-lead approved in Slack" in str(message.blocks) and "1 of 1" in str(message.blocks)


async def test_without_a_bot_token_the_channel_is_skipped_and_slack_s_errors_are_told(slack):
    notice = Notice(kind="approval_needed", subject="s", text="t", channels=[SLACK], card=CARD)
    result = await ActivityEnvironment().run(NotifyActivities(catalog=catalog()).send, notice)
    assert result.skipped == ["slack:#C0INCIDENT"] and not result.posted
    wrong = NotifyActivities(catalog=catalog(), slack=SlackCards("xoxb-wrong", slack.api_url))
    result = await ActivityEnvironment().run(wrong.send, notice)
    assert result.failed == ["slack:#C0INCIDENT: Slack said invalid_auth"]


async def test_an_update_may_touch_only_the_catalog_s_channels(slack):
    notify = NotifyActivities(
        catalog=catalog(), slack=SlackCards(slack.space.bot_token, slack.api_url)
    )
    rogue = CardUpdate(card=CARD, messages=[SlackMessageRef(channel="C0ELSEWHERE", ts="1.1")])
    with pytest.raises(ApplicationError, match="not one of the catalog's") as caught:
        await ActivityEnvironment().run(notify.update_card, rogue)
    assert caught.value.non_retryable
