"""Reading a service's error ratio, p95 latency and open alerts from Cloud
Monitoring: metrics through the official gRPC client, alerts through the REST
`projects.alerts.list` (the gRPC client has no alerts service) with google-auth.

Every query keeps Google's rules: windows of whole minutes read with a 60-s
alignment period, ending at the newest minute older than the preset's
ingestion delay, so partial points never look like a recovery or an outage.
A filter that matches no time series, or no alerting policy, is a
configuration error and fails loudly: silence is never "healthy"."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import aiohttp
from google.api_core import exceptions
from google.cloud import monitoring_v3
from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook import activity_refs as refs
from runbook.guard import MonitoringConfig
from runbook.models import AlertQuery, MetricsQuery, OpenAlert, OpenAlerts, ServiceMetrics
from runbook.monitoring import (
    BACKEND_LABEL,
    MIN_ALIGNMENT_SECONDS,
    MetricSource,
    ceil_minute,
    fill,
    floor_minute,
    is_gke_backend_of,
    latest_window,
)
from runbook.verification import NO_DATA_YET, POLL_SECONDS, FirstMinute

from . import promql
from .errors import permanent
from .percentiles import distribution_percentile

REST_ENDPOINT = "https://monitoring.googleapis.com"
READ_SCOPE = "https://www.googleapis.com/auth/monitoring.read"
EXISTS_LOOKBACK = dt.timedelta(hours=24)  # a filter with no series in a day matches nothing
HINTS = {
    "gke_l7": "is the Service exposed by a GKE Ingress or Gateway? A type: LoadBalancer Service "
    "is a passthrough load balancer with no request metrics",
    "managed_prometheus": "does a PodMonitoring named after the service scrape its pods, and "
    "does the app export http_requests_total and the histogram?",
    "custom": "check the metric types and the filter against Metrics Explorer",
    "promql": promql.HINT,
}


class MetricClock:
    """The clock queries are built on. Production: the wall clock. The sandbox's
    emulators keep metric time, `epoch + (wall - epoch) * speed`, so its minutes
    pass faster; the queries themselves are the same."""

    def __init__(self, epoch: float | None = None, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("metric clock speed must be positive")
        self.epoch = time.time() if epoch is None else epoch
        self.speed = speed

    def at(self, wall: dt.datetime) -> dt.datetime:
        if self.speed == 1.0:
            return wall
        return dt.datetime.fromtimestamp(
            self.epoch + (wall.timestamp() - self.epoch) * self.speed, dt.UTC
        )

    def now(self) -> dt.datetime:
        return self.at(dt.datetime.now(dt.UTC))

    def wall(self, metric: dt.datetime) -> dt.datetime:
        """The wall time at which this clock shows `metric`."""
        if self.speed == 1.0:
            return metric
        return dt.datetime.fromtimestamp(
            self.epoch + (metric.timestamp() - self.epoch) / self.speed, dt.UTC
        )


class Monitoring:
    """The worker's view of Cloud Monitoring. `credentials` None means anonymous
    (the sandbox's emulator); otherwise google-auth credentials refreshed as needed."""

    def __init__(
        self,
        client: monitoring_v3.MetricServiceAsyncClient,
        session: aiohttp.ClientSession,
        *,
        project: str | None,
        rest_endpoint: str = REST_ENDPOINT,
        credentials: Any = None,
        clock: MetricClock | None = None,
    ) -> None:
        self.client = client
        self.session = session
        self.project = project
        self.rest_endpoint = rest_endpoint.rstrip("/")
        self.credentials = credentials
        self.clock = clock or MetricClock()

    def project_for(self, config: MonitoringConfig) -> str | None:
        return config.project or self.project

    @staticmethod
    def source(config: MonitoringConfig) -> MetricSource:
        try:
            return config.source()
        except ValueError as exc:
            raise permanent(
                f"{exc}; fix the service's monitoring settings in the catalog",
                "MonitoringNotConfigured",
            ) from None

    def query(
        self,
        config: MonitoringConfig,
        namespace: str,
        service: str,
        *,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        data_since: dt.datetime | None = None,
        replica_set: str | None = None,
        must_match: bool = True,
    ) -> MetricsQuery | None:
        project = self.project_for(config)
        if project is None:
            return None
        return MetricsQuery(
            project=project,
            namespace=namespace,
            service=service,
            config=config,
            start=start,
            end=end,
            data_since=data_since,
            replica_set=replica_set,
            must_match=must_match,
        )

    def alert_query(
        self, config: MonitoringConfig, namespace: str, service: str
    ) -> AlertQuery | None:
        project = self.project_for(config)
        if project is None or not config.alerts:
            return None
        source = self.source(config)
        return AlertQuery(
            project=project,
            filter=fill(source.alert_filter, namespace, service),
            policy_filter=fill(source.alert_policy_filter, namespace, service),
        )

    def latest_window(self, config: MonitoringConfig) -> tuple[dt.datetime, dt.datetime]:
        source = self.source(config)
        if source.promql:
            return promql.latest_window(self, source)
        return latest_window(
            self.clock.now(), source.ingestion_delay_seconds, config.window_seconds
        )

    # -- metrics -----------------------------------------------------------------------

    async def _list(
        self, request: dict[str, Any], metric_type: str
    ) -> list[monitoring_v3.TimeSeries]:
        try:
            return [series async for series in await self.client.list_time_series(request=request)]
        except exceptions.InvalidArgument as exc:
            raise permanent(
                f"Cloud Monitoring refused the query for {metric_type}: {exc.message}; check the "
                "catalog's monitoring settings",
                "MetricQueryInvalid",
            ) from None
        except (exceptions.PermissionDenied, exceptions.Unauthenticated) as exc:
            raise permanent(
                f"Cloud Monitoring denied access ({exc.message}): the worker needs "
                "roles/monitoring.viewer",
                "MetricAccessDenied",
            ) from None

    async def _series(
        self,
        query: MetricsQuery,
        metric_type: str,
        resource: str,
        start: dt.datetime,
        end: dt.datetime,
        group_by: list[str],
    ) -> list[monitoring_v3.TimeSeries]:
        """Per-minute deltas summed across series: exactly what production is sent."""
        return await self._list(
            {
                "name": f"projects/{query.project}",
                "filter": f'metric.type = "{metric_type}" AND {resource}',
                "interval": {"start_time": start, "end_time": end},
                "aggregation": {
                    "alignment_period": {"seconds": MIN_ALIGNMENT_SECONDS},
                    "per_series_aligner": "ALIGN_DELTA",
                    "cross_series_reducer": "REDUCE_SUM",
                    "group_by_fields": group_by,
                },
            },
            metric_type,
        )

    @staticmethod
    def _group_by(source: MetricSource, fields: list[str]) -> list[str]:
        """With GKE's backend naming, one series per backend service, so each
        one's name can be checked against the Service before it is counted."""
        return [*fields, f"resource.labels.{BACKEND_LABEL}"] if source.checks_backends() else fields

    @staticmethod
    def _owned(
        source: MetricSource, query: MetricsQuery, found: list[monitoring_v3.TimeSeries]
    ) -> tuple[list[monitoring_v3.TimeSeries], set[str]]:
        """The series of this Service's backends, and the names of other
        Services' backends the regex also matched (trimmed names can coincide)."""
        if not source.checks_backends():
            return found, set()
        kept, others = [], set()
        for series in found:
            name = series.resource.labels.get(BACKEND_LABEL, "")
            if is_gke_backend_of(name, query.namespace, query.service):
                kept.append(series)
            else:
                others.add(name)
        return kept, others

    async def _must_match(
        self,
        query: MetricsQuery,
        source: MetricSource,
        metric_type: str,
        resource: str,
        end: dt.datetime,
    ) -> None:
        """No series in the window: fine if the service was quiet, a configuration
        error if the filter matches no series of this metric at all."""
        found, others = self._owned(
            source,
            query,
            await self._list(
                {
                    "name": f"projects/{query.project}",
                    "filter": f'metric.type = "{metric_type}" AND {resource}',
                    "interval": {"start_time": end - EXISTS_LOOKBACK, "end_time": end},
                    "view": "HEADERS",
                },
                metric_type,
            ),
        )
        if not found and query.data_since is not None:
            first = FirstMinute.after(
                self.clock.at(query.data_since), source.ingestion_delay_seconds
            )
            if self.clock.now() < first.readable_at + dt.timedelta(seconds=POLL_SECONDS):
                raise ApplicationError(
                    f"no whole minute of data yet: the first one ends at {first.end:%H:%M:%S} UTC "
                    f"and is readable at {first.readable_at:%H:%M:%S} UTC",
                    self.clock.wall(first.readable_at).isoformat(),
                    type=NO_DATA_YET,
                    non_retryable=True,
                )
        if not found:
            elsewhere = (
                f" (it matched only other Services' backends: {', '.join(sorted(others))})"
                if others
                else ""
            )
            raise permanent(
                f"monitoring: no time series of {metric_type} matches {resource!r} in project "
                f"{query.project} over the last 24 hours{elsewhere} "
                f"(preset {source.preset}; {HINTS[source.preset]}). A filter that matches nothing "
                "is a configuration error, not a healthy "
                "service: fix monitoring.preset or monitoring.resource_filter for "
                f"{query.namespace}/{query.service} in the catalog",
                "MetricFilterMatchesNothing",
            )

    async def service_health(self, query: MetricsQuery) -> ServiceMetrics:
        source = self.source(query.config)
        if source.promql:
            return await promql.service_health(self, query, source)
        latest_start, latest_end = latest_window(
            self.clock.now(), source.ingestion_delay_seconds, query.config.window_seconds
        )
        end = floor_minute(query.end) if query.end else latest_end
        start = ceil_minute(query.start) if query.start else end - (latest_end - latest_start)
        if end <= start:  # not one complete minute yet
            return ServiceMetrics(
                window_start=start,
                window_end=end,
                requests=0,
                errors=0,
                error_ratio=None,
                p95_ms=None,
            )
        resource = source.filter_for(query.namespace, query.service)
        counts, _ = self._owned(
            source,
            query,
            await self._series(
                query,
                source.request_count_metric,
                resource,
                start,
                end,
                self._group_by(source, [f"metric.labels.{source.class_label}"]),
            ),
        )
        if not counts:
            await self._must_match(query, source, source.request_count_metric, resource, end)
        total = errors = 0
        for series in counts:
            n = round(sum(p.value.int64_value or p.value.double_value for p in series.points))
            total += n
            if series.metric.labels.get(source.class_label, "").startswith("5"):
                errors += n
        p95 = None
        if total:
            latency, _ = self._owned(
                source,
                query,
                await self._series(
                    query, source.latency_metric, resource, start, end, self._group_by(source, [])
                ),
            )
            if not latency:
                await self._must_match(query, source, source.latency_metric, resource, end)
            p95 = distribution_percentile(
                [p.value.distribution_value for s in latency for p in s.points], 95
            )
            if p95 is not None and source.latency_unit == "s":
                p95 *= 1000.0
        return ServiceMetrics(
            window_start=start,
            window_end=end,
            requests=total,
            errors=errors,
            error_ratio=(errors / total) if total else None,
            p95_ms=p95,
        )

    async def gauge_minutes(
        self,
        project: str,
        metric_type: str,
        filter_: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        reducer: str = "REDUCE_MAX",
    ) -> list[float]:
        """One value per minute in (start, end]: each series' one-minute mean
        (ALIGN_MEAN, 60 s), combined across series by `reducer` (the busiest
        container with REDUCE_MAX, a database instance's total with REDUCE_SUM)."""
        found = await self._list(
            {
                "name": f"projects/{project}",
                "filter": filter_,
                "interval": {"start_time": start, "end_time": end},
                "aggregation": {
                    "alignment_period": {"seconds": MIN_ALIGNMENT_SECONDS},
                    "per_series_aligner": "ALIGN_MEAN",
                    "cross_series_reducer": reducer,
                },
            },
            metric_type,
        )
        return [
            p.value.double_value
            if p.value.double_value or not p.value.int64_value
            else float(p.value.int64_value)
            for series in found
            for p in series.points
        ]

    # -- alerts ------------------------------------------------------------------------

    async def _headers(self) -> dict[str, str]:
        if self.credentials is None:
            return {}
        if not self.credentials.valid:
            from google.auth.transport.requests import Request

            await asyncio.to_thread(self.credentials.refresh, Request())
        return {"Authorization": f"Bearer {self.credentials.token}"}

    async def _get(self, path: str, params: dict[str, str], what: str) -> dict[str, Any]:
        url = f"{self.rest_endpoint}/v3/projects/{path}"
        async with self.session.get(
            url,
            params=params,
            headers=await self._headers(),
            timeout=aiohttp.ClientTimeout(total=20),
        ) as response:
            body = await response.json(content_type=None)
            if response.status in (400, 404):
                raise permanent(
                    f"Cloud Monitoring refused the {what} query ({response.status}): "
                    f"{_message(body)}; check the catalog's "
                    "monitoring."
                    f"{'alert_policy_filter' if what == 'alert policies' else 'alert_filter'} "
                    "and project",
                    "AlertQueryInvalid",
                )
            if response.status in (401, 403):
                raise permanent(
                    f"Cloud Monitoring denied reading {what} ({response.status}): the worker "
                    "needs roles/monitoring.alertViewer",
                    "AlertAccessDenied",
                )
            if response.status >= 300:
                raise ApplicationError(
                    f"Cloud Monitoring answered {response.status} listing {what}; retrying",
                    type="MonitoringTransient",
                )
        return body if isinstance(body, dict) else {}

    async def check_alert_policies(self, query: AlertQuery) -> None:
        """With no policy behind the filter, "no open alert" would pass for the wrong reason."""
        if not query.policy_filter.strip():
            return
        body = await self._get(
            f"{query.project}/alertPolicies",
            {"filter": query.policy_filter, "pageSize": "1"},
            "alert policies",
        )
        if not body.get("alertPolicies"):
            raise permanent(
                f"monitoring.alert_policy_filter {query.policy_filter!r} matches no alerting "
                f"policy in project {query.project}: with no policy, "
                '"no open alert" would pass for the wrong reason. Label the service\'s policies '
                "(userLabels namespace and service), "
                "set monitoring.alert_policy_filter, or set monitoring.alerts: false",
                "AlertPolicyMatchesNothing",
            )

    async def open_alerts(self, query: AlertQuery) -> OpenAlerts:
        await self.check_alert_policies(query)
        wanted = 'state = "OPEN"' + (f" AND {query.filter}" if query.filter.strip() else "")
        found: list[OpenAlert] = []
        token = ""
        for _ in range(20):  # pages; an unbounded loop could spin on a server bug
            params = {
                "filter": wanted,
                "pageSize": "100",
                **({"pageToken": token} if token else {}),
            }
            body = await self._get(f"{query.project}/alerts", params, "alerts")
            for alert in body.get("alerts", []):
                found.append(
                    OpenAlert(
                        name=alert.get("name", ""),
                        policy=(alert.get("policy") or {}).get("displayName", ""),
                        opened=alert.get("openTime"),
                    )
                )
            token = body.get("nextPageToken", "")
            if not token:
                break
        return OpenAlerts(alerts=found)


def _message(body: Any) -> str:
    if isinstance(body, dict):
        return (body.get("error") or {}).get("message", "") or "no message"
    return "no message"


class MetricsActivities:
    def __init__(self, monitoring: Monitoring) -> None:
        self.monitoring = monitoring

    @activity.defn(name=refs.SERVICE_HEALTH.name)
    async def service_health(self, query: MetricsQuery) -> ServiceMetrics:
        return await self.monitoring.service_health(query)

    @activity.defn(name=refs.OPEN_ALERTS.name)
    async def open_alerts(self, query: AlertQuery) -> OpenAlerts:
        return await self.monitoring.open_alerts(query)
