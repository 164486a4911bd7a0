"""The runbook's forward fix for real: 1.3.0 is live and failing, rolling back
is ruled out, so the workflow reads every pod's log and groups the errors,
waits for the hotfix (recorded from the CLI once staging passed), deploys it
through the GitHub emulator's "CD - Production" as a redeploy approved in
modoru and reviewed in GitHub, and watches the error rate from the Cloud
Monitoring emulator fall under the release guard's thresholds before it
announces recovery."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from githubkit import GitHub, TokenAuthStrategy
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from runbook.cd_models import RedeployStatus
from runbook.forward_fix_models import ForwardFixRequest, ForwardFixResult, ForwardFixStatus
from runbook.guard import MonitoringConfig
from runbook.models import Phase, Severity
from sandbox.traffic import TrafficGenerator
from tests.conftest import METRICS_DELAY, RunningSandbox
from tests.integration.cd_stack import IMAGE, CdStack, cd_entry, cd_stack, with_run
from tests.waiting import phase_of as phase_line
from tests.waiting import until
from workflows.forward_fix import ForwardFixWorkflow, forward_fix_workflow_id

pytestmark = pytest.mark.integration
HOTFIX = "1.3.2"
RATE = 40  # requests per second on loopback, so every metric window has enough requests to judge


@pytest.fixture
async def stack(dev_env, sandbox: RunningSandbox, tmp_path) -> AsyncIterator[CdStack]:
    def steady_traffic() -> None:
        sandbox.sandbox.traffic = TrafficGenerator(
            sandbox.sandbox._service_urls, ["/v1/walks"], RATE, 300
        )
        sandbox.sandbox.traffic.start()

    sandbox.call(steady_traffic)
    entry = cd_entry(
        tmp_path,
        monitoring=MonitoringConfig(
            preset="gke_l7", window_seconds=60, ingestion_delay_seconds=METRICS_DELAY
        ),
    )
    async for running in cd_stack(dev_env, sandbox, tmp_path, entry, with_metrics=True):
        yield running


def push_hotfix(stack: CdStack, tag: str) -> None:
    """The hotfix branch's build pushes its image, as the pipeline would."""
    body = json.dumps({"package": "tekutoko-api", "tags": [tag]}).encode()
    request = urllib.request.Request(
        f"{stack.endpoints['artifact_registry'].rstrip('/')}/sandbox/push",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


async def started(handle, timeout: float = 60) -> None:
    async def described():
        try:
            return await handle.describe()
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            return None

    await until(
        f"{handle.id} to start",
        described,
        lambda d: d is not None,
        lambda d: "no such workflow (not found)",
        timeout,
    )


async def phase_of(handle, phase: Phase, model, timeout: float = 90):
    """The change's status once it reaches `phase` or fails."""
    return await until(
        f"{handle.id} to reach {phase.value} (or to fail)",
        lambda: handle.query("status", result_type=model),
        lambda s: s.phase in (phase, Phase.FAILED),
        phase_line,
        timeout,
    )


async def test_a_hotfix_goes_out_through_the_cd_and_the_error_rate_falls_before_recovery_is_announced(  # noqa: E501 - the name is the sentence
    stack: CdStack,
) -> None:
    assert stack.live_image() == f"{IMAGE}:1.3.0"
    stack.sandbox.until_readable()  # a complete window of 1.3.0's failures is readable
    request = ForwardFixRequest(
        deployment="tekutoko-api",
        severity=Severity.IMMEDIATE,
        requested_by="oncall",
        language="en",
        reason="migration 000006 dropped a column; rolling back would lose data",
        watch_seconds=15,
    )
    workflow_id = forward_fix_workflow_id("default", "tekutoko-api")
    handle = await stack.client.start_workflow(
        ForwardFixWorkflow.run, request, id=workflow_id, task_queue=stack.queue
    )

    waiting: ForwardFixStatus = await phase_of(handle, Phase.AWAITING_HOTFIX, ForwardFixStatus)
    assert waiting.phase is Phase.AWAITING_HOTFIX, waiting.message
    assert len(waiting.pods_read) == 3 and waiting.lines_read > 0
    assert (
        waiting.errors and waiting.errors[0].count >= 3 and len(waiting.errors[0].pods) >= 2
    )  # the app logs each 5xx it answers
    assert (
        waiting.at_start is not None
        and waiting.at_start.error_ratio is not None
        and waiting.at_start.error_ratio > 0.3
    )
    assert stack.live_image() == f"{IMAGE}:1.3.0"  # nothing deployed without a hotfix

    refused = await stack.cli(
        "forward-fix",
        "hotfix",
        workflow_id,
        "--branch",
        "hotfix/plan-column",
        "--tag",
        HOTFIX,
        "--by",
        "backend-dev",
    )
    assert refused.returncode == 2 and "--staging-verified" in refused.stderr
    push_hotfix(stack, HOTFIX)
    recorded = await stack.cli(
        "forward-fix",
        "hotfix",
        workflow_id,
        "--branch",
        "hotfix/plan-column",
        "--tag",
        HOTFIX,
        "--by",
        "backend-dev",
        "--staging-verified",
        "--link",
        "https://github.com/tekutoko/tekutoko-api/pull/412",
    )
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr

    deploy = stack.client.get_workflow_handle(f"{workflow_id}-deploy")
    await started(deploy)  # the signal that records the hotfix returns before the child starts
    gate = await stack.approve(deploy, model=RedeployStatus)  # immediate: modoru asks none
    assert gate in (Phase.AWAITING_APPROVAL, Phase.EXECUTING), gate
    reviewing = await phase_of(deploy, Phase.EXECUTING, RedeployStatus)
    reviewing = await until(
        "the hotfix's CD run to wait for a reviewer (or the deploy to fail)",
        lambda: deploy.query("status", result_type=RedeployStatus),
        lambda s: s.run is not None and s.run.status == "waiting" or s.phase is Phase.FAILED,
        with_run,
        60,
    )
    assert reviewing.run is not None and reviewing.run.pending, reviewing.message
    token = Path(stack.endpoints["github_token_file"]).read_text().strip()
    gh = GitHub(TokenAuthStrategy(token), base_url=stack.endpoints["github_api"])
    await gh.rest.actions.async_review_pending_deployments_for_run(
        "tekutoko",
        "tekutoko-api",
        reviewing.run.run_id,
        environment_ids=[reviewing.run.pending[0].environment_id],
        state="approved",
        comment="hotfix for the plan column",
    )

    result: ForwardFixResult = await asyncio.wait_for(handle.result(), 240)
    status = result.status
    assert result.recovered and status.phase is Phase.COMPLETED, status.message
    assert stack.live_image() == f"{IMAGE}:{HOTFIX}"
    assert status.watch is not None and status.watch.verdict.severity is None
    assert (
        status.watch.evidence.error_ratio is not None and status.watch.evidence.error_ratio < 0.10
    )
    assert status.hotfix is not None and status.hotfix.by == "backend-dev"
    kinds = [n["kind"] for n in stack.notices()]
    assert (
        kinds[0] == "start" and kinds[-1] == "complete" and kinds.count("complete") == 2
    )  # the deploy's and the recovery's
    assert "[Forward fix done, service recovered]" in stack.notices()[-1]["subject"]
    assert [d["status"] for d in stack.dispatches()] == [200]


async def test_a_forward_fix_without_a_cd_section_is_refused_before_it_reads_anything(
    dev_env, sandbox: RunningSandbox, tmp_path
) -> None:
    entry = cd_entry(tmp_path, cd=None)
    async for running in cd_stack(dev_env, sandbox, tmp_path, entry):
        request = ForwardFixRequest(
            deployment="tekutoko-api", reason="schema changed", requested_by="oncall", language="en"
        )
        handle = await running.client.start_workflow(
            ForwardFixWorkflow.run, request, id="forward-fix-refused", task_queue=running.queue
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        assert "no cd section" in failed.value.cause.message
        status = await handle.query("status", result_type=ForwardFixStatus)
        assert status.phase is Phase.FAILED and status.lines_read == 0
