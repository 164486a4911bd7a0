"""`modoru codec-server`: the Web UI's codec endpoint, with the worker's keys."""

from __future__ import annotations

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
) -> None:
    """Serve /encode and /decode for the Temporal Web UI (keys from MODORU_CODEC_KEYS or \
MODORU_CODEC_KEYS_FILE)."""
    from worker.codec_server import serve

    raise typer.Exit(serve(port, host, ui_origin))
