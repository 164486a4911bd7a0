"""Judging a decision never crashes, and never counts what it cannot read: times
without a time zone, garbage, a payload naming no run or another run, and any
failure inside the judging itself are "not counted" with the reason. The
activities judge each decision at the moment the workflow counted it (an
approval counted 25 minutes, or two hours, before the change is still good),
and refuse a counted moment in the future or older than a change's lifetime."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.gatekeeper import Gatekeeper
from runbook import decisions
from runbook.catalog import ApprovalPolicy, Catalog, ServiceEntry
from runbook.decisions import (
    DecisionPayload,
    Expected,
    Grant,
    SignedDecision,
    canonical,
    judge,
    plan_digest,
)
from runbook.identity import Identity
from runbook.signatures import new_private_key, public_key_line, sign

KEYS = {
    name: new_private_key() for name in ("oncall", "sre-lead", "backend-lead", "backup", "stranger")
}
IDENTITIES = [
    Identity(
        id=name,
        display_name=name,
        roles=["oncall"] if name == "backup" else [name],
        keys=[public_key_line(key)],
    )
    for name, key in KEYS.items()
    if name != "stranger"
]
PLAN = {"kind": "rollback", "namespace": "default", "deployment": "tekutoko-api", "to": 2}
WORKFLOW, RUN = "rollback-default-tekutoko-api", "run-2"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def signed_text(text: str, signer: str = "sre-lead") -> SignedDecision:
    return SignedDecision(payload=text, signature=sign(text, KEYS[signer]))


def fields(**changes) -> dict:
    return {
        "v": 1,
        "workflow_id": WORKFLOW,
        "run_id": RUN,
        "gate": "approval",
        "decision": "approve",
        "plan": plan_digest(PLAN),
        "signer": "sre-lead",
        "issued_at": NOW.isoformat(),
        "expires_at": (NOW + dt.timedelta(minutes=10)).isoformat(),
        "nonce": uuid.uuid4().hex,
        "note": "",
        **changes,
    }


def decision(signer: str = "sre-lead", **changes) -> SignedDecision:
    """Signed in canonical form when the fields make a payload; as given otherwise."""
    raw = fields(signer=signer, **changes)
    try:
        text = DecisionPayload.model_validate(raw).text()
    except ValueError:
        text = canonical(raw)
    return signed_text(text, signer)


def judged(signed: SignedDecision, *, run: str = RUN, at: dt.datetime = NOW):
    return judge(
        signed,
        "approve",
        Expected(WORKFLOW, run, "approval", plan_digest(PLAN)),
        IDENTITIES,
        at,
        set(),
    )


def test_a_valid_decision_counts() -> None:
    assert judged(decision()).counted


@pytest.mark.parametrize(
    "changes",
    [
        {"issued_at": NOW.replace(tzinfo=None).isoformat()},
        {"expires_at": (NOW + dt.timedelta(minutes=5)).replace(tzinfo=None).isoformat()},
        {
            "issued_at": NOW.replace(tzinfo=None).isoformat(),
            "expires_at": (NOW + dt.timedelta(minutes=5)).replace(tzinfo=None).isoformat(),
        },
        {"issued_at": "yesterday"},
        {"expires_at": 12},
    ],
)
def test_times_without_a_time_zone_or_garbage_are_not_counted(changes) -> None:
    # Before, a naive time raised TypeError out of `judge` and wedged the workflow task.
    verdict = judged(decision(**changes))
    assert verdict.counted is False and verdict.reason


@pytest.mark.parametrize("text", ["{}", "[1,2]", '"x"', "{" * 50, "null"])
def test_garbage_payloads_are_not_counted(text: str) -> None:
    verdict = judged(signed_text(text))
    assert verdict.counted is False and verdict.reason


def test_a_failure_inside_judging_is_a_reason_not_a_crash(monkeypatch) -> None:
    def broken(payload, signature):
        raise RuntimeError("key parser broke")

    monkeypatch.setattr(decisions, "signer_key", broken)
    verdict = judged(decision())
    assert verdict.counted is False and "RuntimeError" in verdict.reason


def test_a_naive_clock_is_not_a_crash() -> None:
    verdict = judged(decision(), at=NOW.replace(tzinfo=None))
    assert verdict.counted is False


def test_a_payload_naming_no_run_or_another_run_never_counts() -> None:
    # The start used to be signed with an empty run id and counted in any run of the workflow.
    assert not judged(decision(run_id="run-1")).counted
    assert not judged(decision(), run="").counted  # nothing is judged without this run's id
    assert not judged(decision(run_id="")).counted


# -- the activities judge at the moment the workflow counted ------------------------------

ENTRY = ServiceEntry(
    name="tekutoko-api",
    deployment="tekutoko-api",
    service="tekutoko-api",
    approval=ApprovalPolicy(approvers=["sre-lead", "backend-lead"], investigate_approvals=2),
)
CATALOG = Catalog(identities=IDENTITIES, services=[ENTRY])


def environment(run: str = RUN) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = env.info.__class__(
        **{**env.info.__dict__, "workflow_id": WORKFLOW, "workflow_run_id": run}
    )
    return env


def require(grant: Grant, needed: int = 2, run: str = RUN) -> None:
    gatekeeper = Gatekeeper(CATALOG, b"k" * 32)
    environment(run).run(lambda: gatekeeper.require(grant, ENTRY, needed, {}, "undo"))


def approvals(issued: dt.datetime) -> list[SignedDecision]:
    return [
        decision(
            signer,
            issued_at=issued.isoformat(),
            expires_at=(issued + dt.timedelta(minutes=10)).isoformat(),
        )
        for signer in ("sre-lead", "backend-lead")
    ]


@pytest.mark.parametrize("ago", [dt.timedelta(minutes=25), dt.timedelta(hours=2)])
def test_approvals_counted_long_before_the_change_still_hold(ago: dt.timedelta) -> None:
    """Approvals valid for 10 minutes, counted by the workflow 25 minutes (or two hours: a
    clone's time) before the activity runs: judged when they were counted, they hold."""
    issued = NOW - ago - dt.timedelta(minutes=1)
    counted = issued + dt.timedelta(minutes=1)
    grant = Grant(
        gate="approval",
        plan=PLAN,
        decisions=approvals(issued),
        counted_at=[counted, counted],
        request={"requested_by": "oncall", "severity": "investigate"},
    )
    require(grant)


@pytest.mark.parametrize(
    ("counted", "why"),
    [
        (NOW + dt.timedelta(days=365 * 70), "a counted moment in the future"),
        (NOW - dt.timedelta(days=3), "a counted moment older than a change lives"),
        (NOW - dt.timedelta(hours=1), "counted after it expired"),
    ],
)
def test_a_counted_moment_that_cannot_be_true_is_refused(counted: dt.datetime, why: str) -> None:
    issued = min(counted, NOW) - dt.timedelta(hours=2) if "expired" in why else counted
    grant = Grant(
        gate="approval",
        plan=PLAN,
        decisions=approvals(issued),
        counted_at=[counted, counted],
        request={"requested_by": "oncall", "severity": "investigate"},
    )
    with pytest.raises(ApplicationError, match="0 valid signed approval"):
        require(grant)


def test_approvals_for_this_run_do_not_count_in_another() -> None:
    grant = Grant(
        gate="approval",
        plan=PLAN,
        decisions=approvals(NOW),
        counted_at=[NOW, NOW],
        request={"requested_by": "oncall", "severity": "investigate"},
    )
    require(grant)
    with pytest.raises(ApplicationError, match="0 valid signed approval"):
        require(grant, run="run-3")


def test_a_naive_decision_in_a_grant_is_refused_not_a_crash() -> None:
    naive = [
        decision(
            signer,
            issued_at=NOW.replace(tzinfo=None).isoformat(),
            expires_at=(NOW + dt.timedelta(minutes=5)).replace(tzinfo=None).isoformat(),
        )
        for signer in ("sre-lead", "backend-lead")
    ]
    grant = Grant(gate="approval", plan=PLAN, decisions=naive, request={"requested_by": "oncall"})
    with pytest.raises(ApplicationError, match="0 valid signed approval"):
        require(grant)


def test_the_payload_model_refuses_times_without_a_zone() -> None:
    with pytest.raises(ValueError, match="time zone"):
        DecisionPayload.model_validate(fields(issued_at=NOW.replace(tzinfo=None).isoformat()))


ONE = decision()


def judged_with(signed: SignedDecision, seen: set[str] | None = None):
    expected = Expected(WORKFLOW, RUN, "approval", plan_digest(PLAN))
    return judge(signed, "approve", expected, IDENTITIES, NOW, seen or set())


@pytest.mark.parametrize(
    ("signed", "needle"),
    [
        (decision(workflow_id="rollback-default-other"), "names workflow"),
        (decision(gate="switch"), "for gate 'switch'"),
        (decision(decision="reject"), "not a approve"),
        (decision(plan=plan_digest({"other": 1})), "another plan"),
        (
            decision(expires_at=(NOW + dt.timedelta(minutes=31)).isoformat()),
            "valid for longer than 30 minutes",
        ),
        (
            decision(
                issued_at=(NOW + dt.timedelta(minutes=3)).isoformat(),
                expires_at=(NOW + dt.timedelta(minutes=13)).isoformat(),
            ),
            "issued in the future",
        ),
        (
            decision(
                issued_at=(NOW - dt.timedelta(minutes=20)).isoformat(),
                expires_at=(NOW - dt.timedelta(minutes=10)).isoformat(),
            ),
            "expired",
        ),
        (decision(signer="stranger"), "not an identity in the catalog"),
        (
            SignedDecision(payload=ONE.payload, signature=sign(ONE.payload, KEYS["oncall"])),
            "not one of sre-lead's keys",
        ),
        (
            SignedDecision(
                payload=decision().payload.replace(",", ", "),
                signature=sign(decision().payload.replace(",", ", "), KEYS["sre-lead"]),
            ),
            "canonical",
        ),
        (
            SignedDecision(payload=decision().payload, signature=decision(note="other").signature),
            "signature",
        ),
    ],
)
def test_every_check_of_a_decision_refuses_on_its_own(signed: SignedDecision, needle: str) -> None:
    verdict = judged_with(signed)
    assert verdict.counted is False and needle in verdict.reason, verdict.reason


def test_a_nonce_counts_once() -> None:
    once = decision()
    nonce = DecisionPayload.model_validate_json(once.payload).nonce
    assert judged_with(once).counted
    verdict = judged_with(once, {nonce})
    assert verdict.counted is False and "replay" in verdict.reason


def test_the_requester_cannot_approve_and_the_approved_plan_must_be_the_one_carried_out() -> None:
    mine = [decision("oncall"), decision("sre-lead")]
    grant = Grant(
        gate="approval",
        plan=PLAN,
        decisions=mine,
        counted_at=[NOW, NOW],
        request={"requested_by": "oncall", "severity": "investigate"},
    )
    catalog = Catalog(
        identities=IDENTITIES,
        services=[
            ENTRY.model_copy(update={"approval": ApprovalPolicy(approvers=["oncall", "sre-lead"])})
        ],
    )
    gatekeeper = Gatekeeper(catalog, b"k" * 32)
    entry = catalog.services[0]
    with pytest.raises(ApplicationError, match="1 valid signed approval"):
        environment().run(lambda: gatekeeper.require(grant, entry, 2, {}, "undo"))
    with pytest.raises(ApplicationError, match="the approved plan differs in to"):
        environment().run(lambda: gatekeeper.require(grant, entry, 1, {"to": 1}, "undo"))


def start_of(shown: dict, signer: str = "oncall", run: str = RUN) -> SignedDecision:
    return decision(signer, run_id=run, gate="start", decision="start", plan=plan_digest(shown))


REQUEST = {"requested_by": "oncall", "severity": "immediate"}
SHOWN = {"kind": "start", "request": REQUEST, "plan": PLAN}
ONCALL = Catalog(identities=IDENTITIES, services=[ENTRY], oncall_role="oncall")


def immediate(start: SignedDecision, shown: dict = SHOWN, request: dict = REQUEST) -> bool:
    """Whether the gatekeeper lets an immediate change go ahead with no approval."""
    grant = Grant(
        gate="approval",
        plan=PLAN,
        request=request,
        start=start,
        start_counted_at=NOW,
        start_plan=shown,
    )
    gatekeeper = Gatekeeper(ONCALL, b"k" * 32)
    try:
        environment().run(lambda: gatekeeper.require(grant, ENTRY, 0, {}, "undo"))
    except ApplicationError as refused:
        assert "1 needed" in refused.message
        return False
    return True


def test_only_the_on_call_requesters_start_over_this_request_and_plan_needs_no_approval() -> None:
    assert immediate(start_of(SHOWN))
    # Signed by someone else than the request names.
    assert not immediate(start_of(SHOWN, "sre-lead"))
    assert not immediate(start_of(SHOWN, "backup"))  # on call too, but not the requester
    # Over another request than the one carried out (a run started by someone else).
    other_request = {**SHOWN, "request": {**REQUEST, "severity": "investigate"}}
    assert not immediate(start_of(other_request), other_request)
    # Over another plan than the one carried out.
    other_plan = {**SHOWN, "plan": {**PLAN, "to": 1}}
    assert not immediate(start_of(other_plan), other_plan)
    # For another run.
    assert not immediate(start_of(SHOWN, run="run-1"))


def test_an_approval_by_someone_without_an_approver_role_does_not_count() -> None:
    grant = Grant(
        gate="approval",
        plan=PLAN,
        decisions=[decision("oncall")],
        counted_at=[NOW],
        request={"requested_by": "someone", "severity": "investigate"},
    )
    with pytest.raises(ApplicationError, match="0 valid signed approval"):
        require(grant, needed=1)
