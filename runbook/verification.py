"""When each check after a change can first be judged, and how long verification
may wait for it.

Cloud Monitoring serves whole minutes (alignment periods of 60 s), each visible only
once its metric's ingestion delay has passed after the minute ends. So a metric read
after a rollout that ended at `since` can first be judged on the minute that starts
at the next whole minute, at `ceil_minute(since) + 60 s + delay`: up to two minutes
plus the delay later. Verification waits for the latest of these moments and no
longer, bounded by its deadline: the runbook's window for the severity (5 or
15 minutes) counted from the rollout's end, stretched for slow data up to the
runbook's longest window, or the catalog's `verification_deadline_seconds`.
A check that cannot be read before the deadline is reported as not judged, with the
setting that would let it be: never failed, never silently passed.

Pure: the activities read, this module says when and what it means."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .catalog import ServiceEntry
from .enums import Severity
from .monitoring import MIN_ALIGNMENT_SECONDS, ceil_minute, floor_minute
from .policy import DEADLINES
from .postchecks import BACKENDS_METRIC, CPU_METRIC, MEMORY_METRIC, PostChecks

POLL_SECONDS = 5  # how late after its readable moment a check is read at most
NO_DATA_YET = "NoWholeMinuteYet"  # the error type of a read made before any whole minute exists
LONGEST = max(DEADLINES.values())
# Checks judged on data that arrives late: once judged on real data, the verdict stands.
DATA_CHECKS = frozenset({"error_ratio", "p95", "cpu", "memory", "connection_pool", "logs"})


def worst_wait_seconds(delay_seconds: float) -> float:
    """The longest a check with this ingestion delay can take to become readable after
    a rollout: almost a minute to the next whole minute, the minute itself, the delay,
    one poll."""
    return 2 * MIN_ALIGNMENT_SECONDS + delay_seconds + POLL_SECONDS


def deadline_seconds(
    severity: Severity, slowest_delay_seconds: float | None, configured: int | None = None
) -> int:
    """How long verification may wait for data after the rollout ended. `configured` (the
    catalog's verification_deadline_seconds) wins; else the runbook's window for the
    severity, stretched to what the slowest check needs, at most the runbook's longest
    window."""
    if configured is not None:
        return configured
    window = DEADLINES[severity].total_seconds()
    if slowest_delay_seconds is None:
        return int(window)
    needed = worst_wait_seconds(slowest_delay_seconds)
    return int(min(max(window, needed), LONGEST.total_seconds()))


@dataclass(frozen=True)
class FirstMinute:
    """The first whole minute after `since` and when its points are visible."""

    start: dt.datetime
    end: dt.datetime
    readable_at: dt.datetime

    @classmethod
    def after(cls, since: dt.datetime, delay_seconds: float) -> FirstMinute:
        start = ceil_minute(since)
        end = start + dt.timedelta(seconds=MIN_ALIGNMENT_SECONDS)
        return cls(start, end, end + dt.timedelta(seconds=delay_seconds))

    def readable(self, now: dt.datetime, delay_seconds: float) -> bool:
        return floor_minute(now - dt.timedelta(seconds=delay_seconds)) >= self.end

    def span(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} UTC"


def waiting_detail(what: str, minute: FirstMinute) -> str:
    return f"waiting for {what} of {minute.span()}, readable at {minute.readable_at:%H:%M:%S} UTC"


def not_judged_detail(what: str, readable_at: dt.datetime, deadline: dt.datetime, fix: str) -> str:
    return (
        f"not judged: {what} is readable at {readable_at:%H:%M:%S} UTC, after verification's "
        f"deadline {deadline:%H:%M:%S} UTC; {fix}"
    )


DEADLINE_FIX = (
    "set verification_deadline_seconds for the service (or a shorter ingestion_delay_seconds "
    "if the data arrives sooner)"
)


def slowest_delay_seconds(
    monitoring_delay: float | None, post_checks: PostChecks | None
) -> float | None:
    """The longest ingestion delay among the checks a verification makes; None when none
    of them reads late data. `monitoring_delay`: the metric source's, None without metric
    criteria."""
    delays = [] if monitoring_delay is None else [float(monitoring_delay)]
    if post_checks is not None:
        if post_checks.resources:
            delays += [post_checks.delay(CPU_METRIC), post_checks.delay(MEMORY_METRIC)]
        if post_checks.connection_pool:
            delays.append(post_checks.delay(BACKENDS_METRIC))
        if post_checks.logs:
            # the logs are judged once they cover log_min_seconds, no whole minute to wait for
            delays.append(post_checks.log_min_seconds - 2 * MIN_ALIGNMENT_SECONDS)
    return max(delays) if delays else None


def deadline_for(
    entry: ServiceEntry, severity: Severity, *, metrics: bool, post_checks: PostChecks | None
) -> int:
    """What a change workflow gives verification of `entry` to wait, in seconds after the
    rollout: never less than the time the pods and HTTP checks get."""
    source = entry.monitoring.source() if metrics and entry.monitoring.preset else None
    waits = deadline_seconds(
        severity,
        slowest_delay_seconds(source.ingestion_delay_seconds if source else None, post_checks),
        entry.verification_deadline_seconds,
    )
    return max(waits, entry.verification_window_seconds)
