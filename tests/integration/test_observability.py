"""One trace from the start call through the workflow and its activities down
to the Kubernetes requests; Prometheus metrics from the worker's runtime,
modoru's own among them."""

from __future__ import annotations

import socket
import urllib.request
import uuid

import aiohttp
import pytest
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.kubernetes import KubernetesActivities
from activities.notify import NotifyActivities
from activities.verify import VerifyActivities
from runbook.models import Phase, RollbackRequest, RollbackResult, Severity
from tests.integration.conftest import make_catalog
from worker.settings import Settings
from worker.telemetry import ServiceTagging, instrument_http, runtime_for
from workflows.deployment_rollback import DeploymentRollbackWorkflow

pytestmark = pytest.mark.integration


def tracer_with_memory() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument_http()  # as the worker does: URLs through safe_url
    return exporter


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_rollback_is_one_trace_and_shows_in_the_metrics(dev_env, sandbox, tmp_path) -> None:
    exporter = tracer_with_memory()
    metrics_port = free_port()
    runtime = runtime_for(Settings(metrics_address=f"127.0.0.1:{metrics_port}"))
    target = dev_env.client.service_client.config.target_host
    client = await Client.connect(
        target,
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor()],
        runtime=runtime,
    )
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    queue = f"obs-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as session:
        k8s, verify = KubernetesActivities(apps, core), VerifyActivities(apps, core, session)
        activities = [
            CatalogActivities(make_catalog(tmp_path)).lookup,
            k8s.plan_rollback,
            k8s.backup_deployment,
            k8s.rollout_undo,
            k8s.wait_rollout,
            verify.verify_service,
            NotifyActivities(environ={}, base_dir=tmp_path).send,
        ]
        async with Worker(
            client,
            task_queue=queue,
            workflows=[DeploymentRollbackWorkflow],
            activities=activities,
            interceptors=[ServiceTagging()],
        ):
            result: RollbackResult = await client.execute_workflow(
                DeploymentRollbackWorkflow.run,
                RollbackRequest(
                    deployment="tekutoko-api",
                    severity=Severity.IMMEDIATE,
                    reason="traced",
                    requested_by="oncall",
                ),
                id=f"obs-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
            )
    await api.close()
    assert result.status.phase == Phase.COMPLETED

    spans = exporter.get_finished_spans()
    by_name = {s.name: s for s in spans}
    start = by_name["StartWorkflow:DeploymentRollback"]
    assert {
        s.context.trace_id
        for s in spans
        if s.name.startswith(("StartWorkflow", "RunWorkflow", "StartActivity", "RunActivity"))
    } == {start.context.trace_id}
    run_undo = by_name["RunActivity:k8s.rollout_undo"]
    assert by_name["StartActivity:k8s.rollout_undo"].context.trace_id == start.context.trace_id
    http_under_undo = [
        s for s in spans if s.parent is not None and s.parent.span_id == run_undo.context.span_id
    ]
    assert any(
        s.attributes.get("http.request.method", s.attributes.get("http.method")) == "PATCH"
        for s in http_under_undo
    ), [s.name for s in http_under_undo]

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "modoru_rollbacks_started{" in text and 'service="tekutoko-api"' in text
    assert "modoru_rollbacks_completed{" in text
    assert "modoru_time_to_mitigate" in text
    assert "temporal_workflow_completed" in text or "temporal_request" in text
