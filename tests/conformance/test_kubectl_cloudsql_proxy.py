"""The runbook's database access, as written: `kubectl exec ... -- psql -h
localhost ...` in an app pod reaches the Cloud SQL instance that the pod's
Auth Proxy sidecar names, and patching the sidecar's instance and rolling out
moves where new pods reach."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.scenario import DatabaseSeed, load_scenario
from tests.conftest import RunningSandbox, fast_scenario, require_kubectl

pytestmark = pytest.mark.conformance

PROJECT_REGION = "tekutoko-prod:asia-northeast1"
REPLICAS = load_scenario("tekutoko-release").deployments[0].replicas
PSQL = ("psql", "-h", "localhost", "-U", "tekutoko", "-d", "tekutoko_production", "-XAt", "-c")


@pytest.fixture(autouse=True)
def _kubectl() -> None:
    require_kubectl()


@pytest.fixture(scope="module")
def two_dbs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """tekutoko-db with the sample data, and other-db at the same schema with no users."""
    release = load_scenario("tekutoko-release")
    main = release.databases[0]
    other = DatabaseSeed(
        instance="other-db",
        database=main.database,
        user=main.user,
        password=main.password,
        secret="other-db",
        prepare=[["{python}", "-m", "sandbox.app", "migrate", "up"]],
    )
    running = RunningSandbox(
        fast_scenario("tekutoko-release", databases=[main, other]),
        tmp_path_factory.mktemp("proxy") / "sandbox",
    )
    try:
        yield running
    finally:
        running.stop()


def pods(sandbox: RunningSandbox) -> list[str]:
    return sandbox.kubectl(
        "get", "pods", "-l", "app=tekutoko-api", "-o", "jsonpath={.items[*].metadata.name}"
    ).stdout.split()


def point_proxy_at(sandbox: RunningSandbox, connection_name: str) -> None:
    patch = [
        {
            "op": "replace",
            "path": "/spec/template/spec/initContainers/0/args/3",
            "value": connection_name,
        }
    ]
    sandbox.kubectl("patch", "deployment", "tekutoko-api", "--type=json", "-p", json.dumps(patch))
    sandbox.kubectl("rollout", "status", "deployment/tekutoko-api", "--timeout=60s")
    sandbox.wait_for(
        lambda: (
            all(
                connection_name
                in sandbox.kubectl(
                    "get", "pod", p, "-o", "jsonpath={.spec.initContainers[0].args}"
                ).stdout
                for p in pods(sandbox)
            )
            and len(pods(sandbox)) == REPLICAS
        ),
        what="only new pods",
    )


def test_psql_in_an_app_pod_reaches_the_instance_the_sidecar_names(two_dbs: RunningSandbox) -> None:
    result = two_dbs.kubectl(
        "exec", "deploy/tekutoko-api", "-c", "api", "--", *PSQL, "select count(*) from users"
    )
    assert (result.stdout, result.stderr) == ("4\n", "")
    listed = two_dbs.kubectl("exec", "deploy/tekutoko-api", "-c", "api", "--", *PSQL, r"\dt").stdout
    assert "public|users|table|tekutoko" in listed
    # What the app's own commands use: the Secret says localhost:5432, the proxy does the rest.
    secret = json.loads(two_dbs.kubectl("get", "secret", "tekutoko-db", "-o", "json").stdout)[
        "data"
    ]
    assert {k: secret[k] for k in ("DATABASE_HOST", "DATABASE_PORT")} == {
        "DATABASE_HOST": "bG9jYWxob3N0",
        "DATABASE_PORT": "NTQzMg==",
    }
    assert (
        two_dbs.kubectl(
            "exec", "deploy/tekutoko-api", "--", "/api", "migrate", "version"
        ).stdout.strip()
        == "5"
    )


def test_pods_report_the_sidecar_as_kubectl_expects(two_dbs: RunningSandbox) -> None:
    table = two_dbs.kubectl("get", "pods", "-l", "app=tekutoko-api").stdout.splitlines()
    assert (
        all(line.split()[1:3] == ["2/2", "Running"] for line in table[1:])
        and len(table) == 1 + REPLICAS
    )
    pod = pods(two_dbs)[0]
    described = two_dbs.kubectl("describe", "pod", pod).stdout
    assert (
        "Init Containers:\n  cloud-sql-proxy:" in described
        and f"{PROJECT_REGION}:tekutoko-db" in described
    )
    log = two_dbs.kubectl("logs", pod, "-c", "cloud-sql-proxy").stdout.splitlines()
    assert (
        json.loads(log[1])["message"]
        == f"[{PROJECT_REGION}:tekutoko-db] Listening on 127.0.0.1:5432"
    )
    # The proxy image has no psql (nor anything else the scenario maps).
    assert (
        two_dbs.kubectl("exec", pod, "-c", "cloud-sql-proxy", "--", "psql", check=False).returncode
        == 127
    )


def test_after_switching_the_sidecars_instance_new_pods_reach_the_other_instance(
    two_dbs: RunningSandbox,
) -> None:
    point_proxy_at(two_dbs, f"{PROJECT_REGION}:other-db")
    for pod in pods(two_dbs):
        result = two_dbs.kubectl(
            "exec", pod, "-c", "api", "--", *PSQL, "select count(*) from users"
        )
        assert result.stdout == "0\n"
    point_proxy_at(two_dbs, f"{PROJECT_REGION}:tekutoko-db")
    assert (
        two_dbs.kubectl(
            "exec", "deploy/tekutoko-api", "-c", "api", "--", *PSQL, "select count(*) from users"
        ).stdout
        == "4\n"
    )


@pytest.mark.parametrize(
    "connection_name", [f"{PROJECT_REGION}:no-such-db", "tekutoko-prod:us-central1:tekutoko-db"]
)
def test_a_sidecar_naming_an_unknown_instance_refuses_connections(
    two_dbs: RunningSandbox, connection_name: str
) -> None:
    point_proxy_at(two_dbs, connection_name)
    try:
        result = two_dbs.kubectl(
            "exec", "deploy/tekutoko-api", "-c", "api", "--", *PSQL, "select 1", check=False
        )
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith(
            'psql: error: connection to server at "localhost" (127.0.0.1), port 5432 failed: '
            "Connection refused\n"
        )
        assert "command terminated with exit code 2" in result.stderr
        migrate = two_dbs.kubectl(
            "exec", "deploy/tekutoko-api", "--", "/api", "migrate", "version", check=False
        )
        assert migrate.returncode == 1
        assert migrate.stderr.startswith(
            "error: cannot connect to the database at localhost:5432/tekutoko_production: "
            "Connection refused\n"
        )
        # kubectl picks the pod an exec of deploy/ runs in (its choice differs by version): the
        # proxy of that one logged it.
        errors = [
            json.loads(line)
            for pod in pods(two_dbs)
            for line in two_dbs.kubectl("logs", pod, "-c", "cloud-sql-proxy").stdout.splitlines()
        ]
        assert any(e["severity"] == "ERROR" and connection_name in e["message"] for e in errors)
    finally:
        point_proxy_at(two_dbs, f"{PROJECT_REGION}:tekutoko-db")


def test_the_python_client_reads_pods_with_init_container_statuses(
    two_dbs: RunningSandbox, tmp_path: Path
) -> None:
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(two_dbs.kubeconfig))
    try:
        items = (
            client.CoreV1Api(api_client)
            .list_namespaced_pod("default", label_selector="app=tekutoko-api")
            .items
        )
    finally:
        api_client.close()
    assert items
    for pod in items:
        (sidecar,) = pod.status.init_container_statuses
        assert (
            sidecar.name,
            sidecar.ready,
            sidecar.started,
            sidecar.state.running is not None,
        ) == ("cloud-sql-proxy", True, True, True)
        assert pod.spec.init_containers[0].restart_policy == "Always"
        assert {c.type: c.status for c in pod.status.conditions}["Initialized"] == "True"
