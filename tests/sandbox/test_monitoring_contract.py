"""Contract tests: the Monitoring emulator refuses, through the official gRPC
client, every query Google's v3 protos say is refused (common.proto's comments
on Aggregation, metric_service.proto on ListTimeSeries), with INVALID_ARGUMENT
and the field named, and accepts what they allow. The metric kinds, value
types and labels come from the descriptors it publishes."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.api import metric_pb2
from google.api_core import exceptions
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

from runbook.guard import MonitoringConfig
from runbook.monitoring import PRESETS
from sandbox import gke_names
from sandbox.kube.loadbalancer import ServedRequest
from sandbox.monitoring import MetricServiceEmulator
from sandbox.monitoring_rules import LB_COUNT, LB_LATENCY, PROM_COUNT, PROM_LATENCY

PROJECT = "tekutoko-prod"
NOW = math.floor(time.time() / 60) * 60  # a minute boundary
Kind = metric_pb2.MetricDescriptor.MetricKind
Type = metric_pb2.MetricDescriptor.ValueType


def traffic() -> list[ServedRequest]:
    """Five minutes of answers: 1 in 4 fails, one 503 no pod gave."""
    served = [
        ServedRequest(
            NOW - 300 + i * 2.5,
            "default/tekutoko-api",
            f"tekutoko-api-{i % 3}",
            "img",
            "/v1/walks",
            500 if i % 4 == 0 else 200,
            20.0 + i % 50,
            8080,
        )
        for i in range(120)
    ]
    served.append(
        ServedRequest(NOW - 30, "default/tekutoko-api", "", "", "/v1/walks", 503, 1.0, 8080)
    )
    return served


@pytest.fixture(scope="module")
def client() -> Iterator[monitoring_v3.MetricServiceClient]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    emulator = MetricServiceEmulator(
        traffic, project=PROJECT, ingestion_delay_seconds=0, now=lambda: NOW + 1
    )
    asyncio.run_coroutine_threadsafe(emulator.start(), loop).result(10)
    channel = grpc.insecure_channel(f"127.0.0.1:{emulator.port}")
    yield monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
    channel.close()
    asyncio.run_coroutine_threadsafe(emulator.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def series(
    client,
    metric: str = LB_COUNT,
    *,
    seconds: int = 300,
    extra: str = "",
    end: float = NOW,
    start: float | None = None,
    **aggregation,
) -> list:
    return list(
        client.list_time_series(
            request={
                "name": f"projects/{PROJECT}",
                "filter": f'metric.type = "{metric}"' + (f" AND {extra}" if extra else ""),
                "interval": {
                    "start_time": {"seconds": int(end - seconds if start is None else start)},
                    "end_time": {"seconds": int(end)},
                },
                **({"aggregation": aggregation} if aggregation else {}),
            }
        )
    )


def refused(client, needle: str, **kwargs) -> str:
    with pytest.raises(exceptions.InvalidArgument) as failure:
        series(client, **kwargs)
    assert needle in failure.value.message, failure.value.message
    return failure.value.message


# -- Aggregation.alignment_period ------------------------------------------------------


def test_the_old_ten_second_window_is_refused(client) -> None:
    refused(
        client,
        "alignmentPeriod must be at least 60 seconds",
        seconds=10,
        alignment_period={"seconds": 10},
        per_series_aligner="ALIGN_DELTA",
        cross_series_reducer="REDUCE_SUM",
    )


def test_an_alignment_period_over_104_weeks_is_refused(client) -> None:
    refused(
        client,
        "at most 62899200 seconds (104 weeks)",
        alignment_period={"seconds": 105 * 7 * 86400},
        per_series_aligner="ALIGN_DELTA",
    )


def test_an_aligner_needs_an_alignment_period(client) -> None:
    refused(
        client,
        "alignmentPeriod is required with perSeriesAligner ALIGN_DELTA",
        per_series_aligner="ALIGN_DELTA",
    )


def test_sixty_seconds_is_accepted_with_one_point_per_minute_ending_at_its_period(client) -> None:
    found = series(
        client,
        alignment_period={"seconds": 60},
        per_series_aligner="ALIGN_DELTA",
        cross_series_reducer="REDUCE_SUM",
    )
    assert len(found) == 1
    ends = [p.interval.end_time.timestamp() for p in found[0].points]
    assert ends == sorted(ends, reverse=True) and all(
        (NOW - e) % 60 == 0 for e in ends
    )  # newest first, on period ends
    in_window = [
        r for r in traffic() if NOW - 300 < math.ceil(r.time / 60) * 60 <= NOW
    ]  # each request counts in the minute it ends in
    assert sum(p.value.int64_value for p in found[0].points) == len(in_window) == 120


# -- aligners against the metric's kind and value type -----------------------------------


@pytest.mark.parametrize(
    ("metric", "aligner", "kind", "value_type"),
    [
        (
            LB_LATENCY,
            "ALIGN_RATE",
            "DELTA",
            "DISTRIBUTION",
        ),  # Google's own wording, for the same refusal
        (
            LB_COUNT,
            "ALIGN_PERCENTILE_95",
            "DELTA",
            "INT64",
        ),  # percentile aligners take distributions only
        (PROM_COUNT, "ALIGN_MEAN", "CUMULATIVE", "DOUBLE"),  # MEAN takes GAUGE or DELTA
        (
            PROM_LATENCY,
            "ALIGN_PERCENTILE_95",
            "CUMULATIVE",
            "DISTRIBUTION",
        ),  # ... and so do the percentiles
        (LB_COUNT, "ALIGN_INTERPOLATE", "DELTA", "INT64"),  # GAUGE only
        (LB_COUNT, "ALIGN_FRACTION_TRUE", "DELTA", "INT64"),  # BOOL only
    ],
)
def test_an_aligner_that_does_not_fit_the_metric_is_refused(
    client, metric: str, aligner: str, kind: str, value_type: str
) -> None:
    message = refused(
        client,
        f'perSeriesAligner had an invalid value of "{aligner}"',
        metric=metric,
        alignment_period={"seconds": 60},
        per_series_aligner=aligner,
    )
    assert f"kind {kind} and value type {value_type}" in message


def test_aligners_that_fit_are_accepted(client) -> None:
    rate = series(
        client,
        alignment_period={"seconds": 300},
        per_series_aligner="ALIGN_RATE",
        cross_series_reducer="REDUCE_SUM",
    )
    assert rate[0].value_type == Type.DOUBLE and rate[0].metric_kind == Kind.GAUGE
    assert rate[0].points[0].value.double_value == pytest.approx(
        sum(1 for r in traffic() if NOW - 300 < math.ceil(r.time / 60) * 60 <= NOW) / 300
    )
    p95 = series(
        client,
        metric=LB_LATENCY,
        alignment_period={"seconds": 300},
        per_series_aligner="ALIGN_PERCENTILE_95",
        cross_series_reducer="REDUCE_MAX",
    )
    assert p95[0].value_type == Type.DOUBLE and 20 <= p95[0].points[0].value.double_value <= 70
    prom = series(
        client,
        metric=PROM_COUNT,
        alignment_period={"seconds": 60},
        per_series_aligner="ALIGN_DELTA",
        cross_series_reducer="REDUCE_SUM",
    )
    assert prom[0].metric_kind == Kind.DELTA and prom[0].value_type == Type.DOUBLE


# -- reducers ----------------------------------------------------------------------------


def test_a_reducer_without_an_aligner_is_refused(client) -> None:
    refused(
        client,
        "crossSeriesReducer REDUCE_SUM needs aggregation.perSeriesAligner other than ALIGN_NONE",
        cross_series_reducer="REDUCE_SUM",
    )


def test_a_percentile_reducer_accepts_numeric_and_distribution_values(client) -> None:
    # PRODUCTION-CONTRACTS §3: REDUCE_PERCENTILE_* take numeric and distribution input.
    on_counts = series(
        client,
        alignment_period={"seconds": 300},
        per_series_aligner="ALIGN_DELTA",
        cross_series_reducer="REDUCE_PERCENTILE_95",
    )
    on_latency = series(
        client,
        metric=LB_LATENCY,
        alignment_period={"seconds": 300},
        per_series_aligner="ALIGN_DELTA",
        cross_series_reducer="REDUCE_PERCENTILE_95",
    )
    assert on_counts[0].value_type == on_latency[0].value_type == Type.DOUBLE


def test_a_reducer_that_does_not_fit_the_aligned_values_is_refused(client) -> None:
    refused(
        client,
        'crossSeriesReducer had an invalid value of "REDUCE_MAX"',
        metric=LB_LATENCY,
        alignment_period={"seconds": 60},
        per_series_aligner="ALIGN_DELTA",
        cross_series_reducer="REDUCE_MAX",
    )
    refused(
        client,
        'crossSeriesReducer had an invalid value of "REDUCE_FRACTION_TRUE"',
        alignment_period={"seconds": 60},
        per_series_aligner="ALIGN_DELTA",
        cross_series_reducer="REDUCE_FRACTION_TRUE",
    )


def test_grouping_by_a_label_the_metric_does_not_have_is_refused(client) -> None:
    refused(
        client,
        "groupByFields: 'metric.labels.code' is not a label",
        alignment_period={"seconds": 60},
        per_series_aligner="ALIGN_DELTA",
        cross_series_reducer="REDUCE_SUM",
        group_by_fields=["metric.labels.code"],
    )


# -- filters against the descriptors -----------------------------------------------------


def test_an_unknown_metric_type_is_refused(client) -> None:
    refused(
        client,
        'Cannot find metric(s) that match type = "loadbalancing.googleapis.com/https/request_cnt"',
        metric="loadbalancing.googleapis.com/https/request_cnt",
    )


def test_a_filter_naming_another_resource_type_is_refused(client) -> None:
    refused(
        client,
        "is written on monitored resource 'https_lb_rule' only",
        extra='resource.type = "tcp_lb_rule"',
    )
    refused(
        client,
        "is written on monitored resource 'prometheus_target' only",
        metric=PROM_COUNT,
        extra='resource.type = "k8s_container"',
    )


@pytest.mark.parametrize(
    ("metric", "extra", "needle"),
    [
        (
            LB_COUNT,
            'resource.labels.namespace = "default"',
            "monitored resource https_lb_rule has no label 'namespace'",
        ),
        (
            PROM_COUNT,
            'resource.labels.forwarding_rule_name = "default-tekutoko-api"',
            "monitored resource prometheus_target has no label 'forwarding_rule_name'",
        ),
        (LB_COUNT, 'metric.labels.code = "500"', "has no label 'code'"),
    ],
)
def test_a_filter_naming_a_label_the_resource_or_metric_lacks_is_refused(
    client, metric: str, extra: str, needle: str
) -> None:
    refused(client, needle, metric=metric, extra=extra)


def test_an_interval_ending_before_it_starts_is_refused(client) -> None:
    refused(
        client,
        "interval.endTime must not be earlier than interval.startTime",
        start=NOW,
        end=NOW - 60,
    )


def test_order_by_must_be_blank(client) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="orderBy must be blank"):
        list(
            client.list_time_series(
                request={
                    "name": f"projects/{PROJECT}",
                    "filter": f'metric.type = "{LB_COUNT}"',
                    "order_by": "metric.type",
                    "interval": {"start_time": {"seconds": NOW - 60}, "end_time": {"seconds": NOW}},
                }
            )
        )


# -- what is matched ---------------------------------------------------------------------


def test_gke_names_and_the_presets_match_the_services_series(client) -> None:
    neg = gke_names.neg_name(PROJECT, "default", "tekutoko-api", 8080)
    for preset in ("gke_l7", "managed_prometheus"):
        source = MonitoringConfig(preset=preset).source()
        found = series(
            client,
            metric=source.request_count_metric,
            extra=source.filter_for("default", "tekutoko-api"),
            alignment_period={"seconds": 300},
            per_series_aligner="ALIGN_DELTA",
            cross_series_reducer="REDUCE_SUM",
        )
        served = [
            r
            for r in traffic()
            if NOW - 300 < math.ceil(r.time / 60) * 60 <= NOW and (preset == "gke_l7" or r.pod)
        ]
        assert sum(
            p.value.int64_value or p.value.double_value for s in found for p in s.points
        ) == len(served), preset
        assert (
            series(
                client,
                metric=source.request_count_metric,
                extra=source.filter_for("default", "other"),
            )
            == []
        )
    raw = series(client, extra=f'resource.labels.backend_target_name = "{neg}"')
    assert (
        raw
        and raw[0].resource.labels["forwarding_rule_name"].startswith("k8s2-fr-")
        and raw[0].resource.labels["url_map_name"].startswith("k8s2-um-")
    )


def test_headers_view_lists_series_without_points(client) -> None:
    found = list(
        client.list_time_series(
            request={
                "name": f"projects/{PROJECT}",
                "filter": f'metric.type = "{PROM_COUNT}"',
                "view": "HEADERS",
                "interval": {"start_time": {"seconds": NOW - 3600}, "end_time": {"seconds": NOW}},
            }
        )
    )
    assert {s.resource.labels["instance"] for s in found} == {
        f"tekutoko-api-{i}:http" for i in range(3)
    } and all(not s.points for s in found)


def test_the_descriptors_publish_real_kinds_value_types_and_labels(client) -> None:
    found = {
        d.type: d for d in client.list_metric_descriptors(request={"name": f"projects/{PROJECT}"})
    }
    assert (found[LB_COUNT].metric_kind, found[LB_COUNT].value_type) == (Kind.DELTA, Type.INT64)
    assert (
        found[LB_LATENCY].metric_kind,
        found[LB_LATENCY].value_type,
        found[LB_LATENCY].unit,
    ) == (Kind.DELTA, Type.DISTRIBUTION, "ms")
    assert (found[PROM_COUNT].metric_kind, found[PROM_LATENCY].value_type) == (
        Kind.CUMULATIVE,
        Type.DISTRIBUTION,
    )
    assert "response_code_class" in {label.key for label in found[LB_COUNT].labels}
    resources = {
        r.type: {label.key for label in r.labels}
        for r in client.list_monitored_resource_descriptors(request={"name": f"projects/{PROJECT}"})
    }
    assert {
        "url_map_name",
        "forwarding_rule_name",
        "backend_target_name",
        "backend_name",
    } <= resources["https_lb_rule"]
    assert resources["prometheus_target"] == {
        "project_id",
        "location",
        "cluster",
        "namespace",
        "job",
        "instance",
    }
    for preset in PRESETS[:2]:  # every preset names published types
        source = MonitoringConfig(preset=preset).source()
        assert {source.request_count_metric, source.latency_metric} <= set(found), preset
