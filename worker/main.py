"""The worker: Kubernetes and HTTP clients, activities and workflows, run until
SIGINT/SIGTERM, then drained."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from datetime import timedelta

import aiohttp
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.guard import GuardActivities
from activities.kubernetes import KubernetesActivities
from activities.metrics import MetricsActivities, Monitoring
from activities.notify import NotifyActivities
from activities.verify import VerifyActivities
from workflows.deployment_rollback import DeploymentRollbackWorkflow
from workflows.release_guard import ReleaseGuardWorkflow

from .catalog_file import CatalogError, load_catalog
from .client import TemporalUnreachable, connect, ensure_search_attributes
from .cloud import monitoring_for
from .settings import Settings
from .telemetry import ServiceTagging, configure_logging, runtime_for

log = logging.getLogger("modoru.worker")
WORKFLOWS = [DeploymentRollbackWorkflow, ReleaseGuardWorkflow]


async def kubernetes_client(settings: Settings) -> kube.ApiClient:
    if settings.kubeconfig:
        return await kube_config.new_client_from_config(config_file=str(settings.kubeconfig), context=settings.kube_context)
    try:
        kube_config.load_incluster_config()
        return kube.ApiClient()
    except kube_config.ConfigException:
        return await kube_config.new_client_from_config(context=settings.kube_context)


def activities_for(api: kube.ApiClient, session: aiohttp.ClientSession, settings: Settings, monitoring: Monitoring | None = None) -> list:
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    k8s = KubernetesActivities(apps, core)
    verify = VerifyActivities(apps, core, session, monitoring)
    guard = GuardActivities(verify, monitoring)
    notify = NotifyActivities(base_dir=settings.notices_dir)
    catalog = CatalogActivities(load_catalog(settings.catalog))
    found = [
        catalog.lookup, k8s.plan_rollback, k8s.backup_deployment, k8s.rollout_undo, k8s.wait_rollout,
        verify.verify_service, notify.send, guard.baseline, guard.watch,
    ]
    if monitoring is not None:
        metrics = MetricsActivities(monitoring)
        found += [metrics.service_health, metrics.open_alerts]
    return found


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    client = await connect(settings, runtime=runtime_for(settings))
    added = await ensure_search_attributes(client)
    if added:
        log.info("registered search attributes: %s", ", ".join(added))
    api = await kubernetes_client(settings)
    async with aiohttp.ClientSession() as session:
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=WORKFLOWS,
            activities=activities_for(api, session, settings, monitoring_for(settings, session)),
            max_concurrent_activities=settings.max_concurrent_activities,
            max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
            graceful_shutdown_timeout=timedelta(seconds=10),
            # Cancels (a guard's stop) ride on heartbeat replies: keep them prompt.
            max_heartbeat_throttle_interval=timedelta(seconds=5),
            interceptors=[ServiceTagging()],
        )
        async with worker:
            log.info("polling %s on %s%s", settings.task_queue, settings.temporal_address,
                     f"; metrics on {settings.metrics_address}" if settings.metrics_address else "")
            await stop.wait()
        await api.close()


def main() -> int:
    settings = Settings()
    configure_logging(settings)
    try:
        load_catalog(settings.catalog)
    except CatalogError as exc:
        print(f"modoru worker: {exc}", file=sys.stderr)
        return 2

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
