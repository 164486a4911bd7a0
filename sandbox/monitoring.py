"""A Cloud Monitoring emulator (gRPC `google.monitoring.v3.MetricService`:
ListTimeSeries, ListMetricDescriptors, ListMonitoredResourceDescriptors)
whose series are computed from the requests the sandbox's Service front ends
really answered, so the metrics show which version was serving when.

It serves what a GKE team really has (see `monitoring_rules.METRICS`): the
external Application Load Balancer's `https/request_count` and
`https/total_latencies` on `https_lb_rule`, named the way GKE names an
Ingress's objects, and the app's own Prometheus counter and histogram on
`prometheus_target`, one series per pod (an answer no pod gave, such as a 503
for want of a ready pod, is seen by the load balancer only).

Points are one per minute of metric time (`Clock.metric_time`) and become
visible `ingestion_delay_seconds` after their minute ends. Queries Google
refuses are refused the same way, INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from google.api import distribution_pb2
from google.cloud import monitoring_v3 as m
from google.protobuf import timestamp_pb2

from . import gke_names
from .kube.loadbalancer import ServedRequest
from .monitoring_rules import (
    ALIGN_PERCENTILES,
    GAUGES,
    LB_LATENCY,
    METRICS,
    PROM_LATENCY,
    REDUCE_PERCENTILES,
    RESOURCES,
    Aligner,
    InvalidArgument,
    Kind,
    Metric,
    Plan,
    Reducer,
    Type,
    Unimplemented,
    check_request,
    metric_descriptor,
    metric_for,
    parse_terms,
    plan,
    resource_descriptor,
)
from .pod_load import GaugeSeries

MINUTE = 60.0
PROM_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
LB_BUCKETS = distribution_pb2.Distribution.BucketOptions(
    exponential_buckets=distribution_pb2.Distribution.BucketOptions.Exponential(
        num_finite_buckets=66, growth_factor=1.4, scale=1.0
    )
)
PROM_BUCKET_OPTIONS = distribution_pb2.Distribution.BucketOptions(
    explicit_buckets=distribution_pb2.Distribution.BucketOptions.Explicit(bounds=list(PROM_BUCKETS))
)


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(round(seconds * 1e9)))
    return stamp


def percentile(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def labels_for(
    metric: Metric, served: ServedRequest, project: str
) -> tuple[dict[str, str], dict[str, str]] | None:
    """(resource labels, metric labels) of the series a served request counts in; None: not in this
    metric."""
    namespace, name = served.service.split("/", 1)
    if metric.resource == "https_lb_rule":
        metric_labels = {
            "response_code_class": str(served.status // 100 * 100),
            "response_code": str(served.status),
            "protocol": "HTTP/1.1",
            "cache_result": "DISABLED",
            "client_country": "Japan",
            "proxy_continent": "Asia",
        }
        resource = gke_names.https_lb_rule(
            project, namespace, name, served.port, exposed_by=served.exposed_by
        )
        return resource, metric_labels
    if not served.pod:
        return None  # no pod answered: the app's own metrics never saw it
    return gke_names.prometheus_target(project, namespace, name, served.pod), {
        "code": str(served.status),
        "method": served.method,
    }


def _bucket_counts(
    metric: Metric, values: list[float]
) -> tuple[distribution_pb2.Distribution.BucketOptions, list[int]]:
    if metric.type == PROM_LATENCY:
        counts = [0] * (len(PROM_BUCKETS) + 1)
        for v in values:
            counts[bisect.bisect_right(PROM_BUCKETS, v)] += 1
        return PROM_BUCKET_OPTIONS, counts
    exp = LB_BUCKETS.exponential_buckets
    counts = [0] * (exp.num_finite_buckets + 2)
    for v in values:
        i = (
            0
            if v < exp.scale
            else min(
                exp.num_finite_buckets + 1,
                1 + int(math.floor(math.log(v / exp.scale, exp.growth_factor))),
            )
        )
        counts[i] += 1
    return LB_BUCKETS, counts


def distribution(metric: Metric, values: list[float]) -> distribution_pb2.Distribution:
    if not values:
        return distribution_pb2.Distribution(count=0)
    mean = sum(values) / len(values)
    options, counts = _bucket_counts(metric, values)
    return distribution_pb2.Distribution(
        count=len(values),
        mean=mean,
        sum_of_squared_deviation=sum((v - mean) ** 2 for v in values),
        bucket_options=options,
        bucket_counts=counts,
    )


class MetricServiceEmulator:
    def __init__(
        self,
        traffic: Callable[[], Iterable[ServedRequest]],
        project: str = "tekutoko-prod",
        ingestion_delay_seconds: float = 10.0,
        now: Callable[[], float] = time.time,
        gauges: Callable[[str], Iterable[GaugeSeries]] | None = None,
        faults: Any = None,
    ) -> None:
        self.traffic = traffic
        self.gauges = gauges or (
            lambda kind: []
        )  # the sampled load's series of one kind (sandbox/pod_load.py)
        self.faults = faults  # the sandbox's FaultInjector: resource "timeSeries", verb "list"
        self.project = project
        self.ingestion_delay_seconds = (
            ingestion_delay_seconds  # metric seconds after a point's minute ends
        )
        self.now = now  # metric time
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        def unary(fn, request_type, response_type):
            return grpc.unary_unary_rpc_method_handler(
                self._guarded(fn),
                request_deserializer=request_type.deserialize,
                response_serializer=response_type.serialize,
            )

        handler = grpc.method_handlers_generic_handler(
            "google.monitoring.v3.MetricService",
            {
                "ListTimeSeries": unary(
                    self.list_time_series, m.ListTimeSeriesRequest, m.ListTimeSeriesResponse
                ),
                "ListMetricDescriptors": unary(
                    self.list_metric_descriptors,
                    m.ListMetricDescriptorsRequest,
                    m.ListMetricDescriptorsResponse,
                ),
                "ListMonitoredResourceDescriptors": unary(
                    self.list_resource_descriptors,
                    m.ListMonitoredResourceDescriptorsRequest,
                    m.ListMonitoredResourceDescriptorsResponse,
                ),
            },
        )
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0.5)

    def _guarded(self, fn):
        async def call(request, context: grpc.aio.ServicerContext):
            if self.faults is not None and fn.__name__ == "list_time_series":
                decision = self.faults.decide("timeSeries", "list")
                if decision.latency_ms:
                    await asyncio.sleep(decision.latency_ms / 1000)
                if decision.status is not None:
                    code = {
                        429: grpc.StatusCode.RESOURCE_EXHAUSTED,
                        500: grpc.StatusCode.INTERNAL,
                    }.get(decision.status, grpc.StatusCode.UNAVAILABLE)
                    await context.abort(
                        code, f"injected fault: the service answered {decision.status}"
                    )
            try:
                return fn(request)
            except InvalidArgument as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except Unimplemented as exc:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, str(exc))

        return call

    def _project(self, name: str) -> str:
        if not name.startswith("projects/") or name.count("/") != 1:
            raise InvalidArgument(f"name must be projects/PROJECT_ID_OR_NUMBER, got {name!r}")
        return name.removeprefix("projects/")

    # -- descriptors -------------------------------------------------------------------

    def list_metric_descriptors(
        self, request: m.ListMetricDescriptorsRequest
    ) -> m.ListMetricDescriptorsResponse:
        project = self._project(request.name)
        terms = parse_terms(request.filter)
        for term in terms:
            if term.key not in ("metric.type", "resource.type"):
                raise InvalidArgument(
                    f"filter: {term.key} cannot select metric descriptors (use metric.type or "
                    "resource.type)"
                )
        found = [
            metric_descriptor(project, d)
            for d in METRICS.values()
            if all(t.matches(d.type if t.key == "metric.type" else d.resource) for t in terms)
        ]
        return m.ListMetricDescriptorsResponse(metric_descriptors=found)

    def list_resource_descriptors(
        self, request: m.ListMonitoredResourceDescriptorsRequest
    ) -> m.ListMonitoredResourceDescriptorsResponse:
        project = self._project(request.name)
        terms = parse_terms(request.filter)
        for term in terms:
            if term.key != "resource.type":
                raise InvalidArgument(
                    f"filter: {term.key} cannot select monitored resource descriptors (use "
                    "resource.type)"
                )
        found = [
            resource_descriptor(project, r) for r in RESOURCES if all(t.matches(r) for t in terms)
        ]
        return m.ListMonitoredResourceDescriptorsResponse(resource_descriptors=found)

    # -- time series -------------------------------------------------------------------

    def _points(
        self, metric: Metric, terms, start: float, end: float
    ) -> tuple[dict[tuple, dict[float, list[float]]], dict[tuple, float]]:
        """Raw points: series key -> minute end -> samples, for minutes ending in (start, end]
        that are visible; and each series' first minute start (a cumulative's start)."""
        visible = self.now() - self.ingestion_delay_seconds
        series: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
        first: dict[tuple, float] = {}
        latency = metric.value_type == Type.DISTRIBUTION
        scale = 1000.0 if metric.unit == "s" else 1.0
        for served in self.traffic():
            minute_end = math.ceil(served.time / MINUTE) * MINUTE
            if minute_end > visible or minute_end > end:
                continue
            found = labels_for(metric, served, self.project)
            if found is None:
                continue
            resource, metric_labels = found
            fields = {
                "resource.type": metric.resource,
                **{f"resource.labels.{k}": v for k, v in resource.items()},
                **{f"metric.labels.{k}": v for k, v in metric_labels.items()},
            }
            if not all(t.matches(fields.get(t.key, "")) for t in terms if t.key != "metric.type"):
                continue
            key = (tuple(sorted(resource.items())), tuple(sorted(metric_labels.items())))
            first[key] = min(first.get(key, minute_end - MINUTE), minute_end - MINUTE)
            if minute_end > start:
                series[key][minute_end].append(served.latency_ms / scale if latency else 1.0)
        return series, first

    def _gauge_points(
        self, metric: Metric, terms, start: float, end: float
    ) -> tuple[dict[tuple, dict[float, list[float]]], dict[tuple, float]]:
        """Gauge series from the pods' sampled load: per minute, the mean of its samples
        (points end at their minute's end, visible after the ingestion delay). Only the
        series the filter names are read, each from its newest point back to `start`."""
        visible = self.now() - self.ingestion_delay_seconds
        filtering = [t for t in terms if t.key not in ("metric.type", "resource.type")]
        out: dict[tuple, dict[float, list[float]]] = {}
        first: dict[tuple, float] = {}
        for series in self.gauges(GAUGES[metric.type]):
            if not all(t.matches(series.fields.get(t.key, "")) for t in filtering):
                continue
            minutes: dict[float, list[float]] = {}
            for minute_end, total, count in reversed(series.minutes):
                if minute_end <= start:
                    break
                if minute_end <= visible and minute_end <= end:
                    minutes[minute_end] = [total / count]
            if minutes:
                key = (series.resource, series.labels)
                out[key] = minutes
                first[key] = min(minutes)
        return out, first

    def list_time_series(self, request: m.ListTimeSeriesRequest) -> m.ListTimeSeriesResponse:
        start, end = check_request(request)
        terms = parse_terms(request.filter)
        metric = metric_for(terms, self.project)
        how = plan(metric, request.aggregation)
        raw, first = (
            self._gauge_points(metric, terms, start, end)
            if metric.type in GAUGES
            else self._points(metric, terms, start, end)
        )
        headers_only = request.view == m.ListTimeSeriesRequest.TimeSeriesView.HEADERS
        out = []
        if how.aligner == Aligner.ALIGN_NONE:
            for (resource, labels), minutes in sorted(raw.items()):
                points = (
                    []
                    if headers_only
                    else self._raw_points(metric, minutes, first[(resource, labels)])
                )
                out.append(
                    self._series(metric, resource, labels, metric.kind, metric.value_type, points)
                )
            return m.ListTimeSeriesResponse(time_series=out)
        aligned = {key: self._align(metric, how, minutes, end) for key, minutes in raw.items()}
        for (resource, labels), buckets in sorted(self._reduce(how, aligned).items()):
            points = (
                []
                if headers_only
                else [
                    m.Point(
                        interval=m.TimeInterval(start_time=_ts(b - how.period), end_time=_ts(b)),
                        value=self._value(metric, how.out_type, v),
                    )
                    for b, v in sorted(buckets.items(), reverse=True)
                ]
            )
            out.append(
                self._series(
                    metric,
                    resource,
                    labels,
                    Kind.DELTA if how.aligned_kind == Kind.DELTA else Kind.GAUGE,
                    how.out_type,
                    points,
                )
            )
        return m.ListTimeSeriesResponse(time_series=out)

    def _series(
        self, metric: Metric, resource, labels, kind: int, value_type: int, points: list
    ) -> m.TimeSeries:
        return m.TimeSeries(
            metric={"type": metric.type, "labels": dict(labels)},
            resource={"type": metric.resource, "labels": dict(resource)},
            metric_kind=kind,
            value_type=value_type,
            unit=metric.unit,
            points=points,
        )

    def _raw_points(
        self, metric: Metric, minutes: dict[float, list[float]], series_start: float
    ) -> list[m.Point]:
        points, total, cumulative = [], [], metric.kind == Kind.CUMULATIVE
        for minute_end in sorted(minutes):
            total = total + minutes[minute_end] if cumulative else minutes[minute_end]
            begin = (
                series_start
                if cumulative
                else minute_end
                if metric.kind == Kind.GAUGE
                else minute_end - MINUTE
            )
            points.append(
                m.Point(
                    interval=m.TimeInterval(start_time=_ts(begin), end_time=_ts(minute_end)),
                    value=self._value(metric, metric.value_type, total),
                )
            )
        return points[::-1]

    @staticmethod
    def _align(
        metric: Metric, how: Plan, minutes: dict[float, list[float]], end: float
    ) -> dict[float, object]:
        buckets: dict[float, list[list[float]]] = defaultdict(list)
        for minute_end, samples in minutes.items():
            buckets[end - math.floor((end - minute_end) / how.period) * how.period].append(samples)
        aligned: dict[float, object] = {}
        for bucket_end, points in buckets.items():
            samples = [s for p in points for s in p]
            a = how.aligner
            if a in (Aligner.ALIGN_DELTA, Aligner.ALIGN_SUM):
                aligned[bucket_end] = (
                    samples if metric.value_type == Type.DISTRIBUTION else float(sum(samples))
                )
            elif a == Aligner.ALIGN_RATE:
                aligned[bucket_end] = sum(samples) / how.period
            elif a in ALIGN_PERCENTILES:
                aligned[bucket_end] = percentile(samples, ALIGN_PERCENTILES[a])
            elif a == Aligner.ALIGN_COUNT:
                aligned[bucket_end] = float(len(points))
            elif a in (Aligner.ALIGN_MIN, Aligner.ALIGN_MAX, Aligner.ALIGN_MEAN):
                sums = [float(sum(p)) for p in points]
                aligned[bucket_end] = (
                    min(sums)
                    if a == Aligner.ALIGN_MIN
                    else max(sums)
                    if a == Aligner.ALIGN_MAX
                    else sum(sums) / len(sums)
                )
            else:
                raise Unimplemented(
                    f"the sandbox does not compute perSeriesAligner {Aligner(a).name} (Google "
                    f"accepts it for {metric.type})"
                )
        return aligned

    @staticmethod
    def _reduce(
        how: Plan, aligned: dict[tuple, dict[float, object]]
    ) -> dict[tuple, dict[float, object]]:
        if how.reducer == Reducer.REDUCE_NONE:
            return aligned
        groups: dict[tuple, dict[float, list]] = defaultdict(lambda: defaultdict(list))
        for (resource, labels), buckets in aligned.items():
            key = (
                tuple(kv for kv in resource if f"resource.labels.{kv[0]}" in how.group_by),
                tuple(kv for kv in labels if f"metric.labels.{kv[0]}" in how.group_by),
            )
            for bucket_end, value in buckets.items():
                groups[key][bucket_end].append(value)
        reduced: dict[tuple, dict[float, object]] = {}
        for key, buckets in groups.items():
            reduced[key] = {}
            for bucket_end, values in buckets.items():
                dist = how.aligned_type == Type.DISTRIBUTION
                merged = [s for v in values for s in v] if dist else values
                r = how.reducer
                if r == Reducer.REDUCE_SUM:
                    reduced[key][bucket_end] = merged if dist else float(sum(values))
                elif r == Reducer.REDUCE_MEAN:
                    reduced[key][bucket_end] = sum(merged) / len(merged) if merged else 0.0
                elif r in REDUCE_PERCENTILES:
                    reduced[key][bucket_end] = percentile(merged, REDUCE_PERCENTILES[r])
                elif r == Reducer.REDUCE_COUNT:
                    reduced[key][bucket_end] = float(len(values))
                elif r in (Reducer.REDUCE_MIN, Reducer.REDUCE_MAX):
                    reduced[key][bucket_end] = (
                        min(values) if r == Reducer.REDUCE_MIN else max(values)
                    )
                else:
                    raise Unimplemented(
                        f"the sandbox does not compute crossSeriesReducer {Reducer(r).name}"
                    )
        return reduced

    @staticmethod
    def _value(metric: Metric, value_type: int, value) -> m.TypedValue:
        if value_type == Type.DISTRIBUTION:
            return m.TypedValue(distribution_value=distribution(metric, value))
        if isinstance(value, list):
            value = float(sum(value))
        if value_type == Type.INT64:
            return m.TypedValue(int64_value=int(round(value)))
        return m.TypedValue(double_value=float(value))


__all__ = ["LB_LATENCY", "MetricServiceEmulator", "distribution", "labels_for", "percentile"]
