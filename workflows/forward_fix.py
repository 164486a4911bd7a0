"""The runbook's forward fix (フォワードフィックス) as a durable workflow, for
when rolling back is impossible (an irreversible schema change, a refused
migration rollback): read every pod's recent log and group the errors,
announce, wait for people to record a hotfix verified on staging (reminding
the channels while they build it), deploy it through the CD pipeline exactly
as a redeploy (a child workflow: modoru's approvals, the pipeline's own review
in GitHub, rollout, verification), then watch the error rate with the release
guard's thresholds before announcing recovery."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook import forward_fix_notices as says
    from runbook.catalog import ServiceEntry
    from runbook.cd_models import RedeployRequest, RedeployResult
    from runbook.enums import Phase
    from runbook.forward_fix_models import (
        ForwardFixRequest,
        ForwardFixResult,
        ForwardFixStatus,
        Hotfix,
        ServiceLogs,
        ServiceLogsRequest,
    )
    from runbook.guard_models import BaselineRequest, GuardBaseline, WatchReport, WatchRequest
    from runbook.log_groups import error_groups
    from runbook.verification import worst_wait_seconds

    from .change import ChangeSteps, Stop
    from .redeploy import RedeployWorkflow
    from .retries import failure_message, failure_type

WATCH_INTERVAL_SECONDS = 30.0


@workflow.defn(name="ForwardFix")
class ForwardFixWorkflow(ChangeSteps[ForwardFixRequest, ForwardFixStatus]):
    @workflow.init
    def __init__(self, request: ForwardFixRequest) -> None:
        self._begin(request, ForwardFixStatus, f"forward fix: {request.reason}")
        if request.hotfix is not None:
            self._record(request.hotfix)

    @property
    def _target_label(self) -> str:
        return f"deployment/{self._request.deployment}"

    @workflow.signal(name="hotfix")
    def hotfix(self, hotfix: Hotfix) -> None:
        if self._status.hotfix is not None:
            self._desk.note(
                hotfix.by,
                "hotfix_ignored",
                counted=False,
                detail=f"{hotfix.tag}: hotfix {self._status.hotfix.tag} was recorded first",
            )
            return
        self._record(hotfix)

    @workflow.query(name="status")
    def status(self) -> ForwardFixStatus:
        return self._status

    def _record(self, hotfix: Hotfix) -> None:
        self._status.hotfix = hotfix
        self._status.timings["hotfix_recorded"] = workflow.now()
        detail = f"branch {hotfix.branch}, tag {hotfix.tag}, verified on staging" + (
            f": {hotfix.link}" if hotfix.link else ""
        )
        self._desk.note(
            hotfix.by, "hotfix", detail=detail + (f" ({hotfix.note})" if hotfix.note else "")
        )

    @workflow.run
    async def run(self, request: ForwardFixRequest) -> ForwardFixResult:
        try:
            return await self._run(request)
        except ActivityError as err:
            await self._give_up(failure_message(err))
            raise ApplicationError(
                self._status.message, type=failure_type(err, "ForwardFixFailed"), non_retryable=True
            ) from err
        except Stop:
            raise ApplicationError(
                self._status.message, type="ForwardFixFailed", non_retryable=True
            ) from None
        finally:
            if workflow.in_workflow():  # not when evicted from the worker's cache (see change.py)
                self._status.timings["finished"] = workflow.now()

    async def _run(self, request: ForwardFixRequest) -> ForwardFixResult:
        entry, cd, _ = await self._look_up_pipeline(
            "; a forward fix deploys its hotfix through the CD pipeline"
        )
        self._entry = entry

        logs: ServiceLogs = await self._call(
            refs.SERVICE_LOGS,
            ServiceLogsRequest(
                namespace=request.namespace,
                deployment=request.deployment,
                container=cd.container,
            ),
            f"kubectl logs -l <selector of {request.deployment}> --tail=200",
            heartbeat=30,
        )
        self._status.pods_read, self._status.unreadable, self._status.lines_read = (
            logs.pods,
            logs.unreadable,
            len(logs.lines),
        )
        self._status.errors = error_groups(logs.lines)
        top = self._status.errors[0].signature if self._status.errors else "no error lines"
        self._desk.note(
            "modoru",
            "logs",
            detail=f"{len(logs.lines)} lines from {len(logs.pods)} pod(s); "
            f"{len(self._status.errors)} error group(s); most frequent: {top}",
        )
        self._status.normal = await self._reading(
            entry, at=self._status.detected_at, summary="the metrics before the incident"
        )
        self._status.at_start = await self._reading(entry, at=None, summary="the metrics now")
        subject, text = says.start(
            request.language,
            deployment=self._target_label,
            detected_at=self._status.detected_at,
            reason=request.reason,
            errors=self._status.errors,
            error_ratio=self._status.at_start.error_ratio,
        )
        await self._notify("start", subject, text)

        hotfix = await self._wait_for_hotfix(request)
        self._set_phase(Phase.EXECUTING)
        child_id = f"{workflow.info().workflow_id}-deploy"
        self._status.deploy_workflow_id = child_id
        workflow.set_current_details(
            f"**{request.deployment}**: deploying hotfix **{hotfix.tag}** (branch "
            f"{hotfix.branch}) through "
            f"{cd.workflow_name}; approve it in modoru as `{child_id}`"
        )
        try:
            deployed: RedeployResult = await workflow.execute_child_workflow(
                RedeployWorkflow.run,
                RedeployRequest(
                    namespace=request.namespace,
                    deployment=request.deployment,
                    tag=hotfix.tag,
                    severity=request.severity,
                    reason=f"forward fix ({hotfix.branch}): {request.reason}"[:2000],
                    requested_by=hotfix.by,
                    detected_at=self._status.detected_at,
                    language=request.language,
                ),
                id=child_id,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"hotfix {hotfix.tag} for {request.deployment}",
            )
        except ChildWorkflowError as err:
            cause = (
                err.cause.message
                if err.cause is not None and hasattr(err.cause, "message")
                else str(err)
            )
            await self._give_up(f"the hotfix deploy {child_id} did not complete: {cause}")
            raise Stop from None
        self._status.deploy_message = deployed.status.message
        self._desk.note("modoru", "deployed", detail=deployed.status.message)

        report = await self._watch(entry, request)
        self._status.watch = report
        after = report.evidence.error_ratio
        if report.verdict.severity is not None:
            await self._give_up(
                f"hotfix {hotfix.tag} is live but the error rate has not fallen: "
                f"{'; '.join(report.verdict.reasons)}"
            )
            raise Stop
        self._status.timings["recovered"] = workflow.now()
        subject, text = says.recovered(
            request.language,
            deployment=self._target_label,
            at=workflow.now(),
            tag=hotfix.tag,
            branch=hotfix.branch,
            before=self._status.at_start.error_ratio,
            after=after,
        )
        await self._notify("complete", subject, text)
        measured = "not measured (no metrics configured)" if after is None else f"{after:.1%}"
        at_start = self._status.at_start.error_ratio
        self._status.message = (
            f"hotfix {hotfix.tag} deployed ({deployed.status.message}); error ratio "
            f"{'n/a' if at_start is None else f'{at_start:.1%}'} "
            f"→ {measured} "
            f"watched {report.polls} time(s) under the guard's thresholds"
        )
        self._set_phase(Phase.COMPLETED)
        return ForwardFixResult(status=self._status, recovered=True)

    async def _reading(
        self, entry: ServiceEntry, *, at: datetime | None, summary: str
    ) -> GuardBaseline:
        return await self._call(
            refs.GUARD_BASELINE,
            BaselineRequest.of(entry, monitoring=entry.monitoring, release_at=at),
            summary,
        )

    async def _wait_for_hotfix(self, request: ForwardFixRequest) -> Hotfix:
        """Durable: reminders at the request's interval until the hotfix is recorded or the wait is
        over."""
        self._set_phase(Phase.AWAITING_HOTFIX)
        give_up = workflow.now() + timedelta(hours=request.hotfix_wait_hours)
        every = timedelta(minutes=request.reminder_minutes)
        while self._status.hotfix is None:
            workflow.set_current_details(
                f"**{request.deployment}**: waiting for a hotfix verified on staging: "
                f"`modoru forward-fix hotfix {self._status.workflow_id} --branch ... --tag ... "
                "--staging-verified --by ...`"
            )
            left = give_up - workflow.now()
            if left <= timedelta(0):
                await self._give_up(
                    f"no hotfix was recorded within {request.hotfix_wait_hours:g} h"
                )
                raise Stop
            try:
                await workflow.wait_condition(
                    lambda: self._status.hotfix is not None,
                    timeout=min(every, left),
                    timeout_summary="forward fix: remind the channels that a hotfix is awaited",
                )
            except TimeoutError:
                if workflow.now() < give_up:
                    self._status.reminders += 1
                    subject, text = says.waiting(
                        request.language,
                        deployment=self._target_label,
                        since=self._status.timings["started"],
                        workflow_id=self._status.workflow_id,
                    )
                    await self._notify("reminder", subject, text)
        assert self._status.hotfix is not None
        return self._status.hotfix

    async def _watch(self, entry: ServiceEntry, request: ForwardFixRequest) -> WatchReport:
        """The release guard's watch over the recovery windows: it ends early on a breach."""
        self._set_phase(Phase.VERIFYING)
        # Only minutes that began after the hotfix's rollout count: the newest readable ones
        # are still the broken release's. By default the watch also waits for the first of
        # them to be readable (up to two minutes plus the ingestion delay).
        delay = entry.monitoring.source().ingestion_delay_seconds if entry.monitoring.preset else 0
        watch = request.watch_seconds or int(
            request.recovery_windows * entry.monitoring.window_seconds + worst_wait_seconds(delay)
        )
        interval = min(WATCH_INTERVAL_SECONDS, watch / 3)
        max_polls = int(watch / interval) + 2
        baseline = self._status.normal or GuardBaseline()
        report: WatchReport = await workflow.execute_activity(
            refs.GUARD_WATCH.name,
            WatchRequest.guarding(
                entry,
                baseline,
                interval_seconds=interval,
                until=workflow.now() + timedelta(seconds=watch),
                max_polls=max_polls,
                since=workflow.now(),
            ),
            result_type=WatchReport,
            start_to_close_timeout=timedelta(seconds=max_polls * (interval + 60)),
            heartbeat_timeout=timedelta(seconds=interval + 60),
            summary=f"watch the error rate for {watch} s with the guard's thresholds",
        )
        return report

    async def _give_up(self, message: str) -> None:
        self._status.message = message
        self._set_phase(Phase.FAILED)
        subject, text = says.failed(
            self._request.language, deployment=self._target_label, at=workflow.now(), error=message
        )
        await self._notify("failure", subject, text)


def forward_fix_workflow_id(namespace: str, deployment: str) -> str:
    return f"forward-fix-{namespace}-{deployment}"
