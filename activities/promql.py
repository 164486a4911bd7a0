"""Reading a service's error ratio and p95 latency in PromQL from Managed
Service for Prometheus: `POST {rest}/v1/projects/{project}/location/global/
prometheus/api/v1/query_range` (monitoring.v1.json's
`projects.location.prometheus.api.v1.query_range`, a JSON QueryRangeRequest)
with the worker's Google credentials, as every Cloud Monitoring REST call.

A reading is a rate over the last two scrape intervals (two samples of every
pod at least), evaluated at the newest moment whose samples are readable (now
less the ingestion delay, so the rate is not extrapolated over samples not
yet written). The query asks for the last `step` seconds at that resolution
and the newest point is judged; each poll covers the window that ends then.

Counts are `rate x window`: Prometheus's estimate of the requests in the
window, good enough to tell a window with too little traffic to judge."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from typing import TYPE_CHECKING, Any

import aiohttp
from temporalio.exceptions import ApplicationError

from runbook.models import MetricsQuery, ServiceMetrics
from runbook.monitoring import MetricSource, fill
from runbook.verification import NO_DATA_YET

from .errors import permanent

if TYPE_CHECKING:
    from .metrics import Monitoring

QUERY_RANGE = "/v1/projects/{project}/location/global/prometheus/api/v1/query_range"
EXISTS_RANGE = "1h"  # a selector with no sample in an hour matches nothing
HINT = (
    "does a PodMonitoring named after the service scrape its pods, and does the app export "
    "http_requests_total{code} and the http_request_duration_seconds histogram?"
)


def queries(
    source: MetricSource,
    namespace: str,
    service: str,
    range_: str,
    replica_set: str | None = None,
) -> tuple[str, str]:
    """The request rate by status code and the p95 latency, over `range_`; with
    `replica_set`, of its pods only (named `{replica_set}-{suffix}`)."""
    labels = fill(source.resource_filter, namespace, service)
    if replica_set:
        escaped = replica_set.replace(".", r"\\.")  # a regex in a PromQL string: \\. is a dot
        labels += f',pod=~"{escaped}-[a-z0-9]+"'

    by_code = (
        f"sum by ({source.class_label}) (rate({source.request_count_metric}{{{labels}}}[{range_}]))"
    )
    p95 = (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate({source.latency_metric}_bucket{{{labels}}}[{range_}])))"
    )
    return by_code, p95


def readable_end(monitoring: Monitoring, source: MetricSource) -> dt.datetime:
    return monitoring.clock.now() - dt.timedelta(seconds=source.ingestion_delay_seconds)


def latest_window(monitoring: Monitoring, source: MetricSource) -> tuple[dt.datetime, dt.datetime]:
    end = readable_end(monitoring, source)
    return end - dt.timedelta(seconds=source.promql_window_seconds()), end


def _stamp(at: dt.datetime) -> str:
    return f"{at.timestamp():.3f}"


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


async def query_range(
    monitoring: Monitoring,
    project: str,
    query: str,
    start: dt.datetime,
    end: dt.datetime,
    step: int,
) -> list[dict[str, Any]]:
    """The matrix's series; permanent errors for a query refused or access denied."""
    url = monitoring.rest_endpoint + QUERY_RANGE.format(project=project)
    body = {"query": query, "start": _stamp(start), "end": _stamp(end), "step": f"{step}s"}
    async with monitoring.session.post(
        url,
        json=body,
        headers=await monitoring._headers(),
        timeout=aiohttp.ClientTimeout(total=20),
    ) as response:
        payload = await response.json(content_type=None)
        message = _message(payload)
        if response.status == 400:
            raise permanent(
                f"Managed Service for Prometheus refused the query {query!r}: {message}; check "
                "the catalog's monitoring settings (preset promql)",
                "MetricQueryInvalid",
            )
        if response.status in (401, 403):
            raise permanent(
                f"Cloud Monitoring denied the PromQL query ({response.status}: {message}): the "
                "worker needs roles/monitoring.viewer",
                "MetricAccessDenied",
            )
        if response.status == 404:
            raise permanent(
                f"Cloud Monitoring has no project {project!r} ({message}): set monitoring.project "
                "or MODORU_MONITORING_PROJECT",
                "MetricQueryInvalid",
            )
        if response.status >= 300 or not isinstance(payload, dict):
            raise ApplicationError(
                f"Managed Service for Prometheus answered {response.status} to a query; retrying",
                type="MonitoringTransient",
            )
    if payload.get("status") != "success":
        raise ApplicationError(
            f"Managed Service for Prometheus answered {message}; retrying",
            type="MonitoringTransient",
        )
    return list((payload.get("data") or {}).get("result") or [])


