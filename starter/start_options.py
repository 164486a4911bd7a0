"""What every start command shares: the options a person gives for any change
(namespace, severity, detection time, who asks, the signing key, the notice
language, dry run, wait, JSON), declared once, and the one way a start goes
on from there: check what was typed, build the request, sign it, start it or
attach to the one running.

A start command declares its own options and a keyword-only `StartOptions`
parameter, where `@start_options(...)` puts the shared ones
(starter/option_groups.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from temporalio.client import Client

from runbook.enums import Severity
from worker.settings import Settings

from .base import fail, first_error
from .commands import Change, run
from .inputs import parse_detected_at
from .option_groups import Table, option_group
from .signing import sign_start

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
    sign_start(request, change.workflow_id(request), options.key)

    async def start(client: Client, settings: Settings) -> int:
        return await change.start(
            client, settings, request, wait=options.wait, as_json=options.as_json
        )

    run(start)
