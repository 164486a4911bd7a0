"""`modoru redeploy`, `modoru restore` and `modoru troubleshoot`: the runbook's
methods 2 and 3 and its troubleshooting steps, started as workflows."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from pydantic import BaseModel, ValidationError
from rich.markup import escape
from rich.table import Table
from temporalio.client import Client

from runbook.cd_models import MAX_MANIFEST_BYTES, ManifestSource, RedeployRequest, valid_tag
from runbook.enums import Severity
from runbook.repair_models import RepairRequest, RestoreRequest
from worker.settings import Settings
from workflows import search_attributes as sa
from workflows.redeploy import RedeployWorkflow, redeploy_workflow_id
from workflows.restore import RestoreWorkflow, restore_workflow_id
from workflows.troubleshoot import TroubleshootWorkflow, troubleshoot_workflow_id

from .base import fail, first_error
from .commands import Kind, run, start
from .inputs import parse_detected_at
from .render import console
from .signing import sign_start

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
STATUS_KINDS = ("Redeploy", "Restore", "Troubleshoot")


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
    audit = Table(title="audit")
    for column in ("at", "actor", "action", "counted", "detail"):
        audit.add_column(column, overflow="fold")
    for entry in data.get("audit") or []:
        _row(
            audit,
            entry["at"][11:19],
            entry["actor"],
            entry["action"],
            "" if entry["counted"] is None else ("yes" if entry["counted"] else "no"),
            entry["detail"],
        )
    console.print(audit)


async def start_cd(
    client: Client,
    settings: Settings,
    run_fn,
    request,
    *,
    workflow_id: str,
    what: str,
    wait: bool,
    as_json: bool,
    render=None,
) -> int:
    """Start (or attach to) a change made to one Deployment (a redeploy, a restore, a
    troubleshooting step, a forward fix), through the CLI's one start-or-attach loop."""
    kind: Kind = Kind(what=what, scope="deployment", render=render or render_cd)
    return await start(
        client,
        settings,
        kind,
        run_fn,
        request,
        workflow_id=workflow_id,
        search_attributes=sa.for_rollback(
            request.namespace, request.deployment, request.severity.value
        ),
        summary=f"{what} of {request.namespace}/{request.deployment}",
        details=f"requested by {request.requested_by}: {request.reason}",
        wait=wait,
        as_json=as_json,
    )


def _common(severity: Severity, detected_at: str | None):
    return parse_detected_at(detected_at)


