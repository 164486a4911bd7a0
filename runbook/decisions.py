"""Signed decisions bound to the plan. A person's start, approval, rejection or
stop is a payload naming the workflow, its run, the gate, a digest of the plan
they were shown, who they are, when, until when (30 minutes at most) and a
nonce, signed with their SSH key. The workflow and the activities that change
things judge each one the same way: a signature that fails, a key that is not
the signer's, another run, gate or plan, an expired or replayed payload does
not count."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .attestation import Attestor, SlackFacts, attestation_problem
from .identity import Identity, holds_role, normalize_id
from .signatures import BadSignature, signer_key

MAX_VALIDITY = dt.timedelta(minutes=30)
CLOCK_SKEW = dt.timedelta(minutes=2)
# How long after the workflow counted a decision an activity may still act on it: the
# change's own lifetime (a day's wait for approvals, then a clone of up to two hours).
MAX_COUNTED_AGE = dt.timedelta(hours=30)
Decision = Literal["start", "approve", "reject", "stop"]


def canonical(value: Any) -> str:
    """One text for one value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def plan_digest(plan: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(plan).encode("utf-8")).hexdigest()


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class GateView(Model):
    """What a signer is shown and signs over: the gate awaiting decisions and its plan."""

    workflow_id: str
    run_id: str
    gate: str
    plan: dict[str, Any]
    digest: str
    signed: bool = Field(
        description="whether this run counts signed decisions only (the catalog has identities)"
    )


class DecisionPayload(Model):
    v: Literal[1] = 1
    workflow_id: str = Field(min_length=1)
    run_id: str = Field(
        min_length=1, description="the run the decision is for: it counts in no other"
    )
    gate: str = Field(min_length=1)
    decision: Decision
    plan: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of the canonical plan the signer was shown"
    )
    signer: str = Field(min_length=1, max_length=63)
    issued_at: dt.datetime
    expires_at: dt.datetime
    nonce: str = Field(min_length=16, max_length=64)
    note: str = Field("", max_length=2000, description="a comment or the reason")
    via: Literal["slack"] | None = Field(
        None, description="attested by a gateway (its key, not the signer's): where it was made"
    )
    slack: SlackFacts | None = Field(None, description="the Slack team, user and action time")

    @model_validator(mode="after")
    def _via_has_facts(self) -> DecisionPayload:
        if (self.via == "slack") != (self.slack is not None):
            raise ValueError("a decision made in Slack names its Slack facts, and only it does")
        return self

    @field_validator("issued_at", "expires_at")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a decision's times need a time zone offset")
        return value

    def text(self) -> str:
        # Unset attestation fields are left out: a person's payload reads as it always has.
        return canonical(self.model_dump(mode="json", exclude_none=True))


class SignedDecision(Model):
    payload: str = Field(
        min_length=2, max_length=8000, description="the exact canonical JSON that was signed"
    )
    signature: str = Field(
        min_length=20, max_length=4000, description="armored SSH signature, namespace modoru"
    )


class Grant(Model):
    """What a changing activity receives to check again: the decisions counted for
    the gate, the plan they name, when the workflow counted each one, the requester's
    start counted at this run's start gate (over `start_plan`), and the release
    guard's seal when the guard started the change. Each decision is judged at the
    moment the workflow counted it, never at the activity's own clock."""

    gate: str
    plan: dict[str, Any]
    decisions: list[SignedDecision] = Field(default_factory=list)
    counted_at: list[dt.datetime] = Field(
        default_factory=list, description="when the workflow counted each of `decisions`"
    )
    request_kind: str = ""
    request: dict[str, Any] = Field(default_factory=dict)
    start: SignedDecision | None = None
    start_counted_at: dt.datetime | None = None
    start_plan: dict[str, Any] = Field(
        default_factory=dict, description="the plan the start was signed over"
    )
    guard_seal: str = ""
    guard_facts: dict[str, Any] = Field(default_factory=dict)
    seal_counted_at: dt.datetime | None = None


@dataclass(frozen=True)
class Expected:
    workflow_id: str
    run_id: str
    gate: str
    plan: str


