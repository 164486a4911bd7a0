"""A workflow that runs N activities which do nothing: Temporal's own floor."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench.nothing")
async def nothing(step: int) -> int:
    return step


@workflow.defn(name="BenchNoOp")
class NoOpWorkflow:
    @workflow.run
    async def run(self, steps: int) -> int:
        for step in range(steps):
            await workflow.execute_activity(
                "bench.nothing", step, start_to_close_timeout=timedelta(seconds=30)
            )
        return steps
