"""Cloud Logging's pages as the `logging v2` discovery document describes them, and
the log check's reading of them.

The document (ListLogEntriesResponse.nextPageToken): "If a value for
next_page_token appears and the entries field is empty, it means that the search
found no log entries so far but it did not have time to search all the possible
log entries. Retry the method with this value for page_token to continue the
search." So an empty page with a token is not "no errors": the emulator can
answer so (its `empty_pages` knob), and the reader follows the token, paced
within the project's read quota, or reports the logs unread."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import deque
from collections.abc import AsyncIterator
from types import SimpleNamespace

import aiohttp
import pytest
from googleapiclient import discovery as google_discovery
from googleapiclient.http import build_http

import activities.cloud_logging as cloud_logging
from activities.cloud_logging import MAX_REQUESTS, CloudLogging, LogReadError, ReadQuota
from activities.postchecks import Unreadable, guarded
from runbook.postchecks import PostChecks, judge_logs, log_filter
from sandbox import discovery
from sandbox.cloud_logging import CloudLoggingEmulator

PROJECT = "tekutoko-prod"
SINCE = dt.datetime(2026, 1, 16, 3, 0, 0, tzinfo=dt.UTC)
FILTER = log_filter(PostChecks(), "default", {"app": "tekutoko-api"}, SINCE)


def _pod(name: str, lines: list[str]) -> tuple[SimpleNamespace, dict[str, str]]:
    runtime = SimpleNamespace(
        namespace="default", name=name, container="api", logs=deque(lines), init_logs={}
    )
    return runtime, {"app": "tekutoko-api"}


def pods(errors: int) -> list:
    lines = [f"2026-01-16T03:00:{i:02d}.000000Z level=info msg=ok" for i in range(10)] + [
        f'2026-01-16T03:01:{i:02d}.000000Z level=error msg="boom {i}"' for i in range(errors)
    ]
    return [_pod("tekutoko-api-5c9f7-aaaaa", lines)]


class Clock:
    """A clock the reader's pauses move: nothing here waits for real."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
async def emulator() -> AsyncIterator[CloudLoggingEmulator]:
    state = {"errors": 3}
    emulator = CloudLoggingEmulator(lambda: pods(state["errors"]), project=PROJECT)
    emulator.state = state  # type: ignore[attr-defined]
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def reader(emulator: CloudLoggingEmulator, clock: Clock, **kwargs) -> CloudLogging:
    return CloudLogging(
        emulator.url,
        build_http,
        project=PROJECT,
        quota=kwargs.pop("quota", None) or ReadQuota(clock=clock),
        sleep=clock.sleep,
        clock=clock,
        **kwargs,
    )


def service(emulator: CloudLoggingEmulator):
    return google_discovery.build(
        "logging",
        "v2",
        static_discovery=True,
        http=build_http(),
        client_options={"api_endpoint": emulator.url},
    )


def listing(emulator: CloudLoggingEmulator, **body) -> dict:
    return (
        service(emulator)
        .entries()
        .list(body={"resourceNames": [f"projects/{PROJECT}"], **body})
        .execute(http=build_http())
    )


async def slow_search(emulator: CloudLoggingEmulator, pages) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            emulator.url + "sandbox/logging/slow-search", json={"empty_pages": pages}
        ) as response,
    ):
        return response.status, await response.json()


# -- the emulator ---------------------------------------------------------------------------


async def test_an_unfinished_search_answers_empty_pages_with_a_token_as_documented(
    emulator,
) -> None:
    assert await slow_search(emulator, 2) == (200, {"empty_pages": 2})
    first = await _in_thread(listing, emulator, filter=FILTER)
    assert "entries" not in first and first["nextPageToken"]
    discovery.check("logging", "v2", "ListLogEntriesResponse", first)
    second = await _in_thread(listing, emulator, filter=FILTER, pageToken=first["nextPageToken"])
    assert "entries" not in second and second["nextPageToken"]
    third = await _in_thread(listing, emulator, filter=FILTER, pageToken=second["nextPageToken"])
    assert [e["severity"] for e in third["entries"]] == ["ERROR"] * 3
    assert "nextPageToken" not in third
    discovery.check("logging", "v2", "ListLogEntriesResponse", third)
    # a new listing (no token) starts its search over
    assert "entries" not in await _in_thread(listing, emulator, filter=FILTER)


async def test_the_knob_is_refused_without_a_whole_number(emulator) -> None:
    for bad in (-1, "3", True, None):
        status, body = await slow_search(emulator, bad)
        assert status == 400 and "empty_pages" in body["error"]
    assert emulator.empty_pages == 0


async def _in_thread(function, *args, **kwargs):
    return await asyncio.to_thread(function, *args, **kwargs)


# -- the reader -----------------------------------------------------------------------------


