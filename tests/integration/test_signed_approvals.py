"""Approvals that prove who approved what, on a real Temporal dev server: with
identities in the catalog only signed decisions for this run, this gate and
this plan count, once per person, and only from an approver role; a signature
made with stock ssh-keygen counts like one made by modoru."""

from __future__ import annotations

import datetime as dt
import os
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
from activities.kubernetes import KubernetesActivities
from activities.notify import NotifyActivities
from activities.verify import VerifyActivities
from runbook.catalog import ApprovalPolicy, Catalog, Channel, ServiceEntry
from runbook.decisions import DecisionPayload, GateView, SignedDecision, plan_digest
from runbook.identity import Identity
from runbook.models import ApprovalSignal, Phase, RejectSignal, RollbackRequest, Severity
from runbook.signatures import new_private_key, public_key_line, sign
from starter.signing import payload_for, signed_start
from tests.integration.test_rollback_end_to_end import start, wait_phase
from worker.main import WORKFLOWS
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

pytestmark = pytest.mark.integration
PEOPLE = {"oncall": ["oncall"], "sre-lead": ["sre-lead"], "backend-lead": ["backend-lead"], "dual": ["sre-lead", "backend-lead"]}


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
    identities = [Identity(id=name, display_name=name.title(), roles=roles, keys=[public_key_line(keys[name].read_bytes())])
                  for name, roles in PEOPLE.items()]
    catalog = Catalog(identities=identities, services=[ServiceEntry(
        name="tekutoko-api", deployment="tekutoko-api", service="tekutoko-api",
        approval=ApprovalPolicy(approvers=["sre-lead", "backend-lead"], investigate_approvals=3),
        channels=[Channel(kind="jsonl", path=str(tmp_path / "notices.jsonl"))], verification_window_seconds=15, rollout_timeout_seconds=60,
    )])
    queue = f"signed-{uuid.uuid4().hex[:8]}"
    settings = Settings(temporal_address=dev_env.client.service_client.config.target_host, task_queue=queue, kubeconfig=sandbox.kubeconfig)
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    async with aiohttp.ClientSession() as session:
        k8s, verify = KubernetesActivities(apps, core), VerifyActivities(apps, core, session)
        activities = [CatalogActivities(catalog).lookup, k8s.plan_rollback, k8s.backup_deployment, k8s.rollout_undo,
                      k8s.wait_rollout, verify.verify_service, NotifyActivities(environ={}, base_dir=tmp_path).send]
        async with Worker(dev_env.client, task_queue=queue, workflows=WORKFLOWS, activities=activities, workflow_failure_exception_types=[Exception]):
            yield SignedStack(dev_env.client, settings, sandbox, keys, tmp_path)
    await api.close()


def request(stack: SignedStack, requester: str, **changes) -> RollbackRequest:
    req = RollbackRequest(**{"deployment": "tekutoko-api", "severity": Severity.INVESTIGATE, "reason": "error rate 60%", "requested_by": requester, **changes})
    req.start = signed_start(req, rollback_workflow_id(req.namespace, req.deployment), stack.keys[requester])
    return req


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


