"""Notices to the catalog's channels: the console, a JSONL file, a Slack
incoming webhook. The webhook URL is read from the environment here, so it
never enters a workflow's history or a log line."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from slack_sdk.webhook.async_client import AsyncWebhookClient
from temporalio import activity

from runbook.catalog import Channel
from runbook.models import Notice, NoticeResult

log = logging.getLogger("modoru.notices")


class NotifyActivities:
    def __init__(self, environ: Mapping[str, str] | None = None, base_dir: Path | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.base_dir = base_dir or Path.cwd()

    @activity.defn(name="notify.send")
    async def send(self, notice: Notice) -> NoticeResult:
        """Deliver to every channel; one failing channel does not stop the others.
        A retried send may repeat a console or Slack line, never skip one."""
        delivered, failed = [], []
        for channel in notice.channels:
            try:
                await self._deliver(channel, notice)
                delivered.append(channel.label)
            except Exception as exc:  # a notice must never fail the rollback
                failed.append(f"{channel.label}: {type(exc).__name__}: {exc}")
        return NoticeResult(delivered=delivered, failed=failed)

    async def _deliver(self, channel: Channel, notice: Notice) -> None:
        if channel.kind == "console":
            log.warning("%s\n%s", notice.subject, notice.text)
            print(f"\n{notice.text}\n", flush=True)
        elif channel.kind == "jsonl":
            path = Path(channel.path or "")
            path = path if path.is_absolute() else self.base_dir / path
            path.parent.mkdir(parents=True, exist_ok=True)
            entry = {"at": dt.datetime.now(dt.UTC).isoformat(), "kind": notice.kind, "subject": notice.subject, "text": notice.text}
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        elif channel.kind == "slack":
            url = self.environ.get(channel.webhook_env or "")
            if not url:
                raise LookupError(f"${channel.webhook_env} is not set; Slack notice skipped")
            response = await AsyncWebhookClient(url).send(text=notice.text)
            if response.status_code >= 300:
                raise RuntimeError(f"Slack answered {response.status_code}")
