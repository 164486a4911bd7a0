"""Where a GKE service's request and latency metrics really live in Cloud
Monitoring, as presets a team picks per service, and the rules every query
must keep (alignment periods of whole minutes, at least 60 s).

- `gke_l7`: the service behind a GKE Ingress or Gateway (an external
  Application Load Balancer). Metrics `loadbalancing.googleapis.com/https/*`
  on the `https_lb_rule` resource, found by `backend_target_name`, the
  backend service GKE made for the Service (see `gke_backend_regex`).
  Google documents these points as not visible for up to 210 s.
- `managed_prometheus`: the app's own `http_requests_total{code}` and
  `http_request_duration_seconds` histogram scraped by Managed Service for
  Prometheus, on the `prometheus_target` resource (job = the PodMonitoring).
- `custom`: the team's own metric types and filters.
- `promql`: the same Prometheus counter and histogram, read in PromQL from
  Managed Service for Prometheus's query API
  (`/v1/projects/{p}/location/global/prometheus/api/v1/query_range`): samples
  at each scrape, readable seconds after it, so a reading is a rate over two
  scrape intervals rather than whole minutes (see `activities.promql`).

A `type: LoadBalancer` Service on GKE is a passthrough network load balancer:
it has no request or latency metrics at all, so no preset reads it."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

Preset = Literal["gke_l7", "managed_prometheus", "custom", "promql"]
PRESETS: tuple[str, ...] = ("gke_l7", "managed_prometheus", "custom", "promql")
MIN_ALIGNMENT_SECONDS = 60  # Aggregation.alignment_period: "at least 60 seconds"

GKE_BACKEND = "{gke_backend}"  # in a resource filter: the regex of the Service's backends
BACKEND_LABEL = "backend_target_name"

# How GKE names the backend service of a Service port (docs/production.md,
# "GKE load balancer names"). The namespace, service and port are cut down by
# `trim_evenly` so that the whole name fits Compute Engine's 63 characters.
NEG_BUDGET = 38  # ingress-gce: 63 - "k8s1" - 8 (cluster uid) - 8 (hash) - 5 hyphens
GATEWAY_PREFIX = "gkegw1-"  # GKE Gateway controller; closed source, shape inferred
GATEWAY_BUDGET = 36  # 63 - "gkegw1" - 4 (cluster id) - 12 (hash) - 5 hyphens
PORT_DIGITS = range(1, 6)  # a Service port is 1..65535
_NEG_NAME = re.compile(r"k8s1-([0-9a-f]{8})-([a-z0-9-]*)-([0-9a-f]{8})")


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
    scrape_interval_seconds: int = 0  # promql: the PodMonitoring's interval
    step_seconds: int = 0  # promql: the query_range resolution

    @property
    def promql(self) -> bool:
        return self.preset == "promql"

    def promql_window_seconds(self) -> int:
        """A rate needs two samples: two scrape intervals always hold at least two."""
        return 2 * self.scrape_interval_seconds

    def filter_for(self, namespace: str, service: str) -> str:
        return fill(self.resource_filter, namespace, service)

    def checks_backends(self) -> bool:
        """The filter selects backends by GKE's naming, so each series' backend
        name can be checked against the Service (`is_gke_backend_of`)."""
        return GKE_BACKEND in self.resource_filter


def fill(template: str, namespace: str, service: str) -> str:
    """Put the service in a filter. Not str.format: regular expressions keep their braces."""
    if GKE_BACKEND in template:
        template = template.replace(GKE_BACKEND, gke_backend_regex(namespace, service))
    return template.replace("{namespace}", namespace).replace("{service}", service)


def trim_evenly(budget: int, *fields: str) -> tuple[str, ...]:
    """ingress-gce's TrimFieldsEvenly: when the fields are longer than `budget`
    together, each keeps a share of its own length (integer division, one more
    character cut from each), and the characters left over go back to the
    first fields, one each."""
    total = sum(len(f) for f in fields)
    if budget <= 0 or total <= budget:
        return fields
    excess = total - budget
    keep = [len(f) - len(f) * excess // total - 1 for f in fields]
    for i in range(budget - sum(keep)):
        keep[i] += 1
    return tuple(f[:n] for f, n in zip(fields, keep, strict=True))


def neg_hash(uid8: str, namespace: str, service: str, port: str) -> str:
    """The 8-hex suffix of a NEG name: sha256 of "uid;namespace;service;port",
    over the untrimmed names and the cluster uid as it appears in the name."""
    return hashlib.sha256(f"{uid8};{namespace};{service};{port}".encode()).hexdigest()[:8]


def _ports(cases: list[tuple[int, int]]) -> str:
    """A regex for the port part: (digits of the port, digits kept) pairs."""
    kept = sorted({k for _, k in cases})
    if all(d == k for d, k in cases) and [d for d, _ in cases] == list(PORT_DIGITS):
        return "[0-9]+"
    if kept == [0]:
        return ""
    if kept == [1]:
        return "[0-9]"
    if len(kept) == 1:
        return f"[0-9]{{{kept[0]}}}"
    if kept == list(range(kept[0], kept[-1] + 1)):
        return f"[0-9]{{{kept[0]},{kept[-1]}}}"
    return "(?:" + "|".join(f"[0-9]{{{k}}}" for k in kept) + ")"


def _middles(budget: int, namespace: str, service: str, trim_port: bool) -> list[str]:
    """The `{namespace}-{service}-{port}` parts a name can have, whatever the port."""
    by_names: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for digits in PORT_DIGITS:
        if trim_port:
            ns, svc, port = trim_evenly(budget, namespace, service, "0" * digits)
        else:
            ns, svc = trim_evenly(budget - digits, namespace, service)
            port = "0" * digits
        by_names.setdefault((ns, svc), []).append((digits, len(port)))
    return [f"{ns}-{svc}-{_ports(cases)}" for (ns, svc), cases in by_names.items()]


def gke_backend_regex(namespace: str, service: str) -> str:
    """The backend services GKE can have made for this Service, as one RE2
    regular expression for `monitoring.regex.full_match`:

    - Ingress (ingress-gce, NEG backends): `k8s1-{uid8}-{ns}-{svc}-{port}-{hash8}`,
      namespace, service and port trimmed together to 38 characters;
    - Gateway: `gkegw1-{id4}-{ns}-{svc}-{port}-{hash12}`, namespace and service
      trimmed to 36 characters less the port's digits (inferred from names GKE
      wrote; its code is not public).

    Kubernetes names are lowercase letters, digits and hyphens: nothing to escape."""
    neg = [
        f"k8s1-[0-9a-f]{{8}}-{middle}-[0-9a-f]{{8}}"
        for middle in _middles(NEG_BUDGET, namespace, service, trim_port=True)
    ]
    gateway = [
        f"gkegw1-[0-9a-z]{{4}}-{middle}-[0-9a-z]{{12}}"
        for middle in _middles(GATEWAY_BUDGET, namespace, service, trim_port=False)
    ]
    return "(?:" + "|".join(neg + gateway) + ")"


@functools.lru_cache(maxsize=1024)  # a trimmed port can mean hashing thousands of candidates
def is_gke_backend_of(name: str, namespace: str, service: str) -> bool:
    """Whether a backend name the regex matched is really this Service's.
    Trimmed names of different Services can coincide (and `a-b` + `c` reads
    like `a` + `b-c`); an Ingress NEG name's hash settles it. A Gateway's hash
    is not published: its names are taken on their shape alone."""
    if name.startswith(GATEWAY_PREFIX):
        return re.fullmatch(gke_backend_regex(namespace, service), name) is not None
    found = _NEG_NAME.fullmatch(name)
    if found is None:
        return False
    uid8, middle, digest = found.groups()
    for digits in PORT_DIGITS:
        ns, svc, port = trim_evenly(NEG_BUDGET, namespace, service, "0" * digits)
        head = f"{ns}-{svc}-"
        if not middle.startswith(head) or len(middle) - len(head) != len(port):
            continue
        kept = middle[len(head) :]
        if len(port) == digits:
            candidates: list[str] = [kept]
        else:  # the port itself was trimmed: try every port it can have been
            low = max(1, 10 ** (digits - 1))
            candidates = [
                str(p) for p in range(low, min(10**digits, 65536)) if str(p).startswith(kept)
            ]
        if any(neg_hash(uid8, namespace, service, p) == digest for p in candidates):
            return True
    return False


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
        f"resource.labels.{BACKEND_LABEL} = "
        f'monitoring.regex.full_match("{GKE_BACKEND}")',
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
    "promql": {
        "request_count_metric": "http_requests_total",
        "latency_metric": "http_request_duration_seconds",
        "class_label": "code",
        "latency_unit": "s",
        # PromQL label matchers; GMP gives each sample its target's namespace and job.
        "resource_filter": 'namespace="{namespace}",job="{service}"',
        # Not a published figure: Google describes Prometheus data as queryable within seconds.
        "ingestion_delay_seconds": 10,
        "alert_filter": ALERTS_BY_LABELS,
        "alert_policy_filter": POLICIES_BY_LABELS,
        "scrape_interval_seconds": 30,  # the interval of Google's PodMonitoring examples
        "step_seconds": 10,
    },
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
