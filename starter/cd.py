"""`modoru redeploy`, `modoru restore` and `modoru troubleshoot`: the runbook's
methods 2 and 3 and its troubleshooting steps, started as workflows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from rich.markup import escape
from rich.table import Table

from runbook.cd_models import (
    MAX_MANIFEST_BYTES,
    ManifestSource,
    RedeployRequest,
    restore_manifest,
    valid_tag,
)
from runbook.repair_models import RepairRequest, RestoreRequest
from workflows.redeploy import RedeployWorkflow, redeploy_workflow_id
from workflows.restore import RestoreWorkflow, restore_workflow_id
from workflows.troubleshoot import TroubleshootWorkflow, troubleshoot_workflow_id

from .base import fail
from .commands import Change, Kind, asked_change
from .render import audit_table, console
from .start_options import StartOptions, launch, start_options

redeploy_app = typer.Typer(
    help="Redeploy a known-good image tag through the CD pipeline (the runbook's method 2).",
    no_args_is_help=True,
)
restore_app = typer.Typer(
    help="Restore a backed-up Deployment manifest (the runbook's method 3).", no_args_is_help=True
)
troubleshoot_app = typer.Typer(
    help="The runbook's troubleshooting remedies, as approved steps.", no_args_is_help=True
)


def _row(table: Table, *cells: object) -> None:
    """Cells are text, never markup: a diff or a log line may hold brackets."""
    table.add_row(*(escape(str(c)) for c in cells))


def render_cd(status: BaseModel) -> None:
    """A redeploy's, restore's or troubleshooting step's status, for humans."""
    data = status.model_dump(mode="json")
    table = Table(show_header=False, title=data["workflow_id"])
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in (
        "phase",
        "namespace",
        "deployment",
        "tag",
        "action",
        "replicaset",
        "severity",
        "requested_by",
        "reason",
        "approvals_required",
        "approvals",
    ):
        if data.get(key) not in (None, "", []):
            _row(table, key, str(data[key]))
    if data.get("source"):
        _row(table, "source", f"{data['source']['kind']}: {data['source']['name']}")
    if data.get("images"):
        _row(
            table,
            "registry",
            "\n".join(
                f"{', '.join(i['tags']) or '<untagged>'}  {i['updated'] or ''}  {i['uri']}"
                for i in data["images"]
            ),
        )
    plan = data.get("plan") or {}
    if plan.get("live_image"):
        _row(
            table,
            "plan",
            f"{plan['live_image']} → {plan['image']} (pushed {data.get('pushed')}; last ran in "
            f"revision {plan.get('last_revision') or 'none'})",
        )
    for rs in plan.get("replicasets") or []:
        _row(
            table,
            "replicaset",
            f"{rs['name']} revision {rs['revision']} ({rs['role']}): "
            f"{rs['ready']}/{rs['replicas']} ready, {', '.join(rs['images'])}",
        )
    check = data.get("check") or {}
    for line in (check.get("problems") or []) + (check.get("notes") or []):
        _row(table, "check", line)
    if check.get("diff"):
        _row(table, "diff", "\n".join(check["diff"]))
    run = data.get("run") or {}
    if run:
        _row(
            table,
            "cd run",
            f"#{run['number']} {run['status']} {run.get('conclusion') or ''} {run['html_url']}",
        )
        for pending in run.get("pending") or []:
            _row(
                table,
                "github review",
                f"environment {pending['environment']}: {', '.join(pending['reviewers'])} "
                "(approve in GitHub)",
            )
    if data.get("pending"):
        _row(
            table,
            "awaiting",
            f"gate {data['pending']['gate']}: modoru approve {data['workflow_id']} --by <you>",
        )
    pull = data.get("pull") or {}
    for line in [v["detail"] for v in pull.get("verdicts") or []] + (
        [pull["permission_detail"]] if pull.get("permission_detail") else []
    ):
        _row(table, "image pull", line)
    for c in (data.get("verification") or {}).get("checks") or []:
        _row(table, c["name"], ("ok " if c["ok"] else "FAIL ") + c["detail"])
    for item in data.get("checklist") or []:
        _row(
            table,
            "done" if item["done_at"] else "todo",
            f"{item['title']}: {item['evidence']}" if item["evidence"] else item["title"],
        )
    if data.get("message"):
        _row(table, "message", data["message"])
    console.print(table)
    console.print(audit_table(getattr(status, "audit", None) or []))


def deployment_change(
    run_fn: Callable[..., Awaitable[object]],
    workflow_id: Callable[[str, str], str],
    what: str,
    render: Callable[[Any], None] = render_cd,
) -> Change[Any]:
    """A change made to one Deployment (a redeploy, a restore, a troubleshooting step, a forward
    fix), started through the CLI's one start-or-attach loop."""
    return asked_change(
        Kind(what=what, scope="deployment", render=render),
        run_fn,
        lambda request: workflow_id(request.namespace, request.deployment),
        lambda request: f"{what} of {request.namespace}/{request.deployment}",
    )


