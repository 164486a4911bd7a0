"""The runbook's method 2 as a durable workflow: redeploy a known-good image tag
through the production deploy pipeline on GitHub Actions. The tag must be in
Artifact Registry and not live (refused before anything is dispatched); the
plan (live image → tag, when the tag was pushed, which revision last ran it)
is approved in modoru; the pipeline is dispatched, its run followed (its
environment's review stays a human's, in GitHub), the rollout awaited and
verified exactly as method 1, with the runbook's notices."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook.cd_models import (
        DispatchRequest,
        ImageList,
        ImagesRequest,
        RedeployPlan,
        RedeployPlanRequest,
        RedeployRequest,
        RedeployResult,
        RedeployStatus,
        RunFollow,
        RunState,
        redeploy_plan,
    )
    from runbook.enums import Phase

    from .change import Stop
    from .deploy_steps import DeploySteps


@workflow.defn(name="Redeploy")
class RedeployWorkflow(DeploySteps[RedeployRequest, RedeployStatus]):
    KIND = "Redeploy"

    @workflow.init
    def __init__(self, request: RedeployRequest) -> None:
        self._begin(
            request,
            RedeployStatus,
            f"redeploy tag {request.tag}: {request.reason}",
            tag=request.tag,
        )

    @workflow.query(name="status")
    def status(self) -> RedeployStatus:
        return self._status

    @workflow.run
    async def run(self, request: RedeployRequest) -> RedeployResult:
        return await self._carry_out(self._run(request))

    async def _run(self, request: RedeployRequest) -> RedeployResult:
        entry, cd, registry = await self._look_up_pipeline(
            " (cd: repository, workflow, ...; registry: project, location, repository, package)"
        )
        self._adopt(entry)

        listed: ImageList = await self._call(
            refs.REGISTRY_IMAGES,
            ImagesRequest(registry=registry, tag=request.tag),
            f"list the newest images in {registry.image}",
        )
        self._status.images = listed.images
        image = f"{registry.image}:{request.tag}"
        if listed.found is None:
            newest = ", ".join(t for i in listed.images for t in i.tags) or "none"
            await self._refuse(
                f"tag {request.tag} is not in Artifact Registry {registry.image} (newest tags: "
                f"{newest}); nothing was dispatched"
            )
        self._status.pushed = listed.found.uploaded or listed.found.updated
        plan: RedeployPlan = await self._call(
            refs.REDEPLOY_PLAN,
            RedeployPlanRequest(
                namespace=request.namespace,
                deployment=request.deployment,
                container=cd.container,
                image=image,
            ),
            "plan: read the live image and the revisions",
        )
        self._status.plan = plan
        if plan.live_image == image:
            await self._refuse(
                f"{image} is already live (revision {plan.live_revision}); nothing was dispatched"
            )
        last = (
            f"revision {plan.last_revision}" if plan.last_revision else "no revision in the history"
        )
        self._check(
            "target",
            f"{plan.live_image} -> {image} (pushed "
            f"{self._status.pushed.isoformat() if self._status.pushed else 'at an unknown time'})",
        )
        self._check(
            "history", f"live revision {plan.live_revision}; {request.tag} last ran in {last}"
        )
        workflow.set_current_details(
            f"**{request.deployment}**: {plan.live_image} → **{image}** (pushed "
            f"{self._status.pushed}, last ran in {last})"
        )
        if request.dry_run:
            self._status.message = (
                f"dry run: would run {cd.workflow_name} with {cd.tag_input}={request.tag} "
                f"({plan.live_image} → {image})"
            )
            self._set_phase(Phase.COMPLETED)
            return RedeployResult(status=self._status, no_op=True)

        shown = redeploy_plan(plan, request.tag, cd, self._status.pushed)
        if not await self._approved(shown, f"redeploy {image}"):
            return RedeployResult(status=self._status)

        await self._announce_start(
            f"{cd.workflow_name} で {request.tag} を再デプロイします ({plan.live_image} → {image})"
            if request.language == "ja"
            else f"redeploying {request.tag} through {cd.workflow_name} ({plan.live_image} → "
            f"{image})",
            within=timedelta(minutes=10),
        )
        self._check("notify_start", ", ".join(c.label for c in entry.channels) or "no channel")
        run: RunState = await self._call(
            refs.DISPATCH,
            DispatchRequest(
                cd=cd, tag=request.tag, not_before=workflow.now(), grant=self._desk.grant(request)
            ),
            f"run {cd.workflow_name} with {cd.tag_input}={request.tag}",
            timeout=120,
        )
        self._show(run)
        while run.status != "completed":
            run = await self._call(
                refs.FOLLOW_RUN,
                RunFollow(cd=cd, run_id=run.run_id, known_status=run.status),
                f"follow run #{run.number} ({run.status})",
                timeout=cd.run_timeout_minutes * 60,
                heartbeat=30,
            )
            self._show(run)
        self._check(
            "undo", f"{cd.workflow_name} run #{run.number} {run.conclusion}: {run.html_url}"
        )
        self._check("backup", f"the pipeline's deployment-backup artifact of run #{run.number}")
        if run.conclusion != "success":
            steps = f" (failed: {', '.join(run.failed_steps)})" if run.failed_steps else ""
            await self._fail(
                f"{cd.workflow_name} run #{run.number} concluded {run.conclusion}{steps}: "
                f"{run.html_url}",
                announce=True,
                problems=run.failed_steps,
            )
            raise Stop

        outcome = await self._recover(
            entry,
            f"wait for the rollout of {image}",
            from_revision=plan.live_revision,
            shown=image,
            post_checks=True,
        )
        self._complete(
            f"redeployed {image} through {cd.workflow_name} run #{run.number} (revision "
            f"{plan.live_revision} → {outcome.revision}) and verified"
        )
        return RedeployResult(status=self._status)

    def _show(self, run: RunState) -> None:
        """The run in the status, the audit and the Web UI (a link to the Actions run)."""
        before = self._status.run
        self._status.run = run
        if before is None or before.status != run.status:
            detail = (
                f"run #{run.number} {run.status}"
                + (f" ({run.conclusion})" if run.conclusion else "")
                + f": {run.html_url}"
            )
            if run.adopted and before is None:
                detail += " (taken over from an earlier attempt of this dispatch)"
            for pending in run.pending:
                detail += (
                    f"; waiting for a reviewer of environment {pending.environment} in GitHub: "
                    f"{', '.join(pending.reviewers) or 'anyone with access'}"
                    f"{' (the token may approve)' if pending.current_user_can_approve else ''}"
                )
            self._desk.note("github", "cd_run", detail=detail)
        assert self._entry is not None and self._entry.cd is not None
        waiting = (
            f"; waiting for a reviewer of **{run.pending[0].environment}** in GitHub"
            if run.pending
            else ""
        )
        workflow.set_current_details(
            f"**{self._request.deployment}** → {self._request.tag}: "
            f"[{self._entry.cd.workflow_name} run #{run.number}]({run.html_url}) "
            f"{run.status}{f' ({run.conclusion})' if run.conclusion else ''}{waiting}"
        )


def redeploy_workflow_id(namespace: str, deployment: str) -> str:
    return f"redeploy-{namespace}-{deployment}"
