"""Retry budgets in the runbook's time, not in attempts: an activity on the way
to the undo (and through the rollout wait) retries transient errors with a
capped backoff for as long as the deadline allows — the time left to the SLA
deadline plus a margin, never less than a floor — and then fails naming the
last error. Permanent errors (non-retryable ApplicationErrors) fail at once.
Deterministic: the budget is computed from workflow.now()."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, RetryState, TimeoutError

# No maximum_attempts: the schedule-to-close budget ends the retries.
SLA_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
)
MARGIN = timedelta(seconds=60)  # keep trying a little past the deadline: a late rollback beats none
FLOOR = timedelta(minutes=2)  # an approval that came late still gets a fair try


def budget(
    deadline: datetime | None, now: datetime, *, at_least: timedelta = timedelta(0)
) -> timedelta:
    """schedule_to_close for an activity started `now`: the time to `deadline`
    plus the margin, at least the floor and at least `at_least` (the activity's
    own start_to_close, so one attempt is never cut short by the budget)."""
    left = deadline - now + MARGIN if deadline is not None else FLOOR
    return max(left, FLOOR, at_least)


GAVE_UP = "gave up retrying at the runbook's deadline; the last error was: "


def _exhausted(err: ActivityError) -> bool:
    # The server ends the retries either with a schedule-to-close timeout (the
    # last failure as its cause) or, when the next retry would start past the
    # budget, with the last failure itself and retry state TIMEOUT.
    return isinstance(err.cause, TimeoutError) or err.retry_state == RetryState.TIMEOUT


def failure_message(err: ActivityError) -> str:
    """The words to fail with: the activity's own, or — when the budget ran out —
    the last error it retried, said plainly."""
    cause = err.cause
    if not _exhausted(err):
        return getattr(cause, "message", None) or str(cause or err)
    last = cause.cause if isinstance(cause, TimeoutError) else cause
    said = getattr(last, "message", None) or (str(last) if last else "")
    if said:
        return GAVE_UP + said.split("; retrying")[0]
    return (
        f"{err.activity_type} timed out at the runbook's deadline ({getattr(cause, 'message', '')})"
    )


def failure_type(err: ActivityError, default: str) -> str:
    cause = err.cause
    if _exhausted(err):
        return "RetryBudgetExhausted"
    kind = getattr(cause, "type", None)
    return kind if isinstance(kind, str) and kind else default
