"""Notices to the catalog's channels: the console, a JSONL file, a Slack
incoming webhook. The webhook URL is read from the environment here, so it
never enters a workflow's history, a log line or a trace: the Slack call's span
carries the scheme and host only, and a failure is told by a fixed kind of
message ("HTTP 404", "connection error (ClientConnectorError)"), never by an
exception's text, which can quote the URL. A Slack channel whose variable is
not set is not configured on this worker: the worker says so once when it
starts (`announce_unconfigured`), and its notices are skipped, not failed.

A notice's channels are a request, not a command: anyone who can schedule
activities on the task queue can ask for any. A channel must be one the worker's
own catalog lists (when the worker was given its catalog), and a JSONL file must
resolve inside the notices directory; otherwise the whole notice is refused with
a permanent failure naming the channel, and nothing is written or posted."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import SpanKind, Status, StatusCode
from slack_sdk.webhook.async_client import AsyncWebhookClient
from temporalio import activity

from runbook import activity_refs as refs
from runbook.catalog import Catalog, Channel, ServiceEntry
from runbook.models import CardUpdate, Notice, NoticeResult

from .errors import permanent
from .slack_cards import SlackCards, SlackFailed

log = logging.getLogger("modoru.notices")
tracer = trace.get_tracer("modoru.notify")
# slack_sdk logs the webhook URL at DEBUG: its logger stays quieter than that.
quiet_slack_log = logging.getLogger("modoru.notices.slack_sdk")
quiet_slack_log.setLevel(logging.WARNING)


class NoticeFailed(Exception):
    """A channel's failure, told without URLs or secrets."""


