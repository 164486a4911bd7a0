"""Decisions made in Slack and signed by the gateway's own key (an attestor's):
they count only as the worker's catalog says, are judged like any other signed
decision, and a person counts once whichever way they approved."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from functools import cache

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.gatekeeper import Gatekeeper
from runbook.attestation import SlackFacts, identity_for_slack, slack_count_problem
from runbook.catalog import ApprovalPolicy, Catalog, ServiceEntry
from runbook.decisions import DecisionPayload, Expected, Grant, SignedDecision, judge, plan_digest
from runbook.signatures import new_private_key, public_key_line, sign

PLAN = {"namespace": "default", "deployment": "tekutoko-api", "to_revision": 2}
WORKFLOW, RUN = "rollback-default-tekutoko-api", "0193a0b2-run-this"
EXPECTED = Expected(WORKFLOW, RUN, "approval", plan_digest(PLAN))
TEAM = "T0MODORU01"
SLACK = {"sre-lead": "U0SRELEAD1", "backend-lead": "U0BACKEND1", "oncall": "U0ONCALL01"}
REQUEST = {
    "namespace": "default",
    "deployment": "tekutoko-api",
    "severity": "investigate",
    "requested_by": "oncall",
}


@cache
def private(name: str) -> bytes:
    return new_private_key()


def catalog(slack_approvals: dict | None = None, **attestor) -> Catalog:
    people = [
        {
            "id": name,
            "display_name": name,
            "roles": [name],
            "keys": [public_key_line(private(name))],
            "slack": {"team": TEAM, "user": user},
        }
        for name, user in SLACK.items()
    ]
    gateway = {
        "name": "slack-gateway",
        "public_key": public_key_line(private("gateway")),
        "identities": ["sre-lead", "backend-lead", "oncall"],
        "gates": ["approval"],
        **attestor,
    }
    entry = ServiceEntry(
        name="tekutoko-api",
        deployment="tekutoko-api",
        service="tekutoko-api",
        approval=ApprovalPolicy(
            approvers=["sre-lead", "backend-lead"],
            slack_approvals={"approval": True} if slack_approvals is None else slack_approvals,
        ),
    )
    return Catalog(services=[entry], identities=people, attestors=[gateway])


def payload(signer="sre-lead", user=None, *, at=None, via="slack", **changes) -> DecisionPayload:
    at = at or dt.datetime.now(dt.UTC).replace(microsecond=0)
    facts = SlackFacts(team=TEAM, user=user or SLACK[signer], action_ts=f"{at.timestamp():.6f}")
    fields = {
        "workflow_id": WORKFLOW,
        "run_id": RUN,
        "gate": "approval",
        "decision": "approve",
        "plan": EXPECTED.plan,
        "signer": signer,
        "issued_at": at - dt.timedelta(seconds=1),
        "expires_at": at + dt.timedelta(minutes=5),
        "nonce": uuid.uuid4().hex,
        **({"via": via, "slack": facts} if via else {}),
        **changes,
    }
    return DecisionPayload(**fields)


def signed(decision: DecisionPayload, key: str = "gateway") -> SignedDecision:
    text = decision.text()
    return SignedDecision(payload=text, signature=sign(text, private(key)))


def judged(decision: SignedDecision, given: Catalog | None = None, as_="approve"):
    given = given or catalog()
    now = dt.datetime.now(dt.UTC)
    return judge(decision, as_, EXPECTED, given.identities, now, set(), given.attestors)


def test_an_attested_approval_counts_for_the_person_and_says_it_was_made_in_slack() -> None:
    verdict = judged(signed(payload()))
    assert verdict.counted and verdict.signer == "sre-lead" and verdict.via == "slack"
    assert verdict.reason.startswith("approved in Slack by sre-lead")
    assert "attested by slack-gateway" in verdict.reason


def test_a_person_s_payload_reads_as_before_without_the_attestation_fields() -> None:
    text = payload(via=None).text()
    assert '"via"' not in text and '"slack"' not in text
    assert judged(signed(payload(via=None), key="sre-lead")).reason == "signed by sre-lead"


WRONG = {
    "the person's key on a Slack payload": (
        signed(payload(), key="sre-lead"),
        "not an attestor's in the catalog",
    ),
    "the gateway's key without via": (signed(payload(via=None)), "not one of sre-lead's keys"),
    "another Slack user than the catalog's": (
        signed(payload(user="U0STRANGER")),
        "not sre-lead's in the catalog",
    ),
    "a start": (signed(payload(decision="start")), "a start is the person's own to sign"),
}


@pytest.mark.parametrize("case", list(WRONG))
def test_an_attestation_wrong_in_one_way_does_not_count(case) -> None:
    decision, words = WRONG[case]
    verdict = judged(decision, as_="start" if case == "a start" else "approve")
    assert not verdict.counted and words in verdict.reason


def test_an_attestor_speaks_only_for_its_identities_and_gates() -> None:
    only_backend = catalog(identities=["backend-lead"])
    assert "may not speak for sre-lead" in judged(signed(payload()), only_backend).reason
    other_gate = catalog(gates=["clone"])
    assert "may not attest at gate 'approval'" in judged(signed(payload()), other_gate).reason


def test_a_catalog_refuses_attestors_that_would_blur_who_is_who() -> None:
    with pytest.raises(ValueError, match="never a person's"):
        catalog(public_key=public_key_line(private("sre-lead")))
    with pytest.raises(ValueError, match="identities the catalog does not"):
        catalog(identities=["nobody"])
    twice = catalog().model_dump()
    twice["identities"][1]["slack"] = twice["identities"][0]["slack"]
    with pytest.raises(ValueError, match="listed under two identities"):
        Catalog.model_validate(twice)


def test_slack_accounts_map_to_identities_by_team_and_user() -> None:
    people = catalog().identities
    assert identity_for_slack(people, TEAM, "U0SRELEAD1").id == "sre-lead"  # type: ignore[union-attr]
    assert identity_for_slack(people, "T0OTHERTEAM", "U0SRELEAD1") is None
    assert identity_for_slack(people, TEAM, "U0STRANGER") is None


def test_the_service_says_per_gate_whether_slack_counts() -> None:
    assert slack_count_problem({"approval": True}, "approval", 5) == ""
    assert "do not count" in slack_count_problem({}, "approval", 0)
    assert "do not count" in slack_count_problem({"approval": False}, "approval", 0)
    assert slack_count_problem({"clone": "at_most_one"}, "clone", 0) == ""
    assert "at most one" in slack_count_problem({"clone": "at_most_one"}, "clone", 1)


def require(given: Catalog, *decisions: SignedDecision, needed: int = 1) -> None:
    keeper = Gatekeeper(given, b"s" * 32)
    now = dt.datetime.now(dt.UTC)
    grant = Grant(
        gate="approval",
        plan=PLAN,
        decisions=list(decisions),
        counted_at=[now] * len(decisions),
        request_kind="rollback",
        request=REQUEST,
    )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=WORKFLOW, workflow_run_id=RUN)
    env.run(keeper.require, grant, given.services[0], needed, {"to_revision": 2}, "roll back")


def test_the_gatekeeper_counts_a_person_once_across_slack_and_the_cli() -> None:
    require(catalog(), signed(payload()))
    both = (signed(payload()), signed(payload(via=None), key="sre-lead"))
    with pytest.raises(ApplicationError, match="1 valid signed approval"):
        require(catalog(), *both, needed=2)
    require(
        catalog(),
        signed(payload()),
        signed(payload("backend-lead", via=None), key="backend-lead"),
        needed=2,
    )


def test_the_gatekeeper_follows_its_own_catalog_s_slack_policy() -> None:
    with pytest.raises(ApplicationError, match="0 valid signed approval"):
        require(catalog(slack_approvals={}), signed(payload()))
    two_in_slack = (signed(payload()), signed(payload("backend-lead")))
    with pytest.raises(ApplicationError, match="1 valid signed approval"):
        require(catalog(slack_approvals={"approval": "at_most_one"}), *two_in_slack, needed=2)
    require(catalog(), *two_in_slack, needed=2)


def test_the_postmortem_says_an_approval_was_made_in_slack() -> None:
    from runbook.models import AuditEntry, Phase, RollbackStatus, Severity
    from runbook.postmortem import rollback_events

    at = dt.datetime(2026, 11, 29, 3, 12, tzinfo=dt.UTC)
    status = RollbackStatus(
        workflow_id=WORKFLOW,
        phase=Phase.COMPLETED,
        namespace="default",
        deployment="tekutoko-api",
        severity=Severity.INVESTIGATE,
        requested_by="oncall",
        reason="error rate 60%",
        detected_at=at,
        sla_deadline=at + dt.timedelta(minutes=15),
        audit=[
            AuditEntry(
                at=at,
                actor="sre-lead",
                action="approve",
                counted=True,
                detail="approved in Slack by sre-lead (Slack user U0SRELEAD1 of T0MODORU01, "
                "attested by slack-gateway)",
            ),
            AuditEntry(
                at=at,
                actor="backend-lead",
                action="approve",
                counted=True,
                detail="signed by backend-lead (approved in Slack by nobody)",
            ),
        ],
    )
    english = [text for _, text in rollback_events(status, "en")]
    assert "Approved in Slack by sre-lead" in english
    assert "Approved: backend-lead" in english  # a comment does not make a CLI approval Slack's
    assert "Slackで承認: sre-lead" in [text for _, text in rollback_events(status, "ja")]


def test_a_payload_names_slack_facts_exactly_when_it_was_made_in_slack() -> None:
    made = payload().model_dump()
    with pytest.raises(ValueError, match="names its Slack facts"):
        DecisionPayload(**{**made, "slack": None})
    with pytest.raises(ValueError, match="names its Slack facts"):
        DecisionPayload(**{**made, "via": None})


def test_an_attestor_is_listed_once_by_name_and_by_key() -> None:
    twice = catalog().model_dump()
    twice["attestors"].append(
        {**twice["attestors"][0], "public_key": public_key_line(private("x"))}
    )
    with pytest.raises(ValueError, match="listed twice"):
        Catalog.model_validate(twice)
    same_key = catalog().model_dump()
    same_key["attestors"].append({**same_key["attestors"][0], "name": "another-gateway"})
    with pytest.raises(ValueError, match="listed twice"):
        Catalog.model_validate(same_key)
