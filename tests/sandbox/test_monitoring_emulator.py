"""The Cloud Monitoring emulator through the official gRPC client: series
computed from the requests the front end really answered."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

from tests.conftest import RunningSandbox
from tests.conftest import http_status as hit

COUNT = "loadbalancing.googleapis.com/https/request_count"
LATENCY = "loadbalancing.googleapis.com/https/total_latencies"


@pytest.fixture
def metrics(sandbox: RunningSandbox):
    endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())
    channel = grpc.insecure_channel(endpoints["cloud_monitoring"])
    client = monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
    yield client, f"projects/{endpoints['monitoring_project']}"
    channel.close()


def window(seconds: int = 300) -> monitoring_v3.TimeInterval:
    now = time.time()
    return monitoring_v3.TimeInterval(start_time={"seconds": int(now - seconds)}, end_time={"seconds": int(now) + 1})


def test_request_counts_by_response_class_match_what_was_served(sandbox, metrics) -> None:
    client, project = metrics
    url = sandbox.service_url() + "/v1/walks"
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(hit, [url] * 100))
    series = client.list_time_series(request={
        "name": project,
        "filter": f'metric.type = "{COUNT}" AND resource.labels.forwarding_rule_name = "default-tekutoko-api"',
        "interval": window(),
        "aggregation": {"alignment_period": {"seconds": 600}, "per_series_aligner": "ALIGN_DELTA",
                        "cross_series_reducer": "REDUCE_SUM", "group_by_fields": ["metric.labels.response_code_class"]},
        "view": "FULL",
    })
    counts = {ts.metric.labels["response_code_class"]: sum(p.value.int64_value for p in ts.points) for ts in series}
    assert counts == {"200": statuses.count(200), "500": statuses.count(500)}
    assert 0.42 <= counts["500"] / 100 <= 0.78  # 1.3.0 fails about 60% of calls


def test_p95_latency_follows_the_image_profile(sandbox, metrics) -> None:
    client, project = metrics
    url = sandbox.service_url() + "/health"
    for _ in range(40):
        hit(url)
    series = list(client.list_time_series(request={
        "name": project, "filter": f'metric.type = "{LATENCY}"', "interval": window(),
        "aggregation": {"alignment_period": {"seconds": 600}, "per_series_aligner": "ALIGN_DELTA", "cross_series_reducer": "REDUCE_PERCENTILE_95"},
    }))
    p95 = series[0].points[0].value.double_value
    assert 60 <= p95 <= 400  # 1.3.0: p50 40 ms, p95 150 ms


def test_a_wrong_metric_type_or_filter_is_an_error_not_silence(metrics) -> None:
    client, project = metrics
    with pytest.raises(exceptions.InvalidArgument, match="no metric of type"):
        list(client.list_time_series(request={"name": project, "filter": 'metric.type = "loadbalancing.googleapis.com/https/typo"', "interval": window()}))
    with pytest.raises(exceptions.InvalidArgument, match="must name exactly one metric.type"):
        list(client.list_time_series(request={"name": project, "filter": 'resource.type = "https_lb_rule"', "interval": window()}))
    with pytest.raises(exceptions.InvalidArgument, match="cannot parse filter"):
        list(client.list_time_series(request={"name": project, "filter": f'metric.type = "{COUNT}" OR nonsense', "interval": window()}))


async def test_the_metrics_activity_reads_error_ratio_and_p95(sandbox) -> None:
    import aiohttp
    from google.cloud.monitoring_v3.services.metric_service.transports import (
        MetricServiceGrpcAsyncIOTransport,
    )
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.metrics import MetricsActivities, Monitoring
    from runbook.guard import MonitoringConfig
    from runbook.models import MetricsQuery

    endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())
    url = sandbox.service_url() + "/v1/walks"
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(hit, [url] * 80))
    channel = grpc.aio.insecure_channel(endpoints["cloud_monitoring"])
    session = aiohttp.ClientSession()
    monitoring = Monitoring(monitoring_v3.MetricServiceAsyncClient(transport=MetricServiceGrpcAsyncIOTransport(channel=channel)), session, project=None)
    activities = MetricsActivities(monitoring)
    env = ActivityEnvironment()
    query = MetricsQuery(project=endpoints["monitoring_project"], namespace="default", service="tekutoko-api")
    reading = await env.run(activities.service_health, query)
    assert reading.requests == 80 and reading.errors == statuses.count(500)
    assert 0.42 <= reading.error_ratio <= 0.78 and reading.p95_ms > 0
    quiet = await env.run(activities.service_health, query.model_copy(update={"service": "nobody"}))
    assert quiet.requests == 0 and quiet.error_ratio is None  # no traffic is not "healthy"
    with pytest.raises(ApplicationError, match="refused the query"):
        await env.run(activities.service_health, query.model_copy(update={"config": MonitoringConfig(request_count_metric="custom.googleapis.com/typo")}))
    await channel.close()
    await session.close()