@dataclass(frozen=True)
class Judged:
    counted: bool
    reason: str
    signer: str = ""  # the identity id, once the signature holds
    payload: DecisionPayload | None = None
    via: str = ""  # "slack" when an attestor signed for the identity


def judge(
    signed: SignedDecision,
    decision: Decision,
    expected: Expected,
    identities: list[Identity],
    now: dt.datetime,
    seen_nonces: set[str],
    attestors: list[Attestor] | None = None,
) -> Judged:
    """Whether `signed` is a valid `decision` for `expected`, and by whom. Roles and
    the requester rule are the caller's (they differ by decision), as is whether a
    Slack-attested decision counts at the gate (`attestation.slack_count_problem`).
    A payload made `via` Slack must be signed by one of `attestors` allowed to speak
    for the signer at this gate. Never raises: a decision that cannot be judged is not
    counted, with the reason."""
    try:
        return _judge(signed, decision, expected, identities, now, seen_nonces, attestors or [])
    except Exception as exc:  # noqa: BLE001 - a decision must never stop the workflow
        return Judged(False, f"the decision could not be judged: {type(exc).__name__}: {exc}")


def _judge(
    signed: SignedDecision,
    decision: Decision,
    expected: Expected,
    identities: list[Identity],
    now: dt.datetime,
    seen_nonces: set[str],
    attestors: list[Attestor],
) -> Judged:
    if now.tzinfo is None or now.utcoffset() is None:
        return Judged(False, "the decision cannot be judged against a time without a time zone")
    try:
        payload = DecisionPayload.model_validate_json(signed.payload)
    except ValidationError as exc:
        return Judged(False, f"unreadable decision payload: {exc.errors()[0]['msg']}")
    if payload.text() != signed.payload:
        return Judged(
            False,
            "the payload is not in canonical form (sorted keys, no spaces): sign what `modoru "
            "approve --payload` prints",
        )
    try:
        key = signer_key(signed.payload, signed.signature)
    except BadSignature as exc:
        return Judged(False, str(exc))
    who = normalize_id(payload.signer)
    identity = next((i for i in identities if i.id == who), None)
    if identity is None:
        return Judged(False, f"{payload.signer!r} is not an identity in the catalog")
    made_by = f"signed by {identity.id}"
    if payload.via == "slack":
        attestor, problem = attestation_problem(
            key, identity, payload.slack, payload.decision, expected.gate, attestors
        )
        if problem:
            return Judged(False, f"attested for {identity.id} in Slack, but {problem}")
        verb = {"approve": "approved", "reject": "rejected"}.get(payload.decision, "decided")
        assert payload.slack is not None
        made_by = (
            f"{verb} in Slack by {identity.id} (Slack user {payload.slack.user} of "
            f"{payload.slack.team}, attested by {attestor})"
        )
    elif key not in identity.keys:
        return Judged(False, f"the signing key is not one of {identity.id}'s keys in the catalog")
    via = payload.via or ""
    problems = []
    if payload.decision != decision:
        problems.append(f"it is a {payload.decision}, not a {decision}")
    if payload.workflow_id != expected.workflow_id:
        problems.append(f"it names workflow {payload.workflow_id}")
    if not expected.run_id or payload.run_id != expected.run_id:
        problems.append(f"it names run {payload.run_id or '(none)'}, not this run")
    if payload.gate != expected.gate:
        problems.append(f"it is for gate {payload.gate!r}, not {expected.gate!r}")
    if payload.plan != expected.plan:
        problems.append("it approves another plan than the one this run would carry out")
    if payload.expires_at - payload.issued_at > MAX_VALIDITY:
        problems.append(
            f"it is valid for longer than {int(MAX_VALIDITY.total_seconds() // 60)} minutes"
        )
    if payload.issued_at > now + CLOCK_SKEW:
        problems.append("it is issued in the future")
    if payload.expires_at <= now:
        problems.append(f"it expired at {payload.expires_at.isoformat()}")
    if payload.nonce in seen_nonces:
        problems.append("its nonce was used before (a replay)")
    if problems:
        return Judged(False, f"{made_by}, but " + "; ".join(problems), identity.id, payload, via)
    return Judged(True, made_by, identity.id, payload, via)


