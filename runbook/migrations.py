"""Reading the app's migrate command and planning a step down: pure functions,
so the workflow and the tests share one reading of "version" and "history".

The app follows golang-migrate: `version` prints `N` or `N (dirty)` (`nil` for
none); `history` prints a table of VERSION, NAME and STATE (applied or
pending)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_VERSION = re.compile(r"^\s*(nil|\d+)\s*(\(dirty\))?\s*$")


class MigrationRefused(ValueError):
    """The requested step down cannot be taken; the message says why."""


@dataclass(frozen=True)
class SchemaState:
    version: int | None
    dirty: bool
    applied: tuple[int, ...]
    available: tuple[int, ...]


def parse_version(stdout: str, stderr: str = "") -> tuple[int | None, bool]:
    """The current version and whether it is dirty. golang-migrate itself prints
    to stderr, the sample app to stdout: either is read."""
    for text in (stdout, stderr):
        for line in reversed(text.strip().splitlines()):
            match = _VERSION.match(line)
            if match:
                version = None if match.group(1) == "nil" else int(match.group(1))
                return version, match.group(2) is not None
        if "no migration" in text:
            return None, False
    raise ValueError(
        f"cannot read a version from the migrate output: {(stdout or stderr).strip()[:200]!r}"
    )


def parse_history(stdout: str) -> tuple[list[int], list[int]]:
    """(applied, available) versions, ascending."""
    applied: list[int] = []
    available: list[int] = []
    for line in stdout.splitlines():
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue
        version = int(fields[0])
        available.append(version)
        if "applied" in line or "dirty" in line:
            applied.append(version)
    if not available:
        raise ValueError(f"cannot read a migration history from: {stdout.strip()[:200]!r}")
    return sorted(applied), sorted(set(available))


def plan_down(
    state: SchemaState, steps: int | None, to_version: int | None
) -> tuple[int, int | None]:
    """(steps to revert, target version; None means no version at all)."""
    if state.dirty:
        raise MigrationRefused(
            f"the schema is dirty at version {state.version}: a migration failed or was "
            "interrupted; fix it and force the version before any rollback"
        )
    if state.version is None or not state.applied:
        raise MigrationRefused("no migration is applied: there is nothing to roll back")
    applied = [v for v in state.applied if v <= state.version]
    if to_version is not None:
        if to_version == state.version:
            raise MigrationRefused(f"the schema is already at version {to_version}")
        if to_version > state.version:
            raise MigrationRefused(
                f"version {to_version} is newer than the current {state.version}: a rollback only "
                "goes down"
            )
        if to_version != 0 and to_version not in applied:
            raise MigrationRefused(
                f"version {to_version} is not in the migration history (applied: "
                f"{', '.join(map(str, applied))})"
            )
        count = len([v for v in applied if v > to_version])
        return count, (to_version or None)
    count = steps or 1
    if count > len(applied):
        raise MigrationRefused(
            f"{count} steps is more than the {len(applied)} applied migrations "
            f"({', '.join(map(str, applied))})"
        )
    remaining = applied[: len(applied) - count]
    return count, (remaining[-1] if remaining else None)


def fill(command: list[str], **values: int) -> list[str]:
    return [part.format(**values) for part in command]
