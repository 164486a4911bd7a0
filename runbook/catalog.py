"""The service catalog: who may approve, where notices go and how a service is
checked. Loaded from YAML by the worker; nothing here reads a file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .attestation import Attestor, SlackCount, check_attestors
from .cd_config import CdConfig, RegistryConfig
from .guard import GuardThresholds, MonitoringConfig, RecoveryCriteria
from .identity import Identity, check_identities, normalize_id
from .incident_policy import IncidentPolicy
from .postchecks import PostChecks
from .queries import one_reading_statement

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class Channel(Strict):
    """Where notices go. Secrets are never in the catalog: a Slack channel names
    the environment variable that holds its webhook URL."""

    kind: Literal["console", "jsonl", "slack"]
    path: str | None = Field(None, description="jsonl: the file to append to")
    webhook_env: str | None = Field(
        None, pattern=r"^[A-Z_][A-Z0-9_]*$", description="slack: env var with the webhook URL"
    )
    channel: str | None = Field(
        None,
        pattern=r"^[CG][A-Z0-9]{2,30}$",
        description="slack: the channel id the bot posts to with the Web API (approval messages "
        "with buttons; the bot token is the worker's MODORU_SLACK_BOT_TOKEN)",
    )

    @model_validator(mode="after")
    def _complete(self) -> Channel:
        if self.kind == "jsonl" and not self.path:
            raise ValueError("a jsonl channel needs a path")
        if self.kind == "slack" and not (self.webhook_env or self.channel):
            raise ValueError(
                "a slack channel needs webhook_env (the variable holding the webhook URL) or "
                "channel (a channel id the bot posts to)"
            )
        if self.kind == "slack" and self.webhook_env and self.channel:
            raise ValueError("a slack channel is a webhook (webhook_env) or a channel id, not both")
        return self

    @property
    def label(self) -> str:
        if self.kind == "slack" and self.channel:
            return f"slack:#{self.channel}"
        return {
            "console": "console",
            "jsonl": f"jsonl:{self.path}",
            "slack": f"slack:${self.webhook_env}",
        }[self.kind]


class Trust(Strict):
    """The catalog's identities, handed to workflows with a service's entry."""

    identities: list[Identity] = Field(default_factory=list)
    oncall_role: str = "oncall"
    attestors: list[Attestor] = Field(default_factory=list)


class ApprovalPolicy(Strict):
    approvers: list[str] = Field(
        default_factory=list,
        description="roles whose holders may approve and reject; `id:NAME` names one identity",
    )
    investigate_approvals: int = Field(1, ge=0)
    immediate_approvals: int = Field(
        0, ge=0, description="0: an immediate rollback proceeds at once"
    )
    on_deadline: Literal["keep_waiting", "proceed", "abort"] = Field(
        "keep_waiting", description="What a missed deadline does while approval is still awaited"
    )
    slack_approvals: dict[str, SlackCount] = Field(
        default_factory=dict,
        description="per gate (approval, clone, switch): whether approvals made in Slack and "
        "attested by the gateway count (true), count for at most one of the approvers "
        "(at_most_one), or not (false, and any gate not named)",
    )


class IntegrityCheck(Strict):
    """A read-only query returning one number, compared before and after a migration rollback."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    sql: str = Field(
        min_length=1,
        description="SELECT returning a single number, e.g. SELECT count(*) FROM walks",
    )
    must_not_drop: bool = Field(True, description="fail the verification if the number went down")

    @field_validator("sql")
    @classmethod
    def _one_select(cls, value: str) -> str:
        one_reading_statement(value)
        return value


PSQL_COMMAND = [
    "psql",
    "-h",
    "localhost",
    "-p",
    "{port}",
    "-U",
    "{user}",
    "-d",
    "{database}",
    "-X",
    "-q",
    "-A",
    "-t",
    "-F",
    " ",
    "-P",
    "null=NULL",
    "-v",
    "ON_ERROR_STOP=1",
]


