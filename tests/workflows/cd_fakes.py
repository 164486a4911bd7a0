"""A scripted registry, GitHub and cluster for the redeploy, restore and
troubleshooting workflows' tests and replay recordings."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook.catalog import ApprovalPolicy, Channel, ServiceEntry
from runbook.cd_config import CdConfig, RegistryConfig
from runbook.cd_models import (
    ArtifactsRequest,
    DispatchRequest,
    FetchedManifest,
    ImageList,
    ImagesRequest,
    PendingDeployment,
    PullCheckRequest,
    PullDiagnosis,
    PullVerdict,
    RedeployPlan,
    RedeployPlanRequest,
    RegistryImage,
    RunFollow,
    RunState,
)
from runbook.models import (
    Diagnostics,
    Notice,
    NoticeResult,
    PodState,
    RolloutOutcome,
    RolloutWaitRequest,
    ServiceLookup,
    VerifyRequest,
    VerifyResult,
)
from runbook.repair_models import (
    ApplyResult,
    BackupFetch,
    RepairPlan,
    RepairPlanRequest,
    ReplicaSetDelete,
    ReplicaSetInfo,
    RestartRequest,
    RestoreApplyRequest,
    RestoreCheck,
    RestoreCheckRequest,
)

IMAGE = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api"
PUSHED = dt.datetime(2026, 11, 19, 3, 0, tzinfo=dt.UTC)
RUN_STATUSES = ["queued", "waiting", "in_progress", "completed"]


def entry() -> ServiceEntry:
    return ServiceEntry(
        name="tekutoko-api",
        deployment="tekutoko-api",
        service="tekutoko-api",
        approval=ApprovalPolicy(approvers=["sre-lead", "backend-lead"]),
        channels=[Channel(kind="console")],
        registry=RegistryConfig(
            project="tekutoko-prod", repository="tekutoko", package="tekutoko-api"
        ),
        cd=CdConfig(repository="tekutoko/tekutoko-api"),
    )


@dataclass
class FakeCd:
    tags: list[str] = field(default_factory=lambda: ["1.3.0", "1.2.0", "1.1.0"])
    live: str = "1.3.0"
    conclusion: str = "success"
    check_problems: list[str] = field(default_factory=list)
    pull_fails: bool = False
    calls: list[str] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)

    def activities(self) -> list:
        progress = {"run": 0}

        @activity.defn(name="catalog.lookup")
        async def lookup(request: ServiceLookup) -> ServiceEntry:
            return entry()

        @activity.defn(name="registry.images")
        async def images(request: ImagesRequest) -> ImageList:
            self.calls.append("images")
            listed = [
                RegistryImage(
                    uri=f"{IMAGE}@sha256:{i:064x}", tags=[t], uploaded=PUSHED, updated=PUSHED
                )
                for i, t in enumerate(self.tags)
            ]
            return ImageList(
                images=listed, found=next((i for i in listed if request.tag in i.tags), None)
            )

        @activity.defn(name="k8s.redeploy_plan")
        async def plan(request: RedeployPlanRequest) -> RedeployPlan:
            self.calls.append("plan")
            return RedeployPlan(
                namespace=request.namespace,
                deployment=request.deployment,
                deployment_uid="uid-1",
                container="api",
                live_image=f"{IMAGE}:{self.live}",
                live_revision=3,
                image=request.image,
                last_revision=2,
            )

        @activity.defn(name="github.dispatch")
        async def dispatch(request: DispatchRequest) -> RunState:
            self.calls.append(f"dispatch {request.tag}")
            return RunState(
                run_id=77,
                number=12,
                html_url="https://github.com/tekutoko/tekutoko-api/actions/runs/77",
                status="queued",
            )

        @activity.defn(name="github.follow_run")
        async def follow(request: RunFollow) -> RunState:
            progress["run"] += 1
            status = RUN_STATUSES[min(progress["run"], 3)]
            self.calls.append(f"run {status}")
            pending = (
                [
                    PendingDeployment(
                        environment="production", environment_id=5, reviewers=["sre-lead"]
                    )
                ]
                if status == "waiting"
                else []
            )
            return RunState(
                run_id=77,
                number=12,
                html_url="https://github.com/tekutoko/tekutoko-api/actions/runs/77",
                status=status,
                conclusion=self.conclusion if status == "completed" else None,
                pending=pending,
                failed_steps=["deploy: Deploy"]
                if status == "completed" and self.conclusion != "success"
                else [],
            )

        @activity.defn(name="k8s.wait_rollout")
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
                            image=f"{IMAGE}:2.0.0-missing",
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
            return RolloutOutcome(
                revision=4, message='deployment "tekutoko-api" successfully rolled out'
            )

        @activity.defn(name="registry.diagnose_pull")
        async def diagnose(request: PullCheckRequest) -> PullDiagnosis:
            self.calls.append("diagnose")
            return PullDiagnosis(
                verdicts=[
                    PullVerdict(
                        image=i,
                        in_registry=False,
                        detail=f"tag {i.rsplit(':', 1)[1]} is not in Artifact Registry",
                    )
                    for i in request.images
                ],
                can_pull=True,
                permission_detail="artifactregistry.repositories.downloadArtifacts: granted",
            )

        @activity.defn(name="verify.service")
        async def verify(request: VerifyRequest) -> VerifyResult:
            self.calls.append("verify")
            return VerifyResult(ok=True, checks=[], attempts=1)

        @activity.defn(name="notify.send")
        async def notify(notice: Notice) -> NoticeResult:
            self.notices.append(notice)
            return NoticeResult(delivered=["console"])

        @activity.defn(name="github.download_backup")
        async def download(request: ArtifactsRequest) -> FetchedManifest:
            self.calls.append(f"download {request.name}")
            return FetchedManifest(
                source={"kind": "artifact", "name": request.name},
                text="kind: Deployment\n",
                detail=request.name,
            )

        @activity.defn(name="k8s.read_backup")
        async def read_backup(request: BackupFetch) -> FetchedManifest:
            self.calls.append(f"read {request.configmap}")
            return FetchedManifest(
                source={"kind": "backup", "name": request.configmap},
                text="kind: Deployment\n",
                detail=request.configmap,
            )

        @activity.defn(name="k8s.restore_check")
        async def check(request: RestoreCheckRequest) -> RestoreCheck:
            self.calls.append("check")
            return RestoreCheck(
                problems=self.check_problems,
                desired="kind: Deployment\n",
                digest="d" * 64,
                diff=["-image: 1.3.0", "+image: 1.2.0"],
                deployment_uid="uid-1",
                revision=3,
                live_images=[f"{IMAGE}:1.3.0"],
                images=[f"{IMAGE}:1.2.0"],
            )

        @activity.defn(name="k8s.restore_apply")
        async def apply(request: RestoreApplyRequest) -> ApplyResult:
            self.calls.append("apply")
            return ApplyResult(
                changed=True, message="deployment.apps/tekutoko-api configured", generation=5
            )

        @activity.defn(name="k8s.repair_plan")
        async def repair(request: RepairPlanRequest) -> RepairPlan:
            self.calls.append("repair plan")
            sets = [
                ReplicaSetInfo(
                    name="api-old",
                    revision=1,
                    replicas=1,
                    ready=1,
                    images=[f"{IMAGE}:1.1.0"],
                    role="old",
                ),
                ReplicaSetInfo(
                    name="api-live",
                    revision=3,
                    replicas=3,
                    ready=3,
                    images=[f"{IMAGE}:1.3.0"],
                    role="live",
                ),
            ]
            problems = (
                ["replicaset/api-live is the live one"] if request.replicaset == "api-live" else []
            )
            return RepairPlan(
                deployment_uid="uid-1", revision=3, replicasets=sets, problems=problems
            )

        @activity.defn(name="k8s.delete_replicaset")
        async def delete(request: ReplicaSetDelete) -> ApplyResult:
            self.calls.append(f"delete {request.replicaset}")
            return ApplyResult(
                changed=True, message=f'replicaset.apps "{request.replicaset}" deleted'
            )

        @activity.defn(name="k8s.rollout_restart")
        async def restart(request: RestartRequest) -> ApplyResult:
            self.calls.append(f"restart {request.restarted_at}")
            return ApplyResult(changed=True, message="deployment.apps/tekutoko-api restarted")

        return [
            lookup,
            images,
            plan,
            dispatch,
            follow,
            wait,
            diagnose,
            verify,
            notify,
            download,
            read_backup,
            check,
            apply,
            repair,
            delete,
            restart,
        ]
