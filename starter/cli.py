"""The `modoru` command line."""

from __future__ import annotations

import os
import sys

import typer

app = typer.Typer(help="modoru: durable, approval-gated rollbacks for Kubernetes and Cloud SQL.", no_args_is_help=True, add_completion=False)
sandbox_app = typer.Typer(help="The practice world: a Kubernetes API, deployment controller and service front ends.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("up", context_settings={"allow_extra_args": False})
def sandbox_up(
    scenario: str = typer.Option("tekutoko", help="A bundled scenario name or a YAML file."),
    state_dir: str = typer.Option(".modoru/sandbox", help="Where kubeconfig, endpoints.json and the request log go."),
    port: int = typer.Option(0, min=0, max=65535, help="API port on 127.0.0.1 (0: any free port)."),
) -> None:
    """Run the sandbox in the foreground until Ctrl-C."""
    # The sandbox runs as its own program: the front door never imports the practice world.
    argv = [sys.executable, "-m", "sandbox", "up", "--scenario", scenario, "--state-dir", state_dir, "--port", str(port)]
    os.execv(sys.executable, argv)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
