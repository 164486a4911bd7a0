"""Where the CLI and the worker connect: Temporal's own configuration first,
MODORU_TEMPORAL_* over it; and which Web UI their links name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from starter import stacks
from worker.client import TemporalConfigError, connect_config
from worker.settings import Settings


def settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


def test_nothing_set_is_the_local_dev_server() -> None:
    config = connect_config(
        settings(), environ={"TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"}
    )
    assert (config["target_host"], config["namespace"]) == ("127.0.0.1:7233", "default")
    assert "tls" not in config and "api_key" not in config


def test_temporal_environment_variables_and_profiles(tmp_path: Path) -> None:
    toml = tmp_path / "temporal.toml"
    toml.write_text(
        '[profile.default]\naddress = "a:1"\n[profile.cloud]\naddress = '
        '"ns.acct.tmprl.cloud:7233"\nnamespace = "ns.acct"\napi_key = "secret"\n'
    )
    env = {"TEMPORAL_CONFIG_FILE": str(toml)}
    assert connect_config(settings(), env)["target_host"] == "a:1"
    cloud = connect_config(settings(), {**env, "TEMPORAL_PROFILE": "cloud"})
    assert (cloud["target_host"], cloud["namespace"], cloud["api_key"], cloud["tls"]) == (
        "ns.acct.tmprl.cloud:7233",
        "ns.acct",
        "secret",
        True,
    )
    by_env = connect_config(
        settings(), {**env, "TEMPORAL_ADDRESS": "b:2", "TEMPORAL_NAMESPACE": "prod"}
    )
    assert (by_env["target_host"], by_env["namespace"]) == ("b:2", "prod")


def test_modoru_settings_override_temporal_ones(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    env = {
        "TEMPORAL_CONFIG_FILE": "/nonexistent",
        "TEMPORAL_ADDRESS": "b:2",
        "TEMPORAL_TLS_SERVER_NAME": "frontend.internal",
    }
    config = connect_config(
        settings(
            temporal_address="c:3",
            temporal_namespace="ops",
            temporal_tls_cert=cert,
            temporal_tls_key=key,
        ),
        env,
    )
    assert (config["target_host"], config["namespace"]) == ("c:3", "ops")
    assert isinstance(config["tls"], TLSConfig)
    assert (config["tls"].client_cert, config["tls"].client_private_key, config["tls"].domain) == (
        b"CERT",
        b"KEY",
        "frontend.internal",
    )
    assert connect_config(settings(temporal_tls=False), env)["tls"] is False


def test_a_broken_temporal_toml_is_one_clear_error(tmp_path: Path) -> None:
    toml = tmp_path / "temporal.toml"
    toml.write_text("not toml [")
    with pytest.raises(
        TemporalConfigError,
        match=r"^Temporal client configuration \(.*temporal.toml\): .*TOML parse error",
    ):
        connect_config(settings(), {"TEMPORAL_CONFIG_FILE": str(toml)})


def test_web_ui_for_an_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert stacks.web_ui_for("127.0.0.1:7233") == "http://127.0.0.1:8233"
    assert stacks.web_ui_for("temporal.internal:7233") is None
    assert stacks.web_ui_for("ns.acct.tmprl.cloud:7233") == "https://cloud.temporal.io"
    assert (
        stacks.web_ui_for("127.0.0.1:7233", configured="http://ui.example/") == "http://ui.example"
    )
    path = stacks.register("localhost:17233", "http://127.0.0.1:18233", tmp_path)
    assert stacks.web_ui_for("127.0.0.1:17233") == "http://127.0.0.1:18233"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    path.write_text(
        json.dumps({**json.loads(path.read_text()), "pid": int(gone)})
    )  # a stack that died without cleaning up
    assert stacks.web_ui_for("127.0.0.1:17233") is None
    stacks.unregister("127.0.0.1:17233", pid=int(gone))
    assert not path.exists()
