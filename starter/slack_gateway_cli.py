"""`modoru slack-gateway`: serve Slack's interactivity URL (see
`starter/slack_gateway.py`) with the settings' signing secret, bot token,
attestor key and catalog."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import typer

from .base import fail


def _attestor_key(path: Path | None, catalog) -> bytes:
    from runbook.identity import key_identity
    from runbook.signatures import public_key_line

    if path is None:
        raise fail(
            "the gateway needs its own key: set MODORU_SLACK_ATTESTOR_KEY_FILE (an ed25519 key "
            "whose public half the catalog lists under attestors)"
        )
    try:
        private = path.expanduser().read_bytes()
        public = key_identity(public_key_line(private))
    except OSError as exc:
        raise fail(f"MODORU_SLACK_ATTESTOR_KEY_FILE: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise fail(f"MODORU_SLACK_ATTESTOR_KEY_FILE: {path} is not a usable key: {exc}") from None
    if not any(a.public_key == public for a in catalog.attestors):
        raise fail(
            f"the key in {path} is not an attestor's in the catalog: add its public half under "
            "attestors (name, public_key, identities, gates), or no decision it signs will count"
        )
    return private


def slack_gateway(
    port: int = typer.Option(3000, min=1, max=65535, help="Port to listen on."),
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on (behind the Ingress that Slack reaches)."
    ),
) -> None:
    """Serve Slack's interactivity URL (POST /slack/interactions): Approve and Reject \
clicks, checked and signed with the gateway's attestor key."""
    from slack_sdk.web.async_client import AsyncWebClient

    from worker.catalog_file import CatalogError, load_catalog
    from worker.client import connect
    from worker.settings import Settings

    from .slack_gateway import SlackGateway, TemporalGates

    settings = Settings()
    try:
        secret = settings.slack_secret("slack_signing_secret")
        token = settings.slack_secret("slack_bot_token")
        catalog = load_catalog(settings.catalog)
    except (ValueError, CatalogError) as exc:
        raise fail(str(exc)) from None
    if not secret:
        raise fail("set MODORU_SLACK_SIGNING_SECRET or MODORU_SLACK_SIGNING_SECRET_FILE")
    if not token:
        raise fail("set MODORU_SLACK_BOT_TOKEN or MODORU_SLACK_BOT_TOKEN_FILE (for the modal)")
    key = _attestor_key(settings.slack_attestor_key_file, catalog)

    async def serve() -> None:
        from aiohttp import web

        client = await connect(settings)
        gateway = SlackGateway(
            signing_secret=secret,
            catalog=catalog,
            gates=TemporalGates(client, settings.task_queue),
            attestor_key=key,
            slack=AsyncWebClient(token=token, base_url=settings.slack_api_url),
            audit_path=settings.slack_audit_file,
        )
        runner = web.AppRunner(gateway.build_app(), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        print(f"Slack gateway on http://{host}:{port}/slack/interactions", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await gateway.close()
            await runner.cleanup()

    asyncio.run(serve())
