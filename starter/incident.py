"""`modoru incident` and `modoru confirm`: the incident a change runs under, its
follow-ups (root cause, postmortem, prevention), the human confirmations after
a rollback, and the postmortem draft. Starts of rollbacks, migration
rollbacks and recoveries go through `start_in_incident` (update-with-start):
the incident starts the change as its child under the id the CLI has always
used, so `status`, `approve` and `reject` work on it as before. Follow-ups and
confirmations are updates too: the answer is the incident's audit entry."""

from __future__ import annotations

import inspect
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.table import Table
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode
from typer.models import OptionInfo

from runbook.incident_models import (
    CONFIRM_ITEMS,
    ConfirmSignal,
    FollowUpSignal,
    FollowUpUpdate,
    IncidentStatus,
)
from runbook.models import AuditEntry
from runbook.postmortem import render
from workflows.incident import IncidentWorkflow

from .base import CliError, answered, fail, first_error
from .commands import run
from .gate_check import checked_gate
from .incident_start import VERDICT_WAIT_SECONDS
from .inputs import check_workflow_id
from .render import console, err_console
from .signing import Printed, SigningOptions, signing_options

incident_app = typer.Typer(
    help="Incidents: the changes made for one, its root-cause and postmortem deadlines, and the "
    "postmortem draft.",
    no_args_is_help=True,
)


async def resolve(client: Client, workflow_id: str) -> tuple[WorkflowHandle, str]:
    """An incident's handle from its id or the id of a change made for it; and the change's id (""
    for the incident's)."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(
                f"no modoru workflow with id {workflow_id}: see `modoru incident list` or `modoru "
                "list`"
            ) from None
        raise
    if description.workflow_type == "Incident":
        return client.get_workflow_handle(workflow_id), ""
    if not description.parent_id:
        raise CliError(
            f"{workflow_id} was not started under an incident; give the incident's id (modoru "
            "incident list)"
        )
    return client.get_workflow_handle(description.parent_id), workflow_id


async def incident_status(handle: WorkflowHandle) -> IncidentStatus:
    return await handle.query(IncidentWorkflow.status)


def render_incident(status: IncidentStatus) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("incident", status.incident_id)
    table.add_row(
        "state", ("[green]" if status.state == "closed" else "[yellow]") + status.state + "[/]"
    )
    table.add_row("service", f"{status.namespace}/{status.service}")
    table.add_row("detected", f"{status.detected_at.isoformat()} (opened by {status.opened_by})")
    for change in status.changes:
        state = "running" if change.running else (change.phase or change.outcome)
        if change.kind == "rollback" and change.verified:
            state = (
                "fully verified"
                if change.fully_verified
                else f"verified, awaiting confirmation: {', '.join(change.awaiting)}"
            )
        table.add_row(
            change.kind,
            f"{change.workflow_id}: {state}" + (f" — {change.message}" if change.message else ""),
        )
        for c in change.confirmations:
            table.add_row(
                "  confirmed",
                f"{c.item} by {c.by} at {c.at:%Y-%m-%d %H:%M:%S} UTC"
                + "".join(f" — {x}" for x in (c.note, c.link) if x),
            )
    for f in status.follow_ups:
        if f.done_at:
            late = " (late)" if f.done_at > f.due_at else ""
            table.add_row(
                f.key,
                f"[green]recorded[/] {f.done_at:%Y-%m-%d %H:%M} UTC by {f.by}{late}"
                + "".join(f" — {x}" for x in (f.summary, f.link) if x),
            )
        else:
            sent = f"; {', '.join(f.reminders)} sent" if f.reminders else ""
            table.add_row(f.key, f"due {f.due_at:%Y-%m-%d %H:%M} UTC{sent}")
    table.add_row("status", status.message)
    console.print(table)


def _check_id(workflow_id: str) -> None:
    try:
        check_workflow_id(workflow_id)
    except ValueError as exc:
        raise fail(str(exc)) from None


@incident_app.command("status")
def status_cmd(workflow_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """An incident's changes, confirmations and follow-ups (ID: the incident's or a change's)."""
    _check_id(workflow_id)

    async def show(client, settings) -> int:
        handle, _ = await resolve(client, workflow_id)
        current = await incident_status(handle)
        if as_json:
            print(
                json.dumps(
                    {**current.model_dump(mode="json"), "missing": current.missing},
                    ensure_ascii=False,
                    indent=2,
                )
            )
        else:
            render_incident(current)
        return 0

    run(show)


