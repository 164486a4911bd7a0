"""The alerts REST path: alerts open from the errors a front end really served,
close once it recovers, and a bad filter or metric setting is a clear error,
never a silent "healthy"."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import grpc
import pytest
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcAsyncIOTransport,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.metrics import Monitoring
from runbook.guard import MonitoringConfig
from runbook.models import AlertQuery
from sandbox.alerts import BadFilter, parse_alert_filter
from tests.conftest import RunningSandbox, http_status


def list_alerts(sandbox: RunningSandbox, **params: str) -> tuple[int, dict]:
    endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())
    url = (
        f"{endpoints['monitoring_rest']}/v3/projects/{endpoints['monitoring_project']}/alerts"
        f"?{urllib.parse.urlencode(params)}"
    )
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def serve(sandbox: RunningSandbox, n: int) -> list[int]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(http_status, [sandbox.service_url() + "/v1/walks"] * n))


def test_an_alert_opens_on_served_errors_and_closes_after_recovery(sandbox: RunningSandbox) -> None:
    assert list_alerts(sandbox, filter='state = "OPEN"')[1]["alerts"] == []
    statuses = serve(sandbox, 40)  # 1.3.0 is live: about 60% errors
    assert statuses.count(500) > 10
    sandbox.call(sandbox.sandbox.alerts.evaluate)
    status, body = list_alerts(
        sandbox, filter='state = "OPEN" AND policy.user_labels.service = "tekutoko-api"'
    )
    assert status == 200 and len(body["alerts"]) == 1
    alert = body["alerts"][0]
    assert alert["state"] == "OPEN" and alert["resource"]["type"] == "https_lb_rule"
    assert (
        alert["resource"]["labels"]["forwarding_rule_name"].startswith("k8s2-fr-")
        and "-default-tekutoko-api-" in alert["resource"]["labels"]["backend_target_name"]
    )
    assert alert["name"].startswith("projects/tekutoko-prod/alerts/") and "openTime" in alert
    assert list_alerts(sandbox, filter='policy.user_labels.service = "other"')[1]["alerts"] == []

    # Recovery: the window now holds only good answers.
    def only_good_answers() -> None:
        kept = [r for r in sandbox.sandbox.load_balancers.traffic if r.status < 500]
        sandbox.sandbox.load_balancers.traffic.clear()
        sandbox.sandbox.load_balancers.traffic.extend(kept)

    sandbox.call(only_good_answers)
    sandbox.call(sandbox.sandbox.alerts.evaluate)
    assert list_alerts(sandbox, filter='state = "OPEN"')[1]["alerts"] == []
    closed = list_alerts(sandbox, filter='state = "CLOSED"')[1]["alerts"]
    assert len(closed) == 1 and "closeTime" in closed[0]


def test_no_traffic_keeps_an_open_alert_open(sandbox: RunningSandbox) -> None:
    serve(sandbox, 30)
    sandbox.call(sandbox.sandbox.alerts.evaluate)
    sandbox.call(lambda: sandbox.sandbox.load_balancers.traffic.clear())
    sandbox.call(sandbox.sandbox.alerts.evaluate)
    assert (
        len(list_alerts(sandbox, filter='state = "OPEN"')[1]["alerts"]) == 1
    )  # silence is not recovery


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"filter": 'state = "SOMETIMES"'}, "state must be"),
        ({"filter": 'colour = "red"'}, "unknown filter field"),
        ({"filter": "state OPEN"}, "cannot parse"),
        ({"pageSize": "-1"}, "pageSize"),
    ],
)
def test_bad_queries_are_400_with_the_problem_named(
    sandbox: RunningSandbox, params: dict, needle: str
) -> None:
    status, body = list_alerts(sandbox, **params)
    assert status == 400 and needle in body["error"]["message"]


def test_alert_policies_are_listed_by_their_user_labels(sandbox: RunningSandbox) -> None:
    endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())
    url = (
        f"{endpoints['monitoring_rest']}/v3/projects/{endpoints['monitoring_project']}"
        "/alertPolicies?"
    )
    with urllib.request.urlopen(
        url
        + urllib.parse.urlencode(
            {"filter": 'user_label.service = "tekutoko-api" AND user_label.namespace = "default"'}
        ),
        timeout=5,
    ) as response:
        policies = json.loads(response.read())["alertPolicies"]
    assert len(policies) == 1 and policies[0]["userLabels"] == {
        "service": "tekutoko-api",
        "namespace": "default",
    }
    assert (
        policies[0]["conditions"][0]["conditionThreshold"]["aggregations"][0]["alignmentPeriod"]
        == "60s"
    )
    with urllib.request.urlopen(
        url + urllib.parse.urlencode({"filter": 'user_label.service = "nobody"'}), timeout=5
    ) as response:
        assert json.loads(response.read())["alertPolicies"] == []


def test_filter_parsing() -> None:
    assert parse_alert_filter('state = "OPEN" AND policy.display_name = "x y"') == {
        "state": "OPEN",
        "policy.display_name": "x y",
    }
    with pytest.raises(BadFilter):
        parse_alert_filter('metric.kind = "x"')


async def test_the_activity_reads_open_alerts_and_refuses_bad_filters(
    sandbox: RunningSandbox,
) -> None:
    endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())
    serve(sandbox, 40)
    sandbox.call(sandbox.sandbox.alerts.evaluate)
    channel = grpc.aio.insecure_channel(endpoints["cloud_monitoring"])
    async with aiohttp.ClientSession() as session:
        monitoring = Monitoring(
            monitoring_v3.MetricServiceAsyncClient(
                transport=MetricServiceGrpcAsyncIOTransport(channel=channel)
            ),
            session,
            project=endpoints["monitoring_project"],
            rest_endpoint=endpoints["monitoring_rest"],
        )
        env = ActivityEnvironment()
        query = monitoring.alert_query(
            MonitoringConfig(preset="gke_l7", project=endpoints["monitoring_project"]),
            "default",
            "tekutoko-api",
        )
        found = await env.run(monitoring.open_alerts, query)
        assert len(found.alerts) == 1 and "error ratio above" in found.alerts[0].policy
        with pytest.raises(
            ApplicationError, match="monitoring.alert_policy_filter .* matches no alerting policy"
        ) as no_policy:
            await env.run(
                monitoring.open_alerts,
                monitoring.alert_query(
                    MonitoringConfig(preset="gke_l7", project=endpoints["monitoring_project"]),
                    "default",
                    "nobody",
                ),
            )
        assert no_policy.value.non_retryable and "for the wrong reason" in no_policy.value.message
        with pytest.raises(ApplicationError, match="alert_filter") as refused:
            await env.run(
                monitoring.open_alerts,
                AlertQuery(project=endpoints["monitoring_project"], filter='colour = "red"'),
            )
        assert refused.value.non_retryable
        with pytest.raises(ApplicationError, match="not found"):
            await env.run(monitoring.open_alerts, AlertQuery(project="someone-else"))
    await channel.close()
