"""The sandbox Slack answers slack_sdk's clients as Slack does (tokens, channels,
Block Kit, message updates, modals with trigger ids) and a click on its page
reaches the app as a correctly signed interactivity request."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import ActionsBlock, ButtonElement, SectionBlock
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.slack import SlackEmulator

CHANNEL = "C0INCIDENT"


@pytest.fixture
async def slack():
    emulator = SlackEmulator()
    await emulator.start()
    yield emulator
    await emulator.stop()


def client(slack: SlackEmulator, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or slack.space.bot_token, base_url=slack.api_url)


BLOCKS = [
    SectionBlock(text="*tekutoko-api* needs an approval"),
    ActionsBlock(
        block_id="decide",
        elements=[
            ButtonElement(text="Approve", action_id="approve", value="v1", style="primary"),
            ButtonElement(text="Reject", action_id="reject", value="v1", style="danger"),
        ],
    ),
]


async def test_a_message_is_posted_updated_and_kept_per_channel(slack):
    posted = await client(slack).chat_postMessage(channel=CHANNEL, text="approval", blocks=BLOCKS)
    assert posted["ok"] and posted["channel"] == CHANNEL
    ts = posted["ts"]
    updated = await client(slack).chat_update(
        channel=CHANNEL, ts=ts, text="approved", blocks=[SectionBlock(text="approved")]
    )
    assert updated["ok"] and updated["ts"] == ts
    (message,) = slack.space.messages[CHANNEL]
    assert message.text == "approved" and message.edited
    assert [b["type"] for b in message.blocks] == ["section"]
    kept = await client(slack).chat_update(channel=CHANNEL, ts=ts, text="only the text")
    assert kept["ok"] and [b["type"] for b in message.blocks] == ["section"]
    by_name = await client(slack).chat_postMessage(channel="#incidents", text="by name")
    assert by_name["channel"] == CHANNEL
    with pytest.raises(SlackApiError, match="channel_not_found"):
        await client(slack).chat_update(channel="#incidents", ts=ts, text="names are not ids")


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ({"token": "xoxb-wrong"}, "invalid_auth"),
        ({"channel": "C0NOSUCH"}, "channel_not_found"),
        ({"blocks": [{"type": "section"}]}, "invalid_blocks"),
        ({"blocks": [{"type": "no_such_block"}]}, "invalid_blocks"),
        ({"text": None, "blocks": None}, "no_text"),
    ],
)
async def test_what_slack_refuses_is_refused_with_its_error(slack, call, error):
    args = {"channel": CHANNEL, "text": "hello", "blocks": BLOCKS}
    args.update({k: v for k, v in call.items() if k != "token"})
    args = {k: v for k, v in args.items() if v is not None}
    with pytest.raises(SlackApiError) as caught:
        await client(slack, call.get("token")).chat_postMessage(**args)
    assert caught.value.response["ok"] is False
    assert caught.value.response["error"] == error
    assert CHANNEL not in slack.space.messages


async def test_json_bodies_need_the_bearer_header_and_forms_may_carry_the_token(slack):
    async with aiohttp.ClientSession() as session:
        url = slack.api_url + "chat.postMessage"
        body = {"channel": CHANNEL, "text": "hi", "token": slack.space.bot_token}
        async with session.post(url, json=body) as answer:
            assert answer.status == 200
            assert (await answer.json())["error"] == "not_authed"
        async with session.post(url, data=body) as answer:
            assert (await answer.json())["ok"] is True
        query = {"token": slack.space.bot_token}
        async with session.post(url, params=query, data={"channel": CHANNEL, "text": "hi"}) as a:
            assert (await a.json())["error"] == "not_authed"
        async with session.post(slack.api_url + "chat.nothing", data=body) as answer:
            assert answer.status == 404 and (await answer.json())["error"] == "unknown_method"
        async with session.post(
            url.replace("chat.postMessage", "chat.update"), data={**body, "ts": "1.000001"}
        ) as answer:
            assert (await answer.json())["error"] == "message_not_found"


async def test_a_click_reaches_the_app_signed_and_a_modal_opens_once_per_trigger(slack):
    received: list[tuple[bytes, dict]] = []

    async def gateway(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/slack/interactions", gateway)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    slack.gateway_url = f"http://127.0.0.1:{port}/slack/interactions"
    try:
        ts = (await client(slack).chat_postMessage(channel=CHANNEL, text="a", blocks=BLOCKS))["ts"]
        async with aiohttp.ClientSession() as session:
            form = {"as": "U0SRELEAD1", "channel": CHANNEL, "ts": ts, "action_id": "reject"}
            async with session.post(
                f"{slack.url}/ui/click", data=form, allow_redirects=False
            ) as answer:
                assert answer.status == 303
            async with session.get(slack.page_url("U0SRELEAD1")) as answer:
                page = await answer.text()
        assert "Approve" in page and "the app answered HTTP 200" in page
        (body, headers) = received[0]
        verifier = SignatureVerifier(slack.space.signing_secret)
        assert verifier.is_valid(
            body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
        )
        assert not SignatureVerifier("another secret").is_valid(
            body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
        )
        payload = json.loads(parse_qs(body.decode())["payload"][0])
        assert payload["type"] == "block_actions"
        assert (payload["team"]["id"], payload["user"]["id"]) == (slack.space.team_id, "U0SRELEAD1")
        assert payload["actions"][0]["action_id"] == "reject"
        assert payload["actions"][0]["value"] == "v1"
        view = {
            "type": "modal",
            "callback_id": "why",
            "title": {"type": "plain_text", "text": "Reject"},
            "submit": {"type": "plain_text", "text": "Reject"},
            "blocks": [
                {
                    "type": "input",
                    "block_id": "reason",
                    "label": {"type": "plain_text", "text": "Reason"},
                    "element": {"type": "plain_text_input", "action_id": "reason"},
                }
            ],
        }
        opened = await client(slack).views_open(trigger_id=payload["trigger_id"], view=view)
        assert opened["ok"] and opened["view"]["id"]
        with pytest.raises(SlackApiError) as again:
            await client(slack).views_open(trigger_id=payload["trigger_id"], view=view)
        assert again.value.response["error"] == "invalid_trigger_id"
        async with aiohttp.ClientSession() as session:
            form = {
                "as": "U0SRELEAD1",
                "channel": CHANNEL,
                "view_id": opened["view"]["id"],
                "v:reason": "the error is in the database",
            }
            async with session.post(
                f"{slack.url}/ui/submit", data=form, allow_redirects=False
            ) as answer:
                assert answer.status == 303
        submitted = json.loads(parse_qs(received[1][0].decode())["payload"][0])
        assert submitted["type"] == "view_submission"
        assert submitted["view"]["state"]["values"]["reason"]["reason"]["value"] == (
            "the error is in the database"
        )
    finally:
        await runner.cleanup()


def test_a_trigger_is_good_for_three_seconds_and_one_use() -> None:
    from sandbox.slack import Workspace

    space = Workspace.default()
    trigger = space.new_trigger("U0SRELEAD1")
    assert space.use_trigger(trigger) == ("U0SRELEAD1", "")
    assert space.use_trigger(trigger) == (None, "invalid_trigger_id")
    old = space.new_trigger("U0SRELEAD1")
    user, issued = space.triggers[old]
    space.triggers[old] = (user, issued - 3.5)
    assert space.use_trigger(old) == (None, "expired_trigger_id")
