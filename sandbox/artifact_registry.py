"""An Artifact Registry emulator speaking the REST API v1 as the
`artifactregistry.v1.json` discovery document (shipped in
google-api-python-client) describes it: the routes are the document's methods
(HTTP method and path), unknown query parameters and bodies that do not fit the
schema are refused in Google's error shape, and every answer fits the schema.

One Docker repository, `LOCATION-docker.pkg.dev/PROJECT/REPOSITORY`, with the
scenario's images (tags, digests, push times). Served: repositories.get and
testIamPermissions, dockerImages.list/get, packages.list/get,
packages.versions.list/get (`view=FULL` adds relatedTags) and
packages.tags.list: what `gcloud artifacts docker images list --include-tags`
calls (packages.list, then versions.list view=FULL) and what a deploy pipeline
checks.

testIamPermissions answers as the document says, "if the caller has a list of
permissions": for the identity the request authenticates as, not for anyone
else. Callers: a request without credentials is the sandbox's worker
(`worker_account`, which holds roles/artifactregistry.reader on the repository:
it may read and pull); a bearer token from the IAM Credentials stand-in below
is the account it was issued for; any other token is 401 UNAUTHENTICATED (the
listing and reading methods do not look at credentials). The
nodes' service account (`node_service_account`) reads, and may pull
(`artifactregistry.repositories.downloadArtifacts`) only when the scenario says
`nodes_can_pull`.

To learn what the nodes may pull, a caller must ask as them: IAM Credentials'
`projects.serviceAccounts.generateAccessToken` (the `iamcredentials v1`
document's route and schemas, served on this emulator's port for the sandbox)
issues a token for `node_service_account` when the worker may act as it
(`worker_can_impersonate`, roles/iam.serviceAccountTokenCreator); refused with
403 otherwise, 404 for an account that does not exist."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from . import discovery
from .cloudsql_resources import ApiError, rfc3339
from .google_rest import route_handler
from .kube.faults import RequestLog
from .scenario import RegistrySeed, point_in_time

API, VERSION = "artifactregistry", "v1"
_PREFIX = "artifactregistry.projects.locations.repositories."
ROUTES: dict[str, str] = {
    _PREFIX + "get": "get_repository",
    _PREFIX + "testIamPermissions": "test_iam_permissions",
    _PREFIX + "dockerImages.list": "list_docker_images",
    _PREFIX + "dockerImages.get": "get_docker_image",
    _PREFIX + "packages.list": "list_packages",
    _PREFIX + "packages.get": "get_package",
    _PREFIX + "packages.versions.list": "list_versions",
    _PREFIX + "packages.versions.get": "get_version",
    _PREFIX + "packages.tags.list": "list_tags",
}
MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
READ_PERMISSIONS = {
    f"artifactregistry.{p}"
    for p in (
        "repositories.get",
        "repositories.list",
        "dockerimages.get",
        "dockerimages.list",
        "packages.get",
        "packages.list",
        "versions.get",
        "versions.list",
        "tags.get",
        "tags.list",
    )
}
PULL_PERMISSION = "artifactregistry.repositories.downloadArtifacts"
IAM_API, IAM_VERSION = "iamcredentials", "v1"
GENERATE_ACCESS_TOKEN = "iamcredentials.projects.serviceAccounts.generateAccessToken"
# the Authorization header of the request being served (set by build_app's middleware)
_AUTHORIZATION: ContextVar[str] = ContextVar("authorization", default="")
ORDER_FIELDS = {
    "list_docker_images": {"upload_time", "update_time", "build_time", "name"},
    "list_versions": {"create_time", "update_time", "name"},
    "list_packages": {"create_time", "update_time", "name"},
}


@dataclass
class Image:
    package: str
    digest: str
    tags: list[str]
    uploaded: datetime
    size: int


def _digest(package: str, tags: list[str]) -> str:
    return "sha256:" + hashlib.sha256(f"{package}:{','.join(tags)}".encode()).hexdigest()


class ArtifactRegistryEmulator:
    def __init__(
        self, seed: RegistrySeed, *, log_path: Path | None = None, now: datetime | None = None
    ) -> None:
        self.seed = seed
        self.project, self.location, self.repository = seed.project, seed.location, seed.repository
        started = now or datetime.now(UTC)
        self.created = started - timedelta(days=365)
        self.images = [
            Image(
                i.package,
                i.digest or _digest(i.package, i.tags),
                list(i.tags),
                point_in_time(i.pushed, started),
                40_000_000 + int(_digest(i.package, i.tags)[7:13], 16) % 9_000_000,
            )
            for i in seed.images
        ]
        self._log_path = log_path
        self.worker_account = f"modoru-worker@{self.project}.iam.gserviceaccount.com"
        self.node_service_account = f"gke-nodes@{self.project}.iam.gserviceaccount.com"
        self.worker_can_impersonate = True  # roles/iam.serviceAccountTokenCreator on the nodes'
        self._tokens: dict[str, str] = {}  # access token -> the account it was issued for
        self.requests = (
            RequestLog()
        )  # reopened on start with its file (the state dir may not exist yet)
        self.port = 0
        self._runner: web.AppRunner | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self.requests = RequestLog(self._log_path)
        self._runner = web.AppRunner(
            build_app(self), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.requests.close()

    @property
    def url(self) -> str:
        """The REST API's base URL (the discovery client's api_endpoint)."""
        return f"http://127.0.0.1:{self.port}/"

    # -- what the rest of the sandbox asks ------------------------------------------------

    def has(self, package: str, tag: str) -> bool:
        return self._tagged(package, tag) is not None

    def pushed_at(self, package: str, tag: str) -> datetime | None:
        image = self._tagged(package, tag)
        return image.uploaded if image else None

    def push(self, package: str, tags: list[str], now: datetime | None = None) -> Image:
        """What a pipeline's build does (a hotfix branch's image): a new image, its tags moved off
        older ones, as a docker push."""
        for image in self.images:
            if image.package == package:
                image.tags = [t for t in image.tags if t not in tags]
        image = Image(
            package, _digest(package, tags), list(tags), now or datetime.now(UTC), 41_000_000
        )
        self.images.append(image)
        return image

    def _tagged(self, package: str, tag: str) -> Image | None:
        return next((i for i in self.images if i.package == package and tag in i.tags), None)

    # -- names ----------------------------------------------------------------------------

    @property
    def repo_name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/repositories/{self.repository}"

    def _version_name(self, image: Image) -> str:
        return f"{self.repo_name}/packages/{image.package}/versions/{image.digest}"

    def _check_repo(
        self, projects_id: str, locations_id: str, repositories_id: str, permission: str
    ) -> None:
        if (projects_id, locations_id, repositories_id) != (
            self.project,
            self.location,
            self.repository,
        ):
            raise ApiError(
                403,
                f"Permission '{permission}' denied on resource "
                "'//artifactregistry.googleapis.com/projects/"
                f"{projects_id}/locations/{locations_id}/repositories/{repositories_id}' (or it "
                "may not exist).",
            )

    def _package(self, package: str) -> list[Image]:
        images = [i for i in self.images if i.package == package]
        if not images:
            raise ApiError(404, "Requested entity was not found.")
        return images

    # -- resources ------------------------------------------------------------------------

    def _docker_image(self, image: Image) -> dict[str, Any]:
        host = f"{self.location}-docker.pkg.dev/{self.project}/{self.repository}"
        return {
            "name": f"{self.repo_name}/dockerImages/{image.package}@{image.digest}",
            "uri": f"{host}/{image.package}@{image.digest}",
            "tags": list(image.tags),
            "imageSizeBytes": str(image.size),
            "uploadTime": rfc3339(image.uploaded),
            "mediaType": MEDIA_TYPE,
            "buildTime": rfc3339(image.uploaded - timedelta(minutes=4)),
            "updateTime": rfc3339(image.uploaded),
        }

    def _version(self, image: Image, full: bool) -> dict[str, Any]:
        version: dict[str, Any] = {
            "name": self._version_name(image),
            "createTime": rfc3339(image.uploaded),
            "updateTime": rfc3339(image.uploaded),
        }
        if full:
            version["relatedTags"] = [self._tag(image, t) for t in image.tags]
            version["metadata"] = {
                "name": self._docker_image(image)["name"],
                "mediaType": MEDIA_TYPE,
                "imageSizeBytes": str(image.size),
                "buildTime": rfc3339(image.uploaded - timedelta(minutes=4)),
            }
        return version

    def _tag(self, image: Image, tag: str) -> dict[str, Any]:
        return {
            "name": f"{self.repo_name}/packages/{image.package}/tags/{tag}",
            "version": self._version_name(image),
        }

    def _package_resource(self, package: str) -> dict[str, Any]:
        images = self._package(package)
        return {
            "name": f"{self.repo_name}/packages/{package}",
            "displayName": package,
            "createTime": rfc3339(min(i.uploaded for i in images)),
            "updateTime": rfc3339(max(i.uploaded for i in images)),
        }

    # -- methods (named by ROUTES) ------------------------------------------------------------

    def get_repository(
        self, projectsId: str, locationsId: str, repositoriesId: str
    ) -> dict[str, Any]:
        self._check_repo(
            projectsId, locationsId, repositoriesId, "artifactregistry.repositories.get"
        )
        return {
            "name": self.repo_name,
            "format": "DOCKER",
            "mode": "STANDARD_REPOSITORY",
            "description": "tekutoko images",
            "createTime": rfc3339(self.created),
            "updateTime": rfc3339(max((i.uploaded for i in self.images), default=self.created)),
            "registryUri": f"{self.location}-docker.pkg.dev/{self.project}/{self.repository}",
            "sizeBytes": str(sum(i.size for i in self.images)),
            "satisfiesPzs": False,
            "satisfiesPzi": False,
        }

    def caller(self, authorization: str) -> str:
        """Who a request authenticates as: no credentials is the sandbox's worker, a token is
        the account it was issued for."""
        if not authorization:
            return self.worker_account
        scheme, _, token = authorization.partition(" ")
        account = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if account is None:
            raise ApiError(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
                status="UNAUTHENTICATED",
            )
        return account

    def permissions_of(self, account: str) -> set[str]:
        if account == self.worker_account:
            return READ_PERMISSIONS | {PULL_PERMISSION}  # roles/artifactregistry.reader
        if account == self.node_service_account:
            return READ_PERMISSIONS | ({PULL_PERMISSION} if self.seed.nodes_can_pull else set())
        return set()

    def test_iam_permissions(
        self, projectsId: str, locationsId: str, repositoriesId: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        caller = self.caller(_AUTHORIZATION.get())
        self._check_repo(
            projectsId, locationsId, repositoriesId, "artifactregistry.repositories.getIamPolicy"
        )
        requested = body.get("permissions") or []
        for permission in requested:
            if "*" in permission:
                raise ApiError(
                    400, f"Permissions ('{permission}') with wildcards (*) are not allowed."
                )
        granted = self.permissions_of(caller)
        allowed = [p for p in dict.fromkeys(requested) if p in granted]
        return {"permissions": allowed} if allowed else {}

    def generate_access_token(
        self, projectsId: str, serviceAccountsId: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """IAM Credentials' generateAccessToken, as the worker (no credentials) asks it."""
        caller = self.caller(_AUTHORIZATION.get())
        if projectsId != "-":
            raise ApiError(
                400,
                "The `-` wildcard character is required for the project in the resource name: "
                f"projects/-/serviceAccounts/{serviceAccountsId}",
            )
        if not body.get("scope"):
            raise ApiError(400, "Scope required.")
        if serviceAccountsId not in (self.node_service_account, self.worker_account):
            raise ApiError(404, f"Not found; Gaia id not found for email {serviceAccountsId}")
        if serviceAccountsId != caller and not (
            caller == self.worker_account and self.worker_can_impersonate
        ):
            raise ApiError(
                403,
                "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may "
                "not exist).",
            )
        token = "ya29.sandbox-" + secrets.token_urlsafe(24)
        self._tokens[token] = serviceAccountsId
        expires = datetime.now(UTC) + timedelta(hours=1)
        return {"accessToken": token, "expireTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def list_docker_images(
        self, projectsId: str, locationsId: str, repositoriesId: str, query: dict[str, str]
    ) -> dict[str, Any]:
        self._check_repo(
            projectsId, locationsId, repositoriesId, "artifactregistry.dockerimages.list"
        )
        images = _ordered(self.images, query.get("orderBy", ""), "list_docker_images")
        page, token = _page([self._docker_image(i) for i in images], query)
        return _listing("dockerImages", page, token)

    def get_docker_image(
        self, projectsId: str, locationsId: str, repositoriesId: str, dockerImagesId: str
    ) -> dict[str, Any]:
        self._check_repo(
            projectsId, locationsId, repositoriesId, "artifactregistry.dockerimages.get"
        )
        package, _, reference = dockerImagesId.partition("@")
        image = next(
            (i for i in self.images if i.package == package and i.digest == reference), None
        )
        if image is None:
            raise ApiError(404, "Requested entity was not found.")
        return self._docker_image(image)

    def list_packages(
        self, projectsId: str, locationsId: str, repositoriesId: str, query: dict[str, str]
    ) -> dict[str, Any]:
        self._check_repo(projectsId, locationsId, repositoriesId, "artifactregistry.packages.list")
        packages = [self._package_resource(p) for p in sorted({i.package for i in self.images})]
        packages = [p for p in packages if _matches(p, query.get("filter", ""), {"name"})]
        page, token = _page(packages, query)
        return _listing("packages", page, token)

    def get_package(
        self, projectsId: str, locationsId: str, repositoriesId: str, packagesId: str
    ) -> dict[str, Any]:
        self._check_repo(projectsId, locationsId, repositoriesId, "artifactregistry.packages.get")
        return self._package_resource(packagesId)

    def list_versions(
        self,
        projectsId: str,
        locationsId: str,
        repositoriesId: str,
        packagesId: str,
        query: dict[str, str],
    ) -> dict[str, Any]:
        self._check_repo(projectsId, locationsId, repositoriesId, "artifactregistry.versions.list")
        images = _ordered(self._package(packagesId), query.get("orderBy", ""), "list_versions")
        versions = [self._version(i, query.get("view") == "FULL") for i in images]
        versions = [v for v in versions if _matches(v, query.get("filter", ""), {"name"})]
        page, token = _page(versions, query)
        return _listing("versions", page, token)

    def get_version(
        self,
        projectsId: str,
        locationsId: str,
        repositoriesId: str,
        packagesId: str,
        versionsId: str,
        query: dict[str, str],
    ) -> dict[str, Any]:
        self._check_repo(projectsId, locationsId, repositoriesId, "artifactregistry.versions.get")
        image = next((i for i in self._package(packagesId) if i.digest == versionsId), None)
        if image is None:
            raise ApiError(404, "Requested entity was not found.")
        return self._version(image, query.get("view") == "FULL")

    def list_tags(
        self,
        projectsId: str,
        locationsId: str,
        repositoriesId: str,
        packagesId: str,
        query: dict[str, str],
    ) -> dict[str, Any]:
        self._check_repo(projectsId, locationsId, repositoriesId, "artifactregistry.tags.list")
        tags = [
            self._tag(i, t)
            for i in sorted(self._package(packagesId), key=lambda i: i.uploaded)
            for t in i.tags
        ]
        tags = [t for t in tags if _matches(t, query.get("filter", ""), {"name", "version"})]
        page, token = _page(tags, query)
        return _listing("tags", page, token)


