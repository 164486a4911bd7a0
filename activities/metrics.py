"""Reading a service's error ratio and p95 latency from Cloud Monitoring with
the official client. Only complete windows are read: the newest, partial
points must not look like a recovery or an outage."""

from __future__ import annotations

import datetime as dt

from google.api_core import exceptions
from google.cloud import monitoring_v3
from temporalio import activity

from runbook.models import MetricsQuery, ServiceMetrics

from .errors import permanent


class MetricsActivities:
    def __init__(self, client: monitoring_v3.MetricServiceAsyncClient) -> None:
        self.client = client

    async def _series(self, query: MetricsQuery, metric_type: str, start: dt.datetime, end: dt.datetime, aggregation: dict) -> list:
        resource = query.config.resource_filter.format(namespace=query.namespace, service=query.service)
        request = {
            "name": f"projects/{query.project}",
            "filter": f'metric.type = "{metric_type}" AND {resource}',
            "interval": {"start_time": start, "end_time": end},
            "aggregation": {"alignment_period": {"seconds": int((end - start).total_seconds())}, **aggregation},
        }
        try:
            return [series async for series in await self.client.list_time_series(request=request)]
        except exceptions.InvalidArgument as exc:
            raise permanent(f"Cloud Monitoring refused the query for {metric_type}: {exc.message}; check the catalog's monitoring settings", "MetricQueryInvalid") from None
        except (exceptions.PermissionDenied, exceptions.Unauthenticated) as exc:
            raise permanent(f"Cloud Monitoring denied access ({exc.message}): the worker needs roles/monitoring.viewer", "MetricAccessDenied") from None

    @activity.defn(name="metrics.service_health")
    async def service_health(self, query: MetricsQuery) -> ServiceMetrics:
        end = query.end or dt.datetime.now(dt.UTC) - dt.timedelta(seconds=query.config.ingestion_delay_seconds)
        start = end - dt.timedelta(seconds=query.config.window_seconds)
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
