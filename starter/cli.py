"""The `modoru` command line: start rollbacks, approve or reject them, watch
them, and run the worker or the embedded default."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import typer
from pydantic import ValidationError
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.exceptions import Abort

from runbook.models import ApprovalSignal, RejectSignal
from runbook.procedures import BY_STATUS, PROCEDURES, resolve

from .base import CliError, fail, first_error
from .codec import codec_server
from .commands import (
    list_rollbacks,
    phase_of,
    query_any_status,
    run,
    verification_waits,
)
from .decide import send_decision
from .demo import run_demo
from .embedded import EmbeddedStack, StackError
from .guard import guard_app, render_guard
from .incident import confirm, incident_app, incident_line
from .inputs import check_workflow_id
from .render import console, err_console
from .signing import SigningOptions, sign_start, signing_options
from .slack_gateway_cli import slack_gateway
from .stacks import workflow_link

__all__ = ["CliError", "app", "fail", "first_error", "main", "run", "sign_start"]

app = typer.Typer(
    help="modoru: durable, approval-gated rollbacks for Kubernetes, as Temporal workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sandbox_app = typer.Typer(
    help="The practice world: a Kubernetes API, deployment controller and service front ends.",
    no_args_is_help=True,
)
# The procedures' command groups (runbook/procedures.py), then modoru's own.
for _procedure in PROCEDURES:
    app.add_typer(resolve(_procedure.commands), name=_procedure.cli)
for _name, _group in {"sandbox": sandbox_app, "guard": guard_app, "incident": incident_app}.items():
    app.add_typer(_group, name=_name)
app.command("codec-server")(codec_server)
app.command("slack-gateway")(slack_gateway)
app.command("confirm")(confirm)


@app.command()
@signing_options(
    payload=typer.Option(
        False,
        "--payload",
        help="Print the payload to sign (for ssh-keygen -Y sign -n modoru) and exit.",
    )
)
def approve(
    workflow_id: str,
    by: str = typer.Option(..., help="Your identity id in the catalog."),
    comment: str = typer.Option(""),
    *,
    how: SigningOptions,
) -> None:
    """Approve a change at its current gate; says at once whether the approval counted."""
    decide(workflow_id, "approve", by, comment, how)


@app.command()
@signing_options(
    payload=typer.Option(False, "--payload", help="Print the payload to sign and exit."),
    signature=typer.Option(
        None, help="A signature made with ssh-keygen over the --payload output."
    ),
)
def reject(
    workflow_id: str,
    by: str = typer.Option(...),
    reason: str = typer.Option(...),
    *,
    how: SigningOptions,
) -> None:
    """Reject a change before it acts; nothing is changed."""
    decide(workflow_id, "reject", by, reason, how)


def decide(workflow_id: str, decision: str, by: str, note: str, how: SigningOptions) -> None:
    try:
        check_workflow_id(workflow_id)
    except ValueError as exc:
        raise fail(str(exc)) from None
    how.check()
    try:
        signal_ = (
            ApprovalSignal(by=by, comment=note)
            if decision == "approve"
            else RejectSignal(by=by, reason=note)
        )
    except ValidationError as exc:
        raise fail(first_error(exc)) from None
    run(
        lambda client, settings: send_decision(
            client, workflow_id, signal_, how, task_queue=settings.task_queue
        )
    )


@app.command()
def status(workflow_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a rollback's phase, target, SLA, checklist and audit trail (migration rollbacks and \
guards too)."""
    try:
        check_workflow_id(workflow_id)
    except ValueError as exc:
        raise fail(str(exc)) from None

    async def show(client, settings) -> int:
        handle = client.get_workflow_handle(workflow_id)
        current = await query_any_status(handle)
        link = workflow_link(settings.web_ui, client.namespace, workflow_id)
        waits = await verification_waits(client, handle) if phase_of(current) == "verifying" else []
        if as_json:
            part = await incident_line(client, workflow_id)
            print(
                json.dumps(
                    {
                        **current.model_dump(mode="json"),
                        **({"incident": part} if part else {}),
                        **({"verification_waiting_for": waits} if waits else {}),
                    },
                    ensure_ascii=False,
                    indent=2,
                )
            )
            return 0
        procedure = BY_STATUS.get(type(current))
        render = resolve(procedure.render) if procedure is not None else render_guard
        render(current)  # type: ignore[operator]
        if (part := await incident_line(client, workflow_id)) is not None:
            console.print(
                f"incident: {part['incident_id']}"
                + (
                    "; verified, awaiting confirmation: "
                    f"{', '.join(part['awaiting_confirmations'])}"
                    if part["awaiting_confirmations"]
                    else "; fully verified"
                    if part["fully_verified"]
                    else ""
                ),
                highlight=False,
                soft_wrap=True,
            )
        for wait in waits:
            console.print(f"verifying, {wait}", highlight=False, soft_wrap=True)
        if link:
            console.print(f"web ui: {link}", highlight=False)
        return 0

    run(show)


