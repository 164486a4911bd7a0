"""Running a service's own command in one of its pods through the Kubernetes
exec API (the WebSocket channel protocol), with stdout, stderr and the exit
code captured for the audit trail."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable
from typing import TypeVar

from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.stream import WsApiClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook import activity_refs as refs
from runbook.catalog import Catalog
from runbook.migration_models import OUTPUT_KEPT, ExecRequest, ExecResult
from runbook.migrations import fill

from .errors import permanent, raise_for_api_error
from .gatekeeper import Gatekeeper
from .heartbeat import Heartbeat, PodProgress
from .verify import VerifyActivities

STDOUT, STDERR, ERROR = 1, 2, 3
T = TypeVar("T")
HEARTBEAT_SECONDS = (
    2.0  # while a command runs: the workflow's heartbeat timeout (~10 s) notices a lost worker
)


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= OUTPUT_KEPT else "…" + text[-OUTPUT_KEPT:]


class PodExecActivities:
    def __init__(
        self,
        exec_core: client.CoreV1Api,
        checks: VerifyActivities,
        catalog: Catalog,
        gatekeeper: Gatekeeper | None = None,
    ) -> None:
        self.exec_core = exec_core  # a CoreV1Api over a WsApiClient
        self.checks = checks
        self.catalog = (
            catalog  # the commands a service may run come from here, never from the request
        )
        self.gatekeeper = gatekeeper

    async def ready_pod(
        self, namespace: str, deployment: str, container: str | None
    ) -> tuple[str, str]:
        """(pod, container) of a Running and Ready pod of the deployment."""
        _, pods = await self.checks.deployment_pods(namespace, deployment)
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            statuses = pod.status.container_statuses or []
            if (
                pod.status.phase == "Running"
                and statuses
                and all(cs.ready for cs in statuses)
                and not pod.metadata.deletion_timestamp
            ):
                names = [c.name for c in pod.spec.containers]
                chosen = container or names[0]
                if chosen not in names:
                    raise permanent(
                        f"deployment/{deployment} has no container {chosen!r} (containers: "
                        f"{', '.join(names)}); fix the catalog's container setting",
                        "ContainerNotFound",
                    )
                return pod.metadata.name, chosen
        # Retryable: a rollout in progress may have no Ready pod for a moment.
        raise ApplicationError(
            f"deployment/{deployment} in {namespace!r} has no Running and Ready pod to run the "
            "command in",
            type="NoReadyPod",
        )

    async def run(
        self, namespace: str, pod: str, container: str, command: list[str], timeout: float
    ) -> tuple[str, str, int]:
        """(stdout, stderr, exit code) of `command` in the container; permanent failure past
        `timeout`."""
        try:
            out, err, code = await asyncio.wait_for(
                self._heartbeating(self._run(namespace, pod, container, command), pod), timeout
            )
        except TimeoutError:
            raise permanent(
                f"{' '.join(command[:3])} ... in pod {pod} did not finish within {timeout:g}s; "
                "check the pod before retrying",
                "ExecTimeout",
            ) from None
        except ApiException as exc:
            raise_for_api_error(exc, f"exec in pod/{pod}")
        return _tail(out), _tail(err), code

    @staticmethod
    async def _heartbeating(work: Awaitable[T], pod: str) -> T:
        """Await `work`, heartbeating at most every HEARTBEAT_SECONDS while it runs (inside an
        activity)."""
        started = time.monotonic()
        return await Heartbeat(PodProgress, every=HEARTBEAT_SECONDS).during(
            work, lambda: PodProgress(pod=pod, running_seconds=round(time.monotonic() - started, 1))
        )

    async def _run(
        self, namespace: str, pod: str, container: str, command: list[str]
    ) -> tuple[bytes, bytes, int]:
        connect = await self.exec_core.connect_get_namespaced_pod_exec_without_preload_content(
            pod,
            namespace,
            command=command,
            container=container,
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
        )
        out, err, status = bytearray(), bytearray(), bytearray()
        async with connect as ws:
            async for message in ws:
                data = message.data
                if not isinstance(data, bytes) or not data:
                    continue
                channel, payload = data[0], data[1:]
                if channel == STDOUT:
                    out += payload
                elif channel == STDERR:
                    err += payload
                elif channel == ERROR:
                    status += payload
        return bytes(out), bytes(err), WsApiClient.parse_error_data(bytes(status)) if status else 0

    @activity.defn(name=refs.EXEC.name)
    async def exec_in_pod(self, request: ExecRequest) -> ExecResult:
        entry = self.catalog.named(request.service)
        if entry is None or entry.migration is None:
            raise permanent(
                f"service {request.service!r} has no migration commands in this worker's catalog",
                "UnknownService",
            )
        config = entry.migration
        if request.action == "down_to":
            if request.version is None:
                raise permanent("down_to needs the target version", "ExecRefused")
            if self.gatekeeper is not None:
                self.gatekeeper.require(
                    request.grant,
                    entry,
                    config.approvals,
                    {
                        "kind": "migration",
                        "service": request.service,
                        "to_version": request.version,
                    },
                    f"migrate {request.service} down to version {request.version}",
                )
            command = fill(config.down_to_command, version=request.version, steps=request.steps)
        else:
            command = (
                config.version_command if request.action == "version" else config.history_command
            )
        pod, container = await self.ready_pod(entry.namespace, entry.deployment, config.container)
        Heartbeat(PodProgress).beat(PodProgress(pod=pod))
        out, err, code = await self.run(
            entry.namespace, pod, container, command, config.command_timeout_seconds
        )
        return ExecResult(
            pod=pod,
            container=container,
            command=command,
            exit_code=code,
            stdout=out,
            stderr=err,
            at=dt.datetime.now(dt.UTC),
        )
