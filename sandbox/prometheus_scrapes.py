"""What Managed Service for Prometheus holds for the sandbox's pods: the app's
`http_requests_total{code,method}` counter and `http_request_duration_seconds`
histogram, one series per pod, as a PodMonitoring's scrapes saw them.

Every pod is a target scraped each `scrape_interval` seconds of metric time,
at its own offset within the interval (as Prometheus spreads its targets); a
sample exists only at a scrape time and becomes readable `ingestion_delay`
seconds later. A labelled counter appears at the first scrape after its first
request (client libraries create a label set's child on first use) and a
pod's series stop `STALE_AFTER` seconds after the last request it answered
(the sandbox does not know when a retired pod stopped being scraped).

The counts are the requests the pods really answered (`ServedRequest`); an
answer no pod gave (a 503 for want of a ready pod) is in none of them, as in
production, where only the load balancer sees it."""

from __future__ import annotations

import bisect
import math
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import gke_names
from .kube.loadbalancer import ServedRequest
from .monitoring import PROM_BUCKETS
from .promql import Labels, Matcher

COUNTER = "http_requests_total"
HISTOGRAM = "http_request_duration_seconds"
METRIC_NAMES = (COUNTER, f"{HISTOGRAM}_bucket", f"{HISTOGRAM}_count", f"{HISTOGRAM}_sum")
STALE_AFTER = 300.0  # Prometheus's lookback: a series with no sample for 5 min is gone


@dataclass
class _Series:
    """One pod's requests of one (code, method): their times and latencies, and their
    times per histogram bucket (bin i: slower than bound i-1, no slower than bound i)."""

    labels: dict[str, str]
    times: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # parallel to times
    bins: list[list[float]] = field(
        default_factory=lambda: [[] for _ in range(len(PROM_BUCKETS) + 1)]
    )

    def add(self, at: float, seconds: float) -> None:
        i = bisect.bisect_right(self.times, at)  # the end, unless answered out of order
        self.times.insert(i, at)
        self.latencies.insert(i, seconds)
        bisect.insort(self.bins[bisect.bisect_left(PROM_BUCKETS, seconds)], at)

    def count_at(self, at: float) -> int:
        return bisect.bisect_right(self.times, at)

    def sum_at(self, at: float) -> float:
        return math.fsum(self.latencies[: self.count_at(at)])

    def bucket_at(self, le_index: int, at: float) -> int:
        """Requests up to `at` no slower than bucket `le_index`'s bound (the last: +Inf)."""
        return sum(bisect.bisect_right(b, at) for b in self.bins[: le_index + 1])


class PrometheusScrapes:
    def __init__(
        self,
        traffic: Callable[[], Iterable[ServedRequest]],
        now: Callable[[], float],
        project: str,
        *,
        scrape_interval: float = 30.0,
        ingestion_delay: float = 5.0,
    ) -> None:
        if scrape_interval <= 0:
            raise ValueError("the scrape interval must be positive")
        self.traffic = traffic
        self.now = now  # metric time
        self.project = project
        self.scrape_interval = scrape_interval
        self.ingestion_delay = ingestion_delay
        self._series: dict[tuple, _Series] = {}
        self._last_seen: ServedRequest | None = None

    def _take_new(self) -> None:
        """Index the requests served since the last read (the traffic log only grows at its end)."""
        fresh: list[ServedRequest] = []
        oldest = self._last_seen.time - 60.0 if self._last_seen is not None else -math.inf
        for served in reversed(self.traffic()):  # type: ignore[call-overload]
            if served == self._last_seen or served.time < oldest:
                break
            fresh.append(served)
        if fresh:
            self._last_seen = fresh[0]
        for served in reversed(fresh):
            if not served.pod:
                continue  # no pod answered: the app never counted it
            namespace, job = served.service.split("/", 1)
            key = (served.service, served.pod, str(served.status), served.method)
            series = self._series.get(key)
            if series is None:
                target = gke_names.prometheus_target(self.project, namespace, job, served.pod)
                series = self._series[key] = _Series(
                    labels={
                        **target,
                        "pod": served.pod,
                        "code": str(served.status),
                        "method": served.method,
                    }
                )
            series.add(served.time, served.latency_ms / 1000.0)

    def _scrapes(self, instance: str, after: float, until: float) -> list[float]:
        """This target's scrape times in (after, until]."""
        offset = (zlib.crc32(instance.encode()) % 1000) / 1000 * self.scrape_interval
        k = math.floor((after - offset) / self.scrape_interval) + 1
        out = []
        while (t := offset + k * self.scrape_interval) <= until:
            out.append(t)
            k += 1
        return out

    def samples(
        self, metric: str, matchers: list[Matcher], after: float, until: float
    ) -> dict[Labels, list[tuple[float, float]]]:
        """The readable samples of the series `metric{matchers}` in (after, until]."""
        if metric not in METRIC_NAMES:
            return {}
        self._take_new()
        readable = min(until, self.now() - self.ingestion_delay)
        les: list[tuple[int, str]] = [(0, "")]
        if metric.endswith("_bucket"):
            bounds = [*(format(b, "g") for b in PROM_BUCKETS), "+Inf"]
            les = [(i, le) for i, le in enumerate(bounds)]
        out: dict[Labels, list[tuple[float, float]]] = {}
        for series in list(self._series.values()):
            for le_index, le in les:
                labels = {"__name__": metric, **series.labels, **({"le": le} if le else {})}
                if not all(m.matches(labels.get(m.name, "")) for m in matchers):
                    continue
                born, last = series.times[0], series.times[-1] + STALE_AFTER
                points = []
                for t in self._scrapes(series.labels["instance"], after, readable):
                    if t < born or t > last:
                        continue
                    if metric == COUNTER or metric.endswith("_count"):
                        value = float(series.count_at(t))
                    elif metric.endswith("_sum"):
                        value = series.sum_at(t)
                    else:
                        value = float(series.bucket_at(le_index, t))
                    points.append((t, value))
                if points:
                    out[tuple(sorted(labels.items()))] = points
        return out
