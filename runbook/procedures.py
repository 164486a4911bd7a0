"""The runbook's procedures that change production, one row each: every list
that names them (the change kinds an incident starts, the workflows a worker
runs, the status model `modoru status` reads, the CLI's command groups, the
replay tests) is read from this table. A new procedure is its own files (its
request and status models, its workflow, its CLI group) plus one row here;
tests/unit/test_procedures.py fails when a row's parts do not fit together.

Pure data: the workflow, the CLI group and the status renderer are named by
import path ("module:attribute"), so this module imports no Temporal, no CLI."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from .cd_models import RedeployRequest, RedeployStatus
from .forward_fix_models import ForwardFixRequest, ForwardFixStatus
from .migration_models import MigrationRequest, MigrationStatus
from .models import Model, RollbackRequest, RollbackStatus
from .pitr_models import PitrRequest, PitrStatus
from .repair_models import RepairRequest, RepairStatus, RestoreRequest, RestoreStatus


@dataclass(frozen=True)
class Procedure:
    """One procedure: `kind` is its name in a change request, an incident's records and the
    Web UI's summaries; `cli` its command group; `workflow_type` Temporal's name for it."""

    kind: str
    cli: str
    workflow_type: str
    request: type[Model]
    status: type[Model]
    scope: Literal["deployment", "service"]  # one Deployment, or a service's database
    runbook: str  # the runbook's heading it carries out
    workflow: str  # "module:Class", registered by the worker
    commands: str  # "module:typer_app", added to the CLI under `cli`
    render: str  # "module:function", how `modoru status` shows the status


PROCEDURES: tuple[Procedure, ...] = (
    Procedure(
        "rollback",
        "rollback",
        "DeploymentRollback",
        RollbackRequest,
        RollbackStatus,
        "deployment",
        "方法1: Kubernetes ロールバック",
        "workflows.deployment_rollback:DeploymentRollbackWorkflow",
        "starter.rollback:rollback_app",
        "starter.rollback:render_rollback",
    ),
    Procedure(
        "migration",
        "migrate-down",
        "MigrationRollback",
        MigrationRequest,
        MigrationStatus,
        "service",
        "データベースマイグレーションのロールバック",
        "workflows.migration_rollback:MigrationRollbackWorkflow",
        "starter.migration:migrate_app",
        "starter.migration:render_migration",
    ),
    Procedure(
        "pitr",
        "pitr",
        "PointInTimeRecovery",
        PitrRequest,
        PitrStatus,
        "service",
        "Cloud SQL ポイントインタイムリカバリ",
        "workflows.pitr:PointInTimeRecoveryWorkflow",
        "starter.pitr:pitr_app",
        "starter.pitr:render_pitr",
    ),
    Procedure(
        "redeploy",
        "redeploy",
        "Redeploy",
        RedeployRequest,
        RedeployStatus,
        "deployment",
        "方法2: GitHub Actions 経由でのロールバック",
        "workflows.redeploy:RedeployWorkflow",
        "starter.cd:redeploy_app",
        "starter.cd:render_cd",
    ),
    Procedure(
        "restore",
        "restore",
        "Restore",
        RestoreRequest,
        RestoreStatus,
        "deployment",
        "方法3: デプロイメント定義ファイルから復元",
        "workflows.restore:RestoreWorkflow",
        "starter.cd:restore_app",
        "starter.cd:render_cd",
    ),
    Procedure(
        "troubleshoot",
        "troubleshoot",
        "Troubleshoot",
        RepairRequest,
        RepairStatus,
        "deployment",
        "トラブルシューティング",
        "workflows.troubleshoot:TroubleshootWorkflow",
        "starter.cd:troubleshoot_app",
        "starter.cd:render_cd",
    ),
    Procedure(
        "forward_fix",
        "forward-fix",
        "ForwardFix",
        ForwardFixRequest,
        ForwardFixStatus,
        "deployment",
        "ロールバックできない場合: フォワードフィックス",
        "workflows.forward_fix:ForwardFixWorkflow",
        "starter.forward_fix:forward_fix_app",
        "starter.forward_fix:render_forward_fix",
    ),
)

BY_KIND: dict[str, Procedure] = {p.kind: p for p in PROCEDURES}
BY_WORKFLOW_TYPE: dict[str, Procedure] = {p.workflow_type: p for p in PROCEDURES}
BY_REQUEST: dict[type[Model], Procedure] = {p.request: p for p in PROCEDURES}
BY_STATUS: dict[type[Model], Procedure] = {p.status: p for p in PROCEDURES}
KINDS: tuple[str, ...] = tuple(BY_KIND)
# The watcher and the parent of the changes: modoru's other workflow types.
OTHER_WORKFLOW_TYPES: tuple[str, ...] = ("ReleaseGuard", "Incident")
WORKFLOW_TYPES: tuple[str, ...] = tuple(BY_WORKFLOW_TYPE) + OTHER_WORKFLOW_TYPES


def resolve(path: str) -> object:
    """The attribute a row names ("module:attribute"), imported."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)
