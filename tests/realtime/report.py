"""Write the real-time suite's results as Markdown (tests/realtime/RESULTS.md): the
command, the commit, each test's outcome and duration from pytest's JUnit XML, and the
figures the tests recorded (MODORU_REALTIME_RECORD).

    python -m tests.realtime.report --junit J.xml --record R.jsonl --command "..." \
        [--commit abc1234 --clean yes] > tests/realtime/RESULTS.md"""

from __future__ import annotations

import argparse
import json
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path


def outcomes(junit: Path) -> list[tuple[str, str, float, str]]:
    """(test, outcome, seconds, message) for each test case."""
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                message = (found.get("message") or "").strip()
                break
        rows.append((name, outcome, float(case.get("time", 0)), message))
    return rows


def fmt(value, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def one_line(text: str, limit: int = 600) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(args: argparse.Namespace) -> str:
    record = Path(args.record)
    text = record.read_text() if record.exists() else ""
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    lines = [
        "# Real-time end-to-end suite: results",
        "",
        f"- command: `{args.command}`",
        f"- commit: `{args.commit}` (tree clean: {args.clean})",
    ]
    lines += [f"- {note}" for note in args.note]
    lines += ["", "## Tests", "", "| test | outcome | seconds |", "|---|---|---|"]
    rows = outcomes(Path(args.junit))
    for name, outcome, seconds, _ in rows:
        lines.append(f"| `{name}` | {outcome} | {seconds:.0f} |")
    failures = [(n, o, m) for n, o, _, m in rows if o in ("FAILED", "ERROR")]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [
            f"- `{name}` ({outcome}): {one_line(message)}" for name, outcome, message in failures
        ]
    rollbacks = [r for r in records if r["kind"] == "rollback"]
    if rollbacks:
        lines += [
            "",
            "## Immediate rollbacks in a row",
            "",
            "Undo: when `kubectl rollout undo`'s equivalent landed (second of the minute, UTC);"
            " verification: from the rollout's end to the verdict.",
            "",
            "| # | started at :ss | undo at :ss | verification s | start to verdict s | phase |",
            "|---|---|---|---|---|---|",
        ]
        for r in sorted(rollbacks, key=lambda r: r["round"]):
            lines.append(
                f"| {r['round']} | {r['target_second']:02d} | {fmt(r['undo_second'])} | "
                f"{fmt(r['verification_seconds'])} | {fmt(r['total_seconds'])} | {r['phase']} |"
            )
        seconds = [r["verification_seconds"] for r in rollbacks if r["verification_seconds"]]
        lines += [
            "",
            f"{len(rollbacks)} recorded; verification "
            f"min {min(seconds):.1f} s, median {statistics.median(seconds):.1f} s, "
            f"max {max(seconds):.1f} s.",
        ]
    others = [r for r in records if r["kind"] != "rollback"]
    if others:
        lines += [
            "",
            "## The other change kinds",
            "",
            "| change | rolled out at :ss | verification s | phase | note |",
            "|---|---|---|---|---|",
        ]
        for r in others:
            note = r.get("error_ratio") or (
                f"release rolled out -> guard's undo {r['detect_seconds']} s"
                if r.get("detect_seconds") is not None
                else ""
            )
            if r.get("phase") != "completed" and r.get("message"):
                note = f"{note} {r['message']}".strip()
            lines.append(
                f"| {r['kind']} | {fmt(r.get('undo_second'))} | "
                f"{fmt(r.get('verification_seconds'))} | {r['phase']} | {one_line(note, 300)} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--junit", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--clean", required=True)
    parser.add_argument("--note", action="append", default=[])
    print(render(parser.parse_args()), end="")


if __name__ == "__main__":
    main()
