"""The embedded default for benchmarks: a Temporal dev server in memory, a
sandbox whose pods are Ready at once, and one worker, each its own process."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from starter.embedded import EmbeddedStack, free_port
from worker.client import connect
from worker.settings import Settings

IMAGE = "registry.local/svc-{i:04d}:{version}"


def fleet_scenario(n: int, bad_error_ratio: float = 0.6) -> dict:
    instant = {"pull_seconds": 0, "ready_after_seconds": 0, "latency": {"p50_ms": 2, "p95_ms": 5}}
    return {
        "name": f"fleet-{n}",
        "images": [
            {"match": "*:1.1.0", "profile": {**instant, "error_ratio": bad_error_ratio}},
            {"match": "*", "profile": instant},
        ],
        "deployments": [
            {
                "name": f"svc-{i:04d}",
                "replicas": 1,
                "revisions": [
                    {"image": IMAGE.format(i=i, version="1.0.0"), "change_cause": "good"},
                    {"image": IMAGE.format(i=i, version="1.1.0"), "change_cause": "bad"},
                ],
            }
            for i in range(n)
        ],
        "services": [
            {"name": f"svc-{i:04d}", "selector": {"app": f"svc-{i:04d}"}} for i in range(n)
        ],
    }


def fleet_catalog(state: Path, identities: list[dict] | None = None) -> dict:
    return {
        "services": [],
        **({"identities": identities} if identities else {}),
        "default": {
            "name": "fleet",
            "deployment": "fleet",
            "service": "fleet",
            "approval": {
                # a role in signed mode (bench-approver holds "approver"), a name in plain mode
                "approvers": ["approver", "bench-approver"],
                "investigate_approvals": 1,
                "immediate_approvals": 0,
            },
            "channels": [{"kind": "jsonl", "path": str(state / "notices.jsonl")}],
            "verification_window_seconds": 120,
            "rollout_timeout_seconds": 240,
            # the sandbox shows a minute's points 10 s after it ends, not Google's 2-4 minutes
            "post_checks": {"ingestion_delay_seconds": 20},
        },
    }


class RssSampler:
    """Peak resident memory of one process, read from /proc while it runs."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval, self.peak_kib, self.samples = pid, interval, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = self.rss_kib()
            except OSError:
                return
            self.peak_kib = max(self.peak_kib, value)
            self.samples.append(value)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class BenchStack:
    def __init__(
        self,
        deployments: int,
        bad_error_ratio: float = 0.6,
        identities: list[dict] | None = None,
        traffic_rps: float = 0.0,
        catalog_hook: Callable[[Path, dict], None] | None = None,
    ) -> None:
        # changes the catalog before it is written (state dir, catalog), e.g. Slack's parts
        self.catalog_hook = catalog_hook
        self.deployments = deployments
        # steady API calls a second to every service (verification then never waits for probes)
        self.traffic_rps = traffic_rps
        self.bad_error_ratio = bad_error_ratio
        # with identities, only signed decisions count (and are checked again by the undo)
        self.identities = identities
        self._tmp = tempfile.TemporaryDirectory(prefix="modoru-bench-")
        self.state = Path(self._tmp.name)
        self.stack: EmbeddedStack | None = None

    def __enter__(self) -> BenchStack:
        scenario = self.state / "fleet.yaml"
        scenario.write_text(yaml.safe_dump(fleet_scenario(self.deployments, self.bad_error_ratio)))
        catalog = self.state / "catalog.yaml"
        written = fleet_catalog(self.state, self.identities)
        if self.catalog_hook is not None:
            self.catalog_hook(self.state, written)
        catalog.write_text(yaml.safe_dump(written))
        os.environ["MODORU_CATALOG"] = str(catalog)
        os.environ["MODORU_LOG_LEVEL"] = "WARNING"
        self.stack = EmbeddedStack(
            state_dir=self.state,
            temporal_port=free_port(),
            ui_port=free_port(),
            scenario=str(scenario),
            persist=False,
            traffic_rps=self.traffic_rps,
        )
        self.stack.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.stack is not None:
            self.stack.stop()
        self._tmp.cleanup()

    @property
    def endpoints(self) -> dict:
        return json.loads(self.stack.endpoints_path.read_text())

    @property
    def settings(self) -> Settings:
        return self.stack.client_settings()

    async def client(self):
        return await connect(self.settings)

    def worker_pid(self) -> int:
        pid = self.stack.pid("worker")
        assert pid, "the worker is not running"
        return pid

    def requests_since(self, seq: int) -> tuple[list[dict], int]:
        with urllib.request.urlopen(
            f"{self.endpoints['sandbox_admin']}/requests?since={seq}", timeout=30
        ) as response:
            body = json.loads(response.read())
        return body["entries"], body["last"]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def wait_for_worker(seconds: float = 3.0) -> None:
    time.sleep(seconds)  # the worker registers and starts polling


async def wait_for_pollers(client, task_queue: str, timeout: float = 120.0) -> None:
    """Until a worker polls `task_queue` for workflow and activity tasks (it has
    imported everything and built its activities)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = []
        for kind in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            answer = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=kind,
                )
            )
            found.append(bool(answer.pollers))
        if all(found):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no worker polled {task_queue} within {timeout:g}s")
