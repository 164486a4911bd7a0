"""`modoru incident` and `modoru confirm`: the incident a change runs under, its
follow-ups (root cause, postmortem, prevention), the human confirmations after
a rollback, and the postmortem draft. Starts of rollbacks, migration
rollbacks and recoveries go through `start_in_incident`: the incident is
signalled-with-start and starts the change as its child under the id the CLI
has always used, so `status`, `approve` and `reject` work on it as before."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.table import Table
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from runbook.incident_models import (
    CONFIRM_ITEMS,
    WORKFLOW_KINDS,
    ChangeSignal,
    ConfirmSignal,
    FollowUpSignal,
    IncidentRequest,
    IncidentStatus,
    incident_workflow_id,
)
from worker.settings import Settings
from workflows import search_attributes as sa
from workflows.incident import IncidentWorkflow

from .render import console, err_console

incident_app = typer.Typer(help="Incidents: the changes made for one, its root-cause and postmortem deadlines, and the postmortem draft.",
                           no_args_is_help=True)
VERDICT_WAIT_SECONDS = 20.0
KINDS = {"RollbackRequest": "rollback", "MigrationRequest": "migration", "PitrRequest": "pitr"}


def _fail(message: str) -> typer.Exit:
    err_console.print(f"modoru: {message}", highlight=False, markup=False)
    return typer.Exit(2)


def _attributes(namespace: str, service: str) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(sa.SERVICE, service), SearchAttributePair(sa.NAMESPACE, namespace),
                                  SearchAttributePair(sa.PHASE, "open")])


async def open_incident_for(client: Client, service: str, task_queue: str) -> str | None:
    """The running incident of `service` served by this task queue's workers, if any (the newest)."""
    query = f"WorkflowType = 'Incident' AND ModoruService = '{service}' AND ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}'"
    try:
        async for execution in client.list_workflows(query, limit=1):
            return execution.id
    except RPCError:
        return None  # no visibility (search attributes not registered): a new incident
    return None


async def _new_incident_id(client: Client, service: str, detected: dt.datetime, task_queue: str) -> str:
    """The id from the detection minute, unless an incident of that id runs for other workers (another task queue)."""
    from temporalio.client import WorkflowExecutionStatus

    candidate = incident_workflow_id(service, detected)
    try:
        description = await client.get_workflow_handle(candidate).describe()
    except RPCError:
        return candidate
    if description.status == WorkflowExecutionStatus.RUNNING and description.task_queue != task_queue:
        return f"{candidate}-{uuid.uuid4().hex[:6]}"
    return candidate


async def _verdict(handle: WorkflowHandle, request_id: str):
    """The incident's audit entry for `request_id`, or None if the worker has not judged it in time."""
    loop = asyncio.get_running_loop()
    until = loop.time() + VERDICT_WAIT_SECONDS
    while loop.time() < until:
        try:
            status = await handle.query(IncidentWorkflow.status, rpc_timeout=dt.timedelta(seconds=5))
        except RPCError:
            status = None
        entry = next((e for e in status.audit if e.request_id == request_id), None) if status else None
        if entry is not None:
            return entry
        await asyncio.sleep(0.25)
    return None


