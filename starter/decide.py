"""`modoru approve` and `modoru reject` against Temporal: the decision goes
through the workflow's update, which answers with the verdict (counted or not,
and why). A decision is signed (or its payload printed) only over a gate
`starter/gate_check.py` has checked against the workflow the person named, and
only after the plan is shown."""

from __future__ import annotations

import uuid

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from runbook.decisions import DecisionVerdict
from runbook.models import DecisionSignal
from worker.settings import Settings

from .base import CliError, answered
from .commands import phase_of, query_any_status
from .gate_check import checked_gate, decision_workflow_types, wrong_type
from .render import console, err_console
from .signing import Printed, SigningOptions

DECISION_WAIT_SECONDS = 20.0


async def send_decision(
    client: Client,
    workflow_id: str,
    signal: DecisionSignal,
    how: SigningOptions,
    *,
    task_queue: str | None = None,
) -> int:
    """Approve or reject through the workflow's update, which answers with the
    verdict: counted or not, and why. A signed decision is made only over a gate
    that holds for `workflow_id` on modoru's `task_queue` (default: the settings')."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        kind: str | None = (await handle.describe()).workflow_type
    except RPCError:
        kind = None  # the status query says why, in the user's words
    if kind is not None and kind not in decision_workflow_types():
        raise wrong_type(workflow_id, kind)
    status = await query_any_status(handle)  # says clearly when the id is unknown
    gate = getattr(status, "pending", None)
    if gate is not None and (how.key or how.payload):
        await checked_gate(
            client,
            workflow_id,
            gate,
            task_queue=task_queue or Settings().task_queue,
            out=err_console if how.payload else console,  # stdout holds the payload alone
        )
    signed = how.sign(
        gate,
        signal.decision,
        signal.by,
        signal.words,
        no_gate=CliError(
            f"{workflow_id} has no gate awaiting decisions now (phase {phase_of(status)})", code=1
        ),
        only_signed="change counts signed decisions" if gate is not None and gate.signed else None,
    )
    if isinstance(signed, Printed):
        return 0
    signal.signed = signed
    signal.request_id = uuid.uuid4().hex
    try:
        verdict = await answered(
            handle.execute_update(
                signal.update,
                signal,
                id=f"{signal.decision}-{signal.request_id}",
                result_type=DecisionVerdict,
            ),
            DECISION_WAIT_SECONDS,
        )
    except WorkflowUpdateFailedError as exc:
        said = getattr(exc.cause, "message", None) or str(exc.cause)
        raise CliError(f"{workflow_id} could not take the decision: {said}") from None
    except RPCError as exc:
        raise CliError(f"cannot send the decision to {workflow_id}: {exc.message}") from None
    if verdict is None:
        err_console.print(
            f"no worker answered within {DECISION_WAIT_SECONDS:g}s; is `modoru worker` running? "
            f"see `modoru status {workflow_id}`"
        )
        return 1
    return say_verdict(verdict)


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
