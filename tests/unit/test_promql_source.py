"""The promql source: its settings, its queries, how a matrix is read, and the noise
guard (the baseline's own errors, a confirming second read)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from activities.promql import SecondRead, newest, queries
from runbook.guard import Evidence, GuardThresholds, MonitoringConfig, judge
from runbook.models import Severity


def test_promql_preset_defaults_and_overrides() -> None:
    source = MonitoringConfig(preset="promql", scrape_interval_seconds=15).source()
    assert source.promql and source.promql_window_seconds() == 30
    assert source.step_seconds == 10 and source.latency_unit == "s"
    assert MonitoringConfig(preset="promql").source().promql_window_seconds() == 60


def test_promql_settings_refused_for_other_presets() -> None:
    with pytest.raises(ValidationError, match="apply to preset promql only"):
        MonitoringConfig(preset="gke_l7", scrape_interval_seconds=15)
    with pytest.raises(ValidationError, match="scrape_interval_seconds"):
        MonitoringConfig(preset="promql", scrape_interval_seconds=1)


def test_queries_select_the_service_by_namespace_and_job() -> None:
    source = MonitoringConfig(preset="promql", scrape_interval_seconds=15).source()
    by_code, p95 = queries(source, "default", "tekutoko-api", "30s")
    assert by_code == (
        'sum by (code) (rate(http_requests_total{namespace="default",job="tekutoko-api"}[30s]))'
    )
    assert p95 == (
        "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket"
        '{namespace="default",job="tekutoko-api"}[30s])))'
    )


def test_a_release_s_own_pods() -> None:
    source = MonitoringConfig(preset="promql").source()
    by_code, _ = queries(source, "default", "api.v2", "30s", replica_set="api.v2-5d8f7c")
    assert 'pod=~"api\\\\.v2-5d8f7c-[a-z0-9]+"' in by_code
    from sandbox.promql import parse

    [matcher] = [m for m in parse(by_code).args[0].matchers if m.name == "pod"]
    assert matcher.matches("api.v2-5d8f7c-x9k2p") and not matcher.matches("apixv2-5d8f7c-x9k2p")


def test_the_matrix_is_read_at_its_newest_point() -> None:
    matrix = [
        {"metric": {"code": "200"}, "values": [[100, "4"], [110, "3"]]},
        {"metric": {"code": "500"}, "values": [[100, "1"], [110, "2"]]},
        {"metric": {"code": "404"}, "values": [[100, "7"]]},  # gone by the newest point
        {"metric": {"code": "503"}, "values": [[110, "NaN"]]},
    ]
    assert newest(matrix) == {"200": 3.0, "500": 2.0}
    assert newest([]) == {}


def test_the_baseline_s_own_errors_do_not_count_against_the_release() -> None:
    noisy = judge(Evidence(error_ratio=0.14, baseline_error_ratio=0.06, p95_ms=1))
    assert noisy.severity is None  # 8 points above its usual 6%: nothing of its own
    worse = judge(Evidence(error_ratio=0.20, baseline_error_ratio=0.06))
    assert worse.severity is Severity.INVESTIGATE
    assert "the baseline's 6.0%" in worse.reasons[0]
    failing = judge(Evidence(error_ratio=0.60, baseline_error_ratio=0.0))
    assert failing.severity is Severity.IMMEDIATE
    # a baseline read while an earlier bad release was still failing does not hide a new one
    assert judge(Evidence(error_ratio=0.60, baseline_error_ratio=0.21)).severity is (
        Severity.IMMEDIATE
    )
    assert judge(Evidence(error_ratio=0.60)).severity is Severity.IMMEDIATE  # no baseline


def test_min_requests_is_a_threshold_the_catalog_can_set() -> None:
    assert GuardThresholds().min_requests == 20
    with pytest.raises(ValidationError):
        GuardThresholds(min_requests=0)


def test_second_read_waits_one_scrape_interval() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    second = SecondRead(15)
    assert second.due(t0)
    second.seen(t0)
    assert second.pause(t0 + dt.timedelta(seconds=5)) == pytest.approx(10)
    assert second.due(t0 + dt.timedelta(seconds=14))
    assert not second.due(t0 + dt.timedelta(seconds=15))
    second.seen(t0 + dt.timedelta(seconds=15))
    assert second.first == t0  # the first sighting is the breach's time


def pod(name: str, *, ready: bool, restarts: int = 0, waiting: str = "", deleting=False) -> dict:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "metadata": {
            "name": name,
            **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {}),
        },
        "status": {
            "containerStatuses": [{"ready": ready, "restartCount": restarts, "state": state}]
        },
    }


def test_the_release_s_pods_that_failed_after_taking_traffic() -> None:
    from activities.pod_watch import ReleasePods

    pods = ReleasePods(core=None, namespace="default", template_hash="5d8f7")
    pods.saw("ADDED", pod("a", ready=False))  # starting: not a failure
    pods.saw("ADDED", pod("b", ready=True))
    assert pods.failing() == []
    pods.saw("MODIFIED", pod("b", ready=False))  # took traffic, then lost readiness
    pods.saw("MODIFIED", pod("a", ready=False, restarts=2, waiting="CrashLoopBackOff"))
    assert pods.failing() == [
        "a (restarted 2x, CrashLoopBackOff)",
        "b (not ready since it took traffic)",
    ]
    pods.saw("MODIFIED", pod("b", ready=False, deleting=True))  # replaced by a rollout
    pods.saw("DELETED", pod("a", ready=False))
    assert pods.failing() == []


def test_pods_failing_is_investigate_unless_the_catalog_says_immediate() -> None:
    evidence = Evidence(pods_failing=["a (restarted 2x, CrashLoopBackOff)"], error_ratio=0.0)
    verdict = judge(evidence)
    assert verdict.severity is Severity.INVESTIGATE
    assert verdict.reasons == [
        "pods restarting after taking traffic: a (restarted 2x, CrashLoopBackOff)"
    ]
    strict = GuardThresholds(pods_failing_severity="immediate")
    assert judge(evidence, strict).severity is Severity.IMMEDIATE
