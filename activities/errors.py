"""Turning client errors into Temporal failures: permanent ones are
non-retryable with a message a human can act on; transient ones are retried,
with one plain line (never a dump of the HTTP headers) and, for a 429, the
delay the server asked for."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from http import HTTPStatus
from typing import Any, NoReturn

from temporalio.exceptions import ApplicationError

TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}
RETRY_AFTER_CAP = timedelta(seconds=60)  # a server asking for more is not followed blindly


def permanent(message: str, kind: str, *details: Any) -> ApplicationError:
    return ApplicationError(message, *details, type=kind, non_retryable=True)


def retry_after(headers: Mapping[str, str] | None) -> timedelta | None:
    """The Retry-After header in seconds (the Kubernetes API never sends an HTTP date)."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or seconds < 0:
        return None
    return min(timedelta(seconds=seconds), RETRY_AFTER_CAP)


def transient(
    status: int | None, what: str, headers: Mapping[str, str] | None = None
) -> ApplicationError:
    """One plain line for a retryable API answer; a 429's Retry-After becomes the next retry's
    delay."""
    if status is None:
        said = "gave no answer"
    else:
        try:
            said = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            said = str(status)
    delay = retry_after(headers) if status == 429 else None
    wait = f" in {delay.total_seconds():g}s (Retry-After)" if delay is not None else ""
    return ApplicationError(
        f"Kubernetes API {said} on {what}; retrying{wait}",
        type="KubernetesTransient",
        next_retry_delay=delay,
    )


def raise_for_api_status(
    status: int | None, what: str, body: str | None = None, headers: Mapping[str, str] | None = None
) -> NoReturn:
    """Raise the right failure for a Kubernetes API status on `what`."""
    if status in (401, 403):
        raise permanent(
            f"the Kubernetes API refused {what} ({status}): check the worker's credentials and "
            "RBAC (deploy/kubernetes has the Role it needs)",
            "KubernetesForbidden",
        ) from None
    # `from None`: the client's exception (headers and all) must not ride along as the cause.
    if status is None or status in TRANSIENT_STATUSES:
        raise transient(status, what, headers) from None
    raise permanent(
        f"the Kubernetes API rejected {what} ({status}): {_reason(body)}", "KubernetesRejected"
    ) from None


def raise_for_api_error(exc: Any, what: str) -> NoReturn:
    """raise_for_api_status for a kubernetes client ApiException (status, body and headers)."""
    raise_for_api_status(
        getattr(exc, "status", None),
        what,
        getattr(exc, "body", None),
        getattr(exc, "headers", None),
    )


def _reason(body: str | None) -> str:
    import json

    try:
        return json.loads(body or "{}").get("message") or "no message"
    except ValueError:
        return (body or "no message")[:300]