@app.command("list")
def list_(open_only: bool = typer.Option(False, "--open", help="Only running rollbacks.")) -> None:
    """List rollbacks, migration rollbacks, recoveries and release guards."""
    run(lambda client, settings: list_rollbacks(client, open_only=open_only))


@app.command()
def history(deployment: str = typer.Option(...), namespace: str = typer.Option("default")) -> None:
    """Every rollback of one deployment."""
    run(
        lambda client, settings: list_rollbacks(
            client, open_only=False, deployment=deployment, namespace=namespace
        )
    )


@app.command()
def worker() -> None:
    """Run the worker (settings from MODORU_* environment variables)."""
    from worker.main import main as worker_main  # the worker's clients load only when it runs

    raise typer.Exit(worker_main())


CLOCK_SPEED = typer.Option(
    None,
    min=0.001,
    max=1000,
    help="Run sandbox time, metric minutes included, this many times faster (default: the "
    "scenario's).",
)


@app.command()
def up(
    state_dir: Path = typer.Option(
        Path(".modoru"), help="Where the Temporal database, logs and endpoints.json go."
    ),
    temporal_port: int = typer.Option(7233, min=1, max=65535),
    ui_port: int = typer.Option(8233, min=1, max=65535),
    scenario: str = typer.Option("tekutoko", help="The sandbox scenario."),
    traffic_rps: float = typer.Option(
        10.0,
        min=0,
        max=200,
        help="Demo API calls per second to each sandbox service, for the metrics (stops after an "
        "hour).",
    ),
    encrypt_histories: bool = typer.Option(
        False,
        "--encrypt-histories",
        help="Encrypt payloads (key from MODORU_CODEC_KEYS(_FILE), else generated into the state "
        "dir) and start a codec server for the Web UI.",
    ),
    clock_speed: float | None = CLOCK_SPEED,
) -> None:
    """The embedded default: Temporal dev server + Web UI, sandbox and worker, until Ctrl-C."""
    stack = EmbeddedStack(
        state_dir=state_dir,
        temporal_port=temporal_port,
        ui_port=ui_port,
        scenario=scenario,
        traffic_rps=traffic_rps,
        register=True,
        encrypt=encrypt_histories,
        clock_speed=clock_speed,
    )
    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
    except StackError as exc:
        raise fail(str(exc)) from None
    console.print(f"modoru is up. Temporal {stack.temporal_address}, Web UI {stack.web_ui}")
    console.print(f"endpoints: {stack.endpoints_path}; Ctrl-C stops everything")
    slack_page = stack.slack_page()
    if slack_page:
        console.print(
            f"Slack (sandbox): {slack_page} (approval messages; the buttons reach the gateway at "
            f"{stack.slack_gateway_url})",
            soft_wrap=True,
        )
    codec = "".join(f" {k}={v}" for k, v in stack.codec_env().items())
    if stack.encrypt:
        console.print(
            f"histories are encrypted; the Web UI decodes them through {stack.codec_endpoint} "
            f"with the token in {stack.codec_token_file} (the stock CLI: --codec-endpoint "
            f'{stack.codec_endpoint} --codec-auth "Bearer $(cat {stack.codec_token_file})")',
            soft_wrap=True,
        )
    console.print(
        f"in another shell: export TEMPORAL_ADDRESS={stack.temporal_address} "
        f"KUBECONFIG={stack.state_dir / 'sandbox' / 'kubeconfig'}{codec}",
        soft_wrap=True,
    )
    keys = stack.state_dir / "identities"
    console.print(
        "then: modoru rollback start --deployment tekutoko-api --severity investigate --reason "
        "'error rate 60%' "
        f"--requested-by oncall --key {keys / 'oncall.key'}",
        soft_wrap=True,
    )
    console.print(
        "approve (signed, as the catalog's identities require): modoru approve ROLLBACK_ID --by "
        f"sre-lead --key {keys / 'sre-lead.key'}",
        soft_wrap=True,
    )
    console.print(
        "or watch a release: modoru guard start --deployment tekutoko-api --for 30m --interval 5s",
        soft_wrap=True,
    )
    raise typer.Exit(supervise(stack, lambda: stopping))


