"""Stock `kubectl exec` against the sandbox: WebSocket v5 first, output and exit
codes as a real cluster gives them, stdin with -i, containers with -c."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.scenario import load_scenario
from tests.conftest import RunningSandbox
from tests.sandbox.exec_tool import write_scenario

pytestmark = pytest.mark.conformance


@pytest.fixture
def exec_sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
    running = RunningSandbox(load_scenario(str(write_scenario(tmp_path))), tmp_path / "sandbox")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def pod(exec_sandbox: RunningSandbox) -> str:
    return exec_sandbox.kubectl(
        "get", "pods", "-l", "app=tools", "-o", "jsonpath={.items[0].metadata.name}"
    ).stdout


def kubectl_with_input(
    sandbox: RunningSandbox, text: str, *args: str
) -> subprocess.CompletedProcess:
    """`sandbox.kubectl`, with `text` on kubectl's stdin (a pipe, as in `echo ... | kubectl exec
    -i`)."""
    return sandbox.kubectl(*args, input=text, check=False)


def test_stdout_and_stderr_come_back_on_their_own_streams(
    exec_sandbox: RunningSandbox, pod: str
) -> None:
    result = exec_sandbox.kubectl(
        "exec", pod, "--", "/bin/tool", "echo", "hello", "from", "the", "pod"
    )
    assert (result.stdout, result.stderr) == ("hello from the pod\n", "")
    result = exec_sandbox.kubectl("exec", pod, "--", "/bin/tool", "err", "to", "stderr")
    assert (result.stdout, result.stderr) == ("", "to stderr\n")


def test_a_non_zero_exit_code_becomes_kubectls(exec_sandbox: RunningSandbox, pod: str) -> None:
    result = exec_sandbox.kubectl("exec", pod, "--", "/bin/tool", "exit", "4", check=False)
    assert result.returncode == 4
    assert result.stdout == "exiting with 4\n"
    assert result.stderr == "command terminated with exit code 4\n"


def test_kubectl_speaks_websocket_v5_without_falling_back(
    exec_sandbox: RunningSandbox, pod: str
) -> None:
    mark = exec_sandbox.mark()
    exec_sandbox.kubectl("exec", pod, "--", "/bin/tool", "echo", "ok")
    entries = [e for e in exec_sandbox.requests_since(mark) if e.get("subresource") == "exec"]
    assert [(e["method"], e["status"], e["exec"]["protocol"]) for e in entries] == [
        ("GET", 101, "v5.channel.k8s.io")
    ]


def test_large_output_arrives_whole_and_in_order(exec_sandbox: RunningSandbox, pod: str) -> None:
    result = exec_sandbox.kubectl("exec", pod, "--", "/bin/tool", "lines", "20000")
    assert result.stdout.splitlines() == [f"line {i:07d} " + "x" * 64 for i in range(20000)]
    assert result.stderr.splitlines() == [f"err {i}" for i in range(0, 20000, 10)]


def test_stdin_with_dash_i_reaches_the_command_and_eof_ends_it(
    exec_sandbox: RunningSandbox, pod: str
) -> None:
    result = kubectl_with_input(
        exec_sandbox, "one\ntwo\n", "exec", "-i", pod, "--", "/bin/tool", "cat"
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "ONE\nTWO\nstdin closed\n", "")


def test_dash_c_picks_the_container_and_an_unknown_one_is_refused(
    exec_sandbox: RunningSandbox, pod: str
) -> None:
    assert (
        exec_sandbox.kubectl(
            "exec", pod, "-c", "main", "--", "/bin/tool", "echo", "in", "main"
        ).stdout
        == "in main\n"
    )
    result = exec_sandbox.kubectl(
        "exec", pod, "-c", "sidecar", "--", "/bin/tool", "echo", check=False
    )
    assert result.returncode == 1
    assert result.stderr in (
        # the server's answer
        f"Error from server (BadRequest): container sidecar is not valid for pod {pod}\n",
        # newer kubectl checks the pod's containers itself
        f"error: container sidecar is not valid for pod {pod} out of: main\n",
    )


def test_exec_through_the_deployment(exec_sandbox: RunningSandbox) -> None:
    assert (
        exec_sandbox.kubectl("exec", "deploy/tools", "--", "/bin/tool", "env", "GREETING").stdout
        == "GREETING=hello\n"
    )


def test_an_unknown_pod_and_an_unmapped_command(exec_sandbox: RunningSandbox, pod: str) -> None:
    result = exec_sandbox.kubectl("exec", "nope", "--", "/bin/tool", check=False)
    assert (result.returncode, result.stderr) == (
        1,
        'Error from server (NotFound): pods "nope" not found\n',
    )
    result = exec_sandbox.kubectl("exec", pod, "--", "sh", "-c", "id", check=False)
    assert result.returncode == 127
    assert 'exec: "sh": executable file not found in $PATH' in result.stderr
    assert result.stderr.endswith("command terminated with exit code 127\n")


def test_without_websockets_kubectl_is_told_why(
    exec_sandbox: RunningSandbox, pod: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
    result = exec_sandbox.kubectl("exec", pod, "--", "/bin/tool", "echo", check=False)
    assert result.returncode == 1
    assert "serves pods/exec over WebSocket only" in result.stderr and "not SPDY" in result.stderr
