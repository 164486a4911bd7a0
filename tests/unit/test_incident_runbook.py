"""The incident's pure parts: ids, the follow-up and confirmation rules, the
catalog's incident settings and the postmortem draft."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from runbook import incident_notices
from runbook.catalog import ServiceEntry
from runbook.checklist import new_checklist
from runbook.incident_models import (
    ChangeRecord,
    ChangeSignal,
    Confirmation,
    FollowUp,
    IncidentStatus,
    incident_workflow_id,
)
from runbook.models import (
    AuditEntry,
    CheckResult,
    Phase,
    RollbackRequest,
    RollbackStatus,
    Severity,
    VerifyResult,
)
from runbook.postmortem import render, timeline

T0 = dt.datetime(2026, 11, 29, 3, 12, 30, tzinfo=dt.UTC)  # 12:12:30 JST


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def rollback_status(*, mitigated_after: float = 150, verified: bool = True) -> RollbackStatus:
    status = RollbackStatus(
        workflow_id="rollback-default-tekutoko-api",
        phase=Phase.COMPLETED,
        namespace="default",
        deployment="tekutoko-api",
        severity=Severity.INVESTIGATE,
        requested_by="oncall",
        reason="error rate 60%",
        from_revision=3,
        to_revision=2,
        detected_at=T0,
        sla_deadline=at(900),
        sla_met=mitigated_after <= 900,
        checklist=new_checklist("ja"),
        timings={
            "started": at(10),
            "mitigated": at(mitigated_after),
            "completed": at(mitigated_after + 40),
        },
        evidence=["error ratio 60.0% > 50%"],
        audit=[
            AuditEntry(
                at=at(60), actor="intern", action="approve", counted=False, detail="not an approver"
            ),
            AuditEntry(
                at=at(70),
                actor="sre-lead",
                action="approve",
                counted=True,
                detail="approved by sre-lead",
            ),
        ],
        verification=VerifyResult(
            ok=verified,
            attempts=2,
            checks=[CheckResult(name="error_ratio", ok=True, detail="0.4% < 1%")],
        ),
    )
    times = {
        "decide": 10,
        "notify_start": 80,
        "undo": 85,
        "pods": mitigated_after + 30,
        "health": mitigated_after + 30,
        "notify_done": mitigated_after + 45,
    }
    for item in status.checklist:
        if item.key in times:
            item.done_at = at(times[item.key])
    return status


def incident(**changes) -> IncidentStatus:
    record = ChangeRecord(
        workflow_id="rollback-default-tekutoko-api",
        kind="rollback",
        requested_at=at(10),
        running=False,
        phase="completed",
        rollback=rollback_status(),
        verified=True,
        confirmations=[
            Confirmation(item="user_reports", by="oncall", at=at(600), note="support inbox quiet")
        ],
    )
    return IncidentStatus(
        **{
            "incident_id": incident_workflow_id("tekutoko-api", T0),
            "service": "tekutoko-api",
            "namespace": "default",
            "opened_by": "oncall",
            "reason": "error rate 60%",
            "detected_at": T0,
            "opened_at": at(10),
            "changes": [record],
            "follow_ups": [
                FollowUp(key="rca", due_at=at(86400)),
                FollowUp(key="postmortem", due_at=at(172800)),
                FollowUp(key="prevention", due_at=at(172800)),
            ],
            **changes,
        }
    )


def test_the_incident_id_names_the_service_and_the_detection_minute_in_utc() -> None:
    assert (
        incident_workflow_id("tekutoko-api", T0.astimezone(dt.timezone(dt.timedelta(hours=9))))
        == "incident-tekutoko-api-20261129-0312"
    )


def test_a_verified_rollback_awaits_the_three_confirmations_until_all_are_in() -> None:
    status = incident()
    change = status.changes[0]
    assert change.awaiting == ["main_features", "dashboards"] and not change.fully_verified
    assert status.missing == [
        "rca",
        "postmortem",
        "prevention",
        "rollback-default-tekutoko-api: confirm main_features",
        "rollback-default-tekutoko-api: confirm dashboards",
    ]
    change.confirmations += [
        Confirmation(item=i, by="sre-lead", at=at(700)) for i in ("main_features", "dashboards")
    ]
    assert change.fully_verified and change.awaiting == []
    change.verified = False  # automatic checks failed: never fully verified, nothing to confirm
    assert not change.fully_verified and change.awaiting == []


def test_a_change_signal_carries_exactly_its_own_request() -> None:
    request = RollbackRequest(
        deployment="tekutoko-api", severity=Severity.IMMEDIATE, reason="x", requested_by="oncall"
    )
    assert (
        ChangeSignal(
            kind="rollback", workflow_id="rollback-default-tekutoko-api", rollback=request
        ).request
        is request
    )
    with pytest.raises(ValidationError, match="exactly its migration request"):
        ChangeSignal(kind="migration", workflow_id="migration-tekutoko-api", rollback=request)


def test_the_catalog_refuses_bad_incident_settings() -> None:
    with pytest.raises(ValidationError, match="rca_hours"):
        ServiceEntry(name="a", deployment="a", service="a", incident={"rca_hours": 0})
    with pytest.raises(ValidationError, match="confirmation_reminder_minutes"):
        ServiceEntry(
            name="a", deployment="a", service="a", incident={"confirmation_reminder_minutes": 0}
        )
    assert ServiceEntry(name="a", deployment="a", service="a").incident.postmortem_hours == 48


def test_the_draft_follows_the_template_in_both_languages() -> None:
    ja, en = render(incident(), "ja"), render(incident(), "en")
    for heading in (
        "概要",
        "影響",
        "タイムライン (JST)",
        "根拠",
        "チェックリスト",
        "未完了のフォローアップ",
        "根本原因",
        "再発防止策",
    ):
        assert f". {heading}" in ja
    for heading in (
        "Summary",
        "Impact",
        "Timeline (JST)",
        "Evidence",
        "Checklist",
        "Open follow-ups",
        "Root cause",
        "Prevention",
    ):
        assert f". {heading}" in en
    assert (
        "| 2026-11-29 12:13:40 | 承認: sre-lead |" in ja and "intern" not in ja.split("## 4")[0]
    )  # only counted approvals
    assert "| 2026-11-29 12:13:55 | ロールバック実行 (revision 3 → 2) |" in ja
    assert "SLA 達成" in ja and "2.5 min" in ja and "error ratio 60.0% > 50%" in ja
    assert (
        "✅ ユーザーからの障害報告がない: oncall" in ja
        and "⏳ 主要機能の動作確認完了: 未確認" in ja
    )
    assert "- [ ] 原因調査（24時間以内）: 期限 2026-11-30 12:12:30 JST" in ja
    assert "modoru confirm rollback-default-tekutoko-api --item dashboards" in en


def test_the_timeline_is_in_time_order_and_says_a_missed_sla() -> None:
    status = incident()
    status.changes[0].rollback = rollback_status(mitigated_after=1000)
    events = timeline(status, "en")
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    assert [text for _, text in events][:3] == [
        "Detected: error rate 60%",
        "Rollback decided (investigate, rollback-default-tekutoko-api)",
        "Approved: sre-lead",
    ]
    assert "SLA missed" in render(status, "en")


def test_follow_up_notices_remind_then_escalate_with_the_command_to_record() -> None:
    subject, text = incident_notices.follow_up_notice(
        "ja",
        point="half_time",
        key="rca",
        incident_id="incident-x",
        service="tekutoko-api",
        due_at=at(86400),
    )
    assert (
        subject.startswith("【リマインド")
        and "modoru incident rca incident-x" in text
        and "2026-11-30 12:12 JST" in text
    )
    subject, text = incident_notices.follow_up_notice(
        "en",
        point="deadline",
        key="postmortem",
        incident_id="incident-x",
        service="tekutoko-api",
        due_at=at(172800),
    )
    assert "deadline missed" in subject and "modoru incident postmortem incident-x --link" in text
