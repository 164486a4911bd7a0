"""The CLI as a confused deputy (issue #24, path 3), tried from the outside on a
real dev server: a rogue worker on another task queue runs a workflow whose
`status` query shows one plan and offers another workflow's gate. `modoru
approve` signs nothing and sends nothing unless the gate is the typed
workflow's, in its current run, the workflow is one of modoru's change types on
modoru's task queue, and the digest is the plan's; the legitimate path signs
and shows the plan first."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from runbook.decisions import DecisionPayload, DecisionVerdict, GateView, plan_digest
from runbook.models import ApprovalSignal, Phase, RejectSignal, RollbackStatus, Severity
from runbook.signatures import new_private_key, public_key_line, signer_key
from starter.base import CliError
from starter.gate_check import checked_gate, decision_workflow_types, modoru_workflow_types
from tests.integration.conftest import dev_env  # noqa: F401 - the session's dev server

PRODUCTION_PLAN = {
    "namespace": "default",
    "deployment": "tekutoko-api",
    "from_revision": 3,
    "to_revision": 2,
    "to_images": ["asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api:1.2.0"],
}
STAGING_PLAN = {**PRODUCTION_PLAN, "namespace": "staging"}


class Forgery(BaseModel):
    """What the rogue workflow's status shows: a plan, and a gate made of the given
    parts (its own id, run or the plan's digest where a part is empty)."""

    plan: dict
    gate_workflow_id: str = ""
    gate_run_id: str = ""
    digest: str = ""


class Rogue:
    """A small workflow: its status offers the forged gate; it records every decision
    that reaches it and says it counted. Registered under two type names below."""

    def __init__(self) -> None:
        self.forgery: Forgery | None = None
        self.received: list[ApprovalSignal | RejectSignal] = []

    async def _run(self, forgery: Forgery) -> None:
        self.forgery = forgery
        await workflow.wait_condition(lambda: False)

    @workflow.query(name="status")
    def status(self) -> RollbackStatus:
        assert self.forgery is not None
        info = workflow.info()
        f = self.forgery
        return RollbackStatus(
            workflow_id=info.workflow_id,
            phase=Phase.AWAITING_APPROVAL,
            severity=Severity.INVESTIGATE,
            requested_by="oncall",
            reason="staging drill",
            namespace="staging",
            deployment="tekutoko-api",
            detected_at=workflow.now(),
            sla_deadline=workflow.now(),
            approvals_required=1,
            pending=GateView(
                workflow_id=f.gate_workflow_id or info.workflow_id,
                run_id=f.gate_run_id or info.run_id,
                gate="approval",
                plan=f.plan,
                digest=f.digest or plan_digest(f.plan),
                signed=True,
            ),
        )

    @workflow.query(name="received")
    def got(self) -> list[ApprovalSignal]:
        return [s for s in self.received if isinstance(s, ApprovalSignal)]

    @workflow.update(name="approval")
    def approval(self, signal: ApprovalSignal) -> DecisionVerdict:
        self.received.append(signal)
        return DecisionVerdict(decision="approve", counted=True, reason="signed", by=signal.by)

    @workflow.update(name="rejection")
    def rejection(self, signal: RejectSignal) -> DecisionVerdict:
        self.received.append(signal)
        return DecisionVerdict(decision="reject", counted=True, reason="signed", by=signal.by)

    @workflow.signal(name="approve")
    def approve(self, signal: ApprovalSignal) -> None:
        self.received.append(signal)


@workflow.defn(name="DeploymentRollback", sandboxed=False)
class RogueDeploymentRollback(Rogue):
    """modoru's type name, on a rogue task queue."""

    @workflow.run
    async def run(self, forgery: Forgery) -> None:
        await self._run(forgery)


@workflow.defn(name="StagingRollback", sandboxed=False)
class StagingRollback(Rogue):
    """A type modoru does not have."""

    @workflow.run
    async def run(self, forgery: Forgery) -> None:
        await self._run(forgery)


DEPLOYMENT_ROLLBACK, STAGING_ROLLBACK = RogueDeploymentRollback, StagingRollback


@dataclass
class Scene:
    client: Client
    modoru_queue: str  # what the CLI is configured with
    rogue_queue: str  # where the rogue worker polls
    key: Path
    address: str

    async def plant(self, workflow_type: type, forgery: Forgery) -> str:
        workflow_id = f"rollback-staging-tekutoko-api-{uuid.uuid4().hex[:6]}"
        await self.client.start_workflow(
            workflow_type.run,  # type: ignore[attr-defined]
            forgery,
            id=workflow_id,
            task_queue=self.rogue_queue,
        )
        return workflow_id

    async def approve(self, workflow_id: str, *how: str, queue: str | None = None):
        env = {
            **os.environ,
            "MODORU_TEMPORAL_ADDRESS": self.address,
            "MODORU_TASK_QUEUE": queue or self.modoru_queue,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starter.cli",
            "approve",
            workflow_id,
            "--by",
            "sre-lead",
            *(how or ("--key", str(self.key))),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        return subprocess.CompletedProcess(how, proc.returncode, out.decode(), err.decode())

    async def received(self, workflow_id: str) -> list[ApprovalSignal]:
        handle = self.client.get_workflow_handle(workflow_id)
        return await handle.query("received", result_type=list[ApprovalSignal])


@pytest.fixture
async def scene(dev_env, tmp_path) -> AsyncIterator[Scene]:  # noqa: F811
    key = tmp_path / "sre-lead.key"
    key.write_bytes(new_private_key())
    key.chmod(0o600)
    rogue_queue = f"rogue-{uuid.uuid4().hex[:8]}"
    async with Worker(
        dev_env.client,
        task_queue=rogue_queue,
        workflows=[DEPLOYMENT_ROLLBACK, STAGING_ROLLBACK],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        yield Scene(
            dev_env.client,
            f"modoru-{uuid.uuid4().hex[:8]}",
            rogue_queue,
            key,
            dev_env.client.service_client.config.target_host,
        )


def production_gate() -> Forgery:
    """Production's gate (its id, run and digest) under a staging plan."""
    return Forgery(
        plan=STAGING_PLAN,
        gate_workflow_id="rollback-default-tekutoko-api",
        gate_run_id=str(uuid.uuid4()),
        digest=plan_digest(PRODUCTION_PLAN),
    )


def assert_refused(said: subprocess.CompletedProcess, words: str) -> None:
    assert said.returncode != 0, said.stdout + said.stderr
    assert "refusing to sign" in said.stderr and words in said.stderr, said.stderr
    assert "BEGIN SSH SIGNATURE" not in said.stdout and '"nonce"' not in said.stdout, said.stdout


@pytest.mark.integration
async def test_a_rogue_workflow_offering_production_s_gate_gets_no_signature(scene) -> None:
    workflow_id = await scene.plant(DEPLOYMENT_ROLLBACK, production_gate())
    with_key = await scene.approve(workflow_id)
    assert_refused(with_key, "the gate of another workflow ('rollback-default-tekutoko-api')")
    printed = await scene.approve(workflow_id, "--payload")  # nothing for ssh-keygen to sign
    assert_refused(printed, "another workflow")
    assert printed.stdout == ""
    assert await scene.received(workflow_id) == []


@pytest.mark.integration
async def test_the_typed_workflow_s_own_gate_on_another_task_queue_is_refused(scene) -> None:
    workflow_id = await scene.plant(DEPLOYMENT_ROLLBACK, Forgery(plan=PRODUCTION_PLAN))
    said = await scene.approve(workflow_id)
    assert_refused(said, f"task queue {scene.rogue_queue!r}, not modoru's {scene.modoru_queue!r}")
    assert await scene.received(workflow_id) == []


@pytest.mark.integration
async def test_a_workflow_type_that_is_not_modoru_s_is_refused(scene) -> None:
    workflow_id = await scene.plant(STAGING_ROLLBACK, Forgery(plan=PRODUCTION_PLAN))
    said = await scene.approve(workflow_id, queue=scene.rogue_queue)  # the queue alone would pass
    assert_refused(said, "it is a 'StagingRollback' workflow, not one of modoru's that take")
    assert await scene.received(workflow_id) == []


@pytest.mark.integration
async def test_a_gate_naming_another_run_is_refused(scene) -> None:
    other_run = str(uuid.uuid4())
    workflow_id = await scene.plant(
        DEPLOYMENT_ROLLBACK, Forgery(plan=PRODUCTION_PLAN, gate_run_id=other_run)
    )
    said = await scene.approve(workflow_id, queue=scene.rogue_queue)
    assert_refused(said, f"the gate names run {other_run}, but the current run is")
    assert await scene.received(workflow_id) == []


@pytest.mark.integration
async def test_a_digest_that_is_not_the_plan_s_is_refused(scene) -> None:
    workflow_id = await scene.plant(
        DEPLOYMENT_ROLLBACK, Forgery(plan=STAGING_PLAN, digest=plan_digest(PRODUCTION_PLAN))
    )
    said = await scene.approve(workflow_id, queue=scene.rogue_queue)
    assert_refused(said, "the plan shown does not have the digest offered for signing")
    printed = await scene.approve(workflow_id, "--payload", queue=scene.rogue_queue)
    assert_refused(printed, "digest")
    assert await scene.received(workflow_id) == []


@pytest.mark.integration
async def test_a_gate_that_holds_is_shown_then_signed_and_sent(scene) -> None:
    """The legitimate path: every part holds, the plan is printed, then signed."""
    workflow_id = await scene.plant(DEPLOYMENT_ROLLBACK, Forgery(plan=PRODUCTION_PLAN))
    said = await scene.approve(workflow_id, queue=scene.rogue_queue)
    assert said.returncode == 0 and "counted" in said.stdout, said.stdout + said.stderr
    shown = said.stdout.split("counted")[0]
    assert all(
        words in shown
        for words in (
            workflow_id,
            "DeploymentRollback",
            "plan.to_revision",
            plan_digest(PRODUCTION_PLAN),
        )
    ), shown
    [got] = await scene.received(workflow_id)
    assert got.signed is not None
    payload = DecisionPayload.model_validate_json(got.signed.payload)
    run_id = (await scene.client.get_workflow_handle(workflow_id).describe()).run_id
    assert (payload.workflow_id, payload.run_id, payload.plan) == (
        workflow_id,
        run_id,
        plan_digest(PRODUCTION_PLAN),
    )
    assert signer_key(got.signed.payload, got.signed.signature) == " ".join(
        public_key_line(scene.key.read_bytes()).split()[:2]
    )

    printed = await scene.approve(workflow_id, "--payload", queue=scene.rogue_queue)
    assert printed.returncode == 0 and "plan sha256" in printed.stderr, printed.stderr
    assert DecisionPayload.model_validate_json(printed.stdout).run_id == run_id  # stdout: payload


def test_the_types_the_cli_signs_for_are_the_worker_s_change_workflows() -> None:
    """Derived from the workflow definitions, as the worker registers them."""
    from worker.main import WORKFLOWS

    definitions = [workflow._Definition.must_from_class(c) for c in WORKFLOWS]
    assert modoru_workflow_types() == {d.name for d in definitions}
    assert decision_workflow_types() == {
        d.name for d in definitions if {"approval", "rejection"} <= set(d.updates)
    }
    assert "DeploymentRollback" in decision_workflow_types()
    assert not {"ReleaseGuard", "Incident", "ForwardFix"} & decision_workflow_types()


# -- the check alone, against a described workflow (no server) ------------------------


@dataclass
class Described:
    id: str
    run_id: str
    workflow_type: str
    task_queue: str


class OneWorkflow:
    """A client that knows one workflow, as `describe` tells it."""

    def __init__(self, described: Described) -> None:
        self.described = described

    def get_workflow_handle(self, workflow_id: str):
        described = self.described

        class Handle:
            async def describe(self) -> Described:
                assert workflow_id == described.id
                return described

        return Handle()


TYPED = "rollback-default-tekutoko-api"
HERE = Described(TYPED, "run-now", "DeploymentRollback", "modoru-rollbacks")


def gate_view(**changes) -> GateView:
    fields = {
        "workflow_id": TYPED,
        "run_id": "run-now",
        "gate": "approval",
        "plan": PRODUCTION_PLAN,
        "digest": plan_digest(PRODUCTION_PLAN),
        "signed": True,
        **changes,
    }
    return GateView(**fields)


async def check(gate: GateView, described: Described = HERE, **kwargs):
    from rich.console import Console

    out = Console(record=True, width=60)
    await checked_gate(
        OneWorkflow(described),  # type: ignore[arg-type]
        TYPED,
        gate,
        task_queue="modoru-rollbacks",
        out=out,
        **kwargs,
    )
    return out.export_text()


@pytest.mark.parametrize(
    ("gate", "described", "words"),
    [
        (gate_view(workflow_id="rollback-staging-x"), HERE, "the gate of another workflow"),
        (gate_view(run_id="run-before"), HERE, "the gate names run run-before"),
        (gate_view(), Described(TYPED, "run-now", "Incident", "modoru-rollbacks"), "'Incident'"),
        (gate_view(), Described(TYPED, "run-now", "DeploymentRollback", "rogue"), "'rogue'"),
        (gate_view(digest=plan_digest(STAGING_PLAN)), HERE, "does not have the digest"),
    ],
)
async def test_each_part_of_the_gate_is_checked(gate, described, words) -> None:
    with pytest.raises(CliError, match="refusing to sign") as refused:
        await check(gate, described)
    assert words in str(refused.value)


async def test_the_plan_is_shown_whole_and_as_written() -> None:
    """Every item on one unwrapped line; what the workflow wrote is never read as markup,
    and invisible characters are spelled out."""
    plan = {**PRODUCTION_PLAN, "reason": "[bold red]ok[/] sre-lead\u200b\x1b[2J"}
    shown = await check(gate_view(plan=plan, digest=plan_digest(plan)))
    lines = shown.splitlines()
    assert any(  # one line, though wider than the console's 60 columns
        line.split() == ["plan", "sha256:", plan_digest(plan)] for line in lines
    ), shown
    assert ["plan.to_revision:", "2"] in [line.split() for line in lines]
    assert "DeploymentRollback" in shown
    assert "[bold red]ok[/] sre-lead\\u200b\\u001b[2J" in shown


async def test_a_guard_s_stop_can_be_checked_against_the_guard_s_type() -> None:
    guard = Described(TYPED, "run-now", "ReleaseGuard", "modoru-rollbacks")
    with pytest.raises(CliError, match="'ReleaseGuard'"):
        await check(gate_view(), guard)
    assert "ReleaseGuard" in await check(gate_view(), guard, types={"ReleaseGuard"})
