"""Recording what a discovery-built client sends and receives, and holding each
exchange to the discovery document: the method it is, and its bodies against
the method's request and response schemas."""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

import httplib2

from sandbox import discovery


class RecordingHttp(httplib2.Http):
    """Keeps every exchange: (HTTP method, URI, request body, status, response body)."""

    exchanges: list[tuple[str, str, Any, int, Any]] = []

    def request(self, uri, method="GET", body=None, headers=None, *args, **kwargs):  # type: ignore[override]
        response, content = super().request(uri, method, body, headers, *args, **kwargs)
        self.exchanges.append(
            (
                method,
                uri,
                json.loads(body) if body else None,
                response.status,
                json.loads(content) if content else None,
            )
        )
        return response, content


def method_for(api: str, version: str, http_method: str, uri: str) -> discovery.Method:
    path = urllib.parse.unquote(uri.split("://", 1)[1].split("/", 1)[1].split("?", 1)[0])
    for spec in discovery.methods(api, version).values():
        pattern = re.sub(r"\\\{[A-Za-z+]+\\\}", "[^/]+", re.escape(spec.path))
        if spec.http_method == http_method and re.fullmatch(pattern, path):
            return spec
    raise AssertionError(f"{http_method} /{path} is no method of {api} {version}")


def methods_used(api: str, version: str) -> set[str]:
    """The ids of the methods recorded, each exchange 200 and fitting its schemas."""
    used = set()
    for http_method, uri, body, status, answer in RecordingHttp.exchanges:
        spec = method_for(api, version, http_method, uri)
        used.add(spec.id)
        assert status == 200, (uri, answer)
        if spec.request:
            discovery.check(api, version, spec.request, body)
        discovery.check(api, version, spec.response, answer)
    return used