class NotifyActivities:
    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
        catalog: Catalog | None = None,
        slack: SlackCards | None = None,
    ) -> None:
        self.environ = os.environ if environ is None else environ
        self.slack = slack  # the Web API with the worker's bot token; None: not configured
        self.base_dir = base_dir or Path.cwd()
        # The channels a notice may use: the catalog's, when the worker has one.
        self.known: list[Channel] | None = (
            None
            if catalog is None
            else [
                channel
                for entry in [*catalog.services, *([catalog.default] if catalog.default else [])]
                for channel in entry.channels
            ]
        )

    def jsonl_path(self, channel: Channel) -> Path:
        """Where a JSONL channel writes: its path, relative to the notices directory or
        absolute, resolved (symbolic links followed) and inside that directory; a permanent
        failure otherwise (`../../etc/...`, an absolute path elsewhere, a link out)."""
        base = self.base_dir.resolve()
        given = Path(channel.path or "")
        path = (given if given.is_absolute() else base / given).resolve()
        if path == base or not path.is_relative_to(base):
            raise permanent(
                f"notice channel jsonl:{channel.path} is outside the notices directory {base} "
                "(MODORU_NOTICES_DIR); refused, nothing was written",
                "NoticeChannelRefused",
            )
        return path

    def check_channels(self, channels: list[Channel]) -> None:
        """Every channel the catalog lists and every file inside the notices directory, or a
        permanent failure naming the first that is not."""
        for channel in channels:
            if self.known is not None and channel not in self.known:
                raise permanent(
                    f"notice channel {channel.label} is not one of the catalog's channels; "
                    "refused, nothing was sent",
                    "NoticeChannelRefused",
                )
            if channel.kind == "jsonl":
                self.jsonl_path(channel)

    def _webhook(self, channel: Channel) -> str | None:
        return self.environ.get(channel.webhook_env or "") or None

    def _configured(self, channel: Channel) -> bool:
        if channel.kind != "slack":
            return True
        return self.slack is not None if channel.channel else self._webhook(channel) is not None

    def announce_unconfigured(self, services: Iterable[ServiceEntry]) -> list[str]:
        """Log once, at worker start, each Slack channel whose webhook variable is
        not set, with the services that use it; returns the variable names."""
        users: dict[str, list[str]] = {}
        for service in services:
            for channel in service.channels:
                if not self._configured(channel):
                    name = "MODORU_SLACK_BOT_TOKEN" if channel.channel else channel.webhook_env
                    users.setdefault(name or "", []).append(service.name)
        for variable, names in users.items():
            log.warning(
                "Slack channel $%s is not configured (the variable is not set): its notices for "
                "%s are skipped",
                variable,
                ", ".join(sorted(set(names))),
            )
        return list(users)

    @activity.defn(name=refs.NOTIFY.name)
    async def send(self, notice: Notice) -> NoticeResult:
        """Deliver to every channel; one failing channel does not stop the others.
        A retried send may repeat a console or Slack line, never skip one."""
        self.check_channels(notice.channels)
        delivered, failed, skipped, posted = [], [], [], []
        for channel in notice.channels:
            if not self._configured(channel):
                skipped.append(channel.label)  # announced once at worker start; not a failure
                continue
            try:
                if channel.kind == "slack" and channel.channel and self.slack is not None:
                    posted.append(
                        await self.slack.post(
                            channel.channel, notice.text, notice.card, _namespace()
                        )
                    )
                else:
                    await self._deliver(channel, notice)
                delivered.append(channel.label)
            except SlackFailed as exc:
                failed.append(f"{channel.label}: Slack said {exc}")
            except NoticeFailed as exc:
                failed.append(f"{channel.label}: {exc}")
            except (
                Exception
            ) as exc:  # a notice must never fail the rollback; its text may hold a path or URL
                failed.append(f"{channel.label}: failed ({type(exc).__name__})")
        return NoticeResult(delivered=delivered, failed=failed, skipped=skipped, posted=posted)

    @activity.defn(name=refs.NOTIFY_CARD.name)
    async def update_card(self, update: CardUpdate) -> NoticeResult:
        """Show an approval message again as its card now stands (chat.update: the same
        message, so a retry changes nothing). Only messages in channels the catalog lists."""
        allowed = None if self.known is None else {c.channel for c in self.known if c.channel}
        for ref in update.messages:
            if allowed is not None and ref.channel not in allowed:
                raise permanent(
                    f"Slack channel {ref.channel} is not one of the catalog's; refused, nothing "
                    "was updated",
                    "NoticeChannelRefused",
                )
        if self.slack is None:
            return NoticeResult(
                delivered=[], skipped=[f"slack:#{r.channel}" for r in update.messages]
            )
        delivered, failed = [], []
        for ref in update.messages:
            try:
                await self.slack.update(ref, update.card, _namespace())
                delivered.append(f"slack:#{ref.channel}")
            except SlackFailed as exc:
                failed.append(f"slack:#{ref.channel}: Slack said {exc}")
            except Exception as exc:  # a message must never fail the change
                failed.append(f"slack:#{ref.channel}: failed ({type(exc).__name__})")
        return NoticeResult(delivered=delivered, failed=failed)

    async def _deliver(self, channel: Channel, notice: Notice) -> None:
        if channel.kind == "console":
            log.warning("%s\n%s", notice.subject, notice.text)
            print(f"\n{notice.text}\n", flush=True)
        elif channel.kind == "jsonl":
            path = self.jsonl_path(channel)
            path.parent.mkdir(parents=True, exist_ok=True)
            entry = {
                "at": dt.datetime.now(dt.UTC).isoformat(),
                "kind": notice.kind,
                "subject": notice.subject,
                "text": notice.text,
            }
            # O_NOFOLLOW: a link put there after the check does not lead out of the directory.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        elif channel.kind == "slack":
            url = self._webhook(channel)
            if not url:
                raise NoticeFailed(f"${channel.webhook_env} is not set; Slack notice skipped")
            await post_to_slack(url, notice.text)


def _namespace() -> str:
    try:
        return activity.info().workflow_namespace or "default"
    except RuntimeError:  # called outside an activity (tests)
        return "default"


async def post_to_slack(url: str, text: str) -> None:
    """Post under a span of our own with the scheme and host only; the HTTP
    client's instrumentation, which would record the URL, is suppressed."""
    parts = urlsplit(url)
    attributes = {
        "url.scheme": parts.scheme,
        "server.address": parts.hostname or "",
        "http.request.method": "POST",
    }
    with tracer.start_as_current_span(
        "slack.webhook",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            with suppress_http_instrumentation():
                response = await AsyncWebhookClient(url, logger=quiet_slack_log).send(text=text)
        except Exception as exc:
            problem = f"connection error ({type(exc).__name__})"
            span.set_status(Status(StatusCode.ERROR, problem))
            raise NoticeFailed(problem) from None
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 300:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status_code}"))
            raise NoticeFailed(f"HTTP {response.status_code}")
