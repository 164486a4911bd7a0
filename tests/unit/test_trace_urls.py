"""Spans never carry credentials: HTTP client spans drop user info and query
strings, and the Slack webhook's span has the scheme and host only; a failing
Slack post is recorded without its URL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from activities.notify import NotifyActivities
from runbook.catalog import Channel
from runbook.models import Notice
from worker.telemetry import instrument_http, safe_url

SECRET_BITS = ("SECRETPATH", "/services/", "token", "hunter2", "alice")


def span_text(spans) -> str:
    return " ".join(
        f"{s.name} {dict(s.attributes)} {s.status.description} {[e.attributes for e in s.events]}"
        for s in spans
    )


def test_safe_url_drops_user_info_query_fragment_and_webhook_paths() -> None:
    assert (
        safe_url("https://alice:hunter2@api.example.com:8443/v1/things?token=abc#x")
        == "https://api.example.com:8443/v1/things"
    )
    assert (
        safe_url("https://hooks.slack.com/services/T000/B000/SECRETPATH")
        == "https://hooks.slack.com"
    )
    assert safe_url("http://[::1]:9/a?b=c") == "http://[::1]:9/a"


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, list[int]]]:
    """A webhook endpoint whose answer the test chooses; yields its base URL and the status list."""
    statuses = [200]

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=statuses[0], text="ok" if statuses[0] < 300 else "no_service")

    app = web.Application()
    app.router.add_post("/services/T000/B000/SECRETPATH", answer)
    app.router.add_get("/v1/things", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}", statuses
    await runner.cleanup()


async def test_http_client_spans_carry_no_user_info_or_query(hook) -> None:
    address, _ = hook
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = create_trace_config(url_filter=safe_url, tracer_provider=provider)
    async with (
        aiohttp.ClientSession(trace_configs=[config]) as session,
        session.get(f"http://alice:hunter2@{address}/v1/things?token=abc") as response,
    ):
        assert response.status == 200
    [span] = exporter.get_finished_spans()
    urls = [v for k, v in span.attributes.items() if k in ("http.url", "url.full")]
    assert urls == [f"http://{address}/v1/things"], dict(span.attributes)
    assert not any(bit in span_text([span]) for bit in SECRET_BITS)


def memory_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument_http()
    return exporter


async def test_the_slack_span_has_scheme_and_host_only_and_failures_no_url(hook, tmp_path) -> None:
    address, statuses = hook
    exporter = memory_exporter()
    url = f"http://alice:hunter2@{address}/services/T000/B000/SECRETPATH?token=abc"
    notify = NotifyActivities(
        environ={"TEAM_HOOK": url, "DEAD_HOOK": "http://127.0.0.1:1/services/T0/B0/SECRETPATH"},
        base_dir=tmp_path,
    )
    notice = Notice(
        kind="start",
        subject="s",
        text="t",
        channels=[Channel(kind="slack", webhook_env="TEAM_HOOK")],
    )

    assert (await notify.send(notice)).delivered == ["slack:$TEAM_HOOK"]
    statuses[0] = 404
    failed_404 = (await notify.send(notice)).failed
    dead = notice.model_copy(update={"channels": [Channel(kind="slack", webhook_env="DEAD_HOOK")]})
    failed_dead = (await notify.send(dead)).failed

    assert failed_404 == ["slack:$TEAM_HOOK: HTTP 404"]
    assert failed_dead == ["slack:$DEAD_HOOK: connection error (ClientConnectorError)"]
    spans = exporter.get_finished_spans()
    slack = [s for s in spans if s.name == "slack.webhook"]
    assert len(slack) == 3
    assert {s.attributes["server.address"] for s in slack} == {"127.0.0.1"}
    assert [s.attributes.get("http.response.status_code") for s in slack] == [200, 404, None]
    assert [s.status.description for s in slack] == [
        None,
        "HTTP 404",
        "connection error (ClientConnectorError)",
    ]
    assert not any(bit in span_text(spans) for bit in SECRET_BITS), span_text(spans)