def supervise(stack, stopping, interval: float = 0.5) -> int:
    """`modoru up`'s watch: a dead worker is restarted with a backoff; if Temporal
    (or the sandbox) dies, say so, stop everything and exit non-zero."""
    code = 0
    while not stopping():
        try:
            for line in stack.supervise():
                err_console.print(f"modoru: {line}", soft_wrap=True)
        except StackError as exc:
            err_console.print(f"modoru: {exc}", soft_wrap=True)
            code = 1
            break
        time.sleep(interval)
    stack.stop()
    return code


@app.command()
def demo(
    state_dir: Path = typer.Option(
        Path(".modoru/demo"), help="Where the demo's state and logs go."
    ),
    stay: bool = typer.Option(
        False,
        "--stay",
        help="Keep Temporal, its Web UI and the sandbox up after the story, until Ctrl-C, so "
        "the links it prints can be opened.",
    ),
) -> None:
    """The runbook's story end to end: 1.3.0 is released, the release guard sees its errors, rolls \
it back and verifies the recovery."""
    raise typer.Exit(run_demo(state_dir, stay=stay))


@sandbox_app.command("up")
def sandbox_up(
    scenario: str = typer.Option("tekutoko", help="A bundled scenario name or a YAML file."),
    state_dir: str = typer.Option(
        ".modoru/sandbox", help="Where kubeconfig, endpoints.json and the request log go."
    ),
    port: int = typer.Option(0, min=0, max=65535, help="API port on 127.0.0.1 (0: any free port)."),
    clock_speed: float | None = CLOCK_SPEED,
) -> None:
    """Run the sandbox in the foreground until Ctrl-C."""
    # The sandbox is its own program: the front door never imports the practice world.
    from . import local

    lacking = local.problem(temporal=False)
    if lacking:
        raise fail(lacking)
    os.execve(
        sys.executable,
        [
            sys.executable,
            "-m",
            "sandbox",
            "up",
            "--scenario",
            scenario,
            "--state-dir",
            state_dir,
            "--port",
            str(port),
            *(["--clock-speed", str(clock_speed)] if clock_speed else []),
        ],
        local.sandbox_env(),
    )


def main(argv: list[str] | None = None) -> None:
    """The console script: usage errors (a missing option, a bad value, an
    unknown command) are one line on stderr, like every other refusal."""
    try:
        code = app(args=argv, prog_name="modoru", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        code = 2
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path.removeprefix("modoru").strip() if ctx is not None else ""
        said = " ".join(exc.format_message().split())
        err_console.print(
            f"modoru: {where + ': ' if where else ''}{said}", highlight=False, markup=False
        )
        code = exc.exit_code
    except Abort:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