def _message(payload: Any) -> str:
    if isinstance(payload, dict):
        if isinstance(payload.get("error"), str):
            return f"{payload.get('errorType', 'error')}: {payload['error']}"
        return (payload.get("error") or {}).get("message", "") or "no message"
    return "no message"


def newest(series: list[dict[str, Any]]) -> dict[str, float]:
    """Each series' value at the newest evaluation time any of them has, keyed by its
    labels' values joined (the matrix is read at its last point)."""
    last = max((float(s["values"][-1][0]) for s in series if s.get("values")), default=None)
    found: dict[str, float] = {}
    for s in series:
        for at, value in s.get("values") or []:
            number = _number(value)
            if float(at) == last and number is not None:
                found[",".join(s.get("metric", {}).values())] = number
    return found


async def service_health(
    monitoring: Monitoring, query: MetricsQuery, source: MetricSource
) -> ServiceMetrics:
    window = dt.timedelta(seconds=source.promql_window_seconds())
    latest = readable_end(monitoring, source)
    end = min(query.end, latest) if query.end else latest
    start = query.start if query.start else end - window
    seconds = (end - start).total_seconds()
    if seconds < window.total_seconds():  # fewer than two scrapes of every pod in it
        return ServiceMetrics(
            window_start=start, window_end=end, requests=0, errors=0, error_ratio=None
        )
    by_code, p95 = queries(
        source, query.namespace, query.service, f"{int(seconds)}s", query.replica_set
    )
    step = source.step_seconds
    since = end - dt.timedelta(seconds=step)
    codes, latency = await asyncio.gather(
        query_range(monitoring, query.project, by_code, since, end, step),
        query_range(monitoring, query.project, p95, since, end, step),
    )
    if not codes:
        # A watch's read of a new ReplicaSet's pods may come before they have two scrapes;
        # the baseline has checked that the service's series exist.
        if query.must_match:
            await _must_match(monitoring, query, source, end, step)
        return ServiceMetrics(
            window_start=start, window_end=end, requests=0, errors=0, error_ratio=None
        )
    rates = newest(codes)
    total = sum(rates.values())
    failing = sum(v for code, v in rates.items() if code.startswith("5"))
    p95_seconds = next(iter(newest(latency).values()), None) if total > 0 else None
    return ServiceMetrics(
        window_start=start,
        window_end=end,
        requests=round(total * seconds),
        errors=round(failing * seconds),
        error_ratio=(failing / total) if total > 0 else None,
        p95_ms=p95_seconds * 1000.0 if p95_seconds is not None else None,
    )


async def _must_match(
    monitoring: Monitoring, query: MetricsQuery, source: MetricSource, end: dt.datetime, step: int
) -> None:
    """No series in the window: no data yet for a service whose guard just began, a
    configuration error when the selector matched nothing for an hour."""
    if query.data_since is not None:
        window = dt.timedelta(seconds=source.promql_window_seconds())
        first = monitoring.clock.at(query.data_since) + window
        readable = first + dt.timedelta(seconds=source.ingestion_delay_seconds)
        if monitoring.clock.now() < readable + window:
            raise ApplicationError(
                f"no Prometheus samples of the service yet: the first window ends at "
                f"{first:%H:%M:%S} UTC and is readable at {readable:%H:%M:%S} UTC",
                monitoring.clock.wall(readable + window).isoformat(),
                type=NO_DATA_YET,
                non_retryable=True,
            )
    by_code, _ = queries(source, query.namespace, query.service, EXISTS_RANGE)
    if await query_range(monitoring, query.project, by_code, end, end, step):
        return  # the series exist: the service was quiet
    raise permanent(
        f"monitoring: no Prometheus series matches {source.request_count_metric}"
        f"{{{fill(source.resource_filter, query.namespace, query.service)}}} in project "
        f"{query.project} over the last hour (preset promql; {HINT}). A selector that matches "
        "nothing is a configuration error, not a healthy service: fix monitoring.resource_filter "
        f"for {query.namespace}/{query.service} in the catalog",
        "MetricFilterMatchesNothing",
    )


class SecondRead:
    """An `immediate` breach read from a few scrapes is confirmed by a second read that holds
    a newer scrape of every pod, one scrape interval later, before the rollback starts."""

    def __init__(self, scrape_interval_seconds: float) -> None:
        self.gap = dt.timedelta(seconds=scrape_interval_seconds)
        self.first: dt.datetime | None = None

    def due(self, at: dt.datetime) -> bool:
        """Whether a confirming read is still due (the breach was not seen a gap ago)."""
        return self.first is None or at - self.first < self.gap

    def seen(self, at: dt.datetime) -> None:
        self.first = self.first or at

    def pause(self, at: dt.datetime) -> float:
        assert self.first is not None
        return max(0.5, (self.first + self.gap - at).total_seconds())
