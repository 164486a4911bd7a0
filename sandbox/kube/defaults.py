"""Defaulting and validation, as the API server applies them on create and update."""

from __future__ import annotations

import re
from typing import Any

from . import errors
from .resources import CONFIGMAPS, DEPLOYMENTS, PODS, REPLICASETS, SECRETS, SERVICES, ResourceType
from .selectors import selector_from_match_labels

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_HELP = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', "
    "and must start and end with an alphanumeric character"
)


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        image = container.get("image", "")
        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")


def apply_defaults(resource: ResourceType, obj: dict[str, Any]) -> None:
    if resource in (DEPLOYMENTS, REPLICASETS):
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        template = spec.setdefault("template", {})
        template.setdefault("metadata", {})
        default_pod_spec(template.setdefault("spec", {}))
        if resource is DEPLOYMENTS:
            strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
    elif resource is PODS:
        default_pod_spec(obj.setdefault("spec", {}))
    elif resource is SERVICES:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    elif resource is SECRETS:
        obj.setdefault("type", "Opaque")


def validate(
    resource: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None = None
) -> None:
    """Raise a 422 Invalid listing every problem found, as field.ErrorList does."""
    causes: list[tuple[str, str, str]] = []
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    pattern = _DNS1123_LABEL if resource.kind in ("Namespace", "Service") else _DNS1123_SUBDOMAIN
    if name and (not pattern.match(name) or len(name) > 253):
        causes.append(
            ("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {_SUBDOMAIN_HELP}')
        )
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str):
            causes.append(
                (
                    f"metadata.labels[{key}]",
                    "FieldValueInvalid",
                    "Invalid value: label values must be strings",
                )
            )
    if resource in (DEPLOYMENTS, REPLICASETS):
        causes += _validate_workload(obj, old)
    elif resource is PODS:
        causes += _validate_containers(obj.get("spec") or {}, "spec")
    elif resource is SERVICES:
        for i, port in enumerate((obj.get("spec") or {}).get("ports") or []):
            value = port.get("port")
            if not isinstance(value, int) or not 0 <= value <= 65535:
                causes.append(
                    (
                        f"spec.ports[{i}].port",
                        "FieldValueInvalid",
                        f"Invalid value: {value}: must be between 1 and 65535, inclusive",
                    )
                )
    elif resource in (CONFIGMAPS, SECRETS):
        for key, value in (obj.get("data") or {}).items():
            if not isinstance(value, str):
                causes.append(
                    (f"data[{key}]", "FieldValueInvalid", "Invalid value: must be a string")
                )
    if causes:
        raise errors.invalid(resource.group, resource.kind, name, causes)


def _validate_workload(
    obj: dict[str, Any], old: dict[str, Any] | None
) -> list[tuple[str, str, str]]:
    causes: list[tuple[str, str, str]] = []
    spec = obj.get("spec") or {}
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        causes.append(
            (
                "spec.replicas",
                "FieldValueInvalid",
                f"Invalid value: {replicas}: must be greater than or equal to 0",
            )
        )
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(("spec.selector", "FieldValueRequired", "Required value"))
    elif not selector_from_match_labels(selector)({"metadata": {"labels": labels}}):
        causes.append(
            (
                "spec.template.metadata.labels",
                "FieldValueInvalid",
                f"Invalid value: {labels}: `selector` does not match template `labels`",
            )
        )
    if old is not None and (old.get("spec") or {}).get("selector") != selector:
        causes.append(
            ("spec.selector", "FieldValueInvalid", f"Invalid value: {selector}: field is immutable")
        )
    causes += _validate_containers(template.get("spec") or {}, "spec.template.spec")
    if old is None or obj.get("kind") == "Deployment":
        progress = spec.get("progressDeadlineSeconds")
        if progress is not None and (
            not isinstance(progress, int) or progress <= (spec.get("minReadySeconds") or 0)
        ):
            causes.append(
                (
                    "spec.progressDeadlineSeconds",
                    "FieldValueInvalid",
                    f"Invalid value: {progress}: must be greater than minReadySeconds",
                )
            )
    return causes


def _validate_containers(pod_spec: dict[str, Any], path: str) -> list[tuple[str, str, str]]:
    causes: list[tuple[str, str, str]] = []
    containers = pod_spec.get("containers")
    if not containers:
        return [(f"{path}.containers", "FieldValueRequired", "Required value")]
    seen: set[str] = set()
    listed = [("containers", i, c) for i, c in enumerate(containers)]
    listed += [("initContainers", i, c) for i, c in enumerate(pod_spec.get("initContainers") or [])]
    for key, i, container in listed:
        cname = container.get("name")
        if not cname:
            causes.append((f"{path}.{key}[{i}].name", "FieldValueRequired", "Required value"))
        elif cname in seen:
            causes.append(
                (f"{path}.{key}[{i}].name", "FieldValueDuplicate", f'Duplicate value: "{cname}"')
            )
        elif not _DNS1123_LABEL.match(cname):
            causes.append(
                (
                    f"{path}.{key}[{i}].name",
                    "FieldValueInvalid",
                    f'Invalid value: "{cname}": must be a DNS label',
                )
            )
        seen.add(cname or "")
        if not container.get("image"):
            causes.append((f"{path}.{key}[{i}].image", "FieldValueRequired", "Required value"))
        policy = container.get("restartPolicy")
        if key == "initContainers" and policy is not None and policy != "Always":
            causes.append(
                (
                    f"{path}.{key}[{i}].restartPolicy",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{policy}": supported values: "Always"',
                )
            )
    return causes
