"""Notices reach every channel; a Slack webhook gets the text, and its URL stays
in the worker's environment."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from activities.notify import NotifyActivities
from runbook.catalog import Channel, ServiceEntry
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
        notify = NotifyActivities(
            environ={"TEAM_HOOK": f"http://127.0.0.1:{port}/hook"}, base_dir=tmp_path
        )
        channels = [
            Channel(kind="console"),
            Channel(kind="jsonl", path="n/notices.jsonl"),
            Channel(kind="slack", webhook_env="TEAM_HOOK"),
            Channel(kind="slack", webhook_env="UNSET_HOOK"),
        ]
        notice = Notice(
            kind="start",
            subject="【ロールバック開始】",
            text="【ロールバック開始】\n対応: ロールバックを開始します",
            channels=channels,
        )
        result = await notify.send(notice)
    finally:
        await runner.cleanup()
    assert result.delivered == ["console", "jsonl:n/notices.jsonl", "slack:$TEAM_HOOK"]
    assert result.failed == []
    assert result.skipped == ["slack:$UNSET_HOOK"]
    assert received == [{"text": notice.text}]
    line = json.loads((tmp_path / "n" / "notices.jsonl").read_text())
    assert line["kind"] == "start" and "ロールバックを開始します" in line["text"]
    assert "ロールバックを開始します" in capsys.readouterr().out
    assert "127.0.0.1" not in notice.model_dump_json()  # the webhook URL never enters the notice


async def test_an_unconfigured_slack_channel_is_announced_once_and_skipped_not_failed(
    tmp_path, caplog
) -> None:
    slack = Channel(kind="slack", webhook_env="TEAM_HOOK")
    services = [
        ServiceEntry(
            name=name, deployment=name, service=name, channels=[Channel(kind="console"), slack]
        )
        for name in ("api", "web")
    ]
    notify = NotifyActivities(environ={}, base_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="modoru.notices"):
        assert notify.announce_unconfigured(services) == ["TEAM_HOOK"]
        results = [
            await notify.send(
                Notice(
                    kind="start",
                    subject=f"n{i}",
                    text=f"n{i}",
                    channels=[Channel(kind="console"), slack],
                )
            )
            for i in range(3)
        ]
    announced = [r.getMessage() for r in caplog.records if "TEAM_HOOK" in r.getMessage()]
    assert announced == [
        "Slack channel $TEAM_HOOK is not configured (the variable is not set): its notices for "
        "api, web are skipped"
    ]
    assert all(
        (r.delivered, r.failed, r.skipped) == (["console"], [], ["slack:$TEAM_HOOK"])
        for r in results
    )


async def test_a_configured_slack_channel_is_not_announced_and_its_errors_still_fail(
    tmp_path, caplog
) -> None:
    slack = Channel(kind="slack", webhook_env="TEAM_HOOK")
    notify = NotifyActivities(environ={"TEAM_HOOK": "http://127.0.0.1:1/hook"}, base_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="modoru.notices"):
        assert (
            notify.announce_unconfigured(
                [ServiceEntry(name="api", deployment="api", service="api", channels=[slack])]
            )
            == []
        )
    assert not [r for r in caplog.records if "TEAM_HOOK" in r.getMessage()]
    result = await notify.send(Notice(kind="start", subject="s", text="t", channels=[slack]))
    assert (
        result.delivered == []
        and result.skipped == []
        and len(result.failed) == 1
        and result.failed[0].startswith("slack:$TEAM_HOOK: ")
    )