@incident_app.command("list")
def list_cmd(
    open_only: bool = typer.Option(False, "--open", help="Only incidents still open."),
) -> None:
    """Every incident, newest first."""

    async def show(client, settings) -> int:
        query = "WorkflowType = 'Incident'" + (
            " AND ExecutionStatus = 'Running'" if open_only else ""
        )
        rows = [e async for e in client.list_workflows(query)]
        if not rows:
            console.print("no incidents found")
            return 0
        print("\t".join(("incident id", "status", "started (UTC)", "closed (UTC)")))
        for e in rows:
            print(
                "\t".join(
                    (
                        e.id,
                        e.status.name.lower() if e.status else "",
                        e.start_time.strftime("%Y-%m-%d %H:%M:%S"),
                        e.close_time.strftime("%Y-%m-%d %H:%M:%S") if e.close_time else "",
                    )
                )
            )
        return 0

    run(show)


def _follow_up(key: str, workflow_id: str, by: str, summary: str, link: str) -> None:
    _check_id(workflow_id)
    try:
        signal = FollowUpSignal(by=by, summary=summary, link=link, request_id=uuid.uuid4().hex)
    except ValidationError as exc:
        raise fail(first_error(exc)) from None

    async def send(client, settings) -> int:
        handle, _ = await resolve(client, workflow_id)
        await incident_status(handle)
        return await _record_and_say(
            handle,
            IncidentWorkflow.record_follow_up,
            FollowUpUpdate(key=key, follow_up=signal),  # type: ignore[arg-type]
            key,
            signal,
        )

    run(send)


async def _record_and_say(handle: WorkflowHandle, update, arg, name: str, signal) -> int:
    """Send `arg` as the incident's `update` and say what its audit entry says. Without a
    worker's answer in time, the same request goes as the durable signal `name` (the
    incident handles one request id once)."""
    try:
        entry: AuditEntry | None = await answered(
            handle.execute_update(update, arg), VERDICT_WAIT_SECONDS
        )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise CliError(f"{handle.id}: {getattr(cause, 'message', None) or cause}") from None
    except RPCError as exc:
        raise CliError(f"cannot reach {handle.id}: {exc.message}") from None
    if entry is None:
        try:
            await handle.signal(name, signal)
        except RPCError as exc:
            raise CliError(f"cannot signal {handle.id}: {exc.message}") from None
        err_console.print("sent, but no worker has judged it yet; check `modoru incident status`")
        return 1
    if entry.counted:
        console.print(f"[green]recorded[/]: {entry.detail}", highlight=False)
        return 0
    err_console.print(f"not recorded: {entry.detail}", highlight=False)
    return 1


BY = typer.Option(os.environ.get("USER") or "oncall", help="Who records it (your identity id).")


# The follow-ups the runbook asks for after an incident: each one's command help, and its
# --summary and --link as that command declares them, in the order its --help lists them.
FOLLOW_UPS: dict[str, tuple[str, dict[str, OptionInfo]]] = {
    "rca": (
        "Record the root-cause investigation (runbook: within 24 hours).",
        {
            "summary": typer.Option("", help="What the investigation found or where it stands."),
            "link": typer.Option("", help="Where the investigation is written up."),
        },
    ),
    "postmortem": (
        "Record the postmortem (runbook: within 48 hours).",
        {"link": typer.Option(..., help="Where the postmortem is."), "summary": typer.Option("")},
    ),
    "prevention": (
        "Record the prevention measures.",
        {
            "summary": typer.Option(..., help="The prevention measures agreed."),
            "link": typer.Option(""),
        },
    ),
}


