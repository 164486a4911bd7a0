"""The forward fix's announcements, in the runbook's voice (Japanese by
default, English available): what broke and why rolling back is impossible,
a reminder while the hotfix is being built, and the recovery or the failure
with the error rate before and after."""

from __future__ import annotations

import datetime as dt

from .log_groups import ErrorGroup
from .notices import _when


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _top(errors: list[ErrorGroup], count: int = 3) -> str:
    return "\n".join(f"- {g.count}x ({len(g.pods)} pod(s)) {g.signature}" for g in errors[:count])


def start(
    language: str,
    *,
    deployment: str,
    detected_at: dt.datetime,
    reason: str,
    errors: list[ErrorGroup],
    error_ratio: float | None,
) -> tuple[str, str]:
    top = _top(errors)
    if language == "ja":
        return "【フォワードフィックス開始】", (
            f"【フォワードフィックス開始】\n\n対象: {deployment}\n発生時刻: {_when(detected_at)}\n"
            f"ロールバック不可の理由: {reason}\n現在のエラー率: {_ratio(error_ratio)}\n"
            + (f"ログの主なエラー:\n{top}\n" if top else "ログにエラー行はありません\n")
            + "\nホットフィックスを作成し、ステージングで検証してから緊急デプロイします。"
        )
    return "[Forward fix started]", (
        f"[Forward fix started]\n\nTarget: {deployment}\nDetected: {_when(detected_at)}\n"
        f"Why rolling back is impossible: {reason}\nError ratio now: {_ratio(error_ratio)}\n"
        + (f"Most frequent errors in the logs:\n{top}\n" if top else "No error lines in the logs\n")
        + "\nA hotfix is built, verified on staging, then deployed as an emergency release."
    )


def waiting(
    language: str, *, deployment: str, since: dt.datetime, workflow_id: str
) -> tuple[str, str]:
    if language == "ja":
        return "【フォワードフィックス: ホットフィックス待ち】", (
            "【フォワードフィックス: ホットフィックス待ち】\n\n"
            f"対象: {deployment}\n開始: {_when(since)}\n"
            "ステージング検証済みのタグを登録してください: "
            f"modoru forward-fix hotfix {workflow_id} --branch ... --tag ... --staging-verified "
            "--by ..."
        )
    return "[Forward fix: waiting for the hotfix]", (
        f"[Forward fix: waiting for the hotfix]\n\nTarget: {deployment}\nStarted: {_when(since)}\n"
        f"Record the staging-verified tag: modoru forward-fix hotfix {workflow_id} --branch ... "
        "--tag ... --staging-verified --by ..."
    )


def recovered(
    language: str,
    *,
    deployment: str,
    at: dt.datetime,
    tag: str,
    branch: str,
    before: float | None,
    after: float | None,
) -> tuple[str, str]:
    if language == "ja":
        return "【フォワードフィックス完了・復旧】", (
            f"【フォワードフィックス完了・復旧】\n\n対象: {deployment}\n復旧時刻: {_when(at)}\n"
            f"対応内容: ホットフィックス {tag} (ブランチ {branch}) を緊急デプロイ\n"
            f"確認結果: エラー率 {_ratio(before)} → {_ratio(after)}\n\n"
            "24時間以内に原因分析、48時間以内にポストモーテムを作成してください。"
        )
    return "[Forward fix done, service recovered]", (
        f"[Forward fix done, service recovered]\n\nTarget: {deployment}\nRecovered: {_when(at)}\n"
        f"Action: emergency deploy of hotfix {tag} (branch {branch})\n"
        f"Result: error ratio {_ratio(before)} -> {_ratio(after)}\n\n"
        "Root cause within 24 h, postmortem within 48 h."
    )


def failed(language: str, *, deployment: str, at: dt.datetime, error: str) -> tuple[str, str]:
    if language == "ja":
        return (
            "【フォワードフィックス失敗】",
            f"【フォワードフィックス失敗】\n\n時刻: {_when(at)}\n対象: {deployment}\n"
            f"エラー: {error}\n",
        )
    return (
        "[Forward fix failed]",
        f"[Forward fix failed]\n\nTime: {_when(at)}\nTarget: {deployment}\nError: {error}\n",
    )
