"""The Cloud SQL emulator's HTTP face: the REST routes of `sqladmin.v1.json`,
taken from the document itself (method id → HTTP method and path template),
with the front end's checks before any method runs: an unknown query
parameter, a body that is not JSON, an unknown field or a wrong type is a 400
in Google's error shape; a path the document does not have is a 404."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import discovery
from .cloudsql_resources import ApiError

if TYPE_CHECKING:
    from .cloudsql import CloudSqlEmulator

API, VERSION = "sqladmin", "v1"
log = logging.getLogger(__name__)

# The methods served, by discovery id, and the emulator method answering each.
ROUTES: dict[str, str] = {
    "sql.instances.get": "get_instance",
    "sql.instances.list": "list_instances",
    "sql.instances.clone": "clone_instance",
    "sql.projects.instances.getLatestRecoveryTime": "get_latest_recovery_time",
    "sql.backupRuns.get": "get_backup_run",
    "sql.backupRuns.list": "list_backup_runs",
    "sql.backupRuns.insert": "insert_backup_run",
    "sql.operations.get": "get_operation",
    "sql.operations.list": "list_operations",
}


def _error(exc: ApiError) -> web.Response:
    return web.json_response(exc.body(), status=exc.http_status)


def _handler(emulator: CloudSqlEmulator, spec: discovery.Method) -> Callable[[web.Request], Any]:
    method = getattr(emulator, ROUTES[spec.id])
    takes = inspect.signature(method).parameters
    path_params = [name for name, p in spec.parameters.items() if p.get("location") == "path"]
    query_params = {name for name, p in spec.parameters.items() if p.get("location") == "query"}
    allowed_query = query_params | discovery.standard_parameters(API, VERSION)

    async def handle(request: web.Request) -> web.Response:
        try:
            for name in request.query:
                if name not in allowed_query:
                    raise ApiError(400, f"Invalid JSON payload received. Unknown name \"{name}\": Cannot bind query parameter. "
                                        f"Field '{name}' could not be found in request message.")
            for name in query_params:
                kind = spec.parameters[name].get("type")
                if kind == "integer" and name in request.query and not request.query[name].lstrip("-").isdigit():
                    raise ApiError(400, f"Invalid value at '{discovery._snake(name)}' (TYPE_{spec.parameters[name].get('format', 'int32').upper()}), "
                                        f"\"{request.query[name]}\"")
            args: dict[str, Any] = {name: request.match_info[name] for name in path_params}
            if "query" in takes:
                args["query"] = {name: request.query[name] for name in query_params if name in request.query}
            if spec.request:
                try:
                    body = await request.json() if request.can_read_body else {}
                except json.JSONDecodeError as exc:
                    raise ApiError(400, f"Invalid JSON payload received. {exc.msg}.") from None
                try:
                    discovery.check(API, VERSION, spec.request, body, at="body")
                except discovery.SchemaViolation as exc:
                    raise ApiError(400, str(exc)) from None
                args["body"] = body
            result = method(**args)
            if inspect.isawaitable(result):
                result = await result
            return web.json_response(result)
        except ApiError as exc:
            return _error(exc)

    return handle


def build_app(emulator: CloudSqlEmulator) -> web.Application:
    app = web.Application()
    specs = discovery.methods(API, VERSION)
    for method_id in ROUTES:
        spec = specs[method_id]
        app.router.add_route(spec.http_method, "/" + spec.path, _handler(emulator, spec))

    async def not_found(request: web.Request) -> web.Response:
        return _error(ApiError(404, f"The requested URL {request.path} was not found on this server."))

    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
