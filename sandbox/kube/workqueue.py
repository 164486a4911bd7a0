"""A de-duplicating work queue, as client-go's workqueue: a key added while it is
waiting is processed once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)

BATCH = 200  # keys handled before yielding to the event loop, so the API stays responsive


class WorkQueue:
    def __init__(self, name: str, handler: Callable[[Hashable], None]) -> None:
        self.name = name
        self.handler = handler
        self._dirty: dict[Hashable, None] = {}
        self._wake = asyncio.Event()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}

    def add(self, key: Hashable) -> None:
        self._dirty[key] = None
        self._wake.set()

    def add_after(self, key: Hashable, delay: float) -> None:
        """Requeue `key` after `delay` seconds; an earlier pending wake-up wins."""
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        when = loop.time() + max(delay, 0.0)
        if existing is not None and not existing.cancelled() and existing.when() <= when:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    @property
    def pending(self) -> int:
        return len(self._dirty)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            handled = 0
            while self._dirty:
                key = next(iter(self._dirty))
                del self._dirty[key]
                try:
                    self.handler(key)
                except Exception:  # a failing sync must not stop the controller
                    log.exception("%s: sync of %s failed; retrying in 1s", self.name, key)
                    self.add_after(key, 1.0)
                handled += 1
                if handled % BATCH == 0:
                    await asyncio.sleep(0)

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
