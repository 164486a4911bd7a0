"""The Cloud SQL emulator's HTTP face: the REST routes of `sqladmin.v1.json`,
taken from the document itself (method id → HTTP method and path template),
with the front end's checks before any method runs (sandbox/google_rest.py);
a path the document does not have is a 404."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from . import discovery
from .cloudsql_resources import ApiError
from .google_rest import route_handler

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


def build_app(emulator: CloudSqlEmulator) -> web.Application:
    app = web.Application()
    specs = discovery.methods(API, VERSION)
    for method_id in ROUTES:
        spec = specs[method_id]
        app.router.add_route(spec.http_method, "/" + spec.path, route_handler(API, VERSION, spec, getattr(emulator, ROUTES[method_id]), _error))

    async def not_found(request: web.Request) -> web.Response:
        return _error(ApiError(404, f"The requested URL {request.path} was not found on this server."))

    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
