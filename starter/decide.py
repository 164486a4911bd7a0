"""`modoru approve` and `modoru reject` against Temporal: the decision goes
through the workflow's update, which answers with the verdict (counted or not,
and why); a workflow that takes decisions only as signals is signalled, and the
verdict read from its audit trail."""

from __future__ import annotations

import asyncio
import uuid
from typing import Literal

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from runbook.decisions import DecisionVerdict
from runbook.models import ApprovalSignal, RejectSignal

from .base import CliError
from .commands import POLL_SECONDS, phase_of, query_any_status
from .render import console, err_console
from .signing import Printed, SigningOptions

DECISION_WAIT_SECONDS = 20.0


async def send_decision(
    client: Client,
    workflow_id: str,
    signal: ApprovalSignal | RejectSignal,
    how: SigningOptions,
) -> int:
    """Approve or reject through the workflow's update, which answers with the
    verdict: counted or not, and why."""
    handle = client.get_workflow_handle(workflow_id)
    status = await query_any_status(handle)  # says clearly when the id is unknown
    decision: Literal["approve", "reject"] = (
        "approve" if isinstance(signal, ApprovalSignal) else "reject"
    )
    gate = getattr(status, "pending", None)
    signed = how.sign(
        gate,
        decision,
        signal.by,
        signal.comment if isinstance(signal, ApprovalSignal) else signal.reason,
        no_gate=CliError(
            f"{workflow_id} has no gate awaiting decisions now (phase {phase_of(status)})", code=1
        ),
        only_signed="change counts signed decisions" if gate is not None and gate.signed else None,
    )
    if isinstance(signed, Printed):
        return 0
    signal.signed = signed
    signal.request_id = uuid.uuid4().hex
    update = "approval" if decision == "approve" else "rejection"
    try:
        verdict = await asyncio.wait_for(
            handle.execute_update(
                update, signal, id=f"{decision}-{signal.request_id}", result_type=DecisionVerdict
            ),
            DECISION_WAIT_SECONDS,
        )
    except TimeoutError:
        err_console.print(
            f"no worker answered within {DECISION_WAIT_SECONDS:g}s; is `modoru worker` running? "
            f"see `modoru status {workflow_id}`"
        )
        return 1
    except WorkflowUpdateFailedError as exc:
        said = getattr(exc.cause, "message", None) or str(exc.cause)
        if f"handler for '{update}' expected but not found" in said:
            return await signal_decision(
                handle, decision, signal
            )  # a workflow without the decision updates
        raise CliError(f"{workflow_id} could not take the decision: {said}") from None
    except RPCError as exc:
        raise CliError(f"cannot send the decision to {workflow_id}: {exc.message}") from None
    return say_verdict(verdict)


async def signal_decision(
    handle: WorkflowHandle,
    decision: Literal["approve", "reject"],
    signal: ApprovalSignal | RejectSignal,
) -> int:
    """For a change workflow that takes decisions only as signals: signal, then
    read the verdict from the audit trail (the entry carrying the request id)."""
    try:
        await handle.signal(decision, signal)
    except RPCError as exc:
        raise CliError(f"cannot signal {handle.id}: {exc.message}") from None
    for _ in range(int(DECISION_WAIT_SECONDS / POLL_SECONDS)):
        status = await query_any_status(handle)
        entry = next(
            (e for e in getattr(status, "audit", []) if e.request_id == signal.request_id), None
        )
        if entry is not None:
            return say_verdict(
                DecisionVerdict(
                    decision=decision,
                    counted=bool(entry.counted),
                    reason=entry.detail,
                    by=entry.actor,
                )
            )
        await asyncio.sleep(POLL_SECONDS)
    err_console.print(
        f"sent, but the worker has not judged it yet; see `modoru status {handle.id}`"
    )
    return 1


def say_verdict(verdict: DecisionVerdict) -> int:
    """The verdict in one line (counted on stdout, not counted on stderr); the exit code."""
    standing = ""
    if verdict.decision == "approve" and verdict.approvals_required:
        standing = f" ({len(verdict.approvals)}/{verdict.approvals_required} approvals)"
    if verdict.counted:
        console.print(f"[green]counted[/]: {verdict.reason}{standing}", highlight=False)
        return 0
    err_console.print(f"not counted: {verdict.reason}", highlight=False, markup=False)
    return 1
