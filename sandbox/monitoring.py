"""A Cloud Monitoring emulator (gRPC `google.monitoring.v3.MetricService`,
ListTimeSeries) whose series are computed from the requests the sandbox's
Service front ends really answered, per time bucket: the metrics show which
version was serving when.

Serves the HTTP(S) load balancer metrics a GKE service behind one would have:
`loadbalancing.googleapis.com/https/request_count` (labels
`response_code_class`, `response_code`) and `.../https/total_latencies` (a
distribution in ms), on the `https_lb_rule` resource whose
`forwarding_rule_name` is `<namespace>-<service>`."""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import grpc
from google.api import distribution_pb2, metric_pb2
from google.cloud import monitoring_v3 as m
from google.protobuf import timestamp_pb2

from .kube.loadbalancer import ServedRequest

REQUEST_COUNT = "loadbalancing.googleapis.com/https/request_count"
TOTAL_LATENCIES = "loadbalancing.googleapis.com/https/total_latencies"
METRIC_TYPES = (REQUEST_COUNT, TOTAL_LATENCIES)
RESOURCE_TYPE = "https_lb_rule"
Aligner = m.Aggregation.Aligner
Reducer = m.Aggregation.Reducer
_TERM = re.compile(r'^\s*([\w.]+)\s*=\s*"([^"]*)"\s*$')
PERCENTILES = {
    Aligner.ALIGN_PERCENTILE_50: 50, Aligner.ALIGN_PERCENTILE_95: 95, Aligner.ALIGN_PERCENTILE_99: 99,
    Reducer.REDUCE_PERCENTILE_50: 50, Reducer.REDUCE_PERCENTILE_95: 95, Reducer.REDUCE_PERCENTILE_99: 99,
}


class InvalidArgument(Exception):
    pass


def parse_filter(text: str) -> dict[str, str]:
    terms = {}
    for part in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        match = _TERM.match(part)
        if not match:
            raise InvalidArgument(f"cannot parse filter term {part!r}: use key = \"value\" joined by AND")
        terms[match.group(1)] = match.group(2)
    if "metric.type" not in terms:
        raise InvalidArgument('the filter must name exactly one metric.type, e.g. metric.type = "loadbalancing.googleapis.com/https/request_count"')
    if terms["metric.type"] not in METRIC_TYPES:
        raise InvalidArgument(f"no metric of type {terms['metric.type']!r} in this project (known: {', '.join(METRIC_TYPES)})")
    if terms.get("resource.type", RESOURCE_TYPE) != RESOURCE_TYPE:
        raise InvalidArgument(f"metric {terms['metric.type']} is written on resource type {RESOURCE_TYPE}, not {terms['resource.type']}")
    return terms


