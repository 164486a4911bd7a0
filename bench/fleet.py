"""A bad shared release hits M services at once: start an `immediate` rollback
for every one of them against one worker and measure how long until every undo
is applied and every rollout verified, with the worker's memory.

    python -m bench.fleet [--deployments 1000] [--workers 1[,2,4]] [--profile]
    python -m bench.fleet --cost-only [--cost-rollbacks 5]

--workers 2 adds a second worker process on the same task queue (scale-out);
--workers 1,2,4 runs the same fleet once with each number of worker processes and
prints the runs side by side; --profile samples the first worker with py-spy (if
installed) during the run and prints the functions that took most of its CPU.
Every run prints what one rollback cost (bench/cost.py): CPU per process, the
heartbeats that reached the server and the history of a sample of the fleet.
--cost-only prints the cost of one change of each kind instead of a fleet: from
the time-skipping test server (histories, actions, workflow-side CPU) and from a
few rollbacks of each severity on the embedded stack (CPU of each process).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from temporalio.common import WorkflowIDReusePolicy

from bench.common import print_json_line, print_machine
from bench.cost import (
    change_histories,
    cost_table,
    history_cost,
    metrics_port_of,
    per_change,
    read_metrics,
    server_counter,
    sum_costs,
)
from bench.harness import BenchStack, RssSampler, percentile, wait_for_pollers, wait_for_worker
from runbook.models import Phase, RollbackRequest, RollbackResult, Severity
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

START_CONCURRENCY = 64
RUNBOOK_SECONDS = 300
HISTORY_SAMPLE = 20  # rollbacks whose histories are fetched for the cost per rollback


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_profile(pid: int, out: Path) -> subprocess.Popen | None:
    binary = py_spy()
    if binary is None:
        print("py-spy is not installed (pip install py-spy): no profile", flush=True)
        return None
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "50",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def short_frame(frame: str) -> str:
    """`decode (/…/site-packages/json/decoder.py:337)` → `decode (json/decoder.py)`."""
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in (
        "/site-packages/",
        "/lib/python3.11/",
        str(Path(__file__).resolve().parents[1]) + "/",
    ):
        path = path.split(marker)[-1]
    return f"{match['name']} ({path})"


IDLE = (
    "EpollSelector.select (",
    "_worker (concurrent/futures/thread.py)",
    "Condition.wait (",
    "Thread.join (",
)  # waits, not work


def profile_top(raw: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Shares of the samples: by the innermost frame (self) and by any frame on the stack
    (inclusive)."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [short_frame(f) for f in stack.split(";")]
        if frames[-1].startswith(IDLE):
            continue
        self_time[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return {"self": [], "inclusive": []}
    return {
        "self": [(f, c / total) for f, c in self_time.most_common(top)],
        "inclusive": [(f, c / total) for f, c in inclusive.most_common(top * 3)],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its children's included once they were waited
    for)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf(
        "SC_CLK_TCK"
    )  # utime, stime, cutime, cstime


async def run(deployments: int, workers: int = 1, profile: bool = False) -> dict:
    with BenchStack(deployments) as bench:
        extra = []
        for _ in range(workers - 1):  # more worker processes on the same task queue
            env = {
                k: v for k, v in bench.stack.worker_env().items() if k != "MODORU_METRICS_ADDRESS"
            }
            extra.append(
                subprocess.Popen(
                    [sys.executable, "-m", "worker"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        wait_for_worker()
        client = await bench.client()
        try:
            await wait_for_pollers(
                client, bench.settings.task_queue
            )  # the profile starts once the worker is ready
        except TimeoutError as exc:
            print(
                f"{exc}; going on (the worker is "
                f"{'running' if bench.stack.pid('worker') else 'not running'})",
                flush=True,
            )
        await asyncio.sleep(1.0 * workers)
        pid = bench.worker_pid()
        raw = Path(tempfile.mkdtemp(prefix="modoru-fleet-profile-")) / "worker.raw"
        profiler = start_profile(pid, raw) if profile else None
        processes = {
            name: proc.pid for name, proc, _ in bench.stack.processes if proc.poll() is None
        }
        processes.update({f"worker {i + 2}": proc.pid for i, proc in enumerate(extra)})
        cpu_before = {name: cpu_seconds(p) for name, p in processes.items()}
        temporal = next(p for n, p, _ in bench.stack.processes if n == "temporal")
        port = metrics_port_of(list(temporal.args))
        beats_before = server_counter(read_metrics(port), "RecordActivityTaskHeartbeat")
        idle_kib = RssSampler(pid).rss_kib()
        _, mark = bench.requests_since(0)
        names = [f"svc-{i:04d}" for i in range(deployments)]
        started: dict[str, float] = {}
        limit = asyncio.Semaphore(START_CONCURRENCY)

        async def start(name: str):
            async with limit:
                started[name] = time.time()
                return await client.start_workflow(
                    DeploymentRollbackWorkflow.run,
                    RollbackRequest(
                        deployment=name,
                        severity=Severity.IMMEDIATE,
                        reason="shared release 1.1.0 is failing",
                        requested_by="bench",
                    ),
                    id=rollback_workflow_id("default", name),
                    task_queue=bench.settings.task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                )

        with RssSampler(pid) as sampler:
            t0 = time.time()
            handles = await asyncio.gather(*(start(name) for name in names))
            # a rollback that failed (an undo that waited past the runbook's deadline) is counted
            ended = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
            results: list[RollbackResult] = [r for r in ended if isinstance(r, RollbackResult)]
            failures = [
                str(getattr(e, "cause", None) or e) for e in ended if isinstance(e, Exception)
            ]
            t_end = time.time()
        cpu = {name: round(cpu_seconds(p) - cpu_before[name], 1) for name, p in processes.items()}
        beats = server_counter(read_metrics(port), "RecordActivityTaskHeartbeat") - beats_before
        sample = [h.id for h in handles[:: max(1, len(handles) // HISTORY_SAMPLE)]]
        cost = per_change(
            sum_costs([history_cost(await change_histories(client, wid)) for wid in sample]),
            len(sample),
        )
        cost["actions"]["heartbeat"] = beats / deployments
        cost["actions_total"] += beats / deployments
        for name, key in (("worker", "worker"), ("temporal", "temporal"), ("sandbox", "sandbox")):
            spent = sum(v for n, v in cpu.items() if n.startswith(name))
            cost[f"{key}_cpu_ms"] = 1000 * spent / deployments
        entries, _ = bench.requests_since(mark)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
        for proc in extra:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
    undo_at = {
        e["name"]: e["time"]
        for e in entries
        if e["resource"] == "deployments" and e["verb"] == "patch"
    }
    to_undo = [undo_at[n] - started[n] for n in names if n in undo_at]
    verified = sum(
        1
        for r in results
        if r.status.phase == Phase.COMPLETED and r.status.verification and r.status.verification.ok
    )
    all_undone = max(undo_at.values()) - t0 if len(undo_at) == deployments else float("nan")
    all_verified = (
        max(r.status.timings["completed"].timestamp() for r in results) - t0
        if verified == deployments
        else float("nan")
    )
    return {
        "deployments": deployments,
        "workers": workers,
        "cpu_seconds": cpu,
        "cost_per_rollback": cost,
        "profile": profile_top(raw) if profiler is not None and raw.exists() else None,
        "undos_applied": len(undo_at),
        "verified": verified,
        "failed": len(failures),
        "first_failure": failures[0] if failures else None,
        "all_undone_s": all_undone,
        "all_verified_s": all_verified,
        "wall_s": t_end - t0,
        "time_to_undo_p50_s": percentile(to_undo, 50),
        "time_to_undo_p99_s": percentile(to_undo, 99),
        "worker_rss_idle_mib": idle_kib / 1024,
        "worker_rss_peak_mib": sampler.peak_kib / 1024,
        "within_runbook_5_min": verified == deployments and all_verified <= RUNBOOK_SECONDS,
    }


def worker_counts(text: str) -> list[int]:
    """`1`, or `1,2,4`: the numbers of worker processes to run the fleet with."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--workers takes a number or numbers separated by commas (1,2,4), not {text!r}"
        ) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--workers must each be at least 1, not {text!r}")
    return counts


