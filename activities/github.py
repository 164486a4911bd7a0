"""GitHub Actions, through githubkit (typed models generated from GitHub's
OpenAPI description): dispatch the production deploy pipeline with a tag, find
and follow the run it started, read its environment's pending deployment (the
approval there stays a human's, in GitHub), and list and download the
pipeline's manifest backups.

GitHub Enterprise Server up to 3.20 refuses the dispatch's `return_run_details`
(github.com added it in February 2026; GHES answers 400 to a body key it does not
know, before dispatching anything): the dispatch is then sent again without it and
the run is found by its title. A rate-limited answer (403 or 429, GitHub's primary
or secondary limit) is retried no sooner than GitHub says: `retry-after`, else
`x-ratelimit-reset` when `x-ratelimit-remaining` is 0, else a minute.

The token is never in a request or a history: requests carry the *name* of the
worker's environment variable holding it (or `<name>_FILE`, a file with it),
and the activity reads it."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import time
import zipfile
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from githubkit import GitHub, Response, TokenAuthStrategy
from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed, RequestTimeout
from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook.cd_config import CdConfig
from runbook.cd_models import (
    MAX_MANIFEST_BYTES,
    ArtifactInfo,
    ArtifactList,
    ArtifactsRequest,
    DispatchRequest,
    FetchedManifest,
    ManifestSource,
    PendingDeployment,
    RunFollow,
    RunState,
    dispatch_facts,
)

from .errors import permanent
from .gatekeeper import Gatekeeper

if TYPE_CHECKING:
    # The API version's generated namespace and models: large modules that `gh.rest` imports
    # on first use, so a worker that never calls GitHub never loads them.
    from githubkit_schemas.v2022_11_28.models import WorkflowRun
    from githubkit_schemas.v2022_11_28.rest import RestNamespace

T = TypeVar("T")

API_VERSION = "2022-11-28"
FIND_RUN_SECONDS = 30  # after a 204 dispatch, how long the new run may take to be listed
CLOCK_SKEW = dt.timedelta(seconds=5)
RUN_DETAILS = "return_run_details"
# GitHub's advice when a limited answer says nothing of when to come back: "wait for at least
# one minute" (docs.github.com, Rate limits for the REST API).
RATE_LIMIT_DEFAULT_WAIT = dt.timedelta(seconds=60)
# The primary limit's window is an hour: a reset further away than that is not believed.
RATE_LIMIT_MAX_WAIT = dt.timedelta(hours=1, minutes=1)
RESET_MARGIN = dt.timedelta(seconds=1)  # x-ratelimit-reset is whole epoch seconds
ARTIFACTS_PER_PAGE = 100  # GitHub's maximum
MAX_ARTIFACT_PAGES = 10


def read_token(env_name: str, environ: Mapping[str, str]) -> str:
    value = environ.get(env_name, "").strip()
    path = environ.get(f"{env_name}_FILE", "")
    if not value and path:
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().strip()
        except OSError as exc:
            raise permanent(
                f"cannot read the GitHub token file named by {env_name}_FILE ({exc.strerror})",
                "GitHubTokenMissing",
            ) from None
    if not value:
        raise permanent(
            f"no GitHub token on this worker: set {env_name} (or {env_name}_FILE) to a token "
            "that may run the workflow",
            "GitHubTokenMissing",
        )
    return value


def _message(response: Response[Any, Any]) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("message") or "") if isinstance(body, dict) else ""


def rate_limit_wait(exc: RequestFailed, now: dt.datetime | None = None) -> dt.timedelta | None:
    """How long GitHub asks a rate-limited caller to wait, or None if the answer is not a rate
    limit. Primary and secondary limits answer 403 or 429: `retry-after` (seconds) wins, then
    `x-ratelimit-reset` (epoch seconds) when `x-ratelimit-remaining` is 0, else a minute."""
    response = exc.response
    status, headers = response.status_code, response.headers
    remaining = headers.get("x-ratelimit-remaining")
    retry_after = headers.get("retry-after")
    limited = status == 429 or (
        status == 403
        and (
            isinstance(exc, RateLimitExceeded)
            or retry_after is not None
            or remaining == "0"
            or "rate limit" in _message(response).lower()
        )
    )
    if not limited:
        return None
    wait: dt.timedelta | None = None
    if retry_after is not None and retry_after.strip().isdigit():
        wait = dt.timedelta(seconds=int(retry_after.strip()))
    elif remaining == "0" and (headers.get("x-ratelimit-reset") or "").strip().isdigit():
        reset = dt.datetime.fromtimestamp(int(headers["x-ratelimit-reset"].strip()), dt.UTC)
        wait = max(reset - (now or dt.datetime.now(dt.UTC)), dt.timedelta(0)) + RESET_MARGIN
    if wait is None:
        wait = RATE_LIMIT_DEFAULT_WAIT
    return min(max(wait, dt.timedelta(seconds=1)), RATE_LIMIT_MAX_WAIT)


def failure(exc: RequestError[Any], what: str, token_env: str) -> ApplicationError:
    """One line for a GitHub error: permanent unless GitHub is unavailable or rate-limits (then
    the next retry waits as long as GitHub asked)."""
    if isinstance(exc, RequestFailed):
        status = exc.response.status_code
        message = _message(exc.response)
        if status == 401:
            return permanent(
                f"GitHub refused the token in {token_env} while {what} (401 "
                f"{message or 'Bad credentials'})",
                "GitHubDenied",
            )
        wait = rate_limit_wait(exc)
        if wait is not None:
            return ApplicationError(
                f"GitHub rate-limited {what} ({status}: {message or 'rate limit exceeded'}); "
                f"retrying in {wait.total_seconds():g}s, as GitHub asked",
                type="GitHubRateLimited",
                next_retry_delay=wait,
            )
        if status >= 500:
            return ApplicationError(
                f"GitHub answered {status} while {what}: {message}; retrying",
                type="GitHubTransient",
            )
        if status in (403, 404):
            return permanent(
                f"GitHub answered {status} while {what}: {message or 'Not Found'} (wrong "
                "repository or workflow, or the token in "
                f"{token_env} may not see it: it needs actions:write)",
                "GitHubRejected",
            )
        return permanent(f"GitHub rejected {what} ({status}): {message}", "GitHubRejected")
    kind = "timed out" if isinstance(exc, RequestTimeout) else f"failed ({type(exc.exc).__name__})"
    return ApplicationError(f"GitHub request {kind} while {what}; retrying", type="GitHubTransient")


def refuses_run_details(exc: RequestError[Any]) -> bool:
    """Whether a dispatch was refused for its `return_run_details` key alone: GitHub Enterprise
    Server before 3.21 validates the body against a schema without it and answers 400 (422 on
    some endpoints) naming the key. Such a refusal dispatched nothing."""
    if not isinstance(exc, RequestFailed) or exc.response.status_code not in (400, 422):
        return False
    try:
        said = exc.response.text
    except (UnicodeDecodeError, ValueError):
        said = ""
    return RUN_DETAILS in said


def _when(value: Any) -> dt.datetime | None:
    return value if isinstance(value, dt.datetime) else None


class GitHubActivities:
    def __init__(
        self,
        api_url: str = "https://api.github.com",
        environ: Mapping[str, str] | None = None,
        gatekeeper: Gatekeeper | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.environ = os.environ if environ is None else environ
        self.gatekeeper = gatekeeper
        # API URLs that refused `return_run_details` (GitHub Enterprise Server before 3.21).
        self._without_run_details: set[str] = set()

    def _client(self, cd: CdConfig) -> GitHub[TokenAuthStrategy]:
        # No retries inside the client: Temporal's retry policy (the runbook's budget) decides.
        return GitHub(
            TokenAuthStrategy(read_token(cd.token_env, self.environ)),
            base_url=self.api_url,
            auto_retry=False,
            timeout=httpx.Timeout(30.0),
        )

    async def _call(self, cd: CdConfig, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except RequestError as exc:
            raise failure(exc, what, cd.token_env) from None

    # -- dispatch --------------------------------------------------------------------------

    @activity.defn(name="github.dispatch")
    async def dispatch(self, request: DispatchRequest) -> RunState:
        """Run the pipeline with the tag, once: a run of this workflow on this branch,
        created since the workflow scheduled the dispatch and titled with the tag, is
        a previous attempt's and is taken instead of dispatching again."""
        cd = request.cd
        if self.gatekeeper is not None:
            entry = next(
                (
                    e
                    for e in self.gatekeeper.catalog.services
                    if e.cd is not None and e.cd.repository == cd.repository
                ),
                None,
            )
            self.gatekeeper.require(
                request.grant,
                entry,
                self.gatekeeper.needed(request.grant, entry),
                dispatch_facts(cd, request.tag),
                f"dispatch {cd.workflow_name} with tag {request.tag}",
            )
        owner, repo = cd.repository.split("/")
        async with self._client(cd) as gh:
            rest = gh.rest(API_VERSION)
            earlier = await self._find_run(rest, cd, request.tag, request.not_before - CLOCK_SKEW)
            if earlier is not None:
                return await self._state(rest, cd, earlier, adopted=True)
            what = f"dispatching {cd.workflow} on {cd.ref} in {cd.repository}"
            answer = await self._send_dispatch(rest, cd, request.tag, what)
            activity.logger.info("dispatched %s with %s=%s", cd.workflow, cd.tag_input, request.tag)
            if answer.status_code == 200:
                run_id = int(answer.json()["workflow_run_id"])
                run = (
                    await self._call(
                        cd,
                        f"reading run {run_id}",
                        rest.actions.async_get_workflow_run(owner, repo, run_id),
                    )
                ).parsed_data
                return await self._state(rest, cd, run)
            # 204 (a server without run details): the run is the one that appears for the tag.
            deadline = time.monotonic() + FIND_RUN_SECONDS
            while time.monotonic() < deadline:
                run = await self._find_run(rest, cd, request.tag, request.not_before - CLOCK_SKEW)
                if run is not None:
                    return await self._state(rest, cd, run)
                await asyncio.sleep(1)
        raise permanent(
            f"{cd.workflow_name} was dispatched with {cd.tag_input}={request.tag}, but no run "
            "titled with the tag appeared on "
            f"{cd.ref} within {FIND_RUN_SECONDS}s: find it in the Actions tab (the workflow's "
            "run-name should name the tag)",
            "GitHubRunNotFound",
        )

    async def _send_dispatch(
        self, rest: RestNamespace, cd: CdConfig, tag: str, what: str
    ) -> Response[Any, Any]:
        """POST the dispatch, asking for the run's details unless this server is known not to
        take the key. A 400/422 naming `return_run_details` (GitHub Enterprise Server before
        3.21) is a refusal of the body: nothing was dispatched, so a plain dispatch is safe and
        is sent once; its run is then found by its title."""
        owner, repo = cd.repository.split("/")
        body: dict[str, Any] = {"ref": cd.ref, "inputs": {cd.tag_input: tag}}
        if self.api_url not in self._without_run_details:
            try:
                answer: Response[Any, Any] = await rest.actions.async_create_workflow_dispatch(
                    owner, repo, cd.workflow, **body, return_run_details=True
                )
                return answer
            except RequestError as exc:
                if not refuses_run_details(exc):
                    raise failure(exc, what, cd.token_env) from None
                activity.logger.info(
                    "%s does not take %s (GitHub Enterprise Server before 3.21): dispatching "
                    "without it and finding the run by its title",
                    self.api_url,
                    RUN_DETAILS,
                )
                self._without_run_details.add(self.api_url)
        return await self._call(
            cd, what, rest.actions.async_create_workflow_dispatch(owner, repo, cd.workflow, **body)
        )

    async def _find_run(
        self, rest: RestNamespace, cd: CdConfig, tag: str, since: dt.datetime
    ) -> WorkflowRun | None:
        owner, repo = cd.repository.split("/")
        created = ">=" + since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        listed = await self._call(
            cd,
            f"listing the runs of {cd.workflow}",
            rest.actions.async_list_workflow_runs(
                owner,
                repo,
                cd.workflow,
                event="workflow_dispatch",
                branch=cd.ref,
                created=created,
                per_page=50,
            ),
        )
        mine = [
            r
            for r in listed.parsed_data.workflow_runs
            if _names_tag(r.display_title or "", cd.tag_input, tag)
        ]
        return min(mine, key=lambda r: r.created_at) if mine else None

    # -- follow ------------------------------------------------------------------------------

    @activity.defn(name="github.follow_run")
    async def follow_run(self, request: RunFollow) -> RunState:
        """Return when the run's status differs from `known_status`, or it completed;
        heartbeats while it waits."""
        cd = request.cd
        owner, repo = cd.repository.split("/")
        async with self._client(cd) as gh:
            rest = gh.rest(API_VERSION)
            while True:
                run = (
                    await self._call(
                        cd,
                        f"reading run {request.run_id}",
                        rest.actions.async_get_workflow_run(owner, repo, request.run_id),
                    )
                ).parsed_data
                activity.heartbeat({"status": run.status})
                if run.status != request.known_status or run.status == "completed":
                    return await self._state(rest, cd, run)
                await asyncio.sleep(request.poll_seconds)

    async def _state(
        self, rest: RestNamespace, cd: CdConfig, run: WorkflowRun, *, adopted: bool = False
    ) -> RunState:
        owner, repo = cd.repository.split("/")
        state = RunState(
            run_id=run.id,
            number=run.run_number,
            html_url=run.html_url,
            status=run.status or "",
            conclusion=run.conclusion,
            title=run.display_title or "",
            adopted=adopted,
        )
        if run.status == "waiting":
            pending = (
                await self._call(
                    cd,
                    f"reading the pending deployments of run {run.id}",
                    rest.actions.async_get_pending_deployments_for_run(owner, repo, run.id),
                )
            ).parsed_data
            for item in pending:
                reviewers = [
                    getattr(r.reviewer, "login", None)
                    or getattr(r.reviewer, "slug", None)
                    or getattr(r.reviewer, "name", "?")
                    for r in item.reviewers
                ]
                state.pending.append(
                    PendingDeployment(
                        environment=item.environment.name or "",
                        environment_id=item.environment.id or 0,
                        reviewers=[str(r) for r in reviewers],
                        current_user_can_approve=item.current_user_can_approve,
                        waiting_since=_when(item.wait_timer_started_at),
                    )
                )
        if run.status == "completed" and run.conclusion != "success":
            jobs = (
                await self._call(
                    cd,
                    f"reading the jobs of run {run.id}",
                    rest.actions.async_list_jobs_for_workflow_run(owner, repo, run.id),
                )
            ).parsed_data
            state.failed_steps = [
                f"{job.name}: {step.name}"
                for job in jobs.jobs
                for step in (job.steps or [])
                if step.conclusion == "failure"
            ]
        return state

    # -- artifacts -----------------------------------------------------------------------------

    @activity.defn(name="github.list_backups")
    async def list_backups(self, request: ArtifactsRequest) -> ArtifactList:
        """The pipeline's newest `limit` manifest backups (or the artifacts of one name), newest
        first. The repository's artifacts are read page by page (100 a page, GitHub's most): a
        repository whose other workflows upload artifacts too may hold its backups past the
        first page."""
        cd = request.cd
        owner, repo = cd.repository.split("/")
        found: list[ArtifactInfo] = []
        async with self._client(cd) as gh:
            actions = gh.rest(API_VERSION).actions
            for page in range(1, MAX_ARTIFACT_PAGES + 1):
                kwargs: dict[str, Any] = {"per_page": ARTIFACTS_PER_PAGE, "page": page}
                if request.name:
                    kwargs["name"] = request.name
                listed = (
                    await self._call(
                        cd,
                        f"listing the artifacts of {cd.repository} (page {page})",
                        actions.async_list_artifacts_for_repo(owner, repo, **kwargs),
                    )
                ).parsed_data
                found.extend(
                    ArtifactInfo(
                        id=a.id,
                        name=a.name,
                        run_id=getattr(a.workflow_run, "id", None) if a.workflow_run else None,
                        created=_when(a.created_at),
                        expired=a.expired,
                        size=a.size_in_bytes,
                    )
                    for a in listed.artifacts
                    if request.name or a.name.startswith(cd.backup_prefix)
                )
                seen = (page - 1) * ARTIFACTS_PER_PAGE + len(listed.artifacts)
                if len(listed.artifacts) < ARTIFACTS_PER_PAGE or seen >= listed.total_count:
                    break
            else:
                activity.logger.warning(
                    "%s has more than %d artifacts: only the first %d pages were read",
                    cd.repository,
                    MAX_ARTIFACT_PAGES * ARTIFACTS_PER_PAGE,
                    MAX_ARTIFACT_PAGES,
                )
        unique = {a.id: a for a in found}.values()  # an upload between two pages shifts them
        newest = sorted(
            unique, key=lambda a: a.created or dt.datetime.min.replace(tzinfo=dt.UTC), reverse=True
        )
        return ArtifactList(artifacts=newest[: request.limit])

    @activity.defn(name="github.download_backup")
    async def download_backup(self, request: ArtifactsRequest) -> FetchedManifest:
        """Download a backup artifact (a zip, as upload-artifact stores it) and return the one
        manifest in it."""
        cd = request.cd
        if not request.name:
            raise permanent(
                "name the backup artifact to download (e.g. deployment-backup-20250116-120000)",
                "ArtifactNotFound",
            )
        listed = await self.list_backups(request)
        usable = [a for a in listed.artifacts if a.name == request.name and not a.expired]
        if not usable:
            state = (
                "has expired"
                if any(a.name == request.name for a in listed.artifacts)
                else "does not exist"
            )
            raise permanent(
                f"artifact {request.name} in {cd.repository} {state}: see the Artifacts of the "
                "production deploy runs in the Actions tab",
                "ArtifactNotFound",
            )
        artifact = usable[0]
        owner, repo = cd.repository.split("/")
        async with self._client(cd) as gh:
            answer = await self._call(
                cd,
                f"downloading artifact {artifact.name}",
                gh.rest(API_VERSION).actions.async_download_artifact(
                    owner, repo, artifact.id, "zip"
                ),
            )
        return FetchedManifest(
            source=ManifestSource(kind="artifact", name=artifact.name),
            text=manifest_from_zip(answer.content, artifact.name),
            detail=f"artifact {artifact.name} (id {artifact.id}, run {artifact.run_id}, created "
            f"{artifact.created})",
        )


def manifest_from_zip(data: bytes, name: str) -> str:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise permanent(f"artifact {name} is not a zip archive", "ArtifactUnreadable") from None
    manifests = [
        i for i in archive.infolist() if i.filename.endswith((".yaml", ".yml")) and not i.is_dir()
    ]
    if len(manifests) != 1:
        raise permanent(
            f"artifact {name} holds {len(manifests)} YAML files "
            f"({', '.join(i.filename for i in manifests) or 'none'}); expected one manifest",
            "ArtifactUnreadable",
        )
    if manifests[0].file_size > MAX_MANIFEST_BYTES:
        raise permanent(
            f"the manifest in artifact {name} is larger than {MAX_MANIFEST_BYTES} bytes",
            "ArtifactUnreadable",
        )
    return archive.read(manifests[0]).decode("utf-8", "replace")


def _names_tag(title: str, tag_input: str, tag: str) -> bool:
    """Whether a run's title (the workflow's run-name) names the tag: a word `tag=1.2.0`, or the tag
    as a word."""
    words = title.replace("(", " ").replace(")", " ").replace(",", " ").split()
    return f"{tag_input}={tag}" in words or tag in words
