"""The reliability suite's world: the embedded default (a Temporal dev server
keeping its state in a SQLite file, so it can be restarted; the sandbox; a
worker), plus worker processes of the suite's own that it SIGKILLs and
replaces, and the Temporal server it kills and starts again on the same file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from bench.harness import fleet_catalog, fleet_scenario
from starter.embedded import EmbeddedStack, free_port, wait_port
from tests.conftest import METRICS_DELAY
from worker.client import connect

FULL = (
    os.environ.get("MODORU_RELIABILITY", "short") == "full"
)  # `python -m bench.reliability` sets it; plain pytest runs the short suite
MUTATING = ("create", "update", "patch", "delete", "deletecollection")


def quick_catalog(state: Path) -> dict[str, Any]:
    """The fleet's catalog, with the post-checks reading the sandbox's metrics as soon as it
    shows them (10 s after a minute ends) rather than after Google's 2-4 minutes."""
    catalog = fleet_catalog(state)
    catalog["default"]["post_checks"] = {"ingestion_delay_seconds": METRICS_DELAY}
    return catalog


@dataclass
class Kill:
    """One SIGKILL of a worker: where (the activity just scheduled, or a moment), and when."""

    at: str
    seconds: float  # since the workflow started


@dataclass
class WorkerProcess:
    """A `modoru worker` process of the suite's own, on its own task queue."""

    env: dict[str, str]
    logs: Path
    proc: subprocess.Popen | None = None
    spawned: int = 0

    def start(self) -> None:
        self.spawned += 1
        log = (self.logs / f"worker-{self.env['MODORU_TASK_QUEUE']}-{self.spawned}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def check(self) -> None:
        """Fail at once if the worker died on its own (not by our SIGKILL)."""
        if (
            self.proc is not None
            and self.proc.poll() is not None
            and self.proc.returncode != -signal.SIGKILL
        ):
            log = self.logs / f"worker-{self.env['MODORU_TASK_QUEUE']}-{self.spawned}.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise AssertionError(
                f"the worker exited with code {self.proc.returncode}: {' | '.join(tail)}"
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def replace(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class ReliabilityStack:
    state: Path
    deployments: int = 8
    scenario: str | None = (
        None  # a bundled scenario's name; None: `deployments` instant services (bench.harness)
    )
    catalog: dict[str, Any] | None = None
    clock_speed: float | None = None
    traffic_rps: float = 0.0
    stack: EmbeddedStack | None = None
    workers: list[WorkerProcess] = field(default_factory=list)

    def __enter__(self) -> ReliabilityStack:
        self.state.mkdir(parents=True, exist_ok=True)
        scenario = self.scenario
        if scenario is None:
            path = self.state / "fleet.yaml"
            path.write_text(yaml.safe_dump(fleet_scenario(self.deployments)))
            scenario = str(path)
        self.catalog_path = self.state / "catalog.yaml"
        self.catalog_path.write_text(yaml.safe_dump(self.catalog or quick_catalog(self.state)))
        self.stack = EmbeddedStack(
            state_dir=self.state / "stack",
            temporal_port=free_port(),
            ui_port=free_port(),
            scenario=scenario,
            persist=True,
            traffic_rps=self.traffic_rps,
            clock_speed=self.clock_speed,
        )
        self._catalog_before = os.environ.get("MODORU_CATALOG")
        os.environ["MODORU_CATALOG"] = str(self.catalog_path)  # the stack's own worker reads it too
        self.stack.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.stop()
        if self.stack is not None:
            self.stack.stop()
        if self._catalog_before is None:
            os.environ.pop("MODORU_CATALOG", None)
        else:
            os.environ["MODORU_CATALOG"] = self._catalog_before

    @property
    def endpoints(self) -> dict[str, Any]:
        return json.loads(self.stack.endpoints_path.read_text())

    async def client(self) -> Client:
        return await connect(self.stack.client_settings())

    def worker(self, queue: str | None = None, **env: str) -> WorkerProcess:
        """A started worker process on a task queue of its own."""
        queue = queue or f"rel-{uuid.uuid4().hex[:8]}"
        own = {
            k: v for k, v in self.stack.worker_env().items() if k != "MODORU_METRICS_ADDRESS"
        }  # the stack's worker has that port
        process = WorkerProcess(
            {
                **own,
                "MODORU_CATALOG": str(self.catalog_path),
                # The catalogs' notice files sit in the suite's state dir, above the stack's.
                "MODORU_NOTICES_DIR": str(self.state),
                "MODORU_TASK_QUEUE": queue,
                "MODORU_LOG_LEVEL": "WARNING",
                **env,
            },
            self.state,
        )
        process.start()
        self.workers.append(process)
        return process

    # -- the sandbox's request log and fault rules --------------------------------------------

    def admin(
        self, path: str, method: str = "GET", body: Any = None, base: str | None = None
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{base or self.endpoints['sandbox_admin']}/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def mark(self) -> int:
        return self.admin("requests?since=0")["last"]

    def requests_since(self, seq: int = 0) -> list[dict[str, Any]]:
        return self.admin(f"requests?since={seq}")["entries"]

    def writes(self, since: int, resource: str, name: str | None = None) -> list[dict[str, Any]]:
        """Mutating requests the API accepted (2xx) on `resource` (and `name`)."""
        return [
            e
            for e in self.requests_since(since)
            if e["resource"] == resource
            and e["verb"] in MUTATING
            and 200 <= e["status"] < 300
            and (name is None or e["name"] == name)
        ]

    # -- the Temporal server -------------------------------------------------------------------

    def restart_temporal(self, down_seconds: float = 0.0) -> float:
        """SIGKILL the dev server, wait `down_seconds`, start it again on the same
        SQLite file and port; returns how long it was unreachable."""
        stack = self.stack
        entry = next(e for e in stack.processes if e[0] == "temporal" and e[1].poll() is None)
        killed = time.monotonic()
        os.killpg(entry[1].pid, signal.SIGKILL)
        entry[1].wait(timeout=10)
        stack.processes.remove(entry)
        entry[2].close()
        time.sleep(down_seconds)
        proc = stack._spawn("temporal", stack.temporal_argv())
        wait_port(
            stack.temporal_port,
            time.monotonic() + 60,
            proc,
            "the Temporal dev server",
            stack.state_dir / "temporal.log",
        )
        return time.monotonic() - killed


# -- reading histories -----------------------------------------------------------------------------


async def scheduled_activities(handle: WorkflowHandle) -> list[str]:
    """The activity types in the order the workflow scheduled them."""
    found = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            found.append(event.activity_task_scheduled_event_attributes.activity_type.name)
    return found


async def retried_activities(handle: WorkflowHandle) -> dict[str, int]:
    """The last attempt of each activity that needed more than one."""
    scheduled, found = {}, {}
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = (
                event.activity_task_scheduled_event_attributes.activity_type.name
            )
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            if started.attempt > 1:
                found[scheduled[started.scheduled_event_id]] = started.attempt
    return found


async def kill_at_boundaries(
    handle: WorkflowHandle,
    worker: WorkerProcess,
    boundaries: set[int] | None,
    started: float,
    on_poll: Any = None,
) -> list[Kill]:
    """Follow the history as it grows (a long poll: new events arrive as they are
    written); when it shows the n-th ActivityTaskScheduled (n counted from 1) and
    n is one of `boundaries` (None: every one), SIGKILL the worker and start a new
    one. `on_poll` (async, may be None) runs every 0.1 s meanwhile, e.g. to approve
    a gate. Returns when the workflow has closed."""
    kills: list[Kill] = []

    async def follow() -> None:
        seen = 0
        async for event in handle.fetch_history_events(wait_new_event=True):
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                seen += 1
                if boundaries is None or seen in boundaries:
                    worker.replace()
                    kills.append(
                        Kill(
                            at=f"#{seen} "
                            f"{event.activity_task_scheduled_event_attributes.activity_type.name}",
                            seconds=time.monotonic() - started,
                        )
                    )

    async def watch() -> None:
        while True:
            worker.check()
            if on_poll is not None:
                await on_poll()
            await asyncio.sleep(0.1)

    following, watching = asyncio.create_task(follow()), asyncio.create_task(watch())
    done, _ = await asyncio.wait({following, watching}, return_when=asyncio.FIRST_COMPLETED)
    for task in (following, watching):
        if task not in done:
            task.cancel()
    for task in done:
        task.result()  # a dead worker or a failed look raises here
    return kills