def follow_up_command(key: str, doc: str, options: dict[str, OptionInfo]) -> Callable[..., None]:
    """`modoru incident KEY WORKFLOW_ID [--summary] [--link] [--by]`: records one follow-up."""

    def record(workflow_id: str, summary: str, link: str, by: str) -> None:
        _follow_up(key, workflow_id, by, summary, link)

    parameters = [
        inspect.Parameter("workflow_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
        *(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=str)
            for name, option in options.items()
        ),
        inspect.Parameter("by", inspect.Parameter.KEYWORD_ONLY, default=BY, annotation=str),
    ]
    record.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    record.__annotations__ = {p.name: str for p in parameters}
    record.__doc__ = doc
    return record


for _key, (_doc, _options) in FOLLOW_UPS.items():
    incident_app.command(_key)(follow_up_command(_key, _doc, _options))


@incident_app.command("postmortem-draft")
def postmortem_draft_cmd(
    workflow_id: str,
    lang: str = typer.Option("ja", help="ja or en."),
    output: Path | None = typer.Option(
        None, help="Write the Markdown here instead of printing it."
    ),
) -> None:
    """The postmortem draft in Markdown, from the incident's own record."""
    _check_id(workflow_id)
    if lang not in ("ja", "en"):
        raise fail(f"--lang: {lang!r} is not ja or en")

    async def draft(client, settings) -> int:
        handle, _ = await resolve(client, workflow_id)
        text = render(await incident_status(handle), lang)
        if output is None:
            print(text)
        else:
            output.write_text(text, encoding="utf-8")
            console.print(f"wrote {output}")
        return 0

    run(draft)


@signing_options(
    key=typer.Option(
        None,
        help="Your SSH private key (ed25519): signs the confirmation, as the catalog's "
        "identities require.",
    ),
    signature=typer.Option(
        None, help="A signature made with ssh-keygen over the --payload output."
    ),
)
def confirm(
    workflow_id: str = typer.Argument(
        ..., help="The rollback's id, or the incident's (its latest rollback)."
    ),
    item: str = typer.Option(..., help="user_reports, main_features or dashboards."),
    by: str = typer.Option(..., help="Your identity id in the catalog."),
    note: str = typer.Option(""),
    link: str = typer.Option(""),
    *,
    how: SigningOptions,
) -> None:
    """Confirm, as a person, one of the checks after a rollback: no user reports, main features \
work, dashboards normal."""
    _check_id(workflow_id)
    if item not in CONFIRM_ITEMS:
        raise fail(f"--item: {item!r} is not one of {', '.join(CONFIRM_ITEMS)}")
    how.check()
    try:
        signal = ConfirmSignal(item=item, by=by, note=note, link=link, request_id=uuid.uuid4().hex)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise fail(first_error(exc)) from None

    async def send(client, settings) -> int:
        handle, target = await resolve(client, workflow_id)
        current = await incident_status(handle)
        rollbacks = [c for c in current.changes if c.kind == "rollback"]
        signal.target = target or (rollbacks[-1].workflow_id if rollbacks else "")
        gate = next(
            (
                g
                for g in current.confirm_gates
                if g.gate == f"confirm.{item}" and g.plan.get("target") == signal.target
            ),
            None,
        )
        if gate is not None and (how.key or how.payload):
            await checked_gate(
                client,
                handle.id,
                gate,
                task_queue=settings.task_queue,
                types={"Incident"},
                out=err_console if how.payload else console,
            )
        signed = how.sign(
            gate,
            "approve",
            by,
            note,
            no_gate=CliError(
                f"{signal.target or current.incident_id} awaits no {item} confirmation now",
                code=1,
            ),
            only_signed="catalog counts signed confirmations" if current.signed else None,
        )
        if isinstance(signed, Printed):
            return 0
        signal.signed = signed
        return await _record_and_say(
            handle, IncidentWorkflow.confirm_change, signal, "confirm", signal
        )

    run(send)


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
    return {
        "incident_id": current.incident_id,
        "verified": change.verified,
        "fully_verified": change.fully_verified,
        "awaiting_confirmations": change.awaiting,
    }
