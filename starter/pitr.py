"""`modoru pitr`: point-in-time recovery to a new instance, verified, then the
app switched to it after a second approval."""

from __future__ import annotations

import datetime as dt

import typer
from pydantic import ValidationError
from rich.table import Table

from runbook.models import Phase
from runbook.pitr_models import ExpectedQuery, PitrRequest, PitrStatus
from workflows.pitr import PointInTimeRecoveryWorkflow, pitr_workflow_id

from .base import fail, first_error
from .commands import Change, Kind, asked_change
from .render import check_rows, console, pending_row
from .start_options import StartOptions, launch, start_options

pitr_app = typer.Typer(
    help="Point-in-time recovery: clone the database to a time, verify, switch the app (two "
    "approvals each).",
    no_args_is_help=True,
)


def parse_check(text: str) -> ExpectedQuery:
    """`name=SELECT ... => expected`."""
    name, sep, rest = text.partition("=")
    query, arrow, expect = rest.rpartition("=>")
    if not sep or not arrow or not name.strip() or not query.strip():
        raise ValueError(
            f"--check: {text!r} is not NAME=SQL => EXPECTED, e.g. 'walks=SELECT count(*) FROM "
            "walks => 1204'"
        )
    return ExpectedQuery(name=name.strip(), sql=query.strip(), expect=expect.strip())


def render_pitr(status: PitrStatus) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("workflow", status.workflow_id)
    table.add_row(
        "phase",
        status.phase.value
        + (f" (gate: {status.gate})" if status.phase is Phase.AWAITING_APPROVAL else ""),
    )
    table.add_row("service", status.service)
    table.add_row(
        "restore", f"{status.source} as of {status.point_in_time.isoformat()} → {status.clone}"
    )
    earliest, latest = status.window
    if earliest or latest:
        table.add_row(
            "window",
            f"{earliest.isoformat() if earliest else '?'} .. "
            f"{latest.isoformat() if latest else '?'}",
        )
    for backup in status.backups[:3]:
        table.add_row(
            "backup",
            f"run {backup.id} {backup.status} "
            f"{backup.end_time.isoformat() if backup.end_time else ''}",
        )
    if status.approvals_required:
        table.add_row(
            "approvals",
            f"clone {len(status.approvals)}/{status.approvals_required} "
            f"{', '.join(status.approvals)}; "
            f"switch {len(status.switch_approvals)}/{status.approvals_required} "
            f"{', '.join(status.switch_approvals)}",
        )
    pending_row(table, status.pending)
    if status.clone_info:
        table.add_row(
            "clone",
            f"{status.clone_info.name} at {status.clone_info.host}:{status.clone_info.port} "
            f"({status.clone_info.state})",
        )
    check_rows(table, "check", status.checks)
    if status.switched:
        table.add_row("switched", ", ".join(f"{k}={v}" for k, v in status.switched.items()))
    if status.switched_back:
        table.add_row("switched back", f"to {status.source}")
    check_rows(table, "health", status.health)
    if status.message:
        table.add_row("message", status.message)
    console.print(table)


RECOVERY: Change[PitrRequest] = asked_change(
    Kind(what="recovery", scope="service", render=render_pitr),
    PointInTimeRecoveryWorkflow.run,
    lambda request: pitr_workflow_id(request.service),
    lambda request: (
        f"point-in-time recovery of {request.service} to {request.point_in_time.isoformat()}"
    ),
)


def said_of_pitr(exc: ValidationError) -> str:
    """pydantic's refusal in `pitr start`'s words: --time, and a --check's parts."""
    said = first_error(exc).replace("--point-in-time", "--time")
    if said.startswith(("--sql", "--expect", "--name")):  # a --check's parts: its ExpectedQuery's
        said = "--check " + said.removeprefix("--")
    return said


@pitr_app.command("start")
@start_options(
    without=("namespace", "severity", "detected_at"),
    dry_run=typer.Option(
        False, "--dry-run", help="Check the restore point and the name; create nothing."
    ),
    wait=typer.Option(False, "--wait"),
)
def pitr_start(
    service: str = typer.Option(..., help="The service, as named in the catalog."),
    time: str = typer.Option(
        ...,
        "--time",
        help="Restore point, RFC 3339 with an offset: 2026-11-28T14:05:00+09:00 or ...Z.",
    ),
    reason: str = typer.Option(..., help="What was corrupted."),
    new_instance: str | None = typer.Option(
        None, help="Name of the clone; default: <source>-pitr-<UTC time>."
    ),
    check: list[str] = typer.Option(
        [], help="NAME=SQL => EXPECTED, run on the clone before the switch; repeatable."
    ),
    *,
    options: StartOptions,
) -> None:
    """Recover a service's database to a point in time; approve each gate with `modoru approve`."""
    try:
        point = dt.datetime.fromisoformat(time.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"--time: {time!r} is not an RFC 3339 time") from None
    launch(
        options,
        lambda: PitrRequest(
            service=service,
            point_in_time=point,
            new_instance=new_instance,
            reason=reason,
            checks=[parse_check(c) for c in check],
            **options.request_fields(),
        ),
        RECOVERY,
        said=said_of_pitr,
    )
