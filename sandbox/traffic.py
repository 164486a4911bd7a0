"""Demo traffic: a steady, bounded stream of API calls to every load-balanced
service, so the metrics emulator has something to measure. Loopback only; it
stops by itself after its time is up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aiohttp

log = logging.getLogger(__name__)


class TrafficGenerator:
    def __init__(
        self,
        urls: Callable[[], list[str]],
        paths: list[str],
        rate_per_second: float,
        max_seconds: float,
    ) -> None:
        self.urls = urls
        self.paths = paths
        self.rate = rate_per_second
        self.max_seconds = max_seconds
        self.sent = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.rate > 0 and self.max_seconds > 0:
            self._task = asyncio.create_task(self._run(), name="demo-traffic")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + self.max_seconds
        timeout = aiohttp.ClientTimeout(total=5)
        pending: set[asyncio.Task] = set()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            turn = 0
            while loop.time() < until:
                for base in self.urls():
                    if not base.startswith("http://127.0.0.1:"):
                        continue  # loopback only
                    task = asyncio.create_task(
                        self._one(session, base + self.paths[turn % len(self.paths)])
                    )
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                turn += 1
                await asyncio.sleep(1.0 / self.rate)
            if pending:
                await asyncio.wait(pending, timeout=5)
        log.info("demo traffic stopped after %d requests", self.sent)

    async def _one(self, session: aiohttp.ClientSession, url: str) -> None:
        self.sent += 1
        try:
            async with session.get(url) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            pass  # the front end's own record is what the metrics read

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
