"""The gke_l7 preset finds a Service's load balancer backends by the names GKE
gives them: ingress-gce's NEG names (trimmed to 63 characters, with a hash of
the full names) and the GKE Gateway's `gkegw1-` names. The expected names
below are ingress-gce's own test vectors (pkg/utils/namer/namer_test.go,
utils_test.go) and cases worked from its algorithm."""

from __future__ import annotations

import re

import pytest

from runbook.guard import MonitoringConfig
from runbook.monitoring import (
    GKE_BACKEND,
    gke_backend_regex,
    is_gke_backend_of,
    neg_hash,
    trim_evenly,
)

DIGITS = "01234567890123456789012345678901234567890123456789"  # upstream's longString
UID8 = "01234567"  # upstream's clusterId "0123456789abcdef", as NEG names carry it


def neg(uid8: str, namespace: str, service: str, port: int) -> str:
    ns, svc, kept = trim_evenly(38, namespace, service, str(port))
    return f"k8s1-{uid8}-{ns}-{svc}-{kept}-{neg_hash(uid8, namespace, service, str(port))}"


@pytest.mark.parametrize(
    ("budget", "fields", "expected"),
    [
        (100, [DIGITS], [DIGITS]),
        (100, [DIGITS, DIGITS], [DIGITS, DIGITS]),
        (50, [DIGITS, DIGITS], [DIGITS[:25], DIGITS[:25]]),
        (10, [DIGITS] * 3, [DIGITS[:4], DIGITS[:3], DIGITS[:3]]),
        (3, [DIGITS] * 3, [DIGITS[:1]] * 3),
        (1, [DIGITS, DIGITS[:1]], [DIGITS[:1], ""]),
        (5, [DIGITS, DIGITS[:1]], [DIGITS[:5], ""]),
    ],
)
def test_fields_are_trimmed_evenly_as_ingress_gce_does(budget, fields, expected) -> None:
    assert list(trim_evenly(budget, *fields)) == expected


@pytest.mark.parametrize(
    ("namespace", "service", "port", "expected"),
    [
        ("namespace", "name", 80, "k8s1-01234567-namespace-name-80-5104b449"),
        (
            DIGITS[:10],
            DIGITS[:10],
            1234567890,
            "k8s1-01234567-0123456789-0123456789-1234567890-ed141b14",
        ),
        (DIGITS, "0", 0, "k8s1-01234567-0123456789012345678901234567890123456-0--72142e04"),
        (DIGITS, DIGITS, 0, "k8s1-01234567-0123456789012345678-0123456789012345678--9129e3d2"),
        (
            DIGITS,
            DIGITS[:40],
            2147483647,
            "k8s1-01234567-0123456789012345678-0123456789012345-214-ed1f2a2f",
        ),
    ],
)
def test_neg_names_are_ingress_gces(namespace, service, port, expected) -> None:
    name = neg(UID8, namespace, service, port)
    assert name == expected and len(name) <= 63


def test_long_names_are_shortened_to_63_characters_and_still_found() -> None:
    namespace, service = "payments-settlement-reconciliation", "ledger-export-worker-internal-api"
    # 34 + 33 + 4 characters for 38: excess 33 of 71, so namespace keeps 34 - 15 - 1 = 18
    # (+1 of the unused budget), service 33 - 15 - 1 = 17 and the port 4 - 1 - 1 = 2.
    name = neg("3f9a0c1e", namespace, service, 8080)
    assert name == (
        "k8s1-3f9a0c1e-payments-settlement-ledger-export-wor-80-"
        + neg_hash("3f9a0c1e", namespace, service, "8080")
    )
    assert len(name) == 63
    source = MonitoringConfig(preset="gke_l7").source()
    query = source.filter_for(namespace, service)
    assert GKE_BACKEND not in query and "{" + "namespace}" not in query
    pattern = re.search(r'monitoring\.regex\.full_match\("([^"]+)"\)', query)[1]
    assert pattern == gke_backend_regex(namespace, service)
    for port in (8, 80, 8080, 31234, 65535):
        found = neg("3f9a0c1e", namespace, service, port)
        assert re.fullmatch(pattern, found), found
        assert is_gke_backend_of(found, namespace, service)


