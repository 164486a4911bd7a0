"""Encrypted histories on a real dev server: a rollback run by a worker and a
client with the codec leaves only ciphertext in the history a client without
keys reads; the CLI with the keys and the Web UI's codec server read it back."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from google.protobuf import json_format
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.api.common.v1 import Payloads
from temporalio.client import Client
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.kubernetes import KubernetesActivities
from activities.notify import NotifyActivities
from activities.verify import VerifyActivities
from runbook.models import Phase, RollbackRequest, RollbackResult, Severity
from tests.integration.conftest import make_catalog
from worker.codec import codec_from_settings, data_converter_for
from worker.codec_server import build_app, new_token
from worker.settings import Settings
from workflows.deployment_rollback import DeploymentRollbackWorkflow

pytestmark = pytest.mark.integration

KEYS = f"k2:{base64.b64encode(bytes(range(32))).decode()},k1:{base64.b64encode(bytes(32)).decode()}"
MARKER = "reason-marker-5f1c: db password rotated"
UI = "http://127.0.0.1:8233"


def payloads_of(history) -> list:
    """Every payload the workflow and its activities carried: inputs and results."""
    found = []
    for event in history.events:
        for attrs, field in (
            (event.workflow_execution_started_event_attributes, "input"),
            (event.activity_task_scheduled_event_attributes, "input"),
            (event.activity_task_completed_event_attributes, "result"),
            (event.workflow_execution_completed_event_attributes, "result"),
        ):
            if attrs.HasField(field):
                found.extend(getattr(attrs, field).payloads)
    return found


async def test_a_rollback_s_history_is_ciphertext_without_the_keys(
    dev_env, sandbox, tmp_path
) -> None:
    codec = codec_from_settings(Settings(_env_file=None, codec_keys=KEYS))
    target = dev_env.client.service_client.config.target_host
    client = await Client.connect(target, data_converter=data_converter_for(codec))
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    queue, workflow_id = f"enc-{uuid.uuid4().hex[:8]}", f"enc-{uuid.uuid4().hex[:8]}"
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
            client, task_queue=queue, workflows=[DeploymentRollbackWorkflow], activities=activities
        ):
            result: RollbackResult = await client.execute_workflow(
                DeploymentRollbackWorkflow.run,
                RollbackRequest(
                    deployment="tekutoko-api",
                    severity=Severity.IMMEDIATE,
                    reason=MARKER,
                    requested_by="oncall",
                ),
                id=workflow_id,
                task_queue=queue,
            )
            # The CLI with the same keys reads the rollback's state back (a query answered by this
            # worker).
            env = {**os.environ, "MODORU_TEMPORAL_ADDRESS": target, "MODORU_CODEC_KEYS": KEYS}
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "starter.cli",
                "status",
                workflow_id,
                "--json",
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 90)
    await api.close()
    assert result.status.phase == Phase.COMPLETED
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["reason"] == MARKER

    history = await dev_env.client.get_workflow_handle(
        workflow_id
    ).fetch_history()  # a client without the codec
    payloads = payloads_of(history)
    assert len(payloads) >= 10, len(payloads)
    assert {p.metadata["encoding"] for p in payloads} == {b"binary/encrypted"}
    assert {p.metadata["encryption-key-id"] for p in payloads} == {b"k2"}
    raw = history.to_json()
    for plain in (MARKER, "reason-marker", "oncall", "rollout_undo finished"):
        assert plain not in raw
    assert base64.b64encode(MARKER.encode()).decode()[:16] not in raw

    # The Web UI's codec server turns the started event's input back into the request.
    started = history.events[0].workflow_execution_started_event_attributes.input
    token = new_token()
    headers = {"Content-Type": "application/json", "Origin": UI, "Authorization": f"Bearer {token}"}
    async with (
        TestServer(build_app(codec, {UI}, token)) as server,
        aiohttp.ClientSession() as http,
        http.post(
            server.make_url("/decode"), data=json_format.MessageToJson(started), headers=headers
        ) as response,
    ):
        assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == UI
        decoded = json_format.Parse(await response.read(), Payloads())
    assert json.loads(decoded.payloads[0].data)["reason"] == MARKER
