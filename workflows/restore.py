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
    from runbook import notices
    from runbook.catalog import ServiceEntry
    from runbook.cd_models import ArtifactsRequest, FetchedManifest
    from runbook.checklist import new_checklist
    from runbook.models import Phase, ServiceLookup
    from runbook.policy import sla_deadline
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

    from .deploy_steps import DeploySteps, Stop


@workflow.defn(name="Restore")
class RestoreWorkflow(DeploySteps[RestoreRequest, RestoreStatus]):
    KIND = "Restore"

    @workflow.init
    def __init__(self, request: RestoreRequest) -> None:
        now = workflow.now()
        detected = request.detected_at or now
        status = RestoreStatus(
            workflow_id=workflow.info().workflow_id,
            phase=Phase.PLANNING,
            namespace=request.namespace,
            deployment=request.deployment,
            source=request.source,
            severity=request.severity,
            requested_by=request.requested_by,
            reason=request.reason,
            detected_at=detected,
            sla_deadline=sla_deadline(request.severity, detected),
            timings={"started": now},
            checklist=new_checklist(request.language),
        )
        self._open(request, status, detected)
        self._desk.note(
            request.requested_by,
            "requested",
            detail=f"restore from {request.source.kind} {request.source.name}: {request.reason}",
        )
        self._check("decide", f"{request.severity.value}: {request.reason}")

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
                await self._fail(
                    f"refused: deployment/{request.deployment} has no cd section in the catalog, "
                    "so there is no pipeline to take artifacts from"
                )
                raise Stop
            fetched = await self._call(
                refs.DOWNLOAD_BACKUP,
                ArtifactsRequest(cd=entry.cd, name=source.name),
                f"download artifact {source.name}",
                timeout=120,
            )
        self._status.fetched = fetched.detail
        return fetched.text

    async def _run(self, request: RestoreRequest) -> RestoreResult:
        entry: ServiceEntry = await self._call(
            refs.LOOKUP,
            ServiceLookup(namespace=request.namespace, deployment=request.deployment),
            "look up the service catalog",
        )
        self._entry = entry
        self._desk.set_policy(entry.approval, entry.trust)
        self._start_verified = self._desk.verify_start(request)
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
            await self._fail(
                "the manifest cannot be applied: "
                + "; ".join(check.problems)
                + "; nothing was changed"
            )
            raise Stop
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

        self._set_phase(Phase.EXECUTING)
        subject, text = notices.start_notice(
            request.language,
            detected_at=self._status.detected_at,
            impact=request.reason,
            cause="",
            action=(
                f"バックアップ {request.source.name} から復元します ({', '.join(check.images)})"
                if request.language == "ja"
                else f"restoring {request.source.name} ({', '.join(check.images)})"
            ),
            expected_recovery=max(self._status.sla_deadline, workflow.now() + timedelta(minutes=5)),
        )
        await self._notify("start", subject, text)
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
        outcome = await self._roll_out(entry, f"wait for the rollout of {request.source.name}")
        self._status.timings["mitigated"] = workflow.now()
        self._status.sla_met = self._status.timings["mitigated"] <= self._status.sla_deadline
        await self._verify(entry)
        subject, text = notices.complete_notice(
            request.language,
            recovered_at=self._status.timings["mitigated"],
            from_revision=check.revision,
            to_revision=outcome.revision,
            result=("サービス正常稼働中" if request.language == "ja" else "service healthy")
            + f" ({request.source.name})",
        )
        await self._notify("complete", subject, text)
        self._status.message = (
            f"restored deployment/{request.deployment} from {request.source.kind} "
            f"{request.source.name} (revision {check.revision} → {outcome.revision}) and verified"
        )
        self._set_phase(Phase.COMPLETED)
        return RestoreResult(status=self._status)


def restore_workflow_id(namespace: str, deployment: str) -> str:
    return f"restore-{namespace}-{deployment}"
