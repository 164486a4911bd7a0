"""The GitHub emulator against GitHub's published OpenAPI description, as
githubkit's generated pydantic models carry it (githubkit-schemas, API versions
2022-11-28 and 2026-03-10): every route is driven through githubkit and its
`parsed_data`, and every answer has no field the description lacks. The
refusals (401, 404, 410, 422) come back with GitHub's status and message."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import time
import typing
import urllib.request
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from githubkit import GitHub, TokenAuthStrategy
from githubkit.exception import RequestFailed
from githubkit_schemas.v2022_11_28 import models as m22
from githubkit_schemas.v2026_03_10 import models as m26
from pydantic import BaseModel

from sandbox.scenario import Scenario
from tests.conftest import RunningSandbox

OWNER, REPO = "tekutoko", "tekutoko-api"
IMAGE = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api"


def ci_scenario() -> Scenario:
    return Scenario.model_validate(
        {
            "name": "github-contract",
            "clock_speed": 20,
            "deployments": [
                {
                    "name": "tekutoko-api",
                    "container": "api",
                    "replicas": 2,
                    "revisions": [
                        {"image": f"{IMAGE}:1.1.0"},
                        {"image": f"{IMAGE}:1.2.0", "change_cause": "Update to version 1.2.0"},
                    ],
                }
            ],
            "registry": {
                "images": [
                    {"tags": ["1.1.0"], "pushed": "30d"},
                    {"tags": ["1.2.0"], "pushed": "9d"},
                ]
            },
            "github": {
                "token_user": "oncall-sre",
                "cd": {"reviewers": ["sre-lead", "oncall-sre"], "step_seconds": 4},
            },
        }
    )


@contextlib.contextmanager
def running_world() -> Iterator[RunningSandbox]:
    root = Path(tempfile.mkdtemp(prefix="modoru-github-"))
    running = RunningSandbox(ci_scenario(), root / "state")
    try:
        yield running
    finally:
        running.call_async(running.sandbox.stop())
        running.loop.call_soon_threadsafe(running.loop.stop)
        shutil.rmtree(root, ignore_errors=True)


def endpoints_of(world: RunningSandbox) -> dict[str, Any]:
    return json.loads(world.sandbox.endpoints_path.read_text())


def client(endpoints: dict[str, Any]) -> GitHub:
    token = Path(endpoints["github_token_file"]).read_text().strip()
    return GitHub(TokenAuthStrategy(token), base_url=endpoints["github_api"])


@pytest.fixture(scope="module")
def world() -> Iterator[RunningSandbox]:
    with running_world() as running:
        yield running


@pytest.fixture(scope="module")
def endpoints(world) -> dict[str, Any]:
    return endpoints_of(world)


@pytest.fixture(scope="module")
def gh(endpoints) -> GitHub:
    return client(endpoints)


def extra_fields(model: type[BaseModel], data: Any, at: str = "$") -> list[str]:
    """Keys of `data` that the model (the published schema) does not have, at any depth."""
    if not isinstance(data, dict):
        return []
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    found = [f"{at}.{key}" for key in data if key not in fields]
    for key, value in data.items():
        if key not in fields:
            continue
        candidates = _models(fields[key].annotation)
        for item in value if isinstance(value, list) else [value]:
            if candidates and isinstance(item, dict):
                found += min((extra_fields(c, item, f"{at}.{key}") for c in candidates), key=len)
    return found


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models(arg)]


def fits(response: Any, model: type[BaseModel], key: str | None = None) -> Any:
    """parsed_data validated by githubkit, and nothing in the raw JSON beyond the schema."""
    parsed = response.parsed_data
    raw = response.json()
    items = raw[key] if key else raw if isinstance(raw, list) else [raw]
    for item in items:
        assert extra_fields(model, item) == [], item
    return parsed


def wait_for(gh: GitHub, run_id: int, status: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = gh.rest.actions.get_workflow_run(OWNER, REPO, run_id).parsed_data
        if run.status == status:
            return run
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"run {run_id} never became {status} in {timeout:g} s; last seen {run.status} "
                f"(conclusion {run.conclusion})"
            )
        time.sleep(0.05)


def completed_run(gh: GitHub, tag: str, state: str) -> Any:
    """A CD run dispatched for `tag`, its review answered `state`, waited on to its end."""
    run_id = (
        gh.rest("2026-03-10")
        .actions.create_workflow_dispatch(
            OWNER, REPO, "cd-production.yml", ref="main", inputs={"tag": tag}
        )
        .parsed_data.workflow_run_id
    )
    wait_for(gh, run_id, "waiting")
    pending = gh.rest.actions.get_pending_deployments_for_run(OWNER, REPO, run_id).parsed_data
    gh.rest.actions.review_pending_deployments_for_run(
        OWNER, REPO, run_id, environment_ids=[pending[0].environment.id], state=state, comment=tag
    )
    return wait_for(gh, run_id, "completed")


def live_image(world: RunningSandbox) -> str:
    return world.kubectl(
        "get", "deployment/tekutoko-api", "-o", "jsonpath={.spec.template.spec.containers[0].image}"
    ).stdout


def test_history_and_every_read_route_fit_the_published_schemas(gh) -> None:
    for version, models in (("2022-11-28", m22), ("2026-03-10", m26)):
        rest = gh.rest(version)
        workflows = fits(
            rest.actions.list_repo_workflows(OWNER, REPO), models.Workflow, "workflows"
        )
        assert [(w.name, w.path) for w in workflows.workflows] == [
            ("CD - Production", ".github/workflows/cd-production.yml")
        ]
        assert (
            fits(
                rest.actions.get_workflow(OWNER, REPO, workflows.workflows[0].id), models.Workflow
            ).state
            == "active"
        )
        runs = fits(
            rest.actions.list_workflow_runs_for_repo(OWNER, REPO, status="success"),
            models.WorkflowRun,
            "workflow_runs",
        )
        past = [r for r in runs.workflow_runs if r.display_title == "CD - Production (tag=1.2.0)"]
        assert (
            len(past) == 1
            and past[0].event == "workflow_dispatch"
            and past[0].conclusion == "success"
        )
        by_file = fits(
            rest.actions.list_workflow_runs(OWNER, REPO, "cd-production.yml"),
            models.WorkflowRun,
            "workflow_runs",
        )
        assert past[0].id in [r.id for r in by_file.workflow_runs]
        assert (
            fits(
                rest.actions.get_workflow_run(OWNER, REPO, past[0].id), models.WorkflowRun
            ).head_branch
            == "main"
        )
        jobs = fits(
            rest.actions.list_jobs_for_workflow_run(OWNER, REPO, past[0].id), models.Job, "jobs"
        )
        assert {s.conclusion for s in jobs.jobs[0].steps} == {"success"}
        assert (
            fits(
                rest.actions.get_pending_deployments_for_run(OWNER, REPO, past[0].id),
                models.PendingDeployment,
            )
            == []
        )
        artifacts = fits(
            rest.actions.list_workflow_run_artifacts(OWNER, REPO, past[0].id),
            models.Artifact,
            "artifacts",
        ).artifacts
        assert (
            len(artifacts) == 1
            and artifacts[0].name.startswith("deployment-backup-")
            and not artifacts[0].expired
        )
        assert (
            fits(
                rest.actions.get_artifact(OWNER, REPO, artifacts[0].id), models.Artifact
            ).workflow_run.id
            == past[0].id
        )
        named = fits(
            rest.actions.list_artifacts_for_repo(OWNER, REPO, name=artifacts[0].name),
            models.Artifact,
            "artifacts",
        )
        assert [a.id for a in named.artifacts] == [artifacts[0].id]
    # The backup that 1.2.0's deploy made is the Deployment as it was: 1.1.0, without status or
    # managedFields.
    archive = zipfile.ZipFile(
        io.BytesIO(gh.rest.actions.download_artifact(OWNER, REPO, artifacts[0].id, "zip").content)
    )
    assert archive.namelist() == [f"{artifacts[0].name}.yaml"]
    manifest = yaml.safe_load(archive.read(archive.namelist()[0]))
    assert (
        manifest["kind"] == "Deployment"
        and "status" not in manifest
        and "managedFields" not in manifest["metadata"]
    )
    assert manifest["spec"]["template"]["spec"]["containers"][0]["image"] == f"{IMAGE}:1.1.0"


def test_an_approved_cd_run_backs_up_then_deploys(world, gh) -> None:
    before = gh.rest.actions.list_artifacts_for_repo(OWNER, REPO).parsed_data.total_count
    response = gh.rest("2022-11-28").actions.create_workflow_dispatch(
        OWNER,
        REPO,
        "cd-production.yml",
        ref="main",
        inputs={"tag": "1.1.0"},
        return_run_details=True,
    )
    assert response.status_code == 200
    dispatched = m22.WorkflowDispatchResponse.model_validate(response.json())
    assert extra_fields(m22.WorkflowDispatchResponse, response.json()) == []
    run = gh.rest.actions.get_workflow_run(OWNER, REPO, dispatched.workflow_run_id).parsed_data
    # Queued for one step of the sandbox's time (0.2 s here): a loaded machine may first see the
    # run already waiting for its review.
    assert run.status in ("queued", "waiting") and (run.conclusion, dispatched.run_url) == (
        None,
        run.url,
    )
    run = wait_for(gh, run.id, "waiting")
    pending = fits(
        gh.rest.actions.get_pending_deployments_for_run(OWNER, REPO, run.id), m22.PendingDeployment
    )
    assert pending[0].environment.name == "production" and pending[0].current_user_can_approve
    assert {r.reviewer.login for r in pending[0].reviewers} == {"sre-lead", "oncall-sre"}
    assert live_image(world) == f"{IMAGE}:1.2.0"  # nothing happens before the review
    deployments = fits(
        gh.rest.actions.review_pending_deployments_for_run(
            OWNER,
            REPO,
            run.id,
            environment_ids=[pending[0].environment.id],
            state="approved",
            comment="roll back to 1.1.0",
        ),
        m22.Deployment,
    )
    assert deployments[0].environment == "production"
    run = wait_for(gh, run.id, "completed")
    assert run.conclusion == "success"
    assert live_image(world) == f"{IMAGE}:1.1.0"
    world.kubectl("rollout", "status", "deployment/tekutoko-api", "--timeout=30s")
    assert (
        "Update to version 1.1.0"
        in world.kubectl("rollout", "history", "deployment/tekutoko-api").stdout
    )
    artifacts = gh.rest.actions.list_workflow_run_artifacts(
        OWNER, REPO, run.id
    ).parsed_data.artifacts
    assert (
        gh.rest.actions.list_artifacts_for_repo(OWNER, REPO).parsed_data.total_count == before + 1
    )
    zipped = zipfile.ZipFile(
        io.BytesIO(gh.rest.actions.download_artifact(OWNER, REPO, artifacts[0].id, "zip").content)
    )
    backup = yaml.safe_load(zipped.read(f"{artifacts[0].name}.yaml"))
    assert backup["spec"]["template"]["spec"]["containers"][0]["image"] == f"{IMAGE}:1.2.0"


@pytest.mark.parametrize(
    ("tag", "state", "failed_step"),
    [
        ("1.2.0", "rejected", None),
        ("2.0.0-missing", "approved", "Check image in Artifact Registry"),
    ],
)
def test_a_rejected_review_or_an_absent_tag_fails_the_run_and_changes_nothing(
    world, gh, tag, state, failed_step
) -> None:
    image, artifacts = (
        live_image(world),
        gh.rest.actions.list_artifacts_for_repo(OWNER, REPO).parsed_data.total_count,
    )
    response = gh.rest("2026-03-10").actions.create_workflow_dispatch(
        OWNER, REPO, "cd-production.yml", ref="refs/heads/main", inputs={"tag": tag}
    )
    assert response.status_code == 200  # 2026-03-10 always returns the run's details
    run_id = response.parsed_data.workflow_run_id
    environment = (
        wait_for(gh, run_id, "waiting")
        and gh.rest.actions.get_pending_deployments_for_run(OWNER, REPO, run_id)
        .parsed_data[0]
        .environment.id
    )
    gh.rest.actions.review_pending_deployments_for_run(
        OWNER, REPO, run_id, environment_ids=[environment], state=state, comment="no"
    )
    run = wait_for(gh, run_id, "completed")
    assert run.conclusion == "failure"
    steps = (
        gh.rest.actions.list_jobs_for_workflow_run(OWNER, REPO, run_id).parsed_data.jobs[0].steps
    )
    assert [s.name for s in steps if s.conclusion == "failure"] == (
        [failed_step] if failed_step else []
    )
    assert live_image(world) == image
    assert gh.rest.actions.list_artifacts_for_repo(OWNER, REPO).parsed_data.total_count == artifacts
    with pytest.raises(RequestFailed) as again:  # nothing left to review
        gh.rest.actions.review_pending_deployments_for_run(
            OWNER, REPO, run_id, environment_ids=[environment], state="approved", comment="x"
        )
    assert again.value.response.status_code == 422


@pytest.mark.parametrize(
    ("workflow", "body", "status", "message"),
    [
        (
            "cd-production.yml",
            {"ref": "main", "inputs": {"tag": "1.1.0", "force": "yes"}},
            422,
            'Unexpected inputs provided: ["force"]',
        ),
        (
            "cd-production.yml",
            {"ref": "main", "inputs": {}},
            422,
            "Required input 'tag' not provided",
        ),
        (
            "cd-production.yml",
            {"ref": "main", "inputs": {f"i{n}": "x" for n in range(26)}},
            422,
            "up to 25",
        ),
        (
            "cd-production.yml",
            {"ref": "release-9", "inputs": {"tag": "1.1.0"}},
            422,
            "No ref found for: release-9",
        ),
        ("deploy.yml", {"ref": "main", "inputs": {"tag": "1.1.0"}}, 404, "Not Found"),
        ("12345", {"ref": "main", "inputs": {"tag": "1.1.0"}}, 404, "Not Found"),
    ],
)
def test_dispatch_refusals(world, gh, workflow, body, status, message) -> None:
    with pytest.raises(RequestFailed) as failure:
        gh.rest.actions.create_workflow_dispatch(OWNER, REPO, workflow, data=body)
    answer = failure.value.response.json()
    assert (
        failure.value.response.status_code == status
        and message in answer["message"]
        and answer["documentation_url"].startswith("https://docs.github.com/")
    )
    assert m22.BasicError.model_validate(answer)


def test_authentication_versions_and_expiry(world, gh, endpoints) -> None:
    api = endpoints["github_api"]
    for headers, message in [
        ({}, "Requires authentication"),
        ({"Authorization": "Bearer ghp_wrong"}, "Bad credentials"),
    ]:
        answer = httpx.get(f"{api}/repos/{OWNER}/{REPO}/actions/runs", headers=headers)
        assert (
            answer.status_code == 401
            and answer.json()["message"] == message
            and answer.json()["documentation_url"]
        )
    token = Path(endpoints["github_token_file"]).read_text().strip()
    assert token not in world.sandbox.endpoints_path.read_text()
    assert (
        httpx.get(
            f"{api}/repos/{OWNER}/{REPO}/actions/runs", headers={"Authorization": f"token {token}"}
        ).status_code
        == 200
    )
    assert (
        httpx.get(
            f"{api}/repos/{OWNER}/{REPO}/actions/runs",
            headers={"Authorization": f"Bearer {token}", "X-GitHub-Api-Version": "2021-01-01"},
        ).status_code
        == 400
    )
    artifact = gh.rest.actions.list_artifacts_for_repo(OWNER, REPO).parsed_data.artifacts[-1]
    redirect = httpx.get(
        f"{api}/repos/{OWNER}/{REPO}/actions/artifacts/{artifact.id}/zip",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (
        redirect.status_code == 302 and httpx.get(redirect.headers["Location"]).content[:2] == b"PK"
    )
    emulator = world.sandbox.github
    real_now = emulator.now
    try:
        world.call(lambda: setattr(emulator, "now", lambda: real_now() + timedelta(seconds=61)))
        assert (
            httpx.get(redirect.headers["Location"]).status_code == 403
        )  # the download URL lasts a minute
        world.call(lambda: setattr(emulator, "now", lambda: real_now() + timedelta(days=91)))
        with pytest.raises(RequestFailed) as gone:
            gh.rest.actions.download_artifact(OWNER, REPO, artifact.id, "zip")
        assert (
            gone.value.response.status_code == 410
            and gone.value.response.json()["message"] == "Artifact has expired"
        )
        assert gh.rest.actions.get_artifact(OWNER, REPO, artifact.id).parsed_data.expired
    finally:
        world.call(lambda: setattr(emulator, "now", real_now))


@pytest.fixture
def own_world() -> Iterator[RunningSandbox]:
    """A world of its own, for a test that counts every run and dispatch there is."""
    with running_world() as running:
        yield running


def test_run_filters_pagination_and_the_request_log(own_world) -> None:
    endpoints = endpoints_of(own_world)
    gh = client(endpoints)
    # The history's run, then a run that deploys, one rejected and one of an absent tag (its
    # review approved), and a dispatch refused.
    made = [
        completed_run(gh, "1.1.0", "approved"),
        completed_run(gh, "1.2.0", "rejected"),
        completed_run(gh, "2.0.0-missing", "approved"),
    ]
    assert [r.conclusion for r in made] == ["success", "failure", "failure"]
    with pytest.raises(RequestFailed) as refused:
        gh.rest.actions.create_workflow_dispatch(
            OWNER, REPO, "cd-production.yml", data={"ref": "main", "inputs": {}}
        )
    assert refused.value.response.status_code == 422
    runs = gh.rest.actions.list_workflow_runs_for_repo(OWNER, REPO).parsed_data.workflow_runs
    assert len(runs) == 4 and [r.created_at for r in runs] == sorted(
        (r.created_at for r in runs), reverse=True
    )
    assert [r.id for r in runs[:3]] == [r.id for r in reversed(made)]
    first, second = (
        gh.rest.actions.list_workflow_runs_for_repo(OWNER, REPO, per_page=2, page=p).parsed_data
        for p in (1, 2)
    )
    assert [r.id for r in first.workflow_runs + second.workflow_runs] == [
        r.id for r in runs[:4]
    ] and first.total_count == len(runs)
    oldest = runs[-1]
    for query, expected in [
        ({"head_sha": oldest.head_sha}, [oldest.id]),
        ({"status": "failure"}, [r.id for r in runs if r.conclusion == "failure"]),
        ({"event": "push"}, []),
        ({"branch": "main"}, [r.id for r in runs]),
        ({"actor": "someone-else"}, []),
        ({"created": f"<{oldest.created_at.date().isoformat()}"}, []),
        ({"created": f"{oldest.created_at.date().isoformat()}..*"}, [r.id for r in runs]),
        (
            {"created": f">{(oldest.created_at + timedelta(seconds=1)).isoformat()}"},
            [r.id for r in runs[:-1]],
        ),
    ]:
        found = gh.rest.actions.list_workflow_runs_for_repo(OWNER, REPO, **query).parsed_data
        assert ([r.id for r in found.workflow_runs], found.total_count) == (
            expected,
            len(expected),
        ), query
    log = json.loads(
        urllib.request.urlopen(f"{endpoints['github_api']}/sandbox/requests", timeout=10).read()
    )
    dispatches = [
        e for e in log["entries"] if e["method"] == "POST" and e["path"].endswith("/dispatches")
    ]
    assert [e["status"] for e in dispatches] == [200, 200, 200, 422]
    assert {"method", "path", "status"} <= set(log["entries"][0]) and log["last"] == log["entries"][
        -1
    ]["seq"]
