"""The emulated Slack workspace's state: one team, its users and channels, the
bot's token and the app's signing secret, the messages posted per channel, the
modals opened per user and the trigger ids handed out with each interaction
(Slack's are good for three seconds and for one `views.open`)."""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

TRIGGER_SECONDS = 3.0


@dataclass(frozen=True)
class User:
    id: str
    name: str


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    bot_id: str
    edited: bool = False

    def as_slack(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": self.text,
            "ts": self.ts,
            "bot_id": self.bot_id,
            "blocks": self.blocks,
        }
        if self.edited:
            message["edited"] = {"user": self.bot_id, "ts": self.ts}
        return message


@dataclass
class OpenView:
    id: str
    user: str
    view: dict[str, Any]
    hash: str


@dataclass
class Workspace:
    team_id: str = "T0MODORU01"
    team_domain: str = "modoru-sandbox"
    app_id: str = "A0MODORU01"
    bot_id: str = "B0MODORU01"
    users: dict[str, User] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)  # id -> name
    bot_token: str = field(default_factory=lambda: "xoxb-" + secrets.token_hex(24))
    signing_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    messages: dict[str, list[Message]] = field(default_factory=dict)
    views: dict[str, OpenView] = field(default_factory=dict)  # view id -> open modal
    triggers: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (user, issued)
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # what the gateway answered
    version: int = 0  # bumped on every change, for the page's refresh
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def default(cls) -> Workspace:
        """The sandbox's workspace: the demo people's Slack accounts, someone the catalog
        does not know, and the incidents channel."""
        space = cls()
        for user in (
            User("U0ONCALL01", "oncall"),
            User("U0SRELEAD1", "sre-lead"),
            User("U0BACKEND1", "backend-lead"),
            User("U0STRANGER", "stranger"),
        ):
            space.users[user.id] = user
        space.channels["C0INCIDENT"] = "incidents"
        return space

    def changed(self) -> None:
        self.version += 1

    def next_ts(self) -> str:
        """A message ts as Slack writes it: seconds, a dot, six digits, unique here."""
        return f"{int(time.time())}.{next(self._counter):06d}"

    def post(self, channel: str, text: str, blocks: list[dict[str, Any]]) -> Message:
        message = Message(channel, self.next_ts(), text, blocks, self.bot_id)
        self.messages.setdefault(channel, []).append(message)
        self.changed()
        return message

    def find(self, channel: str, ts: str) -> Message | None:
        return next((m for m in self.messages.get(channel, []) if m.ts == ts), None)

    def new_trigger(self, user: str) -> str:
        trigger = f"{next(self._counter)}.{secrets.token_hex(8)}"
        self.triggers[trigger] = (user, time.monotonic())
        return trigger

    def use_trigger(self, trigger: str) -> tuple[str | None, str]:
        """(the user the trigger was issued to, "") or (None, Slack's error for it)."""
        issued = self.triggers.pop(trigger, None)
        if issued is None:
            return None, "invalid_trigger_id"
        user, at = issued
        if time.monotonic() - at > TRIGGER_SECONDS:
            return None, "expired_trigger_id"
        return user, ""

    def open_view(self, user: str, view: dict[str, Any]) -> OpenView:
        opened = OpenView(f"V{next(self._counter):08d}", user, view, secrets.token_hex(8))
        self.views[opened.id] = opened
        self.changed()
        return opened
