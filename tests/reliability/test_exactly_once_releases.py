"""Exactly once where the effect lands, for the releases' changes: a redeploy through
GitHub CD (method 2), a migration rollback (one step down) and a point-in-time recovery
(clone, then switch). Counted from the sandbox emulators' effect logs and objects, never
from the workflow's own record, under

- after-write faults: about a fifth of the answers to every write the change makes are
  lost after the write was applied (500, 503 or a reset connection), so each such write is
  retried on an effect that already landed;
- a worker SIGKILL pinned between the effect and its activity's completion: the emulator
  holds the answer to the write, the worker is killed, the answer goes to a dead connection
  and a new worker retries the activity (after its start-to-close timeout, or its heartbeat
  timeout for an exec).

One stack (the tekutoko-release scenario at 20x) for the file; the changes share
tekutoko-api and its database, so the runs are sequential. MODORU_EXACTLY_ONCE_RUNS (runs
per kind under after-write faults) and MODORU_EXACTLY_ONCE_KILLS (pinned kills, see KILLS)
set the counts. Full suite only (MODORU_RELIABILITY=full)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook.cd_models import RedeployRequest, RedeployResult
from runbook.migration_models import MigrationRequest, MigrationResult
from runbook.models import ApprovalSignal, Phase
from runbook.pitr_models import ExpectedQuery, PitrRequest, PitrResult
from tests.conftest import default_kubectl
from tests.reliability.effects import (
    CLOUD_SQL_WRITES,
    GITHUB_WRITES,
    KUBERNETES_WRITES,
    Emulator,
    after_write_mix,
    down_steps,
    kill_pinned_where,
    spec_changes,
)
from tests.reliability.stack import FULL, Kill, ReliabilityStack, WorkerProcess
from worker.settings import bundled_catalog
from workflows.migration_rollback import MigrationRollbackWorkflow
from workflows.pitr import PointInTimeRecoveryWorkflow
from workflows.redeploy import RedeployWorkflow

pytestmark = [
    pytest.mark.integration,
    pytest.mark.reliability,
    pytest.mark.skipif(not FULL, reason="full reliability suite only (MODORU_RELIABILITY=full)"),
]
RUNS = int(os.environ.get("MODORU_EXACTLY_ONCE_RUNS", "10"))  # after-write faults, per kind
# Pinned kills per point: each killed write is retried after its 10-s heartbeat timeout (the
# exec beats itself, the others are kept alive by the worker). MODORU_EXACTLY_ONCE_KILLS: one
# count for all, or some by point ("dispatch=3,down-to=0").
KILLS = {"dispatch": 10, "down-to": 10, "clone": 10, "switch": 10}
for part in filter(None, os.environ.get("MODORU_EXACTLY_ONCE_KILLS", "").split(",")):
    point, _, count = part.rpartition("=")
    if point and point not in KILLS:
        raise ValueError(f"MODORU_EXACTLY_ONCE_KILLS: no kill point {point!r}: {', '.join(KILLS)}")
    KILLS.update({point: int(count)} if point else dict.fromkeys(KILLS, int(count)))
APPROVERS = ("sre-lead", "backend-lead")
SERVICE = "tekutoko-api"
REPO = "tekutoko/tekutoko-api"
RUN_SECONDS = 240  # one change without kills
KILLED_RUN_SECONDS = 480  # one change through a pinned kill (a start-to-close timeout or two)
MIX = "after-write faults"
PINNED = "pinned kill"


def catalog(state: Path) -> dict:
    found = yaml.safe_load(bundled_catalog().read_text())
    for entry in found["services"]:
        entry["channels"] = [{"kind": "jsonl", "path": str(state / "notices.jsonl")}]
        entry["pitr"]["operation_poll_seconds"] = 1
    return found


@pytest.fixture(scope="module")
def rel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityStack]:
    state = tmp_path_factory.mktemp("exactly-once")
    with ReliabilityStack(
        state,
        scenario="tekutoko-release",
        catalog=catalog(state),
        clock_speed=20,
        traffic_rps=30,
    ) as stack:
        yield stack


# -- the world, read and set back by the test itself ------------------------------------------


def kubectl(rel: ReliabilityStack, *args: str, timeout: float = 120) -> str:
    binary = default_kubectl()
    assert binary, "kubectl is not installed"
    done = subprocess.run(
        [binary, "--kubeconfig", rel.endpoints["kubeconfig"], *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECACHEDIR": str(rel.state / "kcache")},
    )
    if done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def deployment(rel: ReliabilityStack) -> dict[str, Any]:
    return json.loads(kubectl(rel, "get", f"deployment/{SERVICE}", "-o", "json"))


def live_image(found: dict[str, Any]) -> str:
    api = next(c for c in found["spec"]["template"]["spec"]["containers"] if c["name"] == "api")
    return api["image"]


def settled(rel: ReliabilityStack) -> None:
    kubectl(rel, "rollout", "status", f"deployment/{SERVICE}", "--timeout=120s", timeout=150)


def github(rel: ReliabilityStack, path: str, body: Any = None) -> Any:
    """The GitHub emulator's REST API, as the reviewer's token sees it."""
    token = Path(rel.endpoints["github_token_file"]).read_text().strip()
    request = urllib.request.Request(
        f"{rel.endpoints['github_api'].rstrip('/')}/repos/{REPO}/actions/{path}",
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def lost_answers(emulator: Emulator, since: int, key: Callable[[dict], bool] | None = None) -> int:
    """Writes (those `key` accepts) that were applied and whose answer the emulator's faults
    lost, from its request log."""
    lost = 0
    for entry in emulator._call(f"requests?since={since}")["entries"]:
        # An exec's request is logged as not applied (the command's effect is the exec's own
        # entry); its answer lost after the command ran shows as its outcome.
        exec_lost = (entry.get("exec") or {}).get("outcome") == "answer lost by fault injection"
        status = entry.get("status") or 0
        if exec_lost or (entry.get("applied") and not 200 <= status < 300):
            lost += key is None or key(entry)
    return lost


def is_dispatch(entry: dict) -> bool:
    return entry["path"].endswith("/dispatches")


def is_down_to(entry: dict) -> bool:
    return "command=down-to" in entry.get("query", "")


def is_clone(entry: dict) -> bool:
    return entry["path"].endswith("/clone")


def is_switch(entry: dict) -> bool:
    return entry.get("verb") == "patch" and entry.get("name") == SERVICE


def request_mark(emulator: Emulator) -> int:
    return emulator._call("requests?since=0")["last"]


# -- following a change ------------------------------------------------------------------------


async def follow(
    handle,
    workflow: Any,
    worker: WorkerProcess,
    gates: set[str],
    what: str,
    timeout: float,
    on_poll: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Approve each of `gates` once (by both approvers) as the change reaches it, run
    `on_poll`, until the workflow closes; fail with its last phase after `timeout`."""
    answered: set[str] = set()
    last = None
    deadline = time.monotonic() + timeout
    while (await handle.describe()).close_time is None:
        worker.check()
        try:
            last = await asyncio.wait_for(handle.query(workflow.status), 5)
        except Exception:  # no worker has the workflow right now (killed, or starting)
            pass
        else:
            gate = getattr(last, "gate", None) or "approval"
            if last.phase is Phase.AWAITING_APPROVAL and gate in gates and gate not in answered:
                answered.add(gate)
                for who in APPROVERS:
                    await handle.signal(workflow.approve, ApprovalSignal(by=who))
        if on_poll is not None:
            await on_poll()
        if time.monotonic() > deadline:
            said = f"{last.phase.value}: {last.message}" if last is not None else "no status"
            raise AssertionError(
                f"{what}: workflow {handle.id} did not close within {timeout:.0f}s "
                f"(gates approved: {sorted(answered)}; last status {said})"
            )
        await asyncio.sleep(0.2)


