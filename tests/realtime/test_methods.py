"""The runbook's methods 2 and 3 and its troubleshooting restart at the real clock,
through `modoru up`'s stack and the CLI, one after another on one stack:

- a redeploy of 1.2.0 while 1.3.0 fails (`modoru redeploy start --tag 1.2.0`, signed by
  on-call; a signed `modoru approve` by sre-lead; a reviewer approves the "CD -
  Production" run's production environment in GitHub; the pipeline sets the image);
- a restore from the pipeline's backup artifact taken before 1.3.0 was deployed;
- a `modoru troubleshoot restart`.

Each ends completed, verified with every metric check judged on the first whole minute
after its rollout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from githubkit import GitHub, TokenAuthStrategy

from tests.realtime.conftest import (
    METRIC_CHECKS,
    RECOVERY_CHECKS,
    REGISTRY,
    RealtimeStack,
    assert_judged_on_real_data,
    assert_verified_on_the_first_whole_minute,
    figures,
    last_json,
    realtime_stack,
    record,
)

pytestmark = pytest.mark.realtime

REDEPLOY_ID = "redeploy-default-tekutoko-api"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[RealtimeStack]:
    with realtime_stack(tmp_path_factory.mktemp("methods")) as running:
        yield running


def github(stack: RealtimeStack) -> GitHub:
    """The sandbox's GitHub, as its token's user (oncall-sre, a production reviewer)."""
    endpoints = stack.endpoints
    token = Path(endpoints["github_token_file"]).read_text().strip()
    return GitHub(TokenAuthStrategy(token), base_url=endpoints["github_api"])


def start_and_approve(stack: RealtimeStack, *command: str) -> dict:
    """`modoru COMMAND` signed by on-call, then a signed approval by sre-lead; returns the
    status the start printed."""
    started = stack.cli(
        *command,
        "--requested-by",
        "oncall",
        "--key",
        str(stack.key("oncall")),
        "--language",
        "en",
        "--json",
        timeout=180,
    )
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    first = last_json(started.stdout)
    assert first["phase"] == "awaiting_approval", first.get("message")
    approved = stack.cli(
        "approve", first["workflow_id"], "--by", "sre-lead", "--key", str(stack.key("sre-lead"))
    )
    assert approved.returncode == 0 and "counted" in approved.stdout, (
        approved.stdout + approved.stderr
    )
    return first


def wait_for_review(stack: RealtimeStack, timeout: float = 180) -> dict:
    """The CD run, once it waits for a reviewer of environment production."""
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = stack.status(REDEPLOY_ID) or {}
        run = status.get("run")
        if run and run.get("status") == "waiting" and run.get("pending"):
            return status
        if status.get("phase") in ("failed", "rejected", "completed"):
            break
        time.sleep(2)
    raise AssertionError(
        f"the CD run never waited for review: {status.get('phase')}: {status.get('message')}"
    )


def verified(
    stack: RealtimeStack,
    kind: str,
    workflow_id: str,
    status: dict,
    checks: tuple[str, ...] = METRIC_CHECKS,
) -> None:
    """Every check the runbook asks for after the change judged on the first whole minute
    after its rollout (after a rollback by any method: ロールバック後の確認項目)."""
    record(kind, workflow_id=workflow_id, **figures(status))
    assert_judged_on_real_data(status, checks=checks)
    assert_verified_on_the_first_whole_minute(status)


def test_a_redeploy_of_1_2_0_through_the_cd_pipeline_is_verified_on_judged_data(
    stack: RealtimeStack,
) -> None:
    if stack.live_image() != f"{REGISTRY}:1.3.0":
        stack.release("1.3.0")
    first = start_and_approve(
        stack,
        "redeploy",
        "start",
        "--deployment",
        "tekutoko-api",
        "--tag",
        "1.2.0",
        "--reason",
        "1.3.0 fails 60% of API calls",
    )
    assert first["workflow_id"] == REDEPLOY_ID
    assert first["plan"]["image"] == f"{REGISTRY}:1.2.0", first["plan"]
    waiting = wait_for_review(stack)
    assert stack.live_image() == f"{REGISTRY}:1.3.0"  # nothing deployed before the review
    run = waiting["run"]
    [pending] = run["pending"]
    assert pending["environment"] == "production"
    gh = github(stack)  # kept: githubkit's namespaces hold their client weakly
    reviewed = gh.rest.actions.review_pending_deployments_for_run(
        "tekutoko",
        "tekutoko-api",
        run["run_id"],
        environment_ids=[pending["environment_id"]],
        state="approved",
        comment="back to 1.2.0",
    )
    assert reviewed.status_code == 200
    status = stack.wait_phase(REDEPLOY_ID, {"completed"}, timeout=600)
    assert status["run"]["conclusion"] == "success", status["run"]
    assert stack.live_image() == f"{REGISTRY}:1.2.0"
    verified(stack, "redeploy", REDEPLOY_ID, status)


def backup_before(stack: RealtimeStack, tag: str) -> str:
    """The artifact the pipeline's run for `tag` uploaded: the Deployment before it."""
    gh = github(stack)
    artifacts = gh.rest.actions.list_artifacts_for_repo("tekutoko", "tekutoko-api").parsed_data
    for artifact in artifacts.artifacts:
        run = gh.rest.actions.get_workflow_run(
            "tekutoko", "tekutoko-api", artifact.workflow_run.id
        ).parsed_data
        if run.display_title.endswith(f"(tag={tag})"):
            return artifact.name
    raise AssertionError(f"no backup artifact of a run for {tag}")


