"""A codec server for the Temporal Web UI: POST /decode (and /encode, when
asked for) with {"payloads": [...]} in Temporal's proto-JSON form, CORS for the
UI's origins. It decrypts with the worker's keys, so it listens on 127.0.0.1
unless told otherwise, belongs behind the same sign-in as the UI, and answers
only a caller that shows its token:

- `Authorization: Bearer TOKEN` (the stock CLI's `--codec-auth "Bearer TOKEN"`;
  the Web UI's "pass access token" sends the user's sign-in token instead, over
  https only), or
- the token as the endpoint's first path segment, `https://codec.example/TOKEN`
  (the UI calls ENDPOINT/decode; `temporal server start-dev --ui-codec-endpoint`
  cannot add a header), compared in constant time either way.

A request with an `Origin` must come from an allowed one; a request without a
valid token is refused whatever its origin. `/encode` answers only when
started with `--allow-encode`: the UI only decodes, and an open /encode lets a
caller make payloads the worker accepts as written by a key holder.

    MODORU_CODEC_TOKEN_FILE=... python -m worker.codec_server --port 8081
    (or: modoru codec-server)"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
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

TOKEN_BYTES = 32

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


class TokenError(ValueError):
    """No usable token; the message names the setting, never the token."""


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def write_token_file(path: Path) -> str:
    """A new token in `path`, created 0600 (an existing file is kept); returns the token."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_token() + "\n")
    return read_token_file(path, "the token file")


def read_token_file(path: Path, setting: str) -> str:
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"{setting}: cannot read {path} ({type(exc).__name__})") from None
    return check_token(token, setting)


def check_token(token: str, setting: str) -> str:
    if len(token) < 24 or not token.isascii() or any(c in token for c in "/?#% \t"):
        raise TokenError(
            f"{setting}: the token must be at least 24 characters of letters, digits, '-' and '_' "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def token_from_env(environ: Mapping[str, str] | None = None, token_file: Path | None = None) -> str:
    """The token: --token-file, else MODORU_CODEC_TOKEN_FILE, else MODORU_CODEC_TOKEN."""
    env = os.environ if environ is None else environ
    if token_file is not None:
        return read_token_file(token_file, "--token-file")
    if env.get("MODORU_CODEC_TOKEN_FILE"):
        return read_token_file(Path(env["MODORU_CODEC_TOKEN_FILE"]), "MODORU_CODEC_TOKEN_FILE")
    if env.get("MODORU_CODEC_TOKEN"):
        return check_token(env["MODORU_CODEC_TOKEN"].strip(), "MODORU_CODEC_TOKEN")
    raise TokenError(
        "no token: set MODORU_CODEC_TOKEN_FILE (a file holding a random token, mode 0600) or "
        "give --token-file; callers send it as 'Authorization: Bearer TOKEN' or as the "
        "endpoint's first path segment"
    )


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


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


def build_app(
    codec: PayloadCodec, origins: Iterable[str], token: str, *, allow_encode: bool = False
) -> web.Application:
    allowed = set(origins)
    check_token(token, "the codec server's token")

    def authorized(request: web.Request) -> bool:
        in_path = request.match_info.get("token")
        if in_path is not None:
            return token_matches(in_path, token)
        scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        return scheme.lower() == "bearer" and token_matches(given.strip(), token)

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
            if not authorized(request):
                return with_cors(
                    request,
                    web.json_response(
                        {
                            "error": "a token is required: 'Authorization: Bearer TOKEN' or the "
                            "endpoint's first path segment"
                        },
                        status=401,
                        headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="modoru codec"'},
                    ),
                )
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

    async def encode_off(request: web.Request) -> web.StreamResponse:
        return with_cors(
            request,
            web.json_response(
                {"error": "/encode is off on this codec server (start it with --allow-encode)"},
                status=403,
            ),
        )

    encode = handler(codec.encode) if allow_encode else encode_off
    decode = handler(codec.decode)
    app = web.Application(client_max_size=MAX_BODY)
    routes = []
    for prefix in ("", "/{token}"):
        routes += [
            web.post(f"{prefix}/encode", encode),
            web.post(f"{prefix}/decode", decode),
            web.options(f"{prefix}/encode", preflight),
            web.options(f"{prefix}/decode", preflight),
        ]
    app.add_routes(routes)
    return app


def serve(
    port: int,
    host: str = "127.0.0.1",
    origins: Iterable[str] = (),
    token_file: Path | None = None,
    allow_encode: bool = False,
) -> int:
    """Run until interrupted; returns an exit code. Bad keys or no token: one line, code 2."""
    settings = Settings()
    try:
        codec = codec_from_settings(settings)
        token = token_from_env(token_file=token_file)
    except (CodecSettingsError, TokenError) as exc:
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
        "codec server on http://%s:%d (current key %s; CORS for %s; a token required; /encode %s)",
        host,
        port,
        codec.key_id,
        ", ".join(sorted(allowed)),
        "on" if allow_encode else "off",
    )
    # No access log: a token in the path would be written to it.
    web.run_app(
        build_app(codec, allowed, token, allow_encode=allow_encode),
        host=host,
        port=port,
        print=None,
        access_log=None,
    )
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
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="a file holding the token callers must show (default: MODORU_CODEC_TOKEN_FILE, "
        "else MODORU_CODEC_TOKEN)",
    )
    parser.add_argument(
        "--allow-encode",
        action="store_true",
        help="answer POST /encode too (off: the Web UI only decodes)",
    )
    args = parser.parse_args(argv)
    return serve(args.port, args.host, args.ui_origin, args.token_file, args.allow_encode)


if __name__ == "__main__":
    sys.exit(main())
