"""Releases at the real clock, on `modoru up --scenario tekutoko-release` (1.2.0 live and
healthy): the release guard started with `modoru guard start` catches 1.3.0 and its
rollback is verified with every metric check judged; and a rollback onto a revision that
is still failing (1.3.1-flaky, about 15% errors) is not verified: the error ratio is
judged on real data, and fails."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.realtime.conftest import (
    REGISTRY,
    RealtimeStack,
    assert_judged_on_real_data,
    assert_verified_on_the_first_whole_minute,
    figures,
    last_json,
    parse_time,
    realtime_stack,
    record,
)

pytestmark = pytest.mark.realtime

GUARD_ID = "guard-default-tekutoko-api"
ROLLBACK_ID = "rollback-default-tekutoko-api"
GUARD_ENDED = {"finished", "rolled_back", "rollback_failed", "stopped", "failed"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[RealtimeStack]:
    with realtime_stack(tmp_path_factory.mktemp("release"), "tekutoko-release") as running:
        yield running


def test_the_guard_rolls_back_1_3_0_and_the_rollback_is_verified_on_judged_data(
    stack: RealtimeStack,
) -> None:
    if stack.live_image() != f"{REGISTRY}:1.2.0":
        stack.release("1.2.0")
    # the guard's baseline is a whole minute of the healthy release: wait until one is readable
    stack.until_first_readable_minute()
    guard = stack.cli_background(
        "guard",
        "start",
        "--deployment",
        "tekutoko-api",
        "--for",
        "30m",
        "--interval",
        "5s",
        "--language",
        "en",
        "--wait",
        "--json",
    )
    try:
        watching = stack.wait_phase(GUARD_ID, {"watching"}, timeout=120, ended=GUARD_ENDED)
        assert watching["baseline"], watching
        released = stack.release("1.3.0")
        out, err = guard.communicate(timeout=900)
    except BaseException:
        guard.kill()
        raise
    assert guard.returncode == 0, out[-3000:] + err[-3000:]
    ended = last_json(out)
    assert ended["phase"] == "rolled_back", ended.get("message")
    assert ended["rollback_severity"] == "immediate", ended
    assert ended["rollback_workflow_id"] == ROLLBACK_ID, ended
    status = stack.status(ROLLBACK_ID)
    assert status, f"no status of {ROLLBACK_ID}"
    found = figures(status)
    detect = parse_time(found["undo_at"]).timestamp() - released if found["undo_at"] else None
    record("guard", detect_seconds=detect and round(detect, 1), **found)
    assert status["phase"] == "completed", status.get("message")
    assert status["image_diff"] == [f"{REGISTRY}:1.3.0 -> {REGISTRY}:1.2.0"], status["image_diff"]
    assert stack.live_image() == f"{REGISTRY}:1.2.0"
    assert_judged_on_real_data(status)
    assert_verified_on_the_first_whole_minute(status)


def test_a_rollback_onto_a_still_failing_revision_is_not_verified(stack: RealtimeStack) -> None:
    stack.release("1.3.1-flaky")  # about 15% of calls fail
    stack.release("1.3.0")  # its previous revision is now 1.3.1-flaky
    done = stack.immediate_rollback()
    status = last_json(done.stdout) if done.stdout.strip() else stack.status(ROLLBACK_ID)
    assert status, done.stderr[-3000:]
    checks = {c["name"]: c for c in (status.get("verification") or {}).get("checks", [])}
    error_ratio = checks.get("error_ratio", {})
    record("still-failing", error_ratio=error_ratio.get("detail", ""), **figures(status))
    assert status["image_diff"] == [f"{REGISTRY}:1.3.0 -> {REGISTRY}:1.3.1-flaky"], status[
        "image_diff"
    ]
    assert status["phase"] == "failed", status.get("message")
    assert done.returncode != 0
    assert stack.live_image() == f"{REGISTRY}:1.3.1-flaky"  # undone, but not recovered
    assert error_ratio.get("judged") and not error_ratio.get("ok"), error_ratio
    assert not error_ratio.get("unread") and not error_ratio.get("pending"), error_ratio
    ratio = re.search(r"error ratio ([\d.]+)% over (\d+) requests", error_ratio["detail"])
    assert ratio and 5 <= float(ratio[1]) <= 30, error_ratio  # 1.3.1-flaky's ~15%, measured
    assert "error_ratio" in status["message"], status["message"]
    # judged on the first whole minute after the rollout, not before it was readable
    assert_verified_on_the_first_whole_minute(status)
