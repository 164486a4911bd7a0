"""The slow real-time end-to-end suite: every change kind that verifies, at clock
speed 1, through `modoru up`'s own stack (starter.embedded.EmbeddedStack at the
scenario's clock) and the `modoru` CLI run as a user runs it.

    .venv/bin/python -m pytest -m realtime tests/realtime -n 2 --dist loadfile -p no:randomly

(MODORU_REALTIME_ROLLBACKS=20 for the issue's twenty rollbacks in a row; default 3.)
In any other run these tests are skipped before a stack starts: they run only when
the -m expression selects `realtime`, or with MODORU_REALTIME=1."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from starter.embedded import EmbeddedStack, free_port
from tests.conftest import remove_cloudsql_data

HERE = Path(__file__).parent
MARKER = "realtime: the slow real-time end-to-end suite at clock speed 1 (pytest -m realtime)"
REGISTRY = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api"
DEPLOYMENT = "tekutoko-api"
# The bundled catalog's ingestion delay (the sandbox shows a minute's points 10 s after it).
DELAY_SECONDS = 20
# Every check verification judges on Cloud Monitoring / Cloud Logging data after a change.
METRIC_CHECKS = ("error_ratio", "p95", "cpu", "memory", "connection_pool", "logs")
# The runbook's troubleshooting confirms the fix by the error rate and health (修正確認) only.
RECOVERY_CHECKS = ("error_ratio", "p95")


def realtime_selected(config: pytest.Config) -> bool:
    """True when this run asked for the real-time suite: MODORU_REALTIME=1, or an -m
    expression that selects a test marked `realtime` alone."""
    if os.environ.get("MODORU_REALTIME") == "1":
        return True
    expression = (config.getoption("markexpr") or "").strip()
    if not expression:
        return False
    try:
        from _pytest.mark.expression import Expression

        return bool(Expression.compile(expression).evaluate(lambda name, **_: name == "realtime"))
    except Exception:  # pytest's expression module moved: read the expression plainly
        return bool(re.search(r"\brealtime\b", expression)) and not re.search(
            r"\bnot\s+realtime\b", expression
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """This suite's tests carry the `realtime` marker; unless the run selects it they are
    skipped, so the normal run (`pytest -n 7 tests/`) starts none of their stacks."""
    if realtime_selected(config):
        return
    skip = pytest.mark.skip(
        reason="real-time suite: run it with `pytest -m realtime tests/realtime` "
        "(or MODORU_REALTIME=1)"
    )
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.realtime)
            item.add_marker(skip)


def rollbacks_in_a_row() -> int:
    return int(os.environ.get("MODORU_REALTIME_ROLLBACKS", "3"))


# --- the record the run leaves for RESULTS.md ------------------------------------------


def record(kind: str, **values: Any) -> None:
    """One line of figures for tests/realtime/RESULTS.md, in MODORU_REALTIME_RECORD
    (default: modoru-realtime.jsonl in the temp dir), whichever process runs the test."""
    default = Path(tempfile.gettempdir()) / "modoru-realtime.jsonl"
    target = Path(os.environ.get("MODORU_REALTIME_RECORD", default))
    with target.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"kind": kind, "at": time.time(), **values}) + "\n")


# --- the stack -----------------------------------------------------------------------------


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class RealtimeStack:
    """`modoru up`'s own stack at the scenario's clock (speed 1), and the CLI against it."""

    embedded: EmbeddedStack
    started_at: float
    _apps: Any = field(default=None, repr=False)

    @property
    def state_dir(self) -> Path:
        return self.embedded.state_dir

    @property
    def endpoints(self) -> dict[str, Any]:
        return json.loads(self.embedded.endpoints_path.read_text())

    def key(self, identity: str) -> Path:
        return self.state_dir / "identities" / f"{identity}.key"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MODORU_TEMPORAL_ADDRESS": self.embedded.temporal_address,
            "TEMPORAL_CONFIG_FILE": str(self.embedded.temporal_config_path),
        }

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`modoru ARGS` in a shell of the user's, against this stack."""
        return subprocess.run(
            [sys.executable, "-m", "starter.cli", *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
        )

    def immediate_rollback(self) -> subprocess.CompletedProcess:
        """The README's on-call `immediate` rollback of tekutoko-api, signed, followed to its
        end (`--wait --json`)."""
        return self.cli(
            "rollback",
            "start",
            "--deployment",
            "tekutoko-api",
            "--severity",
            "immediate",
            "--reason",
            "error rate 60% since 1.3.0",
            "--requested-by",
            "oncall",
            "--key",
            str(self.key("oncall")),
            "--language",
            "en",
            "--wait",
            "--json",
            timeout=600,
        )

    def cli_background(self, *args: str) -> subprocess.Popen:
        """`modoru ARGS` left running (a `--wait` that another shell's `approve` ends)."""
        return subprocess.Popen(
            [sys.executable, "-m", "starter.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
        )

    def status(self, workflow_id: str) -> dict[str, Any] | None:
        shown = self.cli("status", workflow_id, "--json", timeout=60)
        if shown.returncode != 0:
            return None
        return last_json(shown.stdout)

    def wait_phase(
        self,
        workflow_id: str,
        phases: set[str],
        timeout: float,
        *,
        ended: set[str] = frozenset(),
        started_after: float | None = None,
    ) -> dict[str, Any]:
        """Poll `modoru status --json` until the change is in one of `phases`; with
        `started_after` (wall time), an earlier run under the same id is not it."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            status = self.status(workflow_id)
            started = ((status or {}).get("timings") or {}).get("started")
            if started_after is not None and (
                started is None or parse_time(started).timestamp() < started_after
            ):
                status = None
                time.sleep(1)
                continue
            if status and status.get("phase") in phases:
                return status
            if status and status.get("phase") in (ended or {"failed", "completed", "rejected"}):
                break
            time.sleep(2)
        raise AssertionError(
            f"{workflow_id} did not reach {sorted(phases)} (last: "
            f"{status and status.get('phase')}: {status and status.get('message')})"
        )

    # --- the sandbox's Kubernetes, as a CD pipeline or a person with kubectl ---------------

    @property
    def apps(self):
        if self._apps is None:
            from kubernetes import client, config

            api = config.new_client_from_config(config_file=self.endpoints["kubeconfig"])
            self._apps = client.AppsV1Api(api)
        return self._apps

    def live_image(self) -> str:
        deployment = self.apps.read_namespaced_deployment(DEPLOYMENT, "default")
        return deployment.spec.template.spec.containers[0].image

    def release(self, tag: str, timeout: float = 120) -> float:
        """Set the image as a CD pipeline does (`kubectl set image` with a change cause);
        returns the wall time at which the new pods serve alone."""
        self.apps.patch_namespaced_deployment(
            DEPLOYMENT,
            "default",
            {
                "metadata": {"annotations": {"kubernetes.io/change-cause": f"release {tag}"}},
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "api", "image": f"{REGISTRY}:{tag}"}]}
                    }
                },
            },
        )
        return self.wait_rollout(timeout)

    def wait_rollout(self, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            d = self.apps.read_namespaced_deployment(DEPLOYMENT, "default")
            s = d.status
            if (
                (s.observed_generation or 0) >= d.metadata.generation
                and s.updated_replicas == s.replicas == s.available_replicas == d.spec.replicas
            ):
                return time.time()
            time.sleep(0.2)
        raise AssertionError(f"the rollout of {DEPLOYMENT} did not finish in {timeout:g}s")

    def until_first_readable_minute(self) -> None:
        """Sleep until the first whole minute after the stack's start is readable (the
        release guard's baseline needs one): its end plus the ingestion delay, plus a poll."""
        start = dt.datetime.fromtimestamp(self.started_at, dt.UTC)
        first = start.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        readable = first + dt.timedelta(seconds=60 + DELAY_SECONDS + 5)
        time.sleep(max(0.0, readable.timestamp() - time.time()))

    def notices(self) -> list[dict[str, Any]]:
        path = self.state_dir / "notifications.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON document a `--json` command printed last (one line, or pretty-printed)."""
    text = stdout.strip()
    with contextlib.suppress(json.JSONDecodeError):
        return json.loads(text.splitlines()[-1])
    start = text.rfind("\n{")
    return json.loads(text[start + 1 :] if start >= 0 else text)


@contextlib.contextmanager
def realtime_stack(state_dir: Path, scenario: str = "tekutoko") -> Iterator[RealtimeStack]:
    """The embedded default as `modoru up [--scenario S]` starts it: the scenario's clock
    (speed 1), 10 demo requests a second, the demo identities' keys in the state dir."""
    embedded = EmbeddedStack(
        state_dir=state_dir,
        temporal_port=free_port(),
        ui_port=free_port(),
        scenario=scenario,
        persist=False,
        traffic_rps=10,  # `modoru up`'s default
        clock_speed=None,  # the scenario's: 1.0
    )
    started_at = time.time()
    embedded.start()
    running = RealtimeStack(embedded, started_at)
    assert running.endpoints["metric_clock"]["speed"] == 1.0, running.endpoints["metric_clock"]
    try:
        yield running
    finally:
        if running._apps is not None:
            running._apps.api_client.close()
        embedded.stop()
        remove_cloudsql_data(state_dir)


# --- what every verified change must show ------------------------------------------------


def assert_judged_on_real_data(status: dict[str, Any], *, checks: tuple[str, ...] = METRIC_CHECKS):
    """Every metric check judged, on real data, and passed: none waited out ("not judged"),
    none skipped, none left unread."""
    verification = status.get("verification")
    assert verification, f"no verification in the status: {status.get('message')}"
    by_name = {c["name"]: c for c in verification["checks"]}
    for name in [name for name in checks if name in by_name]:
        check = by_name[name]
        assert check["judged"], check
        assert not check.get("unread") and not check.get("pending"), check
        assert not check["detail"].startswith(("skipped", "not judged", "waiting")), check
        assert check["ok"], check
    assert verification["ok"], verification
    requests = re.search(r"over (\d+) requests", by_name["error_ratio"]["detail"])
    assert requests and int(requests[1]) >= MIN_REQUESTS_IN_A_MINUTE, by_name["error_ratio"]
    # last, so that a failure here says the checks made were all judged: the runbook's
    # checks after a rollback (ロールバック後の確認項目) hold for its every method
    missing = [name for name in checks if name not in by_name]
    assert not missing, f"checks not made: {missing}; made: {sorted(by_name)}"


# After its first whole minute is readable, verification reads at most a poll (5 s) later;
# the HTTP checks and the read itself take a few seconds more.
JUDGED_WITHIN_SECONDS = 40
# `modoru up` sends 10 requests a second: a whole minute of them is some 600.
MIN_REQUESTS_IN_A_MINUTE = 300


def ceil_minute(moment: dt.datetime) -> dt.datetime:
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + dt.timedelta(minutes=1)


def assert_verified_on_the_first_whole_minute(status: dict) -> tuple[dt.datetime, float]:
    """The verdict came once the first whole minute after the rollout was readable, and
    not much later; returns (when the undo landed, how long verification took)."""
    timings = {k: parse_time(v) for k, v in status["timings"].items()}
    undo, rolled_out = timings["waiting_rollout"], timings["mitigated"]
    verifying, completed = timings["verifying"], timings.get("completed") or timings["failed"]
    first_end = ceil_minute(rolled_out) + dt.timedelta(minutes=1)
    readable = first_end + dt.timedelta(seconds=DELAY_SECONDS)
    assert completed >= ceil_minute(undo) + dt.timedelta(minutes=1, seconds=DELAY_SECONDS), (
        f"verified at {completed:%H:%M:%S} before a whole minute after the undo "
        f"({undo:%H:%M:%S}) was readable"
    )
    assert completed <= readable + dt.timedelta(seconds=JUDGED_WITHIN_SECONDS), (
        f"verified at {completed:%H:%M:%S}, long after the first whole minute after the "
        f"rollout ({rolled_out:%H:%M:%S}) was readable at {readable:%H:%M:%S}"
    )
    return undo, (completed - verifying).total_seconds()


def figures(status: dict[str, Any]) -> dict[str, Any]:
    """When the undo (or the change's rollout) landed and how long verification took, as far
    as the status shows them; recorded before anything is asserted."""
    timings = {k: parse_time(v) for k, v in status.get("timings", {}).items()}
    undo = timings.get("waiting_rollout")
    ended = timings.get("completed") or timings.get("failed")
    verifying = timings.get("verifying")
    return {
        "undo_at": undo.isoformat() if undo else None,
        "undo_second": round(undo.second + undo.microsecond / 1e6, 1) if undo else None,
        "verification_seconds": (
            round((ended - verifying).total_seconds(), 1) if ended and verifying else None
        ),
        "phase": status.get("phase"),
        "message": status.get("message", "")[:300],
    }


def audit_at(status: dict[str, Any], *actions: str) -> dt.datetime | None:
    """When the audit trail first records one of `actions`."""
    for entry in status.get("audit", []):
        if entry["action"] in actions:
            return parse_time(entry["at"])
    return None
