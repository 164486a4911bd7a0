"""The runbook's post-checks after a rollback that the request path does not
show (ロールバック後の確認項目 2 and 3): CPU and memory within their normal
range, the database connection pool normal, and no errors in the logs.

Pure knowledge: the catalog's settings, the metric types and resources GKE and
Cloud SQL publish, the Cloud Logging filter, and the judgement of what was
read. The reading is done by activities (activities/verify.py)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# GKE system metrics (cloud.google.com/monitoring/api/metrics_kubernetes): GAUGE DOUBLE
# on k8s_container, sampled every 60 s, visible after up to 240 s (CPU) and 120 s (memory).
# Each is a fraction of the container's limit: a container without that limit has no series.
# Memory's has a label memory_type, evictable (e.g. page cache, which the kernel can reclaim)
# or non-evictable: what the container really holds on to is the non-evictable part.
CPU_METRIC = "kubernetes.io/container/cpu/limit_utilization"
MEMORY_METRIC = "kubernetes.io/container/memory/limit_utilization"
MEMORY_TYPE = "non-evictable"
LIMITED = {CPU_METRIC: "cpu", MEMORY_METRIC: "memory"}  # metric -> the limit it is a share of
NO_LIMIT = "not judged: no limit set (use request_utilization or set a limit)"
CONTAINER_RESOURCE = "k8s_container"
CONTAINER_LABELS = (
    "project_id",
    "location",
    "cluster_name",
    "namespace_name",
    "pod_name",
    "container_name",
)
# Cloud SQL (cloud.google.com/sql/docs/postgres/admin-api/metrics): GAUGE INT64 on
# cloudsql_database, label `database`, sampled every 60 s, visible after up to 165 s.
BACKENDS_METRIC = "cloudsql.googleapis.com/database/postgresql/num_backends"
DATABASE_RESOURCE = "cloudsql_database"
DATABASE_LABELS = ("project_id", "database_id", "region")
INGESTION_DELAY = {CPU_METRIC: 240, MEMORY_METRIC: 120, BACKENDS_METRIC: 165}
SEVERITIES = (
    "DEFAULT",
    "DEBUG",
    "INFO",
    "NOTICE",
    "WARNING",
    "ERROR",
    "CRITICAL",
    "ALERT",
    "EMERGENCY",
)


class PostChecks(BaseModel):
    """How a service is checked after a rollback beyond its request path. Each
    part can be switched off; a part the worker cannot read (no Cloud Monitoring
    or Cloud Logging access) is reported as skipped, never as passed silently."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    resources: bool = Field(
        True, description="CPU and memory limit utilization of the service's containers"
    )
    connection_pool: bool = Field(
        True,
        description="Cloud SQL num_backends against max_connections (needs cloudsql_instance or "
        "migration/pitr)",
    )
    logs: bool = Field(
        True,
        description="Cloud Logging entries with severity >= ERROR from the service's containers "
        "since the rollback",
    )
    container: str | None = Field(
        None, description="container_name to judge; default: every container of the service's pods"
    )
    cluster_name: str | None = Field(
        None,
        description="k8s_container cluster_name, when several clusters share namespace and pod "
        "names",
    )
    location: str | None = Field(
        None, description="k8s_container location (region or zone of the cluster)"
    )
    max_cpu_utilization: float = Field(
        0.8,
        gt=0,
        le=10,
        description="fallback limit on CPU limit_utilization (1.0 = the container's limit; may "
        "exceed 1)",
    )
    max_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="fallback limit on memory limit_utilization"
    )
    baseline_factor: float = Field(
        1.5,
        gt=1,
        le=10,
        description="with a baseline from before the incident: normal is at most this many times "
        "it",
    )
    baseline_margin: float = Field(
        0.05,
        ge=0,
        le=1,
        description="and at least this much above it (a tiny baseline must not flag noise)",
    )
    baseline_minutes: int = Field(
        30, ge=1, le=1440, description="how long a window before the release the baseline covers"
    )
    cloudsql_instance: str | None = Field(
        None,
        pattern=r"^[a-z][-a-z0-9]*$",
        description="default: migration or pitr cloudsql_instance",
    )
    cloudsql_project: str | None = Field(None, description="default: the monitoring project")
    max_connections: int = Field(
        100, ge=1, le=262143, description="the instance's max_connections flag (PostgreSQL's range)"
    )
    max_pool_ratio: float = Field(
        0.8,
        gt=0,
        le=1,
        description="num_backends above this share of max_connections is not normal",
    )
    max_error_entries: int = Field(
        0, ge=0, description="log entries with severity >= ERROR tolerated since the rollback"
    )
    min_severity: str = Field(
        "ERROR", description="the least severity counted as an error (Cloud Logging LogSeverity)"
    )
    log_filter: str = Field(
        "",
        max_length=2000,
        description='added to the Cloud Logging filter with AND, e.g. NOT textPayload:"healthz"',
    )
    log_min_seconds: int = Field(
        60,
        ge=0,
        le=3600,
        description="the logs are judged once they cover this long since the rollback",
    )
    evidence_messages: int = Field(
        5, ge=0, le=50, description="how many error messages are kept as evidence"
    )
    pod_log_lines: int = Field(
        50,
        ge=0,
        le=500,
        description="kubectl logs --tail of each pod kept in the evidence (0: none)",
    )
    ingestion_delay_seconds: int | None = Field(
        None, ge=0, le=3600, description="default: Google's published delay per metric"
    )

    @field_validator("min_severity")
    @classmethod
    def _severity(cls, value: str) -> str:
        if value.upper() not in SEVERITIES:
            raise ValueError(f"min_severity must be one of {', '.join(SEVERITIES)}, got {value!r}")
        return value.upper()

    @field_validator("log_filter")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value or value.count('"') % 2:
            raise ValueError("log_filter must be one line with balanced double quotes")
        return value.strip()

    def delay(self, metric: str) -> int:
        return (
            INGESTION_DELAY[metric]
            if self.ingestion_delay_seconds is None
            else self.ingestion_delay_seconds
        )


