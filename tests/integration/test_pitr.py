"""Point-in-time recovery for real: rows written, time T noted, rows deleted
(the corruption), then the workflow clones the sandbox's Cloud SQL instance to
T, verifies the clone with psql in a check pod whose Auth Proxy names it, and
switches the app by the instance connection name its proxy sidecar is given."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import psycopg
import pytest
from googleapiclient.http import build_http
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from kubernetes.aio.stream import WsApiClient
from pydantic import ValidationError
from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.cloudsql_pitr import PitrActivities
from activities.database import CHECK_POD_LABEL, DatabaseActivities, value_digest
from activities.kubernetes import KubernetesActivities
from activities.notify import NotifyActivities
from activities.pod_exec import PodExecActivities
from activities.sqladmin import SqlAdmin
from activities.switch import SwitchActivities
from activities.verify import VerifyActivities
from runbook.catalog import (
    ApprovalPolicy,
    Catalog,
    Channel,
    DatabaseAccess,
    PitrConfig,
    ServiceEntry,
)
from runbook.models import ApprovalSignal, Phase
from runbook.pitr_models import ExpectedQuery, PitrCheckRequest, PitrRequest, PitrResult
from tests.conftest import RunningSandbox
from tests.waiting import phase_of, until
from worker.main import WORKFLOWS
from workflows.pitr import PointInTimeRecoveryWorkflow

pytestmark = pytest.mark.integration
JST = dt.timezone(dt.timedelta(hours=9))
CONNECTION = "tekutoko-prod:asia-northeast1:{}"


@dataclass
class PitrStack:
    client: object
    queue: str
    sandbox: RunningSandbox
    apps: kube.AppsV1Api
    core: kube.CoreV1Api
    pitr: PitrActivities

    def instance(self, name: str = "tekutoko-db"):
        return self.sandbox.sandbox.cloudsql.instance(name)

    async def query(self, text: str, instance: str = "tekutoko-db") -> list[tuple]:
        env = self.instance(instance).app_env()
        async with await psycopg.AsyncConnection.connect(
            host=env["DATABASE_HOST"],
            port=env["DATABASE_PORT"],
            dbname=env["DATABASE_NAME"],
            user=env["DATABASE_USER"],
            password=env["DATABASE_PASSWORD"],
            autocommit=True,
        ) as conn:
            cursor = await conn.execute(text)
            return await cursor.fetchall() if cursor.description else []

    async def run(self, gates: int = 2, **changes) -> tuple[PitrResult | None, str | None]:
        request = PitrRequest(
            **{
                "service": "tekutoko-api",
                "reason": "a cleanup job deleted walks",
                "requested_by": "oncall",
                "language": "en",
                **changes,
            }
        )
        handle = await self.client.start_workflow(
            PointInTimeRecoveryWorkflow.run,
            request,
            id=f"pitr-{uuid.uuid4().hex[:8]}",
            task_queue=self.queue,
        )
        for gate in ("clone", "switch")[:gates]:
            status = await until(
                f"the recovery to await approval at its {gate} gate (or to end)",
                lambda: handle.query(PointInTimeRecoveryWorkflow.status),
                lambda s, gate=gate: (
                    s.phase in (Phase.FAILED, Phase.COMPLETED)
                    or (s.phase is Phase.AWAITING_APPROVAL and s.gate == gate)
                ),
                lambda s: f"{phase_of(s)} (gate {s.gate or 'none'})",
                120,
            )
            if status.phase is not Phase.AWAITING_APPROVAL:
                break
            for who in ("sre-lead", "backend-lead"):
                await handle.signal(PointInTimeRecoveryWorkflow.approve, ApprovalSignal(by=who))
        try:
            return await asyncio.wait_for(handle.result(), 180), None
        except WorkflowFailureError as exc:
            return None, exc.cause.message


@pytest.fixture
async def recovery(dev_env, db_sandbox: RunningSandbox, tmp_path) -> AsyncIterator[PitrStack]:
    endpoints = json.loads(db_sandbox.sandbox.endpoints_path.read_text())
    entry = ServiceEntry(
        name="tekutoko-api",
        deployment="tekutoko-api",
        service="tekutoko-api",
        approval=ApprovalPolicy(approvers=["sre-lead", "backend-lead"]),
        channels=[Channel(kind="jsonl", path=str(tmp_path / "notices.jsonl"))],
        database=DatabaseAccess(
            container="api",
            database="tekutoko_production",
            user="tekutoko",
            check_pod_timeout_seconds=60,
        ),
        pitr=PitrConfig(cloudsql_instance="tekutoko-db", operation_poll_seconds=1),
        verification_window_seconds=20,
        rollout_timeout_seconds=60,
    )
    configuration = kube.Configuration()
    await kube_config.load_kube_config(
        config_file=str(db_sandbox.kubeconfig), client_configuration=configuration
    )
    api, ws_api = kube.ApiClient(configuration), WsApiClient(configuration=configuration)
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    pitr = PitrActivities(
        SqlAdmin(endpoints["cloud_sql"], build_http), endpoints["cloudsql_project"]
    )
    queue = f"pitr-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as session:
        k8s, verify, switch = (
            KubernetesActivities(apps, core),
            VerifyActivities(apps, core, session),
            SwitchActivities(apps),
        )
        database = DatabaseActivities(
            core, apps, PodExecActivities(kube.CoreV1Api(ws_api), verify, Catalog(services=[entry]))
        )
        activities = [
            CatalogActivities(Catalog(services=[entry])).service,
            pitr.pitr_check,
            pitr.start_clone,
            pitr.operation_done,
            pitr.instance,
            database.clone_queries,
            switch.switch_proxy_instance,
            k8s.wait_rollout,
            verify.verify_service,
            NotifyActivities(environ={}, base_dir=tmp_path).send,
        ]
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=activities,
            workflow_failure_exception_types=[Exception],
        ):
            yield PitrStack(dev_env.client, queue, db_sandbox, apps, core, pitr)
    await ws_api.close()
    await api.close()


async def proxy_args(stack: PitrStack) -> list[str]:
    deployment = await stack.apps.read_namespaced_deployment("tekutoko-api", "default")
    (proxy,) = [
        c
        for c in deployment.spec.template.spec.init_containers or []
        if c.name == "cloud-sql-proxy"
    ]
    return proxy.args


async def check_pods(stack: PitrStack) -> list[str]:
    pods = await stack.core.list_namespaced_pod("default", label_selector=CHECK_POD_LABEL)
    return [p.metadata.name for p in pods.items]


def count_in_app_pod(stack: PitrStack) -> str:
    """What the app itself now sees: psql in one of its pods, through its proxy."""
    done = stack.sandbox.kubectl(
        "exec",
        "deploy/tekutoko-api",
        "-c",
        "api",
        "--",
        "psql",
        "-h",
        "localhost",
        "-U",
        "tekutoko",
        "-d",
        "tekutoko_production",
        "-XAtc",
        "SELECT count(*) FROM walks",
    )
    return done.stdout.strip()


async def corrupt(stack: PitrStack) -> tuple[dt.datetime, int]:
    """Rows written, T noted, then the rows deleted: returns T and the count at T."""
    await stack.query(
        "INSERT INTO walks (user_id, started_at, distance_m, steps) SELECT id, now(), 1200, 1500 "
        "FROM users"
    )
    count = (await stack.query("SELECT count(*) FROM walks"))[0][0]
    await asyncio.sleep(1.5)
    at = dt.datetime.now(dt.UTC)
    await asyncio.sleep(1.5)
    await stack.query("DELETE FROM walks WHERE distance_m = 1200")
    return at, count


async def test_recover_to_t_clones_verifies_and_switches(recovery: PitrStack) -> None:
    at, count = await corrupt(recovery)
    after = (await recovery.query("SELECT count(*) FROM walks"))[0][0]
    assert after < count
    source_port = recovery.instance().cluster.port
    assert CONNECTION.format("tekutoko-db") in await proxy_args(recovery)
    result, error = await recovery.run(
        point_in_time=at.astimezone(JST),
        new_instance="tekutoko-db-restored",
        checks=[ExpectedQuery(name="walks", sql="SELECT count(*) FROM walks", expect=str(count))],
    )
    assert error is None, error
    status = result.status
    assert status.phase is Phase.COMPLETED and [c.ok for c in status.checks] == [True]
    # The clone has the rows; the source still lacks them and is otherwise untouched.
    assert (await recovery.query("SELECT count(*) FROM walks", "tekutoko-db-restored"))[0][
        0
    ] == count
    assert (await recovery.query("SELECT count(*) FROM walks"))[0][0] == after
    assert recovery.instance().cluster.port == source_port and recovery.instance().cluster.running
    # The app's proxy names the clone, its new pods are healthy and see the recovered rows; the
    # check pod is gone.
    args = await proxy_args(recovery)
    assert (
        CONNECTION.format("tekutoko-db-restored") in args
        and CONNECTION.format("tekutoko-db") not in args
    )
    assert status.switched == CONNECTION.format("tekutoko-db-restored") and all(
        c.ok for c in status.health
    )
    assert await asyncio.to_thread(count_in_app_pod, recovery) == str(count)
    assert await check_pods(recovery) == []


async def test_a_failing_check_stops_before_the_switch(recovery: PitrStack) -> None:
    at, count = await corrupt(recovery)
    before = await proxy_args(recovery)
    result, error = await recovery.run(
        gates=1,
        point_in_time=at,
        new_instance="tekutoko-db-wrong",
        checks=[
            ExpectedQuery(name="walks", sql="SELECT count(*) FROM walks", expect=str(count + 100))
        ],
    )
    assert result is None and "failed verification" in error and "nothing was switched" in error
    # The check ran on the clone, through the check pod's proxy: its value's hash, not the value.
    assert value_digest(str(count)) in error and f"'{count}'" not in error
    assert await proxy_args(recovery) == before and await check_pods(recovery) == []


async def test_a_check_that_writes_is_refused_before_anything_is_created(
    recovery: PitrStack,
) -> None:
    before = len(recovery.sandbox.sandbox.cloudsql.instances)
    mark = recovery.sandbox.mark()
    for sql in ("DELETE FROM walks", "SELECT 1; DELETE FROM walks", "UPDATE walks SET steps = 0"):
        with pytest.raises(ValidationError, match="must be one SELECT statement"):
            await recovery.run(
                gates=0,
                point_in_time=dt.datetime.now(dt.UTC),
                checks=[ExpectedQuery(name="sneaky", sql=sql, expect="1")],
            )
    assert len(recovery.sandbox.sandbox.cloudsql.instances) == before
    assert not [
        e
        for e in recovery.sandbox.requests_since(mark)
        if e["verb"] in ("create", "update", "patch", "delete")
    ]


async def test_bad_inputs_are_refused_before_anything_is_created(recovery: PitrStack) -> None:
    now = dt.datetime.now(dt.UTC)
    before = len(recovery.sandbox.sandbox.cloudsql.instances)
    cases = [
        ({"point_in_time": now + dt.timedelta(hours=1)}, "in the future"),
        ({"point_in_time": now - dt.timedelta(days=3)}, "before the recovery window"),
        (
            {"point_in_time": now - dt.timedelta(seconds=1), "new_instance": "tekutoko-db"},
            "already exists",
        ),
    ]
    for changes, needle in cases:
        result, error = await recovery.run(gates=0, **changes)
        assert (
            result is None and "refused before anything was created" in error and needle in error
        ), error
    unknown = await ActivityEnvironment().run(
        recovery.pitr.pitr_check,
        PitrCheckRequest(source="tekutoko-dbx", destination="x-restored", point_in_time=now),
    )
    assert unknown.problems == [
        "Cloud SQL instance 'tekutoko-dbx' does not exist in project 'tekutoko-prod'"
    ]
    recovery.sandbox.call(lambda: setattr(recovery.instance(), "pitr_enabled", False))
    result, error = await recovery.run(gates=0, point_in_time=now - dt.timedelta(seconds=1))
    assert "not enabled" in error
    assert len(recovery.sandbox.sandbox.cloudsql.instances) == before
