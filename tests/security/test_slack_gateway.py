"""The Slack gateway acts on nothing from Slack until Slack's signature, the
timestamp, the replay check, the identity mapping and the gate check pass; each
refusal is audited and sends no decision. What it does send is signed with its
attestor key, and the worker's own judging (not the gateway) decides whether it
counts."""

from __future__ import annotations

import datetime as dt
import json
import time
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from runbook.catalog import ApprovalPolicy, Catalog, ServiceEntry
from runbook.decisions import DecisionVerdict, Expected, GateView, judge, plan_digest
from runbook.signatures import new_private_key, public_key_line
from sandbox.slack import SlackEmulator, slack_signature
from starter.slack_gateway import APPROVE, REJECT, Refused, SeenRequests, SlackGateway

CHANNEL = "C0INCIDENT"
PLAN = {"namespace": "default", "deployment": "tekutoko-api", "to_revision": 2}
GATE = GateView(
    workflow_id="rollback-default-tekutoko-api",
    run_id="0193a0b2-run-this",
    gate="approval",
    plan=PLAN,
    digest=plan_digest(PLAN),
    signed=True,
)
GATEWAY_KEY = new_private_key()


def catalog(team: str) -> Catalog:
    people = [
        {
            "id": name,
            "display_name": name,
            "roles": [name],
            "keys": [public_key_line(new_private_key())],
            "slack": {"team": team, "user": user},
        }
        for name, user in (("sre-lead", "U0SRELEAD1"), ("oncall", "U0ONCALL01"))
    ]
    entry = ServiceEntry(
        name="tekutoko-api",
        deployment="tekutoko-api",
        service="tekutoko-api",
        approval=ApprovalPolicy(approvers=["sre-lead"], slack_approvals={"approval": True}),
    )
    attestor = {
        "name": "slack-gateway",
        "public_key": public_key_line(GATEWAY_KEY),
        "identities": ["sre-lead", "oncall"],
        "gates": ["approval"],
    }
    return Catalog(services=[entry], identities=people, attestors=[attestor])


class FakeGates:
    def __init__(self) -> None:
        self.open: GateView | None = GATE
        self.sent: list = []

    async def gate(self, workflow_id: str) -> GateView:
        if self.open is None or workflow_id != self.open.workflow_id:
            raise Refused(f"{workflow_id} has no gate open now (closed or expired)")
        return self.open

    async def decide(self, workflow_id, signal) -> DecisionVerdict:
        self.sent.append(signal)
        return DecisionVerdict(decision="approve", counted=True, reason="ok", by=signal.by)


@pytest.fixture
async def world():
    slack = SlackEmulator()
    await slack.start()
    gates = FakeGates()
    gateway = SlackGateway(
        signing_secret=slack.space.signing_secret,
        catalog=catalog(slack.space.team_id),
        gates=gates,
        attestor_key=GATEWAY_KEY,
        slack=AsyncWebClient(token=slack.space.bot_token, base_url=slack.api_url),
    )
    runner = web.AppRunner(gateway.build_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    slack.gateway_url = f"http://127.0.0.1:{port}/slack/interactions"
    client = AsyncWebClient(token=slack.space.bot_token, base_url=slack.api_url)
    value = json.dumps({"w": GATE.workflow_id, "r": GATE.run_id, "g": GATE.gate, "d": GATE.digest})
    posted = await client.chat_postMessage(
        channel=CHANNEL,
        text="approval needed",
        blocks=[
            {
                "type": "actions",
                "block_id": "modoru.decide",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE,
                        "value": value,
                        "text": {"type": "plain_text", "text": "Approve"},
                    },
                    {
                        "type": "button",
                        "action_id": REJECT,
                        "value": value,
                        "text": {"type": "plain_text", "text": "Reject"},
                    },
                ],
            }
        ],
    )
    yield slack, gateway, gates, posted["ts"]
    await gateway.close()
    await runner.cleanup()
    await slack.stop()


async def post(slack: SlackEmulator, payload: dict, *, secret=None, timestamp=None, sig=None):
    body = urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = timestamp or str(int(time.time()))
    signature = sig or slack_signature(secret or slack.space.signing_secret, timestamp, body)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(slack.gateway_url, data=body, headers=headers) as answer,
    ):
        return answer.status, headers, body


def refusals(gateway: SlackGateway) -> list[str]:
    return [e["reason"] for e in gateway.audit if e["outcome"] == "refused"]


async def test_an_approve_click_is_sent_as_a_decision_the_worker_s_catalog_verifies(world):
    slack, gateway, gates, ts = world
    clicked = slack.block_actions("U0SRELEAD1", CHANNEL, ts, APPROVE)
    assert await slack.deliver(clicked) == 200
    (signal,) = gates.sent
    assert signal.by == "sre-lead"
    payload = json.loads(signal.signed.payload)
    assert payload["via"] == "slack"
    assert payload["slack"] == {
        "team": slack.space.team_id,
        "user": "U0SRELEAD1",
        "action_ts": clicked["actions"][0]["action_ts"],
    }
    verdict = judge(
        signal.signed,
        "approve",
        Expected(GATE.workflow_id, GATE.run_id, GATE.gate, GATE.digest),
        gateway.catalog.identities,
        dt.datetime.now(dt.UTC),
        set(),
        gateway.catalog.attestors,
    )
    assert verdict.counted and verdict.reason.startswith("approved in Slack by sre-lead")
    assert [e["outcome"] for e in gateway.audit] == ["counted"]


