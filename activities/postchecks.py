"""The runbook's post-checks after a rollback, read from where production keeps
them: GKE's container metrics and Cloud SQL's `num_backends` from Cloud
Monitoring, `severity>=ERROR` entries from Cloud Logging, and the pods' own
recent logs from the Kubernetes API (`kubectl logs --tail`).

A read that fails for a reason on the reader's side (429, 5xx, no answer) is
`Unreadable`: the caller tries that read again later and never counts it as an
unhealthy service."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from google.api_core import exceptions as google_exceptions
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from runbook.models import CheckResult, VerifyRequest
from runbook.monitoring import MIN_ALIGNMENT_SECONDS, ceil_minute, floor_minute
from runbook.postchecks import (
    BACKENDS_METRIC,
    CPU_METRIC,
    LIMITED,
    MEMORY_METRIC,
    PostChecks,
    container_filter,
    database_filter,
    judge_logs,
    judge_pool,
    judge_utilization,
    judged_containers,
    log_filter,
    no_limit_detail,
    no_limit_note,
    redact,
    without_limit,
)
from runbook.verification import (
    DEADLINE_FIX,
    FirstMinute,
    not_judged_detail,
    waiting_detail,
)

from .cloud_logging import CloudLogging, LogReadError
from .kubernetes import selector_string
from .metrics import MetricClock, Monitoring

REVISION = "deployment.kubernetes.io/revision"

T = TypeVar("T")


class Unreadable(Exception):
    """A check could not be read just now; the message says what and why."""


def unreadable(what: str, exc: BaseException) -> Unreadable:
    said = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return Unreadable(f"could not read {what}: {said.split('; retrying')[0][:300]}")


async def guarded(what: str, coro: Awaitable[T]) -> T:
    """Await `coro`, turning a transient failure of the reader into Unreadable;
    permanent errors (a refused query, denied access) pass through."""
    try:
        return await coro
    except ApplicationError as exc:
        if exc.non_retryable:
            raise
        raise unreadable(what, exc) from None
    except (
        google_exceptions.GoogleAPICallError,
        google_exceptions.RetryError,
        LogReadError,
        aiohttp.ClientError,
        TimeoutError,
    ) as exc:
        raise unreadable(what, exc) from None
    except ApiException as exc:
        if exc.status in (401, 403, 404):
            raise
        raise unreadable(what, ApplicationError(f"Kubernetes API {exc.status}")) from None


@dataclass(frozen=True)
class Timing:
    """When a verification began (the rollout's end, wall time), until when it may wait
    for late data, and the clock the data's minutes are kept on."""

    since: dt.datetime
    deadline: dt.datetime
    clock: MetricClock

    def gate(self, name: str, what: str, delay: float) -> CheckResult | None:
        """None once the first whole minute after the rollout is readable; until then a
        pending check saying until when, or `not judged` when that is past the deadline."""
        minute = FirstMinute.after(self.clock.at(self.since), delay)
        return self._until(
            name, f"{what} of {minute.span()}", minute.readable_at, waiting_detail(what, minute)
        )

    def after(self, name: str, what: str, seconds: float) -> CheckResult | None:
        """The same for data judged once it covers `seconds` since the rollout."""
        at = self.clock.at(self.since) + dt.timedelta(seconds=seconds)
        covered = (self.clock.now() - self.clock.at(self.since)).total_seconds()
        return self._until(
            name,
            what,
            at,
            f"waiting: {what} since the rollout cover {covered:.0f} s of the {seconds:.0f} s "
            f"judged, readable at {at:%H:%M:%S} UTC",
        )

    def window(
        self, delay: float, *, whole_minutes: bool = True
    ) -> tuple[dt.datetime, dt.datetime]:
        """The whole minutes since the rollout whose points are visible now (metric time);
        `whole_minutes` False: all the time since the rollout that is readable (PromQL)."""
        since, readable = self.clock.at(self.since), self.clock.now() - dt.timedelta(seconds=delay)
        if not whole_minutes:
            return since, readable
        return ceil_minute(since), floor_minute(readable)

    def next_minute(
        self, name: str, detail: str, end: dt.datetime, delay: float, period: float | None = None
    ) -> CheckResult:
        """Read, but too little to judge: wait for the next minute's points (or the next
        scrape's, `period` seconds later)."""
        at = end + dt.timedelta(seconds=(period or MIN_ALIGNMENT_SECONDS) + delay)
        return CheckResult(
            name=name,
            ok=False,
            pending=True,
            readable_at=self.clock.wall(at),
            detail=f"{detail}; next reading at {at:%H:%M:%S} UTC",
        )

    def _until(
        self, name: str, what: str, readable: dt.datetime, waiting: str
    ) -> CheckResult | None:
        if readable <= self.clock.now():
            return None
        deadline = self.clock.at(self.deadline)
        if readable > deadline:
            return CheckResult(
                name=name,
                ok=True,
                judged=False,
                detail=not_judged_detail(what, readable, deadline, DEADLINE_FIX),
            )
        return CheckResult(
            name=name,
            ok=False,
            pending=True,
            readable_at=self.clock.wall(readable),
            detail=waiting,
        )


class PostCheckReader:
    def __init__(
        self,
        apps: client.AppsV1Api,
        core: client.CoreV1Api,
        monitoring: Monitoring | None,
        logging: CloudLogging | None,
    ) -> None:
        self.apps = apps
        self.core = core
        self.monitoring = monitoring
        self.logging = logging

    def _project(self, request: VerifyRequest) -> str | None:
        if self.monitoring is None:
            return None
        config = request.monitoring
        return (config.project if config else None) or self.monitoring.project

    async def release_started(self, request: VerifyRequest, deployment: Any) -> dt.datetime | None:
        """When the release that was rolled back began: the creation of the newest
        ReplicaSet other than the one now live. None when there is none."""
        selector = selector_string(
            self.apps.api_client.sanitize_for_serialization(deployment.spec.selector)
        )
        sets = (
            await self.apps.list_namespaced_replica_set(request.namespace, label_selector=selector)
        ).items
        live = (deployment.metadata.annotations or {}).get(REVISION)
        others = [rs for rs in sets if (rs.metadata.annotations or {}).get(REVISION) != live]
        if not others:
            return None
        newest = max(
            others, key=lambda rs: int((rs.metadata.annotations or {}).get(REVISION, "0") or 0)
        )
        started: dt.datetime | None = newest.metadata.creation_timestamp
        return started

    async def unlimited(
        self, request: VerifyRequest, checks: PostChecks, deployment: Any
    ) -> tuple[list[str], dict[str, list[str]]]:
        """(the containers judged, metric -> those of them without the limit it is a share
        of), from the Deployment's pod template. Only when the template leaves a limit out
        are the pods read too: admission (a LimitRange's defaults) may have given them one,
        and then GKE writes the series."""
        serialize = self.apps.api_client.sanitize_for_serialization
        specs = [serialize(deployment.spec.template.spec) or {}]
        missing = {m: without_limit(specs, m, checks.container) for m in LIMITED}
        if any(missing.values()):
            selector = selector_string(serialize(deployment.spec.selector))
            pods = (
                await self.core.list_namespaced_pod(request.namespace, label_selector=selector)
            ).items
            specs += [
                serialize(p.spec) or {} for p in pods if p.metadata.deletion_timestamp is None
            ]
            missing = {m: without_limit(specs, m, checks.container) for m in LIMITED}
        return judged_containers(specs[0], checks.container), missing

    async def resources(
        self, request: VerifyRequest, checks: PostChecks, timing: Timing, deployment: Any
    ) -> list[CheckResult]:
        """CPU and memory limit utilization of the service's containers. A container
        without the limit has no such series: a check none of whose containers has one is
        not judged (neither passed nor failed) and says so, never "no data"."""
        project = self._project(request)
        if self.monitoring is None or project is None:
            why = (
                "this worker has no Cloud Monitoring access (MODORU_MONITORING_*)"
                if self.monitoring is None
                else "no monitoring project"
            )
            return [
                CheckResult(name=n, ok=True, detail=f"skipped: {why}") for n in ("cpu", "memory")
            ]
        names, missing = await guarded(
            "the pods' limits", self.unlimited(request, checks, deployment)
        )
        read = any(len(missing[m]) < len(names) or not names for m in LIMITED)
        released = (
            await guarded("the deployment's ReplicaSets", self.release_started(request, deployment))
            if read
            else None
        )
        found = []
        for name, metric, what, fallback in (
            ("cpu", CPU_METRIC, "CPU", checks.max_cpu_utilization),
            ("memory", MEMORY_METRIC, "memory", checks.max_memory_utilization),
        ):
            unlimited = missing[metric]
            if names and len(unlimited) == len(names):
                found.append(
                    CheckResult(
                        name=name, ok=True, judged=False, detail=no_limit_detail(what, unlimited)
                    )
                )
                continue
            note = no_limit_note(what, unlimited)
            delay = checks.delay(metric)
            if (waiting := timing.gate(name, f"{what} utilization", delay)) is not None:
                found.append(waiting)
                continue
            filter_ = container_filter(
                metric, checks, request.namespace, request.deployment, project
            )
            start, end = timing.window(delay)
            baseline = None
            if released is not None:
                b_end = floor_minute(self.monitoring.clock.at(released))
                minutes = await guarded(
                    f"{what} baseline",
                    self.monitoring.gauge_minutes(
                        project,
                        metric,
                        filter_,
                        b_end - dt.timedelta(minutes=checks.baseline_minutes),
                        b_end,
                    ),
                )
                baseline = sum(minutes) / len(minutes) if minutes else None
            minutes = await guarded(
                f"{what} utilization",
                self.monitoring.gauge_minutes(project, metric, filter_, start, end),
            )
            n, ok, detail = judge_utilization(
                name, what, max(minutes) if minutes else None, baseline, fallback, checks
            )
            if not minutes:
                found.append(timing.next_minute(n, detail + note, end, delay))
                continue
            found.append(
                CheckResult(name=n, ok=ok, detail=detail + f" over {len(minutes)} min" + note)
            )
        return found

    async def connection_pool(
        self, request: VerifyRequest, checks: PostChecks, timing: Timing
    ) -> CheckResult:
        project = self._project(request)
        if checks.cloudsql_instance is None:
            return CheckResult(
                name="connection_pool",
                ok=True,
                detail="skipped: no Cloud SQL instance for this service "
                "(post_checks.cloudsql_instance)",
            )
        if self.monitoring is None or project is None:
            return CheckResult(
                name="connection_pool",
                ok=True,
                detail="skipped: this worker has no Cloud Monitoring access (MODORU_MONITORING_*)",
            )
        delay = checks.delay(BACKENDS_METRIC)
        if (waiting := timing.gate("connection_pool", "num_backends", delay)) is not None:
            return waiting
        start, end = timing.window(delay)
        filter_ = database_filter(
            project, checks.cloudsql_project or project, checks.cloudsql_instance
        )
        minutes = await guarded(
            "num_backends",
            self.monitoring.gauge_minutes(
                project, BACKENDS_METRIC, filter_, start, end, reducer="REDUCE_SUM"
            ),
        )
        name, ok, detail = judge_pool(round(max(minutes)) if minutes else None, checks)
        if not minutes:
            return timing.next_minute(name, detail, end, delay)
        return CheckResult(name=name, ok=ok, detail=detail)

    async def logs(
        self,
        request: VerifyRequest,
        checks: PostChecks,
        timing: Timing,
        selector: dict[str, str],
    ) -> CheckResult:
        project = self._project(request) or (self.logging.project if self.logging else None)
        if self.logging is None or project is None:
            return CheckResult(
                name="logs",
                ok=True,
                detail="skipped: this worker has no Cloud Logging access (MODORU_LOGGING_*)",
            )
        if (waiting := timing.after("logs", "the logs", checks.log_min_seconds)) is not None:
            return waiting
        count, messages, more = await guarded(
            "Cloud Logging entries",
            self.logging.errors(
                project,
                log_filter(checks, request.namespace, selector, timing.since),
                checks.evidence_messages,
                enough=checks.max_error_entries,
            ),
        )
        name, ok, detail = judge_logs(count, messages, checks, more=more)
        return CheckResult(name=name, ok=ok, detail=detail)

    async def pod_logs(
        self, namespace: str, pods: list[Any], checks: PostChecks
    ) -> dict[str, list[str]]:
        """`kubectl logs POD --tail=N` of each pod (its first container); a pod whose
        log cannot be read says why instead. Evidence only: never judged."""
        found: dict[str, list[str]] = {}
        if not checks.pod_log_lines:
            return found
        for pod in pods[:20]:
            name = pod.metadata.name
            container = checks.container or pod.spec.containers[0].name
            try:
                text = await self.core.read_namespaced_pod_log(
                    name, namespace, container=container, tail_lines=checks.pod_log_lines
                )
                found[name] = [
                    redact(line) for line in str(text).splitlines()[-checks.pod_log_lines :]
                ]
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                found[name] = [
                    "(could not read the log: "
                    f"{getattr(exc, 'status', None) or type(exc).__name__})"
                ]
        return found
