"""The Kubernetes hands: plan, back up, undo, wait and diagnose, through the
official asyncio client. Each activity is safe to retry."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import yaml
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook import activity_refs as refs
from runbook.models import (
    BackupRef,
    BackupRequest,
    Diagnostics,
    PlanRequest,
    PodState,
    RevisionInfo,
    RollbackPlan,
    RolloutOutcome,
    RolloutWaitRequest,
    UndoRequest,
    UndoResult,
)
from runbook.plans import rollback_plan

from .errors import permanent, raise_for_api_error
from .gatekeeper import Gatekeeper
from .heartbeat import Heartbeat

REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
HASH_LABEL = "pod-template-hash"
# The annotations kubectl keeps from the deployment on undo (its annotationsToSkip).
KEPT_ON_UNDO = (
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
)
LOG_TAIL = 50


class RolloutProgress(BaseModel):
    """What the rollout said at the last look."""

    message: str
    problems: list[str]


TROUBLE_REASONS = (
    "ImagePullBackOff",
    "ErrImagePull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "InvalidImageName",
)
Obj = dict[str, Any]


def revision_of(obj: Obj) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _prune(value: object) -> object:
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def template_without_hash(template: Obj) -> Obj:
    stripped = copy.deepcopy(template)
    labels = (stripped.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return stripped


def same_template(a: Obj, b: Obj) -> bool:
    """kubectl's equalIgnoreHash: the pod-template-hash label and empty fields aside."""
    return _prune(template_without_hash(a)) == _prune(template_without_hash(b))


