"""A GitHub REST emulator for one repository and its "CD - Production" workflow,
answering as api.github.com does (GitHub's OpenAPI description, as githubkit's
models carry it): workflow dispatch (204, or 200 with run details), runs and
their filters, jobs, pending deployments and their review, artifacts and their
short-lived download URLs, GitHub's error JSON and its 401/404/410/422 refusals.

A dispatched run is queued, then waits for a reviewer of its environment; once
approved its job checks that the tag is in Artifact Registry, uploads the live
Deployment as artifact `deployment-backup-YYYYMMDD-HHMMSS`, sets the image to
`<image>:<tag>` in the sandbox's cluster and waits for the rollout (success,
or failure). A rejected review fails the run ("If a job is rejected, the
workflow will fail": docs.github.com, Reviewing deployments).

As GitHub Enterprise Server (`enterprise_version` in the seed, or `PUT
/sandbox/github`): before 3.21 a dispatch naming `return_run_details` is refused
with 400 before anything is dispatched, and API version 2026-03-10 is unknown.
Rate limits as docs.github.com describes them: every answer carries the token's
`x-ratelimit-*` headers; the primary limit (`rate_limit_per_hour`) answers 403 (or
429) with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` once spent; `PUT
/sandbox/rate_limit` spends it now, or sends secondary-limit answers with
`retry-after`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .cd_target import DeploymentTarget, backup_name, backup_zip
from .github_query import filter_runs, page_of
from .github_resources import DOCS, Artifact, Run, Shapes, Step, iso, user_id
from .kube.clock import Clock
from .kube.faults import (
    EffectLog,
    FaultDecision,
    FaultInjector,
    RequestLog,
    admin_routes,
    drop_connection,
)
from .scenario import FaultRule, GitHubSeed

if TYPE_CHECKING:
    from .artifact_registry import ArtifactRegistryEmulator

API_VERSIONS = ("2022-11-28", "2026-03-10")
MAX_INPUTS = 25
DOWNLOAD_URL_SECONDS = 60
API_VERSION = web.RequestKey("api_version", str)
STEPS = [
    "Set up job",
    "Check image in Artifact Registry",
    "Back up deployment",
    "Deploy",
    "Wait for rollout",
    "Complete job",
]


RATE_LIMIT_DOCS = f"{DOCS}/overview/rate-limits-for-the-rest-api"
RATE_LIMIT_WINDOW = timedelta(hours=1)
RUN_DETAILS_SINCE = (3, 21)  # the first Enterprise Server release that takes return_run_details


class GitHubError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        docs: str = DOCS,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.docs = status, message, docs
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return web.json_response(
            {"message": self.message, "documentation_url": self.docs, "status": str(self.status)},
            status=self.status,
            headers=self.headers or None,
        )


class RateLimitKnob(BaseModel):
    """`PUT /sandbox/rate_limit`: `primary` spends the token's budget until `reset_in_seconds`
    from now (every request answers the limited status with `x-ratelimit-remaining: 0`);
    `secondary` answers the next `times` requests for `resource`/`verb` (as fault rules name
    them) with the limited status and GitHub's secondary-limit message, with `retry-after`
    unless `retry_after_seconds` is None."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["primary", "secondary"]
    status: Literal[403, 429] | None = Field(None, description="None: the seed's")
    reset_in_seconds: int = Field(60, ge=0, le=3600)
    resource: str = "*"
    verb: str = "*"
    times: int = Field(1, ge=1)
    retry_after_seconds: int | None = Field(60, ge=0)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


