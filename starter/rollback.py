"""`modoru rollback start`: the runbook's method 1, a deployment rollback (the
other verbs, `approve`, `reject`, `status`, work on every change and live in
starter/cli.py)."""

from __future__ import annotations

import typer

from runbook.models import RollbackRequest, RollbackStatus, Severity

from .commands import ROLLBACK_CHANGE
from .render import render_status
from .start_options import REQUESTER, StartOptions, launch, start_options

rollback_app = typer.Typer(
    help="Deployment rollbacks (the runbook's method 1).", no_args_is_help=True
)


def render_rollback(status: RollbackStatus) -> None:
    """`modoru status` of a deployment rollback."""
    render_status(status)


@rollback_app.command("start")
@start_options(
    without=("severity",),
    own_after="namespace",
    requested_by=typer.Option(REQUESTER, help="Who asks for the rollback (your identity id)."),
    key=typer.Option(
        None,
        help="Your SSH private key: signs the start (an immediate rollback needs an on-call "
        "signer).",
    ),
    dry_run=typer.Option(False, "--dry-run", help="Plan only; change nothing."),
    wait=typer.Option(False, "--wait", help="Follow the rollback until it ends."),
    as_json=typer.Option(False, "--json", help="Print the status as JSON."),
)
def rollback_start(
    deployment: str = typer.Option(..., help="The Deployment to roll back."),
    severity: Severity = typer.Option(
        ..., help="immediate (within 5 min) or investigate (within 15 min, needs approval)."
    ),
    reason: str = typer.Option(..., help="Why: what is broken."),
    *,
    options: StartOptions,
    to_revision: int | None = typer.Option(
        None, help="Target revision; default: the previous one, as kubectl."
    ),
    impact: str = typer.Option("", help="User impact, for the start notice."),
    cause: str = typer.Option("", help="Suspected cause, for the start notice."),
) -> None:
    """Start a deployment rollback; prints its workflow id and Web UI link."""
    launch(
        options,
        lambda: RollbackRequest(
            deployment=deployment,
            to_revision=to_revision,
            severity=severity,
            reason=reason,
            impact=impact,
            cause=cause,
            **options.request_fields(),
        ),
        ROLLBACK_CHANGE,
    )
