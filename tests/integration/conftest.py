"""A real Temporal dev server, the sandbox and an in-process worker with the
real activities."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.kubernetes import KubernetesActivities
from activities.notify import NotifyActivities
from activities.verify import VerifyActivities
from runbook.catalog import ApprovalPolicy, Catalog, Channel, ServiceEntry
from tests.conftest import RunningSandbox
from tests.workflows.conftest import binary
from worker.main import WORKFLOWS
from worker.settings import Settings
from workflows import search_attributes as sa


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        search_attributes=sa.ALL,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


def make_catalog(tmp_path) -> Catalog:
    return Catalog(
        services=[
            ServiceEntry(
                name="tekutoko-api",
                deployment="tekutoko-api",
                service="tekutoko-api",
                approval=ApprovalPolicy(approvers=["sre-lead", "backend-lead"]),
                channels=[Channel(kind="jsonl", path=str(tmp_path / "notices.jsonl"))],
                verification_window_seconds=15,
                rollout_timeout_seconds=60,
            )
        ]
    )


@dataclass
class Stack:
    client: Client
    settings: Settings
    sandbox: RunningSandbox
    env: dict[str, str]

    async def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 90
    ) -> subprocess.CompletedProcess:
        """Run the CLI as a user would, without blocking the in-process worker."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starter.cli",
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or self.env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())

    def mutations(self, since: int = 0) -> list[dict]:
        return [
            e
            for e in self.sandbox.requests_since(since)
            if e["verb"] in ("create", "update", "patch", "delete")
        ]


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, sandbox: RunningSandbox, tmp_path
) -> AsyncIterator[Stack]:
    queue = f"it-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        task_queue=queue,
        kubeconfig=sandbox.kubeconfig,
    )
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
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
        env = {
            **os.environ,
            "MODORU_TEMPORAL_ADDRESS": settings.temporal_address,
            "MODORU_TASK_QUEUE": queue,
        }
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=activities,
            workflow_failure_exception_types=[Exception],
        ):
            yield Stack(dev_env.client, settings, sandbox, env)
    await api.close()
