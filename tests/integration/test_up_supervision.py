"""`modoru up` supervises its children: a SIGKILLed worker comes back (a new
pid, after 1 s then 2 s) and still does the work; a dead Temporal stops
everything with a non-zero exit and a line saying why."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from starter.cli import supervise
from starter.embedded import EmbeddedStack, free_port

pytestmark = pytest.mark.integration


def supervise_until(stack: EmbeddedStack, done: str, timeout: float = 20) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines += stack.supervise()
        if any(done in line for line in lines):
            return lines
        time.sleep(0.1)
    raise AssertionError(f"never saw {done!r}: {lines}")


def test_a_killed_worker_is_restarted_and_a_dead_temporal_stops_everything(
    tmp_path, capsys
) -> None:
    stack = EmbeddedStack(
        state_dir=tmp_path / "up",
        temporal_port=free_port(),
        ui_port=free_port(),
        persist=False,
        traffic_rps=5,
        clock_speed=20,
    )  # metric minutes pass in 3 s: verification needs a complete one
    stack.start()
    try:
        for delay in ("1s", "2s"):  # the backoff doubles while the worker keeps dying
            before = stack.pid("worker")
            assert before is not None
            os.killpg(before, signal.SIGKILL)
            started = time.monotonic()
            lines = supervise_until(stack, "worker restarted")
            assert (
                lines[0] == f"worker exited with code -9; restarting in {delay} (see "
                f"{stack.state_dir / 'worker.log'})"
            )
            assert time.monotonic() - started >= float(delay[:-1]) - 0.2
            after = stack.pid("worker")
            assert (
                after is not None
                and after != before
                and lines[-1] == f"worker restarted (pid {after})"
            )
            assert stack.pid("temporal") and stack.pid(
                "sandbox"
            )  # Temporal and the sandbox kept running

        # The restarted worker does the work: an immediate rollback through the CLI completes.
        keys = stack.state_dir / "identities"
        env = {
            **os.environ,
            "MODORU_TEMPORAL_ADDRESS": stack.temporal_address,
            "TEMPORAL_CONFIG_FILE": str(stack.temporal_config_path),
        }
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "starter.cli",
                "rollback",
                "start",
                "--deployment",
                "tekutoko-api",
                "--severity",
                "immediate",
                "--reason",
                "error rate 60%",
                "--requested-by",
                "oncall",
                "--key",
                str(keys / "oncall.key"),
                "--wait",
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1])["phase"] == "completed"

        temporal = stack.pid("temporal")
        assert temporal is not None
        os.killpg(temporal, signal.SIGKILL)
        capsys.readouterr()
        assert supervise(stack, lambda: False, interval=0.1) == 1
        said = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(said) == 1 and re.fullmatch(
            r"modoru: the Temporal dev server exited with code -9; stopping everything \(see "
            r".*temporal\.log\)",
            said[0],
        ), said
        assert stack.processes == []  # everything stopped
    finally:
        stack.stop()
