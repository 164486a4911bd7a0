"""The incident's updates on a time-skipping server of their own (the test server's
time skipping is not to be shared with a test that leaves updates refused): the CLI's
update-with-start and follow-up updates answer as data, and one request id is
handled once."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowUpdateFailedError

from runbook.incident_models import ChangeSignal, FollowUpSignal, FollowUpUpdate
from runbook.models import RollbackRequest, Severity
from tests.workflows.test_incident_workflow import open_incident, status, until, worker
from workflows.incident import IncidentWorkflow


async def test_updates_answer_as_data_and_one_request_is_handled_once(
    time_skipping_env, fake
) -> None:
    """The CLI's update-with-start and follow-up updates: the answer says started / refused,
    counted or not; a request id seen once (by update, then by its fallback signal) starts
    nothing more, and an update without one or sent again is refused before the history."""
    async with worker(time_skipping_env, fake):
        handle, rollback_id, detected = await open_incident(time_skipping_env, rollback=False)
        await until(handle, lambda s: len(s.follow_ups) == 3, "the follow-ups")
        change = ChangeSignal(
            kind="rollback",
            workflow_id=rollback_id,
            request_id="cli-1",
            rollback=RollbackRequest(
                deployment="tekutoko-api",
                severity=Severity.IMMEDIATE,
                reason="error rate 60%",
                requested_by="oncall",
                detected_at=detected,
            ),
        )
        verdict = await handle.execute_update(IncidentWorkflow.start_change, change)
        assert (verdict.outcome, verdict.workflow_id) == ("started", rollback_id)
        await handle.signal(IncidentWorkflow.change, change)  # the CLI's fallback, late
        for again in (change, change.model_copy(update={"request_id": ""})):
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update(IncidentWorkflow.start_change, again)
        empty = await handle.execute_update(
            IncidentWorkflow.record_follow_up,
            FollowUpUpdate(key="rca", follow_up=FollowUpSignal(by="oncall", request_id="rca-1")),
        )
        written = await handle.execute_update(
            IncidentWorkflow.record_follow_up,
            FollowUpUpdate(
                key="rca",
                follow_up=FollowUpSignal(by="oncall", summary="a bad index", request_id="rca-2"),
            ),
        )
        current = await status(handle)
        await handle.terminate("test over")
    assert empty.counted is False and "give --summary or --link" in empty.detail
    assert written.counted is True and "a bad index" in written.detail
    assert [c.workflow_id for c in current.changes] == [rollback_id]
    assert [e.request_id for e in current.audit].count("cli-1") == 1
    rca = next(f for f in current.follow_ups if f.key == "rca")
    assert rca.summary == "a bad index" and rca.done_at is not None