async def follow_with_kill(
    follow_it: Callable[[Callable[[], Awaitable[None]] | None], Awaitable[None]],
    kill: Awaitable[Kill] | None,
    on_poll: Callable[[], Awaitable[None]] | None = None,
) -> list[Kill]:
    """Follow the change while `kill` waits for its pinned write; a change that closes
    before the write was pinned, or a kill that fails, fails the run."""
    if kill is None:
        await follow_it(on_poll)
        return []
    task = asyncio.ensure_future(kill)

    async def poll() -> None:
        if task.done() and task.exception() is not None:
            raise task.exception()
        if on_poll is not None:
            await on_poll()

    try:
        await follow_it(poll)
    finally:
        if not task.done():
            task.cancel()
    if task.cancelled():
        raise AssertionError("the workflow closed before the write the kill is pinned to")
    return [task.result()]


async def new_worker(rel: ReliabilityStack) -> WorkerProcess:
    worker = rel.worker()
    await asyncio.sleep(3)  # it registers and polls
    worker.check()
    return worker


def summary(kind: str, mode: str, runs: list[dict[str, Any]], effects: str) -> str:
    phases = {r["phase"] for r in runs}
    kills = [k for r in runs for k in r["kills"]]
    shown = (
        f"{len(kills)} ({'; '.join(f'{k.at} at {k.seconds:.0f}s' for k in kills)})"
        if kills
        else "none"
    )
    seconds = [r["seconds"] for r in runs]
    line = (
        f"exactly once: {kind} {mode}: {len(runs)} of {len(runs)} ended "
        f"{'/'.join(sorted(phases))}, effects: {effects}; kills: {shown}; "
        f"seconds per run {min(seconds):.0f}-{max(seconds):.0f}"
    )
    print(line, flush=True)
    return line


