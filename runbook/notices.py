"""Notice texts after the runbook's templates (Japanese by default), with
times in JST as the runbook writes them."""

from __future__ import annotations

import datetime as dt
from typing import Any

JST = dt.timezone(dt.timedelta(hours=9), "JST")


NEXT_ACTIONS = {
    "ja": "次のアクション:\n- 問題の原因調査（24時間以内）\n- ポストモーテム作成（48時間以内）",
    "en": "Next actions:\n- Investigate the cause (within 24 h)\n"
    "- Write the postmortem (within 48 h)",
}


def _notice(title: str, body: str) -> tuple[str, str]:
    """A notice's title, and its text: the title, a blank line, then the body."""
    return title, f"{title}\n\n{body}"


def _when(at: dt.datetime, with_date: bool = True) -> str:
    local = at.astimezone(JST)
    return local.strftime("%Y-%m-%d %H:%M JST" if with_date else "%H:%M JST")


def start_notice(
    language: str,
    *,
    detected_at: dt.datetime,
    impact: str,
    cause: str,
    action: str,
    expected_recovery: dt.datetime,
) -> tuple[str, str]:
    if language == "ja":
        return _notice(
            "【ロールバック開始】",
            f"発生時刻: {_when(detected_at)}\n"
            f"影響: {impact or '調査中'}\n"
            f"原因: {cause or 'デプロイに起因する問題'}\n"
            f"対応: {action}\n\n"
            f"予想復旧時刻: {_when(expected_recovery, with_date=False)}",
        )
    return _notice(
        "[Rollback started]",
        f"Occurred: {_when(detected_at)}\n"
        f"Impact: {impact or 'under investigation'}\n"
        f"Cause: {cause or 'a problem introduced by a deployment'}\n"
        f"Action: {action}\n\n"
        f"Expected recovery: {_when(expected_recovery, with_date=False)}",
    )


CHECK_LABELS: dict[str, tuple[str, str]] = {
    # check name -> (Japanese, English)
    "pods": ("Pod状態", "Pods"),
    "address": ("外部アドレス", "External address"),
    "health": ("ヘルスチェック", "Health check"),
    "ready": ("レディネスチェック", "Readiness check"),
    "api": ("API動作確認", "API check"),
    "error_ratio": ("エラー率", "Error rate"),
    "p95": ("レスポンス時間 (p95)", "Response time (p95)"),
    "alerts": ("アラート", "Alerts"),
    "metrics": ("メトリクス", "Metrics"),
    "cpu": ("CPU使用率", "CPU utilization"),
    "memory": ("メモリ使用率", "Memory utilization"),
    "connection_pool": ("DB接続プール", "Database connection pool"),
    "logs": ("ログのエラー", "Errors in the logs"),
}


def verification_summary(language: str, checks: list[Any]) -> str:
    """確認結果: what verification actually checked, one line each with its figures
    (`checks` are CheckResults: name, ok, detail). Skipped checks say so."""
    ja = language == "ja"
    passed = all(c.ok for c in checks)
    unjudged = [c for c in checks if not getattr(c, "judged", True)]
    head = (
        ("サービス正常稼働中" if passed else "一部の確認が未達")
        if ja
        else ("service healthy" if passed else "some checks not met")
    )
    if passed and unjudged:
        late = [c.name for c in unjudged if "no limit" not in c.detail]
        unlimited = [c.name for c in unjudged if "no limit" in c.detail]
        if late:
            head += (
                f"（期限内にデータが揃わず未判定: {', '.join(late)}）"
                if ja
                else f" (not judged: no data by verification's deadline for {', '.join(late)})"
            )
        if unlimited:
            head += (
                f"（リミット未設定のため未判定: {', '.join(unlimited)}）"
                if ja
                else f" (not judged: no limit set for {', '.join(unlimited)})"
            )
    if not checks:
        return head + ("（自動確認なし）" if ja else " (no automatic checks were made)")
    lines = []
    for c in checks:
        label = CHECK_LABELS.get(c.name, (c.name, c.name))[0 if ja else 1]
        mark = (
            ("スキップ" if ja else "skipped")
            if c.detail.startswith("skipped")
            else ("未判定" if ja else "NOT JUDGED")
            if not getattr(c, "judged", True)
            else ("OK" if c.ok else ("NG" if ja else "FAILED"))
        )
        lines.append(f"- {label} [{mark}]: {c.detail}")
    return head + "\n" + "\n".join(lines)


def complete_notice(
    language: str, *, recovered_at: dt.datetime, from_revision: int, to_revision: int, result: str
) -> tuple[str, str]:
    if language == "ja":
        return _notice(
            "【ロールバック完了・復旧】",
            f"復旧時刻: {_when(recovered_at)}\n"
            f"対応内容: リビジョン{from_revision}からリビジョン{to_revision}にロールバック\n"
            f"確認結果: {result}\n\n" + NEXT_ACTIONS["ja"],
        )
    return _notice(
        "[Rollback complete, service recovered]",
        f"Recovered: {_when(recovered_at)}\n"
        f"Action: rolled back from revision {from_revision} to revision {to_revision}\n"
        f"Result: {result}\n\n" + NEXT_ACTIONS["en"],
    )


