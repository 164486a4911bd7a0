"""The post-checks' judgement (runbook/postchecks.py), their catalog settings,
the 16-item checklist and the completion notice's 確認結果."""

from __future__ import annotations

import datetime as dt

import pytest

from runbook import notices
from runbook.catalog import MigrationConfig, ServiceEntry
from runbook.checklist import ITEMS, new_checklist, verified_items
from runbook.models import CheckResult, VerifyResult
from runbook.postchecks import (
    CPU_METRIC,
    PostChecks,
    container_filter,
    database_filter,
    judge_logs,
    judge_pool,
    judge_utilization,
    log_filter,
)
from worker.catalog_file import CatalogError, load_catalog


def test_cpu_against_the_baseline_before_the_incident() -> None:
    checks = PostChecks()
    name, ok, detail = judge_utilization(
        "cpu", "CPU", 0.30, 0.25, checks.max_cpu_utilization, checks
    )
    assert ok and "baseline 25%" in detail and "limit 38%" in detail  # 0.25 x 1.5
    name, ok, detail = judge_utilization(
        "cpu", "CPU", 0.95, 0.25, checks.max_cpu_utilization, checks
    )
    assert not ok and "peak 95%" in detail and "57% over" in detail


def test_a_tiny_baseline_keeps_a_margin_and_no_baseline_falls_back_to_the_catalog() -> None:
    checks = PostChecks()
    assert judge_utilization("memory", "memory", 0.06, 0.02, 0.85, checks)[
        1
    ]  # 0.02 + 0.05 margin, not 0.03
    _, ok, detail = judge_utilization("memory", "memory", 0.90, None, 0.85, checks)
    assert not ok and "catalog limit 85%" in detail and "5% over" in detail
    _, ok, detail = judge_utilization("cpu", "CPU", None, None, 0.8, checks)
    assert not ok and "no CPU data" in detail  # silence is never health


def test_connection_pool_against_max_connections() -> None:
    checks = PostChecks(max_connections=40, max_pool_ratio=0.8)
    assert judge_pool(12, checks)[1]
    _, ok, detail = judge_pool(36, checks)
    assert (
        not ok and "36 of max_connections 40" in detail and "90%" in detail and "4 over" in detail
    )
    assert not judge_pool(None, checks)[1]


def test_logs_count_and_first_messages() -> None:
    checks = PostChecks(evidence_messages=2)
    assert judge_logs(0, [], checks)[1]
    _, ok, detail = judge_logs(7, ["a: boom", "b: boom", "c: boom"], checks, more=True)
    assert (
        not ok
        and detail.startswith("7+ log entries with severity >= ERROR")
        and "first: a: boom; b: boom" in detail
        and "c: boom" not in detail
    )
    assert judge_logs(2, ["x"], PostChecks(max_error_entries=2))[1]


def test_filters_name_the_service_as_gke_labels_it() -> None:
    checks = PostChecks(container="api", cluster_name="prod")
    f = container_filter(CPU_METRIC, checks, "default", "tekutoko-api", "p")
    assert (
        'resource.type = "k8s_container"' in f
        and 'resource.labels.pod_name = starts_with("tekutoko-api-")' in f
    )
    assert (
        'resource.labels.container_name = "api"' in f
        and 'resource.labels.cluster_name = "prod"' in f
    )
    assert 'resource.labels.database_id = "p:db"' in database_filter("p", "", "db")
    since = dt.datetime(2026, 1, 16, 3, 0, tzinfo=dt.UTC)
    lf = log_filter(
        PostChecks(log_filter='textPayload:"timeout"'), "default", {"app": "tekutoko-api"}, since
    )
    assert lf == (
        'resource.type="k8s_container" AND resource.labels.namespace_name="default" AND '
        'labels."k8s-pod/app"="tekutoko-api" '
        'AND severity>=ERROR AND timestamp>="2026-01-16T03:00:00.000000Z" AND '
        '(textPayload:"timeout")'
    )


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("max_memory_utilization", 1.5, "less than or equal to 1"),
        ("max_cpu_utilization", 0, "greater than 0"),
        ("baseline_factor", 1.0, "greater than 1"),
        ("max_connections", 0, "greater than or equal to 1"),
        ("max_pool_ratio", 1.2, "less than or equal to 1"),
        ("min_severity", "LOUD", "min_severity must be one of"),
        ("log_filter", 'textPayload:"open', "balanced double quotes"),
        ("unknown", 1, "Extra inputs are not permitted"),
    ],
)
def test_bad_catalog_values_are_refused_at_load_naming_the_field(
    tmp_path, field, value, says
) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "services:\n  - name: api\n    deployment: api\n    service: api\n    "
        f"post_checks:\n      {field}: {value!r}\n".replace(
            "'", '"' if isinstance(value, str) and "'" not in value and '"' not in value else "'"
        )
    )
    with pytest.raises(CatalogError) as failure:
        load_catalog(path)
    message = str(failure.value)
    assert "post_checks" in message and says in message and "\n" not in message