class DatabaseAccess(Strict):
    """How modoru reads a service's database: the runbook's way, `psql -h localhost`
    inside an app pod, whose Cloud SQL Auth Proxy sidecar listens on localhost and
    names the instance (PROJECT:REGION:INSTANCE) in its arguments."""

    mode: Literal["pod_exec"] = Field(
        "pod_exec", description="the only mode: modoru never connects to the database itself"
    )
    container: str | None = Field(
        None, description="the container psql runs in; default: the pod's first"
    )
    proxy_container: str = Field(
        "cloud-sql-proxy",
        description="the Auth Proxy sidecar (initContainers with restartPolicy Always, or "
        "containers)",
    )
    port: int = Field(5432, gt=0, lt=65536, description="the proxy's --port")
    database: str = Field(min_length=1, max_length=63, description="e.g. tekutoko_production")
    user: str = Field(
        min_length=1,
        max_length=63,
        description="the app's database role; its password, if any, is PGPASSWORD in the container",
    )
    psql_command: list[str] = Field(
        default_factory=lambda: list(PSQL_COMMAND),
        min_length=1,
        description="{port}, {user} and {database} are filled in; the query follows as -c "
        "arguments",
    )
    query_timeout_seconds: int = Field(
        30, gt=0, le=600, description="statement_timeout of every query"
    )
    check_pod_timeout_seconds: int = Field(
        180, gt=0, le=1800, description="how long a PITR check pod may take to become Ready"
    )


class MigrationConfig(Strict):
    """How a service's schema is rolled back: the app's own migrate command, run in
    one of its pods, and the Cloud SQL instance whose backups gate it."""

    container: str | None = Field(
        None, description="container to exec in; default: the pod's first"
    )
    version_command: list[str] = Field(
        default_factory=lambda: ["/api", "migrate", "version"], min_length=1
    )
    history_command: list[str] = Field(
        default_factory=lambda: ["/api", "migrate", "history"], min_length=1
    )
    down_to_command: list[str] = Field(
        default_factory=lambda: ["/api", "migrate", "down-to", "{version}"],
        min_length=1,
        description="steps are turned into the version they lead to, so a retried step down "
        "never reverts twice",
    )
    command_timeout_seconds: int = Field(300, gt=0, le=3600)
    cloudsql_instance: str = Field(pattern=NAME_PATTERN)
    cloudsql_project: str | None = Field(
        None, description="default: the worker's MODORU_CLOUDSQL_PROJECT"
    )
    backup_max_age_hours: float = Field(24.0, gt=0)
    on_demand_backup: bool = Field(
        False, description="take a backup first when none is fresh enough, instead of refusing"
    )
    approvals: int = Field(
        2, ge=0, description="data is at risk: two approvers by default, neither the requester"
    )
    integrity_checks: list[IntegrityCheck] = Field(default_factory=list)


class PitrConfig(Strict):
    """Point-in-time recovery: which instance is cloned. The app is switched to the
    clone by the instance connection name its Auth Proxy sidecar is given (and back)."""

    cloudsql_instance: str = Field(pattern=NAME_PATTERN)
    cloudsql_project: str | None = Field(
        None, description="default: the worker's MODORU_CLOUDSQL_PROJECT"
    )
    approvals: int = Field(2, ge=0, description="for the clone, and again for the switch")
    operation_poll_seconds: int = Field(
        10, ge=1, le=600, description="how often the clone's operation is checked"
    )
    clone_timeout_minutes: int = Field(120, ge=1)