# -- 1. redeploy through GitHub CD -------------------------------------------------------------


async def test_a_redeploy_dispatches_one_cd_run_that_deploys_once(rel: ReliabilityStack) -> None:
    client = await rel.client()
    gh = Emulator.of(rel.endpoints, "github")
    kube = Emulator.of(rel.endpoints, "kubernetes")
    worker = await new_worker(rel)

    async def one(mode: str) -> dict[str, Any]:
        settled(rel)
        before = deployment(rel)
        tag = "1.1.0" if live_image(before).endswith(":1.2.0") else "1.2.0"
        gh_mark, kube_mark = gh.mark(), kube.mark()
        gh_requests, kube_requests = request_mark(gh), request_mark(kube)
        runs_before = {r["id"] for r in github(rel, "runs?per_page=100")["workflow_runs"]}
        if mode == MIX:
            gh.set_faults(after_write_mix(GITHUB_WRITES))
            kube.set_faults(after_write_mix(KUBERNETES_WRITES))
        reviewed: set[int] = set()

        async def review() -> None:
            """A reviewer of environment production approves the dispatched run in GitHub
            once the emulator shows it waiting (read from the emulator, not the workflow)."""
            for effect in await asyncio.to_thread(gh.effects, gh_mark, "dispatches.post"):
                run_id = effect["run_id"]
                if run_id in reviewed:
                    continue
                run = await asyncio.to_thread(github, rel, f"runs/{run_id}")
                if run["status"] != "waiting":
                    continue
                pending = await asyncio.to_thread(github, rel, f"runs/{run_id}/pending_deployments")
                try:
                    await asyncio.to_thread(
                        github,
                        rel,
                        f"runs/{run_id}/pending_deployments",
                        {
                            "environment_ids": [pending[0]["environment"]["id"]],
                            "state": "approved",
                            "comment": "exactly once",
                        },
                    )
                except (urllib.error.URLError, ConnectionError, OSError):
                    # An after-write fault may lose the answer to the review too: the effect
                    # log tells whether it was taken; if not, the next poll reviews again.
                    taken = [
                        e
                        for e in await asyncio.to_thread(
                            gh.effects, gh_mark, "pending_deployments.post"
                        )
                        if e["run_id"] == run_id
                    ]
                    if not taken:
                        return
                reviewed.add(run_id)

        started = time.monotonic()
        handle = await client.start_workflow(
            RedeployWorkflow.run,
            RedeployRequest(
                deployment=SERVICE,
                tag=tag,
                reason="exactly once: back to a known-good tag",
                requested_by="reliability",
                language="en",
            ),
            id=f"eo-redeploy-{uuid.uuid4().hex[:6]}",
            task_queue=worker.env["MODORU_TASK_QUEUE"],
        )
        kill = (
            kill_pinned_where(gh, "dispatches", "post", worker, started, lambda h: True)
            if mode == PINNED
            else None
        )
        try:
            kills = await follow_with_kill(
                lambda poll: follow(
                    handle,
                    RedeployWorkflow,
                    worker,
                    {"approval"},
                    f"redeploy {tag} ({mode})",
                    KILLED_RUN_SECONDS if kill else RUN_SECONDS,
                    poll,
                ),
                kill,
                review,
            )
        finally:
            gh.set_faults([])
            kube.set_faults([])
        result: RedeployResult = await handle.result()
        took = time.monotonic() - started
        after = deployment(rel)
        dispatches = gh.effects(gh_mark, "dispatches.post")
        reviews = gh.effects(gh_mark, "pending_deployments.post")
        new_runs = [
            r
            for r in github(rel, "runs?per_page=100")["workflow_runs"]
            if r["id"] not in runs_before
        ]
        changes = spec_changes(kube.effects(kube_mark), SERVICE)
        api_changes = [c for c in changes if c.get("via") != "cd-job"]
        cd_changes = [c for c in changes if c.get("via") == "cd-job"]
        found = {
            "phase": result.status.phase.value,
            "message": result.status.message,
            "tag": tag,
            "dispatches": len(dispatches),
            "cd_runs": [(r["id"], r["status"], r["conclusion"]) for r in new_runs],
            "reviews": len(reviews),
            # The CD job's deploys, from the cluster's effect log (`via: cd-job`), and the
            # Deployment's generation as a second count.
            "cd_deploys": len(cd_changes),
            "generations": after["metadata"]["generation"] - before["metadata"]["generation"],
            "image": live_image(after),
            "api_spec_changes": len(api_changes),
            "lost": lost_answers(gh, gh_requests) + lost_answers(kube, kube_requests),
            "dispatch_answers_lost": lost_answers(gh, gh_requests, is_dispatch),
            "kills": kills,
            "seconds": took,
        }
        print(f"  redeploy {mode}: {found}", flush=True)
        assert found["phase"] == Phase.COMPLETED.value, found
        assert found["dispatches"] == 1, dispatches
        assert len(new_runs) == 1 and new_runs[0]["id"] == dispatches[0]["run_id"], found
        assert new_runs[0]["conclusion"] == "success", found
        assert found["cd_deploys"] == 1, cd_changes
        assert cd_changes[0]["images"] == [found["image"]], cd_changes
        assert found["generations"] == 1 and found["image"].endswith(f":{tag}"), found
        assert found["api_spec_changes"] == 0, api_changes
        return found

    for mode, count in ((MIX, RUNS), (PINNED, KILLS["dispatch"])):
        if count == 0:
            continue
        runs = [await one(mode) for _ in range(count)]
        summary(
            "redeploy",
            mode,
            runs,
            f"dispatches.post {sum(r['dispatches'] for r in runs)} "
            f"(one CD run each, {sum(len(r['cd_runs']) for r in runs)} runs), "
            f"CD deploys {sum(r['cd_deploys'] for r in runs)} in the cluster's effect log "
            f"({sum(r['generations'] for r in runs)} new generations), "
            f"reviews {sum(r['reviews'] for r in runs)}, "
            f"answers lost after the write {sum(r['lost'] for r in runs)} (of dispatches "
            f"{sum(r['dispatch_answers_lost'] for r in runs)})",
        )
    worker.stop()