def test_the_connection_pool_check_takes_the_instance_from_the_migration_settings() -> None:
    entry = ServiceEntry(
        name="api",
        deployment="api",
        service="api",
        database={"user": "u", "database": "d"},
        migration=MigrationConfig(cloudsql_instance="tekutoko-db"),
    )
    assert entry.post_checks_resolved().cloudsql_instance == "tekutoko-db"
    assert (
        ServiceEntry(name="api", deployment="api", service="api")
        .post_checks_resolved()
        .cloudsql_instance
        is None
    )


# The runbook's ロールバックチェックリスト, its 16 lines in order.
RUNBOOK_CHECKLIST = [
    "ロールバックの必要性を判断",
    "ロールバック先のリビジョンを特定",
    "関係者に通知",
    "バックアップ状態確認",
    "デプロイ履歴確認",
    "ロールバックコマンド実行",
    "ロールアウト完了確認",
    "Pod状態確認",
    "ヘルスチェック成功",
    "API動作確認",
    "エラー率確認",
    "モニタリング確認",
    "関係者に完了通知",
    "原因調査開始",
    "ポストモーテム作成",
    "再発防止策立案",
]


def test_the_checklist_has_every_item_of_the_runbooks_checklist_in_order() -> None:
    items = new_checklist("ja")
    assert len(items) == len(ITEMS) == 16
    assert [i.title.split("（")[0] for i in items] == RUNBOOK_CHECKLIST
    assert len({i.key for i in items}) == 16 and all(i.title for i in new_checklist("en"))


def _result(*checks: tuple[str, bool, str]) -> VerifyResult:
    return VerifyResult(
        ok=all(c[1] for c in checks),
        checks=[CheckResult(name=n, ok=ok, detail=d) for n, ok, d in checks],
        attempts=1,
    )


def test_verification_makes_the_checklist_items_it_establishes() -> None:
    result = _result(
        ("pods", True, "3/3"),
        ("health", True, "200"),
        ("ready", True, "200"),
        ("api", True, "200 x5"),
        ("error_ratio", True, "0.00%"),
        ("p95", True, "80 ms"),
        ("cpu", True, "peak 25%"),
        ("logs", False, "3 entries"),
    )
    made = dict(verified_items(result))
    assert set(made) == {"pods", "health", "api", "error_rate"}  # monitoring: the logs check failed
    skipped = dict(
        verified_items(_result(("pods", True, "3/3"), ("cpu", True, "skipped: no access")))
    )
    assert "monitoring" not in skipped  # a skipped check alone makes nothing


def test_the_completion_notice_says_what_was_checked_with_figures() -> None:
    checks = _result(
        ("pods", True, "3/3 Running and Ready"),
        ("cpu", True, "CPU peak 24% of the limit (<= catalog limit 80%)"),
        ("logs", True, "skipped: this worker has no Cloud Logging access"),
    ).checks
    summary = notices.verification_summary("ja", checks)
    _, text = notices.complete_notice(
        "ja",
        recovered_at=dt.datetime(2026, 1, 16, 3, tzinfo=dt.UTC),
        from_revision=3,
        to_revision=2,
        result=summary,
    )
    assert (
        "確認結果: サービス正常稼働中\n- Pod状態 [OK]: 3/3 Running and Ready\n- CPU使用率 [OK]: "
        "CPU peak 24%" in text
    )
    assert "- ログのエラー [スキップ]: skipped" in text
    english = notices.verification_summary("en", checks)
    assert (
        english.startswith("service healthy\n- Pods [OK]")
        and "Errors in the logs [skipped]" in english
    )
    assert (
        notices.verification_summary("en", []) == "service healthy (no automatic checks were made)"
    )


