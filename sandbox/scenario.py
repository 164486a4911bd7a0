"""Scenarios: the world a sandbox starts with and how each image behaves.

A scenario is YAML validated by the models below; `load_scenario` accepts a
bundled name (`tekutoko`) or a path and raises `ScenarioError` with one clear
line on a bad file.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PYTHON_PLACEHOLDER = "{python}"


class ScenarioError(Exception):
    """A scenario that cannot be loaded; the message names the file and the problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Latency(Strict):
    """Latency of API answers in milliseconds, drawn from a log-normal fit to p50/p95."""

    p50_ms: float = Field(20.0, gt=0)
    p95_ms: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Latency:
        if self.p95_ms < self.p50_ms:
            raise ValueError("p95_ms must be at least p50_ms")
        return self


class ImageProfile(Strict):
    """How pods running an image behave, in simulated seconds."""

    pull: Literal["ok", "fail"] = "ok"
    pull_seconds: float = Field(0.5, ge=0)
    ready_after_seconds: float = Field(1.0, ge=0)
    crash_after_seconds: float | None = Field(None, ge=0, description="None: never crashes")
    health_status: int = Field(200, ge=100, le=599)
    error_ratio: float = Field(0.0, ge=0, le=1)
    latency: Latency = Field(default_factory=Latency)
    version: str | None = Field(None, description="Reported by the app; default: the image tag")
    commands: dict[str, list[str]] = Field(
        default_factory=dict,
        description="pods/exec: an executable in the image -> the local argv that stands in for "
        "it; "
        f"an item exactly {PYTHON_PLACEHOLDER} is the sandbox's own interpreter. Unmapped "
        "commands are not found.",
    )
    exec_timeout_seconds: float = Field(
        300.0, gt=0, le=86400, description="Wall-clock bound on one exec"
    )
    cpu_utilization: float = Field(
        0.25,
        ge=0,
        le=10,
        description="CPU use as a share of the container's limit (GKE cpu/limit_utilization; may "
        "exceed 1)",
    )
    memory_utilization: float = Field(
        0.4,
        ge=0,
        le=1,
        description="memory use as a share of the container's limit (memory/limit_utilization)",
    )
    db_connections: int = Field(
        0,
        ge=0,
        le=100,
        description="database connections each running pod holds open (its pool), really, in the "
        "PostgreSQL",
    )
    background_errors_per_minute: float = Field(
        0.0,
        ge=0,
        le=600,
        description="level=error lines a pod logs each minute besides its 5xx answers",
    )

    @field_validator("commands")
    @classmethod
    def _commands_are_argv(cls, commands: dict[str, list[str]]) -> dict[str, list[str]]:
        # A typo here would otherwise surface only as a confusing exec failure mid-rollback.
        for executable, argv in commands.items():
            if not executable or any(ch.isspace() for ch in executable):
                raise ValueError(
                    f"{executable!r}: the key is one executable path; put its arguments in the list"
                )
            if not argv or not all(argv):
                raise ValueError(
                    f"{executable}: the argv must be a non-empty list of non-empty strings"
                )
            for item in argv:
                if item != PYTHON_PLACEHOLDER and item.startswith("{") and item.endswith("}"):
                    raise ValueError(
                        f"{executable}: unknown placeholder {item}; only {PYTHON_PLACEHOLDER} is "
                        "known"
                    )
        return commands

    def exec_argv(self, command: list[str]) -> list[str] | None:
        """The local argv for `command` run in a container of this image, or None if unmapped."""
        mapped = self.commands.get(command[0]) if command else None
        if mapped is None:
            return None
        return [
            sys.executable if item == PYTHON_PLACEHOLDER else item for item in mapped
        ] + command[1:]


class ImageRule(Strict):
    match: str = Field(description="fnmatch pattern against the image reference")
    profile: ImageProfile


class Revision(Strict):
    image: str
    change_cause: str | None = None


