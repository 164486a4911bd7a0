"""The runbook's rollback checklist, in its order."""

from __future__ import annotations

from .models import ChecklistItem

ITEMS: list[tuple[str, str, str]] = [
    # key, Japanese (the runbook's words), English
    ("decide", "ロールバックの必要性を判断", "Decide that a rollback is needed"),
    ("target", "ロールバック先のリビジョンを特定", "Identify the target revision"),
    ("backup", "バックアップ状態確認", "Confirm a backup of the current state"),
    ("notify_start", "関係者に通知", "Notify the people involved"),
    ("history", "デプロイ履歴確認", "Check the deployment history"),
    ("undo", "ロールバックコマンド実行", "Run the rollback"),
    ("rollout", "ロールアウト完了確認", "Confirm the rollout finished"),
    ("pods", "Pod状態確認", "Check the pods"),
    ("health", "ヘルスチェック成功", "Health check passes"),
    ("api", "API動作確認", "API check passes"),
    ("notify_done", "関係者に完了通知", "Tell the people involved it is done"),
    ("rca", "原因調査開始（24時間以内）", "Start the root-cause analysis (within 24 h)"),
    ("postmortem", "ポストモーテム作成（48時間以内）", "Write the postmortem (within 48 h)"),
]


def new_checklist(language: str) -> list[ChecklistItem]:
    index = 1 if language == "ja" else 2
    return [ChecklistItem(key=item[0], title=item[index]) for item in ITEMS]