def print_run(result: dict) -> None:
    print(f"{'deployments / workers':<28}{result['deployments']} / {result['workers']}")
    print(f"{'undos applied / verified':<28}{result['undos_applied']} / {result['verified']}")
    if result["failed"]:
        print(f"{'rollbacks failed':<28}{result['failed']}, the first: {result['first_failure']}")
    print(f"{'every undo applied after':<28}{result['all_undone_s']:.1f} s")
    print(f"{'every rollout verified after':<28}{result['all_verified_s']:.1f} s")
    print(
        f"{'time to undo p50 / p99':<28}{result['time_to_undo_p50_s']:.2f} s / "
        f"{result['time_to_undo_p99_s']:.2f} s"
    )
    print(
        f"{'worker RSS idle / peak':<28}{result['worker_rss_idle_mib']:.0f} MiB / "
        f"{result['worker_rss_peak_mib']:.0f} MiB"
    )
    print(f"{'within the runbook 5 min':<28}{'yes' if result['within_runbook_5_min'] else 'no'}")
    print(
        f"{'CPU seconds during the run':<28}"
        f"{', '.join(f'{k} {v:.1f}' for k, v in result['cpu_seconds'].items())}"
    )
    if result["profile"]:
        print("worker profile, share of samples in the function itself:")
        for frame, share in result["profile"]["self"]:
            print(f"  {share:6.1%}  {frame}")
    print("cost per rollback (histories of a sample; CPU and heartbeats of the whole fleet):")
    print("\n".join(cost_table({"rollback immediate": result["cost_per_rollback"]})))


