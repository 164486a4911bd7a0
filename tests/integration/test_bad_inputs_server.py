"""The bad inputs only a server can judge (ids that do not exist, a deployment
the catalog does not know, a revision not in the history) and the ones that
must be refused before anything starts even with a server up: each exits
non-zero with one line on stderr, and the cluster saw no write."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

pytestmark = pytest.mark.integration

SOON = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
ROLLBACK = [
    "rollback",
    "start",
    "--severity",
    "immediate",
    "--reason",
    "error rate 60%",
    "--requested-by",
    "oncall",
]

CASES = [
    # Ids no test starts (`rollback start --deployment nope` below, and other modules, make
    # rollback-default-nope).
    (
        ["status", "rollback-default-never-started"],
        "no modoru workflow with id rollback-default-never-started",
    ),
    (["status", "no such id at all"], "no modoru workflow with id no such id at all"),
    (
        ["guard", "status", "--deployment", "never-started"],
        "no modoru workflow with id guard-default-never-started",
    ),
    (
        ["guard", "stop", "--deployment", "never-started", "--by", "sre-lead"],
        "no modoru workflow with id guard-default-never-started",
    ),
    (
        ["approve", "rollback-default-never-started", "--by", "sre-lead"],
        "no modoru workflow with id rollback-default-never-started",
    ),
    (
        ["reject", "rollback-default-never-started", "--by", "sre-lead", "--reason", "no"],
        "no modoru workflow with id rollback-default-never-started",
    ),
    ([*ROLLBACK, "--deployment", "tekutoko-api", "--detected-at", SOON], "in the future"),
    (
        [
            "migrate-down",
            "start",
            "--service",
            "tekutoko-api",
            "--reason",
            "x",
            "--detected-at",
            SOON,
        ],
        "in the future",
    ),
    ([*ROLLBACK, "--deployment", "nope"], "deployment default/nope is not in the service catalog"),
    (
        [*ROLLBACK, "--deployment", "tekutoko-api", "--to-revision", "99"],
        "revision 99 is not in the history of deployment/tekutoko-api",
    ),
    (
        ["guard", "start", "--deployment", "nope", "--for", "1m", "--interval", "5s"],
        "deployment default/nope is not in the service catalog",
    ),
]


async def test_bad_inputs_a_server_judges_are_one_line_and_change_nothing(stack) -> None:
    mark = stack.sandbox.mark()
    gate = asyncio.Semaphore(3)

    async def one(argv):
        async with gate:
            return await stack.cli(*argv, timeout=60)

    results = await asyncio.gather(*(one(argv) for argv, _ in CASES))
    for (argv, names), done in zip(CASES, results, strict=True):
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode != 0, (argv, done.stdout, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("modoru: ") and names in lines[0], (
            argv,
            done.stderr,
        )
    assert stack.mutations(mark) == []  # no backup ConfigMap, no patch: nothing was changed
