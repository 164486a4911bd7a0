"""`modoru codec-server`: the Web UI's codec endpoint, with the worker's keys."""

from __future__ import annotations

from pathlib import Path

import typer


def codec_server(
    port: int = typer.Option(8081, min=1, max=65535, help="Port to listen on."),
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on; it decrypts histories, so keep it private."
    ),
    ui_origin: list[str] = typer.Option(
        [],
        "--ui-origin",
        help="A Web UI origin allowed by CORS (repeatable); default: MODORU_CODEC_CORS_ORIGINS, "
        "else MODORU_WEB_UI.",
    ),
    token_file: Path | None = typer.Option(
        None,
        help="A file holding the token callers must show (Authorization: Bearer TOKEN, or the "
        "endpoint's first path segment); default: MODORU_CODEC_TOKEN_FILE, else "
        "MODORU_CODEC_TOKEN.",
    ),
    allow_encode: bool = typer.Option(
        False, "--allow-encode", help="Answer POST /encode too (off: the Web UI only decodes)."
    ),
) -> None:
    """Serve /decode for the Temporal Web UI to callers with the token (keys from \
MODORU_CODEC_KEYS or MODORU_CODEC_KEYS_FILE)."""
    from worker.codec_server import serve

    raise typer.Exit(serve(port, host, ui_origin, token_file, allow_encode))
