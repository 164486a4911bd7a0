"""More Kubernetes hands for the runbook's methods 2 and 3 and its
troubleshooting: plan a redeploy (the live image, the revision that last ran
the tag), read a modoru backup, check and apply a backed-up manifest with
`kubectl apply`'s client-side three-way merge, delete an old ReplicaSet and
restart a rollout. Each is safe to retry."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from typing import Any

import yaml
from kubernetes.aio.client import V1DeleteOptions, V1Preconditions
from kubernetes.aio.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook.cd_models import (
    FetchedManifest,
    ManifestSource,
    RedeployPlan,
    RedeployPlanRequest,
    restore_manifest,
)
from runbook.decisions import canonical
from runbook.repair_models import (
    ApplyResult,
    BackupFetch,
    RepairPlan,
    RepairPlanRequest,
    ReplicaSetDelete,
    ReplicaSetInfo,
    RestartRequest,
    RestoreApplyRequest,
    RestoreCheck,
    RestoreCheckRequest,
    repair_plan,
    restore_plan,
)

from .errors import permanent, raise_for_api_error
from .kubernetes import REVISION, KubernetesActivities, Obj, revision_of, same_template

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
SERVER_SET = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "selfLink",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
SERVER_ANNOTATIONS = (REVISION, LAST_APPLIED, "deployment.kubernetes.io/revision-history")
MAX_DIFF_LINES = 200


def desired_manifest(manifest: Obj) -> Obj:
    """What `kubectl apply` of a backup means: the object without status and the
    fields the server sets (a `kubectl get -o yaml` backup keeps resourceVersion and uid)."""
    desired = copy.deepcopy(manifest)
    desired.pop("status", None)
    meta = desired.setdefault("metadata", {})
    for key in SERVER_SET:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    for key in SERVER_ANNOTATIONS:
        annotations.pop(key, None)
    if not annotations:
        meta.pop("annotations", None)
    return desired


def three_way(last: Obj | None, desired: Obj, live: Any) -> Any:
    """kubectl apply's merge for maps: set what the manifest says, delete what the last
    applied configuration had and the manifest dropped, keep what others set. Lists
    are taken whole from the manifest (a restore brings back the containers as backed up)."""
    if not isinstance(desired, dict) or not isinstance(live, dict):
        return copy.deepcopy(desired)
    result = copy.deepcopy(live)
    for key in last or {}:
        if key not in desired:
            result.pop(key, None)
    for key, value in desired.items():
        before = (last or {}).get(key) if isinstance(last, dict) else None
        result[key] = (
            three_way(before if isinstance(before, dict) else None, value, live.get(key))
            if isinstance(value, dict)
            else copy.deepcopy(value)
        )
    return result


def applied_view(obj: Obj) -> Obj:
    """The parts of a Deployment an apply changes, for the diff and the no-op check."""
    meta = obj.get("metadata") or {}
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in SERVER_ANNOTATIONS
    }
    return {
        "metadata": {"labels": meta.get("labels") or {}, "annotations": annotations},
        "spec": obj.get("spec") or {},
    }


def images_of(obj: Obj) -> list[str]:
    return [
        c.get("image", "")
        for c in ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers")
        or []
    ]


class KubernetesOpsActivities(KubernetesActivities):
    # -- method 2 -------------------------------------------------------------------------

    @activity.defn(name="k8s.redeploy_plan")
    async def redeploy_plan(self, request: RedeployPlanRequest) -> RedeployPlan:
        deployment = await self._deployment(request.namespace, request.deployment)
        containers = deployment["spec"]["template"]["spec"]["containers"]
        container = (
            next((c for c in containers if c["name"] == request.container), None)
            if request.container
            else containers[0]
        )
        if container is None:
            raise permanent(
                f"deployment/{request.deployment} has no container {request.container!r}: fix "
                "the catalog's cd.container",
                "ContainerNotFound",
            )
        last = None
        for rs in await self._owned_replicasets(deployment):
            ran = [
                c.get("image")
                for c in rs["spec"]["template"]["spec"]["containers"]
                if c["name"] == container["name"]
            ]
            if request.image in ran and (last is None or revision_of(rs) > last):
                last = revision_of(rs)
        return RedeployPlan(
            namespace=request.namespace,
            deployment=request.deployment,
            deployment_uid=deployment["metadata"]["uid"],
            container=container["name"],
            live_image=container["image"],
            live_revision=revision_of(deployment),
            image=request.image,
            last_revision=last,
        )

    # -- method 3 -------------------------------------------------------------------------

    @activity.defn(name="k8s.read_backup")
    async def read_backup(self, request: BackupFetch) -> FetchedManifest:
        """A backup modoru made before a rollback (ConfigMap
        modoru-backup-<deployment>-r<rev>-<run>)."""
        try:
            found = self._serialize(
                await self.core.read_namespaced_config_map(request.configmap, request.namespace)
            )
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(
                    f"configmap/{request.configmap} does not exist in namespace "
                    f"{request.namespace!r}: "
                    f"`kubectl get configmap -l modoru.dev/deployment={request.deployment}` "
                    "lists the backups",
                    "BackupNotFound",
                ) from None
            raise_for_api_error(exc, f"reading configmap/{request.configmap}")
        labels = found["metadata"].get("labels") or {}
        if (
            labels.get("app.kubernetes.io/managed-by") != "modoru"
            or labels.get("modoru.dev/deployment") != request.deployment
        ):
            raise permanent(
                f"configmap/{request.configmap} is not a modoru backup of "
                f"deployment/{request.deployment}",
                "BackupNotFound",
            )
        text = (found.get("data") or {}).get("deployment.yaml", "")
        if not text:
            raise permanent(
                f"configmap/{request.configmap} holds no deployment.yaml", "BackupNotFound"
            )
        revision = (found["metadata"].get("annotations") or {}).get("modoru.dev/revision", "?")
        return FetchedManifest(
            source=ManifestSource(kind="backup", name=request.configmap),
            text=text,
            detail=f"configmap/{request.configmap} (revision {revision}, made "
            f"{found['metadata'].get('creationTimestamp')})",
        )

    @activity.defn(name="k8s.restore_check")
    async def restore_check(self, request: RestoreCheckRequest) -> RestoreCheck:
        """Validate a manifest against the live Deployment (same kind, name and
        namespace, selector unchanged) and show what applying it would change."""
        try:
            # the CLI checked it too; a task scheduled by hand is checked here all the same
            manifest: Obj = restore_manifest(request.manifest)
        except ValueError as exc:
            return RestoreCheck(problems=[str(exc)])
        problems: list[str] = []
        meta: Obj = manifest["metadata"] if isinstance(manifest.get("metadata"), dict) else {}
        if meta.get("name") != request.deployment:
            problems.append(
                f"it is deployment/{meta.get('name')}, not deployment/{request.deployment}"
            )
        if meta.get("namespace") not in (None, request.namespace):
            problems.append(
                f"it is for namespace {meta.get('namespace')!r}, not {request.namespace!r}"
            )
        live = await self._deployment(request.namespace, request.deployment)
        spec: Obj = manifest["spec"] if isinstance(manifest.get("spec"), dict) else {}
        if spec.get("selector") != live["spec"].get("selector"):
            problems.append(
                f"its selector {json.dumps(spec.get('selector'))} differs from the live "
                f"{json.dumps(live['spec'].get('selector'))} (selectors are immutable)"
            )
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        wanted = (spec.get("selector") or {}).get("matchLabels") or {}
        if any(labels.get(k) != v for k, v in wanted.items()):
            problems.append("its pod template's labels do not match its selector")
        if not images_of(manifest) or not all(images_of(manifest)):
            problems.append("its pod template has no containers with images")
        if problems:
            return RestoreCheck(problems=problems, deployment_uid=live["metadata"]["uid"])
        notes = []
        if meta.get("uid") and meta["uid"] != live["metadata"]["uid"]:
            notes.append(
                f"the backup was taken of an earlier deployment/{request.deployment} (uid "
                f"{meta['uid']}); it was re-created since"
            )
        desired = desired_manifest(manifest)
        desired["metadata"]["namespace"] = request.namespace
        merged = self._merged(live, desired)
        before = yaml.safe_dump(applied_view(live), sort_keys=True).splitlines()
        after = yaml.safe_dump(applied_view(merged), sort_keys=True).splitlines()
        diff = list(difflib.unified_diff(before, after, "live", "after apply", n=2, lineterm=""))
        if len(diff) > MAX_DIFF_LINES:
            diff = diff[:MAX_DIFF_LINES] + [f"... {len(diff) - MAX_DIFF_LINES} more lines"]
        return RestoreCheck(
            notes=notes,
            desired=yaml.safe_dump(desired, sort_keys=False),
            digest=_digest(desired),
            diff=diff,
            deployment_uid=live["metadata"]["uid"],
            revision=revision_of(live),
            live_images=images_of(live),
            images=images_of(desired),
            unchanged=applied_view(merged) == applied_view(live),
        )

    @staticmethod
    def _merged(live: Obj, desired: Obj) -> Obj:
        last_text = (live["metadata"].get("annotations") or {}).get(LAST_APPLIED)
        try:
            last = json.loads(last_text) if last_text else None
        except ValueError:
            last = None
        merged = copy.deepcopy(live)
        for part in ("labels", "annotations"):
            merged["metadata"][part] = three_way(
                (last or {}).get("metadata", {}).get(part),
                desired["metadata"].get(part) or {},
                live["metadata"].get(part) or {},
            )
        merged["spec"] = three_way(
            (last or {}).get("spec"), desired.get("spec") or {}, live.get("spec") or {}
        )
        merged["metadata"]["annotations"][LAST_APPLIED] = json.dumps(
            desired, separators=(",", ":"), sort_keys=True
        )
        return merged

    @activity.defn(name="k8s.restore_apply")
    async def restore_apply(self, request: RestoreApplyRequest) -> ApplyResult:
        """`kubectl apply` of the checked manifest: a JSON Patch guarded by a test of the
        resourceVersion read, so a concurrent change is read again, never overwritten."""
        desired = yaml.safe_load(request.desired)
        if _digest(desired) != request.digest:
            raise permanent(
                "the manifest to apply is not the one checked and approved", "ApprovalInvalid"
            )
        live = await self._granted_deployment(
            request,
            {
                "namespace": request.namespace,
                "deployment": request.deployment,
                "deployment_uid": request.deployment_uid,
                "manifest_sha256": request.digest,
            },
            f"apply the backup to deployment/{request.deployment}",
            replaced=f"deployment/{request.deployment} was deleted and re-created since the check; "
            "start the restore again",
        )
        merged = self._merged(live, desired)
        if (
            applied_view(merged) == applied_view(live)
            and (live["metadata"].get("annotations") or {}).get(LAST_APPLIED)
            == merged["metadata"]["annotations"][LAST_APPLIED]
        ):
            return ApplyResult(
                changed=False,
                message=f"deployment.apps/{request.deployment} unchanged",
                generation=live["metadata"].get("generation", 0),
            )
        patch = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": live["metadata"]["resourceVersion"],
            },
            {
                "op": "replace" if "labels" in live["metadata"] else "add",
                "path": "/metadata/labels",
                "value": merged["metadata"]["labels"],
            },
            {
                "op": "replace" if "annotations" in live["metadata"] else "add",
                "path": "/metadata/annotations",
                "value": merged["metadata"]["annotations"],
            },
            {"op": "replace", "path": "/spec", "value": merged["spec"]},
        ]
        try:
            result = self._serialize(
                await self.apps.patch_namespaced_deployment(
                    request.deployment, request.namespace, patch
                )
            )
        except ApiException as exc:
            if exc.status in (409, 422) and "test" in (exc.body or "").lower():
                raise _retry(
                    f"deployment/{request.deployment} changed while applying; reading it again"
                ) from None
            raise_for_api_error(exc, f"applying the backup to deployment/{request.deployment}")
        activity.logger.info("applied a backup to deployment/%s", request.deployment)
        return ApplyResult(
            changed=True,
            message=f"deployment.apps/{request.deployment} configured",
            generation=result["metadata"].get("generation", 0),
        )

    # -- troubleshooting --------------------------------------------------------------------

    @activity.defn(name="k8s.repair_plan")
    async def repair_plan(self, request: RepairPlanRequest) -> RepairPlan:
        deployment = await self._deployment(request.namespace, request.deployment)
        plan = RepairPlan(
            deployment_uid=deployment["metadata"]["uid"],
            revision=revision_of(deployment),
            replicasets=self._roles(deployment, await self._owned_replicasets(deployment)),
        )
        if request.action == "delete-replicaset":
            plan.problems = _deletion_problems(plan, request.replicaset, request.deployment)
        elif deployment["spec"].get("paused"):
            plan.problems = [
                f"deployment/{request.deployment} is paused: a restart would not roll out; "
                "`kubectl rollout resume` it first"
            ]
        return plan

    def _roles(self, deployment: Obj, owned: list[Obj]) -> list[ReplicaSetInfo]:
        template = deployment["spec"]["template"]
        live = next((rs for rs in owned if same_template(rs["spec"]["template"], template)), None)
        live_ready = ((live or {}).get("status") or {}).get("availableReplicas", 0)
        complete = live is not None and live_ready >= deployment["spec"].get("replicas", 1)
        found = []
        for rs in sorted(owned, key=revision_of):
            status = rs.get("status") or {}
            role = (
                "live"
                if rs is live
                else (
                    "serving" if not complete and status.get("availableReplicas", 0) > 0 else "old"
                )
            )
            found.append(
                ReplicaSetInfo(
                    name=rs["metadata"]["name"],
                    revision=revision_of(rs),
                    replicas=status.get("replicas", 0),
                    ready=status.get("readyReplicas", 0),
                    images=images_of(rs),
                    role=role,
                )
            )
        return found

    @activity.defn(name="k8s.delete_replicaset")
    async def delete_replicaset(self, request: ReplicaSetDelete) -> ApplyResult:
        """`kubectl delete replicaset NAME` of an old ReplicaSet, checked again at the
        moment of deletion; its manifest is kept in a ConfigMap first (it is a revision
        `rollout undo` could go back to)."""
        deployment = await self._granted_deployment(
            request,
            {"deployment_uid": request.deployment_uid, "replicaset": request.replicaset},
            f"delete replicaset/{request.replicaset}",
        )
        owned = await self._owned_replicasets(deployment)
        plan = RepairPlan(
            deployment_uid=request.deployment_uid,
            revision=revision_of(deployment),
            replicasets=self._roles(deployment, owned),
        )
        target = next((rs for rs in owned if rs["metadata"]["name"] == request.replicaset), None)
        if target is None:
            return ApplyResult(
                changed=False, message=f"replicaset/{request.replicaset} is already gone"
            )
        problems = _deletion_problems(plan, request.replicaset, request.deployment)
        if problems:
            raise permanent("; ".join(problems), "ReplicaSetProtected")
        await self._keep(request.namespace, request.deployment, target)
        try:
            await self.apps.delete_namespaced_replica_set(
                request.replicaset,
                request.namespace,
                propagation_policy="Background",
                body=V1DeleteOptions(preconditions=V1Preconditions(uid=target["metadata"]["uid"])),
            )
        except ApiException as exc:
            if exc.status == 404:
                return ApplyResult(
                    changed=False, message=f"replicaset/{request.replicaset} is already gone"
                )
            raise_for_api_error(exc, f"deleting replicaset/{request.replicaset}")
        activity.logger.info(
            "deleted replicaset/%s of deployment/%s", request.replicaset, request.deployment
        )
        return ApplyResult(
            changed=True,
            message=f'replicaset.apps "{request.replicaset}" deleted (its manifest is kept in '
            f"configmap/{_keep_name(request.replicaset)})",
        )

    async def _granted_deployment(
        self, request: Any, binding: dict[str, object], action: str, *, replaced: str = ""
    ) -> Obj:
        """The Deployment a granted change acts on: the grant checked against `binding` (when a
        gatekeeper guards this worker), and the Deployment still the one planned (`replaced`:
        what to say when it was re-created since)."""
        if self.gatekeeper is not None:
            entry = self.gatekeeper.catalog.find(request.namespace, request.deployment)
            self.gatekeeper.require(
                request.grant, entry, self.gatekeeper.needed(request.grant, entry), binding, action
            )
        deployment = await self._deployment(request.namespace, request.deployment)
        if deployment["metadata"]["uid"] != request.deployment_uid:
            raise permanent(
                replaced
                or f"deployment/{request.deployment} was re-created since the plan; start again",
                "DeploymentReplaced",
            )
        return deployment

    async def _keep(self, namespace: str, deployment: str, rs: Obj) -> None:
        clean = copy.deepcopy(rs)
        clean.pop("status", None)
        for key in ("managedFields", "resourceVersion", "creationTimestamp", "selfLink"):
            clean["metadata"].pop(key, None)
        body = {
            "metadata": {
                "name": _keep_name(rs["metadata"]["name"]),
                "labels": {
                    "app.kubernetes.io/managed-by": "modoru",
                    "modoru.dev/deployment": deployment,
                    "modoru.dev/kind": "replicaset",
                },
                "annotations": {"modoru.dev/revision": str(revision_of(rs))},
            },
            "data": {"replicaset.yaml": yaml.safe_dump(clean, sort_keys=False)},
        }
        try:
            await self.core.create_namespaced_config_map(namespace, body)
        except ApiException as exc:
            if exc.status != 409:  # a retry finds it made
                raise_for_api_error(
                    exc, f"keeping replicaset/{rs['metadata']['name']} in a configmap"
                )

    @activity.defn(name="k8s.rollout_restart")
    async def rollout_restart(self, request: RestartRequest) -> ApplyResult:
        """`kubectl rollout restart`: the pod template's restartedAt annotation, with the
        value the workflow fixed, so a retried restart is the same restart."""
        deployment = await self._granted_deployment(
            request,
            {"deployment_uid": request.deployment_uid, "restarted_at": request.restarted_at},
            f"restart deployment/{request.deployment}",
        )
        annotations = (deployment["spec"]["template"].get("metadata") or {}).get(
            "annotations"
        ) or {}
        if annotations.get(RESTARTED_AT) == request.restarted_at:
            return ApplyResult(
                changed=False,
                message=f"deployment.apps/{request.deployment} already restarted at "
                f"{request.restarted_at}",
            )
        patch = {
            "spec": {
                "template": {"metadata": {"annotations": {RESTARTED_AT: request.restarted_at}}}
            }
        }
        try:
            result = self._serialize(
                await self.apps.patch_namespaced_deployment(
                    request.deployment, request.namespace, patch
                )
            )
        except ApiException as exc:
            raise_for_api_error(exc, f"restarting deployment/{request.deployment}")
        return ApplyResult(
            changed=True,
            message=f"deployment.apps/{request.deployment} restarted",
            generation=result["metadata"].get("generation", 0),
        )


def _deletion_problems(plan: RepairPlan, name: str, deployment: str) -> list[str]:
    if not name:
        return ["name the old ReplicaSet to delete (--replicaset)"]
    found = next((rs for rs in plan.replicasets if rs.name == name), None)
    if found is None:
        names = ", ".join(
            f"{rs.name} (revision {rs.revision}, {rs.role})" for rs in plan.replicasets
        )
        return [f"replicaset/{name} is not one of deployment/{deployment}'s ReplicaSets ({names})"]
    if found.role == "live":
        return [
            f"replicaset/{name} is the live one (revision {found.revision}): deleting it would "
            "take the service down until the controller made it again"
        ]
    if found.role == "serving":
        return [
            f"replicaset/{name} (revision {found.revision}) is still serving while the new "
            "revision is not fully available"
        ]
    return []


def _keep_name(replicaset: str) -> str:
    return f"modoru-backup-rs-{replicaset}"[:253]


def _digest(desired: Obj) -> str:
    return hashlib.sha256(canonical(desired).encode("utf-8")).hexdigest()


def _retry(message: str) -> ApplicationError:
    return ApplicationError(message, type="KubernetesConflict")


__all__ = [
    "KubernetesOpsActivities",
    "desired_manifest",
    "three_way",
    "restore_plan",
    "repair_plan",
]
