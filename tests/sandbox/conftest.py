"""One real PostgreSQL cluster for the whole session (initdb costs about a
second), and a fresh database with its own role for each test that wants one."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sandbox.postgres import PostgresCluster

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_state_root() -> Iterator[Path]:
    # Not tmp_path: pytest's base dir is private to root, and on a root machine
    # the server runs as an unprivileged user that must reach its state dir.
    root = Path(tempfile.mkdtemp(prefix="modoru-pg-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def pg_cluster(pg_state_root: Path) -> AsyncIterator[PostgresCluster]:
    cluster = PostgresCluster(pg_state_root / "main")
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def app_db(pg_cluster: PostgresCluster) -> AsyncIterator[dict[str, str]]:
    """The DATABASE_* env of a new, empty database owned by a new app role."""
    n = next(_names)
    name, role, password = f"tekutoko_{n}", f"tekutoko_app_{n}", f"walk-{n}-secret"
    await pg_cluster.create_role(role, password)
    await pg_cluster.create_database(name, owner=role)
    try:
        yield pg_cluster.app_env(name, role, password)
    finally:
        await pg_cluster.drop_database(name)
