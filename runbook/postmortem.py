"""The postmortem draft: Markdown after docs/POSTMORTEM_TEMPLATE.md, written
from an incident's own record (its changes' final statuses: timings, audit
with approvers, checklist, verification, evidence; its notices, confirmations
and follow-ups). Root cause and prevention are left empty for people. Pure:
the same record always gives the same text."""

from __future__ import annotations

import datetime as dt

from .incident_models import CONFIRM_TITLES, FOLLOW_UP_TITLES, IncidentStatus
from .models import RollbackStatus
from .notices import JST

WORDS = {
    "ja": {
        "title": "ポストモーテム（ドラフト）",
        "summary": "1. 概要",
        "impact": "2. 影響",
        "timeline": "3. タイムライン (JST)",
        "evidence": "4. 根拠",
        "checklist": "5. チェックリスト",
        "open": "6. 未完了のフォローアップ",
        "rca": "7. 根本原因",
        "prevention": "8. 再発防止策",
        "incident": "インシデント",
        "service": "対象",
        "detected": "検知",
        "reason": "事象",
        "changes": "対応",
        "none": "なし",
        "time": "時刻 (JST)",
        "event": "出来事",
        "decided": "ロールバックの判断",
        "approved": "承認",
        "approved_slack": "Slackで承認: {who}",
        "no_approval": "承認不要（ポリシー）",
        "notify_start": "開始通知",
        "undo": "ロールバック実行",
        "rollout": "ロールアウト完了（緩和）",
        "verified": "動作確認（自動）完了",
        "verify_failed": "動作確認失敗",
        "notify_done": "完了通知",
        "confirmed": "人による確認",
        "sla": "SLA",
        "met": "達成",
        "missed": "未達",
        "pending": "未確定",
        "deadline": "期限",
        "severity": "重大度",
        "impact_time": "影響時間（検知からロールアウト完了まで）",
        "guard": "メトリクス: 事前（ベースライン）と最悪時（リリースガードの観測）",
        "checks": "事後: 自動確認",
        "human": "人による確認",
        "awaiting": "未確認",
        "done": "完了",
        "due": "期限",
        "by": "記録者",
        "to_fill": "（人が記入）",
        "notice": "通知",
        "followup": "フォローアップ記録",
        "refused": "開始されず",
        "running": "実行中",
        "phase": "状態",
        "change_started": "開始",
        "measure": "対策",
        "owner": "担当",
        "rca_hint": "- デプロイで導入された変更の特定\n- エラーログの詳細分析\n- "
        "再現環境での問題再現",
    },
    "en": {
        "title": "Postmortem (draft)",
        "summary": "1. Summary",
        "impact": "2. Impact",
        "timeline": "3. Timeline (JST)",
        "evidence": "4. Evidence",
        "checklist": "5. Checklist",
        "open": "6. Open follow-ups",
        "rca": "7. Root cause",
        "prevention": "8. Prevention",
        "incident": "Incident",
        "service": "Service",
        "detected": "Detected",
        "reason": "What happened",
        "changes": "Changes",
        "none": "none",
        "time": "Time (JST)",
        "event": "Event",
        "decided": "Rollback decided",
        "approved": "Approved",
        "approved_slack": "Approved in Slack by {who}",
        "no_approval": "No approval needed (policy)",
        "notify_start": "Start notice",
        "undo": "Rollback run",
        "rollout": "Rollout done (mitigated)",
        "verified": "Verified (automatic checks)",
        "verify_failed": "Verification failed",
        "notify_done": "Completion notice",
        "confirmed": "Confirmed by a person",
        "sla": "SLA",
        "met": "met",
        "missed": "missed",
        "pending": "not settled",
        "deadline": "deadline",
        "severity": "Severity",
        "impact_time": "Time impacted (detection to rollout done)",
        "guard": "Metrics before (baseline) and at worst (what the release guard saw)",
        "checks": "After: automatic checks",
        "human": "Human confirmations",
        "awaiting": "awaiting",
        "done": "done",
        "due": "due",
        "by": "by",
        "to_fill": "(to be written by people)",
        "notice": "Notice",
        "followup": "Follow-up recorded",
        "refused": "not started",
        "running": "running",
        "phase": "phase",
        "change_started": "started",
        "measure": "Measure",
        "owner": "Owner",
        "rca_hint": "- Which change the deployment brought in\n- What the error logs say in "
        "detail\n- Reproduce it in another environment",
    },
}


def _jst(at: dt.datetime | None, with_date: bool = True) -> str:
    if at is None:
        return "-"
    return at.astimezone(JST).strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _done(status: RollbackStatus, key: str) -> dt.datetime | None:
    return next((item.done_at for item in status.checklist if item.key == key), None)


