"""The README's first command ends in a verified rollback, which the Temporal Web UI shows
(the README's screenshot is taken here)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from tests.integration.test_incident import check_draft_against_history
from tests.integration.test_web_ui_codec import CHROMIUM, FLAGS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
README_SCREENSHOT = ROOT / "docs" / "images" / "rollback-timeline.png"
# What the rollback's timeline shows once it completed: its id and state, then its steps.
TIMELINE_TEXTS = [
    "COMPLETED",
    "rollback-default-tekutoko-api",
    "k8s.plan_rollback",
    "k8s.backup_deployment",
    "k8s.rollout_undo",
    "k8s.wait_rollout",
    "verify.service",
    "notify.send",
]


def screenshot_the_rollback(link: str, path: Path) -> str:
    """Open the rollback's page in the Web UI in headless Chromium, wait for its timeline to
    show the undo, save a PNG of the page and return the page's text."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1200})
            page.goto(link)
            page.get_by_text("k8s.rollout_undo").first.wait_for(timeout=60_000)
            page.get_by_text("verify.service").first.wait_for(timeout=30_000)
            page.wait_for_timeout(1_000)  # the timeline's bars finish drawing
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path))
            return page.inner_text("body")
        finally:
            browser.close()


def check_the_web_ui_shows_the_rollback(link: str, tmp_path: Path) -> None:
    """With MODORU_WRITE_SCREENSHOT=1 the PNG replaces the README's; otherwise it goes to the
    test's directory, so the check runs without touching the tree."""
    write = os.environ.get("MODORU_WRITE_SCREENSHOT") == "1"
    if importlib.util.find_spec("playwright") is None or not shutil.which(CHROMIUM):
        assert not write, "MODORU_WRITE_SCREENSHOT=1 needs playwright and chromium"
        warnings.warn("chromium or playwright missing: the Web UI was not looked at", stacklevel=2)
        return
    path = README_SCREENSHOT if write else tmp_path / "rollback-timeline.png"
    text = screenshot_the_rollback(link, path)
    missing = [expected for expected in TIMELINE_TEXTS if expected not in text]
    assert not missing, f"the Web UI's page lacks {missing}: {text[:2000]}"
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")) == (
        1440,
        1200,
    )


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
        # The link the demo ends with answers while the stack stays up, and shows the rollback.
        with urllib.request.urlopen(link, timeout=10) as page:
            assert page.status == 200
        check_the_web_ui_shows_the_rollback(link, tmp_path)
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
