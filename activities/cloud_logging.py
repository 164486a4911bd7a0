"""Reading Cloud Logging: `entries.list` (POST v2/entries:list) through the
discovery-based `google-api-python-client`, built offline from the `logging v2`
document the package ships, as activities/sqladmin.py does for Cloud SQL.

Why not `google-cloud-logging`: its reader is synchronous too, it defaults to
gRPC (the HTTP transport is a private switch), and it is one more dependency;
the discovery client is already installed, speaks the REST API Google documents
and is built from the very document the sandbox's emulator is checked against.

Calls run in a thread with an `Http` of their own. 429 and 5xx answers are
"could not read" (retried by the caller), any other 4xx is permanent with the
API's own message."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from googleapiclient import discovery
from googleapiclient.errors import HttpError
from googleapiclient.http import build_http
from temporalio.exceptions import ApplicationError

from runbook.postchecks import redact

from .errors import permanent
from .sqladmin import TRANSIENT, api_message

READ_SCOPE = "https://www.googleapis.com/auth/logging.read"
PAGE_SIZE = 100
MAX_PAGES = 5  # the count is "N+" beyond this many pages: enough to judge, bounded in time


class LogReadError(Exception):
    """Cloud Logging could not be read just now (429, 5xx, no answer): says nothing about the
    service."""


class CloudLogging:
    """`http_factory` makes a fresh `Http` per call: google-auth's `AuthorizedHttp`
    in production, a plain one against the sandbox's emulator."""

    def __init__(
        self, endpoint: str | None, http_factory: Callable[[], Any], *, project: str | None
    ) -> None:
        options = {"api_endpoint": endpoint} if endpoint else None
        self._http_factory = http_factory
        self.project = project
        self.service = discovery.build(
            "logging", "v2", static_discovery=True, http=build_http(), client_options=options
        )

    async def _list(self, body: dict[str, Any]) -> dict[str, Any]:
        request = self.service.entries().list(body=body)
        try:
            return await asyncio.to_thread(
                request.execute, http=self._http_factory(), num_retries=0
            )
        except HttpError as exc:
            status, message = api_message(exc)
            if exc.status_code in TRANSIENT:
                raise LogReadError(
                    f"Cloud Logging {exc.status_code} {status} listing entries: {message}"
                ) from None
            if exc.status_code in (401, 403):
                raise permanent(
                    f"Cloud Logging denied listing entries ({exc.status_code} {status}: "
                    f"{message}): the worker needs roles/logging.viewer",
                    "LoggingAccessDenied",
                ) from None
            raise permanent(
                f"Cloud Logging refused the query ({exc.status_code} {status}): {message}; check "
                "the catalog's post_checks.log_filter",
                "LogQueryInvalid",
            ) from None
        except (OSError, TimeoutError) as exc:
            raise LogReadError(
                f"Cloud Logging did not answer listing entries: {type(exc).__name__}"
            ) from None

    async def errors(self, project: str, filter_: str, keep: int) -> tuple[int, list[str], bool]:
        """(entries matched, the first `keep` messages, whether more were left unread)."""
        count, messages, token = 0, [], ""
        for _ in range(MAX_PAGES):
            body: dict[str, Any] = {
                "resourceNames": [f"projects/{project}"],
                "filter": filter_,
                "orderBy": "timestamp asc",
                "pageSize": PAGE_SIZE,
            }
            if token:
                body["pageToken"] = token
            page = await self._list(body)
            for entry in page.get("entries") or []:
                count += 1
                if len(messages) < keep:
                    messages.append(entry_message(entry))
            token = page.get("nextPageToken") or ""
            if not token:
                return count, messages, False
        return count, messages, True


def entry_message(entry: dict[str, Any]) -> str:
    pod = ((entry.get("resource") or {}).get("labels") or {}).get("pod_name", "")
    text = entry.get("textPayload")
    if text is None:
        payload = entry.get("jsonPayload") or {}
        text = str(payload.get("message") or payload.get("msg") or payload)
    return redact(f"{entry.get('timestamp', '')} {pod} {entry.get('severity', '')}: {text}".strip())


def transient_read(what: str, message: str) -> ApplicationError:
    return ApplicationError(f"{what} could not be read: {message}; retrying", type="ReadTransient")
