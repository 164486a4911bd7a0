"""Demo identities for the embedded stack: `modoru up` makes an SSH key for each
of the bundled catalog's roles in its state dir (once; later runs reuse them)
and a copy of the catalog that lists them, so decisions there are signed as
in production, without anyone's own keys."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from runbook.signatures import new_private_key, public_key_line
from worker.settings import bundled_catalog

DEMO_PEOPLE = {"oncall": ["oncall"], "sre-lead": ["sre-lead"], "backend-lead": ["backend-lead"]}


def _private(path: Path, data: bytes) -> None:
    """`data` in `path`, created 0600: never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


SLACK_GATEWAY = "slack-gateway"
SLACK_GATES = ["approval", "clone", "switch"]
# The demo's rule: a Slack approval counts at a rollback's gate; of the two a PITR clone or
# switch needs, at most one may come from Slack (the other by the CLI with a key).
SLACK_APPROVALS = {"approval": True, "clone": "at_most_one", "switch": "at_most_one"}


def _with_slack(catalog: dict, slack: dict, gateway_key: Path) -> None:
    """The sandbox Slack's accounts on the demo people, the gateway as their attestor, and
    the sandbox channel (by id) on every service, whose approvals may come from Slack."""
    users = slack.get("users", {})
    for person in catalog["identities"]:
        if person["id"] in users:
            person["slack"] = {"team": slack["team"], "user": users[person["id"]]}
    catalog["attestors"] = [
        {
            "name": SLACK_GATEWAY,
            "public_key": public_key_line(gateway_key.read_bytes()),
            "identities": [p["id"] for p in catalog["identities"] if "slack" in p],
            "gates": SLACK_GATES,
        }
    ]
    for entry in [
        *catalog.get("services", []),
        *([catalog["default"]] if catalog.get("default") else []),
    ]:
        entry["channels"] = [
            *entry.get("channels", []),
            {"kind": "slack", "channel": slack["channel"]},
        ]
        entry.setdefault("approval", {})["slack_approvals"] = dict(SLACK_APPROVALS)


def demo_identities(state_dir: Path, slack: dict | None = None) -> tuple[Path, dict[str, Path]]:
    """(catalog path, key file by identity) under `state_dir`; with `slack` (the sandbox
    Slack's team, channel and users by name), the demo people's Slack accounts and the
    gateway's attestor key (`slack-gateway.key`) too."""
    folder = state_dir / "identities"
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
        os.chmod(folder, 0o700)
    keys = {}
    for name in DEMO_PEOPLE:
        key = folder / f"{name}.key"
        if not key.exists():
            _private(key, new_private_key())
        keys[name] = key
    catalog = yaml.safe_load(bundled_catalog().read_text(encoding="utf-8"))
    catalog["identities"] = [
        {
            "id": name,
            "display_name": f"demo {name}",
            "roles": roles,
            "keys": [public_key_line(keys[name].read_bytes())],
        }
        for name, roles in DEMO_PEOPLE.items()
    ]
    catalog["oncall_role"] = "oncall"
    if slack:
        gateway_key = folder / f"{SLACK_GATEWAY}.key"
        if not gateway_key.exists():
            _private(gateway_key, new_private_key())
        keys[SLACK_GATEWAY] = gateway_key
        _with_slack(catalog, slack, gateway_key)
    path = (
        folder / "catalog.yaml"
    )  # beside the keys: a catalog of the user's own in the state dir is left alone
    _private(
        path,
        (
            "# Made by modoru up: the bundled catalog plus demo identities (their keys beside "
            "this file).\n" + yaml.safe_dump(catalog, sort_keys=False, allow_unicode=True)
        ).encode(),
    )
    return path, keys


def guard_seal_key(state_dir: Path) -> str:
    """The workers' shared key for the release guard's seal (base64), made once."""
    path = state_dir / "guard-seal.key"
    if not path.exists():
        _private(path, base64.b64encode(os.urandom(32)))
    return path.read_text().strip()
