"""The deployment rollback on a real Temporal dev server against the sandbox,
through the real activities and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from temporalio.client import WorkflowFailureError

from runbook.models import ApprovalSignal, Phase, RollbackRequest, RollbackResult, Severity
from starter.commands import CliError, start_rollback
from tests.waiting import phase_of, until
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

NS, NAME = "default", "tekutoko-api"
IMAGE = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api"
pytestmark = pytest.mark.integration


def request(**changes) -> RollbackRequest:
    return RollbackRequest(
        **{
            "deployment": NAME,
            "severity": Severity.INVESTIGATE,
            "reason": "error rate 60%",
            "requested_by": "oncall",
            **changes,
        }
    )


async def start(stack, req: RollbackRequest):
    with contextlib.suppress(CliError):  # a fast failure is read from the handle by the test
        await start_rollback(stack.client, stack.settings, req, wait=False, as_json=True)
    return stack.client.get_workflow_handle_for(
        DeploymentRollbackWorkflow.run, rollback_workflow_id(req.namespace, req.deployment)
    )


async def wait_phase(handle, phase: Phase, timeout: float = 20) -> None:
    await until(
        f"the rollback to reach {phase.value}",
        lambda: handle.query(DeploymentRollbackWorkflow.status),
        lambda s: s.phase == phase,
        phase_of,
        timeout,
    )


def rollout(d) -> str:
    s = d.status
    return (
        f"image {d.spec.template.spec.containers[0].image}, generation {d.metadata.generation} "
        f"(observed {s.observed_generation}), {s.replicas} replicas, {s.updated_replicas} "
        f"updated, {s.available_replicas} available"
    )


def image(kube_client) -> str:
    return (
        kube_client[0].read_namespaced_deployment(NAME, NS).spec.template.spec.containers[0].image
    )


async def test_investigate_rollback_is_approved_rolls_out_and_verifies(stack, kube_client) -> None:
    mark = stack.sandbox.mark()
    handle = await start(stack, request())
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    assert not [m for m in stack.mutations(mark) if m["resource"] == "deployments"]
    await handle.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="sre-lead"))
    result: RollbackResult = await handle.result()
    assert result.status.phase == Phase.COMPLETED and result.status.verification.ok
    assert (result.status.from_revision, result.status.to_revision) == (3, 2)
    assert image(kube_client) == f"{IMAGE}:1.2.0"
    patches = [m for m in stack.mutations(mark) if m["resource"] == "deployments"]
    assert [(p["verb"], p["content_type"]) for p in patches] == [
        ("patch", "application/json-patch+json")
    ]
    backup = kube_client[1].read_namespaced_config_map(result.status.backup_configmap, NS)
    assert (
        f"image: {IMAGE}:1.3.0" in backup.data["deployment.yaml"]
        and "managedFields" not in backup.data["deployment.yaml"]
    )
    assert "status:" not in backup.data["deployment.yaml"]
    history = await handle.fetch_history()
    assert history.events  # the Web UI's story: every step is in the history


async def test_a_target_that_never_pulls_fails_with_diagnostics(stack, kube_client) -> None:
    apps, _ = kube_client
    apps.patch_namespaced_deployment(
        NAME,
        NS,
        {
            "spec": {
                "progressDeadlineSeconds": 40,
                "template": {
                    "spec": {"containers": [{"name": "api", "image": f"{IMAGE}:1.4.0-missing"}]}
                },
            }
        },
    )
    await asyncio.sleep(1.0)
    apps.patch_namespaced_deployment(
        NAME,
        NS,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "api", "image": f"{IMAGE}:1.3.0"}]}}
            }
        },
    )
    await until(  # back on 1.3.0 and settled before the rollback starts
        "the Deployment to settle on 1.3.0 with 3 replicas",
        lambda: apps.read_namespaced_deployment(NAME, NS),
        lambda d: (
            d.status.observed_generation == d.metadata.generation
            and d.status.updated_replicas == d.status.available_replicas == d.status.replicas == 3
        ),
        rollout,
        10,
    )
    handle = await start(stack, request(severity=Severity.IMMEDIATE, to_revision=4))
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    status = await handle.query(DeploymentRollbackWorkflow.status)
    assert status.phase == Phase.FAILED
    assert "exceeded its progress deadline" in status.message
    assert any("ImagePullBackOff" in p or "ErrImagePull" in p for p in status.diagnostics.problems)
    assert any("Failed to pull image" in e for e in status.diagnostics.events)


async def test_reject_changes_nothing(stack, kube_client) -> None:
    mark = stack.sandbox.mark()
    handle = await start(stack, request())
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    result = await stack.cli(
        "reject", handle.id, "--by", "backend-lead", "--reason", "forward fix ready"
    )
    assert result.returncode == 0, result.stderr
    assert "counted" in result.stdout
    final: RollbackResult = await handle.result()
    assert final.status.phase == Phase.REJECTED
    assert image(kube_client) == f"{IMAGE}:1.3.0"
    assert not [m for m in stack.mutations(mark) if m["resource"] == "deployments"]


async def test_unauthorized_and_self_approvals_do_not_count(stack) -> None:
    handle = await start(stack, request())
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    mine = await stack.cli("approve", handle.id, "--by", "oncall")
    assert mine.returncode == 1 and "requested this rollback and cannot approve it" in mine.stderr
    stranger = await stack.cli("approve", handle.id, "--by", "intern")
    assert stranger.returncode == 1 and "not an approver" in stranger.stderr
    assert (await handle.query(DeploymentRollbackWorkflow.status)).phase == Phase.AWAITING_APPROVAL
    ok = await stack.cli("approve", handle.id, "--by", "backend-lead", "--comment", "go")
    assert ok.returncode == 0 and "approved by backend-lead" in ok.stdout
    final: RollbackResult = await handle.result()
    assert final.status.phase == Phase.COMPLETED
    counted = [(e.actor, e.counted) for e in final.status.audit if e.action == "approve"]
    assert counted == [("oncall", False), ("intern", False), ("backend-lead", True)]


async def test_cli_refuses_a_missing_revision_and_changes_nothing(stack) -> None:
    mark = stack.sandbox.mark()
    result = await stack.cli(
        "rollback",
        "start",
        "--deployment",
        NAME,
        "--severity",
        "immediate",
        "--reason",
        "x",
        "--to-revision",
        "9",
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1]
        == "modoru: rollback refused: revision 9 is not in the history of deployment/tekutoko-api "
        "(revisions: 1, 2, 3)"
    )
    assert stack.mutations(mark) == []


async def test_cli_refuses_unknown_deployment_and_namespace(stack) -> None:
    unknown = await stack.cli(
        "rollback", "start", "--deployment", "nope", "--severity", "immediate", "--reason", "x"
    )
    assert unknown.returncode == 1 and "not in the service catalog" in unknown.stderr
    bad_flag = await stack.cli(
        "rollback", "start", "--deployment", "Bad_Name", "--severity", "immediate", "--reason", "x"
    )
    assert (
        bad_flag.returncode == 2 and "--deployment: String should match pattern" in bad_flag.stderr
    )
    bad_severity = await stack.cli(
        "rollback", "start", "--deployment", NAME, "--severity", "later", "--reason", "x"
    )
    assert bad_severity.returncode == 2 and "later" in bad_severity.stderr


async def test_already_at_target_is_a_no_op(stack, kube_client) -> None:
    started = time.monotonic()
    result = await stack.cli(
        "rollback",
        "start",
        "--deployment",
        NAME,
        "--severity",
        "immediate",
        "--reason",
        "x",
        "--to-revision",
        "3",
        "--wait",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["phase"] == "completed" and "nothing to do" in payload["message"]
    # The run ended before any start gate: the CLI does not go on looking for one (it did, for
    # the whole minute it gives a gate to appear).
    assert time.monotonic() - started < 30, "the CLI looked for the start gate of a run that ended"
    for key in (
        "workflow_id",
        "phase",
        "namespace",
        "deployment",
        "from_revision",
        "to_revision",
        "severity",
        "sla_deadline",
        "sla_met",
        "checklist",
        "audit",
    ):
        assert key in payload
    assert image(kube_client) == f"{IMAGE}:1.3.0"


async def test_a_second_start_attaches_to_the_running_rollback(stack) -> None:
    first = await start(stack, request())
    await wait_phase(first, Phase.AWAITING_APPROVAL)
    again = await stack.cli(
        "rollback",
        "start",
        "--deployment",
        NAME,
        "--severity",
        "investigate",
        "--reason",
        "again",
        "--json",
    )
    assert json.loads(again.stdout.strip().splitlines()[-1])["attached"] is True
    await stack.cli("reject", first.id, "--by", "sre-lead", "--reason", "cleanup")
    await first.result()


async def test_unreachable_temporal_is_one_line(stack) -> None:
    mark = stack.sandbox.mark()
    result = await stack.cli(
        "rollback",
        "start",
        "--deployment",
        NAME,
        "--severity",
        "immediate",
        "--reason",
        "x",
        env={**stack.env, "MODORU_TEMPORAL_ADDRESS": "127.0.0.1:1"},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("modoru: cannot reach Temporal at 127.0.0.1:1")
    assert stack.mutations(mark) == []


async def test_the_stock_temporal_cli_approves_and_reads_status(stack) -> None:
    from tests.workflows.conftest import binary

    handle = await start(stack, request())
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    address = ["--address", stack.settings.temporal_address]

    async def temporal(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            binary("temporal"),
            *args,
            *address,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    await temporal(
        "workflow",
        "signal",
        "--workflow-id",
        handle.id,
        "--name",
        "approve",
        "--input",
        '{"by": "sre-lead", "comment": "via temporal CLI"}',
    )
    final: RollbackResult = await handle.result()
    assert final.status.approvals == ["sre-lead"]
    shown = await temporal("workflow", "query", "--workflow-id", handle.id, "--name", "status")
    assert '"phase": "completed"' in shown.replace('":"', '": "')


async def test_list_and_history_show_rollbacks(stack) -> None:
    handle = await start(stack, request())
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    listed = await until(  # visibility is eventually consistent
        f"{handle.id} in `modoru list --open`",
        lambda: stack.cli("list", "--open"),
        lambda r: handle.id in r.stdout,
        lambda r: f"exit {r.returncode}, stdout {r.stdout[-1000:]!r}, stderr {r.stderr[-1000:]!r}",
        30,  # 50 tries of a CLI call
        interval=0.2,
    )
    assert (
        listed.returncode == 0
        and handle.id in listed.stdout
        and "awaiting_approval" in listed.stdout
    )
    await stack.cli("reject", handle.id, "--by", "sre-lead", "--reason", "test over")
    await handle.result()
    history = await stack.cli("history", "--deployment", NAME)
    assert history.returncode == 0 and handle.id in history.stdout
    status = await stack.cli("status", "no-such-rollback")
    assert status.returncode == 2 and "no modoru workflow with id no-such-rollback" in status.stderr


async def test_a_paused_deployment_is_refused_before_any_change(stack, kube_client) -> None:
    kube_client[0].patch_namespaced_deployment(NAME, NS, {"spec": {"paused": True}})
    mark = stack.sandbox.mark()
    result = await stack.cli(
        "rollback", "start", "--deployment", NAME, "--severity", "immediate", "--reason", "x"
    )
    assert result.returncode == 1
    assert (
        "deployment/tekutoko-api is paused; resume it first with `kubectl rollout resume "
        "deployment/tekutoko-api -n default`" in result.stderr
    )
    assert stack.mutations(mark) == []
