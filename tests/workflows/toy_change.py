"""A toy change workflow with only its own steps (look up, gate, act), for the
shell's tests. Its own module, so the workflow sandbox imports it cleanly."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook.decisions import GateView
    from runbook.migration_models import ExecRequest
    from runbook.models import AuditEntry, Phase, ServiceByName, Severity
    from workflows.change import ChangeWorkflow, Stop


class ToyRequest(BaseModel):
    service: str = "tekutoko-api"
    requested_by: str = "oncall"
    severity: Severity = Severity.INVESTIGATE
    language: Literal["ja", "en"] = "en"
    refuse: bool = False
    break_after_change: bool = False


class ToyStatus(BaseModel):
    workflow_id: str
    phase: Phase = Phase.PLANNING
    message: str = ""
    sla_deadline: dt.datetime | None = None
    sla_met: bool | None = None
    escalations: list[str] = Field(default_factory=list)
    timings: dict[str, dt.datetime] = Field(default_factory=dict)
    audit: list[AuditEntry] = Field(default_factory=list)
    approvals: list[str] = Field(default_factory=list)
    approvals_required: int = 0
    pending: GateView | None = None


@workflow.defn(name="ToyChange")
class ToyChange(ChangeWorkflow[ToyRequest, ToyStatus]):
    """Everything below is the toy's own: the shell does the rest."""

    KIND = "Toy"

    @workflow.init
    def __init__(self, request: ToyRequest) -> None:
        now = workflow.now()
        self._open(
            request,
            ToyStatus(
                workflow_id=workflow.info().workflow_id,
                sla_deadline=now + dt.timedelta(minutes=15),
                timings={"started": now},
            ),
            now,
        )

    @property
    def _target_label(self) -> str:
        return f"{self._request.service} (toy)"

    @workflow.query(name="status")
    def status(self) -> ToyStatus:
        return self._status

    @workflow.run
    async def run(self, request: ToyRequest) -> ToyStatus:
        return await self._carry_out(self._run(request))

    async def _run(self, request: ToyRequest) -> ToyStatus:
        self._entry = await self._call(
            refs.SERVICE, ServiceByName(name=request.service), "look up the service catalog"
        )
        self._desk.set_policy(self._entry.approval, self._entry.trust)
        if request.refuse:
            await self._fail("refused before any change: the toy says no")
            raise Stop
        if not await self._gate(
            self._desk,
            "approval",
            1,
            {"kind": "toy", "service": request.service},
            what=self._target_label,
        ):
            return self._status
        self._set_phase(Phase.EXECUTING)
        if request.break_after_change:
            await self._call(
                refs.EXEC, ExecRequest(service=request.service, action="version"), "break"
            )
        self._status.timings["mitigated"] = workflow.now()
        self._status.message = "done"
        self._set_phase(Phase.COMPLETED)
        return self._status
