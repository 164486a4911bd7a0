"""At the real clock: the embedded default exactly as `modoru up` starts it (the
scenario's clock, speed 1; Cloud Monitoring's minutes as long as real ones), then
the README's immediate rollback through the CLI. The undo lands at whatever second
of the minute the run reaches it; verification must wait for the first whole minute
after the rollout to be readable and judge every check on it. The fast clock of
the other tests cannot show this; this test is the one that runs it in CI (the
whole set is `python -m pytest -m realtime tests/realtime`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from starter.commands import verification_waits
from starter.embedded import EmbeddedStack, free_port
from tests.waiting import until
from worker.client import connect
from workflows.deployment_rollback import rollback_workflow_id

pytestmark = pytest.mark.integration


def cli(stack: EmbeddedStack, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MODORU_TEMPORAL_ADDRESS": stack.temporal_address,
        "TEMPORAL_CONFIG_FILE": str(stack.temporal_config_path),
    }
    return subprocess.run(
        [sys.executable, "-m", "starter.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


async def watch_verification(
    stack: EmbeddedStack, workflow_id: str, timeout: float = 420
) -> list[str]:
    """What `modoru status` says the verification is waiting for, read every 2 s until the
    rollback ends; fails if it has not ended after `timeout` seconds."""
    client = await connect(stack.client_settings())
    handle = client.get_workflow_handle(workflow_id)
    said: list[str] = []

    async def described():
        description = await handle.describe()
        if description.close_time is None:
            said.extend(w for w in await verification_waits(client, handle) if w not in said)
        return description

    await until(
        f"{workflow_id} to end",
        described,
        lambda d: d.close_time is not None,
        lambda d: f"status {d.status and d.status.name}; it said {said or 'nothing yet'}",
        timeout,
        interval=2,
    )
    return said


def test_an_immediate_rollback_at_the_real_clock_is_verified_on_judged_data(tmp_path) -> None:
    stack = EmbeddedStack(
        state_dir=tmp_path / "up",
        temporal_port=free_port(),
        ui_port=free_port(),
        persist=False,
        traffic_rps=10,  # `modoru up`'s default
    )
    stack.start()
    try:
        # Right after `modoru up` no whole minute of traffic exists yet: a guard says when one
        # will be readable (it waits for it; --no-wait-for-data fails saying so) instead of
        # calling the filter wrong.
        early = cli(
            stack,
            "guard",
            "start",
            "--deployment",
            "tekutoko-api",
            "--no-wait-for-data",
            timeout=60,
        )
        said = early.stdout + early.stderr
        assert early.returncode == 1, said
        assert "no whole minute of data yet: the first one ends at" in said, said
        assert "matches" not in said, said
        keys = stack.state_dir / "identities"
        started = cli(
            stack,
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
            str(keys / "oncall.key"),
            "--json",
            timeout=60,
        )
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        workflow_id = rollback_workflow_id("default", "tekutoko-api")
        waits = asyncio.run(  # the outer limit only for a call that hangs
            asyncio.wait_for(watch_verification(stack, workflow_id, 420), 480)
        )
        # while it waited, the status said for which minute and until when
        assert any(
            w.startswith("error_ratio: waiting for the error rate of ") and "readable at" in w
            for w in waits
        ), waits
        done = cli(stack, "status", workflow_id, "--json", timeout=60)
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert status["phase"] == "completed", status.get("message")
        checks = {c["name"]: c for c in status["verification"]["checks"]}
        # every check judged on real data: none waited out, none skipped
        for name in ("error_ratio", "p95", "cpu", "memory", "connection_pool", "logs"):
            assert checks[name]["ok"] and checks[name]["judged"], checks[name]
            assert not checks[name]["detail"].startswith(("skipped", "not judged")), checks[name]
        assert "requests" in checks["error_ratio"]["detail"]
    finally:
        stack.stop()
