"""Contract tests: the PromQL API of the Monitoring emulator, called through the
official discovery client built from monitoring.v1.json (the paths, the
methods and the request bodies Google publishes), and through the Prometheus
HTTP API's own GET and form POST; answers in the Prometheus API's JSON."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import googleapiclient
import httplib2
import pytest
import requests
from aiohttp import web
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError

from sandbox.kube.loadbalancer import ServedRequest
from sandbox.prometheus_api import INSTANT_FIELDS, RANGE_FIELDS, PrometheusApi
from sandbox.prometheus_scrapes import PrometheusScrapes

PROJECT = "tekutoko-prod"
NOW = 1_800_000_000.0
DISCOVERY = Path(googleapiclient.__file__).parent / "discovery_cache/documents/monitoring.v1.json"
ERRORS = 'sum(rate(http_requests_total{namespace="default",job="tekutoko-api",code=~"5.."}[30s]))'
ALL = 'sum(rate(http_requests_total{namespace="default",job="tekutoko-api"}[30s]))'


def traffic() -> list[ServedRequest]:
    """Five minutes at 2 requests a second over three pods; one in four fails, and a 503
    no pod gave (the app never counted it)."""
    served = [
        ServedRequest(
            NOW - 300 + i * 0.5,
            "default/tekutoko-api",
            f"tekutoko-api-5d8f7-{i % 3}",
            "img",
            "/v1/walks",
            500 if i % 4 == 0 else 200,
            20.0 + i % 50,
            8080,
        )
        for i in range(600)
    ]
    served.append(
        ServedRequest(NOW - 30, "default/tekutoko-api", "", "", "/v1/walks", 503, 1.0, 8080)
    )
    return served


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    scrapes = PrometheusScrapes(
        traffic, lambda: NOW, PROJECT, scrape_interval=15.0, ingestion_delay=5.0
    )
    app = web.Application()
    PrometheusApi(scrapes, PROJECT).add_routes(app)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture(scope="module")
def prometheus(base_url: str):
    """projects.location.prometheus.api.v1 of the published discovery document."""
    document = json.loads(DISCOVERY.read_text())
    document["rootUrl"] = base_url + "/"
    service = build_from_document(json.dumps(document), http=httplib2.Http())
    return service.projects().location().prometheus().api().v1()


def values(body: dict) -> list[float]:
    assert body["status"] == "success"
    return [float(v) for series in body["data"]["result"] for _, v in series["values"]]


def test_query_range_through_the_discovery_client(prometheus) -> None:
    body = prometheus.query_range(
        name=f"projects/{PROJECT}",
        location="global",
        body={
            "query": f"{ERRORS} / {ALL}",
            "start": str(NOW - 60),
            "end": str(NOW - 10),
            "step": "10s",
            "timeout": "30s",
        },
    ).execute()
    assert body["data"]["resultType"] == "matrix"
    [series] = body["data"]["result"]
    assert series["metric"] == {}
    assert [t for t, _ in series["values"]] == [NOW - 60 + 10 * i for i in range(6)]
    assert all(0.15 < v < 0.35 for v in values(body)), values(body)  # one in four fails


def test_instant_query_through_the_discovery_client(prometheus) -> None:
    body = prometheus.query(
        name=f"projects/{PROJECT}",
        location="global",
        body={
            "query": "histogram_quantile(0.95, sum by (le)(rate("
            'http_request_duration_seconds_bucket{job="tekutoko-api"}[30s])))',
            "time": "2027-01-15T07:59:50Z",  # NOW - 10 s, as RFC 3339
        },
    ).execute()
    assert body["data"]["resultType"] == "vector"
    [sample] = body["data"]["result"]
    assert sample["value"][0] == NOW - 10
    assert 0.05 < float(sample["value"][1]) <= 0.075  # latencies 20-69 ms


def test_p95_from_the_histogram(base_url: str) -> None:
    body = requests.get(
        f"{base_url}/v1/projects/{PROJECT}/location/global/prometheus/api/v1/query",
        params={
            "query": "histogram_quantile(0.95, sum by (le)(rate("
            'http_request_duration_seconds_bucket{job="tekutoko-api"}[30s])))',
            "time": str(NOW - 10),
        },
        timeout=10,
    ).json()
    [sample] = body["data"]["result"]
    # latencies 20-69 ms: the 95th percentile falls in the (50 ms, 75 ms] bucket
    assert 0.05 < float(sample["value"][1]) <= 0.075


def test_samples_exist_only_at_scrapes_after_the_delay(base_url: str) -> None:
    """At NOW the newest readable scrape is at least 5 s old: a rate over the last 5 s is empty."""
    url = f"{base_url}/v1/projects/{PROJECT}/location/global/prometheus/api/v1/query"
    body = requests.post(
        url, data={"query": ALL.replace("[30s]", "[5s]"), "time": str(NOW)}, timeout=10
    )
    assert body.json()["data"]["result"] == []
    grouped = requests.post(
        url,
        data={
            "query": 'sum by (code)(rate(http_requests_total{job="tekutoko-api"}[30s]))',
            "time": str(NOW - 10),
        },
        timeout=10,
    ).json()
    codes = {s["metric"]["code"] for s in grouped["data"]["result"]}
    assert codes == {"200", "500"}  # the 503 no pod gave is not the app's to count


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"query": ALL, "start": "x", "end": str(NOW), "step": "10"}, 'invalid parameter "start"'),
        ({"query": ALL, "start": str(NOW), "end": str(NOW - 1), "step": "10"}, "before start"),
        ({"query": ALL, "start": str(NOW - 60), "end": str(NOW), "step": "0"}, "zero or negative"),
        ({"query": ALL, "start": str(NOW - 60), "end": str(NOW), "step": "1x"}, '"step"'),
        ({"query": ALL, "start": "0", "end": str(NOW), "step": "1"}, "11,000 points"),
        ({"query": "", "start": str(NOW - 60), "end": str(NOW), "step": "10"}, "no expression"),
        ({"query": "sum(rate(x[30s]", "start": "0", "end": "10", "step": "10"}, "parse error"),
        ({"query": "avg(rate(x[30s]))", "start": "0", "end": "10", "step": "10"}, "avg()"),
        ({"query": "up", "start": "0", "end": "10", "step": "10"}, "'up'"),
        ({"query": "abs(rate(x[1m]))", "start": "0", "end": "10", "step": "10"}, "abs()"),
    ],
)
def test_bad_data(base_url: str, params: dict, error: str) -> None:
    response = requests.get(
        f"{base_url}/v1/projects/{PROJECT}/location/global/prometheus/api/v1/query_range",
        params=params,
        timeout=10,
    )
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error" and body["errorType"] == "bad_data"
    assert error in body["error"]


def test_unknown_body_field_is_refused_as_google_does(prometheus) -> None:
    with pytest.raises(HttpError) as refused:
        prometheus.query_range(
            name=f"projects/{PROJECT}",
            location="global",
            body={"query": ALL, "start": "0", "end": "10", "step": "10", "limit": "5"},
        ).execute()
    assert refused.value.resp.status == 400
    message = json.loads(refused.value.content)["error"]["message"]
    assert 'Unknown name "limit"' in message


def test_other_project_and_location(base_url: str) -> None:
    other = requests.get(
        f"{base_url}/v1/projects/someone-else/location/global/prometheus/api/v1/query",
        params={"query": ALL},
        timeout=10,
    )
    assert other.status_code == 404
    regional = requests.get(
        f"{base_url}/v1/projects/{PROJECT}/location/asia-northeast1/prometheus/api/v1/query",
        params={"query": ALL},
        timeout=10,
    )
    assert regional.status_code == 400 and "global" in regional.json()["error"]


def test_paths_match_the_discovery_document() -> None:
    document = json.loads(DISCOVERY.read_text())
    v1 = document["resources"]["projects"]["resources"]["location"]["resources"]["prometheus"][
        "resources"
    ]["api"]["resources"]["v1"]["methods"]
    for method, schema in (("query_range", "QueryRangeRequest"), ("query", "QueryInstantRequest")):
        path = f"v1/{{+name}}/location/{{location}}/prometheus/api/v1/{method}"
        assert v1[method]["path"] == path
        assert v1[method]["httpMethod"] == "POST"
        fields = set(document["schemas"][schema]["properties"])
        assert fields == set(RANGE_FIELDS if method == "query_range" else INSTANT_FIELDS)
