"""The runbook's troubleshooting remedies for old pods that remain, as approved
steps: delete a named old ReplicaSet (never the live one, nor one still serving
while the new revision is not available; its manifest is kept in a ConfigMap
first), or `kubectl rollout restart`. Each goes through the approval desk and
the audit trail, then the rollout is awaited and verified as method 1."""

from __future__ import annotations

import datetime as dt

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook.repair_models import (
        ApplyResult,
        RepairPlan,
        RepairPlanRequest,
        RepairRequest,
        RepairResult,
        RepairStatus,
        ReplicaSetDelete,
        RestartRequest,
        repair_plan,
    )

    from .deploy_steps import DeploySteps


@workflow.defn(name="Troubleshoot")
class TroubleshootWorkflow(DeploySteps[RepairRequest, RepairStatus]):
    KIND = "Repair"
    ESCALATE = False  # a remedy for old pods: no half-time or deadline escalations

    @workflow.init
    def __init__(self, request: RepairRequest) -> None:
        what = (
            f"delete replicaset/{request.replicaset}"
            if request.action == "delete-replicaset"
            else "rollout restart"
        )
        self._begin(
            request,
            RepairStatus,
            f"{what}: {request.reason}",
            action=request.action,
            replicaset=request.replicaset,
        )

    @workflow.query(name="status")
    def status(self) -> RepairStatus:
        return self._status

    @workflow.run
    async def run(self, request: RepairRequest) -> RepairResult:
        return await self._carry_out(self._run(request))

    async def _run(self, request: RepairRequest) -> RepairResult:
        entry = await self._look_up()
        self._adopt(entry)
        plan: RepairPlan = await self._call(
            refs.REPAIR_PLAN,
            RepairPlanRequest(
                namespace=request.namespace,
                deployment=request.deployment,
                action=request.action,
                replicaset=request.replicaset,
            ),
            "read the deployment's ReplicaSets",
        )
        self._status.plan = plan
        if plan.problems:
            await self._refuse("; ".join(plan.problems) + "; nothing was changed")
        # kubectl's value (RFC 3339, seconds), fixed here so a retried restart is the same restart.
        restarted_at = (
            workflow.now().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if request.action == "restart"
            else ""
        )
        what = (
            f"delete replicaset/{request.replicaset}"
            if request.action == "delete-replicaset"
            else f"rollout restart deployment/{request.deployment}"
        )
        workflow.set_current_details(f"**{request.deployment}**: {what}")
        shown = repair_plan(
            request.namespace,
            request.deployment,
            plan.deployment_uid,
            request.action,
            request.replicaset,
            restarted_at,
        )
        if not await self._approved(shown, what):
            return RepairResult(status=self._status)

        await self._announce_start(what)
        target = {  # the Deployment as planned, and the approvals that allow acting on it
            "namespace": request.namespace,
            "deployment": request.deployment,
            "deployment_uid": plan.deployment_uid,
            "grant": self._desk.grant(request),
        }
        if request.action == "delete-replicaset":
            deleting = ReplicaSetDelete(**target, replicaset=request.replicaset)
            done: ApplyResult = await self._call(refs.DELETE_REPLICASET, deleting, what)
        else:
            restarting = RestartRequest(**target, restarted_at=restarted_at)
            done = await self._call(refs.ROLLOUT_RESTART, restarting, what)
        self._status.done = done
        self._desk.note("modoru", request.action, detail=done.message)
        await self._recover(
            entry, "wait for the rollout", from_revision=plan.revision, shown=done.message
        )
        self._complete(f"{done.message}; the rollout finished and verified")
        return RepairResult(status=self._status)


def troubleshoot_workflow_id(namespace: str, deployment: str) -> str:
    return f"troubleshoot-{namespace}-{deployment}"
