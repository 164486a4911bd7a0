"""The worker's Kubernetes client skips aiohttp's per-request proxy and netrc
look-ups when the environment names no proxy, and keeps them when it does."""

from __future__ import annotations

import pytest
import yaml

from worker.main import PROXY_VARIABLES, kubernetes_configuration
from worker.settings import Settings

KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "c",
    "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:6443"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
}


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(KUBECONFIG))
    return path


async def test_no_proxy_in_the_environment_means_no_lookups(kubeconfig) -> None:
    configuration = await kubernetes_configuration(Settings(kubeconfig=kubeconfig))
    assert configuration.client_session_kwargs == {"trust_env": False}
    assert configuration.host == "http://127.0.0.1:6443"


async def test_a_proxy_in_the_environment_is_still_honoured(kubeconfig, monkeypatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    configuration = await kubernetes_configuration(Settings(kubeconfig=kubeconfig))
    assert (getattr(configuration, "client_session_kwargs", None) or {}).get(
        "trust_env", True
    ) is True
