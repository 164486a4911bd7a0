"""Notices to the catalog's channels: the console, a JSONL file, a Slack
incoming webhook. The webhook URL is read from the environment here, so it
never enters a workflow's history or a log line. A Slack channel whose
variable is not set is not configured on this worker: the worker says so once
when it starts (`announce_unconfigured`), and its notices are skipped, not
failed."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from slack_sdk.webhook.async_client import AsyncWebhookClient
from temporalio import activity

from runbook.catalog import Channel, ServiceEntry
from runbook.models import Notice, NoticeResult

log = logging.getLogger("modoru.notices")


class NotifyActivities:
    def __init__(self, environ: Mapping[str, str] | None = None, base_dir: Path | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.base_dir = base_dir or Path.cwd()

    def _webhook(self, channel: Channel) -> str | None:
        return self.environ.get(channel.webhook_env or "") or None

    def announce_unconfigured(self, services: Iterable[ServiceEntry]) -> list[str]:
        """Log once, at worker start, each Slack channel whose webhook variable is
        not set, with the services that use it; returns the variable names."""
        users: dict[str, list[str]] = {}
        for service in services:
            for channel in service.channels:
                if channel.kind == "slack" and self._webhook(channel) is None:
                    users.setdefault(channel.webhook_env or "", []).append(service.name)
        for variable, names in users.items():
            log.warning("Slack channel $%s is not configured (the variable is not set): its notices for %s are skipped",
                        variable, ", ".join(sorted(set(names))))
        return list(users)

    @activity.defn(name="notify.send")
    async def send(self, notice: Notice) -> NoticeResult:
        """Deliver to every channel; one failing channel does not stop the others.
        A retried send may repeat a console or Slack line, never skip one."""
        delivered, failed, skipped = [], [], []
        for channel in notice.channels:
            if channel.kind == "slack" and self._webhook(channel) is None:
                skipped.append(channel.label)  # announced once at worker start; not a failure
                continue
            try:
                await self._deliver(channel, notice)
                delivered.append(channel.label)
            except Exception as exc:  # a notice must never fail the rollback
                failed.append(f"{channel.label}: {type(exc).__name__}: {exc}")
        return NoticeResult(delivered=delivered, failed=failed, skipped=skipped)

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
            response = await AsyncWebhookClient(self._webhook(channel) or "").send(text=notice.text)
            if response.status_code >= 300:
                raise RuntimeError(f"Slack answered {response.status_code}")
