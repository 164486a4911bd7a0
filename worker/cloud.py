"""Google Cloud clients for the worker: Cloud Monitoring through the official
gRPC client, the Cloud SQL Admin API over REST (the discovery-based client),
both with Application Default Credentials, or the sandbox's emulators in plain
text without credentials."""

from __future__ import annotations

import logging

import aiohttp
import grpc
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcAsyncIOTransport,
)

from activities.cloud_logging import READ_SCOPE as LOGGING_SCOPE
from activities.cloud_logging import CloudLogging
from activities.cloudsql import CloudSqlActivities
from activities.cloudsql_pitr import PitrActivities
from activities.metrics import READ_SCOPE, MetricClock, Monitoring
from activities.sqladmin import SCOPE as SQLADMIN_SCOPE
from activities.sqladmin import SqlAdmin

from .settings import Settings

log = logging.getLogger("modoru.worker")


def monitoring_for(settings: Settings, session: aiohttp.ClientSession) -> Monitoring | None:
    """None when the worker has no way to read metrics (no emulator, no credentials)."""
    if settings.monitoring_insecure:
        if not settings.monitoring_endpoint:
            raise ValueError(
                "MODORU_MONITORING_INSECURE needs MODORU_MONITORING_ENDPOINT (host:port of the "
                "emulator)"
            )
        channel = grpc.aio.insecure_channel(settings.monitoring_endpoint)
        client = monitoring_v3.MetricServiceAsyncClient(
            transport=MetricServiceGrpcAsyncIOTransport(channel=channel)
        )
        clock = MetricClock(settings.monitoring_clock_epoch, settings.monitoring_clock_speed)
        return Monitoring(
            client,
            session,
            project=settings.monitoring_project,
            rest_endpoint=settings.monitoring_rest_endpoint,
            credentials=None,
            clock=clock,
        )
    if settings.monitoring_clock_speed != 1.0 or settings.monitoring_clock_epoch is not None:
        raise ValueError(
            "MODORU_MONITORING_CLOCK_* is for the sandbox's emulator only (with "
            "MODORU_MONITORING_INSECURE): Cloud Monitoring keeps real time"
        )
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, default_project = google.auth.default(scopes=[READ_SCOPE])
    except DefaultCredentialsError:
        log.warning("no Google credentials: metric checks and the release guard's metrics are off")
        return None
    options = (
        {"api_endpoint": settings.monitoring_endpoint} if settings.monitoring_endpoint else None
    )
    client = monitoring_v3.MetricServiceAsyncClient(credentials=credentials, client_options=options)
    return Monitoring(
        client,
        session,
        project=settings.monitoring_project or default_project,
        rest_endpoint=settings.monitoring_rest_endpoint,
        credentials=credentials,
    )


def cloudsql_for(settings: Settings) -> tuple[CloudSqlActivities, PitrActivities] | None:
    """None when the worker has no way to reach the Cloud SQL Admin API (REST)."""
    from googleapiclient.http import build_http

    if settings.cloudsql_insecure:
        if not settings.cloudsql_endpoint:
            raise ValueError(
                "MODORU_CLOUDSQL_INSECURE needs MODORU_CLOUDSQL_ENDPOINT (the emulator's base "
                "URL, e.g. http://127.0.0.1:PORT/)"
            )
        admin = SqlAdmin(settings.cloudsql_endpoint, build_http)
        project = settings.cloudsql_project
    else:
        import google.auth
        import google_auth_httplib2
        from google.auth.exceptions import DefaultCredentialsError

        try:
            credentials, default_project = google.auth.default(scopes=[SQLADMIN_SCOPE])
        except DefaultCredentialsError:
            log.warning(
                "no Google credentials: migration rollbacks and point-in-time recovery cannot "
                "reach Cloud SQL"
            )
            return None
        admin = SqlAdmin(
            settings.cloudsql_endpoint,
            lambda: google_auth_httplib2.AuthorizedHttp(credentials, http=build_http()),
        )
        project = settings.cloudsql_project or default_project
    return CloudSqlActivities(admin, project), PitrActivities(admin, project)


def logging_for(settings: Settings) -> CloudLogging | None:
    """None when the worker has no way to read Cloud Logging (no emulator, no credentials)."""
    from googleapiclient.http import build_http

    project = settings.logging_project or settings.monitoring_project
    if settings.logging_insecure:
        if not settings.logging_endpoint:
            raise ValueError(
                "MODORU_LOGGING_INSECURE needs MODORU_LOGGING_ENDPOINT (the emulator's base URL, "
                "e.g. http://127.0.0.1:PORT/)"
            )
        return CloudLogging(settings.logging_endpoint, build_http, project=project)
    import google.auth
    import google_auth_httplib2
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, default_project = google.auth.default(scopes=[LOGGING_SCOPE])
    except DefaultCredentialsError:
        log.warning("no Google credentials: the post-rollback log check is off")
        return None
    return CloudLogging(
        settings.logging_endpoint,
        lambda: google_auth_httplib2.AuthorizedHttp(credentials, http=build_http()),
        project=project or default_project,
    )
