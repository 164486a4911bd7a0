"""The runbook's methods 2 and 3 as data: where a service's images live
(Artifact Registry) and how its CD pipeline is started (GitHub Actions), and
what flows through a redeploy of a known-good tag and a restore of a backed-up
manifest. Pure models: nothing here reads a file or the network."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .cd_config import TAG_PATTERN, CdConfig, RegistryConfig
from .decisions import Grant
from .models import (
    Checklisted,
    DeploymentTarget,
    DetectedRequest,
    Diagnostics,
    Escalating,
    GatedStatus,
    VerifyResult,
)

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_MANIFEST_BYTES = 256 * 1024


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


# -- Artifact Registry ------------------------------------------------------------------


class ImagesRequest(Strict):
    registry: RegistryConfig
    tag: str = Field("", description="also find this tag, however old")
    limit: int = Field(10, ge=1, le=100)


class RegistryImage(Strict):
    uri: str
    tags: list[str] = Field(default_factory=list)
    uploaded: dt.datetime | None = None
    updated: dt.datetime | None = None


class ImageList(Strict):
    images: list[RegistryImage] = Field(
        description="the newest first, as gcloud's --sort-by=~update_time --limit"
    )
    found: RegistryImage | None = Field(
        None, description="the image carrying the requested tag, None if no image has it"
    )


class PullCheckRequest(Strict):
    registry: RegistryConfig
    images: list[str] = Field(description="the image references that fail to pull")


class PullVerdict(Strict):
    image: str
    in_registry: bool | None = Field(
        None, description="None: the image is not in this registry, so it was not looked up"
    )
    pushed: dt.datetime | None = None
    detail: str


class PullDiagnosis(Strict):
    verdicts: list[PullVerdict] = Field(default_factory=list)
    can_pull: bool | None = Field(
        None,
        description="testIamPermissions for artifactregistry.repositories.downloadArtifacts; "
        "None: unknown",
    )
    permission_detail: str = ""

    @property
    def problems(self) -> list[str]:
        return [v.detail for v in self.verdicts] + (
            [self.permission_detail] if self.permission_detail else []
        )


# -- GitHub Actions -----------------------------------------------------------------------


class DispatchRequest(Strict):
    cd: CdConfig
    tag: str = Field(pattern=TAG_PATTERN)
    not_before: dt.datetime = Field(
        description="runs created before this are never taken for this dispatch"
    )
    grant: Grant | None = Field(
        None, description="the signed approvals, checked again by the activity"
    )


class PendingDeployment(Strict):
    environment: str
    environment_id: int
    reviewers: list[str] = Field(default_factory=list)
    current_user_can_approve: bool = False
    waiting_since: dt.datetime | None = None


class RunState(Strict):
    run_id: int
    number: int = 0
    html_url: str = ""
    status: str = "queued"
    conclusion: str | None = None
    title: str = ""
    pending: list[PendingDeployment] = Field(default_factory=list)
    failed_steps: list[str] = Field(default_factory=list)
    adopted: bool = Field(
        False, description="found among the runs instead of dispatched (a retried dispatch)"
    )


class RunFollow(Strict):
    cd: CdConfig
    run_id: int
    known_status: str = Field(
        "", description="return as soon as the run's status differs from this, or it completed"
    )
    poll_seconds: float = Field(2.0, gt=0)


class ArtifactsRequest(Strict):
    cd: CdConfig
    name: str = Field("", description="one artifact by name; empty: the pipeline's backups")
    limit: int = Field(20, ge=1, le=100)


class ArtifactInfo(Strict):
    id: int
    name: str
    run_id: int | None = None
    created: dt.datetime | None = None
    expired: bool = False
    size: int = 0


class ArtifactList(Strict):
    artifacts: list[ArtifactInfo]


class ManifestSource(Strict):
    kind: Literal["artifact", "backup", "file"]
    name: str = Field(
        min_length=1, max_length=253, description="artifact name, ConfigMap name or file path"
    )


SECRET_ENV = re.compile(r"(?i)(passw|secret|token|api[_-]?key|private[_-]?key|credential)")


def restore_manifest(text: str, deployment: str | None = None) -> dict[str, Any]:
    """The one apps/v1 Deployment a restore file holds, parsed; ValueError naming what is wrong.
    Checked before the file goes anywhere (the CLI puts it into a workflow's history, which
    keeps it): one document, a Deployment and nothing else (no List, no Secret), no Secret
    data (`data`, `stringData`, or a literal env value under a secret-looking name: those come
    from `valueFrom.secretKeyRef`), and no YAML anchors or aliases (a few hundred bytes of them
    expand to millions of items)."""
    import yaml  # imported here: workflows import this module, and never parse YAML

    class NoAliases(yaml.SafeLoader):  # type: ignore[misc]  # yaml has no type hints here
        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                mark = event.start_mark
                raise ValueError(
                    f"YAML anchors and aliases are refused (line {mark.line + 1}): write the "
                    "manifest out in full"
                )
            return super().compose_node(parent, index)

    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise ValueError(f"the manifest is over {MAX_MANIFEST_BYTES} bytes")
    try:
        documents = [d for d in yaml.load_all(text, Loader=NoAliases) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"the manifest is not valid YAML: {str(exc).splitlines()[0]}") from None
    for number, document in enumerate(documents, 1):
        secret = _secret_in(document, "")
        if secret:
            where = f"document {number}: " if len(documents) > 1 else ""
            raise ValueError(f"the manifest holds Secret data ({where}{secret}); it is refused")
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise ValueError(
            f"the manifest must hold one Deployment, it holds {len(documents)} objects"
        )
    manifest = documents[0]
    if (manifest.get("apiVersion"), manifest.get("kind")) != ("apps/v1", "Deployment"):
        raise ValueError(
            f"the manifest is a {manifest.get('kind')} ({manifest.get('apiVersion')}), not an "
            "apps/v1 Deployment"
        )
    meta = manifest.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if deployment is not None and name != deployment:
        raise ValueError(f"the manifest is deployment/{name}, not deployment/{deployment}")
    return manifest


def _secret_in(node: object, where: str) -> str | None:
    """Where in `node` Secret data is, or None."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            found = _secret_in(item, f"{where}[{i}]")
            if found:
                return found
        return None
    if not isinstance(node, dict):
        return None
    if node.get("kind") == "Secret":
        return f"a Secret at {where or 'the top'}"
    if not where:
        for key in ("data", "stringData"):
            if key in node:
                return f"a top-level {key}"
    if isinstance(node.get("name"), str) and "value" in node and SECRET_ENV.search(node["name"]):
        return f"a literal value for {node['name']} at {where}; use valueFrom.secretKeyRef"
    for key, value in node.items():
        found = _secret_in(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


class FetchedManifest(Strict):
    source: ManifestSource
    text: str = Field(max_length=MAX_MANIFEST_BYTES)
    detail: str = ""


# -- method 2: redeploy -------------------------------------------------------------------


class RedeployRequest(DeploymentTarget, DetectedRequest):
    tag: str = Field(pattern=TAG_PATTERN, description="a known-good image tag in Artifact Registry")
    dry_run: bool = False


class RedeployPlanRequest(Strict):
    namespace: str
    deployment: str
    container: str | None = None
    image: str = Field(description="the image to run, with its tag")


class RedeployPlan(Strict):
    namespace: str
    deployment: str
    deployment_uid: str
    container: str
    live_image: str
    live_revision: int
    image: str
    last_revision: int | None = Field(
        None, description="the newest revision whose template ran `image`"
    )


class DeploymentChangeStatus(GatedStatus):
    """A change of a Deployment that ends in a rollout: the rollout, what was seen
    when it stalled, why images could not be pulled, and the verification."""

    namespace: str
    deployment: str
    rollout: str = ""
    verification: VerifyResult | None = None
    diagnostics: Diagnostics | None = None
    pull: PullDiagnosis | None = None


class RedeployStatus(Checklisted, Escalating, DeploymentChangeStatus):
    tag: str
    images: list[RegistryImage] = Field(
        default_factory=list, description="the registry's newest images when planned"
    )
    plan: RedeployPlan | None = None
    pushed: dt.datetime | None = None
    run: RunState | None = None
    problems: list[str] = Field(default_factory=list)


class RedeployResult(Strict):
    status: RedeployStatus
    no_op: bool = False


def image_tag(image: str) -> tuple[str, str]:
    """(repository path, tag) of an image reference; the tag is '' for a digest or none."""
    if "@" in image:
        return image.split("@", 1)[0], ""
    path, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, ""
    return path, tag


def valid_tag(tag: str) -> bool:
    return re.fullmatch(TAG_PATTERN, tag) is not None


def redeploy_plan(
    plan: RedeployPlan, tag: str, cd: CdConfig, pushed: dt.datetime | None
) -> dict[str, Any]:
    """What approvers of a redeploy sign: the image change and the pipeline run that makes it."""
    return {
        "kind": "redeploy",
        "namespace": plan.namespace,
        "deployment": plan.deployment,
        "deployment_uid": plan.deployment_uid,
        "from_image": plan.live_image,
        "to_image": plan.image,
        "tag": tag,
        "pushed": pushed.isoformat() if pushed else None,
        "last_revision": plan.last_revision,
        **dispatch_facts(cd, tag),
    }


def dispatch_facts(cd: CdConfig, tag: str) -> dict[str, Any]:
    """The facts of a redeploy the dispatching activity checks against the approved plan."""
    return {"repository": cd.repository, "workflow": cd.workflow, "ref": cd.ref, "tag": tag}