# -- 2. migration rollback: one step down ------------------------------------------------------


async def test_a_migration_rollback_steps_down_once(rel: ReliabilityStack) -> None:
    client = await rel.client()
    kube = Emulator.of(rel.endpoints, "kubernetes")
    sql = Emulator.of(rel.endpoints, "cloud_sql")
    worker = await new_worker(rel)

    def migrate(*args: str) -> str:
        return kubectl(
            rel, "exec", f"deploy/{SERVICE}", "-c", "api", "--", "/api", "migrate", *args
        )

    async def one(mode: str) -> dict[str, Any]:
        settled(rel)
        up = migrate("up")  # back at the latest schema, so that each run goes 5 -> 4
        version = migrate("version").strip()
        assert version.startswith("5"), f"migrate up left the schema at {version!r}: {up}"
        kube_mark, sql_mark = kube.mark(), sql.mark()
        kube_requests, sql_requests = request_mark(kube), request_mark(sql)
        if mode == MIX:
            kube.set_faults(after_write_mix([("pods", "exec")]))
            sql.set_faults(after_write_mix(CLOUD_SQL_WRITES))
        started = time.monotonic()
        handle = await client.start_workflow(
            MigrationRollbackWorkflow.run,
            MigrationRequest(
                service=SERVICE,
                reason="exactly once: 1.3.0's migration broke walks",
                requested_by="reliability",
                language="en",
            ),
            id=f"eo-migrate-{uuid.uuid4().hex[:6]}",
            task_queue=worker.env["MODORU_TASK_QUEUE"],
        )
        kill = (
            kill_pinned_where(
                kube,
                "pods",
                "exec",
                worker,
                started,
                lambda h: "down-to" in (h.get("command") or []),
            )
            if mode == PINNED
            else None
        )
        try:
            kills = await follow_with_kill(
                lambda poll: follow(
                    handle,
                    MigrationRollbackWorkflow,
                    worker,
                    {"approval"},
                    f"migration rollback ({mode})",
                    KILLED_RUN_SECONDS if kill else RUN_SECONDS,
                    poll,
                ),
                kill,
            )
        finally:
            kube.set_faults([])
            sql.set_faults([])
        result: MigrationResult = await handle.result()
        took = time.monotonic() - started
        execs = kube.effects(kube_mark, "pods.exec")
        downs = down_steps(execs)
        down_tos = [e for e in execs if "down-to" in e.get("command", [])]
        backups = sql.effects(sql_mark, "backupRuns.post")
        found = {
            "phase": result.status.phase.value,
            "message": result.status.message,
            "down_steps": downs,
            "down_to_execs": [(e["exit_code"], e["output"].strip()[:80]) for e in down_tos],
            "backup_runs": len(backups),
            "now": migrate("version").strip(),
            "lost": lost_answers(kube, kube_requests) + lost_answers(sql, sql_requests),
            "down_to_answers_lost": lost_answers(kube, kube_requests, is_down_to),
            "kills": kills,
            "seconds": took,
        }
        print(f"  migration {mode}: {found}", flush=True)
        assert found["phase"] == Phase.COMPLETED.value, found
        assert len(downs) == 1 and downs[0].startswith("5/d "), found
        assert found["now"].startswith("4"), found
        assert found["backup_runs"] <= 1, backups
        return found

    for mode, count in ((MIX, RUNS), (PINNED, KILLS["down-to"])):
        if count == 0:
            continue
        runs = [await one(mode) for _ in range(count)]
        summary(
            "migration rollback",
            mode,
            runs,
            f"down steps {sum(len(r['down_steps']) for r in runs)} (5/d once each), "
            f"down-to execs {sum(len(r['down_to_execs']) for r in runs)}, "
            f"backupRuns.post {sum(r['backup_runs'] for r in runs)}, "
            f"answers lost after the write {sum(r['lost'] for r in runs)} (of down-to execs "
            f"{sum(r['down_to_answers_lost'] for r in runs)})",
        )
    settled(rel)
    migrate("up")
    worker.stop()


