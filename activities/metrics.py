"""Reading a service's error ratio, p95 latency and open alerts from Cloud
Monitoring: metrics through the official gRPC client, alerts through the REST
`projects.alerts.list` (the gRPC client has no alerts service) with google-auth.
Only complete windows are read: the newest, partial points must not look like
a recovery or an outage."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aiohttp
from google.api_core import exceptions
from google.cloud import monitoring_v3
from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook.guard import MonitoringConfig
from runbook.models import AlertQuery, MetricsQuery, OpenAlert, OpenAlerts, ServiceMetrics

from .errors import permanent

REST_ENDPOINT = "https://monitoring.googleapis.com"
READ_SCOPE = "https://www.googleapis.com/auth/monitoring.read"


class Monitoring:
    """The worker's view of Cloud Monitoring. `credentials` None means anonymous
    (the sandbox's emulator); otherwise google-auth credentials refreshed as needed."""

    def __init__(self, client: monitoring_v3.MetricServiceAsyncClient, session: aiohttp.ClientSession, *,
                 project: str | None, rest_endpoint: str = REST_ENDPOINT, credentials: Any = None) -> None:
        self.client = client
        self.session = session
        self.project = project
        self.rest_endpoint = rest_endpoint.rstrip("/")
        self.credentials = credentials

    def project_for(self, config: MonitoringConfig) -> str | None:
        return config.project or self.project

    def query(self, config: MonitoringConfig, namespace: str, service: str, *, start: dt.datetime | None = None, end: dt.datetime | None = None) -> MetricsQuery | None:
        project = self.project_for(config)
        if project is None:
            return None
        return MetricsQuery(project=project, namespace=namespace, service=service, config=config, start=start, end=end)

    def alert_query(self, config: MonitoringConfig, namespace: str, service: str) -> AlertQuery | None:
        project = self.project_for(config)
        if project is None or not config.alerts:
            return None
        return AlertQuery(project=project, filter=config.alert_filter.format(namespace=namespace, service=service))

    # -- metrics -----------------------------------------------------------------------

    async def _series(self, query: MetricsQuery, metric_type: str, start: dt.datetime, end: dt.datetime, aggregation: dict) -> list:
        resource = query.config.resource_filter.format(namespace=query.namespace, service=query.service)
        request = {
            "name": f"projects/{query.project}",
            "filter": f'metric.type = "{metric_type}" AND {resource}',
            "interval": {"start_time": start, "end_time": end},
            "aggregation": {"alignment_period": {"seconds": max(1, int((end - start).total_seconds()))}, **aggregation},
        }
        try:
            return [series async for series in await self.client.list_time_series(request=request)]
        except exceptions.InvalidArgument as exc:
            raise permanent(f"Cloud Monitoring refused the query for {metric_type}: {exc.message}; check the catalog's monitoring settings", "MetricQueryInvalid") from None
        except (exceptions.PermissionDenied, exceptions.Unauthenticated) as exc:
            raise permanent(f"Cloud Monitoring denied access ({exc.message}): the worker needs roles/monitoring.viewer", "MetricAccessDenied") from None

    async def service_health(self, query: MetricsQuery) -> ServiceMetrics:
        end = query.end or dt.datetime.now(dt.UTC) - dt.timedelta(seconds=query.config.ingestion_delay_seconds)
        start = query.start or end - dt.timedelta(seconds=query.config.window_seconds)
        label = f"metric.labels.{query.config.class_label}"
        counts = await self._series(query, query.config.request_count_metric, start, end, {
            "per_series_aligner": "ALIGN_DELTA", "cross_series_reducer": "REDUCE_SUM", "group_by_fields": [label],
        })
        by_class: dict[str, int] = {}
        for series in counts:
            code_class = series.metric.labels.get(query.config.class_label, "")
            by_class[code_class] = by_class.get(code_class, 0) + sum(p.value.int64_value for p in series.points)
        total = sum(by_class.values())
        errors = by_class.get("500", 0)
        latency = await self._series(query, query.config.latency_metric, start, end, {
            "per_series_aligner": "ALIGN_DELTA", "cross_series_reducer": "REDUCE_PERCENTILE_95",
        })
        p95 = next((p.value.double_value for s in latency for p in s.points), None) if total else None
        return ServiceMetrics(window_start=start, window_end=end, requests=total, errors=errors,
                              error_ratio=(errors / total) if total else None, p95_ms=p95)

    # -- alerts ------------------------------------------------------------------------

    async def _headers(self) -> dict[str, str]:
        if self.credentials is None:
            return {}
        if not self.credentials.valid:
            from google.auth.transport.requests import Request

            await asyncio.to_thread(self.credentials.refresh, Request())
        return {"Authorization": f"Bearer {self.credentials.token}"}

    async def open_alerts(self, query: AlertQuery) -> OpenAlerts:
        wanted = 'state = "OPEN"' + (f" AND {query.filter}" if query.filter.strip() else "")
        url = f"{self.rest_endpoint}/v3/projects/{query.project}/alerts"
        found: list[OpenAlert] = []
        token = ""
        for _ in range(20):  # pages; an unbounded loop could spin on a server bug
            params = {"filter": wanted, "pageSize": "100", **({"pageToken": token} if token else {})}
            async with self.session.get(url, params=params, headers=await self._headers(), timeout=aiohttp.ClientTimeout(total=20)) as response:
                body = await response.json(content_type=None)
                if response.status in (400, 404):
                    raise permanent(f"Cloud Monitoring refused the alerts query ({response.status}): {_message(body)}; check the catalog's alert_filter and project", "AlertQueryInvalid")
                if response.status in (401, 403):
                    raise permanent(f"Cloud Monitoring denied reading alerts ({response.status}): the worker needs roles/monitoring.alertViewer", "AlertAccessDenied")
                if response.status >= 300:
                    raise ApplicationError(f"Cloud Monitoring answered {response.status} listing alerts; retrying", type="MonitoringTransient")
            for alert in body.get("alerts", []):
                found.append(OpenAlert(name=alert.get("name", ""), policy=(alert.get("policy") or {}).get("displayName", ""), opened=alert.get("openTime")))
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

    @activity.defn(name="metrics.service_health")
    async def service_health(self, query: MetricsQuery) -> ServiceMetrics:
        return await self.monitoring.service_health(query)

    @activity.defn(name="metrics.open_alerts")
    async def open_alerts(self, query: AlertQuery) -> OpenAlerts:
        return await self.monitoring.open_alerts(query)
