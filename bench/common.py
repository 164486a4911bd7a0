"""What every benchmark prints about the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata


def machine() -> dict[str, object]:
    versions = {}
    for package in ("aiohttp", "kubernetes", "temporalio", "pydantic"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "packages": versions,
    }


def print_json_line(name: str, payload: dict[str, object]) -> None:
    print(
        json.dumps({"benchmark": name, "machine": machine(), **payload}, sort_keys=True),
        file=sys.stdout,
        flush=True,
    )


def print_machine() -> None:
    info = machine()
    print(f"machine: {info['cores']} cores, Python {info['python']}, {info['platform']}")
