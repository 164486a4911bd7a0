"""Verification retries only what it could not read: a group of checks that
passed is not read again, a failed read is read again alone, and a window that
ends with only unread checks fails retryably (resumed from the heartbeat)
rather than reporting an unhealthy service. A check on late data waits until it
is readable, is judged once on that data, and is reported as not judged (never
failed, never passed) when its data cannot come before the deadline."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.postchecks import Unreadable
from activities.verify import VerifyActivities
from runbook.models import CheckResult, VerifyRequest
from runbook.postchecks import PostChecks

REQUEST = VerifyRequest(
    namespace="default",
    deployment="api",
    service="api",
    paths=["/health"],
    window_seconds=2,
    interval_seconds=0.01,
    post_checks=PostChecks(connection_pool=False, pod_log_lines=0),
)


class Scripted(VerifyActivities):
    """Each group answers from a script: "ok", "bad" or "unread", the last answer repeating."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        super().__init__(None, None, None)  # type: ignore[arg-type]
        self.script = script
        self.reads: Counter[str] = Counter()

    async def _group(self, name, request, timing, found):
        self.reads[name] += 1
        answers = self.script.get(name, ["ok"])
        answer = answers[min(self.reads[name], len(answers)) - 1]
        if answer == "unread":
            raise Unreadable(f"could not read {name}: 503")
        if answer == "wait":
            soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.05)
            return [
                CheckResult(name=name, ok=False, pending=True, readable_at=soon, detail="waiting")
            ]
        return [CheckResult(name=name, ok=answer == "ok", detail=answer)]


async def test_a_failed_read_is_read_again_alone() -> None:
    verify = Scripted({"metrics": ["unread", "unread", "ok"], "http": ["bad", "ok"]})
    result = await ActivityEnvironment().run(verify.verify_service, REQUEST)
    assert result.ok and result.attempts == 3
    assert verify.reads == Counter({"pods": 1, "http": 2, "metrics": 3, "resources": 1, "logs": 1})


async def test_late_data_is_waited_for_then_judged_once_on_what_it_shows() -> None:
    verify = Scripted({"logs": ["wait", "wait", "bad", "ok"]})
    result = await ActivityEnvironment().run(verify.verify_service, REQUEST)
    logs = next(c for c in result.checks if c.name == "logs")
    # judged on its first readable data, which failed: not read again hoping for better
    assert not result.ok and not logs.ok and logs.judged and verify.reads["logs"] == 3


async def test_data_that_cannot_come_before_the_deadline_is_not_judged_not_failed() -> None:
    request = REQUEST.model_copy(update={"window_seconds": 1, "deadline_seconds": 1})
    verify = Scripted({"logs": ["wait"]})
    result = await ActivityEnvironment().run(verify.verify_service, request)
    logs = next(c for c in result.checks if c.name == "logs")
    assert result.ok and logs.ok and not logs.judged and not logs.pending
    assert logs.detail.startswith("not judged by verification's deadline")
    assert "verification_deadline_seconds" in logs.detail
    assert verify.reads["logs"] >= 2  # it kept looking until the deadline


async def test_a_window_with_only_unread_checks_left_fails_retryably_never_as_unhealthy() -> None:
    env = ActivityEnvironment()
    beats: list = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    with pytest.raises(ApplicationError) as failure:
        await env.run(Scripted({"resources": ["unread"]}).verify_service, REQUEST)
    assert not failure.value.non_retryable and failure.value.type == "VerificationUnreadable"
    assert "could not read resources: 503" in failure.value.message
    # The next attempt resumes: what passed is kept, only the unread group is read.
    env.info = dataclasses.replace(env.info, attempt=2, heartbeat_details=[beats[-1]])
    verify = Scripted({"resources": ["ok"]})
    result = await env.run(verify.verify_service, REQUEST)
    assert result.ok and verify.reads == Counter({"resources": 1})
    assert [c.name for c in result.checks] == ["pods", "http", "metrics", "resources", "logs"]


async def test_an_unhealthy_check_is_reported_with_the_unread_ones_marked() -> None:
    result = await ActivityEnvironment().run(
        Scripted({"http": ["bad"], "logs": ["unread"]}).verify_service, REQUEST
    )
    checks = {c.name: c for c in result.checks}
    assert (
        not result.ok
        and not checks["http"].ok
        and not checks["http"].unread
        and checks["logs"].unread
    )


@pytest.mark.parametrize(("timeout", "beats"), [(0.3, 3), (1.2, 0)])
async def test_a_sleep_beats_three_times_per_heartbeat_timeout_and_no_more(
    timeout: float, beats: int
) -> None:
    """Each beat that reaches the server is a billed action: a sleep of 0.35 s beats every
    0.1 s under a 0.3-s timeout, and not at all under a 1.2-s one (its first beat is due
    after 0.4 s)."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=dt.timedelta(seconds=timeout))
    heard: list = []
    env.on_heartbeat = lambda *details: heard.append(details)
    await env.run(VerifyActivities._sleep, 0.35)
    assert len(heard) == beats
