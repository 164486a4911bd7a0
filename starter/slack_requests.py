"""The Slack gateway's parts that hold no request logic: what a button carries,
a refusal, where gates come from (Temporal, with the CLI's checks), the bounded
set of requests seen, and the rejection modal."""

from __future__ import annotations

import collections
import io
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from runbook.approval_card import APPROVE_ACTION, REJECT_ACTION
from runbook.decisions import DecisionVerdict, GateView
from runbook.models import ApprovalSignal, RejectSignal

WINDOW_SECONDS = 5 * 60
SEEN_LIMIT = 10_000
APPROVE, REJECT = APPROVE_ACTION, REJECT_ACTION
REASON_VIEW = "modoru.reject_reason"


class ButtonValue(BaseModel):
    """What an approval message's buttons carry: the gate the person was shown."""

    model_config = ConfigDict(extra="forbid")
    w: str = Field(min_length=1, max_length=255, description="workflow id")
    r: str = Field(min_length=1, max_length=64, description="run id")
    g: str = Field(min_length=1, max_length=64, description="gate")
    d: str = Field(pattern=r"^[0-9a-f]{64}$", description="plan digest")


class Refused(Exception):
    """A request the gateway will not act on; the message is the audit's reason."""

    def __init__(self, reason: str, status: int = 200) -> None:
        super().__init__(reason)
        self.status = status


class Gates(Protocol):
    async def gate(self, workflow_id: str) -> GateView:
        """The gate open now, checked as `modoru approve` checks it; Refused otherwise."""

    async def decide(
        self, workflow_id: str, signal: ApprovalSignal | RejectSignal
    ) -> DecisionVerdict: ...


class TemporalGates:
    """Gates and decisions through Temporal, with the CLI's checks."""

    def __init__(self, client: Any, task_queue: str) -> None:
        self.client, self.task_queue = client, task_queue

    async def gate(self, workflow_id: str) -> GateView:
        from rich.console import Console

        from .base import CliError
        from .commands import query_any_status
        from .gate_check import checked_gate

        try:
            status = await query_any_status(self.client.get_workflow_handle(workflow_id))
            gate = getattr(status, "pending", None)
            if gate is None:
                raise Refused(f"{workflow_id} has no gate open now (closed or expired)")
            quiet = Console(file=io.StringIO())
            await checked_gate(
                self.client, workflow_id, gate, task_queue=self.task_queue, out=quiet
            )
        except CliError as exc:
            raise Refused(str(exc)) from None
        return gate

    async def decide(
        self, workflow_id: str, signal: ApprovalSignal | RejectSignal
    ) -> DecisionVerdict:
        handle = self.client.get_workflow_handle(workflow_id)
        return await handle.execute_update(
            signal.update, signal, id=f"slack-{signal.request_id}", result_type=DecisionVerdict
        )


class SeenRequests:
    """Keys seen within the timestamp window, at most `limit` of them."""

    def __init__(self, limit: int = SEEN_LIMIT, window: float = WINDOW_SECONDS) -> None:
        self.limit, self.window = limit, window
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()

    def first_time(self, keys: list[str], now: float) -> bool:
        """False when any of `keys` was seen; otherwise remember them all."""
        while self._seen and next(iter(self._seen.values())) < now - 2 * self.window:
            self._seen.popitem(last=False)
        if any(key in self._seen for key in keys):
            return False
        for key in keys:
            self._seen[key] = now
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._seen)


def reason_view(value: str, workflow_id: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": REASON_VIEW,
        "private_metadata": value,
        "title": {"type": "plain_text", "text": "Reject the change"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"Reject `{workflow_id}`: nothing is changed."},
            },
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "reason",
                    "multiline": True,
                    "max_length": 2000,
                },
            },
        ],
    }
