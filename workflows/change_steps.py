"""The lower layer of the shell every change workflow runs in (`change.py` adds
the approval desk, the gate and the escalations): the status built from the
request, activities called through typed references with the runbook's retry
budget, the service's catalog entry, notices to its channels, phases kept in
the status and indexed for the Web UI, the runbook's checklist, and failing
with a notice. Deterministic, like the workflows built on it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, NoReturn, Protocol, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook import notices
    from runbook.activity_refs import ActivityRef
    from runbook.catalog import ServiceEntry
    from runbook.cd_config import CdConfig, RegistryConfig
    from runbook.checklist import new_checklist
    from runbook.decisions import GateView
    from runbook.enums import Phase, Severity
    from runbook.models import (
        AuditEntry,
        DeploymentTarget,
        RolloutOutcome,
        RolloutWaitRequest,
        ServiceByName,
        ServiceLookup,
        VerifyRequest,
        VerifyResult,
    )
    from runbook.policy import sla_deadline
    from runbook.postchecks import PostChecks
    from runbook.verification import deadline_for

    from . import search_attributes as sa
    from .approval import ApprovalDesk, send_notice
    from .retries import SLA_RETRY, budget

# Verification's heartbeat timeout. It mostly sleeps until its data's minute is readable
# (a minute or two), beating every third of this (activities/verify.py): each beat that
# reaches the server is a billed action and a write of the run's state, so a 10-s timeout
# cost about 26 beats a verification; 60 s costs about 6. A killed worker's verification
# is retried from its last beat within a minute, well inside the runbook's deadlines.
VERIFY_HEARTBEAT_SECONDS = 60


class Stop(Exception):
    """Ends the run with the status as it stands (a refusal or a failure)."""


class ChangeStatus(Protocol):
    """What the shell reads and keeps in a change's status."""

    @property
    def workflow_id(self) -> str: ...
    @property
    def sla_deadline(self) -> datetime | None: ...

    phase: Phase
    message: str
    timings: dict[str, datetime]
    audit: list[AuditEntry]
    approvals: list[str]


class GatedChangeStatus(ChangeStatus, Protocol):
    """The status of a change with an approval gate (ChangeWorkflow's)."""

    approvals_required: int
    pending: GateView | None
    start_counted: bool


class EscalatingStatus(ChangeStatus, Protocol):
    """A status whose change escalates at half time and at the deadline."""

    sla_met: bool | None
    escalations: list[str]


