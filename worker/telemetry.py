"""Observability of modoru itself: traces (OpenTelemetry, through Temporal's
tracing interceptor), metrics (Prometheus, from the Temporal runtime) and
structured logs."""

from __future__ import annotations

import contextvars
import json
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from temporalio import activity, workflow
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from .settings import Settings

# Hosts whose URL path is itself a credential (incoming webhooks): spans get scheme and host only.
SECRET_PATH_HOSTS = {"hooks.slack.com", "hooks.slack-gov.com"}

current_service: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "modoru_service", default=None
)
_tracing_ready = False


def configure_tracing(settings: Settings) -> bool:
    """Install a tracer provider for the exporter the settings name; returns
    whether tracing is on. Kubernetes and HTTP calls get client spans."""
    global _tracing_ready
    if settings.otel_exporter == "none":
        return False
    if _tracing_ready:
        return True
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "modoru"}))
    if settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter())
        )  # OTEL_EXPORTER_OTLP_* say where
    else:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    instrument_http()
    _tracing_ready = True
    return True


def safe_url(url: Any) -> str:
    """A URL fit for a span: no user info, query or fragment (tokens live
    there), and no path for hosts whose path is a secret."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    path = "" if host in SECRET_PATH_HOSTS else parts.path
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def instrument_http() -> None:
    """Client spans for aiohttp requests, their URLs passed through safe_url."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    instrumentor = AioHttpClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(url_filter=safe_url)


def client_interceptors(tracing: bool) -> list:
    if not tracing:
        return []
    # Imported only when tracing is on: a CLI command without it starts ~0.1 s sooner.
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def runtime_for(settings: Settings) -> Runtime | None:
    """A Temporal runtime that serves Prometheus metrics, when an address is set."""
    if not settings.metrics_address:
        return None
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=settings.metrics_address, durations_as_seconds=True
            )
        )
    )


class ServiceTagging(Interceptor):
    """Remembers which service an activity works on, for the log lines it writes."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _TaggingActivityInbound(next)


class _TaggingActivityInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        token = current_service.set(_service_of(input.args[0]) if input.args else None)
        try:
            return await super().execute_activity(input)
        finally:
            current_service.reset(token)


def _service_of(arg: Any) -> str | None:
    for holder in (arg, getattr(arg, "plan", None)):
        name = getattr(holder, "deployment", None)
        if isinstance(name, str):
            return name
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the workflow id, run id and service when known.
    Only the message and these ids are written: never the environment."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        details = (
            getattr(record, "temporal_activity", None)
            or getattr(record, "temporal_workflow", None)
            or {}
        )
        for key in (
            "workflow_id",
            "run_id",
            "workflow_run_id",
            "activity_type",
            "workflow_type",
            "attempt",
        ):
            if key in details:
                entry["run_id" if key == "workflow_run_id" else key] = details[key]
        service = current_service.get()
        if service:
            entry["service"] = service
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
        # Temporal's loggers already put the ids in `extra`; keep the message plain.
        activity.logger.activity_info_on_message = False
        workflow.logger.workflow_info_on_message = False
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