PROXY_IMAGE = "gcr.io/cloud-sql-connectors/cloud-sql-proxy"
PROXY_VERSION = "2.14.1"


class CloudSqlProxySeed(Strict):
    """A Cloud SQL Auth Proxy v2 native sidecar (an init container with
    `restartPolicy: Always`) that gives the pod `localhost:<port>` to one of the
    scenario's databases; the database's Secret then says localhost:<port>."""

    instance: str = Field(
        pattern=r"^[a-z][-a-z0-9]*$", description="one of the scenario's databases"
    )
    port: int = Field(5432, gt=0, lt=65536)
    version: str = Field(
        PROXY_VERSION, pattern=r"^2\.[0-9]+\.[0-9]+$", description="the proxy image's tag (v2 only)"
    )
    private_ip: bool = True

    @property
    def image(self) -> str:
        return f"{PROXY_IMAGE}:{self.version}"


class ContainerResources(Strict):
    """The app container's `resources` (Kubernetes quantities). GKE writes
    `kubernetes.io/container/{cpu,memory}/limit_utilization` only for a container with
    that limit, so a seed without `limits` gives pods whose CPU and memory cannot be
    judged against a limit."""

    requests: dict[Literal["cpu", "memory"], str] = Field(default_factory=dict)
    limits: dict[Literal["cpu", "memory"], str] = Field(default_factory=dict)

    def manifest(self) -> dict[str, dict[str, str]]:
        return {
            key: dict(value)
            for key, value in (("requests", self.requests), ("limits", self.limits))
            if value
        }


DEFAULT_RESOURCES = ContainerResources(
    requests={"cpu": "250m", "memory": "256Mi"}, limits={"cpu": "500m", "memory": "512Mi"}
)


class DeploymentSeed(Strict):
    name: str
    namespace: str = "default"
    replicas: int = Field(3, ge=0)
    container: str = "app"
    container_port: int = Field(8080, gt=0, lt=65536)
    labels: dict[str, str] = Field(default_factory=dict, description="default: app=<name>")
    env: dict[str, str] = Field(default_factory=dict)
    env_from_secrets: list[str] = Field(
        default_factory=list,
        description="Secrets the container takes its environment from (envFrom)",
    )
    progress_deadline_seconds: int = Field(600, gt=0)
    revision_history_limit: int = Field(10, ge=0)
    min_ready_seconds: int = Field(0, ge=0)
    cloudsql_proxy: CloudSqlProxySeed | None = Field(
        None, description="a Cloud SQL Auth Proxy sidecar in the pods"
    )
    resources: ContainerResources = Field(
        default_factory=lambda: DEFAULT_RESOURCES.model_copy(deep=True),
        description="the app container's requests and limits; {} for none",
    )
    revisions: list[Revision] = Field(min_length=1)

    @property
    def selector(self) -> dict[str, str]:
        return self.labels or {"app": self.name}


class ServiceSeed(Strict):
    name: str
    namespace: str = "default"
    type: Literal["LoadBalancer", "ClusterIP"] = "LoadBalancer"
    selector: dict[str, str]
    port: int = Field(0, ge=0, lt=65536, description="0: pick a free port on 127.0.0.1")
    target_port: int = Field(8080, gt=0, lt=65536)


class ConfigSeed(Strict):
    name: str
    namespace: str = "default"
    data: dict[str, str] = Field(default_factory=dict)


class DatabaseSeed(Strict):
    """A Cloud SQL instance in the sandbox: a real PostgreSQL with the app's schema
    and sample data, its connection in a Secret, and a first backup taken."""

    instance: str = Field(pattern=r"^[a-z][-a-z0-9]*$")
    database: str = Field(pattern=r"^[a-z_][a-z0-9_]*$")
    user: str = Field(pattern=r"^[a-z_][a-z0-9_]*$")
    password: str = Field(
        min_length=8, description="sandbox only; written to the Secret, never logged"
    )
    secret: str = Field(
        description="the Secret (in namespace) that gets DATABASE_HOST/PORT/NAME/USER/PASSWORD"
    )
    namespace: str = "default"
    prepare: list[list[str]] = Field(
        default_factory=list,
        description="commands run with the database's env before the first backup, e.g. "
        "migrations and seed",
    )