def _ordered(images: list[Image], order_by: str, method: str) -> list[Image]:
    if not order_by.strip():
        return sorted(images, key=lambda i: (i.package, i.uploaded))
    field, _, direction = order_by.strip().partition(" ")
    if field not in ORDER_FIELDS[method] or direction.strip().lower() not in ("", "asc", "desc"):
        raise ApiError(400, f"invalid order_by: {order_by!r}")
    key = (lambda i: i.digest) if field == "name" else (lambda i: i.uploaded)
    return sorted(images, key=key, reverse=direction.strip().lower() == "desc")


def _matches(resource: dict[str, Any], expression: str, fields: set[str]) -> bool:
    """The list filters' documented form: `field="value"` terms joined by AND; a
    trailing * in the value matches a prefix."""
    for term in (t.strip() for t in expression.split(" AND ") if t.strip()):
        field, sep, value = term.partition("=")
        field, value = field.strip(), value.strip().strip('"')
        if not sep or field not in fields:
            raise ApiError(400, f"invalid filter: {expression!r}")
        actual = resource.get(field, "")
        if not (actual.startswith(value[:-1]) if value.endswith("*") else actual == value):
            return False
    return True


def _page(
    items: list[dict[str, Any]], query: dict[str, str]
) -> tuple[list[dict[str, Any]], str | None]:
    size = int(query.get("pageSize") or 0) or 1000
    if size < 0:
        raise ApiError(400, "page_size must not be negative")
    token = query.get("pageToken", "")
    try:
        start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    except ValueError:
        raise ApiError(400, "Invalid page token.") from None
    end = start + size
    return items[start:end], base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(
        items
    ) else None


