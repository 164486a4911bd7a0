"""Artifact Registry as Google serves it: the REST API v1 through the
discovery-based `google-api-python-client`, built offline from the
`artifactregistry v1` document the package ships (the same document the
sandbox's emulator is held to). Two questions from the runbook: which images
are there (`gcloud artifacts docker images list ... --include-tags
--sort-by=~update_time --limit=10`), and why an image cannot be pulled (is
the tag there, when was it pushed, may the repository be read).

Order. dockerImages.list documents `orderBy` only as "The field to order the
results by", with no values, so none is sent: every page is read (`pageSize`
up to the documented 1,000) and the images are sorted here by `updateTime`,
newest first; the server's order only breaks ties.

Whose permission. testIamPermissions "Tests if the caller has a list of
permissions on a resource": it answers for whoever calls. The worker, which
lists images, normally holds roles/artifactregistry.reader and so may pull
whatever the nodes may not. So the pull check acts as the nodes' service
account when the catalog names it (`registry.node_service_account`): an access
token for it from IAM Credentials' generateAccessToken (the worker needs
roles/iam.serviceAccountTokenCreator on it), then testIamPermissions with that
token. Without it, or when the worker may not act as it, the worker's own
answer is given and said to be the worker's: the nodes' is unknown."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import google.oauth2.credentials
import google_auth_httplib2
from googleapiclient import discovery
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpRequest, build_http
from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook.cd_config import RegistryConfig
from runbook.cd_models import (
    ImageList,
    ImagesRequest,
    PullCheckRequest,
    PullDiagnosis,
    PullVerdict,
    RegistryImage,
    image_tag,
)

from .errors import permanent
from .google_rest import IN_CALL_RETRIES, TRANSIENT, GoogleApi, api_message

SCOPE = "https://www.googleapis.com/auth/cloud-platform.read-only"
IAM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"  # generateAccessToken requires it
PULL_PERMISSION = "artifactregistry.repositories.downloadArtifacts"
PAGE_SIZE = 1000  # "Maximum page size is 1,000."
MAX_PAGES = 20  # 20,000 images: far past any tag a rollback would go back to
TOKEN_LIFETIME = "300s"  # the nodes' token lives for one check

API = GoogleApi(
    name="Artifact Registry",
    kind="Registry",
    denied_hint="the worker's service account needs roles/artifactregistry.reader on the "
    "repository",
    busy_name="Artifact Registry API",
    credentials_refused=True,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullPermission:
    """testIamPermissions' answer and whose it is."""

    allowed: bool
    nodes: bool  # asked as the nodes' service account; False: as the worker itself
    account: str  # the account asked as ("" when the worker's own is not known)
    why_not_nodes: str = ""  # when the nodes' account was named but could not be acted as


def rfc3339(text: str | None) -> dt.datetime | None:
    """Google's timestamps carry up to nine fraction digits; Python reads six."""
    if not text:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