def container_filter(
    metric: str, checks: PostChecks, namespace: str, deployment: str, project: str
) -> str:
    """The service's containers. Pods of a Deployment are named `<deployment>-<hash>-<id>`."""
    terms = [
        f'metric.type = "{metric}"',
        f'resource.type = "{CONTAINER_RESOURCE}"',
        f'resource.labels.project_id = "{project}"',
        f'resource.labels.namespace_name = "{namespace}"',
        f'resource.labels.pod_name = starts_with("{deployment}-")',
    ]
    if metric == MEMORY_METRIC:
        terms.append(f'metric.labels.memory_type = "{MEMORY_TYPE}"')
    if checks.container:
        terms.append(f'resource.labels.container_name = "{checks.container}"')
    if checks.cluster_name:
        terms.append(f'resource.labels.cluster_name = "{checks.cluster_name}"')
    if checks.location:
        terms.append(f'resource.labels.location = "{checks.location}"')
    return " AND ".join(terms)


def pod_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers that run for a pod's life (its spec in the API's JSON form): the
    regular ones and native sidecars (init containers with `restartPolicy: Always`)."""
    return [*(spec.get("containers") or [])] + [
        c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"
    ]


def judged_containers(template: dict[str, Any], container: str | None = None) -> list[str]:
    """The names of the template's containers the checks judge: `container`, or all."""
    names = [c.get("name") for c in pod_containers(template)]
    return [n for n in names if n and (container is None or n == container)]


def without_limit(
    specs: list[dict[str, Any]], metric: str, container: str | None = None
) -> list[str]:
    """The containers judged for `metric` (`container`, or every container of the first
    spec: the Deployment's pod template) that none of `specs` gives the limit the metric
    is a share of. Later specs are the pods' own, which admission (a LimitRange's
    defaults) may have given a limit the template does not set. A `container` the
    template does not run is not named: its missing data says so."""
    resource = LIMITED[metric]
    names = judged_containers(specs[0] if specs else {}, container)

    def limited(name: str) -> bool:
        return any(
            ((c.get("resources") or {}).get("limits") or {}).get(resource)
            for spec in specs
            for c in pod_containers(spec)
            if c.get("name") == name
        )

    return [n for n in names if n and not limited(n)]


def no_limit_detail(what: str, containers: list[str]) -> str:
    """A check none of whose containers has the limit: neither passed nor failed."""
    return f"{NO_LIMIT}; no {what} limit on {', '.join(containers)}"


