"""The embedded default as `modoru up` starts it, approved from Slack: the
approval message appears on the sandbox Slack's page, a click on Approve in
headless Chromium reaches the gateway as Slack's signed request, the approval
counts, and the message is updated in place (needs Debian's chromium and the
playwright package; skipped without them). How soon it counts is printed here and
measured in bench.approval (click → undo PATCH), not asserted: a busy CI machine
is no measure of it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from starter.embedded import EmbeddedStack, free_port
from worker.client import connect
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def cli(stack: EmbeddedStack, *args: str) -> subprocess.CompletedProcess:
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
        timeout=90,
    )


def test_approve_on_the_sandbox_slack_page_counts_and_updates_the_message(tmp_path) -> None:
    playwright = pytest.importorskip("playwright.async_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed")
    stack = EmbeddedStack(
        state_dir=tmp_path / "up", temporal_port=free_port(), ui_port=free_port(), persist=False
    )
    stack.start()
    try:
        page_url = stack.slack_page()
        assert page_url, "the sandbox did not say where its Slack page is"
        keys = stack.state_dir / "identities"
        started = cli(
            stack,
            "rollback",
            "start",
            "--deployment",
            "tekutoko-api",
            "--severity",
            "investigate",
            "--reason",
            "error rate 12% since 1.3.0",
            "--requested-by",
            "oncall",
            "--key",
            str(keys / "oncall.key"),
            "--json",
        )
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        try:
            asyncio.run(click_and_watch(stack, playwright, page_url))
        except Exception as exc:  # say what the gateway and the worker saw
            logs = {
                name: (stack.state_dir / name).read_text(errors="replace")[-1500:]
                for name in ("slack-gateway.log", "slack-gateway-audit.jsonl", "worker.log")
                if (stack.state_dir / name).exists()
            }
            raise AssertionError(f"{exc!r}\n{logs}") from exc
        audit = [
            json.loads(line)
            for line in (stack.state_dir / "slack-gateway-audit.jsonl").read_text().splitlines()
        ]
        assert [(a["event"], a["outcome"], a["identity"]) for a in audit] == [
            ("approve", "counted", "sre-lead")
        ]
    finally:
        stack.stop()


async def click_and_watch(stack: EmbeddedStack, playwright, page_url: str) -> None:
    client = await connect(stack.client_settings())
    handle = client.get_workflow_handle(rollback_workflow_id("default", "tekutoko-api"))

    async def approvals() -> list[str]:
        return (await handle.query(DeploymentRollbackWorkflow.status)).approvals

    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await browser.new_page()
            assert "as=U0SRELEAD1" in page_url  # the page clicks as sre-lead
            await page.goto(page_url)
            approve = page.locator("button", has_text="Approve")
            await approve.wait_for(timeout=60_000)
            assert "Approval needed: tekutoko-api" in await page.content()
            clicked = time.monotonic()
            await approve.click()
            while not await approvals():
                assert time.monotonic() - clicked < 60, "the click's approval never counted"
                await asyncio.sleep(0.05)
            print(f"click -> approval counted: {time.monotonic() - clicked:.2f} s", flush=True)
            assert await approvals() == ["sre-lead"]
            await page.wait_for_selector("text=sre-lead approved in Slack", timeout=30_000)
            content = await page.content()
            assert "(edited)" in content
            await page.wait_for_selector("text=Approved: tekutoko-api", timeout=120_000)
            assert await page.locator("button", has_text="Approve").count() == 0
        finally:
            await browser.close()
    status = await handle.query(DeploymentRollbackWorkflow.status)
    detail = next(e.detail for e in status.audit if e.action == "approve" and e.counted)
    assert detail.startswith("approved in Slack by sre-lead")