class ArtifactRegistry:
    """Calls of the Artifact Registry API v1; each runs in a thread with an `Http` of
    its own (httplib2 is not thread-safe): an authorized one in production, a plain
    one against the sandbox's emulator."""

    def __init__(
        self,
        endpoint: str | None,
        http_factory: Callable[[], Any],
        *,
        iam_endpoint: str | None = None,
        iam_http_factory: Callable[[], Any] | None = None,
        caller: str = "",
    ) -> None:
        """`iam_endpoint`: IAM Credentials' base URL (default Google's); `iam_http_factory`: an
        `Http` whose credentials carry the cloud-platform scope generateAccessToken requires
        (default: `http_factory`'s); `caller`: the worker's own account, when known, for the
        messages."""
        options = {"api_endpoint": endpoint} if endpoint else None
        self._http_factory = http_factory
        self._iam_http_factory = iam_http_factory or http_factory
        self.caller = caller
        self.service = discovery.build(
            "artifactregistry",
            "v1",
            static_discovery=True,
            http=build_http(),
            client_options=options,
        )
        self.iam = discovery.build(
            "iamcredentials",
            "v1",
            static_discovery=True,
            http=build_http(),
            client_options={"api_endpoint": iam_endpoint} if iam_endpoint else None,
        )

    async def call(self, what: str, request: HttpRequest, http: Any = None) -> dict[str, Any]:
        """Execute `request` with `http` (default: a fresh one of the worker's)."""
        return await API.call(
            what, request, (lambda: http) if http is not None else self._http_factory
        )

    def _images(self) -> Any:  # the discovery client builds its resources at run time: untyped
        return self.service.projects().locations().repositories().dockerImages()

    async def _pages(
        self, registry: RegistryConfig, tag: str = ""
    ) -> AsyncIterator[list[RegistryImage]]:
        """The package's images, page by page, as the server lists them (no documented order);
        with `tag`, the listing stops at the image carrying it."""
        token: str | None = None
        prefix = f"{registry.image}@"
        for _ in range(MAX_PAGES):
            kwargs: dict[str, Any] = {"parent": registry.resource, "pageSize": PAGE_SIZE}
            if token:
                kwargs["pageToken"] = token
            page = await self.call(
                f"listing the images of {registry.host_path}", self._images().list(**kwargs)
            )
            images = [
                RegistryImage(
                    uri=raw["uri"],
                    tags=list(raw.get("tags") or []),
                    uploaded=rfc3339(raw.get("uploadTime")),
                    updated=rfc3339(raw.get("updateTime")),
                )
                for raw in page.get("dockerImages", [])
                if str(raw.get("uri", "")).startswith(prefix)  # not another package's
            ]
            yield images
            if tag and any(tag in image.tags for image in images):
                return
            token = page.get("nextPageToken")
            if not token:
                return
        log.warning(
            "%s lists more than %d pages of images: the newest were looked for among the first",
            registry.host_path,
            MAX_PAGES,
        )

    async def newest_images(
        self, registry: RegistryConfig, *, limit: int, tag: str = ""
    ) -> tuple[list[RegistryImage], RegistryImage | None]:
        """The package's images, newest update first (`limit` of them), and the one tagged `tag`.
        Every page is read: the server's order is not documented."""
        listed: list[RegistryImage] = []
        async for images in self._pages(registry):
            listed += images
        newest = by_update(listed)
        found = next((i for i in newest if tag and tag in i.tags), None)
        return newest[:limit], found

    async def tagged(self, registry: RegistryConfig, tag: str) -> RegistryImage | None:
        """The image carrying `tag` (a tag names one image), None if none does."""
        async for images in self._pages(registry, tag):
            found = next((i for i in images if tag in i.tags), None)
            if found is not None:
                return found
        return None

    async def _token_as(self, account: str) -> str:
        """An access token for `account` (IAM Credentials generateAccessToken, as the worker)."""
        request = (
            self.iam.projects()
            .serviceAccounts()
            .generateAccessToken(
                name=f"projects/-/serviceAccounts/{account}",
                body={"scope": [SCOPE], "lifetime": TOKEN_LIFETIME},
            )
        )
        try:
            answer = await asyncio.to_thread(
                request.execute, http=self._iam_http_factory(), num_retries=IN_CALL_RETRIES
            )
        except HttpError as exc:
            status, message = api_message(exc)
            code = exc.status_code
            if code in TRANSIENT:
                raise ApplicationError(
                    f"IAM Credentials {code} {status} while acting as {account}: {message}; "
                    "retrying",
                    type="RegistryTransient",
                ) from None
            hint = (
                f"the worker needs roles/iam.serviceAccountTokenCreator on {account}"
                if code in (401, 403)
                else "check the catalog's registry.node_service_account"
            )
            raise permanent(
                f"IAM Credentials refused a token for {account} ({code} {status}: {message}); "
                f"{hint}",
                "ImpersonationDenied",
            ) from None
        except (OSError, TimeoutError) as exc:
            raise ApplicationError(
                f"cannot reach IAM Credentials while acting as {account}: "
                f"{type(exc).__name__}; retrying",
                type="RegistryTransient",
            ) from None
        token: str | None = answer.get("accessToken")
        if not token:
            raise permanent(
                f"IAM Credentials answered without an access token for {account}",
                "ImpersonationDenied",
            )
        return token

    async def can_pull(self, registry: RegistryConfig) -> PullPermission:
        """testIamPermissions for the pull permission: as the nodes' service account when the
        catalog names it and the worker may act as it, else as the worker itself."""
        account = registry.node_service_account
        why_not = ""
        if account:
            try:
                token = await self._token_as(account)
            except ApplicationError as exc:
                if not exc.non_retryable:
                    raise
                why_not = exc.message
            else:
                http = google_auth_httplib2.AuthorizedHttp(
                    # google-auth's Credentials.__init__ has no annotations
                    google.oauth2.credentials.Credentials(token),  # type: ignore[no-untyped-call]
                    http=build_http(),
                )
                return PullPermission(
                    await self._test_pull(registry, http, f" as {account}"), True, account
                )
        allowed = await self._test_pull(registry, None, "")
        return PullPermission(allowed, False, self.caller, why_not)

    async def _test_pull(self, registry: RegistryConfig, http: Any, as_whom: str) -> bool:
        answer = await self.call(
            f"testing permissions on {registry.host_path}{as_whom}",
            self.service.projects()
            .locations()
            .repositories()
            .testIamPermissions(
                resource=registry.resource, body={"permissions": [PULL_PERMISSION]}
            ),
            http,
        )
        return PULL_PERMISSION in (answer.get("permissions") or [])


