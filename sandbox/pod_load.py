"""What the pods cost while they run, sampled the way GKE and Cloud SQL sample
it, for the Cloud Monitoring emulator's gauge metrics:

- `kubernetes.io/container/{cpu,memory}/limit_utilization` of every running
  container that has that limit (`resources.limits.cpu` / `.memory` in the pod's
  spec), from its image profile (`cpu_utilization`, `memory_utilization`, with a
  little noise); the Cloud SQL Auth Proxy sidecar costs little. A container
  without the limit has no such series, as on GKE: the value is a fraction of
  the limit. Memory comes as two series, `memory_type` `non-evictable` (the
  profile's figure) and `evictable` (page cache filling most of the rest of the
  limit), so a query that does not pick the type reads the wrong figure.
- `cloudsql.googleapis.com/database/postgresql/num_backends`, counted in the
  real PostgreSQL's `pg_stat_activity`. Pods whose profile says
  `db_connections: N` really hold N connections to their database as the app's
  role while they run (the sample app's pool), so a bad image can exhaust it.
- Pods whose profile says `background_errors_per_minute` log that many
  `level=error` lines a minute (a failing background job) on top of the error
  lines the app writes for each 5xx it answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import gke_names
from .kube.clock import Clock
from .kube.kubelet import Kubelet, is_sidecar
from .kube.resources import PODS
from .kube.store import Store

log = logging.getLogger(__name__)
MINUTES_KEPT = (
    180  # per series: three hours of metric time (a baseline looks 30 minutes before a release)
)
SIDECAR_CPU, SIDECAR_MEMORY = 0.02, 0.08
PAGE_CACHE = 0.8  # evictable memory: this share of what non-evictable memory leaves of the limit


def limits_of(pod: dict[str, Any], container: str) -> dict[str, Any]:
    """`resources.limits` of one of the pod's containers (regular or init), {} without."""
    spec = pod.get("spec") or {}
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if c.get("name") == container:
            return (c.get("resources") or {}).get("limits") or {}
    return {}


@dataclass(frozen=True)
class GaugeSample:
    time: float  # metric time
    metric: str  # "cpu", "memory" or "backends"
    resource: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass
class GaugeSeries:
    """One time series, kept as it is served: per minute of metric time (the end of
    the minute), the sum and count of its samples, oldest first; its filter fields
    worked out once."""

    metric: str
    resource: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    fields: dict[str, str]
    minutes: deque  # [minute end, sum, count]


class GaugeStore:
    """Samples kept by series and minute, so a query looks only at the series its
    filter names and, in each, only at the minutes of its interval; memory is
    bounded by MINUTES_KEPT a series, however many samples a minute has."""

    def __init__(self, minutes_kept: int = MINUTES_KEPT) -> None:
        self.minutes_kept = minutes_kept
        self._series: dict[str, dict[tuple, GaugeSeries]] = {}

    def record(self, sample: GaugeSample) -> None:
        by_key = self._series.setdefault(sample.metric, {})
        key = (sample.resource, sample.labels)
        series = by_key.get(key)
        if series is None:
            fields = {
                **{f"resource.labels.{k}": v for k, v in sample.resource},
                **{f"metric.labels.{k}": v for k, v in sample.labels},
            }
            series = by_key[key] = GaugeSeries(
                sample.metric,
                sample.resource,
                sample.labels,
                fields,
                deque(maxlen=self.minutes_kept),
            )
        minute_end = math.ceil(sample.time / 60) * 60
        if series.minutes and series.minutes[-1][0] == minute_end:
            series.minutes[-1][1] += sample.value
            series.minutes[-1][2] += 1
        else:
            series.minutes.append([minute_end, sample.value, 1])

    def series(self, metric: str) -> list[GaugeSeries]:
        return list(self._series.get(metric, {}).values())

    def __len__(self) -> int:
        return sum(
            m[2] for by_key in self._series.values() for s in by_key.values() for m in s.minutes
        )


