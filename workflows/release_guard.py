"""The release guard: watch a fresh release against the runbook's decision
table and, on a breach, start the deployment rollback with the computed
severity and the evidence attached. One guard per deployment; it starts at
most one rollback, under the deployment's rollback id, so a rollback already
running is never doubled."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook.activity_refs import ActivityRef
    from runbook.catalog import ServiceEntry, Trust
    from runbook.decisions import Expected, GateView, has_role, judge, plan_digest
    from runbook.enums import Phase
    from runbook.guard_models import (
        BaselineRequest,
        GuardBaseline,
        GuardCarry,
        GuardPhase,
        GuardRequest,
        GuardResult,
        GuardStatus,
        StopSignal,
        WatchReport,
        WatchRequest,
    )
    from runbook.incident_models import ChangeRecord
    from runbook.models import RollbackRequest, RollbackResult, ServiceLookup
    from runbook.verification import NO_DATA_YET

    from . import search_attributes as sa
    from .deployment_rollback import rollback_workflow_id
    from .incident_join import INCIDENT_PARENT, join_incident

RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
)
POLLS_PER_WATCH = 20  # one watch activity covers this many polls, then reports in
In = TypeVar("In")
Out = TypeVar("Out")


@workflow.defn(name="ReleaseGuard")
class ReleaseGuardWorkflow:
    @workflow.init
    def __init__(self, request: GuardRequest) -> None:
        now = workflow.now()
        carry = request.carry
        self._request = request
        self._stop: StopSignal | None = None
        # The incident's word on the rollback it starts for this guard.
        self._change_started: ChangeRecord | None = None
        self._change_ended: ChangeRecord | None = None
        # Stops are judged once the catalog says whether they must be signed.
        self._inbox: list[StopSignal] | None = []
        self._trust: Trust | None = None
        self._stoppers: list[str] = []
        self._nonces: set[str] = set()
        self._indexed = workflow.info().typed_search_attributes.get(sa.PHASE) is not None
        self._status = GuardStatus(
            workflow_id=workflow.info().workflow_id,
            namespace=request.namespace,
            deployment=request.deployment,
            phase=GuardPhase.WATCHING if carry else GuardPhase.BASELINE,
            started_at=carry.started_at if carry else now,
            until=carry.until if carry else now + timedelta(seconds=request.duration_seconds),
            interval_seconds=request.interval_seconds,
            polls=carry.polls if carry else 0,
            runs=carry.runs if carry else 1,
            baseline=carry.baseline if carry else None,
        )

    @workflow.signal(name="stop")
    def stop(self, signal: StopSignal) -> None:
        if self._inbox is not None:
            self._inbox.append(signal)
        elif self._stop is None:
            self._judge_stop(signal)

    def _judge_stop(self, signal: StopSignal) -> None:
        """Without identities in the catalog any stop counts; with them, only one
        signed for this run by someone holding an approver or the on-call role."""
        trust, gate = self._trust, self._status.pending
        if trust is None or gate is None:
            self._stop = signal
            return
        if signal.signed is None:
            self._status.refused_stops.append(
                f"{signal.by}: unsigned (this catalog counts only signed stops: modoru guard stop "
                "--key)"
            )
            return
        verdict = judge(
            signal.signed,
            "stop",
            Expected(gate.workflow_id, gate.run_id, gate.gate, gate.digest),
            trust.identities,
            workflow.now(),
            self._nonces,
        )
        if verdict.payload is not None and verdict.signer:
            self._nonces.add(verdict.payload.nonce)
        if not verdict.counted:
            self._status.refused_stops.append(f"{verdict.signer or signal.by}: {verdict.reason}")
        elif not has_role(trust.identities, verdict.signer, [*self._stoppers, trust.oncall_role]):
            self._status.refused_stops.append(
                f"{verdict.signer}: holds neither an approver nor the {trust.oncall_role} role"
            )
        else:
            self._stop = signal.model_copy(
                update={
                    "by": verdict.signer,
                    "reason": verdict.payload.note if verdict.payload else signal.reason,
                }
            )

    def _open_stop_desk(self, entry: ServiceEntry) -> None:
        trust = entry.trust
        if trust is not None and trust.identities and workflow.patched("signed-decisions"):
            self._trust, self._stoppers = trust, list(entry.approval.approvers)
            info = workflow.info()
            plan = {
                "kind": "guard-stop",
                "namespace": self._request.namespace,
                "deployment": self._request.deployment,
            }
            self._status.pending = GateView(
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                gate="stop",
                plan=plan,
                digest=plan_digest(plan),
                signed=True,
            )
        inbox, self._inbox = self._inbox or [], None
        for signal in inbox:
            if self._stop is None:
                self._judge_stop(signal)

    @workflow.signal(name="change_started")
    def change_started(self, record: ChangeRecord) -> None:
        self._change_started = record

    @workflow.signal(name="change_ended")
    def change_ended(self, record: ChangeRecord) -> None:
        self._change_ended = record

    @workflow.query(name="status")
    def status(self) -> GuardStatus:
        return self._status

    @workflow.run
    async def run(self, request: GuardRequest) -> GuardResult:
        try:
            return await self._run(request)
        except ActivityError as err:
            # The guard cannot see (no such deployment, a bad metric query, no access):
            # fail loudly with the activity's words rather than watch blind.
            message = getattr(err.cause, "message", None) or str(err)
            self._set_phase(GuardPhase.FAILED)
            self._status.message = message
            raise ApplicationError(
                message, type=getattr(err.cause, "type", None) or "GuardFailed", non_retryable=True
            ) from err

    async def _run(self, request: GuardRequest) -> GuardResult:
        entry = await self._activity(
            refs.LOOKUP,
            ServiceLookup(namespace=request.namespace, deployment=request.deployment),
            "look up the service catalog",
        )
        self._open_stop_desk(entry)
        carry = request.carry or await self._baseline(entry)
        self._status.baseline = carry.baseline
        health_failures, confirming = carry.health_failures, carry.confirming_since
        polls_this_run = 0
        self._set_phase(GuardPhase.CONFIRMING if confirming else GuardPhase.WATCHING)
        while True:
            if self._stop is not None:
                return self._end(
                    GuardPhase.STOPPED,
                    f"stopped by {self._stop.by}"
                    + (f": {self._stop.reason}" if self._stop.reason else ""),
                )
            if workflow.now() >= self._status.until:
                return self._end(
                    GuardPhase.FINISHED,
                    f"no breach in {self._status.polls} polls; the release held up",
                )
            if (
                polls_this_run >= request.polls_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                workflow.continue_as_new(
                    request.model_copy(
                        update={
                            "carry": GuardCarry(
                                started_at=self._status.started_at,
                                until=self._status.until,
                                baseline=carry.baseline,
                                polls=self._status.polls,
                                runs=self._status.runs + 1,
                                health_failures=health_failures,
                                confirming_since=confirming,
                            )
                        }
                    )
                )
            report = await self._watch(
                entry,
                carry.baseline,
                health_failures,
                confirming,
                min(POLLS_PER_WATCH, request.polls_per_run - polls_this_run),
            )
            if report is None:
                continue  # stopped while watching
            polls_this_run += report.polls
            self._status.polls += report.polls
            self._status.last = report
            health_failures, confirming = report.health_failures, report.confirming_since
            if report.verdict.severity is not None and report.breach_at is not None:
                return await self._roll_back(report)
            if report.window_over:
                return self._end(
                    GuardPhase.FINISHED,
                    f"no breach in {self._status.polls} polls; the release held up",
                )
            self._set_phase(GuardPhase.CONFIRMING if confirming else GuardPhase.WATCHING)

    async def _baseline(self, entry: ServiceEntry) -> GuardCarry:
        asked = BaselineRequest.of(
            entry,
            monitoring=entry.monitoring,
            release_at=self._request.release_at,
            data_since=self._status.started_at,
        )
        while True:
            try:
                baseline: GuardBaseline = await self._activity(
                    refs.GUARD_BASELINE, asked, "record the pre-release baseline"
                )
                break
            except ActivityError as err:
                # No whole minute of the service's data exists yet (a guard started with the
                # service): wait for the first one to be readable, then read again. After that
                # moment, nothing matching is a configuration error, and fails.
                cause = err.cause
                if not (
                    isinstance(cause, ApplicationError)
                    and cause.type == NO_DATA_YET
                    and self._request.wait_for_data
                    and cause.details
                ):
                    raise
                readable = datetime.fromisoformat(str(cause.details[0]))
                self._status.message = (
                    f"{cause.message}; the guard waits for it, then records its baseline"
                )
                workflow.set_current_details(self._status.message)
                await workflow.sleep(
                    max(1.0, (readable - workflow.now()).total_seconds() + 1),
                    summary="wait for the first whole minute of the service's data",
                )
        self._status.message = ""
        if self._request.baseline_p95_ms is not None:
            baseline.p95_ms = self._request.baseline_p95_ms
        workflow.set_current_details(
            f"baseline: p95 {baseline.p95_ms} ms, error ratio {baseline.error_ratio}, revision "
            f"{baseline.revision}"
        )
        return GuardCarry(
            started_at=self._status.started_at, until=self._status.until, baseline=baseline
        )

    async def _watch(
        self,
        entry: ServiceEntry,
        baseline: GuardBaseline,
        health_failures: int,
        confirming: datetime | None,
        max_polls: int,
    ) -> WatchReport | None:
        interval = self._request.interval_seconds
        watch: workflow.ActivityHandle[WatchReport] = workflow.start_activity(
            refs.GUARD_WATCH.name,
            WatchRequest.guarding(
                entry,
                baseline,
                interval_seconds=interval,
                until=self._status.until,
                max_polls=max_polls,
                health_failures=health_failures,
                confirming_since=confirming,
            ),
            result_type=refs.GUARD_WATCH.result,
            start_to_close_timeout=timedelta(seconds=max_polls * (interval + 60)),
            heartbeat_timeout=timedelta(seconds=interval + 60),
            retry_policy=RETRY,
            summary=f"watch {self._request.deployment} every {interval:g}s",
            # On stop, end only once the watch has stopped polling: nothing keeps
            # probing a service nobody guards any more.
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        await self._until_done_or_stopped(watch)
        if not watch.done():
            watch.cancel()
            with contextlib.suppress(ActivityError, CancelledError, asyncio.CancelledError):
                await watch
            return None
        return watch.result()

    async def _roll_back(self, report: WatchReport) -> GuardResult:
        severity = report.verdict.severity
        assert severity is not None
        rollback_id = rollback_workflow_id(self._request.namespace, self._request.deployment)
        self._status.rollback_workflow_id, self._status.rollback_severity = (
            rollback_id,
            severity.value,
        )
        self._set_phase(GuardPhase.ROLLING_BACK)
        metrics = report.metrics
        evidence = [*report.verdict.reasons]
        if metrics is not None:
            evidence.append(
                f"window {metrics.window_start:%H:%M:%S}-{metrics.window_end:%H:%M:%S} UTC: "
                f"{metrics.requests} requests, {metrics.errors} errors, p95 "
                f"{metrics.p95_ms or 0:.0f} ms"
            )
        if self._status.baseline and self._status.baseline.p95_ms:
            evidence.append(
                f"baseline p95 {self._status.baseline.p95_ms:.0f} ms before the release"
            )
        evidence += [f"not measured: {m}" for m in report.verdict.missing]
        request = RollbackRequest(
            namespace=self._request.namespace,
            deployment=self._request.deployment,
            severity=severity,
            reason=f"release guard: {'; '.join(report.verdict.reasons)}"[:2000],
            impact="; ".join(report.verdict.reasons)[:2000],
            detected_at=report.breach_at,
            requested_by=self._request.requested_by,
            language=self._request.language,
            evidence=evidence,
            guard_seal=report.seal,
            guard_facts=report.sealed,
        )
        if workflow.patched(INCIDENT_PARENT):
            return await self._roll_back_in_incident(request, rollback_id, evidence)
        try:
            child = await workflow.start_child_workflow(
                "DeploymentRollback",
                request,
                id=rollback_id,
                result_type=RollbackResult,
                # a stopped guard must not stop a rollback
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=sa.for_rollback(
                    request.namespace, request.deployment, severity.value
                )
                if self._indexed
                else None,
                static_summary=f"{severity.value} rollback of "
                f"{request.namespace}/{request.deployment} (release guard)",
                static_details=request.reason,
            )
        except WorkflowAlreadyStartedError:
            return self._end(
                GuardPhase.STOPPED,
                f"a rollback is already running for deployment/{self._request.deployment} "
                f"({rollback_id}); the guard did not start another",
            )
        workflow.set_current_details(
            f"**{severity.value}** rollback {rollback_id}\n\n"
            + "\n".join(f"- {e}" for e in evidence)
        )
        await self._until_done_or_stopped(child)
        if not child.done():
            return self._end(
                GuardPhase.STOPPED,
                f"stopped by {self._stop.by if self._stop else 'modoru'}; rollback {rollback_id} "
                "carries on",
            )
        try:
            result: RollbackResult = child.result()
        except ChildWorkflowError as err:
            self._status.rollback_phase = Phase.FAILED.value
            return self._end(
                GuardPhase.ROLLBACK_FAILED,
                f"{severity.value} rollback {rollback_id} failed: "
                f"{getattr(err.cause, 'message', None) or err}",
            )
        self._status.rollback_phase = result.status.phase.value
        if result.status.phase is Phase.COMPLETED:
            return self._end(
                GuardPhase.ROLLED_BACK,
                f"{severity.value} rollback {rollback_id}: {result.status.message}",
            )
        return self._end(
            GuardPhase.ROLLBACK_FAILED,
            f"{severity.value} rollback {rollback_id} ended {result.status.phase.value}: "
            f"{result.status.message}",
        )

    async def _roll_back_in_incident(
        self, request: RollbackRequest, rollback_id: str, evidence: list[str]
    ) -> GuardResult:
        """The rollback as the child of the deployment's incident, which tells this guard when it
        ends."""
        severity = request.severity.value
        self._status.rollback_workflow_id = (
            None  # named once the incident has started it, so it can be followed at once
        )
        incident_id = await join_incident(
            request,
            rollback_id,
            indexed=self._indexed,
            summary=f"{severity} rollback of {request.namespace}/{request.deployment} (release "
            "guard)",
        )
        workflow.set_current_details(
            f"**{severity}** rollback {rollback_id} (incident {incident_id})\n\n"
            + "\n".join(f"- {e}" for e in evidence)
        )
        await self._until_done_or_stopped(
            asyncio.ensure_future(
                workflow.wait_condition(
                    lambda: (self._change_started or self._change_ended) is not None
                )
            )
        )
        if (self._change_started or self._change_ended) is not None:
            self._status.rollback_workflow_id = rollback_id
        await self._until_done_or_stopped(
            asyncio.ensure_future(workflow.wait_condition(lambda: self._change_ended is not None))
        )
        record = self._change_ended
        if record is None:
            return self._end(
                GuardPhase.STOPPED,
                f"stopped by {self._stop.by if self._stop else 'modoru'}; rollback {rollback_id} "
                f"carries on (incident {incident_id})",
            )
        if record.outcome == "attached":
            return self._end(
                GuardPhase.STOPPED,
                f"a rollback is already running for deployment/{self._request.deployment} "
                f"({rollback_id}); the guard did not start another",
            )
        self._status.rollback_phase = record.phase or Phase.FAILED.value
        if record.phase == Phase.COMPLETED.value:
            return self._end(
                GuardPhase.ROLLED_BACK,
                f"{severity} rollback {rollback_id}: {record.message} (incident {incident_id})",
            )
        return self._end(
            GuardPhase.ROLLBACK_FAILED,
            f"{severity} rollback {rollback_id} ended {record.phase}: {record.message} (incident "
            f"{incident_id})",
        )

    # -- helpers -------------------------------------------------------------------------

    async def _until_done_or_stopped(self, task: asyncio.Future[Any]) -> None:
        stopped = asyncio.ensure_future(workflow.wait_condition(lambda: self._stop is not None))
        await workflow.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()

    async def _activity(self, ref: ActivityRef[In, Out], arg: In, summary: str) -> Out:
        # The guard changes nothing itself and has no SLA deadline: a fixed, bounded retry.
        result: Out = await workflow.execute_activity(
            ref.name,
            arg,
            result_type=ref.result,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RETRY,
            summary=summary,
        )
        return result

    def _set_phase(self, phase: GuardPhase) -> None:
        if self._status.phase != phase:
            self._status.phase = phase
            if self._indexed:
                workflow.upsert_search_attributes([sa.PHASE.value_set(phase.value)])

    def _end(self, phase: GuardPhase, message: str) -> GuardResult:
        self._set_phase(phase)
        self._status.message = message
        return GuardResult(status=self._status)


def guard_workflow_id(namespace: str, deployment: str) -> str:
    return f"guard-{namespace}-{deployment}"
