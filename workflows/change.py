"""Steps the change workflows (migration rollback, point-in-time recovery)
share: activities with one retry policy, notices to the service's channels,
phases kept in the status and indexed for the Web UI, and failing with a
notice. Deterministic, like the workflows that mix it in."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from runbook import notices
    from runbook.catalog import ServiceEntry
    from runbook.models import Phase

    from . import search_attributes as sa
    from .approval import ApprovalDesk, send_notice
    from .retries import SLA_RETRY, budget


class ChangeSteps:
    _status: Any  # a status with phase, timings and message
    _request: Any  # a request with service and language
    _entry: ServiceEntry | None
    _target_label: str  # how notices name what is being changed
    _notes: ApprovalDesk  # the desk whose audit trail takes the notes

    async def _activity(self, name: str, arg, result_type, summary: str, *, timeout: int = 60, heartbeat: int | None = None):
        """Transient errors are retried until the SLA deadline is near (workflows/retries.py)."""
        return await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=timedelta(seconds=timeout),
            schedule_to_close_timeout=budget(getattr(self._status, "sla_deadline", None), workflow.now(), at_least=timedelta(seconds=timeout)),
            heartbeat_timeout=timedelta(seconds=heartbeat) if heartbeat else None, retry_policy=SLA_RETRY, summary=summary,
        )

    async def _notify(self, kind: str, subject: str, text: str) -> None:
        if self._entry is not None:
            await send_notice(self._entry.channels, kind, subject, text, self._notes)

    def _set_phase(self, phase: Phase) -> None:
        self._status.phase = phase
        self._status.timings[phase.value] = workflow.now()
        if workflow.info().typed_search_attributes.get(sa.PHASE) is not None:  # indexed by the starter
            workflow.upsert_search_attributes([sa.PHASE.value_set(phase.value)])

    async def _fail(self, message: str, *, announce: bool = False) -> None:
        self._status.message = message
        self._set_phase(Phase.FAILED)
        if announce:
            subject, text = notices.failure_notice(self._request.language, at=workflow.now(), deployment=self._target_label, error=message, problems=[])
            await self._notify("failure", subject, text)
