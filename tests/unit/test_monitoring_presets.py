"""The monitoring presets and the window arithmetic: pure runbook knowledge."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from google.api import distribution_pb2
from pydantic import ValidationError

from activities.percentiles import distribution_percentile
from runbook.catalog import Catalog
from runbook.guard import MonitoringConfig
from runbook.monitoring import ceil_minute, floor_minute, latest_window
from worker.catalog_file import CatalogError, load_catalog
from worker.settings import bundled_catalog

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("seconds", [0, 10, 30, 90, 301])
def test_windows_must_be_whole_minutes_of_at_least_sixty_seconds(seconds: int) -> None:
    with pytest.raises(ValidationError, match="whole minutes of at least 60 s"):
        MonitoringConfig(preset="gke_l7", window_seconds=seconds)
    assert MonitoringConfig(preset="gke_l7", window_seconds=300).window_seconds == 300


def test_presets_name_gkes_real_resources_and_delays() -> None:
    l7 = MonitoringConfig(preset="gke_l7").source()
    assert (
        l7.request_count_metric == "loadbalancing.googleapis.com/https/request_count"
        and l7.ingestion_delay_seconds == 210
    )
    assert (
        'resource.type = "https_lb_rule"' in l7.resource_filter
        and "forwarding_rule_name" not in l7.resource_filter
    )
    assert "k8s1-[0-9a-f]{8}-default-tekutoko-api-[0-9]+-[0-9a-f]{8}" in l7.filter_for(
        "default", "tekutoko-api"
    )  # braces of the regex kept
    gmp = MonitoringConfig(preset="managed_prometheus", ingestion_delay_seconds=5).source()
    assert (
        gmp.latency_metric.endswith("/histogram")
        and gmp.latency_unit == "s"
        and gmp.class_label == "code"
        and gmp.ingestion_delay_seconds == 5
    )
    assert 'resource.labels.job = "api"' in gmp.filter_for("prod", "api")


def test_no_preset_and_an_incomplete_custom_are_refused_with_the_missing_settings() -> None:
    with pytest.raises(ValueError, match="monitoring.preset is not set"):
        MonitoringConfig().source()
    with pytest.raises(
        ValidationError, match="custom needs .*resource_filter.*alert_policy_filter"
    ):
        MonitoringConfig(preset="custom", request_count_metric="custom.googleapis.com/requests")
    custom = MonitoringConfig(
        preset="custom",
        request_count_metric="a",
        latency_metric="b",
        class_label="code",
        latency_unit="ms",
        resource_filter='resource.type = "k8s_container"',
        ingestion_delay_seconds=0,
        alerts=False,
    )
    assert custom.source().alert_filter == ""


def test_windows_end_on_the_newest_readable_minute() -> None:
    now = dt.datetime(2026, 11, 28, 10, 7, 42, tzinfo=dt.UTC)
    assert floor_minute(now) == now.replace(second=0) and ceil_minute(now) == now.replace(
        minute=8, second=0
    )
    assert ceil_minute(now.replace(second=0)) == now.replace(second=0)
    start, end = latest_window(now, 210, 120)  # 10:04:12 readable -> minutes up to 10:04
    assert (start, end) == (now.replace(minute=2, second=0), now.replace(minute=4, second=0))


def test_percentiles_come_from_merged_buckets() -> None:
    explicit = distribution_pb2.Distribution.BucketOptions(
        explicit_buckets={"bounds": [0.1, 0.2, 0.5]}
    )
    a = distribution_pb2.Distribution(
        count=10, mean=0.12, bucket_options=explicit, bucket_counts=[5, 5, 0, 0]
    )
    b = distribution_pb2.Distribution(
        count=10, mean=0.3, bucket_options=explicit, bucket_counts=[0, 0, 10, 0]
    )
    assert distribution_percentile([a], 50) == pytest.approx(0.1)
    assert distribution_percentile([a, b], 95) == pytest.approx(
        0.2 + 0.3 * 9 / 10
    )  # rank 19 of 20, 9th of 10 in [0.2, 0.5)
    assert distribution_percentile([], 95) is None


def test_the_bundled_catalog_uses_a_preset_and_the_production_one_makes_a_team_choose(
    tmp_path: Path,
) -> None:
    bundled = load_catalog(bundled_catalog()).services[0].monitoring
    assert bundled.preset == "gke_l7" and bundled.window_seconds == 60
    manifest = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "catalog.yaml").read_text())
    text = manifest["data"]["catalog.yaml"]
    (tmp_path / "catalog.yaml").write_text(text)
    with pytest.raises(CatalogError, match="monitoring.preset"):
        load_catalog(tmp_path / "catalog.yaml")
    chosen = Catalog.model_validate(
        yaml.safe_load(
            text.replace("CHOOSE-gke_l7-managed_prometheus-or-custom", "managed_prometheus")
        )
    )
    assert chosen.services[0].monitoring.source().ingestion_delay_seconds == 90