@redeploy_app.command("start")
@start_options(
    dry_run=typer.Option(False, "--dry-run", help="List the images and plan; dispatch nothing.")
)
def redeploy_start(
    deployment: str = typer.Option(..., help="The Deployment to take back."),
    tag: str = typer.Option(
        ..., help="A known-good image tag in Artifact Registry (not the live one)."
    ),
    reason: str = typer.Option(..., help="Why: what is broken."),
    *,
    options: StartOptions,
) -> None:
    """Run the CD pipeline with a known-good tag; prints the workflow id. Absent or live tags are \
refused before anything is dispatched."""

    if not valid_tag(tag):
        raise fail(
            f"--tag: {tag!r} is not an image tag (a letter, digit or _, then up to 127 of "
            "letters, digits, _ . -)"
        )
    launch(
        options,
        lambda: RedeployRequest(
            deployment=deployment, tag=tag, reason=reason, **options.request_fields()
        ),
        deployment_change(RedeployWorkflow.run, redeploy_workflow_id, "redeploy"),
    )


def read_manifest_file(path: Path, deployment: str | None = None) -> str:
    """The file's manifest for `restore start --file`, checked before it goes anywhere (the
    request, with it, is kept in the workflow's history): one Deployment and nothing else, no
    Secret data, no YAML aliases. What is passed on is the manifest written out again, so a
    comment in the file does not travel either. A one-line reason when it cannot be used."""
    if not path.is_file():
        raise ValueError(f"--file: {path} is not a file")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ValueError(
            f"--file: {path} is {size} bytes; a Deployment manifest is at most {MAX_MANIFEST_BYTES}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--file: {path} is not UTF-8 text") from None
    try:
        manifest = restore_manifest(text, deployment)
    except ValueError as exc:
        raise ValueError(f"--file: {path}: {exc}") from None
    import yaml

    return yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)


def manifest_source(artifact: str | None, backup: str | None, file: Path | None) -> ManifestSource:
    given = [
        (kind, value)
        for kind, value in (("artifact", artifact), ("backup", backup), ("file", file))
        if value
    ]
    if len(given) != 1:
        raise ValueError("give exactly one of --artifact NAME, --backup CONFIGMAP and --file PATH")
    kind, value = given[0]
    return ManifestSource(kind=kind, name=str(value))  # type: ignore[arg-type]


@restore_app.command("start")
@start_options(
    dry_run=typer.Option(False, "--dry-run", help="Validate and diff only; change nothing.")
)
def restore_start(
    deployment: str = typer.Option(..., help="The Deployment to restore."),
    reason: str = typer.Option(..., help="Why: what is broken."),
    artifact: str | None = typer.Option(
        None,
        help="A backup artifact of the production deploy pipeline, e.g. "
        "deployment-backup-20250116-120000.",
    ),
    backup: str | None = typer.Option(
        None, help="One of modoru's backup ConfigMaps, e.g. modoru-backup-tekutoko-api-r3-1a2b3c4d."
    ),
    file: Path | None = typer.Option(
        None, help="A manifest file (read here and passed to the workflow)."
    ),
    *,
    options: StartOptions,
) -> None:
    """Validate a backed-up manifest against the live Deployment, show the diff, and after \
approval apply it; prints the workflow id."""
    launch(
        options,
        lambda: RestoreRequest(
            deployment=deployment,
            source=manifest_source(artifact, backup, file),
            manifest=read_manifest_file(file, deployment) if file else "",
            reason=reason,
            **options.request_fields(),
        ),
        deployment_change(RestoreWorkflow.run, restore_workflow_id, "restore"),
    )


# The troubleshooting steps take no severity and detection time, and have no dry run.
troubleshooting_options = start_options(without=("severity", "detected_at"))


def _repair(action: str, deployment: str, replicaset: str, reason: str, options: StartOptions):
    launch(
        options,
        lambda: RepairRequest(
            deployment=deployment,
            action=action,  # type: ignore[arg-type]
            replicaset=replicaset,
            reason=reason,
            **options.request_fields(),
        ),
        deployment_change(TroubleshootWorkflow.run, troubleshoot_workflow_id, action),
    )


@troubleshoot_app.command("delete-replicaset")
@troubleshooting_options
def delete_replicaset(
    deployment: str = typer.Option(..., help="The Deployment whose old pods remain."),
    replicaset: str = typer.Option(..., help="The old ReplicaSet to delete (never the live one)."),
    reason: str = typer.Option(..., help="Why."),
    *,
    options: StartOptions,
) -> None:
    """`kubectl delete replicaset` of an old ReplicaSet, after approval (its manifest is kept in a \
ConfigMap first)."""
    _repair("delete-replicaset", deployment, replicaset, reason, options)


@troubleshoot_app.command("restart")
@troubleshooting_options
def restart(
    deployment: str = typer.Option(..., help="The Deployment to restart."),
    reason: str = typer.Option(..., help="Why."),
    *,
    options: StartOptions,
) -> None:
    """`kubectl rollout restart`, after approval; the rollout is awaited and verified."""
    _repair("restart", deployment, "", reason, options)
