"""`modoru demo`: the runbook's story on the embedded default."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from runbook.models import ApprovalSignal, Phase, RollbackRequest, Severity
from worker.client import connect
from worker.settings import Settings
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

from .embedded import EmbeddedStack, StackError, free_port, port_free
from .render import console, err_console


def error_ratio(url: str, n: int = 20) -> float:
    errors = 0
    for _ in range(n):
        try:
            with urllib.request.urlopen(url, timeout=5):
                pass
        except urllib.error.HTTPError:
            errors += 1
    return errors / n


async def story(stack: EmbeddedStack, approver: str) -> int:
    endpoints = json.loads(stack.endpoints_path.read_text())
    api = endpoints["services"]["default/tekutoko-api"] + "/v1/walks"
    console.rule("1. tekutoko-api 1.3.0 is live")
    console.print(f"error ratio of {api}: {error_ratio(api):.0%} (runbook: > 10% → roll back after a look, within 15 minutes)")
    settings = Settings(temporal_address=stack.temporal_address, web_ui=stack.web_ui)
    client = await connect(settings)
    from .commands import start_rollback

    console.rule("2. the on-call engineer starts an investigate rollback")
    request = RollbackRequest(deployment="tekutoko-api", severity=Severity.INVESTIGATE, reason="API error rate about 60% since 1.3.0",
                              impact="/v1/walks failing for most users", cause="release 1.3.0", requested_by="oncall")
    await start_rollback(client, settings, request, wait=False, as_json=False)
    handle = client.get_workflow_handle(rollback_workflow_id("default", "tekutoko-api"))
    for _ in range(120):
        status = await handle.query(DeploymentRollbackWorkflow.status)
        if status.phase == Phase.AWAITING_APPROVAL:
            break
        await asyncio.sleep(0.25)
    console.rule(f"3. {approver} approves")
    await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by=approver, comment="1.2.0 was healthy", request_id="demo"))
    from .commands import follow

    console.rule("4. the rollback runs")
    final = await follow(handle)
    console.rule("5. after")
    console.print(f"error ratio of {api}: {error_ratio(api):.0%}")
    console.print(f"Web UI: {stack.web_ui}/namespaces/default/workflows/{final.workflow_id}")
    verified = final.phase == Phase.COMPLETED and final.verification is not None and final.verification.ok
    console.print("[green]rolled back and verified[/]" if verified else "[red]the rollback did not verify[/]")
    return 0 if verified else 1


def run_demo(state_dir: Path, approver: str) -> int:
    temporal_port = 7233 if port_free(7233) else free_port()
    ui_port = 8233 if port_free(8233) else free_port()
    if os.path.exists(state_dir / "temporal.db"):
        (state_dir / "temporal.db").unlink()  # each demo tells the story from the start
    stack = EmbeddedStack(state_dir=state_dir, temporal_port=temporal_port, ui_port=ui_port)
    try:
        stack.start()
    except StackError as exc:
        err_console.print(f"modoru demo: {exc}")
        return 2
    try:
        console.print(f"Temporal Web UI: {stack.web_ui} (open it while the demo runs)")
        return asyncio.run(story(stack, approver))
    finally:
        stack.stop()
