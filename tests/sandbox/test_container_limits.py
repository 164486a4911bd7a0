"""GKE's limit_utilization series exist only for a container with that limit (the
value is a fraction of it), and memory's come per memory_type: the Cloud Monitoring
emulator serves them so, read through the official gRPC client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcTransport,
)

from runbook.postchecks import CPU_METRIC, MEMORY_METRIC, PostChecks, container_filter
from sandbox.scenario import ContainerResources
from tests.conftest import RunningSandbox, fast_scenario

LIMITED, UNLIMITED, MEMORY_ONLY = "tekutoko-api", "walks-batch", "walks-export"


@pytest.fixture
def limits_sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
    """tekutoko-api with the default limits (its Cloud SQL proxy sidecar has requests
    only), walks-batch with no resources at all, walks-export with a memory limit only."""
    scenario = fast_scenario()
    api = scenario.deployments[0]
    others = [
        api.model_copy(
            update={
                "name": name,
                "labels": {"app": name},
                "replicas": 1,
                "cloudsql_proxy": None,
                "resources": resources,
                "revisions": api.revisions[1:2],
            }
        )
        for name, resources in (
            (UNLIMITED, ContainerResources()),
            (
                MEMORY_ONLY,
                ContainerResources(requests={"cpu": "100m"}, limits={"memory": "256Mi"}),
            ),
        )
    ]
    running = RunningSandbox(
        scenario.model_copy(update={"deployments": [api, *others]}), tmp_path / "sandbox"
    )
    try:
        yield running
    finally:
        running.stop()


def series(sandbox: RunningSandbox, metric: str, deployment: str, extra: str = "") -> list:
    endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())
    project = endpoints["monitoring_project"]
    channel = grpc.insecure_channel(endpoints["cloud_monitoring"])
    try:
        client = monitoring_v3.MetricServiceClient(
            transport=MetricServiceGrpcTransport(channel=channel)
        )
        end = int(sandbox.sandbox.clock.metric_time() // 60 * 60)
        return list(
            client.list_time_series(
                request={
                    "name": f"projects/{project}",
                    "filter": container_filter(
                        metric, PostChecks(), "default", deployment, project
                    ).replace(' AND metric.labels.memory_type = "non-evictable"', "")
                    + extra,
                    "interval": {
                        "start_time": {"seconds": end - 600},
                        "end_time": {"seconds": end},
                    },
                }
            )
        )
    finally:
        channel.close()


def test_only_containers_with_a_limit_have_limit_utilization_and_memory_comes_by_type(
    limits_sandbox: RunningSandbox,
) -> None:
    sandbox = limits_sandbox
    sandbox.wait_for(
        lambda: len(sandbox.sandbox.kubelet.pods) >= 5 and sandbox.sandbox.pod_load.samples,
        what="the pods running and sampled",
    )
    sandbox.until_readable()
    sandbox.until_readable()

    cpu = series(sandbox, CPU_METRIC, LIMITED)
    memory = series(sandbox, MEMORY_METRIC, LIMITED)
    assert cpu and memory
    # The app container has limits; the proxy sidecar has requests only: no series.
    assert {s.resource.labels["container_name"] for s in cpu + memory} == {"api"}
    by_type: dict[str, list[float]] = {}
    for s in memory:
        assert set(s.metric.labels) == {"memory_type"}
        by_type.setdefault(s.metric.labels["memory_type"], []).extend(
            p.value.double_value for p in s.points
        )
    assert set(by_type) == {"evictable", "non-evictable"}
    # 1.3.0's profile holds 40% of the limit; page cache fills most of the rest, so a
    # reading that does not pick memory_type takes the cache for the container's memory.
    assert all(0.35 <= v <= 0.45 for v in by_type["non-evictable"]), by_type
    assert max(by_type["evictable"]) > max(by_type["non-evictable"]), by_type
    held = series(
        sandbox, MEMORY_METRIC, LIMITED, ' AND metric.labels.memory_type = "non-evictable"'
    )
    assert held and {s.metric.labels["memory_type"] for s in held} == {"non-evictable"}

    # No limits at all: neither series, though the pod runs and is sampled.
    assert series(sandbox, CPU_METRIC, UNLIMITED) == []
    assert series(sandbox, MEMORY_METRIC, UNLIMITED) == []
    # A memory limit only (a CPU request is no limit): memory's series, no CPU's.
    assert series(sandbox, CPU_METRIC, MEMORY_ONLY) == []
    assert {
        s.metric.labels["memory_type"] for s in series(sandbox, MEMORY_METRIC, MEMORY_ONLY)
    } == {"evictable", "non-evictable"}
