"""A scripted Cloud SQL and cluster for PointInTimeRecoveryWorkflow tests and
replay recordings."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook import activity_refs as refs
from runbook.catalog import ApprovalPolicy, Channel, DatabaseAccess, PitrConfig, ServiceEntry
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
    ProxySwitch,
    ProxySwitched,
)

T = dt.datetime(2026, 11, 28, 5, 0, tzinfo=dt.UTC)
SOURCE = "tekutoko-prod:asia-northeast1:tekutoko-db"


@dataclass
class FakeRecovery:
    problems: list[str] = field(default_factory=list)
    polls_until_done: int = 2
    check_ok: bool = True
    healthy_on_clone: bool = True
    calls: list[str] = field(default_factory=list)
    proxy: str = SOURCE  # the instance connection name the app's Auth Proxy is given
    notices: list[Notice] = field(default_factory=list)
    entry: ServiceEntry = field(
        default_factory=lambda: ServiceEntry(
            name="tekutoko-api",
            deployment="tekutoko-api",
            service="tekutoko-api",
            approval=ApprovalPolicy(approvers=["sre-lead", "backend-lead", "dba"]),
            channels=[Channel(kind="console")],
            database=DatabaseAccess(database="tekutoko_production", user="tekutoko"),
            pitr=PitrConfig(cloudsql_instance="tekutoko-db", operation_poll_seconds=1),
        )
    )

    def activities(self) -> list:
        polls = {"n": 0}

        @activity.defn(name=refs.SERVICE.name)
        async def service(request: ServiceByName) -> ServiceEntry:
            return self.entry

        @activity.defn(name=refs.PITR_CHECK.name)
        async def pitr_check(request: PitrCheckRequest) -> PitrCheck:
            self.calls.append("check")
            return PitrCheck(
                pitr_enabled=True,
                source_connection_name=SOURCE,
                earliest=T - dt.timedelta(days=1),
                latest=T + dt.timedelta(hours=1),
                destination_free=True,
                problems=self.problems,
            )

        @activity.defn(name=refs.START_CLONE.name)
        async def start_clone(request: CloneRequest) -> OperationRef:
            self.calls.append(f"clone {request.destination}")
            return OperationRef(project="tekutoko-prod", name="op-1")

        @activity.defn(name=refs.OPERATION_DONE.name)
        async def operation_done(ref: OperationRef) -> str:
            polls["n"] += 1
            self.calls.append("poll")
            if polls["n"] < self.polls_until_done:
                raise ApplicationError("operation op-1 is RUNNING", type="OperationRunning")
            return "DONE"

        @activity.defn(name=refs.INSTANCE.name)
        async def instance(ref: InstanceRef) -> InstanceInfo:
            return InstanceInfo(
                name=ref.name,
                host="10.0.0.9",
                port=5432,
                connection_name=f"tekutoko-prod:asia-northeast1:{ref.name}",
                state="RUNNABLE",
            )

        @activity.defn(name=refs.CLONE_QUERIES.name)
        async def clone_queries(request: CloneQueriesRequest) -> list[CheckResult]:
            self.calls.append("verify clone")
            return [
                CheckResult(
                    name=c.name, ok=self.check_ok, detail=f"{c.sql} → '3' (expected {c.expect!r})"
                )
                for c in request.checks
            ]

        @activity.defn(name=refs.SWITCH_PROXY.name)
        async def switch_proxy(request: ProxySwitch) -> ProxySwitched:
            self.calls.append(f"proxy {request.to_connection_name.rsplit(':', 1)[1]}")
            changed = self.proxy != request.to_connection_name
            self.proxy = request.to_connection_name
            return ProxySwitched(
                changed=changed,
                container="cloud-sql-proxy",
                args=["--private-ip", request.to_connection_name],
            )

        @activity.defn(name=refs.WAIT_ROLLOUT.name)
        async def wait(request: RolloutWaitRequest) -> RolloutOutcome:
            return RolloutOutcome(revision=5, message="rolled out")

        @activity.defn(name=refs.VERIFY_SERVICE.name)
        async def verify(request: VerifyRequest) -> VerifyResult:
            ok = self.healthy_on_clone or self.proxy == SOURCE
            return VerifyResult(
                ok=ok,
                checks=[
                    CheckResult(
                        name="health", ok=ok, detail="GET /health: " + ("200" if ok else "503")
                    )
                ],
                attempts=1,
            )

        @activity.defn(name=refs.NOTIFY.name)
        async def notify(notice: Notice) -> NoticeResult:
            self.notices.append(notice)
            return NoticeResult(delivered=["console"])

        return [
            service,
            pitr_check,
            start_clone,
            operation_done,
            instance,
            clone_queries,
            switch_proxy,
            wait,
            verify,
            notify,
        ]
