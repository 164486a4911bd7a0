"""A Cloud Logging emulator: `entries.list` (POST /v2/entries:list) of the
`logging v2` discovery document, serving the pods' own log lines as GKE ships
them: `k8s_container` entries (project_id, location, cluster_name,
namespace_name, pod_name, container_name), pod labels as `labels."k8s-pod/KEY"`,
stdout lines at INFO and the app's `level=error` lines at ERROR (stderr).
Deleted pods' lines stay readable, as in Cloud Logging.

The front end's checks come from the document (sandbox/google_rest.py: unknown
fields and wrong types are 400). Then what the document says the method
refuses: resourceNames missing, an orderBy other than "timestamp asc" or
"timestamp desc", a negative pageSize, a filter over 20,000 characters, a
pageToken it never issued. The filter is the Logging query language's
comparisons joined by AND (`=`, `!=`, `>=`, `>`, `<=`, `<`, `:` on
resource.type, resource.labels.*, labels.*, severity, timestamp, logName,
textPayload, insertId); OR, NOT and regular expressions are valid queries the
sandbox does not evaluate, so they answer 501 rather than a wrong result.

A slow search, as the document describes it: "If a value for next_page_token
appears and the entries field is empty, it means that the search found no log
entries so far but it did not have time to search all the possible log
entries." `empty_pages` (set it with POST /sandbox/logging/slow-search
{"empty_pages": N}, outside the API's paths) makes the first N pages of every
listing come back with no entries and a nextPageToken; following the token
then reaches the entries as usual. 0 (the default) answers at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from . import discovery, gke_names
from .cloudsql_resources import ApiError
from .google_rest import route_handler

API, VERSION = "logging", "v2"
MAX_FILTER = 20_000  # "The maximum length of a filter is 20,000 characters."
DEFAULT_PAGE = 50  # "Default is 50."
NODE = "gke-tekutoko-prod-default-pool-node-1"
MAX_PAGE = (
    1000  # the emulator's largest page; fewer than pageSize is allowed, nextPageToken says more
)
SEVERITIES = {
    "DEFAULT": 0,
    "DEBUG": 100,
    "INFO": 200,
    "NOTICE": 300,
    "WARNING": 400,
    "ERROR": 500,
    "CRITICAL": 600,
    "ALERT": 700,
    "EMERGENCY": 800,
}
LEVELS = {
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "warning": "WARNING",
    "error": "ERROR",
    "fatal": "CRITICAL",
    "panic": "ALERT",
}
_LEVEL = re.compile(r"\blevel=(\w+)")
_TERM = re.compile(
    r'^(?P<field>[A-Za-z_][\w.]*(?:\."[^"]*")?(?:\.[\w]+)*)\s*(?P<op>>=|<=|!=|=|>|<|:)\s*(?P<value>"(?:[^"\\]|\\.)*"|[^\s()"]+)$'
)
_SPLIT = re.compile(r"\s+AND\s+")


class Unsupported(Exception):
    """A valid query the sandbox does not evaluate."""


@dataclass(frozen=True)
class Term:
    field: str
    op: str
    value: str


def _unquote(value: str) -> str:
    return value[1:-1].replace('\\"', '"').replace("\\\\", "\\") if value.startswith('"') else value


def parse_filter(text: str) -> list[Term]:
    if len(text) > MAX_FILTER:
        raise ApiError(
            400,
            f"filter is {len(text)} characters long; the maximum length of a filter is "
            f"{MAX_FILTER} characters",
        )
    if text.count('"') - text.count('\\"') * 1 < 0 or (text.count('"') - text.count('\\"')) % 2:
        raise ApiError(400, f"Unparseable filter: unterminated string in {text[:100]!r}")
    if re.search(r"(^|\s)(OR|NOT)\s|(^|[\s(])-[A-Za-z]|=~|!~|\bSEARCH\(", text):
        raise Unsupported(
            "the sandbox evaluates comparisons joined by AND only (no OR, NOT, - or regular "
            "expressions)"
        )
    terms = []
    for part in _SPLIT.split(text.strip()) if text.strip() else []:
        part = part.strip()
        while part.startswith("(") and part.endswith(")"):
            part = part[1:-1].strip()
        if " " in part and not _TERM.match(part):
            pieces = [p for p in re.split(r"\s+(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", part) if p]
            if all(_TERM.match(p) for p in pieces):  # juxtaposed comparisons are ANDed
                terms += [_term(p) for p in pieces]
                continue
        terms.append(_term(part))
    return terms


def _term(part: str) -> Term:
    match = _TERM.match(part)
    if not match:
        raise ApiError(
            400,
            f"Unparseable filter: cannot parse {part!r}; use FIELD OPERATOR VALUE comparisons "
            "joined by AND",
        )
    field, op, value = match["field"], match["op"], _unquote(match["value"])
    field = re.sub(r'\."([^"]*)"', r".\1", field)
    if field == "severity":
        if value.upper() not in SEVERITIES and not value.isdigit():
            raise ApiError(
                400,
                f"Unparseable filter: invalid severity {value!r} (one of {', '.join(SEVERITIES)} "
                "or a number)",
            )
    elif field in ("timestamp", "receiveTimestamp"):
        try:
            _time(value)
        except ValueError:
            raise ApiError(
                400,
                f"Unparseable filter: invalid timestamp {value!r} (RFC 3339, e.g. "
                "2026-01-16T12:00:00Z)",
            ) from None
    return Term(field, op, value)


def _time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(value)
    return moment


def _compare(op: str, left: Any, right: Any) -> bool:
    return {
        "=": left == right,
        "!=": left != right,
        ">=": left >= right,
        ">": left > right,
        "<=": left <= right,
        "<": left < right,
    }[op]


def _field(entry: dict[str, Any], path: str) -> Any:
    if path.startswith("labels."):
        return (entry.get("labels") or {}).get(path.removeprefix("labels."))
    if path.startswith("resource.labels."):
        return entry["resource"]["labels"].get(path.removeprefix("resource.labels."))
    if path == "resource.type":
        return entry["resource"]["type"]
    return entry.get(path)


def matches(entry: dict[str, Any], term: Term) -> bool:
    if term.field == "severity":
        want = SEVERITIES.get(term.value.upper(), int(term.value) if term.value.isdigit() else 0)
        return _compare("=" if term.op == ":" else term.op, SEVERITIES[entry["severity"]], want)
    if term.field in ("timestamp", "receiveTimestamp"):
        return _compare(
            "=" if term.op == ":" else term.op, _time(entry[term.field]), _time(term.value)
        )
    value = _field(entry, term.field)
    if value is None:
        return term.op == "!="  # a field an entry does not have matches nothing but inequality
    if term.op == ":":
        return term.value.lower() in str(value).lower()
    return _compare(term.op, str(value), term.value)


class CloudLoggingEmulator:
    def __init__(
        self, pods: Callable[[], Iterable[tuple[Any, dict[str, str]]]], project: str
    ) -> None:
        """`pods`: (PodRuntime, pod labels) of live and deleted pods, oldest first."""
        self.pods = pods
        self.project = project
        self.faults: Any = None  # the sandbox's FaultInjector: resource "entries", verb "list"
        self.empty_pages = 0  # pages of each listing answered empty with a nextPageToken
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def entries(self, terms: list[Term] | None = None) -> list[dict[str, Any]]:
        """The entries of every container's stream, oldest first. Terms on the
        resource and the pod's labels are judged once a stream, so a query about
        one service does not turn every other pod's lines into entries."""
        per_stream = [t for t in terms or [] if t.field.startswith(("resource.", "labels."))]
        found = []
        for runtime, labels in self.pods():
            streams = [(runtime.container, list(runtime.logs))] + [
                (name, list(lines)) for name, lines in runtime.init_logs.items()
            ]
            entry_labels = {f"k8s-pod/{k}": v for k, v in labels.items()} | {
                "compute.googleapis.com/resource_name": NODE
            }
            for container, lines in streams:
                resource = {
                    "type": "k8s_container",
                    "labels": gke_names.k8s_container(
                        self.project, runtime.namespace, runtime.name, container
                    ),
                }
                if not all(
                    matches({"resource": resource, "labels": entry_labels}, t) for t in per_stream
                ):
                    continue
                for index, line in enumerate(lines):
                    found.append(
                        self._entry(runtime, container, index, line, resource, entry_labels)
                    )
        found.sort(key=lambda e: (e["timestamp"], e["insertId"]))
        return found

    def _entry(
        self,
        runtime: Any,
        container: str,
        index: int,
        line: str,
        resource: dict,
        labels: dict[str, str],
    ) -> dict[str, Any]:
        stamp, _, text = line.partition(" ")
        severity = "INFO"
        payload: dict[str, Any] = {"textPayload": text}
        if text.startswith("{"):
            try:
                body = json.loads(text)
                severity = str(body.get("severity", "INFO")).upper()
                payload = {
                    "jsonPayload": {
                        k: v for k, v in body.items() if k not in ("severity", "timestamp")
                    }
                }
            except ValueError:
                pass
        elif (level := _LEVEL.search(text)) is not None:
            severity = LEVELS.get(level.group(1).lower(), "INFO")
        severity = severity if severity in SEVERITIES else "DEFAULT"
        stream = "stderr" if SEVERITIES[severity] >= SEVERITIES["ERROR"] else "stdout"
        return {
            "insertId": hashlib.sha256(
                f"{runtime.namespace}/{runtime.name}/{container}/{index}/{stamp}".encode()
            ).hexdigest()[:16],
            "logName": f"projects/{self.project}/logs/{stream}",
            "resource": resource,
            "labels": dict(labels),
            "timestamp": stamp,
            "receiveTimestamp": stamp,
            "severity": severity,
            **payload,
        }

    def list_entries(self, body: dict[str, Any]) -> dict[str, Any]:
        names = list(body.get("resourceNames") or []) + [
            f"projects/{p}" for p in body.get("projectIds") or []
        ]
        if not names:
            raise ApiError(
                400, "resourceNames is required: name at least one parent, e.g. projects/PROJECT_ID"
            )
        for name in names:
            if not re.fullmatch(
                r"(projects|organizations|folders|billingAccounts)/[^/]+(/locations/[^/]+/buckets/[^/]+/views/[^/]+)?",
                name,
            ):
                raise ApiError(400, f"Invalid resource name {name!r} in resourceNames")
            if name.split("/")[:2] != ["projects", self.project]:
                raise ApiError(
                    403,
                    f"The caller does not have permission to read logs of {name} (this emulator "
                    f"serves projects/{self.project})",
                )
        order = body.get("orderBy", "") or "timestamp asc"
        if order.strip().lower() not in ("timestamp asc", "timestamp desc"):
            raise ApiError(
                400,
                f'orderBy {order!r} is not supported: the only permitted values are "timestamp '
                'asc" and "timestamp desc"',
            )
        size = int(body.get("pageSize", 0) or 0)
        if size < 0:
            raise ApiError(400, f"pageSize must not be negative, got {size}")
        size = min(size or DEFAULT_PAGE, MAX_PAGE)
        token = body.get("pageToken", "")
        issued = re.fullmatch(r"(?:w(?P<wait>[0-9]+))?o(?P<start>[0-9]+)", token)
        if token and not issued:
            raise ApiError(
                400,
                "page_token is invalid: pass the nextPageToken of a previous call with the same "
                "parameters",
            )
        terms = parse_filter(body.get("filter", ""))
        # a new listing starts with the search unfinished for `empty_pages` pages
        waiting = int(issued["wait"] or 0) if issued else self.empty_pages
        start = int(issued["start"]) if issued else 0
        if waiting > 0:
            # "the search found no log entries so far but it did not have time to search all
            # the possible log entries": no entries, a token to continue with
            return {"nextPageToken": f"w{waiting - 1}o{start}" if waiting > 1 else f"o{start}"}
        found = [e for e in self.entries(terms) if all(matches(e, t) for t in terms)]
        if order.strip().lower() == "timestamp desc":
            found.reverse()
        answer: dict[str, Any] = {"entries": found[start : start + size]}
        if start + size < len(found):
            answer["nextPageToken"] = f"o{start + size}"
        return answer

    async def _faulted(self) -> web.Response | None:
        if self.faults is None:
            return None
        decision = self.faults.decide("entries", "list")
        if decision.latency_ms:
            await asyncio.sleep(decision.latency_ms / 1000)
        if decision.status is None:
            return None
        status = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}.get(decision.status, "UNAVAILABLE")
        response = _error(
            ApiError(
                decision.status,
                f"injected fault: the service answered {decision.status}",
                status=status,
            )
        )
        if decision.status == 429:
            response.headers["Retry-After"] = str(decision.retry_after)
        return response

    def build_app(self) -> web.Application:
        app = web.Application()
        spec = discovery.methods(API, VERSION)["logging.entries.list"]

        def serve(body: dict[str, Any]) -> dict[str, Any]:
            return self.list_entries(body)

        inner = route_handler(API, VERSION, spec, serve, _error)

        async def handle(request: web.Request) -> web.Response:
            faulted = await self._faulted()
            if faulted is not None:
                return faulted
            try:
                return await inner(request)
            except Unsupported as exc:
                return _error(
                    ApiError(501, f"not implemented in the sandbox: {exc}", status="UNIMPLEMENTED")
                )

        app.router.add_route(spec.http_method, "/" + spec.path, handle)

        async def slow_search(request: web.Request) -> web.Response:
            """The sandbox's knob (not a Cloud Logging API): how many pages of each listing
            come back empty with a nextPageToken before the entries."""
            try:
                body = await request.json()
            except ValueError:
                body = None
            pages = body.get("empty_pages") if isinstance(body, dict) else None
            if not isinstance(pages, int) or isinstance(pages, bool) or pages < 0:
                return web.json_response(
                    {"error": "give empty_pages: a whole number, 0 or more"}, status=400
                )
            self.empty_pages = pages
            return web.json_response({"empty_pages": pages})

        app.router.add_post("/sandbox/logging/slow-search", slow_search)

        async def not_found(request: web.Request) -> web.Response:
            return _error(
                ApiError(404, f"The requested URL {request.path} was not found on this server.")
            )

        app.router.add_route("*", "/{tail:.*}", not_found)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _error(exc: ApiError) -> web.Response:
    return web.json_response(
        {"error": {"code": exc.http_status, "message": exc.message, "status": exc.status}},
        status=exc.http_status,
    )


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
