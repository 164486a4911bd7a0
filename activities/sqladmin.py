"""The Cloud SQL Admin API as Google serves it: REST, through the discovery-based
`google-api-python-client` built from the `sqladmin v1` document the package
ships (no network needed to build it, and the same document is the contract the
sandbox's emulator is tested against).

Each call goes through `google_rest` (a thread, the library's retries, Google's
errors as Temporal failures); a write is sent once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from googleapiclient import discovery
from googleapiclient.http import HttpRequest, build_http
from temporalio.exceptions import ApplicationError

from .google_rest import IN_CALL_RETRIES, GoogleApi
from .google_rest import api_message as api_message  # where tests/sqladmin_client.py reads it

SCOPE = "https://www.googleapis.com/auth/sqlservice.admin"


class NotFound(Exception):
    """The API answered 404: the caller decides whether that is an error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Conflict(Exception):
    """The API answered 409 (e.g. a clone into a name that exists)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


API = GoogleApi(
    name="Cloud SQL Admin API",
    kind="CloudSql",
    denied_hint="the worker's service account needs "
    "roles/cloudsql.viewer; roles/cloudsql.editor for on-demand backups; "
    "cloudsql.instances.clone (roles/cloudsql.admin or a custom role) for a "
    "point-in-time recovery (docs/production.md)",
    reach_name="the Cloud SQL Admin API",
    reach_detail=True,
    raised={404: NotFound, 409: Conflict},
)


class SqlAdmin:
    """Calls of the Cloud SQL Admin API v1; responses are the API's JSON as dicts.

    `http_factory` makes a fresh (authorized) `Http` per call: google-auth's
    `AuthorizedHttp` around `build_http()` in production, a plain one against
    the sandbox's emulator."""

    def __init__(self, endpoint: str | None, http_factory: Callable[[], Any]) -> None:
        options = {"api_endpoint": endpoint} if endpoint else None
        self._http_factory = http_factory
        self.service = discovery.build(
            "sqladmin", "v1", static_discovery=True, http=build_http(), client_options=options
        )

    async def call(self, what: str, request: HttpRequest, *, write: bool = False) -> dict[str, Any]:
        """Execute `request`; `what` names it in failures ("listing backup runs of tekutoko-db").
        A `write` is sent once: its answer may be lost after Cloud SQL acted on it, so the
        caller looks for its effect before sending it again."""
        return await API.call(
            what,
            request,
            self._http_factory,
            num_retries=0 if write else IN_CALL_RETRIES,
        )

    # -- the methods modoru uses ----------------------------------------------------------

    async def instance(self, project: str, name: str) -> dict[str, Any] | None:
        """The instance, or None if it does not exist.

        Cloud SQL answers some `instances.get` of an instance that does not exist with 403 "The
        caller does not have permission" instead of 404 (googleapis/google-api-go-client#1815).
        A 403 (or 401) is therefore not taken at its word: `instances.list` (which needs only
        cloudsql.instances.list) decides. Listed, the listing's resource is returned; not
        listed, it does not exist; if the listing is refused too, the refusal of the get
        stands."""
        try:
            return await self.call(
                f"reading instance {name}",
                self.service.instances().get(project=project, instance=name),
            )
        except NotFound:
            return None
        except ApplicationError as denied:
            if denied.type != "CloudSqlDenied":
                raise
            try:
                return await self.listed_instance(project, name)
            except ApplicationError as also:
                if also.type == "CloudSqlDenied":
                    raise denied from None
                raise

    async def listed_instance(
        self, project: str, name: str, page_size: int = 100
    ) -> dict[str, Any] | None:
        """The instance named `name` as `instances.list` shows it, or None: filtered by name on
        the server, matched exactly here, page by page."""
        token: str | None = None
        while True:
            page = await self.call(
                f"listing the instances of {project} named {name}",
                self.service.instances().list(
                    project=project,
                    filter=f"name:{name}",
                    maxResults=page_size,
                    **({"pageToken": token} if token else {}),
                ),
            )
            items: list[dict[str, Any]] = page.get("items") or []
            for item in items:
                if item.get("name") == name:
                    return item
            token = page.get("nextPageToken")
            if not token:
                return None

    async def backup_runs(
        self, project: str, instance: str, max_results: int = 50
    ) -> list[dict[str, Any]]:
        found = await self.call(
            f"listing backup runs of {instance}",
            self.service.backupRuns().list(
                project=project, instance=instance, maxResults=max_results
            ),
        )
        runs: list[dict[str, Any]] = found.get("items", [])
        return runs

    async def insert_backup_run(
        self, project: str, instance: str, description: str
    ) -> dict[str, Any]:
        return await self.call(
            f"starting an on-demand backup of {instance}",
            self.service.backupRuns().insert(
                project=project,
                instance=instance,
                body={"kind": "sql#backupRun", "description": description},
            ),
            write=True,
        )

    async def operation(self, project: str, name: str) -> dict[str, Any]:
        return await self.call(
            f"reading operation {name}",
            self.service.operations().get(project=project, operation=name),
        )

    async def operations(self, project: str, instance: str) -> list[dict[str, Any]]:
        found = await self.call(
            f"listing operations of {instance}",
            self.service.operations().list(project=project, instance=instance),
        )
        operations: list[dict[str, Any]] = found.get("items", [])
        return operations

    async def latest_recovery_time(self, project: str, instance: str) -> dict[str, Any]:
        return await self.call(
            f"reading the recovery window of {instance}",
            self.service.projects()
            .instances()
            .getLatestRecoveryTime(project=project, instance=instance),
        )

    async def clone(
        self, project: str, instance: str, clone_context: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.call(
            f"cloning {instance}",
            self.service.instances().clone(
                project=project,
                instance=instance,
                body={"cloneContext": {"kind": "sql#cloneContext", **clone_context}},
            ),
            write=True,
        )


def operation_error(operation: dict[str, Any]) -> str | None:
    """'CODE: message' of a DONE operation's first error, or None if it succeeded."""
    errors = (operation.get("error") or {}).get("errors") or []
    if not errors:
        return None
    first = errors[0]
    return f"{first.get('code', 'UNKNOWN')}: {first.get('message', 'no message')}"
