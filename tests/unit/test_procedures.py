"""The table of procedures (runbook/procedures.py) is the one place a procedure is
named: each row's workflow, request, status, CLI group and renderer fit
together, and every list that names procedures is the table's. A procedure
missing from the table, or a workflow of modoru's that no row or known watcher
names, fails here."""

from __future__ import annotations

import inspect
import typing

import pytest
import typer
from temporalio import workflow

from runbook.incident_models import DEPLOYMENT_KINDS, WORKFLOW_KINDS, ChangeSignal
from runbook.procedures import (
    BY_KIND,
    KINDS,
    OTHER_WORKFLOW_TYPES,
    PROCEDURES,
    WORKFLOW_TYPES,
    resolve,
)
from starter.cli import app
from starter.commands import STATUS_MODELS
from starter.gate_check import modoru_workflow_types
from worker.main import WORKFLOWS


def definition(procedure) -> workflow._Definition:
    found = workflow._Definition.from_class(resolve(procedure.workflow))
    assert found is not None, f"{procedure.workflow} is not a workflow class"
    return found


@pytest.mark.parametrize("procedure", PROCEDURES, ids=lambda p: p.kind)
def test_each_rows_parts_fit_together(procedure) -> None:
    found = definition(procedure)
    assert found.name == procedure.workflow_type
    run_arg = list(typing.get_type_hints(found.run_fn).values())[0]
    assert run_arg is procedure.request, (procedure.kind, run_arg)
    status_query = found.queries["status"]
    returned = typing.get_type_hints(status_query.fn)["return"]
    assert returned is procedure.status, (procedure.kind, returned)
    assert isinstance(resolve(procedure.commands), typer.Typer)
    render = resolve(procedure.render)
    assert len(inspect.signature(render).parameters) >= 1
    assert procedure.scope in ("deployment", "service")
    # The request names what it changes as its scope says.
    field = "deployment" if procedure.scope == "deployment" else "service"
    assert field in procedure.request.model_fields, (procedure.kind, field)


def test_every_list_of_procedures_is_the_tables() -> None:
    assert set(KINDS) == set(BY_KIND) == set(WORKFLOW_KINDS)
    assert typing.get_args(ChangeSignal.model_fields["kind"].annotation) == KINDS
    assert {p.kind for p in PROCEDURES if p.scope == "deployment"} == DEPLOYMENT_KINDS
    registered = {workflow._Definition.from_class(cls).name for cls in WORKFLOWS}
    assert registered == set(WORKFLOW_TYPES)
    assert {p.workflow_type for p in PROCEDURES} <= set(STATUS_MODELS)
    groups = {group.name for group in app.registered_groups}
    assert {p.cli for p in PROCEDURES} <= groups


def test_no_workflow_of_modoru_is_outside_the_table() -> None:
    """A new workflow class in workflows/ is a row of the table (or one of the two others)."""
    assert modoru_workflow_types() == set(WORKFLOW_TYPES), modoru_workflow_types() ^ set(
        WORKFLOW_TYPES
    )
    assert set(OTHER_WORKFLOW_TYPES) == {"ReleaseGuard", "Incident"}


def test_a_change_carries_the_request_of_its_kind() -> None:
    rollback = BY_KIND["rollback"].request.model_validate(
        {"deployment": "tekutoko-api", "severity": "immediate", "reason": "r", "requested_by": "a"}
    )
    change = ChangeSignal(kind="rollback", workflow_id="w", request=rollback)
    again = ChangeSignal.model_validate(change.model_dump(mode="json"))
    assert again.request == rollback
    # As signals recorded before the table carried it: under the kind's own name.
    legacy = {
        **change.model_dump(mode="json"),
        "rollback": change.model_dump(mode="json")["request"],
    }
    del legacy["request"]
    assert ChangeSignal.model_validate(legacy).request == rollback
    with pytest.raises(ValueError, match="a migration change carries a MigrationRequest"):
        ChangeSignal(kind="migration", workflow_id="w", request=rollback)
    with pytest.raises(ValueError, match="carries its request"):
        ChangeSignal(kind="rollback", workflow_id="w")
