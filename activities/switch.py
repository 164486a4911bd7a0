"""Switching an app to another Cloud SQL instance the way GKE apps reach it: the
instance connection name its Auth Proxy sidecar is given in the Deployment (a
changed pod template rolls the app out). Idempotent: the name is set, not
toggled, and a retry that finds it set changes nothing."""

from __future__ import annotations

from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from temporalio import activity

from runbook.pitr_models import ProxySwitch, ProxySwitched

from .errors import permanent, raise_for_api_status
from .proxy import proxy_container, retarget


class SwitchActivities:
    def __init__(self, apps: client.AppsV1Api) -> None:
        self.apps = apps

    async def _deployment(self, namespace: str, name: str):
        try:
            return await self.apps.read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(f"deployment/{name} does not exist in namespace {namespace!r}", "DeploymentNotFound") from None
            raise_for_api_status(exc.status, f"reading deployment/{name}", exc.body)

    @activity.defn(name="k8s.switch_proxy_instance")
    async def switch_proxy_instance(self, request: ProxySwitch) -> ProxySwitched:
        found = await self._deployment(request.namespace, request.deployment)
        spec = self.apps.api_client.sanitize_for_serialization(found.spec.template.spec)
        proxy = proxy_container(spec, request.proxy_container)
        if proxy is None:
            raise permanent(f"deployment/{request.deployment} has no Cloud SQL Auth Proxy container {request.proxy_container!r}; "
                            "fix the catalog's database.proxy_container", "ProxyNotFound")
        args = proxy.get("args") or []
        wanted = retarget(args, request.from_connection_name, request.to_connection_name, request.deployment)
        if wanted == args:
            return ProxySwitched(changed=False, container=proxy["name"], args=args)
        group = "initContainers" if proxy in (spec.get("initContainers") or []) else "containers"
        index = spec[group].index(proxy)
        path = f"/spec/template/spec/{group}/{index}/args"
        # The test makes the patch apply only to the arguments read here: a concurrent edit fails it instead of being overwritten.
        patch = [{"op": "test", "path": path, "value": args}, {"op": "replace", "path": path, "value": wanted}]
        try:
            await self.apps.patch_namespaced_deployment(request.deployment, request.namespace, patch)
        except ApiException as exc:
            raise_for_api_status(exc.status, f"switching the proxy of deployment/{request.deployment}", exc.body)
        return ProxySwitched(changed=True, container=proxy["name"], args=wanted)
