"""What the CD workflow's job does to the cluster, through the sandbox's store the
way the API server does it (defaults, validation, a new generation), so the
deployment controller rolls out a new revision: read the live Deployment as
`kubectl get -o yaml` prints it (without status and managedFields), set one
container's image like `kubectl set image` (plus the change-cause
annotation the pipeline writes), and tell how the rollout is going."""

from __future__ import annotations

import copy
import io
import zipfile
from datetime import datetime
from typing import Any

import yaml

from .kube.defaults import apply_defaults, validate
from .kube.deployment_status import condition
from .kube.faults import EffectLog, rollout_change, rollout_fields
from .kube.resources import DEPLOYMENTS
from .kube.store import Store

CHANGE_CAUSE = "kubernetes.io/change-cause"


def backup_name(moment: datetime) -> str:
    return moment.strftime("deployment-backup-%Y%m%d-%H%M%S")


def backup_zip(name: str, manifest: dict[str, Any]) -> bytes:
    """The artifact as actions/upload-artifact stores it: a zip holding `<name>.yaml`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.yaml", yaml.safe_dump(manifest, sort_keys=False))
    return buffer.getvalue()


def cleaned(obj: dict[str, Any]) -> dict[str, Any]:
    """`kubectl get deployment -o yaml` minus status and managedFields."""
    manifest = copy.deepcopy(obj)
    manifest.pop("status", None)
    manifest.get("metadata", {}).pop("managedFields", None)
    ordered = {
        "apiVersion": manifest.pop("apiVersion", "apps/v1"),
        "kind": manifest.pop("kind", "Deployment"),
    }
    ordered.update(manifest)
    return ordered


class DeploymentTarget:
    """The Deployment the CD job sets the image of. Its writes go to the cluster's effect log
    (`effects`, the Kubernetes API's own) beside the API's, marked `via: cd-job`, so a test
    counts a redeploy's rollouts where it counts every other change of the Deployment."""

    def __init__(
        self,
        store: Store,
        namespace: str,
        name: str,
        container: str,
        effects: EffectLog | None = None,
    ) -> None:
        self.store, self.namespace, self.name, self.container = store, namespace, name, container
        self.effects = effects

    def live(self) -> dict[str, Any] | None:
        return self.store.peek(DEPLOYMENTS, self.namespace, self.name)

    def manifest(self) -> dict[str, Any]:
        current = self.live()
        if current is None:
            raise LookupError(f'deployments.apps "{self.name}" not found')
        return cleaned(current)

    def set_image(self, image: str, change_cause: str) -> int:
        """Set the container's image; returns the generation the rollout has to reach."""
        current = self.live()
        if current is None:
            raise LookupError(f'deployments.apps "{self.name}" not found')
        updated = copy.deepcopy(current)
        containers = updated["spec"]["template"]["spec"]["containers"]
        target = next((c for c in containers if c["name"] == self.container), None)
        if target is None:
            raise LookupError(f'unable to find container named "{self.container}"')
        target["image"] = image
        updated["metadata"].setdefault("annotations", {})[CHANGE_CAUSE] = change_cause
        apply_defaults(DEPLOYMENTS, updated)
        validate(DEPLOYMENTS, updated, current)
        stored = self.store.update(DEPLOYMENTS, updated)
        generation = int(stored["metadata"].get("generation", 1))
        if self.effects is not None:
            self.effects.record(
                "deployments.update",
                resource="deployments",
                verb="update",
                namespace=self.namespace,
                name=self.name,
                subresource=None,
                via="cd-job",
                **rollout_change(rollout_fields(current), rollout_fields(stored)),
            )
        return generation

    def rollout(self, generation: int) -> str:
        """`complete`, `failed` (ProgressDeadlineExceeded) or `progressing`, as `kubectl rollout
        status` judges it."""
        d = self.live()
        if d is None:
            return "failed"
        status = d.get("status") or {}
        if status.get("observedGeneration", 0) < generation:
            return "progressing"
        progressing = condition(status, "Progressing")
        if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
            return "failed"
        replicas = d["spec"].get("replicas", 1)
        done = (
            status.get("updatedReplicas", 0) == replicas
            and status.get("replicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas
        )
        return "complete" if done else "progressing"