def test_a_trimmed_name_that_fits_another_service_is_told_apart_by_its_hash() -> None:
    blue, gold = "ledger-export-worker-internal-api-blue", "ledger-export-worker-internal-api-gold"
    mine = neg("3f9a0c1e", "payments", blue, 31234)
    other = neg("3f9a0c1e", "payments", gold, 31234)
    assert mine.rsplit("-", 1)[0] == other.rsplit("-", 1)[0]  # the same but for the hash
    assert re.fullmatch(gke_backend_regex("payments", blue), other)
    assert is_gke_backend_of(mine, "payments", blue)
    assert not is_gke_backend_of(other, "payments", blue)
    # The trimmed port itself: every port it can have been is tried against the hash.
    for port, kept in ((54321, "5"), (80, "")):
        cut = neg("3f9a0c1e", DIGITS, DIGITS, port)
        assert cut.split("-")[-2] == kept and is_gke_backend_of(cut, DIGITS, DIGITS)
        assert not is_gke_backend_of(cut, DIGITS, DIGITS[:-1] + "8")


def test_hyphens_do_not_let_one_service_pass_for_another() -> None:
    # "team-a" + "api" and "team" + "a-api" read the same once joined by hyphens.
    other = neg("3f9a0c1e", "team", "a-api", 8080)
    assert re.fullmatch(gke_backend_regex("team-a", "api"), other)
    assert not is_gke_backend_of(other, "team-a", "api")
    assert is_gke_backend_of(other, "team", "a-api")
    assert not is_gke_backend_of("k8s1-3f9a0c1e-team-a-api-8080-00000000", "team-a", "api")
    assert not is_gke_backend_of("my-own-backend", "team-a", "api")


@pytest.mark.parametrize(
    ("namespace", "service", "name"),
    [
        # Backend services GKE's Gateway controller wrote, as published in public repositories;
        # the second and third were cut to 63 characters.
        ("secure-app", "secure-demo", "gkegw1-qm6k-secure-app-secure-demo-8080-wqi4f7l2fh2l"),
        (
            "kalchemy",
            "access-advisor-middleware-svc",
            "gkegw1-jgyx-kalchem-access-advisor-middleware-8000-78qnvyiusmha",
        ),
        (
            "llm-d-inference-scheduling",
            "qwen2-3b-pattern1-kserve-workload-svc",
            "gkegw1-pzx5-llm-d-inferenc-qwen2-3b-pattern1--8000-jfiarzj058qe",
        ),
    ],
)
def test_gateway_backends_are_found_by_their_shape(namespace, service, name) -> None:
    assert re.fullmatch(gke_backend_regex(namespace, service), name)
    assert is_gke_backend_of(name, namespace, service)
    assert not re.fullmatch(gke_backend_regex(namespace, "other"), name)
    assert not re.fullmatch(gke_backend_regex("other", service), name)


def test_a_trimmed_gateway_name_cannot_be_told_apart() -> None:
    """GKE does not publish what a Gateway backend's hash covers: another
    Service's name trimmed to the same text passes (docs/production.md)."""
    other = "gkegw1-olqr-defa-ledger-export-worker-for-se-42789-pyg18a9xs63r"
    for service in (
        "ledger-export-worker-for-settlement-reconciliation-blue",
        "ledger-export-worker-for-settlement-reconciliation-gw",
    ):
        assert is_gke_backend_of(other, "default", service)


def test_short_names_keep_the_plain_pattern() -> None:
    pattern = gke_backend_regex("default", "tekutoko-api")
    assert "k8s1-[0-9a-f]{8}-default-tekutoko-api-[0-9]+-[0-9a-f]{8}" in pattern
    assert "gkegw1-[0-9a-z]{4}-default-tekutoko-api-[0-9]+-[0-9a-z]{12}" in pattern
    assert "\\" not in pattern  # nothing a filter's string literal would have to escape


def test_a_custom_filter_is_taken_as_written() -> None:
    source = MonitoringConfig(
        preset="gke_l7",
        resource_filter='resource.type = "https_lb_rule" AND '
        'resource.labels.backend_target_name = "my-backend"',
    ).source()
    assert not source.checks_backends()
    assert MonitoringConfig(preset="gke_l7").source().checks_backends()
    assert not MonitoringConfig(preset="managed_prometheus").source().checks_backends()
