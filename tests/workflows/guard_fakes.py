"""Scripted release-guard activities for workflow tests and replay recordings."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook import activity_refs as refs
from runbook.guard import Evidence, Verdict
from runbook.guard_models import BaselineRequest, GuardBaseline, WatchReport, WatchRequest
from runbook.models import ServiceMetrics, Severity
from runbook.verification import NO_DATA_YET

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def clean(polls: int) -> WatchReport:
    return WatchReport(
        polls=polls,
        at=NOW,
        evidence=Evidence(error_ratio=0.01, p95_ms=80, baseline_p95_ms=80),
        verdict=Verdict(severity=None, reasons=[]),
    )


def breach(severity: Severity, reason: str) -> WatchReport:
    return WatchReport(
        polls=1,
        at=NOW,
        evidence=Evidence(error_ratio=0.6, p95_ms=90, baseline_p95_ms=80),
        verdict=Verdict(severity=severity, reasons=[reason]),
        metrics=ServiceMetrics(
            window_start=NOW - dt.timedelta(seconds=30),
            window_end=NOW,
            requests=300,
            errors=180,
            error_ratio=0.6,
            p95_ms=90,
        ),
        breach_at=NOW - dt.timedelta(seconds=2),
    )


@dataclass
class ScriptedGuard:
    """guard.* activities that replay a script of watch reports."""

    script: list[WatchReport | str]
    watches: list[WatchRequest] = field(default_factory=list)
    baselines: int = 0
    cancelled: bool = False
    no_data_yet: int = 0  # the first baselines find no whole minute of data yet
    data_since: list = field(default_factory=list)

    def activities(self) -> list:
        @activity.defn(name=refs.GUARD_BASELINE.name)
        async def baseline(request: BaselineRequest) -> GuardBaseline:
            self.baselines += 1
            self.data_since.append(request.data_since)
            if self.baselines <= self.no_data_yet:
                readable = activity.info().scheduled_time + dt.timedelta(seconds=90)
                raise ApplicationError(
                    "no whole minute of data yet: the first one ends at 10:01:00 UTC and is "
                    "readable at 10:01:30 UTC",
                    readable.isoformat(),
                    type=NO_DATA_YET,
                    non_retryable=True,
                )
            return GuardBaseline(
                p95_ms=80,
                error_ratio=0.01,
                requests=300,
                restarts=0,
                revision=3,
                images=["img:1.3.0"],
            )

        @activity.defn(name=refs.GUARD_WATCH.name)
        async def watch(request: WatchRequest) -> WatchReport:
            self.watches.append(request)
            step = self.script.pop(0) if self.script else "block"
            if step == "block":  # watch until cancelled, heartbeating like the real one
                try:
                    while True:
                        activity.heartbeat()
                        await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    self.cancelled = True
                    raise
            if step == "over":
                return clean(1).model_copy(update={"window_over": True})
            assert isinstance(step, WatchReport)
            return step.model_copy(update={"polls": min(step.polls, request.max_polls)})

        return [baseline, watch]