class FaultRule(Strict):
    """Fault injection for one resource and verb ('*' matches any).

    `when: before` answers instead of doing the work. `when: after` does the work (a write
    that the emulator applies and logs as an effect) and then loses the answer: a 500/503,
    a reset connection, an answer late by `latency_ms`, or one held until a test releases it
    (`hold`), the moment a test uses to kill the caller between the effect and its record."""

    resource: str = "*"
    verb: str = "*"
    name: str = Field("*", description="the object's name (Kubernetes API only); '*' any")
    when: Literal["before", "after"] = "before"
    status: Literal[429, 500, 503] | None = None
    rate: float = Field(1.0, ge=0, le=1)
    retry_after_seconds: int = Field(1, ge=0)
    latency_ms: float = Field(0.0, ge=0)
    drop: bool = False
    hold: bool = Field(
        False, description="after the write: keep the answer until POST /sandbox/holds/release"
    )
    times: int | None = Field(None, ge=1, description="None: no limit")

    @model_validator(mode="after")
    def _hold_needs_after(self) -> FaultRule:
        if self.hold and self.when != "after":
            raise ValueError("hold keeps the answer to a write that was applied: set when: after")
        if self.when == "after" and self.status == 429:
            raise ValueError(
                "429 means the request was not applied: an after-write fault answers 500 or 503"
            )
        return self