class ServiceEntry(Strict):
    name: str
    namespace: str = Field("default", pattern=NAME_PATTERN)
    deployment: str = Field(pattern=NAME_PATTERN)
    service: str = Field(
        pattern=NAME_PATTERN, description="The Kubernetes Service with the external address"
    )
    health_path: str = "/health"
    ready_path: str = "/ready"
    api_check_path: str = "/v1/walks"
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    channels: list[Channel] = Field(default_factory=lambda: [Channel(kind="console")])
    guard: GuardThresholds = Field(
        default_factory=GuardThresholds, description="release-guard thresholds"
    )
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    recovery: RecoveryCriteria = Field(
        default_factory=RecoveryCriteria, description="metric criteria after a rollback"
    )
    database: DatabaseAccess | None = Field(
        None, description="how the service's database is read (migration checks, PITR checks)"
    )
    trust: Trust | None = Field(
        None,
        description="set by the worker from the catalog's identities; not written in a catalog "
        "file",
    )
    migration: MigrationConfig | None = Field(
        None, description="schema rollbacks; None: not offered for this service"
    )
    pitr: PitrConfig | None = Field(
        None, description="point-in-time recovery; None: not offered for this service"
    )
    registry: RegistryConfig | None = Field(
        None,
        description="the Artifact Registry repository of the service's images (redeploy, "
        "image-pull diagnosis)",
    )
    cd: CdConfig | None = Field(
        None,
        description="the GitHub Actions deploy pipeline (redeploy of a known-good tag, its "
        "manifest backups)",
    )
    verification_window_seconds: int = Field(
        120, gt=0, description="how long the pods and HTTP checks may take to pass"
    )
    verification_deadline_seconds: int | None = Field(
        None,
        gt=0,
        le=3600,
        description="how long verification may wait for late metric and log data after the "
        "rollout; default: the runbook's window for the severity, stretched to the slowest "
        "check's need, at most 15 minutes",
    )
    rollout_timeout_seconds: int = Field(600, gt=0)
    incident: IncidentPolicy = Field(
        default_factory=IncidentPolicy, description="follow-up deadlines and confirmation reminders"
    )
    post_checks: PostChecks = Field(
        default_factory=PostChecks,
        description="CPU/memory, connection pool and log checks after a rollback",
    )

    @model_validator(mode="after")
    def _database_for_data_changes(self) -> ServiceEntry:
        if (self.migration is not None or self.pitr is not None) and self.database is None:
            raise ValueError(
                f"service {self.name}: migration and pitr need a database section (database: "
                "user, database, proxy_container, ...)"
            )
        return self

    def post_checks_resolved(self) -> PostChecks:
        """The post-checks with the Cloud SQL instance filled in from migration or pitr."""
        checks = self.post_checks
        if checks.cloudsql_instance is None:
            source = self.migration or self.pitr
            if source is not None:
                checks = checks.model_copy(
                    update={
                        "cloudsql_instance": source.cloudsql_instance,
                        "cloudsql_project": checks.cloudsql_project or source.cloudsql_project,
                    }
                )
        return checks

    @property
    def check_paths(self) -> list[str]:
        return [self.health_path, self.ready_path, self.api_check_path]


class Catalog(Strict):
    services: list[ServiceEntry]
    default: ServiceEntry | None = Field(
        None, description="Used for deployments not listed, if set"
    )
    identities: list[Identity] = Field(
        default_factory=list,
        description="who may sign decisions; with none, decisions are unsigned names",
    )
    oncall_role: str = Field(
        "oncall",
        description="identities with this role may start an immediate rollback without approval",
    )
    attestors: list[Attestor] = Field(
        default_factory=list,
        description="gateways (the Slack gateway) that sign decisions for the identities they "
        "list, at the gates they list, with their own keys",
    )

    @model_validator(mode="after")
    def _trust_root(self) -> Catalog:
        check_identities(self.identities)
        check_attestors(self.identities, self.attestors)
        for entry in [*self.services, *([self.default] if self.default else [])]:
            if entry.trust is not None:
                raise ValueError(
                    f"service {entry.name}: identities belong at the top of the catalog, not in a "
                    "service"
                )
        return self

    def trusted(self, entry: ServiceEntry) -> ServiceEntry:
        """`entry` with the catalog's identities, as workflows receive it."""
        if not self.identities:
            return entry
        return entry.model_copy(
            update={
                "trust": Trust(
                    identities=self.identities,
                    oncall_role=normalize_id(self.oncall_role),
                    attestors=self.attestors,
                )
            }
        )

    def named(self, name: str) -> ServiceEntry | None:
        return next((entry for entry in self.services if entry.name == name), None)

    def find(self, namespace: str, deployment: str) -> ServiceEntry | None:
        for entry in self.services:
            if entry.namespace == namespace and entry.deployment == deployment:
                return entry
        if self.default is not None:
            return self.default.model_copy(
                update={
                    "name": deployment,
                    "namespace": namespace,
                    "deployment": deployment,
                    "service": deployment,
                }
            )
        return None
