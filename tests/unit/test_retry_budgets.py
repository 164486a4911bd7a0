"""Retries measured in the runbook's time: the budget, the plain transient
messages, Retry-After, the words a run fails with, and an exec that
heartbeats while its command runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes.aio.client.exceptions import ApiException
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    TimeoutError,
    TimeoutType,
)
from temporalio.testing import ActivityEnvironment

from activities.errors import raise_for_api_error
from activities.pod_exec import PodExecActivities
from workflows.retries import FLOOR, MARGIN, SLA_RETRY, budget, failure_message, failure_type

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Response:
    def __init__(self, status: int, reason: str, headers: dict[str, str]) -> None:
        self.status, self.reason, self.data = status, reason, b'{"message": "injected"}'
        self.headers = headers  # kubernetes.aio keeps the response's headers as they came


def api_error(status: int, reason: str, **headers: str) -> ApiException:
    return ApiException(
        http_resp=Response(
            status, reason, {"Content-Type": "application/json", "Audit-Id": "abc-123", **headers}
        )
    )


def raised(exc: ApiException, what: str = "reading deployment/x") -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        raise_for_api_error(exc, what)
    return info.value


def test_the_budget_is_the_time_to_the_deadline_plus_a_margin_with_a_floor() -> None:
    assert SLA_RETRY.maximum_attempts == 0 and SLA_RETRY.maximum_interval == timedelta(seconds=5)
    assert budget(NOW + timedelta(minutes=5), NOW) == timedelta(minutes=5) + MARGIN
    assert (
        budget(NOW - timedelta(minutes=5), NOW) == FLOOR
    )  # past the deadline (a late approval): still a fair try
    assert budget(None, NOW) == FLOOR
    assert budget(NOW + timedelta(minutes=1), NOW, at_least=timedelta(minutes=11)) == timedelta(
        minutes=11
    )


@pytest.mark.parametrize(
    ("status", "reason", "said"),
    [
        (500, "Internal Server Error", "500 Internal Server Error"),
        (503, "Service Unavailable", "503 Service Unavailable"),
        (504, "Gateway Timeout", "504 Gateway Timeout"),
    ],
)
def test_a_transient_error_is_one_plain_line_without_headers(status, reason, said) -> None:
    err = raised(api_error(status, reason))
    assert not err.non_retryable and err.type == "KubernetesTransient"
    assert err.message == f"Kubernetes API {said} on reading deployment/x; retrying"
    assert (
        "\n" not in err.message and "Audit-Id" not in err.message and err.next_retry_delay is None
    )


def test_a_429_honours_retry_after() -> None:
    err = raised(api_error(429, "Too Many Requests", **{"Retry-After": "2"}))
    assert not err.non_retryable and err.next_retry_delay == timedelta(seconds=2)
    assert (
        err.message
        == "Kubernetes API 429 Too Many Requests on reading deployment/x; retrying in 2s "
        "(Retry-After)"
    )
    assert raised(
        api_error(429, "Too Many Requests", **{"Retry-After": "3600"})
    ).next_retry_delay == timedelta(seconds=60)  # capped
    assert (
        raised(api_error(429, "Too Many Requests", **{"Retry-After": "soon"})).next_retry_delay
        is None
    )


@pytest.mark.parametrize("status", [403, 404, 409, 422])
def test_permanent_statuses_fail_at_once(status) -> None:
    assert raised(api_error(status, "No")).non_retryable


def activity_error(cause: BaseException, state: RetryState = RetryState.TIMEOUT) -> ActivityError:
    err = ActivityError(
        "activity error",
        scheduled_event_id=1,
        started_event_id=2,
        identity="w",
        activity_type="k8s.plan_rollback",
        activity_id="1",
        retry_state=state,
    )
    err.__cause__ = cause
    return err


def test_an_exhausted_budget_fails_naming_the_last_error() -> None:
    timeout = TimeoutError(
        "activity ScheduleToClose timeout",
        type=TimeoutType.SCHEDULE_TO_CLOSE,
        last_heartbeat_details=[],
    )
    timeout.__cause__ = ApplicationError(
        "Kubernetes API 503 Service Unavailable on reading deployment/x; retrying",
        type="KubernetesTransient",
    )
    err = activity_error(timeout)
    assert (
        failure_message(err)
        == "gave up retrying at the runbook's deadline; the last error was: Kubernetes API 503 "
        "Service Unavailable on reading deployment/x"
    )
    assert failure_type(err, "RollbackFailed") == "RetryBudgetExhausted"
    refused = activity_error(
        ApplicationError(
            "deployment/nope does not exist", type="DeploymentNotFound", non_retryable=True
        ),
        RetryState.NON_RETRYABLE_FAILURE,
    )
    assert (failure_message(refused), failure_type(refused, "X")) == (
        "deployment/nope does not exist",
        "DeploymentNotFound",
    )


async def test_exec_heartbeats_while_the_command_runs() -> None:
    pods = PodExecActivities.__new__(PodExecActivities)

    async def slow(namespace, pod, container, command):
        await asyncio.sleep(5.0)
        return b"done\n", b"", 0

    pods._run = slow  # type: ignore[method-assign]
    beats: list = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])
    out, err, code = await env.run(
        pods.run, "default", "api-0", "api", ["/migrate", "down-to", "3"], 30.0
    )
    assert (out, code) == ("done\n", 0)
    assert len(beats) >= 2 and all(b["pod"] == "api-0" for b in beats)
    assert beats[-1]["running_seconds"] >= 3.5


async def test_exec_past_its_timeout_is_permanent() -> None:
    pods = PodExecActivities.__new__(PodExecActivities)

    async def forever(namespace, pod, container, command):
        await asyncio.sleep(60)

    pods._run = forever  # type: ignore[method-assign]
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(
            pods.run, "default", "api-0", "api", ["/migrate", "down-to", "3"], 1.0
        )
    assert info.value.non_retryable and info.value.type == "ExecTimeout"


def test_a_retry_that_would_start_past_the_budget_also_names_the_last_error() -> None:
    err = activity_error(
        ApplicationError(
            "Kubernetes API 429 Too Many Requests on patching deployment/x; retrying in 2s "
            "(Retry-After)",
            type="KubernetesTransient",
        )
    )
    assert (
        failure_message(err)
        == "gave up retrying at the runbook's deadline; the last error was: Kubernetes API 429 "
        "Too Many Requests on patching deployment/x"
    )


def test_the_clients_exception_does_not_ride_along_as_the_cause() -> None:
    try:
        try:
            raise api_error(503, "Service Unavailable")
        except ApiException as exc:
            raise_for_api_error(exc, "reading deployment/x")
    except ApplicationError as err:
        assert err.__cause__ is None and err.__suppress_context__


async def test_an_api_error_an_activity_left_unhandled_becomes_one_plain_line() -> None:
    from worker.api_errors import _PlainApiErrorsInbound

    class Raising:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        async def execute_activity(self, input):
            raise self.exc

    async def through_the_interceptor(exc: Exception):
        return await _PlainApiErrorsInbound(Raising(exc)).execute_activity(None)  # type: ignore[arg-type]

    env = ActivityEnvironment()
    with pytest.raises(ApplicationError) as info:
        await env.run(through_the_interceptor, api_error(503, "Service Unavailable"))
    assert (
        info.value.message
        == "Kubernetes API 503 Service Unavailable on a request made by unknown; retrying"
    )
    assert not info.value.non_retryable and info.value.__cause__ is None
    with pytest.raises(ApplicationError) as info:
        await env.run(
            through_the_interceptor, api_error(429, "Too Many Requests", **{"Retry-After": "1"})
        )
    assert info.value.next_retry_delay == timedelta(seconds=1)
    with pytest.raises(ApplicationError) as info:
        await env.run(through_the_interceptor, api_error(404, "Not Found"))
    assert info.value.non_retryable
    with pytest.raises(ValueError):
        await env.run(through_the_interceptor, ValueError("not an API error"))
