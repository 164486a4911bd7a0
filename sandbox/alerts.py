"""Cloud Monitoring's alerts, as the REST paths `GET /v3/projects/{project}/alerts`
and `GET /v3/projects/{project}/alertPolicies` serve them (the gRPC client has
no alerts service).

One alerting policy per load-balanced service, labelled with its namespace and
service (`userLabels`), on the load balancer's request count over 60-s
periods. It is evaluated every second on the traffic the front end really
served, in metric time (`Clock.metric_time`): the alert opens when the error
ratio over the last window exceeds the threshold and closes once it is back
under it. Closed alerts stay listed, as they do in Cloud Monitoring."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import gke_names
from .kube.loadbalancer import ServedRequest
from .monitoring_rules import LB_COUNT

_TERM = re.compile(r'^\s*([\w.]+)\s*=\s*"?([^"]*?)"?\s*$')
FILTER_FIELDS = ("state", "policy.display_name", "resource.type", "metric.type")
POLICY_FIELDS = ("display_name", "enabled")


@dataclass
class AlertPolicy:
    error_ratio: float = 0.05
    window_seconds: float = 60.0  # metric seconds; alerting policies align over 60 s at least
    min_requests: int = 5


def policy_json(project: str, service: str, policy: AlertPolicy) -> dict:
    namespace, name = service.split("/", 1)
    return {
        "name": f"projects/{project}/alertPolicies/{namespace}-{name}-errors",
        "displayName": f"{name} error ratio above {policy.error_ratio:.0%}",
        "userLabels": {"service": name, "namespace": namespace},
        "severity": "ERROR",
        "enabled": True,
        "combiner": "OR",
        "conditions": [
            {
                "displayName": "5xx share of requests",
                "conditionThreshold": {
                    "filter": f'metric.type = "{LB_COUNT}" AND resource.type = "https_lb_rule" '
                    "AND metric.labels.response_code_class = 500",
                    "denominatorFilter": f'metric.type = "{LB_COUNT}" AND resource.type = '
                    '"https_lb_rule"',
                    "aggregations": [
                        {
                            "alignmentPeriod": f"{int(policy.window_seconds)}s",
                            "perSeriesAligner": "ALIGN_RATE",
                        }
                    ],
                    "comparison": "COMPARISON_GT",
                    "thresholdValue": policy.error_ratio,
                    "duration": "0s",
                },
            }
        ],
    }


@dataclass
class Alert:
    id: str
    service: str  # namespace/name
    opened: float
    ratio: float
    closed: float | None = None
    port: int = 0

    def resource(self, project: str) -> dict[str, str]:
        namespace, name = self.service.split("/", 1)
        return gke_names.https_lb_rule(project, namespace, name, self.port)

    def as_json(self, project: str, policy: AlertPolicy) -> dict:
        full = policy_json(project, self.service, policy)
        body = {
            "name": f"projects/{project}/alerts/{self.id}",
            "state": "OPEN" if self.closed is None else "CLOSED",
            "openTime": _rfc3339(self.opened),
            "policy": {k: full[k] for k in ("name", "displayName", "userLabels", "severity")},
            "resource": {"type": "https_lb_rule", "labels": self.resource(project)},
            "metric": {"type": LB_COUNT, "labels": {"response_code_class": "500"}},
            "log": {},
        }
        if self.closed is not None:
            body["closeTime"] = _rfc3339(self.closed)
        return body


def _rfc3339(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


class BadFilter(ValueError):
    pass


def _terms(text: str) -> list[tuple[str, str]]:
    """`field = "value"` terms joined by AND, as (field, value)."""
    found = []
    for part in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        match = _TERM.match(part)
        if not match:
            raise BadFilter(f'cannot parse filter term {part!r}: use field = "value" joined by AND')
        found.append((match.group(1), match.group(2)))
    return found


def parse_alert_filter(text: str) -> dict[str, str]:
    terms: dict[str, str] = {}
    for key, value in _terms(text):
        if key not in FILTER_FIELDS and not key.startswith(
            ("resource.labels.", "policy.user_labels.", "metric.labels.")
        ):
            raise BadFilter(
                f"unknown filter field {key!r} (known: {', '.join(FILTER_FIELDS)}, "
                "resource.labels.*, policy.user_labels.*, metric.labels.*)"
            )
        if key == "state" and value not in ("OPEN", "CLOSED"):
            raise BadFilter(f'state must be "OPEN" or "CLOSED", got {value!r}')
        terms[key] = value
    return terms


def parse_policy_filter(text: str) -> dict[str, str]:
    """alertPolicies.list filters as the sorting-and-filtering reference writes
    them: `user_label.KEY = "value"` and `display_name = "..."`, joined by AND."""
    terms: dict[str, str] = {}
    for key, value in _terms(text):
        if key not in POLICY_FIELDS and not key.startswith("user_label."):
            raise BadFilter(
                f"unknown alert policy field {key!r} (known: {', '.join(POLICY_FIELDS)}, "
                "user_label.KEY)"
            )
        terms[key] = value
    return terms


def _policy_field(policy: dict, key: str) -> str:
    if key.startswith("user_label."):
        return policy.get("userLabels", {}).get(key.removeprefix("user_label."), "")
    if key == "enabled":
        return "true" if policy.get("enabled") else "false"
    return policy.get("displayName", "")


def _field(alert: dict, key: str) -> str:
    path = (
        key.replace("policy.display_name", "policy.displayName")
        .replace("policy.user_labels", "policy.userLabels")
        .split(".")
    )
    node: object = alert
    for part in path:
        node = node.get(part, "") if isinstance(node, dict) else ""
    return node if isinstance(node, str) else ""


class AlertsEmulator:
    def __init__(
        self,
        traffic: Callable[[], Iterable[ServedRequest]],
        services: Callable[[], Iterable[str]],
        project: str,
        policy: AlertPolicy | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.traffic = traffic
        self.now = now  # metric time
        self.services = services
        self.project = project
        self.policy = policy or AlertPolicy()
        self.alerts: list[Alert] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task | None = None
        self.port = 0
        self.faults: Any = None
        # Other Cloud Monitoring REST paths served on the same host (the PromQL API).
        self.more_routes: list[Callable[[web.Application], None]] = []

    def evaluate(self, now: float | None = None) -> None:
        now = self.now() if now is None else now
        since = now - self.policy.window_seconds
        totals: dict[str, list[int]] = {}
        ports: dict[str, int] = {}
        for served in self.traffic():
            if since < served.time <= now:
                counts = totals.setdefault(served.service, [0, 0])
                counts[0] += 1
                counts[1] += served.status >= 500
                ports[served.service] = served.port
        for service in self.services():
            total, errors = totals.get(service, [0, 0])
            ratio = errors / total if total else 0.0
            firing = total >= self.policy.min_requests and ratio > self.policy.error_ratio
            open_alert = next(
                (a for a in self.alerts if a.service == service and a.closed is None), None
            )
            if firing and open_alert is None:
                self.alerts.append(
                    Alert(
                        id=f"{int(now)}-{next(self._ids)}",
                        service=service,
                        opened=now,
                        ratio=ratio,
                        port=ports.get(service, 0),
                    )
                )
            elif open_alert is not None and not firing and total >= self.policy.min_requests:
                open_alert.closed = now  # no traffic is no evidence of recovery: keep it open

    def list_alerts(self, project: str, filter_text: str, page_size: int, page_token: str) -> dict:
        terms = parse_alert_filter(filter_text)
        rendered = [a.as_json(project, self.policy) for a in reversed(self.alerts)]
        matching = [a for a in rendered if all(_field(a, k) == v for k, v in terms.items())]
        start = int(page_token) if page_token else 0
        page = matching[start : start + page_size]
        body: dict = {"alerts": page, "totalSize": len(matching)}
        if start + page_size < len(matching):
            body["nextPageToken"] = str(start + page_size)
        return body

    def list_policies(
        self, project: str, filter_text: str, page_size: int, page_token: str
    ) -> dict:
        terms = parse_policy_filter(filter_text)
        rendered = [
            policy_json(project, service, self.policy) for service in sorted(self.services())
        ]
        matching = [p for p in rendered if all(_policy_field(p, k) == v for k, v in terms.items())]
        start = int(page_token) if page_token else 0
        body: dict = {
            "alertPolicies": matching[start : start + page_size],
            "totalSize": len(matching),
        }
        if start + page_size < len(matching):
            body["nextPageToken"] = str(start + page_size)
        return body

    async def _handle_policies(self, request: web.Request) -> web.Response:
        return await self._handle(request, self.list_policies)

    async def _handle_list(self, request: web.Request) -> web.Response:
        return await self._handle(request, self.list_alerts)

    async def _handle(self, request: web.Request, lister) -> web.Response:
        if (
            self.faults is not None
        ):  # the sandbox's FaultInjector: resources "alerts" and "alertPolicies", verb "list"
            decision = self.faults.decide(request.path.rsplit("/", 1)[-1], "list")
            if decision.latency_ms:
                await asyncio.sleep(decision.latency_ms / 1000)
            if decision.status is not None:
                status = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}.get(
                    decision.status, "UNAVAILABLE"
                )
                response = _error(
                    decision.status,
                    status,
                    f"injected fault: the service answered {decision.status}",
                )
                if decision.status == 429:
                    response.headers["Retry-After"] = str(decision.retry_after)
                return response
        project = request.match_info["project"]
        if project != self.project:
            return _error(
                404,
                "NOT_FOUND",
                f"project {project!r} not found (this emulator serves {self.project!r})",
            )
        try:
            page_size = int(request.query.get("pageSize", "100"))
            page_token = request.query.get("pageToken", "")
            if page_size <= 0 or (page_token and not page_token.isdigit()):
                raise ValueError
        except ValueError:
            return _error(
                400,
                "INVALID_ARGUMENT",
                "pageSize must be a positive integer and pageToken one returned by a previous call",
            )
        try:
            return web.json_response(
                lister(project, request.query.get("filter", ""), page_size, page_token)
            )
        except BadFilter as exc:
            return _error(400, "INVALID_ARGUMENT", f"invalid filter: {exc}")

    async def _loop(self) -> None:
        while True:
            self.evaluate()
            await asyncio.sleep(1.0)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v3/projects/{project}/alerts", self._handle_list)
        app.router.add_get("/v3/projects/{project}/alertPolicies", self._handle_policies)
        for add_routes in self.more_routes:
            add_routes(app)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._task = asyncio.create_task(self._loop(), name="alert-evaluation")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._runner is not None:
            await self._runner.cleanup()


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": status, "message": message, "status": code}}, status=status
    )
