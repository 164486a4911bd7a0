"""The runbook's decision table: which evidence calls for an immediate
rollback, which for one after a look, and which for none.

Data corruption and security incidents are not in the table: people decide
those and start an `immediate` rollback themselves."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .enums import Severity
from .monitoring import (
    CUSTOM_REQUIRED,
    DEFAULTS,
    MIN_ALIGNMENT_SECONDS,
    PRESETS,
    MetricSource,
    Preset,
    whole_minutes,
)


class GuardThresholds(BaseModel):
    """Per-service thresholds; the defaults are the runbook's."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    immediate_error_ratio: float = Field(
        0.50, gt=0, le=1, description="error ratio above this: roll back within 5 minutes"
    )
    investigate_error_ratio: float = Field(
        0.10,
        gt=0,
        le=1,
        description="error ratio above this: roll back after a look, within 15 minutes",
    )
    latency_factor: float = Field(
        3.0,
        gt=1,
        description="p95 at or above this many times the pre-release baseline: investigate",
    )
    health_failures_in_a_row: int = Field(
        3, ge=1, description="consecutive failed health checks meaning the service is down"
    )
    restarts_in_window: int = Field(
        3, ge=1, description="pod restarts within the window meaning restarts are frequent"
    )
    pods_failing_severity: Literal["investigate", "immediate"] = Field(
        "investigate",
        description="promql: a release's pod that took traffic, then restarted, crash-looped or "
        "lost readiness (the runbook lists frequent restarts under investigate)",
    )
    min_requests: int = Field(
        20,
        ge=1,
        description="promql: fewer requests than this in a window are too few to judge the "
        "error ratio on",
    )


class MonitoringConfig(BaseModel):
    """Where a service's request and latency metrics live in Cloud Monitoring:
    a preset (`gke_l7`, `managed_prometheus`) or `custom`, each field below
    overriding the preset's default. No preset: the worker refuses to read
    metrics for the service rather than guess (see `runbook.monitoring`)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    preset: Preset | None = Field(
        None,
        description="gke_l7, managed_prometheus, custom or promql; none: metrics are not "
        "configured",
    )
    request_count_metric: str | None = Field(
        None, description="metric type counting requests; default: the preset's"
    )
    latency_metric: str | None = Field(
        None, description="distribution metric type of request latency; default: the preset's"
    )
    class_label: str | None = Field(
        None,
        description="metric label whose value starts with 5 for server errors (500 class or 5xx "
        "code)",
    )
    latency_unit: Literal["ms", "s"] | None = Field(
        None, description="unit of the latency distribution"
    )
    resource_filter: str | None = Field(
        None,
        description="added to each query; {namespace} and {service} are filled in; must match "
        "this service's series",
    )
    window_seconds: int = Field(
        60, description="how much traffic one reading covers: whole minutes, at least 60 s"
    )
    ingestion_delay_seconds: int | None = Field(
        None, ge=0, description="how long points take to become visible; default: the preset's"
    )
    scrape_interval_seconds: int | None = Field(
        None,
        ge=5,
        le=600,
        description="promql: the PodMonitoring's scrape interval; a reading is a rate over two "
        "of them (default 30)",
    )
    step_seconds: int | None = Field(
        None, ge=1, le=300, description="promql: the query_range step (default 10)"
    )
    project: str | None = Field(
        None,
        description="Cloud project holding the metrics; default: the worker's "
        "MODORU_MONITORING_PROJECT",
    )
    alerts: bool = Field(
        True, description="read open alerts (REST projects.alerts.list) for this service"
    )
    alert_filter: str | None = Field(
        None,
        description='selects this service\'s alerts (projects.alerts.list); state = "OPEN" is '
        "added",
    )
    alert_policy_filter: str | None = Field(
        None,
        description="selects this service's alerting policies (projects.alertPolicies.list); "
        "must match one",
    )

    @field_validator("window_seconds")
    @classmethod
    def _whole_minutes(cls, value: int) -> int:
        if not whole_minutes(value):
            raise ValueError(
                f"window_seconds must be whole minutes of at least {MIN_ALIGNMENT_SECONDS} s "
                f"(Cloud Monitoring's smallest alignment period), got {value}"
            )
        return value

    @model_validator(mode="after")
    def _promql_only(self) -> MonitoringConfig:
        if self.preset != "promql":
            given = [
                name
                for name in ("scrape_interval_seconds", "step_seconds")
                if getattr(self, name) is not None
            ]
            if given:
                raise ValueError(
                    f"monitoring {', '.join(given)} apply to preset promql only (preset is "
                    f"{self.preset}): Cloud Monitoring's time series are read in whole minutes"
                )
        return self

    @model_validator(mode="after")
    def _custom_complete(self) -> MonitoringConfig:
        if self.preset == "custom":
            missing = [name for name in CUSTOM_REQUIRED if getattr(self, name) is None]
            if self.alerts:
                missing += [
                    name
                    for name in ("alert_filter", "alert_policy_filter")
                    if getattr(self, name) is None
                ]
            if missing:
                raise ValueError(f"monitoring preset custom needs {', '.join(missing)}")
        return self

    def source(self) -> MetricSource:
        """The settings with the preset's defaults; ValueError when no preset was chosen."""
        if self.preset is None:
            raise ValueError(
                f"monitoring.preset is not set: choose one of {', '.join(PRESETS)} for this "
                "service "
                "(a LoadBalancer Service on GKE has no request metrics; gke_l7 needs an Ingress "
                "or Gateway)"
            )
        values = {
            **DEFAULTS[self.preset],
            **{
                k: v
                for k, v in self.model_dump().items()
                if v is not None and k in MetricSource.model_fields
            },
        }
        values.setdefault("alert_filter", "")
        values.setdefault("alert_policy_filter", "")
        return MetricSource(
            preset=self.preset, **{k: v for k, v in values.items() if k != "preset"}
        )