def failure_notice(
    language: str, *, at: dt.datetime, deployment: str, error: str, problems: list[str]
) -> tuple[str, str]:
    details = "\n".join(f"- {p}" for p in problems)
    if language == "ja":
        return _notice(
            "【ロールバック失敗】",
            f"時刻: {_when(at)}\n対象: {deployment}\nエラー: {error}\n"
            + (f"診断:\n{details}\n" if details else "")
            + "\nトラブルシューティング手順に従い、"
            "必要ならフォワードフィックスを検討してください。",
        )
    return _notice(
        "[Rollback failed]",
        f"At: {_when(at)}\nTarget: {deployment}\nError: {error}\n"
        + (f"Diagnostics:\n{details}\n" if details else "")
        + "\nFollow the troubleshooting steps; consider a forward fix if a rollback is impossible.",
    )


def escalation_notice(
    language: str, *, point: str, deployment: str, deadline: dt.datetime, phase: str
) -> tuple[str, str]:
    if language == "ja":
        label = "期限の半分が経過" if point == "half_time" else "期限超過"
        return _notice(
            f"【エスカレーション: {label}】",
            f"対象: {deployment}\n期限: {_when(deadline)}\n現在のフェーズ: {phase}",
        )
    label = "half the deadline has passed" if point == "half_time" else "deadline missed"
    return _notice(
        f"[Escalation: {label}]",
        f"Target: {deployment}\nDeadline: {_when(deadline)}\nPhase: {phase}",
    )


def approval_needed_notice(
    language: str, *, deployment: str, workflow_id: str, approvers: list[str], deadline: dt.datetime
) -> tuple[str, str]:
    names = ", ".join(approvers)
    if language == "ja":
        return _notice(
            "【承認依頼】",
            f"対象: {deployment}\n承認者: {names}\n期限: {_when(deadline)}\n"
            f"承認: modoru approve {workflow_id} --by <名前>",
        )
    return _notice(
        "[Approval needed]",
        f"Target: {deployment}\nApprovers: {names}\n"
        f"Deadline: {_when(deadline)}\n"
        f"Approve: modoru approve {workflow_id} --by <name>",
    )


def rejected_notice(language: str, *, deployment: str, by: str, reason: str) -> tuple[str, str]:
    if language == "ja":
        return _notice(
            "【ロールバック中止】",
            f"対象: {deployment}\n却下: {by}\n理由: {reason}\n変更は行っていません。",
        )
    return _notice(
        "[Rollback rejected]",
        f"Target: {deployment}\nRejected by: {by}\nReason: {reason}\nNothing was changed.",
    )


def _version(v: int | None) -> str:
    return "nil" if v is None else str(v)


def migration_complete_notice(
    language: str,
    *,
    done_at: dt.datetime,
    service: str,
    from_version: int | None,
    to_version: int | None,
    result: str,
) -> tuple[str, str]:
    if language == "ja":
        return _notice(
            "【マイグレーションロールバック完了】",
            f"完了時刻: {_when(done_at)}\n対象: {service}\n"
            f"対応内容: スキーマをバージョン{_version(from_version)}から"
            f"バージョン{_version(to_version)}に戻しました\n"
            f"確認結果: {result}\n\n" + NEXT_ACTIONS["ja"],
        )
    return _notice(
        "[Migration rollback complete]",
        f"Done: {_when(done_at)}\nService: {service}\n"
        f"Action: schema rolled back from version {_version(from_version)} to "
        f"{_version(to_version)}\n"
        f"Result: {result}\n\n" + NEXT_ACTIONS["en"],
    )


def pitr_complete_notice(
    language: str,
    *,
    done_at: dt.datetime,
    service: str,
    source: str,
    clone: str,
    point_in_time: dt.datetime,
) -> tuple[str, str]:
    if language == "ja":
        return _notice(
            "【ポイントインタイムリカバリ完了】",
            f"完了時刻: {_when(done_at)}\n対象: {service}\n"
            f"対応内容: {source} を {_when(point_in_time)} 時点に復元した {clone} "
            f"に接続を切り替えました（{source} は調査のため保持）\n\n" + NEXT_ACTIONS["ja"],
        )
    return _notice(
        "[Point-in-time recovery complete]",
        f"Done: {_when(done_at)}\nService: {service}\n"
        f"Action: switched the app to {clone}, {source} as of {_when(point_in_time)} ({source} is "
        "kept as evidence)\n\n" + NEXT_ACTIONS["en"],
    )
