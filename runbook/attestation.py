"""Decisions attested by a gateway rather than signed by the person. The Slack
gateway holds no one's key: when a person clicks Approve in Slack, it checks
Slack's request signature, maps the Slack team and user to a catalog identity
and checks the gate, then signs a decision payload that records `via: "slack"`
and the Slack facts (team, user, action time) with its own SSH key.

Such a decision counts only where the worker's own catalog says so: the key must
be an attestor's listed there, the identity one the attestor may speak for, the
gate one of the attestor's gates, the Slack account the one the catalog gives
that identity, and the service's approval policy must let Slack-attested
approvals count at that gate (`slack_approvals: {approval: true, clone:
at_most_one}`; absent: they do not). The identity is the person: an approval in
Slack and one by the CLI from the same person count once."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .identity import ID_PATTERN, Identity, SlackAccount, key_identity, normalize_id

SlackCount = bool | Literal["at_most_one"]
ATTESTABLE = ("approve", "reject")  # never a start or a stop: those are the person's own


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class SlackFacts(SlackAccount):
    """What Slack said about a click, as the gateway recorded it in the payload."""

    action_ts: str = Field(pattern=r"^[0-9]{1,12}(\.[0-9]{1,6})?$")


class Attestor(Strict):
    """A gateway that may sign decisions on behalf of the catalog identities it lists,
    at the gates it lists, with its own key (ed25519 preferred)."""

    name: str = Field(pattern=ID_PATTERN)
    public_key: str
    identities: list[str] = Field(min_length=1)
    gates: list[str] = Field(min_length=1, description="e.g. [approval, clone, switch]")

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        return key_identity(value)

    @field_validator("identities")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        return [normalize_id(v) for v in value]


def check_attestors(identities: list[Identity], attestors: list[Attestor]) -> None:
    """ValueError when an attestor's key is a person's, an attestor names an identity
    the catalog does not list, two attestors share a name or key, or two identities
    claim one Slack account."""
    people_keys = {key: i.id for i in identities for key in i.keys}
    ids = {i.id for i in identities}
    names: set[str] = set()
    keys: set[str] = set()
    for attestor in attestors:
        if attestor.name in names or attestor.public_key in keys:
            raise ValueError(f"attestor {attestor.name!r} is listed twice (by name or by key)")
        names.add(attestor.name)
        keys.add(attestor.public_key)
        if attestor.public_key in people_keys:
            raise ValueError(
                f"attestor {attestor.name!r} signs with {people_keys[attestor.public_key]!r}'s "
                "key: a gateway has its own key, never a person's"
            )
        unknown = [who for who in attestor.identities if who not in ids]
        if unknown:
            raise ValueError(
                f"attestor {attestor.name!r} lists identities the catalog does not: "
                f"{', '.join(unknown)}"
            )
    accounts: dict[tuple[str, str], str] = {}
    for identity in identities:
        if identity.slack is None:
            continue
        account = (identity.slack.team, identity.slack.user)
        if account in accounts:
            raise ValueError(
                f"Slack user {account[1]} of {account[0]} is listed under two identities "
                f"({accounts[account]!r} and {identity.id!r})"
            )
        accounts[account] = identity.id


def identity_for_slack(identities: list[Identity], team: str, user: str) -> Identity | None:
    """The catalog identity whose Slack account is `user` in workspace `team`, or None."""
    return next(
        (
            i
            for i in identities
            if i.slack is not None and (i.slack.team, i.slack.user) == (team, user)
        ),
        None,
    )


def attestation_problem(
    key: str,
    identity: Identity,
    facts: SlackFacts | None,
    decision: str,
    gate: str,
    attestors: list[Attestor],
) -> tuple[str, str]:
    """(the attestor's name, "") when `key` is an attestor's that may speak for
    `identity` at `gate` about this Slack account; ("", why not) otherwise."""
    attestor = next((a for a in attestors if a.public_key == key), None)
    if attestor is None:
        return "", "the signing key is not an attestor's in the catalog"
    if decision not in ATTESTABLE:
        return attestor.name, f"a {decision} is the person's own to sign; no attestor may"
    if identity.id not in attestor.identities:
        return attestor.name, f"attestor {attestor.name} may not speak for {identity.id}"
    if gate not in attestor.gates:
        return attestor.name, f"attestor {attestor.name} may not attest at gate {gate!r}"
    if (
        facts is None
        or identity.slack is None
        or (facts.team, facts.user)
        != (
            identity.slack.team,
            identity.slack.user,
        )
    ):
        return attestor.name, (
            f"the Slack account in the payload is not {identity.id}'s in the catalog"
        )
    return attestor.name, ""


def slack_count_problem(policy: dict[str, SlackCount], gate: str, slack_counted: int) -> str:
    """Why one more Slack-attested approval does not count at `gate` ("" when it does),
    `slack_counted` of them having counted there already."""
    allowed = policy.get(gate, False)
    if allowed is False:
        return f"Slack approvals do not count at gate {gate!r} for this service (slack_approvals)"
    if allowed == "at_most_one" and slack_counted >= 1:
        return f"at most one Slack approval counts at gate {gate!r}; the next comes by the CLI"
    return ""
