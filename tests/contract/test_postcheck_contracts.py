"""Contract tests for what the post-checks read:

- the Cloud Logging emulator against Google's `logging v2` discovery document
  (googleapiclient's discovery_cache): the route and body schema are the
  document's, every entry it serves fits the document's LogEntry schema, and it
  refuses what the document's ListLogEntriesRequest says is refused;
- the Monitoring emulator's GKE container metrics and Cloud SQL num_backends
  against the kinds, value types and labels Google publishes for them
  (`k8s_container`: project_id, location, cluster_name, namespace_name,
  pod_name, container_name; `cloudsql_database`: project_id, database_id,
  region), through the official gRPC client."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from types import SimpleNamespace

import grpc
import pytest
from google.api import metric_pb2
from google.api_core import exceptions
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport
from googleapiclient import discovery as google_discovery
from googleapiclient.errors import HttpError
from googleapiclient.http import build_http

from runbook.postchecks import (
    BACKENDS_METRIC,
    CPU_METRIC,
    MEMORY_METRIC,
    PostChecks,
    container_filter,
    database_filter,
    log_filter,
)
from sandbox import discovery, gke_names
from sandbox.cloud_logging import CloudLoggingEmulator
from sandbox.monitoring import MetricServiceEmulator
from sandbox.pod_load import GaugeSample, GaugeStore

PROJECT = "tekutoko-prod"
NOW = math.floor(time.time() / 60) * 60
Kind = metric_pb2.MetricDescriptor.MetricKind
Type = metric_pb2.MetricDescriptor.ValueType


class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# -- Cloud Logging -------------------------------------------------------------------------


def _runtime(name: str, lines: list[str]) -> SimpleNamespace:
    return SimpleNamespace(
        namespace="default",
        name=name,
        container="api",
        logs=deque(lines),
        init_logs={
            "cloud-sql-proxy": deque(
                [
                    "2026-01-16T03:00:00.000001Z "
                    '{"severity":"INFO","timestamp":"2026-01-16T03:00:00Z","message":"Listening '
                    'on 127.0.0.1:5432"}'
                ]
            )
        },
    )


PODS = [
    (
        _runtime(
            "tekutoko-api-5c9f7-aaaaa",
            [
                f"2026-01-16T03:00:{i:02d}.000000Z method=GET path=/v1/walks status=200 "
                "duration_ms=20.0"
                for i in range(30)
            ]
            + [
                '2026-01-16T03:01:00.000000Z level=error msg="request failed" method=GET '
                "path=/v1/walks status=500 duration_ms=30.0"
            ],
        ),
        {"app": "tekutoko-api", "pod-template-hash": "5c9f7"},
    ),
    (
        _runtime("other-7d8e9-bbbbb", ['2026-01-16T03:01:30.000000Z level=error msg="not ours"']),
        {"app": "other"},
    ),
]


@pytest.fixture(scope="module")
def logging_service() -> Iterator:
    loop = Loop()
    emulator = CloudLoggingEmulator(lambda: PODS, project=PROJECT)
    loop.run(emulator.start())
    yield google_discovery.build(
        "logging",
        "v2",
        static_discovery=True,
        http=build_http(),
        client_options={"api_endpoint": emulator.url},
    )
    loop.run(emulator.stop())
    loop.close()


def entries(service, **body) -> dict:
    return (
        service.entries()
        .list(body={"resourceNames": [f"projects/{PROJECT}"], **body})
        .execute(http=build_http())
    )


def refused(service, status: int, **body) -> str:
    with pytest.raises(HttpError) as failure:
        service.entries().list(body=body).execute(http=build_http())
    assert failure.value.status_code == status, failure.value.content
    return json.loads(failure.value.content)["error"]["message"]


def test_every_entry_fits_the_documents_log_entry_and_gkes_resource_labels(logging_service) -> None:
    found = entries(logging_service, pageSize=1000)["entries"]
    assert len(found) == 34
    for entry in found:
        discovery.check("logging", "v2", "LogEntry", entry)
        assert entry["resource"]["type"] == "k8s_container"
        assert set(entry["resource"]["labels"]) == {
            "project_id",
            "location",
            "cluster_name",
            "namespace_name",
            "pod_name",
            "container_name",
        }
    proxy = [e for e in found if e["resource"]["labels"]["container_name"] == "cloud-sql-proxy"]
    assert (
        proxy
        and proxy[0]["jsonPayload"]["message"].startswith("Listening")
        and proxy[0]["severity"] == "INFO"
    )


def test_the_filter_modoru_sends_finds_the_services_errors_since_the_rollback(
    logging_service,
) -> None:
    since = dt.datetime(2026, 1, 16, 3, 0, 30, tzinfo=dt.UTC)
    body = entries(
        logging_service, filter=log_filter(PostChecks(), "default", {"app": "tekutoko-api"}, since)
    )
    assert [e["severity"] for e in body["entries"]] == ["ERROR"]
    assert (
        body["entries"][0]["labels"]["k8s-pod/app"] == "tekutoko-api"
        and body["entries"][0]["logName"] == f"projects/{PROJECT}/logs/stderr"
    )
    assert entries(
        logging_service, filter='severity>=ERROR AND timestamp>="2026-01-16T03:02:00Z"'
    ) == {"entries": []}


def test_pages_and_order_as_documented(logging_service) -> None:
    first = entries(logging_service, pageSize=10)
    assert len(first["entries"]) == 10 and first["nextPageToken"]
    rest = entries(logging_service, pageSize=1000, pageToken=first["nextPageToken"])
    assert len(rest["entries"]) == 24 and "nextPageToken" not in rest
    assert len(entries(logging_service)["entries"]) == 34  # default 50
    newest = entries(logging_service, orderBy="timestamp desc", pageSize=1)["entries"][0]
    assert newest["textPayload"].startswith('level=error msg="not ours"')


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"filter": "severity>=ERROR"}, 400, "resourceNames is required"),
        (
            {"resourceNames": [f"projects/{PROJECT}"], "orderBy": "severity desc"},
            400,
            '"timestamp asc" and "timestamp desc"',
        ),
        ({"resourceNames": [f"projects/{PROJECT}"], "pageSize": -1}, 400, "must not be negative"),
        (
            {"resourceNames": [f"projects/{PROJECT}"], "filter": "x" * 20_001},
            400,
            "20000 characters",
        ),
        (
            {"resourceNames": [f"projects/{PROJECT}"], "pageToken": "made-up"},
            400,
            "page_token is invalid",
        ),
        (
            {"resourceNames": [f"projects/{PROJECT}"], "filter": "severity>=LOUD"},
            400,
            "invalid severity",
        ),
        (
            {"resourceNames": [f"projects/{PROJECT}"], "filter": 'timestamp>="yesterday"'},
            400,
            "invalid timestamp",
        ),
        (
            {"resourceNames": [f"projects/{PROJECT}"], "filter": 'textPayload:"open'},
            400,
            "unterminated string",
        ),
        (
            {"resourceNames": [f"projects/{PROJECT}"], "severity": "ERROR"},
            400,
            'Unknown name "severity"',
        ),
        ({"resourceNames": ["projects/someone-else"]}, 403, "does not have permission"),
        ({"resourceNames": ["tekutoko-prod"]}, 400, "Invalid resource name"),
        (
            {
                "resourceNames": [f"projects/{PROJECT}"],
                "filter": "severity>=ERROR OR severity=INFO",
            },
            501,
            "not implemented in the sandbox",
        ),
    ],
)
def test_what_the_document_refuses_is_refused(logging_service, body, status, says) -> None:
    assert says in refused(logging_service, status, **body)


# -- Cloud Monitoring: the post-checks' metrics ---------------------------------------------


def gauges() -> list[GaugeSample]:
    found = []
    for minute in range(5):
        at = NOW - 300 + minute * 60 + 10
        for pod, cpu in (
            ("tekutoko-api-5c9f7-aaaaa", 0.2 + minute * 0.1),
            ("tekutoko-api-5c9f7-bbbbb", 0.3),
            ("other-1-ccccc", 3.0),
        ):
            resource = tuple(
                sorted(gke_names.k8s_container(PROJECT, "default", pod, "api").items())
            )
            found.append(GaugeSample(at, "cpu", resource, (), cpu))
            found.append(
                GaugeSample(at, "memory", resource, (("memory_type", "non-evictable"),), 0.4)
            )
        database = (
            ("database_id", f"{PROJECT}:tekutoko-db"),
            ("project_id", PROJECT),
            ("region", "asia-northeast1"),
        )
        found.append(
            GaugeSample(
                at, "backends", database, (("database", "tekutoko_production"),), 10.0 + minute
            )
        )
        found.append(GaugeSample(at, "backends", database, (("database", "analytics"),), 2.0))
    return found


@pytest.fixture(scope="module")
def metrics() -> Iterator[monitoring_v3.MetricServiceClient]:
    loop = Loop()
    store = GaugeStore()
    for sample in gauges():
        store.record(sample)
    emulator = MetricServiceEmulator(
        lambda: [],
        project=PROJECT,
        ingestion_delay_seconds=0,
        now=lambda: NOW + 1,
        gauges=store.series,
    )
    loop.run(emulator.start())
    channel = grpc.insecure_channel(f"127.0.0.1:{emulator.port}")
    yield monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
    channel.close()
    loop.run(emulator.stop())
    loop.close()


def test_descriptors_as_google_publishes_them(metrics) -> None:
    found = {d.type: d for d in metrics.list_metric_descriptors(name=f"projects/{PROJECT}")}
    assert (
        found[CPU_METRIC].metric_kind,
        found[CPU_METRIC].value_type,
        found[CPU_METRIC].monitored_resource_types,
    ) == (Kind.GAUGE, Type.DOUBLE, ["k8s_container"])
    assert [label.key for label in found[MEMORY_METRIC].labels] == ["memory_type"] and found[
        MEMORY_METRIC
    ].value_type == Type.DOUBLE
    assert (found[BACKENDS_METRIC].metric_kind, found[BACKENDS_METRIC].value_type) == (
        Kind.GAUGE,
        Type.INT64,
    )
    assert [label.key for label in found[BACKENDS_METRIC].labels] == ["database"]
    resources = {
        r.type: [label.key for label in r.labels]
        for r in metrics.list_monitored_resource_descriptors(name=f"projects/{PROJECT}")
    }
    assert resources["k8s_container"] == [
        "project_id",
        "location",
        "cluster_name",
        "namespace_name",
        "pod_name",
        "container_name",
    ]
    assert resources["cloudsql_database"] == ["project_id", "database_id", "region"]


def _read(metrics, filter_: str, reducer: str = "REDUCE_MAX", aligner: str = "ALIGN_MEAN") -> list:
    return list(
        metrics.list_time_series(
            request={
                "name": f"projects/{PROJECT}",
                "filter": filter_,
                "interval": {"start_time": {"seconds": NOW - 300}, "end_time": {"seconds": NOW}},
                "aggregation": {
                    "alignment_period": {"seconds": 60},
                    "per_series_aligner": aligner,
                    "cross_series_reducer": reducer,
                },
            }
        )
    )


def test_the_queries_modoru_sends_read_the_services_containers_and_the_instance(metrics) -> None:
    cpu = _read(
        metrics, container_filter(CPU_METRIC, PostChecks(), "default", "tekutoko-api", PROJECT)
    )
    assert len(cpu) == 1 and [round(p.value.double_value, 2) for p in cpu[0].points] == [
        0.6,
        0.5,
        0.4,
        0.3,
        0.3,
    ]  # newest first; not other-1's 3.0
    backends = _read(
        metrics, database_filter(PROJECT, PROJECT, "tekutoko-db"), reducer="REDUCE_SUM"
    )
    assert [p.value.double_value for p in backends[0].points] == [
        16.0,
        15.0,
        14.0,
        13.0,
        12.0,
    ]  # both databases of the instance


@pytest.mark.parametrize(
    ("filter_", "aligner", "says"),
    [
        (
            f'metric.type = "{CPU_METRIC}"',
            "ALIGN_DELTA",
            "cannot be applied to metrics with kind GAUGE",
        ),
        (
            f'metric.type = "{CPU_METRIC}" AND resource.labels.pod = "x"',
            "ALIGN_MEAN",
            "has no label 'pod'",
        ),
        (
            f'metric.type = "{CPU_METRIC}" AND resource.type = "gke_container"',
            "ALIGN_MEAN",
            "written on monitored resource 'k8s_container' only",
        ),
        (
            f'metric.type = "{BACKENDS_METRIC}" AND resource.labels.instance_id = "x"',
            "ALIGN_MEAN",
            "has no label 'instance_id'",
        ),
        (
            f'metric.type = "{CPU_METRIC}" AND metric.labels.memory_type = "evictable"',
            "ALIGN_MEAN",
            "has no label 'memory_type'",
        ),
    ],
)
def test_queries_google_refuses_are_refused(metrics, filter_, aligner, says) -> None:
    with pytest.raises(exceptions.InvalidArgument) as failure:
        _read(metrics, filter_, aligner=aligner)
    assert says in failure.value.message
