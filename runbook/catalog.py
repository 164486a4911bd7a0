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
    verification_window_seconds: int = Field(120, gt=0)
    rollout_timeout_seconds: int = Field(600, gt=0)

    @property
    def check_paths(self) -> list[str]:
        return [self.health_path, self.ready_path, self.api_check_path]


class Catalog(Strict):
    services: list[ServiceEntry]
    default: ServiceEntry | None = Field(None, description="Used for deployments not listed, if set")

    def find(self, namespace: str, deployment: str) -> ServiceEntry | None:
        for entry in self.services:
            if entry.namespace == namespace and entry.deployment == deployment:
                return entry
        if self.default is not None:
            return self.default.model_copy(update={"name": deployment, "namespace": namespace, "deployment": deployment, "service": deployment})
        return None
