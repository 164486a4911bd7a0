"""Starting a change under its service's incident: the CLI's start commands send
the change as an update with the incident's own start (update-with-start: the
running incident, or a new one named after the detection time), and the incident
starts it as its child under the id the CLI has always used; the update's answer
says started, attached or refused. Imports nothing from the rest of `starter/` but
`base`, so every command module may use it."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from runbook.incident_models import (
    ChangeSignal,
    ChangeVerdict,
    IncidentRequest,
    incident_workflow_id,
)
from runbook.procedures import BY_REQUEST
from worker.settings import Settings
from workflows import search_attributes as sa
from workflows.incident import IncidentWorkflow

from .base import CliError, answered

# How long the CLI waits for a worker to answer a start, a follow-up or a confirmation
# before it sends the same request as a durable signal.
VERDICT_WAIT_SECONDS = float(os.environ.get("MODORU_ANSWER_WAIT_SECONDS", "20"))


def _attributes(namespace: str, service: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.SERVICE, service),
            SearchAttributePair(sa.NAMESPACE, namespace),
            SearchAttributePair(sa.PHASE, "open"),
        ]
    )


async def open_incident_for(client: Client, service: str, task_queue: str) -> str | None:
    """The running incident of `service` served by this task queue's workers, if any (the
    newest)."""
    query = (
        f"WorkflowType = 'Incident' AND ModoruService = '{service}' AND ExecutionStatus = "
        f"'Running' AND TaskQueue = '{task_queue}'"
    )
    try:
        async for execution in client.list_workflows(query, limit=1):
            return execution.id
    except RPCError:
        return None  # no visibility (search attributes not registered): a new incident
    return None


async def _new_incident_id(
    client: Client, service: str, detected: dt.datetime, task_queue: str
) -> str:
    """The id from the detection minute, unless an incident of that id runs for other workers
    (another task queue)."""
    candidate = incident_workflow_id(service, detected)
    try:
        description = await client.get_workflow_handle(candidate).describe()
    except RPCError:
        return candidate
    if (
        description.status == WorkflowExecutionStatus.RUNNING
        and description.task_queue != task_queue
    ):
        return f"{candidate}-{uuid.uuid4().hex[:6]}"
    return candidate


async def start_in_incident(
    client: Client,
    settings: Settings,
    request,
    workflow_id: str,
    *,
    summary: str,
    details: str,
    search_attributes: TypedSearchAttributes | None = None,
    run=None,
) -> tuple[WorkflowHandle, bool]:
    """Start a change under its service's incident (the running one, else a new one
    named after the detection time); returns the change's handle and whether a
    change of that id was already running. A dry run changes nothing and opens no
    incident; a kind of change the incident does not know is started directly with `run`."""
    procedure = BY_REQUEST.get(type(request))
    if procedure is None or getattr(
        request, "dry_run", False
    ):  # a dry run (or a change that is no procedure of the table) starts on its own
        try:
            await client.start_workflow(
                run or procedure.workflow_type,  # type: ignore[union-attr]
                request,
                id=workflow_id,
                task_queue=settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                search_attributes=search_attributes,
                static_summary=summary,
                static_details=details,
            )
            return client.get_workflow_handle(workflow_id), False
        except WorkflowAlreadyStartedError:
            return client.get_workflow_handle(workflow_id), True
    kind = procedure.kind
    on_deployment = procedure.scope == "deployment"
    service = request.deployment if on_deployment else request.service
    namespace = request.namespace if on_deployment else "default"
    detected = getattr(request, "detected_at", None) or dt.datetime.now(dt.UTC)
    incident_id = await open_incident_for(
        client, service, settings.task_queue
    ) or await _new_incident_id(client, service, detected, settings.task_queue)
    request_id = uuid.uuid4().hex
    change = ChangeSignal(
        kind=kind,
        workflow_id=workflow_id,
        request_id=request_id,
        summary=summary,
        details=details,
        search_attributes=search_attributes is not None,
        request=request,
    )
    opening = IncidentRequest(
        service=service,
        namespace=namespace,
        detected_at=detected,
        opened_by=request.requested_by,
        reason=request.reason,
        language=request.language,
        by_name=not on_deployment,
    )
    # The incident's start, the same whether the change rides on an update or a signal.
    incident_start: dict[str, Any] = dict(
        id=incident_id,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=_attributes(namespace, service) if search_attributes else None,
        static_summary=f"incident: {namespace}/{service}",
        static_details=request.reason,
    )
    starting = WithStartWorkflowOperation(IncidentWorkflow.run, opening, **incident_start)
    verdict: ChangeVerdict | None = await answered(
        client.execute_update_with_start_workflow(
            IncidentWorkflow.start_change, change, start_workflow_operation=starting
        ),
        VERDICT_WAIT_SECONDS,
    )
    if verdict is None:
        # No worker answered. The update lives only while the server keeps it in memory; the
        # same change as a signal (the incident takes one request id once) is durable, so it
        # starts when a worker comes.
        await client.start_workflow(
            IncidentWorkflow.run,
            opening,
            start_signal="change",
            start_signal_args=[change],
            **incident_start,
        )
        raise CliError(
            f"incident {incident_id}: no worker has answered in {VERDICT_WAIT_SECONDS:.0f}s; "
            f"{workflow_id} is queued and starts when one does. Is `modoru worker` running? "
            "Run the same command again then to follow it (and sign its start).",
            code=1,
        )
    if verdict.outcome == "refused":
        raise CliError(f"incident {incident_id}: {verdict.detail}", code=1)
    return client.get_workflow_handle(workflow_id), verdict.outcome == "attached"
