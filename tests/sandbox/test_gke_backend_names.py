"""The sandbox names a Service's load balancer objects as GKE does, long names
included, its Cloud Monitoring emulator writes the load balancer's series under
those names, and the gke_l7 preset finds each Service's own backends among
them: trimmed to the same text or not, through an Ingress or a Gateway."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import grpc
import pytest
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcAsyncIOTransport,
)
from temporalio.exceptions import ApplicationError

from activities.metrics import Monitoring
from runbook.guard import MonitoringConfig
from runbook.monitoring import gke_backend_regex, is_gke_backend_of
from sandbox import gke_names
from tests.conftest import METRICS_DELAY, RunningSandbox
from tests.conftest import http_status as hit

DIGITS = "01234567890123456789012345678901234567890123456789"  # ingress-gce's tests' longString
LB_COUNT = "loadbalancing.googleapis.com/https/request_count"


# -- the names, against ingress-gce's own test vectors ---------------------------------


def test_neg_names_follow_ingress_gces_namer() -> None:
    uid = "0123456789abcdef"  # namer_test.go's clusterId
    assert (
        gke_names.neg_name_for(uid, "namespace", "name", 80)
        == "k8s1-01234567-namespace-name-80-5104b449"
    )
    assert (
        gke_names.neg_name_for(uid, DIGITS, DIGITS, 0)
        == "k8s1-01234567-0123456789012345678-0123456789012345678--9129e3d2"
    )
    assert (
        gke_names.neg_name_for(uid, DIGITS, DIGITS[:40], 2147483647)
        == "k8s1-01234567-0123456789012345678-0123456789012345-214-ed1f2a2f"
    )


def test_v2_ingress_frontend_names_follow_ingress_gces_namer() -> None:
    system = "kubesystem-uid1"  # frontendnamer_test.go's kubeSystemUID
    assert gke_names.content_hash(system, 8) == "7kpbhpki"
    assert (
        gke_names.ingress_name_for(system, "um", "namespace", "name")
        == "k8s2-um-7kpbhpki-namespace-name-uhmwf5xi"
    )
    assert (
        gke_names.ingress_name_for(system, "fr", DIGITS[:23], DIGITS[:24])
        == "k8s2-fr-7kpbhpki-012345678901234567-012345678901234567-hg17g9tx"
    )


def test_long_services_get_names_of_at_most_63_characters() -> None:
    namespace = "payments-settlement-reconciliation-prod"
    service = "ledger-export-worker-for-settlement-reconciliation"
    neg = gke_names.neg_name("p", namespace, service, 8080)
    uid8 = gke_names.cluster_uid8("p")
    # 39 + 50 + 4 characters for 38, excess 55 of 93: 39 - 2145 // 93 - 1 = 15,
    # 50 - 2750 // 93 - 1 = 20 and 4 - 220 // 93 - 1 = 1; the 2 left go to the first two.
    assert neg.startswith(f"k8s1-{uid8}-payments-settlem-ledger-export-worker--8-")
    assert len(neg) == 63
    gateway = gke_names.gateway_backend_name("p", namespace, service, 8080)
    # The port stays whole: 39 + 50 for 32, excess 57 of 89: 39 - 2223 // 89 - 1 = 14
    # (+1 left over) and 50 - 2850 // 89 - 1 = 17.
    assert gateway.startswith(
        f"gkegw1-{gke_names.gateway_id4('p')}-payments-settle-ledger-export-wor-8080-"
    )
    assert len(gateway) == 63
    labels = gke_names.https_lb_rule("p", namespace, service, 8080, exposed_by="gateway")
    assert labels["backend_target_name"] == gateway and labels["backend_name"] == neg
    assert all(len(v) <= 63 for v in labels.values())
    assert gke_names.https_lb_rule("p", namespace, service, 8080)["backend_target_name"] == neg


# -- the emulator and the preset, with Services of long names --------------------------

LONG_NAMESPACE = "payments-settlement-reconciliation-prod"
BLUE = "ledger-export-worker-for-settlement-reconciliation-blue"
GOLD = "ledger-export-worker-for-settlement-reconciliation-gold"
PINK = "ledger-export-worker-for-settlement-reconciliation-pink"
GATEWAY = "settlement-reconciliation-ledger-export-worker-via-gateway"
ORPHAN = "ledger-export-worker-without-any-pods"


def create_service(
    core, namespace: str, name: str, selector: dict[str, str], exposed_by: str = "ingress"
) -> None:
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": name, "annotations": {gke_names.EXPOSED_BY: exposed_by}},
            "spec": {
                "type": "LoadBalancer",
                "selector": selector,
                "ports": [{"name": "http", "port": 0, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
    )


async def test_the_preset_reads_each_long_named_service_from_its_own_backends(
    sandbox: RunningSandbox, kube_client
) -> None:
    _, core = kube_client
    selector = core.read_namespaced_service("tekutoko-api", "default").spec.selector
    core.create_namespace({"metadata": {"name": LONG_NAMESPACE}})
    for name, exposed_by in ((BLUE, "ingress"), (GOLD, "ingress"), (GATEWAY, "gateway")):
        create_service(core, "default", name, selector, exposed_by)
    create_service(core, LONG_NAMESPACE, ORPHAN, {"app": "nothing-runs-here"})
    keys = [("default", BLUE), ("default", GOLD), ("default", GATEWAY), (LONG_NAMESPACE, ORPHAN)]
    urls = {
        key: sandbox.wait_for(
            lambda key=key: sandbox.call(lambda: sandbox.sandbox.load_balancers.url(*key)),
            what=f"a front end for {key}",
        )
        for key in keys
    }
    ports = {key: int(url.rsplit(":", 1)[1]) for key, url in urls.items()}
    counts = dict(zip(keys, (12, 7, 5, 4), strict=True))
    sandbox.until_next_minute()
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = {
            key: list(pool.map(hit, [urls[key] + "/v1/walks"] * n)) for key, n in counts.items()
        }
    assert statuses[(LONG_NAMESPACE, ORPHAN)] == [503] * 4  # no pod: the load balancer answers
    sandbox.until_readable()
    endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())
    project = endpoints["monitoring_project"]
    expected = {
        ("default", BLUE): gke_names.neg_name(project, "default", BLUE, ports[("default", BLUE)]),
        ("default", GOLD): gke_names.neg_name(project, "default", GOLD, ports[("default", GOLD)]),
        ("default", GATEWAY): gke_names.gateway_backend_name(
            project, "default", GATEWAY, ports[("default", GATEWAY)]
        ),
        (LONG_NAMESPACE, ORPHAN): gke_names.neg_name(
            project, LONG_NAMESPACE, ORPHAN, ports[(LONG_NAMESPACE, ORPHAN)]
        ),
    }
    assert all(len(name) <= 63 for name in expected.values())
    assert (
        expected[("default", BLUE)][:-9].rsplit("-", 1)[0]
        == expected[("default", GOLD)][:-9].rsplit("-", 1)[0]
    )  # trimmed to the same text but for the port and the hash

    channel = grpc.aio.insecure_channel(endpoints["cloud_monitoring"])
    client = monitoring_v3.MetricServiceAsyncClient(
        transport=MetricServiceGrpcAsyncIOTransport(channel=channel)
    )
    end = int(sandbox.sandbox.clock.metric_time() // 60 * 60)
    written = {
        series.resource.labels["backend_target_name"]: sum(
            p.value.int64_value for p in series.points
        )
        async for series in await client.list_time_series(
            request={
                "name": f"projects/{project}",
                "filter": f'metric.type = "{LB_COUNT}"',
                "interval": {"start_time": {"seconds": end - 300}, "end_time": {"seconds": end}},
                "aggregation": {
                    "alignment_period": {"seconds": 300},
                    "per_series_aligner": "ALIGN_DELTA",
                    "cross_series_reducer": "REDUCE_SUM",
                    "group_by_fields": ["resource.labels.backend_target_name"],
                },
            }
        )
    }
    for key, name in expected.items():
        assert written.get(name) == counts[key], (key, name, written)

    config = MonitoringConfig(
        preset="gke_l7", ingestion_delay_seconds=METRICS_DELAY, window_seconds=300
    )
    filter_ = config.source().filter_for("default", BLUE)
    matched = {
        series.resource.labels["backend_target_name"]
        async for series in await client.list_time_series(
            request={
                "name": f"projects/{project}",
                "filter": f'metric.type = "{LB_COUNT}" AND {filter_}',
                "interval": {"start_time": {"seconds": end - 300}, "end_time": {"seconds": end}},
                "view": "HEADERS",
            }
        )
    }
    # The filter alone cannot tell blue from gold; the hash of the NEG name can.
    assert matched == {expected[("default", BLUE)], expected[("default", GOLD)]}

    async with aiohttp.ClientSession() as session:
        monitoring = Monitoring(client, session, project=project, clock=sandbox.metric_clock)
        for (namespace, name), n in counts.items():
            reading = await monitoring.service_health(monitoring.query(config, namespace, name))
            assert reading.requests == n, (namespace, name)
            assert reading.errors == statuses[(namespace, name)].count(500) + statuses[
                (namespace, name)
            ].count(503)
        # A Service with no backend of its own, whose name trims like blue's and gold's.
        with pytest.raises(ApplicationError, match="matched only other Services' backends") as none:
            await monitoring.service_health(monitoring.query(config, "default", PINK))
        assert none.value.non_retryable
        assert expected[("default", BLUE)] in none.value.message
        assert expected[("default", GOLD)] in none.value.message
    await channel.close()


@pytest.mark.parametrize("exposed_by", ["ingress", "gateway"])
def test_the_sandboxs_own_service_is_found_either_way(exposed_by: str) -> None:
    labels = gke_names.https_lb_rule("p", "default", "tekutoko-api", 43210, exposed_by=exposed_by)
    name = labels["backend_target_name"]
    assert re.fullmatch(gke_backend_regex("default", "tekutoko-api"), name)
    assert is_gke_backend_of(name, "default", "tekutoko-api")
