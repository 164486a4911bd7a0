"""What every start command shares: the options a person gives for any change
(namespace, severity, detection time, who asks, the signing key, the notice
language, dry run, wait, JSON), declared once, and the one way a start goes
on from there: check what was typed, build the request, start it or attach to
the one running and, when the catalog counts signed decisions only, sign the
run's start gate (this run, this request, its plan) with --key as soon as the
workflow shows it: one extra round trip.

A start command declares its own options and a keyword-only `StartOptions`
parameter, where `@start_options(...)` puts the shared ones
(starter/option_groups.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from runbook.decisions import DecisionVerdict, GateView
from runbook.enums import Severity
from runbook.models import ApprovalSignal
from worker.settings import Settings

from .base import CliError, console, err_console, fail, first_error
from .commands import Change, run
from .gate_check import decision_workflow_types
from .inputs import parse_detected_at
from .option_groups import Table, option_group
from .signing import sign_start, signed_start, start_gate_problem

REQUESTER = os.environ.get("USER") or "oncall"
SEVERITY_HELP = "immediate (5 min) or investigate (15 min)."

# Each shared option: its type and its declaration, as `--help` shows it unless a command says
# otherwise. A dry run has no declaration here: each command says what its dry run does.
SHARED: Table = {
    "namespace": (str, typer.Option("default")),
    "severity": (Severity, typer.Option(Severity.INVESTIGATE, help=SEVERITY_HELP)),
    "detected_at": (
        str | None,
        typer.Option(None, help="When the problem was seen (RFC 3339 with offset); default: now."),
    ),
    "requested_by": (str, typer.Option(REQUESTER, help="Who asks (cannot approve it).")),
    "key": (Path | None, typer.Option(None, help="Your SSH private key: signs the start.")),
    "language": (str, typer.Option("ja", help="Notice language: ja or en.")),
    "dry_run": (bool, None),
    "wait": (bool, typer.Option(False, "--wait", help="Follow it until it ends.")),
    "as_json": (bool, typer.Option(False, "--json")),
}
REQUEST_FIELDS = ("namespace", "severity", "requested_by", "language", "dry_run")
START_GATE_SECONDS = 60.0  # how long the CLI looks for the run's start gate
ENDED = frozenset({"completed", "failed", "rejected"})


@dataclass(frozen=True)
class StartOptions:
    """The shared options as the user gave them; one the command does not offer is None."""

    requested_by: str
    key: Path | None = None
    language: str | None = None
    wait: bool = False
    as_json: bool = False
    namespace: str | None = None
    severity: Severity | None = None
    detected_at: str | None = None
    dry_run: bool | None = None

    def request_fields(self) -> dict[str, Any]:
        """What these options put in the request (the ones the command offers); ValueError
        naming --detected-at when it is no usable time."""
        fields = {name: getattr(self, name) for name in REQUEST_FIELDS}
        fields = {name: value for name, value in fields.items() if value is not None}
        if self.detected_at is not None:
            fields["detected_at"] = parse_detected_at(self.detected_at)
        return fields


# @start_options(without=..., own_after=..., **declarations): see starter/option_groups.py.
start_options = option_group(StartOptions, SHARED)


M = TypeVar("M", bound=BaseModel)


def launch(
    options: StartOptions,
    build: Callable[[], M],
    change: Change[M],
    *,
    said: Callable[[ValidationError], str] = first_error,
) -> None:
    """Build the request (a refusal is one line naming the problem, before anything starts), sign
    it with --key, and start the change or attach to the one running. `said` words a pydantic
    refusal in the command's own option names."""
    try:
        request = build()
    except ValidationError as exc:
        raise fail(said(exc)) from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    workflow_id = change.workflow_id(request)
    sign_start(request, workflow_id, options.key)

    async def start(client: Client, settings: Settings) -> int:
        if not hasattr(request, "start"):  # a change without a requester's start (the guard)
            return await change.start(
                client, settings, request, wait=options.wait, as_json=options.as_json
            )
        signer = asyncio.create_task(
            sign_start_gate(
                client,
                workflow_id,
                request,
                options.key,
                task_queue=settings.task_queue,
                quiet=options.as_json,
            )
        )
        starting = asyncio.create_task(
            change.start(client, settings, request, wait=options.wait, as_json=options.as_json)
        )
        try:
            # A start that cannot be signed ends the command at once, whatever it waits for.
            done, _ = await asyncio.wait({signer, starting}, return_when=asyncio.FIRST_EXCEPTION)
            if signer in done and signer.exception() is not None:
                raise signer.exception()  # type: ignore[misc]
            code = await starting
            await signer
        finally:
            for task in (signer, starting):
                if not task.done():
                    task.cancel()
        return code

    run(start)


