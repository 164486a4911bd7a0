"""The audit table shows what people and APIs wrote as text: a reason or an actor with
brackets is printed as written, never read as terminal markup."""

from __future__ import annotations

import datetime as dt

from rich.console import Console

from runbook.models import AuditEntry
from starter.render import audit_table


def test_brackets_in_an_audit_entry_are_shown_as_written() -> None:
    entry = AuditEntry(
        at=dt.datetime(2026, 12, 7, 3, 4, 5, tzinfo=dt.UTC),
        actor="bob[x]",
        action="approved",
        counted=True,
        detail="reason: [red]not markup[/red] and [link=http://evil]click[/link]",
    )
    console = Console(width=200, record=True, color_system=None)
    console.print(audit_table([entry]))
    text = console.export_text()
    assert "bob[x]" in text and "[red]not markup[/red]" in text
    assert "[link=http://evil]click[/link]" in text and "03:04:05" in text and "yes" in text
