"""The guard's activities against the sandbox: real probes, real metrics through
the gRPC client; a wrong metric setting fails loudly instead of reading as healthy."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import grpc
import pytest
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcAsyncIOTransport,
)
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.guard import GuardActivities
from activities.metrics import Monitoring
from activities.verify import VerifyActivities
from runbook.enums import Severity
from runbook.guard import GuardThresholds, MonitoringConfig
from runbook.guard_models import BaselineRequest, GuardBaseline, WatchRequest
from runbook.models import VerifyRequest
from tests.conftest import METRICS_DELAY, RunningSandbox, http_status


@pytest.fixture
async def guard(sandbox: RunningSandbox) -> AsyncIterator[GuardActivities]:
    endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    channel = grpc.aio.insecure_channel(endpoints["cloud_monitoring"])
    async with aiohttp.ClientSession() as session:
        monitoring = Monitoring(
            monitoring_v3.MetricServiceAsyncClient(
                transport=MetricServiceGrpcAsyncIOTransport(channel=channel)
            ),
            session,
            project=endpoints["monitoring_project"],
            rest_endpoint=endpoints["monitoring_rest"],
            clock=sandbox.metric_clock,
        )
        yield GuardActivities(
            VerifyActivities(kube.AppsV1Api(api), kube.CoreV1Api(api), session, monitoring),
            monitoring,
        )
    await channel.close()
    await api.close()


GKE_L7 = MonitoringConfig(preset="gke_l7", ingestion_delay_seconds=METRICS_DELAY)


def serve(sandbox: RunningSandbox, n: int) -> None:
    """n requests within one minute of metric time."""
    sandbox.until_next_minute()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(http_status, [sandbox.service_url() + "/v1/walks"] * n))


def watch_request(**changes) -> WatchRequest:
    return WatchRequest(
        **{
            "namespace": "default",
            "deployment": "tekutoko-api",
            "service": "tekutoko-api",
            "health_path": "/health",
            "api_path": "/v1/walks",
            "monitoring": GKE_L7,
            "thresholds": GuardThresholds(),
            "baseline": GuardBaseline(p95_ms=80),
            "interval_seconds": 0.2,
            "until": dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30),
            "max_polls": 5,
            **changes,
        }
    )


async def test_the_live_60_percent_release_is_an_immediate_breach(
    guard: GuardActivities, sandbox: RunningSandbox
) -> None:
    serve(sandbox, 60)
    sandbox.until_readable()
    report = await ActivityEnvironment().run(guard.watch, watch_request())
    assert report.verdict.severity is Severity.IMMEDIATE and report.polls == 1
    assert (
        report.metrics is not None
        and report.metrics.requests >= 60
        and report.breach_at == report.at
    )
    assert (
        report.metrics.window_end - report.metrics.window_start
    ).total_seconds() == 60 and report.metrics.window_end.second == 0


async def test_the_baseline_records_revision_images_restarts_and_the_last_complete_minute(
    guard: GuardActivities, sandbox: RunningSandbox
) -> None:
    serve(sandbox, 30)
    sandbox.until_readable()
    baseline = await ActivityEnvironment().run(
        guard.baseline,
        BaselineRequest(
            namespace="default",
            deployment="tekutoko-api",
            service="tekutoko-api",
            monitoring=GKE_L7,
        ),
    )
    assert (
        baseline.revision == 3 and baseline.images[0].endswith(":1.3.0") and baseline.restarts == 0
    )
    assert (
        baseline.requests >= 30 and baseline.p95_ms is not None and baseline.window_end.second == 0
    )


async def test_a_filter_that_matches_nothing_fails_the_baseline_naming_the_setting(
    guard: GuardActivities, sandbox: RunningSandbox
) -> None:
    serve(sandbox, 10)
    sandbox.until_readable()
    # A Service without an Ingress (the old forwarding-rule guess): nothing matches, which must not
    # read as healthy.
    guessed = GKE_L7.model_copy(
        update={"resource_filter": 'resource.labels.forwarding_rule_name = "{namespace}-{service}"'}
    )
    with pytest.raises(ApplicationError, match="monitoring.resource_filter") as failure:
        await ActivityEnvironment().run(
            guard.baseline,
            BaselineRequest(
                namespace="default",
                deployment="tekutoko-api",
                service="tekutoko-api",
                monitoring=guessed,
            ),
        )
    assert failure.value.non_retryable and "not a healthy service" in failure.value.message
    with pytest.raises(ApplicationError, match="monitoring.resource_filter"):
        await ActivityEnvironment().run(guard.watch, watch_request(monitoring=guessed))
    no_policy = GKE_L7.model_copy(
        update={"alert_policy_filter": 'user_label.service = "{service}-typo"'}
    )
    with pytest.raises(
        ApplicationError, match="monitoring.alert_policy_filter .* matches no alerting policy"
    ):
        await ActivityEnvironment().run(
            guard.baseline,
            BaselineRequest(
                namespace="default",
                deployment="tekutoko-api",
                service="tekutoko-api",
                monitoring=no_policy,
            ),
        )


async def test_a_wrong_metric_type_fails_the_watch_with_the_setting_named(
    guard: GuardActivities,
) -> None:
    bad = GKE_L7.model_copy(
        update={"request_count_metric": "loadbalancing.googleapis.com/https/request_cnt"}
    )
    with pytest.raises(
        ApplicationError, match="check the catalog's monitoring settings"
    ) as failure:
        await ActivityEnvironment().run(guard.watch, watch_request(monitoring=bad))
    assert failure.value.non_retryable and "request_cnt" in failure.value.message


async def test_an_unknown_deployment_is_refused(guard: GuardActivities) -> None:
    with pytest.raises(ApplicationError, match="does not exist"):
        await ActivityEnvironment().run(guard.watch, watch_request(deployment="nobody"))


async def test_verification_fails_naming_the_setting_when_a_filter_matches_nothing(
    guard: GuardActivities, sandbox: RunningSandbox
) -> None:
    serve(sandbox, 10)
    request = VerifyRequest(
        namespace="default",
        deployment="tekutoko-api",
        service="tekutoko-api",
        paths=["/health"],
        window_seconds=15,
        interval_seconds=0.5,
        monitoring=GKE_L7.model_copy(update={"alert_policy_filter": 'user_label.team = "nobody"'}),
    )
    with pytest.raises(ApplicationError, match="monitoring.alert_policy_filter") as no_policy:
        await ActivityEnvironment().run(guard.checks.verify_service, request)
    assert no_policy.value.non_retryable
    guessed = GKE_L7.model_copy(
        update={"resource_filter": 'resource.labels.forwarding_rule_name = "{namespace}-{service}"'}
    )
    with pytest.raises(
        ApplicationError, match="monitoring.resource_filter"
    ) as nothing:  # once a whole minute since the start is readable
        await ActivityEnvironment().run(
            guard.checks.verify_service, request.model_copy(update={"monitoring": guessed})
        )
    assert "not a healthy service" in nothing.value.message


async def test_verification_waits_for_a_whole_minute_after_the_rollback_and_says_so(
    guard: GuardActivities,
) -> None:
    request = VerifyRequest(
        namespace="default",
        deployment="tekutoko-api",
        service="tekutoko-api",
        paths=["/health"],
        window_seconds=1,
        interval_seconds=0.5,
        monitoring=GKE_L7,
    )
    result = await ActivityEnvironment().run(guard.checks.verify_service, request)
    checks = {c.name: c for c in result.checks}
    # A second is too short for the first whole minute after the rollback: not judged, saying
    # which minute, when it is readable and what to change; neither failed nor passed.
    error_ratio = checks["error_ratio"]
    assert result.ok and error_ratio.ok and not error_ratio.judged, error_ratio
    assert error_ratio.detail.startswith("not judged: the error rate of ")
    assert "readable at" in error_ratio.detail
    assert "verification_deadline_seconds" in error_ratio.detail
