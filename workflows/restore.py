"""The runbook's method 3 as a durable workflow: restore a backed-up Deployment
manifest — the production pipeline's `deployment-backup-…` artifact, one of
modoru's own backup ConfigMaps, or a file. The manifest is validated against
the live Deployment (same kind, name and namespace, selector unchanged), the
diff shown and approved, then applied with `kubectl apply`'s client-side
three-way merge; the rollout is awaited and verified as method 1, with the
runbook's notices."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook.catalog import ServiceEntry
    from runbook.cd_models import ArtifactsRequest, FetchedManifest
    from runbook.enums import Phase
    from runbook.repair_models import (
        ApplyResult,
        BackupFetch,
        RestoreApplyRequest,
        RestoreCheck,
        RestoreCheckRequest,
        RestoreRequest,
        RestoreResult,
        RestoreStatus,
        restore_plan,
    )

    from .deploy_steps import DeploySteps


@workflow.defn(name="Restore")
class RestoreWorkflow(DeploySteps[RestoreRequest, RestoreStatus]):
    KIND = "Restore"

    @workflow.init
    def __init__(self, request: RestoreRequest) -> None:
        self._begin(
            request,
            RestoreStatus,
            f"restore from {request.source.kind} {request.source.name}: {request.reason}",
            source=request.source,
        )

    @workflow.query(name="status")
    def status(self) -> RestoreStatus:
        return self._status

    @workflow.run
    async def run(self, request: RestoreRequest) -> RestoreResult:
        return await self._carry_out(self._run(request))

    async def _fetch(self, entry: ServiceEntry, request: RestoreRequest) -> str:
        source = request.source
        if source.kind == "file":
            self._status.fetched = (
                f"file {source.name} ({len(request.manifest)} characters, read by the CLI)"
            )
            return request.manifest
        if source.kind == "backup":
            fetched: FetchedManifest = await self._call(
                refs.READ_BACKUP,
                BackupFetch(
                    namespace=request.namespace,
                    deployment=request.deployment,
                    configmap=source.name,
                ),
                f"read configmap/{source.name}",
            )
        else:
            if entry.cd is None:
                await self._refuse(
                    f"refused: deployment/{request.deployment} has no cd section in the catalog, "
                    "so there is no pipeline to take artifacts from"
                )
            fetched = await self._call(
                refs.DOWNLOAD_BACKUP,
                ArtifactsRequest(cd=entry.cd, name=source.name),
                f"download artifact {source.name}",
                timeout=120,
            )
        self._status.fetched = fetched.detail
        return fetched.text

    async def _run(self, request: RestoreRequest) -> RestoreResult:
        entry = await self._look_up()
        self._adopt(entry)
        text = await self._fetch(entry, request)
        check: RestoreCheck = await self._call(
            refs.RESTORE_CHECK,
            RestoreCheckRequest(
                namespace=request.namespace, deployment=request.deployment, manifest=text
            ),
            "validate the manifest and diff it",
        )
        self._status.check = check
        if check.problems:
            await self._refuse(
                "the manifest cannot be applied: "
                + "; ".join(check.problems)
                + "; nothing was changed"
            )
        workflow.set_current_details(
            f"**{request.deployment}** from {request.source.kind} `{request.source.name}`: "
            f"{', '.join(check.live_images)} → **{', '.join(check.images)}**\n\n```diff\n"
            + "\n".join(check.diff[:40])
            + "\n```"
        )
        self._check("backup", self._status.fetched)
        self._check(
            "target",
            f"{', '.join(check.live_images)} -> {', '.join(check.images)} ({len(check.diff)} "
            "diff lines)",
        )
        self._check("history", f"live revision {check.revision}")
        if check.unchanged:
            self._status.message = (
                f"deployment/{request.deployment} already matches {request.source.name}; nothing "
                "to do"
            )
            self._set_phase(Phase.COMPLETED)
            return RestoreResult(status=self._status, no_op=True)
        if request.dry_run:
            self._status.message = (
                f"dry run: would apply {request.source.name} to deployment/{request.deployment} "
                f"({len(check.diff)} diff lines)"
            )
            self._set_phase(Phase.COMPLETED)
            return RestoreResult(status=self._status, no_op=True)

        shown = restore_plan(
            request.namespace,
            request.deployment,
            check.deployment_uid,
            request.source,
            check.digest,
            check.images,
        )
        if not await self._approved(shown, f"apply {request.source.name}"):
            return RestoreResult(status=self._status)

        await self._announce_start(
            f"バックアップ {request.source.name} から復元します ({', '.join(check.images)})"
            if request.language == "ja"
            else f"restoring {request.source.name} ({', '.join(check.images)})",
            within=timedelta(minutes=5),
        )
        self._check("notify_start", ", ".join(c.label for c in entry.channels) or "no channel")
        applied: ApplyResult = await self._call(
            refs.RESTORE_APPLY,
            RestoreApplyRequest(
                namespace=request.namespace,
                deployment=request.deployment,
                deployment_uid=check.deployment_uid,
                desired=check.desired,
                digest=check.digest,
                grant=self._desk.grant(request),
            ),
            f"kubectl apply {request.source.name}",
        )
        self._status.applied = applied
        self._desk.note("modoru", "apply", detail=applied.message)
        self._check("undo", applied.message)
        outcome = await self._recover(
            entry,
            f"wait for the rollout of {request.source.name}",
            from_revision=check.revision,
            shown=request.source.name,
            post_checks=True,
        )
        self._complete(
            f"restored deployment/{request.deployment} from {request.source.kind} "
            f"{request.source.name} (revision {check.revision} → {outcome.revision}) and verified"
        )
        return RestoreResult(status=self._status)


def restore_workflow_id(namespace: str, deployment: str) -> str:
    return f"restore-{namespace}-{deployment}"