class PodLoad:
    def __init__(
        self,
        store: Store,
        kubelet: Kubelet,
        clock: Clock,
        project: str,
        *,
        seed: int | None = None,
        database_for: Callable[[dict[str, Any]], Any] | None = None,
        instances: Callable[[], list[Any]] | None = None,
    ) -> None:
        self.store = store
        self.kubelet = kubelet
        self.clock = clock
        self.project = project
        self.samples = GaugeStore()
        self.database_for = database_for or (lambda pod: None)
        self.instances = instances or (lambda: [])
        self._random = random.Random(seed)
        self._held: dict[str, list[Any]] = {}  # pod uid -> open connections
        self._counters: dict[
            str, Any
        ] = {}  # instance name -> superuser connection reading pg_stat_activity
        self._owed: dict[str, float] = {}  # pod uid -> background error lines due
        self._task: asyncio.Task | None = None
        self.interval = max(
            0.25, min(5.0, 15.0 / clock.speed)
        )  # real seconds: 15 s of metric time, within 0.25-5 s

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="pod-load")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for conns in [*self._held.values(), [c for c in self._counters.values()]]:
            for conn in conns:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._held.clear()
        self._counters.clear()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a sampler must never take the sandbox down
                log.warning("pod load sampling failed: %s", exc)
            await asyncio.sleep(self.interval)

    def _noise(self, value: float) -> float:
        return max(0.0, value * (1 + self._random.uniform(-0.05, 0.05)))

    async def tick(self) -> None:
        now = self.clock.metric_time()
        running: dict[str, dict[str, Any]] = {}
        for uid, runtime in list(self.kubelet.pods.items()):
            pod = self.store.peek(PODS, runtime.namespace, runtime.name)
            if pod is None or not runtime.started or pod["metadata"].get("deletionTimestamp"):
                continue
            running[uid] = pod
            containers = [
                (
                    runtime.container,
                    runtime.profile.cpu_utilization,
                    runtime.profile.memory_utilization,
                )
            ]
            if runtime.initialized_at:
                containers += [
                    (c["name"], SIDECAR_CPU, SIDECAR_MEMORY)
                    for c in runtime.init_containers
                    if is_sidecar(c)
                ]
            for container, cpu, memory in containers:
                limits = limits_of(pod, container)
                resource = tuple(
                    sorted(
                        gke_names.k8s_container(
                            self.project, runtime.namespace, runtime.name, container
                        ).items()
                    )
                )
                if limits.get("cpu"):
                    self.samples.record(GaugeSample(now, "cpu", resource, (), self._noise(cpu)))
                if limits.get("memory"):
                    held = min(1.0, self._noise(memory))
                    cache = min(1.0 - held, self._noise((1.0 - held) * PAGE_CACHE))
                    for memory_type, value in (("non-evictable", held), ("evictable", cache)):
                        self.samples.record(
                            GaugeSample(
                                now, "memory", resource, (("memory_type", memory_type),), value
                            )
                        )
            rate = runtime.profile.background_errors_per_minute
            if rate:
                owed = self._owed.get(uid, 0.0) + rate * self.interval * self.clock.speed / 60
                while owed >= 1:
                    self.kubelet.log(
                        uid,
                        'level=error msg="background job failed" job=sync-walks error="upstream '
                        'timeout"',
                    )
                    owed -= 1
                self._owed[uid] = owed
        await self._hold_connections(running)
        await self._count_backends(now)

    async def _hold_connections(self, running: dict[str, dict[str, Any]]) -> None:
        import psycopg

        for uid in [u for u in self._held if u not in running]:
            for conn in self._held.pop(uid):
                with contextlib.suppress(Exception):
                    await conn.close()
            self._owed.pop(uid, None)
        for uid, pod in running.items():
            runtime = self.kubelet.pods.get(uid)
            want = runtime.profile.db_connections if runtime is not None else 0
            if not want or len(self._held.get(uid, [])) >= want:
                continue
            instance = self.database_for(pod)
            if instance is None or not instance.cluster.running:
                continue
            held = self._held.setdefault(uid, [])
            dsn = instance.cluster.dsn(instance.database, instance.user, instance.password)
            while len(held) < want:
                try:
                    held.append(await psycopg.AsyncConnection.connect(dsn, autocommit=True))
                except psycopg.Error as exc:  # the pool is exhausted: the app would log it
                    self.kubelet.log(
                        uid,
                        'level=error msg="cannot open a database connection" '
                        f'error="{str(exc).strip().splitlines()[0][:120]}"',
                    )
                    break

    async def _count_backends(self, now: float) -> None:
        import psycopg

        for instance in self.instances():
            if not instance.cluster.running:
                continue
            conn = self._counters.get(instance.name)
            try:
                if conn is None or conn.closed:
                    conn = self._counters[instance.name] = await psycopg.AsyncConnection.connect(
                        instance.cluster.dsn(), autocommit=True
                    )
                cursor = await conn.execute(
                    "SELECT datname, count(*) FROM pg_stat_activity WHERE backend_type = 'client "
                    "backend' AND datname IS NOT NULL "
                    "AND pid <> pg_backend_pid() GROUP BY datname"
                )
                counts = dict(await cursor.fetchall())
            except psycopg.Error:
                self._counters.pop(instance.name, None)
                continue
            counts.setdefault(instance.database, 0)
            resource = tuple(
                sorted(
                    {
                        "project_id": instance.project,
                        "database_id": f"{instance.project}:{instance.name}",
                        "region": instance.region,
                    }.items()
                )
            )
            for database, count in counts.items():
                if database == "postgres":
                    continue
                self.samples.record(
                    GaugeSample(now, "backends", resource, (("database", database),), float(count))
                )
