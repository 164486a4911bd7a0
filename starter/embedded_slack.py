"""The embedded default's Slack side: the sandbox Slack's facts for the demo
catalog, and the Slack gateway process (started only when the catalog in effect
lists its key as an attestor)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING


class SlackSide:
    """Mixed into `EmbeddedStack`: its state_dir, ports and worker_env."""

    state_dir: Path
    slack_gateway_port: int
    if TYPE_CHECKING:  # EmbeddedStack's own

        def worker_env(self) -> dict[str, str]: ...

    def slack_page(self) -> str | None:
        """The sandbox Slack's page, once the sandbox is up."""
        with contextlib.suppress(OSError, ValueError):
            cloud = json.loads((self.state_dir / "sandbox" / "endpoints.json").read_text())
            return cloud.get("slack_page")
        return None

    @staticmethod
    def slack_facts(cloud: dict) -> dict | None:
        if "slack_team" not in cloud:
            return None
        return {
            "team": cloud["slack_team"],
            "channel": cloud["slack_channel"],
            "users": cloud.get("slack_users", {}),
        }

    @property
    def slack_gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.slack_gateway_port}/slack/interactions"

    def slack_gateway_env(self) -> dict[str, str]:
        """The gateway's settings: the worker's (catalog, Temporal, Slack API and token) plus
        the signing secret and its own attestor key, both from files."""
        cloud = json.loads((self.state_dir / "sandbox" / "endpoints.json").read_text())
        env = self.worker_env()
        return {
            **env,
            "MODORU_SLACK_SIGNING_SECRET_FILE": cloud["slack_signing_secret_file"],
            "MODORU_SLACK_ATTESTOR_KEY_FILE": str(
                self.state_dir / "identities" / "slack-gateway.key"
            ),
            "MODORU_SLACK_AUDIT_FILE": str(self.state_dir / "slack-gateway-audit.jsonl"),
        }

    def slack_gateway_ready(self) -> bool:
        """Whether the catalog in effect lists this stack's gateway key as an attestor (the
        demo catalog does; a catalog of the user's own may not, and then Slack's buttons are
        off: the sandbox Slack says the app did not answer)."""
        from runbook.identity import key_identity
        from runbook.signatures import public_key_line
        from worker.catalog_file import CatalogError, load_catalog

        key = self.state_dir / "identities" / "slack-gateway.key"
        try:
            catalog = load_catalog(Path(self.worker_env()["MODORU_CATALOG"]))
            public = key_identity(public_key_line(key.read_bytes()))
        except (OSError, ValueError, CatalogError):
            return False
        return any(a.public_key == public for a in catalog.attestors)

    def slack_gateway_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "starter.cli",
            "slack-gateway",
            "--port",
            str(self.slack_gateway_port),
        ]
