"""Each check `runbook.decisions.judge` makes, one test each: a decision that is
right in every way but one is not counted, and the reason names the one. With
any single check taken out (bench/mutation.py does that, one at a time) at least
one of these fails: a check no test holds is a check that can quietly go."""

from __future__ import annotations

import datetime as dt
import uuid
from functools import cache

import pytest

from runbook.decisions import (
    CLOCK_SKEW,
    MAX_VALIDITY,
    DecisionPayload,
    Expected,
    SignedDecision,
    judge,
    plan_digest,
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
