"""The release guard's hands: the pre-release baseline, and a heartbeating watch
that polls the service's metrics, health, API and pod restarts on an interval
and returns as soon as the runbook's decision table calls for a rollback.

An `immediate` breach returns at once. An `investigate` one is confirmed by
the first complete metrics window that begins after the breach was seen: it
holds only traffic served after the breach, so a release still rolling out
(old and new pods mixed) is judged on what the new version really does, and
may well turn out `immediate`. Windows are whole minutes behind Cloud
Monitoring's ingestion delay (see `activities.metrics`)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel
from temporalio import activity

from runbook import activity_refs as refs
from runbook.guard import Evidence, judge
from runbook.guard_models import BaselineRequest, GuardBaseline, WatchReport, WatchRequest
from runbook.models import ServiceMetrics
from runbook.monitoring import floor_minute

from .gatekeeper import Gatekeeper
from .heartbeat import Heartbeat
from .metrics import Monitoring
from .verify import VerifyActivities


class WatchProgress(BaseModel):
    """Where a watch is: a retried attempt resumes from here."""

    polls: int
    health_failures: int
    confirming: dt.datetime | None = None


API_SAMPLES = 3


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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

    def _sealed(self, report: WatchReport, request: WatchRequest) -> WatchReport:
        """A breach, sealed with the workers' key so the undo can tell the guard's rollback from a
        forged one."""
        if self.gatekeeper is None or report.breach_at is None:
            return report
        facts = {
            "guard": activity.info().workflow_id,
            "namespace": request.namespace,
            "deployment": request.deployment,
            "severity": report.verdict.severity.value if report.verdict.severity else "",
            "at": report.breach_at.isoformat(),
        }
        return report.model_copy(update={"seal": self.gatekeeper.seal(facts), "sealed": facts})

    async def _restarts(self, namespace: str, deployment: str) -> tuple[int, int | None, list[str]]:
        found, pods = await self.checks.deployment_pods(namespace, deployment)
        restarts = sum(
            cs.restart_count or 0 for p in pods for cs in (p.status.container_statuses or [])
        )
        annotations = found.metadata.annotations or {}
        revision = annotations.get("deployment.kubernetes.io/revision")
        images = [c.image for c in found.spec.template.spec.containers]
        return restarts, int(revision) if revision and revision.isdigit() else None, images

    async def _metrics(
        self,
        request: BaselineRequest | WatchRequest,
        end: dt.datetime | None = None,
        start: dt.datetime | None = None,
    ) -> ServiceMetrics | None:
        if self.monitoring is None:
            return None
        query = self.monitoring.query(
            request.monitoring, request.namespace, request.service, start=start, end=end
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
            end = (
                latest
                if request.release_at is None
                else min(latest, floor_minute(self.monitoring.clock.at(request.release_at)))
            )
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
        health = await self.checks.http_check("health", base_url + request.health_path, 1)
        api = [
            await self.checks.http_check("api", base_url + request.api_path, 1)
            for _ in range(API_SAMPLES)
        ]
        return not health.ok, not any(check.ok for check in api)

    async def _evidence(
        self, request: WatchRequest, health_failures: int
    ) -> tuple[Evidence, ServiceMetrics | None, int]:
        base_url = await self.checks.base_url(request.namespace, request.service)
        health_failed, api_failing = await self._probe(request, base_url)
        health_failures = health_failures + 1 if health_failed else 0
        restarts, _, _ = await self._restarts(request.namespace, request.deployment)
        reading = await self._metrics(request)
        evidence = Evidence(
            error_ratio=reading.error_ratio if reading else None,
            p95_ms=reading.p95_ms if reading else None,
            baseline_p95_ms=request.baseline.p95_ms,
            health_failures_in_a_row=health_failures,
            restarts_in_window=max(0, restarts - request.baseline.restarts),
            api_check_failing=api_failing,
        )
        return evidence, reading, health_failures

    @activity.defn(name=refs.GUARD_WATCH.name)
    async def watch(self, request: WatchRequest) -> WatchReport:
        # Beat at least each second while pausing: a stop (a cancel) arrives with a beat's reply.
        heartbeat = Heartbeat(WatchProgress, every=1.0)
        polls, health_failures, confirming = 0, request.health_failures, request.confirming_since
        saved = heartbeat.resumed()
        if saved is not None:  # a retry after a worker crash resumes where the last attempt was
            polls, health_failures, confirming = (
                saved.polls,
                saved.health_failures,
                saved.confirming,
            )
        window = dt.timedelta(seconds=request.monitoring.window_seconds)

        def confirmed(reading: ServiceMetrics | None, since: dt.datetime, at: dt.datetime) -> bool:
            if reading is not None and self.monitoring is not None:
                return reading.window_start >= self.monitoring.clock.at(since)
            return at - since >= window  # no metrics: a window's time on the wall clock

        while True:
            at = _now()
            evidence, reading, health_failures = await self._evidence(request, health_failures)
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
            if verdict.severity is not None and verdict.severity.value == "immediate":
                return self._sealed(
                    report.model_copy(update={"breach_at": confirming or at}), request
                )
            if verdict.severity is not None:
                confirming = confirming or at
                if confirmed(reading, confirming, at):
                    return self._sealed(
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
            if at + dt.timedelta(seconds=request.interval_seconds) >= request.until:
                return report.model_copy(update={"window_over": True})
            if polls >= request.max_polls:
                return report
            await heartbeat.sleep(request.interval_seconds, progress)
