"""Two behaviours of the real Cloud SQL Admin API, as emulator knobs, and what
modoru's PITR pre-check makes of them:

- a 403 "The caller does not have permission" for an instance that does not
  exist (googleapis/google-api-go-client#1815): the check confirms with
  `instances.list` and finds the destination free, not "denied";
- `getLatestRecoveryTime` trailing the request while the logs are shipped: a
  restore point in that gap is waited for (a retryable failure timed to the
  gap), not refused."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from googleapiclient.http import build_http
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.cloudsql import api_time
from activities.cloudsql_pitr import CATCH_UP_LIMIT, PitrActivities
from activities.sqladmin import SqlAdmin
from runbook.pitr_models import PitrCheckRequest
from sandbox.cloudsql import CloudSqlEmulator
from tests.sqladmin_client import ApiFailure, SqlAdminApi, running_emulator

PROJECT = "tekutoko-prod"
SOURCE = "quirk-src"


@pytest.fixture(scope="module")
async def emulator() -> AsyncIterator[CloudSqlEmulator]:
    async with running_emulator(
        "modoru-quirk-", SOURCE, database="shop", user="shop_app", password="quirk-secret"
    ) as running:
        yield running


@pytest.fixture
async def knobs(emulator: CloudSqlEmulator) -> AsyncIterator[CloudSqlEmulator]:
    """The emulator, its knobs put back afterwards."""
    yield emulator
    emulator.set_behaviour(missing_instance_status=404, recovery_lag_seconds=0)


@pytest.fixture(scope="module")
def api(emulator: CloudSqlEmulator) -> SqlAdminApi:
    return SqlAdminApi(emulator.url)


async def restorable_point(emulator: CloudSqlEmulator, back: dt.timedelta) -> dt.datetime:
    """`back` before now, but never before the source's first backup ended (the window's
    start): on a busy machine a test may begin right after the module made the instance."""
    window = await SqlAdmin(emulator.url, build_http).latest_recovery_time(PROJECT, SOURCE)
    earliest = api_time(window["earliestRecoveryTime"])
    point = max(dt.datetime.now(dt.UTC) - back, earliest + dt.timedelta(milliseconds=100))
    ahead = (point - dt.datetime.now(dt.UTC)).total_seconds()
    if ahead > -0.05:
        await asyncio.sleep(ahead + 0.2)  # the point must be in the past when it is asked for
    return point


def pitr(emulator: CloudSqlEmulator) -> PitrActivities:
    return PitrActivities(SqlAdmin(emulator.url, build_http), PROJECT)


def check(destination: str, point: dt.datetime, source: str = SOURCE) -> PitrCheckRequest:
    return PitrCheckRequest(source=source, destination=destination, point_in_time=point)


async def put_behaviour(emulator: CloudSqlEmulator, body: Any) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.put(emulator.url + "sandbox/behaviour", json=body) as answer,
    ):
        return answer.status, await answer.json()


# -- the knobs --------------------------------------------------------------------------------


async def test_the_knobs_are_set_over_http_and_checked(knobs) -> None:
    assert await put_behaviour(knobs, {"missing_instance_status": 403}) == (
        200,
        {"missing_instance_status": 403, "recovery_lag_seconds": 0.0},
    )
    assert await put_behaviour(knobs, {"recovery_lag_seconds": 300}) == (
        200,
        {"missing_instance_status": 403, "recovery_lag_seconds": 300.0},
    )
    for bad in ({"missing_instance_status": 500}, {"recovery_lag_seconds": -1}, {"lag": 3}, []):
        status, answer = await put_behaviour(knobs, bad)
        assert status == 400 and answer["error"], bad
    assert knobs.behaviour() == {"missing_instance_status": 403, "recovery_lag_seconds": 300.0}


async def test_a_missing_instance_may_answer_403_as_cloud_sql_does(knobs, api) -> None:
    with pytest.raises(ApiFailure) as caught:
        await api("instances", "get", project=PROJECT, instance="no-such-db")
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
    knobs.set_behaviour(missing_instance_status=403)
    for resource, method in (
        ("instances", "get"),
        ("projects.instances", "getLatestRecoveryTime"),
    ):
        with pytest.raises(ApiFailure) as caught:
            await api(resource, method, project=PROJECT, instance="no-such-db")
        assert (caught.value.code, caught.value.status, caught.value.message) == (
            403,
            "PERMISSION_DENIED",
            "The caller does not have permission",
        )
    # An instance that exists is still read.
    assert (await api("instances", "get", project=PROJECT, instance=SOURCE))["name"] == SOURCE


async def test_instances_list_takes_field_value_filters(emulator, api) -> None:
    named = await api("instances", "list", project=PROJECT, filter=f"name:{SOURCE}")
    assert [i["name"] for i in named["items"]] == [SOURCE]
    assert "items" not in await api("instances", "list", project=PROJECT, filter="name:quirk")
    both = await api(
        "instances", "list", project=PROJECT, filter='state:RUNNABLE AND name:"quirk-src"'
    )
    assert [i["name"] for i in both["items"]] == [SOURCE]
    nested = await api(
        "instances",
        "list",
        project=PROJECT,
        filter="settings.backupConfiguration.pointInTimeRecoveryEnabled:true",
    )
    assert SOURCE in [i["name"] for i in nested["items"]]
    with pytest.raises(ApiFailure) as caught:
        await api("instances", "list", project=PROJECT, filter="name:a OR name:b")
    assert caught.value.code == 400 and "field:value" in caught.value.message


async def test_the_latest_recovery_time_trails_the_request_by_the_lag(knobs, api) -> None:
    knobs.set_behaviour(recovery_lag_seconds=0)
    before = dt.datetime.now(dt.UTC)
    window = await api(
        "projects.instances", "getLatestRecoveryTime", project=PROJECT, instance=SOURCE
    )
    assert api_time(window["latestRecoveryTime"]) >= before - dt.timedelta(milliseconds=1)
    knobs.set_behaviour(recovery_lag_seconds=2)
    await asyncio.sleep(2.5)  # the window's start (the first backup) lies 2 s back
    before = dt.datetime.now(dt.UTC)
    window = await api(
        "projects.instances", "getLatestRecoveryTime", project=PROJECT, instance=SOURCE
    )
    latest = api_time(window["latestRecoveryTime"])
    after = dt.datetime.now(dt.UTC)
    assert (
        before - dt.timedelta(seconds=2, milliseconds=1)
        <= latest
        <= after - dt.timedelta(seconds=2)
    )
    # A clone to a moment inside the lag is outside the window, as on Cloud SQL.
    with pytest.raises(ApiFailure) as caught:
        await api(
            "instances",
            "clone",
            project=PROJECT,
            instance=SOURCE,
            body={
                "cloneContext": {
                    "destinationInstanceName": "quirk-too-soon",
                    "pointInTime": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                }
            },
        )
    assert caught.value.code == 400 and "outside the recovery window" in caught.value.message
    # A lag longer than the window's age: the window ends where it starts, never before.
    knobs.set_behaviour(recovery_lag_seconds=86_400)
    window = await api(
        "projects.instances", "getLatestRecoveryTime", project=PROJECT, instance=SOURCE
    )
    assert window["latestRecoveryTime"] == window["earliestRecoveryTime"]


# -- what the PITR pre-check makes of them ----------------------------------------------------


async def test_a_free_destination_answered_403_is_free(knobs) -> None:
    knobs.set_behaviour(missing_instance_status=403)
    point = await restorable_point(knobs, dt.timedelta(milliseconds=300))
    result = await ActivityEnvironment().run(pitr(knobs).pitr_check, check("quirk-restored", point))
    assert result.destination_free and result.problems == [] and result.pitr_enabled
    # Taken is still taken: the source itself as destination.
    taken = await ActivityEnvironment().run(pitr(knobs).pitr_check, check(SOURCE, point))
    assert not taken.destination_free
    assert taken.problems == [
        f"an instance named {SOURCE!r} already exists: choose another --new-instance"
    ]
    # A source that does not exist says so, not "denied".
    missing = await ActivityEnvironment().run(
        pitr(knobs).pitr_check, check("x-restored", point, source="no-such-db")
    )
    assert missing.problems == [
        f"Cloud SQL instance 'no-such-db' does not exist in project {PROJECT!r}"
    ]
    # The confirmation went through instances.list, filtered by the name.
    listed = [e for e in knobs.requests.since(0) if e["path"].endswith("/instances")]
    assert any("filter=name:quirk-restored" in e["query"] for e in listed)


async def test_a_real_denial_stays_a_denial(knobs) -> None:
    # Another project: get and list are both refused, so the get's refusal stands.
    admin = SqlAdmin(knobs.url, build_http)
    with pytest.raises(ApplicationError) as caught:
        await admin.instance("someone-elses-project", SOURCE)
    assert caught.value.type == "CloudSqlDenied" and caught.value.non_retryable
    assert "reading instance quirk-src" in caught.value.message
    # And an instance that exists, refused to get but listed, is the listed resource.
    knobs.set_behaviour(missing_instance_status=403)
    assert (await admin.listed_instance(PROJECT, SOURCE))["name"] == SOURCE
    assert await admin.listed_instance(PROJECT, "quirk") is None


async def test_a_restore_point_inside_the_lag_is_waited_for(knobs) -> None:
    point = await restorable_point(knobs, dt.timedelta(seconds=1))
    knobs.set_behaviour(recovery_lag_seconds=30)
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(pitr(knobs).pitr_check, check("quirk-later", point))
    error = caught.value
    assert error.type == "RecoveryWindowBehind" and not error.non_retryable
    assert dt.timedelta(seconds=2) <= error.next_retry_delay <= dt.timedelta(seconds=33)
    assert "still shipping its transaction logs" in error.message
    # With something else wrong too, everything is listed at once instead.
    result = await ActivityEnvironment().run(pitr(knobs).pitr_check, check(SOURCE, point))
    assert len(result.problems) == 2 and "not recoverable yet" in result.problems[1]
    # Once the window has caught up, the same point passes.
    knobs.set_behaviour(recovery_lag_seconds=0)
    result = await ActivityEnvironment().run(pitr(knobs).pitr_check, check("quirk-later", point))
    assert result.problems == [] and result.latest >= point


class FarBehind:
    """An admin whose window ended long before the restore point: logs not shipping at all."""

    def __init__(self, latest: dt.datetime) -> None:
        self.latest = latest

    async def instance(self, project: str, name: str) -> dict | None:
        if name != SOURCE:
            return None
        return {"settings": {"backupConfiguration": {"pointInTimeRecoveryEnabled": True}}}

    async def latest_recovery_time(self, project: str, instance: str) -> dict:
        stamp = self.latest.isoformat().replace("+00:00", "Z")
        return {"earliestRecoveryTime": "2026-01-01T00:00:00Z", "latestRecoveryTime": stamp}

    async def backup_runs(self, project: str, instance: str, max_results: int = 50) -> list:
        return []


async def test_a_window_far_behind_is_a_problem_not_a_wait() -> None:
    now = dt.datetime.now(dt.UTC)
    stale = PitrActivities(FarBehind(now - CATCH_UP_LIMIT - dt.timedelta(minutes=5)), PROJECT)
    result = await ActivityEnvironment().run(
        stale.pitr_check, check("x-restored", now - dt.timedelta(seconds=5))
    )
    assert len(result.problems) == 1 and "after the latest recoverable time" in result.problems[0]
