"""The runbook's migration rollback as a durable workflow: read the schema's
version and history with the app's own command in one of its pods, require a
fresh Cloud SQL backup, take two approvals, step down, and verify the schema
and the data with read-only SQL.

Steps are turned into the version they lead to and the app's `down-to` runs,
so a retried activity never reverts twice."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from runbook import activity_refs as refs
    from runbook import notices
    from runbook.catalog import MigrationConfig, ServiceEntry
    from runbook.decisions import Grant
    from runbook.enums import Phase
    from runbook.migration_models import (
        BackupCheck,
        BackupCheckRequest,
        DatabaseSnapshot,
        ExecRequest,
        ExecResult,
        MigrationRequest,
        MigrationResult,
        MigrationStatus,
        SnapshotRequest,
    )
    from runbook.migrations import (
        MigrationRefused,
        SchemaState,
        parse_history,
        parse_version,
        plan_down,
    )
    from runbook.models import CheckResult
    from runbook.plans import migration_plan

    from .change import ONE_GATE, ChangeWorkflow, Stop

EXEC_HEARTBEAT_SECONDS = (
    10  # k8s.exec heartbeats every 2 s while the command runs: a lost worker is noticed in seconds
)


@workflow.defn(name="MigrationRollback")
class MigrationRollbackWorkflow(ChangeWorkflow[MigrationRequest, MigrationStatus]):
    KIND = "MigrationRollback"

    @workflow.init
    def __init__(self, request: MigrationRequest) -> None:
        wanted = (
            f"down to version {request.to_version}"
            if request.to_version is not None
            else f"down {request.steps or 1} step(s)"
        )
        self._begin(request, MigrationStatus, f"migration rollback {wanted}: {request.reason}")

    @property
    def _target_label(self) -> str:
        return f"{self._request.service} (schema)"

    @workflow.query(name="status")
    def status(self) -> MigrationStatus:
        return self._status

    @workflow.run
    async def run(self, request: MigrationRequest) -> MigrationResult:
        return await self._carry_out(self._run(request))

    def _announces_failure(self, changed: bool) -> bool:
        # Runs recorded before the shared shell announced only failures while executing.
        return changed and (self._status.phase is Phase.EXECUTING or workflow.patched(ONE_GATE))

    async def _run(self, request: MigrationRequest) -> MigrationResult:
        entry = await self._look_up()
        if entry.migration is None:
            await self._refuse(
                f"service {request.service!r} has no migration settings in the catalog "
                "(migration: cloudsql_instance, database_secret, ...)"
            )
        config = entry.migration
        self._adopt(entry)
        self._status.namespace, self._status.deployment = entry.namespace, entry.deployment

        state = await self._read_state(config)
        try:
            steps, target = plan_down(state, request.steps, request.to_version)
        except MigrationRefused as refused:
            await self._refuse(f"refused before any change: {refused}")
        self._status.from_version, self._status.to_version, self._status.steps = (
            state.version,
            target,
            steps,
        )
        workflow.set_current_details(
            f"**{request.service}** schema {state.version} → "
            f"{target if target is not None else 'nil'} ({steps} step{'s' if steps != 1 else ''})"
        )

        backup: BackupCheck = await self._call(
            refs.CHECK_BACKUP,
            BackupCheckRequest(
                instance=config.cloudsql_instance,
                project=config.cloudsql_project,
                max_age_hours=config.backup_max_age_hours,
                take_if_missing=config.on_demand_backup and not request.dry_run,
            ),
            "check for a fresh Cloud SQL backup",
            timeout=3700,
            heartbeat=60,
        )
        self._status.backup = backup
        self._desk.note("modoru", "backup", counted=backup.ok, detail=backup.detail)
        if not backup.ok:
            await self._refuse(f"refused before any change: {backup.detail}")
        if request.dry_run:
            self._status.message = (
                f"dry run: would roll {request.service}'s schema back from version "
                f"{state.version} to {target if target is not None else 'nil'} ({steps} steps)"
            )
            self._set_phase(Phase.COMPLETED)
            return MigrationResult(status=self._status, no_op=True)
        self._status.before = await self._snapshot(
            entry, config, "read the tables and integrity numbers before"
        )

        if not await self._approval_gate(config.approvals):
            return MigrationResult(status=self._status)

        await self._announce_start(
            f"migrate down-to {target if target is not None else 0} ({state.version} → "
            f"{target if target is not None else 'nil'})",
            within=timedelta(minutes=5),
        )
        self._status.pending = None
        down = await self._exec(
            config,
            "down_to",
            "migrate down",
            version=target or 0,
            steps=steps,
            grant=self._desk.grant(request),
        )
        version, dirty = await self._version(config)
        if down.exit_code != 0 or dirty or version != target:
            said = (down.stderr or down.stdout).strip().splitlines()[-1:] or [""]
            self._status.dirty = dirty
            await self._fail(
                f"{' '.join(down.command)} exited {down.exit_code}: {said[0]}; the schema is now "
                "at version "
                f"{version if version is not None else 'nil'}{' (dirty)' if dirty else ''}; "
                "nothing further was run",
                announce=True,
            )
            raise Stop
        self._status.timings["mitigated"] = workflow.now()
        self._status.sla_met = self._status.timings["mitigated"] <= self._status.sla_deadline

        self._set_phase(Phase.VERIFYING)
        self._status.after = await self._snapshot(
            entry, config, "read the tables and integrity numbers after"
        )
        self._status.integrity = self._compare(config, self._status.before, self._status.after)
        failing = [c for c in self._status.integrity if not c.ok]
        if failing:
            await self._fail(
                "verification failed: " + "; ".join(f"{c.name}: {c.detail}" for c in failing),
                announce=True,
            )
            raise Stop
        subject, text = notices.migration_complete_notice(
            request.language,
            done_at=workflow.now(),
            service=request.service,
            from_version=state.version,
            to_version=target,
            result="; ".join(c.detail for c in self._status.integrity)
            or "schema at the target version",
        )
        await self._notify("complete", subject, text)
        self._status.message = (
            f"rolled {request.service}'s schema back from version {state.version} to "
            f"{target if target is not None else 'nil'} and verified"
        )
        self._set_phase(Phase.COMPLETED)
        return MigrationResult(status=self._status)

    # -- steps ---------------------------------------------------------------------------

    async def _read_state(self, config: MigrationConfig) -> SchemaState:
        version, dirty = await self._version(config)
        history = await self._exec(config, "history", "migrate history")
        if history.exit_code != 0:
            await self._refuse(
                f"{' '.join(history.command)} exited {history.exit_code}: "
                f"{history.stderr.strip()[-300:]}"
            )
        applied, available = parse_history(history.stdout)
        self._status.from_version, self._status.dirty = version, dirty
        return SchemaState(
            version=version, dirty=dirty, applied=tuple(applied), available=tuple(available)
        )

    async def _version(self, config: MigrationConfig) -> tuple[int | None, bool]:
        result = await self._exec(config, "version", "migrate version")
        try:
            return parse_version(result.stdout, result.stderr)
        except ValueError as exc:
            await self._refuse(f"{' '.join(result.command)} exited {result.exit_code}: {exc}")

    async def _exec(
        self,
        config: MigrationConfig,
        action: str,
        summary: str,
        *,
        version: int | None = None,
        steps: int = 0,
        grant: Grant | None = None,
    ) -> ExecResult:
        result = await self._call(
            refs.EXEC,
            ExecRequest(
                service=self._request.service,
                action=action,
                version=version,
                steps=steps,
                grant=grant,
            ),
            summary,
            timeout=config.command_timeout_seconds + 60,
            heartbeat=EXEC_HEARTBEAT_SECONDS,
        )
        self._status.commands.append(result)
        self._desk.note(
            "modoru",
            "exec",
            detail=f"{' '.join(result.command)} in {result.pod}: exit {result.exit_code}",
        )
        return result

    async def _snapshot(
        self, entry: ServiceEntry, config: MigrationConfig, summary: str
    ) -> DatabaseSnapshot:
        assert entry.database is not None  # the catalog requires it with migration
        return await self._call(
            refs.DB_SNAPSHOT,
            SnapshotRequest.of(entry, access=entry.database, checks=config.integrity_checks),
            summary + " (psql in an app pod)",
            timeout=entry.database.query_timeout_seconds * (len(config.integrity_checks) + 1) + 120,
        )

    @staticmethod
    def _compare(
        config: MigrationConfig, before: DatabaseSnapshot | None, after: DatabaseSnapshot
    ) -> list[CheckResult]:
        assert before is not None
        gone = sorted(set(before.tables) - set(after.tables))
        added = sorted(set(after.tables) - set(before.tables))
        found = [
            CheckResult(
                name="tables",
                ok=True,
                detail=f"{len(after.tables)} tables; dropped: {', '.join(gone) or 'none'}; "
                f"added: {', '.join(added) or 'none'}",
            )
        ]
        for check in config.integrity_checks:
            was, now = before.values.get(check.name), after.values.get(check.name)
            if now is None and was is not None:
                found.append(
                    CheckResult(
                        name=check.name,
                        ok=not check.must_not_drop,
                        detail=f"was {was:g}, now unreadable (its table is gone)",
                    )
                )
            elif was is not None and now is not None and now < was:
                found.append(
                    CheckResult(
                        name=check.name,
                        ok=not check.must_not_drop,
                        detail=f"dropped from {was:g} to {now:g} ({now - was:+g})",
                    )
                )
            else:
                found.append(
                    CheckResult(
                        name=check.name,
                        ok=True,
                        detail=f"{was if was is None else f'{was:g}'} → "
                        f"{now if now is None else f'{now:g}'}",
                    )
                )
        return found

    async def _approval_gate(self, needed: int) -> bool:
        status = self._status
        plan = migration_plan(
            self._request.service, status.from_version, status.to_version, status.steps or 0
        )
        return await self._gate(
            self._desk,
            "approval",
            self._approvals_needed(self._desk, needed),
            plan,
            what=self._target_label,
        )


def migration_workflow_id(service: str) -> str:
    """One schema rollback per service at a time."""
    return f"migration-{service}"
