"""What one change costs: history events and bytes, Temporal Cloud actions, and CPU.

Actions are counted from each history by Temporal Cloud's published rule
(docs.temporal.io/cloud/actions, "Temporal Cloud Actions"):

- a workflow started by a client or by continue-as-new: 1; a child workflow: 2 (its start
  and its execution), counted at the parent's StartChildWorkflowExecutionInitiated;
- every activity start or retry: 1 (ActivityTaskStarted's `attempt` says how many starts);
- every timer started: 1 (the SDK's implicit timers of `wait_condition(timeout=...)` too);
- every signal: 1, counted where it is received (WorkflowExecutionSignaled);
- every accepted update: 1 (a rejected one is not in the history and not counted here);
- every UpsertWorkflowSearchAttributes command: 1, unless it only sets TemporalChangeVersion;
- markers (side effects, local activities, `workflow.patched` version markers): 1 for each
  workflow task that recorded any, not one per marker;
- every WorkflowExecutionOptionsUpdated: 1.

Activity heartbeats that reach the server and queries are actions too but leave no
event: the live mode reads heartbeats from the Temporal server's own request counter;
queries are left out (the benchmark's own polling would be counted).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable

import psutil
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory

CHANGE_VERSION = "TemporalChangeVersion"
ACTION_KINDS = (
    "workflow",
    "child workflow",
    "activity",
    "timer",
    "signal",
    "update",
    "search attributes",
    "markers",
    "options",
    "heartbeat",
)


def payload_bytes(message) -> int:
    """Bytes of every Payload inside a protobuf message (inputs, results, details, memos)."""
    if isinstance(message, Payload):
        return message.ByteSize()
    total = 0
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if hasattr(value, "ListFields"):
            total += payload_bytes(value)
        else:  # a repeated field or a map
            items = value.values() if hasattr(value, "values") else value
            total += sum(payload_bytes(item) for item in items if hasattr(item, "ListFields"))
    return total


def actions_of(history: WorkflowHistory) -> collections.Counter[str]:
    """The actions one history records, by kind (see the module's rule)."""
    counted: collections.Counter[str] = collections.Counter()
    marker_tasks: set[int] = set()
    for event in history.events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            started = event.workflow_execution_started_event_attributes
            if not started.HasField("parent_workflow_execution"):
                counted["workflow"] += 1  # a child's start is counted at its parent
        elif kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            counted["child workflow"] += 2
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            counted["activity"] += max(1, event.activity_task_started_event_attributes.attempt)
        elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
            counted["timer"] += 1
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            counted["signal"] += 1
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            counted["update"] += 1
        elif kind == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            if set(fields.indexed_fields) - {CHANGE_VERSION}:
                counted["search attributes"] += 1
        elif kind == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker_tasks.add(
                event.marker_recorded_event_attributes.workflow_task_completed_event_id
            )
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED:
            counted["options"] += 1
    if marker_tasks:
        counted["markers"] += len(marker_tasks)
    return counted


def history_cost(histories: Iterable[WorkflowHistory]) -> dict:
    """Events, bytes and actions of a change's histories (the workflow and its children)."""
    events = payload = size = 0
    actions: collections.Counter[str] = collections.Counter()
    workflows = 0
    for history in histories:
        workflows += 1
        events += len(history.events)
        payload += sum(payload_bytes(e) for e in history.events)
        size += sum(e.ByteSize() for e in history.events)
        actions += actions_of(history)
    return {
        "workflows": workflows,
        "events": events,
        "payload_bytes": payload,
        "history_bytes": size,
        "actions": {k: actions[k] for k in ACTION_KINDS if actions[k]},
        "actions_total": sum(actions.values()),
    }


async def change_histories(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """The history of `workflow_id` and those of the children it started, recursively
    (a guard's incident and the incident's rollback), every run of each (continue-as-new)."""
    found: list[WorkflowHistory] = []
    todo, seen = [workflow_id], set()
    while todo:
        wid = todo.pop(0)
        if wid in seen:
            continue
        seen.add(wid)
        run_id = None
        while True:
            history = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
            found.append(history)
            run_id = None
            for event in history.events:
                if event.HasField("child_workflow_execution_started_event_attributes"):
                    started = event.child_workflow_execution_started_event_attributes
                    todo.append(started.workflow_execution.workflow_id)
                if event.HasField("workflow_execution_continued_as_new_event_attributes"):
                    handed = event.workflow_execution_continued_as_new_event_attributes
                    run_id = handed.new_execution_run_id
            if run_id is None:
                break
    return found


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its children alive now or waited for."""
    try:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:4])  # user, system, children_user, children_system
        for child in proc.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:
                continue
        return total
    except psutil.NoSuchProcess:
        return 0.0


def own_cpu_seconds() -> float:
    """This process's CPU alone (its threads; not its children)."""
    return time.process_time()


def server_counter(metrics_text: str, operation: str) -> float:
    """The Temporal server's `service_requests` for one gRPC operation, as its frontend
    received them (the history service counts the same requests again)."""
    total = 0.0
    for line in metrics_text.splitlines():
        if (
            line.startswith("service_requests{")
            and f'operation="{operation}"' in line
            and 'service_name="frontend"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def metrics_port_of(argv: list[str]) -> int | None:
    """The dev server's --metrics-port, from its command line."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "--metrics-port":
            return int(argv[i + 1])
    return None


def read_metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return answer.read().decode()


def per_change(cost: dict, changes: int) -> dict:
    """A summed cost divided by the number of changes it covers."""
    return {
        "workflows": cost["workflows"] / changes,
        "events": cost["events"] / changes,
        "payload_bytes": cost["payload_bytes"] / changes,
        "history_bytes": cost["history_bytes"] / changes,
        "actions": {k: v / changes for k, v in cost["actions"].items()},
        "actions_total": cost["actions_total"] / changes,
    }


def sum_costs(costs: list[dict]) -> dict:
    actions: collections.Counter[str] = collections.Counter()
    for cost in costs:
        actions.update(cost["actions"])
    return {
        "workflows": sum(c["workflows"] for c in costs),
        "events": sum(c["events"] for c in costs),
        "payload_bytes": sum(c["payload_bytes"] for c in costs),
        "history_bytes": sum(c["history_bytes"] for c in costs),
        "actions": {k: actions[k] for k in ACTION_KINDS if actions[k]},
        "actions_total": sum(actions.values()),
    }


def cost_table(rows: dict[str, dict]) -> list[str]:
    """Markdown rows: one per change kind."""
    lines = [
        "| change | workflows | events | payload KiB | history KiB | actions | of which "
        "| worker CPU-ms | Temporal CPU-ms | sandbox CPU-ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, row in rows.items():
        of_which = ", ".join(f"{k} {v:g}" for k, v in row["actions"].items())

        def ms(key: str, row: dict = row) -> str:
            value = row.get(key)
            return "—" if value is None else f"{value:.0f}"

        lines.append(
            f"| {kind} | {row['workflows']:g} | {row['events']:.0f} | "
            f"{row['payload_bytes'] / 1024:.1f} | {row['history_bytes'] / 1024:.1f} | "
            f"{row['actions_total']:.1f} | {of_which} | {ms('worker_cpu_ms')} | "
            f"{ms('temporal_cpu_ms')} | {ms('sandbox_cpu_ms')} |"
        )
    return lines
