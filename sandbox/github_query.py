"""The list endpoints' query parameters as GitHub documents them: the runs
filters (event, status, branch, actor, head_sha, created with the search
syntax `>=2026-11-01`, `<2026-11-28T10:00:00Z`, `2026-11-01..2026-11-28` or
one day) and pagination (`per_page` up to 100, default 30; `page` from 1)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .github_resources import Run

T = TypeVar("T")
STATUSES = {"queued", "in_progress", "completed", "waiting", "requested", "pending"}
CONCLUSIONS = {
    "success",
    "failure",
    "neutral",
    "cancelled",
    "skipped",
    "timed_out",
    "action_required",
    "stale",
    "startup_failure",
}


def _moment(text: str) -> tuple[datetime, datetime]:
    """The span a date (a whole day) or a time (that instant) stands for."""
    text = text.strip()
    if len(text) == 10:
        day = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return day, day + timedelta(days=1)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment, moment + timedelta(microseconds=1)


def created_matches(created: datetime, expression: str) -> bool:
    """GitHub's date search syntax; an expression that does not parse matches nothing."""
    try:
        if ".." in expression:
            low, high = expression.split("..", 1)
            return (low in ("", "*") or created >= _moment(low)[0]) and (
                high in ("", "*") or created < _moment(high)[1]
            )
        for op in (">=", "<=", ">", "<"):
            if expression.startswith(op):
                start, end = _moment(expression[len(op) :])
                return {
                    ">=": created >= start,
                    "<=": created < end,
                    ">": created >= end,
                    "<": created < start,
                }[op]
        start, end = _moment(expression)
        return start <= created < end
    except ValueError:
        return False


def filter_runs(runs: list[Run], query: Mapping[str, str]) -> list[Run]:
    status = query.get("status")
    found = []
    for run in runs:
        if query.get("event") and run.event != query["event"]:
            continue
        if query.get("branch") and run.branch != query["branch"]:
            continue
        if query.get("actor") and run.actor.lower() != query["actor"].lower():
            continue
        if query.get("head_sha") and run.sha != query["head_sha"]:
            continue
        if status and (run.conclusion != status if status in CONCLUSIONS else run.status != status):
            continue
        if query.get("created") and not created_matches(run.created, query["created"]):
            continue
        found.append(run)
    return found


def page_of(items: list[T], query: Mapping[str, Any]) -> list[T]:
    def number(name: str, default: int) -> int:
        raw = str(query.get(name, default))
        return int(raw) if raw.isdigit() and int(raw) > 0 else default

    per_page = min(number("per_page", 30), 100)
    page = number("page", 1)
    return items[(page - 1) * per_page : page * per_page]
