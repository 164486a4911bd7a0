"""Approvals made in Slack on a real Temporal dev server: a click reaches the
gateway, which signs for the person with its attestor key; the workflow and the
undo activity judge that signature against the worker's own catalog. The same
person approving again through the CLI counts once; a click on a closed gate
sends nothing; both are audited. The Slack message follows the gate."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.gatekeeper import Gatekeeper
from activities.kubernetes import KubernetesActivities
from activities.notify import NotifyActivities
from activities.slack_cards import APPROVE, SlackCards
from activities.verify import VerifyActivities
from runbook.catalog import ApprovalPolicy, Catalog, Channel, ServiceEntry
from runbook.models import ApprovalSignal, Phase
from runbook.signatures import new_private_key, public_key_line
from sandbox.slack import SlackEmulator
from starter.slack_gateway import SlackGateway, TemporalGates
from tests.integration.conftest import dev_env  # noqa: F401 - the session's dev server
from tests.integration.test_rollback_end_to_end import wait_phase
from tests.integration.test_signed_approvals import (
    decision,
    key_file,
    request,
    started,
    verdict,
)
from tests.waiting import until
from worker.main import WORKFLOWS
from workflows.deployment_rollback import DeploymentRollbackWorkflow

pytestmark = pytest.mark.integration
PEOPLE = {"oncall": "U0ONCALL01", "sre-lead": "U0SRELEAD1", "backend-lead": "U0BACKEND1"}
CHANNEL = "C0INCIDENT"


@dataclass
class SlackStack:
    client: object
    settings: object
    keys: dict[str, Path]
    slack: SlackEmulator
    gateway: SlackGateway
    catalog: Catalog


@pytest.fixture
async def slack_stack(dev_env, sandbox, tmp_path) -> AsyncIterator[SlackStack]:  # noqa: F811
    from worker.settings import Settings

    slack = SlackEmulator()
    await slack.start()
    keys = {name: key_file(tmp_path, name) for name in PEOPLE}
    gateway_key = new_private_key()
    catalog = Catalog(
        identities=[
            {
                "id": name,
                "display_name": name,
                "roles": [name],
                "keys": [public_key_line(keys[name].read_bytes())],
                "slack": {"team": slack.space.team_id, "user": user},
            }
            for name, user in PEOPLE.items()
        ],
        attestors=[
            {
                "name": "slack-gateway",
                "public_key": public_key_line(gateway_key),
                "identities": list(PEOPLE),
                "gates": ["approval"],
            }
        ],
        services=[
            ServiceEntry(
                name="tekutoko-api",
                deployment="tekutoko-api",
                service="tekutoko-api",
                approval=ApprovalPolicy(
                    approvers=["sre-lead", "backend-lead"],
                    investigate_approvals=2,
                    slack_approvals={"approval": True},
                ),
                channels=[Channel(kind="slack", channel=CHANNEL)],
                verification_window_seconds=15,
                rollout_timeout_seconds=60,
            )
        ],
    )
    queue = f"slack-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        task_queue=queue,
        kubeconfig=sandbox.kubeconfig,
    )
    gateway = SlackGateway(
        signing_secret=slack.space.signing_secret,
        catalog=catalog,
        gates=TemporalGates(dev_env.client, queue),
        attestor_key=gateway_key,
        slack=SlackCards(slack.space.bot_token, slack.api_url).client,
        audit_path=tmp_path / "slack-audit.jsonl",
    )
    runner = web.AppRunner(gateway.build_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    slack.gateway_url = (
        f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/slack/interactions"
    )
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    notify = NotifyActivities(
        environ={},
        base_dir=tmp_path,
        catalog=catalog,
        slack=SlackCards(slack.space.bot_token, slack.api_url),
    )
    async with aiohttp.ClientSession() as session:
        # The undo judges the approvals again against the same catalog, as the worker does.
        k8s = KubernetesActivities(apps, core, Gatekeeper(catalog, b"s" * 32))
        verify = VerifyActivities(apps, core, session)
        activities = [
            CatalogActivities(catalog).lookup,
            k8s.plan_rollback,
            k8s.backup_deployment,
            k8s.rollout_undo,
            k8s.wait_rollout,
            verify.verify_service,
            notify.send,
            notify.update_card,
        ]
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=activities,
            workflow_failure_exception_types=[Exception],
        ):
            yield SlackStack(dev_env.client, settings, keys, slack, gateway, catalog)
    await api.close()
    await gateway.close()
    await runner.cleanup()
    await slack.stop()


async def message(stack: SlackStack):
    return await until(
        "the approval message in Slack",
        lambda: stack.slack.space.messages.get(CHANNEL, []),
        bool,
        lambda m: "no message",
        10,
        interval=0.1,
    )


async def test_an_approval_in_slack_counts_once_and_the_undo_checks_the_gateway_s_signature(
    slack_stack: SlackStack,
) -> None:
    stack = slack_stack
    handle = await started(stack, request(stack, "oncall"))  # type: ignore[arg-type]
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    (card,) = await message(stack)
    assert stack.gateway.audit == []
    clicked = stack.slack.block_actions("U0SRELEAD1", CHANNEL, card.ts, APPROVE)
    assert await stack.slack.deliver(clicked) == 200
    status = await handle.query(DeploymentRollbackWorkflow.status)
    assert status.approvals == ["sre-lead"]
    slack_entry = next(e for e in status.audit if e.action == "approve" and e.counted)
    assert slack_entry.detail.startswith("approved in Slack by sre-lead")
    # The same person again, now through the CLI with their own key: counted once.
    gate = status.pending
    assert gate is not None
    counted, detail = await verdict(
        handle,
        ApprovalSignal(by="sre-lead", signed=decision(gate, stack.keys["sre-lead"], "sre-lead")),
    )
    assert counted is False and "sre-lead has already approved" in detail
    # The message shows the decisions so far, buttons still there (1 of 2).
    await until(
        "the message to show the decisions",
        lambda: str(card.blocks),
        lambda text: "already approved" in text,
        lambda text: text[-500:],
        10,
        interval=0.1,
    )
    assert "1 of 2" in str(card.blocks) and APPROVE in str(card.blocks)
    counted, _ = await verdict(
        handle,
        ApprovalSignal(
            by="backend-lead", signed=decision(gate, stack.keys["backend-lead"], "backend-lead")
        ),
    )
    assert counted is True
    result = await handle.result()
    assert result.status.phase == Phase.COMPLETED, result.status.message
    # The undo ran: the gatekeeper took the gateway's signature for sre-lead's approval.
    assert "Approved" in str(card.blocks) and APPROVE not in str(card.blocks)
    # A click on the closed gate sends nothing and is audited.
    # The buttons are gone; a copy of the click (a new action time) finds no gate open.
    stale = dict(clicked)
    stale["actions"] = [{**clicked["actions"][0], "action_ts": "1796683942.999999"}]
    await stack.slack.deliver(stale)
    assert stack.gateway.audit[-1]["outcome"] == "refused"
    assert "no gate open now" in stack.gateway.audit[-1]["reason"]


async def test_where_the_service_does_not_take_slack_approvals_a_click_is_audited_not_counted(
    slack_stack: SlackStack,
) -> None:
    stack = slack_stack
    stack.catalog.services[0].approval.slack_approvals = {"clone": True}
    handle = await started(stack, request(stack, "oncall"))  # type: ignore[arg-type]
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    (card,) = await message(stack)
    await stack.slack.deliver(stack.slack.block_actions("U0SRELEAD1", CHANNEL, card.ts, APPROVE))
    status = await handle.query(DeploymentRollbackWorkflow.status)
    assert status.approvals == []
    (entry,) = [e for e in status.audit if e.action == "approve"]
    assert entry.counted is False and entry.actor == "sre-lead"
    assert "Slack approvals do not count at gate 'approval'" in entry.detail
    assert stack.gateway.audit[-1]["outcome"] == "not counted"
    await handle.terminate("the test is over")
