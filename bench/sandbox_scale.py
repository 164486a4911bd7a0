"""Sandbox scale: seed N deployments, roll every one of them once through the
HTTP API, and compare the cost per deployment at a small and a large N in the
same run. A ratio near 1 means no quadratic slow-down.

    python -m bench.sandbox_scale [--small 100] [--large 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import print_json_line, print_machine
from sandbox.kube.resources import DEPLOYMENTS
from sandbox.scenario import DeploymentSeed, ImageProfile, ImageRule, Revision, Scenario
from sandbox.world import Sandbox

CONCURRENCY = 32


def fleet(n: int) -> Scenario:
    instant = ImageProfile(pull_seconds=0, ready_after_seconds=0)
    return Scenario(
        name=f"fleet-{n}",
        images=[ImageRule(match="*", profile=instant)],
        deployments=[
            DeploymentSeed(
                name=f"svc-{i:04d}",
                replicas=1,
                revisions=[Revision(image=f"registry.local/svc-{i:04d}:1.0.0")],
            )
            for i in range(n)
        ],
    )


async def roll_all(sandbox: Sandbox, n: int) -> float:
    started = time.perf_counter()
    limit = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession() as session:

        async def roll(i: int) -> None:
            body = {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {"name": "app", "image": f"registry.local/svc-{i:04d}:1.1.0"}
                            ]
                        }
                    }
                }
            }
            async with (
                limit,
                session.patch(
                    f"{sandbox.url}/apis/apps/v1/namespaces/default/deployments/svc-{i:04d}",
                    json=body,
                    headers={"Content-Type": "application/strategic-merge-patch+json"},
                ) as response,
            ):
                response.raise_for_status()

        await asyncio.gather(*(roll(i) for i in range(n)))
    await sandbox.settle(timeout=600)
    assert all(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        for d in sandbox.store.iter(DEPLOYMENTS)
    )
    return time.perf_counter() - started


async def measure(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as state:
        sandbox = Sandbox(fleet(n), Path(state))
        started = time.perf_counter()
        await sandbox.start()
        seeded = time.perf_counter() - started
        rolled = await roll_all(sandbox, n)
        await sandbox.stop()
    return {"n": n, "seed_s": seeded, "roll_s": rolled, "roll_ms_per_deployment": 1000 * rolled / n}


async def main_async(small: int, large: int) -> None:
    results = [await measure(small), await measure(large)]
    ratio = results[1]["roll_ms_per_deployment"] / results[0]["roll_ms_per_deployment"]
    print_machine()
    print(f"{'deployments':>12} {'seed s':>8} {'roll-all s':>11} {'ms/deployment':>14}")
    for r in results:
        print(
            f"{r['n']:>12} {r['seed_s']:>8.2f} {r['roll_s']:>11.2f} "
            f"{r['roll_ms_per_deployment']:>14.2f}"
        )
    print(f"cost per deployment, {large} vs {small}: {ratio:.2f}x (1.0 = linear)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print_json_line("sandbox_scale", {"results": results, "per_deployment_ratio": ratio})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=1000)
    args = parser.parse_args()
    if not 0 < args.small < args.large:
        parser.error("--small must be positive and below --large")
    asyncio.run(main_async(args.small, args.large))


if __name__ == "__main__":
    main()
