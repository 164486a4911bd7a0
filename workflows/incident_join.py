"""How another workflow (the release guard) puts its rollback under an incident:
start the incident as a child that outlives it, or reach the one running, and
ask it for the rollback; the incident signals `change_ended` back."""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from runbook.incident_models import (
        ChangeSignal,
        IncidentRequest,
        IncidentResult,
        incident_workflow_id,
    )
    from runbook.models import RollbackRequest

    from . import search_attributes as sa

INCIDENT_PARENT = (
    "incident-parent"  # workflow.patched id: a release guard's rollback starts under an incident
)


async def join_incident(
    request: RollbackRequest, rollback_id: str, *, indexed: bool, summary: str
) -> str:
    """From a workflow (the release guard): start the incident of `request`'s
    deployment and detection time as a child that outlives it (or reach the one
    running) and ask it to start the rollback under `rollback_id`; the incident
    signals `change_ended` back. Returns the incident's id."""
    detected = request.detected_at or workflow.now()
    incident_id = incident_workflow_id(request.deployment, detected, seconds=True)
    change = ChangeSignal(
        kind="rollback",
        workflow_id=rollback_id,
        request=request,
        summary=summary,
        details=request.reason,
        search_attributes=indexed,
        notify_workflow=workflow.info().workflow_id,
        request_id=f"guard-{workflow.info().run_id}",
    )
    opening = IncidentRequest(
        service=request.deployment,
        namespace=request.namespace,
        detected_at=detected,
        opened_by=request.requested_by,
        reason=request.reason,
        language=request.language,
    )
    pairs = incident_pairs(request.namespace, request.deployment)
    try:
        child = await workflow.start_child_workflow(
            "Incident",
            opening,
            id=incident_id,
            result_type=IncidentResult,
            search_attributes=TypedSearchAttributes(pairs) if indexed else None,
            static_summary=f"incident: {request.namespace}/{request.deployment}",
            static_details=request.reason,
            parent_close_policy=ParentClosePolicy.ABANDON,  # the incident outlives the guard
        )
        await child.signal("change", change)
    except WorkflowAlreadyStartedError:
        await workflow.get_external_workflow_handle(incident_id).signal("change", change)
    return incident_id


def incident_pairs(namespace: str, service: str) -> list[SearchAttributePair[str]]:
    return [
        SearchAttributePair(sa.SERVICE, service),
        SearchAttributePair(sa.NAMESPACE, namespace),
        SearchAttributePair(sa.PHASE, "open"),
    ]
