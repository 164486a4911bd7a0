"""Every committed history must replay on today's workflow code: a change that
breaks one needs `workflow.patched()` (or a new recording, if it is intended
and no such workflow can be running anywhere)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker.main import WORKFLOW_RUNNER, WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_is_a_history_for_each_outcome() -> None:
    names = {p.stem for p in HISTORIES}
    assert {
        "completed_immediate",
        "completed_immediate_undo_sooner",
        "completed_immediate_indexed",
        "completed_immediate_indexed_changes_only",
        "completed_after_approval",
        "completed_with_slack_card",
        "rejected",
        "rejected_before_gate",
        "escalated",
        "refused_missing_revision",
        "already_at_target",
        "verification_failed",
        "guard_rolled_back",
        "guard_continued_as_new",
        "guard_stopped",
        "guard_window_over",
        "migration_completed",
        "migration_rejected",
        "migration_refused_no_backup",
        "migration_failed_down",
        "migration_verification_failed",
        "pitr_switched",
        "pitr_check_failed",
        "pitr_switched_back",
        "pitr_refused",
    } <= names
    assert {
        "redeploy_completed",
        "redeploy_refused_absent_tag",
        "redeploy_rejected",
        "redeploy_run_failed",
        "restore_completed",
        "restore_refused",
        "restore_pull_failed",
        "troubleshoot_deleted",
        "troubleshoot_restarted",
    } <= names
    assert {"forward_fix_recovered", "forward_fix_no_hotfix"} <= names
    assert {
        "guard_rolled_back_in_incident",
        "incident_closed",
        "incident_deadlines_missed",
        "incident_nothing_changed",
    } <= names
    assert "signed_start_then_approval" in names  # signed mode: the start gate, then approval


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    replayer = Replayer(
        workflows=WORKFLOWS,  # the worker's own list, read from runbook/procedures.py
        data_converter=pydantic_data_converter,
        workflow_runner=WORKFLOW_RUNNER,  # the worker's own sandbox (signatures pass through)
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