# -- 3. point-in-time recovery: one clone, one switch ------------------------------------------


def proxy_args(found: dict[str, Any]) -> tuple[str, int, list[str]]:
    spec = found["spec"]["template"]["spec"]
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            if container["name"] == "cloud-sql-proxy":
                return group, index, list(container.get("args") or [])
    raise AssertionError(f"deployment/{SERVICE} has no cloud-sql-proxy container")


async def test_a_point_in_time_recovery_clones_and_switches_once(rel: ReliabilityStack) -> None:
    client = await rel.client()
    kube = Emulator.of(rel.endpoints, "kubernetes")
    sql = Emulator.of(rel.endpoints, "cloud_sql")
    worker = await new_worker(rel)
    settled(rel)
    group, index, original = proxy_args(deployment(rel))

    def switch_back() -> None:
        """Point the app's proxy at tekutoko-db again, so each run switches from it."""
        if proxy_args(deployment(rel))[2] != original:
            patch = [
                {
                    "op": "replace",
                    "path": f"/spec/template/spec/{group}/{index}/args",
                    "value": original,
                }
            ]
            kubectl(rel, "patch", f"deployment/{SERVICE}", "--type=json", "-p", json.dumps(patch))
        settled(rel)

    async def one(mode: str, point: str = "") -> dict[str, Any]:
        switch_back()
        await asyncio.sleep(2)  # the restore point comes after the last change of the source
        clone = f"tekutoko-db-eo-{uuid.uuid4().hex[:6]}"
        kube_mark, sql_mark = kube.mark(), sql.mark()
        kube_requests, sql_requests = request_mark(kube), request_mark(sql)
        if mode == MIX:
            kube.set_faults(after_write_mix([("deployments", "patch")]))
            sql.set_faults(after_write_mix(CLOUD_SQL_WRITES))
        started = time.monotonic()
        handle = await client.start_workflow(
            PointInTimeRecoveryWorkflow.run,
            PitrRequest(
                service=SERVICE,
                point_in_time=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
                new_instance=clone,
                reason="exactly once: a cleanup job deleted walks",
                requested_by="reliability",
                language="en",
                checks=[ExpectedQuery(name="one", sql="SELECT 1", expect="1")],
            ),
            id=f"eo-pitr-{uuid.uuid4().hex[:6]}",
            task_queue=worker.env["MODORU_TASK_QUEUE"],
        )
        kill = None
        if point == "clone":
            kill = kill_pinned_where(
                sql, "instances", "post", worker, started, lambda h: h.get("destination") == clone
            )
        elif point == "switch":
            kill = kill_pinned_where(
                kube, "deployments", "patch", worker, started, lambda h: h.get("name") == SERVICE
            )
        try:
            kills = await follow_with_kill(
                lambda poll: follow(
                    handle,
                    PointInTimeRecoveryWorkflow,
                    worker,
                    {"clone", "switch"},
                    f"point-in-time recovery as {clone} ({mode}{' ' + point if point else ''})",
                    KILLED_RUN_SECONDS if kill else RUN_SECONDS,
                    poll,
                ),
                kill,
            )
        finally:
            kube.set_faults([])
            sql.set_faults([])
        result: PitrResult = await handle.result()
        took = time.monotonic() - started
        clones = [e for e in sql.effects(sql_mark, "instances.post") if e.get("destination")]
        changes = spec_changes(kube.effects(kube_mark), SERVICE)
        now_args = proxy_args(deployment(rel))[2]
        found = {
            "phase": result.status.phase.value,
            "message": result.status.message,
            "clones": [e["destination"] for e in clones],
            "switches": len(changes),
            "proxy_names_clone": any(clone in arg for arg in now_args),
            "lost": lost_answers(kube, kube_requests) + lost_answers(sql, sql_requests),
            "clone_answers_lost": lost_answers(sql, sql_requests, is_clone),
            "switch_answers_lost": lost_answers(kube, kube_requests, is_switch),
            "kills": kills,
            "seconds": took,
        }
        print(f"  pitr {mode}{' ' + point if point else ''}: {found}", flush=True)
        assert found["phase"] == Phase.COMPLETED.value, found
        assert found["clones"] == [clone], clones
        assert found["switches"] == 1, changes
        assert found["proxy_names_clone"], now_args
        return found

    for mode, point, count in (
        (MIX, "", RUNS),
        (PINNED, "clone", KILLS["clone"]),
        (PINNED, "switch", KILLS["switch"]),
    ):
        if count == 0:
            continue
        runs = [await one(mode, point) for _ in range(count)]
        summary(
            "point-in-time recovery",
            f"{mode} after the {point}" if point else mode,
            runs,
            f"instances.post clones {sum(len(r['clones']) for r in runs)} (its own destination "
            f"each), switches {sum(r['switches'] for r in runs)} (one spec change each), "
            f"answers lost after the write {sum(r['lost'] for r in runs)} (of clones "
            f"{sum(r['clone_answers_lost'] for r in runs)}, of switches "
            f"{sum(r['switch_answers_lost'] for r in runs)})",
        )
    switch_back()
    worker.stop()
