"""Where a service's images live (Artifact Registry) and how its production
deploy pipeline is started (GitHub Actions): catalog sections for the
runbook's methods 2 and 3."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Docker's tag grammar (distribution/reference): a word character, then up to 127 of [\w.-].
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class RegistryConfig(Strict):
    """An Artifact Registry Docker repository:
    LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/PACKAGE."""

    project: str = Field(min_length=1)
    location: str = Field("asia-northeast1", min_length=1)
    repository: str = Field(min_length=1)
    package: str = Field(min_length=1, description="the image name, e.g. tekutoko-api")
    node_service_account: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9.-]*@[a-z0-9][a-z0-9.-]*\.gserviceaccount\.com$",
        description="the GKE nodes' service account (they pull the images): an image-pull "
        "diagnosis checks its permission by acting as it through IAM Credentials (the worker "
        "needs roles/iam.serviceAccountTokenCreator on it); unset: only the worker's own "
        "permission is checked, and said to be the worker's",
    )

    @property
    def host_path(self) -> str:
        return f"{self.location}-docker.pkg.dev/{self.project}/{self.repository}"

    @property
    def image(self) -> str:
        return f"{self.host_path}/{self.package}"

    @property
    def resource(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/repositories/{self.repository}"


class CdConfig(Strict):
    """The service's production deploy pipeline on GitHub Actions (the runbook's "CD - Production").
    The token is never in the catalog: `token_env` names the worker's environment
    variable holding it (or `<token_env>_FILE`, a file with it)."""

    repository: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", description="owner/name")
    workflow: str = Field(
        "cd-production.yml", min_length=1, description="the workflow's file name (or numeric id)"
    )
    workflow_name: str = Field("CD - Production", description="how the Actions tab names it")
    ref: str = Field("main", min_length=1, description="the branch the workflow is dispatched on")
    tag_input: str = Field(
        "tag", min_length=1, description="the workflow_dispatch input taking the image tag"
    )
    environment: str = Field(
        "production", description="the environment whose reviewers approve the deploy in GitHub"
    )
    container: str | None = Field(
        None, description="the container whose image the pipeline sets; default: the first"
    )
    token_env: str = Field("MODORU_GITHUB_TOKEN", pattern=ENV_NAME)
    backup_prefix: str = Field(
        "deployment-backup-", description="the name prefix of the pipeline's manifest backups"
    )
    run_timeout_minutes: int = Field(
        60, ge=1, le=24 * 60, description="how long a dispatched run may take, its review included"
    )
