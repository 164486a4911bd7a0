"""Approvals checked again where the change is made. An activity that changes
something receives the signed decisions its workflow counted and checks them
against the worker's own catalog before it acts: each signature, that it names
this workflow run (from the activity's own task info), this gate and a plan
whose facts are the ones the activity is about to carry out, and that enough
different people with an approver role signed. A forged activity task, or one
scheduled by hand, changes nothing.

Every decision is judged at the moment its workflow counted it (carried in the
grant), not at this activity's clock: an approval stays good for a change that
runs hours after it was counted, and a counted moment in the future or older
than a change's lifetime is refused.

An immediate change with no approval needs the requester's start, signed at
this run's start gate over the plan carried out, by an on-call identity; or
the release guard's seal: an HMAC the worker's guard activity puts, with the
workers' shared key, on breach facts that name the guard's run, this rollback
and its plan, and a breach no later than the sealing."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import os
from typing import Any

from temporalio import activity

from runbook.attestation import slack_count_problem
from runbook.catalog import Catalog, ServiceEntry
from runbook.decisions import (
    Expected,
    Grant,
    counted_moment_problem,
    has_role,
    judge,
    plan_digest,
    seal_problem,
)
from runbook.enums import Severity
from runbook.identity import normalize_id
from runbook.policy import approvals_required

from .errors import permanent

SEAL_KEY_ENV = "MODORU_GUARD_SEAL_KEY"
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

    @staticmethod
    def needed(grant: Grant | None, entry: ServiceEntry | None) -> int:
        """How many approvals a change needs by its service's approval policy, for the
        severity its request named (investigate when there is no grant); 1 with no entry."""
        severity = Severity(
            grant.request.get("severity", "investigate") if grant else Severity.INVESTIGATE
        )
        return approvals_required(severity, entry.approval) if entry else 1

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
        # Activities run for a workflow here; one without (a standalone activity) matches no
        # grant.
        workflow_id, run_id = info.workflow_id or "", info.workflow_run_id or ""
        requester, start_ok = self._requester(grant, workflow_id, run_id, now)
        if needed == 0 and not self._no_approval_allowed(
            grant, start_ok, requester, workflow_id, now
        ):
            needed = 1
        expected = Expected(workflow_id, run_id, grant.gate, plan_digest(grant.plan))
        people: set[str] = set()
        seen: set[str] = set()
        in_slack = 0
        for index, decision in enumerate(grant.decisions):
            # Judged when the workflow counted it; without that moment, at this clock.
            at = grant.counted_at[index] if index < len(grant.counted_at) else now
            if counted_moment_problem(at, now):
                continue
            verdict = judge(
                decision, "approve", expected, identities, at, seen, self.catalog.attestors
            )
            if verdict.payload is not None:
                seen.add(verdict.payload.nonce)
            if (
                verdict.counted
                and verdict.signer != requester
                and verdict.signer not in people
                and entry is not None
                and has_role(identities, verdict.signer, entry.approval.approvers)
            ):
                if verdict.via == "slack":
                    # Whether Slack counts here is the worker's catalog's word, not the grant's.
                    if slack_count_problem(entry.approval.slack_approvals, grant.gate, in_slack):
                        continue
                    in_slack += 1
                people.add(verdict.signer)
        if len(people) < needed:
            raise permanent(
                f"refused to {what}: {len(people)} valid signed approval(s) for this run and "
                f"plan, {needed} needed",
                "ApprovalInvalid",
            )

    def _requester(
        self, grant: Grant, workflow_id: str, run_id: str, now: dt.datetime
    ) -> tuple[str, bool]:
        """Who asked, and whether they signed this run's start gate (judged when the
        workflow counted it)."""
        requested_by = normalize_id(str(grant.request.get("requested_by", "")))
        if (
            grant.start is None
            or grant.start_plan.get("request") != grant.request
            or counted_moment_problem(grant.start_counted_at, now)
        ):
            return requested_by, False
        assert grant.start_counted_at is not None
        verdict = judge(
            grant.start,
            "start",
            Expected(workflow_id, run_id, "start", plan_digest(grant.start_plan)),
            self.catalog.identities,
            grant.start_counted_at,
            set(),
        )
        return (
            (verdict.signer, True)
            if verdict.counted and verdict.signer == requested_by
            else (requested_by, False)
        )

    def _no_approval_allowed(
        self, grant: Grant, start_ok: bool, requester: str, workflow_id: str, now: dt.datetime
    ) -> bool:
        if self.seal_holds(grant, workflow_id, now):
            return True
        same_plan = plan_digest(grant.start_plan.get("plan") or {}) == plan_digest(grant.plan)
        return (
            start_ok
            and same_plan
            and has_role(self.catalog.identities, requester, [self.catalog.oncall_role])
        )

    def seal_holds(self, grant: Grant, workflow_id: str, now: dt.datetime) -> bool:
        """Whether the guard's seal in `grant` is this worker's, over facts that start this
        rollback (`workflow_id`) on the grant's plan, at the moment the workflow counted it."""
        try:
            genuine = bool(grant.guard_seal) and hmac.compare_digest(
                grant.guard_seal.encode(), self.seal(grant.guard_facts).encode()
            )
        except (TypeError, ValueError):
            genuine = False
        if not genuine:
            return False
        at = grant.seal_counted_at
        if at is None or counted_moment_problem(at, now):
            return False
        problem = seal_problem(grant.guard_facts, workflow_id, grant.plan, at)
        if problem:
            log.warning("a release guard's seal was refused: %s", problem)
        return not problem
