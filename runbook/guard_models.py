"""What flows through the release guard: its request, what it carries across
continue-as-new, each watch's report, its status and its result."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator

from .catalog import NAME_PATTERN, ServiceEntry
from .decisions import GateView, SignedDecision
from .guard import Evidence, GuardThresholds, MonitoringConfig, Verdict
from .models import Model, ServiceMetrics, ServiceRef

MAX_GUARD_SECONDS = 7 * 24 * 3600


class GuardPhase(StrEnum):
    BASELINE = "baseline"
    WATCHING = "watching"
    CONFIRMING = "confirming"
    ROLLING_BACK = "rolling_back"
    FINISHED = "finished"  # its window ended without a breach
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    STOPPED = "stopped"
    FAILED = "failed"  # the guard itself could not watch


class GuardBaseline(Model):
    p95_ms: float | None = None
    error_ratio: float | None = None
    requests: int = 0
    restarts: int = 0
    window_end: dt.datetime | None = None
    revision: int | None = None
    images: list[str] = Field(default_factory=list)


class GuardCarry(Model):
    """State that survives continue-as-new."""

    started_at: dt.datetime
    until: dt.datetime
    baseline: GuardBaseline
    polls: int = 0
    runs: int = 1
    health_failures: int = 0
    confirming_since: dt.datetime | None = None


class GuardRequest(Model):
    namespace: str = Field("default", pattern=NAME_PATTERN, max_length=63)
    deployment: str = Field(pattern=NAME_PATTERN, max_length=253)
    duration_seconds: int = Field(
        1800, ge=10, le=MAX_GUARD_SECONDS, description="how long to watch the release"
    )
    interval_seconds: float = Field(15.0, ge=1, le=600, description="seconds between polls")
    requested_by: str = Field("release-guard", min_length=1, max_length=200)
    release_at: dt.datetime | None = Field(
        None,
        description="when the release began; the baseline ends here (default: the guard's start)",
    )
    baseline_p95_ms: float | None = Field(None, gt=0, description="override the measured baseline")
    polls_per_run: int = Field(
        240, ge=1, le=5000, description="polls before continue-as-new bounds the history"
    )
    language: Literal["ja", "en"] = "ja"
    wait_for_data: bool = Field(
        True,
        description="with no whole minute of the service's data yet, wait for the first one; "
        "False: fail saying when it will be readable",
    )
    carry: GuardCarry | None = None

    @field_validator("release_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("release_at needs a time zone offset, e.g. 2026-01-16T12:00:00+09:00")
        return value


class BaselineRequest(ServiceRef):
    monitoring: MonitoringConfig
    release_at: dt.datetime | None = None
    data_since: dt.datetime | None = Field(
        None, description="the guard's start: before a whole minute after it, no data is no error"
    )


class WatchRequest(ServiceRef):
    health_path: str
    api_path: str
    monitoring: MonitoringConfig
    thresholds: GuardThresholds
    baseline: GuardBaseline
    interval_seconds: float
    until: dt.datetime
    max_polls: int = Field(ge=1)
    since: dt.datetime | None = Field(
        None, description="only whole minutes that began after this count (a hotfix's rollout)"
    )
    health_failures: int = 0
    confirming_since: dt.datetime | None = None

    @classmethod
    def guarding(cls, entry: ServiceEntry, baseline: GuardBaseline, **polling: Any) -> WatchRequest:
        """A watch of the catalog entry's service against the catalog's thresholds;
        `polling`: interval_seconds, until, max_polls (and, resuming a watch,
        health_failures and confirming_since)."""
        return cls.of(
            entry,
            health_path=entry.health_path,
            api_path=entry.api_check_path,
            monitoring=entry.monitoring,
            thresholds=entry.guard,
            baseline=baseline,
            **polling,
        )


class WatchReport(Model):
    polls: int
    at: dt.datetime
    evidence: Evidence
    verdict: Verdict
    metrics: ServiceMetrics | None = None
    health_failures: int = 0
    confirming_since: dt.datetime | None = None
    breach_at: dt.datetime | None = Field(
        None, description="first poll that saw the breach, when the verdict calls for a rollback"
    )
    window_over: bool = Field(False, description="the guard's time is up")
    seal: str = Field(
        "", description="the worker's HMAC over sealed, when the verdict calls for a rollback"
    )
    sealed: dict[str, Any] = Field(
        default_factory=dict, description="the breach facts the seal covers"
    )


class StopSignal(Model):
    by: str = Field(min_length=1, max_length=200)
    reason: str = Field("", max_length=2000)
    signed: SignedDecision | None = Field(
        None, description="required when the catalog has identities"
    )
    request_id: str = Field("", max_length=100)


class GuardStatus(Model):
    workflow_id: str
    namespace: str
    deployment: str
    phase: GuardPhase
    started_at: dt.datetime
    until: dt.datetime
    interval_seconds: float
    polls: int = 0
    runs: int = 1
    baseline: GuardBaseline | None = None
    last: WatchReport | None = None
    rollback_workflow_id: str | None = None
    rollback_severity: str | None = None
    rollback_phase: str | None = None
    pending: GateView | None = Field(
        None, description="what a stop must be signed over, when the catalog has identities"
    )
    refused_stops: list[str] = Field(
        default_factory=list, description="stops that did not count, and why"
    )
    message: str = ""


class GuardResult(Model):
    status: GuardStatus