def _listing(key: str, items: list[dict[str, Any]], token: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {key: items} if items else {}
    if token:
        body["nextPageToken"] = token
    return body


def _error(exc: ApiError) -> web.Response:
    # Google's error shape (cloud.google.com/apis/design/errors), without Cloud SQL's legacy
    # `errors` list.
    return web.json_response(
        {"error": {"code": exc.http_status, "message": exc.message, "status": exc.status}},
        status=exc.http_status,
    )


def build_app(emulator: ArtifactRegistryEmulator) -> web.Application:
    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        _AUTHORIZATION.set(request.headers.get("Authorization", ""))
        response = await handler(request)
        if request.path != "/sandbox/requests":
            emulator.requests.record(
                method=request.method,
                path=request.path,
                query=request.query_string,
                status=response.status,
            )
        return response

    async def requests(request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response(
            {"entries": emulator.requests.since(since), "last": emulator.requests.last_seq}
        )

    async def push(request: web.Request) -> web.Response:
        body = await request.json()
        package, tags = body.get("package"), body.get("tags")
        if (
            not isinstance(package, str)
            or not package
            or not isinstance(tags, list)
            or not tags
            or not all(isinstance(t, str) and t for t in tags)
        ):
            return web.json_response(
                {"error": "give package (a name) and tags (a non-empty list of names)"}, status=400
            )
        image = emulator.push(package, tags)
        return web.json_response(
            {"digest": image.digest, "tags": image.tags, "uploaded": image.uploaded.isoformat()}
        )

    app = web.Application(middlewares=[record])
    app.router.add_get("/sandbox/requests", requests)
    app.router.add_post(
        "/sandbox/push", push
    )  # the practice world's build: not an Artifact Registry API
    specs = discovery.methods(API, VERSION)
    for method_id in ROUTES:
        spec = specs[method_id]
        app.router.add_route(
            spec.http_method,
            "/" + spec.path,
            route_handler(
                API,
                VERSION,
                spec,
                getattr(emulator, ROUTES[spec.id]),
                _error,
                {"view": "type.googleapis.com/google.devtools.artifactregistry.v1.VersionView"},
            ),
        )

    # IAM Credentials (iamcredentials.googleapis.com in production) on the same port: the
    # sandbox's way to let a caller act as the nodes' service account
    spec = discovery.methods(IAM_API, IAM_VERSION)[GENERATE_ACCESS_TOKEN]
    app.router.add_route(
        spec.http_method,
        "/" + spec.path,
        route_handler(IAM_API, IAM_VERSION, spec, emulator.generate_access_token, _error),
    )

    async def not_found(request: web.Request) -> web.Response:
        return _error(
            ApiError(404, f"The requested URL {request.path} was not found on this server.")
        )

    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
