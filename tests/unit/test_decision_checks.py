"""Each check `runbook.decisions.judge` makes, one test each: a decision that is
right in every way but one is not counted, and the reason names the one. With
any single check taken out (bench/mutation.py does that, one at a time) at least
one of these fails: a check no test holds is a check that can quietly go."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from functools import cache

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.gatekeeper import Gatekeeper
from runbook.catalog import ApprovalPolicy, Catalog, ServiceEntry
from runbook.decisions import (
    CLOCK_SKEW,
    GUARD_SEAL_VALIDITY,
    MAX_COUNTED_AGE,
    MAX_VALIDITY,
    SEAL_VERSION,
    DecisionPayload,
    Expected,
    Grant,
    SignedDecision,
    counted_moment_problem,
    guard_id_for,
    has_role,
    judge,
    plan_digest,
    rollback_id_for,
    seal_problem,
)
from runbook.identity import Identity
from runbook.signatures import new_private_key, public_key_line, sign

NOW = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.UTC)
PLAN = {"namespace": "default", "deployment": "tekutoko-api", "to_revision": 2}
EXPECTED = Expected(
    workflow_id="rollback-default-tekutoko-api",
    run_id="0193a0b2-run-this",
    gate="approval",
    plan=plan_digest(PLAN),
)


@cache
def private(name: str) -> bytes:
    return new_private_key()


def identities() -> list[Identity]:
    return [
        Identity(
            id=name,
            display_name=name.title(),
            roles=[name],
            keys=[public_key_line(private(name))],
        )
        for name in ("sre-lead", "backend-lead")
    ]


def payload(**changes) -> DecisionPayload:
    fields = {
        "workflow_id": EXPECTED.workflow_id,
        "run_id": EXPECTED.run_id,
        "gate": EXPECTED.gate,
        "decision": "approve",
        "plan": EXPECTED.plan,
        "signer": "sre-lead",
        "issued_at": NOW - dt.timedelta(minutes=1),
        "expires_at": NOW + dt.timedelta(minutes=9),
        "nonce": uuid.uuid4().hex,
        **changes,
    }
    return DecisionPayload(**fields)


def signed(decision: DecisionPayload, key: str = "sre-lead") -> SignedDecision:
    text = decision.text()
    return SignedDecision(payload=text, signature=sign(text, private(key)))


def verdict(decision: SignedDecision, *, as_: str = "approve", seen: set[str] | None = None):
    return judge(decision, as_, EXPECTED, identities(), NOW, seen or set())  # type: ignore[arg-type]


def test_a_decision_right_in_every_way_counts_and_names_its_signer() -> None:
    judged = verdict(signed(payload()))
    assert (judged.counted, judged.signer, judged.reason) == (
        True,
        "sre-lead",
        "signed by sre-lead",
    )
    assert judged.payload is not None and judged.payload.plan == EXPECTED.plan


def test_the_limits_themselves_still_count() -> None:
    """A payload valid for exactly the longest validity, issued at the edge of the clock
    skew, and one that expires a second from now: each counts."""
    longest = payload(issued_at=NOW - dt.timedelta(minutes=5))
    longest = payload(issued_at=longest.issued_at, expires_at=longest.issued_at + MAX_VALIDITY)
    edge = payload(
        issued_at=NOW + CLOCK_SKEW, expires_at=NOW + CLOCK_SKEW + dt.timedelta(minutes=1)
    )
    last_second = payload(expires_at=NOW + dt.timedelta(seconds=1))
    for decision in (longest, edge, last_second):
        assert verdict(signed(decision)).counted, decision


# One row per check: what is wrong, and the words the reason says it with.
WRONG_IN_ONE_WAY = {
    "decision": (payload(decision="reject"), "it is a reject, not a approve"),
    "workflow": (
        payload(workflow_id="rollback-staging-tekutoko-api"),
        "it names workflow rollback-staging-tekutoko-api",
    ),
    "run": (payload(run_id="0193a0b2-run-other"), "it names run 0193a0b2-run-other, not this run"),
    "gate": (payload(gate="switch"), "it is for gate 'switch', not 'approval'"),
    "plan": (
        payload(plan=plan_digest({**PLAN, "to_revision": 1})),
        "it approves another plan than the one this run would carry out",
    ),
    "validity length": (
        payload(expires_at=NOW - dt.timedelta(minutes=1) + MAX_VALIDITY + dt.timedelta(seconds=1)),
        "it is valid for longer than 30 minutes",
    ),
    "future issue": (
        payload(
            issued_at=NOW + CLOCK_SKEW + dt.timedelta(seconds=1),
            expires_at=NOW + dt.timedelta(minutes=10),
        ),
        "it is issued in the future",
    ),
    "expiry": (
        payload(issued_at=NOW - dt.timedelta(minutes=20), expires_at=NOW),
        f"it expired at {NOW.isoformat()}",
    ),
}


@pytest.mark.parametrize("check", list(WRONG_IN_ONE_WAY))
def test_a_decision_wrong_in_one_way_is_not_counted_and_says_which(check: str) -> None:
    decision, words = WRONG_IN_ONE_WAY[check]
    judged = verdict(signed(decision))
    assert not judged.counted
    # The signer is known (the signature held) and the reason is this one problem alone.
    assert judged.reason == f"signed by sre-lead, but {words}", judged.reason
    assert judged.signer == "sre-lead"


def test_a_reused_nonce_is_a_replay() -> None:
    once = signed(payload())
    nonce = DecisionPayload.model_validate_json(once.payload).nonce
    assert verdict(once).counted
    judged = verdict(once, seen={nonce})
    assert not judged.counted and judged.reason == (
        "signed by sre-lead, but its nonce was used before (a replay)"
    )


def test_a_signature_over_another_payload_does_not_verify() -> None:
    """The approver signed one payload; a relay sends another under the same signature."""
    made = signed(payload(plan=plan_digest({**PLAN, "to_revision": 1})))
    swapped = SignedDecision(payload=payload().text(), signature=made.signature)
    judged = verdict(swapped)
    assert not judged.counted and judged.reason.startswith("the signature does not verify")
    assert judged.signer == ""


def test_a_signer_the_catalog_does_not_list_is_nobody() -> None:
    judged = verdict(signed(payload(signer="intern"), key="intern"))
    assert not judged.counted and judged.reason == "'intern' is not an identity in the catalog"


def test_a_key_that_is_not_the_signer_s_does_not_speak_for_them() -> None:
    """backend-lead's own key, claiming to be sre-lead."""
    judged = verdict(signed(payload(), key="backend-lead"))
    assert not judged.counted and judged.reason == (
        "the signing key is not one of sre-lead's keys in the catalog"
    )
    stranger = verdict(signed(payload(), key="stranger"))
    assert not stranger.counted and "not one of sre-lead's keys" in stranger.reason


