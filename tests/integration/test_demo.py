"""The README's first command ends in a verified rollback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from temporalio.client import WorkflowHistory

from tests.integration.test_incident import check_draft_against_history

pytestmark = pytest.mark.integration


def test_modoru_demo_rolls_back_and_verifies(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "starter.cli", "demo", "--state-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rolled back and verified" in result.stdout
    assert "error ratio" in result.stdout and "rolled_back" in result.stdout
    assert (
        "immediate" in result.stdout and "evidence" in result.stdout
    )  # the guard's verdict, shown in the rollback's status
    assert "check error_ratio" in result.stdout and "check alerts" in result.stdout
    notices = (tmp_path / "demo" / "notifications.jsonl").read_text(encoding="utf-8")
    assert "【ロールバック開始】" in notices and "【ロールバック完了・復旧】" in notices
    # The demo's incident: its postmortem draft, printed and saved, has the rollback's real
    # timeline.
    draft = (tmp_path / "demo" / "postmortem-draft.md").read_text(encoding="utf-8")
    assert "## 3. タイムライン (JST)" in draft and "ポストモーテム" in result.stdout
    history = WorkflowHistory.from_json(
        "rollback", (tmp_path / "demo" / "rollback-history.json").read_text(encoding="utf-8")
    )
    check_draft_against_history(draft, history)
    assert "承認不要（ポリシー）" in draft and "release guard" in draft
