"""What every `modoru` command shares: the consoles, the one-line error, turning
a pydantic error into the option it names, and running one command against
Temporal. Imports nothing else from `starter/`, so every other module of the
front door can import it and none of them needs another."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError

from worker.client import TemporalUnreachable, connect
from worker.codec import CodecSettingsError
from worker.settings import Settings

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

Command = Callable[[Client, Settings], Awaitable[int]]
WebUiFor = Callable[[str, str | None], str | None]


T = TypeVar("T")


async def answered(update: Awaitable[T], seconds: float) -> T | None:
    """The answer to an update, or None when no worker gave one within `seconds`. (The SDK
    turns the cancelled call into its own error, which `asyncio.wait_for` passes on instead of
    a TimeoutError.)"""
    try:
        return await asyncio.wait_for(update, seconds)
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        return None


class CliError(Exception):
    """One line for the user; exit code 2 unless said otherwise."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> typer.Exit:
    """Say `message` in one line on stderr; raise what this returns."""
    err_console.print(f"modoru: {message}", highlight=False, markup=False)
    return typer.Exit(code)


def first_error(exc: ValidationError) -> str:
    """The first problem pydantic found, named by the option the user typed."""
    error = exc.errors()[0]
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # a rule across options, e.g. "give steps or to_version, not both"
        return message
    field = ".".join(str(p) for p in error["loc"])
    return f"--{field.replace('_', '-')}: {message}"


def run(command: Command, *, web_ui_for: WebUiFor | None = None) -> NoReturn:
    """Connect, run one command, turn known errors into one line, and exit with
    the command's code. `web_ui_for(address, configured)` names the Web UI of the
    Temporal the client reached, for the links commands print."""

    async def main() -> int:
        settings = Settings()
        client = await connect(settings)
        if web_ui_for is not None:
            settings = settings.model_copy(
                update={
                    "web_ui": web_ui_for(client.service_client.config.target_host, settings.web_ui)
                }
            )
        return await command(client, settings)

    try:
        code = asyncio.run(main())
    except (TemporalUnreachable, CliError, CodecSettingsError) as exc:
        err_console.print(f"modoru: {exc}", highlight=False, markup=False)
        code = getattr(exc, "code", 2)
    # The Temporal client's native runtime can crash while the interpreter tears
    # down its threads; everything is said and flushed by now, so leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
