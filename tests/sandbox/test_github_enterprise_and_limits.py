"""GitHub Enterprise Server before 3.21 and GitHub's rate limits, on the emulator
and through modoru's GitHub activities.

- GHES up to 3.20 refuses a dispatch naming `return_run_details` with 400 and
  dispatches nothing (cli/cli#12672); the activity then dispatches once without
  it and finds the run by its title.
- A rate-limited answer (403/429 with `retry-after`, or `x-ratelimit-remaining:
  0` and `x-ratelimit-reset`) becomes a retryable failure whose next retry waits
  as long as GitHub said (docs.github.com, Rate limits for the REST API).
- The backups are listed page by page (100 a page)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from githubkit.exception import RequestFailed
from githubkit.response import Response
from multidict import CIMultiDict
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.github import (
    RATE_LIMIT_DEFAULT_WAIT,
    GitHubActivities,
    rate_limit_wait,
    refuses_run_details,
)
from runbook.cd_config import CdConfig
from runbook.cd_models import ArtifactsRequest, DispatchRequest
from sandbox.github import GitHubEmulator
from sandbox.scenario import GitHubSeed

CD = CdConfig(repository="tekutoko/tekutoko-api", token_env="GH_TOKEN")
DISPATCHES = "/repos/tekutoko/tekutoko-api/actions/workflows/cd-production.yml/dispatches"


def seed(**changes) -> GitHubSeed:
    return GitHubSeed.model_validate({"cd": {"step_seconds": 30}, **changes})


async def started(emulator: GitHubEmulator) -> GitHubEmulator:
    await emulator.start()
    return emulator


@pytest.fixture
async def ghes() -> AsyncIterator[GitHubEmulator]:
    emulator = await started(GitHubEmulator(seed(enterprise_version="3.20")))
    yield emulator
    await emulator.stop()


@pytest.fixture
async def dotcom() -> AsyncIterator[GitHubEmulator]:
    emulator = await started(GitHubEmulator(seed()))
    yield emulator
    await emulator.stop()


def activities(emulator: GitHubEmulator) -> GitHubActivities:
    return GitHubActivities(emulator.url, environ={"GH_TOKEN": emulator.token})


async def post(
    emulator: GitHubEmulator, path: str, body: dict, version: str = "2022-11-28"
) -> tuple[int, dict, CIMultiDict[str]]:
    headers = {"Authorization": f"Bearer {emulator.token}", "X-GitHub-Api-Version": version}
    async with (
        aiohttp.ClientSession() as session,
        session.post(emulator.url + path, json=body, headers=headers) as answer,
    ):
        text = await answer.text()
        return answer.status, (await answer.json() if text else {}), answer.headers.copy()


async def admin(emulator: GitHubEmulator, path: str, body: dict) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.put(emulator.url + path, json=body) as answer,
    ):
        return answer.status, await answer.json()


def dispatch_request(tag: str) -> DispatchRequest:
    return DispatchRequest(
        cd=CD, tag=tag, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )


# -- the emulator as GitHub Enterprise Server 3.20 --------------------------------------------


async def test_ghes_3_20_refuses_return_run_details_and_dispatches_nothing(ghes) -> None:
    body = {"ref": "main", "inputs": {"tag": "1.2.0"}, "return_run_details": True}
    status, answer, _ = await post(ghes, DISPATCHES, body)
    assert status == 400
    assert answer["message"] == 'Invalid request.\n\n"return_run_details" is not a permitted key.'
    assert "enterprise-server@3.20" in answer["documentation_url"]
    assert ghes.runs == {} and ghes.effects.since(0) == []
    # Even false: the key itself is unknown there.
    status, _, _ = await post(ghes, DISPATCHES, {**body, "return_run_details": False})
    assert status == 400 and ghes.runs == {}
    # Without it: the plain 204, and one run.
    status, answer, _ = await post(ghes, DISPATCHES, {"ref": "main", "inputs": {"tag": "1.2.0"}})
    assert (status, answer, len(ghes.runs)) == (204, {}, 1)
    # API version 2026-03-10 (which always returns run details) is unknown there.
    status, answer, _ = await post(ghes, DISPATCHES, {"ref": "main"}, version="2026-03-10")
    assert status == 400 and "Supported versions: 2022-11-28." in answer["message"]


async def test_the_enterprise_version_is_an_admin_knob(dotcom) -> None:
    body = {"ref": "main", "inputs": {"tag": "1.2.0"}, "return_run_details": True}
    assert (await post(dotcom, DISPATCHES, body))[0] == 200
    assert await admin(dotcom, "/sandbox/github", {"enterprise_version": "3.20"}) == (
        200,
        {"enterprise_version": "3.20"},
    )
    assert (await post(dotcom, DISPATCHES, body))[0] == 400
    assert (await admin(dotcom, "/sandbox/github", {"enterprise_version": "3.21"}))[0] == 200
    assert (await post(dotcom, DISPATCHES, body))[0] == 200
    assert (await admin(dotcom, "/sandbox/github", {"enterprise_version": "three"}))[0] == 400
    assert (await admin(dotcom, "/sandbox/github", {"enterprise_version": None}))[0] == 200
    assert dotcom.enterprise_version is None and len(dotcom.runs) == 2


async def test_dispatch_on_ghes_falls_back_to_a_plain_dispatch_found_by_title(ghes) -> None:
    gh = activities(ghes)
    state = await ActivityEnvironment().run(gh.dispatch, dispatch_request("1.2.0"))
    (run,) = ghes.runs.values()
    assert state.run_id == run.id and not state.adopted and "1.2.0" in state.title
    dispatched = [e for e in ghes.requests.since(0) if e["path"] == DISPATCHES]
    assert [(e["status"], e["applied"]) for e in dispatched] == [(400, False), (204, True)]
    assert len(ghes.effects.since(0)) == 1
    # The server is remembered: the next dispatch goes plain at once.
    mark = ghes.requests.last_seq
    await ActivityEnvironment().run(gh.dispatch, dispatch_request("1.3.0"))
    assert [e["status"] for e in ghes.requests.since(mark) if e["path"] == DISPATCHES] == [204]
    assert len(ghes.runs) == 2


async def test_dispatch_on_github_com_takes_the_run_details(dotcom) -> None:
    state = await ActivityEnvironment().run(activities(dotcom).dispatch, dispatch_request("1.2.0"))
    (run,) = dotcom.runs.values()
    assert state.run_id == run.id
    dispatched = [e for e in dotcom.requests.since(0) if e["path"] == DISPATCHES]
    assert [e["status"] for e in dispatched] == [200]


async def test_other_refusals_of_a_dispatch_stay_permanent(ghes) -> None:
    bad = CD.model_copy(update={"ref": "no-such-branch"})
    request = DispatchRequest(cd=bad, tag="1.2.0", not_before=dt.datetime.now(dt.UTC))
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(activities(ghes).dispatch, request)
    # The 400 for the key, then the plain dispatch's own 422: not retried, nothing dispatched.
    assert caught.value.non_retryable and caught.value.type == "GitHubRejected"
    assert "No ref found for: no-such-branch" in caught.value.message
    assert ghes.runs == {}


# -- rate limits ------------------------------------------------------------------------------


async def test_every_answer_carries_the_rate_limit_headers(dotcom) -> None:
    status, _, headers = await post(dotcom, DISPATCHES, {"ref": "main", "inputs": {"tag": "1"}})
    assert status == 204
    assert headers["x-ratelimit-limit"] == "5000" and headers["x-ratelimit-remaining"] == "4999"
    assert headers["x-ratelimit-resource"] == "core" and headers["x-ratelimit-reset"].isdigit()
    # An error answer too.
    status, _, headers = await post(dotcom, DISPATCHES.replace("cd-", "no-"), {"ref": "main"})
    assert status == 404 and headers["x-ratelimit-remaining"] == "4998"


async def test_a_spent_primary_limit_answers_403_until_its_reset(dotcom) -> None:
    status, state = await admin(
        dotcom, "/sandbox/rate_limit", {"kind": "primary", "reset_in_seconds": 2}
    )
    assert status == 200 and state["used"] == 5000
    status, answer, headers = await post(dotcom, DISPATCHES, {"ref": "main"})
    assert status == 403 and answer["message"].startswith("API rate limit exceeded for user ID")
    assert headers["x-ratelimit-remaining"] == "0"
    reset = int(headers["x-ratelimit-reset"])
    assert 0 < reset - dt.datetime.now(dt.UTC).timestamp() <= 3
    assert dotcom.runs == {} and dotcom.effects.since(0) == []
    # The activity's failure: retryable, next retry at the reset.
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(activities(dotcom).dispatch, dispatch_request("1.2.0"))
    error = caught.value
    assert not error.non_retryable and error.type == "GitHubRateLimited"
    assert error.next_retry_delay is not None
    assert dt.timedelta(seconds=1) <= error.next_retry_delay <= dt.timedelta(seconds=4)
    # Past the reset the budget is back.
    dotcom.now = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    state = await ActivityEnvironment().run(activities(dotcom).dispatch, dispatch_request("1.2.0"))
    assert state.run_id in dotcom.runs


async def test_a_secondary_limit_waits_as_retry_after_says(dotcom) -> None:
    knob = {"kind": "secondary", "resource": "dispatches", "retry_after_seconds": 7, "status": 429}
    assert (await admin(dotcom, "/sandbox/rate_limit", knob))[0] == 200
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(activities(dotcom).dispatch, dispatch_request("1.2.0"))
    error = caught.value
    assert error.type == "GitHubRateLimited" and not error.non_retryable
    assert error.next_retry_delay == dt.timedelta(seconds=7)
    assert "secondary rate limit" in error.message and "retrying in 7s" in error.message
    assert dotcom.runs == {}
    (limited,) = dotcom.rate_limited
    assert limited["status"] == 429 and limited["headers"]["retry-after"] == "7"
    # Used up: the next dispatch goes through (the listing before it was never limited).
    state = await ActivityEnvironment().run(activities(dotcom).dispatch, dispatch_request("1.2.0"))
    assert state.run_id in dotcom.runs


def failed(status: int, headers: dict[str, str], message: str = "") -> RequestFailed:
    request = httpx.Request("POST", "https://api.github.com/x")
    raw = httpx.Response(status, headers=headers, json={"message": message}, request=request)
    return RequestFailed(Response(raw, dict))


def test_the_wait_follows_github_s_documented_order() -> None:
    now = dt.datetime(2026, 12, 7, 21, 0, tzinfo=dt.UTC)
    reset = str(int(now.timestamp()) + 120)
    primary = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
    assert rate_limit_wait(failed(403, primary), now) == dt.timedelta(seconds=121)
    assert rate_limit_wait(failed(429, primary), now) == dt.timedelta(seconds=121)
    # retry-after wins over the reset.
    assert rate_limit_wait(failed(403, {**primary, "retry-after": "30"}), now) == dt.timedelta(
        seconds=30
    )
    # A secondary limit said only in words, or a bare 429: a minute.
    words = failed(403, {}, "You have exceeded a secondary rate limit.")
    assert rate_limit_wait(words, now) == RATE_LIMIT_DEFAULT_WAIT
    assert rate_limit_wait(failed(429, {}), now) == RATE_LIMIT_DEFAULT_WAIT
    # A reset in the past: a second; one absurdly far: at most a window and a minute.
    past = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now.timestamp()) - 50)}
    assert rate_limit_wait(failed(403, past), now) == dt.timedelta(seconds=1)
    far = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now.timestamp()) + 10**6)}
    assert rate_limit_wait(failed(403, far), now) == dt.timedelta(hours=1, minutes=1)
    # A 403 that is not a rate limit is not one.
    assert rate_limit_wait(failed(403, {"x-ratelimit-remaining": "4999"}, "Forbidden"), now) is None
    assert rate_limit_wait(failed(404, {}), now) is None


def test_only_a_refusal_naming_the_key_is_taken_for_an_old_server() -> None:
    key = 'Invalid request.\n\n"return_run_details" is not a permitted key.'
    assert refuses_run_details(failed(400, {}, key))
    assert refuses_run_details(failed(422, {}, key))
    assert not refuses_run_details(failed(422, {}, "No ref found for: main"))
    assert not refuses_run_details(failed(403, {}, key))
    assert not refuses_run_details(failed(500, {}, key))


# -- artifacts, page by page ------------------------------------------------------------------


async def test_backups_are_listed_past_the_first_page(dotcom) -> None:
    run = dotcom.seed_past_run("1.1.0", {"kind": "Deployment"}, dt.datetime.now(dt.UTC))
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    backups = []
    # 230 artifacts of another workflow, newer than the two oldest backups.
    for i in range(230):
        dotcom._upload(run, {"kind": "Deployment"}, start + dt.timedelta(minutes=i + 10))
        dotcom.artifacts[max(dotcom.artifacts)].name = f"coverage-{i}"
    for minutes in (1, 2):
        backups.append(
            dotcom._upload(run, {"kind": "Deployment"}, start + dt.timedelta(minutes=minutes))
        )
    gh = activities(dotcom)
    listed = await ActivityEnvironment().run(gh.list_backups, ArtifactsRequest(cd=CD, limit=5))
    names = [a.name for a in listed.artifacts]
    assert backups[0].name in names and backups[1].name in names
    assert names == sorted(names, reverse=True) and len(names) == 3  # the seeded run's, then these
    pages = [e["query"] for e in dotcom.requests.since(0) if e["path"].endswith("/artifacts")]
    assert pages == [f"per_page=100&page={n}" for n in (1, 2, 3)]
    # The limit holds.
    one = await ActivityEnvironment().run(gh.list_backups, ArtifactsRequest(cd=CD, limit=1))
    assert len(one.artifacts) == 1 and one.artifacts[0].name == names[0]
