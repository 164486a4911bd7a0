"""Showing a rollback's status to a human."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.markup import escape
from rich.table import Table

from runbook.decisions import GateView
from runbook.migration_models import MigrationStatus
from runbook.models import AuditEntry, RollbackStatus

from .base import console, err_console

__all__ = [
    "approvals_rows",
    "audit_table",
    "check_rows",
    "console",
    "err_console",
    "pending_row",
    "render_status",
]

PHASE_STYLE = {
    "completed": "green",
    "failed": "red",
    "rejected": "yellow",
    "awaiting_approval": "magenta",
}


def pending_row(table: Table, pending: GateView | None) -> None:
    """What an approver signs now: the gate and the plan's digest."""
    if pending is None:
        return
    how = "signed decisions only (--key)" if pending.signed else "names"
    table.add_row("awaiting", f"gate {pending.gate}, plan sha256 {pending.digest[:16]}… ({how})")
    for check in pending.plan.get("checks", []):
        if (
            isinstance(check, dict) and "sql" in check
        ):  # what approvers of a recovery agree will be checked
            table.add_row(
                "planned check", f"{check.get('name')}: {check['sql']} => {check.get('expect')}"
            )


def approvals_rows(table: Table, status: RollbackStatus | MigrationStatus) -> None:
    """The approvals counted so far, and what an approver signs now."""
    if status.approvals_required:
        table.add_row(
            "approvals",
            f"{len(status.approvals)}/{status.approvals_required} {', '.join(status.approvals)}",
        )
    pending_row(table, status.pending)


def check_rows(table: Table, label: str, checks: Iterable[Any]) -> None:
    """One row a check (anything with a name, ok and detail): `LABEL NAME`, ok or FAIL."""
    for check in checks:
        table.add_row(
            f"{label} {check.name}",
            f"{'[green]ok[/]' if check.ok else '[red]FAIL[/]'} {check.detail}",
        )


def audit_table(entries: Iterable[AuditEntry]) -> Table:
    """The audit trail, one row an entry: time of day, actor, action, counted (yes, no or
    blank) and detail. Every cell is text, brackets included: actors, reasons and details
    come from people and from APIs, never markup."""
    table = Table(title="audit")
    for column in ("at", "actor", "action", "counted", "detail"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        counted = "" if entry.counted is None else ("yes" if entry.counted else "no")
        cells = (entry.at.strftime("%H:%M:%S"), entry.actor, entry.action, counted, entry.detail)
        table.add_row(*(escape(cell) for cell in cells))
    return table


def render_status(status: RollbackStatus, link: str | None = None) -> None:
    style = PHASE_STYLE.get(status.phase.value, "cyan")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("workflow", status.workflow_id)
    table.add_row("phase", f"[{style}]{status.phase.value}[/]")
    table.add_row("target", f"{status.namespace}/{status.deployment}")
    if status.from_revision is not None:
        table.add_row("revision", f"{status.from_revision} → {status.to_revision}")
    for diff in status.image_diff:
        table.add_row("image", diff)
    table.add_row("severity", status.severity.value)
    sla = "pending" if status.sla_met is None else ("met" if status.sla_met else "[red]breached[/]")
    table.add_row("deadline", f"{status.sla_deadline.isoformat()} (SLA {sla})")
    approvals_rows(table, status)
    for line in status.evidence:
        table.add_row("evidence", line)
    if status.backup_configmap:
        table.add_row("backup", f"configmap/{status.backup_configmap}")
    if status.verification is not None:
        for check in status.verification.checks:
            mark = (
                "[green]ok[/]"
                if check.ok
                else "[yellow]UNREAD[/]"
                if check.unread
                else "[red]FAIL[/]"
            )
            table.add_row(f"check {check.name}", f"{mark} {check.detail}")
    if status.diagnostics and status.diagnostics.problems:
        for problem in status.diagnostics.problems:
            table.add_row("problem", f"[red]{problem}[/]")
    if status.message:
        table.add_row("message", status.message)
    if link:
        table.add_row("web ui", link)
    console.print(table)
    checklist = Table(title="checklist", show_lines=False)
    checklist.add_column("")
    checklist.add_column("item")
    checklist.add_column("evidence", overflow="fold")
    for item in status.checklist:
        checklist.add_row("✔" if item.done_at else "·", item.title, item.evidence)
    console.print(checklist)
    if status.audit:
        console.print(audit_table(status.audit))
