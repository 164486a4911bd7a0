"""What flows through an incident: the changes made for it (rollbacks, migration
rollbacks, recoveries), the follow-ups the runbook gives deadlines to (root
cause in 24 h, postmortem in 48 h, prevention), and the human confirmations
after a rollback. Pure data: no I/O, no Temporal."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .catalog import NAME_PATTERN
from .decisions import GateView, SignedDecision
from .models import AuditEntry, Model, RollbackStatus
from .procedures import BY_KIND, KINDS, PROCEDURES

# The procedures an incident starts, by the one name each has (runbook/procedures.py).
ChangeKind = Literal[KINDS]  # type: ignore[valid-type]
# Changes made to one Deployment (the others, migration rollbacks and recoveries, to a service's
# database).
DEPLOYMENT_KINDS: frozenset[str] = frozenset(p.kind for p in PROCEDURES if p.scope == "deployment")
ConfirmItem = Literal["user_reports", "main_features", "dashboards"]
FollowUpKey = Literal["rca", "postmortem", "prevention"]

CONFIRM_ITEMS: tuple[str, ...] = ("user_reports", "main_features", "dashboards")
# key, Japanese (the runbook's words), English
CONFIRM_TITLES: dict[str, tuple[str, str]] = {
    "user_reports": ("ユーザーからの障害報告がない", "No reports of trouble from users"),
    "main_features": ("主要機能の動作確認完了", "Main features checked and working"),
    "dashboards": (
        "Cloud Monitoring ダッシュボードで異常なし",
        "Nothing unusual on the Cloud Monitoring dashboards",
    ),
}
FOLLOW_UP_TITLES: dict[str, tuple[str, str]] = {
    "rca": ("原因調査（24時間以内）", "Root-cause investigation (within 24 h)"),
    "postmortem": ("ポストモーテム作成（48時間以内）", "Postmortem (within 48 h)"),
    "prevention": ("再発防止策の立案", "Prevention measures"),
}
WORKFLOW_KINDS: dict[str, str] = {p.kind: p.workflow_type for p in PROCEDURES}


def incident_workflow_id(service: str, detected_at: dt.datetime, *, seconds: bool = False) -> str:
    """One incident per service and detection minute (UTC), e.g.
    incident-tekutoko-api-20261129-0212;
    with `seconds`, per detection second (a release guard's breach: the guard cannot
    see which incidents run, the CLI joins the guard's through the search attributes)."""
    return (
        f"incident-{service}-{detected_at.astimezone(dt.UTC):%Y%m%d-%H%M{'%S' if seconds else ''}}"
    )


class IncidentRequest(Model):
    service: str = Field(
        pattern=NAME_PATTERN,
        max_length=200,
        description="the deployment (and catalog service) the incident is about",
    )
    namespace: str = Field("default", pattern=NAME_PATTERN, max_length=63)
    detected_at: dt.datetime
    opened_by: str = Field(min_length=1, max_length=200)
    reason: str = Field("", max_length=2000)
    language: Literal["ja", "en"] = "ja"
    by_name: bool = Field(
        False,
        description="service is a catalog name (migration rollbacks, recoveries), not a deployment",
    )

    @field_validator("detected_at")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("detected_at needs a time zone offset, e.g. 2026-01-16T12:00:00+09:00")
        return value


class ChangeSignal(Model):
    """Start (or attach to) a change for this incident, under the id the CLI would have used.
    `request` is the request model of the procedure `kind` names (runbook/procedures.py)."""

    kind: ChangeKind
    workflow_id: str = Field(min_length=1, max_length=255)
    request_id: str = Field("", max_length=100)
    request: Any
    summary: str = Field("", max_length=400)
    details: str = Field("", max_length=4000)
    search_attributes: bool = Field(
        True, description="index the child with modoru's search attributes"
    )
    notify_workflow: str = Field(
        "",
        max_length=255,
        description="a workflow (the release guard) signalled `change_ended` with the record "
        "when the change ends",
    )

    @model_validator(mode="before")
    @classmethod
    def _request_of_its_kind(cls, given: Any) -> Any:
        """The request, read as the model of its kind. Signals recorded before the table carry
        it under the kind's own name (`"rollback": {...}`): read the same."""
        if not isinstance(given, dict):
            return given
        fields = dict(given)
        procedure = BY_KIND.get(fields.get("kind", ""))
        if procedure is None:
            return fields  # the kind's own error names the kinds
        carried = [k for k in KINDS if fields.get(k) is not None]
        if "request" not in fields and carried:
            if carried != [procedure.kind]:
                raise ValueError(
                    f"a {procedure.kind} change carries exactly its {procedure.kind} request"
                )
            fields["request"] = fields.pop(procedure.kind)
        for k in KINDS:
            if fields.get(k) is None:
                fields.pop(k, None)
        request = fields.get("request")
        if request is None:
            raise ValueError(f"a {procedure.kind} change carries its request")
        if isinstance(request, Model) and not isinstance(request, procedure.request):
            raise ValueError(
                f"a {procedure.kind} change carries a {procedure.request.__name__}, "
                f"not a {type(request).__name__}"
            )
        fields["request"] = procedure.request.model_validate(request)
        return fields


class ChangeVerdict(Model):
    """What the incident did with a change it was asked to start (the `start_change` update's
    answer): `started` as its child, `attached` to the same change already running, or
    `refused` (the incident is closed; a guard seal used before), with the reason."""

    outcome: Literal["started", "attached", "refused"]
    workflow_id: str
    detail: str = ""


class FollowUpSignal(Model):
    """Progress on a follow-up: `modoru incident rca|postmortem|prevention`."""

    by: str = Field(min_length=1, max_length=200)
    summary: str = Field("", max_length=4000)
    link: str = Field("", max_length=2000)
    request_id: str = Field("", max_length=100)


class FollowUpUpdate(Model):
    """A follow-up sent as an update (`record_follow_up`): which one, and its record."""

    key: Literal["rca", "postmortem", "prevention"]
    follow_up: FollowUpSignal


class ConfirmSignal(Model):
    """A person's confirmation after a rollback (`modoru confirm`)."""

    item: ConfirmItem
    by: str = Field(min_length=1, max_length=200)
    target: str = Field(
        "",
        max_length=255,
        description="the change confirmed; empty: the incident's latest rollback",
    )
    note: str = Field("", max_length=2000)
    link: str = Field("", max_length=2000)
    request_id: str = Field("", max_length=100)
    signed: SignedDecision | None = Field(
        None, description="required when the catalog has identities"
    )


class Confirmation(Model):
    item: ConfirmItem
    by: str
    at: dt.datetime
    note: str = ""
    link: str = ""


class ChangeRecord(Model):
    workflow_id: str
    kind: ChangeKind
    requested_at: dt.datetime
    outcome: Literal["started", "attached", "refused"] = "started"
    detail: str = ""
    running: bool = True
    phase: str = ""
    message: str = ""
    error_type: str = ""
    ended_at: dt.datetime | None = None
    rollback: RollbackStatus | None = Field(
        None, description="a deployment rollback's final status"
    )
    final: dict[str, Any] = Field(
        default_factory=dict, description="a migration rollback's or a recovery's final status"
    )
    verified: bool = Field(False, description="the automatic checks passed")
    confirmations: list[Confirmation] = Field(default_factory=list)
    reminders: int = 0
    notify: list[str] = Field(
        default_factory=list, description="workflows told when the change ends"
    )

    @property
    def acted(self) -> bool:
        """Whether the change touched anything (a rollback's undo ran; a migration or recovery began
        executing)."""
        if self.running or self.outcome == "attached":
            return True
        if self.rollback is not None:
            return any(item.key == "undo" and item.done_at for item in self.rollback.checklist)
        if self.final:
            return "executing" in self.final.get("timings", {})
        # Failed with no status: the change workflows call a failure after acting *Failed, a refusal
        # anything else.
        return self.error_type.endswith("Failed")

    @property
    def awaiting(self) -> list[str]:
        """The human confirmations a verified rollback still waits for."""
        if self.kind != "rollback" or not self.verified:
            return []
        have = {c.item for c in self.confirmations}
        return [item for item in CONFIRM_ITEMS if item not in have]

    @property
    def fully_verified(self) -> bool:
        return self.kind == "rollback" and self.verified and not self.awaiting


class FollowUp(Model):
    key: FollowUpKey
    due_at: dt.datetime
    done_at: dt.datetime | None = None
    by: str = ""
    summary: str = ""
    link: str = ""
    started_at: dt.datetime | None = Field(
        None, description="rca: when the investigation was first recorded as started"
    )
    reminders: list[str] = Field(
        default_factory=list, description="half_time / deadline notices sent"
    )


class NoticeRecord(Model):
    at: dt.datetime
    kind: str
    subject: str
    delivered: list[str] = Field(default_factory=list)


class IncidentStatus(Model):
    incident_id: str
    service: str
    namespace: str
    state: Literal["open", "closed"] = "open"
    opened_by: str
    reason: str = ""
    language: Literal["ja", "en"] = "ja"
    detected_at: dt.datetime
    opened_at: dt.datetime
    closed_at: dt.datetime | None = None
    changes: list[ChangeRecord] = Field(default_factory=list)
    follow_ups: list[FollowUp] = Field(default_factory=list)
    audit: list[AuditEntry] = Field(default_factory=list)
    notices: list[NoticeRecord] = Field(default_factory=list)
    signed: bool = Field(
        False, description="confirmations count only when signed (the catalog has identities)"
    )
    confirm_gates: list[GateView] = Field(
        default_factory=list, description="what a signed confirmation names, per awaited item"
    )
    message: str = ""

    def change(self, workflow_id: str) -> ChangeRecord | None:
        """The latest change under `workflow_id` (a rollback id is reused by the next rollback)."""
        return next((c for c in reversed(self.changes) if c.workflow_id == workflow_id), None)

    @property
    def nothing_changed(self) -> bool:
        """Every change has ended without acting (refused, rejected, a dry run): nothing to follow
        up."""
        return bool(self.changes) and all(not c.running and not c.acted for c in self.changes)

    @property
    def missing(self) -> list[str]:
        """What the incident still waits for before it closes."""
        out = [f"{f.key}" for f in self.follow_ups if f.done_at is None]
        out += [f"{c.workflow_id} still running" for c in self.changes if c.running]
        out += [f"{c.workflow_id}: confirm {item}" for c in self.changes for item in c.awaiting]
        return out


class IncidentResult(Model):
    status: IncidentStatus
    postmortem_draft: str = Field("", description="Markdown, in the incident's language")
    postmortem_draft_other: str = Field("", description="the same draft in the other language")
