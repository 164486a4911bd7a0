"""The CPU and memory post-checks of a Deployment whose containers have no limits:
GKE writes no limit_utilization for them, so the checks are reported not judged
(neither passed nor failed) with what to do instead, at once, and the rollback is
verified on its other checks; a Deployment with limits is still judged, on memory's
non-evictable part only. Against the sandbox, end to end, as
tests/integration/test_post_checks.py runs it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runbook.models import Phase
from runbook.postchecks import NO_LIMIT
from sandbox.scenario import ContainerResources
from tests.conftest import RunningSandbox, fast_scenario
from tests.integration.test_post_checks import (
    PostStack,
    checks_of,
    post_stack,  # noqa: F401 - the fixture
    roll_back_onto,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def load_sandbox(tmp_path: Path, request) -> RunningSandbox:
    """The sandbox; with tekutoko-api's container given no resources when parametrized
    `no-limits` (its Cloud SQL proxy sidecar has requests only in any case)."""
    scenario = fast_scenario()
    if getattr(request, "param", "") == "no-limits":
        seeds = [
            d.model_copy(update={"resources": ContainerResources()}) for d in scenario.deployments
        ]
        scenario = scenario.model_copy(update={"deployments": seeds})
    running = RunningSandbox(scenario, tmp_path / "sandbox")
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("load_sandbox", ["no-limits"], indirect=True)
async def test_without_limits_cpu_and_memory_are_not_judged_and_the_rollback_verified(
    post_stack: PostStack,  # noqa: F811 - the fixture
) -> None:
    template = (await post_stack.apps.read_namespaced_deployment("tekutoko-api", "default")).spec
    assert all(c.resources.limits is None for c in template.template.spec.containers)

    # Even a release burning 160% of a limit it does not have cannot fail on CPU.
    status, message = await roll_back_onto(post_stack, "1.2.1-cpu")
    assert message is None and status.phase is Phase.COMPLETED, message
    assert status.verification.ok
    found = checks_of(status)
    for name, what in (("cpu", "CPU"), ("memory", "memory")):
        check = found[name]
        assert check.ok and not check.judged and not check.pending, check
        assert check.detail.startswith(NO_LIMIT), check.detail
        assert f"no {what} limit on api, cloud-sql-proxy" in check.detail, check.detail
        assert "no data" not in check.detail and "deadline" not in check.detail
    assert found["pods"].ok and found["logs"].ok and found["logs"].judged


async def test_with_limits_cpu_and_memory_are_still_judged(
    post_stack: PostStack,  # noqa: F811 - the fixture
) -> None:
    status, message = await roll_back_onto(post_stack, "1.2.0")
    assert message is None and status.phase is Phase.COMPLETED and status.verification.ok
    found = checks_of(status)
    for name in ("cpu", "memory"):
        check = found[name]
        assert check.ok and check.judged and "peak" in check.detail, check.detail
        # The sidecar has requests only: named, not read.
        assert "cloud-sql-proxy not judged: no" in check.detail, check.detail
    # 1.2.0 holds 40% of its memory limit (non-evictable); the page cache beside it is
    # not the container's memory, and the check does not read it.
    peak = int(re.search(r"memory peak (\d+)%", found["memory"].detail)[1])
    assert 35 <= peak <= 45, found["memory"].detail
