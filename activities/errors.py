"""Turning client errors into Temporal failures: permanent ones are
non-retryable with a message a human can act on; transient ones are retried."""

from __future__ import annotations

from typing import Any, NoReturn

from temporalio.exceptions import ApplicationError

TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}


def permanent(message: str, kind: str, *details: Any) -> ApplicationError:
    return ApplicationError(message, *details, type=kind, non_retryable=True)


def raise_for_api_status(status: int | None, what: str, body: str | None = None) -> NoReturn:
    """Raise the right failure for a Kubernetes API status on `what`."""
    if status in (401, 403):
        raise permanent(
            f"the Kubernetes API refused {what} ({status}): check the worker's credentials and RBAC (deploy/kubernetes has the Role it needs)",
            "KubernetesForbidden",
        )
    if status is None or status in TRANSIENT_STATUSES:
        raise ApplicationError(f"transient Kubernetes API error on {what} ({status}); retrying", type="KubernetesTransient")
    raise permanent(f"the Kubernetes API rejected {what} ({status}): {_reason(body)}", "KubernetesRejected")


def _reason(body: str | None) -> str:
    import json

    try:
        return json.loads(body or "{}").get("message") or "no message"
    except ValueError:
        return (body or "no message")[:300]