def by_update(images: list[RegistryImage]) -> list[RegistryImage]:
    """Newest `updateTime` first (then `uploadTime`); the listing's own order breaks ties, and
    an image with neither time comes last."""
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)

    def when(image: RegistryImage) -> dt.datetime:
        moment = image.updated or image.uploaded
        if moment is None:
            return oldest
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)

    return sorted(images, key=when, reverse=True)  # reverse=True keeps equals in listed order


def permission_detail(registry: RegistryConfig, answer: PullPermission) -> str:
    """Says whose permission was checked, and what that does and does not tell."""
    where = f"{PULL_PERMISSION} on {registry.host_path}"
    if answer.nodes:
        if answer.allowed:
            return f"{where}: granted to the nodes' service account {answer.account} (asked as it)"
        return (
            f"{where}: denied to the nodes' service account {answer.account} (asked as it); "
            f"grant it roles/artifactregistry.reader on the repository"
        )
    worker = f"this worker's own identity{f' ({answer.account})' if answer.account else ''}"
    said = (
        f"{where}: granted to {worker}"
        if answer.allowed
        else f"{where}: denied to {worker}, which needs roles/artifactregistry.reader"
    )
    nodes = (
        f"could not ask as the nodes' service account: {answer.why_not_nodes}"
        if answer.why_not_nodes
        else "set the catalog's registry.node_service_account to ask as them"
    )
    return (
        f"{said}. testIamPermissions answers for its caller, so whether the nodes' service "
        f"account may pull is not known ({nodes})"
    )


class RegistryActivities:
    def __init__(self, registry: ArtifactRegistry) -> None:
        self.registry = registry

    @activity.defn(name="registry.images")
    async def images(self, request: ImagesRequest) -> ImageList:
        """The newest images with their tags and update times, and the requested tag's image (None
        if absent)."""
        newest, found = await self.registry.newest_images(
            request.registry, limit=request.limit, tag=request.tag
        )
        return ImageList(images=newest, found=found)

    @activity.defn(name="registry.diagnose_pull")
    async def diagnose_pull(self, request: PullCheckRequest) -> PullDiagnosis:
        """For images that fail to pull: is each tag in the registry, and when was it
        pushed; and may the repository be read (testIamPermissions)."""
        registry = request.registry
        verdicts = []
        for image in dict.fromkeys(request.images):
            path, tag = image_tag(image)
            if path != registry.image:
                verdicts.append(
                    PullVerdict(
                        image=image,
                        detail=f"{image} is not in the catalog's registry {registry.image}: "
                        "check the image name",
                    )
                )
                continue
            if not tag:
                verdicts.append(
                    PullVerdict(
                        image=image,
                        detail=f"{image} names no tag; pinned digests are not looked up",
                    )
                )
                continue
            found = await self.registry.tagged(registry, tag)
            if found is None:
                verdicts.append(
                    PullVerdict(
                        image=image,
                        in_registry=False,
                        detail=f"tag {tag} is not in Artifact Registry {registry.image} (never "
                        "pushed, or deleted): deploy a tag that is",
                    )
                )
            else:
                when = found.uploaded or found.updated
                verdicts.append(
                    PullVerdict(
                        image=image,
                        in_registry=True,
                        pushed=when,
                        detail=f"tag {tag} is in Artifact Registry, pushed "
                        f"{when.isoformat() if when else 'at an unknown time'}",
                    )
                )
        try:
            answer = await self.registry.can_pull(registry)
        except ApplicationError as exc:
            if exc.non_retryable:
                return PullDiagnosis(
                    verdicts=verdicts, permission_detail=f"pull permission unknown: {exc.message}"
                )
            raise
        return PullDiagnosis(
            verdicts=verdicts,
            # the nodes' permission, known only when asked as them
            can_pull=answer.allowed if answer.nodes else None,
            permission_detail=permission_detail(registry, answer),
        )