def rollback_events(status: RollbackStatus, language: str) -> list[tuple[dt.datetime, str]]:
    """The runbook's timeline of one deployment rollback, from its final status."""
    w = WORDS[language]
    name = status.workflow_id
    events: list[tuple[dt.datetime, str]] = [
        (status.detected_at, f"{w['detected']}: {status.reason}")
    ]
    decided = _done(status, "decide") or status.timings.get("started")
    if decided:
        events.append((decided, f"{w['decided']} ({status.severity.value}, {name})"))
    for entry in status.audit:
        if entry.action == "approve" and entry.counted:
            if entry.detail.startswith("approved in Slack by "):  # attested by the gateway
                events.append((entry.at, w["approved_slack"].format(who=entry.actor)))
            else:
                events.append((entry.at, f"{w['approved']}: {entry.actor}"))
        elif (
            entry.action == "approval"
            and entry.counted is None
            and "without approval" in entry.detail
        ):
            events.append((entry.at, f"{w['no_approval']}: {entry.detail}"))
    for key, label in (("notify_start", "notify_start"), ("undo", "undo")):
        at = _done(status, key)
        if at:
            events.append(
                (
                    at,
                    w[label]
                    + (
                        f" (revision {status.from_revision} → {status.to_revision})"
                        if key == "undo"
                        else ""
                    ),
                )
            )
    if "mitigated" in status.timings:
        events.append((status.timings["mitigated"], w["rollout"]))
    checked = [at for at in (_done(status, key) for key in ("pods", "health", "api")) if at]
    if (
        status.verification is not None
        and status.verification.ok
        and (checked or "completed" in status.timings)
    ):
        events.append((max(checked) if checked else status.timings["completed"], w["verified"]))
    elif "failed" in status.timings:
        events.append((status.timings["failed"], f"{w['verify_failed']}: {status.message}"))
    at = _done(status, "notify_done")
    if at:
        events.append((at, w["notify_done"]))
    return events


def timeline(status: IncidentStatus, language: str) -> list[tuple[dt.datetime, str]]:
    """Every event of the incident, in time order (stable for equal times)."""
    w = WORDS[language]
    events: list[tuple[dt.datetime, str]] = []
    for change in status.changes:
        if change.rollback is not None:
            events += rollback_events(change.rollback, language)
        else:
            events.append(
                (
                    change.requested_at,
                    f"{change.kind} {change.workflow_id}: "
                    f"{w['change_started'] if change.outcome != 'refused' else w['refused']}",
                )
            )
            if change.ended_at:
                events.append(
                    (
                        change.ended_at,
                        f"{change.kind} {change.workflow_id}: {change.phase} "
                        f"{change.message}".strip(),
                    )
                )
        for confirmation in change.confirmations:
            title = CONFIRM_TITLES[confirmation.item][0 if language == "ja" else 1]
            events.append((confirmation.at, f"{w['confirmed']}: {title} ({confirmation.by})"))
    for follow_up in status.follow_ups:
        if follow_up.done_at:
            title = FOLLOW_UP_TITLES[follow_up.key][0 if language == "ja" else 1]
            events.append((follow_up.done_at, f"{w['followup']}: {title} ({follow_up.by})"))
    if not any(change.rollback is not None for change in status.changes):
        events.insert(0, (status.detected_at, f"{w['detected']}: {status.reason}"))
    return sorted(set(events), key=lambda e: (e[0], events.index(e)))


def _sla(status: RollbackStatus, language: str) -> str:
    w = WORDS[language]
    verdict = (
        w["pending"] if status.sla_met is None else (w["met"] if status.sla_met else w["missed"])
    )
    return (
        f"{w['sla']} {verdict} ({w['severity']} {status.severity.value}, {w['deadline']} "
        f"{_jst(status.sla_deadline)} JST)"
    )


def _summary(status: IncidentStatus, w: dict[str, str]) -> list[str]:
    lines = [
        f"- {w['incident']}: `{status.incident_id}`",
        f"- {w['service']}: {status.namespace}/{status.service}",
        f"- {w['detected']}: {_jst(status.detected_at)} JST",
    ]
    if status.reason:
        lines.append(f"- {w['reason']}: {status.reason}")
    if not status.changes:
        lines.append(f"- {w['changes']}: {w['none']}")
    for change in status.changes:
        state = w["running"] if change.running else (change.phase or change.outcome)
        lines.append(
            f"- {w['changes']}: {change.kind} `{change.workflow_id}` ({w['phase']}: "
            f"{state}) {_cell(change.message or change.detail)}".rstrip()
        )
    return lines


def _impact(status: IncidentStatus, language: str) -> list[str]:
    w = WORDS[language]
    lines = []
    for change in status.changes:
        rollback = change.rollback
        if rollback is None:
            continue
        if rollback.evidence:
            lines.append(f"- {rollback.evidence[0]}")
        mitigated = rollback.timings.get("mitigated")
        if mitigated:
            minutes = (mitigated - rollback.detected_at).total_seconds() / 60
            lines.append(
                f"- {w['impact_time']}: {minutes:.1f} min ({_jst(rollback.detected_at, False)} – "
                f"{_jst(mitigated, False)} JST)"
            )
        lines.append(f"- {_sla(rollback, language)}")
    return lines or [f"- {w['to_fill']}"]


