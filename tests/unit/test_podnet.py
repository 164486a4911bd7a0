"""The pod loopback model: Cloud SQL Auth Proxy v2 arguments, the exec-time
map, the psql stand-in's rewriting and the scenario's proxy declaration."""

from __future__ import annotations

from importlib import resources

import pytest

from sandbox.app.cli import conninfo_from_env
from sandbox.app.migrate import MigrateError
from sandbox.app.psql import rewrite
from sandbox.kube import podnet
from sandbox.kube.podnet import Listener, ProxyArgsError, parse_proxy_args
from sandbox.scenario import ScenarioError, load_scenario
from sandbox.world import deployment_manifest

CONN = "tekutoko-prod:asia-northeast1:tekutoko-db"


def test_the_runbook_sidecar_listens_on_localhost_5432() -> None:
    assert parse_proxy_args(["--private-ip", "--structured-logs", "--port=5432", CONN]) == [
        Listener(CONN, "127.0.0.1", 5432)
    ]


def test_ports_are_consecutive_from_port_unless_an_instance_names_its_own() -> None:
    args = [
        "--port",
        "6000",
        "p:r:a",
        "p:r:b?port=7000",
        "p:r:c",
        "--address=0.0.0.0",
        "--auto-iam-authn",
    ]
    assert parse_proxy_args(args) == [
        Listener("p:r:a", "0.0.0.0", 6000),
        Listener("p:r:b", "0.0.0.0", 7000),
        Listener("p:r:c", "0.0.0.0", 6001),
    ]
    assert [x.port for x in parse_proxy_args(["p:r:a", "p:r:b"])] == [5432, 5433]
    assert parse_proxy_args(["-p", "5433", "p:r:a?address=10.0.0.1"]) == [
        Listener("p:r:a", "10.0.0.1", 5433)
    ]
    assert parse_proxy_args(["--unix-socket", "/cloudsql", "p:r:a"]) == []
    with pytest.raises(ProxyArgsError):
        parse_proxy_args(["--port=fifty", "p:r:a"])


def _pod(*init: dict) -> dict:
    return {
        "spec": {
            "containers": [{"name": "api", "image": "x/tekutoko-api:1"}],
            "initContainers": list(init),
        }
    }


def test_the_map_comes_from_the_pod_spec_and_an_unknown_instance_is_closed() -> None:
    proxy = {
        "name": "db-proxy",
        "image": "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.1",
        "restartPolicy": "Always",
        "args": ["--port=5432", CONN, "tekutoko-prod:asia-northeast1:gone"],
    }
    ports, problems = podnet.pod_loopback(_pod(proxy), {CONN: ("127.0.0.1", 40001)}.get)
    assert ports == {5432: ("127.0.0.1", 40001), 5433: None}
    assert [(c, "tekutoko-prod:asia-northeast1:gone" in m) for c, m in problems] == [
        ("db-proxy", True)
    ]
    assert podnet.pod_loopback(_pod(), {}.get) is None  # no proxy: the host's loopback, unchanged
    # Listening on another address than loopback: not localhost in the pod.
    elsewhere = {**proxy, "args": ["--address=10.8.0.3", CONN]}
    assert podnet.pod_loopback(_pod(elsewhere), {CONN: ("127.0.0.1", 40001)}.get) == ({}, [])


def test_translate_and_the_env_var_round_trip() -> None:
    env = {podnet.LOOPBACK_ENV: podnet.encode({5432: ("127.0.0.1", 40001), 5433: None})}
    assert env[podnet.LOOPBACK_ENV] == "5432=127.0.0.1:40001,5433=-"
    assert podnet.translate("localhost", 5432, env) == ("127.0.0.1", 40001)
    assert podnet.translate("10.0.0.5", 5432, env) == ("10.0.0.5", 5432)
    assert podnet.translate("localhost", 5432, {}) == ("localhost", 5432)
    for port in (5433, 6543):
        with pytest.raises(podnet.Refused):
            podnet.translate("127.0.0.1", port, env)


def test_psql_host_and_port_go_through_the_loopback_and_nothing_else_changes() -> None:
    env = {podnet.LOOPBACK_ENV: "5432=127.0.0.1:40001", "PGUSER": "tekutoko"}
    argv, out = rewrite(
        [
            "-h",
            "localhost",
            "-U",
            "tekutoko",
            "-d",
            "tekutoko_production",
            "-XAtc",
            "select 1 -h x -p 1",
        ],
        env,
    )
    assert argv == ["-U", "tekutoko", "-d", "tekutoko_production", "-XAtc", "select 1 -h x -p 1"]
    assert (out["PGHOST"], out["PGPORT"], out["PGUSER"]) == ("127.0.0.1", "40001", "tekutoko")
    assert rewrite(["-XAt"], env)[1]["PGPORT"] == "40001"  # no -h: the pod has no socket, localhost
    argv, _ = rewrite(
        ["postgresql://tekutoko@localhost:5432/tekutoko_production", "-c", "select 1"], env
    )
    assert argv[0] == "user=tekutoko dbname=tekutoko_production host=127.0.0.1 port=40001"
    with pytest.raises(podnet.Refused):
        rewrite(["-h", "localhost", "-p", "5433"], env)
    assert rewrite(["-h", "localhost"], {"PATH": "/bin"}) == (["-h", "localhost"], {"PATH": "/bin"})


def test_the_app_connects_through_the_proxy_when_its_host_is_localhost() -> None:
    env = {
        "DATABASE_HOST": "localhost",
        "DATABASE_PORT": "5432",
        "DATABASE_NAME": "d",
        "DATABASE_USER": "u",
        podnet.LOOPBACK_ENV: "5432=127.0.0.1:40001",
    }
    assert "host=127.0.0.1 port=40001" in conninfo_from_env(env)
    with pytest.raises(MigrateError, match="at localhost:5432/d: Connection refused"):
        conninfo_from_env({**env, podnet.LOOPBACK_ENV: "5432=-"})
    assert "host=localhost port=5432" in conninfo_from_env(
        {k: v for k, v in env.items() if k != podnet.LOOPBACK_ENV}
    )


def test_the_bundled_scenario_runs_the_proxy_as_a_native_sidecar() -> None:
    scenario = load_scenario("tekutoko")
    seed = scenario.deployments[0]
    manifest = deployment_manifest(
        seed, "x/tekutoko-api:1.3.0", connection_name=CONN, database_secret="tekutoko-db"
    )
    spec = manifest["spec"]["template"]["spec"]
    (proxy,) = spec["initContainers"]
    assert proxy["name"] == "cloud-sql-proxy" and proxy["restartPolicy"] == "Always"
    assert proxy["image"].startswith("gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.")
    assert proxy["args"] == ["--private-ip", "--structured-logs", "--port=5432", CONN]
    assert proxy["securityContext"] == {"runAsNonRoot": True}
    env = {
        e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in spec["containers"][0]["env"]
    }
    assert env["PGPASSWORD"] == {"name": "tekutoko-db", "key": "DATABASE_PASSWORD"}


def test_a_proxy_must_name_one_of_the_scenarios_databases(tmp_path) -> None:
    text = (resources.files("sandbox") / "scenarios" / "tekutoko.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        text.replace(
            "cloudsql_proxy: {instance: tekutoko-db", "cloudsql_proxy: {instance: other-db"
        )
    )
    with pytest.raises(
        ScenarioError,
        match="cloudsql_proxy.instance 'other-db' is not one of the scenario's databases",
    ):
        load_scenario(str(bad))
