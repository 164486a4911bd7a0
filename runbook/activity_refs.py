"""Every activity modoru's workflows can call, in one place: its registered name,
the model it takes and the model it returns.

The activities register under these names (`@activity.defn(name=ROLLOUT_UNDO.name)`),
the workflows call through these references (so the argument and the result are
typed), and the worker, the test fakes and the registration test all read this
list. A reference is plain data: no Temporal, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from .catalog import ServiceEntry
from .cd_models import (
    ArtifactList,
    ArtifactsRequest,
    DispatchRequest,
    FetchedManifest,
    ImageList,
    ImagesRequest,
    PullCheckRequest,
    PullDiagnosis,
    RedeployPlan,
    RedeployPlanRequest,
    RunFollow,
    RunState,
)
from .forward_fix_models import ServiceLogs, ServiceLogsRequest
from .guard_models import BaselineRequest, GuardBaseline, WatchReport, WatchRequest
from .migration_models import (
    BackupCheck,
    BackupCheckRequest,
    DatabaseSnapshot,
    ExecRequest,
    ExecResult,
    SnapshotRequest,
)
from .models import (
    AlertQuery,
    BackupRef,
    BackupRequest,
    CardUpdate,
    CheckResult,
    MetricsQuery,
    Notice,
    NoticeResult,
    OpenAlerts,
    PlanRequest,
    RollbackPlan,
    RolloutOutcome,
    RolloutWaitRequest,
    ServiceByName,
    ServiceLookup,
    ServiceMetrics,
    UndoRequest,
    UndoResult,
    VerifyRequest,
    VerifyResult,
)
from .pitr_models import (
    CloneQueriesRequest,
    CloneRequest,
    InstanceInfo,
    InstanceRef,
    OperationRef,
    PitrCheck,
    PitrCheckRequest,
    ProxySwitch,
    ProxySwitched,
)
from .repair_models import (
    ApplyResult,
    BackupFetch,
    RepairPlan,
    RepairPlanRequest,
    ReplicaSetDelete,
    RestartRequest,
    RestoreApplyRequest,
    RestoreCheck,
    RestoreCheckRequest,
)

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class ActivityRef(Generic[In, Out]):
    """An activity as a workflow sees it: `name` takes one `arg` and returns one `result`.

    `keepalive` (seconds): the workflows give the activity this heartbeat timeout and the
    worker beats for it while it runs (worker/keepalive.py), so a worker lost in the middle of
    it (a write above all) is replaced within seconds, not at the end of its start-to-close.
    None for the activities that beat themselves with details a retry resumes from: a bare
    beat would erase them."""

    name: str
    arg: type[In]
    result: type[Out]
    keepalive: int | None = 10  # long enough for a busy worker's beat to get through

    def __str__(self) -> str:
        return self.name


LOOKUP = ActivityRef("catalog.lookup", ServiceLookup, ServiceEntry)
SERVICE = ActivityRef("catalog.service", ServiceByName, ServiceEntry)

PLAN_ROLLBACK = ActivityRef("k8s.plan_rollback", PlanRequest, RollbackPlan)
BACKUP_DEPLOYMENT = ActivityRef("k8s.backup_deployment", BackupRequest, BackupRef)
ROLLOUT_UNDO = ActivityRef("k8s.rollout_undo", UndoRequest, UndoResult)
WAIT_ROLLOUT = ActivityRef("k8s.wait_rollout", RolloutWaitRequest, RolloutOutcome, keepalive=None)
EXEC = ActivityRef("k8s.exec", ExecRequest, ExecResult, keepalive=None)
SWITCH_PROXY = ActivityRef("k8s.switch_proxy_instance", ProxySwitch, ProxySwitched)

VERIFY_SERVICE = ActivityRef("verify.service", VerifyRequest, VerifyResult, keepalive=None)
NOTIFY = ActivityRef("notify.send", Notice, NoticeResult)
NOTIFY_CARD = ActivityRef("notify.update_card", CardUpdate, NoticeResult)

GUARD_BASELINE = ActivityRef("guard.baseline", BaselineRequest, GuardBaseline)
GUARD_WATCH = ActivityRef("guard.watch", WatchRequest, WatchReport, keepalive=None)

SERVICE_HEALTH = ActivityRef("metrics.service_health", MetricsQuery, ServiceMetrics)
OPEN_ALERTS = ActivityRef("metrics.open_alerts", AlertQuery, OpenAlerts)

DB_SNAPSHOT = ActivityRef("db.snapshot", SnapshotRequest, DatabaseSnapshot, keepalive=None)
CLONE_QUERIES: ActivityRef[CloneQueriesRequest, list[CheckResult]] = ActivityRef(
    "db.clone_queries",
    CloneQueriesRequest,
    list[CheckResult],
    keepalive=None,
)

CHECK_BACKUP = ActivityRef("cloudsql.check_backup", BackupCheckRequest, BackupCheck, keepalive=None)
PITR_CHECK = ActivityRef("cloudsql.pitr_check", PitrCheckRequest, PitrCheck)
START_CLONE = ActivityRef("cloudsql.start_clone", CloneRequest, OperationRef)
OPERATION_DONE = ActivityRef("cloudsql.operation_done", OperationRef, str)
INSTANCE = ActivityRef("cloudsql.instance", InstanceRef, InstanceInfo)

# The runbook's methods 2 and 3, its troubleshooting and the forward fix.
REGISTRY_IMAGES = ActivityRef("registry.images", ImagesRequest, ImageList)
DIAGNOSE_PULL = ActivityRef("registry.diagnose_pull", PullCheckRequest, PullDiagnosis)
DISPATCH = ActivityRef("github.dispatch", DispatchRequest, RunState)
FOLLOW_RUN = ActivityRef("github.follow_run", RunFollow, RunState, keepalive=None)
LIST_BACKUPS = ActivityRef("github.list_backups", ArtifactsRequest, ArtifactList)
DOWNLOAD_BACKUP = ActivityRef("github.download_backup", ArtifactsRequest, FetchedManifest)
REDEPLOY_PLAN = ActivityRef("k8s.redeploy_plan", RedeployPlanRequest, RedeployPlan)
READ_BACKUP = ActivityRef("k8s.read_backup", BackupFetch, FetchedManifest)
RESTORE_CHECK = ActivityRef("k8s.restore_check", RestoreCheckRequest, RestoreCheck)
RESTORE_APPLY = ActivityRef("k8s.restore_apply", RestoreApplyRequest, ApplyResult)
REPAIR_PLAN = ActivityRef("k8s.repair_plan", RepairPlanRequest, RepairPlan)
DELETE_REPLICASET = ActivityRef("k8s.delete_replicaset", ReplicaSetDelete, ApplyResult)
ROLLOUT_RESTART = ActivityRef("k8s.rollout_restart", RestartRequest, ApplyResult)
SERVICE_LOGS = ActivityRef("k8s.service_logs", ServiceLogsRequest, ServiceLogs, keepalive=None)


class Listed(Protocol):
    """Any reference, as the list of them shows it (read only)."""

    @property
    def name(self) -> str: ...
    @property
    def arg(self) -> type[object]: ...
    @property
    def result(self) -> object: ...
    @property
    def keepalive(self) -> int | None: ...


ALL: tuple[Listed, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, ActivityRef)
)
BY_NAME = {ref.name: ref for ref in ALL}


# The activities worker/keepalive.py beats for: all but those that beat themselves.
KEPT_ALIVE = frozenset(ref.name for ref in ALL if ref.keepalive)
