"""The release guard on the `promql` source, at the sandbox's real clock (speed 1):
the timeline of a bad release (1.3.0, about 60% errors) from its first failing
request to the verified rollback, and healthy releases under bursty traffic,
counting the rollbacks the guard should not have started.

    python -m bench.detection --presets promql [--rounds 1] [--tries 3] [--jobs N]

The first failing request is the first 5xx a prober of the bench's own saw: it
calls the Service every `PROBE_SECONDS`, so it trails the sandbox's own traffic
by a fraction of a second at most. "Breach seen" is the guard's first read that
saw it (the breach time it reports), "rollback started" the rollback's start
and "verified" the rollback's end, once verification passed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client as kube
from kubernetes import config as kube_config

from runbook.guard_models import GuardPhase, GuardResult
from runbook.models import ApprovalSignal, Phase
from worker.client import connect
from worker.settings import Settings
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

from .guarded_stack import guard_decision, started_detection_stack, watching_guard
from .releases import release

SCRAPE_SECONDS = 15  # the tekutoko-release scenario's PodMonitoring interval
DELAY_SECONDS = 5  # the sandbox's Prometheus ingestion delay
STEP_SECONDS = 10
POLL_SECONDS = 5.0
TRAFFIC_RPS = 5  # the sandbox's steady traffic, requests a second
PROBE_SECONDS = 0.1
BAD, HEALTHY, NOISY = "1.3.0", "1.2.0", "1.2.1-noisy"  # NOISY: healthy, 3% errors
MONITORING = {
    "preset": "promql",
    "ingestion_delay_seconds": DELAY_SECONDS,
    "scrape_interval_seconds": SCRAPE_SECONDS,
    "step_seconds": STEP_SECONDS,
    "alerts": True,
}


@dataclass
class Prober:
    """Calls the Service on its own; remembers when it first saw a 5xx, and can add bursts."""

    url: str
    first_failure: float | None = None
    sent: int = 0
    failures: int = 0
    bursts: bool = False
    _task: asyncio.Task | None = field(default=None, repr=False)

    async def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                count = 1
                if self.bursts and rng.random() < PROBE_SECONDS / 4:  # a burst every ~4 s
                    count = rng.randint(10, 40)
                await asyncio.gather(*(self._one(session) for _ in range(count)))
                await asyncio.sleep(PROBE_SECONDS * (rng.random() * 2 if self.bursts else 1))

    async def _one(self, session: aiohttp.ClientSession) -> None:
        self.sent += 1
        try:
            async with session.get(self.url) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            return
        if status >= 500:
            self.failures += 1
            if self.first_failure is None:
                self.first_failure = time.time()

    def start(self, seed: int = 0) -> None:
        self._task = asyncio.create_task(self._run(seed))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def bad_release(client, settings: Settings, apps: kube.AppsV1Api, url: str) -> dict:
    """1.2.0 live, a guard watching, then 1.3.0: the timeline in seconds after the first
    failing request."""
    await asyncio.to_thread(release, apps, HEALTHY)
    await asyncio.sleep(2 * SCRAPE_SECONDS + DELAY_SECONDS)  # the healthy pods' own rates
    guard = await watching_guard(client, settings, interval=POLL_SECONDS, duration=900)
    prober = Prober(url)
    prober.start()
    try:
        released = time.time()
        await asyncio.to_thread(release, apps, BAD)
        status = await guard_decision(guard)
    finally:
        await prober.stop()
    rollback = client.get_workflow_handle(rollback_workflow_id("default", "tekutoko-api"))
    started = (await rollback.describe()).start_time.timestamp()
    if status.rollback_severity == "investigate":  # not expected; the approver answers at once
        while (
            await rollback.query(DeploymentRollbackWorkflow.status)
        ).phase is not Phase.AWAITING_APPROVAL:
            await asyncio.sleep(0.1)
        await rollback.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="sre-lead"))
    result: GuardResult = await guard.result()
    if result.status.phase is not GuardPhase.ROLLED_BACK:
        raise RuntimeError(f"the rollback did not verify: {result.status.message}")
    closed = (await rollback.describe()).close_time.timestamp()
    last = status.last
    first = prober.first_failure or released
    breach = last.breach_at.timestamp() if last and last.breach_at else started
    window = (
        (last.metrics.window_end - last.metrics.window_start).total_seconds()
        if last and last.metrics
        else None
    )
    return {
        "severity": status.rollback_severity,
        "window_s": window,
        "guard_phase": result.status.phase.value,
        "reasons": last.verdict.reasons if last else [],
        "release_to_first_failure_s": round(first - released, 2),
        "breach_seen_s": round(breach - first, 2),
        "rollback_started_s": round(started - first, 2),
        "verified_s": round(closed - first, 2),
    }


async def healthy_bursty(
    client, settings: Settings, apps: kube.AppsV1Api, url: str, watch_seconds: int, seed: int
) -> dict:
    """A healthy release that fails 3% of its calls, under bursts of traffic: the guard
    watches it for `watch_seconds`; any rollback is a false one."""
    await asyncio.to_thread(release, apps, HEALTHY)
    await asyncio.sleep(2 * SCRAPE_SECONDS + DELAY_SECONDS)
    guard = await watching_guard(client, settings, interval=POLL_SECONDS, duration=watch_seconds)
    prober = Prober(url, bursts=True)
    prober.start(seed)
    try:
        await asyncio.to_thread(release, apps, NOISY)
        result: GuardResult = await guard.result()
    finally:
        await prober.stop()
    status = result.status
    return {
        "false_rollback": status.rollback_workflow_id is not None,
        "phase": status.phase.value,
        "polls": status.polls,
        "probe_requests": prober.sent,
        "probe_failures": prober.failures,
        "reasons": status.last.verdict.reasons if status.last else [],
    }


@dataclass
class PromqlStack:
    client: Any
    settings: Settings
    apps: kube.AppsV1Api
    url: str  # the Service's API path, through its front end


@contextlib.asynccontextmanager
async def promql_stack(state: Path) -> AsyncIterator[PromqlStack]:
    """`modoru up`'s stack on tekutoko-release at clock speed 1, its catalog on promql."""
    # A stack starts synchronously, so stacks started side by side each take their own catalog.
    stack = started_detection_stack(
        state,
        lambda _bundled: dict(MONITORING),
        speed=1.0,
        traffic_rps=TRAFFIC_RPS,
        traffic_seconds=3 * 3600,
    )
    try:
        endpoints = json.loads(stack.endpoints_path.read_text())
        settings = stack.client_settings()
        client = await connect(settings)
        api = kube_config.new_client_from_config(config_file=endpoints["kubeconfig"])
        try:
            yield PromqlStack(
                client,
                settings,
                kube.AppsV1Api(api),
                endpoints["services"]["default/tekutoko-api"] + "/v1/walks",
            )
        finally:
            api.close()
    finally:
        stack.stop()


