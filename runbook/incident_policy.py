"""A service's incident settings in the catalog: the runbook's follow-up
deadlines and how often a verified rollback's human confirmations are asked for."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class IncidentPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    rca_hours: float = Field(
        24.0,
        gt=0,
        le=24 * 30,
        description="root-cause investigation started and recorded within this",
    )
    postmortem_hours: float = Field(
        48.0, gt=0, le=24 * 30, description="postmortem written within this"
    )
    prevention_hours: float = Field(
        48.0, gt=0, le=24 * 60, description="prevention measures recorded within this"
    )
    confirmation_reminder_minutes: int = Field(
        60,
        ge=1,
        le=24 * 60,
        description="a verified rollback awaiting human confirmations is reminded this often",
    )
    confirmation_reminders: int = Field(
        24, ge=0, le=1000, description="at most this many confirmation reminders per rollback"
    )
