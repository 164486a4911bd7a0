"""The discovery-built Cloud SQL Admin client (the code production runs) as
tests drive it: dicts in and out, Google's errors as one exception type."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from googleapiclient import discovery
from googleapiclient.errors import HttpError
from googleapiclient.http import build_http

from activities.sqladmin import api_message
from sandbox.cloudsql import CloudSqlEmulator


class ApiFailure(Exception):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(f"{code} {status}: {message}")
        self.code, self.status, self.message = code, status, message


class SqlAdminApi:
    def __init__(self, url: str) -> None:
        self.service = discovery.build(
            "sqladmin",
            "v1",
            static_discovery=True,
            http=build_http(),
            client_options={"api_endpoint": url},
        )

    def request(self, resource: str, method: str, **params: Any) -> Any:
        target = self.service
        for part in resource.split("."):
            target = getattr(target, part)()
        return getattr(target, method)(**params)

    async def __call__(self, resource: str, method: str, **params: Any) -> dict[str, Any]:
        """e.g. `await api("instances", "get", project=P, instance=I)`."""
        request = self.request(resource, method, **params)
        try:
            return await asyncio.to_thread(request.execute, http=build_http())
        except HttpError as exc:
            status, message = api_message(exc)
            raise ApiFailure(exc.status_code, status, message) from None


@contextlib.asynccontextmanager
async def running_emulator(
    prefix: str, instance: str, *, database: str, user: str, password: str
) -> AsyncIterator[CloudSqlEmulator]:
    """A Cloud SQL emulator with one instance, its files removed afterwards. Not in
    tmp_path: under root the server runs as a user who must reach the dir."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    emulator = CloudSqlEmulator(root / "state")
    try:
        await emulator.start()
        await emulator.add_instance(instance, database=database, user=user, password=password)
        yield emulator
    finally:
        await emulator.stop()
        shutil.rmtree(root, ignore_errors=True)