async def _closed_run_id(handle) -> str | None:
    """The run id under the handle's workflow id if that run has closed, else None."""
    try:
        description = await handle.describe()
    except RPCError:
        return None
    return None if description.status == WorkflowExecutionStatus.RUNNING else description.run_id


async def sign_start_gate(
    client: Client,
    workflow_id: str,
    request: BaseModel,
    key: Path | None,
    *,
    task_queue: str,
    quiet: bool = False,
) -> DecisionVerdict | None:
    """Sign the run's start gate once the workflow shows it, after checking it (this id, its
    current run, one of modoru's change workflows on this task queue, the request exactly as
    made here, the digest of the plan, which is printed). None when the run shows no start
    gate (a catalog without identities, a change that takes no start) or it has gone past it;
    a `CliError` when the start did not count or there is no key to sign it with."""
    handle = client.get_workflow_handle(workflow_id)
    loop = asyncio.get_running_loop()
    until = loop.time() + START_GATE_SECONDS
    # The run under this id before the start, if closed, is an earlier one; a closed run that is
    # not it is the one started here, ended before its gate was seen (a no-op, a refusal):
    # nothing to sign.
    earlier = await _closed_run_id(handle)
    while loop.time() < until:
        try:
            description = await handle.describe()
            status = (
                await handle.query("status", result_type=dict)
                if description.status == WorkflowExecutionStatus.RUNNING
                else None
            )
        except RPCError:
            description, status = None, None  # not started yet, or no workflow task has run
        if (
            description is not None
            and description.status != WorkflowExecutionStatus.RUNNING
            and description.run_id != earlier
        ):
            return None
        if status is None:  # (the earlier closed run)
            await asyncio.sleep(0.1)
            continue
        if description.workflow_type not in decision_workflow_types():
            return None  # a change that takes no decisions takes no start (the forward fix)
        if description.task_queue != task_queue:
            raise CliError(
                f"refusing to sign the start of {handle.id}: it runs on task queue "
                f"{description.task_queue}, not {task_queue}",
                code=1,
            )
        pending = status.get("pending")
        gate = GateView.model_validate(pending) if pending else None
        if gate is None or gate.gate != "start":
            if _past_start(status):
                return None
            await asyncio.sleep(0.1)
            continue
        if key is None:
            raise CliError(
                f"{handle.id} waits for its requester's signed start: this catalog counts signed "
                "starts only; start it again with --key ~/.ssh/id_ed25519",
                code=1,
            )
        problem = start_gate_problem(gate, request, handle.id, description.run_id)
        if problem:
            raise CliError(f"refusing to sign the start of {handle.id}: {problem}", code=1)
        out = err_console if quiet else console
        out.print(f"signing the start of {handle.id} (run {gate.run_id[:8]}), plan:")
        out.print_json(data=gate.plan.get("plan", {}))
        signed = signed_start(gate, request, key)
        this_run = client.get_workflow_handle(workflow_id, run_id=gate.run_id)
        verdict: DecisionVerdict = await this_run.execute_update(
            "start",
            ApprovalSignal(by=request.requested_by, signed=signed),  # type: ignore[attr-defined]
            result_type=DecisionVerdict,
        )
        if not verdict.counted:
            raise CliError(f"the start of {handle.id} did not count: {verdict.reason}", code=1)
        return verdict
    err_console.print(f"{handle.id}: no start gate was shown in {START_GATE_SECONDS:.0f} s")
    return None


def _past_start(status: dict) -> bool:
    """Whether the run is past where a start gate would be: it ended, a gate that is not the
    start was shown (a catalog without identities shows its approval gate unsigned), or its
    status says the start or an approval was counted."""
    if str(status.get("phase", "")) in ENDED:
        return True
    pending = status.get("pending") or {}
    if pending and pending.get("gate") != "start":
        return True
    return bool(status.get("start_counted") or status.get("approvals"))
