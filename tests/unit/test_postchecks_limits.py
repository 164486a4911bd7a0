"""Which containers the CPU and memory post-checks can judge: limit_utilization is a
fraction of the container's limit, so a container without one is not judged; memory
is read as its non-evictable part."""

from __future__ import annotations

from runbook.postchecks import (
    CPU_METRIC,
    MEMORY_METRIC,
    NO_LIMIT,
    PostChecks,
    container_filter,
    judged_containers,
    no_limit_detail,
    no_limit_note,
    without_limit,
)

PROXY = {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}
MIGRATE = {"name": "migrate", "resources": {}}  # an ordinary init container: gone once it ran


def template(*containers: dict) -> dict:
    return {"containers": list(containers), "initContainers": [PROXY, MIGRATE]}


def app(**limits: str) -> dict:
    return {"name": "app", "resources": {"requests": {"cpu": "250m"}, "limits": limits}}


def test_a_container_without_the_limit_is_named_per_resource() -> None:
    spec = template(app(memory="512Mi"))
    assert judged_containers(spec) == ["app", "proxy"]
    assert without_limit([spec], CPU_METRIC) == ["app", "proxy"]
    assert without_limit([spec], MEMORY_METRIC) == ["proxy"]
    assert without_limit([spec], MEMORY_METRIC, "app") == []
    assert without_limit([spec], CPU_METRIC, "app") == ["app"]
    # A container the template does not run is not called unlimited: its data is missing.
    assert without_limit([spec], CPU_METRIC, "worker") == []


def test_a_limit_admission_gave_the_pods_counts_though_the_template_has_none() -> None:
    spec = template(app())
    pod = template(app(cpu="1", memory="1Gi"))
    assert without_limit([spec], CPU_METRIC) == ["app", "proxy"]
    assert without_limit([spec, pod], CPU_METRIC) == ["proxy"]


def test_what_is_said_for_containers_without_a_limit() -> None:
    assert no_limit_detail("CPU", ["app", "proxy"]) == (f"{NO_LIMIT}; no CPU limit on app, proxy")
    assert NO_LIMIT == "not judged: no limit set (use request_utilization or set a limit)"
    assert no_limit_note("memory", []) == ""
    assert no_limit_note("memory", ["proxy"]) == "; proxy not judged: no memory limit set"


def test_memory_is_read_as_its_non_evictable_part_and_cpu_has_no_such_label() -> None:
    checks = PostChecks()
    memory = container_filter(MEMORY_METRIC, checks, "default", "tekutoko-api", "p")
    assert 'metric.labels.memory_type = "non-evictable"' in memory
    assert "memory_type" not in container_filter(CPU_METRIC, checks, "default", "tekutoko-api", "p")