def _labels(request: ServedRequest, project: str) -> tuple[dict[str, str], dict[str, str]]:
    namespace, name = request.service.split("/", 1)
    resource = {"project_id": project, "forwarding_rule_name": f"{namespace}-{name}", "backend_target_name": name, "url_map_name": f"{namespace}-{name}"}
    metric = {"response_code_class": str(request.status // 100 * 100), "response_code": str(request.status)}
    return resource, metric


def _percentile(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class MetricServiceEmulator:
    def __init__(self, traffic: Callable[[], Iterable[ServedRequest]], project: str = "tekutoko-prod", ingestion_delay_seconds: float = 0.0) -> None:
        self.traffic = traffic
        self.project = project
        self.ingestion_delay_seconds = ingestion_delay_seconds
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        handler = grpc.method_handlers_generic_handler("google.monitoring.v3.MetricService", {
            "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                self._list_time_series,
                request_deserializer=m.ListTimeSeriesRequest.deserialize,
                response_serializer=m.ListTimeSeriesResponse.serialize,
            ),
        })
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0.5)

    async def _list_time_series(self, request: m.ListTimeSeriesRequest, context: grpc.aio.ServicerContext) -> m.ListTimeSeriesResponse:
        try:
            return self.list_time_series(request)
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # abort raises; this keeps type checkers content

    def list_time_series(self, request: m.ListTimeSeriesRequest) -> m.ListTimeSeriesResponse:
        if not request.name.startswith("projects/"):
            raise InvalidArgument(f"name must be projects/PROJECT_ID, got {request.name!r}")
        terms = parse_filter(request.filter)
        start = request.interval.start_time.timestamp() if request.interval.start_time else 0.0
        end = request.interval.end_time.timestamp() if request.interval.end_time else time.time()
        if end <= start:
            raise InvalidArgument("interval.end_time must be after interval.start_time")
        visible_until = min(end, time.time() - self.ingestion_delay_seconds)
        agg = request.aggregation
        period = agg.alignment_period.total_seconds() if agg.alignment_period else 60.0
        if period <= 0:
            raise InvalidArgument("aggregation.alignment_period must be positive")
        metric_type = terms["metric.type"]
        # series key: (resource labels, metric labels) -> bucket end -> samples
        series: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
        for served in self.traffic():
            if not start < served.time <= visible_until:
                continue
            resource, metric = _labels(served, self.project)
            if any(resource.get(k.removeprefix("resource.labels."), "") != v for k, v in terms.items() if k.startswith("resource.labels.")):
                continue
            if any(metric.get(k.removeprefix("metric.labels."), "") != v for k, v in terms.items() if k.startswith("metric.labels.")):
                continue
            bucket_end = end - math.floor((end - served.time) / period) * period
            key = (tuple(sorted(resource.items())), tuple(sorted(metric.items())) if metric_type == REQUEST_COUNT else ())
            series[key][bucket_end].append(1.0 if metric_type == REQUEST_COUNT else served.latency_ms)
        grouped = self._reduce(series, agg)
        out = []
        for (resource, metric), buckets in sorted(grouped.items()):
            points = []
            for bucket_end in sorted(buckets, reverse=True):
                points.append(m.Point(
                    interval=m.TimeInterval(start_time=_ts(bucket_end - period), end_time=_ts(bucket_end)),
                    value=self._value(metric_type, buckets[bucket_end], agg, period),
                ))
            out.append(m.TimeSeries(
                metric={"type": metric_type, "labels": dict(metric)},
                resource={"type": RESOURCE_TYPE, "labels": dict(resource)},
                metric_kind=metric_pb2.MetricDescriptor.MetricKind.DELTA if agg.per_series_aligner in (Aligner.ALIGN_NONE, Aligner.ALIGN_DELTA) else metric_pb2.MetricDescriptor.MetricKind.GAUGE,
                value_type=self._value_type(metric_type, agg),
                points=points,
            ))
        return m.ListTimeSeriesResponse(time_series=out)

    @staticmethod
    def _reduce(series: dict, agg: m.Aggregation) -> dict:
        if agg.cross_series_reducer == Reducer.REDUCE_NONE:
            return series
        keep = [f.removeprefix("metric.labels.").removeprefix("resource.labels.") for f in agg.group_by_fields]
        merged: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
        for (resource, metric), buckets in series.items():
            key = (tuple(kv for kv in resource if kv[0] in keep), tuple(kv for kv in metric if kv[0] in keep))
            for bucket_end, samples in buckets.items():
                merged[key][bucket_end].extend(samples)
        return merged

    @staticmethod
    def _value_type(metric_type: str, agg: m.Aggregation):
        if metric_type == REQUEST_COUNT:
            return metric_pb2.MetricDescriptor.ValueType.DOUBLE if agg.per_series_aligner == Aligner.ALIGN_RATE else metric_pb2.MetricDescriptor.ValueType.INT64
        if agg.per_series_aligner in PERCENTILES or agg.cross_series_reducer in PERCENTILES:
            return metric_pb2.MetricDescriptor.ValueType.DOUBLE
        return metric_pb2.MetricDescriptor.ValueType.DISTRIBUTION

    @staticmethod
    def _value(metric_type: str, samples: list[float], agg: m.Aggregation, period: float) -> m.TypedValue:
        if metric_type == REQUEST_COUNT:
            if agg.per_series_aligner == Aligner.ALIGN_RATE:
                return m.TypedValue(double_value=len(samples) / period)
            return m.TypedValue(int64_value=len(samples))
        q = PERCENTILES.get(agg.cross_series_reducer) or PERCENTILES.get(agg.per_series_aligner)
        if q is not None:
            return m.TypedValue(double_value=_percentile(samples, q))
        mean = sum(samples) / len(samples)
        return m.TypedValue(distribution_value=distribution_pb2.Distribution(
            count=len(samples), mean=mean, sum_of_squared_deviation=sum((s - mean) ** 2 for s in samples),
        ))