# -- reading: what is "could not read" and what is a finding ------------------------------


async def test_a_failed_read_is_unreadable_and_a_permanent_error_is_not() -> None:
    from google.api_core import exceptions as google_exceptions
    from kubernetes.aio.client.exceptions import ApiException
    from temporalio.exceptions import ApplicationError

    from activities.postchecks import Unreadable, guarded

    async def fail(exc: BaseException):
        raise exc

    for exc in (
        google_exceptions.ServiceUnavailable("down"),
        google_exceptions.TooManyRequests("slow down"),
        google_exceptions.InternalServerError("oops"),
        ApplicationError("Cloud Monitoring answered 503 listing alerts; retrying"),
        ApiException(status=503),
        TimeoutError(),
    ):
        with pytest.raises(Unreadable, match="could not read the thing"):
            await guarded("the thing", fail(exc))
    for exc in (
        ApplicationError("refused", non_retryable=True),
        ApiException(status=404),
        ApiException(status=403),
    ):
        with pytest.raises(type(exc)):
            await guarded("the thing", fail(exc))


def test_a_check_readable_only_after_the_deadline_is_not_judged_saying_what_to_change() -> None:
    import datetime as dt

    from activities.metrics import MetricClock
    from activities.postchecks import Timing

    since = dt.datetime.now(dt.UTC)
    # CPU's 240 s delay: the first whole minute is readable 300-360 s after the rollout
    short = Timing(since, since + dt.timedelta(seconds=120), MetricClock(speed=1.0))
    check = short.gate("cpu", "CPU utilization", 240)
    assert check is not None and check.ok and not check.judged and not check.pending
    assert check.detail.startswith("not judged: CPU utilization of ")
    assert "verification_deadline_seconds" in check.detail
    # with time enough it waits, saying for which minute and until when
    enough = Timing(since, since + dt.timedelta(seconds=400), MetricClock(speed=1.0))
    waiting = enough.gate("cpu", "CPU utilization", 240)
    assert waiting is not None and waiting.pending and not waiting.ok and waiting.judged
    assert waiting.detail.startswith("waiting for CPU utilization of ")
    assert waiting.readable_at is not None
    assert 300 <= (waiting.readable_at - since).total_seconds() <= 360
    # and once the minute is visible there is nothing to wait for
    past = since - dt.timedelta(seconds=400)
    assert Timing(past, since, MetricClock(speed=1.0)).gate("cpu", "CPU", 240) is None


def test_credentials_in_log_lines_are_masked_before_they_become_evidence() -> None:
    from runbook.postchecks import redact

    assert (
        redact('level=error msg="upstream 401" authorization="Bearer abc.def" user=walks')
        == 'level=error msg="upstream 401" authorization="Bearer [REDACTED]" user=walks'
    )
    assert (
        redact("connect failed password=hunter2 host=db")
        == "connect failed password=[REDACTED] host=db"
    )
    assert (
        redact('{"api_key": "AIzaSy123", "msg": "quota"}')
        == '{"api_key": "[REDACTED]", "msg": "quota"}'
    )
    assert (
        redact("GET /v1/walks status=500 duration_ms=30.0")
        == "GET /v1/walks status=500 duration_ms=30.0"
    )


def test_the_summary_tells_a_missing_limit_from_late_data() -> None:
    checks = [
        CheckResult(name="pods", ok=True, detail="3/3 Running and Ready"),
        CheckResult(
            name="cpu",
            ok=True,
            judged=False,
            detail="not judged: no limit set (use request_utilization or set a limit)",
        ),
        CheckResult(
            name="logs",
            ok=True,
            judged=False,
            detail="not judged: the logs of 16:36-16:37 UTC are readable at 16:37:20 UTC",
        ),
    ]
    english = notices.verification_summary("en", checks).splitlines()[0]
    assert english == (
        "service healthy (not judged: no data by verification's deadline for logs) "
        "(not judged: no limit set for cpu)"
    )
    assert "リミット未設定のため未判定: cpu" in notices.verification_summary("ja", checks)
