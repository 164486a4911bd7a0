"""Approvals that prove who approved what, on a real Temporal dev server: with
identities in the catalog only signed decisions for this run, this gate and
this plan count, once per person, and only from an approver role; a signature
made with stock ssh-keygen counts like one made by modoru."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.gatekeeper import Gatekeeper
from activities.kubernetes import KubernetesActivities
from activities.notify import NotifyActivities
from activities.verify import VerifyActivities
from runbook.catalog import ApprovalPolicy, Catalog, Channel, ServiceEntry
from runbook.decisions import DecisionPayload, GateView, SignedDecision, plan_digest
from runbook.identity import Identity
from runbook.models import ApprovalSignal, Phase, RejectSignal, RollbackRequest, Severity
from runbook.signatures import new_private_key, public_key_line, sign
from starter.signing import payload_for
from starter.start_options import sign_start_gate
from tests.integration.test_rollback_end_to_end import start, wait_phase
from worker.main import WORKFLOWS
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

pytestmark = pytest.mark.integration
PEOPLE = {
    "oncall": ["oncall"],
    "sre-lead": ["sre-lead"],
    "backend-lead": ["backend-lead"],
    "dual": ["sre-lead", "backend-lead"],
}


@dataclass
class SignedStack:
    client: object
    settings: object
    sandbox: object
    keys: dict[str, Path]
    tmp: Path


def key_file(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.key"
    path.write_bytes(new_private_key())
    path.chmod(0o600)
    return path


@pytest.fixture
async def signed(dev_env, sandbox, tmp_path) -> AsyncIterator[SignedStack]:
    from worker.settings import Settings

    keys = {name: key_file(tmp_path, name) for name in PEOPLE}
    identities = [
        Identity(
            id=name,
            display_name=name.title(),
            roles=roles,
            keys=[public_key_line(keys[name].read_bytes())],
        )
        for name, roles in PEOPLE.items()
    ]
    catalog = Catalog(
        identities=identities,
        services=[
            ServiceEntry(
                name="tekutoko-api",
                deployment="tekutoko-api",
                service="tekutoko-api",
                approval=ApprovalPolicy(
                    approvers=["sre-lead", "backend-lead"], investigate_approvals=3
                ),
                channels=[Channel(kind="jsonl", path=str(tmp_path / "notices.jsonl"))],
                verification_window_seconds=15,
                rollout_timeout_seconds=60,
            )
        ],
    )
    queue = f"signed-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        task_queue=queue,
        kubeconfig=sandbox.kubeconfig,
    )
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    async with aiohttp.ClientSession() as session:
        # The undo checks the approvals again against the same catalog, as the worker does.
        k8s, verify = (
            KubernetesActivities(apps, core, Gatekeeper(catalog, b"s" * 32)),
            VerifyActivities(apps, core, session),
        )
        activities = [
            CatalogActivities(catalog).lookup,
            k8s.plan_rollback,
            k8s.backup_deployment,
            k8s.rollout_undo,
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
            yield SignedStack(dev_env.client, settings, sandbox, keys, tmp_path)
    await api.close()


def request(stack: SignedStack, requester: str, **changes) -> RollbackRequest:
    return RollbackRequest(
        **{
            "deployment": "tekutoko-api",
            "severity": Severity.INVESTIGATE,
            "reason": "error rate 60%",
            "requested_by": requester,
            **changes,
        }
    )


async def started(stack: SignedStack, req: RollbackRequest, queue: str = ""):
    """Start `req` and sign its run's start gate with the requester's key, as the CLI does."""
    handle = (
        await start(stack, req)
        if not queue
        else await stack.client.start_workflow(
            DeploymentRollbackWorkflow.run,
            req,
            id=rollback_workflow_id(req.namespace, req.deployment),
            task_queue=queue,
        )
    )
    verdict = await sign_start_gate(
        stack.client,
        handle.id,
        req,
        stack.keys[req.requested_by],
        task_queue=queue or stack.settings.task_queue,
        quiet=True,
    )
    assert verdict is not None and verdict.counted, verdict
    return handle


def decision(view: GateView, key: Path, signer: str, **changes) -> SignedDecision:
    payload = payload_for(view, "approve", signer).model_copy(update=changes)
    text = DecisionPayload.model_validate(payload.model_dump()).text()
    return SignedDecision(payload=text, signature=sign(text, key.read_bytes()))


async def verdict(handle, signal: ApprovalSignal | RejectSignal) -> tuple[bool | None, str]:
    signal.request_id = uuid.uuid4().hex
    await handle.signal("approve" if isinstance(signal, ApprovalSignal) else "reject", signal)
    for _ in range(100):
        status = await handle.query(DeploymentRollbackWorkflow.status)
        entry = next((e for e in status.audit if e.request_id == signal.request_id), None)
        if entry is not None:
            return entry.counted, entry.detail
        await __import__("asyncio").sleep(0.1)
    raise AssertionError("the decision was never judged")


async def test_only_valid_signed_decisions_from_distinct_approvers_count(
    signed: SignedStack,
) -> None:
    handle = await started(signed, request(signed, "oncall"))
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    status = await handle.query(DeploymentRollbackWorkflow.status)
    gate = status.pending
    assert (
        gate is not None
        and gate.signed
        and gate.gate == "approval"
        and gate.plan["to_revision"] == 2
    )
    assert any(e.action == "start" and e.counted and e.actor == "oncall" for e in status.audit)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stranger = key_file(signed.tmp, "stranger")
    refused = [
        (ApprovalSignal(by="sre-lead"), "unsigned"),
        (
            ApprovalSignal(by="sre-lead", signed=decision(gate, stranger, "sre-lead")),
            "not one of sre-lead's keys",
        ),
        (
            ApprovalSignal(
                by="sre-lead",
                signed=decision(
                    gate,
                    signed.keys["sre-lead"],
                    "sre-lead",
                    issued_at=now - dt.timedelta(minutes=20),
                    expires_at=now - dt.timedelta(minutes=5),
                ),
            ),
            "expired",
        ),
        (
            ApprovalSignal(
                by="sre-lead",
                signed=decision(gate, signed.keys["sre-lead"], "sre-lead", run_id="another-run"),
            ),
            "names run another-run",
        ),
        (
            ApprovalSignal(
                by="sre-lead",
                signed=decision(
                    gate, signed.keys["sre-lead"], "sre-lead", plan=plan_digest({"to_revision": 1})
                ),
            ),
            "another plan",
        ),
        (
            ApprovalSignal(by="sre‐lead", signed=decision(gate, stranger, "sre‐lead")),
            "is not an identity in the catalog",
        ),  # U+2010
        (
            ApprovalSignal(by="oncall", signed=decision(gate, signed.keys["oncall"], "oncall")),
            "requested this change",
        ),
        (
            ApprovalSignal(
                by="sre-lead",
                signed=decision(gate, signed.keys["sre-lead"], "sre-lead", gate="switch"),
            ),
            "not 'approval'",
        ),
    ]
    for signal, needle in refused:
        counted, detail = await verdict(handle, signal)
        assert counted is False and needle in detail, (needle, detail)

    first = decision(gate, signed.keys["sre-lead"], "sre-lead")
    assert await verdict(handle, ApprovalSignal(by="sre-lead", signed=first)) == (
        True,
        "signed by sre-lead",
    )
    counted, detail = await verdict(handle, ApprovalSignal(by="sre-lead", signed=first))
    assert counted is False and "replay" in detail
    assert (
        await verdict(
            handle, ApprovalSignal(by="dual", signed=decision(gate, signed.keys["dual"], "dual"))
        )
    )[0] is True
    counted, detail = await verdict(
        handle, ApprovalSignal(by="dual", signed=decision(gate, signed.keys["dual"], "dual"))
    )
    assert counted is False and "two approvals are two people" in detail
    assert (
        await handle.query(DeploymentRollbackWorkflow.status)
    ).phase is Phase.AWAITING_APPROVAL  # 2 of 3

    # The third, with stock ssh-keygen over what `modoru approve --payload` prints.
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    payload = signed.tmp / "approve.json"
    payload.write_text(payload_for(gate, "approve", "backend-lead").text())
    subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "sign",
            "-n",
            "modoru",
            "-f",
            str(signed.keys["backend-lead"]),
            str(payload),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "SSH_AUTH_SOCK": ""},
    )
    stock = SignedDecision(
        payload=payload.read_text(), signature=(signed.tmp / "approve.json.sig").read_text()
    )
    assert await verdict(handle, ApprovalSignal(by="backend-lead", signed=stock)) == (
        True,
        "signed by backend-lead",
    )
    result = await handle.result()
    assert result.status.phase is Phase.COMPLETED and result.status.approvals == [
        "sre-lead",
        "dual",
        "backend-lead",
    ]


async def test_an_immediate_rollback_by_someone_not_on_call_waits_for_an_approval(
    signed: SignedStack,
) -> None:
    mark = signed.sandbox.mark()
    handle = await started(signed, request(signed, "sre-lead", severity=Severity.IMMEDIATE))
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    status = await handle.query(DeploymentRollbackWorkflow.status)
    assert status.approvals_required == 1 and "not a verified oncall" in " ".join(
        e.detail for e in status.audit
    )
    assert not [
        m
        for m in signed.sandbox.requests_since(mark)
        if m["resource"] == "deployments" and m["verb"] == "patch"
    ]
    gate = status.pending
    counted, _ = await verdict(
        handle,
        RejectSignal(
            by="backend-lead",
            reason="drill",
            signed=decision(
                gate, signed.keys["backend-lead"], "backend-lead", decision="reject", note="drill"
            ),
        ),
    )
    assert counted is True
    assert (await handle.result()).status.phase is Phase.REJECTED


async def test_an_unsigned_start_waits_at_the_start_gate(signed: SignedStack) -> None:
    mark = signed.sandbox.mark()
    req = RollbackRequest(
        deployment="tekutoko-api", severity=Severity.IMMEDIATE, reason="x", requested_by="oncall"
    )
    handle = await start(signed, req)
    for _ in range(100):
        status = await handle.query(DeploymentRollbackWorkflow.status)
        if status.pending is not None:
            break
        await __import__("asyncio").sleep(0.1)
    assert status.pending is not None and status.pending.gate == "start"
    counted, detail = await verdict(handle, ApprovalSignal(by="oncall"))
    assert counted is False and "unsigned" in detail
    assert not [
        m
        for m in signed.sandbox.requests_since(mark)
        if m["resource"] == "deployments" and m["verb"] == "patch"
    ]
    await handle.terminate("test over")


async def test_changing_activities_scheduled_without_valid_approvals_change_nothing(
    signed: SignedStack,
) -> None:
    """As if someone with Temporal access scheduled the activities by hand: the
    activities check the approvals against the worker's own catalog first."""
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.pod_exec import PodExecActivities
    from activities.switch import SwitchActivities
    from runbook.catalog import MigrationConfig
    from runbook.decisions import Grant
    from runbook.migration_models import ExecRequest
    from runbook.models import PlanRequest, UndoRequest
    from runbook.pitr_models import ProxySwitch
    from runbook.plans import rollback_plan

    catalog = Catalog(
        identities=[
            Identity(
                id=n, display_name=n, roles=r, keys=[public_key_line(signed.keys[n].read_bytes())]
            )
            for n, r in PEOPLE.items()
        ],
        services=[
            ServiceEntry(
                name="tekutoko-api",
                deployment="tekutoko-api",
                service="tekutoko-api",
                approval=ApprovalPolicy(approvers=["sre-lead"], investigate_approvals=1),
                migration=MigrationConfig(cloudsql_instance="tekutoko-db"),
                database={"database": "tekutoko_production", "user": "tekutoko"},
            )
        ],
    )
    gatekeeper = Gatekeeper(catalog, b"k" * 32)
    api = await kube_config.new_client_from_config(config_file=str(signed.sandbox.kubeconfig))
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    k8s = KubernetesActivities(apps, core, gatekeeper)
    rollback_id = rollback_workflow_id("default", "tekutoko-api")
    env = ActivityEnvironment()
    env.info = env.info.__class__(
        **{**env.info.__dict__, "workflow_id": rollback_id, "workflow_run_id": "run-1"}
    )
    plan = await env.run(
        k8s.plan_rollback, PlanRequest(namespace="default", deployment="tekutoko-api")
    )
    view = GateView(
        workflow_id=rollback_id,
        run_id="run-1",
        gate="approval",
        plan=rollback_plan(plan),
        digest=plan_digest(rollback_plan(plan)),
        signed=True,
    )
    stranger = key_file(signed.tmp, "forger")
    older = plan.model_copy(
        update={
            "to_revision": 1,
            "to_images": [
                "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api:1.1.0"
            ],
        }
    )
    other_view = view.model_copy(
        update={"plan": rollback_plan(older), "digest": plan_digest(rollback_plan(older))}
    )
    mark = signed.sandbox.mark()
    attempts = [
        (UndoRequest(plan=plan), "no signed approval"),
        (
            UndoRequest(
                plan=plan,
                grant=Grant(
                    gate="approval",
                    plan=view.plan,
                    decisions=[decision(view, stranger, "sre-lead")],
                ),
            ),
            "0 valid signed approval",
        ),
        (
            UndoRequest(
                plan=plan,
                grant=Grant(
                    gate="approval",
                    plan=other_view.plan,
                    decisions=[decision(other_view, signed.keys["sre-lead"], "sre-lead")],
                ),
            ),
            "the approved plan differs",
        ),
        (
            UndoRequest(
                plan=plan,
                grant=Grant(
                    gate="approval",
                    plan=view.plan,
                    decisions=[decision(view, signed.keys["sre-lead"], "sre-lead", run_id="run-0")],
                ),
            ),
            "0 valid signed approval",
        ),
        (
            UndoRequest(
                plan=plan,
                grant=Grant(
                    gate="approval",
                    plan=view.plan,
                    request={"severity": "immediate", "requested_by": "sre-lead"},
                ),
            ),
            "0 valid signed approval(s) for this run and plan, 1 needed",
        ),
    ]
    for request_, needle in attempts:
        with pytest.raises(ApplicationError, match=re.escape(needle)) as refused:
            await env.run(k8s.rollout_undo, request_)
        assert refused.value.non_retryable
    verify = VerifyActivities(apps, core, None)  # type: ignore[arg-type]
    pods = PodExecActivities(None, verify, catalog, gatekeeper)  # type: ignore[arg-type]
    with pytest.raises(ApplicationError, match="no signed approval"):
        await env.run(
            pods.exec_in_pod, ExecRequest(service="tekutoko-api", action="down_to", version=1)
        )
    switch = SwitchActivities(apps, gatekeeper)
    with pytest.raises(ApplicationError, match="no signed approval"):
        await env.run(
            switch.switch_proxy_instance,
            ProxySwitch(
                namespace="default",
                deployment="tekutoko-api",
                proxy_container="cloud-sql-proxy",
                from_connection_name="p:r:tekutoko-db",
                to_connection_name="p:r:evil",
            ),
        )
    # A valid approval for this run and plan does pass the same check.
    good = UndoRequest(
        plan=plan,
        grant=Grant(
            gate="approval",
            plan=view.plan,
            decisions=[decision(view, signed.keys["sre-lead"], "sre-lead")],
            request={"severity": "investigate", "requested_by": "oncall"},
        ),
    )
    gatekeeper_ok = env.run(
        lambda: gatekeeper.require(good.grant, catalog.services[0], 1, rollback_plan(plan), "undo")
    )
    assert gatekeeper_ok is None
    changes = [
        e
        for e in signed.sandbox.requests_since(mark)
        if e["verb"] in ("create", "update", "patch", "delete") or "exec" in e.get("path", "")
    ]
    assert changes == []
    await api.close()


