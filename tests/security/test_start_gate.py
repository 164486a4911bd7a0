"""A start is a signature over a run-bound gate, on a real Temporal dev server.
A signed immediate start copied from one run's history (in the request, or sent
to the new run's start gate) does not start another run; only the requester's
signature over this run's start gate counts, once; a decision whose times have
no time zone is not counted and the workflow goes on; the CLI signs the start
gate with --key and says, without a key, that the catalog needs one. An
activity scheduled by hand with a start from another run, a start counted in
the future or a plan nobody approved changes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import subprocess
import sys
import uuid

import pytest
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.gatekeeper import Gatekeeper
from activities.kubernetes import KubernetesActivities
from runbook.catalog import ApprovalPolicy, Catalog, ServiceEntry
from runbook.decisions import (
    DecisionPayload,
    DecisionVerdict,
    GateView,
    Grant,
    SignedDecision,
    canonical,
    plan_digest,
)
from runbook.identity import Identity
from runbook.models import (
    ApprovalSignal,
    Phase,
    PlanRequest,
    RejectSignal,
    RollbackRequest,
    Severity,
    UndoRequest,
)
from runbook.plans import rollback_plan, start_gate_plan
from runbook.signatures import public_key_line, sign
from starter.signing import payload_for
from tests.integration.conftest import dev_env  # noqa: F401 - the session's dev server
from tests.integration.test_rollback_end_to_end import start
from tests.integration.test_signed_approvals import (  # noqa: F401 - the signed stack fixture
    PEOPLE,
    SignedStack,
    decision,
    request,
    signed,
    started,
)
from tests.security.test_guard_seal import QUEUE as SEAL_QUEUE
from tests.security.test_guard_seal import trusted_worker
from tests.workflows.conftest import fake, time_skipping_env  # noqa: F401 - fixtures
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

pytestmark = pytest.mark.integration


async def status_of(handle):
    return await handle.query(DeploymentRollbackWorkflow.status)


async def at_gate(handle, gate: str) -> GateView:
    for _ in range(300):
        current = await status_of(handle)
        if current.pending is not None and current.pending.gate == gate:
            return current.pending
        await asyncio.sleep(0.1)
    raise AssertionError(f"never reached the {gate} gate: {current.message}")


def patches(stack: SignedStack, mark) -> list:
    return [
        m
        for m in stack.sandbox.requests_since(mark)
        if m["resource"] == "deployments" and m["verb"] in ("patch", "update")
    ]


async def send_start(handle, signed_start: SignedDecision, by: str = "oncall") -> DecisionVerdict:
    return await handle.execute_update(
        "start", ApprovalSignal(by=by, signed=signed_start), result_type=DecisionVerdict
    )


async def copied_start(client, handle) -> SignedDecision:
    """The signed start as anyone who can read the history finds it."""
    history = await handle.fetch_history()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            accepted = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if accepted.input.name == "start":
                [signal] = await client.data_converter.decode(
                    accepted.input.args.payloads, [ApprovalSignal]
                )
                assert signal.signed is not None
                return signal.signed
    raise AssertionError("no start in the history")


async def test_a_start_copied_from_a_history_does_not_start_another_run(
    signed: SignedStack,  # noqa: F811
) -> None:
    # A legitimate immediate start by someone not on call: it counts, then waits for approval.
    req = request(signed, "sre-lead", severity=Severity.IMMEDIATE)
    first = await started(signed, req)
    await at_gate(first, "approval")
    copy = await copied_start(signed.client, first)
    await first.terminate("over")

    # The same input, started again under the same id with the copied start inside it and
    # sent to the new run's start gate: nothing counts, nothing is changed.
    mark = signed.sandbox.mark()
    replayed = req.model_copy(update={"start": copy})
    second = await signed.client.start_workflow(
        DeploymentRollbackWorkflow.run,
        replayed,
        id=rollback_workflow_id("default", "tekutoko-api"),
        task_queue=signed.settings.task_queue,
    )
    gate = await at_gate(second, "start")
    assert gate.run_id != first.result_run_id
    verdict = await send_start(second, copy, by="sre-lead")
    assert verdict.counted is False and "names run" in verdict.reason, verdict.reason
    current = await status_of(second)
    assert current.pending is not None and current.pending.gate == "start"
    assert any(
        e.action == "start" and e.counted is False and "inside the request" in e.detail
        for e in current.audit
    )
    # An approver's approval does not count while the start is unsigned.
    approval = decision(gate, signed.keys["backend-lead"], "backend-lead")
    said = await second.execute_update(
        "approval", ApprovalSignal(by="backend-lead", signed=approval), result_type=DecisionVerdict
    )
    assert said.counted is False
    await asyncio.sleep(1)
    assert patches(signed, mark) == []
    await second.terminate("test over")


async def test_only_the_requesters_signature_over_this_run_counts_and_once(
    signed: SignedStack,  # noqa: F811
) -> None:
    req = request(signed, "oncall")
    handle = await start(signed, req)
    gate = await at_gate(handle, "start")

    def start_by(who: str, view: GateView = gate, **changes) -> SignedDecision:
        payload = payload_for(view, "start", who).model_copy(update=changes)
        text = DecisionPayload.model_validate(payload.model_dump()).text()
        return SignedDecision(payload=text, signature=sign(text, signed.keys[who].read_bytes()))

    refused = [
        (start_by("sre-lead"), "names 'oncall' as the requester"),
        (start_by("oncall", run_id="another-run"), "names run another-run"),
        (start_by("oncall", plan=plan_digest({"kind": "start"})), "another plan"),
        (start_by("oncall", gate="approval"), "not 'start'"),
        (start_by("oncall", decision="approve"), "not a start"),
    ]
    for signed_start, needle in refused:
        verdict = await send_start(handle, signed_start)
        assert verdict.counted is False and needle in verdict.reason, (needle, verdict.reason)
    # The status says whether the start counted (the CLI reads it, not the audit trail).
    assert (await status_of(handle)).start_counted is False
    good = start_by("oncall")
    assert (await send_start(handle, good)).counted
    assert (await status_of(handle)).start_counted is True
    again = await send_start(handle, good)
    assert again.counted is False and "already signed" in again.reason
    # The start's nonce is spent for the whole run: an approval reusing it does not count.
    view = await at_gate(handle, "approval")
    nonce = DecisionPayload.model_validate_json(good.payload).nonce
    reused = decision(view, signed.keys["sre-lead"], "sre-lead", nonce=nonce)
    said = await handle.execute_update(
        "approval", ApprovalSignal(by="sre-lead", signed=reused), result_type=DecisionVerdict
    )
    assert said.counted is False and "replay" in said.reason
    await handle.terminate("test over")


async def test_a_decision_without_time_zones_is_not_counted_and_the_workflow_goes_on(
    signed: SignedStack,  # noqa: F811
) -> None:
    handle = await started(signed, request(signed, "oncall"))
    gate = await at_gate(handle, "approval")
    naive = dt.datetime.now().replace(microsecond=0)  # noqa: DTZ005 - the point of the test
    fields = {
        **payload_for(gate, "approve", "sre-lead").model_dump(mode="json"),
        "issued_at": naive.isoformat(),
        "expires_at": (naive + dt.timedelta(minutes=5)).isoformat(),
    }
    text = canonical(fields)
    bad = SignedDecision(payload=text, signature=sign(text, signed.keys["sre-lead"].read_bytes()))
    said = await handle.execute_update(
        "approval", ApprovalSignal(by="sre-lead", signed=bad), result_type=DecisionVerdict
    )
    assert said.counted is False and "time zone" in said.reason, said.reason
    await handle.signal("approve", ApprovalSignal(by="sre-lead", signed=bad))  # as a signal too
    reject = decision(
        gate, signed.keys["backend-lead"], "backend-lead", decision="reject", note="drill"
    )
    said = await handle.execute_update(
        "rejection",
        RejectSignal(by="backend-lead", reason="drill", signed=reject),
        result_type=DecisionVerdict,
    )
    assert said.counted is True
    assert (await asyncio.wait_for(handle.result(), 30)).status.phase is Phase.REJECTED


def cli(stack: SignedStack, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MODORU_TEMPORAL_ADDRESS": stack.client.service_client.config.target_host,
        "MODORU_TASK_QUEUE": stack.settings.task_queue,
    }
    return subprocess.run(
        [sys.executable, "-m", "starter.cli", "rollback", "start", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_the_cli_signs_the_start_gate_and_without_a_key_says_why_it_waits(
    signed: SignedStack,  # noqa: F811
) -> None:
    common = ["--deployment", "tekutoko-api", "--severity", "immediate", "--reason", "60%"]
    unsigned = await asyncio.to_thread(cli, signed, *common, "--requested-by", "oncall")
    assert unsigned.returncode == 1 and "signed starts only" in unsigned.stderr, unsigned.stderr
    handle = signed.client.get_workflow_handle(rollback_workflow_id("default", "tekutoko-api"))
    # The same command again, with the key: it attaches to the waiting run and signs its start.
    done = await asyncio.to_thread(
        cli,
        signed,
        *common,
        "--requested-by",
        "oncall",
        "--key",
        str(signed.keys["oncall"]),
        "--wait",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    current = await status_of(handle)
    assert current.phase is Phase.COMPLETED and current.approvals == [] and current.start_counted
    assert any(e.action == "start" and e.counted and e.actor == "oncall" for e in current.audit)


# -- activities scheduled by hand -------------------------------------------------------


async def test_a_hand_scheduled_undo_with_a_start_from_another_run_changes_nothing(
    signed: SignedStack,  # noqa: F811
) -> None:
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
                approval=ApprovalPolicy(approvers=["sre-lead"]),
            )
        ],
    )
    api = await kube_config.new_client_from_config(config_file=str(signed.sandbox.kubeconfig))
    k8s = KubernetesActivities(
        kube.AppsV1Api(api), kube.CoreV1Api(api), Gatekeeper(catalog, b"k" * 32)
    )
    rollback_id = rollback_workflow_id("default", "tekutoko-api")

    def on_run(run: str) -> ActivityEnvironment:
        env = ActivityEnvironment()
        env.info = env.info.__class__(
            **{**env.info.__dict__, "workflow_id": rollback_id, "workflow_run_id": run}
        )
        return env

    plan = await on_run("run-2").run(
        k8s.plan_rollback, PlanRequest(namespace="default", deployment="tekutoko-api")
    )
    req = RollbackRequest(
        deployment="tekutoko-api", severity=Severity.IMMEDIATE, reason="x", requested_by="oncall"
    )
    shown = start_gate_plan(req, rollback_plan(plan))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def start_for(run: str, shown_plan: dict = shown) -> SignedDecision:
        view = GateView(
            workflow_id=rollback_id,
            run_id=run,
            gate="start",
            plan=shown_plan,
            digest=plan_digest(shown_plan),
            signed=True,
        )
        text = payload_for(view, "start", "oncall").text()
        return SignedDecision(
            payload=text, signature=sign(text, signed.keys["oncall"].read_bytes())
        )

    def grant(start_: SignedDecision, counted: dt.datetime | None, shown_plan: dict = shown):
        return Grant(
            gate="approval",
            plan=rollback_plan(plan),
            request=req.model_dump(mode="json", exclude={"start", "guard_seal", "guard_facts"}),
            start=start_,
            start_counted_at=counted,
            start_plan=shown_plan,
        )

    other = rollback_plan(plan.model_copy(update={"to_revision": 1}))
    other_shown = start_gate_plan(req, other)
    mark = signed.sandbox.mark()
    attempts = [
        ("a start copied from another run", grant(start_for("run-1"), now)),
        ("a start with no counted moment", grant(start_for("run-2"), None)),
        ("a start counted in 2099", grant(start_for("run-2"), now.replace(year=2099))),
        (
            "a start counted after it expired",
            grant(start_for("run-2"), now + dt.timedelta(minutes=11)),
        ),
        (
            "a start over a plan nobody approved",
            grant(start_for("run-2", other_shown), now, other_shown),
        ),
    ]
    for why, hostile in attempts:
        with pytest.raises(ApplicationError, match=re.escape("1 needed")) as refused:
            await on_run("run-2").run(k8s.rollout_undo, UndoRequest(plan=plan, grant=hostile))
        assert refused.value.non_retryable, why
    assert patches(signed, mark) == []
    # The requester's start over this run's plan, counted when it was valid, is enough for an
    # immediate change by the on-call engineer, even judged long after it expired.
    later = grant(start_for("run-2"), now)
    gatekeeper = k8s.gatekeeper
    assert gatekeeper is not None
    on_run("run-2").run(
        lambda: gatekeeper.require(later, catalog.services[0], 0, rollback_plan(plan), "undo")
    )
    await api.close()


async def test_a_run_whose_start_is_never_signed_is_refused_and_changes_nothing(
    time_skipping_env,  # noqa: F811
    fake,  # noqa: F811
) -> None:
    deployment = f"api-{uuid.uuid4().hex[:6]}"
    async with trusted_worker(time_skipping_env, fake):
        handle = await time_skipping_env.client.start_workflow(
            DeploymentRollbackWorkflow.run,
            RollbackRequest(
                deployment=deployment,
                severity=Severity.IMMEDIATE,
                reason="error rate 60%",
                requested_by="oncall",
            ),
            id=rollback_workflow_id("default", deployment),
            task_queue=SEAL_QUEUE,
        )
        result = await handle.result()  # the start gate's ten minutes pass
    assert result.status.phase is Phase.REJECTED
    assert "no signed start by oncall" in result.status.message
    assert "undo" not in fake.calls
