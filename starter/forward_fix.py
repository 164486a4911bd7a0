"""`modoru forward-fix`: the runbook's forward fix, for when rolling back is
impossible. Start it (the pods' errors are grouped and announced), record the
hotfix once it passed staging, and follow it: the hotfix goes out through the
CD pipeline as a redeploy that modoru's approvers approve, then the error
rate is watched with the release guard's thresholds."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from runbook.cd_models import valid_tag
from runbook.enums import Phase, Severity
from runbook.forward_fix_models import ForwardFixRequest, ForwardFixStatus, Hotfix
from runbook.identity import check_person
from workflows.forward_fix import ForwardFixWorkflow, forward_fix_workflow_id

from .base import CliError, fail, first_error
from .cd import deployment_change
from .commands import query_any_status, run
from .render import console
from .start_options import REQUESTER, SEVERITY_HELP, StartOptions, launch, start_options

forward_fix_app = typer.Typer(
    help="Forward fix: deploy a hotfix through the CD pipeline when rolling back is impossible.",
    no_args_is_help=True,
)


def render_forward_fix(status: ForwardFixStatus) -> None:
    table = Table(show_header=False, title=status.workflow_id)
    table.add_column(style="bold")
    table.add_column(overflow="fold")

    def row(key: str, value: object) -> None:
        table.add_row(key, escape(str(value)))  # log lines hold brackets: text, never markup

    row("phase", status.phase.value)
    row("deployment", f"{status.namespace}/{status.deployment}")
    row("reason", status.reason)
    row(
        "logs",
        f"{status.lines_read} lines from {len(status.pods_read)} pod(s)"
        + (f"; unreadable: {'; '.join(status.unreadable)}" if status.unreadable else ""),
    )
    for group in status.errors[:5]:
        row(
            "error",
            f"{group.count}x in {', '.join(group.pods)}: {group.signature}  (first "
            f"{group.first_seen or '?'}, last {group.last_seen or '?'})",
        )
    for label, reading in (("before", status.normal), ("at start", status.at_start)):
        if reading is not None and reading.error_ratio is not None:
            row(
                f"error ratio {label}",
                f"{reading.error_ratio:.1%} over {reading.requests} requests",
            )
    if status.hotfix is not None:
        row(
            "hotfix",
            f"{status.hotfix.tag} (branch {status.hotfix.branch}) recorded by {status.hotfix.by}"
            + (f": {status.hotfix.link}" if status.hotfix.link else ""),
        )
    elif status.phase is Phase.AWAITING_HOTFIX:
        row(
            "next",
            f"modoru forward-fix hotfix {status.workflow_id} --branch B --tag T "
            "--staging-verified --by <you>",
        )
    if status.deploy_workflow_id:
        row(
            "deploy",
            f"{status.deploy_workflow_id} (approve with: modoru approve "
            f"{status.deploy_workflow_id} --by <you>)"
            + (f" — {status.deploy_message}" if status.deploy_message else ""),
        )
    if status.watch is not None:
        verdict = "; ".join(status.watch.verdict.reasons) or "within the guard's thresholds"
        row("watch", f"{status.watch.polls} poll(s): {verdict}")
    if status.message:
        row("message", status.message)
    console.print(table)


def hotfix_of(
    branch: str | None,
    tag: str | None,
    staging_verified: bool,
    by: str,
    link: str = "",
    note: str = "",
) -> Hotfix | None:
    """The hotfix given on the command line, None when none was; ValueError naming the problem."""
    if branch is None and tag is None:
        if staging_verified:
            raise ValueError("--staging-verified needs --hotfix-branch and --hotfix-tag")
        return None
    if not branch or not tag:
        raise ValueError("give both the hotfix's branch and its tag")
    if not valid_tag(tag):
        raise ValueError(
            f"tag {tag!r} is not an image tag (a letter, digit or _, then up to 127 of letters, "
            "digits, _ . -)"
        )
    return Hotfix(
        branch=branch, tag=tag, by=by, staging_verified=staging_verified, link=link, note=note
    )


@forward_fix_app.command("start")
@start_options(
    own_after="requested_by",
    severity=typer.Option(Severity.IMMEDIATE, help=SEVERITY_HELP),
    requested_by=typer.Option(REQUESTER, help="Who asks."),
)
def forward_fix_start(
    deployment: str = typer.Option(..., help="The Deployment to fix forward."),
    reason: str = typer.Option(
        ..., help="Why rolling back is impossible (e.g. an irreversible schema change)."
    ),
    *,
    options: StartOptions,
    hotfix_branch: str | None = typer.Option(
        None, help="The hotfix branch, when it is already built."
    ),
    hotfix_tag: str | None = typer.Option(
        None, help="The hotfix's image tag in Artifact Registry."
    ),
    staging_verified: bool = typer.Option(
        False, "--staging-verified", help="The hotfix passed staging (required with a hotfix)."
    ),
    reminder_minutes: int = typer.Option(
        30, help="Remind the channels this often while the hotfix is awaited."
    ),
) -> None:
    """Group the pods' errors, announce, and deploy the hotfix once recorded; prints the workflow \
id."""
    launch(
        options,
        lambda: ForwardFixRequest(
            deployment=deployment,
            reason=reason,
            hotfix=hotfix_of(hotfix_branch, hotfix_tag, staging_verified, options.requested_by),
            reminder_minutes=reminder_minutes,
            **options.request_fields(),
        ),
        deployment_change(
            ForwardFixWorkflow.run,
            forward_fix_workflow_id,
            "forward fix",
            render=render_forward_fix,
        ),
    )


