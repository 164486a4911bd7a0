"""Detection and verification time with Cloud Monitoring's real windows:
release → the guard's rollback decision, and rollback → verified, for each
metric preset and each kind of bad release, on the embedded default with the
sandbox's clock sped up (metric time included). Figures are printed in wall
seconds and in metric seconds (what the same settings take on a real clock).

    python -m bench.detection [--rounds 1] [--clock-speed 20]
    python -m bench.detection --presets promql [--rounds 1] [--tries 3] [--jobs N]

The `promql` source runs at clock speed 1 (bench/detection_promql.py).

The bundled catalog's settings are used (60-s windows, 20 s of ingestion
delay; the emulator shows a point 10 s after its minute) with the preset set
per run; docs/benchmarks.md sets these figures beside the ones computed for
production (Google's ingestion delays) and for Flagger and Argo Rollouts."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from kubernetes import client as kube
from kubernetes import config as kube_config

from bench.common import print_json_line, print_machine
from bench.guarded_stack import guard_decision, started_detection_stack, watching_guard
from bench.releases import REGISTRY, release  # noqa: F401 - REGISTRY: other benchmarks import it here
from runbook.guard_models import GuardPhase, GuardResult
from runbook.models import ApprovalSignal, Phase
from worker.client import connect
from worker.settings import Settings
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

RELEASES = (("1.3.0", "immediate"), ("1.3.1-flaky", "investigate"), ("1.3.1-slow", "investigate"))
DELAY = 20  # the bundled catalog's ingestion_delay_seconds
POLL_SECONDS = 1.0
TRAFFIC_RPS = (
    60  # 180 requests a one-minute window at 20x: a 15% error ratio reads above 10% reliably
)


def sleep_until_readable(clock: dict) -> None:
    """Until a whole minute of metric time begun after now is complete and readable."""
    speed = clock["speed"]
    now = clock["epoch"] + (time.time() - clock["epoch"]) * speed
    ready = (now // 60 + 2) * 60 + DELAY
    time.sleep((ready - now) / speed + 0.05)


async def one(client, settings: Settings, apps: kube.AppsV1Api, clock: dict, tag: str) -> dict:
    await asyncio.to_thread(release, apps, "1.2.0")
    await asyncio.to_thread(sleep_until_readable, clock)  # a baseline of the healthy release
    guard = await watching_guard(client, settings, interval=POLL_SECONDS, duration=600)
    rolled_out = await asyncio.to_thread(release, apps, tag)
    status = await guard_decision(guard)
    rollback = client.get_workflow_handle(rollback_workflow_id("default", "tekutoko-api"))
    started = (await rollback.describe()).start_time.timestamp()
    go = started
    if status.rollback_severity == "investigate":  # the approver answers at once
        while (
            await rollback.query(DeploymentRollbackWorkflow.status)
        ).phase is not Phase.AWAITING_APPROVAL:
            await asyncio.sleep(0.05)
        go = time.time()
        await rollback.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="sre-lead"))
    result: GuardResult = await guard.result()
    if result.status.phase is not GuardPhase.ROLLED_BACK:
        raise RuntimeError(f"the rollback did not verify: {result.status.message}")
    closed = (await rollback.describe()).close_time.timestamp()
    return {
        "tag": tag,
        "severity": status.rollback_severity,
        "detect_s": started - rolled_out,
        "verify_s": closed - go,
    }


async def run_preset(preset: str, rounds: int, speed: float) -> list[dict]:
    state = Path(tempfile.mkdtemp(prefix=f"modoru-bench-detect-{preset}-"))
    stack = started_detection_stack(
        state,
        lambda bundled: {**bundled, "preset": preset},
        speed=speed,
        traffic_rps=TRAFFIC_RPS,
        traffic_seconds=3600,
    )
    try:
        endpoints = json.loads(stack.endpoints_path.read_text())
        settings = stack.client_settings()
        client = await connect(settings)
        api = kube_config.new_client_from_config(config_file=endpoints["kubeconfig"])
        apps = kube.AppsV1Api(api)
        found = []
        for _ in range(rounds):
            for tag, _severity in RELEASES:
                result = await one(client, settings, apps, endpoints["metric_clock"], tag)
                print(
                    f"{preset:18} {tag:12} {result['severity']:11} release→decision "
                    f"{result['detect_s']:5.1f} s, rollback→verified {result['verify_s']:5.1f} s",
                    flush=True,
                )
                found.append({"preset": preset, **result})
        api.close()
        return found
    finally:
        stack.stop()


async def main(rounds: int, speed: float, presets: list[str], tries: int, jobs: int = 1) -> None:
    print_machine()
    if "promql" in presets:
        from .detection_promql import run_promql

        print(
            "promql at clock speed 1 (real time): 15-s scrapes, 5 s of ingestion delay, rates "
            "over 30 s read every 5 s with a 10-s step"
        )
        found = await run_promql(rounds, tries, jobs=jobs)
        print_json_line("detection_promql", {"clock_speed": 1.0, **found})
        presets = [p for p in presets if p != "promql"]
        if not presets:
            return
    print(
        f"sandbox clock {speed:g}x: one minute of metric time is {60 / speed:g} s; 60-s windows, "
        f"{DELAY} s ingestion delay, "
        f"polls every {POLL_SECONDS:g} s, {TRAFFIC_RPS} requests/s"
    )
    results = []
    for preset in presets:
        results += await run_preset(preset, rounds, speed)
    print()
    print(
        f"{'preset':18} {'release':12} {'decision wall':>14} {'(metric)':>9} "
        f"{'verified wall':>14} {'(metric)':>9}"
    )
    summary = []
    for preset in presets:
        for tag, _ in RELEASES:
            rows = [r for r in results if r["preset"] == preset and r["tag"] == tag]
            detect, verify = (
                statistics.median(r["detect_s"] for r in rows),
                statistics.median(r["verify_s"] for r in rows),
            )
            print(
                f"{preset:18} {tag:12} {detect:12.1f} s {detect * speed:7.0f} s {verify:12.1f} s "
                f"{verify * speed:7.0f} s"
            )
            summary.append(
                {
                    "preset": preset,
                    "tag": tag,
                    "severity": rows[0]["severity"],
                    "detect_wall_s": round(detect, 2),
                    "detect_metric_s": round(detect * speed),
                    "verify_wall_s": round(verify, 2),
                    "verify_metric_s": round(verify * speed),
                    "rounds": len(rows),
                }
            )
    print_json_line(
        "detection",
        {
            "clock_speed": speed,
            "ingestion_delay_s": DELAY,
            "window_s": 60,
            "poll_s": POLL_SECONDS,
            "traffic_rps": TRAFFIC_RPS,
            "results": summary,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clock-speed", type=float, default=20.0)
    parser.add_argument(
        "--presets",
        default="gke_l7,managed_prometheus",
        help="comma-separated: gke_l7, managed_prometheus, promql (promql runs at clock speed 1)",
    )
    parser.add_argument(
        "--tries",
        type=int,
        default=0,
        help="promql: healthy releases under bursty traffic, counting false rollbacks",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="promql: stacks running the healthy tries at once (each its own Temporal and sandbox)",
    )
    args = parser.parse_args()
    chosen = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = sorted(set(chosen) - {"gke_l7", "managed_prometheus", "promql"})
    if unknown or not chosen:
        parser.error(f"--presets: unknown {', '.join(unknown) or '(none given)'}")
    if args.rounds < 0 or args.tries < 0:
        parser.error("--rounds and --tries must be 0 or more")
    if not 1 <= args.jobs <= 4:
        parser.error(f"--jobs {args.jobs}: give 1 to 4 stacks at a time")
    asyncio.run(main(args.rounds, args.clock_speed, chosen, args.tries, args.jobs))
