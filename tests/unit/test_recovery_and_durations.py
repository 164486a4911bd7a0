"""The recovery criteria on both sides of each limit, and the guard CLI's
durations and bad arguments."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from runbook.guard import RecoveryCriteria, judge_recovery
from starter.cli import app
from starter.guard import parse_duration

CRITERIA = RecoveryCriteria()


def verdicts(**reading) -> dict[str, tuple[bool, str]]:
    found = judge_recovery(
        **{
            "requests": 100,
            "error_ratio": 0.0,
            "p95_ms": 80.0,
            "open_alerts": [],
            "criteria": CRITERIA,
            **reading,
        }
    )
    return {name: (ok, detail) for name, ok, detail in found}


def test_a_clean_reading_meets_every_criterion() -> None:
    assert all(ok for ok, _ in verdicts().values()) and set(verdicts()) == {
        "error_ratio",
        "p95",
        "alerts",
    }


@pytest.mark.parametrize(("ratio", "ok"), [(0.0099, True), (0.01, False), (0.148, False)])
def test_error_ratio_limit(ratio: float, ok: bool) -> None:
    met, detail = verdicts(error_ratio=ratio)["error_ratio"]
    assert met is ok
    if not ok:
        assert "x the limit" in detail


@pytest.mark.parametrize(("p95", "ok"), [(499.0, True), (500.0, False), (900.0, False)])
def test_p95_limit(p95: float, ok: bool) -> None:
    met, detail = verdicts(p95_ms=p95)["p95"]
    assert met is ok and (ok or "ms over" in detail)


def test_too_little_traffic_is_not_a_pass() -> None:
    assert (
        verdicts(requests=19)["error_ratio"][0] is False
        and verdicts(requests=20)["error_ratio"][0] is True
    )
    assert verdicts(error_ratio=None, requests=0)["error_ratio"][0] is False
    assert verdicts(p95_ms=None)["p95"][0] is False


def test_open_alerts_fail_and_are_named() -> None:
    ok, detail = verdicts(open_alerts=["tekutoko-api error ratio above 5%"])["alerts"]
    assert not ok and "tekutoko-api error ratio above 5%" in detail
    assert "alerts" not in verdicts(open_alerts=None)  # alerts not read for this service


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("15s", 15), ("1h30m", 5400), ("90", 90), ("2.5s", 2.5), ("1H", 3600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--for") == seconds


@pytest.mark.parametrize("text", ["", "3x", "m", "-5s", "0", "30 minutes"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(ValueError, match="--for"):
        parse_duration(text, "--for")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--for", "3x"], "--for: '3x' is not a duration"),
        (["--for", "5s"], "--for: Input should be greater than or equal to 10"),
        (["--interval", "0.5s"], "--interval: Input should be greater than or equal to 1"),
        (["--release-at", "2026-11-28T10:00:00"], "release_at needs a time zone offset"),
        (["--release-at", "yesterday"], "--release-at: 'yesterday' is not an RFC 3339 time"),
    ],
)
def test_guard_start_refuses_bad_arguments_before_connecting(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(
        app,
        ["guard", "start", "--deployment", "tekutoko-api", *args],
        env={"MODORU_TEMPORAL_ADDRESS": "127.0.0.1:1"},
    )
    assert result.exit_code == 2, result.output
    assert needle in result.output.replace("\n", " ")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            [
                "migrate-down",
                "start",
                "--service",
                "tekutoko-api",
                "--reason",
                "x",
                "--steps",
                "1",
                "--to-version",
                "2",
            ],
            "give --steps or --to-version, not both",
        ),
        (
            ["migrate-down", "start", "--service", "tekutoko-api", "--reason", "x", "--steps", "0"],
            "--steps: Input should be greater than or equal to 1",
        ),
        (
            ["migrate-down", "start", "--service", "Tekutoko", "--reason", "x"],
            "--service: String should match pattern",
        ),
        (
            [
                "migrate-down",
                "start",
                "--service",
                "tekutoko-api",
                "--reason",
                "x",
                "--to-version",
                "-1",
            ],
            "--to-version: Input should be greater than or equal to 0",
        ),
        (
            [
                "pitr",
                "start",
                "--service",
                "tekutoko-api",
                "--reason",
                "x",
                "--time",
                "2026-11-28T14:00:00",
            ],
            "point_in_time needs a time zone offset",
        ),
        (
            ["pitr", "start", "--service", "tekutoko-api", "--reason", "x", "--time", "soon"],
            "--time: 'soon' is not an RFC 3339 time",
        ),
        (
            [
                "pitr",
                "start",
                "--service",
                "tekutoko-api",
                "--reason",
                "x",
                "--time",
                "2026-11-28T05:00:00Z",
                "--check",
                "walks",
            ],
            "--check: 'walks' is not NAME=SQL => EXPECTED",
        ),
        (
            [
                "pitr",
                "start",
                "--service",
                "tekutoko-api",
                "--reason",
                "x",
                "--time",
                "2026-11-28T05:00:00Z",
                "--new-instance",
                "DB_2",
            ],
            "--new-instance: String should match pattern",
        ),
        (
            [
                "pitr",
                "start",
                "--service",
                "tekutoko-api",
                "--reason",
                "x",
                "--time",
                "2026-11-28T05:00:00Z",
                "--check",
                "gone=DELETE FROM walks => 0",
            ],
            "must be one SELECT statement (SELECT, WITH, VALUES or TABLE), not DELETE",
        ),
        (
            [
                "pitr",
                "start",
                "--service",
                "tekutoko-api",
                "--reason",
                "x",
                "--time",
                "2026-11-28T05:00:00Z",
                "--check",
                "two=SELECT 1; DROP TABLE walks => 1",
            ],
            "must be one SELECT statement, with no ';' inside",
        ),
        (
            [
                "pitr",
                "start",
                "--service",
                "tekutoko-api",
                "--reason",
                "x",
                "--time",
                "2026-11-28T05:00:00Z",
                "--check",
                "walks=SELECT count(*) FROM walks =>  ",
            ],
            "the expected answer is empty",
        ),
    ],
)
def test_migration_and_recovery_starts_refuse_bad_arguments_before_connecting(
    args: list[str], needle: str
) -> None:
    result = CliRunner().invoke(app, args, env={"MODORU_TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert result.exit_code == 2, result.output
    assert needle in result.output.replace("\n", " ")


def test_a_version_with_leading_zeros_is_accepted_as_the_runbook_writes_it() -> None:
    # `--to-version 000005` is version 5: the arguments pass, and only the unreachable server stops
    # it.
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "starter.cli",
            "migrate-down",
            "start",
            "--service",
            "tekutoko-api",
            "--reason",
            "x",
            "--to-version",
            "000005",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MODORU_TEMPORAL_ADDRESS": "127.0.0.1:1"},
    )
    assert "--to-version" not in done.stderr and "127.0.0.1:1" in done.stderr, done.stderr


def test_a_check_parses_name_sql_and_expected_answer() -> None:
    from starter.pitr import parse_check

    check = parse_check("walks=SELECT count(*) FROM walks WHERE a = 1 => 1204")
    assert (check.name, check.sql, check.expect) == (
        "walks",
        "SELECT count(*) FROM walks WHERE a = 1",
        "1204",
    )
