"""A pod's loopback, as far as the Cloud SQL Auth Proxy is concerned: the
sandbox's model of a pod's network namespace.

On GKE, a pod's containers share one network namespace. A Cloud SQL Auth Proxy
v2 sidecar (`gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.x`, usually an
`initContainers` entry with `restartPolicy: Always`) listens on
`127.0.0.1:5432` and forwards what arrives there to the instance its
arguments name (`PROJECT:REGION:INSTANCE`), so the app and `psql` in the pod
use `localhost:5432`.

Exec'd processes in the sandbox are local processes and share the host's
loopback, so the sandbox models the namespace with one environment variable
that stand-in programs (the sample app, the `psql` stand-in) consult before
they connect:

    SANDBOX_POD_LOOPBACK="5432=127.0.0.1:54321,5433=-"

Each item is `<port on the pod's loopback>=<where it really goes>`; `-` is a
listener that cannot reach its instance (connection refused). When the
variable is set, a loopback port it does not list is closed; when it is unset
(a pod without a proxy sidecar, or a process outside any pod), loopback
addresses are the host's, unchanged.

The map is computed by the exec handler when a command starts, from the pod's
spec (`pod_loopback`): patching the Deployment's proxy arguments and rolling
out changes where the new pods' loopback leads. A sidecar is recognised by
its image (`*cloud-sql-proxy*`) whatever its name, among init and regular
containers. Its arguments are read as the v2 proxy reads them: `--port N` /
`--port=N` / `-p N` (default 5432), `--address` / `-a` (default 127.0.0.1),
instance connection names as positional arguments, each optionally with a
`?port=N&address=A` query; instances without their own port take consecutive
ports from `--port`. A listener whose address is not a loopback one (or
0.0.0.0) is not reachable as localhost and is left out; Unix-socket and FUSE
modes open no TCP port and are not modelled.

Limits: this maps ports and nothing else. There is no TLS, no IAM database
authentication (`--auto-iam-authn` is accepted and ignored; the password in
the Secret is what PostgreSQL checks), no `--private-ip` network check, and a
program that connects without asking this module reaches the host's loopback.

This module is imported by the stand-ins, so it stays free of the API server's
dependencies.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

LOOPBACK_ENV = "SANDBOX_POD_LOOPBACK"
PROXY_IMAGE_PATTERN = "*cloud-sql-proxy*"
DEFAULT_PORT = 5432
DEFAULT_ADDRESS = "127.0.0.1"
DEAD = "-"
LOOPBACK_HOSTS = frozenset(
    {"", "localhost", "localhost.localdomain", "ip6-localhost", "::1", "0.0.0.0", "::"}
)
_REACHABLE_ADDRESSES = frozenset({"127.0.0.1", "localhost", "0.0.0.0", "::", "::1"})

# v2 proxy flags that take a value (cmd/root.go); any other flag is a boolean.
_VALUE_FLAGS = frozenset(
    {
        "address",
        "port",
        "credentials-file",
        "token",
        "login-token",
        "json-credentials",
        "api-endpoint",
        "sqladmin-api-endpoint",
        "universe-domain",
        "http-address",
        "http-port",
        "admin-port",
        "max-connections",
        "max-sigterm-delay",
        "min-sigterm-delay",
        "quota-project",
        "impersonate-service-account",
        "unix-socket",
        "fuse",
        "fuse-tmp-dir",
        "telemetry-project",
        "telemetry-prefix",
        "telemetry-sample-rate",
        "prometheus-namespace",
        "user-agent",
        "config-file",
        "refresh-strategy",
        "exit-zero-on-sigterm-delay",
        "dial-timeout",
    }
)
_SHORT = {
    "a": "address",
    "p": "port",
    "c": "credentials-file",
    "t": "token",
    "i": "impersonate-service-account",
    "u": "unix-socket",
    "j": "json-credentials",
    "g": "gcloud-auth",
}

# The real host:port an instance connection name leads to, or None if the proxy cannot reach it.
Resolver = Callable[[str], "tuple[str, int] | None"]


class ProxyArgsError(ValueError):
    """Arguments the proxy itself would refuse to start with."""


@dataclass(frozen=True)
class Listener:
    """One TCP listener of a proxy: `address:port` forwards to `instance`."""

    instance: str
    address: str
    port: int


def is_proxy(container: Mapping[str, Any]) -> bool:
    return fnmatch.fnmatchcase(str(container.get("image", "")), PROXY_IMAGE_PATTERN)


def proxy_containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = pod.get("spec") or {}
    return [
        c for key in ("initContainers", "containers") for c in spec.get(key) or [] if is_proxy(c)
    ]


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ProxyArgsError(f"{what}: {text!r} is not a port number")
    return int(text)


def parse_proxy_args(args: list[str]) -> list[Listener]:
    """The TCP listeners a v2 proxy started with `args` opens."""
    flags: dict[str, str] = {}
    instances: list[str] = []
    items = iter(args)
    for arg in items:
        if arg == "--":
            instances.extend(items)
            break
        if arg.startswith("-") and len(arg) > 1:
            body = arg.lstrip("-")
            name, eq, value = body.partition("=")
            if not arg.startswith("--"):
                if not eq and len(body) > 1 and _SHORT.get(body[:1]) in _VALUE_FLAGS:  # -p5432
                    name, eq, value = _SHORT[body[:1]], "=", body[1:]
                else:
                    name = _SHORT.get(name, name)
            if name in _VALUE_FLAGS and not eq:
                value = next(items, None)
                if value is None:
                    raise ProxyArgsError(f"flag needs an argument: --{name}")
            flags[name] = value
            continue
        instances.append(arg)
    if "unix-socket" in flags or "fuse" in flags:
        return []
    next_port = _port(flags["port"], "--port") if "port" in flags else DEFAULT_PORT
    default_address = flags.get("address", DEFAULT_ADDRESS)
    listeners = []
    for item in instances:
        name, _, query = item.partition("?")
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if "unix-socket" in params or "unix-socket-path" in params:
            continue
        if "port" in params:
            port = _port(params["port"], f"{name}?port")
        else:
            port, next_port = next_port, next_port + 1
        listeners.append(Listener(name, params.get("address", default_address), port))
    return listeners


def pod_loopback(
    pod: Mapping[str, Any], resolve: Resolver
) -> tuple[dict[int, tuple[str, int] | None], list[tuple[str, str]]] | None:
    """The pod's loopback ports and where each leads (None: refused), with a
    (proxy container, message) for each listener that cannot reach its
    instance or proxy that would not start; None if no proxy runs in the pod."""
    proxies = proxy_containers(pod)
    if not proxies:
        return None
    ports: dict[int, tuple[str, int] | None] = {}
    problems: list[tuple[str, str]] = []
    for container in proxies:
        try:
            command = list(container.get("command") or [])
            listeners = parse_proxy_args([*command[1:], *(container.get("args") or [])])
        except ProxyArgsError as exc:
            problems.append((str(container.get("name")), f"{exc}"))
            continue
        for listener in listeners:
            if listener.address not in _REACHABLE_ADDRESSES or listener.port in ports:
                continue
            target = resolve(listener.instance)
            ports[listener.port] = target
            if target is None:
                problems.append(
                    (
                        str(container.get("name")),
                        f"[{listener.instance}] failed to connect to instance: "
                        "the instance does not exist in this project and region, or is not running",
                    )
                )
    return ports, problems


def encode(ports: Mapping[int, tuple[str, int] | None]) -> str:
    return ",".join(
        f"{port}={DEAD if to is None else f'{to[0]}:{to[1]}'}" for port, to in sorted(ports.items())
    )


def decode(text: str) -> dict[int, tuple[str, int] | None]:
    ports: dict[int, tuple[str, int] | None] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        port, _, to = item.partition("=")
        if to == DEAD:
            ports[int(port)] = None
        else:
            host, _, real = to.rpartition(":")
            ports[int(port)] = (host, int(real))
    return ports


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    return (
        host in LOOPBACK_HOSTS or host.startswith("127.") or host.startswith("/")
    )  # a socket dir: "no host"


class Refused(ConnectionRefusedError):
    """The pod's loopback has nothing listening on that port."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f'connection to server at "{host or "localhost"}", port {port} refused: nothing '
            "listens there in the pod"
        )
        self.host, self.port = host, port


def translate(host: str, port: int, env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """Where a connection to `host:port` from inside the pod really goes.
    Raises Refused if the pod's loopback has no listener on that port."""
    env = os.environ if env is None else env
    text = env.get(LOOPBACK_ENV)
    if text is None or not is_loopback(host):
        return host, port
    target = decode(text).get(port)
    if target is None:
        raise Refused(host, port)
    return target