async def test_the_worker_process_checks_signatures_in_its_workflow_sandbox(
    dev_env, tmp_path
) -> None:
    """The real `python -m worker` (whose workflow sandbox imports afresh what a
    test process has already loaded): a signed approval counts and the undo runs."""
    import asyncio
    import signal

    import yaml

    from sandbox.scenario import load_scenario
    from tests.conftest import RunningSandbox
    from tests.integration.test_worker_crash import spawn_worker

    sandbox = RunningSandbox(
        load_scenario("tekutoko").model_copy(update={"clock_speed": 20.0, "databases": []}),
        tmp_path / "sandbox",
    )
    worker = None
    try:
        keys = {name: key_file(tmp_path, name) for name in ("oncall", "sre-lead")}
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(
            yaml.safe_dump(
                {
                    "identities": [
                        {
                            "id": n,
                            "display_name": n,
                            "roles": [n],
                            "keys": [public_key_line(k.read_bytes())],
                        }
                        for n, k in keys.items()
                    ],
                    "services": [
                        {
                            "name": "tekutoko-api",
                            "deployment": "tekutoko-api",
                            "service": "tekutoko-api",
                            "approval": {"approvers": ["sre-lead"]},
                            "channels": [{"kind": "jsonl", "path": "notices.jsonl"}],
                            "verification_window_seconds": 15,
                            "rollout_timeout_seconds": 60,
                        }
                    ],
                }
            )
        )
        queue = f"signed-proc-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "MODORU_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "MODORU_TASK_QUEUE": queue,
            "MODORU_KUBECONFIG": str(sandbox.kubeconfig),
            "MODORU_CATALOG": str(catalog),
            "MODORU_NOTICES_DIR": str(tmp_path),
        }
        worker = spawn_worker(env, tmp_path / "worker.log")
        stack = SignedStack(dev_env.client, None, sandbox, keys, tmp_path)
        req = request(stack, "oncall")
        handle = await started(stack, req, queue)
        for _ in range(300):
            try:
                status = await handle.query(DeploymentRollbackWorkflow.status)
                if status.phase is Phase.AWAITING_APPROVAL:
                    break
            except Exception:  # the first workflow task may not have run yet
                pass
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(
                "never reached the approval gate: " + (tmp_path / "worker.log").read_text()[-2000:]
            )
        assert any(e.action == "start" and e.counted for e in status.audit)
        assert await verdict(
            handle,
            ApprovalSignal(
                by="sre-lead", signed=decision(status.pending, keys["sre-lead"], "sre-lead")
            ),
        ) == (True, "signed by sre-lead")
        result = await asyncio.wait_for(handle.result(), 90)
        assert result.status.phase is Phase.COMPLETED, result.status.message
        assert "SystemError" not in (tmp_path / "worker.log").read_text()
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=20)
        sandbox.stop()
