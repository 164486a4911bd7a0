"""Read-only looks at a service's database for migration verification: the
table list and the catalog's integrity queries. Credentials come from the
app's own Secret, used here and never returned, logged or put in a history."""

from __future__ import annotations

import base64
import datetime as dt

import psycopg
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook.migration_models import DatabaseSnapshot, SnapshotRequest
from runbook.models import CheckResult
from runbook.pitr_models import CloneQueriesRequest

from .errors import permanent, raise_for_api_status

KEYS = ("DATABASE_HOST", "DATABASE_PORT", "DATABASE_NAME", "DATABASE_USER", "DATABASE_PASSWORD")


class DatabaseActivities:
    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core

    async def _conninfo(self, namespace: str, secret: str, *, host: str | None = None, port: int | None = None) -> str:
        try:
            found = await self.core.read_namespaced_secret(secret, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(f"secret/{secret} does not exist in namespace {namespace!r}: fix the catalog's migration.database_secret", "SecretNotFound") from None
            raise_for_api_status(exc.status, f"reading secret/{secret}", None)  # the body could echo the secret
        data = {k: base64.b64decode(v).decode() for k, v in (found.data or {}).items()}
        if "DATABASE_URL" in data:
            params = psycopg.conninfo.conninfo_to_dict(data["DATABASE_URL"])
            params.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
            return psycopg.conninfo.make_conninfo(**params)
        missing = [k for k in KEYS if k not in data and k != "DATABASE_PORT"]
        if missing:
            raise permanent(f"secret/{secret} lacks {', '.join(missing)} (or DATABASE_URL)", "SecretIncomplete")
        return psycopg.conninfo.make_conninfo(host=host or data["DATABASE_HOST"], port=port or data.get("DATABASE_PORT", "5432"), dbname=data["DATABASE_NAME"],
                                              user=data["DATABASE_USER"], password=data["DATABASE_PASSWORD"], connect_timeout=10)

    @activity.defn(name="db.snapshot")
    async def snapshot(self, request: SnapshotRequest) -> DatabaseSnapshot:
        conninfo = await self._conninfo(request.namespace, request.secret)
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            # Retried: the database may be restarting. The conninfo holds the password, so only the reason is said.
            raise ApplicationError(f"cannot connect to the database of secret/{request.secret}: {reason}", type="DatabaseUnreachable") from None
        async with conn:
            await conn.execute("SET default_transaction_read_only = on")
            rows = await (await conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1")).fetchall()
            values: dict[str, float | None] = {}
            for check in request.checks:
                try:
                    row = await (await conn.execute(check.sql)).fetchone()
                except psycopg.errors.UndefinedTable:
                    values[check.name] = None  # the table is gone: reported, judged by the workflow
                    continue
                except psycopg.Error as exc:
                    raise permanent(f"integrity check {check.name!r} failed to run: {str(exc).strip().splitlines()[0]}; fix its SQL in the catalog", "IntegrityCheckInvalid") from None
                if row is None or len(row) != 1 or not isinstance(row[0], int | float | type(None)) and not hasattr(row[0], "__float__"):
                    raise permanent(f"integrity check {check.name!r} must return one number, got {row!r}", "IntegrityCheckInvalid")
                values[check.name] = None if row[0] is None else float(row[0])
        return DatabaseSnapshot(at=dt.datetime.now(dt.UTC), tables=[r[0] for r in rows], values=values)

    @activity.defn(name="db.clone_queries")
    async def clone_queries(self, request: CloneQueriesRequest) -> list[CheckResult]:
        """The recovery's checks on the clone, read-only, with the app's credentials."""
        conninfo = await self._conninfo(request.namespace, request.secret, host=request.instance.host, port=request.instance.port)
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ApplicationError(f"cannot connect to the clone {request.instance.name}: {reason}", type="DatabaseUnreachable") from None
        results = []
        async with conn:
            await conn.execute("SET default_transaction_read_only = on")
            for check in request.checks:
                try:
                    row = await (await conn.execute(check.sql)).fetchone()
                    actual = "" if row is None else " ".join("NULL" if v is None else str(v) for v in row)
                except psycopg.Error as exc:
                    actual = f"error: {str(exc).strip().splitlines()[0]}"
                ok = actual == check.expect.strip()
                results.append(CheckResult(name=check.name, ok=ok, detail=f"{check.sql} → {actual!r} (expected {check.expect.strip()!r})"))
        return results
