"""The data that flows through a rollback: one model in and one out for every
workflow, activity, signal and query."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .approval_card import ApprovalCard, SlackMessageRef
from .catalog import NAME_PATTERN, Channel, ServiceEntry
from .decisions import GateView, Grant, SignedDecision
from .enums import Phase, Severity
from .guard import MonitoringConfig, RecoveryCriteria
from .postchecks import PostChecks


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ChangeRequestBase(Model):
    """What every change's request carries: why, who asks, how urgent, in which
    language the notices go out, and the requester's signed start."""

    reason: str = Field(min_length=1, max_length=2000)
    requested_by: str = Field(min_length=1, max_length=200)
    severity: Severity = Severity.INVESTIGATE
    language: Literal["ja", "en"] = "ja"
    start: SignedDecision | None = Field(
        None,
        description="not counted: a start in the request could be copied from any history; "
        "the requester signs the run's start gate (kept so that earlier inputs still read)",
    )


class DeploymentTarget(Model):
    """The Deployment a change acts on."""

    namespace: str = Field("default", pattern=NAME_PATTERN, max_length=63)
    deployment: str = Field(pattern=NAME_PATTERN, max_length=253)


class DetectedRequest(ChangeRequestBase):
    """A change whose deadline runs from when the problem was seen."""

    detected_at: dt.datetime | None = Field(
        None, description="When the problem was seen; default: the start"
    )

    @field_validator("detected_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("detected_at needs a time zone offset, e.g. 2026-01-16T12:00:00+09:00")
        return value


class RollbackRequest(DeploymentTarget, DetectedRequest):
    to_revision: int | None = Field(
        None, gt=0, description="None: the previous revision, as kubectl"
    )
    severity: Severity
    impact: str = Field("", max_length=2000)
    cause: str = Field("", max_length=2000)
    dry_run: bool = False
    evidence: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="what a release guard saw, when one started this",
    )
    guard_seal: str = Field(
        "",
        description="the release guard's seal on its breach, when the guard started this: it "
        "counts only over facts naming this rollback and its plan, once, within 30 minutes",
    )
    guard_facts: dict[str, Any] = Field(
        default_factory=dict, description="what the guard's seal covers"
    )


class ServiceLookup(Model):
    namespace: str
    deployment: str


class ServiceByName(Model):
    name: str


class DeploymentRef(Model):
    """A service's Deployment, as the catalog names it."""

    namespace: str
    deployment: str

    @classmethod
    def of(cls, entry: ServiceEntry, **more: Any) -> Self:
        """The request for the catalog entry's Deployment; `more`: the request's own fields."""
        return cls(namespace=entry.namespace, deployment=entry.deployment, **more)


class RevisionInfo(Model):
    revision: int
    replicaset: str
    images: list[str]
    change_cause: str | None = None


class PlanRequest(DeploymentRef):
    to_revision: int | None = None


class RollbackPlan(Model):
    namespace: str
    deployment: str
    deployment_uid: str
    from_revision: int
    to_revision: int
    target_replicaset: str
    from_images: list[str]
    to_images: list[str]
    history: list[RevisionInfo]
    already_at_target: bool = False
    replicas: int = 0

    @property
    def image_diff(self) -> list[str]:
        return [
            f"{a} -> {b}" for a, b in zip(self.from_images, self.to_images, strict=False) if a != b
        ]


class BackupRequest(DeploymentRef):
    from_revision: int
    backup_name: str = Field(pattern=NAME_PATTERN, max_length=253)


class BackupRef(Model):
    namespace: str
    configmap: str
    manifest_yaml: str
    created: bool


class UndoRequest(Model):
    plan: RollbackPlan
    grant: Grant | None = Field(
        None, description="the signed approvals, checked again by the activity"
    )


class UndoResult(Model):
    patched: bool
    message: str


class RolloutWaitRequest(DeploymentRef):
    timeout_seconds: int = Field(600, gt=0)
    poll_seconds: float = Field(1.0, gt=0)


