"""`modoru guard`: watch a release and roll it back when the runbook says so."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re

import typer
from pydantic import ValidationError
from rich.table import Table
from temporalio.client import Client, WorkflowHandle

from runbook.guard_models import GuardPhase, GuardRequest, GuardStatus, StopSignal
from worker.settings import Settings
from workflows import search_attributes as sa
from workflows.release_guard import ReleaseGuardWorkflow, guard_workflow_id

from .base import CliError, fail, first_error
from .commands import Change, Kind, answer_of, follow, run, start
from .gate_check import checked_gate
from .render import console, err_console
from .signing import Printed, SigningOptions, signing_options
from .start_options import StartOptions, launch, start_options

guard_app = typer.Typer(
    help="The release guard: watch a release's metrics and roll it back on a breach.",
    no_args_is_help=True,
)
ENDED = {
    GuardPhase.FINISHED,
    GuardPhase.ROLLED_BACK,
    GuardPhase.ROLLBACK_FAILED,
    GuardPhase.STOPPED,
    GuardPhase.FAILED,
}
BASELINE_WAIT_SECONDS = 20.0
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str, option: str) -> float:
    """`90s`, `15m`, `1h30m`, or plain seconds; anything else is a clear error."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        match = _DURATION.match(value)
        if not value or not match or not any(match.groups()):
            raise ValueError(
                f"{option}: {text!r} is not a duration; use e.g. 30m, 15s, 1h30m"
            ) from None
        hours, minutes, secs = match.groups()
        seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0)
    if seconds <= 0:
        raise ValueError(f"{option}: {text!r} must be longer than zero")
    return seconds


async def _status(handle: WorkflowHandle) -> GuardStatus:
    return await answer_of(
        handle,
        handle.query(ReleaseGuardWorkflow.status),
        not_found=f"no modoru workflow with id {handle.id} (no release guard watches that "
        "deployment): start one with `modoru guard start`",
    )


def render_guard(status: GuardStatus) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("guard", status.workflow_id)
    table.add_row("phase", status.phase.value)
    table.add_row("target", f"{status.namespace}/{status.deployment}")
    table.add_row(
        "window",
        f"{status.started_at:%H:%M:%S} → {status.until:%H:%M:%S} UTC, every "
        f"{status.interval_seconds:g}s, {status.polls} polls, run {status.runs}",
    )
    if status.baseline is not None:
        b = status.baseline
        p95 = f"{b.p95_ms:.0f} ms" if b.p95_ms is not None else "no data"
        ratio = f"{b.error_ratio:.1%}" if b.error_ratio is not None else "no data"
        table.add_row(
            "baseline",
            f"p95 {p95}, error ratio {ratio} over {b.requests} requests; revision {b.revision}",
        )
    if status.last is not None:
        e, m = status.last.evidence, status.last.metrics
        ratio = f"{e.error_ratio:.1%}" if e.error_ratio is not None else "no data"
        p95 = f"{e.p95_ms:.0f} ms" if e.p95_ms is not None else "no data"
        window = (
            f" ({m.requests} requests {m.window_start:%H:%M:%S}-{m.window_end:%H:%M:%S})"
            if m
            else ""
        )
        table.add_row(
            "last poll", f"{status.last.at:%H:%M:%S}: error ratio {ratio}, p95 {p95}{window}"
        )
        table.add_row(
            "checks",
            f"health failures in a row {e.health_failures_in_a_row}, restarts "
            f"{e.restarts_in_window}, API failing {'yes' if e.api_check_failing else 'no'}",
        )
        verdict = status.last.verdict
        table.add_row(
            "verdict",
            (verdict.severity.value if verdict.severity else "no rollback called for")
            + (f": {'; '.join(verdict.reasons)}" if verdict.reasons else ""),
        )
        if verdict.missing:
            table.add_row("not measured", ", ".join(verdict.missing))
    if status.rollback_workflow_id:
        table.add_row(
            "rollback",
            f"{status.rollback_severity} {status.rollback_workflow_id} "
            f"({status.rollback_phase or 'running'})",
        )
    if status.message:
        table.add_row("message", status.message)
    console.print(table)


GUARD: Kind[GuardStatus] = Kind(
    what="release guard",
    scope="deployment",
    render=render_guard,
    ended=frozenset(phase.value for phase in ENDED),
    succeeded=frozenset(
        {GuardPhase.FINISHED.value, GuardPhase.ROLLED_BACK.value, GuardPhase.STOPPED.value}
    ),
    # Bad input (no such deployment, a service without metrics) shows in the catalog lookup and the
    # baseline.
    # Waiting for the first whole minute of data is settled too: the guard waits, the CLI says
    # until when.
    settled=lambda status: (
        status.baseline is not None
        or status.phase in ENDED
        or status.message.startswith("no whole minute of data yet")
    ),
    settle_seconds=BASELINE_WAIT_SECONDS,
    refusal="the guard for {name} could not start: {message}",
)


async def start_guard(
    client: Client, settings: Settings, request: GuardRequest, *, wait: bool, as_json: bool
) -> int:
    return await start(
        client,
        settings,
        GUARD,
        ReleaseGuardWorkflow.run,
        request,
        workflow_id=guard_workflow_id(request.namespace, request.deployment),
        search_attributes=sa.for_guard(request.namespace, request.deployment),
        summary=f"release guard for {request.namespace}/{request.deployment}",
        details=f"every {request.interval_seconds:g}s for {request.duration_seconds}s, started "
        f"by {request.requested_by}",
        wait=wait,
        as_json=as_json,
        settle_attached=False,
    )


