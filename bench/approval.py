"""Approval latency: from the approve signal leaving the CLI's client to the
undo PATCH arriving at the sandbox, with plain-name approvals and with signed
ones (checked by the workflow, and again by the undo activity), in one run; and
from a click on Approve in the sandbox Slack to the undo PATCH (the click sent
as the page's form sends it; the emulator signs Slack's request, the gateway
checks it and the gate, signs with its attestor key and sends the update).

    python -m bench.approval [--rollbacks 30] [--no-slack]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import print_json_line, print_machine
from bench.harness import BenchStack, percentile, wait_for_worker
from runbook.decisions import SignedDecision
from runbook.models import ApprovalSignal, Phase, RollbackRequest, Severity
from runbook.signatures import new_private_key, public_key_line, sign
from sandbox.slack import Workspace
from starter.signing import payload_for
from starter.start_options import sign_start_gate
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id

SLACK_USER = "U0SRELEAD1"  # the sandbox Slack's account the bench approver clicks as


def with_slack(state: Path, catalog: dict) -> None:
    """The bench approver's Slack account, the gateway as its attestor (a key made here, where
    the embedded stack looks for it) and the sandbox channel, where Slack approvals count."""
    folder = state / "identities"
    folder.mkdir(mode=0o700, exist_ok=True)
    key = folder / "slack-gateway.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(new_private_key())
    space = Workspace.default()
    for person in catalog["identities"]:
        if person["id"] == "bench-approver":
            person["slack"] = {"team": space.team_id, "user": SLACK_USER}
    catalog["attestors"] = [
        {
            "name": "slack-gateway",
            "public_key": public_key_line(key.read_bytes()),
            "identities": ["bench-approver"],
            "gates": ["approval"],
        }
    ]
    entry = catalog["default"]
    entry["channels"].append({"kind": "slack", "channel": next(iter(space.channels))})
    entry["approval"]["slack_approvals"] = {"approval": True}


async def slack_message(session: aiohttp.ClientSession, base: str, workflow_id: str) -> str:
    """The ts of the approval message whose buttons name `workflow_id`."""
    while True:
        async with session.get(f"{base}/ui/messages", params={"channel": "C0INCIDENT"}) as got:
            for message in await got.json():
                for block in message.get("blocks", []):
                    for element in block.get("elements", []) if block["type"] == "actions" else []:
                        if json.loads(element.get("value") or "{}").get("w") == workflow_id:
                            return message["ts"]
        await asyncio.sleep(0.02)


async def run(rollbacks: int, mode: str) -> dict:
    signed = mode in ("signed", "slack")
    latencies = []
    key, requester_key = new_private_key(), new_private_key()
    identities = (
        [
            {
                "id": "bench-approver",
                "display_name": "bench",
                "roles": ["approver"],
                "keys": [public_key_line(key)],
            },
            {
                "id": "bench",
                "display_name": "bench requester",
                "roles": ["requester"],
                "keys": [public_key_line(requester_key)],
            },
        ]
        if signed
        else None
    )
    keys = Path(tempfile.mkdtemp(prefix="modoru-bench-approval-"))
    (keys / "bench.key").write_bytes(requester_key)
    (keys / "bench.key").chmod(0o600)
    hook = with_slack if mode == "slack" else None
    with BenchStack(rollbacks, identities=identities, catalog_hook=hook) as bench:
        wait_for_worker()
        client = await bench.client()
        session = aiohttp.ClientSession()
        slack_base = bench.endpoints.get("slack_page", "").split("/?")[0]
        handles = []
        for i in range(rollbacks):
            name = f"svc-{i:04d}"
            request = RollbackRequest(
                deployment=name,
                severity=Severity.INVESTIGATE,
                reason="error rate over 10%",
                requested_by="bench",
            )
            handle = await client.start_workflow(
                DeploymentRollbackWorkflow.run,
                request,
                id=rollback_workflow_id("default", name),
                task_queue=bench.settings.task_queue,
            )
            if signed:  # the requester signs the run's start gate, as `--key` does
                await sign_start_gate(
                    client,
                    handle.id,
                    request,
                    keys / "bench.key",
                    task_queue=bench.settings.task_queue,
                    quiet=True,
                )
            while (
                status := await handle.query(DeploymentRollbackWorkflow.status)
            ).phase != Phase.AWAITING_APPROVAL:
                await asyncio.sleep(0.02)
            signal = ApprovalSignal(by="bench-approver")
            if signed:  # signed before the clock starts, as a person signs before sending
                text = payload_for(status.pending, "approve", "bench-approver").text()
                signal.signed = SignedDecision(payload=text, signature=sign(text, key))
            if mode == "slack":
                ts = await slack_message(session, slack_base, handle.id)
                form = {
                    "as": SLACK_USER,
                    "channel": "C0INCIDENT",
                    "ts": ts,
                    "action_id": "modoru.approve",
                }
                _, mark = bench.requests_since(0)
                sent = time.time()
                async with session.post(
                    f"{slack_base}/ui/click", data=form, allow_redirects=False
                ) as clicked:
                    assert clicked.status == 303, await clicked.text()
            else:
                _, mark = bench.requests_since(0)
                sent = time.time()
                await handle.signal(DeploymentRollbackWorkflow.approve, signal)
            patched = None
            while patched is None:
                entries, _ = bench.requests_since(mark)
                patched = next(
                    (
                        e["time"]
                        for e in entries
                        if e["resource"] == "deployments"
                        and e["verb"] == "patch"
                        and e["name"] == name
                    ),
                    None,
                )
                await asyncio.sleep(0.01)
            latencies.append((patched - sent) * 1000)
            handles.append(handle)
        # Verification (a minute of logs to judge, among the rest) is not what is
        # measured here: the rollbacks finish together, after the last approval.
        await asyncio.gather(*(h.result() for h in handles))
        await session.close()
    return {
        "rollbacks": rollbacks,
        "signal_to_undo_p50_ms": percentile(latencies, 50),
        "signal_to_undo_p99_ms": percentile(latencies, 99),
        "signal_to_undo_max_ms": max(latencies),
        "target_p99_under_500_ms": percentile(latencies, 99) < 500,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollbacks", type=int, default=30)
    parser.add_argument("--no-slack", action="store_true", help="leave out the Slack click")
    args = parser.parse_args()
    if args.rollbacks < 2:
        parser.error("--rollbacks must be at least 2")
    plain = asyncio.run(run(args.rollbacks, "names"))
    signed = asyncio.run(run(args.rollbacks, "signed"))
    slack = None if args.no_slack else asyncio.run(run(args.rollbacks, "slack"))
    print_machine()
    rows = [("names", plain), ("signed", signed), *([("slack", slack)] if slack else [])]
    for label, result in rows:
        what = "Slack click" if label == "slack" else "approve signal"
        print(
            f"{label:>6}: {what} → undo PATCH over {result['rollbacks']} rollbacks: "
            f"p50 {result['signal_to_undo_p50_ms']:.0f} ms, p99 "
            f"{result['signal_to_undo_p99_ms']:.0f} ms, max {result['signal_to_undo_max_ms']:.0f} "
            "ms"
        )
    ratio = signed["signal_to_undo_p50_ms"] / plain["signal_to_undo_p50_ms"]
    print(
        f"signed / names (p50): {ratio:.2f}; target p99 < 500 ms: "
        f"{'met' if signed['target_p99_under_500_ms'] else 'not met'} (signed)"
    )
    figures = {"names": plain, "signed": signed, "signed_over_names_p50": ratio}
    if slack:
        figures["slack"] = slack
        figures["slack_over_signed_p50"] = (
            slack["signal_to_undo_p50_ms"] / signed["signal_to_undo_p50_ms"]
        )
        print(f"slack / signed (p50): {figures['slack_over_signed_p50']:.2f}")
    print_json_line("approval", figures)


if __name__ == "__main__":
    main()
