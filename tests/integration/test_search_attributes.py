"""A rollback its starter indexed keeps its search attributes up to date for the
Web UI and `modoru list`, upserting only what changes: every upsert is a billed
action, so "planning" (the starter's value) is not written again and the SLA goes
with the phase the run ends in."""

from __future__ import annotations

import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.worker import Worker

from runbook.models import Phase, RollbackRequest, Severity
from tests.workflows.conftest import FakeCluster
from worker.main import WORKFLOW_RUNNER
from workflows import search_attributes as sa
from workflows.deployment_rollback import DeploymentRollbackWorkflow

pytestmark = pytest.mark.integration


async def test_an_indexed_rollback_upserts_each_new_phase_once_and_ends_completed_and_met(
    dev_env,
) -> None:
    queue = f"indexed-{uuid.uuid4().hex[:6]}"
    async with Worker(
        dev_env.client,
        task_queue=queue,
        workflows=[DeploymentRollbackWorkflow],
        activities=FakeCluster().activities(),
        workflow_runner=WORKFLOW_RUNNER,
    ):
        handle = await dev_env.client.start_workflow(
            DeploymentRollbackWorkflow.run,
            RollbackRequest(
                deployment="tekutoko-api",
                severity=Severity.IMMEDIATE,
                reason="error rate 60%",
                requested_by="oncall",
            ),
            id=f"indexed-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
            search_attributes=sa.for_rollback("default", "tekutoko-api", "immediate"),
        )
        result = await handle.result()
    assert result.status.phase is Phase.COMPLETED and result.status.sla_met
    described = await handle.describe()
    assert described.typed_search_attributes.get(sa.PHASE) == "completed"
    assert described.typed_search_attributes.get(sa.SLA) == "met"
    upserted = [
        sorted(
            e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        )
        for e in (await handle.fetch_history()).events
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    ]
    billed = [names for names in upserted if names != ["TemporalChangeVersion"]]
    assert billed == [
        ["ModoruPhase"],  # executing
        ["ModoruPhase"],  # waiting for the rollout
        ["ModoruPhase"],  # verifying
        ["ModoruPhase", "ModoruSla"],  # completed, with the SLA met
    ]
