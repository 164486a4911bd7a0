"""Waits that fail loudly. A test that polls for something reads until it holds and returns
what it read; when the time is up it fails naming what it waited for and what it last saw,
and never goes on without it."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def timed_out(what: str, timeout: float, seen: str) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}; last saw {seen}")


async def until(
    what: str,
    read: Callable[[], Awaitable[T] | T],
    done: Callable[[T], object],
    show: Callable[[T], str] = repr,
    timeout: float = 60,
    interval: float = 0.1,
) -> T:
    """Read (awaiting what `read` returns if it is awaitable) until `done` holds for what was
    read, and return that. After `timeout` seconds the test fails with an AssertionError naming
    `what` and `show` of the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if inspect.isawaitable(value):
            value = await value
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise timed_out(what, timeout, show(value))
        await asyncio.sleep(interval)


def until_blocking(
    what: str,
    read: Callable[[], T],
    done: Callable[[T], object],
    show: Callable[[T], str] = repr,
    timeout: float = 60,
    interval: float = 0.1,
) -> T:
    """`until` for code without an event loop: blocks between reads."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise timed_out(what, timeout, show(value))
        time.sleep(interval)


def phase_of(status) -> str:
    """A workflow's status as a line for `show`: its phase and message (None: no status yet)."""
    if status is None:
        return "no status yet"
    phase = getattr(status.phase, "value", status.phase)
    return f"phase {phase}: {status.message or '(no message)'}"