_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def point_in_time(value: str, now: datetime) -> datetime:
    """`14d`, `3h`, `90m`, `30s` before `now`, or an RFC 3339 time with an offset."""
    match = _AGO.match(value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{value!r}: a time needs an offset (Z or +09:00)")
    return moment.astimezone(UTC)


class RegistryImage(Strict):
    """One pushed image: its tags and when it was pushed (`14d` = 14 days before
    the sandbox starts, or an RFC 3339 time)."""

    package: str = Field("tekutoko-api", pattern=r"^[a-z0-9][-a-z0-9._/]*$")
    tags: list[str] = Field(min_length=1)
    pushed: str = Field(
        "1d", description="how long before the sandbox starts, e.g. 14d, 3h; or an RFC 3339 time"
    )
    digest: str | None = Field(
        None, pattern=r"^sha256:[0-9a-f]{64}$", description="default: derived from package and tags"
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        for tag in tags:
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
                raise ValueError(f"{tag!r} is not a Docker tag")
            if tag.endswith("-missing"):
                raise ValueError(
                    f"{tag}: tags ending in -missing are the ones absent from the registry"
                )
        return tags

    @field_validator("pushed")
    @classmethod
    def _pushed(cls, value: str) -> str:
        point_in_time(value, datetime.now(UTC))
        return value


class RegistrySeed(Strict):
    """An Artifact Registry Docker repository (`LOCATION-docker.pkg.dev/PROJECT/REPOSITORY`)."""

    project: str = "tekutoko-prod"
    location: str = "asia-northeast1"
    repository: str = "tekutoko"
    nodes_can_pull: bool = Field(
        True,
        description="whether the nodes' service account has "
        "artifactregistry.repositories.downloadArtifacts",
    )
    images: list[RegistryImage] = Field(default_factory=list)

    @property
    def host_path(self) -> str:
        return f"{self.location}-docker.pkg.dev/{self.project}/{self.repository}"

    def tagged(self, package: str, tag: str) -> RegistryImage | None:
        return next((i for i in self.images if i.package == package and tag in i.tags), None)


class WorkflowInput(Strict):
    description: str = ""
    required: bool = False


class CdWorkflowSeed(Strict):
    """The repository's "CD - Production" workflow: a workflow_dispatch with inputs, one
    job in an environment with required reviewers that backs up the live Deployment as an
    artifact, then sets its image to `<image>:<tag>` and waits for the rollout."""

    name: str = "CD - Production"
    file: str = Field("cd-production.yml", pattern=r"^[A-Za-z0-9_.-]+\.ya?ml$")
    inputs: dict[str, WorkflowInput] = Field(
        default_factory=lambda: {
            "tag": WorkflowInput(description="image tag to deploy", required=True)
        }
    )
    environment: str = "production"
    reviewers: list[str] = Field(default_factory=lambda: ["sre-lead"], min_length=1)
    deployment: str = Field("tekutoko-api", description="one of the scenario's deployments")
    image: str = Field(
        "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api",
        description="the image, without tag",
    )
    step_seconds: float = Field(
        1.0, ge=0, description="simulated seconds each phase of a run takes"
    )
    rollout_timeout_seconds: float = Field(600.0, gt=0)


class GitHubSeed(Strict):
    repository: str = Field("tekutoko/tekutoko-api", pattern=r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$")
    branches: list[str] = Field(
        default_factory=lambda: ["main"],
        min_length=1,
        description="the first is the default branch",
    )
    token_user: str = Field("oncall-sre", description="the login the sandbox's token belongs to")
    artifact_retention_days: int = Field(90, ge=1, le=400)
    cd: CdWorkflowSeed = Field(default_factory=CdWorkflowSeed)
    enterprise_version: str | None = Field(
        None,
        pattern=r"^3\.[0-9]+$",
        description="act as GitHub Enterprise Server of this version (e.g. '3.20') instead of "
        "github.com: before 3.21 a dispatch's return_run_details is refused with 400 and API "
        "version 2026-03-10 is unknown",
    )
    rate_limit_per_hour: int | None = Field(
        5000,
        ge=1,
        description="the token's primary rate limit (github.com: 5,000 an hour for a personal "
        "access token); None: none and no x-ratelimit-* headers (Enterprise Server's default)",
    )
    rate_limited_status: Literal[403, 429] = Field(
        403, description="what an exceeded limit answers: GitHub documents 403 or 429"
    )


class Scenario(Strict):
    name: str
    description: str = ""
    clock_speed: float = Field(1.0, gt=0, le=1000)
    metrics_ingestion_delay_seconds: float = Field(
        10.0,
        ge=0,
        le=600,
        description="metric seconds after its minute ends before a point is visible (Google: up "
        "to 210 s for load-balancer metrics)",
    )
    prometheus_scrape_interval_seconds: float = Field(
        30.0,
        ge=5,
        le=300,
        description="metric seconds between two scrapes of a pod by its PodMonitoring (the "
        "endpoint's interval; Google's examples use 30s)",
    )
    prometheus_ingestion_delay_seconds: float = Field(
        5.0,
        ge=0,
        le=600,
        description="metric seconds after its scrape before a Prometheus sample can be queried",
    )
    namespaces: list[str] = Field(default_factory=lambda: ["default"])
    images: list[ImageRule] = Field(default_factory=list)
    default_image: ImageProfile = Field(default_factory=ImageProfile)
    api_paths: list[str] = Field(default_factory=lambda: ["/v1/walks"])
    deployments: list[DeploymentSeed] = Field(default_factory=list)
    services: list[ServiceSeed] = Field(default_factory=list)
    configmaps: list[ConfigSeed] = Field(default_factory=list)
    secrets: list[ConfigSeed] = Field(default_factory=list)
    faults: list[FaultRule] = Field(default_factory=list)
    databases: list[DatabaseSeed] = Field(default_factory=list)
    registry: RegistrySeed | None = Field(
        None, description="an Artifact Registry repository holding the deployments' images"
    )
    github: GitHubSeed | None = Field(
        None, description="a GitHub repository with the CD workflow (needs registry)"
    )

    def profile_for(self, image: str) -> ImageProfile:
        for rule in self.images:
            if fnmatch.fnmatchcase(image, rule.match):
                return rule.profile
        return self.default_image

    @model_validator(mode="after")
    def _namespaces_known(self) -> Scenario:
        declared = set(self.namespaces)
        for seed in [*self.deployments, *self.services, *self.configmaps, *self.secrets]:
            if seed.namespace not in declared:
                raise ValueError(f"{seed.name}: namespace {seed.namespace!r} is not in namespaces")
        for db in self.databases:
            if db.namespace not in declared:
                raise ValueError(f"{db.instance}: namespace {db.namespace!r} is not in namespaces")
        databases = {db.instance: db for db in self.databases}
        for seed in self.deployments:
            proxy = seed.cloudsql_proxy
            if proxy is None:
                continue
            if proxy.instance not in databases:
                known = ", ".join(sorted(databases)) or "none are declared"
                raise ValueError(
                    f"{seed.name}: cloudsql_proxy.instance {proxy.instance!r} is not one of the "
                    f"scenario's databases ({known})"
                )
            if databases[proxy.instance].namespace != seed.namespace:
                raise ValueError(
                    f"{seed.name}: cloudsql_proxy.instance {proxy.instance!r} keeps its Secret in "
                    "namespace "
                    f"{databases[proxy.instance].namespace!r}, not {seed.namespace!r}"
                )
        self._registry_consistent()
        return self

    def _registry_consistent(self) -> None:
        registry = self.registry
        if registry is not None:
            for seed in self.deployments:
                for revision in seed.revisions:
                    where, _, tag = revision.image.rpartition(":")
                    if not where.startswith(registry.host_path + "/") or tag.endswith("-missing"):
                        continue
                    if registry.tagged(where.removeprefix(registry.host_path + "/"), tag) is None:
                        raise ValueError(
                            f"{seed.name}: revision image {revision.image} is not in "
                            "registry.images "
                            "(only tags ending in -missing may be absent)"
                        )
        if self.github is not None:
            if registry is None:
                raise ValueError(
                    "github: the CD workflow checks tags in Artifact Registry; add a registry "
                    "section"
                )
            if not any(d.name == self.github.cd.deployment for d in self.deployments):
                raise ValueError(
                    f"github.cd.deployment {self.github.cd.deployment!r} is not one of the "
                    "scenario's deployments"
                )
            if not self.github.cd.image.startswith(registry.host_path + "/"):
                raise ValueError(
                    f"github.cd.image {self.github.cd.image} is not in the registry "
                    f"{registry.host_path}"
                )

    def proxied_database(self, seed: DeploymentSeed) -> DatabaseSeed | None:
        """The database a deployment's proxy sidecar names, if it has one and the scenario still
        declares it."""
        if seed.cloudsql_proxy is None:
            return None
        return next(
            (db for db in self.databases if db.instance == seed.cloudsql_proxy.instance), None
        )


def bundled_scenarios() -> list[str]:
    folder = resources.files("sandbox") / "scenarios"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_scenario(name_or_path: str) -> Scenario:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ScenarioError(f"scenario file {name_or_path} does not exist")
        text, origin = path.read_text(encoding="utf-8"), str(path)
    else:
        if name_or_path not in bundled_scenarios():
            raise ScenarioError(
                f"unknown scenario {name_or_path!r}: use one of {', '.join(bundled_scenarios())} "
                "or a YAML file path"
            )
        text = (resources.files("sandbox") / "scenarios" / f"{name_or_path}.yaml").read_text(
            encoding="utf-8"
        )
        origin = f"scenario {name_or_path}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise ScenarioError(f"{origin}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{origin}: expected a mapping at the top level")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ScenarioError(f"{origin}: {where}: {first['msg']}{more}") from None