async def follow_guard(handle: WorkflowHandle, quiet: bool = False) -> GuardStatus:
    return await follow(handle, quiet=quiet, kind=GUARD)


def said_of_guard(exc: ValidationError) -> str:
    """pydantic's refusal in `guard start`'s words: --for and --interval."""
    return (
        first_error(exc)
        .replace("--duration-seconds", "--for")
        .replace("--interval-seconds", "--interval")
    )


@guard_app.command("start")
@start_options(
    without=("severity", "detected_at", "key"),
    own_after="namespace",
    requested_by=typer.Option(
        os.environ.get("USER") or "release-guard",
        help="Who starts the guard (its rollbacks are requested in this name).",
    ),
    language=typer.Option("ja", help="Notice language of its rollbacks: ja or en."),
    wait=typer.Option(False, "--wait", help="Follow the guard until it ends."),
)
def guard_start(
    deployment: str = typer.Option(..., help="The Deployment just released."),
    *,
    options: StartOptions,
    for_: str = typer.Option("30m", "--for", help="How long to watch: 30m, 1h, 90s."),
    interval: str = typer.Option("15s", help="Time between polls, at least 1s."),
    release_at: str | None = typer.Option(
        None,
        help="When the release began (RFC 3339 with offset); the baseline ends there. Default: "
        "now.",
    ),
    baseline_p95_ms: float | None = typer.Option(
        None, help="Use this p95 as the baseline instead of measuring it."
    ),
    wait_for_data: bool = typer.Option(
        True,
        "--wait-for-data/--no-wait-for-data",
        help="With no whole minute of the service's data yet (a guard started with the service), "
        "wait for the first one; --no-wait-for-data fails saying when it will be readable.",
    ),
) -> None:
    """Watch a release; on a breach start the rollback with the computed severity."""
    try:
        duration, every = parse_duration(for_, "--for"), parse_duration(interval, "--interval")
        released = dt.datetime.fromisoformat(release_at) if release_at else None
    except ValueError as exc:
        message = (
            str(exc)
            if str(exc).startswith("--")
            else f"--release-at: {release_at!r} is not an RFC 3339 time"
        )
        raise fail(message) from None
    launch(
        options,
        lambda: GuardRequest(
            deployment=deployment,
            duration_seconds=int(duration),
            interval_seconds=every,
            release_at=released,
            baseline_p95_ms=baseline_p95_ms,
            wait_for_data=wait_for_data,
            **options.request_fields(),
        ),
        Change(
            lambda request: guard_workflow_id(request.namespace, request.deployment), start_guard
        ),
        said=said_of_guard,
    )


@guard_app.command("status")
def guard_status(
    deployment: str = typer.Option(...),
    namespace: str = typer.Option("default"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The guard's baseline, last poll, verdict and any rollback it started."""

    async def show(client, settings) -> int:
        current = await _status(
            client.get_workflow_handle(guard_workflow_id(namespace, deployment))
        )
        if as_json:
            print(json.dumps(current.model_dump(mode="json"), ensure_ascii=False, indent=2))
        else:
            render_guard(current)
        return 0

    run(show)


@guard_app.command("stop")
@signing_options(
    key=typer.Option(
        None, help="Your SSH private key: signs the stop, as the catalog's identities require."
    )
)
def guard_stop(
    deployment: str = typer.Option(...),
    namespace: str = typer.Option("default"),
    by: str = typer.Option(..., help="Who stops it (your identity id)."),
    reason: str = typer.Option(""),
    *,
    how: SigningOptions,
) -> None:
    """Stop watching; a rollback the guard already started carries on."""
    how.check()

    try:
        signal_ = StopSignal(by=by, reason=reason)
    except ValidationError as exc:
        raise fail(first_error(exc)) from None

    async def stop(client, settings) -> int:
        handle = client.get_workflow_handle(guard_workflow_id(namespace, deployment))
        current = await _status(handle)
        if current.phase in ENDED:
            console.print(f"the guard already ended: {current.phase.value} {current.message}")
            return 0
        gate = current.pending
        if gate is not None and (how.key or how.payload):
            await checked_gate(
                client,
                handle.id,
                gate,
                task_queue=settings.task_queue,
                types={"ReleaseGuard"},
                out=err_console if how.payload else console,
            )
        signed = how.sign(
            gate,
            "stop",
            by,
            reason,
            no_gate=CliError("this guard takes unsigned stops: leave out --key and --payload"),
            only_signed="guard counts signed stops" if gate is not None else None,
        )
        if isinstance(signed, Printed):
            return 0
        signal_.signed = signed
        refused = len(current.refused_stops)
        await handle.signal(ReleaseGuardWorkflow.stop, signal_)
        for _ in range(40):
            now = await _status(handle)
            if len(now.refused_stops) > refused:
                raise CliError(f"the stop did not count: {now.refused_stops[-1]}", code=1)
            if now.phase in ENDED or now.phase.value == "stopped":
                break
            await asyncio.sleep(0.25)
        final = await follow_guard(handle, quiet=True)
        console.print(f"{final.phase.value}: {final.message}")
        return 0

    run(stop)
