"""The last word on Kubernetes client errors an activity did not handle itself:
an ApiException's text is a dump of the HTTP headers and body, which is what
the Web UI and the CLI would otherwise show. It becomes one plain line (and,
for a 429, the delay the server asked for); permanent statuses stay permanent."""

from __future__ import annotations

from typing import Any

from kubernetes.aio.client.exceptions import ApiException as AsyncApiException
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.errors import raise_for_api_error


class PlainApiErrors(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _PlainApiErrorsInbound(next)


class _PlainApiErrorsInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except (ApiException, AsyncApiException) as exc:
            raise_for_api_error(exc, f"a request made by {activity.info().activity_type}")
