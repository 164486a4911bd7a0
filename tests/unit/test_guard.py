"""The decision table, every threshold from both sides."""

from __future__ import annotations

import pytest

from runbook.guard import Evidence, GuardThresholds, judge
from runbook.models import Severity

HEALTHY = {"error_ratio": 0.005, "p95_ms": 120.0, "baseline_p95_ms": 100.0}


def verdict(**changes):
    return judge(Evidence(**{**HEALTHY, **changes}))


def test_a_healthy_release_calls_for_nothing() -> None:
    result = verdict()
    assert result.severity is None and result.reasons == [] and result.missing == []


@pytest.mark.parametrize(
    ("ratio", "severity"),
    [
        (0.10, None),
        (0.1001, Severity.INVESTIGATE),
        (0.50, Severity.INVESTIGATE),
        (0.5001, Severity.IMMEDIATE),
        (0.60, Severity.IMMEDIATE),
    ],
)
def test_error_ratio_thresholds(ratio, severity) -> None:
    assert verdict(error_ratio=ratio).severity == severity


@pytest.mark.parametrize(("p95", "severity"), [(299.0, None), (300.0, Severity.INVESTIGATE)])
def test_latency_against_three_times_the_baseline(p95, severity) -> None:
    assert verdict(p95_ms=p95).severity == severity


@pytest.mark.parametrize(("failures", "severity"), [(2, None), (3, Severity.IMMEDIATE)])
def test_health_failing_in_a_row_means_down(failures, severity) -> None:
    assert verdict(health_failures_in_a_row=failures).severity == severity


@pytest.mark.parametrize(("restarts", "severity"), [(2, None), (3, Severity.INVESTIGATE)])
def test_frequent_restarts(restarts, severity) -> None:
    assert verdict(restarts_in_window=restarts).severity == severity


def test_a_failing_api_check_is_a_broken_feature() -> None:
    result = verdict(api_check_failing=True)
    assert result.severity == Severity.INVESTIGATE and "feature is broken" in result.reasons[0]


def test_immediate_wins_and_keeps_every_reason() -> None:
    result = verdict(error_ratio=0.6, p95_ms=500.0)
    assert result.severity == Severity.IMMEDIATE
    assert len(result.reasons) == 2 and result.reasons[0].startswith("error ratio 60.0% > 50%")


def test_missing_data_is_never_read_as_healthy_silence() -> None:
    result = judge(Evidence())
    assert result.severity is None
    assert result.missing == ["error ratio", "p95 latency"]


def test_catalog_thresholds_override_the_runbook_defaults() -> None:
    strict = GuardThresholds(investigate_error_ratio=0.02, latency_factor=1.5)
    assert (
        judge(Evidence(**{**HEALTHY, "error_ratio": 0.03}), strict).severity == Severity.INVESTIGATE
    )
    assert judge(Evidence(**{**HEALTHY, "p95_ms": 150.0}), strict).severity == Severity.INVESTIGATE
    with pytest.raises(ValueError):
        GuardThresholds(latency_factor=1.0)