def test_a_payload_not_in_canonical_form_is_not_counted() -> None:
    text = payload().text().replace(",", ", ")
    judged = verdict(SignedDecision(payload=text, signature=sign(text, private("sre-lead"))))
    assert not judged.counted and "canonical form" in judged.reason


def test_an_unreadable_payload_is_not_counted() -> None:
    text = '{"v":1,"workflow_id":"rollback-default-tekutoko-api"}'
    judged = verdict(SignedDecision(payload=text, signature=sign(text, private("sre-lead"))))
    assert not judged.counted and judged.reason.startswith("unreadable decision payload")


def test_every_problem_is_named_at_once() -> None:
    """Several problems: each is said, so a person fixes them in one go."""
    decision = payload(
        workflow_id="rollback-staging-tekutoko-api", gate="switch", decision="reject"
    )
    judged = verdict(signed(decision))
    assert not judged.counted
    for words in ("it is a reject", "names workflow", "for gate 'switch'"):
        assert words in judged.reason


# -- judging never crashes ------------------------------------------------------------


def test_a_payload_whose_times_have_no_time_zone_is_unreadable_not_a_crash() -> None:
    text = payload().text().replace("+00:00", "").replace("Z", "")
    assert '"issued_at":"2026-12-07T02:59:00"' in text
    judged = verdict(SignedDecision(payload=text, signature=sign(text, private("sre-lead"))))
    assert not judged.counted and judged.reason.startswith("unreadable decision payload")
    assert "time zone" in judged.reason


