"""The incident on a dev server with the sandbox: a rollback started by the CLI
runs as the child of its service's incident; `modoru status` shows it
awaiting people's confirmations; `modoru confirm` and `modoru incident ...`
record them and the follow-ups, refusing bad input in one line; the
postmortem draft's timeline matches the rollback's history."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from temporalio.api.enums.v1 import EventType

from runbook.incident_models import IncidentStatus
from runbook.notices import JST
from runbook.postmortem import render
from tests.waiting import until
from workflows.incident import IncidentWorkflow

pytestmark = pytest.mark.integration
NAME = "tekutoko-api"
# `modoru rollback start` of an immediate rollback of NAME by oncall.
IMMEDIATE_START = (
    "rollback",
    "start",
    "--deployment",
    NAME,
    "--severity",
    "immediate",
    "--reason",
    "error rate 60%",
    "--requested-by",
    "oncall",
)


def changes_line(status: IncidentStatus) -> str:
    said = [
        f"{c.workflow_id} {'running' if c.running else 'ended'} {c.phase or '-'}: "
        f"{c.message or '(no message)'}"
        for c in status.changes
    ]
    return f"incident {status.state}, changes: {'; '.join(said) or 'none'}"


async def rollback_ended(incident) -> IncidentStatus:
    """The incident once its first change (the rollback) has ended."""
    return await until(
        "the incident's rollback to end",
        lambda: incident.query(IncidentWorkflow.status),
        lambda s: bool(s.changes) and not s.changes[0].running,
        changes_line,
        20,
        interval=0.25,
    )


def one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


async def test_a_cli_rollback_runs_under_its_incident_and_people_confirm_it(stack) -> None:
    started = await stack.cli(
        *IMMEDIATE_START,
        "--wait",
        "--json",
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    rollback_id = json.loads(started.stdout.strip().splitlines()[-1])["workflow_id"]
    description = await stack.client.get_workflow_handle(rollback_id).describe()
    incident_id = description.parent_id
    assert incident_id and incident_id.startswith(f"incident-{NAME}-")
    incident = stack.client.get_workflow_handle_for(IncidentWorkflow.run, incident_id)
    current: IncidentStatus = await rollback_ended(incident)
    assert current.changes[0].workflow_id == rollback_id and current.changes[0].verified

    # An incident is no change: approving it is refused before anything is sent.
    approved = await stack.cli("approve", incident_id, "--by", "sre-lead")
    assert approved.returncode == 2
    assert one_line(approved).startswith(
        f"modoru: refusing to sign for {incident_id}: it is a 'Incident' workflow, not one of "
        "modoru's that take this decision (DeploymentRollback, "
    ), approved.stderr

    shown = await stack.cli("status", rollback_id)
    assert shown.returncode == 0 and f"incident: {incident_id}" in shown.stdout
    assert "awaiting confirmation: user_reports, main_features, dashboards" in shown.stdout

    bad_item = await stack.cli("confirm", rollback_id, "--item", "vibes", "--by", "oncall")
    assert bad_item.returncode == 2 and "--item" in one_line(bad_item)
    unknown = await stack.cli("confirm", "rollback-nope", "--item", "dashboards", "--by", "oncall")
    assert unknown.returncode == 2 and "no modoru workflow with id rollback-nope" in one_line(
        unknown
    )
    empty_rca = await stack.cli("incident", "rca", incident_id, "--by", "oncall")
    assert empty_rca.returncode == 1 and "give --summary or --link" in empty_rca.stderr

    ok = await stack.cli(
        "confirm",
        rollback_id,
        "--item",
        "user_reports",
        "--by",
        "oncall",
        "--note",
        "support inbox quiet",
    )
    assert ok.returncode == 0 and "recorded" in ok.stdout, ok.stderr
    again = await stack.cli("confirm", incident_id, "--item", "user_reports", "--by", "sre-lead")
    assert again.returncode == 1 and "already confirmed by oncall" in again.stderr
    for item in ("main_features", "dashboards"):
        result = await stack.cli("confirm", incident_id, "--item", item, "--by", "sre-lead")
        assert result.returncode == 0, result.stderr
    shown = await stack.cli("incident", "status", rollback_id, "--json")
    record = json.loads(shown.stdout)
    assert record["changes"][0]["confirmations"][0]["by"] == "oncall" and record["missing"] == [
        "rca",
        "postmortem",
        "prevention",
    ]
    shown = await stack.cli("status", rollback_id)
    assert "fully verified" in shown.stdout

    draft = await stack.cli("incident", "postmortem-draft", incident_id, "--lang", "en")
    assert (
        draft.returncode == 0
        and "## 3. Timeline (JST)" in draft.stdout
        and "Confirmed by a person" in draft.stdout
    )
    for args in (
        (
            "rca",
            incident_id,
            "--summary",
            "1.3.0 dropped an index",
            "--link",
            "https://docs.example/rca",
        ),
        ("postmortem", incident_id, "--link", "https://docs.example/pm"),
        ("prevention", incident_id, "--summary", "index check in CI"),
    ):
        result = await stack.cli("incident", *args, "--by", "sre-lead")
        assert result.returncode == 0, result.stderr
    closed = await incident.result()
    assert closed.status.state == "closed" and "## 7. 根本原因" in closed.postmortem_draft
    listed = await stack.cli("incident", "list")
    assert incident_id in listed.stdout


def completed_at(history, activity: str, nth: int = 0) -> dt.datetime:
    """When the workflow task after the `nth` completion of `activity` started: the time the
    workflow saw it done."""
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    done = [
        i
        for i, e in enumerate(history.events)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and scheduled[e.activity_task_completed_event_attributes.scheduled_event_id] == activity
    ]
    after = next(
        e
        for e in history.events[done[nth] :]
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
    )
    return after.event_time.ToDatetime(tzinfo=dt.UTC)


def row_time(draft: str, label: str) -> dt.datetime:
    match = re.search(r"^\| (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \| " + re.escape(label), draft, re.M)
    assert match, f"no timeline row {label!r} in\n{draft}"
    return dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=JST)


def check_draft_against_history(draft: str, history) -> None:
    """Each of the draft's events happened when the rollback's history says (to the second the draft
    shows)."""
    expected = {
        "ロールバックの判断": history.events[0].event_time.ToDatetime(tzinfo=dt.UTC),
        "開始通知": completed_at(history, "notify.send", 0),
        "ロールバック実行": completed_at(history, "k8s.rollout_undo"),
        "ロールアウト完了": completed_at(history, "k8s.wait_rollout"),
        "動作確認（自動）完了": completed_at(history, "verify.service"),
        "完了通知": completed_at(history, "notify.send", 1),
    }
    order = []
    for label, at in expected.items():
        shown = row_time(draft, label)
        assert abs((shown - at).total_seconds()) < 1.5, f"{label}: draft {shown}, history {at}"
        order.append(draft.index(f"| {label}"))
    assert order == sorted(order), "the timeline is not in the history's order"


async def test_the_postmortem_draft_has_the_rollbacks_real_timeline(stack) -> None:
    started = await stack.cli(
        *IMMEDIATE_START,
        "--wait",
        "--json",
    )
    assert started.returncode == 0, started.stderr[-2000:]
    rollback_id = json.loads(started.stdout.strip().splitlines()[-1])["workflow_id"]
    incident = stack.client.get_workflow_handle(
        (await stack.client.get_workflow_handle(rollback_id).describe()).parent_id
    )
    current: IncidentStatus = await rollback_ended(incident)
    history = await stack.client.get_workflow_handle(rollback_id).fetch_history()
    check_draft_against_history(render(current, "ja"), history)
    await incident.terminate("test over")


async def test_a_start_no_worker_answers_is_kept_as_a_durable_signal(stack) -> None:
    """No worker serves the task queue: the CLI's update gets no answer, so the same change goes
    as the incident's `change` signal (durable: it starts when a worker comes) and the CLI says
    so; one incident, one signal."""
    queue = "nobody-serves-this"
    env = {**stack.env, "MODORU_TASK_QUEUE": queue, "MODORU_ANSWER_WAIT_SECONDS": "2"}
    started = await stack.cli(
        *IMMEDIATE_START,
        env=env,
    )
    assert started.returncode == 1, started.stderr
    assert "no worker has answered in 2s" in started.stderr, started.stderr
    assert "Is `modoru worker` running?" in started.stderr, started.stderr
    assert "Traceback" not in started.stderr, started.stderr
    incidents = [
        e
        async for e in stack.client.list_workflows(
            f"WorkflowType = 'Incident' AND TaskQueue = '{queue}'"
        )
    ]
    assert len(incidents) == 1, incidents
    handle = stack.client.get_workflow_handle(incidents[0].id)
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert signals == ["change"], signals
    await handle.terminate("test over: no worker serves its queue")
