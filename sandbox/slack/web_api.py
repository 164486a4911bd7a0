"""The Slack Web API methods modoru calls, answered as Slack answers them:
`chat.postMessage`, `chat.update`, `views.open` (and `auth.test`), under
`/api/METHOD`. Arguments come form-encoded (the token in the body or in
`Authorization: Bearer`) or as JSON (the token only in the header, as Slack
requires). Every answer is `{"ok": ...}` (HTTP 200; 404 with `unknown_method`
for a method not served here); failures name Slack's
error code (`not_authed`, `invalid_auth`, `channel_not_found`, `no_text`,
`invalid_blocks`, `message_not_found`, `invalid_trigger_id`,
`expired_trigger_id`, `invalid_arguments`, `invalid_json`). Blocks and views
are checked with `slack_sdk`'s own models, so a message the emulator takes is
one Slack's Block Kit describes."""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from .workspace import Workspace

MAX_BLOCKS = 50
MAX_TEXT = 40000


class SlackError(Exception):
    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code, self.detail = code, detail


def _answer(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, content_type="application/json")


async def read_arguments(request: web.Request) -> tuple[dict[str, Any], str | None]:
    """(the method's arguments, the token presented) from a form or JSON body."""
    header = request.headers.get("Authorization", "")
    token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else None
    kind = request.content_type
    if kind == "application/json":
        try:
            args = json.loads(await request.text() or "{}")
        except ValueError:
            raise SlackError("invalid_json") from None
        if not isinstance(args, dict):
            raise SlackError("invalid_json")
        return args, token  # JSON bodies carry no token: Slack reads the header only
    if kind in ("application/x-www-form-urlencoded", "multipart/form-data", ""):
        form = await request.post() if request.can_read_body else {}
        query = {k: v for k, v in request.query.items() if k != "token"}
        args = {**query, **{k: v for k, v in form.items() if isinstance(v, str)}}
        # Slack stopped taking tokens in query strings (2021): the body or the header only.
        body_token = args.pop("token", None)
        return args, token or body_token
    raise SlackError("invalid_form_data")


def _json_argument(args: dict[str, Any], name: str, error: str) -> Any:
    value = args.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise SlackError(error, f"{name} is not JSON") from None
    return value


def check_blocks(blocks: Any) -> list[dict[str, Any]]:
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise SlackError("invalid_blocks_format", "blocks must be an array of objects")
    if len(blocks) > MAX_BLOCKS:
        raise SlackError("invalid_blocks", f"no more than {MAX_BLOCKS} items allowed")
    for index, raw in enumerate(blocks):
        try:
            block = Block.parse(raw)
            if block is None:
                raise SlackObjectFormationError(f"unknown block type {raw.get('type')!r}")
            block.validate_json()
        except (SlackObjectFormationError, TypeError, KeyError, AttributeError) as exc:
            raise SlackError("invalid_blocks", f"blocks[{index}]: {exc}") from None
    return blocks


class WebApi:
    def __init__(self, space: Workspace) -> None:
        self.space = space
        self.calls: list[str] = []  # method names, in order (tests and the bench read them)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/{method}", self.handle), web.get("/api/{method}", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        handler = {
            "auth.test": self.auth_test,
            "chat.postMessage": self.post_message,
            "chat.update": self.update,
            "views.open": self.views_open,
        }.get(method)
        if handler is None:
            return _answer({"ok": False, "error": "unknown_method", "req_method": method}, 404)
        try:
            args, token = await read_arguments(request)
            if not token:
                raise SlackError("not_authed")
            if not hmac.compare_digest(token.encode(), self.space.bot_token.encode()):
                raise SlackError("invalid_auth")
            self.calls.append(method)
            return _answer({"ok": True, **handler(args)})
        except SlackError as exc:
            body: dict[str, Any] = {"ok": False, "error": exc.code}
            if exc.detail:
                body["response_metadata"] = {"messages": [f"[ERROR] {exc.detail}"]}
            return _answer(body)

    def _channel(self, args: dict[str, Any], *, by_name: bool = False) -> str:
        """The channel id; chat.postMessage also takes a name (`#incidents`), chat.update an
        id only, as Slack's documentation of the two says."""
        channel = str(args.get("channel") or "")
        if by_name and channel not in self.space.channels:
            named = {name: id_ for id_, name in self.space.channels.items()}
            channel = named.get(channel.removeprefix("#"), channel)
        if channel not in self.space.channels:
            raise SlackError("channel_not_found")
        return channel

    def auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{self.space.team_domain}.slack.com/",
            "team": self.space.team_domain,
            "team_id": self.space.team_id,
            "bot_id": self.space.bot_id,
        }

    def _content(self, args: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None]:
        text = args.get("text")
        if text is not None and not isinstance(text, str):
            raise SlackError("invalid_arguments", "text must be a string")
        if text is not None and len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        blocks = _json_argument(args, "blocks", "invalid_blocks_format")
        return text, (None if blocks is None else check_blocks(blocks))

    def post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args, by_name=True)
        text, blocks = self._content(args)
        if not text and not blocks and not args.get("attachments"):
            raise SlackError("no_text")
        message = self.space.post(channel, text or "", blocks or [])
        return {"channel": channel, "ts": message.ts, "message": message.as_slack()}

    def update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        message = self.space.find(channel, str(args.get("ts") or ""))
        if message is None:
            raise SlackError("message_not_found")
        if message.bot_id != self.space.bot_id:
            raise SlackError("cant_update_message")
        text, blocks = self._content(args)
        if text is None and blocks is None and not args.get("attachments"):
            raise SlackError("no_text")
        if text is not None:
            message.text = text
        if blocks is not None:  # omitted: the message keeps its blocks, as Slack does
            message.blocks = blocks
        message.edited = True
        self.space.changed()
        return {
            "channel": channel,
            "ts": message.ts,
            "text": message.text,
            "message": message.as_slack(),
        }

    def views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = str(args.get("trigger_id") or "")
        view = _json_argument(args, "view", "invalid_arguments")
        if not trigger or not isinstance(view, dict):
            raise SlackError("invalid_arguments", "trigger_id and view are required")
        try:
            View(**view).validate_json()
        except (SlackObjectFormationError, TypeError) as exc:
            raise SlackError("invalid_arguments", str(exc)) from None
        if view.get("type") != "modal":
            raise SlackError("invalid_arguments", "views.open opens modals")
        user, problem = self.space.use_trigger(trigger)
        if user is None:
            raise SlackError(problem)
        opened = self.space.open_view(user, view)
        return {
            "view": {
                **view,
                "id": opened.id,
                "team_id": self.space.team_id,
                "hash": opened.hash,
                "app_id": self.space.app_id,
                "bot_id": self.space.bot_id,
            }
        }
