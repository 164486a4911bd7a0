"""The heartbeat helper long activities share: typed details, an interval from
the heartbeat timeout, and waits that end on worker shutdown or cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest
from pydantic import BaseModel
from temporalio.testing import ActivityEnvironment

from activities.guard import WatchProgress
from activities.heartbeat import Heartbeat, PodProgress, WorkerShutdown


class Step(BaseModel):
    step: int


def environment(
    timeout: float | None = None, details: list[object] | None = None
) -> tuple[ActivityEnvironment, list[object]]:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        heartbeat_timeout=dt.timedelta(seconds=timeout) if timeout else None,
        heartbeat_details=details or [],
    )
    beats: list[object] = []
    env.on_heartbeat = lambda *args: beats.append(args[0])
    return env, beats


async def test_the_interval_is_a_third_of_the_heartbeat_timeout_capped_by_every() -> None:
    async def intervals() -> tuple[float, float]:
        return Heartbeat(Step).interval, Heartbeat(Step, every=1.0).interval

    assert await environment(30)[0].run(intervals) == (10.0, 1.0)
    assert await environment(None)[0].run(intervals) == (
        30.0,
        1.0,
    )  # no timeout given: a slow, steady beat


async def test_a_retry_reads_the_last_details_back_as_the_model() -> None:
    async def resumed() -> WatchProgress | None:
        return Heartbeat(WatchProgress).resumed()

    saved = {"polls": 7, "health_failures": 1, "confirming": "2026-11-28T05:00:00+00:00"}
    assert await environment(10, [saved])[0].run(resumed) == WatchProgress(
        polls=7, health_failures=1, confirming=dt.datetime(2026, 11, 28, 5, tzinfo=dt.UTC)
    )
    assert await environment(10, [])[0].run(resumed) is None  # the first attempt
    assert (
        await environment(10, [{"polls": "many"}])[0].run(resumed) is None
    )  # unreadable: start over rather than fail


async def test_details_are_sent_as_the_json_a_retry_reads() -> None:
    env, beats = environment(10)

    async def beat() -> None:
        Heartbeat(PodProgress).beat(PodProgress(pod="api-0"))
        Heartbeat(WatchProgress).beat(
            WatchProgress(
                polls=2, health_failures=0, confirming=dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
            )
        )

    await env.run(beat)
    assert beats == [
        {"pod": "api-0"},
        {"polls": 2, "health_failures": 0, "confirming": "2026-11-28T00:00:00Z"},
    ]


async def test_during_beats_while_the_work_runs_and_returns_its_result() -> None:
    env, beats = environment(0.6)  # a beat every 0.2 s
    enough = asyncio.Event()
    env.on_heartbeat = lambda *args: (beats.append(args[0]), len(beats) >= 2 and enough.set())
    steps = iter(range(100))

    async def work() -> str:
        await enough.wait()  # finishes only once it has been beaten for twice
        return "done"

    async def run() -> str:
        return await Heartbeat(Step).during(work(), lambda: Step(step=next(steps)))

    assert await env.run(run) == "done"
    assert beats[:2] == [{"step": 0}, {"step": 1}]


async def test_worker_shutdown_ends_a_wait_with_a_retryable_error_and_stops_the_work() -> None:
    env, beats = environment(0.6)
    started, stopped = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    async def run() -> None:
        await Heartbeat(Step).during(work(), Step(step=1))

    running = asyncio.ensure_future(env.run(run))
    await started.wait()
    env.worker_shutdown()
    with pytest.raises(WorkerShutdown) as raised:
        await running
    assert not raised.value.non_retryable and stopped.is_set()

    async def sleep() -> None:
        await Heartbeat(Step).sleep(3600, Step(step=1))

    env, _ = environment(0.6)
    sleeping = asyncio.ensure_future(env.run(sleep))
    await asyncio.sleep(0)
    env.worker_shutdown()
    with pytest.raises(WorkerShutdown):
        await sleeping


async def test_a_cancel_ends_the_wait_and_the_work() -> None:
    env, _ = environment(0.6)
    started, stopped = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    async def run() -> None:
        await Heartbeat(Step).during(work(), Step(step=1))

    running = asyncio.ensure_future(env.run(run))
    await started.wait()
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert stopped.is_set()
