"""Switching an app to another database: the Secret keys that name it, and a
restart so the pods read them. Both idempotent: the keys are set, not toggled,
and the restart stamps a time the workflow chose."""

from __future__ import annotations

import base64

from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from temporalio import activity

from runbook.pitr_models import RestartRequest, SecretKeysPrevious, SecretKeysUpdate

from .errors import permanent, raise_for_api_status

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets


class SwitchActivities:
    def __init__(self, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
        self.apps = apps
        self.core = core

    async def _secret(self, namespace: str, name: str):
        try:
            return await self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(f"secret/{name} does not exist in namespace {namespace!r}: fix the catalog's pitr.secret", "SecretNotFound") from None
            raise_for_api_status(exc.status, f"reading secret/{name}", None)  # the body could echo the secret

    @activity.defn(name="k8s.read_secret_keys")
    async def read_secret_keys(self, request: SecretKeysUpdate) -> SecretKeysPrevious:
        """The current values of the keys about to be switched (addresses, not credentials)."""
        found = await self._secret(request.namespace, request.secret)
        data = found.data or {}
        return SecretKeysPrevious(values={k: base64.b64decode(data[k]).decode() if k in data else None for k in request.values})

    @activity.defn(name="k8s.update_secret_keys")
    async def update_secret_keys(self, request: SecretKeysUpdate) -> SecretKeysPrevious:
        await self._secret(request.namespace, request.secret)
        patch = {"data": {k: base64.b64encode(v.encode()).decode() for k, v in request.values.items()}}
        try:
            await self.core.patch_namespaced_secret(request.secret, request.namespace, patch)
        except ApiException as exc:
            raise_for_api_status(exc.status, f"updating secret/{request.secret}", None)
        return SecretKeysPrevious(values=dict(request.values))

    @activity.defn(name="k8s.rollout_restart")
    async def rollout_restart(self, request: RestartRequest) -> str:
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: request.restarted_at}}}}}
        try:
            await self.apps.patch_namespaced_deployment(request.deployment, request.namespace, patch)
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(f"deployment/{request.deployment} does not exist in namespace {request.namespace!r}", "DeploymentNotFound") from None
            raise_for_api_status(exc.status, f"restarting deployment/{request.deployment}", exc.body)
        return f"deployment/{request.deployment} restarted at {request.restarted_at}"
