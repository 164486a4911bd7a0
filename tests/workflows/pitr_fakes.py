"""A scripted Cloud SQL and cluster for PointInTimeRecoveryWorkflow tests and
replay recordings."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook.catalog import ApprovalPolicy, Channel, PitrConfig, ServiceEntry
from runbook.models import (
    CheckResult,
    Notice,
    NoticeResult,
    RolloutOutcome,
    RolloutWaitRequest,
    ServiceByName,
    VerifyRequest,
    VerifyResult,
)
from runbook.pitr_models import (
    CloneQueriesRequest,
    CloneRequest,
    InstanceInfo,
    InstanceRef,
    OperationRef,
    PitrCheck,
    PitrCheckRequest,
    RestartRequest,
    SecretKeysPrevious,
    SecretKeysUpdate,
)

T = dt.datetime(2026, 11, 28, 5, 0, tzinfo=dt.UTC)


@dataclass
class FakeRecovery:
    problems: list[str] = field(default_factory=list)
    polls_until_done: int = 2
    check_ok: bool = True
    healthy_on_clone: bool = True
    calls: list[str] = field(default_factory=list)
    secret: dict[str, str] = field(default_factory=lambda: {"DATABASE_HOST": "10.0.0.5", "DATABASE_PORT": "5432"})
    notices: list[Notice] = field(default_factory=list)
    entry: ServiceEntry = field(default_factory=lambda: ServiceEntry(
        name="tekutoko-api", deployment="tekutoko-api", service="tekutoko-api",
        approval=ApprovalPolicy(approvers=["sre-lead", "backend-lead", "dba"]), channels=[Channel(kind="console")],
        pitr=PitrConfig(cloudsql_instance="tekutoko-db", secret="tekutoko-db", operation_poll_seconds=1),
    ))

    def activities(self) -> list:
        polls = {"n": 0}

        @activity.defn(name="catalog.service")
        async def service(request: ServiceByName) -> ServiceEntry:
            return self.entry

        @activity.defn(name="cloudsql.pitr_check")
        async def pitr_check(request: PitrCheckRequest) -> PitrCheck:
            self.calls.append("check")
            return PitrCheck(pitr_enabled=True, earliest=T - dt.timedelta(days=1), latest=T + dt.timedelta(hours=1), destination_free=True, problems=self.problems)

        @activity.defn(name="cloudsql.start_clone")
        async def start_clone(request: CloneRequest) -> OperationRef:
            self.calls.append(f"clone {request.destination}")
            return OperationRef(project="tekutoko-prod", name="op-1")

        @activity.defn(name="cloudsql.operation_done")
        async def operation_done(ref: OperationRef) -> str:
            polls["n"] += 1
            self.calls.append("poll")
            if polls["n"] < self.polls_until_done:
                raise ApplicationError("operation op-1 is RUNNING", type="OperationRunning")
            return "DONE"

        @activity.defn(name="cloudsql.instance")
        async def instance(ref: InstanceRef) -> InstanceInfo:
            return InstanceInfo(name=ref.name, host="10.0.0.9", port=5432, state="RUNNABLE")

        @activity.defn(name="db.clone_queries")
        async def clone_queries(request: CloneQueriesRequest) -> list[CheckResult]:
            self.calls.append("verify clone")
            return [CheckResult(name=c.name, ok=self.check_ok, detail=f"{c.sql} → '3' (expected {c.expect!r})") for c in request.checks]

        @activity.defn(name="k8s.read_secret_keys")
        async def read_keys(request: SecretKeysUpdate) -> SecretKeysPrevious:
            return SecretKeysPrevious(values={k: self.secret.get(k) for k in request.values})

        @activity.defn(name="k8s.update_secret_keys")
        async def update_keys(request: SecretKeysUpdate) -> SecretKeysPrevious:
            self.calls.append(f"secret {request.values['DATABASE_HOST']}")
            self.secret.update(request.values)
            return SecretKeysPrevious(values=dict(request.values))

        @activity.defn(name="k8s.rollout_restart")
        async def restart(request: RestartRequest) -> str:
            self.calls.append("restart")
            return "restarted"

        @activity.defn(name="k8s.wait_rollout")
        async def wait(request: RolloutWaitRequest) -> RolloutOutcome:
            return RolloutOutcome(revision=5, message="rolled out")

        @activity.defn(name="verify.service")
        async def verify(request: VerifyRequest) -> VerifyResult:
            ok = self.healthy_on_clone or self.secret["DATABASE_HOST"] != "10.0.0.9"
            return VerifyResult(ok=ok, checks=[CheckResult(name="health", ok=ok, detail="GET /health: " + ("200" if ok else "503"))], attempts=1)

        @activity.defn(name="notify.send")
        async def notify(notice: Notice) -> NoticeResult:
            self.notices.append(notice)
            return NoticeResult(delivered=["console"])

        return [service, pitr_check, start_clone, operation_done, instance, clone_queries, read_keys, update_keys, restart, wait, verify, notify]
