"""IncidentWorkflow on the time-skipping server: the rollback runs as its
child, the 24 h / 48 h follow-ups remind at half time and escalate at the
deadline until recorded, human confirmations keep a verified rollback from
being fully verified, bad signals are refused, and the incident closes only
when everything is in."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from runbook.catalog import ServiceEntry, Trust
from runbook.decisions import DecisionPayload, SignedDecision
from runbook.identity import Identity
from runbook.incident_models import (
    ChangeSignal,
    ConfirmSignal,
    FollowUpSignal,
    IncidentRequest,
    IncidentResult,
    IncidentStatus,
)
from runbook.models import RollbackRequest, ServiceLookup, Severity
from runbook.signatures import new_private_key, public_key_line, sign
from workflows.deployment_rollback import DeploymentRollbackWorkflow
from workflows.incident import IncidentWorkflow

QUEUE = "test-incidents"
H = dt.timedelta(hours=1)


def worker(env: WorkflowEnvironment, fake) -> Worker:
    return Worker(
        env.client,
        task_queue=QUEUE,
        workflows=[IncidentWorkflow, DeploymentRollbackWorkflow],
        activities=fake.activities(),
        workflow_failure_exception_types=[Exception],
    )


async def open_incident(env: WorkflowEnvironment, *, rollback: bool = True):
    detected = await env.get_current_time()
    incident_id = f"incident-{uuid.uuid4().hex[:8]}"
    handle = await env.client.start_workflow(
        IncidentWorkflow.run,
        IncidentRequest(
            service="tekutoko-api",
            detected_at=detected,
            opened_by="oncall",
            reason="error rate 60%",
        ),
        id=incident_id,
        task_queue=QUEUE,
    )
    rollback_id = f"rollback-{incident_id}"
    if rollback:
        request = RollbackRequest(
            deployment="tekutoko-api",
            severity=Severity.IMMEDIATE,
            reason="error rate 60%",
            requested_by="oncall",
            detected_at=detected,
        )
        await handle.signal(
            IncidentWorkflow.change,
            ChangeSignal(
                kind="rollback", workflow_id=rollback_id, rollback=request, request_id="start"
            ),
        )
    return handle, rollback_id, detected


async def status(handle) -> IncidentStatus:
    return await handle.query(IncidentWorkflow.status)


async def until(handle, check, what: str) -> IncidentStatus:
    for _ in range(400):
        current = await status(handle)
        if check(current):
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"never saw {what}: {current.message}")


def verified(current: IncidentStatus) -> bool:
    return bool(current.changes) and current.changes[0].verified


def audit(current: IncidentStatus, request_id: str):
    return next(e for e in current.audit if e.request_id == request_id)


async def test_the_rollback_runs_as_the_incidents_child(time_skipping_env, fake) -> None:
    async with worker(time_skipping_env, fake):
        handle, rollback_id, _ = await open_incident(time_skipping_env)
        current = await until(handle, verified, "the rollback verified")
        description = await time_skipping_env.client.get_workflow_handle(rollback_id).describe()
        assert description.parent_id == current.incident_id
        change = current.changes[0]
        assert (
            change.phase == "completed"
            and change.rollback is not None
            and change.rollback.workflow_id == rollback_id
        )
        assert audit(current, "start").counted is True
        # A second start under the same id while it runs is an attach, not a second rollback.
        assert fake.calls.count("undo") == 1
        await handle.terminate("test over")


async def test_follow_ups_remind_at_half_time_escalate_at_the_deadline_and_stop_once_recorded(
    time_skipping_env, fake
) -> None:
    async with worker(time_skipping_env, fake):
        handle, _, detected = await open_incident(time_skipping_env, rollback=False)
        await until(handle, lambda s: len(s.follow_ups) == 3, "the follow-ups")
        await time_skipping_env.sleep(11 * H)
        assert [f.reminders for f in (await status(handle)).follow_ups] == [[], [], []]
        await time_skipping_env.sleep(2 * H)  # 13 h: rca is half way
        current = await until(
            handle, lambda s: s.follow_ups[0].reminders == ["half_time"], "the rca reminder"
        )
        assert [f.reminders for f in current.follow_ups[1:]] == [[], []]
        await handle.signal(
            IncidentWorkflow.postmortem,
            FollowUpSignal(by="sre-lead", link="https://docs.example/pm-1", request_id="pm"),
        )
        await time_skipping_env.sleep(
            12 * H
        )  # 25 h: rca missed; postmortem recorded, so no reminder; prevention half way
        current = await until(
            handle,
            lambda s: s.follow_ups[0].reminders == ["half_time", "deadline"],
            "the rca escalation",
        )
        rca, pm, prevention = current.follow_ups
        assert rca.due_at == detected + 24 * H and pm.due_at == detected + 48 * H
        assert pm.reminders == [] and pm.done_at is not None
        assert prevention.reminders == ["half_time"]
        await handle.signal(
            IncidentWorkflow.rca,
            FollowUpSignal(
                by="oncall", summary="1.3.0 dropped an index", link="https://docs.example/rca"
            ),
        )
        await handle.signal(
            IncidentWorkflow.prevention, FollowUpSignal(by="sre-lead", summary="index check in CI")
        )
        await time_skipping_env.sleep(30 * H)
        result: IncidentResult = await handle.result()
    kinds = [(n.kind, n.subject) for n in fake.notices]
    reminders = [s for k, s in kinds if k == "reminder"]
    escalations = [s for k, s in kinds if k == "escalation"]
    assert len(reminders) == 2 and "原因調査" in reminders[0] and "再発防止策" in reminders[1]
    assert len(escalations) == 1 and "期限超過" in escalations[0] and "原因調査" in escalations[0]
    assert (
        result.status.state == "closed"
        and result.status.follow_ups[0].done_at > result.status.follow_ups[0].due_at
    )
    assert "recorded after the deadline" in next(
        e.detail for e in result.status.audit if e.action == "rca"
    )
    assert fake.notices[-1].subject == "【インシデント完了】"


async def test_a_postmortem_not_written_is_reminded_at_24_h_and_escalated_at_48_h(
    time_skipping_env, fake
) -> None:
    jst = dt.timezone(dt.timedelta(hours=9))
    async with worker(time_skipping_env, fake):
        handle, _, detected = await open_incident(time_skipping_env, rollback=False)
        await until(handle, lambda s: len(s.follow_ups) == 3, "the follow-ups")
        # Root cause and prevention recorded at once: the postmortem is the one follow-up left.
        await handle.signal(
            IncidentWorkflow.rca,
            FollowUpSignal(by="oncall", summary="1.3.0 dropped an index", request_id="rca"),
        )
        await handle.signal(
            IncidentWorkflow.prevention,
            FollowUpSignal(by="sre-lead", summary="index check in CI", request_id="prevention"),
        )
        current = await until(handle, lambda s: s.missing == ["postmortem"], "only the postmortem")
        incident_id = current.incident_id
        await time_skipping_env.sleep(23 * H)
        assert [f.reminders for f in (await status(handle)).follow_ups] == [[], [], []]
        await time_skipping_env.sleep(2 * H)  # 25 h: half of the postmortem's 48 h has passed
        current = await until(
            handle, lambda s: s.follow_ups[1].reminders == ["half_time"], "the postmortem reminder"
        )
        await time_skipping_env.sleep(22 * H)  # 47 h: not yet due
        assert (await status(handle)).follow_ups[1].reminders == ["half_time"]
        await time_skipping_env.sleep(2 * H)  # 49 h: the deadline has passed unmet
        current = await until(
            handle,
            lambda s: s.follow_ups[1].reminders == ["half_time", "deadline"],
            "the postmortem escalation",
        )
        pm = current.follow_ups[1]
        assert (pm.key, pm.due_at, pm.done_at) == ("postmortem", detected + 48 * H, None)
        assert [f.reminders for f in (current.follow_ups[0], current.follow_ups[2])] == [[], []]
        sent = [n for n in fake.notices if n.kind in ("reminder", "escalation")]
        recorded = [n for n in current.notices if n.kind in ("reminder", "escalation")]
        # Written late, it still closes the incident, and nothing more is sent about it.
        await handle.signal(
            IncidentWorkflow.postmortem,
            FollowUpSignal(by="sre-lead", link="https://docs.example/pm", request_id="pm"),
        )
        result: IncidentResult = await handle.result()
    assert [(n.kind, n.subject) for n in sent] == [
        ("reminder", "【リマインド: 期限の半分が経過】ポストモーテム作成（48時間以内）"),
        ("escalation", "【エスカレーション: 期限超過】ポストモーテム作成（48時間以内）"),
    ]
    due = (detected + 48 * H).astimezone(jst).strftime("%Y-%m-%d %H:%M JST")
    for notice in sent:
        assert (
            f"インシデント: {incident_id}" in notice.text
            and "対象: tekutoko-api" in notice.text
            and f"期限: {due}" in notice.text
            and f"modoru incident postmortem {incident_id} --link" in notice.text
        ), notice.text
    # Sent by durable timers at the points of the policy: 24 h and 48 h after detection.
    assert [n.kind for n in recorded] == ["reminder", "escalation"]
    for notice, hours in zip(recorded, (24, 48), strict=True):
        assert detected + hours * H <= notice.at < detected + hours * H + dt.timedelta(minutes=1)
    assert [e.action for e in result.status.audit if e.action in ("reminder", "escalation")] == [
        "reminder",
        "escalation",
    ]
    assert result.status.state == "closed" and result.status.follow_ups[1].done_at > pm.due_at
    assert "recorded after the deadline" in audit(result.status, "pm").detail
    assert [n.kind for n in fake.notices if n.kind in ("reminder", "escalation")] == [
        "reminder",
        "escalation",
    ]


async def test_pending_confirmations_keep_the_rollback_from_fully_verified_and_are_reminded(
    time_skipping_env, fake
) -> None:
    async with worker(time_skipping_env, fake):
        handle, rollback_id, _ = await open_incident(time_skipping_env)
        current = await until(handle, verified, "the rollback verified")
        change = current.changes[0]
        assert (
            change.awaiting == ["user_reports", "main_features", "dashboards"]
            and not change.fully_verified
        )
        assert {g.gate for g in current.confirm_gates} == {
            "confirm.user_reports",
            "confirm.main_features",
            "confirm.dashboards",
        }
        await handle.signal(
            IncidentWorkflow.confirm,
            ConfirmSignal(
                item="user_reports", by="oncall", note="support inbox quiet", request_id="c1"
            ),
        )
        await handle.signal(
            IncidentWorkflow.confirm,
            ConfirmSignal(item="dashboards", by="sre-lead", target=rollback_id, request_id="c2"),
        )
        current = await until(
            handle, lambda s: len(s.changes[0].confirmations) == 2, "two confirmations"
        )
        assert (
            current.changes[0].awaiting == ["main_features"]
            and not current.changes[0].fully_verified
        )
        await time_skipping_env.sleep(dt.timedelta(minutes=61))
        current = await until(
            handle, lambda s: s.changes[0].reminders == 1, "a confirmation reminder"
        )
        reminder = next(n for n in fake.notices if n.kind == "reminder")
        assert "主要機能" in reminder.text and "ユーザーからの障害報告" not in reminder.text
        await handle.signal(
            IncidentWorkflow.confirm,
            ConfirmSignal(
                item="main_features",
                by="backend-lead",
                link="https://qa.example/run/7",
                request_id="c3",
            ),
        )
        current = await until(handle, lambda s: s.changes[0].fully_verified, "fully verified")
        assert current.confirm_gates == [] and "fully verified" in audit(current, "c3").detail
        await time_skipping_env.sleep(dt.timedelta(hours=3))
        assert (await status(handle)).changes[0].reminders == 1  # no more reminders once all are in
        await handle.terminate("test over")


async def test_bad_signals_are_refused_and_change_nothing(time_skipping_env, fake) -> None:
    fake.verify_ok = False
    async with worker(time_skipping_env, fake):
        handle, rollback_id, _ = await open_incident(time_skipping_env, rollback=False)
        await until(handle, lambda s: len(s.follow_ups) == 3, "the follow-ups")
        await handle.signal(
            IncidentWorkflow.confirm,
            ConfirmSignal(item="user_reports", by="oncall", request_id="early"),
        )
        await handle.signal(
            IncidentWorkflow.rca, FollowUpSignal(by="oncall", request_id="empty-rca")
        )
        await handle.signal(
            IncidentWorkflow.postmortem,
            FollowUpSignal(by="oncall", summary="no link", request_id="no-link"),
        )
        await handle.signal(
            IncidentWorkflow.prevention,
            FollowUpSignal(by="oncall", link="https://x", request_id="no-summary"),
        )
        detected = (await status(handle)).detected_at
        request = RollbackRequest(
            deployment="tekutoko-api",
            severity=Severity.IMMEDIATE,
            reason="r",
            requested_by="oncall",
            detected_at=detected,
        )
        await handle.signal(
            IncidentWorkflow.change,
            ChangeSignal(kind="rollback", workflow_id=rollback_id, rollback=request),
        )
        current = await until(
            handle, lambda s: s.changes and not s.changes[0].running, "the failed rollback"
        )
        await handle.signal(
            IncidentWorkflow.confirm,
            ConfirmSignal(item="dashboards", by="oncall", request_id="failed"),
        )
        await handle.signal(
            IncidentWorkflow.confirm,
            ConfirmSignal(
                item="dashboards", by="oncall", target="rollback-nope", request_id="unknown"
            ),
        )
        current = await until(
            handle, lambda s: any(e.request_id == "unknown" for e in s.audit), "the refusals"
        )
        await handle.terminate("test over")
    assert "no rollback to confirm yet" in audit(current, "early").detail
    assert "give --summary or --link" in audit(current, "empty-rca").detail
    assert (
        "give --link" in audit(current, "no-link").detail
        and "give --summary" in audit(current, "no-summary").detail
    )
    assert "is not verified (ended failed)" in audit(current, "failed").detail
    assert "no change rollback-nope" in audit(current, "unknown").detail
    for request_id in ("early", "empty-rca", "no-link", "no-summary", "failed", "unknown"):
        assert audit(current, request_id).counted is False
    assert (
        all(f.done_at is None for f in current.follow_ups)
        and current.changes[0].confirmations == []
    )
    assert current.state == "open"


async def test_the_incident_closes_only_when_everything_is_in_and_returns_the_draft(
    time_skipping_env, fake
) -> None:
    async with worker(time_skipping_env, fake):
        handle, rollback_id, _ = await open_incident(time_skipping_env)
        await until(handle, verified, "the rollback verified")
        await handle.signal(
            IncidentWorkflow.rca,
            FollowUpSignal(by="oncall", summary="bad index", link="https://docs.example/rca"),
        )
        await handle.signal(
            IncidentWorkflow.postmortem, FollowUpSignal(by="oncall", link="https://docs.example/pm")
        )
        await handle.signal(
            IncidentWorkflow.prevention, FollowUpSignal(by="oncall", summary="index check in CI")
        )
        current = await until(
            handle, lambda s: all(f.done_at for f in s.follow_ups), "the follow-ups recorded"
        )
        assert current.state == "open" and current.missing == [
            f"{rollback_id}: confirm {i}" for i in ("user_reports", "main_features", "dashboards")
        ]
        for item in ("user_reports", "main_features"):
            await handle.signal(IncidentWorkflow.confirm, ConfirmSignal(item=item, by="oncall"))
        current = await until(
            handle, lambda s: len(s.changes[0].confirmations) == 2, "two confirmations"
        )
        assert current.state == "open"
        await handle.signal(
            IncidentWorkflow.confirm, ConfirmSignal(item="dashboards", by="sre-lead")
        )
        result: IncidentResult = await handle.result()
    assert result.status.state == "closed" and result.status.changes[0].fully_verified
    draft = result.postmortem_draft
    for heading in (
        "## 1. 概要",
        "## 2. 影響",
        "## 3. タイムライン (JST)",
        "## 4. 根拠",
        "## 5. チェックリスト",
        "## 6. 未完了のフォローアップ",
        "## 7. 根本原因",
        "## 8. 再発防止策",
    ):
        assert heading in draft
    for event in (
        "検知",
        "ロールバックの判断",
        "開始通知",
        "ロールバック実行",
        "ロールアウト完了",
        "動作確認（自動）完了",
        "完了通知",
        "人による確認",
    ):
        assert event in draft, event
    assert "SLA 達成" in draft
    assert (
        "## 3. Timeline (JST)" in result.postmortem_draft_other
        and "Rollout done" in result.postmortem_draft_other
    )


async def test_an_incident_whose_only_change_was_refused_closes_without_follow_ups(
    time_skipping_env, fake
) -> None:
    fake.plan_error = (
        "revision 9 is not in the history of deployment/tekutoko-api (revisions: 1, 2, 3)"
    )
    async with worker(time_skipping_env, fake):
        handle, _, _ = await open_incident(time_skipping_env)
        result: IncidentResult = await handle.result()
    assert result.status.state == "closed" and "nothing was changed" in result.status.message
    assert result.status.changes[0].phase == "failed" and not result.status.changes[0].acted
    assert "undo" not in fake.calls and not any(
        n.kind in ("reminder", "escalation") for n in fake.notices
    )


async def test_with_identities_only_signed_confirmations_for_this_gate_count(
    time_skipping_env, fake
) -> None:
    keys = {name: new_private_key() for name in ("sre-lead", "stranger")}
    trusted = fake.entry.model_copy(
        update={
            "trust": Trust(
                identities=[
                    Identity(
                        id="sre-lead",
                        display_name="SRE lead",
                        roles=["sre-lead"],
                        keys=[public_key_line(keys["sre-lead"])],
                    )
                ]
            )
        }
    )

    # The incident gets the catalog's identities; the rollback under it runs as in the unsigned
    # tests.
    @activity.defn(name="catalog.lookup")
    async def lookup(request: ServiceLookup) -> ServiceEntry:
        return trusted if activity.info().workflow_type == "Incident" else fake.entry

    activities = [
        lookup,
        *[
            a
            for a in fake.activities()
            if a.__temporal_activity_definition.name != "catalog.lookup"
        ],
    ]
    async with Worker(
        time_skipping_env.client,
        task_queue=QUEUE,
        workflows=[IncidentWorkflow, DeploymentRollbackWorkflow],
        activities=activities,
        workflow_failure_exception_types=[Exception],
    ):
        handle, rollback_id, _ = await open_incident(time_skipping_env)
        current = await until(handle, verified, "the rollback verified")
        assert current.signed
        gate = next(g for g in current.confirm_gates if g.gate == "confirm.dashboards")
        now = await time_skipping_env.get_current_time()

        def signed(signer: str, key: str, view=gate) -> SignedDecision:
            text = DecisionPayload(
                workflow_id=view.workflow_id,
                run_id=view.run_id,
                gate=view.gate,
                decision="approve",
                plan=view.digest,
                signer=signer,
                issued_at=now,
                expires_at=now + dt.timedelta(minutes=10),
                nonce=uuid.uuid4().hex,
            ).text()
            return SignedDecision(payload=text, signature=sign(text, keys[key]))

        other_gate = next(g for g in current.confirm_gates if g.gate == "confirm.user_reports")
        attempts = {
            "plain": ConfirmSignal(item="dashboards", by="sre-lead", request_id="plain"),
            "stranger": ConfirmSignal(
                item="dashboards",
                by="stranger",
                signed=signed("stranger", "stranger"),
                request_id="stranger",
            ),
            "wrong-key": ConfirmSignal(
                item="dashboards",
                by="sre-lead",
                signed=signed("sre-lead", "stranger"),
                request_id="wrong-key",
            ),
            "other-item": ConfirmSignal(
                item="dashboards",
                by="sre-lead",
                signed=signed("sre-lead", "sre-lead", other_gate),
                request_id="other-item",
            ),
            "ok": ConfirmSignal(
                item="dashboards",
                by="someone",
                signed=signed("sre-lead", "sre-lead"),
                request_id="ok",
            ),
        }
        for signal in attempts.values():
            await handle.signal(IncidentWorkflow.confirm, signal)
        current = await until(
            handle, lambda s: any(e.request_id == "ok" for e in s.audit), "the signed confirmation"
        )
        await handle.terminate("test over")
    assert "only signed confirmations" in audit(current, "plain").detail
    assert "not an identity in the catalog" in audit(current, "stranger").detail
    assert "not one of sre-lead's keys" in audit(current, "wrong-key").detail
    assert "not 'confirm.dashboards'" in audit(current, "other-item").detail
    assert [audit(current, r).counted for r in attempts] == [False, False, False, False, True]
    assert [(c.item, c.by) for c in current.changes[0].confirmations] == [
        ("dashboards", "sre-lead")
    ]  # the signer, not the name typed
