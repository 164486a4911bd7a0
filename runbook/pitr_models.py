"""What flows through a point-in-time recovery: the request with its restore
point, the pre-checks, the clone, its verification and the switch."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import Field, field_validator

from .catalog import NAME_PATTERN, DatabaseAccess
from .decisions import Grant
from .enums import Severity
from .migration_models import BackupRunInfo
from .models import ChangeRequestBase, CheckResult, DeploymentRef, GatedStatus, Model
from .queries import one_reading_statement

INSTANCE_NAME = r"^[a-z][-a-z0-9]{0,61}[a-z0-9]$"


class ExpectedQuery(Model):
    """A read-only query on the clone and the answer it must give (compared as text). What
    is recorded of it (status, history, log, notices) is a verdict: pass or fail, the row
    count and a hash of the value compared, never the rows. Its SQL is one reading statement
    that names no function known to act (runbook/queries.py)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    sql: str = Field(min_length=1, max_length=4000)
    expect: str = Field(
        description="the answer as psql prints it (fields separated by spaces, rows by newlines)"
    )

    @field_validator("sql")
    @classmethod
    def _one_select(cls, value: str) -> str:
        one_reading_statement(value)
        return value

    @field_validator("expect")
    @classmethod
    def _something_expected(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the expected answer is empty: say what the query must return")
        return value


class PitrRequest(ChangeRequestBase):
    service: str = Field(pattern=NAME_PATTERN, max_length=253)
    point_in_time: dt.datetime = Field(
        description="RFC 3339 with an offset, e.g. 2026-11-28T14:05:00+09:00"
    )
    new_instance: str | None = Field(
        None, pattern=INSTANCE_NAME, description="default: <source>-pitr-<UTC yyyymmddhhmm>"
    )
    checks: list[ExpectedQuery] = Field(default_factory=list, max_length=50)
    severity: Severity = Severity.IMMEDIATE  # data corruption: the runbook's "roll back at once"
    dry_run: bool = False

    @field_validator("point_in_time")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                "point_in_time needs a time zone offset (e.g. +09:00 or Z): a naive time is "
                "ambiguous"
            )
        return value


def clone_name(source: str, point_in_time: dt.datetime) -> str:
    stamp = point_in_time.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S")
    base = re.sub(r"-+$", "", f"{source}"[: 62 - len(stamp) - 6])
    return f"{base}-pitr-{stamp}"


class PitrCheckRequest(Model):
    project: str | None = None
    source: str
    destination: str
    point_in_time: dt.datetime


class PitrCheck(Model):
    pitr_enabled: bool
    source_connection_name: str = Field(
        "", description="PROJECT:REGION:INSTANCE of the source, as the app's proxy names it"
    )
    earliest: dt.datetime | None = None
    latest: dt.datetime | None = None
    destination_free: bool
    backups: list[BackupRunInfo] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)


class CloneRequest(Model):
    project: str | None = None
    source: str
    destination: str
    point_in_time: dt.datetime
    grant: Grant | None = None


class OperationRef(Model):
    project: str
    name: str


class InstanceInfo(Model):
    name: str
    host: str
    port: int = 5432
    connection_name: str = ""
    state: str = ""


class InstanceRef(Model):
    project: str | None = None
    name: str


class CloneQueriesRequest(DeploymentRef):
    """The recovery's checks, run with psql in a short-lived pod made from the app's
    pod template whose Auth Proxy names the clone instead of the source."""

    access: DatabaseAccess
    source_connection_name: str
    clone_connection_name: str
    checks: list[ExpectedQuery]
    grant: Grant | None = None


class ProxySwitch(DeploymentRef):
    """Point a deployment's Auth Proxy sidecar from one instance connection name to another."""

    proxy_container: str
    from_connection_name: str
    to_connection_name: str
    grant: Grant | None = None


class ProxySwitched(Model):
    changed: bool
    container: str
    args: list[str] = Field(description="the proxy's arguments now")


class PitrStatus(GatedStatus):
    service: str
    point_in_time: dt.datetime
    source: str = ""
    clone: str = ""
    window: tuple[dt.datetime | None, dt.datetime | None] = (None, None)
    backups: list[BackupRunInfo] = Field(default_factory=list)
    operation: str = ""
    clone_info: InstanceInfo | None = None
    checks: list[CheckResult] = Field(default_factory=list)
    gate: Literal["", "clone", "switch"] = ""
    switch_approvals: list[str] = Field(default_factory=list)
    switched: str = Field(
        "",
        description="the instance connection name the app's proxy now names, once switched to "
        "the clone",
    )
    switched_back: bool = False
    health: list[CheckResult] = Field(default_factory=list)
    sla_deadline: dt.datetime | None = None


class PitrResult(Model):
    status: PitrStatus
    no_op: bool = False
