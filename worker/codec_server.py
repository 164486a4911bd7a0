"""A codec server for the Temporal Web UI: POST /encode and POST /decode with
{"payloads": [...]} in Temporal's proto-JSON form, CORS for the UI's origins.
It decrypts with the worker's keys, so it listens on 127.0.0.1 unless told
otherwise and belongs behind the same sign-in as the UI.

    python -m worker.codec_server --port 8081   (or: modoru codec-server)"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from .codec import CodecSettingsError, codec_from_settings
from .settings import Settings

log = logging.getLogger("modoru.codec_server")
MAX_BODY = 8 * 1024 * 1024  # several payloads of Temporal's 2 MB limit each
ALLOWED_HEADERS = "content-type,x-namespace,authorization"
DEFAULT_UI = "http://127.0.0.1:8233"

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


def origin_of(url: str) -> str:
    parts = urlsplit(url.strip())
    return (
        f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        if parts.scheme and parts.netloc
        else url.strip().rstrip("/")
    )


def cors_origins(settings: Settings, given: Iterable[str] = ()) -> set[str]:
    """The Web UI origins allowed to call: given ones, else MODORU_CODEC_CORS_ORIGINS, else the
    web_ui setting's
    (the dev server's default UI when none is set)."""
    chosen = (
        list(given)
        or [o for o in (settings.codec_cors_origins or "").split(",") if o.strip()]
        or [settings.web_ui or DEFAULT_UI]
    )
    return {origin_of(o) for o in chosen}


def build_app(codec: PayloadCodec, origins: Iterable[str]) -> web.Application:
    allowed = set(origins)

    def with_cors(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin in allowed:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOWED_HEADERS
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
            response.headers[hdrs.VARY] = "Origin"
        return response

    async def preflight(request: web.Request) -> web.StreamResponse:
        return with_cors(
            request,
            web.Response(status=204 if request.headers.get(hdrs.ORIGIN) in allowed else 403),
        )

    def handler(transform: Transform) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            origin = request.headers.get(hdrs.ORIGIN)
            if origin is not None and origin not in allowed:
                return web.json_response({"error": "origin not allowed"}, status=403)
            try:
                payloads = json_format.Parse(
                    await request.read(), Payloads(), ignore_unknown_fields=True
                )
            except (json_format.ParseError, UnicodeDecodeError):
                return with_cors(
                    request,
                    web.json_response(
                        {"error": 'expected {"payloads": [...]} in proto JSON'}, status=400
                    ),
                )
            try:
                result = Payloads(payloads=await transform(payloads.payloads))
            except ValueError as exc:  # the codec's messages name key ids, never keys or data
                return with_cors(request, web.json_response({"error": str(exc)}, status=422))
            return with_cors(
                request,
                web.Response(
                    text=json_format.MessageToJson(result), content_type="application/json"
                ),
            )

        return handle

    app = web.Application(client_max_size=MAX_BODY)
    app.add_routes(
        [
            web.post("/encode", handler(codec.encode)),
            web.post("/decode", handler(codec.decode)),
            web.options("/encode", preflight),
            web.options("/decode", preflight),
        ]
    )
    return app


def serve(port: int, host: str = "127.0.0.1", origins: Iterable[str] = ()) -> int:
    """Run until interrupted; returns an exit code. Bad keys: one line, code 2."""
    settings = Settings()
    try:
        codec = codec_from_settings(settings)
    except CodecSettingsError as exc:
        print(f"modoru codec-server: {exc}", file=sys.stderr)
        return 2
    if codec is None:
        print(
            "modoru codec-server: no keys: set MODORU_CODEC_KEYS or MODORU_CODEC_KEYS_FILE",
            file=sys.stderr,
        )
        return 2
    allowed = cors_origins(settings, origins)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info(
        "codec server on http://%s:%d (current key %s; CORS for %s)",
        host,
        port,
        codec.key_id,
        ", ".join(sorted(allowed)),
    )
    web.run_app(build_app(codec, allowed), host=host, port=port, print=None, access_log=None)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.codec_server", description="Codec server for the Temporal Web UI."
    )
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--ui-origin",
        action="append",
        default=[],
        help="a Web UI origin allowed by CORS (repeatable)",
    )
    args = parser.parse_args(argv)
    return serve(args.port, args.host, args.ui_origin)


if __name__ == "__main__":
    sys.exit(main())
