"""Approval latency: from the approve signal leaving the CLI's client to the
undo PATCH arriving at the sandbox, with plain-name approvals and with signed
ones (checked by the workflow, and again by the undo activity), in one run.

    python -m bench.approval [--rollbacks 30]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import print_json_line, print_machine
from bench.harness import BenchStack, percentile, wait_for_worker
from runbook.decisions import SignedDecision
from runbook.models import ApprovalSignal, Phase, RollbackRequest, Severity
from runbook.signatures import new_private_key, public_key_line, sign
from starter.signing import payload_for
from starter.start_options import sign_start_gate
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id


async def run(rollbacks: int, signed: bool) -> dict:
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
    with BenchStack(rollbacks, identities=identities) as bench:
        wait_for_worker()
        client = await bench.client()
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
    args = parser.parse_args()
    if args.rollbacks < 2:
        parser.error("--rollbacks must be at least 2")
    plain = asyncio.run(run(args.rollbacks, signed=False))
    signed = asyncio.run(run(args.rollbacks, signed=True))
    print_machine()
    for label, result in (("names", plain), ("signed", signed)):
        print(
            f"{label:>6}: approve signal → undo PATCH over {result['rollbacks']} rollbacks: "
            f"p50 {result['signal_to_undo_p50_ms']:.0f} ms, p99 "
            f"{result['signal_to_undo_p99_ms']:.0f} ms, max {result['signal_to_undo_max_ms']:.0f} "
            "ms"
        )
    ratio = signed["signal_to_undo_p50_ms"] / plain["signal_to_undo_p50_ms"]
    print(
        f"signed / names (p50): {ratio:.2f}; target p99 < 500 ms: "
        f"{'met' if signed['target_p99_under_500_ms'] else 'not met'} (signed)"
    )
    print_json_line("approval", {"names": plain, "signed": signed, "signed_over_names_p50": ratio})


if __name__ == "__main__":
    main()
