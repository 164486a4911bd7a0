"""Artifact Registry as Google serves it: the REST API v1 through the
discovery-based `google-api-python-client`, built offline from the
`artifactregistry v1` document the package ships (the same document the
sandbox's emulator is held to). Two questions from the runbook: which images
are there (`gcloud artifacts docker images list ... --include-tags
--sort-by=~update_time --limit=10`), and why an image cannot be pulled (is
the tag there, when was it pushed, may the repository be read)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Callable
from typing import Any

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
from .sqladmin import api_message

SCOPE = "https://www.googleapis.com/auth/cloud-platform.read-only"
PULL_PERMISSION = "artifactregistry.repositories.downloadArtifacts"
IN_CALL_RETRIES = 2
TRANSIENT = {408, 429, 500, 502, 503, 504}
PAGE_SIZE = 100
MAX_PAGES = 20  # 2,000 images: far past any tag a rollback would go back to


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

    def __init__(self, endpoint: str | None, http_factory: Callable[[], Any]) -> None:
        options = {"api_endpoint": endpoint} if endpoint else None
        self._http_factory = http_factory
        self.service = discovery.build(
            "artifactregistry",
            "v1",
            static_discovery=True,
            http=build_http(),
            client_options=options,
        )

    async def call(self, what: str, request: HttpRequest) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(
                request.execute, http=self._http_factory(), num_retries=IN_CALL_RETRIES
            )
        except HttpError as exc:
            status, message = api_message(exc)
            code = exc.status_code
            if code in TRANSIENT:
                raise ApplicationError(
                    f"Artifact Registry API {code} {status} while {what}: {message}; retrying",
                    type="RegistryTransient",
                ) from None
            if code in (401, 403):
                raise permanent(
                    f"Artifact Registry refused {what} ({code} {status}: {message}): the worker's "
                    "service account needs "
                    "roles/artifactregistry.reader on the repository",
                    "RegistryDenied",
                ) from None
            raise permanent(
                f"Artifact Registry rejected {what} ({code} {status}): {message}",
                "RegistryRejected",
            ) from None
        except (OSError, TimeoutError) as exc:
            raise ApplicationError(
                f"cannot reach Artifact Registry while {what}: {type(exc).__name__}; retrying",
                type="RegistryTransient",
            ) from None

    def _images(self):
        return self.service.projects().locations().repositories().dockerImages()

    async def newest_images(
        self, registry: RegistryConfig, *, limit: int, tag: str = ""
    ) -> tuple[list[RegistryImage], RegistryImage | None]:
        """The package's images, newest update first (`limit` of them), and the one tagged `tag`."""
        newest: list[RegistryImage] = []
        found: RegistryImage | None = None
        token: str | None = None
        prefix = f"{registry.image}@"
        for _ in range(MAX_PAGES):
            kwargs: dict[str, Any] = {
                "parent": registry.resource,
                "orderBy": "update_time desc",
                "pageSize": PAGE_SIZE,
            }
            if token:
                kwargs["pageToken"] = token
            page = await self.call(
                f"listing the images of {registry.host_path}", self._images().list(**kwargs)
            )
            for raw in page.get("dockerImages", []):
                if not str(raw.get("uri", "")).startswith(prefix):
                    continue  # another package in the same repository
                image = RegistryImage(
                    uri=raw["uri"],
                    tags=list(raw.get("tags") or []),
                    uploaded=rfc3339(raw.get("uploadTime")),
                    updated=rfc3339(raw.get("updateTime")),
                )
                if len(newest) < limit:
                    newest.append(image)
                if tag and found is None and tag in image.tags:
                    found = image
            token = page.get("nextPageToken")
            if not token or (len(newest) >= limit and (found is not None or not tag)):
                break
        return newest, found

    async def can_pull(self, registry: RegistryConfig) -> bool:
        answer = await self.call(
            f"testing permissions on {registry.host_path}",
            self.service.projects()
            .locations()
            .repositories()
            .testIamPermissions(
                resource=registry.resource, body={"permissions": [PULL_PERMISSION]}
            ),
        )
        return PULL_PERMISSION in (answer.get("permissions") or [])


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
            _, found = await self.registry.newest_images(registry, limit=1, tag=tag)
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
            allowed = await self.registry.can_pull(registry)
        except ApplicationError as exc:
            if exc.non_retryable:
                return PullDiagnosis(
                    verdicts=verdicts, permission_detail=f"pull permission unknown: {exc.message}"
                )
            raise
        detail = (
            f"{PULL_PERMISSION} on {registry.host_path}: granted"
            if allowed
            else f"{PULL_PERMISSION} on {registry.host_path}: denied; grant "
            "roles/artifactregistry.reader to the nodes' service account"
        )
        return PullDiagnosis(verdicts=verdicts, can_pull=allowed, permission_detail=detail)
