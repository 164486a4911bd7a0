"""Reading Cloud Logging: `entries.list` (POST v2/entries:list) through the
discovery-based `google-api-python-client`, built offline from the `logging v2`
document the package ships, as activities/sqladmin.py does for Cloud SQL.

Why not `google-cloud-logging`: its reader is synchronous too, it defaults to
gRPC (the HTTP transport is a private switch), and it is one more dependency;
the discovery client is already installed, speaks the REST API Google documents
and is built from the very document the sandbox's emulator is checked against.

Calls run in a thread with an `Http` of their own. 429 and 5xx answers are
"could not read" (retried by the caller), any other 4xx is permanent with the
API's own message.

Pages. The document says a page may be empty while more remain: "If a value
for next_page_token appears and the entries field is empty, it means that the
search found no log entries so far but it did not have time to search all the
possible log entries. Retry the method with this value for page_token to
continue the search." Only a page without a token ends the listing. So the
token is followed, with a growing pause after each empty page, within Cloud
Logging's read quota (60 entries.list requests a minute per project, shared by
every reader of the project: at most `READS_PER_MINUTE` here, paced per
project) and within a few seconds per read (the verification's heartbeat is
10 s). A read that stops with the listing unfinished keeps its place (the page
token, the count so far) and says "could not read": the next read of the same
query continues from there. A listing still unfinished after `MAX_REQUESTS`
requests is given up as not read, never as "no errors". The count is only
returned unfinished ("N+") once it exceeds `enough`, the most the caller
tolerates: past that, the pages left cannot change the verdict."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from googleapiclient import discovery
from googleapiclient.errors import HttpError
from googleapiclient.http import build_http

from runbook.postchecks import redact

from .errors import permanent
from .google_rest import TRANSIENT, api_message

READ_SCOPE = "https://www.googleapis.com/auth/logging.read"
PAGE_SIZE = 1000  # fewer requests against the read quota; the server may return fewer
QUOTA_PER_MINUTE = 60  # Cloud Logging: entries.list requests a minute per project
READS_PER_MINUTE = 30  # this worker's share of it: consoles and other readers use the rest
REQUESTS_PER_READ = 5  # one read's pages; the next read continues where it stopped
READ_SECONDS = 6.0  # one read's time, pauses included (the verification heartbeats every 10 s)
MAX_REQUESTS = 30  # a listing still unfinished after this many requests is not read
MAX_LISTINGS = 64  # unfinished listings kept for the next read
EMPTY_PAUSES = (0.25, 0.5, 1.0, 2.0)  # after the 1st, 2nd, ... empty page in a row (then 2 s)


class ReadQuota:
    """A sliding minute of entries.list requests per project, shared by every reader in this
    process: `wait` says how long until one more request fits."""

    def __init__(
        self, per_minute: int = READS_PER_MINUTE, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._sent: dict[str, deque[float]] = {}

    def wait(self, project: str) -> float:
        sent = self._sent.setdefault(project, deque())
        now = self.clock()
        while sent and sent[0] <= now - 60.0:
            sent.popleft()
        return 0.0 if len(sent) < self.per_minute else sent[0] + 60.0 - now

    def spend(self, project: str) -> None:
        self._sent.setdefault(project, deque()).append(self.clock())


QUOTA = ReadQuota()


@dataclass
class Listing:
    """Where an unfinished listing stands: resumed by the next read of the same query."""

    token: str = ""
    count: int = 0
    messages: list[str] = field(default_factory=list)
    requests: int = 0
    empty_in_a_row: int = 0


class LogReadError(Exception):
    """Cloud Logging could not be read just now (429, 5xx, no answer): says nothing about the
    service."""


class CloudLogging:
    """`http_factory` makes a fresh `Http` per call: google-auth's `AuthorizedHttp`
    in production, a plain one against the sandbox's emulator."""

    def __init__(
        self,
        endpoint: str | None,
        http_factory: Callable[[], Any],
        *,
        project: str | None,
        quota: ReadQuota | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        options = {"api_endpoint": endpoint} if endpoint else None
        self._http_factory = http_factory
        self.project = project
        self.quota = quota or QUOTA
        self._sleep = sleep
        self._clock = clock
        self._listings: dict[tuple[str, str], Listing] = {}
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

    def _keep(self, key: tuple[str, str], listing: Listing) -> None:
        if not listing.token:
            return
        self._listings[key] = listing
        while len(self._listings) > MAX_LISTINGS:  # the oldest unfinished listing is dropped
            self._listings.pop(next(iter(self._listings)))

    async def errors(
        self, project: str, filter_: str, keep: int, *, enough: int | None = None
    ) -> tuple[int, list[str], bool]:
        """(entries matched, the first `keep` messages, whether more were left unread).

        More are left unread only once the count exceeds `enough` (the most the caller
        tolerates); without `enough` the listing is read to its end. A listing not finished
        within this read raises LogReadError and keeps its place for the next read of the same
        query; one still unfinished after MAX_REQUESTS requests raises LogReadError and starts
        over next time. Either way: not read, never "none found"."""
        key = (project, filter_)
        listing = self._listings.pop(key, None) or Listing()
        started, requests = self._clock(), 0
        while True:
            if enough is not None and listing.count > enough:
                return listing.count, listing.messages, bool(listing.token)
            if listing.requests >= MAX_REQUESTS:
                raise LogReadError(
                    f"Cloud Logging had not finished the search after {listing.requests} "
                    f"entries.list requests ({listing.count} entries so far, the last "
                    f"{listing.empty_in_a_row} pages empty with a nextPageToken): not judged; "
                    "a narrower post_checks.log_filter makes the search faster"
                )
            backoff = (
                EMPTY_PAUSES[min(listing.empty_in_a_row, len(EMPTY_PAUSES)) - 1]
                if listing.empty_in_a_row
                else 0.0
            )
            quota = self.quota.wait(project)
            pause = max(backoff, quota)
            if requests >= REQUESTS_PER_READ or self._clock() - started + pause > READ_SECONDS:
                self._keep(key, listing)
                why = (
                    f"pacing entries.list within {self.quota.per_minute} requests a minute "
                    f"for projects/{project}"
                    if quota >= backoff and quota > 0
                    else "the search is not finished"
                )
                raise LogReadError(
                    f"Cloud Logging read in part: {why} ({listing.count} entries in "
                    f"{listing.requests} pages so far, the last {listing.empty_in_a_row} empty "
                    "with a nextPageToken); reading on from there next time"
                )
            if pause:
                await self._sleep(pause)
            body: dict[str, Any] = {
                "resourceNames": [f"projects/{project}"],
                "filter": filter_,
                "orderBy": "timestamp asc",
                "pageSize": PAGE_SIZE,
            }
            if listing.token:
                body["pageToken"] = listing.token
            requests += 1
            listing.requests += 1
            self.quota.spend(project)
            try:
                page = await self._list(body)
            except LogReadError:
                self._keep(key, listing)  # page tokens last 24 h: go on next time
                raise
            entries = page.get("entries") or []
            for entry in entries:
                listing.count += 1
                if len(listing.messages) < keep:
                    listing.messages.append(entry_message(entry))
            listing.empty_in_a_row = 0 if entries else listing.empty_in_a_row + 1
            listing.token = page.get("nextPageToken") or ""
            if not listing.token:
                return listing.count, listing.messages, False


def entry_message(entry: dict[str, Any]) -> str:
    pod = ((entry.get("resource") or {}).get("labels") or {}).get("pod_name", "")
    text = entry.get("textPayload")
    if text is None:
        payload = entry.get("jsonPayload") or {}
        text = str(payload.get("message") or payload.get("msg") or payload)
    return redact(f"{entry.get('timestamp', '')} {pod} {entry.get('severity', '')}: {text}".strip())
