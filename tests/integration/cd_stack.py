"""A worker with the activities of the runbook's methods 2 and 3 and its
troubleshooting, against the sandbox's Kubernetes API, GitHub and Artifact
Registry emulators, on the real dev server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcAsyncIOTransport,
)
from googleapiclient.http import build_http
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.artifact_registry import ArtifactRegistry, RegistryActivities
from activities.catalog import CatalogActivities
from activities.gatekeeper import Gatekeeper
from activities.github import GitHubActivities
from activities.guard import GuardActivities
from activities.kubernetes_ops import KubernetesOpsActivities
from activities.metrics import Monitoring
from activities.notify import NotifyActivities
from activities.pod_logs import PodLogActivities
from activities.verify import VerifyActivities
from runbook.catalog import ApprovalPolicy, Catalog, Channel, ServiceEntry
from runbook.cd_config import CdConfig, RegistryConfig
from runbook.models import ApprovalSignal, Phase
from runbook.postchecks import PostChecks
from tests.conftest import METRICS_DELAY, RunningSandbox
from tests.waiting import phase_of, until
from worker.main import WORKFLOWS

IMAGE = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api"


def cd_entry(tmp_path: Path, **changes) -> ServiceEntry:
    return ServiceEntry(
        **{
            "name": "tekutoko-api",
            "deployment": "tekutoko-api",
            "service": "tekutoko-api",
            "approval": ApprovalPolicy(approvers=["sre-lead", "backend-lead"]),
            "channels": [Channel(kind="jsonl", path=str(tmp_path / "notices.jsonl"))],
            "registry": RegistryConfig(
                project="tekutoko-prod",
                location="asia-northeast1",
                repository="tekutoko",
                package="tekutoko-api",
                # The emulator's nodes: the pull diagnosis asks as them (IAM Credentials).
                node_service_account="gke-nodes@tekutoko-prod.iam.gserviceaccount.com",
            ),
            "cd": CdConfig(
                repository="tekutoko/tekutoko-api",
                token_env="SANDBOX_GITHUB_TOKEN",
                run_timeout_minutes=5,
            ),
            "verification_window_seconds": 15,
            "rollout_timeout_seconds": 60,
            # the sandbox shows a minute's points 10 s after it ends, not Google's 2-4 minutes
            "post_checks": PostChecks(ingestion_delay_seconds=METRICS_DELAY),
            **changes,
        }
    )


@dataclass
class CdStack:
    client: Client
    queue: str
    sandbox: RunningSandbox
    endpoints: dict
    env: dict[str, str]
    tmp_path: Path
    ops: KubernetesOpsActivities

    def live_image(self) -> str:
        return self.sandbox.kubectl(
            "get",
            "deployment/tekutoko-api",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ).stdout

    def github_log(self) -> list[dict]:
        with urllib.request.urlopen(
            f"{self.endpoints['github_api']}/sandbox/requests", timeout=10
        ) as answer:
            return json.loads(answer.read())["entries"]

    def dispatches(self) -> list[dict]:
        return [
            e
            for e in self.github_log()
            if e["method"] == "POST" and e["path"].endswith("/dispatches")
        ]

    def notices(self) -> list[dict]:
        path = self.tmp_path / "notices.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    async def cli(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starter.cli",
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())

    async def approve(self, handle, *, model, who: str = "sre-lead") -> Phase:
        """Approve at the change's gate once it is there; a change that passes its planning
        without a gate (no approval asked of this severity) is left alone. Returns the
        phase found; fails if the change is still planning (or not started) after a minute."""

        async def read():
            try:
                return await handle.query("status", result_type=model)
            except RPCError as err:  # a child the parent has not started yet
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise
                return None

        status = await until(
            f"{handle.id} to pass its planning",
            read,
            lambda s: s is not None and s.phase is not Phase.PLANNING,
            phase_of,
            60,
        )
        if status.phase is Phase.AWAITING_APPROVAL:
            await handle.signal("approve", ApprovalSignal(by=who))
        return status.phase


def with_run(status) -> str:
    """A redeploy's status for a wait's message: its phase and its CD run's state."""
    run = status.run
    said = "no CD run yet" if run is None else f"CD run {run.run_id} {run.status}"
    if run is not None and run.conclusion:
        said += f" ({run.conclusion})"
    return f"{phase_of(status)}; {said}"


def sandbox_monitoring(
    endpoints: dict,
    sandbox: RunningSandbox,
    session: aiohttp.ClientSession,
    channel: grpc.aio.Channel | None = None,
) -> Monitoring:
    """The official gRPC client against the sandbox's Cloud Monitoring emulator, on the sandbox's
    metric clock; on `channel` when the caller closes one of its own."""
    channel = channel or grpc.aio.insecure_channel(endpoints["cloud_monitoring"])
    return Monitoring(
        monitoring_v3.MetricServiceAsyncClient(
            transport=MetricServiceGrpcAsyncIOTransport(channel=channel)
        ),
        session,
        project=endpoints["monitoring_project"],
        rest_endpoint=endpoints["monitoring_rest"],
        clock=sandbox.metric_clock,
    )


async def cd_stack(
    dev_env,
    sandbox: RunningSandbox,
    tmp_path: Path,
    entry: ServiceEntry,
    catalog: Catalog | None = None,
    with_metrics: bool = False,
) -> AsyncIterator[CdStack]:
    """`catalog`: one with identities makes the changing activities check the signed approvals, as
    the worker does."""
    endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())
    configuration = kube.Configuration()
    await kube_config.load_kube_config(
        config_file=str(sandbox.kubeconfig), client_configuration=configuration
    )
    api = kube.ApiClient(configuration)
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    queue = f"cd-{uuid.uuid4().hex[:8]}"
    catalog = catalog or Catalog(services=[entry])
    gatekeeper = Gatekeeper(catalog, b"s" * 32) if catalog.identities else None
    async with aiohttp.ClientSession() as session:
        monitoring = sandbox_monitoring(endpoints, sandbox, session) if with_metrics else None
        ops, verify = (
            KubernetesOpsActivities(apps, core, gatekeeper),
            VerifyActivities(apps, core, session, monitoring),
        )
        guard = GuardActivities(verify, monitoring)
        github = GitHubActivities(
            endpoints["github_api"],
            environ={"SANDBOX_GITHUB_TOKEN_FILE": endpoints["github_token_file"]},
            gatekeeper=gatekeeper,
        )
        registry = RegistryActivities(
            ArtifactRegistry(
                endpoints["artifact_registry"],
                build_http,
                iam_endpoint=endpoints["artifact_registry"],  # the emulator's IAM stand-in
            )
        )
        activities = [
            CatalogActivities(catalog).lookup,
            ops.redeploy_plan,
            ops.read_backup,
            ops.restore_check,
            ops.restore_apply,
            ops.repair_plan,
            ops.delete_replicaset,
            ops.rollout_restart,
            ops.wait_rollout,
            verify.verify_service,
            github.dispatch,
            github.follow_run,
            github.list_backups,
            github.download_backup,
            registry.images,
            registry.diagnose_pull,
            NotifyActivities(environ={}, base_dir=tmp_path).send,
            guard.baseline,
            guard.watch,
            PodLogActivities(apps, core).service_logs,
        ]
        env = {
            **os.environ,
            "MODORU_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "MODORU_TASK_QUEUE": queue,
        }
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=activities,
            workflow_failure_exception_types=[Exception],
        ):
            yield CdStack(dev_env.client, queue, sandbox, endpoints, env, tmp_path, ops)
    await api.close()
