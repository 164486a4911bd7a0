"""Production cadence: a bad release caught and rolled back at the real clock.

The embedded default at clock speed 1 with the sandbox's Cloud Monitoring
emulator holding each point back for the preset's real ingestion delay (210 s
for `gke_l7`, Google's published figure; 90 s for `managed_prometheus`), the
catalog using the preset's own delay for the request metrics and the same
delay for the post-checks. The release guard watches, 1.3.0 (about 60 % of API
calls fail) is released, and one timeline is measured from the moment the new
pods serve alone:

    release → rollback started (the guard's decision) → undo applied → verified

Flagger's and Argo Rollouts' defaults are set on the same timeline: each reads
the same Cloud Monitoring minutes, so each can first see the bad release when
the release's first whole minute becomes readable (`first bad minute readable`),
and rolls back after its own count of failed checks from there.

    python -m bench.cadence [--presets gke_l7,managed_prometheus] [--rounds 1]

Takes about 10 minutes a round for `gke_l7` and 6 for `managed_prometheus`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import tempfile
from importlib import resources
from pathlib import Path

import yaml
from kubernetes import client as kube
from kubernetes import config as kube_config

from bench.common import print_json_line, print_machine
from bench.guarded_stack import guard_decision, watching_guard
from bench.releases import release
from runbook import activity_refs as refs
from runbook.guard_models import GuardPhase, GuardResult
from runbook.monitoring import DEFAULTS
from runbook.verification import FirstMinute
from starter.embedded import EmbeddedStack, free_port
from worker.client import connect
from worker.settings import bundled_catalog
from workflows.deployment_rollback import rollback_workflow_id

POLL_SECONDS = 15.0  # the guard's default interval
TRAFFIC_RPS = 10  # `modoru up`'s default
BAD = "1.3.0"
# Their defaults and documented examples, as docs/benchmarks.md quotes them: checks after the
# first one that can see the bad minute, each one interval apart.
OTHERS = {
    "Flagger (interval 60 s, threshold 5)": 4 * 60,
    "Flagger (interval 60 s, threshold 10)": 9 * 60,
    "Argo Rollouts (failureLimit 0, one measurement)": 0,
    "Argo Rollouts (interval 5m, failureLimit 3)": 3 * 300,
}


def delay_of(preset: str) -> int:
    return int(DEFAULTS[preset]["ingestion_delay_seconds"])  # type: ignore[call-overload]


def scenario_file(state: Path, delay: int) -> Path:
    """The release scenario with the emulator holding points back `delay` s."""
    text = (resources.files("sandbox") / "scenarios" / "tekutoko-release.yaml").read_text()
    scenario = yaml.safe_load(text)
    scenario["metrics_ingestion_delay_seconds"] = delay
    path = state / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return path


def catalog_file(state: Path, preset: str, delay: int) -> Path:
    catalog = yaml.safe_load(bundled_catalog().read_text())
    for entry in catalog["services"]:
        entry["monitoring"]["preset"] = preset
        entry["monitoring"].pop("ingestion_delay_seconds", None)  # the preset's own
        entry["post_checks"]["ingestion_delay_seconds"] = delay
        entry["channels"] = [{"kind": "jsonl", "path": str(state / "notices.jsonl")}]
    path = state / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return path


async def undo_applied(client, workflow_id: str) -> float:
    """When the rollback's undo activity completed, from its history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled = {
        e.event_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == refs.ROLLOUT_UNDO.name
    }
    for e in history.events:
        if (
            e.HasField("activity_task_completed_event_attributes")
            and e.activity_task_completed_event_attributes.scheduled_event_id in scheduled
        ):
            return e.event_time.ToDatetime(dt.UTC).timestamp()
    raise RuntimeError(f"{workflow_id} has no completed undo")


