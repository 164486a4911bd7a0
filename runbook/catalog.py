"""The service catalog: who may approve, where notices go and how a service is
checked. Loaded from YAML by the worker; nothing here reads a file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .guard import GuardThresholds, MonitoringConfig, RecoveryCriteria

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Channel(Strict):
    """Where notices go. Secrets are never in the catalog: a Slack channel names
    the environment variable that holds its webhook URL."""

    kind: Literal["console", "jsonl", "slack"]
    path: str | None = Field(None, description="jsonl: the file to append to")
    webhook_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$", description="slack: env var with the webhook URL")

    @model_validator(mode="after")
    def _complete(self) -> Channel:
        if self.kind == "jsonl" and not self.path:
            raise ValueError("a jsonl channel needs a path")
        if self.kind == "slack" and not self.webhook_env:
            raise ValueError("a slack channel needs webhook_env, the name of the variable holding the webhook URL")
        return self

    @property
    def label(self) -> str:
        return {"console": "console", "jsonl": f"jsonl:{self.path}", "slack": f"slack:${self.webhook_env}"}[self.kind]


class ApprovalPolicy(Strict):
    approvers: list[str] = Field(default_factory=list)
    investigate_approvals: int = Field(1, ge=0)
    immediate_approvals: int = Field(0, ge=0, description="0: an immediate rollback proceeds at once")
    on_deadline: Literal["keep_waiting", "proceed", "abort"] = Field(
        "keep_waiting", description="What a missed deadline does while approval is still awaited"
    )


class IntegrityCheck(Strict):
    """A read-only query returning one number, compared before and after a migration rollback."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    sql: str = Field(min_length=1, description="SELECT returning a single number, e.g. SELECT count(*) FROM walks")
    must_not_drop: bool = Field(True, description="fail the verification if the number went down")


class MigrationConfig(Strict):
    """How a service's schema is rolled back: the app's own migrate command, run in
    one of its pods, and the Cloud SQL instance whose backups gate it."""

    container: str | None = Field(None, description="container to exec in; default: the pod's first")
    version_command: list[str] = Field(default_factory=lambda: ["/api", "migrate", "version"], min_length=1)
    history_command: list[str] = Field(default_factory=lambda: ["/api", "migrate", "history"], min_length=1)
    down_to_command: list[str] = Field(
        default_factory=lambda: ["/api", "migrate", "down-to", "{version}"], min_length=1,
        description="steps are turned into the version they lead to, so a retried step down never reverts twice",
    )
    command_timeout_seconds: int = Field(300, gt=0, le=3600)
    cloudsql_instance: str = Field(pattern=NAME_PATTERN)
    cloudsql_project: str | None = Field(None, description="default: the worker's MODORU_CLOUDSQL_PROJECT")
    database_secret: str = Field(pattern=NAME_PATTERN, description="Secret in the service's namespace with DATABASE_HOST/PORT/NAME/USER/PASSWORD")
    backup_max_age_hours: float = Field(24.0, gt=0)
    on_demand_backup: bool = Field(False, description="take a backup first when none is fresh enough, instead of refusing")
    approvals: int = Field(2, ge=0, description="data is at risk: two approvers by default, neither the requester")
    integrity_checks: list[IntegrityCheck] = Field(default_factory=list)


class PitrConfig(Strict):
    """Point-in-time recovery: which instance is cloned and which Secret keys the
    app reads its database address from (switched to the clone, and back)."""

    cloudsql_instance: str = Field(pattern=NAME_PATTERN)
    cloudsql_project: str | None = Field(None, description="default: the worker's MODORU_CLOUDSQL_PROJECT")
    secret: str = Field(pattern=NAME_PATTERN, description="the app's database Secret (user, password and name are read; host and port are switched)")
    host_key: str = "DATABASE_HOST"
    port_key: str | None = Field("DATABASE_PORT", description="None: the app always uses 5432")
    approvals: int = Field(2, ge=0, description="for the clone, and again for the switch")
    operation_poll_seconds: int = Field(10, ge=1, le=600, description="how often the clone's operation is checked")
    clone_timeout_minutes: int = Field(120, ge=1)


class ServiceEntry(Strict):
    name: str
    namespace: str = Field("default", pattern=NAME_PATTERN)
    deployment: str = Field(pattern=NAME_PATTERN)
    service: str = Field(pattern=NAME_PATTERN, description="The Kubernetes Service with the external address")
    health_path: str = "/health"
    ready_path: str = "/ready"
    api_check_path: str = "/v1/walks"
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    channels: list[Channel] = Field(default_factory=lambda: [Channel(kind="console")])
    guard: GuardThresholds = Field(default_factory=GuardThresholds, description="release-guard thresholds")
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    recovery: RecoveryCriteria = Field(default_factory=RecoveryCriteria, description="metric criteria after a rollback")
    migration: MigrationConfig | None = Field(None, description="schema rollbacks; None: not offered for this service")
    pitr: PitrConfig | None = Field(None, description="point-in-time recovery; None: not offered for this service")
    verification_window_seconds: int = Field(120, gt=0)
    rollout_timeout_seconds: int = Field(600, gt=0)

    @property
    def check_paths(self) -> list[str]:
        return [self.health_path, self.ready_path, self.api_check_path]


class Catalog(Strict):
    services: list[ServiceEntry]
    default: ServiceEntry | None = Field(None, description="Used for deployments not listed, if set")

    def named(self, name: str) -> ServiceEntry | None:
        return next((entry for entry in self.services if entry.name == name), None)

    def find(self, namespace: str, deployment: str) -> ServiceEntry | None:
        for entry in self.services:
            if entry.namespace == namespace and entry.deployment == deployment:
                return entry
        if self.default is not None:
            return self.default.model_copy(update={"name": deployment, "namespace": namespace, "deployment": deployment, "service": deployment})
        return None
