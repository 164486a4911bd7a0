"""The README's first command ends in a verified rollback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from temporalio.client import WorkflowHistory

from tests.integration.test_incident import check_draft_against_history

pytestmark = pytest.mark.integration


def test_modoru_demo_rolls_back_and_verifies_and_stays_up_until_ctrl_c(tmp_path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "starter.cli",
            "demo",
            "--stay",
            "--state-dir",
            str(tmp_path / "demo"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while not any("Ctrl-C" in line for line in lines[-3:]):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)[-3000:] + proc.stderr.read()
            assert time.monotonic() < deadline, "the demo never said it stays up"
            lines.append(line)
        link = next(
            line.split("Web UI: ", 1)[1].split()[0]
            for line in lines
            if line.startswith("the rollback in the Web UI: ")
        )
        # The link the demo ends with answers while the stack stays up.
        with urllib.request.urlopen(link, timeout=10) as page:
            assert page.status == 200
        proc.send_signal(signal.SIGINT)
        rest, errors = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, errors[-3000:]
    stdout = "".join(lines) + rest
    with pytest.raises(urllib.error.URLError):  # Ctrl-C stopped the stack
        urllib.request.urlopen(link, timeout=5)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, errors)
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


def test_without_stay_the_demo_says_its_stack_is_gone_and_how_to_keep_it(
    tmp_path, monkeypatch, capsys
) -> None:
    from starter import demo

    stopped: list[bool] = []

    class Stack:
        web_ui = "http://127.0.0.1:1"

        def __init__(self, **_: object) -> None:
            pass

        def start(self) -> None:
            pass

        def stop(self) -> None:
            stopped.append(True)

    async def story(stack) -> int:
        return 0

    monkeypatch.setattr(demo, "EmbeddedStack", Stack)
    monkeypatch.setattr(demo, "story", story)
    monkeypatch.setattr(demo.console, "width", 200)
    assert demo.run_demo(tmp_path) == 0
    out = capsys.readouterr().out
    assert stopped == [True]
    assert "no longer answer" in out and "modoru demo --stay" in out
