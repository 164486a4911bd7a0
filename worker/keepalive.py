"""Heartbeats on behalf of the activities that do not beat themselves: the writes
(the undo, the backup ConfigMap, the restore, the restart, the ReplicaSet deletion,
the CD dispatch, the clone, the switch) and the reads and notices around them. Their
references in runbook/activity_refs.py carry `keepalive`, the heartbeat timeout the
workflows give them: while one runs, this interceptor beats three times per
timeout. A worker that dies in the middle of one stops beating, so the server hands
the activity to another worker after that timeout instead of after its whole
start-to-close (60-120 s). The activities are idempotent (a write checks what
already landed), so the retry finds the effect rather than doubling it.

Activities that beat for themselves with details to resume from (the rollout wait,
the exec, the on-demand backup, the verification, the guard's watch) are not in the
list: a beat without details would overwrite theirs."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from runbook.activity_refs import KEPT_ALIVE

BEATS_PER_TIMEOUT = 3


class KeepAlive(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _KeepAliveInbound(next)


class _KeepAliveInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        timeout = info.heartbeat_timeout
        if info.activity_type not in KEPT_ALIVE or not timeout:
            return await super().execute_activity(input)
        beating = asyncio.create_task(_beat(timeout.total_seconds() / BEATS_PER_TIMEOUT))
        try:
            return await super().execute_activity(input)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating


async def _beat(every: float) -> None:
    # The first beat after one interval: a write that answers within it (most do) sends none,
    # so the keep-alive costs the server nothing on the common path.
    while True:
        await asyncio.sleep(every)
        activity.heartbeat()
