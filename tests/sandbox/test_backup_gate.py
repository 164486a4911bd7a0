"""The backup gate through the discovery-built Cloud SQL Admin client (the code
production runs) against the emulator: a fresh backup passes, a stale one is
refused, and with on-demand backups allowed one is taken, its operation polled
to DONE, and the gate passes on the new run."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from googleapiclient.http import build_http
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.cloudsql import CloudSqlActivities
from activities.sqladmin import SqlAdmin
from runbook.migration_models import BackupCheckRequest
from sandbox.cloudsql import CloudSqlEmulator
from sandbox.scenario import FaultRule
from tests.sqladmin_client import running_emulator

NAME = "gate-db"


@pytest.fixture(scope="module")
async def emulator() -> AsyncIterator[CloudSqlEmulator]:
    async with running_emulator(
        "modoru-gate-", NAME, database="shop", user="shop_app", password="gate-secret"
    ) as running:
        yield running


def gate(emulator: CloudSqlEmulator) -> CloudSqlActivities:
    return CloudSqlActivities(SqlAdmin(emulator.url, build_http), emulator.project)


async def test_a_fresh_backup_passes_the_gate(emulator) -> None:
    check = await ActivityEnvironment().run(
        gate(emulator).check_backup, BackupCheckRequest(instance=NAME, max_age_hours=24)
    )
    assert (
        check.ok
        and not check.taken
        and check.newest.status == "SUCCESSFUL"
        and "within 24 h" in check.detail
    )


async def test_a_stale_backup_is_refused_or_replaced_on_demand(emulator) -> None:
    for run in emulator.instance(NAME).backup_runs:
        run.end_time = dt.datetime.now(dt.UTC) - dt.timedelta(hours=30)
    before = len(emulator.instance(NAME).backup_runs)
    refused = await ActivityEnvironment().run(
        gate(emulator).check_backup, BackupCheckRequest(instance=NAME, max_age_hours=24)
    )
    assert (
        not refused.ok
        and "h old, older than 24 h" in refused.detail
        and "gcloud sql backups create" in refused.detail
    )
    assert len(emulator.instance(NAME).backup_runs) == before  # refusing took nothing

    beats: list = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    taken = await env.run(
        gate(emulator).check_backup,
        BackupCheckRequest(instance=NAME, max_age_hours=24, take_if_missing=True),
    )
    assert taken.ok and taken.taken and "took on-demand backup run" in taken.detail
    runs = emulator.instance(NAME).backup_runs
    assert (
        len(runs) == before + 1 and runs[-1].type == "ON_DEMAND" and runs[-1].status == "SUCCESSFUL"
    )
    assert beats and "operation" in beats[0][0]  # a retried attempt follows the same operation


async def test_an_unknown_instance_is_a_permanent_failure_naming_the_setting(emulator) -> None:
    with pytest.raises(
        ApplicationError, match="check the catalog's migration.cloudsql_instance"
    ) as failure:
        await ActivityEnvironment().run(
            gate(emulator).check_backup, BackupCheckRequest(instance="no-such-db", max_age_hours=24)
        )
    assert failure.value.non_retryable


async def test_a_backup_whose_answer_was_lost_is_taken_once(emulator) -> None:
    """Cloud SQL started the backup but its answer was a 503: the retried attempt finds the run
    its first attempt started (by the description naming the activity) instead of a second."""
    for run in emulator.instance(NAME).backup_runs:
        run.end_time = dt.datetime.now(dt.UTC) - dt.timedelta(hours=30)
    before = len(emulator.instance(NAME).backup_runs)
    mark = emulator.effects.last_seq
    emulator.faults.replace(
        [FaultRule(resource="backupRuns", verb="post", when="after", status=503, times=1)]
    )
    request = BackupCheckRequest(instance=NAME, max_age_hours=24, take_if_missing=True)
    env = ActivityEnvironment()  # one activity: both attempts share its workflow and activity ids
    env.info = dataclasses.replace(env.info, activity_id="lost-answer")  # not the other tests'
    try:
        with pytest.raises(ApplicationError, match="503") as lost:
            await env.run(gate(emulator).check_backup, request)
        assert not lost.value.non_retryable
        taken = await env.run(gate(emulator).check_backup, request)
    finally:
        emulator.faults.replace([])
    assert taken.ok and taken.taken, taken.detail
    inserts = [e for e in emulator.effects.since(mark) if e["kind"] == "backupRuns.post"]
    runs = emulator.instance(NAME).backup_runs
    assert len(inserts) == 1 and len(runs) == before + 1, (inserts, len(runs), before)
    assert "activity" in runs[-1].description
