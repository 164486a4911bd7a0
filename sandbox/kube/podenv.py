"""The environment a container's processes see: env (values, secret, config map
and field references, $(VAR) expansion) over envFrom, over what the runtime sets.

Unresolvable required references raise LookupError with the kubelet's wording;
the kubelet would refuse to start such a container (CreateContainerConfigError)."""

from __future__ import annotations

import base64
import os
import re
from typing import Any

from .resources import CONFIGMAPS, SECRETS
from .store import Store

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_FIELD_REF = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]$")
_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z0-9]+)\)")


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container of the pod, init and ephemeral ones included."""
    spec = pod["spec"]
    return [
        c
        for key in ("containers", "initContainers", "ephemeralContainers")
        for c in spec.get(key) or []
    ]


def _source(
    store: Store, kind: str, namespace: str, name: str, optional: bool
) -> dict[str, str] | None:
    resource = SECRETS if kind == "Secret" else CONFIGMAPS
    obj = store.peek(resource, namespace, name)
    if obj is None:
        if optional:
            return None
        raise LookupError(f'{kind.lower()} "{name}" not found')
    if resource is CONFIGMAPS:
        return dict(obj.get("data") or {})
    values = {
        k: base64.b64decode(v).decode("utf-8", "replace")
        for k, v in (obj.get("data") or {}).items()
    }
    return {**(obj.get("stringData") or {}), **values}


def _key_ref(store: Store, namespace: str, kind: str, ref: dict[str, Any]) -> str | None:
    optional = bool(ref.get("optional"))
    values = _source(store, kind, namespace, ref.get("name", ""), optional)
    if values is None:
        return None
    if ref.get("key") not in values:
        if optional:
            return None
        raise LookupError(
            f"couldn't find key {ref.get('key')} in {kind} {namespace}/{ref.get('name', '')}"
        )
    return values[ref["key"]]


def _field_ref(pod: dict[str, Any], path: str) -> str | None:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
    }
    if path in simple:
        return simple[path] or ""
    match = _FIELD_REF.match(path)
    return (meta.get(match[1]) or {}).get(match[2], "") if match else None


def _expand(value: str, env: dict[str, str]) -> str:
    # $(VAR) refers to variables defined earlier; $$ escapes; unknown references stay as written.
    return _VAR_REF.sub(lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), value)


def container_env(
    store: Store, pod: dict[str, Any], container: str, *, tty: bool = False
) -> dict[str, str]:
    """The environment a process in `container` sees; LookupError if a reference cannot be
    resolved."""
    namespace = pod["metadata"]["namespace"]
    spec = next(c for c in containers(pod) if c["name"] == container)
    env = {
        "PATH": CONTAINER_PATH,
        "HOSTNAME": pod["metadata"]["name"],
        "HOME": os.environ.get("HOME", "/root"),
    }
    if tty:
        env["TERM"] = "xterm"
    for source in spec.get("envFrom") or []:
        kind, ref = (
            ("Secret", source["secretRef"])
            if source.get("secretRef")
            else ("ConfigMap", source.get("configMapRef") or {})
        )
        values = (
            _source(store, kind, namespace, ref.get("name", ""), bool(ref.get("optional"))) or {}
        )
        prefix = source.get("prefix", "")
        env.update({prefix + k: v for k, v in values.items() if "=" not in k and "\0" not in k})
    for var in spec.get("env") or []:
        source = var.get("valueFrom")
        if source is None:
            value: str | None = _expand(var.get("value", ""), env)
        elif "secretKeyRef" in source:
            value = _key_ref(store, namespace, "Secret", source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            value = _key_ref(store, namespace, "ConfigMap", source["configMapKeyRef"])
        elif "fieldRef" in source:
            value = _field_ref(pod, source["fieldRef"].get("fieldPath", ""))
        else:  # resourceFieldRef: the sandbox has no resource accounting to report
            value = None
        if value is not None:
            env[var["name"]] = value
    return env