async def test_a_forged_signature_is_refused_and_audited(world):
    slack, gateway, gates, ts = world
    clicked = slack.block_actions("U0SRELEAD1", CHANNEL, ts, APPROVE)
    status, _, _ = await post(slack, clicked, secret="not the signing secret")
    assert status == 401 and not gates.sent
    status, _, _ = await post(slack, clicked, sig="v0=" + "0" * 64)
    assert status == 401 and not gates.sent
    assert refusals(gateway) == ["the request's Slack signature does not verify (forged)"] * 2


async def test_a_stale_timestamp_is_refused_even_with_a_good_signature(world):
    slack, gateway, gates, ts = world
    clicked = slack.block_actions("U0SRELEAD1", CHANNEL, ts, APPROVE)
    stale = str(int(time.time()) - 301)
    status, _, _ = await post(slack, clicked, timestamp=stale)
    assert status == 401 and not gates.sent
    status, _, _ = await post(slack, clicked, timestamp="soon")
    assert status == 401 and not gates.sent
    assert "stale" in refusals(gateway)[0]


async def test_a_replayed_request_is_refused(world):
    slack, gateway, gates, ts = world
    clicked = slack.block_actions("U0SRELEAD1", CHANNEL, ts, APPROVE)
    status, headers, body = await post(slack, clicked)
    assert status == 200 and len(gates.sent) == 1
    async with (
        aiohttp.ClientSession() as session,
        session.post(slack.gateway_url, data=body, headers=headers) as answer,
    ):
        assert answer.status == 409
    status, _, _ = await post(slack, clicked)  # the same click, signed again: same action
    assert status == 409 and len(gates.sent) == 1
    assert refusals(gateway) == ["this request was seen before (a replay)"] * 2


def test_the_seen_set_stays_bounded_and_forgets_what_the_window_outlives() -> None:
    seen = SeenRequests(limit=3, window=300)
    assert seen.first_time(["a"], 0) and not seen.first_time(["a"], 1)
    for key in "bcde":
        assert seen.first_time([key], 2)
    assert len(seen) == 3
    assert seen.first_time(["e2"], 10_000) and len(seen) == 1


async def test_a_slack_user_the_catalog_does_not_know_is_refused(world):
    slack, gateway, gates, ts = world
    assert await slack.deliver(slack.block_actions("U0STRANGER", CHANNEL, ts, APPROVE)) == 200
    assert not gates.sent
    assert refusals(gateway) == [
        f"Slack user U0STRANGER of {slack.space.team_id} is no identity in the catalog"
    ]
    other_team = slack.block_actions("U0SRELEAD1", CHANNEL, ts, APPROVE)
    other_team["team"]["id"] = other_team["user"]["team_id"] = "T0ELSEWHERE"
    await post(slack, other_team)
    assert not gates.sent and "of T0ELSEWHERE is no identity" in refusals(gateway)[-1]


async def test_a_click_on_a_closed_or_replaced_gate_is_refused(world):
    slack, gateway, gates, ts = world
    gates.open = None
    await slack.deliver(slack.block_actions("U0SRELEAD1", CHANNEL, ts, APPROVE))
    assert "no gate open now" in refusals(gateway)[-1]
    gates.open = GATE.model_copy(update={"run_id": "0193a0b2-run-next"})
    await slack.deliver(slack.block_actions("U0SRELEAD1", CHANNEL, ts, APPROVE))
    assert "closed, expired or replaced" in refusals(gateway)[-1]
    assert not gates.sent


async def test_reject_asks_for_a_reason_in_a_modal_and_sends_it(world):
    slack, gateway, gates, ts = world
    await slack.deliver(slack.block_actions("U0SRELEAD1", CHANNEL, ts, REJECT))
    assert not gates.sent
    (view_id,) = slack.space.views
    await slack.deliver(slack.view_submission("U0SRELEAD1", view_id, {"reason": ""}))
    assert not gates.sent  # a reason is required: the modal says so and stays
    await slack.deliver(slack.view_submission("U0SRELEAD1", view_id, {"reason": "DB errors"}))
    (signal,) = gates.sent
    assert signal.reason == "DB errors" and json.loads(signal.signed.payload)["decision"] == (
        "reject"
    )
    await slack.deliver(slack.view_submission("U0SRELEAD1", view_id, {"reason": "again"}))
    assert len(gates.sent) == 1 and refusals(gateway)[-1].startswith("this modal was submitted")


async def test_a_signed_body_that_is_not_an_interaction_is_refused_without_a_crash(world):
    slack, gateway, gates, ts = world
    status, _, _ = await post(slack, {"type": "block_actions", "team": "T0", "user": 7})
    assert status == 400 and not gates.sent
    assert refusals(gateway) == ["the payload is not shaped as Slack interactions are"]
