"""Clients for the runbook's methods 2 and 3: GitHub Actions (githubkit) and
Artifact Registry (the discovery-based REST client, with Application Default
Credentials, or the sandbox's emulator in plain text), and the Kubernetes
activities that restore and repair."""

from __future__ import annotations

import logging

from kubernetes.aio import client as kube
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from activities.artifact_registry import IAM_SCOPE, ArtifactRegistry, RegistryActivities
from activities.artifact_registry import SCOPE as REGISTRY_SCOPE
from activities.errors import permanent
from activities.gatekeeper import Gatekeeper
from activities.github import GitHubActivities
from activities.kubernetes_ops import KubernetesOpsActivities

log = logging.getLogger("modoru.worker")


class CdSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODORU_", env_file=".env", extra="ignore")

    github_api_url: str = Field(
        "https://api.github.com",
        description="GitHub's REST API (GitHub Enterprise Server: https://HOST/api/v3)",
    )
    artifact_registry_endpoint: str | None = Field(
        None, description="the Artifact Registry REST API's base URL; default: Google's"
    )
    artifact_registry_insecure: bool = Field(
        False, description="plain text, no credentials: the sandbox's emulator only"
    )


def registry_for(settings: CdSettings) -> ArtifactRegistry:
    from googleapiclient.http import build_http

    if settings.artifact_registry_insecure:
        if not settings.artifact_registry_endpoint:
            raise ValueError(
                "MODORU_ARTIFACT_REGISTRY_INSECURE needs MODORU_ARTIFACT_REGISTRY_ENDPOINT (the "
                "emulator's base URL)"
            )
        # The emulator serves the IAM Credentials stand-in on the same port.
        return ArtifactRegistry(
            settings.artifact_registry_endpoint,
            build_http,
            iam_endpoint=settings.artifact_registry_endpoint,
        )
    import google.auth
    import google_auth_httplib2
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=[REGISTRY_SCOPE])
    except DefaultCredentialsError:
        log.warning(
            "no Google credentials: redeploys and image-pull diagnoses cannot read Artifact "
            "Registry"
        )

        def refuse():
            raise permanent(
                "this worker has no Google credentials for Artifact Registry (Workload Identity "
                "or GOOGLE_APPLICATION_CREDENTIALS, "
                "roles/artifactregistry.reader)",
                "RegistryDenied",
            )

        return ArtifactRegistry(settings.artifact_registry_endpoint, refuse)
    # Acting as the nodes' account (the pull diagnosis) needs the broader scope; the registry's
    # own reads keep the read-only one.
    iam_credentials, _ = google.auth.default(scopes=[IAM_SCOPE])
    return ArtifactRegistry(
        settings.artifact_registry_endpoint,
        lambda: google_auth_httplib2.AuthorizedHttp(credentials, http=build_http()),
        iam_http_factory=lambda: google_auth_httplib2.AuthorizedHttp(
            iam_credentials, http=build_http()
        ),
        caller=_account_of(credentials),
    )


def _account_of(credentials) -> str:
    """The worker's service account, when the credentials know it already (the metadata
    server's say "default" until first refreshed: then the messages say "this worker")."""
    email = getattr(credentials, "service_account_email", "") or ""
    return email if "@" in email else ""


def cd_activities(
    api: kube.ApiClient, gatekeeper: Gatekeeper | None, settings: CdSettings | None = None
) -> list:
    """The activities of methods 2 and 3 and the troubleshooting steps."""
    settings = settings or CdSettings()
    ops = KubernetesOpsActivities(kube.AppsV1Api(api), kube.CoreV1Api(api), gatekeeper)
    github = GitHubActivities(settings.github_api_url, gatekeeper=gatekeeper)
    found = [
        ops.redeploy_plan,
        ops.read_backup,
        ops.restore_check,
        ops.restore_apply,
        ops.repair_plan,
        ops.delete_replicaset,
        ops.rollout_restart,
        github.dispatch,
        github.follow_run,
        github.list_backups,
        github.download_backup,
    ]
    registry = RegistryActivities(registry_for(settings))
    return found + [registry.images, registry.diagnose_pull]
