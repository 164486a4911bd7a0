"""One call of a Google REST API through the discovery-based
`google-api-python-client`, as the Cloud SQL Admin and Artifact Registry clients
make it.

The client is synchronous (httplib2), so each call runs in a thread with an
`Http` of its own (httplib2 objects are not thread-safe). 429 and 5xx are
retried a few times with the library's backoff (unless the caller sends once),
then handed to Temporal's retry policy as a retryable failure; a refusal
(401/403) names the role the worker needs, in the API's own words; any other
4xx is permanent and carries the API's own message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.auth.exceptions import RefreshError
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpRequest
from temporalio.exceptions import ApplicationError

from .errors import permanent

IN_CALL_RETRIES = 2
TRANSIENT = {408, 429, 500, 502, 503, 504}


def api_message(error: HttpError) -> tuple[str, str]:
    """(status, message) of Google's JSON error body, or the HTTP reason."""
    try:
        body = json.loads(error.content.decode("utf-8", "replace"))["error"]
        return str(body.get("status") or error.status_code), str(
            body.get("message") or error.reason
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return str(error.status_code), str(error.reason or "no message")


@dataclass(frozen=True)
class GoogleApi:
    """How one API's failures are worded and typed."""

    name: str  # "Artifact Registry": who refused or rejected
    kind: str  # the failure types' prefix: "Registry" makes RegistryTransient, RegistryDenied...
    denied_hint: str  # after a 401/403: what the worker's service account needs
    busy_name: str = ""  # who answered 429/5xx (default `name`)
    reach_name: str = ""  # who could not be reached (default `name`)
    reach_detail: bool = False  # whether "cannot reach" carries the exception's own text
    credentials_refused: bool = False  # a RefreshError is a denial (else it is not caught)
    # Statuses the caller decides about: the exception each raises, made from the API's message.
    raised: Mapping[int, Callable[[str], Exception]] = field(default_factory=dict)

    async def call(
        self,
        what: str,
        request: HttpRequest,
        http_factory: Callable[[], Any],
        *,
        num_retries: int = IN_CALL_RETRIES,
    ) -> dict[str, Any]:
        """Execute `request` with a fresh `http_factory()`; `what` names it in failures
        ("listing backup runs of tekutoko-db")."""
        try:
            return await asyncio.to_thread(
                request.execute, http=http_factory(), num_retries=num_retries
            )
        except HttpError as exc:
            status, message = api_message(exc)
            code = exc.status_code
            if code in self.raised:
                raise self.raised[code](message) from None
            if code in TRANSIENT:
                raise ApplicationError(
                    f"{self.busy_name or self.name} {code} {status} while {what}: {message}; "
                    "retrying",
                    type=f"{self.kind}Transient",
                ) from None
            if code in (401, 403):
                raise permanent(
                    f"{self.name} refused {what} ({code} {status}: {message}): {self.denied_hint}",
                    f"{self.kind}Denied",
                ) from None
            raise permanent(
                f"{self.name} rejected {what} ({code} {status}): {message}",
                f"{self.kind}Rejected",
            ) from None
        except (OSError, TimeoutError) as exc:  # connection refused or reset, DNS, socket timeout
            detail = f"{type(exc).__name__}: {exc}" if self.reach_detail else type(exc).__name__
            raise ApplicationError(
                f"cannot reach {self.reach_name or self.name} while {what}: {detail}; retrying",
                type=f"{self.kind}Transient",
            ) from None
        except RefreshError as exc:  # a borrowed token the API no longer takes
            if not self.credentials_refused:
                raise
            raise permanent(
                f"{self.name} did not take the credentials while {what}: {exc}",
                f"{self.kind}Denied",
            ) from None
