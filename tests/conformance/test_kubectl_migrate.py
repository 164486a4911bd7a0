"""The runbook's migration commands, as written, with stock kubectl against the
sandbox: `kubectl exec` runs the app's migrate command on the real database."""

from __future__ import annotations

import pytest

from tests.conftest import RunningSandbox

pytestmark = pytest.mark.conformance


def migrate(sandbox: RunningSandbox, *args: str, check: bool = True):
    return sandbox.kubectl(
        "exec", "deploy/tekutoko-api", "-c", "api", "--", "/api", "migrate", *args, check=check
    )


def test_version_history_and_down_through_kubectl_exec(db_sandbox: RunningSandbox) -> None:
    assert migrate(db_sandbox, "version").stdout.strip() == "5"
    history = migrate(db_sandbox, "history").stdout
    assert "5        create_badges" in history and "applied (current)" in history
    migrate(db_sandbox, "down", "1")
    assert migrate(db_sandbox, "version").stdout.strip() == "4"
    assert "5        create_badges             pending" in migrate(db_sandbox, "history").stdout
    migrate(db_sandbox, "down-to", "2")
    assert migrate(db_sandbox, "version").stdout.strip() == "2"


def test_a_refused_step_down_is_kubectls_exit_code(db_sandbox: RunningSandbox) -> None:
    result = migrate(db_sandbox, "down-to", "9", check=False)
    assert result.returncode != 0 and "command terminated with exit code" in result.stderr
    assert migrate(db_sandbox, "version").stdout.strip() == "5"  # nothing changed
