"""The discovery-built Cloud SQL Admin client (the code production runs) as
tests drive it: dicts in and out, Google's errors as one exception type."""

from __future__ import annotations

import asyncio
from typing import Any

from googleapiclient import discovery
from googleapiclient.errors import HttpError
from googleapiclient.http import build_http

from activities.sqladmin import api_message


class ApiFailure(Exception):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(f"{code} {status}: {message}")
        self.code, self.status, self.message = code, status, message


class SqlAdminApi:
    def __init__(self, url: str) -> None:
        self.service = discovery.build("sqladmin", "v1", static_discovery=True, http=build_http(), client_options={"api_endpoint": url})

    def request(self, resource: str, method: str, **params: Any) -> Any:
        target = self.service
        for part in resource.split("."):
            target = getattr(target, part)()
        return getattr(target, method)(**params)

    async def __call__(self, resource: str, method: str, **params: Any) -> dict[str, Any]:
        """e.g. `await api("instances", "get", project=P, instance=I)`."""
        request = self.request(resource, method, **params)
        try:
            return await asyncio.to_thread(request.execute, http=build_http())
        except HttpError as exc:
            status, message = api_message(exc)
            raise ApiFailure(exc.status_code, status, message) from None
