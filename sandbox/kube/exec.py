"""pods/exec: the WebSocket remote-command protocol (v5 down to the unversioned
channel.k8s.io) in front of a local process that stands in for the container's
command.

Which local program answers for a container's executable is the scenario's
decision (`ImageProfile.commands`); anything unmapped is "not found", so an exec
can never reach an arbitrary host binary. The process sees the pod's environment
(env, envFrom, secret and config map references) and nothing of the host's,
plus, in a pod with a Cloud SQL Auth Proxy sidecar, the map of its loopback
(`podnet.LOOPBACK_ENV`) computed from the pod's spec when the command starts."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import signal
import struct
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from . import errors, podnet
from .faults import EffectLog, FaultInjector
from .kubelet import Kubelet
from .podenv import container_env, containers
from .resources import PODS
from .store import Store

# Offered in the server's order of preference; the client's order decides (RFC 6455).
PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)
V5 = PROTOCOLS[0]
STATUS_PROTOCOLS = PROTOCOLS[
    :2
]  # v4+ put a metav1.Status on the error channel, older ones plain text
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
READ_CHUNK = 32 * 1024
OUTPUT_GRACE_SECONDS = 2.0
OUTPUT_HEAD_BYTES = 4096
# `python -m sandbox.<module>` must resolve to this checkout whatever the caller's cwd.
WORKDIR = Path(__file__).resolve().parents[2]
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}  # what Go's strconv.ParseBool accepts


@dataclass
class ExecOptions:
    command: list[str]
    container: str
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None else value in _TRUE


def parse_options(request: web.Request, pod: dict[str, Any]) -> ExecOptions:
    """Check the request the way the API server and kubelet do, in their order."""
    name = pod["metadata"]["name"]
    regular = [c["name"] for c in pod["spec"]["containers"]]
    container = request.query.get("container", "")
    if not container:
        if len(regular) != 1:
            raise errors.bad_request(
                f"a container name must be specified for pod {name}, choose one of: "
                f"[{' '.join(regular)}]"
            )
        container = regular[0]
    elif container not in [c["name"] for c in containers(pod)]:
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    tty = _flag(request, "tty", False)
    options = ExecOptions(
        command=request.query.getall("command", []),
        container=container,
        stdin=_flag(request, "stdin", False),
        stdout=_flag(request, "stdout", True),
        stderr=_flag(request, "stderr", True) and not tty,
        tty=tty,
    )
    if not (options.stdin or options.stdout or options.stderr):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    if not options.command:
        raise errors.bad_request("you must specify at least one command for the container")
    return options


def _running(pod: dict[str, Any], container: str) -> bool:
    status = pod.get("status") or {}
    statuses = [
        *(status.get("containerStatuses") or []),
        *(status.get("initContainerStatuses") or []),
    ]
    return any(s.get("name") == container and "running" in (s.get("state") or {}) for s in statuses)


# -- statuses on the error channel ----------------------------------------------------


def exit_status(code: int, message: str | None = None) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": message
        or f"command terminated with non-zero exit code: command terminated with exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def _not_found_message(executable: str) -> str:
    why = (
        f"stat {executable}: no such file or directory"
        if "/" in executable
        else "executable file not found in $PATH"
    )
    return (
        "OCI runtime exec failed: exec failed: unable to start container process: exec: "
        f'"{executable}": {why}: unknown'
    )


# -- the session ------------------------------------------------------------------------


class _Session:
    """One exec: a process, its pipes (or a pty), and the WebSocket it talks over."""

    def __init__(self, ws: web.WebSocketResponse, options: ExecOptions) -> None:
        self.ws = ws
        self.options = options
        self.protocol = (
            ws.ws_protocol or PROTOCOLS[-1]
        )  # no subprotocol: the unversioned one, like wsstream
        self.proc: asyncio.subprocess.Process | None = None
        self.stdin: asyncio.StreamWriter | None = None
        self.outputs: list[tuple[asyncio.StreamReader, int]] = []
        self.master_fd: int | None = None
        self.pty_pipes: list[asyncio.BaseTransport] = []
        self._send_lock = asyncio.Lock()
        self.client_gone = False
        self.output_head = bytearray()  # the first bytes the command wrote, for the effect log

    async def send(self, channel: int, data: bytes) -> None:
        if self.client_gone or self.ws.closed:
            return
        async with self._send_lock:
            try:
                await self.ws.send_bytes(bytes([channel]) + data)
            except (ConnectionError, RuntimeError):
                self.client_gone = True

    async def start(self, argv: list[str], env: dict[str, str]) -> None:
        o = self.options
        loop = asyncio.get_running_loop()
        if o.tty:
            self.master_fd, slave = pty.openpty()
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    env=env,
                    cwd=WORKDIR,
                    start_new_session=True,
                )
            finally:
                os.close(slave)
            reader = asyncio.StreamReader()
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader),
                os.fdopen(os.dup(self.master_fd), "rb", 0),
            )
            self.pty_pipes.append(transport)
            self.outputs = [(reader, STDOUT)]
            if o.stdin:
                transport, protocol = await loop.connect_write_pipe(
                    lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()),
                    os.fdopen(os.dup(self.master_fd), "wb", 0),
                )
                self.pty_pipes.append(transport)
                self.stdin = asyncio.StreamWriter(transport, protocol, None, loop)
            return
        pipe = asyncio.subprocess.PIPE
        devnull = asyncio.subprocess.DEVNULL
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=pipe if o.stdin else devnull,
            stdout=pipe if o.stdout else devnull,
            stderr=pipe if o.stderr else devnull,
            env=env,
            cwd=WORKDIR,
            start_new_session=True,
        )
        self.stdin = self.proc.stdin
        self.outputs = [
            (s, ch)
            for s, ch in ((self.proc.stdout, STDOUT), (self.proc.stderr, STDERR))
            if s is not None
        ]

    async def diagnostic(self, text: str) -> None:
        """A message from the runtime rather than the command; a tty merges it into stdout."""
        if self.options.stderr or self.options.tty and self.options.stdout:
            await self.send(STDERR if self.options.stderr else STDOUT, text.encode())

    async def pump(self, stream: asyncio.StreamReader, channel: int) -> None:
        while True:
            try:
                chunk = await stream.read(READ_CHUNK)
            except OSError:  # a pty master reads EIO once the last writer is gone
                return
            if not chunk:
                return
            if len(self.output_head) < OUTPUT_HEAD_BYTES:
                self.output_head += chunk[: OUTPUT_HEAD_BYTES - len(self.output_head)]
            await self.send(channel, chunk)

    async def read_client(self) -> None:
        """Forward stdin and resizes until the client closes the connection."""
        async for msg in self.ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                break
            data = msg.data.encode() if isinstance(msg.data, str) else msg.data
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and self.stdin is not None:
                try:
                    self.stdin.write(payload)
                    await self.stdin.drain()
                except (ConnectionError, BrokenPipeError):
                    self.stdin = None  # the process closed its stdin; later input has nowhere to go
            elif (
                channel == CLOSE
                and self.protocol == V5
                and payload[:1] == bytes([STDIN])
                and self.stdin is not None
            ):
                self.stdin.close()
                self.stdin = None
            elif channel == RESIZE and self.master_fd is not None:
                with contextlib.suppress(ValueError, TypeError, KeyError, OSError):
                    size = json.loads(payload)
                    fcntl.ioctl(
                        self.master_fd,
                        termios.TIOCSWINSZ,
                        struct.pack("HHHH", size["Height"], size["Width"], 0, 0),
                    )
        self.client_gone = True

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def finish(self, code: int, message: str | None = None) -> None:
        if self.protocol in STATUS_PROTOCOLS:
            await self.send(ERROR, json.dumps(exit_status(code, message)).encode())
        elif code != 0:
            await self.send(
                ERROR,
                (
                    message or f"command terminated with non-zero exit code: exit status {code}"
                ).encode(),
            )
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.close()

    def close_fds(self) -> None:
        for transport in self.pty_pipes:
            transport.close()
        if self.master_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.master_fd)
            self.master_fd = None


class PodExec:
    """Serves `pods/exec` for the API; `shutdown` ends every session still running."""

    def __init__(
        self,
        store: Store,
        kubelet: Kubelet,
        resolve_instance: podnet.Resolver | None = None,
        faults: FaultInjector | None = None,
        effects: EffectLog | None = None,
    ) -> None:
        self.store = store
        self.kubelet = kubelet
        self.faults = faults or FaultInjector()
        self.effects = effects or EffectLog()
        # Cloud SQL connection name -> the instance's real host and port; None: no instances at all.
        self.resolve_instance: podnet.Resolver = resolve_instance or (lambda _name: None)
        self.sessions: set[_Session] = set()
        self._log: dict[int, dict[str, Any]] = {}  # id(request) -> fields for its request log entry

    def log_fields(self, request: web.Request) -> dict[str, Any]:
        """What the request log should add for this request (once; the command is in the query
        already)."""
        return self._log.pop(id(request), {})

    async def handle(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        pod = self.store.get(PODS, namespace, name)
        options = parse_options(request, pod)
        if not _running(pod, options.container):
            raise errors.bad_request(
                f'unable to upgrade connection: container not found ("{options.container}")'
            )
        try:
            env = container_env(self.store, pod, options.container, tty=options.tty)
        except LookupError as exc:
            raise errors.bad_request(
                f'unable to upgrade connection: container not found ("{options.container}"); '
                f"it could not start: CreateContainerConfigError: {exc.args[0]}"
            ) from None
        loopback = podnet.pod_loopback(pod, self.resolve_instance)
        if loopback is not None:
            ports, problems = loopback
            env[podnet.LOOPBACK_ENV] = podnet.encode(ports)
            for (
                container,
                problem,
            ) in problems:  # what the proxy would log when the connection comes
                self.kubelet.sidecar_log(
                    pod["metadata"]["uid"], container, problem, severity="ERROR"
                )
        ws = web.WebSocketResponse(protocols=PROTOCOLS, timeout=2.0, autoping=True)
        if not ws.can_prepare(request).ok:
            spdy = "spdy" in request.headers.get("Upgrade", "").lower()
            raise errors.bad_request(
                "Upgrade request required"
                + (
                    "; this sandbox serves pods/exec over WebSocket only "
                    f"({', '.join(PROTOCOLS)}), not SPDY"
                    if spdy
                    else ""
                )
            )
        offered = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        if offered and not set(offered) & set(PROTOCOLS):
            raise errors.bad_request(
                f"requested protocol(s) are not supported: {offered}; supports {list(PROTOCOLS)}"
            )
        image = next(c["image"] for c in containers(pod) if c["name"] == options.container)
        profile = self.kubelet.scenario.profile_for(image)
        await ws.prepare(request)
        session = _Session(ws, options)
        # Env values may hold secrets: they are never part of what is logged.
        log: dict[str, Any] = {
            "container": options.container,
            "protocol": session.protocol,
            "exit_code": None,
        }
        self._log[id(request)] = {"exec": log}
        self.sessions.add(session)
        started = time.monotonic()
        try:
            log["exit_code"], log["outcome"] = await self._run(
                session,
                profile.exec_argv(options.command),
                env,
                profile.exec_timeout_seconds,
                image,
                {"namespace": namespace, "name": name, "command": options.command},
            )
        except (
            asyncio.CancelledError
        ):  # aiohttp cancels the handler when the client's connection drops
            log["outcome"] = "client disconnected"
            raise
        finally:
            session.kill()
            session.close_fds()
            self.sessions.discard(session)
            log["seconds"] = round(time.monotonic() - started, 3)
        return ws

    async def _run(
        self,
        session: _Session,
        argv: list[str] | None,
        env: dict[str, str],
        timeout: float,
        image: str,
        what: dict[str, Any],
    ) -> tuple[int | None, str]:
        executable = session.options.command[0]
        if argv is None:
            message = _not_found_message(executable)
            await session.diagnostic(
                f"{message}\n(sandbox: the scenario maps no command {executable!r} for image "
                f"{image})\n"
            )
            await session.finish(127, message)
            return 127, "not found"
        try:
            await session.start(argv, env)
        except OSError as exc:  # a mapped program that is missing or not executable on this machine
            code = 126 if isinstance(exc, PermissionError) else 127
            message = (
                "OCI runtime exec failed: exec failed: unable to start container process: exec: "
                f'"{executable}": {exc.strerror}: unknown'
            )
            await session.diagnostic(f"{message}\n(sandbox: mapped to {argv[0]})\n")
            await session.finish(code, message)
            return code, "cannot start"
        assert session.proc is not None
        exited = asyncio.ensure_future(session.proc.wait())
        client = asyncio.ensure_future(session.read_client())
        pumps = [
            asyncio.ensure_future(session.pump(stream, channel))
            for stream, channel in session.outputs
        ]
        outcome = "exited"
        try:
            await asyncio.wait(
                {exited, client}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not exited.done():
                outcome = "client disconnected" if client.done() else "timed out"
                session.kill()
            code = await exited
            if (
                pumps
            ):  # let the last output through, but not forever: a stray child may hold the pipe
                await asyncio.wait(pumps, timeout=OUTPUT_GRACE_SECONDS)
            session.kill()
        finally:
            for task in (*pumps, client, exited):
                task.cancel()
            await asyncio.gather(*pumps, client, exited, return_exceptions=True)
        code = 128 - code if code < 0 else code  # killed by a signal: the shell's convention
        if outcome == "client disconnected":
            return code, outcome
        if outcome == "timed out":
            await session.diagnostic(
                f"sandbox: the command ran longer than {timeout:g}s and was killed\n"
            )
        # The command ran: an effect, whatever becomes of the answer carrying its exit status.
        self.effects.record(
            "pods.exec",
            **what,
            exit_code=code,
            output=session.output_head.decode("utf-8", "replace"),
        )
        decision = await self.faults.after_write("pods", "exec", what)
        if decision.drop or decision.status is not None:
            await session.ws.close(code=WSCloseCode.INTERNAL_ERROR)
            return code, "answer lost by fault injection"
        await session.finish(code)
        return code, outcome

    async def shutdown(self, app: web.Application) -> None:
        for session in list(self.sessions):
            session.kill()
        deadline = time.monotonic() + 1.0
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
