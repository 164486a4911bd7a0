"""The Kubernetes REST API over aiohttp: discovery, CRUD, patch, watch,
subresources, Table printing, fault injection and the request log."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..scenario import FaultRule
from . import errors, subresources, tables, watch
from .defaults import apply_defaults, validate
from .exec import PodExec
from .faults import (
    EffectLog,
    FaultInjector,
    RequestLog,
    admin_routes,
    drop_connection,
    rollout_change,
    rollout_fields,
)
from .kubelet import Kubelet
from .patch import apply_patch
from .podnet import Resolver
from .resources import (
    BY_PATH,
    GROUPS,
    NAMESPACES,
    PODS,
    ResourceType,
    resource_list,
)
from .selectors import parse_field_selector, parse_label_selector
from .store import Store

log = logging.getLogger(__name__)

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass
class Target:
    resource: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


class KubeApi:
    def __init__(
        self,
        store: Store,
        kubelet: Kubelet,
        faults: FaultInjector,
        requests: RequestLog,
        hooks: Any = None,
        resolve_instance: Resolver | None = None,
        effects: EffectLog | None = None,
    ) -> None:
        self.store = store
        self.kubelet = kubelet
        self.faults = faults
        self.requests = requests
        self.hooks = hooks  # objects with before_create(resource, obj), e.g. the load balancer
        self.effects = effects or EffectLog()  # shared with the CD job's writes (sandbox/world.py)
        self.pod_exec = PodExec(store, kubelet, resolve_instance, faults, self.effects)

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.on_shutdown.append(self.pod_exec.shutdown)  # exec sessions outlive ordinary requests
        app.router.add_get("/version", self._version)
        for probe in ("/healthz", "/livez", "/readyz"):
            app.router.add_get(probe, self._ok)
        app.router.add_get("/api", self._core_versions)
        app.router.add_get("/apis", self._groups)
        app.router.add_get("/apis/{group}", self._group)
        app.router.add_get("/sandbox/requests", self._get_requests)
        app.router.add_get("/sandbox/faults", self._get_faults)
        app.router.add_put("/sandbox/faults", self._put_faults)
        admin_routes(app, self.faults, self.effects)
        app.router.add_route("*", "/api/{version}{tail:.*}", self._resource)
        app.router.add_route("*", "/apis/{group}/{version}{tail:.*}", self._resource)
        return app

    # -- discovery -----------------------------------------------------------------

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(SERVER_VERSION)

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _core_versions(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}
                ],
            }
        )

    @staticmethod
    def _group_entry(group: str) -> dict[str, Any]:
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in GROUPS[group]]
        return {"name": group, "versions": versions, "preferredVersion": versions[0]}

    async def _groups(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group_entry(g) for g in GROUPS],
            }
        )

    async def _group(self, request: web.Request) -> web.Response:
        group = request.match_info["group"]
        if group not in GROUPS:
            return _status_response(
                errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            )
        return web.json_response(
            {"kind": "APIGroup", "apiVersion": "v1", **self._group_entry(group)}
        )

    # -- admin endpoints for tests -------------------------------------------------

    async def _get_requests(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response(
            {"entries": self.requests.since(since), "last": self.requests.last_seq}
        )

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"rules": self.faults.rules()})

    async def _put_faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            rules = [FaultRule.model_validate(r) for r in body.get("rules", [])]
        except Exception as exc:  # pydantic or JSON errors: tell the test what was wrong
            return web.json_response({"error": str(exc)}, status=400)
        self.faults.replace(rules)
        return web.json_response({"rules": self.faults.rules()})

    # -- resources -----------------------------------------------------------------

    async def _resource(self, request: web.Request) -> web.StreamResponse:
        group = request.match_info.get("group", "")
        version = request.match_info["version"]
        tail = request.match_info["tail"]
        verb = "unknown"
        target = None
        status = 500
        applied = False
        try:
            if not tail.strip("/"):
                if (group or "") in GROUPS or (not group and version == "v1"):
                    status = 200
                    return web.json_response(resource_list(group, version))
                raise errors.ApiError(
                    404, "NotFound", "the server could not find the requested resource"
                )
            target = self._parse(group, version, tail)
            verb = _verb(request, target)
            decision = self.faults.decide(target.resource.plural, verb, name=target.name)
            if decision.latency_ms:
                await asyncio.sleep(decision.latency_ms / 1000)
            if decision.drop:
                status = 0
                drop_connection(request)
            if decision.status is not None:
                headers = (
                    {"Retry-After": str(decision.retry_after)} if decision.status == 429 else {}
                )
                reason = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}[
                    decision.status
                ]
                raise errors.ApiError(
                    decision.status,
                    reason,
                    f"injected fault for {verb} {target.resource.plural}",
                    headers=headers,
                    details={"retryAfterSeconds": decision.retry_after}
                    if decision.status == 429
                    else None,
                )
            writes = verb in WRITES and target.subresource != "exec"
            before = self._effect_view(target) if writes else None
            response = await self._dispatch(request, target, verb)
            status = response.status
            if writes and 200 <= status < 300:
                applied = True
                what = self._record_effect(target, verb, before, response)
                decision = await self.faults.after_write(target.resource.plural, verb, what)
                if decision.drop:
                    status = 0
                    drop_connection(request, after_write=True)
                if decision.status is not None:
                    reason = {500: "InternalError", 503: "ServiceUnavailable"}[decision.status]
                    raise errors.ApiError(
                        decision.status,
                        reason,
                        f"injected fault after {verb} {target.resource.plural} was applied",
                    )
            return response
        except errors.ApiError as exc:
            status = exc.code
            return _status_response(exc)
        finally:
            self.requests.record(
                method=request.method,
                verb=verb,
                path=request.path,
                query=request.query_string,
                resource=target.resource.plural if target else None,
                namespace=target.namespace if target else None,
                name=target.name if target else None,
                subresource=target.subresource if target else None,
                content_type=request.headers.get("Content-Type", ""),
                user_agent=request.headers.get("User-Agent", ""),
                status=status,
                applied=applied,
                **self.pod_exec.log_fields(request),
            )

    def _effect_view(self, t: Target) -> dict[str, Any] | None:
        """What an effect entry compares: the object's generation and images before a write."""
        if t.name is None:
            return None
        try:
            obj = self.store.get(t.resource, t.namespace or "", t.name)
        except errors.ApiError:
            return None
        return rollout_fields(obj)

    def _record_effect(
        self, t: Target, verb: str, before: dict[str, Any] | None, response: web.StreamResponse
    ) -> dict[str, Any]:
        body: Any = None
        if isinstance(response, web.Response) and response.body is not None:
            with contextlib.suppress(ValueError, TypeError):
                body = json.loads(response.body)
        meta = body.get("metadata") if isinstance(body, dict) else None
        name = t.name or (meta or {}).get("name")
        after = rollout_fields(body) if isinstance(body, dict) and "spec" in body else None
        entry: dict[str, Any] = {
            "resource": t.resource.plural,
            "verb": verb,
            "namespace": t.namespace,
            "name": name,
            "subresource": t.subresource,
        }
        if t.resource.plural == "deployments" and before is not None and after is not None:
            entry.update(rollout_change(before, after))
        self.effects.record(f"{t.resource.plural}.{verb}", **entry)
        return {k: entry[k] for k in ("namespace", "name")}

    def _parse(self, group: str, version: str, tail: str) -> Target:
        parts = [p for p in tail.split("/") if p]
        namespace = None
        if len(parts) >= 3 and parts[0] == "namespaces" and (group, version, parts[2]) in BY_PATH:
            namespace = parts[1]
            parts = parts[2:]
        resource = BY_PATH.get((group, version, parts[0]))
        if resource is None or len(parts) > 3:
            raise errors.ApiError(
                404, "NotFound", "the server could not find the requested resource"
            )
        name = parts[1] if len(parts) > 1 else None
        sub = parts[2] if len(parts) > 2 else None
        if sub is not None and sub not in resource.subresources:
            raise errors.ApiError(
                404, "NotFound", "the server could not find the requested resource"
            )
        if resource.namespaced and name is not None and namespace is None:
            raise errors.ApiError(
                404, "NotFound", "the server could not find the requested resource"
            )
        return Target(resource, namespace, name, sub)

    async def _dispatch(self, request: web.Request, t: Target, verb: str) -> web.StreamResponse:
        if t.subresource == "log":
            return subresources.pod_log(
                self.store, self.kubelet, request, t.namespace or "", t.name or ""
            )
        if t.subresource == "exec":
            return await self.pod_exec.handle(request, t.namespace or "", t.name or "")
        if t.subresource == "scale":
            return await subresources.scale(
                self.store, request, t.resource, t.namespace or "", t.name or "", verb
            )
        if verb == "list":
            return self._list(request, t)
        if verb == "watch":
            return await self._watch(request, t)
        if verb == "get":
            obj = self.store.get(t.resource, t.namespace or "", t.name or "")
            return self._object_response(request, t.resource, obj)
        if verb == "create":
            return await self._create(request, t)
        if verb == "update":
            return await self._update(request, t)
        if verb == "patch":
            return await self._patch(request, t)
        if verb == "delete":
            return await self._delete(request, t)
        if verb == "deletecollection":
            return await self._delete_collection(request, t)
        raise errors.method_not_allowed(f"{request.method} is not supported on this path")

    # -- reads ---------------------------------------------------------------------

    def _selected(self, request: web.Request, t: Target) -> list[dict[str, Any]]:
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"))
        return [
            obj for obj in self.store.iter(t.resource, t.namespace) if labels(obj) and fields(obj)
        ]

    def _list(self, request: web.Request, t: Target) -> web.Response:
        watch.ListOptions.from_query(request.query)
        items = self._selected(request, t)
        token = request.query.get("continue")
        if token:
            try:
                after = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
            except ValueError:
                raise errors.bad_request("invalid continue token") from None
            items = [
                o
                for o in items
                if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > after
            ]
        next_token = None
        limit = int(request.query.get("limit", "0") or 0)
        if limit and len(items) > limit:
            items = items[:limit]
            last = items[-1]["metadata"]
            next_token = base64.urlsafe_b64encode(
                json.dumps([last.get("namespace", ""), last["name"]]).encode()
            ).decode()
        rv = str(self.store.resource_version)
        if tables.wants_table(request.headers.get("Accept", "")):
            return web.json_response(
                tables.to_table(
                    t.resource,
                    items,
                    rv,
                    request.query.get("includeObject", "Metadata"),
                    next_token,
                )
            )
        metadata: dict[str, Any] = {"resourceVersion": rv}
        if next_token:
            metadata["continue"] = next_token
        return web.json_response(
            {
                "kind": t.resource.list_kind,
                "apiVersion": t.resource.api_version,
                "metadata": metadata,
                "items": items,
            },
            dumps=_dumps,
        )

    def _object_response(
        self, request: web.Request, resource: ResourceType, obj: dict[str, Any], status: int = 200
    ) -> web.Response:
        if request.method == "GET" and tables.wants_table(request.headers.get("Accept", "")):
            body = tables.to_table(
                resource,
                [obj],
                obj["metadata"].get("resourceVersion", ""),
                request.query.get("includeObject", "Metadata"),
            )
            return web.json_response(body, status=status)
        return web.json_response(obj, status=status, dumps=_dumps)

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        options = watch.ListOptions.from_query(request.query)
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"))
        if t.name:
            by_name = parse_field_selector(f"metadata.name={t.name}")
            fields_and_name = lambda o: fields(o) and by_name(o)  # noqa: E731
        else:
            fields_and_name = fields
        return await watch.serve(
            self.store,
            request,
            t.resource,
            t.namespace,
            lambda o: labels(o) and fields_and_name(o),
            options,
        )

    # -- writes --------------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise errors.bad_request(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        return body

    def _check_namespace(self, t: Target) -> None:
        if t.resource.namespaced and self.store.peek(NAMESPACES, "", t.namespace or "") is None:
            raise errors.not_found("", "namespaces", t.namespace or "")

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        return "All" in request.query.getall("dryRun", [])

    async def _create(self, request: web.Request, t: Target) -> web.Response:
        body = await self._read_body(request)
        self._check_namespace(t)
        meta = body.setdefault("metadata", {})
        if t.resource.namespaced:
            if meta.get("namespace") and meta["namespace"] != t.namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = t.namespace
        apply_defaults(t.resource, body)
        validate(t.resource, body)
        if self._dry_run(request):
            return web.json_response(body, status=201)
        if self.hooks is not None:
            self.hooks.before_create(t.resource, body)
        created = self.store.create(t.resource, body, t.namespace or "")
        return self._object_response(request, t.resource, created, status=201)

    async def _update(self, request: web.Request, t: Target) -> web.Response:
        body = await self._read_body(request)
        meta = body.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != t.name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({t.name})"
            )
        meta["name"] = t.name
        if t.resource.namespaced:
            meta["namespace"] = t.namespace
        current = self.store.get(t.resource, t.namespace or "", t.name or "")
        return self._store_update(request, t, body, current)

    async def _patch(self, request: web.Request, t: Target) -> web.Response:
        current = self.store.get(t.resource, t.namespace or "", t.name or "")
        patched = apply_patch(
            request.headers.get("Content-Type", ""), current, await request.read()
        )
        if not isinstance(patched, dict):
            raise errors.bad_request("the patch did not produce an object")
        meta = patched.setdefault("metadata", {})
        meta["name"] = t.name
        if t.resource.namespaced:
            meta["namespace"] = t.namespace
        return self._store_update(request, t, patched, current)

    def _store_update(
        self, request: web.Request, t: Target, new: dict[str, Any], current: dict[str, Any]
    ) -> web.Response:
        if t.subresource != "status":
            apply_defaults(t.resource, new)
            validate(t.resource, new, current)
        if self._dry_run(request):
            return web.json_response(new)
        updated = self.store.update(t.resource, new, subresource=t.subresource)
        return self._object_response(request, t.resource, updated)

    async def _delete(self, request: web.Request, t: Target) -> web.Response:
        propagation = request.query.get("propagationPolicy")
        if request.can_read_body:
            with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
                options = await request.json()
                if isinstance(options, dict):
                    propagation = options.get("propagationPolicy") or propagation
                    if "All" in (options.get("dryRun") or []):
                        return web.json_response(
                            self.store.get(t.resource, t.namespace or "", t.name or "")
                        )
        if self._dry_run(request):
            return web.json_response(self.store.get(t.resource, t.namespace or "", t.name or ""))
        gone = self.store.delete(
            t.resource, t.namespace or "", t.name or "", propagation=propagation or "Background"
        )
        if t.resource is PODS:
            return web.json_response(gone)
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": t.name,
                    "group": t.resource.group,
                    "kind": t.resource.plural,
                    "uid": gone["metadata"]["uid"],
                },
            }
        )

    async def _delete_collection(self, request: web.Request, t: Target) -> web.Response:
        items = self._selected(request, t)
        for obj in items:
            if (
                self.store.peek(
                    t.resource, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
                )
                is not None
            ):
                self.store.delete(
                    t.resource, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
                )
        return web.json_response(
            {
                "kind": t.resource.list_kind,
                "apiVersion": t.resource.api_version,
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": items,
            }
        )


def _verb(request: web.Request, t: Target) -> str:
    method = request.method
    if method == "GET":
        if watch.query_bool(request.query.get("watch")):
            return "watch"
        return "get" if t.name else "list"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if t.name else "deletecollection"
    raise errors.method_not_allowed(f"{method} is not supported")


WRITES = ("create", "update", "patch", "delete", "deletecollection")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _status_response(exc: errors.ApiError) -> web.Response:
    return web.json_response(exc.status(), status=exc.code, headers=exc.headers)
