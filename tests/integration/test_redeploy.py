"""The runbook's method 2 for real: 1.3.0 is live and failing; the workflow
finds 1.2.0 in the Artifact Registry emulator, is approved in modoru,
dispatches the GitHub emulator's "CD - Production" with the tag, shows the
run's pending deployment, a reviewer approves it in GitHub, the pipeline sets
the image, and the rollout is verified. An absent or live tag is refused
before anything is dispatched."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
from githubkit import GitHub, TokenAuthStrategy
from temporalio.client import WorkflowFailureError

from runbook.cd_models import RedeployRequest, RedeployResult, RedeployStatus
from runbook.models import Phase
from tests.conftest import RunningSandbox
from tests.integration.cd_stack import IMAGE, CdStack, cd_entry, cd_stack, with_run
from tests.waiting import phase_of, until
from workflows.redeploy import RedeployWorkflow

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(dev_env, sandbox: RunningSandbox, tmp_path) -> AsyncIterator[CdStack]:
    async for running in cd_stack(dev_env, sandbox, tmp_path, cd_entry(tmp_path)):
        yield running


def reviewer(stack: CdStack) -> GitHub:
    token = Path(stack.endpoints["github_token_file"]).read_text().strip()
    return GitHub(TokenAuthStrategy(token), base_url=stack.endpoints["github_api"])


async def test_method_2_takes_1_3_0_back_to_1_2_0_through_an_approved_cd_run(
    stack: CdStack,
) -> None:
    assert stack.live_image() == f"{IMAGE}:1.3.0"
    request = RedeployRequest(
        deployment="tekutoko-api",
        tag="1.2.0",
        reason="1.3.0 fails 60% of API calls",
        requested_by="oncall",
        language="en",
    )
    handle = await stack.client.start_workflow(
        RedeployWorkflow.run, request, id=f"redeploy-{uuid.uuid4().hex[:8]}", task_queue=stack.queue
    )
    assert await stack.approve(handle, model=RedeployStatus) is Phase.AWAITING_APPROVAL
    waiting = await until(  # the run waits for a reviewer of environment production, in GitHub
        "the CD run to wait for a reviewer (or the redeploy to fail)",
        lambda: handle.query(RedeployWorkflow.status),
        lambda s: s.run is not None and s.run.status == "waiting" or s.phase is Phase.FAILED,
        with_run,
        60,
    )
    assert waiting.run is not None and waiting.run.status == "waiting", waiting.message
    assert stack.live_image() == f"{IMAGE}:1.3.0"  # nothing deployed before the review
    [pending] = waiting.run.pending
    assert pending.environment == "production" and set(pending.reviewers) == {
        "sre-lead",
        "oncall-sre",
    }
    assert (
        waiting.plan.live_image == f"{IMAGE}:1.3.0"
        and waiting.plan.image == f"{IMAGE}:1.2.0"
        and waiting.plan.last_revision == 2
    )
    assert waiting.pushed is not None and [i.tags for i in waiting.images][:2] == [
        ["1.3.1-crash"],
        ["1.3.1-slow"],
    ]
    gh = reviewer(stack)
    await gh.rest.actions.async_review_pending_deployments_for_run(
        "tekutoko",
        "tekutoko-api",
        waiting.run.run_id,
        environment_ids=[pending.environment_id],
        state="approved",
        comment="back to 1.2.0",
    )
    result: RedeployResult = await asyncio.wait_for(handle.result(), 120)
    status = result.status
    assert status.phase is Phase.COMPLETED, status.message
    assert status.run.conclusion == "success" and status.run.html_url.endswith(
        f"/actions/runs/{status.run.run_id}"
    )
    assert stack.live_image() == f"{IMAGE}:1.2.0"
    assert (
        "Update to version 1.2.0"
        in stack.sandbox.kubectl("rollout", "history", "deployment/tekutoko-api").stdout
    )
    assert status.verification is not None and status.verification.ok
    assert [d["status"] for d in stack.dispatches()] == [200]
    kinds = [n["kind"] for n in stack.notices()]
    assert kinds == ["approval_needed", "start", "complete"]
    assert any(
        e.action == "cd_run" and "waiting for a reviewer of environment production" in e.detail
        for e in status.audit
    )
    token = Path(stack.endpoints["github_token_file"]).read_text().strip()
    history = await handle.fetch_history()
    assert token not in history.to_json()  # the token stays on the worker


@pytest.mark.parametrize(
    ("tag", "said"),
    [("9.9.9", "tag 9.9.9 is not in Artifact Registry"), ("1.3.0", "is already live")],
)
async def test_an_absent_or_live_tag_is_refused_before_anything_is_dispatched(
    stack: CdStack, tag: str, said: str
) -> None:
    result = await stack.cli(
        "redeploy",
        "start",
        "--deployment",
        "tekutoko-api",
        "--tag",
        tag,
        "--reason",
        "error rate 60%",
        "--requested-by",
        "oncall",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("modoru: redeploy refused:")
        and said in lines[0]
        and "nothing was dispatched" in lines[0]
    )
    assert stack.dispatches() == []
    assert stack.live_image() == f"{IMAGE}:1.3.0"


async def test_a_rejected_github_review_fails_the_redeploy_and_says_so(stack: CdStack) -> None:
    request = RedeployRequest(
        deployment="tekutoko-api",
        tag="1.1.0",
        reason="try 1.1.0",
        requested_by="oncall",
        language="en",
    )
    handle = await stack.client.start_workflow(
        RedeployWorkflow.run, request, id=f"redeploy-{uuid.uuid4().hex[:8]}", task_queue=stack.queue
    )
    assert await stack.approve(handle, model=RedeployStatus) is Phase.AWAITING_APPROVAL
    status = await until(
        "the CD run to wait for a reviewer",
        lambda: handle.query(RedeployWorkflow.status),
        lambda s: s.run is not None and s.run.status == "waiting",
        with_run,
        60,
    )
    gh = reviewer(stack)
    await gh.rest.actions.async_review_pending_deployments_for_run(
        "tekutoko",
        "tekutoko-api",
        status.run.run_id,
        environment_ids=[status.run.pending[0].environment_id],
        state="rejected",
        comment="no",
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), 60)
    assert "concluded failure" in failure.value.cause.message
    assert stack.live_image() == f"{IMAGE}:1.3.0"
    assert [n["kind"] for n in stack.notices()][-1] == "failure"


async def test_with_identities_the_redeploy_needs_a_signed_approval_and_the_dispatch_checks_it(
    dev_env, sandbox: RunningSandbox, tmp_path
) -> None:
    from runbook.catalog import Catalog
    from runbook.identity import Identity
    from runbook.signatures import new_private_key, public_key_line
    from starter.start_options import sign_start_gate
    from workflows.redeploy import redeploy_workflow_id

    keys = {}
    for name in ("oncall", "sre-lead"):
        keys[name] = tmp_path / f"{name}.key"
        keys[name].write_bytes(new_private_key())
        keys[name].chmod(0o600)
    identities = [
        Identity(
            id=name,
            display_name=name,
            roles=[name],
            keys=[public_key_line(keys[name].read_bytes())],
        )
        for name in keys
    ]
    entry = cd_entry(tmp_path)
    async for stack in cd_stack(
        dev_env, sandbox, tmp_path, entry, Catalog(services=[entry], identities=identities)
    ):
        request = RedeployRequest(
            deployment="tekutoko-api",
            tag="1.2.0",
            reason="1.3.0 fails",
            requested_by="oncall",
            language="en",
        )
        workflow_id = redeploy_workflow_id("default", "tekutoko-api") + f"-{uuid.uuid4().hex[:6]}"
        handle = await stack.client.start_workflow(
            RedeployWorkflow.run, request, id=workflow_id, task_queue=stack.queue
        )
        started = await sign_start_gate(
            stack.client, workflow_id, request, keys["oncall"], task_queue=stack.queue, quiet=True
        )
        assert started is not None and started.counted, started
        status = await until(
            "the redeploy to await approval",
            partial(handle.query, RedeployWorkflow.status),
            lambda s: s.phase is Phase.AWAITING_APPROVAL,
            phase_of,
            60,
        )
        assert (
            status.pending is not None
            and status.pending.signed
            and status.pending.plan["tag"] == "1.2.0"
        )
        unsigned = await stack.cli("approve", workflow_id, "--by", "sre-lead")
        assert unsigned.returncode != 0 and "signed decisions only" in unsigned.stderr
        said = await stack.cli(
            "approve", workflow_id, "--by", "sre-lead", "--key", str(keys["sre-lead"])
        )
        assert said.returncode == 0 and "counted" in said.stdout, said.stdout + said.stderr
        status = await until(
            "the CD run to wait for a reviewer (or the redeploy to fail)",
            partial(handle.query, RedeployWorkflow.status),
            lambda s: s.run is not None and s.run.status == "waiting" or s.phase is Phase.FAILED,
            with_run,
            60,
        )
        assert status.run is not None, (
            status.message
        )  # the dispatching activity accepted the signed approval
        gh = reviewer(stack)
        await gh.rest.actions.async_review_pending_deployments_for_run(
            "tekutoko",
            "tekutoko-api",
            status.run.run_id,
            environment_ids=[status.run.pending[0].environment_id],
            state="approved",
            comment="ok",
        )
        result: RedeployResult = await asyncio.wait_for(handle.result(), 120)
        assert result.status.phase is Phase.COMPLETED and stack.live_image() == f"{IMAGE}:1.2.0"


async def test_a_retried_dispatch_takes_over_its_run_instead_of_deploying_twice(
    stack: CdStack,
) -> None:
    import datetime as dt

    from temporalio.testing import ActivityEnvironment

    from activities.github import GitHubActivities
    from runbook.cd_models import DispatchRequest

    github = GitHubActivities(
        stack.endpoints["github_api"],
        environ={"SANDBOX_GITHUB_TOKEN_FILE": stack.endpoints["github_token_file"]},
    )
    request = DispatchRequest(
        cd=cd_entry(stack.tmp_path).cd, tag="1.2.0", not_before=dt.datetime.now(dt.UTC)
    )
    env = ActivityEnvironment()
    first = await env.run(github.dispatch, request)
    again = await env.run(
        github.dispatch, request
    )  # as a retry after a worker lost the first answer
    assert again.run_id == first.run_id and again.adopted and not first.adopted
    assert (
        len(stack.dispatches()) == 1
    )  # the 1.2.0 run seeded days ago is not taken: it was created before the dispatch
    other = await env.run(github.dispatch, request.model_copy(update={"tag": "1.1.0"}))
    assert other.run_id != first.run_id and len(stack.dispatches()) == 2
