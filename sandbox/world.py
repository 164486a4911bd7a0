"""The running sandbox: API server, controllers, kubelet and load balancers on
one event loop, seeded from a scenario, with a kubeconfig and endpoints file."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from .alerts import AlertsEmulator
from .artifact_registry import ArtifactRegistryEmulator
from .cd_target import DeploymentTarget, cleaned
from .cloud_logging import CloudLoggingEmulator
from .cloudsql import CloudSqlEmulator
from .github import GitHubEmulator
from .kube.api import KubeApi
from .kube.clock import Clock
from .kube.defaults import apply_defaults
from .kube.deployment_controller import DeploymentController
from .kube.events import EventRecorder
from .kube.faults import EffectLog, FaultInjector, RequestLog
from .kube.kubelet import Kubelet
from .kube.loadbalancer import LoadBalancers
from .kube.replicaset_controller import ReplicaSetController
from .kube.resources import CONFIGMAPS, DEPLOYMENTS, NAMESPACES, PODS, SECRETS, SERVICES
from .kube.store import Store
from .manifests import (
    deployment_manifest,
    proxy_container,  # noqa: F401  (still importable from here)
)
from .monitoring import MetricServiceEmulator
from .pod_load import PodLoad
from .prometheus_api import PrometheusApi
from .prometheus_scrapes import PrometheusScrapes
from .scenario import DeploymentSeed, Scenario
from .slack import SlackEmulator
from .traffic import TrafficGenerator

log = logging.getLogger(__name__)

CHANGE_CAUSE = "kubernetes.io/change-cause"
CLOUDSQL_REGION = "asia-northeast1"
SEED_TIMEOUT_SECONDS = 120.0


class SandboxError(Exception):
    """The sandbox cannot start; the message says why in one line."""


class Sandbox:
    def __init__(
        self,
        scenario: Scenario,
        state_dir: Path,
        *,
        port: int = 0,
        seed: int | None = None,
        traffic_rps: float = 0.0,
        traffic_seconds: float = 3600.0,
        slack_gateway_url: str | None = None,
    ) -> None:
        self.scenario = scenario
        # Slack: its page's buttons send signed interactions to modoru's gateway.
        self.slack = SlackEmulator(gateway_url=slack_gateway_url)
        self.state_dir = Path(state_dir)
        self.requested_port = port
        self.clock = Clock(scenario.clock_speed)
        self.store = Store(self.clock)
        self.recorder = EventRecorder(self.store)
        self.kubelet = Kubelet(self.store, self.recorder, scenario, self.clock)
        self.replicasets = ReplicaSetController(self.store, self.recorder, self.clock)
        self.deployments = DeploymentController(self.store, self.recorder, self.clock)
        self.load_balancers = LoadBalancers(self.store, self.kubelet, scenario, seed=seed)
        self.faults = FaultInjector(seed=seed)
        self.pod_load = PodLoad(
            self.store,
            self.kubelet,
            self.clock,
            "tekutoko-prod",
            seed=seed,
            database_for=self._database_for,
            instances=lambda: self.cloudsql.instances if self.cloudsql is not None else [],
        )
        self.monitoring = MetricServiceEmulator(
            lambda: list(self.load_balancers.traffic),
            now=self.clock.metric_time,
            ingestion_delay_seconds=scenario.metrics_ingestion_delay_seconds,
            gauges=self.pod_load.samples.series,
            faults=self.faults,
        )
        self.logging = CloudLoggingEmulator(
            lambda: [*self.kubelet.retired, *self._live_pods()], project=self.monitoring.project
        )
        self.logging.faults = self.faults
        self.alerts = AlertsEmulator(
            lambda: list(self.load_balancers.traffic),
            lambda: [f"{ns}/{name}" for ns, name in self.load_balancers.frontends],
            project=self.monitoring.project,
            now=self.clock.metric_time,
        )
        self.alerts.faults = self.faults
        self.prometheus = PrometheusScrapes(
            lambda: self.load_balancers.traffic,
            self.clock.metric_time,
            self.monitoring.project,
            scrape_interval=scenario.prometheus_scrape_interval_seconds,
            ingestion_delay=scenario.prometheus_ingestion_delay_seconds,
        )
        self.alerts.more_routes.append(
            PrometheusApi(self.prometheus, self.monitoring.project, self.faults).add_routes
        )
        self.traffic = TrafficGenerator(
            self._service_urls, scenario.api_paths, traffic_rps, traffic_seconds
        )
        self.cloudsql = (
            CloudSqlEmulator(
                self.state_dir / "cloudsql",
                project=self.monitoring.project,
                region=CLOUDSQL_REGION,
                seed=seed,
            )
            if scenario.databases
            else None
        )
        self._database_env: dict[tuple[str, str], dict[str, str]] = {}
        self.registry = (
            ArtifactRegistryEmulator(
                scenario.registry, log_path=self.state_dir / "artifact-registry-requests.jsonl"
            )
            if scenario.registry
            else None
        )
        # Every applied change of the cluster, by the API or by the CD job (GET /sandbox/effects).
        self.cluster_effects = EffectLog()
        self.github = self._github_emulator()
        self.requests: RequestLog | None = None
        self.api: KubeApi | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self.port = 0

    def _github_emulator(self) -> GitHubEmulator | None:
        seed = self.scenario.github
        if seed is None:
            return None
        deployment = next(d for d in self.scenario.deployments if d.name == seed.cd.deployment)
        target = DeploymentTarget(
            self.store,
            deployment.namespace,
            deployment.name,
            deployment.container,
            effects=self.cluster_effects,
        )
        return GitHubEmulator(
            seed,
            target=target,
            registry=self.registry,
            clock=self.clock,
            log_path=self.state_dir / "github-requests.jsonl",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def github_token_path(self) -> Path:
        return self.state_dir / "github-token"

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def endpoints_path(self) -> Path:
        return self.state_dir / "endpoints.json"

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.requests = RequestLog(self.state_dir / "requests.jsonl")
        self.api = KubeApi(
            self.store,
            self.kubelet,
            self.faults,
            self.requests,
            hooks=self.load_balancers,
            resolve_instance=self.resolve_instance,
            effects=self.cluster_effects,
        )
        self._runner = web.AppRunner(
            self.api.build_app(),
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=2.0,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.requested_port, reuse_address=False)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise SandboxError(
                    f"port {self.requested_port} on 127.0.0.1 is already in use; pick another "
                    "with --port"
                ) from None
            raise SandboxError(
                f"cannot listen on 127.0.0.1:{self.requested_port}: {exc.strerror}"
            ) from None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._tasks = [
            asyncio.create_task(self.replicasets.queue.run(), name="replicaset-controller"),
            asyncio.create_task(self.deployments.queue.run(), name="deployment-controller"),
        ]
        await self.monitoring.start()
        await self.alerts.start()
        await self.logging.start()
        await self._prepare_databases()
        if self.registry is not None:
            await self.registry.start()
        await self._seed()
        if self.github is not None:
            await self.github.start()
        await self.slack.start()
        self.faults.replace(self.scenario.faults)
        self._write_files()
        self.traffic.start()
        self.pod_load.start()

    async def stop(self) -> None:
        await self.traffic.stop()
        await self.pod_load.stop()
        self.store.close_watches()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.replicasets.queue.stop()
        self.deployments.queue.stop()
        for runtime in self.kubelet.pods.values():
            for timer in runtime.timers:
                timer.cancel()
        await self.load_balancers.close()
        await self.monitoring.stop()
        await self.alerts.stop()
        await self.logging.stop()
        await self.slack.stop()
        for emulator in (self.github, self.registry):
            if emulator is not None:
                await emulator.stop()
        if self.cloudsql is not None:
            await self.cloudsql.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.requests is not None:
            self.requests.close()

    def _live_pods(self) -> list[tuple[Any, dict[str, str]]]:
        found = []
        for runtime in list(self.kubelet.pods.values()):
            pod = self.store.peek(PODS, runtime.namespace, runtime.name)
            found.append((runtime, dict((pod or {}).get("metadata", {}).get("labels") or {})))
        return found

    def _database_for(self, pod: dict[str, Any]) -> Any:
        """The Cloud SQL instance a pod's proxy sidecar reaches (its deployment's
        cloudsql_proxy)."""
        if self.cloudsql is None:
            return None
        labels = pod["metadata"].get("labels") or {}
        for seed in self.scenario.deployments:
            if (
                seed.namespace == pod["metadata"]["namespace"]
                and seed.cloudsql_proxy
                and all(labels.get(k) == v for k, v in seed.selector.items())
            ):
                return next(
                    (i for i in self.cloudsql.instances if i.name == seed.cloudsql_proxy.instance),
                    None,
                )
        return None

    def connection_name(self, instance: str) -> str:
        """PROJECT:REGION:INSTANCE, as Cloud SQL names an instance of this sandbox's project."""
        return f"{self.monitoring.project}:{CLOUDSQL_REGION}:{instance}"

    def resolve_instance(self, connection_name: str) -> tuple[str, int] | None:
        """Where a proxy given `connection_name` forwards to: the instance's real
        PostgreSQL, or None if there is no such running instance in this project and region."""
        return self.cloudsql.address_of(connection_name) if self.cloudsql is not None else None

    # -- seeding ---------------------------------------------------------------------

    async def _prepare_databases(self) -> None:
        """Each Cloud SQL instance: a real PostgreSQL brought to the app's schema with
        sample data by the scenario's commands, then a first automated backup."""
        if self.cloudsql is None:
            return
        await self.cloudsql.start()
        for db in self.scenario.databases:
            instance = await self.cloudsql.add_instance(
                db.instance,
                database=db.database,
                user=db.user,
                password=db.password,
                initial_backup=False,
            )
            env = instance.app_env()
            for command in db.prepare:
                argv = [sys.executable if part == "{python}" else part for part in command]
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=str(Path(__file__).resolve().parents[1]),
                    env={"PATH": os.environ.get("PATH", ""), **env},
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await proc.communicate()
                if proc.returncode != 0:
                    said = (err or out).decode(errors="replace").strip().splitlines()[-1:] or [""]
                    raise SandboxError(
                        f"preparing database {db.instance}: {' '.join(command)} exited "
                        f"{proc.returncode}: {said[0]}"
                    )
            await self.cloudsql.take_backup(db.instance)
            ports = {
                d.cloudsql_proxy.port
                for d in self.scenario.deployments
                if d.cloudsql_proxy and d.cloudsql_proxy.instance == db.instance
            }
            if ports:  # the pods reach it through their proxy sidecar, as on GKE
                env = {**env, "DATABASE_HOST": "localhost", "DATABASE_PORT": str(min(ports))}
            self._database_env[(db.namespace, db.secret)] = env

    async def _seed(self) -> None:
        """Build the scenario's world through the controllers, pods starting at once,
        so revision history and ReplicaSets are what a real cluster would have."""
        self.kubelet.instant = True
        try:
            for ns in dict.fromkeys(["default", *self.scenario.namespaces]):
                self.store.create(
                    NAMESPACES,
                    {
                        "metadata": {"name": ns},
                        "spec": {"finalizers": ["kubernetes"]},
                        "status": {"phase": "Active"},
                    },
                )
            for seed in self.scenario.configmaps:
                self.store.create(
                    CONFIGMAPS, {"metadata": {"name": seed.name}, "data": seed.data}, seed.namespace
                )
            for seed in self.scenario.secrets:
                values = {**seed.data, **self._database_env.pop((seed.namespace, seed.name), {})}
                data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
                self.store.create(
                    SECRETS,
                    {"metadata": {"name": seed.name}, "type": "Opaque", "data": data},
                    seed.namespace,
                )
            for (
                (namespace, name),
                values,
            ) in self._database_env.items():  # a database's Secret the scenario did not list
                data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
                self.store.create(
                    SECRETS, {"metadata": {"name": name}, "type": "Opaque", "data": data}, namespace
                )
            count = max((len(d.revisions) for d in self.scenario.deployments), default=0)
            for step in range(count):
                for seed in self.scenario.deployments:
                    if step < len(seed.revisions):
                        self._apply_revision(seed, step)
                await self.settle()
            for seed in self.scenario.services:
                svc = {
                    "metadata": {"name": seed.name, "namespace": seed.namespace},
                    "spec": {
                        "type": seed.type,
                        "selector": seed.selector,
                        "ports": [
                            {
                                "name": "http",
                                "port": seed.port,
                                "targetPort": seed.target_port,
                                "protocol": "TCP",
                            }
                        ],
                        "sessionAffinity": "None",
                    },
                }
                apply_defaults(SERVICES, svc)
                self.load_balancers.before_create(SERVICES, svc)
                self.store.create(SERVICES, svc, seed.namespace)
            await self.settle()
        finally:
            self.kubelet.instant = False

    def _apply_revision(self, seed: DeploymentSeed, step: int) -> None:
        revision = seed.revisions[step]
        database = self.scenario.proxied_database(seed)
        manifest = deployment_manifest(
            seed,
            revision.image,
            connection_name=self.connection_name(seed.cloudsql_proxy.instance)
            if seed.cloudsql_proxy
            else None,
            database_secret=database.secret if database else None,
        )
        apply_defaults(DEPLOYMENTS, manifest)
        if revision.change_cause:
            manifest["metadata"]["annotations"] = {CHANGE_CAUSE: revision.change_cause}
        current = self.store.peek(DEPLOYMENTS, seed.namespace, seed.name)
        if current is None:
            self.store.create(DEPLOYMENTS, manifest, seed.namespace)
            return
        self._record_past_deploy(seed, step, cleaned(current))
        updated = json.loads(json.dumps(current))
        updated["spec"]["template"] = manifest["spec"]["template"]
        annotations = updated["metadata"].setdefault("annotations", {})
        annotations.pop(CHANGE_CAUSE, None)
        annotations.update(manifest["metadata"].get("annotations", {}))
        self.store.update(DEPLOYMENTS, updated)

    def _record_past_deploy(self, seed: DeploymentSeed, step: int, backup: dict[str, Any]) -> None:
        """A revision after the first came from a CD run (approved, with its backup of
        the Deployment before it), some minutes after its image was pushed."""
        if self.github is None or self.registry is None or seed.name != self.github.cd.deployment:
            return
        where, _, tag = seed.revisions[step].image.rpartition(":")
        if where != self.github.cd.image:
            return
        now = self.clock.now()
        pushed = self.registry.pushed_at(where.rsplit("/", 1)[-1], tag)
        when = (
            pushed + dt.timedelta(minutes=10)
            if pushed
            else now - dt.timedelta(days=len(seed.revisions) - step)
        )
        self.github.seed_past_run(tag, backup, min(when, now - dt.timedelta(minutes=1)))

    async def settle(self, timeout: float = SEED_TIMEOUT_SECONDS) -> None:
        """Wait until the controllers have nothing left to do and every
        deployment reports its rollout complete."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.sleep(0.01)
            if self.replicasets.queue.pending or self.deployments.queue.pending:
                continue
            if all(self._rolled_out(d) for d in self.store.iter(DEPLOYMENTS)):
                return
        raise SandboxError(
            "the scenario's deployments did not settle; check the image profiles used by its "
            "revisions"
        )

    @staticmethod
    def _rolled_out(d: dict[str, Any]) -> bool:
        status = d.get("status") or {}
        replicas = d["spec"].get("replicas", 1)
        return (
            status.get("observedGeneration", 0) >= d["metadata"].get("generation", 1)
            and status.get("updatedReplicas", 0) == replicas
            and status.get("replicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas
        )

    # -- files for clients -----------------------------------------------------------

    def _service_urls(self) -> list[str]:
        return [
            url
            for ns, name in list(self.load_balancers.frontends)
            if (url := self.load_balancers.url(ns, name))
        ]

    def endpoints(self) -> dict[str, Any]:
        services = {}
        for ns, name in self.load_balancers.frontends:
            url = self.load_balancers.url(ns, name)
            if url:
                services[f"{ns}/{name}"] = url
        return {
            "kubernetes": self.url,
            "kubeconfig": str(self.kubeconfig_path),
            "services": services,
            "sandbox_admin": f"{self.url}/sandbox",
            "cloud_monitoring": f"127.0.0.1:{self.monitoring.port}",
            "monitoring_project": self.monitoring.project,
            "monitoring_rest": f"http://127.0.0.1:{self.alerts.port}",
            "cloud_logging": self.logging.url,
            "logging_project": self.logging.project,
            # Metric time = epoch + (wall - epoch) * speed: a client's clock for the monitoring
            # emulators.
            "metric_clock": {"epoch": self.clock.epoch, "speed": self.clock.speed},
            **(
                {"cloud_sql": self.cloudsql.url, "cloudsql_project": self.cloudsql.project}
                if self.cloudsql
                else {}
            ),
            **(
                {
                    "artifact_registry": self.registry.url,
                    "artifact_registry_repository": self.registry.repo_name,
                }
                if self.registry
                else {}
            ),
            **(
                {
                    "github_api": self.github.url,
                    "github_repository": self.github.seed.repository,
                    "github_token_file": str(self.github_token_path),
                }
                if self.github
                else {}
            ),
            # The bot token and signing secret stay in their 0600 files.
            "slack_api": self.slack.api_url,
            "slack_page": self.slack.page_url(),
            "slack_team": self.slack.space.team_id,
            "slack_channel": next(iter(self.slack.space.channels)),
            "slack_users": {u.name: u.id for u in self.slack.space.users.values()},
            "slack_bot_token_file": str(self.state_dir / "slack-bot-token"),
            "slack_signing_secret_file": str(self.state_dir / "slack-signing-secret"),
        }

    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "modoru-sandbox", "cluster": {"server": self.url}}],
            "users": [{"name": "modoru-sandbox", "user": {"token": "sandbox"}}],
            "contexts": [
                {
                    "name": "modoru-sandbox",
                    "context": {
                        "cluster": "modoru-sandbox",
                        "user": "modoru-sandbox",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "modoru-sandbox",
            "preferences": {},
        }

    def _write_files(self) -> None:
        _write_private(self.kubeconfig_path, yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        if (
            self.github is not None
        ):  # the token only in its own 0600 file, never in endpoints.json or the output
            _write_private(self.github_token_path, self.github.token + "\n")
        self.slack.write_secrets(self.state_dir)
        existing: dict[str, Any] = {}
        if self.endpoints_path.exists():
            with contextlib.suppress(ValueError):
                existing = json.loads(self.endpoints_path.read_text())
        existing.update(self.endpoints())
        _write_private(self.endpoints_path, json.dumps(existing, indent=2) + "\n")


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