def _evidence(status: IncidentStatus, language: str) -> list[str]:
    w = WORDS[language]
    lines = []
    for change in status.changes:
        rollback = change.rollback
        if rollback is None:
            continue
        if rollback.evidence:
            lines += [f"**{w['guard']}** (`{change.workflow_id}`)", ""]
            lines += [f"- {_cell(e)}" for e in rollback.evidence] + [""]
        if rollback.verification is not None:
            lines += [
                f"**{w['checks']}** (`{change.workflow_id}`, {rollback.verification.attempts} "
                "attempt(s))",
                "",
            ]
            lines += [
                f"- {'✅' if c.ok else '❌'} {c.name}: {_cell(c.detail)}"
                for c in rollback.verification.checks
            ] + [""]
        if rollback.diagnostics is not None and rollback.diagnostics.problems:
            lines += [f"- {_cell(p)}" for p in rollback.diagnostics.problems] + [""]
        if change.kind == "rollback" and change.verified:
            lines += [f"**{w['human']}**", ""]
            for item in CONFIRM_TITLES:
                got = next((c for c in change.confirmations if c.item == item), None)
                title = CONFIRM_TITLES[item][0 if language == "ja" else 1]
                if got:
                    extra = "".join(f" — {x}" for x in (got.note, got.link) if x)
                    lines.append(f"- ✅ {title}: {got.by}, {_jst(got.at)} JST{_cell(extra)}")
                else:
                    lines.append(f"- ⏳ {title}: {w['awaiting']}")
    return lines or [f"- {w['none']}"]


def _checklist(status: IncidentStatus, language: str) -> list[str]:
    w = WORDS[language]
    lines = []
    for change in status.changes:
        if change.rollback is None:
            continue
        lines.append(f"`{change.workflow_id}`")
        lines.append("")
        for item in change.rollback.checklist:
            mark = "x" if item.done_at else " "
            when = f" — {_jst(item.done_at)} JST" if item.done_at else ""
            evidence = f": {_cell(item.evidence)}" if item.evidence else ""
            lines.append(f"- [{mark}] {item.title}{when}{evidence}")
        lines.append("")
    return lines or [f"- {w['none']}"]


def _open(status: IncidentStatus, language: str) -> list[str]:
    w = WORDS[language]
    lines = []
    for follow_up in status.follow_ups:
        title = FOLLOW_UP_TITLES[follow_up.key][0 if language == "ja" else 1]
        if follow_up.done_at:
            link = f" {follow_up.link}" if follow_up.link else ""
            lines.append(
                f"- [x] {title}: {w['done']} {_jst(follow_up.done_at)} JST ({w['by']} "
                f"{follow_up.by}){link}"
            )
        else:
            lines.append(f"- [ ] {title}: {w['due']} {_jst(follow_up.due_at)} JST")
    for change in status.changes:
        for item in change.awaiting:
            title = CONFIRM_TITLES[item][0 if language == "ja" else 1]
            lines.append(
                f"- [ ] {w['human']}: {title} (`modoru confirm {change.workflow_id} --item {item}`)"
            )
        if change.running:
            lines.append(f"- [ ] {change.kind} `{change.workflow_id}`: {w['running']}")
    return lines or [f"- {w['none']}"]


def render(status: IncidentStatus, language: str = "ja") -> str:
    """The draft in `language` (ja or en), following docs/POSTMORTEM_TEMPLATE.md."""
    w = WORDS["en" if language == "en" else "ja"]
    language = "en" if language == "en" else "ja"
    rca = next((f for f in status.follow_ups if f.key == "rca"), None)
    prevention = next((f for f in status.follow_ups if f.key == "prevention"), None)
    out = [f"# {w['title']}: {status.service} {_jst(status.detected_at)[:10]}", ""]
    out += [f"## {w['summary']}", "", *_summary(status, w), ""]
    out += [f"## {w['impact']}", "", *_impact(status, language), ""]
    out += [f"## {w['timeline']}", "", f"| {w['time']} | {w['event']} |", "|---|---|"]
    out += [f"| {_jst(at)} | {_cell(text)} |" for at, text in timeline(status, language)]
    out += [""]
    if status.notices:
        out += (
            [f"**{w['notice']}**", ""]
            + [
                f"- {_jst(n.at)} JST: {_cell(n.subject)} ({', '.join(n.delivered) or '-'})"
                for n in status.notices
            ]
            + [""]
        )
    out += [f"## {w['evidence']}", "", *_evidence(status, language), ""]
    out += [f"## {w['checklist']}", "", *_checklist(status, language), ""]
    out += [f"## {w['open']}", "", *_open(status, language), ""]
    out += [f"## {w['rca']} {w['to_fill']}", ""]
    if rca is not None and (rca.summary or rca.link):
        out += [f"> {_cell(rca.summary)} {rca.link}".rstrip(), ""]
    out += [w["rca_hint"], ""]
    out += [f"## {w['prevention']} {w['to_fill']}", ""]
    if prevention is not None and prevention.summary:
        out += [f"> {_cell(prevention.summary)}", ""]
    out += [f"| {w['measure']} | {w['owner']} | {w['due']} |", "|---|---|---|", "| | | |", ""]
    return "\n".join(out)
