"""`modoru sandbox up`: bad input is one clear line and a non-zero exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.waiting import until_blocking

MODORU = [sys.executable, "-m", "starter.cli"]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*MODORU, *args], capture_output=True, text=True, timeout=timeout)


def test_unknown_scenario(tmp_path: Path) -> None:
    result = run("sandbox", "up", "--scenario", "nope", "--state-dir", str(tmp_path))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "modoru sandbox: unknown scenario 'nope': use one of tekutoko, tekutoko-release or a "
        "YAML file path"
    )
    assert not (tmp_path / "kubeconfig").exists()


def test_bad_scenario_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nclock_speed: -1\n")
    result = run("sandbox", "up", "--scenario", str(bad), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"modoru sandbox: {bad}: clock_speed: Input should be greater than 0"
    )


def test_busy_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("sandbox", "up", "--port", str(port), "--state-dir", str(tmp_path))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"modoru sandbox: port {port} on 127.0.0.1 is already in use; pick another with --port"
    )


def test_up_writes_kubeconfig_and_endpoints_then_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*MODORU, "sandbox", "up", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        until_blocking(
            f"`modoru sandbox up` to write {tmp_path / 'endpoints.json'}",
            lambda: sorted(p.name for p in tmp_path.iterdir()),
            lambda files: "endpoints.json" in files,
            lambda files: (
                f"files {files}, the process "
                + ("still running" if proc.poll() is None else f"exited {proc.returncode}")
            ),
            30,
        )
        endpoints = json.loads((tmp_path / "endpoints.json").read_text())
        assert endpoints["kubernetes"].startswith("http://127.0.0.1:")
        assert endpoints["services"]["default/tekutoko-api"].startswith("http://127.0.0.1:")
        assert oct(os.stat(tmp_path / "kubeconfig").st_mode & 0o777) == "0o600"
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(tmp_path / "kubeconfig"))
        assert (
            client.AppsV1Api(api)
            .read_namespaced_deployment("tekutoko-api", "default")
            .spec.replicas
            == 3
        )
        api.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "sandbox stopped" in out


def test_a_clock_speed_out_of_range_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "up", "--state-dir", str(tmp_path), "--clock-speed", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (
        result.returncode == 2
        and "--clock-speed must be above 0 and at most 1000, got 0.0" in result.stderr
    )