async def one(client, settings, apps: kube.AppsV1Api, delay: int) -> dict:
    guard = await watching_guard(client, settings, interval=POLL_SECONDS, duration=1800)
    served = await asyncio.to_thread(release, apps, BAD)
    status = await guard_decision(guard)
    rollback_id = status.rollback_workflow_id or rollback_workflow_id("default", "tekutoko-api")
    rollback = client.get_workflow_handle(rollback_id)
    started = (await rollback.describe()).start_time.timestamp()
    result: GuardResult = await guard.result()
    if result.status.phase is not GuardPhase.ROLLED_BACK:
        raise RuntimeError(f"the rollback did not verify: {result.status.message}")
    closed = (await rollback.describe()).close_time.timestamp()
    undone = await undo_applied(client, rollback_id)
    readable = FirstMinute.after(dt.datetime.fromtimestamp(served, dt.UTC), delay).readable_at
    return {
        "rollback_started_s": started - served,
        "undo_applied_s": undone - served,
        "verified_s": closed - served,
        "first_bad_minute_readable_s": readable.timestamp() - served,
    }


async def run_preset(preset: str, rounds: int) -> list[dict]:
    delay = delay_of(preset)
    state = Path(tempfile.mkdtemp(prefix=f"modoru-bench-cadence-{preset}-"))
    os.environ["MODORU_CATALOG"] = str(catalog_file(state, preset, delay))
    stack = EmbeddedStack(
        state_dir=state,
        temporal_port=free_port(),
        ui_port=free_port(),
        scenario=str(scenario_file(state, delay)),
        persist=False,
        traffic_rps=TRAFFIC_RPS,
        traffic_seconds=3600,
        clock_speed=1.0,
    )
    stack.start()
    try:
        endpoints = json.loads(stack.endpoints_path.read_text())
        settings = stack.client_settings()
        client = await connect(settings)
        api = kube_config.new_client_from_config(config_file=endpoints["kubeconfig"])
        apps = kube.AppsV1Api(api)
        found = []
        for _ in range(rounds):
            await asyncio.to_thread(release, apps, "1.2.0")
            # the guard's baseline needs a whole minute of the healthy release, readable
            now = dt.datetime.now(dt.UTC)
            ready = FirstMinute.after(now, delay).readable_at
            await asyncio.sleep((ready - now).total_seconds() + 5)
            result = await one(client, settings, apps, delay)
            print(
                f"{preset:18} rollback started {result['rollback_started_s']:6.1f} s, undo applied "
                f"{result['undo_applied_s']:6.1f} s, verified {result['verified_s']:6.1f} s "
                f"(first bad minute readable {result['first_bad_minute_readable_s']:5.1f} s)",
                flush=True,
            )
            found.append({"preset": preset, "delay_s": delay, **result})
        api.close()
        return found
    finally:
        stack.stop()
        os.environ.pop("MODORU_CATALOG", None)


def table(results: list[dict], presets: list[str]) -> list[dict]:
    keys = (
        "first_bad_minute_readable_s",
        "rollback_started_s",
        "undo_applied_s",
        "verified_s",
    )
    summary = []
    for preset in presets:
        rows = [r for r in results if r["preset"] == preset]
        medians = {k: round(statistics.median(r[k] for r in rows), 1) for k in keys}
        others = {
            name: round(medians["first_bad_minute_readable_s"] + after, 1)
            for name, after in OTHERS.items()
        }
        summary.append(
            {
                "preset": preset,
                "delay_s": rows[0]["delay_s"],
                "rounds": len(rows),
                **medians,
                "others_rollback_started_s": others,
            }
        )
    return summary


async def main(presets: list[str], rounds: int) -> None:
    print_machine()
    print(
        f"clock speed 1; the emulator holds points back each preset's delay; guard polls every "
        f"{POLL_SECONDS:g} s; {TRAFFIC_RPS} API calls a second; release {BAD}"
    )
    results = []
    for preset in presets:
        results += await run_preset(preset, rounds)
    summary = table(results, presets)
    print()
    print("seconds after the bad release serves alone (medians):")
    for row in summary:
        print(
            f"{row['preset']} (D = {row['delay_s']} s): first bad minute readable "
            f"{row['first_bad_minute_readable_s']}, modoru: rollback started "
            f"{row['rollback_started_s']}, undo applied {row['undo_applied_s']}, verified "
            f"{row['verified_s']}"
        )
        for name, at in row["others_rollback_started_s"].items():
            print(f"    {name}: rollback started {at}")
    print_json_line(
        "cadence",
        {
            "clock_speed": 1.0,
            "poll_s": POLL_SECONDS,
            "traffic_rps": TRAFFIC_RPS,
            "results": summary,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="gke_l7,managed_prometheus")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main(args.presets.split(","), args.rounds))
