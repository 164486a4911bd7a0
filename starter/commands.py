"""What the CLI's verbs do against Temporal. Each returns an exit code."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from runbook.models import ApprovalSignal, Phase, RejectSignal, RollbackRequest, RollbackStatus
from worker.settings import Settings
from workflows import search_attributes as sa
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

from .render import console, err_console, render_status
from .stacks import workflow_link

TERMINAL = {Phase.COMPLETED, Phase.FAILED, Phase.REJECTED}
PLAN_WAIT_SECONDS = 20


class CliError(Exception):
    """One line for the user; exit code 2 unless said otherwise."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


async def query_any_status(handle: WorkflowHandle):
    """The status of whichever modoru workflow `handle` names: a deployment
    rollback, a migration rollback or a release guard."""
    from runbook.guard_models import GuardStatus
    from runbook.migration_models import MigrationStatus
    from runbook.pitr_models import PitrStatus

    try:
        kind = (await handle.describe()).workflow_type
        from runbook.cd_models import RedeployStatus
        from runbook.forward_fix_models import ForwardFixStatus
        from runbook.repair_models import RepairStatus, RestoreStatus

        model = {"MigrationRollback": MigrationStatus, "ReleaseGuard": GuardStatus, "PointInTimeRecovery": PitrStatus,
                 "Redeploy": RedeployStatus, "Restore": RestoreStatus, "Troubleshoot": RepairStatus, "ForwardFix": ForwardFixStatus}.get(kind, RollbackStatus)
        return await handle.query("status", result_type=model)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"no modoru workflow with id {handle.id}: see `modoru list`") from None
        raise


async def failure_of(handle: WorkflowHandle) -> str | None:
    description = await handle.describe()
    if description.status in (WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TERMINATED, WorkflowExecutionStatus.TIMED_OUT):
        try:
            await handle.result()
        except WorkflowFailureError as exc:
            cause = exc.cause  # the workflow's own ApplicationError carries the human message
            return getattr(cause, "message", None) or str(cause)
        return description.status.name.lower()
    return None


async def start_rollback(client: Client, settings: Settings, request: RollbackRequest, *, wait: bool, as_json: bool) -> int:
    workflow_id = rollback_workflow_id(request.namespace, request.deployment)
    attributes = sa.for_rollback(request.namespace, request.deployment, request.severity.value)
    # The incident starts the rollback as its child, under this id.
    from .incident import start_in_incident

    handle, attached = await start_in_incident(
        client, settings, request, workflow_id, search_attributes=attributes,
        summary=f"{request.severity.value} rollback of {request.namespace}/{request.deployment}",
        details=f"requested by {request.requested_by}: {request.reason}",
    )
    link = workflow_link(settings.web_ui, client.namespace, workflow_id)
    if not as_json:
        verb = "a rollback is already running for this deployment; attached to it" if attached else "started"
        console.print(f"{verb}: [bold]{workflow_id}[/]" + (f"\nweb ui: {link}" if link else ""))
    status = await _past_planning(handle)
    if status is None:
        err_console.print("the worker has not planned this rollback yet; is `modoru worker` running?")
    elif status.phase == Phase.FAILED and not wait:
        verb = "refused" if status.from_revision is None else "failed"
        raise CliError(f"rollback {verb}: {status.message}", code=1)
    if wait:
        status = await follow(handle, quiet=as_json)
    if as_json:
        payload = status.model_dump(mode="json") if status else {"workflow_id": workflow_id}
        print(json.dumps({**payload, "attached": attached, "web_ui": link}, ensure_ascii=False))
    elif status is not None and not wait:
        console.print(f"phase: {status.phase.value}" + (f" — {status.message}" if status.message else ""))
    return exit_code(status) if wait else 0


async def _past_planning(handle: WorkflowHandle) -> RollbackStatus | None:
    """The plan is where bad input shows: wait for it to finish or fail."""
    for _ in range(int(PLAN_WAIT_SECONDS / 0.25)):
        try:
            status = await handle.query(DeploymentRollbackWorkflow.status)
        except RPCError:
            status = None
        if status is not None and (status.phase != Phase.PLANNING or status.from_revision is not None):
            return status
        failure = await failure_of(handle)
        if failure:
            raise CliError(f"rollback refused: {failure}", code=1)
        await asyncio.sleep(0.25)
    return None


async def follow(handle: WorkflowHandle, quiet: bool = False, render=None):
    """Follow a rollback (or, with its `render`, any other change) until it ends, saying each phase."""
    last = None
    while True:
        failure = await failure_of(handle)
        status = await query_any_status(handle)
        if status.phase != last and not quiet:
            console.print(f"[cyan]{status.phase.value}[/] {status.message}")
            last = status.phase
        if status.phase in TERMINAL or failure:
            if failure and status.phase not in TERMINAL:
                status.phase, status.message = Phase.FAILED, failure
            if not quiet:
                (render or render_status)(status)
            return status
        await asyncio.sleep(0.5)


def exit_code(status: RollbackStatus | None) -> int:
    if status is None:
        return 1
    return 0 if status.phase == Phase.COMPLETED else 1


