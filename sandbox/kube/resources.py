"""The resource types the sandbox serves, with what discovery says about them."""

from __future__ import annotations

from dataclasses import dataclass, field

READ_VERBS = ["get", "list", "watch"]
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True, eq=False)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: dict[str, str] = field(default_factory=dict)  # name -> kind
    has_generation: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.group or 'core'}/{self.plural}"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def base_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


NAMESPACES = ResourceType(
    "", "v1", "namespaces", "Namespace", "namespace", namespaced=False, short_names=("ns",)
)
PODS = ResourceType(
    "",
    "v1",
    "pods",
    "Pod",
    "pod",
    short_names=("po",),
    categories=("all",),
    subresources={"log": "Pod", "exec": "PodExecOptions", "status": "Pod"},
)
EVENTS = ResourceType("", "v1", "events", "Event", "event", short_names=("ev",))
SERVICES = ResourceType(
    "",
    "v1",
    "services",
    "Service",
    "service",
    short_names=("svc",),
    categories=("all",),
    subresources={"status": "Service"},
)
SECRETS = ResourceType("", "v1", "secrets", "Secret", "secret")
CONFIGMAPS = ResourceType("", "v1", "configmaps", "ConfigMap", "configmap", short_names=("cm",))
DEPLOYMENTS = ResourceType(
    "apps",
    "v1",
    "deployments",
    "Deployment",
    "deployment",
    short_names=("deploy",),
    categories=("all",),
    subresources={"status": "Deployment", "scale": "Scale"},
    has_generation=True,
)
REPLICASETS = ResourceType(
    "apps",
    "v1",
    "replicasets",
    "ReplicaSet",
    "replicaset",
    short_names=("rs",),
    categories=("all",),
    subresources={"status": "ReplicaSet", "scale": "Scale"},
    has_generation=True,
)

ALL = (NAMESPACES, PODS, EVENTS, SERVICES, SECRETS, CONFIGMAPS, DEPLOYMENTS, REPLICASETS)
BY_PATH = {(r.group, r.version, r.plural): r for r in ALL}
GROUPS = {"apps": ["v1"]}


def subresource_verbs(resource: ResourceType, sub: str) -> list[str]:
    if sub == "log":
        return ["get"]
    if sub == "exec":
        return ["create", "get"]
    return ["get", "patch", "update"]


def resource_list(group: str, version: str) -> dict:
    """An APIResourceList, as `/api/v1` or `/apis/apps/v1` answers."""
    entries = []
    for r in ALL:
        if r.group != group or r.version != version:
            continue
        entry = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ALL_VERBS,
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        entries.append(entry)
        for sub, kind in r.subresources.items():
            sub_entry = {
                "name": f"{r.plural}/{sub}",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": subresource_verbs(r, sub),
            }
            if sub == "scale":
                sub_entry.update(group="autoscaling", version="v1")
            entries.append(sub_entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": entries,
    }
