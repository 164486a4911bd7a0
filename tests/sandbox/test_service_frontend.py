"""The LoadBalancer front end answers as the image behind it behaves."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import RunningSandbox
from tests.conftest import http_status as hit

NS, NAME = "default", "tekutoko-api"
IMAGE = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api"


def error_ratio(sandbox: RunningSandbox, n: int = 120) -> float:
    url = sandbox.service_url() + "/v1/walks"
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(hit, [url] * n))
    return statuses.count(500) / n


def test_health_ready_and_unknown_paths(sandbox: RunningSandbox) -> None:
    base = sandbox.service_url()
    assert hit(base + "/health") == 200
    assert hit(base + "/ready") == 200
    assert hit(base + "/nowhere") == 404


def test_the_bad_release_fails_most_api_calls_and_the_good_one_none(sandbox, kube_client) -> None:
    apps, _ = kube_client
    bad = error_ratio(sandbox)
    assert 0.42 <= bad <= 0.78, bad  # 60% with room for sampling noise
    apps.patch_namespaced_deployment(
        NAME,
        NS,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "api", "image": f"{IMAGE}:1.2.0"}]}}
            }
        },
    )
    sandbox.wait_for(lambda: _all_pods_on(sandbox, ":1.2.0"), timeout=30, what="all pods on 1.2.0")
    assert error_ratio(sandbox) == 0.0


def _all_pods_on(sandbox: RunningSandbox, suffix: str) -> bool:
    from sandbox.kube.replicaset_controller import pod_is_ready
    from sandbox.kube.resources import PODS

    pods = sandbox.call(lambda: list(sandbox.sandbox.store.iter(PODS, NS)))
    return bool(pods) and all(
        p["spec"]["containers"][0]["image"].endswith(suffix) and pod_is_ready(p) for p in pods
    )


def test_latency_follows_the_profile(sandbox: RunningSandbox) -> None:
    url = sandbox.service_url() + "/health"
    samples = []
    for _ in range(60):
        started = time.monotonic()
        hit(url)
        samples.append((time.monotonic() - started) * 1000)
    # 1.3.0's profile: p50 40 ms, p95 150 ms
    assert 30 <= statistics.median(samples) <= 90


def test_served_requests_are_recorded_with_the_pod_and_image(sandbox: RunningSandbox) -> None:
    hit(sandbox.service_url() + "/v1/walks")
    served = sandbox.call(lambda: list(sandbox.sandbox.load_balancers.traffic))
    assert served[-1].image.endswith(":1.3.0") and served[-1].pod.startswith("tekutoko-api-")
    assert served[-1].status in (200, 500)


def test_no_ready_pod_means_503(sandbox, kube_client) -> None:
    apps, core = kube_client
    apps.patch_namespaced_deployment_scale(NAME, NS, {"spec": {"replicas": 0}})
    sandbox.wait_for(lambda: not core.list_namespaced_pod(NS).items, what="pods gone")
    assert hit(sandbox.service_url() + "/health") == 503
