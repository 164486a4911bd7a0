"""Managed Service for Prometheus's query API, as Cloud Monitoring serves it:
`/v1/projects/{project}/location/global/prometheus/api/v1/query_range` and
`/query` (monitoring.v1.json: `projects.location.prometheus.api.v1.query_range`
and `.query`, a JSON body of QueryRangeRequest / QueryInstantRequest), which
also answer the Prometheus HTTP API's own forms: GET with URL parameters and
POST with a form body.

Answers are the Prometheus API's JSON: `{"status": "success", "data":
{"resultType": "matrix", "result": [...]}}`, and `{"status": "error",
"errorType": "bad_data", "error": "..."}` with 400 for a bad parameter or a
query. A query outside the evaluator's part of PromQL (`sandbox.promql`) is
refused the same way, naming the part."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from typing import Any

from aiohttp import web

from .prometheus_scrapes import PrometheusScrapes
from .promql import BadQuery, Unsupported, evaluate, format_value, parse, parse_duration

PREFIX = "/v1/projects/{project}/location/{location}/prometheus/api/v1"
RANGE_FIELDS = ("query", "start", "end", "step", "timeout")  # QueryRangeRequest
INSTANT_FIELDS = ("query", "time", "timeout")  # QueryInstantRequest
MAX_POINTS = 11_000  # Prometheus: "exceeded maximum resolution of 11,000 points"


class BadData(ValueError):
    pass


def parse_time(name: str, text: str) -> float:
    """Float UNIX seconds or an RFC 3339 timestamp."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if stamp.tzinfo is not None:
            return stamp.timestamp()
    except ValueError:
        pass
    raise BadData(f'invalid parameter "{name}": cannot parse "{text}" to a valid timestamp')


def parse_step(name: str, text: str) -> float:
    """A Prometheus duration or float seconds."""
    try:
        seconds = float(text)
        if math.isfinite(seconds):
            return seconds
    except ValueError:
        pass
    try:
        return parse_duration(text)
    except BadQuery:
        raise BadData(
            f'invalid parameter "{name}": cannot parse "{text}" to a valid duration'
        ) from None


def _bad(message: str) -> web.Response:
    return web.json_response(
        {"status": "error", "errorType": "bad_data", "error": message}, status=400
    )


def _google_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": status, "message": message, "status": code}}, status=status
    )


class PrometheusApi:
    def __init__(self, scrapes: PrometheusScrapes, project: str, faults: Any = None) -> None:
        self.scrapes = scrapes
        self.project = project
        self.faults = faults  # the sandbox's FaultInjector: resource "prometheus", verb "query"

    def add_routes(self, app: web.Application) -> None:
        for verb in ("query_range", "query"):
            app.router.add_route("GET", f"{PREFIX}/{verb}", self._handle)
            app.router.add_route("POST", f"{PREFIX}/{verb}", self._handle)

    async def _params(self, request: web.Request, fields: tuple[str, ...]) -> dict[str, str]:
        params = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = json.loads(await request.text() or "{}")
                except ValueError as exc:
                    message = f"Invalid JSON payload received. {exc}"
                    raise _Refused(400, "INVALID_ARGUMENT", message) from None
                if not isinstance(body, dict):
                    raise _Refused(
                        400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object"
                    )
                for key, value in body.items():
                    if key not in fields:
                        raise _Refused(
                            400,
                            "INVALID_ARGUMENT",
                            f'Invalid JSON payload received. Unknown name "{key}": Cannot find '
                            "field.",
                        )
                    if not isinstance(value, str):
                        raise _Refused(
                            400,
                            "INVALID_ARGUMENT",
                            f"Invalid value at '{key}' (TYPE_STRING), {json.dumps(value)}",
                        )
                    params[key] = value
            else:
                params.update(
                    {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
                )
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        ranged = request.path.endswith("/query_range")
        if self.faults is not None:
            decision = self.faults.decide("prometheus", "query")
            if decision.latency_ms:
                await asyncio.sleep(decision.latency_ms / 1000)
            if decision.status is not None:
                status = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}.get(
                    decision.status, "UNAVAILABLE"
                )
                return _google_error(
                    decision.status,
                    status,
                    f"injected fault: the service answered {decision.status}",
                )
        project = request.match_info["project"]
        if project != self.project:
            return _google_error(
                404,
                "NOT_FOUND",
                f"project {project!r} not found (this emulator serves {self.project!r})",
            )
        if request.match_info["location"] != "global":
            return _bad(f'location must be "global", got {request.match_info["location"]!r}')
        try:
            params = await self._params(request, RANGE_FIELDS if ranged else INSTANT_FIELDS)
        except _Refused as refused:
            return _google_error(refused.status, refused.code, refused.message)
        try:
            return web.json_response(
                {
                    "status": "success",
                    "data": self.range(params) if ranged else self.instant(params),
                }
            )
        except BadData as exc:
            return _bad(str(exc))
        except BadQuery as exc:
            return _bad(f'invalid parameter "query": {exc}')
        except Unsupported as exc:
            return _bad(f'invalid parameter "query": unsupported in the sandbox: {exc}')

    def _timeout(self, params: dict[str, str]) -> None:
        if params.get("timeout") and parse_step("timeout", params["timeout"]) <= 0:
            raise BadData('invalid parameter "timeout": must be positive')

    def range(self, params: dict[str, str]) -> dict:
        start = parse_time("start", params.get("start", ""))
        end = parse_time("end", params.get("end", ""))
        if end < start:
            raise BadData('invalid parameter "end": end timestamp must not be before start time')
        step = parse_step("step", params.get("step", ""))
        if step <= 0:
            raise BadData(
                'invalid parameter "step": zero or negative query resolution step widths are not '
                "accepted. Try a positive integer"
            )
        if (end - start) / step > MAX_POINTS:
            raise BadData(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the "
                "query resolution (?step=XX)"
            )
        self._timeout(params)
        node = parse(params.get("query", ""))
        series: dict[tuple, list[list]] = {}
        t, i = start, 0
        while t <= end:
            value = evaluate(node, t, self.scrapes.samples)
            found = value.items() if isinstance(value, dict) else [((), value)]
            for labels, v in found:
                series.setdefault(labels, []).append([_stamp(t), format_value(v)])
            i += 1
            t = start + i * step
        return {
            "resultType": "matrix",
            "result": [
                {"metric": dict(labels), "values": values}
                for labels, values in sorted(series.items())
            ],
        }

    def instant(self, params: dict[str, str]) -> dict:
        at = parse_time("time", params["time"]) if params.get("time") else self.scrapes.now()
        self._timeout(params)
        value = evaluate(parse(params.get("query", "")), at, self.scrapes.samples)
        if not isinstance(value, dict):
            return {"resultType": "scalar", "result": [_stamp(at), format_value(value)]}
        return {
            "resultType": "vector",
            "result": [
                {"metric": dict(labels), "value": [_stamp(at), format_value(v)]}
                for labels, v in sorted(value.items())
            ],
        }


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _stamp(t: float) -> float | int:
    """A sample time as Prometheus writes it: seconds, to the millisecond."""
    rounded = round(t, 3)
    return int(rounded) if rounded == int(rounded) else rounded
