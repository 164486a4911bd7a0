"""`modoru demo`: the runbook's story on the embedded default, told through the
release guard: a healthy service, a bad release, detection from the metrics,
an immediate rollback, and recovery verified by the same metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

from runbook.guard_models import GuardPhase, GuardRequest
from runbook.models import Phase
from worker.client import connect
from workflows.deployment_rollback import rollback_workflow_id
from workflows.release_guard import ReleaseGuardWorkflow, guard_workflow_id

from .commands import follow
from .embedded import EmbeddedStack, StackError, free_port, port_free
from .guard import follow_guard, render_guard, start_guard
from .render import console, err_console

DEMO_SCENARIO = "tekutoko-release"
BAD_IMAGE = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api:1.3.0"
TRAFFIC_RPS = 20
# Sandbox time, metric time included, runs this many times faster than the wall
# clock: Cloud Monitoring's one-minute readings pass in 3 s here, while the
# queries stay exactly what Google is sent (whole minutes, 60-s alignment).
CLOCK_SPEED = 20.0
# One complete minute of the healthy release, visible after the catalog's 20-s
# ingestion delay: at most 2 minutes + 20 s of metric time from the start.
BASELINE_SECONDS = (120 + 20) / CLOCK_SPEED + 1


def error_ratio(url: str, n: int = 20) -> float:
    errors = 0
    for _ in range(n):
        try:
            with urllib.request.urlopen(url, timeout=5):
                pass
        except urllib.error.HTTPError:
            errors += 1
    return errors / n


def release(kubeconfig: Path, image: str) -> None:
    """What a CD pipeline does: set the image, with a change cause for the history."""
    # Loaded here, not with the module: every other command would pay ~0.2 s of CPU for it.
    from kubernetes import client as kube
    from kubernetes import config as kube_config

    api = kube_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        kube.AppsV1Api(api).patch_namespaced_deployment(
            "tekutoko-api",
            "default",
            {
                "metadata": {
                    "annotations": {
                        "kubernetes.io/change-cause": "Update to version "
                        f"{image.rsplit(':', 1)[-1]}"
                    }
                },
                "spec": {"template": {"spec": {"containers": [{"name": "api", "image": image}]}}},
            },
        )
    finally:
        api.close()


async def story(stack: EmbeddedStack) -> int:
    endpoints = json.loads(stack.endpoints_path.read_text())
    api = endpoints["services"]["default/tekutoko-api"] + "/v1/walks"
    settings = stack.client_settings()
    client = await connect(settings)

    console.rule("1. tekutoko-api 1.2.0 is live, serving steady traffic")
    console.print(
        f"error ratio of {api}: {error_ratio(api):.0%}; letting {BASELINE_SECONDS:.0f}s of "
        "traffic build the baseline "
        f"(sandbox time runs {CLOCK_SPEED:g}x: a one-minute Cloud Monitoring reading takes "
        f"{60 / CLOCK_SPEED:g}s)"
    )
    await asyncio.sleep(BASELINE_SECONDS)

    console.rule("2. the CD pipeline starts the release guard, then releases 1.3.0")
    request = GuardRequest(
        deployment="tekutoko-api",
        duration_seconds=600,
        interval_seconds=3,
        requested_by="cd-pipeline",
    )
    await start_guard(client, settings, request, wait=False, as_json=False)
    guard = client.get_workflow_handle(guard_workflow_id("default", "tekutoko-api"))
    for _ in range(120):
        if (await guard.query(ReleaseGuardWorkflow.status)).phase is GuardPhase.WATCHING:
            break
        await asyncio.sleep(0.25)
    release(Path(endpoints["kubeconfig"]), BAD_IMAGE)
    console.print(f"released {BAD_IMAGE}")

    console.rule("3. the guard watches Cloud Monitoring (the sandbox's emulator) and acts")
    last = None
    for _ in range(240):
        status = await guard.query(ReleaseGuardWorkflow.status)
        if status.last is not None and status.last.polls != last:
            last = status.last.polls
            ratio = status.last.evidence.error_ratio
            console.print(
                f"poll {status.polls}: error ratio "
                f"{'no data' if ratio is None else f'{ratio:.0%}'}, phase {status.phase.value}"
            )
        if status.rollback_workflow_id or status.phase in (GuardPhase.FAILED, GuardPhase.FINISHED):
            break
        await asyncio.sleep(0.5)
    render_guard(status)
    if not status.rollback_workflow_id:
        err_console.print("the guard did not start a rollback")
        return 1

    console.rule("4. the rollback runs: immediate, so no approval is waited for")
    final = await follow(
        client.get_workflow_handle(rollback_workflow_id("default", "tekutoko-api"))
    )
    guard_final = await follow_guard(guard, quiet=True)

    draft_path = await save_postmortem_draft(client, stack, final.workflow_id)

    console.rule("5. after")
    console.print(f"error ratio of {api}: {error_ratio(api):.0%}")
    console.print(f"guard: {guard_final.phase.value}: {guard_final.message}")
    console.print(f"Web UI: {rollback_url(stack)}")
    verified = (
        final.phase == Phase.COMPLETED
        and final.verification is not None
        and final.verification.ok
        and guard_final.phase is GuardPhase.ROLLED_BACK
    )
    if draft_path is not None:
        console.print(
            f"postmortem draft: {draft_path} (rollback history beside it: "
            f"{draft_path.with_name('rollback-history.json')})"
        )
    console.print(
        "[green]rolled back and verified[/]" if verified else "[red]the rollback did not verify[/]"
    )
    return 0 if verified else 1


async def save_postmortem_draft(client, stack: EmbeddedStack, rollback_id: str) -> Path | None:
    """The incident the guard's rollback ran under: print its postmortem draft and
    save it, with the rollback's history, in the state dir (the stack stops after the demo)."""
    from runbook.postmortem import render

    from .incident import incident_status, render_incident, resolve

    console.rule("the incident and its postmortem draft")
    try:
        incident, _ = await resolve(client, rollback_id)
        for _ in range(80):  # the incident records the rollback's end a moment after it
            status = await incident_status(incident)
            change = status.change(rollback_id)
            if change is not None and not change.running:
                break
            await asyncio.sleep(0.25)
    except Exception as exc:  # the demo's story is the rollback; say why the draft is missing
        err_console.print(f"no incident for {rollback_id}: {exc}")
        return None
    render_incident(status)
    draft = render(status, "ja")
    console.print(draft, markup=False, highlight=False)
    path = stack.state_dir / "postmortem-draft.md"
    path.write_text(draft, encoding="utf-8")
    (stack.state_dir / "postmortem-draft.en.md").write_text(render(status, "en"), encoding="utf-8")
    history = await client.get_workflow_handle(rollback_id).fetch_history()
    (stack.state_dir / "rollback-history.json").write_text(history.to_json(), encoding="utf-8")
    return path


