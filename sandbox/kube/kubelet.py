"""A simulated kubelet: pods pull, start, become Ready, crash or fail to pull
according to their image's profile, with the events and container states a real
node reports.

The first regular container is the one the image profile drives. Init
containers start first: a native sidecar (`restartPolicy: Always`, e.g. the
Cloud SQL Auth Proxy) is reported running, started and ready from then on and
does not count for the pod's Ready condition's container message; any other
init container is reported as completed."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..scenario import ImageProfile, Scenario
from .clock import Clock
from .events import NODE_NAME, EventRecorder
from .podnet import ProxyArgsError, is_proxy, parse_proxy_args
from .resources import PODS, ResourceType
from .store import Store

MAX_BACKOFF_SECONDS = 300.0
FIRST_BACKOFF_SECONDS = 10.0
LOG_LINES_KEPT = 2000
RETIRED_KEPT = 200


@dataclass
class PodRuntime:
    namespace: str
    name: str
    image: str
    container: str
    profile: ImageProfile
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    restarts: int = 0
    pull_failures: int = 0
    started: bool = False
    ready: bool = False
    logs: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES_KEPT))
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    initialized_at: str | None = None
    init_logs: dict[str, deque] = field(default_factory=dict)


def is_sidecar(container: dict[str, Any]) -> bool:
    return container.get("restartPolicy") == "Always"


def go_duration(seconds: float) -> str:
    """Format whole seconds the way Go's time.Duration prints them (10s, 1m20s, 5m0s)."""
    total = int(seconds)
    minutes, secs = divmod(total, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class Kubelet:
    def __init__(
        self, store: Store, recorder: EventRecorder, scenario: Scenario, clock: Clock
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.scenario = scenario
        self.clock = clock
        self.instant = False  # while seeding a scenario, pods start at once
        self.pods: dict[str, PodRuntime] = {}
        # Deleted pods with their labels: their logs stay readable in Cloud Logging.
        self.retired: deque[tuple[PodRuntime, dict[str, str]]] = deque(maxlen=RETIRED_KEPT)
        self._next_ip = 0
        store.add_listener(self._on_change)

    # -- reading, for the API's log endpoint and the load balancer -------------

    def logs(self, uid: str, container: str | None = None) -> list[str] | None:
        runtime = self.pods.get(uid)
        if runtime is None:
            return None
        if container is not None and container != runtime.container:
            return list(runtime.init_logs.get(container, ()))
        return list(runtime.logs)

    def sidecar_log(
        self, uid: str, container: str, message: str, *, severity: str = "INFO"
    ) -> None:
        """A line in an init container's log, in the proxy's structured format when it was asked
        for."""
        runtime = self.pods.get(uid)
        if runtime is None or container not in runtime.init_logs:
            return
        spec = next((c for c in runtime.init_containers if c["name"] == container), {})
        if "--structured-logs" in (spec.get("args") or []):
            line = json.dumps(
                {"severity": severity, "timestamp": self.clock.timestamp(), "message": message},
                separators=(",", ":"),
            )
        else:
            line = (
                f"{self.clock.timestamp().replace('-', '/').replace('T', ' ').rstrip('Z')} "
                f"{message}"
            )
        runtime.init_logs[container].append(f"{self.clock.micro_timestamp()} {line}")

    def log(self, uid: str, line: str) -> None:
        runtime = self.pods.get(uid)
        if runtime is not None:
            runtime.logs.append(f"{self.clock.micro_timestamp()} {line}")

    def profile(self, uid: str) -> ImageProfile | None:
        runtime = self.pods.get(uid)
        return None if runtime is None else runtime.profile

    # -- lifecycle ---------------------------------------------------------------

    def _on_change(
        self, event_type: str, resource: ResourceType, obj: dict, old: dict | None
    ) -> None:
        if resource is not PODS:
            return
        uid = obj["metadata"]["uid"]
        if event_type == "ADDED":
            loop = asyncio.get_running_loop()
            loop.call_soon(self._admit, obj["metadata"]["namespace"], obj["metadata"]["name"], uid)
        elif event_type == "DELETED":
            runtime = self.pods.pop(uid, None)
            if runtime is not None:
                self.retired.append((runtime, dict(obj["metadata"].get("labels") or {})))
                for timer in runtime.timers:
                    timer.cancel()
                if runtime.started:
                    self._event(
                        obj, "Normal", "Killing", f"Stopping container {runtime.container}", runtime
                    )
                if runtime.initialized_at:
                    for container in runtime.init_containers:
                        if is_sidecar(container):
                            self._event(
                                obj,
                                "Normal",
                                "Killing",
                                f"Stopping container {container['name']}",
                                runtime,
                                container=container,
                            )

    def _later(self, runtime: PodRuntime, simulated_seconds: float, fn: Callable[[], None]) -> None:
        delay = 0.0 if self.instant else self.clock.real_seconds(simulated_seconds)
        runtime.timers = [t for t in runtime.timers if not t.cancelled()]
        runtime.timers.append(asyncio.get_running_loop().call_later(delay, fn))

    def _admit(self, namespace: str, name: str, uid: str) -> None:
        pod = self.store.peek(PODS, namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        container = pod["spec"]["containers"][0]
        runtime = PodRuntime(
            namespace,
            name,
            container["image"],
            container["name"],
            self.scenario.profile_for(container["image"]),
        )
        runtime.init_containers = list(pod["spec"].get("initContainers") or [])
        runtime.init_logs = {
            c["name"]: deque(maxlen=LOG_LINES_KEPT) for c in runtime.init_containers
        }
        self.pods[uid] = runtime
        self._event(
            pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {namespace}/{name} to {NODE_NAME}",
            runtime,
            component="default-scheduler",
        )
        self._next_ip += 1
        ip = f"10.8.{(self._next_ip // 250) % 250}.{self._next_ip % 250 + 2}"
        # With init containers, everything waits as PodInitializing first (kubelet's
        # defaultWaitingState).
        waiting = {
            "waiting": {
                "reason": "PodInitializing" if runtime.init_containers else "ContainerCreating"
            }
        }
        status: dict[str, Any] = {
            "phase": "Pending",
            "hostIP": "10.128.0.2",
            "hostIPs": [{"ip": "10.128.0.2"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": self.clock.timestamp(),
            "qosClass": "BestEffort",
            "conditions": self._conditions(
                initialized=not runtime.init_containers, ready=False, runtime=runtime
            ),
            "containerStatuses": [self._container_status(runtime, waiting)],
        }
        if runtime.init_containers:
            status["initContainerStatuses"] = [
                self._init_status(pod, c, {"waiting": {"reason": "PodInitializing"}})
                for c in runtime.init_containers
            ]
        self._write_status(runtime, status)
        if runtime.init_containers:
            self._initialize(runtime)
        self._pull(runtime)

    def _initialize(self, runtime: PodRuntime) -> None:
        """Run the init containers: ordinary ones complete, sidecars keep running (and are ready
        once running)."""
        pod = self._pod(runtime)
        if pod is None:
            return
        now = self.clock.timestamp()
        statuses = []
        for container in runtime.init_containers:
            image = container.get("image", "")
            self._event(
                pod,
                "Normal",
                "Pulled",
                f'Container image "{image}" already present on machine',
                runtime,
                container=container,
            )
            self._event(
                pod,
                "Normal",
                "Created",
                f"Created container {container['name']}",
                runtime,
                container=container,
            )
            self._event(
                pod,
                "Normal",
                "Started",
                f"Started container {container['name']}",
                runtime,
                container=container,
            )
            if is_sidecar(container):
                statuses.append(
                    self._init_status(pod, container, {"running": {"startedAt": now}}, ready=True)
                )
                self._proxy_started(runtime, container)
            else:
                terminated = {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": now,
                    "finishedAt": now,
                    "containerID": self._container_id(pod, container["name"]),
                }
                statuses.append(self._init_status(pod, container, {"terminated": terminated}))
        runtime.initialized_at = now
        status = copy.deepcopy(pod.get("status") or {})
        status["initContainerStatuses"] = statuses
        status["conditions"] = self._conditions(initialized=True, ready=False, runtime=runtime)
        self._write_status(runtime, status)

    def _proxy_started(self, runtime: PodRuntime, container: dict[str, Any]) -> None:
        if not is_proxy(container):
            return
        name = container["name"]
        self.sidecar_log_now(runtime, name, "Authorizing with Application Default Credentials")
        try:
            listeners = parse_proxy_args(
                [*(container.get("command") or [])[1:], *(container.get("args") or [])]
            )
        except ProxyArgsError as exc:
            self.sidecar_log_now(runtime, name, str(exc), severity="ERROR")
            return
        for listener in listeners:
            self.sidecar_log_now(
                runtime,
                name,
                f"[{listener.instance}] Listening on {listener.address}:{listener.port}",
            )
        self.sidecar_log_now(
            runtime, name, "The proxy has started successfully and is ready for new connections!"
        )

    def sidecar_log_now(
        self, runtime: PodRuntime, container: str, message: str, *, severity: str = "INFO"
    ) -> None:
        pod = self._pod(runtime)
        if pod is not None:
            self.sidecar_log(pod["metadata"]["uid"], container, message, severity=severity)

    def _pull(self, runtime: PodRuntime) -> None:
        pod = self._pod(runtime)
        if pod is None:
            return
        self._event(pod, "Normal", "Pulling", f'Pulling image "{runtime.image}"', runtime)
        self._later(runtime, runtime.profile.pull_seconds, lambda: self._pulled(runtime))

    def _pulled(self, runtime: PodRuntime) -> None:
        pod = self._pod(runtime)
        if pod is None:
            return
        if runtime.profile.pull == "fail":
            runtime.pull_failures += 1
            detail = (
                "rpc error: code = NotFound desc = failed to pull and unpack image "
                f'"{runtime.image}": '
                f'failed to resolve reference "{runtime.image}": {runtime.image}: not found'
            )
            self._event(
                pod,
                "Warning",
                "Failed",
                f'Failed to pull image "{runtime.image}": {detail}',
                runtime,
            )
            self._event(pod, "Warning", "Failed", "Error: ErrImagePull", runtime)
            self._set_waiting(runtime, "ErrImagePull", detail)
            backoff = self._backoff(runtime.pull_failures)
            self._later(runtime, min(backoff / 2, 5.0), lambda: self._pull_backoff(runtime))
            return
        took = runtime.profile.pull_seconds
        self._event(
            pod,
            "Normal",
            "Pulled",
            f'Successfully pulled image "{runtime.image}" in {took:.3g}s ({took:.3g}s including '
            "waiting). Image size: 48213532 bytes.",
            runtime,
        )
        self._start(runtime)

    def _pull_backoff(self, runtime: PodRuntime) -> None:
        pod = self._pod(runtime)
        if pod is None:
            return
        message = f'Back-off pulling image "{runtime.image}"'
        self._event(pod, "Normal", "BackOff", message, runtime)
        self._event(pod, "Warning", "Failed", "Error: ImagePullBackOff", runtime)
        self._set_waiting(runtime, "ImagePullBackOff", message)
        self._later(runtime, self._backoff(runtime.pull_failures), lambda: self._pull(runtime))

    def _start(self, runtime: PodRuntime) -> None:
        pod = self._pod(runtime)
        if pod is None:
            return
        if runtime.restarts:
            self._event(
                pod,
                "Normal",
                "Pulled",
                f'Container image "{runtime.image}" already present on machine',
                runtime,
            )
        self._event(pod, "Normal", "Created", f"Created container {runtime.container}", runtime)
        self._event(pod, "Normal", "Started", f"Started container {runtime.container}", runtime)
        runtime.started = True
        version = runtime.profile.version or runtime.image.rsplit(":", 1)[-1]
        runtime.logs.append(
            f'{self.clock.micro_timestamp()} level=info msg="starting" version={version}'
        )
        runtime.logs.append(f'{self.clock.micro_timestamp()} level=info msg="listening" addr=:8080')
        started_at = self.clock.timestamp()
        self._write_container(
            runtime, {"running": {"startedAt": started_at}}, ready=False, phase="Running"
        )
        if runtime.profile.crash_after_seconds is not None:
            if runtime.profile.ready_after_seconds < runtime.profile.crash_after_seconds:
                # ready first, so it takes traffic, and then it crashes
                self._later(
                    runtime,
                    runtime.profile.ready_after_seconds,
                    lambda: self._become_ready(runtime),
                )
            self._later(
                runtime,
                runtime.profile.crash_after_seconds,
                lambda: self._crash(runtime, started_at),
            )
        else:
            self._later(
                runtime, runtime.profile.ready_after_seconds, lambda: self._become_ready(runtime)
            )

    def _become_ready(self, runtime: PodRuntime) -> None:
        if self._pod(runtime) is None:
            return
        runtime.ready = True
        status = self._pod(runtime)["status"]["containerStatuses"][0]["state"]
        self._write_container(runtime, status, ready=True, phase="Running")

    def _crash(self, runtime: PodRuntime, started_at: str) -> None:
        pod = self._pod(runtime)
        if pod is None:
            return
        runtime.logs.append(
            f'{self.clock.micro_timestamp()} level=fatal msg="panic: cannot connect to database"'
        )
        runtime.restarts += 1
        backoff = self._backoff(runtime.restarts)
        message = (
            f"back-off {go_duration(backoff)} restarting failed container={runtime.container} "
            f"pod={runtime.name}_{runtime.namespace}({pod['metadata']['uid']})"
        )
        last = {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": started_at,
                "finishedAt": self.clock.timestamp(),
                "containerID": self._container_id(pod),
            }
        }
        self._event(
            pod,
            "Warning",
            "BackOff",
            f"Back-off restarting failed container {runtime.container} in pod "
            f"{runtime.name}_{runtime.namespace}({pod['metadata']['uid']})",
            runtime,
        )
        self._write_container(
            runtime,
            {"waiting": {"reason": "CrashLoopBackOff", "message": message}},
            ready=False,
            phase="Running",
            last_state=last,
        )
        self._later(runtime, backoff, lambda: self._start(runtime))

    # -- status helpers ----------------------------------------------------------

    @staticmethod
    def _backoff(attempt: int) -> float:
        return min(FIRST_BACKOFF_SECONDS * 2 ** max(attempt - 1, 0), MAX_BACKOFF_SECONDS)

    def _pod(self, runtime: PodRuntime) -> dict[str, Any] | None:
        return self.store.peek(PODS, runtime.namespace, runtime.name)

    @staticmethod
    def _container_id(pod: dict[str, Any], container: str | None = None) -> str:
        if container is None:
            return "containerd://" + pod["metadata"]["uid"].replace("-", "")
        return (
            "containerd://"
            + hashlib.sha256(f"{pod['metadata']['uid']}/{container}".encode()).hexdigest()
        )

    def _init_status(
        self,
        pod: dict[str, Any],
        container: dict[str, Any],
        state: dict[str, Any],
        *,
        ready: bool = False,
    ) -> dict[str, Any]:
        image = container.get("image", "")
        began = "waiting" not in state
        status: dict[str, Any] = {
            "name": container["name"],
            "image": image,
            "imageID": f"{image.rsplit(':', 1)[0]}@sha256:"
            f"{hashlib.sha256(image.encode()).hexdigest()}"
            if began
            else "",
            "ready": ready,
            "restartCount": 0,
            "started": "running" in state,
            "state": state,
            "lastState": {},
        }
        if began:
            status["containerID"] = self._container_id(pod, container["name"])
        return status

    def _conditions(
        self, *, initialized: bool, ready: bool, runtime: PodRuntime | None = None
    ) -> list[dict[str, Any]]:
        now = self.clock.timestamp()
        flag = "True" if ready else "False"
        conditions = [
            {
                "type": "PodReadyToStartContainers",
                "status": "True",
                "lastTransitionTime": now,
                "lastProbeTime": None,
            },
            {
                "type": "Initialized",
                "status": "True" if initialized else "False",
                "lastTransitionTime": now,
                "lastProbeTime": None,
            },
            {"type": "Ready", "status": flag, "lastTransitionTime": now, "lastProbeTime": None},
            {
                "type": "ContainersReady",
                "status": flag,
                "lastTransitionTime": now,
                "lastProbeTime": None,
            },
            {
                "type": "PodScheduled",
                "status": "True",
                "lastTransitionTime": now,
                "lastProbeTime": None,
            },
        ]
        if not ready:
            for cond in conditions[2:4]:
                cond["reason"] = "ContainersNotReady"
                cond["message"] = (
                    f"containers with unready status: [{runtime.container if runtime else 'app'}]"
                )
        if not initialized:
            pending = " ".join(c["name"] for c in (runtime.init_containers if runtime else []))
            conditions[1].update(
                reason="ContainersNotInitialized",
                message=f"containers with incomplete status: [{pending}]",
            )
        return conditions

    def _container_status(
        self,
        runtime: PodRuntime,
        state: dict[str, Any],
        *,
        ready: bool = False,
        last_state: dict | None = None,
    ) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": runtime.container,
            "image": runtime.image,
            "imageID": ""
            if not runtime.started and runtime.restarts == 0 and "running" not in state
            else f"{runtime.image.rsplit(':', 1)[0]}@sha256:{abs(hash(runtime.image)):064x}"[:200],
            "ready": ready,
            "restartCount": runtime.restarts,
            "started": "running" in state,
            "state": state,
            "lastState": last_state or {},
        }
        if "running" in state or last_state:
            pod = self._pod(runtime)
            if pod is not None:
                status["containerID"] = self._container_id(pod)
        return status

    def _set_waiting(self, runtime: PodRuntime, reason: str, message: str) -> None:
        self._write_container(
            runtime,
            {"waiting": {"reason": reason, "message": message}},
            ready=False,
            phase="Pending",
        )

    def _write_container(
        self,
        runtime: PodRuntime,
        state: dict[str, Any],
        *,
        ready: bool,
        phase: str,
        last_state: dict | None = None,
    ) -> None:
        pod = self._pod(runtime)
        if pod is None:
            return
        previous = pod.get("status", {}).get("containerStatuses", [{}])[0]
        status = copy.deepcopy(pod.get("status", {}))
        status["phase"] = phase
        old_ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        if old_ready != ready or not status.get("conditions"):
            status["conditions"] = self._conditions(initialized=True, ready=ready, runtime=runtime)
        status["containerStatuses"] = [
            self._container_status(
                runtime,
                state,
                ready=ready,
                last_state=last_state or previous.get("lastState") or None,
            )
        ]
        self._write_status(runtime, status)

    def _write_status(self, runtime: PodRuntime, status: dict[str, Any]) -> None:
        pod = self._pod(runtime)
        if pod is None:
            return
        updated = dict(pod)
        updated["status"] = status
        self.store.update(PODS, updated, subresource="status", check_version=False)

    def _event(
        self,
        pod: dict[str, Any],
        event_type: str,
        reason: str,
        message: str,
        runtime: PodRuntime,
        *,
        component: str = "kubelet",
        container: dict[str, Any] | None = None,
    ) -> None:
        if component != "kubelet":
            field_path = None
        elif container is not None:
            field_path = f"spec.initContainers{{{container['name']}}}"
        else:
            field_path = f"spec.containers{{{runtime.container}}}"
        self.recorder.record(
            pod, event_type, reason, message, component=component, field_path=field_path
        )
