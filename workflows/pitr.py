"""The runbook's point-in-time recovery for serious data corruption: check the
restore point against the recovery window, clone the instance to that time as
a new instance, verify the clone (psql in a short-lived pod whose Auth Proxy
names it), and, after a second approval, switch the app to it by the instance
connection name its Auth Proxy sidecar is given. If the app does not come back
healthy it is switched back. The source instance is evidence: it is only ever
read."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook import notices
    from runbook.catalog import ServiceEntry
    from runbook.enums import Phase
    from runbook.pitr_models import (
        CloneQueriesRequest,
        CloneRequest,
        InstanceInfo,
        InstanceRef,
        PitrCheckRequest,
        PitrRequest,
        PitrResult,
        PitrStatus,
        ProxySwitch,
        clone_name,
    )
    from runbook.plans import clone_plan, switch_plan

    from .approval import ApprovalDesk
    from .change import ChangeWorkflow, Stop


@workflow.defn(name="PointInTimeRecovery")
class PointInTimeRecoveryWorkflow(ChangeWorkflow[PitrRequest, PitrStatus]):
    KIND = "Recovery"
    ESCALATE = (
        False  # a recovery takes as long as the clone does; its notices say when to expect it
    )

    @workflow.init
    def __init__(self, request: PitrRequest) -> None:
        self._source_connection = ""
        self._begin(
            request,
            PitrStatus,
            f"recover to {request.point_in_time.isoformat()}: {request.reason}",
            point_in_time=request.point_in_time,
        )
        self._switch_desk = ApprovalDesk(
            request.requested_by, self._status.audit, self._status.switch_approvals
        )
        self._switch_desk.open = False

    @property
    def _clone_desk(self) -> ApprovalDesk:
        return self._desk

    def _desks(self) -> list[ApprovalDesk]:
        return [self._desk, self._switch_desk]

    def _current_desk(self) -> ApprovalDesk:
        return self._switch_desk if self._status.gate == "switch" else self._desk

    @property
    def _target_label(self) -> str:
        return f"{self._request.service} (point-in-time recovery)"

    @workflow.query(name="status")
    def status(self) -> PitrStatus:
        return self._status

    @workflow.run
    async def run(self, request: PitrRequest) -> PitrResult:
        return await self._carry_out(self._run(request))

    async def _run(self, request: PitrRequest) -> PitrResult:
        entry = await self._look_up()
        if entry.pitr is None:
            await self._refuse(
                f"service {request.service!r} has no pitr settings in the catalog (pitr: "
                "cloudsql_instance, secret, ...)"
            )
        config = entry.pitr
        self._adopt(entry)
        self._switch_desk.requester_id = self._clone_desk.requester_id
        source = config.cloudsql_instance
        clone = request.new_instance or clone_name(source, request.point_in_time)
        self._status.source, self._status.clone = source, clone

        recovery = {  # what is cloned, to what time, as which new instance
            "project": config.cloudsql_project,
            "source": source,
            "destination": clone,
            "point_in_time": request.point_in_time,
        }
        check = await self._call(
            refs.PITR_CHECK,
            PitrCheckRequest(**recovery),
            "check the restore point and the destination",
        )
        self._status.window, self._status.backups = (check.earliest, check.latest), check.backups
        self._source_connection = check.source_connection_name
        if check.problems:
            await self._refuse("refused before anything was created: " + "; ".join(check.problems))
        workflow.set_current_details(
            f"**{source}** → **{clone}** at {request.point_in_time.isoformat()}"
        )
        if request.dry_run:
            self._status.message = (
                f"dry run: would clone {source} to {request.point_in_time.isoformat()} as {clone}"
            )
            self._set_phase(Phase.COMPLETED)
            return PitrResult(status=self._status, no_op=True)

        shown = clone_plan(request.service, source, clone, request.point_in_time, request.checks)
        if not await self._pitr_gate(
            "clone",
            self._clone_desk,
            config.approvals,
            f"clone {source} to {request.point_in_time.isoformat()} as {clone}",
            shown,
        ):
            return PitrResult(status=self._status)
        await self._announce_start(
            f"point-in-time recovery of {source} to {request.point_in_time.isoformat()} as {clone}",
            cause="data corruption",
            expected=workflow.now() + timedelta(minutes=config.clone_timeout_minutes),
        )
        operation = await self._call(
            refs.START_CLONE,
            CloneRequest(**recovery, grant=self._clone_desk.grant(request)),
            f"clone {source} as {clone}",
        )
        self._status.operation = operation.name
        await workflow.execute_activity(
            refs.OPERATION_DONE.name,
            operation,
            result_type=refs.OPERATION_DONE.result,
            summary=f"wait for the clone operation {operation.name}",
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=timedelta(minutes=config.clone_timeout_minutes),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=config.operation_poll_seconds),
                backoff_coefficient=1.0,
                non_retryable_error_types=["OperationFailed"],
            ),
        )
        info: InstanceInfo = await self._call(
            refs.INSTANCE,
            InstanceRef(project=config.cloudsql_project, name=clone),
            f"read {clone}'s address",
        )
        self._status.clone_info = info

        self._set_phase(Phase.VERIFYING)
        assert entry.database is not None  # the catalog requires it with pitr
        if request.checks:
            self._status.checks = await self._call(
                refs.CLONE_QUERIES,
                CloneQueriesRequest.of(
                    entry,
                    access=entry.database,
                    source_connection_name=self._source_connection,
                    clone_connection_name=info.connection_name,
                    checks=request.checks,
                    grant=self._clone_desk.grant(request),
                ),
                f"verify {clone} in a check pod",
                timeout=entry.database.check_pod_timeout_seconds + 60 * len(request.checks) + 60,
                heartbeat=30,
            )
        failing = [c for c in self._status.checks if not c.ok]
        if failing:
            await self._fail(
                f"the clone {clone} failed verification: "
                + "; ".join(f"{c.name}: {c.detail}" for c in failing)
                + f"; nothing was switched, {clone} is kept for inspection",
                announce=True,
            )
            raise Stop
        shown = switch_plan(
            request.service,
            entry.deployment,
            self._source_connection,
            info.connection_name,
            self._status.checks,
        )
        if not await self._pitr_gate(
            "switch",
            self._switch_desk,
            config.approvals,
            f"switch {request.service} from {source} to {clone}",
            shown,
        ):
            return PitrResult(status=self._status)
        return await self._switch(entry, info)

    async def _switch(self, entry: ServiceEntry, info: InstanceInfo) -> PitrResult:
        self._set_phase(Phase.EXECUTING)
        await self._point(entry, self._source_connection, info.connection_name)
        self._status.switched = info.connection_name
        healthy, detail = await self._roll_out_and_check(entry, "after the switch")
        if healthy:
            self._status.timings["mitigated"] = workflow.now()
            subject, text = notices.pitr_complete_notice(
                self._request.language,
                done_at=workflow.now(),
                service=self._request.service,
                source=self._status.source,
                clone=info.name,
                point_in_time=self._request.point_in_time,
            )
            await self._notify("complete", subject, text)
            self._status.message = (
                f"{self._request.service} now uses {info.name} "
                f"({self._request.point_in_time.isoformat()}); {self._status.source} is kept "
                "untouched as evidence"
            )
            self._set_phase(Phase.COMPLETED)
            return PitrResult(status=self._status)
        await self._point(entry, info.connection_name, self._source_connection)
        self._status.switched, self._status.switched_back = "", True
        back, back_detail = await self._roll_out_and_check(entry, "after switching back")
        await self._fail(
            f"{self._request.service} was not healthy on {info.name} ({detail}); switched back to "
            f"{self._status.source}"
            + ("" if back else f", which is not healthy either ({back_detail})")
            + f"; {info.name} is kept for inspection",
            announce=True,
        )
        raise Stop

    async def _point(self, entry: ServiceEntry, source: str, target: str) -> None:
        assert entry.database is not None
        switched = await self._call(
            refs.SWITCH_PROXY,
            ProxySwitch.of(
                entry,
                proxy_container=entry.database.proxy_container,
                from_connection_name=source,
                to_connection_name=target,
                grant=self._switch_desk.grant(self._request),
            ),
            f"point {entry.deployment}'s Cloud SQL proxy at {target}",
        )
        self._clone_desk.note(
            "modoru",
            "switch",
            detail=f"deployment/{entry.deployment} {switched.container}: {source} → {target}"
            + ("" if switched.changed else " (already so)"),
        )

    async def _roll_out_and_check(self, entry: ServiceEntry, when: str) -> tuple[bool, str]:
        try:
            await self._await_rollout(entry, f"wait for the rollout {when}")
        except ActivityError as err:
            return False, getattr(err.cause, "message", None) or str(err)
        result = await self._check_health(entry, f"health {when}", metrics=False)
        self._status.health = result.checks
        failing = "; ".join(f"{c.name}: {c.detail}" for c in result.checks if not c.ok)
        return result.ok, failing or "healthy"

    async def _pitr_gate(
        self, gate: str, desk: ApprovalDesk, needed: int, what: str, plan: dict[str, object]
    ) -> bool:
        self._status.gate = gate  # type: ignore[assignment]
        kept = (
            f"; {self._status.clone} is kept, the app was not switched"
            if gate == "switch"
            else "; nothing was created"
        )
        return await self._gate(
            desk,
            gate,
            self._approvals_needed(desk, needed),
            plan,
            what=f"{self._request.service}: {what}",
            kept=kept,
        )


def pitr_workflow_id(service: str) -> str:
    return f"pitr-{service}"