def no_limit_note(what: str, containers: list[str]) -> str:
    """Added to a check judged on some containers while others have no limit."""
    return f"; {', '.join(containers)} not judged: no {what} limit set" if containers else ""


def database_filter(project: str, instance_project: str, instance: str) -> str:
    return (
        f'metric.type = "{BACKENDS_METRIC}" AND resource.type = "{DATABASE_RESOURCE}" AND '
        f'resource.labels.project_id = "{instance_project or project}" '
        f'AND resource.labels.database_id = "{instance_project or project}:{instance}"'
    )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def log_filter(
    checks: PostChecks, namespace: str, selector: dict[str, str], since: dt.datetime
) -> str:
    """Cloud Logging's filter for the service's containers: GKE writes pod labels as
    `labels."k8s-pod/KEY"` on k8s_container entries."""
    terms = ['resource.type="k8s_container"', f"resource.labels.namespace_name={_quote(namespace)}"]
    terms += [f'labels."k8s-pod/{key}"={_quote(value)}' for key, value in sorted(selector.items())]
    terms += [
        f"severity>={checks.min_severity}",
        f'timestamp>="{since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}"',
    ]
    if checks.log_filter:
        terms.append(f"({checks.log_filter})")
    return " AND ".join(terms)


# -- judgement -------------------------------------------------------------------------


def utilization_limit(
    fallback: float, baseline: float | None, checks: PostChecks
) -> tuple[float, str]:
    """(limit, how it was set): from the baseline when there is one, else the catalog's."""
    if baseline is None:
        return fallback, f"catalog limit {fallback:.0%}"
    limit = max(baseline * checks.baseline_factor, baseline + checks.baseline_margin)
    return limit, f"baseline {baseline:.0%} before the incident, limit {limit:.0%}"


def judge_utilization(
    name: str,
    what: str,
    peak: float | None,
    baseline: float | None,
    fallback: float,
    checks: PostChecks,
) -> tuple[str, bool, str]:
    """`peak`: the busiest container's highest one-minute mean since the rollback."""
    if peak is None:
        return name, False, f"no {what} data since the rollback yet"
    limit, how = utilization_limit(fallback, baseline, checks)
    ok = peak <= limit
    over = "" if ok else f", {peak - limit:.0%} over"
    return name, ok, f"{what} peak {peak:.0%} of the limit ({'<=' if ok else '>'} {how}{over})"


def judge_pool(backends: int | None, checks: PostChecks) -> tuple[str, bool, str]:
    if backends is None:
        return "connection_pool", False, "no num_backends data since the rollback yet"
    allowed = checks.max_pool_ratio * checks.max_connections
    ok = backends <= allowed
    over = "" if ok else f", {backends - allowed:.0f} over"
    return (
        "connection_pool",
        ok,
        (
            f"{backends} of max_connections {checks.max_connections} in use "
            f"({backends / checks.max_connections:.0%}; "
            f"{'<=' if ok else '>'} {checks.max_pool_ratio:.0%}{over})"
        ),
    )


def judge_logs(
    count: int, messages: list[str], checks: PostChecks, *, more: bool = False
) -> tuple[str, bool, str]:
    ok = count <= checks.max_error_entries
    counted = f"{count}{'+' if more else ''}"
    head = f"{counted} log entries with severity >= {checks.min_severity} since the rollback"
    if ok:
        return (
            "logs",
            True,
            head
            + (f" (<= {checks.max_error_entries} tolerated)" if checks.max_error_entries else ""),
        )
    first = "; ".join(m[:200] for m in messages[: checks.evidence_messages])
    return (
        "logs",
        False,
        f"{head} (> {checks.max_error_entries} tolerated, "
        f"{count - checks.max_error_entries}{'+' if more else ''} over)"
        + (f"; first: {first}" if first else ""),
    )


_SECRET = re.compile(
    r"(?i)(bearer\s+|authorization[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?|"
    r"(?:password|passwd|secret|token|api[_-]?key|access[_-]?key)[\"']?\s*[:=]\s*[\"']?)([^\s\"',;&]+)"
)


def redact(line: str) -> str:
    """Log lines are kept as evidence in histories and notices: a credential an app
    happened to log (a bearer token, password=..., api_key: ...) is masked."""
    return _SECRET.sub(lambda m: m.group(1) + "[REDACTED]", line)
