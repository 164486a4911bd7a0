"""The runbook's forward fix (フォワードフィックス) as data: when rolling back is
impossible, find the problem in the pods' logs, let people build and verify a
hotfix, deploy it through the CD pipeline and watch the error rate fall.
Pure models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .cd_config import TAG_PATTERN
from .enums import Severity
from .guard_models import GuardBaseline, WatchReport
from .log_groups import ErrorGroup, LogLine
from .models import ChangeStatusBase, Deadline, DeploymentTarget, DetectedRequest

BRANCH_PATTERN = r"^[A-Za-z0-9._/-]{1,200}$"
LOG_TAIL = 200  # the runbook's `kubectl logs -l app=... --tail=200`


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class Hotfix(Strict):
    """What people built: the branch, the image tag the pipeline pushed, and
    their word that staging verified it (the runbook's ステージングで検証)."""

    branch: str = Field(pattern=BRANCH_PATTERN)
    tag: str = Field(pattern=TAG_PATTERN)
    by: str = Field(min_length=1, max_length=200)
    staging_verified: bool = Field(
        description="the hotfix passed staging; a forward fix does not deploy one that did not"
    )
    link: str = Field("", max_length=500, description="the pull request or the staging run")
    note: str = Field("", max_length=2000)

    @field_validator("staging_verified")
    @classmethod
    def _verified(cls, value: bool) -> bool:
        if not value:
            raise ValueError(
                "the runbook deploys a hotfix only after it was verified on staging "
                "(--staging-verified)"
            )
        return value


class ForwardFixRequest(DeploymentTarget, DetectedRequest):
    severity: Severity = Severity.IMMEDIATE
    reason: str = Field(min_length=1, max_length=2000, description="why rolling back is impossible")
    hotfix: Hotfix | None = Field(
        None, description="known at the start; otherwise sent later with the hotfix signal"
    )
    hotfix_wait_hours: float = Field(
        24.0, gt=0, le=72, description="how long to wait for the hotfix before giving up"
    )
    reminder_minutes: int = Field(
        30,
        ge=1,
        le=1440,
        description="how often to remind the channels while waiting for the hotfix",
    )
    recovery_windows: int = Field(
        2,
        ge=1,
        le=30,
        description="metric windows the error rate must stay under the guard's thresholds",
    )
    watch_seconds: int | None = Field(
        None,
        ge=1,
        le=3600,
        description="how long to watch after the hotfix is live; default: the recovery windows",
    )


class ServiceLogsRequest(Strict):
    namespace: str
    deployment: str
    container: str | None = Field(None, description="default: the app's container (the first one)")
    tail: int = Field(LOG_TAIL, ge=1, le=5000)


class ServiceLogs(Strict):
    pods: list[str]
    lines: list[LogLine]
    unreadable: list[str] = Field(
        default_factory=list, description="pods whose log could not be read, with why"
    )


class ForwardFixStatus(Deadline, ChangeStatusBase):
    namespace: str
    deployment: str
    pods_read: list[str] = Field(default_factory=list)
    unreadable: list[str] = Field(default_factory=list)
    lines_read: int = 0
    errors: list[ErrorGroup] = Field(
        default_factory=list, description="the pods' error lines grouped, the most frequent first"
    )
    normal: GuardBaseline | None = Field(None, description="the metrics before the incident")
    at_start: GuardBaseline | None = Field(
        None, description="the metrics when the forward fix began"
    )
    hotfix: Hotfix | None = None
    deploy_workflow_id: str = ""
    deploy_message: str = ""
    watch: WatchReport | None = None
    reminders: int = 0


class ForwardFixResult(Strict):
    status: ForwardFixStatus
    recovered: bool = False
