"""Checks on what a user typed that need the clock or the shape of an id:
each refuses with one line before anything is started or changed."""

from __future__ import annotations

import datetime as dt

CLOCK_SKEW = dt.timedelta(minutes=2)  # a detection time this far ahead of our clock is tolerated


def parse_detected_at(
    text: str | None, option: str = "--detected-at", now: dt.datetime | None = None
) -> dt.datetime | None:
    """An RFC 3339 time with an offset, not in the future (beyond clock skew); ValueError says why
    not."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not an RFC 3339 time") from None
    if value.tzinfo is None:
        raise ValueError(
            f"{option}: {text!r} has no UTC offset; add one, e.g. {text}+09:00 or {text}Z"
        )
    now = now or dt.datetime.now(dt.UTC)
    if value > now + CLOCK_SKEW:
        ahead = value - now
        raise ValueError(
            f"{option}: {text!r} is {_say(ahead)} in the future; a problem cannot be detected "
            "after now (clock skew of up to 2 minutes is tolerated)"
        )
    return value


def _say(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 120:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"


def check_workflow_id(workflow_id: str) -> str:
    """A workflow id as given on the command line; ValueError for an empty one."""
    if not workflow_id.strip():
        raise ValueError("the workflow id is empty; give one from `modoru list`")
    return workflow_id
