"""The CLI connects the way the Temporal CLI and SDKs do (TEMPORAL_ADDRESS,
temporal.toml profiles), MODORU_TEMPORAL_* overriding; and `modoru status`
links the Web UI of the stack it talks to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runbook.models import Phase
from starter import stacks
from starter.embedded import free_port
from tests.integration.test_rollback_end_to_end import request, start, wait_phase

pytestmark = pytest.mark.integration


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a new user: no Temporal or modoru settings, no temporal.toml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "MODORU_"))}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        **env,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".state"),
        **extra,
    }


async def test_temporal_address_alone_reaches_the_server(stack, tmp_path: Path) -> None:
    """A new user's shell: only TEMPORAL_ADDRESS, naming a dev server on a free
    port. Each command shows something only that server knows (a rollback
    started there, or its answer that an id is unknown), never the default
    127.0.0.1:7233's refusal."""
    address = stack.settings.temporal_address
    assert address != "127.0.0.1:7233"  # a free port: the default would not reach it
    env = clean_env(tmp_path, TEMPORAL_ADDRESS=address, COLUMNS="300")
    handle = await start(stack, request())
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    try:
        for args in (
            ["list"],
            ["list", "--open"],
            ["history", "--deployment", "tekutoko-api"],
            ["status", handle.id],
            ["status", handle.id, "--json"],
        ):
            shown = await stack.cli(*args, env=env)
            assert shown.returncode == 0, (args, shown.stderr)
            assert handle.id in shown.stdout, (args, shown.stdout)
        unknown = "rollback-default-no-such-deployment"
        for args in (
            ["status", unknown],
            ["approve", unknown, "--by", "sre-lead"],
            ["reject", unknown, "--by", "sre-lead", "--reason", "no"],
        ):
            refused = await stack.cli(*args, env=env)
            assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
            assert (
                refused.stderr.strip()
                == f"modoru: no modoru workflow with id {unknown}: see `modoru list`"
            ), args
        for args in (
            ["guard", "status", "--deployment", "tekutoko-api"],
            ["guard", "stop", "--deployment", "tekutoko-api", "--by", "oncall", "--reason", "done"],
        ):
            refused = await stack.cli(*args, env=env)
            assert refused.returncode == 2, (args, refused.stderr)
            assert "no modoru workflow with id guard-default-tekutoko-api" in refused.stderr, (
                args,
                refused.stderr,
            )
    finally:
        await stack.cli(
            "reject", handle.id, "--by", "sre-lead", "--reason", "cleanup", env=stack.env
        )
        await handle.result()
    nowhere = await stack.cli("list", env=clean_env(tmp_path, TEMPORAL_ADDRESS="127.0.0.1:1"))
    assert nowhere.stderr.startswith("modoru: cannot reach Temporal at 127.0.0.1:1")


async def test_a_temporal_toml_profile_is_used_and_modoru_settings_override_it(
    stack, tmp_path: Path
) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(
        '[profile.default]\naddress = "127.0.0.1:1"\n\n[profile.sandbox]\naddress = '
        f'"{stack.settings.temporal_address}"\nnamespace = "default"\n'
    )
    env = clean_env(tmp_path, TEMPORAL_CONFIG_FILE=str(config), TEMPORAL_PROFILE="sandbox")
    assert (await stack.cli("list", env=env)).returncode == 0
    overridden = await stack.cli("list", env={**env, "MODORU_TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert overridden.returncode == 2 and overridden.stderr.startswith(
        "modoru: cannot reach Temporal at 127.0.0.1:1"
    )
    default_profile = await stack.cli("list", env={**env, "TEMPORAL_PROFILE": "default"})
    assert default_profile.stderr.startswith("modoru: cannot reach Temporal at 127.0.0.1:1")
    missing = await stack.cli("list", env={**env, "TEMPORAL_PROFILE": "nope"})
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == f"modoru: Temporal client configuration ({config}): Profile 'nope' not found"
    )


async def test_status_links_the_web_ui_of_the_stack_it_talks_to(
    stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = await start(stack, request())
    await wait_phase(handle, Phase.AWAITING_APPROVAL)
    address = stack.settings.temporal_address
    env = clean_env(tmp_path, TEMPORAL_ADDRESS=address, COLUMNS="300")  # the link on one line
    try:
        unknown_ui = await stack.cli("status", handle.id, env=env)
        assert unknown_ui.returncode == 0, unknown_ui.stderr
        assert (
            "web ui" not in unknown_ui.stdout
        )  # no stack registered this address: no link rather than a wrong one

        monkeypatch.setenv("XDG_STATE_HOME", env["XDG_STATE_HOME"])
        stacks.register(
            address, "http://127.0.0.1:18234", tmp_path
        )  # as `modoru up --ui-port 18234` does
        shown = await stack.cli("status", handle.id, env=env)
        assert f"http://127.0.0.1:18234/namespaces/default/workflows/{handle.id}" in shown.stdout

        configured = await stack.cli(
            "status", handle.id, env={**env, "MODORU_WEB_UI": "https://temporal.example.com/"}
        )
        assert (
            f"https://temporal.example.com/namespaces/default/workflows/{handle.id}"
            in configured.stdout
        )

        stacks.unregister(address)
        assert "web ui" not in (await stack.cli("status", handle.id, env=env)).stdout
    finally:
        await stack.cli(
            "reject", handle.id, "--by", "sre-lead", "--reason", "cleanup", env=stack.env
        )
        await handle.result()


def test_modoru_up_tells_other_shells_its_web_ui_and_forgets_it_on_stop(tmp_path: Path) -> None:
    temporal_port, ui_port = free_port(), free_port()
    env = clean_env(tmp_path)
    state = tmp_path / "up"
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "starter.cli",
            "up",
            "--state-dir",
            str(state),
            "--temporal-port",
            str(temporal_port),
            "--ui-port",
            str(ui_port),
            "--traffic-rps",
            "0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    entry = stacks.registry_dir(env) / f"127.0.0.1_{temporal_port}.json"
    try:
        deadline = time.monotonic() + 90
        while not entry.exists():
            assert up.poll() is None, up.stdout.read() if up.stdout else ""
            assert time.monotonic() < deadline, "modoru up did not register its stack"
            time.sleep(0.2)
        assert json.loads(entry.read_text())["web_ui"] == f"http://127.0.0.1:{ui_port}"
        assert (
            stacks.web_ui_for(f"127.0.0.1:{temporal_port}", environ=env)
            == f"http://127.0.0.1:{ui_port}"
        )
        # its temporal.toml serves the Temporal CLI and modoru alike
        listed = subprocess.run(
            [sys.executable, "-m", "starter.cli", "list"],
            env={**env, "TEMPORAL_CONFIG_FILE": str(state / "temporal.toml")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=60)
    assert f"export TEMPORAL_ADDRESS=127.0.0.1:{temporal_port}" in out
    assert not entry.exists()