@redeploy_app.command("start")
def redeploy_start(
    deployment: str = typer.Option(..., help="The Deployment to take back."),
    tag: str = typer.Option(
        ..., help="A known-good image tag in Artifact Registry (not the live one)."
    ),
    reason: str = typer.Option(..., help="Why: what is broken."),
    namespace: str = typer.Option("default"),
    severity: Severity = typer.Option(
        Severity.INVESTIGATE, help="immediate (5 min) or investigate (15 min)."
    ),
    detected_at: str | None = typer.Option(
        None, help="When the problem was seen (RFC 3339 with offset); default: now."
    ),
    requested_by: str = typer.Option(
        os.environ.get("USER") or "oncall", help="Who asks (cannot approve it)."
    ),
    key: Path | None = typer.Option(None, help="Your SSH private key: signs the start."),
    language: str = typer.Option("ja", help="Notice language: ja or en."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List the images and plan; dispatch nothing."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow it until it ends."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run the CD pipeline with a known-good tag; prints the workflow id. Absent or live tags are \
refused before anything is dispatched."""

    if not valid_tag(tag):
        raise fail(
            f"--tag: {tag!r} is not an image tag (a letter, digit or _, then up to 127 of "
            "letters, digits, _ . -)"
        )
    try:
        request = RedeployRequest(
            namespace=namespace,
            deployment=deployment,
            tag=tag,
            severity=severity,
            reason=reason,
            requested_by=requested_by,
            detected_at=_common(severity, detected_at),
            language=language,
            dry_run=dry_run,
        )
    except ValidationError as exc:
        raise fail(first_error(exc)) from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    workflow_id = redeploy_workflow_id(namespace, deployment)
    sign_start(request, workflow_id, key)
    run(
        lambda client, settings: start_cd(
            client,
            settings,
            RedeployWorkflow.run,
            request,
            workflow_id=workflow_id,
            what="redeploy",
            wait=wait,
            as_json=as_json,
        )
    )


def read_manifest_file(path: Path) -> str:
    """The file's text for `restore start --file`, or a one-line reason it cannot be used."""
    if not path.is_file():
        raise ValueError(f"--file: {path} is not a file")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ValueError(
            f"--file: {path} is {size} bytes; a Deployment manifest is at most {MAX_MANIFEST_BYTES}"
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--file: {path} is not UTF-8 text") from None


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
    namespace: str = typer.Option("default"),
    severity: Severity = typer.Option(
        Severity.INVESTIGATE, help="immediate (5 min) or investigate (15 min)."
    ),
    detected_at: str | None = typer.Option(
        None, help="When the problem was seen (RFC 3339 with offset); default: now."
    ),
    requested_by: str = typer.Option(
        os.environ.get("USER") or "oncall", help="Who asks (cannot approve it)."
    ),
    key: Path | None = typer.Option(None, help="Your SSH private key: signs the start."),
    language: str = typer.Option("ja", help="Notice language: ja or en."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate and diff only; change nothing."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow it until it ends."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Validate a backed-up manifest against the live Deployment, show the diff, and after \
approval apply it; prints the workflow id."""

    try:
        source = manifest_source(artifact, backup, file)
        text = read_manifest_file(file) if file else ""
        request = RestoreRequest(
            namespace=namespace,
            deployment=deployment,
            source=source,
            manifest=text,
            severity=severity,
            reason=reason,
            requested_by=requested_by,
            detected_at=_common(severity, detected_at),
            language=language,
            dry_run=dry_run,
        )
    except ValidationError as exc:
        raise fail(first_error(exc)) from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    workflow_id = restore_workflow_id(namespace, deployment)
    sign_start(request, workflow_id, key)
    run(
        lambda client, settings: start_cd(
            client,
            settings,
            RestoreWorkflow.run,
            request,
            workflow_id=workflow_id,
            what="restore",
            wait=wait,
            as_json=as_json,
        )
    )


def _repair(
    action: str,
    deployment: str,
    namespace: str,
    replicaset: str,
    reason: str,
    requested_by: str,
    key: Path | None,
    language: str,
    wait: bool,
    as_json: bool,
) -> None:

    try:
        request = RepairRequest(
            namespace=namespace,
            deployment=deployment,
            action=action,
            replicaset=replicaset,
            reason=reason,  # type: ignore[arg-type]
            requested_by=requested_by,
            language=language,
        )
    except ValidationError as exc:
        raise fail(first_error(exc)) from None
    workflow_id = troubleshoot_workflow_id(namespace, deployment)
    sign_start(request, workflow_id, key)
    run(
        lambda client, settings: start_cd(
            client,
            settings,
            TroubleshootWorkflow.run,
            request,
            workflow_id=workflow_id,
            what=action,
            wait=wait,
            as_json=as_json,
        )
    )


@troubleshoot_app.command("delete-replicaset")
def delete_replicaset(
    deployment: str = typer.Option(..., help="The Deployment whose old pods remain."),
    replicaset: str = typer.Option(..., help="The old ReplicaSet to delete (never the live one)."),
    reason: str = typer.Option(..., help="Why."),
    namespace: str = typer.Option("default"),
    requested_by: str = typer.Option(
        os.environ.get("USER") or "oncall", help="Who asks (cannot approve it)."
    ),
    key: Path | None = typer.Option(None, help="Your SSH private key: signs the start."),
    language: str = typer.Option("ja", help="Notice language: ja or en."),
    wait: bool = typer.Option(False, "--wait", help="Follow it until it ends."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """`kubectl delete replicaset` of an old ReplicaSet, after approval (its manifest is kept in a \
ConfigMap first)."""
    _repair(
        "delete-replicaset",
        deployment,
        namespace,
        replicaset,
        reason,
        requested_by,
        key,
        language,
        wait,
        as_json,
    )


@troubleshoot_app.command("restart")
def restart(
    deployment: str = typer.Option(..., help="The Deployment to restart."),
    reason: str = typer.Option(..., help="Why."),
    namespace: str = typer.Option("default"),
    requested_by: str = typer.Option(
        os.environ.get("USER") or "oncall", help="Who asks (cannot approve it)."
    ),
    key: Path | None = typer.Option(None, help="Your SSH private key: signs the start."),
    language: str = typer.Option("ja", help="Notice language: ja or en."),
    wait: bool = typer.Option(False, "--wait", help="Follow it until it ends."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """`kubectl rollout restart`, after approval; the rollout is awaited and verified."""
    _repair(
        "restart", deployment, namespace, "", reason, requested_by, key, language, wait, as_json
    )
