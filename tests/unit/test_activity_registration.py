"""Every activity a workflow can call is registered on the worker under that
name: a renamed or forgotten activity fails here, not in the middle of a
rollback."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
from kubernetes.aio import client as kube
from kubernetes.aio.stream import WsApiClient
from temporalio.activity import _Definition

from worker.cloud import cloudsql_for
from worker.main import activities_for
from worker.settings import Settings

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
NAME = re.compile(r'"((?:catalog|cloudsql|db|guard|k8s|verify|notify|metrics|github|registry)\.[a-z_]+)"')


def called_by_workflows() -> set[str]:
    return {name for path in WORKFLOWS.glob("*.py") for name in NAME.findall(path.read_text(encoding="utf-8"))}


async def test_every_activity_a_workflow_calls_is_registered_on_the_worker() -> None:
    called = called_by_workflows()
    assert {"k8s.rollout_undo", "k8s.exec", "cloudsql.start_clone", "guard.watch"} <= called  # the scan finds them
    settings = Settings(_env_file=None, cloudsql_insecure=True, cloudsql_endpoint="http://127.0.0.1:1/", cloudsql_project="p")
    api, ws_api = kube.ApiClient(), WsApiClient()
    async with aiohttp.ClientSession() as session:
        registered = [_Definition.must_from_callable(fn).name for fn in activities_for(api, session, settings, None, ws_api, cloudsql_for(settings))]
    await api.close()
    await ws_api.close()
    assert len(registered) == len(set(registered)), "an activity name is registered twice"
    assert called - set(registered) == set(), f"called by a workflow but not registered: {sorted(called - set(registered))}"
