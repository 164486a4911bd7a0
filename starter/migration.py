"""`modoru migrate-down`: roll a service's schema back with a backup gate and
two approvers; `approve`, `reject` and `status` work on it as on rollbacks."""

from __future__ import annotations

import typer
from rich.table import Table

from runbook.migration_models import MigrationRequest, MigrationStatus
from workflows.migration_rollback import MigrationRollbackWorkflow, migration_workflow_id

from .commands import Change, Kind, asked_change
from .render import approvals_rows, audit_table, check_rows, console
from .start_options import StartOptions, launch, start_options

migrate_app = typer.Typer(
    help="Schema rollbacks (the runbook's migration rollback): backup gate, two approvers, "
    "verification.",
    no_args_is_help=True,
)


def _version(v: int | None) -> str:
    return "nil" if v is None else str(v)


def render_migration(status: MigrationStatus) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("workflow", status.workflow_id)
    table.add_row("phase", status.phase.value)
    table.add_row("service", f"{status.service} ({status.namespace}/{status.deployment})")
    if status.from_version is not None or status.to_version is not None:
        table.add_row(
            "schema",
            f"version {_version(status.from_version)} → {_version(status.to_version)} "
            f"({status.steps} steps)" + (" [red]dirty[/]" if status.dirty else ""),
        )
    table.add_row(
        "severity",
        f"{status.severity.value}, deadline {status.sla_deadline.isoformat()}"
        + ("" if status.sla_met is None else f" (SLA {'met' if status.sla_met else 'breached'})"),
    )
    if status.backup is not None:
        table.add_row(
            "backup",
            ("[green]ok[/] " if status.backup.ok else "[red]missing[/] ") + status.backup.detail,
        )
    approvals_rows(table, status)
    for result in status.commands:
        said = (result.stdout.strip() or result.stderr.strip()).splitlines()
        table.add_row(
            "exec",
            f"{' '.join(result.command)} (pod {result.pod}): exit {result.exit_code}"
            + (f": {said[-1]}" if said else ""),
        )
    check_rows(table, "check", status.integrity)
    if status.message:
        table.add_row("message", status.message)
    console.print(table)
    console.print(audit_table(status.audit))


MIGRATION_ROLLBACK: Change[MigrationRequest] = asked_change(
    Kind(what="migration rollback", scope="service", render=render_migration),
    MigrationRollbackWorkflow.run,
    lambda request: migration_workflow_id(request.service),
    lambda request: f"migration rollback of {request.service}",
)


@migrate_app.command("start")
@start_options(
    without=("namespace",),
    dry_run=typer.Option(
        False, "--dry-run", help="Read the version, history and backups; change nothing."
    ),
)
def migrate_start(
    service: str = typer.Option(..., help="The service, as named in the catalog."),
    steps: int | None = typer.Option(None, help="Migrations to revert (default 1)."),
    to_version: int | None = typer.Option(
        None, help="Revert down to this version instead (0: all)."
    ),
    reason: str = typer.Option(..., help="Why: what the migration broke."),
    *,
    options: StartOptions,
) -> None:
    """Start a migration rollback; prints its workflow id. Approve it with `modoru approve`."""
    launch(
        options,
        lambda: MigrationRequest(
            service=service,
            steps=steps,
            to_version=to_version,
            reason=reason,
            **options.request_fields(),
        ),
        MIGRATION_ROLLBACK,
    )
