"""Notice texts for an incident's follow-ups and confirmations, in the style of
runbook/notices.py (Japanese by default, times in JST)."""

from __future__ import annotations

import datetime as dt

from .incident_models import CONFIRM_TITLES, FOLLOW_UP_TITLES
from .notices import _when


def _title(table: dict[str, tuple[str, str]], key: str, language: str) -> str:
    ja, en = table[key]
    return ja if language == "ja" else en


def follow_up_notice(
    language: str, *, point: str, key: str, incident_id: str, service: str, due_at: dt.datetime
) -> tuple[str, str]:
    """`point` half_time: a reminder; deadline: an escalation (the deadline passed without a
    record)."""
    what = _title(FOLLOW_UP_TITLES, key, language)
    command = {
        "rca": "rca ID --summary ... --link ...",
        "postmortem": "postmortem ID --link ...",
        "prevention": "prevention ID --summary ...",
    }[key]
    command = "modoru incident " + command.replace("ID", incident_id)
    if language == "ja":
        label = (
            "リマインド: 期限の半分が経過" if point == "half_time" else "エスカレーション: 期限超過"
        )
        return f"【{label}】{what}", (
            f"【{label}】\n\nインシデント: {incident_id}\n対象: {service}\n項目: {what}\n"
            f"期限: {_when(due_at)}\n記録: {command}"
        )
    label = (
        "Reminder: half the time has passed"
        if point == "half_time"
        else "Escalation: deadline missed"
    )
    return f"[{label}] {what}", (
        f"[{label}]\n\nIncident: {incident_id}\nService: {service}\nItem: {what}\n"
        f"Due: {_when(due_at)}\nRecord: {command}"
    )


def confirmation_reminder(
    language: str, *, incident_id: str, target: str, service: str, awaiting: list[str]
) -> tuple[str, str]:
    items = "\n".join(
        f"- {_title(CONFIRM_TITLES, item, language)} (--item {item})" for item in awaiting
    )
    if language == "ja":
        return "【確認依頼】ロールバック後の確認", (
            f"【確認依頼】\n\nインシデント: {incident_id}\n"
            f"ロールバック: {target}（自動確認は成功）\n対象: {service}\n"
            f"未確認:\n{items}\n記録: modoru confirm {target} --item <項目> --by <名前>"
        )
    return "[Confirmation needed] after the rollback", (
        f"[Confirmation needed]\n\nIncident: {incident_id}\n"
        f"Rollback: {target} (automatic checks passed)\nService: {service}\n"
        f"Awaiting:\n{items}\nRecord: modoru confirm {target} --item <item> --by <name>"
    )


def closed_notice(
    language: str, *, incident_id: str, service: str, closed_at: dt.datetime
) -> tuple[str, str]:
    if language == "ja":
        return "【インシデント完了】", (
            f"【インシデント完了】\n\nインシデント: {incident_id}\n対象: {service}\n"
            f"完了時刻: {_when(closed_at)}\n"
            "原因調査・ポストモーテム・再発防止策の記録がそろいました。"
        )
    return "[Incident closed]", (
        f"[Incident closed]\n\nIncident: {incident_id}\nService: {service}\n"
        f"Closed: {_when(closed_at)}\n"
        "The root cause, the postmortem and the prevention measures are recorded."
    )
