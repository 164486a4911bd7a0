"""Every conformance test runs once for each kubectl binary: the project's
(the newest, from the dev dependencies) and any in MODORU_KUBECTL_EXTRA, such as
the oldest kubectl the project supports."""

from __future__ import annotations

import functools
import json
import subprocess

import pytest

from tests.conftest import RunningSandbox, kubectl_binaries, require_kubectl


@functools.cache
def client_version(binary: str) -> str:
    out = subprocess.run(
        [binary, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30
    )
    try:
        return json.loads(out.stdout)["clientVersion"]["gitVersion"]
    except (ValueError, KeyError):
        return binary


def minor_version(binary: str) -> int:
    """14 for v1.14.x, and so on."""
    version = client_version(binary)
    assert version.startswith("v1."), f"{binary}: cannot tell its version ({version})"
    return int(version.split(".")[1])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kubectl_binary" in metafunc.fixturenames:
        binaries = kubectl_binaries() or [None]
        metafunc.parametrize(
            "kubectl_binary",
            binaries,
            ids=[f"kubectl-{client_version(b)}" if b else "no-kubectl" for b in binaries],
            scope="session",
        )


@pytest.fixture(autouse=True)
def _use_kubectl(kubectl_binary: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if kubectl_binary is None:
        require_kubectl()
    monkeypatch.setattr(RunningSandbox, "kubectl_binary", kubectl_binary)
