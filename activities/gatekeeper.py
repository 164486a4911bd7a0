"""Approvals checked again where the change is made. An activity that changes
something receives the signed decisions its workflow counted and checks them
against the worker's own catalog before it acts: each signature, that it names
this workflow run (from the activity's own task info), this gate and a plan
whose facts are the ones the activity is about to carry out, and that enough
different people with an approver role signed. A forged activity task, or one
scheduled by hand, changes nothing.

An immediate change with no approval needs the requester's start signed by an
on-call identity, or the release guard's seal: an HMAC the worker's guard
activity puts on its breach evidence with the workers' shared key."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import os
from typing import Any

from temporalio import activity

from runbook.catalog import Catalog, ServiceEntry
from runbook.decisions import Expected, Grant, has_role, judge, plan_digest
from runbook.identity import normalize_id
from runbook.plans import start_plan_digest

from .errors import permanent

SEAL_KEY_ENV = "MODORU_GUARD_SEAL_KEY"
GUARD_SEAL_VALIDITY = dt.timedelta(minutes=30)
log = logging.getLogger("modoru.gatekeeper")


def seal_key_from_env() -> bytes:
    value = os.environ.get(SEAL_KEY_ENV)
    if not value:
        # One worker process: a key of its own. Several workers must share one (a Secret).
        return os.urandom(32)
    try:
        key = base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError(f"{SEAL_KEY_ENV} must be base64 (32 random bytes or more)") from None
    if len(key) < 32:
        raise ValueError(f"{SEAL_KEY_ENV} must hold at least 32 bytes")
    return key


class Gatekeeper:
    def __init__(self, catalog: Catalog, seal_key: bytes) -> None:
        self.catalog = catalog
        self.seal_key = seal_key

    @property
    def enforcing(self) -> bool:
        return bool(self.catalog.identities)

    def seal(self, facts: dict[str, Any]) -> str:
        from runbook.decisions import canonical

        return hmac.new(self.seal_key, canonical(facts).encode(), hashlib.sha256).hexdigest()

    def require(
        self,
        grant: Grant | None,
        entry: ServiceEntry | None,
        needed: int,
        facts: dict[str, Any],
        what: str,
    ) -> None:
        """Raise a permanent failure unless `grant` approves `facts` (a subset of the
        signed plan's items) for this run; nothing when the catalog has no identities."""
        if not self.enforcing:
            return
        if grant is None:
            raise permanent(
                f"refused to {what}: no signed approval came with the request", "ApprovalMissing"
            )
        if entry is None:
            raise permanent(
                f"refused to {what}: the service is not in this worker's catalog", "ApprovalInvalid"
            )
        mismatched = [key for key, value in facts.items() if grant.plan.get(key) != value]
        if mismatched:
            raise permanent(
                f"refused to {what}: the approved plan differs in {', '.join(mismatched)}",
                "ApprovalInvalid",
            )
        info = activity.info()
        identities = self.catalog.identities
        now = dt.datetime.now(dt.UTC)
        requester, start_ok = self._requester(grant, info.workflow_id, now)
        if needed == 0 and not self._no_approval_allowed(
            grant, start_ok, requester, info.workflow_id
        ):
            needed = 1
        expected = Expected(
            info.workflow_id, info.workflow_run_id, grant.gate, plan_digest(grant.plan)
        )
        people: set[str] = set()
        seen: set[str] = set()
        for decision in grant.decisions:
            verdict = judge(decision, "approve", expected, identities, now, seen)
            if verdict.payload is not None:
                seen.add(verdict.payload.nonce)
            if (
                verdict.counted
                and verdict.signer != requester
                and entry is not None
                and has_role(identities, verdict.signer, entry.approval.approvers)
            ):
                people.add(verdict.signer)
        if len(people) < needed:
            raise permanent(
                f"refused to {what}: {len(people)} valid signed approval(s) for this run and "
                f"plan, {needed} needed",
                "ApprovalInvalid",
            )

    def _requester(self, grant: Grant, workflow_id: str, now: dt.datetime) -> tuple[str, bool]:
        requested_by = normalize_id(str(grant.request.get("requested_by", "")))
        if grant.start is None:
            return requested_by, False
        # A start may be judged after its expiry: it was checked when the run began; here it names
        # the requester.
        verdict = judge(
            grant.start,
            "start",
            Expected(
                workflow_id, "", "start", start_plan_digest(grant.request_kind, grant.request)
            ),
            self.catalog.identities,
            min(now, _issued(grant.start) + dt.timedelta(seconds=1)),
            set(),
        )
        return (
            (verdict.signer, True)
            if verdict.counted and verdict.signer == requested_by
            else (requested_by, False)
        )

    def _no_approval_allowed(
        self, grant: Grant, start_ok: bool, requester: str, workflow_id: str
    ) -> bool:
        facts = grant.guard_facts
        if grant.guard_seal and hmac.compare_digest(grant.guard_seal, self.seal(facts)):
            try:
                recent = (
                    dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(str(facts.get("at")))
                    <= GUARD_SEAL_VALIDITY
                )
            except ValueError:
                recent = False
            same = (facts.get("namespace"), facts.get("deployment")) == (
                grant.plan.get("namespace"),
                grant.plan.get("deployment"),
            )
            if recent and same and facts.get("severity") == "immediate":
                return True
        return start_ok and has_role(self.catalog.identities, requester, [self.catalog.oncall_role])


def _issued(start) -> dt.datetime:
    from runbook.decisions import DecisionPayload

    try:
        return DecisionPayload.model_validate_json(start.payload).issued_at
    except ValueError:
        return dt.datetime.now(dt.UTC)
