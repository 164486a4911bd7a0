"""The options several commands share are declared once (starter/option_groups.py):
each command still lists them in its own order with its own wording, and what a
user types reaches the request the change starts with."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

import starter.base as base
import starter.cli as cli
import starter.start_options as start_options
from runbook.enums import Severity
from starter.option_groups import option_group


def command_at(*path: str):
    command = get_command(cli.app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def options_of(*path: str) -> list[str]:
    return [p.opts[0] for p in command_at(*path).params]


def words(text: str) -> list[str]:
    return text.split()


def test_each_start_command_lists_the_shared_options_in_its_own_order() -> None:
    assert options_of("forward-fix", "start") == words(
        "--deployment --reason --namespace --severity --detected-at --requested-by "
        "--hotfix-branch --hotfix-tag --staging-verified --reminder-minutes "
        "--key --language --wait --json"
    )
    assert options_of("rollback", "start") == words(
        "--deployment --severity --reason --namespace --to-revision --impact --cause "
        "--detected-at --requested-by --key --language --dry-run --wait --json"
    )
    assert options_of("pitr", "start") == words(
        "--service --time --reason --new-instance --check "
        "--requested-by --key --language --dry-run --wait --json"
    )
    assert options_of("troubleshoot", "restart") == words(
        "--deployment --reason --namespace --requested-by --key --language --wait --json"
    )
    assert options_of("approve") == words(
        "workflow_id --by --comment --key --payload --signature --payload-file"
    )


def test_a_command_keeps_its_own_wording_and_defaults_of_a_shared_option() -> None:
    def param(path: tuple[str, ...], name: str):
        return next(p for p in command_at(*path).params if p.name == name)

    assert param(("forward-fix", "start"), "severity").default is Severity.IMMEDIATE
    assert param(("redeploy", "start"), "severity").default is Severity.INVESTIGATE
    assert param(("rollback", "start"), "severity").required
    assert param(("forward-fix", "start"), "requested_by").help == "Who asks."
    assert param(("redeploy", "start"), "requested_by").help == "Who asks (cannot approve it)."
    assert (
        param(("redeploy", "start"), "dry_run").help != param(("restore", "start"), "dry_run").help
    )
    assert param(("guard", "stop"), "key").help.startswith("Your SSH private key: signs the stop")


@pytest.fixture
def started(monkeypatch) -> list[tuple[object, str]]:
    """The requests the start commands would sign and start; nothing reaches a server."""
    seen: list[tuple[object, str]] = []

    def refuse(*args, **kwargs):
        raise AssertionError("a start reached the server")

    monkeypatch.setattr(
        start_options, "sign_start", lambda request, wid, key: seen.append((request, wid))
    )
    monkeypatch.setattr(start_options, "run", lambda command: None)
    monkeypatch.setattr(base, "run", refuse)
    return seen


DETECTED = "2026-11-28T10:00:00+09:00"


@pytest.mark.parametrize(
    ("argv", "workflow_id", "expected"),
    [
        (
            [
                "forward-fix",
                "start",
                "--deployment",
                "api",
                "--reason",
                "schema",
                "--namespace",
                "prod",
                "--severity",
                "investigate",
                "--detected-at",
                DETECTED,
                "--requested-by",
                "alice",
                "--language",
                "en",
                "--reminder-minutes",
                "10",
            ],
            "forward-fix-prod-api",
            {
                "namespace": "prod",
                "severity": Severity.INVESTIGATE,
                "requested_by": "alice",
                "language": "en",
                "reminder_minutes": 10,
            },
        ),
        (
            [
                "redeploy",
                "start",
                "--deployment",
                "api",
                "--tag",
                "1.2.0",
                "--reason",
                "bad",
                "--dry-run",
                "--detected-at",
                DETECTED,
            ],
            "redeploy-default-api",
            {
                "namespace": "default",
                "severity": Severity.INVESTIGATE,
                "dry_run": True,
                "tag": "1.2.0",
            },
        ),
        (
            [
                "troubleshoot",
                "restart",
                "--deployment",
                "api",
                "--reason",
                "stuck",
                "--namespace",
                "prod",
                "--requested-by",
                "bob",
            ],
            "troubleshoot-prod-api",
            {"namespace": "prod", "action": "restart", "requested_by": "bob", "language": "ja"},
        ),
        (
            [
                "migrate-down",
                "start",
                "--service",
                "tekutoko-api",
                "--reason",
                "bad",
                "--severity",
                "immediate",
                "--detected-at",
                DETECTED,
            ],
            "migration-tekutoko-api",
            {"service": "tekutoko-api", "severity": Severity.IMMEDIATE, "dry_run": False},
        ),
    ],
)
def test_what_the_user_types_reaches_the_request(argv, workflow_id, expected, started) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 0
    [(request, wid)] = started
    assert wid == workflow_id
    for field, value in expected.items():
        assert getattr(request, field) == value, field
    if "--detected-at" in argv:
        assert request.detected_at == dt.datetime.fromisoformat(DETECTED)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            [
                "forward-fix",
                "start",
                "--deployment",
                "api",
                "--reason",
                "x",
                "--detected-at",
                "noon",
            ],
            "--detected-at: 'noon' is not an RFC 3339 time",
        ),
        (
            ["forward-fix", "start", "--deployment", "api", "--reason", "x", "--staging-verified"],
            "--staging-verified needs --hotfix-branch and --hotfix-tag",
        ),
        (
            [
                "restore",
                "start",
                "--deployment",
                "api",
                "--reason",
                "x",
                "--artifact",
                "a",
                "--backup",
                "b",
            ],
            "give exactly one of --artifact NAME, --backup CONFIGMAP and --file PATH",
        ),
        (
            ["troubleshoot", "restart", "--deployment", "api", "--reason", "x", "--language", "fr"],
            "--language",
        ),
        (
            ["guard", "stop", "--deployment", "api", "--by", "me", "--key", "k", "--payload"],
            "give one of --key, --payload and --signature",
        ),
    ],
)
def test_bad_input_to_a_shared_option_is_one_line_and_starts_nothing(
    argv, said, started, capsys
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exited.value.code == 2 and started == []
    assert len(lines) == 1 and lines[0].startswith("modoru: ") and said in lines[0], lines


@dataclasses.dataclass(frozen=True)
class Shared:
    color: str | None = None
    size: int | None = None
    loud: bool | None = None


GROUP = option_group(
    Shared,
    {
        "color": (str, typer.Option("red", help="A color.")),
        "size": (int, typer.Option(1)),
        "loud": (bool, None),  # each command declares its own
    },
)


def test_a_group_goes_where_its_parameter_stands_and_arrives_as_one_value() -> None:
    app = typer.Typer(add_completion=False)
    got: list[tuple[str, str, Shared]] = []

    @app.command()
    @GROUP(own_after="color", size=typer.Option(2, help="Bigger."))
    def paint(
        wall: str = typer.Option(...), *, shared: Shared, coat: str = typer.Option("one")
    ) -> None:
        got.append((wall, coat, shared))

    command = get_command(app)
    assert [p.name for p in command.params] == ["wall", "color", "coat", "size"]
    result = CliRunner().invoke(app, ["--wall", "north", "--color", "blue", "--coat", "two"])
    assert result.exit_code == 0, result.output
    assert got == [("north", "two", Shared(color="blue", size=2, loud=None))]


def test_a_group_offers_what_the_command_declares_and_nothing_it_leaves_out() -> None:
    app = typer.Typer(add_completion=False)

    @app.command()
    @GROUP(without=("size",), loud=typer.Option(False, "--loud"))
    def shout(*, shared: Shared) -> None:
        print(shared)

    assert [p.name for p in get_command(app).params] == ["color", "loud"]
    with pytest.raises(TypeError, match="not a shared Shared option: shade"):
        GROUP(shade=typer.Option(""))


def test_past_the_start_is_read_from_the_phase_the_gate_and_the_counts_not_the_audit() -> None:
    past = start_options._past_start
    waiting = {"phase": "awaiting_approval", "pending": {"gate": "start"}, "approvals": []}
    assert past(waiting) is False
    # Between the counted start and the next gate nothing is pending: the status says so.
    assert past({"phase": "executing", "pending": None, "start_counted": False}) is False
    assert past({"phase": "executing", "pending": None, "start_counted": True}) is True
    assert past({"phase": "awaiting_approval", "pending": {"gate": "approval"}}) is True
    assert past({"phase": "executing", "approvals": ["sre-lead"]}) is True
    assert past({"phase": "completed"}) is True
    # An audit entry alone decides nothing any more.
    assert past({"phase": "executing", "audit": [{"action": "start", "counted": True}]}) is False
