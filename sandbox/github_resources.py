"""The JSON objects of GitHub's REST API as its OpenAPI description names them
(github/rest-api-description, as githubkit's generated models carry it):
simple-user, minimal-repository, workflow, workflow-run, job, artifact,
pending-deployment, deployment. The records they are made from live here too."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

WEB = "https://github.com"
DOCS = "https://docs.github.com/rest"


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def node_id(kind: str, number: int) -> str:
    return f"{kind}_kw" + hashlib.sha1(f"{kind}{number}".encode()).hexdigest()[:14]


def user_id(login: str) -> int:
    return 1000 + int(hashlib.sha1(login.encode()).hexdigest()[:6], 16)


@dataclass
class Step:
    name: str
    status: str = "queued"  # queued | in_progress | completed
    conclusion: str | None = None
    started: datetime | None = None
    completed: datetime | None = None


@dataclass
class Run:
    id: int
    number: int
    event: str
    branch: str
    sha: str
    actor: str
    inputs: dict[str, Any]
    created: datetime
    status: str = "queued"  # queued | waiting | in_progress | completed
    conclusion: str | None = None
    updated: datetime | None = None
    started: datetime | None = None
    completed: datetime | None = None
    job_id: int = 0
    deployment_id: int = 0
    waiting_since: datetime | None = None
    reviewed: str | None = None  # approved | rejected
    steps: list[Step] = field(default_factory=list)

    def touch(self, now: datetime) -> None:
        self.updated = now


@dataclass
class Artifact:
    id: int
    name: str
    run_id: int
    created: datetime
    expires: datetime
    data: bytes
    branch: str
    sha: str

    def expired(self, now: datetime) -> bool:
        return now >= self.expires


class Shapes:
    """Builds the API's objects for one repository served at `api` (the emulator's base URL)."""

    def __init__(
        self,
        api: str,
        full_name: str,
        repo_id: int,
        workflow_id: int,
        workflow_name: str,
        workflow_file: str,
        environment: str,
        environment_id: int,
        created: datetime,
    ) -> None:
        self.api, self.full_name, self.repo_id = api.rstrip("/"), full_name, repo_id
        self.owner, self.name = full_name.split("/")
        self.workflow_id, self.workflow_name, self.workflow_file = (
            workflow_id,
            workflow_name,
            workflow_file,
        )
        self.environment, self.environment_id, self.created = environment, environment_id, created

    @property
    def repo_url(self) -> str:
        return f"{self.api}/repos/{self.full_name}"

    def user(self, login: str, kind: str = "User") -> dict[str, Any]:
        url = f"{self.api}/users/{login}"
        return {
            "login": login,
            "id": user_id(login),
            "node_id": node_id("U", user_id(login)),
            "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id(login)}?v=4",
            "gravatar_id": "",
            "url": url,
            "html_url": f"{WEB}/{login}",
            "followers_url": f"{url}/followers",
            "following_url": f"{url}/following{{/other_user}}",
            "gists_url": f"{url}/gists{{/gist_id}}",
            "starred_url": f"{url}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{url}/subscriptions",
            "organizations_url": f"{url}/orgs",
            "repos_url": f"{url}/repos",
            "events_url": f"{url}/events{{/privacy}}",
            "received_events_url": f"{url}/received_events",
            "type": kind,
            "user_view_type": "public",
            "site_admin": False,
        }

    def repository(self) -> dict[str, Any]:
        url = self.repo_url
        templated = {
            "archive_url": "{archive_format}{/ref}",
            "assignees_url": "/assignees{/user}",
            "blobs_url": "/git/blobs{/sha}",
            "branches_url": "/branches{/branch}",
            "collaborators_url": "/collaborators{/collaborator}",
            "comments_url": "/comments{/number}",
            "commits_url": "/commits{/sha}",
            "compare_url": "/compare/{base}...{head}",
            "contents_url": "/contents/{+path}",
            "contributors_url": "/contributors",
            "deployments_url": "/deployments",
            "downloads_url": "/downloads",
            "events_url": "/events",
            "forks_url": "/forks",
            "git_commits_url": "/git/commits{/sha}",
            "git_refs_url": "/git/refs{/sha}",
            "git_tags_url": "/git/tags{/sha}",
            "issue_comment_url": "/issues/comments{/number}",
            "issue_events_url": "/issues/events{/number}",
            "issues_url": "/issues{/number}",
            "keys_url": "/keys{/key_id}",
            "labels_url": "/labels{/name}",
            "languages_url": "/languages",
            "merges_url": "/merges",
            "milestones_url": "/milestones{/number}",
            "notifications_url": "/notifications{?since,all,participating}",
            "pulls_url": "/pulls{/number}",
            "releases_url": "/releases{/id}",
            "stargazers_url": "/stargazers",
            "statuses_url": "/statuses/{sha}",
            "subscribers_url": "/subscribers",
            "subscription_url": "/subscription",
            "tags_url": "/tags",
            "teams_url": "/teams",
            "trees_url": "/git/trees{/sha}",
            "hooks_url": "/hooks",
        }
        body = {
            key: url + ("/" if key == "archive_url" else "") + path
            for key, path in templated.items()
        }
        return {
            "id": self.repo_id,
            "node_id": node_id("R", self.repo_id),
            "name": self.name,
            "full_name": self.full_name,
            "owner": self.user(self.owner, "Organization"),
            "private": True,
            "html_url": f"{WEB}/{self.full_name}",
            "description": None,
            "fork": False,
            "url": url,
            **body,
        }

    def workflow(self) -> dict[str, Any]:
        return {
            "id": self.workflow_id,
            "node_id": node_id("W", self.workflow_id),
            "name": self.workflow_name,
            "path": f".github/workflows/{self.workflow_file}",
            "state": "active",
            "created_at": iso(self.created),
            "updated_at": iso(self.created),
            "url": f"{self.repo_url}/actions/workflows/{self.workflow_id}",
            "html_url": f"{WEB}/{self.full_name}/blob/main/.github/workflows/{self.workflow_file}",
            "badge_url": f"{WEB}/{self.full_name}/workflows/"
            f"{self.workflow_name.replace(' ', '%20')}/badge.svg",
        }

    def run(self, run: Run) -> dict[str, Any]:
        url = f"{self.repo_url}/actions/runs/{run.id}"
        repository = self.repository()
        title = (
            f"{self.workflow_name} ({', '.join(f'{k}={v}' for k, v in run.inputs.items())})"
            if run.inputs
            else self.workflow_name
        )
        return {
            "id": run.id,
            "name": self.workflow_name,
            "node_id": node_id("WFR", run.id),
            "head_branch": run.branch,
            "head_sha": run.sha,
            "path": f".github/workflows/{self.workflow_file}",
            "display_title": title,
            "run_number": run.number,
            "event": run.event,
            "status": run.status,
            "conclusion": run.conclusion,
            "workflow_id": self.workflow_id,
            "check_suite_id": run.id + 7,
            "check_suite_node_id": node_id("CS", run.id + 7),
            "url": url,
            "html_url": f"{WEB}/{self.full_name}/actions/runs/{run.id}",
            "pull_requests": [],
            "created_at": iso(run.created),
            "updated_at": iso(run.updated or run.created),
            "actor": self.user(run.actor),
            "triggering_actor": self.user(run.actor),
            "run_attempt": 1,
            "referenced_workflows": [],
            "run_started_at": iso(run.started or run.created),
            "jobs_url": f"{url}/jobs",
            "logs_url": f"{url}/logs",
            "check_suite_url": f"{self.repo_url}/check-suites/{run.id + 7}",
            "artifacts_url": f"{url}/artifacts",
            "cancel_url": f"{url}/cancel",
            "rerun_url": f"{url}/rerun",
            "previous_attempt_url": None,
            "workflow_url": f"{self.repo_url}/actions/workflows/{self.workflow_id}",
            "head_commit": {
                "id": run.sha,
                "tree_id": hashlib.sha1(run.sha.encode()).hexdigest(),
                "message": f"Release {run.branch}",
                "timestamp": iso(run.created),
                "author": {"name": run.actor, "email": f"{run.actor}@users.noreply.github.com"},
                "committer": {"name": "GitHub", "email": "noreply@github.com"},
            },
            "repository": repository,
            "head_repository": repository,
        }

    def job(self, run: Run) -> dict[str, Any]:
        steps = [
            {
                "name": s.name,
                "status": s.status,
                "conclusion": s.conclusion,
                "number": i + 1,
                "started_at": iso(s.started),
                "completed_at": iso(s.completed),
            }
            for i, s in enumerate(run.steps)
        ]
        running = run.status in ("in_progress", "completed") and run.reviewed != "rejected"
        return {
            "id": run.job_id,
            "run_id": run.id,
            "run_url": f"{self.repo_url}/actions/runs/{run.id}",
            "run_attempt": 1,
            "node_id": node_id("CR", run.job_id),
            "head_sha": run.sha,
            "url": f"{self.repo_url}/actions/jobs/{run.job_id}",
            "html_url": f"{WEB}/{self.full_name}/actions/runs/{run.id}/job/{run.job_id}",
            "status": run.status,
            "conclusion": run.conclusion,
            "created_at": iso(run.created),
            "started_at": iso(run.started or run.created),
            "completed_at": iso(run.completed),
            "name": "deploy",
            "steps": steps,
            "check_run_url": f"{self.repo_url}/check-runs/{run.job_id}",
            "labels": ["ubuntu-latest"],
            "runner_id": 7 if running else None,
            "runner_name": "GitHub Actions 7" if running else None,
            "runner_group_id": 2 if running else None,
            "runner_group_name": "GitHub Actions" if running else None,
            "workflow_name": self.workflow_name,
            "head_branch": run.branch,
        }

    def environment_ref(self) -> dict[str, Any]:
        url = f"{self.repo_url}/environments/{self.environment}"
        return {
            "id": self.environment_id,
            "node_id": node_id("EN", self.environment_id),
            "name": self.environment,
            "url": url,
            "html_url": f"{WEB}/{self.full_name}/deployments/activity_log"
            f"?environments_filter={self.environment}",
        }

    def pending(self, run: Run, reviewers: list[str], can_approve: bool) -> dict[str, Any]:
        return {
            "environment": self.environment_ref(),
            "wait_timer": 0,
            "wait_timer_started_at": iso(run.waiting_since),
            "current_user_can_approve": can_approve,
            "reviewers": [{"type": "User", "reviewer": self.user(login)} for login in reviewers],
        }

    def deployment(self, run: Run) -> dict[str, Any]:
        url = f"{self.repo_url}/deployments/{run.deployment_id}"
        return {
            "url": url,
            "id": run.deployment_id,
            "node_id": node_id("DE", run.deployment_id),
            "sha": run.sha,
            "ref": run.branch,
            "task": "deploy",
            "payload": {},
            "original_environment": self.environment,
            "environment": self.environment,
            "description": None,
            "creator": self.user(run.actor),
            "created_at": iso(run.created),
            "updated_at": iso(run.updated or run.created),
            "statuses_url": f"{url}/statuses",
            "repository_url": self.repo_url,
            "transient_environment": False,
            "production_environment": True,
        }

    def artifact(self, artifact: Artifact, now: datetime) -> dict[str, Any]:
        url = f"{self.repo_url}/actions/artifacts/{artifact.id}"
        return {
            "id": artifact.id,
            "node_id": node_id("MDg", artifact.id),
            "name": artifact.name,
            "size_in_bytes": len(artifact.data),
            "url": url,
            "archive_download_url": f"{url}/zip",
            "expired": artifact.expired(now),
            "created_at": iso(artifact.created),
            "updated_at": iso(artifact.created),
            "expires_at": iso(artifact.expires),
            "digest": "sha256:" + hashlib.sha256(artifact.data).hexdigest(),
            "workflow_run": {
                "id": artifact.run_id,
                "repository_id": self.repo_id,
                "head_repository_id": self.repo_id,
                "head_branch": artifact.branch,
                "head_sha": artifact.sha,
            },
        }
