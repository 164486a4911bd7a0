"""What flows through the runbook's method 3 (restore a backed-up manifest)
and its troubleshooting steps (delete an old ReplicaSet, restart the rollout)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from .cd_models import MAX_MANIFEST_BYTES, ManifestSource, PullDiagnosis
from .decisions import GateView, Grant, SignedDecision
from .enums import Phase, Severity
from .models import AuditEntry, ChecklistItem, Diagnostics, Model, VerifyResult

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class RestoreRequest(Model):
    namespace: str = Field("default", pattern=NAME_PATTERN, max_length=63)
    deployment: str = Field(pattern=NAME_PATTERN, max_length=253)
    source: ManifestSource
    manifest: str = Field(
        "",
        max_length=MAX_MANIFEST_BYTES,
        description="the file's text, read by the CLI (source kind file)",
    )
    severity: Severity = Severity.INVESTIGATE
    reason: str = Field(min_length=1, max_length=2000)
    requested_by: str = Field(min_length=1, max_length=200)
    detected_at: dt.datetime | None = None
    dry_run: bool = False
    language: Literal["ja", "en"] = "ja"
    start: SignedDecision | None = None

    @field_validator("detected_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("detected_at needs a time zone offset, e.g. 2026-01-16T12:00:00+09:00")
        return value


class BackupFetch(Model):
    namespace: str
    deployment: str
    configmap: str


class RestoreCheckRequest(Model):
    namespace: str
    deployment: str
    manifest: str = Field(max_length=MAX_MANIFEST_BYTES)


class RestoreCheck(Model):
    problems: list[str] = Field(
        default_factory=list, description="why the manifest cannot be applied; empty: it can"
    )
    notes: list[str] = Field(default_factory=list)
    desired: str = Field(
        "", description="the manifest as it will be applied (server-set fields removed), YAML"
    )
    digest: str = Field("", description="sha256 of the desired manifest's canonical JSON")
    diff: list[str] = Field(
        default_factory=list,
        description="unified diff of the live object against the result of the apply",
    )
    deployment_uid: str = ""
    revision: int = Field(0, description="the live revision when checked")
    live_images: list[str] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)
    unchanged: bool = False


class RestoreApplyRequest(Model):
    namespace: str
    deployment: str
    deployment_uid: str
    desired: str
    digest: str
    grant: Grant | None = None


class ApplyResult(Model):
    changed: bool
    message: str
    generation: int = 0


class RestoreStatus(Model):
    workflow_id: str
    phase: Phase
    namespace: str
    deployment: str
    source: ManifestSource
    severity: Severity
    requested_by: str
    reason: str
    detected_at: dt.datetime
    sla_deadline: dt.datetime
    sla_met: bool | None = None
    fetched: str = ""
    check: RestoreCheck | None = None
    approvals_required: int = 0
    approvals: list[str] = Field(default_factory=list)
    pending: GateView | None = None
    applied: ApplyResult | None = None
    rollout: str = ""
    verification: VerifyResult | None = None
    diagnostics: Diagnostics | None = None
    pull: PullDiagnosis | None = None
    escalations: list[str] = Field(default_factory=list)
    audit: list[AuditEntry] = Field(default_factory=list)
    checklist: list[ChecklistItem] = Field(
        default_factory=list,
        description="the runbook's checklist, each item with time and evidence",
    )
    timings: dict[str, dt.datetime] = Field(default_factory=dict)
    message: str = ""


class RestoreResult(Model):
    status: RestoreStatus
    no_op: bool = False


# -- troubleshooting ---------------------------------------------------------------------

RepairAction = Literal["delete-replicaset", "restart"]


class RepairRequest(Model):
    namespace: str = Field("default", pattern=NAME_PATTERN, max_length=63)
    deployment: str = Field(pattern=NAME_PATTERN, max_length=253)
    action: RepairAction
    replicaset: str = Field(
        "", max_length=253, description="delete-replicaset: the old ReplicaSet's name"
    )
    reason: str = Field(min_length=1, max_length=2000)
    requested_by: str = Field(min_length=1, max_length=200)
    severity: Severity = Severity.INVESTIGATE
    language: Literal["ja", "en"] = "ja"
    start: SignedDecision | None = None

    @field_validator("replicaset")
    @classmethod
    def _name(cls, value: str) -> str:
        import re

        if value and not re.fullmatch(NAME_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a ReplicaSet name (lowercase letters, digits and -)"
            )
        return value


class RepairPlanRequest(Model):
    namespace: str
    deployment: str
    action: RepairAction
    replicaset: str = ""


class ReplicaSetInfo(Model):
    name: str
    revision: int
    replicas: int
    ready: int
    images: list[str]
    role: Literal["live", "serving", "old"]


class RepairPlan(Model):
    deployment_uid: str
    revision: int
    replicasets: list[ReplicaSetInfo] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)


class ReplicaSetDelete(Model):
    namespace: str
    deployment: str
    deployment_uid: str
    replicaset: str
    grant: Grant | None = None


class RestartRequest(Model):
    namespace: str
    deployment: str
    deployment_uid: str
    restarted_at: str = Field(
        description="the kubectl.kubernetes.io/restartedAt value, fixed by the workflow so a "
        "retry restarts once"
    )
    grant: Grant | None = None


class RepairStatus(Model):
    workflow_id: str
    phase: Phase
    namespace: str
    deployment: str
    action: RepairAction
    replicaset: str = ""
    severity: Severity
    requested_by: str
    reason: str
    sla_deadline: dt.datetime
    plan: RepairPlan | None = None
    approvals_required: int = 0
    approvals: list[str] = Field(default_factory=list)
    pending: GateView | None = None
    done: ApplyResult | None = None
    rollout: str = ""
    verification: VerifyResult | None = None
    diagnostics: Diagnostics | None = None
    pull: PullDiagnosis | None = None
    audit: list[AuditEntry] = Field(default_factory=list)
    timings: dict[str, dt.datetime] = Field(default_factory=dict)
    message: str = ""


class RepairResult(Model):
    status: RepairStatus


def restore_plan(
    namespace: str,
    deployment: str,
    uid: str,
    source: ManifestSource,
    digest: str,
    images: list[str],
) -> dict:
    return {
        "kind": "restore",
        "namespace": namespace,
        "deployment": deployment,
        "deployment_uid": uid,
        "source": f"{source.kind}:{source.name}",
        "manifest_sha256": digest,
        "images": images,
    }


def repair_plan(
    namespace: str, deployment: str, uid: str, action: str, replicaset: str, restarted_at: str
) -> dict:
    return {
        "kind": f"repair-{action}",
        "namespace": namespace,
        "deployment": deployment,
        "deployment_uid": uid,
        "replicaset": replicaset,
        "restarted_at": restarted_at,
    }
