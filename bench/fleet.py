"""A bad shared release hits M services at once: start an `immediate` rollback
for every one of them against one worker and measure how long until every undo
is applied and every rollout verified, with the worker's memory.

    python -m bench.fleet [--deployments 1000] [--workers 1] [--profile]

--workers 2 adds a second worker process on the same task queue (scale-out);
--profile samples the first worker with py-spy (if installed) during the run
and prints the functions that took most of its CPU.
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
from bench.harness import BenchStack, RssSampler, percentile, wait_for_pollers, wait_for_worker
from runbook.models import Phase, RollbackRequest, RollbackResult, Severity
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

START_CONCURRENCY = 64
RUNBOOK_SECONDS = 300


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
            results: list[RollbackResult] = await asyncio.gather(*(h.result() for h in handles))
            t_end = time.time()
        cpu = {name: round(cpu_seconds(p) - cpu_before[name], 1) for name, p in processes.items()}
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
    all_verified = max(r.status.timings["completed"].timestamp() for r in results) - t0
    return {
        "deployments": deployments,
        "workers": workers,
        "cpu_seconds": cpu,
        "profile": profile_top(raw) if profiler is not None and raw.exists() else None,
        "undos_applied": len(undo_at),
        "verified": verified,
        "all_undone_s": all_undone,
        "all_verified_s": all_verified,
        "wall_s": t_end - t0,
        "time_to_undo_p50_s": percentile(to_undo, 50),
        "time_to_undo_p99_s": percentile(to_undo, 99),
        "worker_rss_idle_mib": idle_kib / 1024,
        "worker_rss_peak_mib": sampler.peak_kib / 1024,
        "within_runbook_5_min": verified == deployments and all_verified <= RUNBOOK_SECONDS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes on the task queue")
    parser.add_argument(
        "--profile", action="store_true", help="sample the first worker with py-spy"
    )
    args = parser.parse_args()
    if args.deployments < 1:
        parser.error("--deployments must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    result = asyncio.run(run(args.deployments, args.workers, args.profile))
    print_machine()
    print(f"{'deployments':<28}{result['deployments']}")
    print(f"{'undos applied / verified':<28}{result['undos_applied']} / {result['verified']}")
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
    print_json_line("fleet", result)


if __name__ == "__main__":
    main()
