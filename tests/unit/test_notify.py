"""Notices reach every channel; a Slack webhook gets the text, and its URL stays
in the worker's environment."""

from __future__ import annotations

import json

from aiohttp import web

from activities.notify import NotifyActivities
from runbook.catalog import Channel
from runbook.models import Notice


async def test_console_jsonl_and_slack(tmp_path, capsys) -> None:
    received = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        notify = NotifyActivities(environ={"TEAM_HOOK": f"http://127.0.0.1:{port}/hook"}, base_dir=tmp_path)
        channels = [Channel(kind="console"), Channel(kind="jsonl", path="n/notices.jsonl"), Channel(kind="slack", webhook_env="TEAM_HOOK"), Channel(kind="slack", webhook_env="UNSET_HOOK")]
        notice = Notice(kind="start", subject="【ロールバック開始】", text="【ロールバック開始】\n対応: ロールバックを開始します", channels=channels)
        result = await notify.send(notice)
    finally:
        await runner.cleanup()
    assert result.delivered == ["console", "jsonl:n/notices.jsonl", "slack:$TEAM_HOOK"]
    assert result.failed == ["slack:$UNSET_HOOK: $UNSET_HOOK is not set; Slack notice skipped"]
    assert received == [{"text": notice.text}]
    line = json.loads((tmp_path / "n" / "notices.jsonl").read_text())
    assert line["kind"] == "start" and "ロールバックを開始します" in line["text"]
    assert "ロールバックを開始します" in capsys.readouterr().out
    assert "127.0.0.1" not in notice.model_dump_json()  # the webhook URL never enters the notice