def test_a_decision_judged_at_a_time_without_a_time_zone_is_not_counted() -> None:
    naive = NOW.replace(tzinfo=None)
    judged = judge(signed(payload()), "approve", EXPECTED, identities(), naive, set())
    assert not judged.counted and "without a time zone" in judged.reason


def test_anything_that_breaks_while_judging_is_not_counted_with_the_reason() -> None:
    broken = [object()]  # not an identity: looking the signer up raises
    judged = judge(signed(payload()), "approve", EXPECTED, broken, NOW, set())  # type: ignore[list-item]
    assert not judged.counted and judged.reason.startswith("the decision could not be judged")


def test_only_an_identity_holding_a_role_has_it() -> None:
    people = identities()
    assert has_role(people, "sre-lead", ["sre-lead"])
    assert not has_role(people, "sre-lead", ["backend-lead"])
    assert not has_role(people, "intern", ["sre-lead"])


# -- the moment a workflow counted a decision ------------------------------------------


@pytest.mark.parametrize(
    ("at", "words"),
    [
        (None, "did not say when"),
        (NOW.replace(tzinfo=None), "no time zone"),
        (NOW + CLOCK_SKEW + dt.timedelta(seconds=1), "in the future"),
        (NOW - MAX_COUNTED_AGE - dt.timedelta(seconds=1), "too long ago"),
    ],
)
def test_a_counted_moment_an_activity_must_not_judge_at(at, words: str) -> None:
    assert words in counted_moment_problem(at, NOW)


def test_a_counted_moment_within_the_change_s_lifetime_is_judged_at() -> None:
    for at in (NOW, NOW + CLOCK_SKEW, NOW - MAX_COUNTED_AGE):
        assert counted_moment_problem(at, NOW) == ""


# -- the release guard's seal ----------------------------------------------------------

ROLLBACK_ID = rollback_id_for("default", "tekutoko-api")


def facts(**changes) -> dict:
    return {
        "v": SEAL_VERSION,
        "guard": guard_id_for("default", "tekutoko-api"),
        "guard_run": "0193a0b2-guard-run",
        "rollback": ROLLBACK_ID,
        "plan": plan_digest(PLAN),
        "namespace": "default",
        "deployment": "tekutoko-api",
        "severity": "immediate",
        "breach_at": (NOW - dt.timedelta(minutes=2)).isoformat(),
        "sealed_at": (NOW - dt.timedelta(minutes=1)).isoformat(),
        **changes,
    }


def test_sealed_facts_that_start_this_rollback_hold() -> None:
    assert seal_problem(facts(), ROLLBACK_ID, PLAN, NOW) == ""


SEALS_WRONG_IN_ONE_WAY = {
    "version": (facts(v=1), "not one this worker makes"),
    "deployment": (facts(namespace="staging"), "for another Deployment"),
    "guard": (facts(guard="guard-default-other"), "this Deployment's release guard"),
    "guard run": (facts(guard_run=""), "this Deployment's release guard and its run"),
    "rollback": (facts(rollback="rollback-default-tekutoko-api-2"), "is for workflow"),
    "plan": (facts(plan=plan_digest({**PLAN, "to_revision": 1})), "another plan"),
    "severity": (facts(severity="investigate"), "not immediate"),
    "time zone": (facts(breach_at="2026-12-07T02:58:00"), "no time zone"),
    "breach after sealing": (
        facts(breach_at=(NOW - dt.timedelta(seconds=30)).isoformat()),
        "later than its sealing",
    ),
    "sealed in the future": (
        facts(
            breach_at=NOW.isoformat(),
            sealed_at=(NOW + CLOCK_SKEW + dt.timedelta(seconds=1)).isoformat(),
        ),
        "dated in the future",
    ),
    "old seal": (
        facts(
            breach_at=(NOW - GUARD_SEAL_VALIDITY - dt.timedelta(minutes=2)).isoformat(),
            sealed_at=(NOW - GUARD_SEAL_VALIDITY - dt.timedelta(seconds=1)).isoformat(),
        ),
        "older than 30 minutes",
    ),
}


