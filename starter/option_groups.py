"""Options that several commands share, declared once: a group is a dataclass
(what the command receives) and a table of the options' types and Typer
declarations (what `--help` shows). A command declares its own options and one
keyword-only parameter of the group's type; the group's decorator puts the
shared options where that parameter stands, so `--help` lists them in the
command's order, and hands the command one instance with what the user typed.
A person named on the command line (--requested-by, --by) is checked there too,
in every command that has a group: a name with invisible characters (a
zero-width space, a bidi control) is refused in one line before anything runs.
Imports nothing from `starter/`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import typer
from typer.models import OptionInfo

from runbook.identity import check_person

Table = dict[str, tuple[Any, OptionInfo | None]]  # name: (type, declaration or None: each says)
Command = Callable[..., Any]
PERSON_OPTIONS = {"requested_by": "--requested-by", "by": "--by"}


def check_people(given: dict[str, Any]) -> None:
    """Refuse (one line on stderr, exit code 2) a person's name with invisible characters."""
    for name, option in PERSON_OPTIONS.items():
        value = given.get(name)
        if isinstance(value, str):
            try:
                check_person(value, option)
            except ValueError as exc:
                typer.echo(f"modoru: {exc}", err=True)
                raise typer.Exit(2) from None


def option_group(group: type, table: Table) -> Callable[..., Callable[[Command], Command]]:
    """The decorator factory for one group of shared options.

    The factory takes `without`: options of the group the command does not offer (the group's
    field is then None); `own_after`: the command's options declared after the group's parameter
    come after this shared option; and keyword arguments: a declaration the command words its own
    way (or one the table leaves to each command, which the command then offers)."""

    def options(
        *, without: Iterable[str] = (), own_after: str | None = None, **declared: OptionInfo
    ) -> Callable[[Command], Command]:
        unknown = (set(declared) | set(without)) - set(table)
        if unknown:
            raise TypeError(f"not a shared {group.__name__} option: {', '.join(sorted(unknown))}")
        names = [
            name
            for name, (_, option) in table.items()
            if name not in without and (option is not None or name in declared)
        ]
        shared = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=declared.get(name) or table[name][1],
                annotation=table[name][0],
            )
            for name in names
        ]
        split = names.index(own_after) + 1 if own_after else len(names)

        def decorate(command: Command) -> Command:
            signature = inspect.signature(command, eval_str=True)
            params = [
                p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                for p in signature.parameters.values()
            ]
            (at,) = [i for i, p in enumerate(params) if p.annotation is group]
            marker = params[at].name

            @functools.wraps(command)
            def with_options(**given: Any) -> Any:
                check_people(given)
                values = group(**{name: given.pop(name) for name in names})
                return command(**given, **{marker: values})

            parameters = [*params[:at], *shared[:split], *params[at + 1 :], *shared[split:]]
            with_options.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
            with_options.__annotations__ = {p.name: p.annotation for p in parameters}
            return with_options

        return decorate

    return options
