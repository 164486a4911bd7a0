"""The runbook's method 1 at the real clock, through `modoru up`'s stack and the CLI:
on-call `immediate` rollbacks of 1.3.0, N in a row (MODORU_REALTIME_ROLLBACKS, default
3), each undo landing at a different second of the minute; then an `investigate`
rollback that waits for a signed approval. Each ends completed, verified with every
metric check judged on the first whole minute after its rollout."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.realtime.conftest import (
    REGISTRY,
    RealtimeStack,
    assert_judged_on_real_data,
    assert_verified_on_the_first_whole_minute,
    figures,
    last_json,
    realtime_stack,
    record,
    rollbacks_in_a_row,
)

pytestmark = pytest.mark.realtime

ROLLBACK_ID = "rollback-default-tekutoko-api"
N = rollbacks_in_a_row()
# The second of the minute each rollback is started at: spread over the whole minute.
TARGET_SECONDS = [(3 + 23 * i) % 60 for i in range(N)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[RealtimeStack]:
    with realtime_stack(tmp_path_factory.mktemp("rollbacks")) as running:
        yield running


def release_bad(stack: RealtimeStack) -> None:
    """1.3.0 live again (the scenario starts with it; later rounds release it again)."""
    if stack.live_image() != f"{REGISTRY}:1.3.0":
        stack.release("1.3.0")
    stack.wait_rollout()
    assert stack.live_image() == f"{REGISTRY}:1.3.0"


def sleep_until_second(second: int) -> None:
    now = time.time()
    wait = (second - now % 60) % 60
    time.sleep(wait)


@pytest.mark.parametrize("round_", range(N), ids=[f"at-{s:02d}s" for s in TARGET_SECONDS])
def test_an_immediate_rollback_is_verified_on_judged_data_wherever_the_undo_lands(
    stack: RealtimeStack, round_: int
) -> None:
    release_bad(stack)
    sleep_until_second(TARGET_SECONDS[round_])
    started = time.time()
    done = stack.immediate_rollback()
    status = last_json(done.stdout) if done.stdout.strip() else {}
    record(
        "rollback",
        round=round_ + 1,
        target_second=TARGET_SECONDS[round_],
        total_seconds=round(time.time() - started, 1),
        **figures(status),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert status["phase"] == "completed", status.get("message")
    assert status["image_diff"] == [f"{REGISTRY}:1.3.0 -> {REGISTRY}:1.2.0"], status["image_diff"]
    assert stack.live_image() == f"{REGISTRY}:1.2.0"
    assert_judged_on_real_data(status)
    assert_verified_on_the_first_whole_minute(status)


def test_an_investigate_rollback_waits_for_a_signed_approval_then_is_verified(
    stack: RealtimeStack,
) -> None:
    release_bad(stack)
    asked = time.time() - 1  # the earlier rollbacks of this stack ran under the same id
    following = stack.cli_background(
        "rollback",
        "start",
        "--deployment",
        "tekutoko-api",
        "--severity",
        "investigate",
        "--reason",
        "error rate 60% since 1.3.0",
        "--requested-by",
        "oncall",
        "--key",
        str(stack.key("oncall")),
        "--language",
        "en",
        "--wait",
        "--json",
    )
    try:
        waiting = stack.wait_phase(
            ROLLBACK_ID, {"awaiting_approval"}, timeout=120, started_after=asked
        )
        assert stack.live_image() == f"{REGISTRY}:1.3.0"  # nothing undone before the approval
        assert waiting["pending"] and waiting["pending"]["signed"], waiting["pending"]
        # the requester cannot approve their own change
        own = stack.cli("approve", ROLLBACK_ID, "--by", "oncall", "--key", str(stack.key("oncall")))
        assert stack.live_image() == f"{REGISTRY}:1.3.0", own.stdout + own.stderr
        approved = stack.cli(
            "approve",
            ROLLBACK_ID,
            "--by",
            "sre-lead",
            "--key",
            str(stack.key("sre-lead")),
            "--comment",
            "1.3.0 fails 60% of calls",
        )
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert "counted" in approved.stdout, approved.stdout
        out, err = following.communicate(timeout=600)
    except BaseException:
        following.kill()
        raise
    assert following.returncode == 0, out[-3000:] + err[-3000:]
    status = last_json(out)
    record("investigate", **figures(status))
    assert status["phase"] == "completed", status.get("message")
    assert "sre-lead" in status["approvals"] and "oncall" not in status["approvals"], status[
        "approvals"
    ]
    assert stack.live_image() == f"{REGISTRY}:1.2.0"
    assert_judged_on_real_data(status)
    assert_verified_on_the_first_whole_minute(status)