async def test_empty_pages_are_followed_with_growing_pauses(emulator) -> None:
    emulator.empty_pages = 3
    clock = Clock()
    count, messages, more = await reader(emulator, clock).errors(PROJECT, FILTER, 2, enough=0)
    assert (count, more) == (3, False)
    assert [m.split(": ", 1)[1] for m in messages] == [
        'level=error msg="boom 0"',
        'level=error msg="boom 1"',
    ]
    assert clock.slept == [0.25, 0.5, 1.0]


async def test_no_errors_are_reported_only_once_the_listing_has_ended(emulator) -> None:
    emulator.state["errors"] = 0
    emulator.empty_pages = 4
    clock = Clock()
    assert await reader(emulator, clock).errors(PROJECT, FILTER, 5, enough=0) == (0, [], False)


async def test_a_read_that_runs_out_of_time_keeps_its_place_for_the_next(emulator) -> None:
    emulator.empty_pages = 7  # 5 pages a read: the first read cannot finish
    clock = Clock()
    logs = reader(emulator, clock)
    with pytest.raises(LogReadError) as unread:
        await logs.errors(PROJECT, FILTER, 5, enough=0)
    assert "search is not finished" in str(unread.value) and "0 entries in 5 pages" in str(
        unread.value
    )
    clock.now += 30  # the verification reads again later
    count, _, more = await logs.errors(PROJECT, FILTER, 5, enough=0)
    assert (count, more) == (3, False)  # two more pages, not seven more


async def test_pages_that_keep_coming_empty_are_not_read_never_passed(emulator) -> None:
    emulator.state["errors"] = 0
    emulator.empty_pages = 10_000
    clock = Clock()
    logs = reader(emulator, clock)
    said = []
    for _ in range(MAX_REQUESTS):
        with pytest.raises(LogReadError) as unread:
            await logs.errors(PROJECT, FILTER, 5, enough=0)
        said.append(str(unread.value))
        clock.now += 30
        if "not judged" in said[-1]:
            break
    assert "not judged" in said[-1] and f"after {MAX_REQUESTS} entries.list" in said[-1]
    # the check reports it unread (the verification reads again, and never passes it)
    with pytest.raises(Unreadable) as failure:
        await guarded("Cloud Logging entries", logs.errors(PROJECT, FILTER, 5, enough=0))
    assert "could not read Cloud Logging entries" in str(failure.value)


async def test_without_a_tolerance_the_listing_is_read_to_its_end(emulator, monkeypatch) -> None:
    """The log check's call as it stands (no `enough`): the count is the listing's whole, so
    "0+ entries" can never be judged as healthy."""
    monkeypatch.setattr(cloud_logging, "PAGE_SIZE", 1)
    emulator.empty_pages = 2
    clock = Clock()
    count, messages, more = await reader(emulator, clock).errors(PROJECT, FILTER, 5)
    assert (count, more) == (3, False) and len(messages) == 3
    name, ok, detail = judge_logs(count, messages, PostChecks(), more=more)
    assert not ok and detail.startswith("3 log entries")


async def test_past_the_tolerance_the_pages_left_are_not_read(emulator, monkeypatch) -> None:
    monkeypatch.setattr(cloud_logging, "PAGE_SIZE", 1)
    emulator.state["errors"] = 40
    clock = Clock()
    logs = reader(emulator, clock)
    count, _, more = await logs.errors(PROJECT, FILTER, 5, enough=2)
    assert (count, more) == (3, True)
    assert not judge_logs(count, [], PostChecks(max_error_entries=2), more=more)[1]


async def test_requests_are_paced_within_the_projects_read_quota(emulator) -> None:
    clock = Clock()
    quota = ReadQuota(per_minute=4, clock=clock)
    logs = reader(emulator, clock, quota=quota)
    emulator.empty_pages = 6
    with pytest.raises(LogReadError) as paced:
        await logs.errors(PROJECT, FILTER, 5, enough=0)
    assert "within 4 requests a minute for projects/tekutoko-prod" in str(paced.value)
    assert len(quota._sent[PROJECT]) == 4 and max(clock.slept) < 60
    clock.now += 60  # a minute later the quota has room again, and the read goes on
    assert (await logs.errors(PROJECT, FILTER, 5, enough=0))[0] == 3
    assert len(quota._sent[PROJECT]) == 3


async def test_the_quota_is_the_projects_not_the_readers(emulator) -> None:
    clock = Clock()
    quota = ReadQuota(per_minute=2, clock=clock)
    one, two = reader(emulator, clock, quota=quota), reader(emulator, clock, quota=quota)
    await one.errors(PROJECT, FILTER, 1, enough=0)
    await two.errors(PROJECT, FILTER, 1, enough=0)
    assert quota.wait(PROJECT) == pytest.approx(60.0)
    assert quota.wait("another-project") == 0.0


def test_the_quota_figure_is_cloud_loggings() -> None:
    assert cloud_logging.QUOTA_PER_MINUTE == 60
    assert cloud_logging.READS_PER_MINUTE <= cloud_logging.QUOTA_PER_MINUTE
    body = json.dumps(discovery.document("logging", "v2")["schemas"]["ListLogEntriesResponse"])
    assert "did not have time to search all the possible log entries" in body
