"""What Cloud Monitoring's ListTimeSeries accepts, as the v3 protos document it
(google/monitoring/v3/common.proto, metric_service.proto), checked against the
descriptors the emulator publishes: the metric and monitored-resource types a
GKE service really has, with their real kinds, value types and labels.

Every refusal is INVALID_ARGUMENT with the offending field named."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from google.api import label_pb2, metric_pb2, monitored_resource_pb2
from google.cloud import monitoring_v3 as m

Kind = metric_pb2.MetricDescriptor.MetricKind
Type = metric_pb2.MetricDescriptor.ValueType
Aligner = m.Aggregation.Aligner
Reducer = m.Aggregation.Reducer
MAX_ALIGNMENT_SECONDS = 104 * 7 * 24 * 3600  # "104 weeks (2 years) for charts"
MIN_ALIGNMENT_SECONDS = 60


class InvalidArgument(Exception):
    pass


class Unimplemented(Exception):
    """A query Google accepts that the emulator does not compute."""


# -- descriptors ---------------------------------------------------------------------

HTTPS_LB_RULE = (
    "project_id",
    "region",
    "url_map_name",
    "forwarding_rule_name",
    "target_proxy_name",
    "matched_url_path_rule",
    "backend_target_name",
    "backend_target_type",
    "backend_name",
    "backend_type",
    "backend_scope",
    "backend_scope_type",
)
PROMETHEUS_TARGET = ("project_id", "location", "cluster", "namespace", "job", "instance")
K8S_CONTAINER = (
    "project_id",
    "location",
    "cluster_name",
    "namespace_name",
    "pod_name",
    "container_name",
)
CLOUDSQL_DATABASE = ("project_id", "database_id", "region")
RESOURCES = {
    "https_lb_rule": HTTPS_LB_RULE,
    "prometheus_target": PROMETHEUS_TARGET,
    "k8s_container": K8S_CONTAINER,
    "cloudsql_database": CLOUDSQL_DATABASE,
}
LB_LABELS = {
    "response_code_class": "INT64",
    "response_code": "INT64",
    "protocol": "STRING",
    "cache_result": "STRING",
    "client_country": "STRING",
    "proxy_continent": "STRING",
}
PROM_LABELS = {"code": "STRING", "method": "STRING"}


@dataclass(frozen=True)
class Metric:
    type: str
    kind: int
    value_type: int
    unit: str
    resource: str
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""


LB_COUNT = "loadbalancing.googleapis.com/https/request_count"
LB_LATENCY = "loadbalancing.googleapis.com/https/total_latencies"
PROM_COUNT = "prometheus.googleapis.com/http_requests_total/counter"
PROM_LATENCY = "prometheus.googleapis.com/http_request_duration_seconds/histogram"
CPU_LIMIT = "kubernetes.io/container/cpu/limit_utilization"
MEMORY_LIMIT = "kubernetes.io/container/memory/limit_utilization"
NUM_BACKENDS = "cloudsql.googleapis.com/database/postgresql/num_backends"
GAUGES = {
    CPU_LIMIT: "cpu",
    MEMORY_LIMIT: "memory",
    NUM_BACKENDS: "backends",
}  # metric type -> the sampler's name (sandbox/pod_load.py)
# The sampler writes a container's limit_utilization only when the container has that limit
# (the value is a fraction of it), and memory's as two series, memory_type evictable and
# non-evictable: a filter that does not pick one reads both.
METRICS = {
    d.type: d
    for d in (
        # GKE system metrics and Cloud SQL's, as Google's metrics lists publish them (kinds, value
        # types, labels).
        Metric(
            CPU_LIMIT,
            Kind.GAUGE,
            Type.DOUBLE,
            "1",
            "k8s_container",
            {},
            "The fraction of the CPU limit that is currently in use on the instance. This value "
            "can be greater than 1 as a container might be allowed to exceed its CPU limit.",
        ),
        Metric(
            MEMORY_LIMIT,
            Kind.GAUGE,
            Type.DOUBLE,
            "1",
            "k8s_container",
            {"memory_type": "STRING"},
            "The fraction of the memory limit that is currently in use on the instance. This "
            "value cannot exceed 1 as usage cannot exceed the limit.",
        ),
        Metric(
            NUM_BACKENDS,
            Kind.GAUGE,
            Type.INT64,
            "1",
            "cloudsql_database",
            {"database": "STRING"},
            "Number of connections to the Cloud SQL PostgreSQL instance.",
        ),
        Metric(
            LB_COUNT,
            Kind.DELTA,
            Type.INT64,
            "1",
            "https_lb_rule",
            LB_LABELS,
            "Requests served by the external Application Load Balancer.",
        ),
        Metric(
            LB_LATENCY,
            Kind.DELTA,
            Type.DISTRIBUTION,
            "ms",
            "https_lb_rule",
            LB_LABELS,
            "Time from the proxy receiving the request to the last response byte.",
        ),
        Metric(
            PROM_COUNT,
            Kind.CUMULATIVE,
            Type.DOUBLE,
            "1",
            "prometheus_target",
            PROM_LABELS,
            "http_requests_total, scraped by Managed Service for Prometheus.",
        ),
        Metric(
            PROM_LATENCY,
            Kind.CUMULATIVE,
            Type.DISTRIBUTION,
            "s",
            "prometheus_target",
            PROM_LABELS,
            "http_request_duration_seconds, a Prometheus histogram.",
        ),
    )
}


def metric_descriptor(project: str, d: Metric) -> metric_pb2.MetricDescriptor:
    labels = [
        label_pb2.LabelDescriptor(key=k, value_type=label_pb2.LabelDescriptor.ValueType.Value(v))
        for k, v in d.labels.items()
    ]
    return metric_pb2.MetricDescriptor(
        name=f"projects/{project}/metricDescriptors/{d.type}",
        type=d.type,
        metric_kind=d.kind,
        value_type=d.value_type,
        unit=d.unit,
        labels=labels,
        description=d.description,
        display_name=d.type.rsplit("/", 2)[-2 if d.type.startswith("prometheus") else -1],
        monitored_resource_types=[d.resource],
    )


def resource_descriptor(
    project: str, resource: str
) -> monitored_resource_pb2.MonitoredResourceDescriptor:
    return monitored_resource_pb2.MonitoredResourceDescriptor(
        name=f"projects/{project}/monitoredResourceDescriptors/{resource}",
        type=resource,
        display_name=resource,
        labels=[label_pb2.LabelDescriptor(key=k) for k in RESOURCES[resource]],
    )


# -- filters -------------------------------------------------------------------------

_TERM = re.compile(r"^\s*(?P<key>[\w.]+)\s*(?P<op>!=|=)\s*(?P<value>.+?)\s*$")
_FUNC = re.compile(
    r'^(?P<fn>monitoring\.regex\.full_match|starts_with|ends_with|has_substring)\(\s*"(?P<arg>(?:[^"\\]|\\.)*)"\s*\)$'
)
_STRING = re.compile(r'^"((?:[^"\\]|\\.)*)"$')
_NUMBER = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class Term:
    key: str  # metric.type, resource.type, metric.labels.K, resource.labels.K
    op: str
    fn: str  # "eq" or a function name
    arg: str

    def matches(self, value: str) -> bool:
        if self.fn == "eq":
            hit = value == self.arg
        elif self.fn == "starts_with":
            hit = value.startswith(self.arg)
        elif self.fn == "ends_with":
            hit = value.endswith(self.arg)
        elif self.fn == "has_substring":
            hit = self.arg in value
        else:
            hit = re.fullmatch(self.arg, value) is not None
        return hit if self.op == "=" else not hit


def parse_terms(text: str) -> list[Term]:
    """`key = value` terms joined by AND; values are strings, integers or one of
    the documented string functions (starts_with, ends_with, has_substring,
    monitoring.regex.full_match)."""
    terms = []
    for part in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        match = _TERM.match(part)
        if not match:
            raise InvalidArgument(
                f'filter: cannot parse {part.strip()!r}: use key = "value" terms joined by AND'
            )
        key = re.sub(r"^(metric|resource)\.label\.", r"\1.labels.", match["key"])
        value = match["value"]
        if (s := _STRING.match(value)) is not None:
            fn, arg = "eq", s.group(1).replace('\\"', '"')
        elif _NUMBER.match(value):
            fn, arg = "eq", value
        elif (f := _FUNC.match(value)) is not None:
            fn, arg = f["fn"], f["arg"].replace('\\"', '"')
            if fn == "monitoring.regex.full_match":
                try:
                    re.compile(arg)
                except re.error as exc:
                    raise InvalidArgument(
                        f"filter: {key}: invalid regular expression {arg!r}: {exc}"
                    ) from None
        else:
            raise InvalidArgument(f"filter: {key}: cannot parse the value {value!r}")
        if key not in ("metric.type", "resource.type") and not key.startswith(
            ("metric.labels.", "resource.labels.")
        ):
            raise InvalidArgument(
                f"filter: unknown field {key!r} (use metric.type, resource.type, "
                "metric.labels.KEY or resource.labels.KEY)"
            )
        terms.append(Term(key, match["op"], fn, arg))
    return terms


def metric_for(terms: list[Term], project: str) -> Metric:
    """The one metric a ListTimeSeries filter names, with its labels checked."""
    named = [t for t in terms if t.key == "metric.type"]
    if len(named) != 1 or named[0].fn != "eq" or named[0].op != "=":
        raise InvalidArgument(
            "filter: a time series filter must name exactly one metric type, e.g. metric.type = "
            '"loadbalancing.googleapis.com/https/request_count"'
        )
    metric = METRICS.get(named[0].arg)
    if metric is None:
        raise InvalidArgument(
            f'filter: Cannot find metric(s) that match type = "{named[0].arg}" in project '
            f"{project} (metricDescriptors.list shows the known types)"
        )
    for term in terms:
        if term.key == "resource.type" and not term.matches(metric.resource):
            raise InvalidArgument(
                f"filter: resource.type: metric {metric.type} is written on monitored resource "
                f"{metric.resource!r} only"
            )
        if (
            term.key.startswith("resource.labels.")
            and term.key.removeprefix("resource.labels.") not in RESOURCES[metric.resource]
        ):
            raise InvalidArgument(
                f"filter: {term.key}: monitored resource {metric.resource} has no label "
                f"{term.key.removeprefix('resource.labels.')!r} "
                f"(it has {', '.join(RESOURCES[metric.resource])})"
            )
        if (
            term.key.startswith("metric.labels.")
            and term.key.removeprefix("metric.labels.") not in metric.labels
        ):
            raise InvalidArgument(
                f"filter: {term.key}: metric {metric.type} has no label "
                f"{term.key.removeprefix('metric.labels.')!r} (it has {', '.join(metric.labels)})"
            )
    return metric


# -- aggregation ---------------------------------------------------------------------

NUMERIC = {Type.INT64, Type.DOUBLE, Type.MONEY}
ALIGN_PERCENTILES = {
    Aligner.ALIGN_PERCENTILE_99: 99,
    Aligner.ALIGN_PERCENTILE_95: 95,
    Aligner.ALIGN_PERCENTILE_50: 50,
    Aligner.ALIGN_PERCENTILE_05: 5,
}
REDUCE_PERCENTILES = {
    Reducer.REDUCE_PERCENTILE_99: 99,
    Reducer.REDUCE_PERCENTILE_95: 95,
    Reducer.REDUCE_PERCENTILE_50: 50,
    Reducer.REDUCE_PERCENTILE_05: 5,
}
# aligner -> (input kinds, input value types, output kind, output value type or None = same as
# input)
ALIGNERS: dict[int, tuple[set, set, int, int | None]] = {
    Aligner.ALIGN_DELTA: (
        {Kind.CUMULATIVE, Kind.DELTA},
        NUMERIC | {Type.DISTRIBUTION},
        Kind.DELTA,
        None,
    ),
    Aligner.ALIGN_RATE: ({Kind.CUMULATIVE, Kind.DELTA}, NUMERIC, Kind.GAUGE, Type.DOUBLE),
    Aligner.ALIGN_INTERPOLATE: ({Kind.GAUGE}, NUMERIC, Kind.GAUGE, None),
    Aligner.ALIGN_NEXT_OLDER: (
        {Kind.GAUGE},
        NUMERIC | {Type.BOOL, Type.STRING, Type.DISTRIBUTION},
        Kind.GAUGE,
        None,
    ),
    Aligner.ALIGN_MIN: ({Kind.GAUGE, Kind.DELTA}, NUMERIC, Kind.GAUGE, None),
    Aligner.ALIGN_MAX: ({Kind.GAUGE, Kind.DELTA}, NUMERIC, Kind.GAUGE, None),
    Aligner.ALIGN_MEAN: ({Kind.GAUGE, Kind.DELTA}, NUMERIC, Kind.GAUGE, Type.DOUBLE),
    Aligner.ALIGN_COUNT: ({Kind.GAUGE, Kind.DELTA}, NUMERIC | {Type.BOOL}, Kind.GAUGE, Type.INT64),
    Aligner.ALIGN_SUM: ({Kind.GAUGE, Kind.DELTA}, NUMERIC | {Type.DISTRIBUTION}, Kind.GAUGE, None),
    Aligner.ALIGN_STDDEV: ({Kind.GAUGE, Kind.DELTA}, NUMERIC, Kind.GAUGE, Type.DOUBLE),
    Aligner.ALIGN_COUNT_TRUE: ({Kind.GAUGE}, {Type.BOOL}, Kind.GAUGE, Type.INT64),
    Aligner.ALIGN_COUNT_FALSE: ({Kind.GAUGE}, {Type.BOOL}, Kind.GAUGE, Type.INT64),
    Aligner.ALIGN_FRACTION_TRUE: ({Kind.GAUGE}, {Type.BOOL}, Kind.GAUGE, Type.DOUBLE),
    Aligner.ALIGN_PERCENT_CHANGE: ({Kind.GAUGE, Kind.DELTA}, NUMERIC, Kind.GAUGE, Type.DOUBLE),
    **{
        a: ({Kind.GAUGE, Kind.DELTA}, {Type.DISTRIBUTION}, Kind.GAUGE, Type.DOUBLE)
        for a in ALIGN_PERCENTILES
    },
}
# reducer -> (input value types, output value type or None = same as input)
REDUCERS: dict[int, tuple[set, int | None]] = {
    Reducer.REDUCE_MEAN: (NUMERIC | {Type.DISTRIBUTION}, Type.DOUBLE),
    Reducer.REDUCE_MIN: (NUMERIC, None),
    Reducer.REDUCE_MAX: (NUMERIC, None),
    Reducer.REDUCE_SUM: (NUMERIC | {Type.DISTRIBUTION}, None),
    Reducer.REDUCE_STDDEV: (NUMERIC | {Type.DISTRIBUTION}, Type.DOUBLE),
    Reducer.REDUCE_COUNT: (NUMERIC | {Type.BOOL, Type.STRING, Type.DISTRIBUTION}, Type.INT64),
    Reducer.REDUCE_COUNT_TRUE: ({Type.BOOL}, Type.INT64),
    Reducer.REDUCE_COUNT_FALSE: ({Type.BOOL}, Type.INT64),
    Reducer.REDUCE_FRACTION_TRUE: ({Type.BOOL}, Type.DOUBLE),
    **{r: (NUMERIC | {Type.DISTRIBUTION}, Type.DOUBLE) for r in REDUCE_PERCENTILES},
}


def _name(enum_type, value: int) -> str:
    try:
        return enum_type.Name(value) if hasattr(enum_type, "Name") else enum_type(value).name
    except ValueError:
        return str(value)


@dataclass(frozen=True)
class Plan:
    """A validated aggregation: what each series is aligned to and how series are combined."""

    period: float
    aligner: int
    reducer: int
    group_by: tuple[str, ...]
    aligned_kind: int
    aligned_type: int
    out_type: int


def plan(metric: Metric, agg: m.Aggregation) -> Plan:
    aligner, reducer = int(agg.per_series_aligner), int(agg.cross_series_reducer)
    if aligner == Aligner.ALIGN_NONE:
        if reducer != Reducer.REDUCE_NONE:
            raise InvalidArgument(
                f"aggregation.crossSeriesReducer {_name(Reducer, reducer)} needs "
                "aggregation.perSeriesAligner other than ALIGN_NONE "
                "and an aggregation.alignmentPeriod"
            )
        if agg.group_by_fields:
            raise InvalidArgument("aggregation.groupByFields needs a crossSeriesReducer")
        return Plan(0.0, aligner, reducer, (), metric.kind, metric.value_type, metric.value_type)
    if aligner not in ALIGNERS:
        raise InvalidArgument(f"aggregation.perSeriesAligner had an invalid value of {aligner}")
    if not agg.alignment_period:
        raise InvalidArgument(
            "aggregation.alignmentPeriod is required with perSeriesAligner "
            f"{_name(Aligner, aligner)}"
        )
    period = agg.alignment_period.total_seconds()
    if period < MIN_ALIGNMENT_SECONDS:
        raise InvalidArgument(
            f"aggregation.alignmentPeriod must be at least {MIN_ALIGNMENT_SECONDS} seconds, got "
            f"{period:g}s"
        )
    if period > MAX_ALIGNMENT_SECONDS:
        raise InvalidArgument(
            f"aggregation.alignmentPeriod must be at most {MAX_ALIGNMENT_SECONDS} seconds (104 "
            f"weeks), got {period:g}s"
        )
    kinds, types, out_kind, out_type = ALIGNERS[aligner]
    if metric.kind not in kinds or metric.value_type not in types:
        raise InvalidArgument(
            f'aggregation.perSeriesAligner had an invalid value of "{_name(Aligner, aligner)}": '
            "The aligner cannot be applied to "
            f"metrics with kind {_name(Kind, metric.kind)} and value type "
            f"{_name(Type, metric.value_type)}."
        )
    aligned_type = metric.value_type if out_type is None else out_type
    final = aligned_type
    if reducer != Reducer.REDUCE_NONE:
        if reducer not in REDUCERS:
            raise InvalidArgument(
                f"aggregation.crossSeriesReducer had an invalid value of {reducer}"
            )
        accepted, reduced = REDUCERS[reducer]
        if aligned_type not in accepted:
            raise InvalidArgument(
                "aggregation.crossSeriesReducer had an invalid value of "
                f'"{_name(Reducer, reducer)}": The reducer cannot be applied '
                f"to aligned values of type {_name(Type, aligned_type)}."
            )
        final = aligned_type if reduced is None else reduced
    elif agg.group_by_fields:
        raise InvalidArgument("aggregation.groupByFields needs a crossSeriesReducer")
    group_by = []
    for name in agg.group_by_fields:
        key = re.sub(r"^(metric|resource)\.label\.", r"\1.labels.", name)
        known = (
            key.startswith("metric.labels.") and key.removeprefix("metric.labels.") in metric.labels
        ) or (
            key.startswith("resource.labels.")
            and key.removeprefix("resource.labels.") in RESOURCES[metric.resource]
        )
        if not known:
            raise InvalidArgument(
                f"aggregation.groupByFields: {name!r} is not a label of {metric.type} or of "
                f"{metric.resource}"
            )
        group_by.append(key)
    return Plan(period, aligner, reducer, tuple(group_by), out_kind, aligned_type, final)


def check_request(request: m.ListTimeSeriesRequest) -> tuple[float, float]:
    """The interval (start, end] in epoch seconds, after the request-level rules."""
    if not request.name.startswith("projects/") or request.name.count("/") != 1:
        raise InvalidArgument(f"name must be projects/PROJECT_ID_OR_NUMBER, got {request.name!r}")
    if request.order_by:
        raise InvalidArgument("orderBy must be blank for ListTimeSeries")
    if not request.interval.end_time:
        raise InvalidArgument("interval.endTime is required")
    end = request.interval.end_time.timestamp()
    start = request.interval.start_time.timestamp() if request.interval.start_time else end
    if end < start:
        raise InvalidArgument("interval.endTime must not be earlier than interval.startTime")
    return start, end
