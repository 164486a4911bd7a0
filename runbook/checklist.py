"""The runbook's rollback checklist (ロールバックチェックリスト), all 16 items in
its order, and which verification checks give the evidence for which item."""

from __future__ import annotations

from .models import ChecklistItem, VerifyResult

ITEMS: list[tuple[str, str, str]] = [
    # key, Japanese (the runbook's words), English
    # 事前確認
    ("decide", "ロールバックの必要性を判断", "Decide that a rollback is needed"),
    ("target", "ロールバック先のリビジョンを特定", "Identify the target revision"),
    ("notify_start", "関係者に通知", "Notify the people involved"),
    ("backup", "バックアップ状態確認", "Confirm a backup of the current state"),
    # ロールバック実行
    ("history", "デプロイ履歴確認", "Check the deployment history"),
    ("undo", "ロールバックコマンド実行", "Run the rollback"),
    ("rollout", "ロールアウト完了確認", "Confirm the rollout finished"),
    ("pods", "Pod状態確認", "Check the pods"),
    # 動作確認
    ("health", "ヘルスチェック成功", "Health check passes"),
    ("api", "API動作確認", "API check passes"),
    ("error_rate", "エラー率確認", "Check the error rate"),
    ("monitoring", "モニタリング確認", "Check the monitoring"),
    # 事後対応
    ("notify_done", "関係者に完了通知", "Tell the people involved it is done"),
    ("rca", "原因調査開始（24時間以内）", "Start the root-cause analysis (within 24 h)"),
    ("postmortem", "ポストモーテム作成（48時間以内）", "Write the postmortem (within 48 h)"),
    ("prevention", "再発防止策立案", "Plan measures against a recurrence"),
]

# checklist item -> the verification checks that make it (all must have passed; any one present
# counts)
EVIDENCE: dict[str, tuple[str, ...]] = {
    "pods": ("pods",),
    "health": ("health", "ready"),
    "api": ("api",),
    "error_rate": ("error_ratio",),
    "monitoring": ("p95", "alerts", "cpu", "memory", "connection_pool", "logs"),
}


def new_checklist(language: str) -> list[ChecklistItem]:
    index = 1 if language == "ja" else 2
    return [ChecklistItem(key=item[0], title=item[index]) for item in ITEMS]


def verified_items(verification: VerifyResult) -> list[tuple[str, str]]:
    """(item, evidence) for each checklist item the verification's checks establish:
    every check behind it that was made passed. Skipped checks are named as such in
    the evidence and do not make an item on their own."""
    by_name = {c.name: c for c in verification.checks}
    found = []
    for key, names in EVIDENCE.items():
        made = [by_name[n] for n in names if n in by_name]
        real = [c for c in made if not c.detail.startswith("skipped") and c.judged]
        if real and all(c.ok for c in made):
            found.append((key, "; ".join(f"{c.name}: {c.detail}" for c in made)))
    return found