def has_role(identities: list[Identity], who: str, roles: list[str]) -> bool:
    """Ids and role names apart: an entry is a role, or `id:NAME` for one identity."""
    return holds_role(identities, who, roles)


class DecisionVerdict(Model):
    """The answer to an approve or reject update: whether the decision counted and
    why, as the audit trail records it, and where the gate stands after it."""

    decision: Literal["start", "approve", "reject"]
    counted: bool
    reason: str
    by: str = Field(
        description="who the decision is from: the signer once a signature holds, else the name "
        "given"
    )
    gate: str = Field(
        "", description="the gate the decision was judged at; empty before a plan is shown"
    )
    approvals: list[str] = Field(
        default_factory=list, description="the approvals counted at that gate so far"
    )
    approvals_required: int = 0
    phase: str = ""


# -- the release guard's seal ------------------------------------------------------------

SEAL_VERSION = 2
GUARD_SEAL_VALIDITY = dt.timedelta(minutes=30)


def guard_id_for(namespace: str, deployment: str) -> str:
    """The release guard's workflow id for a Deployment (one guard per Deployment)."""
    return f"guard-{namespace}-{deployment}"


def rollback_id_for(namespace: str, deployment: str) -> str:
    """The deployment rollback's workflow id (one rollback per Deployment at a time)."""
    return f"rollback-{namespace}-{deployment}"


def _aware_time(value: Any) -> dt.datetime | None:
    try:
        at = dt.datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return at if at.tzinfo is not None and at.utcoffset() is not None else None


def seal_problem(
    facts: dict[str, Any],
    rollback_workflow_id: str,
    plan: dict[str, Any],
    at: dt.datetime,
    *,
    immediate: bool = True,
) -> str:
    """Why the guard's sealed `facts` do not start this rollback at `at` ("" when they
    do): they must name the Deployment's guard and one of its runs, this rollback's
    workflow id, the digest of the plan it carries out, a breach (immediate, unless
    `immediate` is False) seen no later than the sealing, sealed no later than `at` (with
    skew) and at most `GUARD_SEAL_VALIDITY` before it. The seal's signature is the
    activities' to check."""
    try:
        if facts.get("v") != SEAL_VERSION:
            return "the seal is not one this worker makes"
        namespace, deployment = plan.get("namespace"), plan.get("deployment")
        if (facts.get("namespace"), facts.get("deployment")) != (namespace, deployment):
            return "the seal is for another Deployment"
        if facts.get("guard") != guard_id_for(str(namespace), str(deployment)) or not facts.get(
            "guard_run"
        ):
            return "the seal does not name this Deployment's release guard and its run"
        if facts.get("rollback") != rollback_workflow_id:
            return f"the seal is for workflow {facts.get('rollback')!r}, not this one"
        if facts.get("plan") != plan_digest(plan):
            return "the seal is for another plan than the one this run would carry out"
        if immediate and facts.get("severity") != "immediate":
            return "the sealed breach is not immediate"
        breach, sealed = _aware_time(facts.get("breach_at")), _aware_time(facts.get("sealed_at"))
        if breach is None or sealed is None:
            return "the seal's times are unreadable or have no time zone"
        if breach > sealed:
            return "the sealed breach is later than its sealing"
        if sealed > at + CLOCK_SKEW:
            return "the seal is dated in the future"
        if at - sealed > GUARD_SEAL_VALIDITY:
            minutes = int(GUARD_SEAL_VALIDITY.total_seconds() // 60)
            return f"the seal is older than {minutes} minutes"
    except Exception as exc:  # noqa: BLE001 - a malformed seal is refused, never a crash
        return f"the seal could not be read: {type(exc).__name__}"
    return ""


def counted_moment_problem(at: dt.datetime | None, now: dt.datetime) -> str:
    """Why an activity must not judge a decision at the moment `at` its workflow says it
    counted it ("" when it may): missing, without a time zone, later than the activity's
    own clock (with skew), or older than the change's lifetime."""
    if at is None:
        return "the workflow did not say when it counted it"
    if at.tzinfo is None or at.utcoffset() is None:
        return "its counted moment has no time zone"
    if at > now + CLOCK_SKEW:
        return "its counted moment is in the future"
    if now - at > MAX_COUNTED_AGE:
        return "it was counted too long ago"
    return ""
