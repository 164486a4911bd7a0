"""What the CLI's verbs do against Temporal. Each returns an exit code.

Every kind of change (a rollback, a migration rollback, a recovery, a release
guard, and the next ones) starts or attaches, waits past its first checks and is
followed the same way: its `Kind` says what differs (its name, when it is past
its checks, when it has ended, how it is shown)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel
from rich.table import Table
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from runbook import activity_refs as refs
from runbook.guard_models import GuardStatus
from runbook.models import Phase, RollbackRequest, RollbackStatus
from runbook.procedures import PROCEDURES, WORKFLOW_TYPES
from worker.settings import Settings
from workflows import search_attributes as sa
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

from . import base
from .base import CliError, Command
from .incident_start import start_in_incident
from .render import console, err_console, render_status
from .stacks import web_ui_for, workflow_link

__all__ = [
    "CliError",
    "Change",
    "Kind",
    "asked_change",
    "follow",
    "run",
    "start",
    "start_change",
    "start_rollback",
]

POLL_SECONDS = 0.25
STATUS_MODELS: dict[str, type[BaseModel]] = {
    **{p.workflow_type: p.status for p in PROCEDURES},
    "ReleaseGuard": GuardStatus,
}


def run(command: Command) -> None:
    """Run one command (starter/base.py), linking the Web UI of the stack the client reached."""
    base.run(command, web_ui_for=web_ui_for)


class Phased(Protocol):
    """What the CLI reads from any modoru status while following it."""

    workflow_id: str
    message: str

    def model_dump(self, *, mode: str = ...) -> dict[str, object]: ...


S = TypeVar("S", bound=Phased)
T = TypeVar("T")


def phase_of(status: Phased) -> str:
    phase = getattr(status, "phase", "")
    return str(getattr(phase, "value", phase))


def _not_planning(status: Phased) -> bool:
    return phase_of(status) != Phase.PLANNING.value


@dataclass(frozen=True)
class Kind(Generic[S]):
    """How the CLI starts, waits for and follows one kind of change."""

    what: str  # "rollback", "migration rollback", ...
    scope: str  # what one of them runs for at a time: "deployment", "service"
    render: Callable[[S], None]
    ended: frozenset[str] = frozenset({"completed", "failed", "rejected"})
    succeeded: frozenset[str] = frozenset({"completed"})
    settled: Callable[[S], bool] = field(
        default=_not_planning
    )  # past the first checks, where bad input shows
    settle_seconds: float = 30.0
    refusal: str = "{what} {verb}: {message}"  # verb: refused before any change, failed after
    unsettled: str = ""  # said when the worker has not got past the first checks in time

    def failed(self, status: S, message: str) -> S:
        phase = getattr(status, "phase")  # noqa: B009 - every status has one, of its own enum
        status.phase, status.message = type(phase)("failed"), message  # type: ignore[attr-defined]
        return status

    def refused(self, handle: WorkflowHandle, status: Phased | None, message: str) -> str:
        changed = status is not None and Phase.EXECUTING.value in (
            getattr(status, "timings", None) or {}
        )
        return self.refusal.format(
            what=self.what,
            verb="failed" if changed else "refused",
            message=message,
            name=handle.id.split("-", 1)[-1],
        )


ROLLBACK: Kind[RollbackStatus] = Kind(
    what="rollback",
    scope="deployment",
    render=render_status,
    settle_seconds=20.0,
    settled=lambda status: status.phase != Phase.PLANNING or status.from_revision is not None,
    unsettled="the worker has not planned this rollback yet; is `modoru worker` running?",
)


async def status_of(handle: WorkflowHandle):
    """The status of whichever modoru workflow `handle` names (a deployment
    rollback, a migration rollback, a recovery or a release guard); RPCError as
    the server says it."""
    kind = (await handle.describe()).workflow_type
    return await handle.query("status", result_type=STATUS_MODELS.get(kind, RollbackStatus))


async def answer_of(handle: WorkflowHandle, reading: Awaitable[T], *, not_found: str) -> T:
    """What `reading` (a query of `handle`) answers, with the server's refusals as one line for
    the user: `not_found` when there is no such workflow."""
    try:
        return await reading
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(not_found) from None
        # e.g. a finished run whose task queue no worker polls any more: its status is read by
        # replaying it on one
        raise CliError(
            f"cannot read the status of {handle.id}: {exc.message}; is `modoru worker` running on "
            "its task queue?"
        ) from None


async def verification_waits(client: Client, handle: WorkflowHandle) -> list[str]:
    """What a running verification is waiting for and until when, as its activity last
    said in its heartbeat (the Web UI shows the same under pending activities)."""
    try:
        described = await handle.describe()
    except RPCError:
        return []
    waits: list[str] = []
    for pending in described.raw_description.pending_activities:
        if pending.activity_type.name != refs.VERIFY_SERVICE.name:
            continue
        details = (
            pending.heartbeat_details.payloads if pending.HasField("heartbeat_details") else []
        )
        if not details:
            continue
        try:
            (beat,) = await client.data_converter.decode([details[-1]], [dict])
        except Exception:  # a beat this CLI cannot read (another version, no codec key)
            continue
        if isinstance(beat, dict):
            waits += [str(w) for w in beat.get("waiting", [])]
    return waits


async def query_any_status(handle: WorkflowHandle):
    """`status_of`, with the server's refusals as one line for the user."""
    return await answer_of(
        handle,
        status_of(handle),
        not_found=f"no modoru workflow with id {handle.id}: see `modoru list`",
    )