@pytest.mark.parametrize("check", list(SEALS_WRONG_IN_ONE_WAY))
def test_sealed_facts_wrong_in_one_way_do_not_start_this_rollback(check: str) -> None:
    sealed, words = SEALS_WRONG_IN_ONE_WAY[check]
    assert words in seal_problem(sealed, ROLLBACK_ID, PLAN, NOW)


def test_sealed_facts_that_cannot_be_read_are_refused_not_a_crash() -> None:
    assert "could not be read" in seal_problem(None, ROLLBACK_ID, PLAN, NOW)  # type: ignore[arg-type]


# -- the gatekeeper: the checks a changing activity makes again ------------------------

RUN = EXPECTED.run_id
REQUEST = {"deployment": "tekutoko-api", "reason": "error rate 60%", "requested_by": "oncall"}


def catalog() -> Catalog:
    people = [
        *identities(),
        Identity(
            id="oncall",
            display_name="On call",
            roles=["oncall"],
            keys=[public_key_line(private("oncall"))],
        ),
    ]
    return Catalog(
        identities=people,
        services=[
            ServiceEntry(
                name="tekutoko-api",
                deployment="tekutoko-api",
                service="tekutoko-api",
                approval=ApprovalPolicy(approvers=["sre-lead", "backend-lead"]),
            )
        ],
    )


def fresh(signer: str = "sre-lead", at: dt.datetime | None = None, **changes) -> SignedDecision:
    """A decision made at `at` (default: the wall clock now, as the gatekeeper judges)."""
    at = at or dt.datetime.now(dt.UTC).replace(microsecond=0)
    return signed(
        payload(
            signer=signer,
            issued_at=at - dt.timedelta(minutes=1),
            expires_at=at + dt.timedelta(minutes=9),
            **changes,
        ),
        key=signer,
    )


def start_plan(request: dict | None = None, plan: dict | None = None) -> dict:
    return {
        "kind": "start",
        "workflow": "RollbackRequest",
        "request": REQUEST if request is None else request,
        "plan": PLAN if plan is None else plan,
    }


def started(signer: str = "oncall", signed_plan: dict | None = None, **changes) -> dict:
    """The grant's parts for a requester's start signed at this run's start gate."""
    over = signed_plan or start_plan()
    return {
        "start": fresh(signer, gate="start", decision="start", plan=plan_digest(over), **changes),
        "start_counted_at": dt.datetime.now(dt.UTC),
        "start_plan": over,
    }


def grant(*decisions: SignedDecision, counted_at: list | None = None, **changes) -> Grant:
    now = dt.datetime.now(dt.UTC)
    fields = {
        "gate": "approval",
        "plan": PLAN,
        "decisions": list(decisions),
        "counted_at": [now] * len(decisions) if counted_at is None else counted_at,
        "request_kind": "rollback",
        "request": REQUEST,
        **changes,
    }
    return Grant(**fields)


def require(
    given: Grant | None,
    needed: int = 1,
    facts: dict | None = None,
    seal_key: bytes = b"s" * 32,
    entry: bool = True,
) -> None:
    keeper = Gatekeeper(catalog(), seal_key)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=EXPECTED.workflow_id, workflow_run_id=RUN)
    env.run(
        keeper.require,
        given,
        keeper.catalog.services[0] if entry else None,
        needed,
        {"to_revision": 2} if facts is None else facts,
        "roll back",
    )


def refused(words: str, *args, **kwargs) -> None:
    with pytest.raises(ApplicationError, match=words) as caught:
        require(*args, **kwargs)
    assert caught.value.non_retryable


def test_the_gatekeeper_lets_a_change_approved_for_this_run_and_plan_go() -> None:
    require(grant(fresh("sre-lead")))
    require(grant(fresh("sre-lead"), fresh("backend-lead")), needed=2)


def test_the_gatekeeper_refuses_what_came_without_a_grant_or_a_catalog_entry() -> None:
    refused("no signed approval came with the request", None)
    refused("not in this worker's catalog", grant(fresh()), entry=False)


def test_the_gatekeeper_refuses_facts_the_plan_does_not_hold() -> None:
    refused("the approved plan differs in to_revision", grant(fresh()), facts={"to_revision": 1})