async def send_decision(client: Client, workflow_id: str, signal: ApprovalSignal | RejectSignal, *, key: Path | None = None,
                        print_payload: bool = False, signature: Path | None = None, payload_file: Path | None = None) -> int:
    from .signing import payload_for, read_signature, sign_with_key

    handle = client.get_workflow_handle(workflow_id)
    status = await query_any_status(handle)  # says clearly when the id is unknown
    decision = "approve" if isinstance(signal, ApprovalSignal) else "reject"
    gate = getattr(status, "pending", None)
    if key or print_payload:
        if gate is None:
            raise CliError(f"{workflow_id} has no gate awaiting decisions now (phase {status.phase.value})", code=1)
        text = payload_for(gate, decision, signal.by, signal.comment if isinstance(signal, ApprovalSignal) else signal.reason).text()
        if print_payload:
            sys.stdout.write(text)  # no newline: ssh-keygen signs the file's exact bytes
            return 0
        signal.signed = sign_with_key(text, key)  # type: ignore[arg-type]
    elif signature:
        signal.signed = read_signature(signature, payload_file)
    elif gate is not None and gate.signed:
        raise CliError("this change counts signed decisions only: add --key ~/.ssh/id_ed25519 (or --payload, then --signature)")
    signal.request_id = uuid.uuid4().hex
    try:
        await handle.signal(decision, signal)
    except RPCError as exc:
        raise CliError(f"cannot signal {workflow_id}: {exc.message}") from None
    for _ in range(80):
        status = await query_any_status(handle)
        entry = next((e for e in getattr(status, "audit", []) if e.request_id == signal.request_id), None)
        if entry is not None:
            if entry.counted:
                console.print(f"[green]counted[/]: {entry.detail}")
                return 0
            err_console.print(f"not counted: {entry.detail}")
            return 1
        await asyncio.sleep(0.25)
    err_console.print("sent, but the worker has not judged it yet; check `modoru status`")
    return 1


async def list_rollbacks(client: Client, *, open_only: bool, deployment: str | None = None, namespace: str = "default") -> int:
    """Every modoru workflow (rollbacks, migration rollbacks, recoveries, guards), or one deployment's rollbacks."""
    query = "WorkflowType IN ('DeploymentRollback', 'MigrationRollback', 'PointInTimeRecovery', 'ReleaseGuard', 'Redeploy', 'Restore', 'Troubleshoot', 'Incident')"
    if open_only:
        query += " AND ExecutionStatus = 'Running'"
    if deployment:
        query = f"WorkflowType = 'DeploymentRollback' AND WorkflowId = '{rollback_workflow_id(namespace, deployment)}'" + (" AND ExecutionStatus = 'Running'" if open_only else "")
    rows = []
    async for execution in client.list_workflows(query):
        rows.append(execution)
    if not rows:
        console.print("no rollbacks found")
        return 0
    lines = []
    for execution in rows:
        lines.append((
            execution.workflow_type, execution.id, execution.run_id[:8], execution.status.name.lower() if execution.status else "",
            execution.typed_search_attributes.get(sa.PHASE) or "", execution.start_time.strftime("%Y-%m-%d %H:%M:%S"),
            execution.close_time.strftime("%H:%M:%S") if execution.close_time else "",
        ))
    header = ("kind", "workflow id", "run id", "status", "phase", "started", "closed")
    if not console.is_terminal:  # scripts get tab-separated lines, nothing cut
        print("\t".join(header))
        for line in lines:
            print("\t".join(line))
        return 0
    from rich.table import Table

    table = Table()
    for column in header:
        table.add_column(column, no_wrap=True)
    for line in lines:
        table.add_row(*line)
    console.print(table)
    return 0


async def start_change(client: Client, settings: Settings, run, request, *, workflow_id: str, what: str, summary: str,
                       render, wait: bool, as_json: bool) -> int:
    """Start a migration rollback or a recovery (or attach to the one running), then
    either follow it or wait past its checks, where bad input shows."""
    # The incident starts the change as its child, under this id.
    from .incident import start_in_incident

    handle, attached = await start_in_incident(
        client, settings, request, workflow_id, search_attributes=sa.for_change(request.service, request.severity.value),
        summary=summary, details=f"requested by {request.requested_by}: {request.reason}", run=run,
    )
    if not as_json:
        verb = f"a {what} is already running for this service; attached to it" if attached else "started"
        link = workflow_link(settings.web_ui, client.namespace, workflow_id)
        console.print(f"{verb}: [bold]{workflow_id}[/]" + (f"\nweb ui: {link}" if link else ""))
    status = None
    if wait:
        status = await follow(handle, quiet=as_json, render=render)
    else:
        for _ in range(120):
            status = await query_any_status(handle)
            if status.phase is not Phase.PLANNING or await failure_of(handle):
                break
            await asyncio.sleep(0.25)
        failure = await failure_of(handle)
        if failure:
            raise CliError(f"{what} refused: {failure}", code=1)
        if not as_json and status is not None:
            console.print(f"phase: {status.phase.value}" + (f" — {status.message}" if status.message else ""))
    if as_json:
        payload = status.model_dump(mode="json") if status else {"workflow_id": workflow_id}
        print(json.dumps({**payload, "attached": attached}, ensure_ascii=False))
    return (0 if status is not None and status.phase is Phase.COMPLETED else 1) if wait else 0