@forward_fix_app.command("hotfix")
def forward_fix_hotfix(
    workflow_id: str = typer.Argument(
        ..., help="The forward fix's id (forward-fix-NAMESPACE-DEPLOYMENT)."
    ),
    branch: str = typer.Option(..., help="The hotfix branch."),
    tag: str = typer.Option(..., help="The hotfix's image tag in Artifact Registry."),
    by: str = typer.Option(..., help="Who built and verified it."),
    staging_verified: bool = typer.Option(
        False, "--staging-verified", help="The hotfix passed staging (the runbook requires it)."
    ),
    link: str = typer.Option("", help="The pull request or the staging run."),
    note: str = typer.Option("", help="Anything the team should know."),
) -> None:
    """Record the hotfix a running forward fix waits for."""

    if not staging_verified:
        raise fail(
            "--staging-verified is required: the runbook deploys a hotfix only after it was "
            "verified on staging"
        )
    try:
        hotfix = hotfix_of(branch, tag, staging_verified, check_person(by, "--by"), link, note)
    except ValidationError as exc:
        raise fail(first_error(exc)) from None
    except ValueError as exc:
        raise fail(str(exc)) from None

    async def send(client, settings) -> int:
        handle = client.get_workflow_handle(workflow_id)
        status = await query_any_status(handle)
        if not isinstance(status, ForwardFixStatus):
            raise CliError(f"{workflow_id} is not a forward fix")
        if status.hotfix is not None:
            raise CliError(
                f"{workflow_id} already has hotfix {status.hotfix.tag} (recorded by "
                f"{status.hotfix.by})"
            )
        if status.phase in (Phase.COMPLETED, Phase.FAILED, Phase.REJECTED):
            raise CliError(
                f"{workflow_id} has ended ({status.phase.value}); start a new forward fix"
            )
        await handle.signal("hotfix", hotfix)
        console.print(
            f"hotfix {tag} recorded for {workflow_id}; the deploy waits for approval: modoru "
            f"status {workflow_id}-deploy"
        )
        return 0

    run(send)


@forward_fix_app.command("status")
def forward_fix_status(
    workflow_id: str = typer.Argument(..., help="The forward fix's id."),
) -> None:

    async def show(client, settings) -> int:
        status = await query_any_status(client.get_workflow_handle(workflow_id))
        if not isinstance(status, ForwardFixStatus):
            raise CliError(f"{workflow_id} is not a forward fix")
        render_forward_fix(status)
        return 0

    run(show)
