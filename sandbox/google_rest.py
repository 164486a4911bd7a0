"""One request handler for the Google REST APIs the sandbox serves from their
discovery documents (Cloud SQL Admin, Artifact Registry), doing what Google's
front end does before a method runs: an unknown query parameter, an integer or
enum parameter with a bad value, a body that is not JSON, an unknown field or a
wrong type is a 400 in Google's wording; then the emulator's method is called
with the path parameters, the known query parameters and the body."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from . import discovery
from .cloudsql_resources import ApiError


def route_handler(
    api: str,
    version: str,
    spec: discovery.Method,
    method: Callable[..., Any],
    error: Callable[[ApiError], web.Response],
    enum_types: Mapping[str, str] | None = None,
) -> Callable[[web.Request], Any]:
    """`enum_types` names the proto enum of a query parameter, as Google's message does."""
    takes = inspect.signature(method).parameters
    query_params = {name for name, p in spec.parameters.items() if p.get("location") == "query"}
    allowed_query = query_params | discovery.standard_parameters(api, version)

    def check_query(request: web.Request) -> None:
        for name, value in request.query.items():
            if name not in allowed_query:
                raise ApiError(
                    400,
                    f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query '
                    "parameter. "
                    f"Field '{name}' could not be found in request message.",
                )
            param = spec.parameters.get(name) or {}
            if param.get("type") == "integer" and not value.lstrip("-").isdigit():
                raise ApiError(
                    400,
                    f"Invalid value at '{discovery._snake(name)}' "
                    f'(TYPE_{param.get("format", "int32").upper()}), "{value}"',
                )
            if "enum" in param and value not in param["enum"]:
                raise ApiError(
                    400,
                    f"Invalid value at '{discovery._snake(name)}' "
                    f'({(enum_types or {}).get(name, "TYPE_ENUM")}), "{value}"',
                )

    async def handle(request: web.Request) -> web.Response:
        try:
            check_query(request)
            # The route's own names (the flat path's: `projectsId`, `instance`), as the method takes
            # them.
            args: dict[str, Any] = {
                name: value for name, value in request.match_info.items() if name in takes
            }
            if "query" in takes:
                args["query"] = {
                    name: request.query[name] for name in query_params if name in request.query
                }
            if spec.request:
                try:
                    body = await request.json() if request.can_read_body else {}
                except json.JSONDecodeError as exc:
                    raise ApiError(400, f"Invalid JSON payload received. {exc.msg}.") from None
                try:
                    discovery.check(api, version, spec.request, body, at="body")
                except discovery.SchemaViolation as exc:
                    raise ApiError(400, str(exc)) from None
                args["body"] = body
            result = method(**args)
            if inspect.isawaitable(result):
                result = await result
            return web.json_response(result)
        except ApiError as exc:
            return error(exc)

    return handle
