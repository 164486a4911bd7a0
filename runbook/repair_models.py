"""What flows through the runbook's method 3 (restore a backed-up manifest)
and its troubleshooting steps (delete an old ReplicaSet, restart the rollout)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field, field_validator

from .cd_models import MAX_MANIFEST_BYTES, DeploymentChangeStatus, ManifestSource
from .decisions import Grant
from .models import (
    ChangeRequestBase,
    Checklisted,
    DeploymentTarget,
    DetectedRequest,
    Escalating,
    Model,
)

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class RestoreRequest(DeploymentTarget, DetectedRequest):
    source: ManifestSource
    manifest: str = Field(
        "",
        max_length=MAX_MANIFEST_BYTES,
        description="the file's text, read by the CLI (source kind file)",
    )
    dry_run: bool = False


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


class RestoreStatus(Checklisted, Escalating, DeploymentChangeStatus):
    source: ManifestSource
    fetched: str = ""
    check: RestoreCheck | None = None
    applied: ApplyResult | None = None


class RestoreResult(Model):
    status: RestoreStatus
    no_op: bool = False


# -- troubleshooting ---------------------------------------------------------------------

RepairAction = Literal["delete-replicaset", "restart"]


class RepairRequest(DeploymentTarget, ChangeRequestBase):
    action: RepairAction
    replicaset: str = Field(
        "", max_length=253, description="delete-replicaset: the old ReplicaSet's name"
    )

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


class RepairStatus(DeploymentChangeStatus):
    action: RepairAction
    replicaset: str = ""
    sla_deadline: dt.datetime
    plan: RepairPlan | None = None
    done: ApplyResult | None = None


class RepairResult(Model):
    status: RepairStatus


def restore_plan(
    namespace: str,
    deployment: str,
    uid: str,
    source: ManifestSource,
    digest: str,
    images: list[str],
) -> dict[str, Any]:
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
) -> dict[str, Any]:
    return {
        "kind": f"repair-{action}",
        "namespace": namespace,
        "deployment": deployment,
        "deployment_uid": uid,
        "replicaset": replicaset,
        "restarted_at": restarted_at,
    }
