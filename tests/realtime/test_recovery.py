"""Point-in-time recovery at the real clock, through `modoru up`'s stack and the CLI: rows
written, the moment T noted, the rows deleted; `modoru pitr start --time T --check ...`
clones the Cloud SQL instance to T, the check runs on the clone, two signed approvals at
each gate, the app is switched and sees the rows again. Its checks are SQL and the app's
health, not metrics: nothing waits for a whole minute, but every step runs at real speed."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import default_kubectl
from tests.realtime.conftest import RealtimeStack, last_json, realtime_stack

pytestmark = pytest.mark.realtime

COUNT = "SELECT count(*) FROM walks"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[RealtimeStack]:
    with realtime_stack(tmp_path_factory.mktemp("recovery")) as running:
        yield running


def psql(stack: RealtimeStack, sql: str) -> str:
    """The runbook's way in: psql in an app pod, through its Cloud SQL Auth Proxy sidecar."""
    done = subprocess.run(
        [
            default_kubectl(),
            "--kubeconfig",
            stack.endpoints["kubeconfig"],
            "exec",
            "deploy/tekutoko-api",
            "-c",
            "api",
            "--",
            "psql",
            "-h",
            "localhost",
            "-U",
            "tekutoko",
            "-d",
            "tekutoko_production",
            "-XAtc",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def approve_gate(stack: RealtimeStack, workflow_id: str, gate: str) -> None:
    deadline = time.monotonic() + 600
    status: dict = {}
    while time.monotonic() < deadline:
        status = stack.status(workflow_id) or {}
        if status.get("phase") == "awaiting_approval" and status.get("gate") == gate:
            break
        assert status.get("phase") not in ("failed", "completed"), status.get("message")
        time.sleep(2)
    else:
        raise AssertionError(f"no {gate} gate: {status.get('phase')}: {status.get('message')}")
    for approver in ("sre-lead", "backend-lead"):
        approved = stack.cli(
            "approve", workflow_id, "--by", approver, "--key", str(stack.key(approver))
        )
        assert approved.returncode == 0 and "counted" in approved.stdout, (
            approved.stdout + approved.stderr
        )


def test_a_point_in_time_recovery_with_a_check_clones_verifies_and_switches(
    stack: RealtimeStack,
) -> None:
    stack.release("1.2.0")  # a healthy release: the recovery checks the app's health after it
    psql(
        stack,
        "INSERT INTO walks (user_id, started_at, distance_m, steps) "
        "SELECT id, now(), 1200, 1500 FROM users",
    )
    count = psql(stack, COUNT)
    time.sleep(2)
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    time.sleep(2)
    psql(stack, "DELETE FROM walks WHERE distance_m = 1200")
    assert psql(stack, COUNT) != count
    started = stack.cli(
        "pitr",
        "start",
        "--service",
        "tekutoko-api",
        "--time",
        at.isoformat().replace("+00:00", "Z"),
        "--reason",
        "a cleanup job deleted walks",
        "--check",
        f"walks={COUNT} => {count}",
        "--requested-by",
        "oncall",
        "--key",
        str(stack.key("oncall")),
        "--language",
        "en",
        "--json",
        timeout=180,
    )
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    workflow_id = last_json(started.stdout)["workflow_id"]
    approve_gate(stack, workflow_id, "clone")
    approve_gate(stack, workflow_id, "switch")
    status = stack.wait_phase(workflow_id, {"completed"}, timeout=600)
    assert [c["ok"] for c in status["checks"]] == [True], status["checks"]
    assert status["switched"] and status["clone"] in status["switched"], status["switched"]
    assert status["health"] and all(c["ok"] for c in status["health"]), status["health"]
    assert psql(stack, COUNT) == count  # the app, through its proxy, sees the rows at T
