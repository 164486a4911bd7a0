"""The worker: Kubernetes and HTTP clients, activities and workflows, run until
SIGINT/SIGTERM, then drained."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from datetime import timedelta

import aiohttp
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from kubernetes.aio.stream import WsApiClient
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.catalog import CatalogActivities
from activities.cloud_logging import CloudLogging
from activities.cloudsql import CloudSqlActivities
from activities.cloudsql_pitr import PitrActivities
from activities.database import DatabaseActivities
from activities.gatekeeper import Gatekeeper, seal_key_from_env
from activities.guard import GuardActivities
from activities.kubernetes import KubernetesActivities
from activities.metrics import MetricsActivities, Monitoring
from activities.notify import NotifyActivities
from activities.pod_exec import PodExecActivities
from activities.pod_logs import PodLogActivities
from activities.switch import SwitchActivities
from activities.verify import VerifyActivities
from workflows.deployment_rollback import DeploymentRollbackWorkflow
from workflows.forward_fix import ForwardFixWorkflow
from workflows.incident import IncidentWorkflow
from workflows.migration_rollback import MigrationRollbackWorkflow
from workflows.pitr import PointInTimeRecoveryWorkflow
from workflows.redeploy import RedeployWorkflow
from workflows.release_guard import ReleaseGuardWorkflow
from workflows.restore import RestoreWorkflow
from workflows.troubleshoot import TroubleshootWorkflow

from .api_errors import PlainApiErrors
from .catalog_file import CatalogError, load_catalog
from .client import TemporalUnreachable, connect, ensure_search_attributes
from .cloud import cloudsql_for, logging_for, monitoring_for
from .codec import CodecSettingsError, codec_from_settings
from .settings import Settings
from .telemetry import ServiceTagging, configure_logging, runtime_for

log = logging.getLogger("modoru.worker")
# Signature checks run inside workflows: the crypto libraries (a Rust extension
# among them) are used as they are, never re-imported in the workflow sandbox.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("cryptography", "sshsig")
)
WORKFLOWS = [
    DeploymentRollbackWorkflow,
    ReleaseGuardWorkflow,
    MigrationRollbackWorkflow,
    PointInTimeRecoveryWorkflow,
]
WORKFLOWS += [
    RedeployWorkflow,
    RestoreWorkflow,
    TroubleshootWorkflow,
]  # the runbook's methods 2 and 3 and its troubleshooting
WORKFLOWS += [ForwardFixWorkflow]
WORKFLOWS += [IncidentWorkflow]  # the parent of the changes made for an incident


PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
)


async def kubernetes_configuration(settings: Settings) -> kube.Configuration:
    configuration = kube.Configuration()
    if settings.kubeconfig:
        await kube_config.load_kube_config(
            config_file=str(settings.kubeconfig),
            context=settings.kube_context,
            client_configuration=configuration,
        )
    else:
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
        except kube_config.ConfigException:
            await kube_config.load_kube_config(
                context=settings.kube_context, client_configuration=configuration
            )
    # The client's aiohttp session trusts the environment by default: it looks for
    # proxy variables and reads ~/.netrc on every request (a measurable share of the
    # worker's CPU under a fleet of rollbacks). Without proxy variables there is
    # nothing to find; a kubeconfig's proxy-url is passed on each request anyway.
    if not any(os.environ.get(name) for name in PROXY_VARIABLES):
        configuration.client_session_kwargs = {
            **(getattr(configuration, "client_session_kwargs", None) or {}),
            "trust_env": False,
        }
    return configuration


def activities_for(
    api: kube.ApiClient,
    session: aiohttp.ClientSession,
    settings: Settings,
    monitoring: Monitoring | None = None,
    ws_api: WsApiClient | None = None,
    cloudsql: tuple[CloudSqlActivities, PitrActivities] | None = None,
    logging: CloudLogging | None = None,
) -> list:
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    entries = load_catalog(settings.catalog)
    gatekeeper = Gatekeeper(entries, seal_key_from_env())
    k8s = KubernetesActivities(apps, core, gatekeeper)
    verify = VerifyActivities(apps, core, session, monitoring, logging)
    guard = GuardActivities(verify, monitoring, gatekeeper)
    notify = NotifyActivities(base_dir=settings.notices_dir, catalog=entries)
    notify.announce_unconfigured(entries.services)
    catalog = CatalogActivities(entries)
    switch = SwitchActivities(apps, gatekeeper)
    if not entries.identities:
        log.warning(
            "the catalog lists no identities: approvals are unsigned names that anyone with "
            "Temporal access can give"
        )
    found = [
        catalog.lookup,
        catalog.service,
        k8s.plan_rollback,
        k8s.backup_deployment,
        k8s.rollout_undo,
        k8s.wait_rollout,
        verify.verify_service,
        notify.send,
        guard.baseline,
        guard.watch,
        switch.switch_proxy_instance,
    ]
    if monitoring is not None:
        metrics = MetricsActivities(monitoring)
        found += [metrics.service_health, metrics.open_alerts]
    if ws_api is not None:
        pods = PodExecActivities(kube.CoreV1Api(ws_api), verify, entries, gatekeeper)
        database = DatabaseActivities(core, apps, pods)
        found += [pods.exec_in_pod, database.snapshot, database.clone_queries]
    from .cd import cd_activities

    found += cd_activities(api, gatekeeper)
    found.append(PodLogActivities(apps, core, gatekeeper).service_logs)
    if cloudsql is not None:
        backups, pitr = cloudsql
        pitr.gatekeeper = gatekeeper
        found += [
            backups.check_backup,
            pitr.pitr_check,
            pitr.start_clone,
            pitr.operation_done,
            pitr.instance,
        ]
    return found


def worker_options(settings: Settings) -> dict:
    """The Worker options every modoru worker runs with (bench/overhead.py builds
    its worker from them too, so its comparison is like for like)."""
    return {
        "workflow_runner": WORKFLOW_RUNNER,
        "max_concurrent_activities": settings.max_concurrent_activities,
        "max_concurrent_workflow_tasks": settings.max_concurrent_workflow_tasks,
        "graceful_shutdown_timeout": timedelta(seconds=10),
        # Cancels (a guard's stop) ride on heartbeat replies: keep them prompt.
        "max_heartbeat_throttle_interval": timedelta(seconds=5),
        "interceptors": [ServiceTagging(), PlainApiErrors()],
    }


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    client = await connect(settings, runtime=runtime_for(settings))
    added = await ensure_search_attributes(client)
    if added:
        log.info("registered search attributes: %s", ", ".join(added))
    configuration = await kubernetes_configuration(settings)
    api, ws_api = kube.ApiClient(configuration), WsApiClient(configuration=configuration)
    async with aiohttp.ClientSession() as session:
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=WORKFLOWS,
            activities=activities_for(
                api,
                session,
                settings,
                monitoring_for(settings, session),
                ws_api,
                cloudsql_for(settings),
                logging_for(settings),
            ),
            **worker_options(settings),
        )
        async with worker:
            log.info(
                "polling %s on %s (namespace %s)%s",
                settings.task_queue,
                client.service_client.config.target_host,
                client.namespace,
                f"; metrics on {settings.metrics_address}" if settings.metrics_address else "",
            )
            await stop.wait()
        await api.close()
        await ws_api.close()


def main() -> int:
    settings = Settings()
    configure_logging(settings)
    try:
        load_catalog(settings.catalog)
        codec = codec_from_settings(settings)
    except (CatalogError, CodecSettingsError) as exc:
        print(f"modoru worker: {exc}", file=sys.stderr)
        return 2
    if codec is not None:
        log.info(
            "payloads encrypted with key %s (%d key(s) known)", codec.key_id, len(codec.key_ids)
        )

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, stop)

    try:
        asyncio.run(runner())
    except TemporalUnreachable as exc:
        print(f"modoru worker: {exc}", file=sys.stderr)
        return 2
    return 0
