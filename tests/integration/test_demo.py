"""The README's first command ends in a verified rollback."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_modoru_demo_rolls_back_and_verifies(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "starter.cli", "demo", "--state-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rolled back and verified" in result.stdout
    assert "error ratio" in result.stdout and "rolled_back" in result.stdout
    assert "immediate" in result.stdout and "evidence" in result.stdout  # the guard's verdict, shown in the rollback's status
    assert "check error_ratio" in result.stdout and "check alerts" in result.stdout
    notices = (tmp_path / "demo" / "notifications.jsonl").read_text(encoding="utf-8")
    assert "【ロールバック開始】" in notices and "【ロールバック完了・復旧】" in notices
