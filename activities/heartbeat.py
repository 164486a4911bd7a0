"""One way for a long activity to heartbeat: typed details (a pydantic model a
retried attempt reads back to resume), an interval derived from the heartbeat
timeout the workflow gave it, and waits that end when the worker shuts down (so
another worker's attempt takes over from the last heartbeat) or the activity is
cancelled (the cancel arrives with a heartbeat's reply)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

Details = TypeVar("Details", bound=BaseModel)
T = TypeVar("T")

SHARE_OF_TIMEOUT = (
    3  # beat at least three times per heartbeat timeout: one late beat is no lost worker
)
LONGEST = 30.0  # seconds between beats when no heartbeat timeout was given
SHORTEST = 0.2


class WorkerShutdown(ApplicationError):
    """Retryable: the worker is going away; the next attempt resumes from the last heartbeat."""

    def __init__(self) -> None:
        super().__init__(
            "the worker is shutting down; the next attempt resumes from the last heartbeat",
            type="WorkerShutdown",
        )


class Heartbeat(Generic[Details]):
    """Heartbeats of the running activity with `details` of one model.

    `every` caps the interval: an activity whose stop must arrive within a second
    (a cancel rides on a heartbeat's reply) asks for `every=1.0`."""

    def __init__(self, model: type[Details], *, every: float | None = None) -> None:
        self.model = model
        self.every = every

    @property
    def interval(self) -> float:
        timeout = activity.info().heartbeat_timeout if activity.in_activity() else None
        interval = timeout.total_seconds() / SHARE_OF_TIMEOUT if timeout else LONGEST
        if self.every is not None:
            interval = min(interval, self.every)
        return max(interval, SHORTEST)

    def resumed(self) -> Details | None:
        """What the last attempt's final heartbeat said, or None (first attempt, or unreadable
        details)."""
        if not activity.in_activity():
            return None
        details = activity.info().heartbeat_details
        if not details:
            return None
        try:
            return self.model.model_validate(details[0])
        except ValidationError:
            activity.logger.warning(
                "ignoring unreadable heartbeat details from the last attempt: %r", details[0]
            )
            return None

    def beat(self, details: Details) -> None:
        if activity.in_activity():
            activity.heartbeat(details.model_dump(mode="json", exclude_none=True))

    async def sleep(self, seconds: float, details: Details) -> None:
        """Sleep `seconds`, beating every interval; ends early (WorkerShutdown) if the worker
        stops."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while (left := until - loop.time()) > 0:
            await self._until_shutdown(asyncio.sleep(min(self.interval, left)))
            self.beat(details)

    async def during(self, work: Awaitable[T], details: Details | Callable[[], Details]) -> T:
        """Await `work`, beating every interval while it runs (`details` may be a
        function, called at each beat); the work is cancelled if the worker stops
        or the activity is cancelled."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await self._until_shutdown(asyncio.wait({task}, timeout=self.interval))
                if done:
                    return task.result()
                self.beat(details() if callable(details) else details)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _until_shutdown(self, waiting: Awaitable[T]) -> T:
        if not activity.in_activity():
            return await waiting
        work = asyncio.ensure_future(waiting)
        shutdown = asyncio.ensure_future(activity.wait_for_worker_shutdown())
        try:
            await asyncio.wait({work, shutdown}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled: the activity's cancel, or a timeout around this wait
            work.cancel()
            raise
        finally:
            shutdown.cancel()
        if work.done():
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        raise WorkerShutdown()


class PodProgress(BaseModel):
    """The pod an activity works in (and, while a command runs, for how long)."""

    pod: str
    running_seconds: float | None = None
