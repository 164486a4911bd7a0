"""The approval message as data: what a Slack card shows of a gate (the plan's
facts, the severity, the deadline, the evidence, the decisions so far and the
outcome) and the gate its buttons name. Pure: the activity lays it out in Block
Kit, the workflow fills it from its own state. Verdicts only, never secrets."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The buttons' action ids: the worker lays them out, the gateway answers to them.
APPROVE_ACTION, REJECT_ACTION = "modoru.approve", "modoru.reject"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class SlackMessageRef(Model):
    """A message the Web API posted: where it is, so that it can be updated."""

    channel: str
    ts: str


class ApprovalCard(Model):
    service: str
    summary: list[str] = Field(
        default_factory=list, description="the plan's facts, one line each (images, revisions)"
    )
    severity: str
    deadline: dt.datetime | None = None
    evidence: list[str] = Field(default_factory=list, max_length=20)
    workflow_id: str
    run_id: str
    gate: str
    digest: str
    approvers: list[str] = Field(default_factory=list)
    approvals: list[str] = Field(default_factory=list)
    approvals_required: int = 0
    decisions: list[str] = Field(default_factory=list, description="one line per decision")
    outcome: Literal["", "approved", "rejected", "expired"] = ""

    @property
    def open(self) -> bool:
        return not self.outcome

    def button_value(self) -> str:
        """What both buttons carry: the gate this card shows (the gateway checks it again)."""
        return json.dumps(
            {"w": self.workflow_id, "r": self.run_id, "g": self.gate, "d": self.digest},
            separators=(",", ":"),
        )


def plan_summary(plan: dict[str, Any], image_diff: list[str]) -> list[str]:
    """The plan's facts as a person checks them: live image → target, revisions, the rest."""
    lines = [f"image: {change.replace(' -> ', ' → ')}" for change in image_diff]
    if "from_revision" in plan and "to_revision" in plan:
        lines.append(f"revision {plan['from_revision']} → {plan['to_revision']}")
    if "from_version" in plan and "to_version" in plan:
        lines.append(f"schema version {plan['from_version']} → {plan['to_version']}")
    skip = {"kind", "from_revision", "to_revision", "from_version", "to_version", "deployment_uid"}
    for key, value in plan.items():
        if key in skip:
            continue
        if isinstance(value, (str, int, float)):
            lines.append(f"{key}: {value}")
        elif key == "to_images" and not image_diff and isinstance(value, list):
            lines.append(f"target images: {', '.join(map(str, value))}")
    return lines[:12]