class RecoveryCriteria(BaseModel):
    """What the metrics must show after a rollback for it to count as verified."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    max_error_ratio: float = Field(0.01, ge=0, le=1, description="error ratio must stay below this")
    max_p95_ms: float = Field(500.0, gt=0, description="p95 latency must stay below this")
    no_open_alerts: bool = True
    pods_failing_severity: Literal["investigate", "immediate"] = Field(
        "investigate",
        description="promql: a release's pod that took traffic, then restarted, crash-looped or "
        "lost readiness (the runbook lists frequent restarts under investigate)",
    )
    min_requests: int = Field(
        20, ge=1, description="fewer requests since the rollback than this is too little to judge"
    )


class Evidence(BaseModel):
    """What the guard saw over one window. None: not measured (no data)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    error_ratio: float | None = Field(None, ge=0, le=1)
    baseline_error_ratio: float | None = Field(
        None, ge=0, le=1, description="the service's own error ratio before the release"
    )
    p95_ms: float | None = Field(None, ge=0)
    baseline_p95_ms: float | None = Field(None, gt=0)
    health_failures_in_a_row: int = Field(0, ge=0)
    restarts_in_window: int = Field(0, ge=0)
    api_check_failing: bool = False
    pods_failing: list[str] = Field(
        default_factory=list,
        description="the release's pods that took traffic, then restarted, crash-looped or "
        "lost readiness",
    )


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    severity: Severity | None  # None: no rollback called for
    reasons: list[str]
    missing: list[str] = Field(
        default_factory=list, description="evidence that could not be judged"
    )