def rollback_url(stack: EmbeddedStack) -> str:
    return (
        f"{stack.web_ui}/namespaces/default/workflows/"
        f"{rollback_workflow_id('default', 'tekutoko-api')}"
    )


def stay_until_interrupted(stack: EmbeddedStack) -> None:
    """Keep the stack up (Temporal, its Web UI, the sandbox, the worker) until Ctrl-C or
    SIGTERM, so the links printed can be opened."""
    console.rule("the stack stays up")
    console.print(f"the rollback in the Web UI: {rollback_url(stack)}", markup=False)
    console.print(f"the sandbox's endpoints: {stack.endpoints_path}", markup=False)
    console.print(
        f"Temporal Web UI: {stack.web_ui}; Temporal at 127.0.0.1:{stack.temporal_port} "
        f"(`modoru` commands reach it with TEMPORAL_ADDRESS=127.0.0.1:{stack.temporal_port}"
        "); press Ctrl-C to stop everything",
        markup=False,
    )
    stopped = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(state_dir: Path, stay: bool = False) -> int:
    temporal_port = 7233 if port_free(7233) else free_port()
    ui_port = 8233 if port_free(8233) else free_port()
    if os.path.exists(state_dir / "temporal.db"):
        (state_dir / "temporal.db").unlink()  # each demo tells the story from the start
    stack = EmbeddedStack(
        state_dir=state_dir,
        temporal_port=temporal_port,
        ui_port=ui_port,
        scenario=DEMO_SCENARIO,
        traffic_rps=TRAFFIC_RPS,
        traffic_seconds=600,
        clock_speed=CLOCK_SPEED,
    )
    try:
        stack.start()
    except StackError as exc:
        err_console.print(f"modoru demo: {exc}", markup=False, highlight=False)
        return 2
    try:
        console.print(f"Temporal Web UI: {stack.web_ui} (open it while the demo runs)")
        code = asyncio.run(story(stack))
        if stay:
            stay_until_interrupted(stack)
        return code
    finally:
        stack.stop()
        if not stay:
            console.print(
                "The demo's stack is stopped now, so the Web UI links above no longer answer; "
                "`modoru demo --stay` keeps Temporal, its Web UI and the sandbox up until Ctrl-C.",
                markup=False,
            )
