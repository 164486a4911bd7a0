"""A cluster whose service has a Slack channel id: the notice activity answers as if
the Web API took the approval message, and the card updates are recorded."""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import activity

from runbook import activity_refs as refs
from runbook.approval_card import SlackMessageRef
from runbook.catalog import Channel
from runbook.models import CardUpdate, Notice, NoticeResult
from tests.workflows.conftest import FakeCluster

SLACK = Channel(kind="slack", channel="C0INCIDENT")
POSTED = SlackMessageRef(channel="C0INCIDENT", ts="1.000001")


@dataclass
class SlackCardCluster(FakeCluster):
    updates: list[CardUpdate] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.entry = self.entry.model_copy(update={"channels": [Channel(kind="console"), SLACK]})

    def activities(self) -> list:
        found = [a for a in super().activities() if a.__name__ != "notify"]

        @activity.defn(name=refs.NOTIFY.name)
        async def notify(notice: Notice) -> NoticeResult:
            self.notices.append(notice)
            posted = [POSTED] if notice.card else []
            return NoticeResult(delivered=["console", SLACK.label], posted=posted)

        @activity.defn(name=refs.NOTIFY_CARD.name)
        async def update_card(update: CardUpdate) -> NoticeResult:
            self.updates.append(update)
            return NoticeResult(delivered=[SLACK.label])

        return [*found, notify, update_card]
