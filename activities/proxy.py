"""The Cloud SQL Auth Proxy sidecar in a pod spec: found by name or by image
(`initContainers` with restartPolicy Always, as GKE runs native sidecars, or an
ordinary container), and its instance connection name swapped for another.

The proxy (v2) takes instance connection names as positional arguments, each
optionally with a query such as `?port=5433`; only an argument that names the
expected instance is touched, so a proxy that names something else is never
silently redirected."""

from __future__ import annotations

from typing import Any

from .errors import permanent

PROXY_IMAGE = "cloud-sql-proxy"


def proxy_container(spec: dict[str, Any], name: str) -> dict[str, Any] | None:
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return next((c for c in containers if c.get("name") == name), None) or next(
        (c for c in containers if PROXY_IMAGE in str(c.get("image", ""))), None
    )


def names_instance(arg: str, connection_name: str) -> bool:
    return arg == connection_name or arg.startswith(connection_name + "?")


def retarget(args: list[str], source: str, target: str, deployment: str) -> list[str]:
    """`args` with `source` replaced by `target` (its query kept); already pointing at
    `target` is fine (a retry); naming neither is a permanent failure."""
    if any(names_instance(arg, target) for arg in args) and not any(
        names_instance(arg, source) for arg in args
    ):
        return list(args)
    if not any(names_instance(arg, source) for arg in args):
        raise permanent(
            f"the Cloud SQL Auth Proxy of deployment/{deployment} does not name {source} in its "
            f"arguments ({' '.join(args)}); "
            "modoru switches only a proxy whose arguments name the instance directly",
            "ProxyArgsUnexpected",
        )
    return [target + arg[len(source) :] if names_instance(arg, source) else arg for arg in args]