class ChangeRequest(Protocol):
    """What the shell reads from a change's request."""

    @property
    def requested_by(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def severity(self) -> Severity: ...
    @property
    def language(self) -> Literal["ja", "en"]: ...


StatusT = TypeVar("StatusT", bound=ChangeStatus)
RequestT = TypeVar("RequestT", bound=ChangeRequest)
In = TypeVar("In")
Out = TypeVar("Out")


class ChangeSteps(ABC, Generic[RequestT, StatusT]):
    _status: StatusT
    _request: RequestT
    _entry: ServiceEntry | None
    _desk: ApprovalDesk  # the desk whose audit trail takes the notes
    _detected_at: datetime
    _start_verified: bool

    @property
    @abstractmethod
    def _target_label(self) -> str:
        """How notices name what is being changed (each workflow says)."""

    # -- the status ----------------------------------------------------------------------

    def _open(self, request: RequestT, status: StatusT, detected_at: datetime) -> None:
        """Keep the request and the status and open the desk (from `@workflow.init`)."""
        self._request, self._status, self._detected_at = request, status, detected_at
        self._entry = None
        self._start_verified = False
        self._desk = ApprovalDesk(request.requested_by, status.audit, status.approvals)

    def _begin(self, request: RequestT, status: type[StatusT], requested: str, **own: Any) -> None:
        """Open the change (from `@workflow.init`) with a `status` built from what every
        request carries, and where `status` keeps them, the Deployment or the service,
        the time the problem was seen (default: now) and the runbook's checklist; `own`
        are the status's own fields. `requested` goes to the audit trail; the
        checklist's first item takes the severity and the reason."""
        now = workflow.now()
        detected = getattr(request, "detected_at", None) or now
        fields = status.model_fields  # type: ignore[attr-defined]
        common: dict[str, Any] = {
            "workflow_id": workflow.info().workflow_id,
            "phase": Phase.PLANNING,
            "severity": request.severity,
            "requested_by": request.requested_by,
            "reason": request.reason,
            "timings": {"started": now},
        }
        if "sla_deadline" in fields:
            common["sla_deadline"] = sla_deadline(request.severity, detected)
        if "detected_at" in fields:
            common["detected_at"] = detected
        if "checklist" in fields:
            common["checklist"] = new_checklist(request.language)
        for name in ("namespace", "deployment", "service"):
            if name in fields and hasattr(request, name):
                common[name] = getattr(request, name)
        self._open(request, status(**common, **own), detected)
        self._desk.note(request.requested_by, "requested", detail=requested)
        self._check("decide", f"{request.severity.value}: {request.reason}")

    @property
    def _notes(self) -> ApprovalDesk:
        return self._desk

    def _check(self, key: str, evidence: str, *, done: bool = True) -> None:
        """Tick the runbook's checklist item `key` with its evidence (statuses without a
        checklist ignore it)."""
        for item in getattr(self._status, "checklist", []):
            if item.key == key:
                item.evidence = evidence
                item.done_at = workflow.now() if done else None

    # -- the steps -----------------------------------------------------------------------

    async def _look_up(self) -> ServiceEntry:
        """The service's catalog entry: by its Deployment, or by its name."""
        request: Any = self._request
        if isinstance(request, DeploymentTarget):
            return await self._call(
                refs.LOOKUP,
                ServiceLookup(namespace=request.namespace, deployment=request.deployment),
                "look up the service catalog",
            )
        return await self._call(
            refs.SERVICE, ServiceByName(name=request.service), "look up the service catalog"
        )

    async def _look_up_pipeline(self, why: str) -> tuple[ServiceEntry, CdConfig, RegistryConfig]:
        """The catalog entry of a Deployment changed through its CD pipeline, with the
        pipeline and the image registry; refused when the catalog names neither (`why`
        ends the refusal)."""
        entry = await self._look_up()
        if entry.cd is None or entry.registry is None:
            await self._refuse(
                f"refused: {self._target_label} has no "
                f"{'cd' if entry.cd is None else 'registry'} section in the catalog{why}"
            )
        return entry, entry.cd, entry.registry

    async def _await_rollout(self, entry: ServiceEntry, summary: str) -> RolloutOutcome:
        """`kubectl rollout status` of the service's Deployment."""
        self._set_phase(Phase.WAITING_ROLLOUT)
        return await self._call(
            refs.WAIT_ROLLOUT,
            RolloutWaitRequest.of(entry, timeout_seconds=entry.rollout_timeout_seconds),
            summary,
            timeout=entry.rollout_timeout_seconds + 60,
            heartbeat=10,
        )

    async def _check_health(
        self,
        entry: ServiceEntry,
        summary: str,
        *,
        metrics: bool = True,
        post_checks: PostChecks | None = None,
    ) -> VerifyResult:
        """Pods, health, readiness and the API path; with `metrics`, the recovery criteria
        read from Cloud Monitoring where the catalog configures it."""
        self._set_phase(Phase.VERIFYING)
        judged: dict[str, Any] = (
            {"monitoring": entry.monitoring, "recovery": entry.recovery} if metrics else {}
        )
        checking = VerifyRequest.of(
            entry,
            paths=entry.check_paths,
            window_seconds=entry.verification_window_seconds,
            deadline_seconds=deadline_for(
                entry,
                getattr(self._request, "severity", Severity.INVESTIGATE),
                metrics=metrics,
                post_checks=post_checks,
            ),
            post_checks=post_checks,
            **judged,
        )
        return await self._call(
            refs.VERIFY_SERVICE,
            checking,
            summary,
            timeout=(checking.deadline_seconds or checking.window_seconds) + 60,
            heartbeat=VERIFY_HEARTBEAT_SECONDS,
        )

    async def _refuse(self, message: str) -> NoReturn:
        """Fail before anything changed, saying why; ends the run."""
        await self._fail(message)
        raise Stop

    async def _call(
        self,
        ref: ActivityRef[In, Out],
        arg: In,
        summary: str,
        *,
        timeout: int = 60,
        heartbeat: int | None = None,
    ) -> Out:
        """Call the activity `ref` names, typed by it; retried as `_activity` says. A write
        (`ref.keepalive`) gets its heartbeat timeout, the worker beating for it."""
        return await self._activity(
            ref, arg, ref.result, summary, timeout=timeout, heartbeat=heartbeat or ref.keepalive
        )

    async def _activity(
        self,
        name: str | ActivityRef[In, Out],
        arg: object,
        result_type: type[Out],
        summary: str,
        *,
        timeout: int = 60,
        heartbeat: int | None = None,
    ) -> Out:
        """Transient errors are retried until the SLA deadline is near (workflows/retries.py)."""
        # Called by name, the activity's result is typed only by `result_type`.
        result: Out = await workflow.execute_activity(
            name.name if isinstance(name, ActivityRef) else name,
            arg,
            result_type=result_type,
            start_to_close_timeout=timedelta(seconds=timeout),
            schedule_to_close_timeout=budget(
                getattr(self._status, "sla_deadline", None),
                workflow.now(),
                at_least=timedelta(seconds=timeout),
            ),
            heartbeat_timeout=timedelta(seconds=heartbeat) if heartbeat else None,
            retry_policy=SLA_RETRY,
            summary=summary,
        )
        return result

    async def _notify(self, kind: str, subject: str, text: str) -> list[str]:
        """Send a notice to the service's channels; returns the channels that took it."""
        if self._entry is None:
            return []
        return await send_notice(self._entry.channels, kind, subject, text, self._notes)

    def _set_phase(self, phase: Phase) -> None:
        self._status.phase = phase
        self._status.timings[phase.value] = workflow.now()
        if (
            workflow.info().typed_search_attributes.get(sa.PHASE) is not None
        ):  # indexed by the starter
            self._index_phase(phase)

    def _index_phase(self, phase: Phase) -> None:
        """Keep the run's phase in its search attributes (a run its starter indexed)."""
        workflow.upsert_search_attributes([sa.PHASE.value_set(phase.value)])

    async def _fail(
        self, message: str, *, announce: bool = False, problems: list[str] | None = None
    ) -> None:
        self._status.message = message
        self._set_phase(Phase.FAILED)
        if announce:
            subject, text = notices.failure_notice(
                self._request.language,
                at=workflow.now(),
                deployment=self._target_label,
                error=message,
                problems=problems or [],
            )
            await self._notify("failure", subject, text)
