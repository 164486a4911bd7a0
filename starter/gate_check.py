"""The CLI signs only what it checked. A gate comes from a workflow's `status`
query, and whoever runs that workflow writes the answer: a workflow of another
name, on another task queue, could show one plan and hand over another
workflow's gate (its id, run and plan digest). Before a decision is signed (or
its payload printed for ssh-keygen), `checked_gate` describes the workflow the
person named and refuses unless the gate is that workflow's, in its current
run, the workflow is one of modoru's own types on modoru's task queue, and the
digest is the plan's; then it prints the plan that is signed."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Collection
from functools import cache

from rich.console import Console
from rich.text import Text
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.service import RPCError, RPCStatusCode

import workflows
from runbook.decisions import GateView, canonical, plan_digest

from .base import CliError, console

__all__ = ["checked_gate", "decision_workflow_types", "modoru_workflow_types", "show_gate"]

DECISION_UPDATES = frozenset({"approval", "rejection"})


@cache
def _definitions() -> tuple[workflow._Definition, ...]:
    """The workflow definitions of the `workflows` package: the classes the worker registers."""
    found = []
    for module in pkgutil.iter_modules(workflows.__path__, f"{workflows.__name__}."):
        loaded = importlib.import_module(module.name)
        for value in vars(loaded).values():
            definition = workflow._Definition.from_class(value) if isinstance(value, type) else None
            if definition is not None and value.__module__ == loaded.__name__:
                found.append(definition)
    return tuple(sorted(found, key=lambda d: d.name or ""))


def modoru_workflow_types() -> frozenset[str]:
    """Every workflow type modoru's worker runs (their `@workflow.defn` names)."""
    return frozenset(d.name for d in _definitions() if d.name)


def decision_workflow_types() -> frozenset[str]:
    """The change workflows that take approvals and rejections (they define the decision
    updates): what `modoru approve` and `modoru reject` may sign for."""
    return frozenset(
        d.name for d in _definitions() if d.name and set(d.updates) >= DECISION_UPDATES
    )


def wrong_type(workflow_id: str, kind: str, allowed: frozenset[str] | None = None) -> CliError:
    """The refusal of a decision for a workflow whose type does not take it."""
    allowed = decision_workflow_types() if allowed is None else allowed
    return _refuse(
        workflow_id,
        f"it is a {kind!r} workflow, not one of modoru's that take this decision "
        f"({', '.join(sorted(allowed))})",
    )


def _refuse(workflow_id: str, why: str) -> CliError:
    return CliError(f"refusing to sign for {workflow_id}: {why}")


async def checked_gate(
    client: Client,
    workflow_id: str,
    gate: GateView,
    *,
    task_queue: str,
    types: Collection[str] | None = None,
    out: Console | None = None,
) -> WorkflowExecutionDescription:
    """Check `gate` (as a status query of `workflow_id` showed it) before anything is signed
    over it, and print the plan to `out` (default: stdout); the workflow's description when it
    holds, a `CliError` naming the first problem otherwise.

    It holds when the gate names `workflow_id` (the id the person typed) and the run the server
    says is that workflow's current one; the workflow's type is one of `types` (default: the
    change workflows that take decisions, as the `workflows` package defines them) and it runs on
    `task_queue` (modoru's, `Settings().task_queue`); and the digest is the sha256 of the plan
    shown (`runbook.decisions.plan_digest`)."""
    if gate.workflow_id != workflow_id:
        raise _refuse(
            workflow_id, f"its status offers the gate of another workflow ({gate.workflow_id!r})"
        )
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise _refuse(workflow_id, "no such workflow") from None
        raise _refuse(workflow_id, f"cannot describe it: {exc.message}") from None
    if description.id != workflow_id:
        raise _refuse(workflow_id, f"the server describes another workflow ({description.id})")
    if gate.run_id != description.run_id:
        raise _refuse(
            workflow_id,
            f"the gate names run {gate.run_id or '(none)'}, but the current run is "
            f"{description.run_id}",
        )
    allowed = decision_workflow_types() if types is None else frozenset(types)
    if description.workflow_type not in allowed:
        raise wrong_type(workflow_id, description.workflow_type, allowed)
    if description.task_queue != task_queue:
        raise _refuse(
            workflow_id,
            f"it runs on task queue {description.task_queue!r}, not modoru's {task_queue!r}",
        )
    if plan_digest(gate.plan) != gate.digest:
        raise _refuse(
            workflow_id,
            f"the plan shown does not have the digest offered for signing (sha256 of the plan: "
            f"{plan_digest(gate.plan)[:16]}…, offered: {gate.digest[:16]}…)",
        )
    show_gate(gate, description, out or console)
    return description


def show_gate(gate: GateView, description: WorkflowExecutionDescription, out: Console) -> None:
    """What is signed, one `key: value` line each (never wrapped, so a digest reads whole):
    the workflow, its run and task queue, the gate, every item of the plan and its digest."""
    rows = [
        ("workflow", _printable(f"{gate.workflow_id} ({description.workflow_type})")),
        ("run", _printable(gate.run_id)),
        ("task queue", _printable(description.task_queue)),
        ("gate", _printable(gate.gate)),
        *(
            (f"plan.{key}", _printable(value if isinstance(value, str) else canonical(value)))
            for key, value in sorted(gate.plan.items())
        ),
        ("plan sha256", gate.digest),
    ]
    width = max(len(what) for what, _ in rows)
    out.print(Text("signing for:"), soft_wrap=True)
    for what, value in rows:  # Text: what the workflow wrote is shown, never read as markup
        out.print(Text(f"  {what + ':':<{width + 1}} {value}"), soft_wrap=True)


def _printable(text: str) -> str:
    """Line breaks, escapes and invisible characters (a zero-width space) spelled out, so
    what is shown is what is signed."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)
