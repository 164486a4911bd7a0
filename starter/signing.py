"""Signing decisions from the CLI: the payload a person signs (this run, this
gate, the digest of the plan shown, who, when, until when, a nonce), signed
with their SSH key here (`--key`), or printed (`--payload`) for stock
`ssh-keygen -Y sign -n modoru` and sent back with `--signature`. The four
options are declared once here (`@signing_options`) for every command that
takes a signed decision."""

from __future__ import annotations

import datetime as dt
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import typer
from pydantic import BaseModel

from runbook.decisions import Decision, DecisionPayload, GateView, SignedDecision, plan_digest
from runbook.plans import start_request
from runbook.signatures import sign

from .base import CliError, fail
from .option_groups import Table, option_group

VALIDITY = dt.timedelta(minutes=10)
PASSPHRASE_ENV = "MODORU_KEY_PASSPHRASE"


def payload_for(gate: GateView, decision: Decision, signer: str, note: str = "") -> DecisionPayload:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return DecisionPayload(
        workflow_id=gate.workflow_id,
        run_id=gate.run_id,
        gate=gate.gate,
        decision=decision,
        plan=gate.digest,
        signer=signer,
        issued_at=now,
        expires_at=now + VALIDITY,
        nonce=uuid.uuid4().hex,
        note=note,
    )


def sign_with_key(payload: str, key: Path) -> SignedDecision:
    try:
        private = key.expanduser().read_bytes()
    except OSError as exc:
        raise CliError(f"--key: cannot read {key}: {exc.strerror}") from None
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        armored = sign(payload, private, passphrase.encode() if passphrase else None)
    except (ValueError, TypeError) as exc:
        hint = (
            ""
            if passphrase
            else f" (a key with a passphrase: set {PASSPHRASE_ENV}, or sign with --payload and "
            "ssh-keygen -Y sign -n modoru)"
        )
        raise CliError(f"--key: cannot sign with {key}: {exc}{hint}") from None
    return SignedDecision(payload=payload, signature=armored)


def read_signature(signature: Path, payload_file: Path | None) -> SignedDecision:
    """A signature made by ssh-keygen over a payload file (by default the signature's
    path without `.sig`, as ssh-keygen names it)."""
    source = payload_file or (signature.with_suffix("") if signature.suffix == ".sig" else None)
    if source is None:
        raise CliError("--signature: give --payload-file too (the file that was signed)")
    try:
        return SignedDecision(
            payload=source.read_text(encoding="utf-8"),
            signature=signature.read_text(encoding="ascii"),
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--signature: cannot read {signature} or {source}: {exc}") from None


def start_gate_problem(gate: GateView, request: BaseModel, workflow_id: str, run_id: str) -> str:
    """Why the CLI must not sign `gate` as the start of `request` ("" when it may): it is
    the start gate of `workflow_id`'s current run `run_id`, its digest is its plan's, and
    the request it shows is exactly the one this CLI made (a run someone else started under
    the same id shows another)."""
    if gate.gate != "start":
        return f"the gate is {gate.gate!r}, not the start"
    if gate.workflow_id != workflow_id:
        return f"the gate is for workflow {gate.workflow_id}, not {workflow_id}"
    if gate.run_id != run_id:
        return "the gate is not for the workflow's current run"
    if gate.digest != plan_digest(gate.plan):
        return "the gate's digest is not its plan's"
    if gate.plan.get("request") != start_request(request):
        return "the run shows another request than the one given here"
    return ""


def signed_start(gate: GateView, request: BaseModel, key: Path) -> SignedDecision:
    """The requester's start, signed over a run's start gate (the request and its plan)."""
    return sign_with_key(payload_for(gate, "start", request.requested_by).text(), key)  # type: ignore[attr-defined]


def sign_start(request: BaseModel, workflow_id: str, key: Path | None) -> None:
    """Before anything starts: --key can sign (a readable, usable private key), or one
    line saying why not. The start itself is signed once the run shows its start gate."""
    if key is None:
        return
    try:
        sign_with_key("modoru: the key signs", key)
    except CliError as exc:
        raise fail(str(exc)) from None


KEY_HELP = (
    "Your SSH private key (ed25519): signs the decision, as the catalog's identities require."
)
SIGNING: Table = {
    "key": (Path | None, typer.Option(None, help=KEY_HELP)),
    "payload": (
        bool,
        typer.Option(
            False,
            "--payload",
            help="Print the payload to sign (ssh-keygen -Y sign -n modoru) and exit.",
        ),
    ),
    "signature": (
        Path | None,
        typer.Option(
            None,
            help="A signature made with ssh-keygen over the --payload output (FILE.sig of FILE).",
        ),
    ),
    "payload_file": (
        Path | None,
        typer.Option(
            None, help="The signed payload, when it is not the signature's path without .sig."
        ),
    ),
}


class Printed:
    """`--payload`: the payload to sign went to stdout, and the command ends there (exit 0)."""


PRINTED = Printed()


@dataclass(frozen=True)
class SigningOptions:
    """How a person signs a decision: --key, --payload, or --signature (with --payload-file)."""

    key: Path | None = None
    payload: bool = False
    signature: Path | None = None
    payload_file: Path | None = None

    def check(self) -> None:
        """At most one way to sign; a one-line refusal otherwise."""
        if sum(bool(x) for x in (self.key, self.payload, self.signature)) > 1:
            raise fail("give one of --key, --payload and --signature")

    def sign(
        self,
        gate: GateView | None,
        decision: Decision,
        signer: str,
        note: str,
        *,
        no_gate: CliError,
        only_signed: str | None = None,
    ) -> SignedDecision | Printed | None:
        """The decision signed with --key, or the --signature given; PRINTED after printing the
        payload for --payload; None for an unsigned decision. `no_gate` is raised when there is
        nothing to sign; `only_signed` ("guard counts signed stops") refuses an unsigned one."""
        if self.key or self.payload:
            if gate is None:
                raise no_gate
            text = payload_for(gate, decision, signer, note).text()
            if self.payload:
                sys.stdout.write(text)  # no newline: ssh-keygen signs the file's exact bytes
                return PRINTED
            return sign_with_key(text, self.key)  # type: ignore[arg-type]
        if self.signature:
            return read_signature(self.signature, self.payload_file)
        if only_signed:
            raise CliError(
                f"this {only_signed} only: add --key ~/.ssh/id_ed25519 (or --payload, then "
                "--signature)"
            )
        return None


# @signing_options(without=..., own_after=..., **declarations): see starter/option_groups.py.
signing_options = option_group(SigningOptions, SIGNING)