class PodState(Model):
    name: str
    phase: str
    ready: bool
    restarts: int
    waiting_reason: str | None = None
    image: str = ""


class Diagnostics(Model):
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    events: list[str] = Field(default_factory=list)
    pods: list[PodState] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    logs: list[str] = Field(
        default_factory=list,
        description="the last lines of a failing pod's log (kubectl logs --tail=50)",
    )


class RolloutOutcome(Model):
    revision: int
    message: str
    diagnostics: Diagnostics = Field(default_factory=Diagnostics)


class ServiceRef(DeploymentRef):
    """A service's Deployment and its Service, as the catalog names them."""

    service: str

    @classmethod
    def of(cls, entry: ServiceEntry, **more: Any) -> Self:
        return super().of(entry, service=entry.service, **more)


class VerifyRequest(ServiceRef):
    paths: list[str]
    window_seconds: int = Field(
        60, gt=0, description="how long the pods and HTTP checks may take to pass"
    )
    deadline_seconds: int | None = Field(
        None,
        gt=0,
        description="how long verification may wait for late data (runbook/verification.py); "
        "None: window_seconds",
    )
    interval_seconds: float = Field(2.0, gt=0)
    monitoring: MonitoringConfig | None = Field(None, description="None: no metric criteria")
    recovery: RecoveryCriteria = Field(default_factory=RecoveryCriteria)
    post_checks: PostChecks | None = Field(
        None, description="CPU/memory, connection pool and logs; None: not checked"
    )


class CheckResult(Model):
    name: str
    ok: bool
    detail: str
    unread: bool = Field(
        False,
        description="the check could not be read (an API error), which says nothing about the "
        "service",
    )
    pending: bool = Field(
        False, description="its data is not readable yet; the detail says until when"
    )
    readable_at: dt.datetime | None = Field(
        None, description="when a pending check can be read (wall time)"
    )
    judged: bool = Field(
        True,
        description="False: its data could not be read before verification's deadline; neither "
        "passed nor failed",
    )


class VerifyResult(Model):
    ok: bool
    checks: list[CheckResult]
    attempts: int
    base_url: str | None = None
    pod_logs: dict[str, list[str]] = Field(
        default_factory=dict, description="kubectl logs --tail of each pod, as evidence"
    )


class Notice(Model):
    kind: Literal[
        "start", "complete", "failure", "escalation", "rejected", "approval_needed", "reminder"
    ]
    subject: str
    text: str
    channels: list[Channel]
    card: ApprovalCard | None = Field(
        None, description="an approval gate: Slack Web API channels show it with buttons"
    )


class CardUpdate(Model):
    """An approval message to show again as `card` now stands (decisions, outcome)."""

    card: ApprovalCard
    messages: list[SlackMessageRef]


class NoticeResult(Model):
    delivered: list[str]
    posted: list[SlackMessageRef] = Field(
        default_factory=list, description="messages the Slack Web API took (to update later)"
    )
    failed: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(
        default_factory=list,
        description="channels not configured on this worker (a Slack channel without its webhook)",
    )


class ApprovalSignal(Model):
    """An approval, as the workflow's `approval` update takes it. `decision` and `update`
    name it everywhere else (class constants, so histories carry the same JSON as before)."""

    decision: ClassVar[Literal["approve"]] = "approve"
    update: ClassVar[Literal["approval"]] = "approval"
    by: str = Field(min_length=1, max_length=200)
    comment: str = Field("", max_length=2000)
    request_id: str = Field("", max_length=100)
    signed: SignedDecision | None = Field(
        None, description="required when the catalog has identities"
    )

    @property
    def words(self) -> str:
        return self.comment


class RejectSignal(Model):
    """A rejection, as the workflow's `rejection` update takes it."""

    decision: ClassVar[Literal["reject"]] = "reject"
    update: ClassVar[Literal["rejection"]] = "rejection"
    by: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    request_id: str = Field("", max_length=100)
    signed: SignedDecision | None = None

    @property
    def words(self) -> str:
        return self.reason