def judge(evidence: Evidence, thresholds: GuardThresholds | None = None) -> Verdict:
    t = thresholds or GuardThresholds()
    immediate: list[str] = []
    investigate: list[str] = []
    missing: list[str] = []
    if evidence.health_failures_in_a_row >= t.health_failures_in_a_row:
        immediate.append(
            f"health check failed {evidence.health_failures_in_a_row} times in a row (service down)"
        )
    if evidence.error_ratio is None:
        missing.append("error ratio")
    else:
        # With a baseline, a release is judged only when it added errors of its own (more
        # than the investigate threshold above the service's usual ratio): a service that
        # always failed 5% of its calls is not rolled back for failing 12%. What it added
        # then counts at the runbook's thresholds as the ratio itself.
        ratio, baseline = evidence.error_ratio, evidence.baseline_error_ratio
        said = f"error ratio {ratio:.1%}"
        if baseline is not None and ratio - baseline <= t.investigate_error_ratio:
            pass
        elif ratio > t.immediate_error_ratio:
            immediate.append(f"{said} > {t.immediate_error_ratio:.0%}{_against(baseline)}")
        elif ratio > t.investigate_error_ratio:
            investigate.append(f"{said} > {t.investigate_error_ratio:.0%}{_against(baseline)}")
    if evidence.p95_ms is None or evidence.baseline_p95_ms is None:
        missing.append("p95 latency" if evidence.p95_ms is None else "p95 baseline")
    elif evidence.p95_ms >= t.latency_factor * evidence.baseline_p95_ms:
        investigate.append(
            f"p95 {evidence.p95_ms:.0f} ms is {evidence.p95_ms / evidence.baseline_p95_ms:.1f}x "
            f"the baseline {evidence.baseline_p95_ms:.0f} ms"
        )
    if evidence.restarts_in_window >= t.restarts_in_window:
        investigate.append(f"{evidence.restarts_in_window} pod restarts in the window")
    if evidence.api_check_failing:
        investigate.append("the API check is failing (a feature is broken)")
    if evidence.pods_failing:
        shown = ", ".join(evidence.pods_failing[:5])
        more = len(evidence.pods_failing) - 5
        said = f"pods restarting after taking traffic: {shown}" + (
            f" and {more} more" if more > 0 else ""
        )
        (immediate if t.pods_failing_severity == "immediate" else investigate).append(said)
    if immediate:
        return Verdict(
            severity=Severity.IMMEDIATE, reasons=immediate + investigate, missing=missing
        )
    if investigate:
        return Verdict(severity=Severity.INVESTIGATE, reasons=investigate, missing=missing)
    return Verdict(severity=None, reasons=[], missing=missing)


def _against(baseline: float | None) -> str:
    return f" (the baseline's {baseline:.1%} before the release)" if baseline is not None else ""


def judge_recovery(
    requests: int,
    error_ratio: float | None,
    p95_ms: float | None,
    open_alerts: list[str] | None,
    criteria: RecoveryCriteria,
) -> list[tuple[str, bool, str]]:
    """(criterion, met, detail) for each recovery criterion; too little data is
    not met, so silence never passes as health."""
    found: list[tuple[str, bool, str]] = []
    if requests < criteria.min_requests or error_ratio is None:
        found.append(
            (
                "error_ratio",
                False,
                f"only {requests} requests since the rollback; need {criteria.min_requests} to "
                "judge",
            )
        )
    else:
        ok = error_ratio < criteria.max_error_ratio
        over = (
            ""
            if ok
            else f", {error_ratio / criteria.max_error_ratio:.1f}x the limit"
            if criteria.max_error_ratio
            else ""
        )
        found.append(
            (
                "error_ratio",
                ok,
                f"error ratio {error_ratio:.2%} over {requests} requests ({'<' if ok else '>='} "
                f"{criteria.max_error_ratio:.0%}{over})",
            )
        )
    if p95_ms is None:
        found.append(("p95", False, "no latency data since the rollback"))
    else:
        ok = p95_ms < criteria.max_p95_ms
        over = "" if ok else f", {p95_ms - criteria.max_p95_ms:.0f} ms over"
        found.append(
            (
                "p95",
                ok,
                f"p95 {p95_ms:.0f} ms ({'<' if ok else '>='} {criteria.max_p95_ms:.0f} ms{over})",
            )
        )
    if criteria.no_open_alerts and open_alerts is not None:
        found.append(
            (
                "alerts",
                not open_alerts,
                "no open alert"
                if not open_alerts
                else f"{len(open_alerts)} open: {'; '.join(open_alerts)}",
            )
        )
    return found
