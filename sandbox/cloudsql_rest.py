"""The Cloud SQL emulator's HTTP face: the REST routes of `sqladmin.v1.json`,
taken from the document itself (method id → HTTP method and path template),
with the front end's checks before any method runs (sandbox/google_rest.py);
a path the document does not have is a 404.

Fault injection, as the Kubernetes API's (`sandbox/kube/faults.py`): rules
put at `PUT /sandbox/faults` (resource: the REST collection, `instances`,
`backupRuns`, `operations`; verb: the HTTP method in lower case) answer a
request with 429, 500 or 503 in Google's JSON error shape (`RESOURCE_EXHAUSTED`
/ `rateLimitExceeded`, `INTERNAL` / `backendError`, `UNAVAILABLE` /
`backendError`), after added latency, or drop it; every request is in the log
at `GET /sandbox/requests?since=N`. Google's own paths all start with `/v1/`,
so the `/sandbox/` routes cannot shadow one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Protocol

from aiohttp import web

from . import discovery
from .cloudsql_resources import ApiError
from .google_rest import route_handler
from .kube.faults import EffectLog, FaultInjector, RequestLog, drop_connection
from .kube.faults import admin_routes as effect_routes
from .scenario import FaultRule

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


class Emulator(Protocol):
    """What this face needs of the emulator (sandbox/cloudsql.py): its fault rules and logs,
    and the methods ROUTES names, looked up by name."""

    faults: FaultInjector
    requests: RequestLog
    effects: EffectLog


def _error(exc: ApiError) -> web.Response:
    return web.json_response(exc.body(), status=exc.http_status)


# What Google's front end says for each injected status (google.rpc.Code, legacy reason, message).
FAULTS = {
    429: (
        "RESOURCE_EXHAUSTED",
        "rateLimitExceeded",
        "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' "
        "of service 'sqladmin.googleapis.com'.",
    ),
    500: ("INTERNAL", "backendError", "Internal error encountered."),
    503: ("UNAVAILABLE", "backendError", "The service is currently unavailable."),
}


COLLECTIONS = {
    "instances",
    "backupRuns",
    "operations",
    "backups",
    "databases",
    "users",
    "sslCerts",
    "tiers",
    "flags",
}


def _collection(path: str) -> str:
    """The REST collection a path names: `/v1/projects/p/instances/i/backupRuns` is backupRuns,
    `/v1/projects/p/instances/i/clone` is instances (a custom method of one)."""
    parts = [p for p in path.split("/") if p][2:]  # after v1/projects
    collections = [
        parts[i] for i in range(1, len(parts), 2) if parts[i] in COLLECTIONS
    ]  # {project}/<collection>/{id}/<collection>...
    return collections[-1] if collections else ""


WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


async def _effect(request: web.Request, response: web.StreamResponse) -> dict[str, Any]:
    """An applied write as the effect log keeps it: the method, the path, the operation the
    answer names and, for a clone, the instance it makes."""
    sent: Any = None
    with contextlib.suppress(ValueError):
        sent = json.loads(await request.read() or b"null")
    answer: Any = None
    if isinstance(response, web.Response) and response.body is not None:
        with contextlib.suppress(ValueError, TypeError):
            answer = json.loads(response.body)
    clone = (sent or {}).get("cloneContext") if isinstance(sent, dict) else None
    return {
        "method": request.method,
        "path": request.path,
        "operation": (answer or {}).get("name") if isinstance(answer, dict) else None,
        "operation_type": (answer or {}).get("operationType") if isinstance(answer, dict) else None,
        "destination": (clone or {}).get("destinationInstanceName"),
    }


def _injected(status: int, retry_after: int = 0) -> web.Response:
    """An injected fault in Google's error shape (a 429 says when to retry, if the rule does)."""
    code, reason, message = FAULTS[status]
    failure = ApiError(status, message, reason=reason, status=code)
    headers = {"Retry-After": str(retry_after)} if status == 429 and retry_after else None
    return web.json_response(failure.body(), status=failure.http_status, headers=headers)


def fault_middleware(faults: FaultInjector, requests: RequestLog, effects: EffectLog):
    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.path.startswith("/sandbox/"):
            return await handler(request)
        resource, verb, status = _collection(request.path), request.method.lower(), 500
        applied = False
        try:
            decision = faults.decide(resource, verb)
            if decision.latency_ms:
                await asyncio.sleep(decision.latency_ms / 1000)
            if decision.drop:
                status = 0
                drop_connection(request)
            if decision.status is not None:
                status = decision.status
                return _injected(decision.status, decision.retry_after)
            response = await handler(request)
            status = response.status
            if request.method in WRITE_METHODS and 200 <= status < 300:
                applied = True
                what = await _effect(request, response)
                effects.record(f"{resource}.{verb}", resource=resource, **what)
                after = await faults.after_write(resource, verb, what)
                if after.drop:
                    status = 0
                    drop_connection(request, after_write=True)
                if after.status is not None:
                    status = after.status
                    return _injected(after.status)
            return response
        finally:
            requests.record(
                method=request.method,
                verb=verb,
                path=request.path,
                query=request.query_string,
                resource=resource,
                status=status,
                applied=applied,
            )

    return middleware


def admin_routes(
    app: web.Application, faults: FaultInjector, requests: RequestLog, effects: EffectLog
) -> None:
    async def get_requests(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "entries": requests.since(int(request.query.get("since", "0"))),
                "last": requests.last_seq,
            }
        )

    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response({"rules": faults.rules()})

    async def put_faults(request: web.Request) -> web.Response:
        try:
            rules = [FaultRule.model_validate(r) for r in (await request.json()).get("rules", [])]
        except Exception as exc:  # pydantic or JSON errors: tell the caller what was wrong
            return web.json_response({"error": str(exc)}, status=400)
        faults.replace(rules)
        return web.json_response({"rules": faults.rules()})

    app.router.add_get("/sandbox/requests", get_requests)
    app.router.add_get("/sandbox/faults", get_faults)
    app.router.add_put("/sandbox/faults", put_faults)
    effect_routes(app, faults, effects)


def build_app(emulator: Emulator) -> web.Application:
    app = web.Application(
        middlewares=[fault_middleware(emulator.faults, emulator.requests, emulator.effects)]
    )
    admin_routes(app, emulator.faults, emulator.requests, emulator.effects)
    specs = discovery.methods(API, VERSION)
    for method_id in ROUTES:
        spec = specs[method_id]
        app.router.add_route(
            spec.http_method,
            "/" + spec.path,
            route_handler(API, VERSION, spec, getattr(emulator, ROUTES[method_id]), _error),
        )

    async def not_found(request: web.Request) -> web.Response:
        return _error(
            ApiError(404, f"The requested URL {request.path} was not found on this server.")
        )

    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