def test_a_restore_from_the_pipelines_backup_artifact_is_verified_on_judged_data(
    stack: RealtimeStack,
) -> None:
    artifact = backup_before(stack, "1.3.0")  # taken while 1.2.0 was live
    stack.release("1.3.0")
    first = start_and_approve(
        stack,
        "restore",
        "start",
        "--deployment",
        "tekutoko-api",
        "--artifact",
        artifact,
        "--reason",
        "1.3.0 fails; the Deployment as it was before it",
    )
    status = stack.wait_phase(first["workflow_id"], {"completed"}, timeout=600)
    assert stack.live_image() == f"{REGISTRY}:1.2.0"
    verified(stack, "restore", first["workflow_id"], status)


def test_a_troubleshooting_restart_is_verified_on_judged_data(stack: RealtimeStack) -> None:
    before = stack.apps.read_namespaced_deployment("tekutoko-api", "default")
    restarted = (before.spec.template.metadata.annotations or {}).get(
        "kubectl.kubernetes.io/restartedAt"
    )
    first = start_and_approve(
        stack,
        "troubleshoot",
        "restart",
        "--deployment",
        "tekutoko-api",
        "--reason",
        "connections stuck after the database failover",
    )
    status = stack.wait_phase(first["workflow_id"], {"completed"}, timeout=600)
    after = stack.apps.read_namespaced_deployment("tekutoko-api", "default")
    now = (after.spec.template.metadata.annotations or {}).get("kubectl.kubernetes.io/restartedAt")
    assert now and now != restarted, (restarted, now)
    # the runbook's troubleshooting confirms its fix by the error rate and health (修正確認)
    verified(stack, "restart", first["workflow_id"], status, checks=RECOVERY_CHECKS)


def test_a_migration_rollback_with_two_signed_approvals_completes_at_the_real_clock(
    stack: RealtimeStack,
) -> None:
    """Its checks are SQL (read-only, in an app pod), not metrics: nothing waits for a
    minute; at the real clock the backup gate and both approvals still hold."""
    started = stack.cli(
        "migrate-down",
        "start",
        "--service",
        "tekutoko-api",
        "--steps",
        "1",
        "--reason",
        "1.3.0's migration broke walks",
        "--requested-by",
        "oncall",
        "--key",
        str(stack.key("oncall")),
        "--language",
        "en",
        "--json",
        timeout=180,
    )
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    first = last_json(started.stdout)
    assert first["phase"] == "awaiting_approval", first.get("message")
    for approver in ("sre-lead", "backend-lead"):
        approved = stack.cli(
            "approve", first["workflow_id"], "--by", approver, "--key", str(stack.key(approver))
        )
        assert approved.returncode == 0 and "counted" in approved.stdout, (
            approved.stdout + approved.stderr
        )
    status = stack.wait_phase(first["workflow_id"], {"completed"}, timeout=300)
    assert (status["from_version"], status["to_version"]) == (5, 4), status
    assert status["backup"]["ok"], status["backup"]
    assert status["integrity"] and all(c["ok"] for c in status["integrity"]), status["integrity"]
    assert sorted(status["approvals"]) == ["backend-lead", "sre-lead"], status["approvals"]
