"""Sandbox time: wall-clock timestamps, with simulated delays sped up by a factor."""

from __future__ import annotations

import datetime as dt
import time


class Clock:
    """`speed` > 1 makes every simulated delay (pod start, back-off, progress
    deadline) that many times shorter, so tests never wait real minutes."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.speed = speed
        self.epoch = time.time()

    def metric_time(self, wall: float | None = None) -> float:
        """Metric time (epoch seconds) for a wall-clock instant: the clock at the
        sandbox's start, then running `speed` times faster. The monitoring
        emulators stamp and judge traffic in it, so a 60-s alignment period
        (Cloud Monitoring's smallest) passes in 60/speed wall seconds; a client
        turns its own clock the same way (endpoints.json `metric_clock`)."""
        at = time.time() if wall is None else wall
        return self.epoch + (at - self.epoch) * self.speed

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def timestamp(self, at: dt.datetime | None = None) -> str:
        return (at or self.now()).strftime("%Y-%m-%dT%H:%M:%SZ")

    def micro_timestamp(self, at: dt.datetime | None = None) -> str:
        return (at or self.now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def monotonic(self) -> float:
        return time.monotonic()

    def real_seconds(self, simulated_seconds: float) -> float:
        """How long a simulated duration takes on the wall clock."""
        return simulated_seconds / self.speed


def parse_timestamp(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
