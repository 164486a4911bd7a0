"""A corpus of bad command lines: each is refused with a non-zero exit and
exactly one line on stderr naming the problem, before any connection to
Temporal (the ones that need a server are in tests/integration/test_bad_inputs_server.py)."""

from __future__ import annotations

import datetime as dt

import pytest

import starter.base as base
import starter.cli as cli

SOON = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
SKEWED = (
    dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
).isoformat()  # within the tolerated skew: not refused here
ROLLBACK = [
    "rollback",
    "start",
    "--deployment",
    "tekutoko-api",
    "--severity",
    "immediate",
    "--reason",
    "error rate 60%",
]
MIGRATE = ["migrate-down", "start", "--service", "tekutoko-api", "--reason", "bad migration"]
PITR = [
    "pitr",
    "start",
    "--service",
    "tekutoko-api",
    "--time",
    "2026-11-28T14:05:00+09:00",
    "--reason",
    "rows deleted",
]
GUARD = ["guard", "start", "--deployment", "tekutoko-api"]

CASES = [
    # the top level
    (["rolback"], "No such command 'rolback'"),
    (["rollback", "undo"], "No such command 'undo'"),
    (["--bogus"], "No such option: --bogus"),
    # rollback start
    (
        ["rollback", "start", "--severity", "immediate", "--reason", "x"],
        "Missing option '--deployment'",
    ),
    (["rollback", "start", "--deployment", "x", "--reason", "x"], "Missing option '--severity'"),
    (
        ["rollback", "start", "--deployment", "x", "--severity", "immediate"],
        "Missing option '--reason'",
    ),
    ([*ROLLBACK[:4], "--severity", "urgent", "--reason", "x"], "'urgent' is not one of"),
    ([*ROLLBACK, "--to-revision", "two"], "Invalid value for '--to-revision'"),
    ([*ROLLBACK, "--detected-at", SOON], "in the future"),
    ([*ROLLBACK, "--detected-at", "2099-01-01T00:00:00Z"], "in the future"),
    (
        [*ROLLBACK, "--detected-at", "yesterday"],
        "--detected-at: 'yesterday' is not an RFC 3339 time",
    ),
    ([*ROLLBACK, "--detected-at", "2026-11-28T10:00:00"], "has no UTC offset"),
    ([*ROLLBACK, "--key", "/nonexistent/id_ed25519"], "/nonexistent/id_ed25519"),
    ([*ROLLBACK, "--language", "fr"], "--language"),
    ([*ROLLBACK, "--to-revision", "0"], "--to-revision"),
    ([*ROLLBACK, "--to-revision", "-3"], "--to-revision"),
    (
        ["rollback", "start", "--deployment", "", "--severity", "immediate", "--reason", "x"],
        "--deployment",
    ),
    (
        ["rollback", "start", "--deployment", "x", "--severity", "immediate", "--reason", ""],
        "--reason",
    ),
    ([*ROLLBACK, "--namespace", "Not_A_Namespace"], "--namespace"),
    ([*ROLLBACK, "--frobnicate"], "No such option: --frobnicate"),
    ([*ROLLBACK, "extra"], "unexpected extra argument"),
    # approve / reject
    (["approve"], "Missing argument 'workflow_id'"),
    (["approve", "rollback-default-x"], "Missing option '--by'"),
    (["approve", "", "--by", "sre-lead"], "the workflow id is empty"),
    (["approve", "   ", "--by", "sre-lead"], "the workflow id is empty"),
    (
        ["approve", "rollback-default-x", "--by", "sre-lead", "--key", "k", "--payload"],
        "give one of --key, --payload and --signature",
    ),
    (["approve", "rollback-default-x", "--by", ""], "--by"),
    (["reject", "rollback-default-x", "--by", "sre-lead"], "Missing option '--reason'"),
    (["reject", "", "--by", "sre-lead", "--reason", "no"], "the workflow id is empty"),
    (["reject", "rollback-default-x", "--reason", "no"], "Missing option '--by'"),
    (
        [
            "reject",
            "rollback-default-x",
            "--by",
            "sre-lead",
            "--reason",
            "no",
            "--payload",
            "--signature",
            "s.sig",
        ],
        "give one of",
    ),
    # status / list / history
    (["status"], "Missing argument 'workflow_id'"),
    (["status", ""], "the workflow id is empty"),
    (["status", " "], "the workflow id is empty"),
    (["status", "x", "--yaml"], "No such option: --yaml"),
    (["list", "--closed"], "No such option: --closed"),
    (["history"], "Missing option '--deployment'"),
    # migrate-down start
    (["migrate-down", "start", "--reason", "x"], "Missing option '--service'"),
    (["migrate-down", "start", "--service", "tekutoko-api"], "Missing option '--reason'"),
    ([*MIGRATE, "--steps", "-1"], "--steps"),
    ([*MIGRATE, "--steps", "0"], "--steps"),
    ([*MIGRATE, "--steps", "2", "--to-version", "3"], "steps"),
    ([*MIGRATE, "--to-version", "-1"], "--to-version"),
    ([*MIGRATE, "--to-version", "three"], "Invalid value for '--to-version'"),
    ([*MIGRATE, "--severity", "now"], "'now' is not one of"),
    ([*MIGRATE, "--detected-at", SOON], "in the future"),
    ([*MIGRATE, "--detected-at", "noon"], "--detected-at: 'noon' is not an RFC 3339 time"),
    ([*MIGRATE, "--detected-at", "2026-11-28T10:00:00"], "has no UTC offset"),
    ([*MIGRATE, "--language", "de"], "--language"),
    # pitr start
    (["pitr", "start", "--service", "tekutoko-api", "--reason", "x"], "Missing option '--time'"),
    ([*PITR[:4], "--time", "14:05", "--reason", "x"], "--time"),
    ([*PITR[:4], "--time", "2026-11-28T14:05:00", "--reason", "x"], "--time"),
    ([*PITR, "--check", "nonsense"], "--check: 'nonsense' is not NAME=SQL => EXPECTED"),
    (
        [*PITR, "--check", "walks=DELETE FROM walks => 0"],
        "--check sql: must be one SELECT statement",
    ),
    (
        [*PITR, "--check", "walks=SELECT count(*) FROM walks => "],
        "--check expect: the expected answer is empty",
    ),
    ([*PITR, "--check", "=SELECT 1 => 1"], "--check"),
    # guard start / status / stop
    (["guard", "start"], "Missing option '--deployment'"),
    ([*GUARD, "--for", "abc"], "--for: 'abc' is not a duration"),
    ([*GUARD, "--for", "0"], "--for: '0' must be longer than zero"),
    ([*GUARD, "--for", "-5m"], "--for"),
    ([*GUARD, "--interval", "0.5s"], "--interval"),
    ([*GUARD, "--interval", "soon"], "--interval: 'soon' is not a duration"),
    ([*GUARD, "--release-at", "yesterday"], "--release-at: 'yesterday' is not an RFC 3339 time"),
    ([*GUARD, "--release-at", "2026-11-28T10:00:00"], "time zone offset"),
    ([*GUARD, "--baseline-p95-ms", "fast"], "Invalid value for '--baseline-p95-ms'"),
    ([*GUARD, "--language", "xx"], "--language"),
    (["guard", "status"], "Missing option '--deployment'"),
    (["guard", "stop", "--deployment", "tekutoko-api"], "Missing option '--by'"),
    (["guard", "stop", "--deployment", "tekutoko-api", "--by", ""], "--by"),
    # up / sandbox / codec-server
    (["up", "--temporal-port", "0"], "--temporal-port"),
    (["up", "--ui-port", "70000"], "--ui-port"),
    (["up", "--traffic-rps", "500"], "--traffic-rps"),
    (["sandbox", "up", "--port", "99999"], "--port"),
    (["codec-server", "--port", "0"], "--port"),
    # incidents and confirmations
    (
        ["confirm", "rollback-default-tekutoko-api", "--item", "vibes", "--by", "oncall"],
        "--item: 'vibes' is not one of",
    ),
    (["confirm", "rollback-default-tekutoko-api", "--item", "dashboards"], "Missing option '--by'"),
    (["confirm", "", "--item", "dashboards", "--by", "oncall"], "the workflow id is empty"),
    (
        ["confirm", "x", "--item", "dashboards", "--by", "oncall", "--payload", "--key", "k"],
        "give one of --key, --payload and --signature",
    ),
    (["confirm", "x", "--item", "dashboards", "--by", ""], "--by"),
    (["incident", "postmortem", "incident-x"], "Missing option '--link'"),
    (["incident", "prevention", "incident-x"], "Missing option '--summary'"),
    (
        ["incident", "postmortem-draft", "incident-x", "--lang", "fr"],
        "--lang: 'fr' is not ja or en",
    ),
    (["incident", "status", " "], "the workflow id is empty"),
    (["incident", "rca", "incident-x", "--by", ""], "--by"),
    (["incident", "close"], "No such command 'close'"),
]


@pytest.fixture(autouse=True)
def no_server(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a bad command line reached the server")

    monkeypatch.setattr(cli, "run", refuse)
    monkeypatch.setattr(
        base, "run", refuse
    )  # every command reaches the server through starter/base.py


# Ids name SOON, not its value: parallel test processes (pytest-xdist) must collect the same ids.
@pytest.mark.parametrize(
    ("argv", "names"),
    CASES,
    ids=lambda v: " ".join("SOON" if a == SOON else a for a in v) if isinstance(v, list) else None,
)
def test_a_bad_command_line_is_one_line_and_a_non_zero_exit(argv, names, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert exited.value.code not in (0, None), (out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("modoru: ") and names in lines[0], lines[0]
    assert "Traceback" not in out + err


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60


def test_a_detection_time_within_the_clock_skew_is_accepted() -> None:
    from starter.inputs import parse_detected_at

    assert parse_detected_at(SKEWED) is not None
    assert parse_detected_at("") is None