def selector_string(selector: Obj | None) -> str:
    parts = [f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for expr in (selector or {}).get("matchExpressions") or []:
        values = ",".join(sorted(expr.get("values") or []))
        parts.append(
            {
                "In": f"{expr['key']} in ({values})",
                "NotIn": f"{expr['key']} notin ({values})",
                "Exists": expr["key"],
                "DoesNotExist": f"!{expr['key']}",
            }[expr["operator"]]
        )
    return ",".join(parts)


def clean_manifest(deployment: Obj) -> Obj:
    """A manifest a human can `kubectl apply`: no status or server-set fields."""
    manifest = copy.deepcopy(deployment)
    manifest.pop("status", None)
    meta = manifest.get("metadata") or {}
    for key in (
        "managedFields",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "selfLink",
    ):
        meta.pop(key, None)
    manifest["apiVersion"], manifest["kind"] = "apps/v1", "Deployment"
    return manifest


async def read_json(response: Any) -> Obj:
    """A `*_without_preload_content` answer as the API's own JSON: no round trip
    through the client's models (JSON → models → dict was most of the worker's
    CPU for a rollout poll under a fleet of rollbacks). An error answer raises
    the ApiException the client would have raised, headers and all."""
    raw = await response.read()
    if not 200 <= response.status < 300:
        raise ApiException(http_resp=response)
    body: Obj = json.loads(raw)
    return body


class KubernetesActivities:
    def __init__(
        self, apps: client.AppsV1Api, core: client.CoreV1Api, gatekeeper: Gatekeeper | None = None
    ) -> None:
        self.apps = apps
        self.core = core
        self.gatekeeper = gatekeeper
        self._serialize = apps.api_client.sanitize_for_serialization

    # -- reading -----------------------------------------------------------------

    async def _deployment(self, namespace: str, name: str) -> Obj:
        try:
            return await read_json(
                await self.apps.read_namespaced_deployment_without_preload_content(name, namespace)
            )
        except ApiException as exc:
            if exc.status == 404:
                if not await self._namespace_exists(namespace):
                    raise permanent(
                        f"namespace {namespace!r} does not exist", "NamespaceNotFound"
                    ) from None
                raise permanent(
                    f"deployment/{name} does not exist in namespace {namespace!r}",
                    "DeploymentNotFound",
                ) from None
            raise_for_api_error(exc, f"reading deployment/{name}")

    async def _namespace_exists(self, namespace: str) -> bool:
        try:
            await self.core.read_namespace(namespace)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise_for_api_error(exc, f"reading namespace {namespace}")

    async def _owned_replicasets(self, deployment: Obj) -> list[Obj]:
        """kubectl's GetAllReplicaSets: selected by label and controlled by the deployment."""
        meta = deployment["metadata"]
        try:
            listed = await self.apps.list_namespaced_replica_set(
                meta["namespace"], label_selector=selector_string(deployment["spec"]["selector"])
            )
        except ApiException as exc:
            raise_for_api_error(exc, f"listing the ReplicaSets of deployment/{meta['name']}")
        owned = []
        for rs in (self._serialize(item) for item in listed.items):
            refs = rs["metadata"].get("ownerReferences") or []
            if any(ref.get("controller") and ref.get("uid") == meta["uid"] for ref in refs):
                owned.append(rs)
        return owned

    # -- plan ----------------------------------------------------------------------

    @activity.defn(name=refs.PLAN_ROLLBACK.name)
    async def plan_rollback(self, request: PlanRequest) -> RollbackPlan:
        deployment = await self._deployment(request.namespace, request.deployment)
        name = request.deployment
        if deployment["spec"].get("paused"):
            raise permanent(
                f"deployment/{name} is paused; resume it first with `kubectl rollout resume "
                f"deployment/{name} -n {request.namespace}` and start again",
                "DeploymentPaused",
            )
        owned = await self._owned_replicasets(deployment)
        history = sorted(
            (
                RevisionInfo(
                    revision=revision_of(rs),
                    replicaset=rs["metadata"]["name"],
                    images=[c["image"] for c in rs["spec"]["template"]["spec"]["containers"]],
                    change_cause=(rs["metadata"].get("annotations") or {}).get(CHANGE_CAUSE),
                )
                for rs in owned
            ),
            key=lambda info: info.revision,
        )
        if not history:
            raise permanent(f"no rollout history found for deployment/{name}", "NoHistory")
        by_revision = {revision_of(rs): rs for rs in owned}
        current = revision_of(deployment) or history[-1].revision
        if request.to_revision is not None:
            target_revision = request.to_revision
            if target_revision not in by_revision:
                known = ", ".join(str(h.revision) for h in history)
                raise permanent(
                    f"revision {target_revision} is not in the history of deployment/{name} "
                    f"(revisions: {known})",
                    "RevisionNotFound",
                )
        else:
            if len(history) < 2:
                raise permanent(
                    f"deployment/{name} has no previous revision to roll back to",
                    "NoPreviousRevision",
                )
            target_revision = history[-2].revision
        target = by_revision[target_revision]
        return RollbackPlan(
            namespace=request.namespace,
            deployment=name,
            deployment_uid=deployment["metadata"]["uid"],
            from_revision=current,
            to_revision=target_revision,
            target_replicaset=target["metadata"]["name"],
            from_images=[c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]],
            to_images=[c["image"] for c in target["spec"]["template"]["spec"]["containers"]],
            history=history,
            already_at_target=same_template(
                target["spec"]["template"], deployment["spec"]["template"]
            ),
            replicas=deployment["spec"].get("replicas", 1),
        )

    # -- backup --------------------------------------------------------------------

    @activity.defn(name=refs.BACKUP_DEPLOYMENT.name)
    async def backup_deployment(self, request: BackupRequest) -> BackupRef:
        """Keep the current manifest in a ConfigMap; a retry finds it and leaves it be."""
        try:
            existing = await self.core.read_namespaced_config_map(
                request.backup_name, request.namespace
            )
            return BackupRef(
                namespace=request.namespace,
                configmap=request.backup_name,
                manifest_yaml=(existing.data or {}).get("deployment.yaml", ""),
                created=False,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise_for_api_error(exc, f"reading backup configmap/{request.backup_name}")
        deployment = await self._deployment(request.namespace, request.deployment)
        manifest = yaml.safe_dump(clean_manifest(deployment), sort_keys=False)
        body = {
            "metadata": {
                "name": request.backup_name,
                "labels": {
                    "app.kubernetes.io/managed-by": "modoru",
                    "modoru.dev/deployment": request.deployment,
                },
                "annotations": {"modoru.dev/revision": str(request.from_revision)},
            },
            "data": {"deployment.yaml": manifest},
        }
        try:
            await self.core.create_namespaced_config_map(request.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise_for_api_error(exc, f"creating backup configmap/{request.backup_name}")
        return BackupRef(
            namespace=request.namespace,
            configmap=request.backup_name,
            manifest_yaml=manifest,
            created=True,
        )

    # -- undo ----------------------------------------------------------------------

    @activity.defn(name=refs.ROLLOUT_UNDO.name)
    async def rollout_undo(self, request: UndoRequest) -> UndoResult:
        """kubectl rollout undo: a JSON Patch of the template and annotations,
        skipped when the template already matches, so a retry never rolls twice."""
        plan = request.plan
        if self.gatekeeper is not None:
            entry = self.gatekeeper.catalog.find(plan.namespace, plan.deployment)
            self.gatekeeper.require(
                request.grant,
                entry,
                self.gatekeeper.needed(request.grant, entry),
                rollback_plan(plan),
                f"roll deployment/{plan.deployment} back",
            )
        deployment = await self._deployment(plan.namespace, plan.deployment)
        if deployment["metadata"]["uid"] != plan.deployment_uid:
            raise permanent(
                f"deployment/{plan.deployment} was deleted and re-created since the plan; start "
                "a new rollback",
                "DeploymentReplaced",
            )
        if deployment["spec"].get("paused"):
            raise permanent(
                f"deployment/{plan.deployment} was paused after the plan; resume it and start "
                "again",
                "DeploymentPaused",
            )
        try:
            target = self._serialize(
                await self.apps.read_namespaced_replica_set(plan.target_replicaset, plan.namespace)
            )
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(
                    f"replicaset/{plan.target_replicaset} (revision {plan.to_revision}) was "
                    "deleted; pick another revision",
                    "RevisionGone",
                ) from None
            raise_for_api_error(exc, f"reading replicaset/{plan.target_replicaset}")
        if same_template(target["spec"]["template"], deployment["spec"]["template"]):
            return UndoResult(
                patched=False,
                message="skipped rollback (current template already matches revision "
                f"{plan.to_revision})",
            )
        current_annotations = deployment["metadata"].get("annotations") or {}
        annotations = {k: current_annotations[k] for k in KEPT_ON_UNDO if k in current_annotations}
        annotations.update(
            {
                k: v
                for k, v in (target["metadata"].get("annotations") or {}).items()
                if k not in KEPT_ON_UNDO
            }
        )
        # Conditional on the Deployment's spec as read here (its generation): a concurrent
        # change fails the test instead of being overwritten, and the retry reads it again.
        patch = [
            {
                "op": "test",
                "path": "/metadata/generation",
                "value": deployment["metadata"]["generation"],
            },
            {
                "op": "replace",
                "path": "/spec/template",
                "value": template_without_hash(target["spec"]["template"]),
            },
            {
                "op": "replace" if "annotations" in deployment["metadata"] else "add",
                "path": "/metadata/annotations",
                "value": annotations,
            },
        ]
        try:
            await self.apps.patch_namespaced_deployment(plan.deployment, plan.namespace, patch)
        except ApiException as exc:
            if exc.status == 422 and "test" in (exc.body or "").lower():
                raise ApplicationError(
                    f"deployment/{plan.deployment} changed while rolling back; reading it again",
                    type="KubernetesConflict",
                ) from None
            raise_for_api_error(exc, f"patching deployment/{plan.deployment}")
        activity.logger.info(
            "rolled back deployment/%s to revision %s", plan.deployment, plan.to_revision
        )
        return UndoResult(patched=True, message=f"rolled back to revision {plan.to_revision}")

    # -- wait ----------------------------------------------------------------------

    @activity.defn(name=refs.WAIT_ROLLOUT.name)
    async def wait_rollout(self, request: RolloutWaitRequest) -> RolloutOutcome:
        """kubectl rollout status, heartbeating; fails on an exceeded progress
        deadline with the diagnostics an SRE would look at first."""
        started = time.monotonic()
        polls = 0
        diagnostics = Diagnostics()
        heartbeat = Heartbeat(RolloutProgress)
        while True:
            deployment = await self._deployment(request.namespace, request.deployment)
            done, message, stuck = rollout_state(deployment)
            polls += 1
            if stuck or polls % 3 == 1 or done:
                diagnostics = await self.diagnose(deployment, with_events=stuck)
            progress = RolloutProgress(message=message, problems=diagnostics.problems)
            heartbeat.beat(progress)
            if done:
                return RolloutOutcome(
                    revision=revision_of(deployment), message=message, diagnostics=diagnostics
                )
            if stuck:
                raise permanent(
                    f"{message}; {'; '.join(diagnostics.problems) or 'no pod problems seen'}",
                    "RolloutStuck",
                    diagnostics.model_dump(mode="json"),
                )
            if time.monotonic() - started > request.timeout_seconds:
                diagnostics = await self.diagnose(deployment, with_events=True)
                raise permanent(
                    f"rollout of deployment/{request.deployment} did not finish within "
                    f"{request.timeout_seconds}s: {message}",
                    "RolloutTimeout",
                    diagnostics.model_dump(mode="json"),
                )
            # Most rollouts finish within a second: look again soon, then back off
            # to the poll interval so a thousand waits do not flood the API.
            await heartbeat.sleep(min(request.poll_seconds, 0.1 * 2 ** (polls - 1)), progress)

    async def diagnose(self, deployment: Obj, *, with_events: bool) -> Diagnostics:
        """Pod states always; events only when something is wrong, and then only
        those of the deployment and its troubled pods (as kubectl describe
        selects them), so a thousand waits never list a namespace's events."""
        meta = deployment["metadata"]
        diagnostics = Diagnostics(
            conditions=(deployment.get("status") or {}).get("conditions") or []
        )
        try:
            pods = await read_json(
                await self.core.list_namespaced_pod_without_preload_content(
                    meta["namespace"],
                    label_selector=selector_string(deployment["spec"]["selector"]),
                )
            )
        except ApiException:
            return diagnostics  # diagnostics are best effort: the rollout state decides
        troubled = []
        for pod in pods.get("items") or []:
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            waiting = next(
                (
                    s["state"]["waiting"].get("reason")
                    for s in statuses
                    if (s.get("state") or {}).get("waiting")
                ),
                None,
            )
            state = PodState(
                name=pod["metadata"]["name"],
                phase=(pod.get("status") or {}).get("phase", "Unknown"),
                ready=all(s.get("ready") for s in statuses) if statuses else False,
                restarts=sum(s.get("restartCount", 0) for s in statuses),
                waiting_reason=waiting,
                image=pod["spec"]["containers"][0].get("image", ""),
            )
            diagnostics.pods.append(state)
            if waiting in TROUBLE_REASONS:
                troubled.append(state.name)
                diagnostics.problems.append(
                    f"pod/{state.name} ({state.image}): {waiting}, {state.restarts} restarts"
                )
        if with_events:
            diagnostics.events = await self._events(
                meta["namespace"],
                [("Deployment", meta["name"])] + [("Pod", name) for name in troubled[:3]],
            )
            if troubled:
                diagnostics.logs = await self._log_tail(meta["namespace"], troubled[0])
            if not diagnostics.problems:  # no pod says what is wrong: the warnings may
                diagnostics.problems = [
                    line for line in diagnostics.events if line.startswith("Warning ")
                ][-3:]
        return diagnostics

    async def _log_tail(self, namespace: str, pod: str, lines: int = LOG_TAIL) -> list[str]:
        """`kubectl logs POD --tail=50` of a failing pod (its previous container's, after a
        crash)."""
        for previous in (False, True):
            try:
                text: str = await self.core.read_namespaced_pod_log(
                    pod, namespace, tail_lines=lines, previous=previous or None
                )
            except ApiException as exc:
                said = _reason_of(exc)
                if previous:
                    return [f"pod/{pod}: no logs ({said})"]
                continue
            if text and text.strip():
                return [
                    f"pod/{pod}{' (previous container)' if previous else ''}:"
                ] + text.splitlines()[-lines:]
        return [f"pod/{pod}: the log is empty"]

    async def _events(self, namespace: str, objects: list[tuple[str, str]]) -> list[str]:
        found = []
        for kind, name in objects:
            try:
                listed = await self.core.list_namespaced_event(
                    namespace,
                    field_selector=f"involvedObject.kind={kind},involvedObject.name={name}",
                )
            except ApiException:
                continue
            found += [self._serialize(e) for e in listed.items]
        found.sort(key=lambda e: e.get("lastTimestamp") or e.get("firstTimestamp") or "")
        return [
            f"{e.get('type')} {e.get('reason')} "
            f"{e['involvedObject'].get('kind', '').lower()}/{e['involvedObject'].get('name')}: "
            f"{e.get('message')}"
            for e in found[-15:]
        ]


def _reason_of(exc: ApiException) -> str:
    import json

    try:
        return json.loads(exc.body or "{}").get("message") or f"HTTP {exc.status}"
    except ValueError:
        return f"HTTP {exc.status}"


def rollout_state(deployment: Obj) -> tuple[bool, str, bool]:
    """(done, message, stuck) with kubectl rollout status's words."""
    name = deployment["metadata"]["name"]
    status = deployment.get("status") or {}
    spec_replicas = deployment["spec"].get("replicas", 1)
    if deployment["metadata"].get("generation", 0) > status.get("observedGeneration", 0):
        return False, "Waiting for deployment spec update to be observed...", False
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return False, f'deployment "{name}" exceeded its progress deadline', True
    updated = status.get("updatedReplicas", 0)
    if updated < spec_replicas:
        return (
            False,
            f'Waiting for deployment "{name}" rollout to finish: {updated} out of '
            f"{spec_replicas} new replicas have been updated...",
            False,
        )
    if status.get("replicas", 0) > updated:
        return (
            False,
            f'Waiting for deployment "{name}" rollout to finish: {status["replicas"] - updated} '
            "old replicas are pending termination...",
            False,
        )
    if status.get("availableReplicas", 0) < updated:
        return (
            False,
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{status.get('availableReplicas', 0)} of {updated} updated replicas are available...",
            False,
        )
    return True, f'deployment "{name}" successfully rolled out', False
