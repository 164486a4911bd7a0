"""The guard's activities on the promql source against the sandbox: PromQL through the
REST query API, the release's own ReplicaSet judged, an `immediate` breach confirmed by a
second read one scrape later, and a selector that matches nothing failing loudly."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.guard import GuardActivities
from runbook.enums import Severity
from runbook.guard import GuardThresholds, MonitoringConfig
from runbook.guard_models import BaselineRequest
from tests.conftest import RunningSandbox, http_status
from tests.sandbox.test_guard_activities import guard, watch_request  # noqa: F401

SCRAPE = 30  # the tekutoko scenario's PodMonitoring interval (metric seconds)
PROMQL = MonitoringConfig(preset="promql", ingestion_delay_seconds=5)


def serve_over(sandbox: RunningSandbox, n: int, metric_seconds: float) -> None:
    """n requests spread over `metric_seconds` of metric time, so that every pod's series
    has samples at two scrapes or more."""
    url = sandbox.service_url() + "/v1/walks"
    pause = metric_seconds / sandbox.sandbox.clock.speed / n
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(n):
            pool.submit(http_status, url)
            time.sleep(pause)


@contextlib.contextmanager
def serving(sandbox: RunningSandbox, per_metric_second: float = 2.0) -> Iterator[None]:
    """Requests all along (the metric clock runs 20x: a pause of the test's own would leave
    the window behind the traffic), from three scrape intervals before."""
    url = sandbox.service_url() + "/v1/walks"
    done = threading.Event()

    def run() -> None:
        while not done.is_set():
            http_status(url)
            time.sleep(1 / per_metric_second / sandbox.sandbox.clock.speed)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(3 * SCRAPE / sandbox.sandbox.clock.speed)
    try:
        yield
    finally:
        done.set()
        for thread in threads:
            thread.join(10)


async def test_the_live_60_percent_release_is_immediate_after_a_second_read(
    guard: GuardActivities,  # noqa: F811
    sandbox: RunningSandbox,
) -> None:
    with serving(sandbox):
        report = await ActivityEnvironment().run(
            guard.watch, watch_request(monitoring=PROMQL, interval_seconds=0.2, max_polls=10)
        )
    assert report.verdict.severity is Severity.IMMEDIATE, report.evidence
    # Decided on a read after the one that first saw the breach (one scrape later), however
    # many reads a busy machine needed before a window held enough requests to judge.
    assert report.polls >= 2
    assert report.breach_at is not None and report.breach_at < report.at
    assert report.metrics is not None and report.metrics.requests >= 20
    window = (report.metrics.window_end - report.metrics.window_start).total_seconds()
    assert window == 2 * SCRAPE


async def test_a_selector_that_matches_nothing_fails_the_baseline_naming_the_setting(
    guard: GuardActivities,  # noqa: F811
    sandbox: RunningSandbox,
) -> None:
    serve_over(sandbox, 20, SCRAPE)
    wrong = PROMQL.model_copy(update={"resource_filter": 'namespace="{namespace}",job="web"'})
    with pytest.raises(ApplicationError, match="monitoring.resource_filter") as failure:
        await ActivityEnvironment().run(
            guard.baseline,
            BaselineRequest(
                namespace="default",
                deployment="tekutoko-api",
                service="tekutoko-api",
                monitoring=wrong,
            ),
        )
    assert failure.value.non_retryable and "not a healthy service" in failure.value.message


async def test_a_query_the_service_refuses_is_a_permanent_error(
    guard: GuardActivities,  # noqa: F811
) -> None:
    broken = PROMQL.model_copy(update={"request_count_metric": "http requests"})
    with pytest.raises(ApplicationError, match="refused the query") as failure:
        await ActivityEnvironment().run(guard.watch, watch_request(monitoring=broken))
    assert failure.value.non_retryable and failure.value.type == "MetricQueryInvalid"


async def test_a_release_whose_pods_crash_after_taking_traffic_is_seen_by_the_watch(
    guard: GuardActivities,  # noqa: F811
    sandbox: RunningSandbox,
) -> None:
    image = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api:1.4.0-crash-later"
    await guard.checks.apps.patch_namespaced_deployment(
        "tekutoko-api",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": image}]}}}},
    )
    strict = GuardThresholds(pods_failing_severity="immediate")
    report = await ActivityEnvironment().run(
        guard.watch,
        watch_request(monitoring=PROMQL, thresholds=strict, interval_seconds=0.3, max_polls=40),
    )
    assert report.verdict.severity is Severity.IMMEDIATE, report.verdict
    [said] = [r for r in report.verdict.reasons if r.startswith("pods restarting")]
    assert "restarted" in said and "tekutoko-api-" in said
