"""The reliability suite as one command: faults after the write (the emulator
applied the request and the answer was lost) with every change kind's effects
counted in the emulators' effect logs, worker SIGKILLs pinned between an effect
and its record, at every activity boundary and at random moments, Temporal
server restarts while a rollback waits and while one executes, Kubernetes and
Cloud SQL Admin faults before the write (5xx, 429 with Retry-After, added
latency) and the bad-input corpus. Prints one line per
part with its outcome, time and the figures the tests printed, and (with
--write-doc) puts the same table in docs/reliability.md with the commit and
date.

    python -m bench.reliability [--short] [--write-doc] [--jobs N]

--short is the version CI runs (a few minutes, most of it the fault mixes;
plain `pytest` runs the same short tests); without it every boundary of every
workflow kind is killed, the server stays down 45 s and each fault mix runs 10
rollbacks (about three quarters of an hour on 2 cores, one part at a time).
--jobs N runs N parts at a time, the longest first: the parts mostly wait (on
heartbeat timeouts, held answers, the sandbox's clock), so two or three side by
side take about half the time; the page says how many ran at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import print_json_line, print_machine

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- reliability-suite:begin -->", "<!-- reliability-suite:end -->"


@dataclass
class Part:
    name: str
    what: str
    tests: list[str]
    full_only: bool = False
    env: dict[str, str] = field(default_factory=dict)
    full_env: dict[str, str] = field(default_factory=dict)


PARTS = [
    Part(
        "after-write faults",
        "each emulator applies the write, logs its effect, then answers 500/503, resets the "
        "connection or holds the answer; the undo and the on-demand backup retried through them "
        "act once",
        ["tests/sandbox/test_after_write_faults.py", "tests/sandbox/test_backup_gate.py"],
    ),
    Part(
        "exactly once: deployment changes",
        "rollback, restart, ReplicaSet deletion, restore and guard rollback under ~20% "
        "after-write faults on every Kubernetes write, and with a SIGKILL pinned after the "
        "write (short: 1 pinned + 2 faulted rollbacks; full: 10 of each kind and mode)",
        ["tests/reliability/test_exactly_once_deployments.py"],
    ),
    Part(
        "exactly once: redeploy, migration, PITR",
        "CD dispatch, migrate down-to and clone + switch under ~20% after-write faults and "
        "with a SIGKILL pinned after each write, counted in the emulators' effect logs",
        ["tests/reliability/test_exactly_once_releases.py"],
        full_only=True,
    ),
    Part(
        "worker kills: deployment rollback",
        "SIGKILL at activity boundaries (short: the undo and the rollout wait; full: every one, "
        "and 4 rollbacks with 2 random kills each)",
        ["tests/reliability/test_rollback_worker_kills.py"],
    ),
    Part(
        "worker kills: migration, PITR, release guard",
        "SIGKILL at every activity boundary of one run of each",
        ["tests/reliability/test_workflow_worker_kills.py"],
        full_only=True,
    ),
    Part(
        "worker kill during migrate down-to",
        "the exec heartbeats: a new worker finishes within a minute, one step down",
        ["tests/integration/test_migration_worker_crash.py"],
        full_only=True,
    ),
    Part(
        "Temporal server restart",
        "SIGKILL and restart on the same SQLite file, at an approval gate and during the rollout "
        "wait (short: down 3 s; full: 45 s)",
        ["tests/reliability/test_temporal_restart.py"],
    ),
    Part(
        "Kubernetes API faults",
        "immediate rollbacks through ~20% 500/503, ~25% 429 with Retry-After 1-2 s, and added "
        "latency (short: 2 per mix; full: 10)",
        ["tests/integration/test_api_faults.py"],
        env={"MODORU_FAULT_ROLLBACKS": "2"},
        full_env={"MODORU_FAULT_ROLLBACKS": "10"},
    ),
    Part(
        "Cloud SQL Admin faults",
        "the emulator's injected 429/500/503 through modoru's client; a point-in-time recovery "
        "through ~20% 5xx and ~25% 429 (full)",
        [
            "tests/sandbox/test_cloudsql_faults.py",
            "tests/reliability/test_cloudsql_fault_workflows.py",
        ],
    ),
    Part(
        "bad inputs",
        "every command line of the corpus: one line naming the problem, no mutating request",
        ["tests/unit/test_bad_inputs.py", "tests/integration/test_bad_inputs_server.py"],
    ),
]


@dataclass
class Outcome:
    part: Part
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    figures: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0


FIGURE = re.compile(
    r"^(?:run \d+:|\d+ rollbacks|waiting:|executing:|500/503|429|latency|boundaries:"
    r"|kills in|migration:|pitr:|guard:|the new worker|cloud sql|exactly once:)",
    re.I,
)


def run_part(part: Part, full: bool, logs: Path) -> Outcome:
    existing = [t for t in part.tests if (ROOT / t).exists()]
    outcome = Outcome(part)
    if not existing:
        outcome.failures.append("no test file")
        return outcome
    junit = logs / f"{re.sub(r'[^a-z]+', '-', part.name.lower())}.xml"
    env = {
        **os.environ,
        **part.env,
        **(part.full_env if full else {}),
        "MODORU_RELIABILITY": "full" if full else "short",
    }
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *existing,
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    outcome.seconds = time.monotonic() - started
    (logs / junit.with_suffix(".log").name).write_text(done.stdout + done.stderr)
    for line in done.stdout.splitlines():
        text = line.strip().lstrip(
            "."
        )  # pytest's progress dots share the line with what a test printed
        if FIGURE.match(text):
            outcome.figures.append(text)
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                outcome.failed += 1
                bad = (
                    case.find("failure") if case.find("failure") is not None else case.find("error")
                )
                message = bad.get("message")
                outcome.failures.append(
                    f"{case.get('name')}: "
                    f"{(message or '').splitlines()[0][:200] if message else ''}"
                )
            elif case.find("skipped") is not None:
                outcome.skipped += 1
            else:
                outcome.passed += 1
    elif done.returncode:
        outcome.failed += 1
        outcome.failures.append(
            done.stdout.strip().splitlines()[-1]
            if done.stdout.strip()
            else f"pytest exited {done.returncode}"
        )
    return outcome


def commit() -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (found.stdout.strip() or "unknown") + (
        " (with uncommitted changes)" if dirty else ", tree clean"
    )


def table(
    outcomes: list[Outcome], full: bool, at: str, parts: int, began: dt.datetime, jobs: int = 1
) -> str:
    """The page's table; `at`: the commit when the run began, at `began`; `parts`: how many
    were asked; `jobs`: how many ran at a time."""
    load = os.getloadavg()[0]
    busy = load > (os.cpu_count() or 1)
    partial = f" **{len(outcomes)} of {parts} parts so far**" if len(outcomes) < parts else ""
    lines = [
        f"Generated by `python -m bench.reliability{'' if full else ' --short'} --write-doc"
        f"{f' --jobs {jobs}' if jobs > 1 else ''}` at "
        f"commit `{at}`, started {began:%Y-%m-%d %H:%M} UTC, written "
        f"{dt.datetime.now(dt.UTC):%H:%M} UTC ({os.cpu_count()} cores, load average "
        f"{load:.1f} at the end"
        f"{': other work shared the machine, so durations are long' if busy else ''}"
        f"{f'; {jobs} parts at a time, so they shared it with each other' if jobs > 1 else ''})."
        f"{partial}",
        "",
        "| part | what is tried | tests passed | failed | seconds |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.part.name} | {o.part.what} | {o.passed} | {o.failed} | {o.seconds:.0f} |"
        )
    lines.append("")
    for o in outcomes:
        if o.figures or o.failures:
            lines.append(f"**{o.part.name}**")
            lines.append("")
            lines += [f"- {f}" for f in o.figures]
            lines += [f"- FAILED {f}" for f in o.failures]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc = f"{head}{BEGIN}\n{text}{END}{tail}"
    else:
        doc += f"\n## The suite's last run\n\n{BEGIN}\n{text}{END}\n"
    DOC.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="the CI version (a few minutes)")
    parser.add_argument(
        "--write-doc", action="store_true", help=f"put the results in {DOC.relative_to(ROOT)}"
    )
    parser.add_argument(
        "--only", default="", help="run only the parts whose name contains this text"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="parts run at a time (default 1: one after another)"
    )
    args = parser.parse_args()
    if not 1 <= args.jobs <= 8:
        parser.error(f"--jobs {args.jobs}: give 1 to 8 parts at a time")
    full = not args.short
    parts = [p for p in PARTS if (full or not p.full_only) and args.only.lower() in p.name.lower()]
    if not parts:
        parser.error(
            f"--only {args.only!r} matches no part; parts: {', '.join(p.name for p in PARTS)}"
        )
    logs = Path(tempfile.mkdtemp(prefix="modoru-reliability-"))
    print_machine()
    print(
        f"{'full' if full else 'short'} suite, {len(parts)} parts; pytest logs in {logs}",
        flush=True,
    )
    at, began = commit(), dt.datetime.now(dt.UTC)
    done: dict[str, Outcome] = {}

    def finished(outcome: Outcome) -> None:
        done[outcome.part.name] = outcome
        if args.write_doc:  # part by part: a long run that is stopped keeps what it measured
            shown = [done[p.name] for p in parts if p.name in done]
            write_doc(table(shown, full, at, len(parts), began, args.jobs))
        mark = "ok  " if outcome.ok else "FAIL"
        print(
            f"{mark} {outcome.part.name:<46} {outcome.passed:>3} passed {outcome.failed:>2} "
            f"failed {outcome.seconds:>6.0f} s",
            flush=True,
        )
        for line in outcome.figures:
            print(f"       {line}")
        for line in outcome.failures:
            print(f"       FAILED {line}")

    # The long parts first, so the last to start is a short one.
    ordered = sorted(parts, key=lambda p: not p.full_only) if args.jobs > 1 else parts
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in as_completed([pool.submit(run_part, p, full, logs) for p in ordered]):
            finished(future.result())
    outcomes = [done[p.name] for p in parts]
    if args.write_doc:
        print(f"wrote {DOC.relative_to(ROOT)}")
    print_json_line(
        "reliability",
        {
            "full": full,
            "parts": [
                {
                    "name": o.part.name,
                    "passed": o.passed,
                    "failed": o.failed,
                    "skipped": o.skipped,
                    "seconds": round(o.seconds, 1),
                    "figures": o.figures,
                }
                for o in outcomes
            ],
        },
    )
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