async def start_in_incident(client: Client, settings: Settings, request, workflow_id: str, *, summary: str, details: str,
                            search_attributes: TypedSearchAttributes | None = None, run=None) -> tuple[WorkflowHandle, bool]:
    """Start a change under its service's incident (the running one, else a new one
    named after the detection time); returns the change's handle and whether a
    change of that id was already running. A dry run changes nothing and opens no
    incident; a kind of change the incident does not know is started directly with `run`."""
    from .commands import CliError

    kind = KINDS.get(type(request).__name__)
    if kind is None or getattr(request, "dry_run", False):  # a kind of change the incident does not start (yet): as before
        try:
            await client.start_workflow(run or WORKFLOW_KINDS[kind or ""], request, id=workflow_id, task_queue=settings.task_queue,
                                        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, search_attributes=search_attributes,
                                        static_summary=summary, static_details=details)
            return client.get_workflow_handle(workflow_id), False
        except WorkflowAlreadyStartedError:
            return client.get_workflow_handle(workflow_id), True
    service = request.deployment if kind == "rollback" else request.service
    namespace = request.namespace if kind == "rollback" else "default"
    detected = getattr(request, "detected_at", None) or dt.datetime.now(dt.UTC)
    incident_id = await open_incident_for(client, service, settings.task_queue) or await _new_incident_id(client, service, detected, settings.task_queue)
    request_id = uuid.uuid4().hex
    change = ChangeSignal(kind=kind, workflow_id=workflow_id, request_id=request_id, summary=summary, details=details,
                          search_attributes=search_attributes is not None, **{kind: request})
    opening = IncidentRequest(service=service, namespace=namespace, detected_at=detected, opened_by=request.requested_by,
                              reason=request.reason, language=request.language, by_name=kind != "rollback")
    handle = await client.start_workflow(
        IncidentWorkflow.run, opening, id=incident_id, task_queue=settings.task_queue, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        start_signal="change", start_signal_args=[change], search_attributes=_attributes(namespace, service) if search_attributes else None,
        static_summary=f"incident: {namespace}/{service}", static_details=request.reason,
    )
    entry = await _verdict(handle, request_id)
    if entry is None:
        err_console.print(f"incident {incident_id}: the worker has not started {workflow_id} yet; is `modoru worker` running?")
        return client.get_workflow_handle(workflow_id), False
    if entry.counted is False:
        raise CliError(f"incident {incident_id}: {entry.detail}", code=1)
    return client.get_workflow_handle(workflow_id), "already running" in entry.detail


async def resolve(client: Client, workflow_id: str) -> tuple[WorkflowHandle, str]:
    """An incident's handle from its id or the id of a change made for it; and the change's id ("" for the incident's)."""
    from .commands import CliError

    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"no modoru workflow with id {workflow_id}: see `modoru incident list` or `modoru list`") from None
        raise
    if description.workflow_type == "Incident":
        return client.get_workflow_handle(workflow_id), ""
    if not description.parent_id:
        raise CliError(f"{workflow_id} was not started under an incident; give the incident's id (modoru incident list)")
    return client.get_workflow_handle(description.parent_id), workflow_id


async def incident_status(handle: WorkflowHandle) -> IncidentStatus:
    return await handle.query(IncidentWorkflow.status)


def render_incident(status: IncidentStatus) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("incident", status.incident_id)
    table.add_row("state", ("[green]" if status.state == "closed" else "[yellow]") + status.state + "[/]")
    table.add_row("service", f"{status.namespace}/{status.service}")
    table.add_row("detected", f"{status.detected_at.isoformat()} (opened by {status.opened_by})")
    for change in status.changes:
        state = "running" if change.running else (change.phase or change.outcome)
        if change.kind == "rollback" and change.verified:
            state = "fully verified" if change.fully_verified else f"verified, awaiting confirmation: {', '.join(change.awaiting)}"
        table.add_row(change.kind, f"{change.workflow_id}: {state}" + (f" — {change.message}" if change.message else ""))
        for c in change.confirmations:
            table.add_row("  confirmed", f"{c.item} by {c.by} at {c.at:%Y-%m-%d %H:%M:%S} UTC" + "".join(f" — {x}" for x in (c.note, c.link) if x))
    for f in status.follow_ups:
        if f.done_at:
            late = " (late)" if f.done_at > f.due_at else ""
            table.add_row(f.key, f"[green]recorded[/] {f.done_at:%Y-%m-%d %H:%M} UTC by {f.by}{late}" + "".join(f" — {x}" for x in (f.summary, f.link) if x))
        else:
            sent = f"; {', '.join(f.reminders)} sent" if f.reminders else ""
            table.add_row(f.key, f"due {f.due_at:%Y-%m-%d %H:%M} UTC{sent}")
    table.add_row("status", status.message)
    console.print(table)