DecisionSignal = ApprovalSignal | RejectSignal


class AuditEntry(Model):
    at: dt.datetime
    actor: str
    action: str
    counted: bool | None = None
    detail: str = ""
    request_id: str = ""


class ChecklistItem(Model):
    key: str
    title: str
    done_at: dt.datetime | None = None
    evidence: str = ""


class ChangeStatusBase(Model):
    """What every change's status shows: which run, where it stands, who asked
    and why, the approvals, the audit trail, the times of its phases, and the
    last word."""

    workflow_id: str
    phase: Phase
    severity: Severity
    requested_by: str
    reason: str
    approvals: list[str] = Field(default_factory=list)
    audit: list[AuditEntry] = Field(default_factory=list)
    timings: dict[str, dt.datetime] = Field(default_factory=dict)
    message: str = ""


class GatedStatus(ChangeStatusBase):
    """A change that waits at an approval gate."""

    approvals_required: int = 0
    pending: GateView | None = Field(
        None, description="the gate awaiting decisions and the plan to sign"
    )
    start_counted: bool = Field(
        False, description="the requester's signed start of this run was counted"
    )


class Deadline(Model):
    """When the problem was seen and when the runbook's deadline falls."""

    detected_at: dt.datetime
    sla_deadline: dt.datetime


class Escalating(Deadline):
    """A change escalated at half time and at the deadline: whether it met it."""

    sla_met: bool | None = None
    escalations: list[str] = Field(default_factory=list)


class Checklisted(Model):
    checklist: list[ChecklistItem] = Field(
        default_factory=list,
        description="the runbook's checklist, each item with time and evidence",
    )


class RollbackStatus(Checklisted, Escalating, GatedStatus):
    namespace: str
    deployment: str
    from_revision: int | None = None
    to_revision: int | None = None
    image_diff: list[str] = Field(default_factory=list)
    backup_configmap: str | None = None
    evidence: list[str] = Field(default_factory=list)
    verification: VerifyResult | None = None
    diagnostics: Diagnostics | None = None


class RollbackResult(Model):
    status: RollbackStatus
    plan: RollbackPlan | None = None
    backup_manifest: str | None = None
    no_op: bool = False


class MetricsQuery(Model):
    project: str = Field(min_length=1)
    namespace: str
    service: str
    config: MonitoringConfig = Field(default_factory=MonitoringConfig)
    start: dt.datetime | None = Field(
        None, description="start of the reading; default: end less the window"
    )
    end: dt.datetime | None = Field(
        None, description="end of the reading; default: now less the ingestion delay"
    )
    data_since: dt.datetime | None = Field(
        None,
        description="the earliest the service's data may begin (a guard's start): until its "
        "first whole minute is readable, a filter that matches nothing means no data yet",
    )
    replica_set: str | None = Field(
        None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="promql: only the pods of this ReplicaSet (a release's own traffic)",
    )
    must_match: bool = Field(
        True,
        description="promql: a read that finds no series fails unless the service's series "
        "exist (False: a watch's read of a new ReplicaSet, checked by the baseline)",
    )


class AlertQuery(Model):
    project: str = Field(min_length=1)
    filter: str = Field("", description='Cloud Monitoring alert filter; state = "OPEN" is added')
    policy_filter: str = Field(
        "",
        description="alertPolicies.list filter that must match at least one policy; empty: not "
        "checked",
    )


class OpenAlert(Model):
    name: str
    policy: str
    opened: dt.datetime | None = None


class OpenAlerts(Model):
    alerts: list[OpenAlert]


class ServiceMetrics(Model):
    window_start: dt.datetime
    window_end: dt.datetime
    requests: int
    errors: int
    error_ratio: float | None = Field(
        None, description="None: no traffic in the window, so nothing to judge"
    )
    p95_ms: float | None = None