def test_the_gatekeeper_counts_only_valid_approvals_by_approvers_other_than_the_requester() -> None:
    refused("0 valid signed approval", grant(fresh(plan=plan_digest({**PLAN, "to_revision": 1}))))
    refused("0 valid signed approval", grant(fresh("oncall")))  # the requester
    theirs = {**REQUEST, "requested_by": "backend-lead"}
    refused("0 valid signed approval", grant(fresh("oncall"), request=theirs))  # not an approver
    mine = {**REQUEST, "requested_by": "sre-lead"}
    refused("0 valid signed approval", grant(fresh("sre-lead"), request=mine))


def test_the_gatekeeper_counts_a_nonce_once() -> None:
    nonce = uuid.uuid4().hex
    twice = grant(fresh("sre-lead", nonce=nonce), fresh("backend-lead", nonce=nonce))
    refused("1 valid signed approval", twice, needed=2)


def test_the_gatekeeper_judges_at_the_counted_moment_within_the_change_s_lifetime() -> None:
    now = dt.datetime.now(dt.UTC)
    long_ago = now - MAX_COUNTED_AGE - dt.timedelta(minutes=1)
    refused("0 valid", grant(fresh(at=long_ago), counted_at=[long_ago]))
    ahead = now + dt.timedelta(hours=1)
    refused("0 valid", grant(fresh(at=ahead), counted_at=[ahead]))
    hours_ago = now - dt.timedelta(hours=2)  # approved, then a two-hour clone: still good
    require(grant(fresh(at=hours_ago), counted_at=[hours_ago]))


def test_without_approvals_only_an_on_call_start_for_this_run_and_plan_lets_a_change_go() -> None:
    require(grant(**started()), needed=0)
    refused("0 valid signed approval", grant(), needed=0)  # no start: one approval needed
    refused("1 needed", grant(**{**started(), "start_counted_at": None}), needed=0)
    refused("1 needed", grant(**started(run_id="0193a0b2-run-other")), needed=0)
    refused(
        "1 needed",
        grant(**started(signed_plan=start_plan(plan={**PLAN, "to_revision": 1}))),
        needed=0,
    )
    other_request = {**REQUEST, "reason": "another reason"}
    refused("1 needed", grant(**started(signed_plan=start_plan(request=other_request))), needed=0)
    # sre-lead's own start is no on-call start; oncall's signature does not make sre-lead on call
    theirs = {**REQUEST, "requested_by": "sre-lead"}
    refused(
        "1 needed",
        grant(request=theirs, **started("sre-lead", signed_plan=start_plan(request=theirs))),
        needed=0,
    )
    refused(
        "1 needed",
        grant(request=theirs, **started("oncall", signed_plan=start_plan(request=theirs))),
        needed=0,
    )


def test_without_approvals_a_genuine_recent_guard_seal_over_this_rollback_lets_it_go() -> None:
    now = dt.datetime.now(dt.UTC)
    sealed = facts(
        rollback=EXPECTED.workflow_id,
        breach_at=(now - dt.timedelta(minutes=1)).isoformat(),
        sealed_at=now.isoformat(),
    )
    key = b"s" * 32
    seal = Gatekeeper(catalog(), key).seal(sealed)
    require(grant(guard_seal=seal, guard_facts=sealed, seal_counted_at=now), needed=0)
    forged = Gatekeeper(catalog(), b"f" * 32).seal(sealed)
    refused("1 needed", grant(guard_seal=forged, guard_facts=sealed, seal_counted_at=now), needed=0)
    refused("1 needed", grant(guard_seal=seal, guard_facts=sealed), needed=0)  # never counted
    later = now + dt.timedelta(hours=1)  # sealed and "counted" an hour from now
    ahead = {
        **sealed,
        "breach_at": (later - dt.timedelta(minutes=1)).isoformat(),
        "sealed_at": later.isoformat(),
    }
    ahead_seal = Gatekeeper(catalog(), key).seal(ahead)
    refused(
        "1 needed", grant(guard_seal=ahead_seal, guard_facts=ahead, seal_counted_at=later), needed=0
    )
    other = {**sealed, "plan": plan_digest({**PLAN, "to_revision": 1})}
    other_seal = Gatekeeper(catalog(), key).seal(other)
    refused(
        "1 needed", grant(guard_seal=other_seal, guard_facts=other, seal_counted_at=now), needed=0
    )