async def failure_of(handle: WorkflowHandle) -> str | None:
    description = await handle.describe()
    if description.status in (
        WorkflowExecutionStatus.FAILED,
        WorkflowExecutionStatus.TERMINATED,
        WorkflowExecutionStatus.TIMED_OUT,
    ):
        try:
            await handle.result()
        except WorkflowFailureError as exc:
            cause = exc.cause  # the workflow's own ApplicationError carries the human message
            return getattr(cause, "message", None) or str(cause)
        return description.status.name.lower()
    return None


async def start(
    client: Client,
    settings: Settings,
    kind: Kind[S],
    run_fn: Callable[..., Awaitable[object]],
    request: BaseModel,
    *,
    workflow_id: str,
    search_attributes: TypedSearchAttributes,
    summary: str,
    details: str,
    wait: bool,
    as_json: bool,
    settle_attached: bool = True,
) -> int:
    """Start a change (or attach to the one running under its id), wait past its
    first checks, where bad input shows, and either follow it or say where it is."""
    # Rollbacks, migration rollbacks and recoveries start as their incident's children,
    # under this id; other changes start directly (starter/incident_start.py).
    handle, attached = await start_in_incident(
        client,
        settings,
        request,
        workflow_id,
        search_attributes=search_attributes,
        summary=summary,
        details=details,
        run=run_fn,
    )
    link = workflow_link(settings.web_ui, client.namespace, workflow_id)
    if not as_json:
        verb = (
            f"a {kind.what} is already running for this {kind.scope}; attached to it"
            if attached
            else "started"
        )
        console.print(f"{verb}: [bold]{workflow_id}[/]" + (f"\nweb ui: {link}" if link else ""))
    status: S | None = None
    if settle_attached or not attached:
        status = await settle(handle, kind, wait=wait)
    if wait:
        status = await follow(handle, quiet=as_json, kind=kind)
    if as_json:
        payload = (
            status.model_dump(mode="json") if status is not None else {"workflow_id": workflow_id}
        )
        print(json.dumps({**payload, "attached": attached, "web_ui": link}, ensure_ascii=False))
    elif status is not None and not wait:
        console.print(
            f"phase: {phase_of(status)}" + (f" — {status.message}" if status.message else "")
        )
    return (0 if status is not None and phase_of(status) in kind.succeeded else 1) if wait else 0


async def settle(handle: WorkflowHandle, kind: Kind[S], *, wait: bool = False) -> S | None:
    """Wait until the change is past its first checks; a refusal there is one line
    (CliError, exit 1). None if the worker has not got that far in time."""
    status: S | None = None
    for _ in range(int(kind.settle_seconds / POLL_SECONDS)):
        try:
            status = await status_of(handle)
        except RPCError:
            status = None  # no worker has run its first task yet
        if status is not None and kind.settled(status):
            break
        failure = await failure_of(handle)
        if failure:
            raise CliError(kind.refused(handle, status, failure), code=1)
        await asyncio.sleep(POLL_SECONDS)
    else:
        if kind.unsettled:
            err_console.print(kind.unsettled)
        return None
    if not wait and status is not None and phase_of(status) == "failed":
        raise CliError(
            kind.refused(handle, status, await failure_of(handle) or status.message), code=1
        )
    return status


