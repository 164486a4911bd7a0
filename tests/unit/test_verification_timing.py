"""The window arithmetic of verification at production cadence: for a rollout
ending at any moment of the minute, with each preset's ingestion delays, the
deadline a change workflow gives verification is after the moment every check of
the catalog can first be judged on real data, so a recovered service is never
reported failed for want of waiting."""

from __future__ import annotations

import datetime as dt
from importlib import resources

import pytest
import yaml

from runbook.catalog import Catalog, ServiceEntry
from runbook.enums import Severity
from runbook.guard import MonitoringConfig
from runbook.monitoring import DEFAULTS
from runbook.postchecks import BACKENDS_METRIC, CPU_METRIC, MEMORY_METRIC, PostChecks
from runbook.verification import (
    LONGEST,
    POLL_SECONDS,
    FirstMinute,
    deadline_for,
    deadline_seconds,
)

MINUTE_START = dt.datetime(2026, 12, 7, 16, 10, tzinfo=dt.UTC)


def bundled() -> ServiceEntry:
    text = resources.files("runbook.data").joinpath("catalog.yaml").read_text()
    return Catalog.model_validate(yaml.safe_load(text)).services[0]


def production(entry: ServiceEntry, preset: str) -> ServiceEntry:
    """The bundled entry as it would run on Google: Google's delays, not the sandbox's."""
    return entry.model_copy(
        update={
            "monitoring": MonitoringConfig(preset=preset, window_seconds=60),
            "post_checks": entry.post_checks.model_copy(update={"ingestion_delay_seconds": None}),
        }
    )


def readable_after(since: dt.datetime, delay: float) -> float:
    """Seconds from the rollout's end until the check can be read, plus one poll."""
    return (FirstMinute.after(since, delay).readable_at - since).total_seconds() + POLL_SECONDS


def delays(entry: ServiceEntry) -> dict[str, float]:
    checks = entry.post_checks_resolved()
    return {
        "error_ratio": entry.monitoring.source().ingestion_delay_seconds,
        "cpu": checks.delay(CPU_METRIC),
        "memory": checks.delay(MEMORY_METRIC),
        "connection_pool": checks.delay(BACKENDS_METRIC),
    }


CATALOGS = {
    "sandbox": lambda: bundled(),
    "gke_l7": lambda: production(bundled(), "gke_l7"),
    "managed_prometheus": lambda: production(bundled(), "managed_prometheus"),
}


@pytest.mark.parametrize("catalog", sorted(CATALOGS))
@pytest.mark.parametrize("severity", list(Severity))
def test_every_check_is_readable_before_the_deadline_whenever_the_rollout_ends(
    catalog: str, severity: Severity
) -> None:
    entry = CATALOGS[catalog]()
    deadline = deadline_for(entry, severity, metrics=True, post_checks=entry.post_checks_resolved())
    assert deadline <= LONGEST.total_seconds()
    for tenth in range(600):  # every tenth of a second of the minute
        since = MINUTE_START + dt.timedelta(seconds=tenth / 10)
        for check, delay in delays(entry).items():
            needed = readable_after(since, delay)
            assert needed <= deadline, (
                f"{catalog}/{severity.value}: {check} after a rollout at :{tenth / 10:04.1f} "
                f"needs {needed:.0f} s, the deadline is {deadline} s"
            )
        logs = entry.post_checks.log_min_seconds
        assert logs + POLL_SECONDS <= deadline


def test_the_worst_moment_is_just_after_a_minute_begins_and_it_is_waited_for() -> None:
    # A rollout at :00.1 waits 59.9 s for the next minute, the minute itself and the delay.
    since = MINUTE_START + dt.timedelta(seconds=0.1)
    minute = FirstMinute.after(since, 210)
    assert minute.start == MINUTE_START + dt.timedelta(minutes=1)
    assert (minute.readable_at - since).total_seconds() == pytest.approx(329.9)
    # gke_l7's immediate rollback gets what it needs, past the runbook's 5 minutes
    assert deadline_seconds(Severity.IMMEDIATE, 210) >= 335
    # at :00.0 exactly the minute that begins then is the first whole one
    assert FirstMinute.after(MINUTE_START, 20).start == MINUTE_START


def test_the_deadline_keeps_the_runbook_windows_and_never_exceeds_the_longest() -> None:
    assert deadline_seconds(Severity.IMMEDIATE, 20) == 300
    assert deadline_seconds(Severity.INVESTIGATE, 20) == 900
    assert deadline_seconds(Severity.IMMEDIATE, None) == 300
    assert deadline_seconds(Severity.IMMEDIATE, 3600) == LONGEST.total_seconds()
    assert deadline_seconds(Severity.IMMEDIATE, 3600, configured=4000) == 4000


def test_a_catalog_deadline_and_the_pods_window_bound_it() -> None:
    entry = bundled().model_copy(update={"verification_deadline_seconds": 100})
    assert deadline_for(entry, Severity.INVESTIGATE, metrics=True, post_checks=None) == 100
    longer = entry.model_copy(update={"verification_window_seconds": 200})
    assert deadline_for(longer, Severity.INVESTIGATE, metrics=True, post_checks=None) == 200
    # without metrics and post-checks nothing arrives late: the runbook's window
    plain = bundled().model_copy(update={"monitoring": MonitoringConfig()})
    assert deadline_for(plain, Severity.IMMEDIATE, metrics=False, post_checks=None) == 300


def test_the_presets_delays_are_the_ones_checked() -> None:
    assert DEFAULTS["gke_l7"]["ingestion_delay_seconds"] == 210
    assert PostChecks().delay(CPU_METRIC) == 240
