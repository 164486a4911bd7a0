"""Worker and CLI settings, from the environment (MODORU_*) or a .env file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

TASK_QUEUE = "modoru-rollbacks"


def bundled_catalog() -> Path:
    return Path(str(resources.files("runbook") / "data" / "catalog.yaml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODORU_", env_file=".env", extra="ignore")

    # Temporal's own client configuration comes first (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
    # TEMPORAL_API_KEY, TEMPORAL_TLS*, TEMPORAL_PROFILE, temporal.toml: see worker/client.py);
    # these override it where set.
    temporal_address: str | None = Field(
        None, description="host:port of the Temporal frontend; overrides TEMPORAL_ADDRESS"
    )
    temporal_namespace: str | None = Field(None, description="overrides TEMPORAL_NAMESPACE")
    temporal_tls: bool | None = Field(
        None, description="server-only TLS on (true) or off (false); overrides TEMPORAL_TLS"
    )
    temporal_tls_cert: Path | None = Field(None, description="client certificate for mTLS")
    temporal_tls_key: Path | None = None
    temporal_api_key: SecretStr | None = Field(
        None, description="Temporal Cloud API key; overrides TEMPORAL_API_KEY"
    )
    task_queue: str = TASK_QUEUE
    web_ui: str | None = Field(
        None,
        description="base URL of the Temporal Web UI, for links; default: the one `modoru up` "
        "started for the address in use",
    )
    kubeconfig: Path | None = Field(
        None, description="kubeconfig file; none: in-cluster config, then ~/.kube/config"
    )
    kube_context: str | None = None
    catalog: Path = Field(default_factory=bundled_catalog)
    notices_dir: Path = Field(
        Path("."), description="where relative jsonl notice paths are written"
    )
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        "none", description="where traces go; otlp reads OTEL_EXPORTER_OTLP_*"
    )
    metrics_address: str | None = Field(
        None, description="host:port for the worker's Prometheus /metrics, e.g. 0.0.0.0:9464"
    )
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    monitoring_project: str | None = Field(
        None, description="Cloud project with the services' metrics and alerts"
    )
    monitoring_endpoint: str | None = Field(
        None, description="gRPC host:port of Cloud Monitoring; default: Google's"
    )
    monitoring_rest_endpoint: str = Field(
        "https://monitoring.googleapis.com", description="base URL for projects.alerts.list"
    )
    monitoring_insecure: bool = Field(
        False, description="plain text, no credentials: the sandbox's emulator only"
    )
    monitoring_clock_epoch: float | None = Field(
        None,
        description="the sandbox's metric clock (endpoints.json metric_clock); the emulator only",
    )
    monitoring_clock_speed: float = Field(
        1.0, gt=0, description="the sandbox's metric clock speed; the emulator only"
    )
    logging_endpoint: str | None = Field(
        None,
        description="base URL of the Cloud Logging REST API (e.g. http://127.0.0.1:PORT/); "
        "default: Google's",
    )
    logging_project: str | None = Field(
        None, description="Cloud project with the services' logs; default: the monitoring project"
    )
    logging_insecure: bool = Field(
        False, description="plain text, no credentials: the sandbox's emulator only"
    )
    cloudsql_project: str | None = Field(
        None,
        description="Cloud project of the Cloud SQL instances (a catalog entry's "
        "migration.cloudsql_project overrides it)",
    )
    cloudsql_endpoint: str | None = Field(
        None,
        description="base URL of the Cloud SQL Admin REST API (e.g. http://127.0.0.1:PORT/); "
        "default: Google's",
    )
    cloudsql_insecure: bool = Field(
        False, description="plain text, no credentials: the sandbox's emulator only"
    )
    # A rollback holds one activity slot at a time (two while its start notice goes out beside
    # the undo), and the long ones, the rollout wait and verification, sleep most of their
    # minutes. Slots must outnumber the rollbacks verifying at once, or the undo of every other
    # service waits for a verification window to end (docs/benchmarks.md, "Undo first"). A
    # sleeping activity costs memory, not CPU.
    max_concurrent_activities: int = Field(1000, gt=0)
    max_concurrent_workflow_tasks: int = Field(100, gt=0)
    codec_keys: SecretStr | None = Field(
        None,
        description="payload encryption keys, id:base64 of 32 bytes, comma-separated, current "
        "first; none: off",
    )
    codec_keys_file: Path | None = Field(
        None, description="a file with the same keys (commas or newlines), e.g. a mounted Secret"
    )
    codec_cors_origins: str | None = Field(
        None,
        description="Web UI origins the codec server answers, comma-separated; default: the "
        "web_ui setting's origin",
    )
    # Slack's Web API and interactivity (the bot token and the signing secret come from the
    # environment or a mounted file only, never from a request or a history).
    slack_bot_token: SecretStr | None = Field(None, description="the app's bot token (xoxb-…)")
    slack_bot_token_file: Path | None = Field(None, description="a file holding the bot token")
    slack_signing_secret: SecretStr | None = Field(
        None, description="the app's signing secret, for the gateway's request checks"
    )
    slack_signing_secret_file: Path | None = Field(
        None, description="a file holding the signing secret"
    )
    slack_api_url: str = Field(
        "https://slack.com/api/", description="the Web API's base URL (the sandbox's emulator)"
    )
    slack_attestor_key_file: Path | None = Field(
        None,
        description="the Slack gateway's own SSH private key (ed25519), listed in the catalog's "
        "attestors",
    )
    slack_audit_file: Path | None = Field(
        None, description="where the Slack gateway appends its audit lines (JSONL)"
    )
    web_ui_public: str | None = Field(
        None, description="the Web UI's address for links in Slack; default: web_ui"
    )

    def slack_secret(self, name: str) -> str | None:
        """`slack_bot_token` or `slack_signing_secret`, from its variable or its file (the
        first line, stripped); None when neither is set."""
        value: SecretStr | None = getattr(self, name)
        if value is not None and value.get_secret_value().strip():
            return value.get_secret_value().strip()
        path: Path | None = getattr(self, f"{name}_file")
        if path is None:
            return None
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(
                f"MODORU_{name.upper()}_FILE: cannot read {path}: {exc.strerror}"
            ) from None
        return text or None