def print_side_by_side(results: list[dict]) -> None:
    rows = [
        ("every undo applied (s)", lambda r: f"{r['all_undone_s']:.1f}"),
        ("every rollout verified (s)", lambda r: f"{r['all_verified_s']:.1f}"),
        ("time to undo p50 (s)", lambda r: f"{r['time_to_undo_p50_s']:.2f}"),
        ("time to undo p99 (s)", lambda r: f"{r['time_to_undo_p99_s']:.2f}"),
        ("wall (s)", lambda r: f"{r['wall_s']:.1f}"),
    ]
    names = sorted({n for r in results for n in r["cpu_seconds"]})
    rows += [
        (f"CPU s: {name}", lambda r, name=name: f"{r['cpu_seconds'].get(name, 0.0):.1f}")
        for name in names
    ]
    print("| | " + " | ".join(f"{r['workers']} worker(s)" for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for label, value in rows:
        print(f"| {label} | " + " | ".join(value(r) for r in results) + " |")


def cost_only(rollbacks: int) -> dict:
    from bench.cost_live import live_costs
    from bench.cost_recorded import recorded_costs

    recorded = asyncio.run(recorded_costs(runs=10))
    print("on the time-skipping test server, fake activities (workflow side only):")
    print("\n".join(cost_table(recorded)))
    live = asyncio.run(live_costs(rollbacks)) if rollbacks else {}
    if live:
        print(f"on the embedded stack, {rollbacks} rollbacks of each severity at once:")
        print("\n".join(cost_table(live)))
        for kind, row in live.items():
            calls = ", ".join(f"{k} {v:g}" for k, v in row["cluster_calls"].items())
            print(f"Kubernetes API calls per {kind}: {calls}")
    return {"recorded": recorded, "live": live}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=[1],
        help="worker processes on the task queue; 1,2,4 runs the fleet with each",
    )
    parser.add_argument(
        "--profile", action="store_true", help="sample the first worker with py-spy"
    )
    parser.add_argument(
        "--cost-only",
        action="store_true",
        help="the cost of one change of each kind, no fleet",
    )
    parser.add_argument(
        "--cost-rollbacks",
        type=int,
        default=5,
        help="with --cost-only: rollbacks of each severity on the embedded stack (0: none)",
    )
    args = parser.parse_args()
    if args.deployments < 1:
        parser.error("--deployments must be at least 1")
    if args.cost_rollbacks < 0:
        parser.error("--cost-rollbacks must be 0 or more")
    print_machine()
    if args.cost_only:
        print_json_line("fleet-cost", cost_only(args.cost_rollbacks))
        return
    results = []
    for workers in args.workers:
        result = asyncio.run(run(args.deployments, workers, args.profile))
        print_run(result)
        print_json_line("fleet", result)
        results.append(result)
    if len(results) > 1:
        print_side_by_side(results)


if __name__ == "__main__":
    main()
