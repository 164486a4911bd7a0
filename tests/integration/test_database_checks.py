"""The database looks the runbook's way, through the sandbox's Auth Proxy model:
psql in an app pod reads the tables and integrity numbers; a query that runs too
long is stopped by its statement timeout, a write is refused by the READ ONLY
transaction even if it slipped past the one-SELECT rule, and a check's rows never
come back beyond the one value compared."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from kubernetes.aio.stream import WsApiClient
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.database import DatabaseActivities, psql_argv
from activities.pod_exec import PodExecActivities
from activities.verify import VerifyActivities
from runbook.catalog import Catalog, DatabaseAccess, IntegrityCheck
from runbook.migration_models import SnapshotRequest
from tests.conftest import RunningSandbox

pytestmark = pytest.mark.integration
ACCESS = DatabaseAccess(
    container="api", database="tekutoko_production", user="tekutoko", query_timeout_seconds=1
)


@pytest.fixture
async def database(
    db_sandbox: RunningSandbox,
) -> AsyncIterator[tuple[DatabaseActivities, PodExecActivities]]:
    configuration = kube.Configuration()
    await kube_config.load_kube_config(
        config_file=str(db_sandbox.kubeconfig), client_configuration=configuration
    )
    api, ws_api = kube.ApiClient(configuration), WsApiClient(configuration=configuration)
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    async with aiohttp.ClientSession() as session:
        pods = PodExecActivities(
            kube.CoreV1Api(ws_api), VerifyActivities(apps, core, session), Catalog(services=[])
        )
        yield DatabaseActivities(core, apps, pods), pods
    await ws_api.close()
    await api.close()


def snapshot(*checks: IntegrityCheck) -> SnapshotRequest:
    return SnapshotRequest(
        namespace="default", deployment="tekutoko-api", access=ACCESS, checks=list(checks)
    )


async def test_psql_in_an_app_pod_reads_tables_and_numbers(database) -> None:
    db, _ = database
    found = await ActivityEnvironment().run(
        db.snapshot, snapshot(IntegrityCheck(name="users", sql="SELECT count(*) FROM users"))
    )
    assert {"users", "walks", "schema_migrations"} <= set(found.tables) and found.values[
        "users"
    ] > 0


async def test_a_long_query_is_stopped_by_its_statement_timeout(database) -> None:
    db, _ = database
    started = time.monotonic()
    with pytest.raises(ApplicationError, match="statement timeout") as failure:
        await ActivityEnvironment().run(
            db.snapshot, snapshot(IntegrityCheck(name="slow", sql="SELECT 1 FROM pg_sleep(30)"))
        )
    assert failure.value.non_retryable and time.monotonic() - started < 20


async def test_a_write_is_refused_by_the_read_only_transaction(
    database, db_sandbox: RunningSandbox
) -> None:
    db, pods = database
    pod, container = await pods.ready_pod("default", "tekutoko-api", "api")
    # Past the one-SELECT rule on purpose (a data-modifying CTE): the transaction itself refuses it.
    out, err, code = await pods.run(
        "default",
        pod,
        container,
        psql_argv(ACCESS, "WITH gone AS (DELETE FROM walks RETURNING 1) SELECT count(*) FROM gone"),
        30,
    )
    assert code != 0 and "read-only transaction" in err
    count = await ActivityEnvironment().run(
        db.snapshot, snapshot(IntegrityCheck(name="walks", sql="SELECT count(*) FROM walks"))
    )
    assert count.values["walks"] > 0
