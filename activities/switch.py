"""Switching an app to another Cloud SQL instance the way GKE apps reach it: the
instance connection name its Auth Proxy sidecar is given in the Deployment (a
changed pod template rolls the app out). Idempotent: the name is set, not
toggled, and a retry that finds it set changes nothing."""

from __future__ import annotations

from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from temporalio import activity

from runbook import activity_refs as refs
from runbook.pitr_models import ProxySwitch, ProxySwitched

from .errors import permanent, raise_for_api_error
from .gatekeeper import Gatekeeper
from .proxy import proxy_container, retarget


class SwitchActivities:
    def __init__(self, apps: client.AppsV1Api, gatekeeper: Gatekeeper | None = None) -> None:
        self.apps = apps
        self.gatekeeper = gatekeeper

    async def _deployment(self, namespace: str, name: str) -> client.V1Deployment:
        try:
            return await self.apps.read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(
                    f"deployment/{name} does not exist in namespace {namespace!r}",
                    "DeploymentNotFound",
                ) from None
            raise_for_api_error(exc, f"reading deployment/{name}")

    @activity.defn(name=refs.SWITCH_PROXY.name)
    async def switch_proxy_instance(self, request: ProxySwitch) -> ProxySwitched:
        if self.gatekeeper is not None:
            entry = self.gatekeeper.catalog.find(request.namespace, request.deployment)
            plan = request.grant.plan if request.grant else {}
            # The approved switch covers switching back to the source when the app is unhealthy on
            # the clone.
            back = (
                plan.get("to") == request.from_connection_name
                and plan.get("from") == request.to_connection_name
            )
            facts = {
                "kind": "pitr-switch",
                "deployment": request.deployment,
                "from": request.to_connection_name if back else request.from_connection_name,
                "to": request.from_connection_name if back else request.to_connection_name,
            }
            needed = entry.pitr.approvals if entry and entry.pitr else 1
            self.gatekeeper.require(
                request.grant,
                entry,
                needed,
                facts,
                f"point deployment/{request.deployment}'s proxy at {request.to_connection_name}",
            )
        found = await self._deployment(request.namespace, request.deployment)
        spec = self.apps.api_client.sanitize_for_serialization(found.spec.template.spec)
        proxy = proxy_container(spec, request.proxy_container)
        if proxy is None:
            raise permanent(
                f"deployment/{request.deployment} has no Cloud SQL Auth Proxy container "
                f"{request.proxy_container!r}; "
                "fix the catalog's database.proxy_container",
                "ProxyNotFound",
            )
        args = proxy.get("args") or []
        wanted = retarget(
            args, request.from_connection_name, request.to_connection_name, request.deployment
        )
        if wanted == args:
            return ProxySwitched(changed=False, container=proxy["name"], args=args)
        group = "initContainers" if proxy in (spec.get("initContainers") or []) else "containers"
        index = spec[group].index(proxy)
        path = f"/spec/template/spec/{group}/{index}/args"
        # The test makes the patch apply only to the arguments read here: a concurrent edit fails it
        # instead of being overwritten.
        patch = [
            {"op": "test", "path": path, "value": args},
            {"op": "replace", "path": path, "value": wanted},
        ]
        try:
            await self.apps.patch_namespaced_deployment(
                request.deployment, request.namespace, patch
            )
        except ApiException as exc:
            raise_for_api_error(exc, f"switching the proxy of deployment/{request.deployment}")
        return ProxySwitched(changed=True, container=proxy["name"], args=wanted)
