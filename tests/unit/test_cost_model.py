"""The cost model's counting rule (bench/cost.py): Temporal Cloud's actions read
from a history, and the payload bytes inside it."""

from __future__ import annotations

from pathlib import Path

from temporalio.api.common.v1 import Payload, Payloads, SearchAttributes, WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import (
    ActivityTaskScheduledEventAttributes,
    ActivityTaskStartedEventAttributes,
    HistoryEvent,
    MarkerRecordedEventAttributes,
    StartChildWorkflowExecutionInitiatedEventAttributes,
    UpsertWorkflowSearchAttributesEventAttributes,
    WorkflowExecutionStartedEventAttributes,
)
from temporalio.client import WorkflowHistory

from bench.cost import actions_of, history_cost, payload_bytes

HISTORIES = Path(__file__).parents[1] / "replay" / "histories"


def history(*events: HistoryEvent) -> WorkflowHistory:
    for n, event in enumerate(events, 1):
        event.event_id = n
    return WorkflowHistory("wf", list(events))


def test_an_immediate_rollback_costs_its_start_its_activities_and_its_timer() -> None:
    recorded = WorkflowHistory.from_json("wf", (HISTORIES / "completed_immediate.json").read_text())
    cost = history_cost([recorded])
    assert cost["events"] == len(recorded.events)
    assert cost["actions"] == {"workflow": 1, "activity": 8, "timer": 1}
    assert cost["actions_total"] == 10
    assert 0 < cost["payload_bytes"] < cost["history_bytes"]


def test_retries_count_each_start_and_a_child_counts_twice_at_its_parent() -> None:
    counted = actions_of(
        history(
            HistoryEvent(
                event_type=EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
                workflow_execution_started_event_attributes=WorkflowExecutionStartedEventAttributes(),
            ),
            HistoryEvent(
                event_type=EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
                activity_task_started_event_attributes=ActivityTaskStartedEventAttributes(
                    attempt=3
                ),
            ),
            HistoryEvent(
                event_type=EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
                start_child_workflow_execution_initiated_event_attributes=(
                    StartChildWorkflowExecutionInitiatedEventAttributes(workflow_id="child")
                ),
            ),
        )
    )
    assert counted == {"workflow": 1, "activity": 3, "child workflow": 2}
    child = actions_of(
        history(
            HistoryEvent(
                event_type=EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
                workflow_execution_started_event_attributes=WorkflowExecutionStartedEventAttributes(
                    parent_workflow_execution=WorkflowExecution(workflow_id="parent")
                ),
            )
        )
    )
    assert child["workflow"] == 0  # its parent paid for its start


def test_markers_count_once_per_workflow_task_and_version_upserts_are_free() -> None:
    def marker(task: int) -> HistoryEvent:
        return HistoryEvent(
            event_type=EventType.EVENT_TYPE_MARKER_RECORDED,
            marker_recorded_event_attributes=MarkerRecordedEventAttributes(
                marker_name="core_patch", workflow_task_completed_event_id=task
            ),
        )

    def upsert(*names: str) -> HistoryEvent:
        fields = {name: Payload(data=b'"x"') for name in names}
        return HistoryEvent(
            event_type=EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
            upsert_workflow_search_attributes_event_attributes=(
                UpsertWorkflowSearchAttributesEventAttributes(
                    search_attributes=SearchAttributes(indexed_fields=fields)
                )
            ),
        )

    counted = actions_of(
        history(
            marker(4),
            marker(4),
            marker(9),
            upsert("TemporalChangeVersion"),
            upsert("TemporalChangeVersion", "ModoruPhase"),
        )
    )
    assert counted == {"markers": 2, "search attributes": 1}


def test_payload_bytes_are_every_payload_nested_in_an_event() -> None:
    inputs = [Payload(metadata={"encoding": b"json/plain"}, data=b'{"a": 1}'), Payload(data=b"x")]
    event = HistoryEvent(
        event_type=EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
        activity_task_scheduled_event_attributes=ActivityTaskScheduledEventAttributes(
            activity_id="1", input=Payloads(payloads=inputs)
        ),
    )
    assert payload_bytes(event) == sum(p.ByteSize() for p in inputs)