async def follow(
    handle: WorkflowHandle,
    quiet: bool = False,
    render: Callable[[S], None] | None = None,
    kind: Kind[S] = ROLLBACK,
) -> S:  # type: ignore[assignment]
    """Follow a change until it ends, saying each phase; shown in full at the end."""
    last = None
    while True:
        failure = await failure_of(handle)
        status: S = await query_any_status(handle)
        if failure and phase_of(status) not in kind.ended:
            status = kind.failed(status, failure)
        if phase_of(status) != last and not quiet:
            console.print(f"[cyan]{phase_of(status)}[/] {status.message}")
            last = phase_of(status)
        if phase_of(status) in kind.ended:
            if not quiet:
                (render or kind.render)(status)
            return status
        await asyncio.sleep(0.5)


async def start_change(
    client: Client,
    settings: Settings,
    kind: Kind[S],
    run: Callable[..., Awaitable[object]],
    request,
    *,
    workflow_id: str,
    summary: str,
    wait: bool,
    as_json: bool,
) -> int:
    """Start a change a person asked for (made to one Deployment, or for a service, as its kind's
    scope says), or attach to the one running; the details say who asked and why."""
    search_attributes = (
        sa.for_rollback(request.namespace, request.deployment, request.severity.value)
        if kind.scope == "deployment"
        else sa.for_change(request.service, request.severity.value)
    )
    return await start(
        client,
        settings,
        kind,
        run,
        request,
        workflow_id=workflow_id,
        search_attributes=search_attributes,
        summary=summary,
        details=f"requested by {request.requested_by}: {request.reason}",
        wait=wait,
        as_json=as_json,
    )


M = TypeVar("M", bound=BaseModel)
Start = Callable[..., Awaitable[int]]  # (client, settings, request, *, wait, as_json) -> exit code


@dataclass(frozen=True)
class Change(Generic[M]):
    """How one kind of change starts: its workflow id for a request, and the start (or attach)."""

    workflow_id: Callable[[M], str]
    start: Start


def asked_change(
    kind: Kind,
    run: Callable[..., Awaitable[object]],
    workflow_id: Callable[[M], str],
    summary: Callable[[M], str],
) -> Change[M]:
    """A change a person asks for, started with `start_change`: its kind, its workflow's run
    method, its id and its one-line summary for the Web UI."""

    async def start_it(
        client: Client, settings: Settings, request: M, *, wait: bool, as_json: bool
    ) -> int:
        return await start_change(
            client,
            settings,
            kind,
            run,
            request,
            workflow_id=workflow_id(request),
            summary=summary(request),
            wait=wait,
            as_json=as_json,
        )

    return Change(workflow_id, start_it)


ROLLBACK_CHANGE: Change[RollbackRequest] = asked_change(
    ROLLBACK,
    DeploymentRollbackWorkflow.run,
    lambda request: rollback_workflow_id(request.namespace, request.deployment),
    lambda request: (
        f"{request.severity.value} rollback of {request.namespace}/{request.deployment}"
    ),
)
start_rollback = ROLLBACK_CHANGE.start


async def list_rollbacks(
    client: Client, *, open_only: bool, deployment: str | None = None, namespace: str = "default"
) -> int:
    """Every modoru workflow (rollbacks, migration rollbacks, recoveries, guards), or one
    deployment's rollbacks."""
    query = f"WorkflowType IN ({', '.join(repr(t) for t in WORKFLOW_TYPES)})"
    if open_only:
        query += " AND ExecutionStatus = 'Running'"
    if deployment:
        query = (
            "WorkflowType = 'DeploymentRollback' AND WorkflowId = "
            f"'{rollback_workflow_id(namespace, deployment)}'"
            + (" AND ExecutionStatus = 'Running'" if open_only else "")
        )
    rows = []
    async for execution in client.list_workflows(query):
        rows.append(execution)
    if not rows:
        console.print("no rollbacks found")
        return 0
    lines = []
    for execution in rows:
        lines.append(
            (
                execution.workflow_type,
                execution.id,
                execution.run_id[:8],
                execution.status.name.lower() if execution.status else "",
                execution.typed_search_attributes.get(sa.PHASE) or "",
                execution.start_time.strftime("%Y-%m-%d %H:%M:%S"),
                execution.close_time.strftime("%H:%M:%S") if execution.close_time else "",
            )
        )
    header = ("kind", "workflow id", "run id", "status", "phase", "started", "closed")
    if not console.is_terminal:  # scripts get tab-separated lines, nothing cut
        print("\t".join(header))
        for line in lines:
            print("\t".join(line))
        return 0
    table = Table()
    for column in header:
        table.add_column(column, no_wrap=True)
    for line in lines:
        table.add_row(*line)
    console.print(table)
    return 0