async def test_only_valid_signed_decisions_from_distinct_approvers_count(signed: SignedStack) -> None:
    handle = await start(signed, request(signed, "oncall"))
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    status = await handle.query(DeploymentRollbackWorkflow.status)
    gate = status.pending
    assert gate is not None and gate.signed and gate.gate == "approval" and gate.plan["to_revision"] == 2
    assert any(e.action == "start" and e.counted and e.actor == "oncall" for e in status.audit)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stranger = key_file(signed.tmp, "stranger")
    refused = [
        (ApprovalSignal(by="sre-lead"), "unsigned"),
        (ApprovalSignal(by="sre-lead", signed=decision(gate, stranger, "sre-lead")), "not one of sre-lead's keys"),
        (ApprovalSignal(by="sre-lead", signed=decision(gate, signed.keys["sre-lead"], "sre-lead", issued_at=now - dt.timedelta(minutes=20),
                                                       expires_at=now - dt.timedelta(minutes=5))), "expired"),
        (ApprovalSignal(by="sre-lead", signed=decision(gate, signed.keys["sre-lead"], "sre-lead", run_id="another-run")), "names run another-run"),
        (ApprovalSignal(by="sre-lead", signed=decision(gate, signed.keys["sre-lead"], "sre-lead", plan=plan_digest({"to_revision": 1}))), "another plan"),
        (ApprovalSignal(by="sre‐lead", signed=decision(gate, stranger, "sre‐lead")), "is not an identity in the catalog"),  # U+2010
        (ApprovalSignal(by="oncall", signed=decision(gate, signed.keys["oncall"], "oncall")), "requested this change"),
        (ApprovalSignal(by="sre-lead", signed=decision(gate, signed.keys["sre-lead"], "sre-lead", gate="switch")), "not 'approval'"),
    ]
    for signal, needle in refused:
        counted, detail = await verdict(handle, signal)
        assert counted is False and needle in detail, (needle, detail)

    first = decision(gate, signed.keys["sre-lead"], "sre-lead")
    assert await verdict(handle, ApprovalSignal(by="sre-lead", signed=first)) == (True, "signed by sre-lead")
    counted, detail = await verdict(handle, ApprovalSignal(by="sre-lead", signed=first))
    assert counted is False and "replay" in detail
    assert (await verdict(handle, ApprovalSignal(by="dual", signed=decision(gate, signed.keys["dual"], "dual"))))[0] is True
    counted, detail = await verdict(handle, ApprovalSignal(by="dual", signed=decision(gate, signed.keys["dual"], "dual")))
    assert counted is False and "two approvals are two people" in detail
    assert (await handle.query(DeploymentRollbackWorkflow.status)).phase is Phase.AWAITING_APPROVAL  # 2 of 3

    # The third, with stock ssh-keygen over what `modoru approve --payload` prints.
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    payload = signed.tmp / "approve.json"
    payload.write_text(payload_for(gate, "approve", "backend-lead").text())
    subprocess.run(["ssh-keygen", "-Y", "sign", "-n", "modoru", "-f", str(signed.keys["backend-lead"]), str(payload)],
                   check=True, capture_output=True, env={**os.environ, "SSH_AUTH_SOCK": ""})
    stock = SignedDecision(payload=payload.read_text(), signature=(signed.tmp / "approve.json.sig").read_text())
    assert await verdict(handle, ApprovalSignal(by="backend-lead", signed=stock)) == (True, "signed by backend-lead")
    result = await handle.result()
    assert result.status.phase is Phase.COMPLETED and result.status.approvals == ["sre-lead", "dual", "backend-lead"]


async def test_an_immediate_rollback_by_someone_not_on_call_waits_for_an_approval(signed: SignedStack) -> None:
    mark = signed.sandbox.mark()
    handle = await start(signed, request(signed, "sre-lead", severity=Severity.IMMEDIATE))
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    status = await handle.query(DeploymentRollbackWorkflow.status)
    assert status.approvals_required == 1 and "not a verified oncall" in " ".join(e.detail for e in status.audit)
    assert not [m for m in signed.sandbox.requests_since(mark) if m["resource"] == "deployments" and m["verb"] == "patch"]
    gate = status.pending
    counted, _ = await verdict(handle, RejectSignal(by="backend-lead", reason="drill", signed=decision(gate, signed.keys["backend-lead"], "backend-lead",
                                                                                                           decision="reject", note="drill")))
    assert counted is True
    assert (await handle.result()).status.phase is Phase.REJECTED


async def test_an_unsigned_start_is_not_a_verified_requester(signed: SignedStack) -> None:
    req = RollbackRequest(deployment="tekutoko-api", severity=Severity.IMMEDIATE, reason="x", requested_by="oncall")
    handle = await start(signed, req)
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    status = await handle.query(DeploymentRollbackWorkflow.status)
    assert status.approvals_required == 1
    assert any(e.action == "start" and e.counted is False and "unsigned start" in e.detail for e in status.audit)
    await handle.terminate("test over")
