"""pods/exec through the official client: the WebSocket channel protocol, the
exit code on the error channel, stdin, the pod's environment, and the answers
for pods, containers and commands that are not there."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from sandbox.scenario import ScenarioError, load_scenario
from tests.conftest import RunningSandbox
from tests.sandbox.exec_tool import (
    NEVER_PULLS_IMAGE,
    SHORT_TIMEOUT_IMAGE,
    TOOLS_IMAGE,
    write_scenario,
)

NS = "default"


@pytest.fixture
def exec_sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
    running = RunningSandbox(load_scenario(str(write_scenario(tmp_path))), tmp_path / "sandbox")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def core(exec_sandbox: RunningSandbox) -> Iterator[client.CoreV1Api]:
    api_client = config.new_client_from_config(config_file=str(exec_sandbox.kubeconfig))
    yield client.CoreV1Api(api_client)
    api_client.close()


@pytest.fixture
def pod(core: client.CoreV1Api) -> str:
    [only] = core.list_namespaced_pod(NS, label_selector="app=tools").items
    return only.metadata.name


def run(
    core: client.CoreV1Api, pod: str, *command: str, stdin: str | None = None, **options: Any
) -> tuple[str, str, int]:
    """Run `command`, returning stdout, stderr and the exit code the client reads."""
    resp = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        NS,
        command=list(command),
        stdout=True,
        stderr=True,
        stdin=stdin is not None,
        tty=False,
        _preload_content=False,
        **options,
    )
    if stdin is not None:
        resp.write_stdin(stdin)
        resp.close_channel(0)  # v5: tells the server stdin is done, as kubectl does at EOF
    resp.run_forever(timeout=30)
    assert not resp.is_open(), "the server should close the connection when the command ends"
    return resp.read_stdout(), resp.read_stderr(), resp.returncode


def create_pod(
    core: client.CoreV1Api, name: str, image: str = TOOLS_IMAGE, **container: Any
) -> None:
    core.create_namespaced_pod(
        NS,
        {
            "metadata": {"name": name, "labels": {"team": "sre"}},
            "spec": {"containers": [{"name": "main", "image": image, **container}]},
        },
    )


def wait_running(sandbox: RunningSandbox, core: client.CoreV1Api, name: str) -> None:
    def running() -> bool:
        statuses = core.read_namespaced_pod(name, NS).status.container_statuses or []
        return bool(statuses and statuses[0].state.running)

    sandbox.wait_for(running, what=f"pod {name} running")


def exec_entries(sandbox: RunningSandbox, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in sandbox.requests_since(since) if e.get("subresource") == "exec"]


def test_preloaded_output_is_stdout_and_stderr(core, pod) -> None:
    out = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        NS,
        command=["/bin/tool", "echo", "hello", "world"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
    )
    assert out == "hello world\n"


def test_stdout_stderr_and_exit_code_stay_apart(core, pod) -> None:
    assert run(core, pod, "/bin/tool", "echo", "fine") == ("fine\n", "", 0)
    assert run(core, pod, "/bin/tool", "err", "oops") == ("", "oops\n", 0)
    assert run(core, pod, "/bin/tool", "exit", "3") == ("exiting with 3\n", "", 3)


def test_the_error_channel_carries_a_status_like_the_kubelet(core, pod) -> None:
    resp = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        NS,
        command=["/bin/tool", "exit", "42"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
        _preload_content=False,
    )
    resp.run_forever(timeout=30)
    assert resp.subprotocol == "v5.channel.k8s.io"
    status = json.loads(resp.read_channel(3))
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "42"}]


def test_stdin_is_forwarded_and_closing_it_ends_the_command(core, pod) -> None:
    out, err, code = run(core, pod, "/bin/tool", "cat", stdin="first\nsecond\n")
    assert (out, err, code) == ("FIRST\nSECOND\nstdin closed\n", "", 0)


def test_the_process_sees_the_pods_environment_and_the_log_never_does(exec_sandbox, core) -> None:
    mark = exec_sandbox.mark()
    create_pod(
        core,
        "env-check",
        env=[
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "db", "key": "PASSWORD"}},
            },
            {
                "name": "LEVEL",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LOG_LEVEL"}},
            },
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
            {"name": "GREETING", "value": "hi $(DB_USER), $$(literal)"},
            {
                "name": "MAYBE",
                "valueFrom": {"secretKeyRef": {"name": "absent", "key": "X", "optional": True}},
            },
        ],
        envFrom=[
            {"secretRef": {"name": "db"}, "prefix": "DB_"},
            {"configMapRef": {"name": "settings"}},
        ],
    )
    wait_running(exec_sandbox, core, "env-check")
    out, _, code = run(
        core,
        "env-check",
        "/bin/tool",
        "env",
        "DB_PASSWORD",
        "DB_USER",
        "LEVEL",
        "LOG_LEVEL",
        "POD_NAME",
        "TEAM",
        "GREETING",
        "MAYBE",
        "HOSTNAME",
        "PYTEST_CURRENT_TEST",
    )
    assert code == 0
    assert out.splitlines() == [
        "DB_PASSWORD=s3cret-value",
        "DB_USER=app",
        "LEVEL=debug",
        "LOG_LEVEL=debug",
        "POD_NAME=env-check",
        "TEAM=sre",
        "GREETING=hi app, $(literal)",
        "MAYBE=<unset>",
        "HOSTNAME=env-check",
        "PYTEST_CURRENT_TEST=<unset>",
    ]
    logged = json.dumps(exec_sandbox.requests_since(mark))
    assert "s3cret-value" not in logged
    assert "s3cret-value" not in (exec_sandbox.sandbox.state_dir / "requests.jsonl").read_text()


def test_an_unresolvable_reference_is_a_container_that_cannot_start(exec_sandbox, core) -> None:
    create_pod(
        core,
        "bad-ref",
        env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "NOPE"}}}],
    )
    wait_running(exec_sandbox, core, "bad-ref")
    with pytest.raises(ApiException) as info:
        run(core, "bad-ref", "/bin/tool", "echo")
    assert "400" in info.value.reason
    assert (
        "CreateContainerConfigError: couldn't find key NOPE in Secret default/db"
        in info.value.reason
    )


def test_an_unknown_pod_is_404(core) -> None:
    with pytest.raises(ApiException) as info:
        run(core, "nope", "/bin/tool", "echo")
    assert "404" in info.value.reason and 'pods \\"nope\\" not found' in info.value.reason


def test_unknown_and_ambiguous_containers_are_400(exec_sandbox, core, pod) -> None:
    with pytest.raises(ApiException) as info:
        run(core, pod, "/bin/tool", "echo", container="sidecar")
    assert (
        "400" in info.value.reason
        and f"container sidecar is not valid for pod {pod}" in info.value.reason
    )
    core.create_namespaced_pod(
        NS,
        {
            "metadata": {"name": "two"},
            "spec": {
                "containers": [
                    {"name": "main", "image": TOOLS_IMAGE},
                    {"name": "proxy", "image": TOOLS_IMAGE},
                ]
            },
        },
    )
    wait_running(exec_sandbox, core, "two")
    with pytest.raises(ApiException) as info:
        run(core, "two", "/bin/tool", "echo")
    assert (
        "a container name must be specified for pod two, choose one of: [main proxy]"
        in info.value.reason
    )
    assert run(core, "two", "/bin/tool", "echo", "main", container="main") == ("main\n", "", 0)
    with pytest.raises(ApiException) as info:  # the sandbox's kubelet runs only the first container
        run(core, "two", "/bin/tool", "echo", container="proxy")
    assert 'unable to upgrade connection: container not found (\\"proxy\\")' in info.value.reason


def test_a_container_that_is_not_running_cannot_be_exec_d_into(exec_sandbox, core) -> None:
    create_pod(core, "stuck", image=NEVER_PULLS_IMAGE)
    exec_sandbox.wait_for(
        lambda: (
            "Err"
            in json.dumps(core.read_namespaced_pod("stuck", NS).to_dict()["status"], default=str)
        ),
        what="the image pull to fail",
    )
    with pytest.raises(ApiException) as info:
        run(core, "stuck", "/bin/tool", "echo")
    assert (
        "400" in info.value.reason
        and 'unable to upgrade connection: container not found (\\"main\\")' in info.value.reason
    )


def test_large_output_arrives_whole_and_in_order(core, pod) -> None:
    out, err, code = run(core, pod, "/bin/tool", "lines", "20000")
    assert code == 0
    assert out.splitlines() == [f"line {i:07d} " + "x" * 64 for i in range(20000)]
    assert err.splitlines() == [f"err {i}" for i in range(0, 20000, 10)]


def test_unmapped_commands_are_not_found_and_nothing_on_the_host_runs(core, pod) -> None:
    out, err, code = run(core, pod, "ls", "/")
    assert (out, code) == ("", 127)
    assert 'exec: "ls": executable file not found in $PATH' in err and "maps no command 'ls'" in err
    _, err, code = run(core, pod, "/bin/gone")  # mapped, but the program is missing on this machine
    assert code == 127 and "no such file or directory" in err.lower()


def test_a_command_past_its_time_is_killed(exec_sandbox, core, tmp_path) -> None:
    create_pod(core, "slow", image=SHORT_TIMEOUT_IMAGE)
    wait_running(exec_sandbox, core, "slow")
    started = time.monotonic()
    out, err, code = run(core, "slow", "/bin/tool", "sleep", "60", str(tmp_path / "pid"))
    assert time.monotonic() - started < 15
    assert (out, code) == ("sleeping\n", 137)
    assert "ran longer than 1s and was killed" in err


def test_a_client_that_goes_away_takes_its_process_with_it(
    exec_sandbox, core, pod, tmp_path
) -> None:
    mark = exec_sandbox.mark()
    pidfile = tmp_path / "pid"
    resp = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        NS,
        command=["/bin/tool", "sleep", "120", str(pidfile)],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
        _preload_content=False,
    )
    assert resp.readline_stdout(timeout=15) == "sleeping"
    pid = int(pidfile.read_text())
    resp.close()

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    exec_sandbox.wait_for(gone, timeout=15, what="the exec'd process to be killed")
    entry = exec_sandbox.wait_for(
        lambda: exec_entries(exec_sandbox, mark), what="the exec in the request log"
    )[0]
    assert entry["exec"]["outcome"] == "client disconnected"


def test_stopping_the_sandbox_ends_running_execs(tmp_path) -> None:
    running = RunningSandbox(load_scenario(str(write_scenario(tmp_path))), tmp_path / "sandbox")
    api_client = config.new_client_from_config(config_file=str(running.kubeconfig))
    try:
        core = client.CoreV1Api(api_client)
        [only] = core.list_namespaced_pod(NS, label_selector="app=tools").items
        resp = stream(
            core.connect_get_namespaced_pod_exec,
            only.metadata.name,
            NS,
            command=["/bin/tool", "sleep", "120", str(tmp_path / "pid")],
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
            _preload_content=False,
        )
        assert resp.readline_stdout(timeout=15) == "sleeping"
        pid = int((tmp_path / "pid").read_text())
    finally:
        started = time.monotonic()
        running.stop()
        api_client.close()
    assert time.monotonic() - started < 10
    resp.run_forever(timeout=5)
    assert resp.returncode == 137
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_tty_gets_a_terminal(core, pod) -> None:
    resp = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        NS,
        command=["/bin/tool", "tty"],
        stdout=True,
        stderr=True,
        stdin=True,
        tty=True,
        _preload_content=False,
    )
    resp.run_forever(timeout=30)
    assert resp.read_stdout().strip() == "stdin=True stdout=True"
    assert resp.returncode == 0


def test_older_protocols_use_plain_text_errors(exec_sandbox, pod) -> None:
    url = (
        exec_sandbox.url.replace("http://", "ws://")
        + f"/api/v1/namespaces/{NS}/pods/{pod}/exec?command=/bin/tool&command=exit&command=5"
    )
    ws = websocket.create_connection(url, subprotocols=["v2.channel.k8s.io"], timeout=30)
    frames = {}
    try:
        while True:
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            frames[data[0]] = frames.get(data[0], b"") + data[1:]
    finally:
        ws.close()
    assert ws.getsubprotocol() == "v2.channel.k8s.io"
    assert frames[1] == b"exiting with 5\n"
    assert frames[3].decode() == "command terminated with non-zero exit code: exit status 5"


def test_the_asyncio_client_runs_commands_too(exec_sandbox, pod) -> None:
    from kubernetes.aio import client as aio_client
    from kubernetes.aio import config as aio_config
    from kubernetes.aio.stream import WsApiClient

    async def scenario() -> tuple[str, int]:
        conf = aio_client.Configuration()
        await aio_config.load_kube_config(
            config_file=str(exec_sandbox.kubeconfig), client_configuration=conf
        )
        async with WsApiClient(configuration=conf) as api:
            core = aio_client.CoreV1Api(api_client=api)
            out = await core.connect_get_namespaced_pod_exec(
                pod,
                NS,
                command=["/bin/tool", "echo", "from", "aio"],
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
            )
            connect = await core.connect_get_namespaced_pod_exec_without_preload_content(
                pod,
                NS,
                command=["/bin/tool", "exit", "7"],
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
            )
            error = b""
            async with connect as ws:
                async for msg in ws:
                    if msg.data[0] == 3:
                        error += msg.data[1:]
            return out, WsApiClient.parse_error_data(error)

    assert asyncio.run(scenario()) == ("from aio\n", 7)


def test_each_exec_is_one_request_log_entry(exec_sandbox, core, pod) -> None:
    mark = exec_sandbox.mark()
    run(core, pod, "/bin/tool", "exit", "2")
    [entry] = exec_entries(exec_sandbox, mark)
    assert (entry["method"], entry["status"], entry["name"]) == ("GET", 101, pod)
    assert "command=exit" in entry["query"]
    assert entry["exec"]["exit_code"] == 2 and entry["exec"]["container"] == "main"
    assert entry["exec"]["protocol"] == "v5.channel.k8s.io"


def test_the_bundled_scenario_maps_api_to_the_sample_app() -> None:
    scenario = load_scenario("tekutoko")
    image = scenario.deployments[0].revisions[-1].image
    assert scenario.profile_for(image).exec_argv(["/api", "migrate", "up"]) == [
        sys.executable,
        "-m",
        "sandbox.app",
        "migrate",
        "up",
    ]
    assert scenario.profile_for(image.rsplit(":", 1)[0] + ":9.9.9").exec_argv(["/api"]) == [
        sys.executable,
        "-m",
        "sandbox.app",
    ]
    assert scenario.profile_for(image).exec_argv(["/bin/sh"]) is None


@pytest.mark.parametrize(
    ("commands", "message"),
    [
        ("{'/api migrate': ['x']}", "the key is one executable path"),
        ("{/api: []}", "non-empty list"),
        ("{/api: ['{pyhton}', '-m', 'app']}", "unknown placeholder {pyhton}"),
    ],
)
def test_a_bad_commands_mapping_is_one_clear_line(
    tmp_path: Path, commands: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: x\nimages:\n  - match: '*'\n    profile: {{commands: {commands}}}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    assert "images.0.profile.commands" in str(info.value) and message in str(info.value)