def _check_id(workflow_id: str) -> None:
    from .inputs import check_workflow_id

    try:
        check_workflow_id(workflow_id)
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _run(factory) -> None:
    from .cli import run

    run(factory)


@incident_app.command("status")
def status_cmd(workflow_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """An incident's changes, confirmations and follow-ups (ID: the incident's or a change's)."""
    _check_id(workflow_id)

    async def show(client, settings) -> int:
        handle, _ = await resolve(client, workflow_id)
        current = await incident_status(handle)
        if as_json:
            print(json.dumps({**current.model_dump(mode="json"), "missing": current.missing}, ensure_ascii=False, indent=2))
        else:
            render_incident(current)
        return 0

    _run(show)


@incident_app.command("list")
def list_cmd(open_only: bool = typer.Option(False, "--open", help="Only incidents still open.")) -> None:
    """Every incident, newest first."""
    async def show(client, settings) -> int:
        query = "WorkflowType = 'Incident'" + (" AND ExecutionStatus = 'Running'" if open_only else "")
        rows = [e async for e in client.list_workflows(query)]
        if not rows:
            console.print("no incidents found")
            return 0
        print("\t".join(("incident id", "status", "started (UTC)", "closed (UTC)")))
        for e in rows:
            print("\t".join((e.id, e.status.name.lower() if e.status else "", e.start_time.strftime("%Y-%m-%d %H:%M:%S"),
                             e.close_time.strftime("%Y-%m-%d %H:%M:%S") if e.close_time else "")))
        return 0

    _run(show)


def _follow_up(key: str, workflow_id: str, by: str, summary: str, link: str) -> None:
    _check_id(workflow_id)
    try:
        signal = FollowUpSignal(by=by, summary=summary, link=link, request_id=uuid.uuid4().hex)
    except ValidationError as exc:
        from .cli import first_error

        raise _fail(first_error(exc)) from None

    async def send(client, settings) -> int:
        handle, _ = await resolve(client, workflow_id)
        await incident_status(handle)
        return await _signal_and_say(handle, key, signal)

    _run(send)


async def _signal_and_say(handle: WorkflowHandle, name: str, signal) -> int:
    from .commands import CliError

    try:
        await handle.signal(name, signal)
    except RPCError as exc:
        raise CliError(f"cannot signal {handle.id}: {exc.message}") from None
    entry = await _verdict(handle, signal.request_id)
    if entry is None:
        err_console.print("sent, but the worker has not judged it yet; check `modoru incident status`")
        return 1
    if entry.counted:
        console.print(f"[green]recorded[/]: {entry.detail}", highlight=False)
        return 0
    err_console.print(f"not recorded: {entry.detail}", highlight=False)
    return 1


BY = typer.Option(os.environ.get("USER") or "oncall", help="Who records it (your identity id).")


@incident_app.command("rca")
def rca_cmd(workflow_id: str, summary: str = typer.Option("", help="What the investigation found or where it stands."),
            link: str = typer.Option("", help="Where the investigation is written up."), by: str = BY) -> None:
    """Record the root-cause investigation (runbook: within 24 hours)."""
    _follow_up("rca", workflow_id, by, summary, link)


@incident_app.command("postmortem")
def postmortem_cmd(workflow_id: str, link: str = typer.Option(..., help="Where the postmortem is."), summary: str = typer.Option(""),
                   by: str = BY) -> None:
    """Record the postmortem (runbook: within 48 hours)."""
    _follow_up("postmortem", workflow_id, by, summary, link)


@incident_app.command("prevention")
def prevention_cmd(workflow_id: str, summary: str = typer.Option(..., help="The prevention measures agreed."), link: str = typer.Option(""),
                   by: str = BY) -> None:
    """Record the prevention measures."""
    _follow_up("prevention", workflow_id, by, summary, link)


@incident_app.command("postmortem-draft")
def postmortem_draft_cmd(workflow_id: str, lang: str = typer.Option("ja", help="ja or en."),
                         output: Path | None = typer.Option(None, help="Write the Markdown here instead of printing it.")) -> None:
    """The postmortem draft in Markdown, from the incident's own record."""
    from runbook.postmortem import render

    _check_id(workflow_id)
    if lang not in ("ja", "en"):
        raise _fail(f"--lang: {lang!r} is not ja or en")

    async def draft(client, settings) -> int:
        handle, _ = await resolve(client, workflow_id)
        text = render(await incident_status(handle), lang)
        if output is None:
            print(text)
        else:
            output.write_text(text, encoding="utf-8")
            console.print(f"wrote {output}")
        return 0

    _run(draft)


def confirm(
    workflow_id: str = typer.Argument(..., help="The rollback's id, or the incident's (its latest rollback)."),
    item: str = typer.Option(..., help="user_reports, main_features or dashboards."),
    by: str = typer.Option(..., help="Your identity id in the catalog."),
    note: str = typer.Option(""),
    link: str = typer.Option(""),
    key: Path | None = typer.Option(None, help="Your SSH private key (ed25519): signs the confirmation, as the catalog's identities require."),
    payload: bool = typer.Option(False, "--payload", help="Print the payload to sign (ssh-keygen -Y sign -n modoru) and exit."),
    signature: Path | None = typer.Option(None, help="A signature made with ssh-keygen over the --payload output."),
    payload_file: Path | None = typer.Option(None, help="The signed payload, when it is not the signature's path without .sig."),
) -> None:
    """Confirm, as a person, one of the checks after a rollback: no user reports, main features work, dashboards normal."""
    _check_id(workflow_id)
    if item not in CONFIRM_ITEMS:
        raise _fail(f"--item: {item!r} is not one of {', '.join(CONFIRM_ITEMS)}")
    if sum(bool(x) for x in (key, payload, signature)) > 1:
        raise _fail("give one of --key, --payload and --signature")
    try:
        signal = ConfirmSignal(item=item, by=by, note=note, link=link, request_id=uuid.uuid4().hex)  # type: ignore[arg-type]
    except ValidationError as exc:
        from .cli import first_error

        raise _fail(first_error(exc)) from None

    async def send(client, settings) -> int:
        import sys

        from .commands import CliError
        from .signing import payload_for, read_signature, sign_with_key

        handle, target = await resolve(client, workflow_id)
        current = await incident_status(handle)
        rollbacks = [c for c in current.changes if c.kind == "rollback"]
        signal.target = target or (rollbacks[-1].workflow_id if rollbacks else "")
        if key or payload:
            gate = next((g for g in current.confirm_gates if g.gate == f"confirm.{item}" and g.plan.get("target") == signal.target), None)
            if gate is None:
                raise CliError(f"{signal.target or current.incident_id} awaits no {item} confirmation now", code=1)
            text = payload_for(gate, "approve", by, note).text()
            if payload:
                sys.stdout.write(text)
                return 0
            signal.signed = sign_with_key(text, key)  # type: ignore[arg-type]
        elif signature:
            signal.signed = read_signature(signature, payload_file)
        elif current.signed:
            raise CliError("this catalog counts signed confirmations only: add --key ~/.ssh/id_ed25519 (or --payload, then --signature)")
        return await _signal_and_say(handle, "confirm", signal)

    _run(send)


async def incident_line(client: Client, workflow_id: str) -> dict | None:
    """For `modoru status` of a change: its incident and the confirmations it awaits."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
        if not description.parent_id or description.workflow_type == "Incident":
            return None
        current = await incident_status(client.get_workflow_handle(description.parent_id))
    except RPCError:
        return None
    change = current.change(workflow_id)
    if change is None:
        return None
    return {"incident_id": current.incident_id, "verified": change.verified, "fully_verified": change.fully_verified,
            "awaiting_confirmations": change.awaiting}
