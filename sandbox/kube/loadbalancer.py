"""Service front ends: every Service of type LoadBalancer gets a real HTTP
listener on 127.0.0.1 that routes each request to one Ready pod and answers as
that pod's image profile says."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import logging
import math
import random
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..scenario import ImageProfile, Scenario
from . import errors
from .kubelet import Kubelet
from .replicaset_controller import pod_is_ready
from .resources import PODS, SERVICES, ResourceType
from .store import Store

log = logging.getLogger(__name__)

TRAFFIC_KEPT = 200_000
Z95 = 1.6448536269514722


@dataclass
class Frontend:
    namespace: str
    name: str
    sock: socket.socket
    runner: web.AppRunner | None = None
    exposed_by: str = "ingress"  # or "gateway": how GKE would route to it (gke_names)
    turn: itertools.count = field(default_factory=itertools.count)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]


@dataclass
class ServedRequest:
    time: float  # metric time (Clock.metric_time): what the monitoring emulators stamp
    service: str
    pod: str
    image: str
    path: str
    status: int
    latency_ms: float
    port: int = 0  # the Service port that answered
    method: str = "GET"
    exposed_by: str = "ingress"


class LoadBalancers:
    def __init__(
        self, store: Store, kubelet: Kubelet, scenario: Scenario, seed: int | None = None
    ) -> None:
        self.store = store
        self.kubelet = kubelet
        self.scenario = scenario
        self.frontends: dict[tuple[str, str], Frontend] = {}
        self.traffic: deque[ServedRequest] = deque(maxlen=TRAFFIC_KEPT)
        self._random = random.Random(seed)
        self._tasks: set[asyncio.Task] = set()
        self._next_cluster_ip = itertools.count(10)
        self._next_node_port = itertools.count(30080)
        store.add_listener(self._on_change)

    # -- allocation at create time (an API hook) -------------------------------------

    def before_create(self, resource: ResourceType, svc: dict[str, Any]) -> None:
        if resource is not SERVICES:
            return
        if (
            self.store.peek(SERVICES, svc["metadata"]["namespace"], svc["metadata"]["name"])
            is not None
        ):
            return  # the create will fail with AlreadyExists
        spec = svc["spec"]
        n = next(self._next_cluster_ip)
        spec.setdefault("clusterIP", f"10.96.{n // 250}.{n % 250 + 1}")
        spec["clusterIPs"] = [spec["clusterIP"]]
        if spec.get("type") != "LoadBalancer" or not spec.get("ports"):
            return
        port = spec["ports"][0]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port.get("port") or 0))
        except OSError:
            sock.close()
            raise errors.invalid(
                "",
                "Service",
                svc["metadata"].get("name", ""),
                [
                    (
                        "spec.ports[0].port",
                        "FieldValueInvalid",
                        f"Invalid value: {port.get('port')}: provided port is already allocated "
                        "on 127.0.0.1",
                    ),
                ],
            ) from None
        sock.listen(128)
        sock.setblocking(False)
        port["port"] = sock.getsockname()[1]
        port.setdefault("nodePort", next(self._next_node_port))
        key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
        annotations = svc["metadata"].get("annotations") or {}
        self.frontends[key] = Frontend(
            *key,
            sock=sock,
            exposed_by="gateway"
            if annotations.get("modoru.sandbox/exposed-by") == "gateway"
            else "ingress",
        )

    def _on_change(
        self, event_type: str, resource: ResourceType, obj: dict, old: dict | None
    ) -> None:
        if resource is not SERVICES:
            return
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if event_type == "ADDED" and key in self.frontends:
            self._spawn(self._serve(self.frontends[key]))
        elif event_type == "DELETED" and key in self.frontends:
            self._spawn(self._close(self.frontends.pop(key)))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, frontend: Frontend) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", functools.partial(self._handle, frontend))
        frontend.runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await frontend.runner.setup()
        await web.SockSite(frontend.runner, frontend.sock).start()
        svc = self.store.peek(SERVICES, frontend.namespace, frontend.name)
        if svc is not None:
            updated = copy.deepcopy(svc)
            updated["status"] = {
                "loadBalancer": {"ingress": [{"ip": "127.0.0.1", "ipMode": "VIP"}]}
            }
            self.store.update(SERVICES, updated, subresource="status", check_version=False)

    async def _close(self, frontend: Frontend) -> None:
        if frontend.runner is not None:
            await frontend.runner.cleanup()
        with contextlib.suppress(OSError):
            frontend.sock.close()

    async def close(self) -> None:
        for frontend in list(self.frontends.values()):
            await self._close(frontend)
        self.frontends.clear()
        for task in list(self._tasks):
            task.cancel()

    def url(self, namespace: str, name: str) -> str | None:
        frontend = self.frontends.get((namespace, name))
        return None if frontend is None else f"http://127.0.0.1:{frontend.port}"

    # -- serving ---------------------------------------------------------------------

    def endpoints(self, frontend: Frontend) -> list[dict[str, Any]]:
        svc = self.store.peek(SERVICES, frontend.namespace, frontend.name)
        if svc is None:
            return []
        selector = svc["spec"].get("selector") or {}
        if not selector:
            return []
        return [
            pod
            for pod in self.store.iter(PODS, frontend.namespace)
            if all((pod["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            and pod_is_ready(pod)
            and not pod["metadata"].get("deletionTimestamp")
        ]

    def _latency_ms(self, profile: ImageProfile) -> float:
        median, p95 = profile.latency.p50_ms, profile.latency.p95_ms
        sigma = math.log(p95 / median) / Z95 if p95 > median else 0.0
        return median * math.exp(self._random.gauss(0.0, sigma)) if sigma else median

    async def _handle(self, frontend: Frontend, request: web.Request) -> web.Response:
        started = time.monotonic()
        pods = self.endpoints(frontend)
        if not pods:
            # Recorded too: an outage must show in the metrics, not read as silence.
            self.traffic.append(
                ServedRequest(
                    self.kubelet.clock.metric_time(),
                    f"{frontend.namespace}/{frontend.name}",
                    "",
                    "",
                    request.path,
                    503,
                    (time.monotonic() - started) * 1000,
                    frontend.port,
                    request.method,
                    frontend.exposed_by,
                )
            )
            return web.json_response({"error": "no healthy upstream"}, status=503)
        pod = pods[next(frontend.turn) % len(pods)]
        uid = pod["metadata"]["uid"]
        profile = self.kubelet.profile(uid) or self.scenario.default_image
        image = pod["spec"]["containers"][0]["image"]
        version = profile.version or image.rsplit(":", 1)[-1]
        await asyncio.sleep(self._latency_ms(profile) / 1000)
        path = request.path
        if path == "/health":
            status = profile.health_status
            body = {"status": "ok" if status < 400 else "unhealthy", "version": version}
        elif path == "/ready":
            status, body = 200, {"status": "ready", "version": version}
        elif any(
            path == p or path.startswith(p.rstrip("/") + "/") for p in self.scenario.api_paths
        ):
            failed = self._random.random() < profile.error_ratio
            status = 500 if failed else 200
            body = (
                {"error": "internal server error"} if failed else {"items": [], "version": version}
            )
        else:
            status, body = 404, {"error": "not found"}
        latency = (time.monotonic() - started) * 1000
        self.traffic.append(
            ServedRequest(
                self.kubelet.clock.metric_time(),
                f"{frontend.namespace}/{frontend.name}",
                pod["metadata"]["name"],
                image,
                path,
                status,
                latency,
                frontend.port,
                request.method,
                frontend.exposed_by,
            )
        )
        if status >= 500:  # the sample app logs each failed request as an error
            self.kubelet.log(
                uid,
                f'level=error msg="request failed" method={request.method} path={path} '
                f"status={status} duration_ms={latency:.1f}",
            )
        else:
            self.kubelet.log(
                uid,
                f"method={request.method} path={path} status={status} duration_ms={latency:.1f}",
            )
        return web.json_response(
            body, status=status, headers={"X-Served-By": pod["metadata"]["name"]}
        )
