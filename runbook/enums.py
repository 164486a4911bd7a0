"""The words a rollback is described with."""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    IMMEDIATE = "immediate"  # the runbook's "roll back at once, within 5 minutes"
    INVESTIGATE = "investigate"  # "roll back after a look, within 15 minutes"


class Phase(StrEnum):
    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_HOTFIX = "awaiting_hotfix"
    EXECUTING = "executing"
    WAITING_ROLLOUT = "waiting_rollout"
    VERIFYING = "verifying"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
