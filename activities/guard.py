"""The release guard's hands: the pre-release baseline, and a heartbeating watch
that polls the service's metrics, health, API and pod restarts on an interval
and returns as soon as the runbook's decision table calls for a rollback.

An `immediate` breach returns at once. An `investigate` one is confirmed by
the first complete metrics window that begins after the breach was seen: it
holds only traffic served after the breach, so a release still rolling out
(old and new pods mixed) is judged on what the new version really does, and
may well turn out `immediate`. Windows are whole minutes behind Cloud
Monitoring's ingestion delay (see `activities.metrics`).

What is watched and how it is judged (the Service, health and API paths, the
metric windows and the thresholds) comes from the worker's own catalog entry
for the request's Deployment, never from the request; the state a watch
resumes from (failures in a row, a breach being confirmed) is bounded so that
it can never stand in for what this watch saw. A breach is sealed with the
workers' key over facts naming the guard's run, the rollback it starts and
that rollback's plan, and a breach time no later than the sealing."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel
from temporalio import activity

from runbook import activity_refs as refs
from runbook.catalog import ServiceEntry
from runbook.decisions import SEAL_VERSION, plan_digest, rollback_id_for
from runbook.guard import Evidence, judge
from runbook.guard_models import BaselineRequest, GuardBaseline, WatchReport, WatchRequest
from runbook.models import PlanRequest, ServiceMetrics
from runbook.monitoring import ceil_minute, floor_minute
from runbook.plans import rollback_plan

from .errors import permanent
from .gatekeeper import Gatekeeper
from .heartbeat import Heartbeat
from .kubernetes import selector_string
from .metrics import Monitoring
from .pod_watch import ReleaseWatch
from .promql import SecondRead
from .verify import VerifyActivities


class WatchProgress(BaseModel):
    """Where a watch is: a retried attempt resumes from here."""

    polls: int
    health_failures: int
    confirming: dt.datetime | None = None


API_SAMPLES = 3
REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
BASELINE_SECONDS = 300  # promql: the pre-release traffic a baseline's rates are read over


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def service_url(base_url: str, path: str) -> str:
    """`path` on the Service's own scheme, host and port: a path must begin with one `/`
    (never `//host`, `@host` or a scheme), and the URL is built from its parts."""
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        raise permanent(f"refused: the path {path!r} must begin with a single /", "BadPath")
    if any(ch in path for ch in ("\\", "@", "#")) or any(ord(ch) < 33 for ch in path):
        raise permanent(f"refused: the path {path!r} holds characters a path may not", "BadPath")
    base = urlsplit(base_url)
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        raise permanent(f"refused: the path {path!r} names a host", "BadPath")
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))


class GuardActivities:
    def __init__(
        self,
        checks: VerifyActivities,
        monitoring: Monitoring | None,
        gatekeeper: Gatekeeper | None = None,
    ) -> None:
        self.checks = checks
        self.monitoring = monitoring
        self.gatekeeper = gatekeeper

    def _entry(self, request: WatchRequest | BaselineRequest) -> ServiceEntry | None:
        """The worker's own catalog entry for the request's Deployment (None for a worker
        without a catalog, which seals nothing)."""
        if self.gatekeeper is None:
            return None
        entry = self.gatekeeper.catalog.find(request.namespace, request.deployment)
        if entry is None:
            raise permanent(
                f"deployment {request.namespace}/{request.deployment} is not in this worker's "
                "catalog",
                "UnknownService",
            )
        return entry

    def _from_catalog(self, request: WatchRequest) -> WatchRequest:
        """The watch as the catalog defines it: only the Deployment and the polling come from
        the request; a resumed count of failures stays below the threshold and a breach
        being confirmed began between the window before now and now."""
        entry = self._entry(request)
        if entry is None:
            return request
        return request.model_copy(
            update={
                "service": entry.service,
                "health_path": entry.health_path,
                "api_path": entry.api_check_path,
                "monitoring": entry.monitoring,
                "thresholds": entry.guard,
                "health_failures": self._bounded_failures(request.health_failures, request),
                "confirming_since": self._bounded_since(request.confirming_since, request),
            }
        )

    def _bounded_failures(self, failures: int, request: WatchRequest) -> int:
        """Failures in a row carried from earlier polls: never enough for a breach alone."""
        if self.gatekeeper is None:
            return failures
        return max(0, min(failures, request.thresholds.health_failures_in_a_row - 1))

    def _bounded_since(
        self, since: dt.datetime | None, request: WatchRequest
    ) -> dt.datetime | None:
        """A breach being confirmed since `since`: not in the future, not before the window
        before the last hour."""
        if self.gatekeeper is None or since is None:
            return since
        now = _now()
        oldest = now - max(
            dt.timedelta(hours=1), 3 * dt.timedelta(seconds=request.monitoring.window_seconds)
        )
        if since.tzinfo is None or since.utcoffset() is None or not oldest <= since <= now:
            return None
        return since

    async def _plan_digest(self, request: WatchRequest) -> str:
        """The digest of the plan the deployment rollback will carry out now."""
        from .kubernetes import KubernetesActivities

        planner = KubernetesActivities(self.checks.apps, self.checks.core)
        plan = await planner.plan_rollback(
            PlanRequest(namespace=request.namespace, deployment=request.deployment)
        )
        return plan_digest(rollback_plan(plan))

    async def _sealed(self, report: WatchReport, request: WatchRequest) -> WatchReport:
        """A breach, sealed with the workers' key: the facts name this guard's workflow and
        run (from the task itself), the rollback the breach starts and its plan, the severity
        and when the breach was seen, no later than now."""
        if self.gatekeeper is None or report.breach_at is None:
            return report
        sealed_at = _now()
        breach_at = min(report.breach_at, sealed_at)
        try:
            digest = await self._plan_digest(request)
        except Exception as exc:  # noqa: BLE001 - no plan: no seal, the rollback asks people
            activity.logger.warning("breach not sealed: no rollback plan (%s)", exc)
            return report.model_copy(update={"breach_at": breach_at})
        info = activity.info()
        facts = {
            "v": SEAL_VERSION,
            "guard": info.workflow_id,
            "guard_run": info.workflow_run_id,
            "rollback": rollback_id_for(request.namespace, request.deployment),
            "plan": digest,
            "namespace": request.namespace,
            "deployment": request.deployment,
            "severity": report.verdict.severity.value if report.verdict.severity else "",
            "breach_at": breach_at.isoformat(),
            "sealed_at": sealed_at.isoformat(),
        }
        return report.model_copy(
            update={"breach_at": breach_at, "seal": self.gatekeeper.seal(facts), "sealed": facts}
        )

    async def _restarts(self, namespace: str, deployment: str) -> tuple[int, int | None, list[str]]:
        found, pods = await self.checks.deployment_pods(namespace, deployment)
        restarts = sum(
            cs.restart_count or 0 for p in pods for cs in (p.status.container_statuses or [])
        )
        annotations = found.metadata.annotations or {}
        revision = annotations.get("deployment.kubernetes.io/revision")
        images = [c.image for c in found.spec.template.spec.containers]
        return restarts, int(revision) if revision and revision.isdigit() else None, images

    async def _live_replica_set(self, namespace: str, deployment: str) -> tuple[str, str] | None:
        """(name, pod-template-hash) of the ReplicaSet of the Deployment's current revision:
        its pods are the release's."""
        found, _ = await self.checks.deployment_pods(namespace, deployment, pods=False)
        revision = (found.metadata.annotations or {}).get(REVISION)
        selector = selector_string(
            self.checks.apps.api_client.sanitize_for_serialization(found.spec.selector)
        )
        sets = (
            await self.checks.apps.list_namespaced_replica_set(namespace, label_selector=selector)
        ).items
        live = [rs for rs in sets if (rs.metadata.annotations or {}).get(REVISION) == revision]
        if not revision or not live:
            return None
        return live[0].metadata.name, (live[0].metadata.labels or {}).get(HASH_LABEL, "")

    async def _metrics(
        self,
        request: BaselineRequest | WatchRequest,
        end: dt.datetime | None = None,
        start: dt.datetime | None = None,
        replica_set: str | None = None,
        must_match: bool = True,
    ) -> ServiceMetrics | None:
        if self.monitoring is None:
            return None
        since = getattr(request, "since", None)
        if since is not None and start is None:
            # only the minutes that began after `since` (e.g. a hotfix's rollout) count
            latest_start, _ = self.monitoring.latest_window(request.monitoring)
            began = self.monitoring.clock.at(since)
            promql = self.monitoring.source(request.monitoring).promql
            start = max(latest_start, began if promql else ceil_minute(began))
        query = self.monitoring.query(
            request.monitoring,
            request.namespace,
            request.service,
            start=start,
            end=end,
            data_since=getattr(request, "data_since", None),
            replica_set=replica_set,
            must_match=must_match,
        )
        return None if query is None else await self.monitoring.service_health(query)

    @activity.defn(name=refs.GUARD_BASELINE.name)
    async def baseline(self, request: BaselineRequest) -> GuardBaseline:
        """What normal looked like: the newest complete window that ends by the
        time the release began. The service's metric and alert filters must
        match something now, before the guard relies on them."""
        restarts, revision, images = await self._restarts(request.namespace, request.deployment)
        end = request.release_at or _now()
        reading = None
        if (
            self.monitoring is not None
            and self.monitoring.project_for(request.monitoring) is not None
        ):
            _, latest = self.monitoring.latest_window(request.monitoring)
            source = self.monitoring.source(request.monitoring)
            released = (
                None if request.release_at is None else self.monitoring.clock.at(request.release_at)
            )
            if source.promql:
                # a rate over the minutes before the release: the baseline's own error rate
                # is judged against, so it is read over more traffic than one window
                end = latest if released is None else min(latest, released)
                # the ReplicaSet serving before the release: its own errors only
                reading = await self._metrics(
                    request,
                    end=end,
                    start=end - dt.timedelta(seconds=BASELINE_SECONDS),
                    replica_set=(
                        await self._live_replica_set(request.namespace, request.deployment)
                        or (None, "")
                    )[0],
                )
            else:
                end = latest if released is None else min(latest, floor_minute(released))
                reading = await self._metrics(request, end=end)
            alerts = self.monitoring.alert_query(
                request.monitoring, request.namespace, request.service
            )
            if alerts is not None:
                await self.monitoring.check_alert_policies(alerts)
        return GuardBaseline(
            p95_ms=reading.p95_ms if reading else None,
            error_ratio=reading.error_ratio if reading else None,
            requests=reading.requests if reading else 0,
            restarts=restarts,
            window_end=end,
            revision=revision,
            images=images,
        )

    async def _probe(self, request: WatchRequest, base_url: str | None) -> tuple[bool, bool]:
        """(health failed, API failing) for one poll."""
        if base_url is None:
            return True, True
        health = await self.checks.http_check(
            "health", service_url(base_url, request.health_path), 1
        )
        api_url = service_url(base_url, request.api_path)
        api = [await self.checks.http_check("api", api_url, 1) for _ in range(API_SAMPLES)]
        return not health.ok, not any(check.ok for check in api)

    async def _evidence(
        self, request: WatchRequest, health_failures: int, pods: ReleaseWatch | None = None
    ) -> tuple[Evidence, ServiceMetrics | None, int]:
        base_url = await self.checks.base_url(request.namespace, request.service)
        health_failed, api_failing = await self._probe(request, base_url)
        health_failures = health_failures + 1 if health_failed else 0
        restarts, _, _ = await self._restarts(request.namespace, request.deployment)
        promql = self.monitoring is not None and self.monitoring.source(request.monitoring).promql
        # promql: the release's own pods, not the old ones still serving during its rollout
        live = (
            await self._live_replica_set(request.namespace, request.deployment) if promql else None
        )
        if pods is not None:
            await pods.follow(live[1] if live else None)
        reading = await self._metrics(
            request, replica_set=live[0] if live else None, must_match=live is None
        )
        error_ratio = reading.error_ratio if reading else None
        baseline_error_ratio = None
        if promql:
            # A short window: too few requests say nothing, and the release is held to the
            # service's own error ratio before it.
            if reading is not None and reading.requests < request.thresholds.min_requests:
                error_ratio = None
            baseline_error_ratio = request.baseline.error_ratio
        evidence = Evidence(
            error_ratio=error_ratio,
            baseline_error_ratio=baseline_error_ratio,
            p95_ms=reading.p95_ms if reading else None,
            baseline_p95_ms=request.baseline.p95_ms,
            health_failures_in_a_row=health_failures,
            restarts_in_window=max(0, restarts - request.baseline.restarts),
            api_check_failing=api_failing,
            pods_failing=pods.failing() if pods is not None else [],
        )
        return evidence, reading, health_failures

    @activity.defn(name=refs.GUARD_WATCH.name)
    async def watch(self, request: WatchRequest) -> WatchReport:
        request = self._from_catalog(request)
        promql = self.monitoring is not None and self.monitoring.source(request.monitoring).promql
        # promql: the release's pods are watched too, so a restart is seen as it happens
        pods = ReleaseWatch(self.checks.core, request.namespace) if promql else None
        try:
            return await self._watch(request, pods)
        finally:
            if pods is not None:
                await pods.stop()

    async def _watch(self, request: WatchRequest, pods: ReleaseWatch | None) -> WatchReport:
        # Beat at least each second while pausing: a stop (a cancel) arrives with a beat's reply.
        heartbeat = Heartbeat(WatchProgress, every=1.0)
        polls, health_failures, confirming = 0, request.health_failures, request.confirming_since
        saved = heartbeat.resumed()
        if saved is not None:  # a retry after a worker crash resumes where the last attempt was
            polls, health_failures, confirming = (
                saved.polls,
                self._bounded_failures(saved.health_failures, request),
                self._bounded_since(saved.confirming, request),
            )
        window = dt.timedelta(seconds=request.monitoring.window_seconds)
        second_read = (
            SecondRead(  # wall seconds: the sandbox's metric clock may run faster
                self.monitoring.source(request.monitoring).scrape_interval_seconds
                / self.monitoring.clock.speed
            )
            if self.monitoring is not None and request.monitoring.preset == "promql"
            else None
        )

        def confirmed(reading: ServiceMetrics | None, since: dt.datetime, at: dt.datetime) -> bool:
            if reading is not None and self.monitoring is not None:
                return reading.window_start >= self.monitoring.clock.at(since)
            return at - since >= window  # no metrics: a window's time on the wall clock

        while True:
            at = _now()
            evidence, reading, health_failures = await self._evidence(
                request, health_failures, pods
            )
            verdict = judge(evidence, request.thresholds)
            polls += 1
            report = WatchReport(
                polls=polls,
                at=at,
                evidence=evidence,
                verdict=verdict,
                metrics=reading,
                health_failures=health_failures,
            )
            awaiting = False
            if verdict.severity is not None and verdict.severity.value == "immediate":
                if second_read is None or not second_read.due(at):
                    seen = [t for t in (confirming, second_read and second_read.first) if t]
                    return await self._sealed(
                        report.model_copy(update={"breach_at": min([*seen, at])}), request
                    )
                second_read.seen(at)
                awaiting = True
            elif second_read is not None:
                second_read.first = None
            if awaiting:
                confirming = confirming or at
            elif verdict.severity is not None:
                confirming = confirming or at
                if confirmed(reading, confirming, at):
                    return await self._sealed(
                        report.model_copy(
                            update={"breach_at": confirming, "confirming_since": confirming}
                        ),
                        request,
                    )
            else:
                confirming = None  # a blip: the full window after it was clean
            report.confirming_since = confirming
            progress = WatchProgress(
                polls=polls, health_failures=health_failures, confirming=confirming
            )
            heartbeat.beat(progress)
            pause = request.interval_seconds
            if second_read is not None and second_read.first is not None:
                pause = second_read.pause(at)  # read again once a new scrape is readable
            if at + dt.timedelta(seconds=pause) >= request.until:
                return report.model_copy(update={"window_over": True})
            if polls >= request.max_polls and (second_read is None or second_read.first is None):
                return report
            await heartbeat.sleep(pause, progress)
