"""Every activity a workflow can call is registered on the worker, under the name
and with the types `runbook/activity_refs.py` gives it: a renamed, retyped or
forgotten activity fails here, not in the middle of a rollback."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

import aiohttp
from kubernetes.aio import client as kube
from kubernetes.aio.stream import WsApiClient
from temporalio.activity import _Definition

from runbook import activity_refs as refs
from runbook.activity_refs import Listed
from worker.cloud import cloudsql_for
from worker.main import activities_for
from worker.settings import Settings

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
CALLS = {"_activity", "_call", "execute_activity", "start_activity"}


def registration_problems(
    wanted: Iterable[Listed], registered: Iterable[Callable[..., object]]
) -> list[str]:
    """What is wrong between the references and the worker's activities, one line each."""
    found: dict[str, _Definition] = {}
    problems = []
    for fn in registered:
        definition = _Definition.must_from_callable(fn)
        assert definition.name is not None, "every activity is registered under an explicit name"
        if definition.name in found:
            problems.append(f"{definition.name} is registered twice")
        found[definition.name] = definition
    for ref in wanted:
        if ref.name not in found:
            problems.append(f"{ref.name} is not registered on the worker")
            continue
        definition = found.pop(ref.name)
        args = list(definition.arg_types or [])
        if args != [ref.arg]:
            problems.append(f"{ref.name} takes {args}, its reference says {ref.arg}")
        if definition.ret_type != ref.result:
            problems.append(
                f"{ref.name} returns {definition.ret_type}, its reference says {ref.result}"
            )
    problems += [
        f"{name} is registered but has no reference in runbook/activity_refs.py" for name in found
    ]
    return problems


async def worker_activities() -> list[Callable[..., object]]:
    """The worker's activities with every optional part (Monitoring, exec, Cloud SQL) configured."""
    settings = Settings(
        _env_file=None,
        cloudsql_insecure=True,
        cloudsql_endpoint="http://127.0.0.1:1/",
        cloudsql_project="p",
    )
    api, ws_api = kube.ApiClient(), WsApiClient()
    async with aiohttp.ClientSession() as session:
        monitoring = object()  # only handed to the activities' constructors
        found = activities_for(api, session, settings, monitoring, ws_api, cloudsql_for(settings))  # type: ignore[arg-type]
    await api.close()
    await ws_api.close()
    return found


def names_called_by_workflows() -> dict[str, str]:
    """Activity names the workflows spell out as strings (rather than through a
    reference), with where: a new workflow calling by name is checked too."""
    found = {}
    for path in sorted(WORKFLOWS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            called = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", "")
            )
            first = node.args[0]
            if called in CALLS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found[first.value] = f"{path.name}:{node.lineno}"
    return found


async def test_every_referenced_activity_is_registered_with_its_types() -> None:
    assert len(refs.ALL) >= 20 and {
        refs.ROLLOUT_UNDO,
        refs.EXEC,
        refs.START_CLONE,
        refs.GUARD_WATCH,
    } <= set(refs.ALL)
    assert registration_problems(refs.ALL, await worker_activities()) == []


def test_activities_named_by_string_in_a_workflow_have_a_reference() -> None:
    unknown = {
        name: where
        for name, where in names_called_by_workflows().items()
        if name not in refs.BY_NAME
    }
    assert unknown == {}, (
        f"add these to runbook/activity_refs.py (and register them on the worker): {unknown}"
    )


def test_the_workflow_scan_sees_string_names(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "new.py").write_text(
        'async def f(self):\n    await self._activity("github.dispatch", 1, int, "x")\n'
    )
    monkeypatch.setattr(__import__(__name__, fromlist=["WORKFLOWS"]), "WORKFLOWS", tmp_path)
    assert names_called_by_workflows() == {"github.dispatch": "new.py:2"}


async def test_the_check_fails_on_a_forgotten_renamed_or_retyped_activity() -> None:
    registered = await worker_activities()
    undo = next(
        fn for fn in registered if _Definition.must_from_callable(fn).name == refs.ROLLOUT_UNDO.name
    )
    without_undo = [fn for fn in registered if fn is not undo]
    assert registration_problems(refs.ALL, without_undo) == [
        "k8s.rollout_undo is not registered on the worker"
    ]

    retyped = dataclasses.replace(refs.ROLLOUT_UNDO, result=refs.BACKUP_DEPLOYMENT.result)  # type: ignore[arg-type]
    others = [r for r in refs.ALL if r is not refs.ROLLOUT_UNDO]
    assert registration_problems([*others, retyped], registered) == [
        f"k8s.rollout_undo returns {refs.ROLLOUT_UNDO.result}, its reference says "
        f"{refs.BACKUP_DEPLOYMENT.result}"
    ]

    assert registration_problems(others, registered) == [
        "k8s.rollout_undo is registered but has no reference in runbook/activity_refs.py"
    ]
    assert registration_problems(refs.ALL, [*registered, undo]) == [
        "k8s.rollout_undo is registered twice"
    ]
