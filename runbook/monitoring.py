"""Where a GKE service's request and latency metrics really live in Cloud
Monitoring, as presets a team picks per service, and the rules every query
must keep (alignment periods of whole minutes, at least 60 s).

- `gke_l7`: the service behind a GKE Ingress or Gateway (an external
  Application Load Balancer). Metrics `loadbalancing.googleapis.com/https/*`
  on the `https_lb_rule` resource; GKE names the backend service after the
  Service's NEG, `k8s1-{cluster uid8}-{namespace}-{service}-{port}-{hash8}`.
  Google documents these points as not visible for up to 210 s.
- `managed_prometheus`: the app's own `http_requests_total{code}` and
  `http_request_duration_seconds` histogram scraped by Managed Service for
  Prometheus, on the `prometheus_target` resource (job = the PodMonitoring).
- `custom`: the team's own metric types and filters.

A `type: LoadBalancer` Service on GKE is a passthrough network load balancer:
it has no request or latency metrics at all, so no preset reads it."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict

Preset = Literal["gke_l7", "managed_prometheus", "custom"]
PRESETS: tuple[str, ...] = ("gke_l7", "managed_prometheus", "custom")
MIN_ALIGNMENT_SECONDS = 60  # Aggregation.alignment_period: "at least 60 seconds"

GKE_NEG_NAME = "k8s1-[0-9a-f]{8}-{namespace}-{service}-[0-9]+-[0-9a-f]{8}"


class MetricSource(BaseModel):
    """One service's metric settings with the preset's defaults filled in."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    preset: Preset
    request_count_metric: str
    latency_metric: str
    class_label: str  # a server error is a value starting with "5" (500 class, or codes 500-599)
    latency_unit: Literal["ms", "s"]
    resource_filter: str
    ingestion_delay_seconds: int
    alert_filter: str
    alert_policy_filter: str

    def filter_for(self, namespace: str, service: str) -> str:
        return fill(self.resource_filter, namespace, service)


def fill(template: str, namespace: str, service: str) -> str:
    """Put the service in a filter. Not str.format: regular expressions keep their braces."""
    return template.replace("{namespace}", namespace).replace("{service}", service)


ALERTS_BY_LABELS = (
    'policy.user_labels.namespace = "{namespace}" AND policy.user_labels.service = "{service}"'
)
POLICIES_BY_LABELS = 'user_label.namespace = "{namespace}" AND user_label.service = "{service}"'

DEFAULTS: dict[str, dict[str, object]] = {
    "gke_l7": {
        "request_count_metric": "loadbalancing.googleapis.com/https/request_count",
        "latency_metric": "loadbalancing.googleapis.com/https/total_latencies",
        "class_label": "response_code_class",
        "latency_unit": "ms",
        "resource_filter": 'resource.type = "https_lb_rule" AND '
        "resource.labels.backend_target_name = "
        f'monitoring.regex.full_match("{GKE_NEG_NAME}")',
        # "not visible for up to 210 seconds" (load-balancing metrics docs)
        "ingestion_delay_seconds": 210,
        "alert_filter": ALERTS_BY_LABELS,
        "alert_policy_filter": POLICIES_BY_LABELS,
    },
    "managed_prometheus": {
        "request_count_metric": "prometheus.googleapis.com/http_requests_total/counter",
        "latency_metric": "prometheus.googleapis.com/http_request_duration_seconds/histogram",
        "class_label": "code",
        "latency_unit": "s",
        "resource_filter": 'resource.type = "prometheus_target" AND resource.labels.namespace = '
        '"{namespace}" AND resource.labels.job = "{service}"',
        # Not a published figure: one scrape interval (PodMonitoring's 60 s) plus the write.
        "ingestion_delay_seconds": 90,
        "alert_filter": ALERTS_BY_LABELS,
        "alert_policy_filter": POLICIES_BY_LABELS,
    },
    "custom": {},
}
CUSTOM_REQUIRED = (
    "request_count_metric",
    "latency_metric",
    "class_label",
    "latency_unit",
    "resource_filter",
    "ingestion_delay_seconds",
)


def whole_minutes(seconds: int) -> bool:
    return seconds >= MIN_ALIGNMENT_SECONDS and seconds % MIN_ALIGNMENT_SECONDS == 0


def floor_minute(at: dt.datetime) -> dt.datetime:
    return at - dt.timedelta(seconds=at.timestamp() % MIN_ALIGNMENT_SECONDS)


def ceil_minute(at: dt.datetime) -> dt.datetime:
    floored = floor_minute(at)
    return floored if floored == at else floored + dt.timedelta(seconds=MIN_ALIGNMENT_SECONDS)


def latest_window(
    now: dt.datetime, delay_seconds: int, window_seconds: int
) -> tuple[dt.datetime, dt.datetime]:
    """The most recent complete window of whole minutes whose points are visible."""
    end = floor_minute(now - dt.timedelta(seconds=delay_seconds))
    return end - dt.timedelta(seconds=window_seconds), end