@dataclass
class StartedTogether:
    """Holds every stack's work until all have started: a stack's start blocks the event
    loop for seconds, which would stall another stack's prober and guard reads."""

    stacks: int
    started: int = 0
    all_started: asyncio.Event = field(default_factory=asyncio.Event)

    async def arrive(self) -> None:
        self.started += 1
        if self.started == self.stacks:
            self.all_started.set()
        await self.all_started.wait()


async def one_stack(
    stack_no: int, rounds: int, seeds: list[int], watch_seconds: int, together: StartedTogether
) -> tuple[list[dict], list[dict]]:
    """One stack of its own: `rounds` bad releases, then a healthy try for each seed."""
    state = Path(tempfile.mkdtemp(prefix=f"modoru-bench-detect-promql-{stack_no}-"))
    tag = f"[stack {stack_no}] " if stack_no else ""
    async with promql_stack(state) as running:
        await together.arrive()
        client, settings, apps, url = (
            running.client,
            running.settings,
            running.apps,
            running.url,
        )
        bad, healthy = [], []
        for _ in range(rounds):
            timeline = await bad_release(client, settings, apps, url)
            print(
                f"{tag}promql 1.3.0 {timeline['severity']}: first failing request +0 s, breach "
                f"seen +{timeline['breach_seen_s']:.1f} s, rollback started "
                f"+{timeline['rollback_started_s']:.1f} s, "
                f"verified +{timeline['verified_s']:.1f} s",
                flush=True,
            )
            bad.append(timeline)
        for done, seed in enumerate(seeds, start=1):
            outcome = await healthy_bursty(client, settings, apps, url, watch_seconds, seed=seed)
            print(
                f"{tag}promql {NOISY} try {done}/{len(seeds)} (seed {seed}): "
                f"{'FALSE ROLLBACK' if outcome['false_rollback'] else 'no rollback'} "
                f"({outcome['phase']}, {outcome['polls']} polls, {outcome['probe_requests']} "
                f"bursty probe requests, {outcome['probe_failures']} failed)",
                flush=True,
            )
            healthy.append({"seed": seed, "stack": stack_no, **outcome})
    return bad, healthy


async def run_promql(rounds: int, tries: int, watch_seconds: int = 120, jobs: int = 1) -> dict:
    """The bad rounds on the first stack; the healthy tries dealt out over `jobs` stacks
    running at once (each with its own Temporal, sandbox and worker), seeds 0..tries-1."""
    together = StartedTogether(jobs)
    parts = await asyncio.gather(
        *(
            one_stack(
                j, rounds if j == 0 else 0, list(range(j, tries, jobs)), watch_seconds, together
            )
            for j in range(jobs)
        )
    )
    bad = [timeline for part_bad, _ in parts for timeline in part_bad]
    healthy = sorted((h for _, part in parts for h in part), key=lambda h: h["seed"])
    return {
        "scrape_s": SCRAPE_SECONDS,
        "delay_s": DELAY_SECONDS,
        "step_s": STEP_SECONDS,
        "poll_s": POLL_SECONDS,
        "traffic_rps": TRAFFIC_RPS,
        "watch_s": watch_seconds,
        "stacks": jobs,
        "bad_release": bad,
        "healthy_tries": len(healthy),
        "false_rollbacks": sum(h["false_rollback"] for h in healthy),
        "healthy": healthy,
    }
