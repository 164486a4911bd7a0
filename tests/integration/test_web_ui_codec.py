"""The Temporal Web UI, pointed at the codec server by the dev server's
--ui-codec-endpoint, shows an encrypted workflow input in clear (needs Debian's
chromium and the playwright package; skipped without them); the stock CLI's
--codec-endpoint does too, with the token and only with it."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import subprocess
import uuid

import pytest
from aiohttp import web
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from runbook.models import RollbackRequest, Severity
from tests.workflows.conftest import binary
from worker.codec import EncryptionCodec, data_converter_for
from worker.codec_server import build_app, new_token
from workflows import search_attributes as sa
from workflows.deployment_rollback import DeploymentRollbackWorkflow

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
MARKER = "ui-marker-0b7e: payments 502s"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


TOKEN = new_token()


async def test_the_web_ui_decodes_payloads_through_the_codec_server() -> None:
    playwright = pytest.importorskip("playwright.async_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed")
    codec = EncryptionCodec([("k1", bytes(range(32)))])
    decode_calls = []

    @web.middleware
    async def count(request: web.Request, handler):
        if request.path == f"/{TOKEN}/decode" and request.method == "POST":
            decode_calls.append(request.headers.get("Origin"))
        return await handler(request)

    ui_port, codec_port = free_port(), free_port()
    app = build_app(codec, {f"http://127.0.0.1:{ui_port}"}, TOKEN)
    app.middlewares.append(count)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", codec_port).start()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        search_attributes=sa.ALL,
        ui=True,
        ui_port=ui_port,
        # The dev server's UI sends no Authorization header over http: the token is the
        # endpoint's first path segment, as `modoru up --encrypt-histories` wires it.
        dev_server_extra_args=["--ui-codec-endpoint", f"http://127.0.0.1:{codec_port}/{TOKEN}"],
        dev_server_log_level="error",
    )
    try:
        client = await Client.connect(
            env.client.service_client.config.target_host, data_converter=data_converter_for(codec)
        )
        workflow_id = f"ui-{uuid.uuid4().hex[:8]}"
        # No worker polls this queue: the started event's input is all the UI has to show.
        await client.start_workflow(
            DeploymentRollbackWorkflow.run,
            RollbackRequest(
                deployment="tekutoko-api",
                severity=Severity.IMMEDIATE,
                reason=MARKER,
                requested_by="oncall",
            ),
            id=workflow_id,
            task_queue=f"nobody-{workflow_id}",
        )
        async with playwright.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page = await browser.new_page()
                await page.goto(
                    f"http://127.0.0.1:{ui_port}/namespaces/default/workflows/{workflow_id}"
                )
                await page.get_by_text(MARKER).first.wait_for(timeout=60_000)
            finally:
                await browser.close()
        assert decode_calls and set(decode_calls) == {f"http://127.0.0.1:{ui_port}"}
        raw = (await env.client.get_workflow_handle(workflow_id).fetch_history()).to_json()
        assert MARKER not in raw
        await client.get_workflow_handle(workflow_id).terminate("test over")
    finally:
        await env.shutdown()
        await runner.cleanup()


async def test_the_stock_cli_decodes_with_the_token_and_only_with_it() -> None:
    """`temporal workflow show --codec-endpoint`: the token as a Bearer header (--codec-auth)
    or as the endpoint's first path segment; without it, the input stays sealed."""
    codec = EncryptionCodec([("k1", bytes(range(32)))])
    codec_port = free_port()
    runner = web.AppRunner(build_app(codec, {"http://127.0.0.1:8233"}, TOKEN))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", codec_port).start()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        search_attributes=sa.ALL,
        dev_server_log_level="error",
    )
    try:
        address = env.client.service_client.config.target_host
        client = await Client.connect(address, data_converter=data_converter_for(codec))
        workflow_id = f"cli-{uuid.uuid4().hex[:8]}"
        await client.start_workflow(
            DeploymentRollbackWorkflow.run,
            RollbackRequest(
                deployment="tekutoko-api",
                severity=Severity.IMMEDIATE,
                reason=MARKER,
                requested_by="oncall",
            ),
            id=workflow_id,
            task_queue=f"nobody-{workflow_id}",
        )
        endpoint = f"http://127.0.0.1:{codec_port}"

        def show(*codec_args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [
                    binary("temporal"),
                    "workflow",
                    "show",
                    "-o",
                    "json",
                    "--address",
                    address,
                    "-w",
                    workflow_id,
                    "--command-timeout",
                    "10s",
                    *codec_args,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )

        for codec_args in (
            ("--codec-endpoint", endpoint, "--codec-auth", f"Bearer {TOKEN}"),
            ("--codec-endpoint", f"{endpoint}/{TOKEN}"),
        ):
            done = await asyncio.to_thread(show, *codec_args)
            assert done.returncode == 0, done.stderr
            assert base64.b64encode(b'{"reason":"' + MARKER.encode()).decode()[:40] in done.stdout
        refused = await asyncio.to_thread(show, "--codec-endpoint", endpoint)
        assert refused.returncode != 0 and MARKER not in refused.stdout
        await client.get_workflow_handle(workflow_id).terminate("test over")
    finally:
        await env.shutdown()
        await runner.cleanup()
