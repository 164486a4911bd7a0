"""The runbook's rules as pure code."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from runbook import notices
from runbook.catalog import ApprovalPolicy, Catalog, Channel, ServiceEntry
from runbook.checklist import new_checklist
from runbook.models import RollbackRequest, Severity
from runbook.policy import (
    approvals_required,
    escalation_points,
    judge_approval,
    judge_rejection,
    sla_deadline,
)

T0 = dt.datetime(2026, 1, 16, 3, 0, tzinfo=dt.UTC)  # 12:00 JST
POLICY = ApprovalPolicy(approvers=["sre-lead", "backend-lead"])


def test_deadlines_are_five_and_fifteen_minutes_from_detection() -> None:
    assert sla_deadline(Severity.IMMEDIATE, T0) == T0 + dt.timedelta(minutes=5)
    assert sla_deadline(Severity.INVESTIGATE, T0) == T0 + dt.timedelta(minutes=15)
    assert escalation_points(Severity.IMMEDIATE, T0) == [
        ("half_time", T0 + dt.timedelta(seconds=150)),
        ("deadline", T0 + dt.timedelta(minutes=5)),
    ]


def test_approvals_required_by_severity() -> None:
    assert approvals_required(Severity.IMMEDIATE, POLICY) == 0
    assert approvals_required(Severity.INVESTIGATE, POLICY) == 1
    assert (
        approvals_required(Severity.IMMEDIATE, ApprovalPolicy(approvers=[], immediate_approvals=1))
        == 1
    )


@pytest.mark.parametrize(
    ("approver", "already", "counted", "words"),
    [
        ("sre-lead", [], True, "approved by sre-lead"),
        ("oncall", [], False, "requested this rollback"),
        ("OnCall ", [], False, "requested this rollback"),
        ("intern", [], False, "not an approver"),
        ("sre-lead", ["sre-lead"], False, "already approved"),
    ],
)
def test_who_may_approve(approver, already, counted, words) -> None:
    verdict = judge_approval(POLICY, "oncall", approver, already)
    assert verdict.counted is counted and words in verdict.reason


def test_who_may_reject() -> None:
    assert judge_rejection(POLICY, "backend-lead").counted
    assert not judge_rejection(POLICY, "intern").counted


def test_requests_refuse_bad_input() -> None:
    with pytest.raises(ValidationError, match="time zone offset"):
        RollbackRequest(
            deployment="a",
            severity="immediate",
            reason="r",
            requested_by="me",
            detected_at=dt.datetime(2026, 1, 1),
        )
    with pytest.raises(ValidationError, match="pattern"):
        RollbackRequest(deployment="Bad_Name", severity="immediate", reason="r", requested_by="me")
    with pytest.raises(ValidationError, match="greater than 0"):
        RollbackRequest(
            deployment="a", severity="immediate", reason="r", requested_by="me", to_revision=0
        )
    with pytest.raises(ValidationError, match="severity"):
        RollbackRequest(deployment="a", severity="someday", reason="r", requested_by="me")


def test_start_notice_follows_the_runbook_template_in_jst() -> None:
    subject, text = notices.start_notice(
        "ja",
        detected_at=T0,
        impact="エラー率上昇",
        cause="",
        action="ロールバックを開始します",
        expected_recovery=T0 + dt.timedelta(minutes=15),
    )
    assert subject == "【ロールバック開始】"
    assert "発生時刻: 2026-01-16 12:00 JST" in text and "影響: エラー率上昇" in text
    assert "原因: デプロイに起因する問題" in text and "予想復旧時刻: 12:15 JST" in text
    _, english = notices.start_notice(
        "en",
        detected_at=T0,
        impact="errors",
        cause="1.3.0",
        action="rolling back",
        expected_recovery=T0,
    )
    assert "Occurred: 2026-01-16 12:00 JST" in english and "Cause: 1.3.0" in english


def test_completion_notice_names_both_revisions_and_next_actions() -> None:
    _, text = notices.complete_notice(
        "ja", recovered_at=T0, from_revision=3, to_revision=2, result="サービス正常稼働中"
    )
    assert "リビジョン3からリビジョン2にロールバック" in text and "ポストモーテム作成" in text


def test_checklist_keeps_the_runbook_order() -> None:
    items = new_checklist("ja")
    assert (
        items[0].title == "ロールバックの必要性を判断"
        and items[-1].key == "prevention"
        and len(items) == 16
    )
    assert new_checklist("en")[0].title == "Decide that a rollback is needed"


def test_catalog_channels_keep_secrets_out() -> None:
    with pytest.raises(ValidationError, match="webhook_env"):
        Channel(kind="slack")
    with pytest.raises(ValidationError, match="pattern"):
        Channel(kind="slack", webhook_env="https://hooks.example/secret")
    assert Channel(kind="slack", webhook_env="TEAM_HOOK").label == "slack:$TEAM_HOOK"


def test_catalog_lookup_and_default() -> None:
    entry = ServiceEntry(name="api", deployment="api", service="api")
    catalog = Catalog(services=[entry])
    assert catalog.find("default", "api") is entry
    assert catalog.find("default", "other") is None
    fallback = Catalog(services=[], default=entry).find("team", "other")
    assert (fallback.namespace, fallback.deployment, fallback.service) == ("team", "other", "other")
