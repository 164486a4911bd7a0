"""Which Temporal Web UI belongs to the Temporal the CLI talks to.

`modoru up` records its stack (Temporal address, Web UI, pid) in
`$XDG_STATE_HOME/modoru/stacks/` (default `~/.local/state/modoru/stacks/`) while
it runs, so `modoru status` in another shell links the Web UI that stack
started, whatever `--ui-port` chose. MODORU_WEB_UI, when set, wins; Temporal
Cloud addresses link Temporal Cloud's UI; the local default address links the
dev server's default UI; any other address gets no link rather than a wrong one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

LOCAL_DEFAULT_ADDRESSES = ("127.0.0.1:7233", "localhost:7233")
LOCAL_DEFAULT_UI = "http://127.0.0.1:8233"
CLOUD_UI = "https://cloud.temporal.io"


def registry_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    base = (
        Path(environ["XDG_STATE_HOME"])
        if environ.get("XDG_STATE_HOME")
        else Path.home() / ".local" / "state"
    )
    return base / "modoru" / "stacks"


def _normal(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"{'127.0.0.1' if host == 'localhost' else host}:{port}"


def _entry_path(address: str, environ: Mapping[str, str] | None = None) -> Path:
    return registry_dir(environ) / (_normal(address).replace(":", "_").replace("/", "_") + ".json")


def register(address: str, web_ui: str, state_dir: Path, pid: int | None = None) -> Path:
    path = _entry_path(address)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "temporal": address,
        "web_ui": web_ui,
        "state_dir": str(state_dir.resolve()),
        "pid": pid or os.getpid(),
    }
    path.write_text(json.dumps(entry, indent=2) + "\n")
    return path


def unregister(address: str, pid: int | None = None) -> None:
    """Forget the stack at `address`, if it is still the one `pid` registered."""
    path = _entry_path(address)
    with contextlib.suppress(FileNotFoundError, ValueError):
        if json.loads(path.read_text()).get("pid") == (pid or os.getpid()):
            path.unlink()


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def registered_web_ui(address: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The Web UI of a running `modoru up` whose Temporal is at `address`."""
    try:
        entry = json.loads(_entry_path(address, environ).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(entry, dict) or not _alive(entry.get("pid")):
        return None
    web_ui = entry.get("web_ui")
    return web_ui if isinstance(web_ui, str) and web_ui else None


def web_ui_for(
    address: str, configured: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    if configured:
        return configured.rstrip("/")
    found = registered_web_ui(address, environ)
    if found:
        return found
    if address.rpartition(":")[0].endswith(".tmprl.cloud"):
        return CLOUD_UI
    if address in LOCAL_DEFAULT_ADDRESSES:
        return LOCAL_DEFAULT_UI
    return None


def workflow_link(web_ui: str | None, namespace: str, workflow_id: str) -> str | None:
    return f"{web_ui}/namespaces/{namespace}/workflows/{workflow_id}" if web_ui else None
