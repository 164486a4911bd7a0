"""The release guard's seal cannot be replayed, borrowed or minted. A seal names
the guard's workflow and run, the rollback it starts and that rollback's plan,
an immediate breach no later than its sealing; the activity that acts checks it
with the workers' key at the moment the workflow counted it, and the incident
counts each seal once. A rollback with a parent and evidence but no valid seal
is refused: nobody signed its start. `guard.watch` takes paths, thresholds and windows from
the worker's catalog, never from its request, and builds its URLs from parts."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.gatekeeper import Gatekeeper
from activities.guard import GuardActivities, service_url
from activities.kubernetes import KubernetesActivities
from activities.verify import VerifyActivities
from runbook.catalog import ApprovalPolicy, Catalog, ServiceEntry, Trust
from runbook.decisions import Grant, guard_id_for, plan_digest, rollback_id_for
from runbook.enums import Severity
from runbook.guard import Evidence, GuardThresholds, MonitoringConfig, Verdict
from runbook.guard_models import GuardBaseline, WatchReport, WatchRequest
from runbook.identity import Identity
from runbook.incident_models import ChangeSignal, IncidentRequest, IncidentStatus
from runbook.models import Phase, PlanRequest, RollbackRequest, ServiceLookup
from runbook.plans import rollback_plan
from runbook.signatures import new_private_key, public_key_line
from tests import waiting
from tests.conftest import RunningSandbox
from tests.integration.conftest import dev_env  # noqa: F401 - the session's dev server
from tests.workflows.conftest import fake, time_skipping_env  # noqa: F401 - fixtures
from workflows.deployment_rollback import DeploymentRollbackWorkflow
from workflows.incident import IncidentWorkflow

KEY = b"w" * 32
IDENTITIES = [
    Identity(
        id="sre-lead",
        display_name="sre-lead",
        roles=["sre-lead"],
        keys=[public_key_line(new_private_key())],
    )
]
ENTRY = ServiceEntry(
    name="tekutoko-api",
    deployment="tekutoko-api",
    service="tekutoko-api",
    approval=ApprovalPolicy(approvers=["sre-lead"]),
)
CATALOG = Catalog(identities=IDENTITIES, services=[ENTRY])
PLAN = {
    "kind": "rollback",
    "namespace": "default",
    "deployment": "tekutoko-api",
    "deployment_uid": "uid-1",
    "from_revision": 3,
    "to_revision": 2,
    "to_images": ["img:1.2.0"],
}
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def facts(plan: dict = PLAN, sealed_at: dt.datetime = NOW, **changes) -> dict:
    namespace, deployment = plan["namespace"], plan["deployment"]
    return {
        "v": 2,
        "guard": guard_id_for(namespace, deployment),
        "guard_run": "guard-run-1",
        "rollback": rollback_id_for(namespace, deployment),
        "plan": plan_digest(plan),
        "namespace": namespace,
        "deployment": deployment,
        "severity": "immediate",
        "breach_at": (sealed_at - dt.timedelta(seconds=5)).isoformat(),
        "sealed_at": sealed_at.isoformat(),
        **changes,
    }


def on(workflow_id: str, run: str = "rollback-run-1") -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = env.info.__class__(
        **{**env.info.__dict__, "workflow_id": workflow_id, "workflow_run_id": run}
    )
    return env


def grant(sealed: dict, *, key: bytes = KEY, counted: dt.datetime | None = NOW) -> Grant:
    return Grant(
        gate="approval",
        plan=PLAN,
        request={"requested_by": "release-guard", "severity": "immediate"},
        guard_seal=Gatekeeper(CATALOG, key).seal(sealed),
        guard_facts=sealed,
        seal_counted_at=counted,
    )


def holds(g: Grant, workflow_id: str = rollback_id_for("default", "tekutoko-api")) -> bool:
    gatekeeper = Gatekeeper(CATALOG, KEY)
    try:
        on(workflow_id).run(lambda: gatekeeper.require(g, ENTRY, 0, {}, "undo"))
    except ApplicationError as refused:
        assert "1 needed" in refused.message
        return False
    return True


def test_a_seal_over_this_rollback_and_plan_starts_it_without_approval() -> None:
    assert holds(grant(facts()))
    # Judged at the moment the workflow counted it: valid 20 minutes after sealing.
    assert holds(
        grant(
            facts(sealed_at=NOW - dt.timedelta(minutes=40)), counted=NOW - dt.timedelta(minutes=20)
        )
    )


@pytest.mark.parametrize(
    ("sealed", "why"),
    [
        (
            {
                "guard": guard_id_for("default", "tekutoko-api"),
                "namespace": "default",
                "deployment": "tekutoko-api",
                "severity": "immediate",
                "at": NOW.isoformat(),
            },
            "the seal as it was made before: no run, no rollback, no plan",
        ),
        (facts(plan={**PLAN, "from_revision": 4, "to_revision": 3}), "another plan (a replay)"),
        (facts(rollback="rollback-default-other"), "another rollback"),
        (facts(guard="someone-else"), "not the Deployment's guard"),
        (facts(guard_run=""), "no guard run"),
        (facts(severity="investigate"), "not immediate"),
        (facts(breach_at="2099-01-01T00:00:00+00:00"), "a breach after its sealing"),
        (facts(sealed_at=NOW.replace(year=2099)), "sealed in 2099"),
        (facts(sealed_at=NOW - dt.timedelta(minutes=31)), "older than 30 minutes"),
        (facts(breach_at=NOW.replace(tzinfo=None).isoformat()), "a time without a zone"),
        (facts(v=1), "another version"),
        (facts(namespace="staging"), "another namespace"),
    ],
)
def test_a_seal_that_does_not_name_this_rollback_now_is_refused(sealed: dict, why: str) -> None:
    assert not holds(grant(sealed)), why


def test_a_seal_made_without_the_workers_key_or_counted_when_it_cannot_be_is_refused() -> None:
    assert not holds(grant(facts(), key=b"x" * 32))
    assert not holds(grant(facts(), counted=None))
    assert not holds(grant(facts(), counted=NOW.replace(year=2099)))
    far = NOW.replace(year=2099)  # sealed and counted in 2099: only the activity's clock tells
    assert not holds(grant(facts(sealed_at=far), counted=far))
    assert not holds(grant(facts()), workflow_id="rollback-default-other")
    forged = grant(facts()).model_copy(update={"guard_seal": "é" * 64})  # not even hex
    assert not holds(forged)


# -- URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["@evil.example:8080/x", "//evil.example/x", "http://evil.example/x", "health", "/a@b", " /x"],
)
def test_a_path_that_could_name_another_host_is_refused(path: str) -> None:
    with pytest.raises(ApplicationError, match="refused"):
        service_url("http://10.0.0.7:8080", path)


def test_a_path_is_put_on_the_services_own_host() -> None:
    assert service_url("http://10.0.0.7:8080", "/v1/walks?limit=1") == (
        "http://10.0.0.7:8080/v1/walks?limit=1"
    )


# -- guard.watch against the sandbox -------------------------------------------------


@pytest.fixture
async def guard(sandbox: RunningSandbox) -> AsyncIterator[GuardActivities]:
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    async with aiohttp.ClientSession() as session:
        verify = VerifyActivities(kube.AppsV1Api(api), kube.CoreV1Api(api), session)
        yield GuardActivities(verify, None, Gatekeeper(CATALOG, KEY))
    await api.close()


def hostile_watch(**changes) -> WatchRequest:
    return WatchRequest(
        **{
            "namespace": "default",
            "deployment": "tekutoko-api",
            "service": "tekutoko-api",
            "health_path": "/no-such-path",
            "api_path": "@127.0.0.1:9/",
            "monitoring": MonitoringConfig(window_seconds=60),
            "thresholds": GuardThresholds(health_failures_in_a_row=1),
            "baseline": GuardBaseline(p95_ms=80),
            "interval_seconds": 1,
            "until": dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30),
            "max_polls": 1,
            "health_failures": 99,
            "confirming_since": dt.datetime(2099, 1, 1, tzinfo=dt.UTC),
            **changes,
        }
    )


async def test_a_hostile_watch_request_mints_no_seal(guard: GuardActivities) -> None:
    report = await on(guard_id_for("default", "tekutoko-api"), "guard-run-1").run(
        guard.watch, hostile_watch()
    )
    # The catalog's health path answers and its threshold is three failures in a row: the
    # request's 404 path, threshold of one, 99 failures and 2099 are not what was watched.
    assert report.evidence.health_failures_in_a_row == 0
    assert report.verdict.severity is not Severity.IMMEDIATE
    assert report.breach_at is None and report.seal == "" and report.sealed == {}
    assert report.confirming_since is None or report.confirming_since <= dt.datetime.now(dt.UTC)


async def test_a_breach_is_sealed_over_the_guards_run_the_rollback_and_its_plan(
    guard: GuardActivities, sandbox: RunningSandbox
) -> None:
    breach = WatchReport(
        polls=1,
        at=dt.datetime.now(dt.UTC),
        evidence=Evidence(error_ratio=0.6),
        verdict=Verdict(severity=Severity.IMMEDIATE, reasons=["error ratio 60%"]),
        breach_at=dt.datetime(2099, 1, 1, tzinfo=dt.UTC),  # never later than the sealing
    )
    guard_env = on(guard_id_for("default", "tekutoko-api"), "guard-run-7")
    sealed = await guard_env.run(guard._sealed, breach, hostile_watch())
    facts_ = sealed.sealed
    assert facts_["guard"] == "guard-default-tekutoko-api" and facts_["guard_run"] == "guard-run-7"
    assert facts_["rollback"] == "rollback-default-tekutoko-api"
    assert sealed.breach_at is not None and sealed.breach_at <= dt.datetime.fromisoformat(
        facts_["sealed_at"]
    )
    plan = await KubernetesActivities(guard.checks.apps, guard.checks.core).plan_rollback(
        PlanRequest(namespace="default", deployment="tekutoko-api")
    )
    assert facts_["plan"] == plan_digest(rollback_plan(plan))
    counted = Grant(
        gate="approval",
        plan=rollback_plan(plan),
        request={"requested_by": "release-guard"},
        guard_seal=sealed.seal,
        guard_facts=facts_,
        seal_counted_at=dt.datetime.now(dt.UTC),
    )
    gatekeeper = guard.gatekeeper
    assert gatekeeper is not None
    rollback = on("rollback-default-tekutoko-api")
    rollback.run(lambda: gatekeeper.require(counted, ENTRY, 0, {}, "undo"))
    with pytest.raises(ApplicationError, match="1 needed"):  # borrowed by another workflow
        on("rollback-default-tekutoko-api-2").run(
            lambda: gatekeeper.require(counted, ENTRY, 0, {}, "undo")
        )


# -- the workflows: a seal counts once, and parent + evidence is no seal ---------------

QUEUE = "security-seals"


def trusted_worker(env, fake) -> Worker:  # noqa: F811
    trusted = fake.entry.model_copy(update={"trust": Trust(identities=IDENTITIES)})

    @activity.defn(name="catalog.lookup")
    async def lookup(request: ServiceLookup) -> ServiceEntry:
        return trusted.model_copy(
            update={
                "name": request.deployment,
                "deployment": request.deployment,
                "service": request.deployment,
            }
        )

    activities = [
        lookup,
        *[
            a
            for a in fake.activities()
            if a.__temporal_activity_definition.name != "catalog.lookup"
        ],
    ]
    return Worker(
        env.client,
        task_queue=QUEUE,
        workflows=[IncidentWorkflow, DeploymentRollbackWorkflow],
        activities=activities,
        workflow_failure_exception_types=[Exception],
    )


def fake_plan(deployment: str, **changes) -> dict:
    return {**PLAN, "deployment": deployment, **changes}


async def incident_with(env, deployment: str):
    detected = await env.get_current_time()
    return await env.client.start_workflow(
        IncidentWorkflow.run,
        IncidentRequest(
            service=deployment, detected_at=detected, opened_by="release-guard", reason="breach"
        ),
        id=f"incident-{uuid.uuid4().hex[:8]}",
        task_queue=QUEUE,
    )


def guard_change(deployment: str, sealed: dict, request_id: str) -> ChangeSignal:
    return ChangeSignal(
        kind="rollback",
        workflow_id=rollback_id_for("default", deployment),
        request_id=request_id,
        rollback=RollbackRequest(
            deployment=deployment,
            severity=Severity.IMMEDIATE,
            reason="release guard: error ratio 60%",
            requested_by="release-guard",
            evidence=["error ratio 60% > 50%"],
            guard_seal=Gatekeeper(CATALOG, KEY).seal(sealed),
            guard_facts=sealed,
        ),
    )


async def until(handle, check, query=IncidentWorkflow.status):
    current = None
    for _ in range(400):
        try:
            current = await handle.query(query)
        except RPCError:  # a child the incident has not started yet
            current = None
        if current is not None and check(current):
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {current}")


async def test_a_rollback_with_a_parent_and_evidence_but_a_copied_seal_is_refused(
    time_skipping_env,  # noqa: F811
    fake,  # noqa: F811
) -> None:
    deployment = f"api-{uuid.uuid4().hex[:6]}"
    async with trusted_worker(time_skipping_env, fake):
        incident = await incident_with(time_skipping_env, deployment)
        now = await time_skipping_env.get_current_time()
        # A real seal from an earlier guard rollback of this Deployment (its plan was 4 -> 3).
        copied = facts(fake_plan(deployment, from_revision=4, to_revision=3), sealed_at=now)
        await incident.signal(IncidentWorkflow.change, guard_change(deployment, copied, "copied"))
        rollback = time_skipping_env.client.get_workflow_handle(
            rollback_id_for("default", deployment)
        )
        status = await until(
            rollback, lambda s: s.phase is Phase.REJECTED, DeploymentRollbackWorkflow.status
        )
        assert "seal does not start this run" in status.message and "another plan" in (
            status.message
        )
        assert any(e.action == "seal" and e.counted is False for e in status.audit)
        assert "undo" not in fake.calls
        with contextlib.suppress(RPCError):  # the incident closes: nothing was changed
            await incident.terminate("test over")


async def test_a_valid_seal_starts_one_rollback_and_counts_once(
    time_skipping_env,  # noqa: F811
    fake,  # noqa: F811
) -> None:
    deployment = f"api-{uuid.uuid4().hex[:6]}"
    async with trusted_worker(time_skipping_env, fake):
        incident = await incident_with(time_skipping_env, deployment)
        now = await time_skipping_env.get_current_time()
        sealed = facts(fake_plan(deployment), sealed_at=now)
        await incident.signal(IncidentWorkflow.change, guard_change(deployment, sealed, "first"))
        current: IncidentStatus = await until(
            incident, lambda s: bool(s.changes) and s.changes[0].phase == "completed"
        )
        assert fake.calls.count("undo") == 1
        # The same seal, copied into a second change three minutes later: refused.
        await time_skipping_env.sleep(dt.timedelta(minutes=3))
        await incident.signal(IncidentWorkflow.change, guard_change(deployment, sealed, "again"))
        current = await until(incident, lambda s: any(e.request_id == "again" for e in s.audit))
        said = next(e for e in current.audit if e.request_id == "again")
        assert said.counted is False and "used before" in said.detail
        await asyncio.sleep(0.5)
        assert fake.calls.count("undo") == 1
        await incident.terminate("test over")


# -- end to end: a real guard's seal rolls back a real bad release in signed mode ----------


async def test_with_identities_the_guards_own_seal_rolls_back_without_approval(
    dev_env,  # noqa: F811
    sandbox: RunningSandbox,
    tmp_path,
) -> None:
    import json

    import grpc

    from activities.catalog import CatalogActivities
    from activities.metrics import MetricsActivities
    from activities.notify import NotifyActivities
    from runbook.catalog import Channel
    from runbook.guard_models import GuardPhase, GuardRequest
    from runbook.postchecks import PostChecks
    from sandbox.traffic import TrafficGenerator
    from tests.conftest import METRICS_DELAY
    from tests.integration.cd_stack import sandbox_monitoring
    from tests.integration.test_release_guard import RATE, GuardStack, release
    from worker.main import WORKFLOWS
    from workflows.release_guard import ReleaseGuardWorkflow, guard_workflow_id

    endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())

    def quicken() -> None:
        sandbox.sandbox.traffic = TrafficGenerator(
            sandbox.sandbox._service_urls, ["/v1/walks"], RATE, 300
        )
        sandbox.sandbox.traffic.start()

    sandbox.call(quicken)
    entry = ENTRY.model_copy(
        update={
            "channels": [Channel(kind="jsonl", path=str(tmp_path / "notices.jsonl"))],
            "monitoring": MonitoringConfig(
                preset="gke_l7", window_seconds=60, ingestion_delay_seconds=METRICS_DELAY
            ),
            "verification_window_seconds": 25,
            "rollout_timeout_seconds": 60,
            "post_checks": PostChecks(ingestion_delay_seconds=METRICS_DELAY),
        }
    )
    catalog = Catalog(identities=IDENTITIES, services=[entry])
    gatekeeper = Gatekeeper(catalog, KEY)
    queue = f"sealed-{uuid.uuid4().hex[:8]}"
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    channel = grpc.aio.insecure_channel(endpoints["cloud_monitoring"])
    async with aiohttp.ClientSession() as session:
        monitoring = sandbox_monitoring(endpoints, sandbox, session, channel)
        k8s = KubernetesActivities(apps, core, gatekeeper)
        verify = VerifyActivities(apps, core, session, monitoring)
        guard_acts = GuardActivities(verify, monitoring, gatekeeper)
        metrics = MetricsActivities(monitoring)
        activities = [
            CatalogActivities(catalog).lookup,
            k8s.plan_rollback,
            k8s.backup_deployment,
            k8s.rollout_undo,
            k8s.wait_rollout,
            verify.verify_service,
            NotifyActivities(environ={}, base_dir=tmp_path).send,
            guard_acts.baseline,
            guard_acts.watch,
            metrics.service_health,
            metrics.open_alerts,
        ]
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=activities,
            workflow_failure_exception_types=[Exception],
        ):
            stack = GuardStack(dev_env.client, queue, sandbox, apps, catalog)
            await release(stack, "1.2.0")
            await asyncio.to_thread(sandbox.until_next_minute)
            await asyncio.to_thread(sandbox.until_readable)
            handle = await dev_env.client.start_workflow(
                ReleaseGuardWorkflow.run,
                GuardRequest(deployment="tekutoko-api", duration_seconds=300, interval_seconds=2),
                id=guard_workflow_id("default", "tekutoko-api"),
                task_queue=queue,
            )
            await waiting.until(
                "the guard to watch 1.2.0",
                lambda: handle.query(ReleaseGuardWorkflow.status),
                lambda s: s.phase is GuardPhase.WATCHING,
                waiting.phase_of,
                10,
            )
            await release(stack, "1.3.0")  # about 60% errors: immediate
            result = await asyncio.wait_for(handle.result(), 150)
            assert result.status.phase is GuardPhase.ROLLED_BACK, result.status.message
            rollback = dev_env.client.get_workflow_handle(
                rollback_id_for("default", "tekutoko-api")
            )
            final = await rollback.query(DeploymentRollbackWorkflow.status)
            assert final.approvals == [] and final.approvals_required == 0
            assert any(e.action == "seal" and e.counted for e in final.audit), final.audit
    await channel.close()
    await api.close()
