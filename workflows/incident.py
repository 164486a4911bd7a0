"""One incident, start to close: the parent of the rollbacks, migration
rollbacks and recoveries made for it (child workflows that outlive it, parent
close policy ABANDON), the runbook's follow-up deadlines as durable timers
(root cause in 24 h, postmortem in 48 h, prevention measures; a reminder at
half time, an escalation at the deadline, until recorded), and the human
confirmations a verified rollback waits for. It closes when every follow-up
is recorded, no change is running and every verified rollback is confirmed,
and returns the postmortem draft. Deterministic: workflow time only."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook import incident_notices, postmortem
    from runbook.catalog import ServiceEntry, Trust
    from runbook.decisions import Expected, GateView, judge, plan_digest
    from runbook.incident_models import (
        DEPLOYMENT_KINDS,
        WORKFLOW_KINDS,
        ChangeRecord,
        ChangeSignal,
        ChangeVerdict,
        Confirmation,
        ConfirmSignal,
        FollowUp,
        FollowUpSignal,
        FollowUpUpdate,
        IncidentRequest,
        IncidentResult,
        IncidentStatus,
        NoticeRecord,
    )
    from runbook.incident_policy import IncidentPolicy
    from runbook.models import (
        AuditEntry,
        RollbackResult,
        RollbackStatus,
        ServiceByName,
        ServiceLookup,
    )

    from . import search_attributes as sa
    from .approval import AuditTrail, send_notice

LOOKUP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
LOOKUP_BUDGET = timedelta(minutes=10)
FOLLOW_UP_SUMMARY = {
    "half_time": "{key}: reminder at half time, {at}",
    "deadline": "{key}: escalation at the deadline, {at}",
}


@workflow.defn(name="Incident")
class IncidentWorkflow:
    @workflow.init
    def __init__(self, request: IncidentRequest) -> None:
        self._request = request
        self._status = IncidentStatus(
            incident_id=workflow.info().workflow_id,
            service=request.service,
            namespace=request.namespace,
            opened_by=request.opened_by,
            reason=request.reason,
            language=request.language,
            detected_at=request.detected_at,
            opened_at=workflow.now(),
        )
        self._entry: ServiceEntry | None = None
        self._trust: Trust | None = None
        self._ready = False  # the catalog has answered: confirmations can be judged
        self._changes: list[ChangeSignal] = []
        self._requests: set[str] = set()  # request ids taken (an update and its fallback signal)
        self._verdicts: dict[str, ChangeVerdict] = {}
        self._confirms: list[ConfirmSignal] = []
        self._nonces: set[str] = set()
        self._seals: set[str] = set()  # release guard seals already used: each counts once
        self._following: list[asyncio.Task[None]] = []
        self._indexed = workflow.info().typed_search_attributes.get(sa.PHASE) is not None
        self._trail = AuditTrail(self._status.audit)
        self._audit, self._uncounted = self._trail.note, self._trail.uncounted
        self._audit(
            request.opened_by,
            "opened",
            detail=request.reason or f"incident for {request.namespace}/{request.service}",
        )

    # -- signals and queries -------------------------------------------------------------

    @workflow.signal(name="change")
    def change(self, signal: ChangeSignal) -> None:
        if self._taken(signal.request_id):
            return
        if self._status.state == "closed":
            self._refuse(signal, f"the incident is closed; {signal.workflow_id} was not started")
            return
        self._changes.append(signal)

    @workflow.update(name="start_change")
    async def start_change(self, signal: ChangeSignal) -> ChangeVerdict:
        """The CLI's start, sent with the incident's own start (update-with-start): the change
        is queued as the signal's is, and the answer says what became of it."""
        self.change(signal)
        await workflow.wait_condition(lambda: signal.request_id in self._verdicts)
        return self._verdicts[signal.request_id]

    @start_change.validator
    def _start_change_named(self, signal: ChangeSignal) -> None:
        self._require_new(signal.request_id)

    def _require_new(self, request_id: str) -> None:
        """An update's validator: refused before it reaches the history."""
        if not request_id:
            raise ValueError("a request sent as an update carries its request id")
        if request_id in self._requests:
            raise ValueError(f"request {request_id} was sent before")

    def _taken(self, request_id: str) -> bool:
        """True if this request id came before (an update, then its fallback signal): one
        request is handled once."""
        if not request_id:
            return False
        if request_id in self._requests:
            return True
        self._requests.add(request_id)
        return False

    async def _audited(self, request_id: str) -> AuditEntry:
        def entry() -> AuditEntry | None:
            return next(
                (e for e in reversed(self._status.audit) if e.request_id == request_id), None
            )

        await workflow.wait_condition(lambda: entry() is not None)
        found = entry()
        assert found is not None
        return found

    @workflow.signal(name="rca")
    def rca(self, signal: FollowUpSignal) -> None:
        self._record("rca", signal, need=("summary", "link"))

    @workflow.signal(name="postmortem")
    def postmortem(self, signal: FollowUpSignal) -> None:
        self._record("postmortem", signal, need=("link",))

    @workflow.signal(name="prevention")
    def prevention(self, signal: FollowUpSignal) -> None:
        self._record("prevention", signal, need=("summary",))

    @workflow.update(name="record_follow_up")
    async def record_follow_up(self, update: FollowUpUpdate) -> AuditEntry:
        """A follow-up, answered with its audit entry (counted or not, and why)."""
        {"rca": self.rca, "postmortem": self.postmortem, "prevention": self.prevention}[update.key](
            update.follow_up
        )
        return await self._audited(update.follow_up.request_id)

    @record_follow_up.validator
    def _follow_up_named(self, update: FollowUpUpdate) -> None:
        self._require_new(update.follow_up.request_id)

    @workflow.update(name="confirm_change")
    async def confirm_change(self, signal: ConfirmSignal) -> AuditEntry:
        """A confirmation, answered with its audit entry once judged (after the catalog has
        said whether it must be signed)."""
        self.confirm(signal)
        return await self._audited(signal.request_id)

    @confirm_change.validator
    def _confirmation_named(self, signal: ConfirmSignal) -> None:
        self._require_new(signal.request_id)

    @workflow.signal(name="confirm")
    def confirm(self, signal: ConfirmSignal) -> None:
        if self._taken(signal.request_id):
            return
        if self._ready:
            self._judge_confirmation(signal)
        else:
            self._confirms.append(
                signal
            )  # judged once the catalog says whether signatures are needed

    @workflow.query(name="status")
    def status(self) -> IncidentStatus:
        return self._status

    # -- the incident ----------------------------------------------------------------------

    @workflow.run
    async def run(self, request: IncidentRequest) -> IncidentResult:
        timers = asyncio.create_task(
            self._open(request)
        )  # changes start at once, whatever the catalog takes
        self._show()
        try:
            while True:
                await workflow.wait_condition(lambda: bool(self._changes) or self._settled())
                while self._changes:
                    await self._start(self._changes.pop(0))
                    self._show()
                if self._settled():
                    break
        finally:
            timers.cancel()
        self._status.state = "closed"
        self._status.closed_at = workflow.now()
        for late in self._changes:  # arrived as the incident settled: answered, not started
            self._refuse(late, f"the incident is closed; {late.workflow_id} was not started")
        self._changes.clear()
        if self._status.missing:
            self._status.message = (
                "closed: nothing was changed for this incident (every change was refused, "
                "rejected or a dry run)"
            )
        else:
            self._status.message = "closed: root cause, postmortem and prevention recorded"
            subject, text = incident_notices.closed_notice(
                request.language,
                incident_id=self._status.incident_id,
                service=request.service,
                closed_at=self._status.closed_at,
            )
            await self._notify("complete", subject, text)
        self._index("closed")
        await workflow.wait_condition(workflow.all_handlers_finished)
        other = "en" if request.language == "ja" else "ja"
        return IncidentResult(
            status=self._status,
            postmortem_draft=postmortem.render(self._status, request.language),
            postmortem_draft_other=postmortem.render(self._status, other),
        )

    def _settled(self) -> bool:
        if not self._ready:
            return False
        if not self._status.missing:
            return True
        return self._status.nothing_changed and not any(f.done_at for f in self._status.follow_ups)

    async def _open(self, request: IncidentRequest) -> None:
        """Catalog, then the follow-up deadlines and the confirmation reminders, until cancelled at
        close."""
        self._entry = await self._lookup(request)
        policy = self._entry.incident if self._entry is not None else IncidentPolicy()
        if (
            self._entry is not None
            and self._entry.trust is not None
            and self._entry.trust.identities
        ):
            self._trust = self._entry.trust
            self._status.signed = True
        detected = request.detected_at
        hours = {
            "rca": policy.rca_hours,
            "postmortem": policy.postmortem_hours,
            "prevention": policy.prevention_hours,
        }
        self._status.follow_ups = [
            FollowUp(key=key, due_at=detected + timedelta(hours=h)) for key, h in hours.items()
        ]
        self._ready = True
        for signal in self._confirms:
            self._judge_confirmation(signal)
        self._confirms.clear()
        self._show()
        timers = [asyncio.create_task(self._deadlines(f)) for f in self._status.follow_ups]
        timers.append(asyncio.create_task(self._confirmation_reminders(policy)))
        try:
            await asyncio.gather(*timers)
        finally:
            for timer in timers:
                timer.cancel()

    async def _lookup(self, request: IncidentRequest) -> ServiceEntry | None:
        """The service's catalog entry (by deployment, or by name); None (notices skipped, audited)
        when it has none."""
        ref, arg = (
            (refs.SERVICE, ServiceByName(name=request.service))
            if request.by_name
            else (
                refs.LOOKUP,
                ServiceLookup(namespace=request.namespace, deployment=request.service),
            )
        )
        try:
            entry: ServiceEntry = await workflow.execute_activity(
                ref.name,
                arg,
                result_type=ref.result,
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=LOOKUP_BUDGET,
                retry_policy=LOOKUP_RETRY,
                summary="look up the service catalog",
            )
            return entry
        except ActivityError as err:
            reason = getattr(err.cause, "message", None) or str(err)
        self._uncounted(
            "modoru",
            "catalog",
            f"no catalog entry, so no notices and unsigned confirmations: {reason}",
        )
        return None

    async def _start(self, signal: ChangeSignal) -> None:
        now = workflow.now()
        running = self._status.change(signal.workflow_id)
        if running is not None and running.running:
            if signal.notify_workflow:
                running.notify.append(signal.notify_workflow)
            self._answer(
                signal,
                "attached",
                f"{signal.workflow_id} is already running for this incident; attached",
            )
            return
        seal = str(getattr(signal.request, "guard_seal", "") or "")
        if seal and seal in self._seals:
            self._refuse(
                signal,
                f"{signal.workflow_id} was not started: the release guard's seal it carries was "
                "used before (a seal counts once)",
            )
            return
        if seal:
            self._seals.add(seal)
        record = ChangeRecord(
            workflow_id=signal.workflow_id,
            kind=signal.kind,
            requested_at=now,
            notify=[signal.notify_workflow] if signal.notify_workflow else [],
        )
        request = signal.request
        attributes = None
        if self._indexed and signal.search_attributes:
            severity = request.severity.value
            attributes = (
                sa.for_rollback(request.namespace, request.deployment, severity)
                if signal.kind in DEPLOYMENT_KINDS
                else sa.for_change(request.service, severity)
            )
        result_type = RollbackResult if signal.kind == "rollback" else dict
        try:
            handle = await workflow.start_child_workflow(
                WORKFLOW_KINDS[signal.kind],
                request,
                id=signal.workflow_id,
                result_type=result_type,
                # nothing a person needs ends with the incident
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=attributes,
                static_summary=signal.summary or None,
                static_details=(
                    signal.details + f"\n\nincident {self._status.incident_id}"
                ).strip(),
            )
        except WorkflowAlreadyStartedError:
            record.outcome, record.running = "attached", False
            record.detail = (
                f"{signal.workflow_id} was already running outside this incident; it is not "
                "followed here"
            )
            self._status.changes.append(record)
            self._answer(signal, "attached", record.detail)
            await self._tell(record, "change_ended")
            return
        self._status.changes.append(record)
        self._answer(
            signal,
            "started",
            f"started {signal.kind} {signal.workflow_id}",
            by=getattr(request, "requested_by", "modoru"),
        )
        self._following.append(asyncio.create_task(self._follow(handle, record)))
        await self._tell(record, "change_started")

    def _answer(
        self,
        signal: ChangeSignal,
        outcome: Literal["started", "attached"],
        detail: str,
        by: str = "modoru",
    ) -> None:
        self._audit(by, "change", counted=True, detail=detail, request_id=signal.request_id)
        self._verdicts[signal.request_id] = ChangeVerdict(
            outcome=outcome, workflow_id=signal.workflow_id, detail=detail
        )

    def _refuse(self, signal: ChangeSignal, reason: str) -> None:
        self._uncounted("modoru", "change", reason, signal.request_id)
        self._verdicts[signal.request_id] = ChangeVerdict(
            outcome="refused", workflow_id=signal.workflow_id, detail=reason
        )

    async def _follow(
        self,
        handle: workflow.ChildWorkflowHandle[Any, RollbackResult | dict[str, Any]],
        record: ChangeRecord,
    ) -> None:
        try:
            result = await handle
        except ChildWorkflowError as err:
            cause = err.cause
            record.phase, record.message = "failed", getattr(cause, "message", None) or str(err)
            record.error_type = str(getattr(cause, "type", "") or "")
            details = getattr(cause, "details", None) or ()
            if record.kind == "rollback" and details and isinstance(details[0], dict):
                with contextlib.suppress(ValueError):
                    record.rollback = RollbackStatus.model_validate(details[0])
        else:
            if isinstance(result, RollbackResult):
                record.rollback = result.status
                record.phase, record.message = result.status.phase.value, result.status.message
                verification = result.status.verification
                record.verified = (
                    result.status.phase.value == "completed"
                    and not result.no_op
                    and verification is not None
                    and verification.ok
                )
            else:
                final = result.get("status", {}) if isinstance(result, dict) else {}
                record.final = final
                record.phase, record.message = (
                    str(final.get("phase", "")),
                    str(final.get("message", "")),
                )
        record.running, record.ended_at = False, workflow.now()
        self._audit(
            "modoru",
            "change_ended",
            detail=f"{record.kind} {record.workflow_id}: {record.phase} {record.message}".strip(),
        )
        self._show()
        await self._tell(record, "change_ended")

    async def _tell(self, record: ChangeRecord, name: str) -> None:
        """Signal `change_started` / `change_ended` to the workflows that asked (a release guard
        following its rollback)."""
        for target in record.notify:
            try:
                await workflow.get_external_workflow_handle(target).signal(name, record)
            except (
                Exception
            ) as err:  # a guard that has ended no longer listens; nothing else depends on it
                self._audit(
                    "modoru", "notify_failed", detail=f"{name} to {target}: {type(err).__name__}"
                )

    # -- follow-ups and confirmations ----------------------------------------------------------

    def _record(self, key: str, signal: FollowUpSignal, need: tuple[str, ...]) -> None:
        if self._taken(signal.request_id):
            return
        action = key
        if self._status.state == "closed":
            self._uncounted(signal.by, action, "the incident is closed", signal.request_id)
            return
        if not any(getattr(signal, field).strip() for field in need):
            said = " or ".join(f"--{field}" for field in need)
            self._uncounted(signal.by, action, f"nothing recorded: give {said}", signal.request_id)
            return
        follow_up = next((f for f in self._status.follow_ups if f.key == key), None)
        if follow_up is None:  # before the catalog answered: the deadlines are set right after
            self._uncounted(
                signal.by,
                action,
                "the incident is still opening; send it again in a moment",
                signal.request_id,
            )
            return
        now = workflow.now()
        if key == "rca" and follow_up.started_at is None:
            follow_up.started_at = now
        follow_up.by, follow_up.summary, follow_up.link = (
            signal.by.strip(),
            signal.summary.strip(),
            signal.link.strip(),
        )
        late = follow_up.done_at is None and now > follow_up.due_at
        follow_up.done_at = follow_up.done_at or now
        self._audit(
            signal.by,
            action,
            counted=True,
            request_id=signal.request_id,
            detail=f"recorded{' after the deadline' if late else ''}: "
            f"{signal.summary.strip()} {signal.link.strip()}".strip(),
        )
        self._show()

    def _gate(self, target: str, item: str) -> GateView:
        info = workflow.info()
        plan = {"incident": self._status.incident_id, "target": target, "item": item}
        return GateView(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            gate=f"confirm.{item}",
            plan=plan,
            digest=plan_digest(plan),
            signed=self._trust is not None,
        )

    def _judge_confirmation(self, signal: ConfirmSignal) -> None:
        def refuse(reason: str, who: str = signal.by) -> None:
            self._uncounted(who, "confirm", reason, signal.request_id)

        rollbacks = [c for c in self._status.changes if c.kind == "rollback"]
        change = (
            self._status.change(signal.target)
            if signal.target
            else (rollbacks[-1] if rollbacks else None)
        )
        if change is None:
            return refuse(
                f"no change {signal.target} in this incident"
                if signal.target
                else "this incident has no rollback to confirm yet"
            )
        if change.kind != "rollback":
            return refuse(
                f"{change.workflow_id} is a {change.kind}: confirmations are for deployment "
                "rollbacks"
            )
        if not change.verified:
            state = "still running" if change.running else f"ended {change.phase or change.outcome}"
            return refuse(
                f"{change.workflow_id} is not verified ({state}): confirm once its automatic "
                "checks have passed"
            )
        who = signal.by.strip()
        if self._trust is not None:
            if signal.signed is None:
                return refuse(
                    "unsigned: this catalog counts only signed confirmations (modoru confirm --key)"
                )
            gate = self._gate(change.workflow_id, signal.item)
            verdict = judge(
                signal.signed,
                "approve",
                Expected(gate.workflow_id, gate.run_id, gate.gate, gate.digest),
                self._trust.identities,
                workflow.now(),
                self._nonces,
            )
            if verdict.payload is not None and verdict.signer:
                self._nonces.add(verdict.payload.nonce)
            if not verdict.counted:
                return refuse(verdict.reason, verdict.signer or who)
            who = verdict.signer
        done = next((c for c in change.confirmations if c.item == signal.item), None)
        if done is not None:
            return refuse(f"{signal.item} was already confirmed by {done.by}", who)
        change.confirmations.append(
            Confirmation(
                item=signal.item,
                by=who,
                at=workflow.now(),
                note=signal.note.strip(),
                link=signal.link.strip(),
            )
        )
        left = change.awaiting
        self._audit(
            who,
            "confirm",
            counted=True,
            request_id=signal.request_id,
            detail=f"{signal.item} for {change.workflow_id}"
            + (f"; awaiting {', '.join(left)}" if left else "; fully verified"),
        )
        self._show()

    async def _deadlines(self, follow_up: FollowUp) -> None:
        """A reminder at half time and an escalation at the deadline, unless recorded before."""
        half = follow_up.due_at - (follow_up.due_at - self._status.detected_at) / 2
        for point, at in (("half_time", half), ("deadline", follow_up.due_at)):
            delay = (at - workflow.now()).total_seconds()
            if delay > 0:
                try:
                    await workflow.wait_condition(
                        lambda: follow_up.done_at is not None,
                        timeout=delay,
                        timeout_summary=FOLLOW_UP_SUMMARY[point].format(
                            key=follow_up.key, at=at.isoformat(timespec="seconds")
                        ),
                    )
                    return
                except TimeoutError:
                    pass
            if follow_up.done_at is not None:
                return
            follow_up.reminders.append(point)
            self._audit(
                "modoru",
                "reminder" if point == "half_time" else "escalation",
                detail=f"{follow_up.key} due {follow_up.due_at.isoformat()}",
            )
            subject, text = incident_notices.follow_up_notice(
                self._request.language,
                point=point,
                key=follow_up.key,
                incident_id=self._status.incident_id,
                service=self._status.service,
                due_at=follow_up.due_at,
            )
            await self._notify("reminder" if point == "half_time" else "escalation", subject, text)

    async def _confirmation_reminders(self, policy: IncidentPolicy) -> None:
        """Every `confirmation_reminder_minutes`, remind of verified rollbacks still awaiting
        people."""

        def waiting() -> list[ChangeRecord]:
            return [
                c
                for c in self._status.changes
                if c.awaiting and c.reminders < policy.confirmation_reminders
            ]

        interval = timedelta(minutes=policy.confirmation_reminder_minutes)
        while True:
            await workflow.wait_condition(lambda: bool(waiting()))
            try:
                await workflow.wait_condition(
                    lambda: not waiting(),
                    timeout=interval,
                    timeout_summary=f"confirmation reminder every {interval}",
                )
                continue
            except TimeoutError:
                pass
            for change in waiting():
                change.reminders += 1
                subject, text = incident_notices.confirmation_reminder(
                    self._request.language,
                    incident_id=self._status.incident_id,
                    target=change.workflow_id,
                    service=self._status.service,
                    awaiting=change.awaiting,
                )
                await self._notify("reminder", subject, text)

    # -- helpers ---------------------------------------------------------------------------------

    async def _notify(self, kind: str, subject: str, text: str) -> None:
        """Failing channels are audited, never fatal."""
        record = NoticeRecord(at=workflow.now(), kind=kind, subject=subject)
        self._status.notices.append(record)
        if self._entry is None or not self._entry.channels:
            return
        record.delivered = await send_notice(self._entry.channels, kind, subject, text, self._trail)

    def _show(self) -> None:
        """Keep the pending gates, the message and the Web UI's details in step with the record."""
        self._status.confirm_gates = (
            [self._gate(c.workflow_id, item) for c in self._status.changes for item in c.awaiting]
            if self._ready
            else []
        )
        missing = self._status.missing
        self._status.message = (
            "waiting for: " + "; ".join(missing) if missing else "everything is in"
        )
        lines = [
            f"**incident {self._status.incident_id}** "
            f"({self._status.namespace}/{self._status.service})",
            "",
        ]
        lines += [
            f"- {c.kind} {c.workflow_id}: {'running' if c.running else c.phase or c.outcome}"
            + (
                f", awaiting {', '.join(c.awaiting)}"
                if c.awaiting
                else ", fully verified"
                if c.fully_verified
                else ""
            )
            for c in self._status.changes
        ]
        lines += [
            f"- {f.key}: "
            f"{'recorded' if f.done_at else 'due ' + f.due_at.isoformat(timespec='minutes')}"
            for f in self._status.follow_ups
        ]
        workflow.set_current_details("\n".join(lines))

    def _index(self, phase: str) -> None:
        if self._indexed:
            workflow.upsert_search_attributes([sa.PHASE.value_set(phase)])
