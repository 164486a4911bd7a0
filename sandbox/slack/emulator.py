"""The sandbox's Slack: the Web API (`web_api.py`) and a small page on
loopback showing a channel's messages as Block Kit lays them out, with working
buttons. A click on the page does what Slack does for an app's interactive
message: it POSTs a `block_actions` payload (form field `payload`, URL-encoded
JSON) to the app's interactivity URL, signed with the app's signing secret
(`X-Slack-Signature: v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")`,
`X-Slack-Request-Timestamp`). A modal the app opens in answer shows on the
page for the user who clicked; submitting it sends `view_submission` the same
way. Who clicks is chosen on the page (the workspace's users)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from .web_api import WebApi
from .workspace import Workspace

GATEWAY_TIMEOUT = 3.0  # Slack's own: an interaction not acknowledged in 3 s fails


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class SlackEmulator:
    def __init__(self, space: Workspace | None = None, gateway_url: str | None = None) -> None:
        self.space = space or Workspace.default()
        self.api = WebApi(self.space)
        self.gateway_url = gateway_url
        self.port = 0
        self.last_answer = ""  # the app's answer to the last interaction
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What `slack_sdk.WebClient(base_url=...)` takes."""
        return f"{self.url}/api/"

    def page_url(self, user: str | None = None) -> str:
        channel = next(iter(self.space.channels))
        return f"{self.url}/?{urlencode({'channel': channel, 'as': user or 'U0SRELEAD1'})}"

    def build_app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                *self.api.routes(),
                web.get("/", self.page),
                web.get("/ui/version", self.version),
                web.get("/ui/messages", self.messages),
                web.post("/ui/click", self.click_form),
                web.post("/ui/submit", self.submit_form),
            ]
        )
        return app

    async def start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def write_secrets(self, folder: Path) -> dict[str, str]:
        """The bot token and the signing secret in 0600 files; their paths."""
        paths = {}
        for name, value in (
            ("slack-bot-token", self.space.bot_token),
            ("slack-signing-secret", self.space.signing_secret),
        ):
            path = folder / name
            tmp = path.with_suffix(".tmp")
            tmp.write_text(value + "\n", encoding="utf-8")
            tmp.chmod(0o600)
            tmp.replace(path)
            paths[name] = str(path)
        return paths

    # -- interactions ------------------------------------------------------------------

    def _user(self, user: str) -> dict[str, Any]:
        person = self.space.users[user]
        return {
            "id": user,
            "username": person.name,
            "name": person.name,
            "team_id": self.space.team_id,
        }

    def block_actions(self, user: str, channel: str, ts: str, action_id: str) -> dict[str, Any]:
        """The payload Slack sends when `user` clicks the button `action_id` of a message."""
        message = self.space.find(channel, ts)
        if message is None:
            raise KeyError(f"no message {ts} in {channel}")
        action, block_id = None, ""
        for block in message.blocks:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if element.get("action_id") == action_id:
                    action, block_id = element, block.get("block_id", "")
        if action is None:
            raise KeyError(f"the message has no button {action_id}")
        return {
            "type": "block_actions",
            "user": self._user(user),
            "api_app_id": self.space.app_id,
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": self.space.new_trigger(user),
            "team": {"id": self.space.team_id, "domain": self.space.team_domain},
            "channel": {"id": channel, "name": self.space.channels[channel]},
            "message": message.as_slack(),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": action.get("text"),
                    "value": action.get("value", ""),
                    "style": action.get("style"),
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def view_submission(self, user: str, view_id: str, values: dict[str, str]) -> dict[str, Any]:
        opened = self.space.views[view_id]
        state: dict[str, dict[str, Any]] = {}
        for block in opened.view.get("blocks", []):
            element = block.get("element") or {}
            if block.get("type") == "input" and element.get("action_id"):
                state.setdefault(block.get("block_id", ""), {})[element["action_id"]] = {
                    "type": element.get("type"),
                    "value": values.get(element["action_id"], ""),
                }
        return {
            "type": "view_submission",
            "team": {"id": self.space.team_id, "domain": self.space.team_domain},
            "user": self._user(user),
            "api_app_id": self.space.app_id,
            "trigger_id": self.space.new_trigger(user),
            "view": {
                **opened.view,
                "id": view_id,
                "team_id": self.space.team_id,
                "hash": opened.hash,
                "state": {"values": state},
                "app_id": self.space.app_id,
                "bot_id": self.space.bot_id,
            },
            "response_urls": [],
        }

    async def deliver(self, payload: dict[str, Any]) -> int:
        """POST `payload` to the gateway, signed as Slack signs it; the HTTP status."""
        if not self.gateway_url:
            self._record(payload, "no interactivity URL is configured")
            return 0
        body = urlencode({"payload": json.dumps(payload)}).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": slack_signature(self.space.signing_secret, timestamp, body),
        }
        timeout = aiohttp.ClientTimeout(total=GATEWAY_TIMEOUT)
        self.last_answer = ""
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self.gateway_url, data=body, headers=headers) as answer,
            ):
                status = answer.status
                self.last_answer = await answer.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._record(payload, f"the app did not answer ({type(exc).__name__})")
            return 0
        self._record(payload, f"the app answered HTTP {status}")
        return status

    def _record(self, payload: dict[str, Any], outcome: str) -> None:
        self.space.deliveries.append(
            {"type": payload["type"], "user": payload["user"]["id"], "outcome": outcome}
        )
        self.space.changed()

    # -- the page ----------------------------------------------------------------------

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.space.version})

    async def messages(self, request: web.Request) -> web.Response:
        """A channel's messages as the page shows them (JSON), for tests and benchmarks."""
        channel = request.query.get("channel", "")
        if channel not in self.space.channels:
            raise web.HTTPNotFound(text="unknown channel")
        return web.json_response([m.as_slack() for m in self.space.messages.get(channel, [])])

    async def click_form(self, request: web.Request) -> web.Response:
        form = await request.post()
        user, channel = str(form.get("as", "")), str(form.get("channel", ""))
        if user not in self.space.users:
            raise web.HTTPBadRequest(text="choose a user of the workspace")
        try:
            payload = self.block_actions(
                user, channel, str(form.get("ts", "")), str(form.get("action_id", ""))
            )
        except KeyError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        await self.deliver(payload)
        raise web.HTTPSeeOther(f"/?{urlencode({'channel': channel, 'as': user})}")

    async def submit_form(self, request: web.Request) -> web.Response:
        form = await request.post()
        user, view_id = str(form.get("as", "")), str(form.get("view_id", ""))
        opened = self.space.views.get(view_id)
        if opened is None or opened.user != user:
            raise web.HTTPNotFound(text="no such modal open for this user")
        values = {k[len("v:") :]: str(v) for k, v in form.items() if k.startswith("v:")}
        payload = self.view_submission(user, view_id, values)
        status = await self.deliver(payload)
        if status == 200 and '"response_action": "errors"' not in self.last_answer:
            self.space.views.pop(view_id, None)  # acknowledged: Slack closes the modal
            self.space.changed()
        channel = str(form.get("channel", ""))
        raise web.HTTPSeeOther(f"/?{urlencode({'channel': channel, 'as': user})}")

    async def page(self, request: web.Request) -> web.Response:
        channel = request.query.get("channel") or next(iter(self.space.channels))
        user = request.query.get("as") or "U0SRELEAD1"
        if channel not in self.space.channels or user not in self.space.users:
            raise web.HTTPNotFound(text="unknown channel or user")
        from .page import render

        return web.Response(
            text=render(self.space, channel, user), content_type="text/html", charset="utf-8"
        )


__all__ = ["SlackEmulator", "slack_signature"]