class GitHubEmulator:
    def __init__(
        self,
        seed: GitHubSeed,
        *,
        target: DeploymentTarget | None = None,
        registry: ArtifactRegistryEmulator | None = None,
        clock: Clock | None = None,
        log_path: Path | None = None,
        token: str | None = None,
    ) -> None:
        self.seed, self.cd, self.target, self.registry = seed, seed.cd, target, registry
        self.clock = clock or Clock()
        self.token = token or "ghp_" + secrets.token_urlsafe(27)
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._log_path = log_path
        self.requests = (
            RequestLog()
        )  # reopened on start with its file (the state dir may not exist yet)
        # PUT /sandbox/faults; its resources: dispatches, pending_deployments
        self.faults = FaultInjector()
        self.effects = EffectLog()
        # As GitHub Enterprise Server of this version (None: github.com); PUT /sandbox/github.
        self.enterprise_version: str | None = seed.enterprise_version
        # The token's primary rate limit: the window's reset and what was used in it.
        self.rate_limit: int | None = seed.rate_limit_per_hour
        self._window_reset: datetime | None = None
        self._used = 0
        self._secondary: list[RateLimitKnob] = []  # PUT /sandbox/rate_limit, kind secondary
        self.rate_limited: list[dict[str, Any]] = []  # each limited answer: path, status, headers
        self.runs: dict[int, Run] = {}
        self.artifacts: dict[int, Artifact] = {}
        self._reviews: dict[int, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._key = secrets.token_bytes(32)
        self._ids = {
            "run": 19_400_000_000,
            "job": 55_100_000_000,
            "artifact": 4_800_000_000,
            "deployment": 2_900_000_000,
        }
        self._numbers = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.shapes = self._shapes("http://127.0.0.1:0")

    def _shapes(self, api: str) -> Shapes:
        workflow_id = 61_000_000 + int(hashlib.sha1(self.cd.file.encode()).hexdigest()[:5], 16)
        repo_id = 800_000_000 + int(hashlib.sha1(self.seed.repository.encode()).hexdigest()[:6], 16)
        return Shapes(
            api,
            self.seed.repository,
            repo_id,
            workflow_id,
            self.cd.name,
            self.cd.file,
            self.cd.environment,
            3_100_000_000 + workflow_id % 1000,
            self.now() - timedelta(days=400),
        )

    def _next(self, kind: str) -> int:
        self._ids[kind] += 1 + (self._ids[kind] % 7)
        return self._ids[kind]

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self.requests = RequestLog(self._log_path)
        self._runner = web.AppRunner(
            self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.shapes.api = self.url

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.requests.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- runs ----------------------------------------------------------------------------

    def _new_run(
        self,
        inputs: dict[str, Any],
        branch: str,
        created: datetime,
        event: str = "workflow_dispatch",
    ) -> Run:
        self._numbers += 1
        sha = hashlib.sha1(f"{self.seed.repository}:{branch}:{self._numbers}".encode()).hexdigest()
        run = Run(
            self._next("run"),
            self._numbers,
            event,
            branch,
            sha,
            self.seed.token_user,
            dict(inputs),
            created,
            job_id=self._next("job"),
            deployment_id=self._next("deployment"),
            steps=[Step(name) for name in STEPS],
        )
        self.runs[run.id] = run
        return run

    def seed_past_run(self, tag: str, manifest: dict[str, Any], when: datetime) -> Run:
        """A CD run that deployed `tag` at `when`, approved, with its backup of the Deployment
        before it."""
        run = self._new_run({"tag": tag}, self.seed.branches[0], when)
        run.status, run.conclusion, run.reviewed = "completed", "success", "approved"
        run.waiting_since, run.started = when + timedelta(seconds=20), when + timedelta(minutes=3)
        for i, step in enumerate(run.steps):
            step.status, step.conclusion = "completed", "success"
            step.started = step.completed = run.started + timedelta(seconds=10 * i)
        self._upload(run, manifest, run.started + timedelta(seconds=15))
        run.completed = run.updated = run.started + timedelta(minutes=2)
        return run

    def _upload(self, run: Run, manifest: dict[str, Any], at: datetime) -> Artifact:
        name = backup_name(at)
        artifact = Artifact(
            self._next("artifact"),
            name,
            run.id,
            at,
            at + timedelta(days=self.seed.artifact_retention_days),
            backup_zip(name, manifest),
            run.branch,
            run.sha,
        )
        self.artifacts[artifact.id] = artifact
        return artifact

    async def _sleep(self, simulated: float) -> None:
        await asyncio.sleep(self.clock.real_seconds(simulated))

    async def _drive(self, run: Run) -> None:
        await self._sleep(self.cd.step_seconds)
        run.status, run.waiting_since = "waiting", self.now()
        run.touch(self.now())
        await self._reviews[run.id].wait()
        if run.reviewed != "approved":
            return
        run.status, run.started = "in_progress", self.now()
        run.touch(self.now())
        ok = True
        for step in run.steps:
            step.status, step.started = "in_progress", self.now()
            ok = await self._step(run, step.name)
            step.status, step.conclusion, step.completed = (
                "completed",
                "success" if ok else "failure",
                self.now(),
            )
            run.touch(self.now())
            if not ok:
                break
        self._finish(run, "success" if ok else "failure")

    async def _step(self, run: Run, name: str) -> bool:
        await self._sleep(self.cd.step_seconds / 2)
        tag = str(run.inputs.get("tag", ""))
        package = self.cd.image.rsplit("/", 1)[-1]
        if name == "Check image in Artifact Registry":
            return self.registry is not None and self.registry.has(package, tag)
        if name in ("Back up deployment", "Deploy") and self.target is None:
            return False
        if name == "Back up deployment":
            assert self.target is not None
            try:
                self._upload(run, self.target.manifest(), self.now())
            except LookupError:
                return False
        elif name == "Deploy":
            assert self.target is not None
            try:
                run.inputs["_generation"] = self.target.set_image(
                    f"{self.cd.image}:{tag}", f"Update to version {tag}"
                )
            except (
                Exception
            ):  # LookupError or the API server's refusal: the step fails, as kubectl would
                return False
        elif name == "Wait for rollout":
            assert self.target is not None
            deadline = asyncio.get_running_loop().time() + self.clock.real_seconds(
                self.cd.rollout_timeout_seconds
            )
            while (state := self.target.rollout(int(run.inputs["_generation"]))) == "progressing":
                if asyncio.get_running_loop().time() > deadline:
                    return False
                await asyncio.sleep(0.05)
            return state == "complete"
        return True

    def _finish(self, run: Run, conclusion: str) -> None:
        run.inputs.pop("_generation", None)
        now = self.now()
        for step in run.steps:
            if step.status != "completed":
                step.status, step.conclusion, step.completed = "completed", "skipped", now
        run.status, run.conclusion, run.completed = "completed", conclusion, now
        run.touch(now)

    # -- HTTP ------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        # _limits runs inside _middleware: after authentication and fault injection, and its
        # refusals are logged there like any other answer.
        app = web.Application(middlewares=[self._middleware, self._limits])
        base = "/repos/{owner}/{repo}/actions"
        app.router.add_get("/sandbox/requests", self._requests)
        app.router.add_get("/sandbox/faults", self._get_faults)
        app.router.add_put("/sandbox/faults", self._put_faults)
        admin_routes(app, self.faults, self.effects)
        app.router.add_get("/sandbox/github", self._get_server)
        app.router.add_put("/sandbox/github", self._put_server)
        app.router.add_get("/sandbox/rate_limit", self._get_rate_limit)
        app.router.add_put("/sandbox/rate_limit", self._put_rate_limit)
        app.router.add_get("/_blob/artifacts/{artifact_id}", self._blob)
        for path, handler in [
            ("/workflows", self._list_workflows),
            ("/workflows/{workflow_id}", self._get_workflow),
            ("/workflows/{workflow_id}/runs", self._list_runs),
            ("/runs", self._list_runs),
            ("/runs/{run_id}", self._get_run),
            ("/runs/{run_id}/jobs", self._list_jobs),
            ("/runs/{run_id}/pending_deployments", self._get_pending),
            ("/runs/{run_id}/artifacts", self._list_artifacts),
            ("/artifacts", self._list_artifacts),
            ("/artifacts/{artifact_id}", self._get_artifact),
            ("/artifacts/{artifact_id}/{archive_format}", self._download),
        ]:
            app.router.add_get(base + path, handler)
        app.router.add_post(base + "/workflows/{workflow_id}/dispatches", self._dispatch)
        app.router.add_post(base + "/runs/{run_id}/pending_deployments", self._review)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        admin = request.path.startswith("/sandbox/")
        resource, verb = request.path.rstrip("/").rsplit("/", 1)[-1], request.method.lower()
        applied = False
        try:
            if not admin and not request.path.startswith("/_blob/"):
                self._authenticate(request)
                version = request.headers.get("X-GitHub-Api-Version", API_VERSIONS[0])
                if version not in API_VERSIONS:
                    raise GitHubError(
                        400,
                        f"The requested API version '{version}' is not supported. Supported "
                        f"versions: {', '.join(API_VERSIONS)}.",
                    )
                request[API_VERSION] = version
                before = self.faults.decide(resource, verb)
                if before.latency_ms:
                    await asyncio.sleep(before.latency_ms / 1000)
                await self._fault(before, request)
            response = await handler(request)
            if not admin and request.method == "POST" and 200 <= response.status < 300:
                applied = True
                what = self._record_effect(request, resource, response)
                await self._fault(await self.faults.after_write(resource, verb, what), request)
        except GitHubError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            response = GitHubError(
                exc.status, "Not Found" if exc.status == 404 else exc.reason
            ).response()
        except ConnectionResetError:
            if not admin:
                self.requests.record(
                    method=request.method,
                    path=request.path,
                    query=request.query_string,
                    status=0,
                    applied=applied,
                )
            raise
        if not admin:
            self.requests.record(
                method=request.method,
                path=request.path,
                query=request.query_string,
                status=response.status,
                applied=applied,
            )
        return response

    # -- as Enterprise Server, and GitHub's rate limits -----------------------------------------

    def before_run_details(self) -> bool:
        """Whether this server is an Enterprise Server without `return_run_details`."""
        return (
            self.enterprise_version is not None
            and _version(self.enterprise_version) < RUN_DETAILS_SINCE
        )

    def _docs(self, path: str) -> str:
        if self.enterprise_version is None:
            return f"{DOCS}{path}"
        return f"https://docs.github.com/enterprise-server@{self.enterprise_version}/rest{path}"

    def _window(self) -> datetime:
        now = self.now()
        if self._window_reset is None or now >= self._window_reset:
            self._window_reset, self._used = now + RATE_LIMIT_WINDOW, 0
        return self._window_reset

    def _rate_headers(self, remaining: int | None = None) -> dict[str, str]:
        if self.rate_limit is None:
            return {}
        reset = self._window()
        left = max(self.rate_limit - self._used, 0) if remaining is None else remaining
        return {
            "x-ratelimit-limit": str(self.rate_limit),
            "x-ratelimit-remaining": str(left),
            "x-ratelimit-used": str(self.rate_limit - left),
            "x-ratelimit-reset": str(math.ceil(reset.timestamp())),
            "x-ratelimit-resource": "core",
        }

    def _limited(self, status: int, message: str, headers: dict[str, str], path: str) -> None:
        self.rate_limited.append({"path": path, "status": status, "headers": dict(headers)})
        raise GitHubError(status, message, RATE_LIMIT_DOCS, headers)

    def _check_rate_limits(self, request: web.Request, resource: str, verb: str) -> None:
        status = self.seed.rate_limited_status
        for knob in self._secondary:
            if knob.resource in ("*", resource) and knob.verb in ("*", verb) and knob.times > 0:
                knob.times -= 1
                self._secondary = [k for k in self._secondary if k.times > 0]
                headers = self._rate_headers()
                if knob.retry_after_seconds is not None:
                    headers["retry-after"] = str(knob.retry_after_seconds)
                self._limited(
                    knob.status or status,
                    "You have exceeded a secondary rate limit. Please wait a few minutes before "
                    "you try again. If you reach out to GitHub Support for help, please include "
                    "the request ID.",
                    headers,
                    request.path,
                )
        if self.rate_limit is None:
            return
        self._window()
        if self._used >= self.rate_limit:
            self._limited(
                status,
                f"API rate limit exceeded for user ID {user_id(self.seed.token_user)}. If you "
                "reach out to GitHub Support for help, please include the request ID.",
                self._rate_headers(0),
                request.path,
            )
        self._used += 1

    @web.middleware
    async def _limits(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        """Enterprise Server's API versions and GitHub's rate limits, around the handler."""
        if request.path.startswith(("/sandbox/", "/_blob/")):
            return await handler(request)
        version = request.get(API_VERSION, API_VERSIONS[0])
        if self.before_run_details() and version != API_VERSIONS[0]:
            raise GitHubError(
                400,
                f"The requested API version '{version}' is not supported. Supported versions: "
                f"{API_VERSIONS[0]}.",
                self._docs("/about-the-rest-api/api-versions"),
            )
        resource, verb = request.path.rstrip("/").rsplit("/", 1)[-1], request.method.lower()
        self._check_rate_limits(request, resource, verb)
        try:
            response = await handler(request)
        except GitHubError as exc:
            exc.headers = {**self._rate_headers(), **exc.headers}
            raise
        response.headers.update(self._rate_headers())
        return response

    async def _get_server(self, request: web.Request) -> web.Response:
        return web.json_response({"enterprise_version": self.enterprise_version})

    async def _put_server(self, request: web.Request) -> web.Response:
        """`{"enterprise_version": "3.20"}` to act as that Enterprise Server, null for
        github.com."""
        try:
            body = await request.json()
            version = body.get("enterprise_version") if isinstance(body, dict) else "?"
            if version is not None:
                GitHubSeed(enterprise_version=version)  # the seed's own check of the version
        except Exception as exc:  # JSON or pydantic errors: tell the caller what was wrong
            return web.json_response({"error": str(exc)}, status=400)
        self.enterprise_version = version
        return web.json_response({"enterprise_version": self.enterprise_version})

    async def _get_rate_limit(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "limit": self.rate_limit,
                "used": self._used if self.rate_limit is not None else None,
                "reset": iso(self._window()) if self.rate_limit is not None else None,
                "secondary": [k.model_dump() for k in self._secondary],
                "limited": self.rate_limited,
            }
        )

    async def _put_rate_limit(self, request: web.Request) -> web.Response:
        try:
            knob = RateLimitKnob.model_validate(await request.json())
        except Exception as exc:  # JSON or pydantic errors: tell the caller what was wrong
            return web.json_response({"error": str(exc)}, status=400)
        try:
            self.limit(knob)
        except LookupError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return await self._get_rate_limit(request)

    def limit(self, knob: RateLimitKnob) -> None:
        """Spend the primary limit until the knob's reset, or queue secondary-limit answers."""
        if knob.kind == "secondary":
            self._secondary.append(knob)
            return
        if self.rate_limit is None:
            raise LookupError("this server has no primary rate limit (rate_limit_per_hour)")
        self._window_reset = self.now() + timedelta(seconds=knob.reset_in_seconds)
        self._used = self.rate_limit

    @staticmethod
    async def _fault(decision: FaultDecision, request: web.Request) -> None:
        """Answer as the fault says: a reset connection or an error status (an after-write
        decision has waited out its latency and hold already)."""
        if decision.drop:
            drop_connection(request)
        if decision.status is not None:
            error = GitHubError(
                decision.status,
                "Server Error" if decision.status >= 500 else "API rate limit exceeded",
            )
            if decision.status == 429 and decision.retry_after:
                error.headers = {"Retry-After": str(decision.retry_after)}
            raise error

    def _record_effect(
        self, request: web.Request, resource: str, response: web.StreamResponse
    ) -> dict[str, Any]:
        """The run a dispatch made, or the run a review decided, as the effect log keeps it."""
        answer: Any = None
        if isinstance(response, web.Response) and response.body is not None:
            with contextlib.suppress(ValueError, TypeError):
                answer = json.loads(response.body)
        run_id = request.match_info.get("run_id")
        if resource == "dispatches" and isinstance(answer, dict):
            run_id = answer.get("workflow_run_id")
        elif resource == "dispatches":
            run_id = max(self.runs, default=None)  # a 204: the run it made is the newest
        what = {"path": request.path, "run_id": int(run_id) if run_id else None}
        self.effects.record(f"{resource}.post", resource=resource, status=response.status, **what)
        return what

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"rules": self.faults.rules()})

    async def _put_faults(self, request: web.Request) -> web.Response:
        try:
            rules = [FaultRule.model_validate(r) for r in (await request.json()).get("rules", [])]
        except Exception as exc:  # pydantic or JSON errors: tell the caller what was wrong
            return web.json_response({"error": str(exc)}, status=400)
        self.faults.replace(rules)
        return web.json_response({"rules": self.faults.rules()})

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        if not header:
            raise GitHubError(401, "Requires authentication")
        if scheme.lower() not in ("bearer", "token") or not hmac.compare_digest(
            credential.strip().encode(), self.token.encode()
        ):
            raise GitHubError(401, "Bad credentials")

    def _check_repo(self, request: web.Request) -> None:
        if (
            f"{request.match_info['owner']}/{request.match_info['repo']}".lower()
            != self.seed.repository.lower()
        ):
            raise GitHubError(404, "Not Found")

    def _workflow(self, request: web.Request) -> None:
        self._check_repo(request)
        wanted = request.match_info["workflow_id"]
        if wanted not in (str(self.shapes.workflow_id), self.cd.file):
            raise GitHubError(404, "Not Found", f"{DOCS}/actions/workflows#get-a-workflow")

    def _run(self, request: web.Request) -> Run:
        self._check_repo(request)
        raw = request.match_info["run_id"]
        run = self.runs.get(int(raw)) if raw.isdigit() else None
        if run is None:
            raise GitHubError(404, "Not Found", f"{DOCS}/actions/workflow-runs#get-a-workflow-run")
        return run

    def _artifact(self, request: web.Request) -> Artifact:
        self._check_repo(request)
        raw = request.match_info["artifact_id"]
        artifact = self.artifacts.get(int(raw)) if raw.isdigit() else None
        if artifact is None:
            raise GitHubError(404, "Not Found", f"{DOCS}/actions/artifacts#get-an-artifact")
        return artifact

    async def _requests(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response(
            {"entries": self.requests.since(since), "last": self.requests.last_seq}
        )

    async def _list_workflows(self, request: web.Request) -> web.Response:
        self._check_repo(request)
        return web.json_response({"total_count": 1, "workflows": [self.shapes.workflow()]})

    async def _get_workflow(self, request: web.Request) -> web.Response:
        self._workflow(request)
        return web.json_response(self.shapes.workflow())

    async def _dispatch(self, request: web.Request) -> web.Response:
        self._workflow(request)
        docs = f"{DOCS}/actions/workflows#create-a-workflow-dispatch-event"
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise GitHubError(400, "Problems parsing JSON", docs) from None
        if not isinstance(body, dict):
            raise GitHubError(400, "Problems parsing JSON", docs)
        if "return_run_details" in body and self.before_run_details():
            # Enterprise Server before 3.21 checks the body against a schema without the key:
            # refused before anything is dispatched.
            raise GitHubError(
                400,
                'Invalid request.\n\n"return_run_details" is not a permitted key.',
                self._docs("/actions/workflows#create-a-workflow-dispatch-event"),
            )
        if not isinstance(body.get("ref"), str):
            raise GitHubError(422, 'Invalid request.\n\n"ref" wasn\'t supplied.', docs)
        inputs = body.get("inputs") or {}
        details = body.get("return_run_details", False)
        if not isinstance(inputs, dict) or not isinstance(details, bool):
            raise GitHubError(
                422,
                "Invalid request.\n\nFor 'properties/inputs', the value is not an object.",
                docs,
            )
        if len(inputs) > MAX_INPUTS:
            raise GitHubError(
                422,
                f"you may only define up to {MAX_INPUTS} `inputs` for a `workflow_dispatch` event",
                docs,
            )
        ref = body["ref"].removeprefix("refs/heads/")
        if ref not in self.seed.branches:
            raise GitHubError(422, f"No ref found for: {body['ref']}", docs)
        unexpected = [name for name in inputs if name not in self.cd.inputs]
        if unexpected:
            raise GitHubError(422, f"Unexpected inputs provided: {json.dumps(unexpected)}", docs)
        for name, spec in self.cd.inputs.items():
            if spec.required and (name not in inputs or inputs[name] in ("", None)):
                raise GitHubError(422, f"Required input '{name}' not provided", docs)
        run = self._new_run({k: str(v) for k, v in inputs.items()}, ref, self.now())
        self._reviews[run.id] = asyncio.Event()
        task = asyncio.create_task(self._drive(run), name=f"github-run-{run.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if details or request[API_VERSION] == "2026-03-10":
            return web.json_response(
                {
                    "workflow_run_id": run.id,
                    "run_url": f"{self.shapes.repo_url}/actions/runs/{run.id}",
                    "html_url": self.shapes.run(run)["html_url"],
                }
            )
        return web.Response(status=204)

    async def _list_runs(self, request: web.Request) -> web.Response:
        if "workflow_id" in request.match_info:
            self._workflow(request)
        else:
            self._check_repo(request)
        runs = filter_runs(
            sorted(self.runs.values(), key=lambda r: r.created, reverse=True), request.query
        )
        return web.json_response(
            {
                "total_count": len(runs),
                "workflow_runs": [self.shapes.run(r) for r in page_of(runs, request.query)],
            }
        )

    async def _get_run(self, request: web.Request) -> web.Response:
        return web.json_response(self.shapes.run(self._run(request)))

    async def _list_jobs(self, request: web.Request) -> web.Response:
        run = self._run(request)
        return web.json_response({"total_count": 1, "jobs": [self.shapes.job(run)]})

    def _can_approve(self) -> bool:
        return self.seed.token_user in self.cd.reviewers

    async def _get_pending(self, request: web.Request) -> web.Response:
        run = self._run(request)
        if run.status != "waiting":
            return web.json_response([])
        return web.json_response([self.shapes.pending(run, self.cd.reviewers, self._can_approve())])

    async def _review(self, request: web.Request) -> web.Response:
        run = self._run(request)
        docs = f"{DOCS}/actions/workflow-runs#review-pending-deployments-for-a-workflow-run"
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise GitHubError(400, "Problems parsing JSON", docs) from None
        for name in ("environment_ids", "state", "comment"):
            if not isinstance(body, dict) or name not in body:
                raise GitHubError(422, f'Invalid request.\n\n"{name}" wasn\'t supplied.', docs)
        ids, state = body["environment_ids"], body["state"]
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise GitHubError(
                422, "Invalid request.\n\nFor 'items', the value is not an integer.", docs
            )
        if state not in ("approved", "rejected") or not isinstance(body["comment"], str):
            raise GitHubError(
                422,
                f"Invalid request.\n\nFor 'properties/state', {json.dumps(state)} is not one "
                'of ["approved", "rejected"].',
                docs,
            )
        if run.status != "waiting" or self.shapes.environment_id not in ids:
            raise GitHubError(422, "No pending deployment requests to approve or reject", docs)
        if not self._can_approve():
            raise GitHubError(
                422,
                f"{self.seed.token_user} is not a required reviewer for environment "
                f"{self.cd.environment}",
                docs,
            )
        run.reviewed = state
        run.touch(self.now())
        if state == "rejected":
            self._finish(run, "failure")
        self._reviews[run.id].set()
        return web.json_response([self.shapes.deployment(run)])

    async def _list_artifacts(self, request: web.Request) -> web.Response:
        if "run_id" in request.match_info:
            run_id: int | None = self._run(request).id
        else:
            self._check_repo(request)
            run_id = None
        now = self.now()
        found = [
            a
            for a in sorted(self.artifacts.values(), key=lambda a: a.created, reverse=True)
            if (run_id is None or a.run_id == run_id)
            and request.query.get("name", a.name) == a.name
        ]
        return web.json_response(
            {
                "total_count": len(found),
                "artifacts": [self.shapes.artifact(a, now) for a in page_of(found, request.query)],
            }
        )

    async def _get_artifact(self, request: web.Request) -> web.Response:
        return web.json_response(self.shapes.artifact(self._artifact(request), self.now()))

    def _signature(self, artifact_id: int, expires: int) -> str:
        return hmac.new(self._key, f"{artifact_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    async def _download(self, request: web.Request) -> web.Response:
        artifact = self._artifact(request)
        if request.match_info["archive_format"] != "zip":
            raise GitHubError(404, "Not Found", f"{DOCS}/actions/artifacts#download-an-artifact")
        if artifact.expired(self.now()):
            raise GitHubError(
                410, "Artifact has expired", f"{DOCS}/actions/artifacts#download-an-artifact"
            )
        expires = int(self.now().timestamp()) + DOWNLOAD_URL_SECONDS
        location = (
            f"{self.url}/_blob/artifacts/{artifact.id}?se={expires}"
            f"&sig={self._signature(artifact.id, expires)}"
        )
        return web.Response(status=302, headers={"Location": location})

    async def _blob(self, request: web.Request) -> web.Response:
        """The pre-signed storage URL a download redirects to: valid for a minute, no token
        needed."""
        raw, expires = request.match_info["artifact_id"], request.query.get("se", "")
        artifact = self.artifacts.get(int(raw)) if raw.isdigit() else None
        if (
            artifact is None
            or not expires.isdigit()
            or not hmac.compare_digest(
                self._signature(artifact.id, int(expires)), request.query.get("sig", "")
            )
        ):
            return web.Response(status=403, text="AuthenticationFailed: signature did not match")
        if int(expires) < self.now().timestamp():
            return web.Response(
                status=403, text="AuthenticationFailed: signed expiry time has passed"
            )
        return web.Response(
            body=artifact.data,
            content_type="application/zip",
            headers={"Content-Disposition": f"attachment; filename={artifact.name}.zip"},
        )
