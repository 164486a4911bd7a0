"""`python -m sandbox up`: run the practice world in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

# The sandbox forks PostgreSQL's programs (as another user on a root machine)
# while its gRPC emulators run; gRPC's fork handlers must not run in those
# children, where they can crash them before exec.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from .scenario import ScenarioError, load_scenario  # noqa: E402
from .world import Sandbox, SandboxError  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="modoru sandbox",
        description="The modoru practice world: a Kubernetes API with a deployment controller "
        "and service front ends.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the sandbox in the foreground until Ctrl-C")
    up.add_argument(
        "--scenario",
        default="tekutoko",
        help="a bundled scenario name or a YAML file (default: tekutoko)",
    )
    up.add_argument(
        "--state-dir",
        default=".modoru/sandbox",
        type=Path,
        help="where kubeconfig, endpoints.json and the request log go",
    )
    up.add_argument(
        "--port", default=0, type=int, help="API port on 127.0.0.1 (default: any free port)"
    )
    up.add_argument(
        "--seed", default=None, type=int, help="random seed for reproducible traffic and faults"
    )
    up.add_argument(
        "--traffic-rps",
        default=0.0,
        type=float,
        help="demo API calls per second to each service (default: none)",
    )
    up.add_argument(
        "--traffic-seconds",
        default=3600.0,
        type=float,
        help="stop the demo traffic after this long (default: 3600)",
    )
    up.add_argument(
        "--clock-speed",
        default=None,
        type=float,
        help="run sandbox time this many times faster than the wall clock, metric time included "
        "(default: the scenario's)",
    )
    up.add_argument(
        "--slack-gateway-url",
        default=None,
        help="where the sandbox Slack sends button clicks (modoru slack-gateway's URL)",
    )
    args = parser.parse_args(argv)
    if args.clock_speed is not None and not 0 < args.clock_speed <= 1000:
        parser.error(f"--clock-speed must be above 0 and at most 1000, got {args.clock_speed}")
    if not 0 <= args.traffic_rps <= 200:
        parser.error(f"--traffic-rps must be between 0 and 200, got {args.traffic_rps}")
    if not 0 < args.traffic_seconds <= 86400:
        parser.error(f"--traffic-seconds must be between 0 and 86400, got {args.traffic_seconds}")
    if args.slack_gateway_url and not args.slack_gateway_url.startswith(("http://", "https://")):
        parser.error(f"--slack-gateway-url must be an http(s) URL, got {args.slack_gateway_url!r}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}")
    return args


async def run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    if args.clock_speed is not None:
        scenario = scenario.model_copy(update={"clock_speed": args.clock_speed})
    sandbox = Sandbox(
        scenario,
        args.state_dir,
        port=args.port,
        seed=args.seed,
        traffic_rps=args.traffic_rps,
        traffic_seconds=args.traffic_seconds,
        slack_gateway_url=args.slack_gateway_url,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sandbox.start()
    print(f"sandbox {scenario.name} is up: Kubernetes API {sandbox.url}", flush=True)
    print(f"  kubeconfig: {sandbox.kubeconfig_path}", flush=True)
    print(f"  endpoints:  {sandbox.endpoints_path}", flush=True)
    for key, url in sandbox.endpoints()["services"].items():
        print(f"  service {key}: {url}", flush=True)
    if sandbox.registry is not None:
        print(f"  Artifact Registry: {sandbox.registry.url}", flush=True)
    if sandbox.github is not None:  # the token stays in its file
        print(
            f"  GitHub API: {sandbox.github.url} (token in {sandbox.github_token_path})", flush=True
        )
    print(f"  Slack: {sandbox.slack.page_url()} (API {sandbox.slack.api_url})", flush=True)
    try:
        await stop.wait()
    finally:
        await sandbox.stop()
    print("sandbox stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args))
    except (ScenarioError, SandboxError) as exc:
        print(f"modoru sandbox: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
